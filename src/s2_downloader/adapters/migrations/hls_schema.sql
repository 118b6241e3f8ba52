-- The HLS downloader's own tables, exactly as its first alembic revision (1c8c38951d47)
-- creates them, so other HLS components find the schema they expect. Created only where
-- missing: on a database that already serves HLS this statement changes nothing.
CREATE TABLE IF NOT EXISTS granule (
    id varchar(256) PRIMARY KEY,
    filename varchar(256) NOT NULL,
    tileid varchar(5) NOT NULL,
    size bigint NOT NULL,
    beginposition timestamp NOT NULL,
    endposition timestamp NOT NULL,
    ingestiondate timestamp NOT NULL,
    download_url varchar(256) NOT NULL,
    checksum varchar(256) NOT NULL DEFAULT '',
    downloaded boolean NOT NULL DEFAULT false,
    in_progress boolean NOT NULL DEFAULT false,
    uploaded boolean NOT NULL DEFAULT false,
    download_retries smallint NOT NULL DEFAULT 0,
    download_failed boolean NOT NULL DEFAULT false,
    expired boolean NOT NULL DEFAULT false,
    download_started timestamp NULL,
    download_finished timestamp NULL
);

CREATE TABLE IF NOT EXISTS status (
    key_name varchar(256) PRIMARY KEY,
    value varchar(256) NOT NULL
);
