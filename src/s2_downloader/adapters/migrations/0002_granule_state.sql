-- The lifecycle state and lease beside the legacy flags, which the store keeps in step.

-- The HLS models of some versions lack download_failed; the store writes it.
ALTER TABLE granule ADD COLUMN IF NOT EXISTS download_failed boolean NOT NULL DEFAULT false;

-- A constant default costs no table rewrite, and rows that later writers insert with only
-- the HLS columns start pending.
ALTER TABLE granule
    ADD COLUMN IF NOT EXISTS state text NOT NULL DEFAULT 'pending'
        CONSTRAINT granule_state_check
        CHECK (state IN ('pending', 'claimed', 'downloading', 'verified', 'retrying', 'failed')),
    ADD COLUMN IF NOT EXISTS lease_owner text NULL,
    ADD COLUMN IF NOT EXISTS lease_expires_at timestamptz NULL,
    ADD COLUMN IF NOT EXISTS last_error text NULL,
    ADD COLUMN IF NOT EXISTS upload_queued_at timestamptz NULL;

-- Rows already there take the state their legacy flags say; no legacy value changes.
-- Runs once: schema_migrations records this file, so a later migrate never resets states.
UPDATE granule
SET state = CASE WHEN downloaded THEN 'verified' ELSE 'failed' END
WHERE downloaded OR download_failed;

-- Counts per state for the status command.
CREATE INDEX IF NOT EXISTS granule_state_idx ON granule (state);

-- The oldest in-progress lease, without scanning the (large, mostly finished) table.
CREATE INDEX IF NOT EXISTS granule_in_progress_idx ON granule (download_started)
    WHERE state IN ('claimed', 'downloading');
