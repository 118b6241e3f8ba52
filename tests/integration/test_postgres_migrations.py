"""`migrate` on real PostgreSQL: an empty database, a second run, and an HLS database with rows."""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg import sql

from s2_downloader.adapters.postgres import PostgresGranuleStore, migrate, open_pool
from s2_downloader.domain import Done, handle
from s2_downloader.domain.errors import StoreError
from s2_downloader.domain.granule import State
from s2_downloader.domain.request import DownloadRequest
from tests.unit.world import World

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)

# HLS's tables column for column as its alembic builds them (shared/fixtures/hls):
# revision 1c8c38951d47 as of February 2021, ...
HLS_FEB_2021 = """
CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, PRIMARY KEY (version_num));
INSERT INTO alembic_version VALUES ('1c8c38951d47');
CREATE TABLE granule (
    id VARCHAR(256) NOT NULL, filename VARCHAR(256) NOT NULL, tileid VARCHAR(5) NOT NULL,
    size BIGINT NOT NULL, beginposition TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    endposition TIMESTAMP WITHOUT TIME ZONE NOT NULL, ingestiondate TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    download_url VARCHAR(256) NOT NULL, checksum VARCHAR(256) DEFAULT '' NOT NULL,
    downloaded BOOLEAN DEFAULT 'false' NOT NULL, in_progress BOOLEAN DEFAULT 'false' NOT NULL,
    uploaded BOOLEAN DEFAULT 'false' NOT NULL, download_retries SMALLINT DEFAULT '0' NOT NULL,
    download_failed BOOLEAN DEFAULT 'false' NOT NULL, expired BOOLEAN DEFAULT 'false' NOT NULL,
    download_started TIMESTAMP WITHOUT TIME ZONE, download_finished TIMESTAMP WITHOUT TIME ZONE,
    PRIMARY KEY (id)
);
CREATE TABLE granule_count (
    date DATE NOT NULL, available_links BIGINT NOT NULL, fetched_links BIGINT NOT NULL,
    last_fetched_time TIMESTAMP WITHOUT TIME ZONE NOT NULL, PRIMARY KEY (date)
);
CREATE TABLE status (key_name VARCHAR(256) NOT NULL, value VARCHAR(256) NOT NULL, PRIMARY KEY (key_name));
"""

# ... and today, 1c8c38951d47 (edited in place since) + ec89745f0bac: no in_progress,
# uploaded, download_failed, download_started or download_finished; granule_count per platform.
HLS_TODAY = """
CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, PRIMARY KEY (version_num));
INSERT INTO alembic_version VALUES ('ec89745f0bac');
CREATE TABLE granule (
    id VARCHAR(256) NOT NULL, filename VARCHAR(256) NOT NULL, tileid VARCHAR(5) NOT NULL,
    size BIGINT NOT NULL, beginposition TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    endposition TIMESTAMP WITHOUT TIME ZONE NOT NULL, ingestiondate TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    download_url VARCHAR(256) NOT NULL, checksum VARCHAR(256) DEFAULT '' NOT NULL,
    downloaded BOOLEAN DEFAULT 'false' NOT NULL, download_retries SMALLINT DEFAULT '0' NOT NULL,
    expired BOOLEAN DEFAULT 'false' NOT NULL,
    PRIMARY KEY (id)
);
CREATE TABLE granule_count (
    date DATE NOT NULL, available_links BIGINT NOT NULL, fetched_links BIGINT NOT NULL,
    last_fetched_time TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    platform VARCHAR DEFAULT 'S2A+S2B' NOT NULL,
    PRIMARY KEY (date, platform)
);
CREATE TABLE status (key_name VARCHAR(256) NOT NULL, value VARCHAR(256) NOT NULL, PRIMARY KEY (key_name));
"""

HLS_FORMS = {"feb-2021": HLS_FEB_2021, "today": HLS_TODAY}

#: The columns of today's HLS table.
TODAY_COLUMNS = (
    "id",
    "filename",
    "tileid",
    "size",
    "beginposition",
    "endposition",
    "ingestiondate",
    "download_url",
    "checksum",
    "downloaded",
    "download_retries",
    "expired",
)

LEGACY_COLUMNS = (
    "id",
    "filename",
    "tileid",
    "size",
    "beginposition",
    "endposition",
    "ingestiondate",
    "download_url",
    "checksum",
    "downloaded",
    "in_progress",
    "uploaded",
    "download_retries",
    "download_failed",
    "expired",
    "download_started",
    "download_finished",
)

# What docs/interface.md says each column is: (data type, length, nullable, default).
EXPECTED_COLUMNS = {
    "id": ("character varying", 256, "NO", None),
    "filename": ("character varying", 256, "NO", None),
    "tileid": ("character varying", 5, "NO", None),
    "size": ("bigint", None, "NO", None),
    "beginposition": ("timestamp without time zone", None, "NO", None),
    "endposition": ("timestamp without time zone", None, "NO", None),
    "ingestiondate": ("timestamp without time zone", None, "NO", None),
    "download_url": ("character varying", 256, "NO", None),
    "checksum": ("character varying", 256, "NO", "''::character varying"),
    "downloaded": ("boolean", None, "NO", "false"),
    "in_progress": ("boolean", None, "NO", "false"),
    "uploaded": ("boolean", None, "NO", "false"),
    "download_retries": ("smallint", None, "NO", "0"),
    "download_failed": ("boolean", None, "NO", "false"),
    "expired": ("boolean", None, "NO", "false"),
    "download_started": ("timestamp without time zone", None, "YES", None),
    "download_finished": ("timestamp without time zone", None, "YES", None),
    "state": ("text", None, "NO", "'pending'::text"),
    "lease_owner": ("text", None, "YES", None),
    "lease_expires_at": ("timestamp with time zone", None, "YES", None),
    "last_error": ("text", None, "YES", None),
    "upload_queued_at": ("timestamp with time zone", None, "YES", None),
    "first_attempt_at": ("timestamp without time zone", None, "YES", None),
    "store_upload": ("jsonb", None, "YES", None),
}

#: What migrate reports on an empty database.
FRESH_STEPS = [
    "tables",
    "s3_key_lease table",
    "columns " + ", ".join(list(EXPECTED_COLUMNS)[17:]),
    "granule_state_check",
    "state backfill",
]
FRESH_STEPS += ["granule_state_idx", "granule_in_progress_idx"]


def _columns(url: str, table: str) -> dict[str, tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT column_name, data_type, character_maximum_length, is_nullable, column_default"
            " FROM information_schema.columns WHERE table_schema = 'public' AND table_name = %s",
            (table,),
        ).fetchall()
    return {name: tuple(rest) for name, *rest in rows}


def _schema_fingerprint(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable, column_default"
            " FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2"
        ).fetchall()
        constraints = conn.execute(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)"
            " FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2"
        ).fetchall()
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1"
        ).fetchall()
    return [*columns, *constraints, *indexes]


def _legacy_rows(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        columns = sql.SQL(", ").join(sql.Identifier(column) for column in LEGACY_COLUMNS)
        return conn.execute(sql.SQL("SELECT {} FROM granule ORDER BY id").format(columns)).fetchall()


def _legacy_rows_of(url: str, columns: tuple[str, ...]) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        names = sql.SQL(", ").join(sql.Identifier(column) for column in columns)
        return conn.execute(sql.SQL("SELECT {} FROM granule ORDER BY id").format(names)).fetchall()


def _other_tables(url: str) -> list[list[tuple[Any, ...]]]:
    with psycopg.connect(url) as conn:
        return [
            conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
            for table in ("alembic_version", "granule_count", "status")
        ]


def _index_validity(url: str) -> dict[str, bool]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE i.indrelid = 'granule'::regclass AND c.relname LIKE 'granule\\_%%idx'"
        ).fetchall()
    return dict(rows)


def test_migrate_creates_the_contract_schema_on_an_empty_database(empty_database_url: str) -> None:
    """An empty database gets the granule and status tables exactly as docs/interface.md lists them."""
    applied = migrate(empty_database_url)

    assert FRESH_STEPS == applied
    assert EXPECTED_COLUMNS == _columns(empty_database_url, "granule")
    assert {
        "key_name": ("character varying", 256, "NO", None),
        "value": ("character varying", 256, "NO", None),
    } == _columns(empty_database_url, "status")
    assert {"granule_state_idx": True, "granule_in_progress_idx": True} == _index_validity(empty_database_url)


def test_migrate_twice_is_a_no_op(empty_database_url: str) -> None:
    """A second migrate does nothing and leaves the schema as it was."""
    migrate(empty_database_url)
    before = _schema_fingerprint(empty_database_url)

    assert [] == migrate(empty_database_url)
    assert before == _schema_fingerprint(empty_database_url)


def test_state_column_rejects_values_outside_the_six_states(empty_database_url: str) -> None:
    """The CHECK constraint, validated, keeps `state` to the six lifecycle states."""
    migrate(empty_database_url)
    with psycopg.connect(empty_database_url) as conn:
        validated = conn.execute(
            "SELECT convalidated FROM pg_constraint WHERE conname = 'granule_state_check'"
        ).fetchone()
        conn.execute(
            "INSERT INTO granule (id, filename, tileid, size, beginposition, endposition, ingestiondate,"
            " download_url) VALUES ('g', 'g.zip', 'T', 0, now(), now(), now(), '')"
        )
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("UPDATE granule SET state = 'lost' WHERE id = 'g'")
    assert (True,) == validated


def test_concurrent_migrations_take_turns_and_do_each_step_once(empty_database_url: str) -> None:
    """Eight migrates at once all succeed and together do every step exactly once."""
    results: list[list[str]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def run() -> None:
        barrier.wait()
        try:
            results.append(migrate(empty_database_url))
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert [] == errors
    assert sorted(FRESH_STEPS) == sorted(step for applied in results for step in applied)


def _hls_database(url: str, schema: str) -> None:
    """Create HLS's tables and fill them with rows of every combination of the legacy flags they have."""
    with psycopg.connect(url) as conn:
        conn.execute(schema)
        conn.commit()
        columns = set(_columns(url, "granule"))
        # Naive, as HLS stores UTC.
        moment = dt.datetime(2021, 1, 14, 12, 30, 9, 347153)
        for number in range(32):
            flags = [bool(number & bit) for bit in (1, 2, 4, 8, 16)]
            downloaded, in_progress, uploaded, expired, failed = flags
            row: dict[str, object] = {
                "id": f"S2A_MSIL1C_{number:02d}",
                "filename": f"S2A_MSIL1C_{number:02d}.SAFE",
                "tileid": "32TQM",
                "size": 700_000_000 + number,
                "beginposition": moment,
                "endposition": moment + dt.timedelta(seconds=1),
                "ingestiondate": moment + dt.timedelta(hours=3),
                "download_url": f"https://catalogue.dataspace.copernicus.eu/odata/v1/Products({number})/$value",
                "checksum": "" if number % 3 else "ABCDEF0123456789ABCDEF0123456789",
                "downloaded": downloaded,
                "in_progress": in_progress,
                "uploaded": uploaded,
                "download_retries": number % 12,
                "download_failed": failed,
                "expired": expired,
                "download_started": moment if in_progress or downloaded else None,
                "download_finished": moment + dt.timedelta(minutes=5) if downloaded else None,
            }
            present = {name: value for name, value in row.items() if name in columns}
            conn.execute(
                sql.SQL("INSERT INTO granule ({}) VALUES ({})").format(
                    sql.SQL(", ").join(map(sql.Identifier, present)),
                    sql.SQL(", ").join(sql.Placeholder() * len(present)),
                ),
                list(present.values()),
            )
        if "platform" in _columns(url, "granule_count"):
            conn.execute("INSERT INTO granule_count VALUES ('2021-01-14', 10, 9, %s, 'S2B')", (moment,))
        else:
            conn.execute("INSERT INTO granule_count VALUES ('2021-01-14', 10, 9, %s)", (moment,))
        conn.execute("INSERT INTO status VALUES ('last_linkfetch_time', '2021-01-14T12:00:00')")


@pytest.mark.parametrize("form", list(HLS_FORMS))
def test_upgrading_an_hls_database_keeps_every_value_and_adds_the_missing_columns(
    empty_database_url: str, form: str
) -> None:
    """Migrating either HLS table (twice) adds every column, changes no value, leaves other tables."""
    _hls_database(empty_database_url, HLS_FORMS[form])
    original = tuple(_columns(empty_database_url, "granule"))
    rows_before = _legacy_rows_of(empty_database_url, original)
    others_before = _other_tables(empty_database_url)

    migrate(empty_database_url)
    second = migrate(empty_database_url)

    assert [] == second
    after = _columns(empty_database_url, "granule")
    assert set(EXPECTED_COLUMNS) == set(after)
    # HLS's own columns keep their types and defaults as alembic spelled them ('0' as text).
    assert {name: EXPECTED_COLUMNS[name][:3] for name in original} == {
        name: after[name][:3] for name in original
    }
    assert {name: EXPECTED_COLUMNS[name] for name in after if name not in original} == {
        name: spec for name, spec in after.items() if name not in original
    }
    assert rows_before == _legacy_rows_of(empty_database_url, original)
    assert others_before == _other_tables(empty_database_url)


def test_todays_hls_table_gets_the_legacy_flags_with_their_defaults(empty_database_url: str) -> None:
    """in_progress, uploaded and download_failed arrive false, the two times null, on every existing row."""
    _hls_database(empty_database_url, HLS_TODAY)
    assert TODAY_COLUMNS == tuple(_columns(empty_database_url, "granule"))

    migrate(empty_database_url)

    with psycopg.connect(empty_database_url) as conn:
        added = conn.execute(
            "SELECT DISTINCT in_progress, uploaded, download_failed, download_started, download_finished"
            " FROM granule"
        ).fetchall()
    assert [(False, False, False, None, None)] == added


@pytest.mark.parametrize("form", list(HLS_FORMS))
def test_upgrading_an_hls_database_derives_state_from_legacy_flags(
    empty_database_url: str, form: str
) -> None:
    """downloaded becomes verified, download_failed failed, anything else pending; no row gets a lease."""
    _hls_database(empty_database_url, HLS_FORMS[form])

    migrate(empty_database_url)

    with psycopg.connect(empty_database_url) as conn:
        rows = conn.execute(
            "SELECT downloaded, download_failed, state, lease_owner, lease_expires_at, upload_queued_at,"
            " first_attempt_at FROM granule"
        ).fetchall()
    assert 32 == len(rows)
    for downloaded, failed, state, *added in rows:
        expected = "verified" if downloaded else "failed" if failed else "pending"
        assert (expected, [None, None, None, None]) == (state, added)


@pytest.mark.parametrize("form", list(HLS_FORMS))
def test_a_row_the_link_fetcher_inserts_later_is_pending_and_downloads(
    empty_database_url: str, form: str
) -> None:
    """After the upgrade, a granule inserted with HLS's columns only goes all the way to verified."""
    _hls_database(empty_database_url, HLS_FORMS[form])
    migrate(empty_database_url)
    with psycopg.connect(empty_database_url) as conn:
        conn.execute(
            "INSERT INTO granule (id, filename, tileid, size, beginposition, endposition, ingestiondate,"
            " download_url) VALUES ('S2B_NEW', 'S2B_NEW.SAFE', '32TQM', 1, now(), now(), now(), 'u')"
        )
    world = World()
    world.hub.add("S2B_NEW", b"product bytes")

    with open_pool(empty_database_url, max_size=2) as pool:
        store = PostgresGranuleStore(pool)
        before = store.get("S2B_NEW")
        request = DownloadRequest(id="S2B_NEW", filename="S2B_NEW.SAFE", download_url="u", checksum=None)
        outcome = handle(request, world.context(granules=store))
        after = store.get("S2B_NEW")

    assert before is not None
    assert after is not None
    assert (State.PENDING, Done(reason="verified"), State.VERIFIED) == (before.state, outcome, after.state)
    assert (True, False, False) == _flags(empty_database_url, "S2B_NEW")


def _flags(url: str, granule_id: str) -> tuple[Any, ...]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT downloaded, in_progress, download_failed FROM granule WHERE id = %s", (granule_id,)
        ).fetchone()
    assert row is not None
    return tuple(row)


def test_a_table_without_a_column_hls_always_had_is_refused_unchanged(empty_database_url: str) -> None:
    """A granule table lacking download_retries makes migrate fail naming it, and nothing changes."""
    with psycopg.connect(empty_database_url) as conn:
        conn.execute(
            "CREATE TABLE granule (id varchar(256) PRIMARY KEY, filename text, download_url text,"
            " downloaded boolean)"
        )
    before = _schema_fingerprint(empty_database_url)

    with pytest.raises(StoreError, match="download_retries") as refused:
        migrate(empty_database_url)

    assert "Nothing was changed" in str(refused.value)
    assert before == _schema_fingerprint(empty_database_url)


def test_migrate_gives_up_rather_than_queue_behind_a_long_transaction(empty_database_url: str) -> None:
    """While a transaction holds granule, migrate fails fast with a clear message; afterwards it completes."""
    _hls_database(empty_database_url, HLS_TODAY)
    reader = psycopg.connect(empty_database_url)
    try:
        reader.execute("SELECT count(*) FROM granule")  # ACCESS SHARE, held until the transaction ends
        started = time.monotonic()
        with pytest.raises(StoreError, match="gave up") as gave_up:
            migrate(empty_database_url, lock_timeout_seconds=0.5)
        waited = time.monotonic() - started
        # Meanwhile the table stays usable by everyone else.
        with psycopg.connect(empty_database_url) as other:
            other.execute("SET lock_timeout = '2s'")
            other.execute("UPDATE granule SET expired = expired WHERE id = 'S2A_MSIL1C_00'")
    finally:
        reader.close()

    assert waited < 5
    assert "long transaction" in str(gave_up.value)
    assert "state" not in _columns(empty_database_url, "granule")
    assert "state backfill" in migrate(empty_database_url)  # it now completes
    assert set(EXPECTED_COLUMNS) == set(_columns(empty_database_url, "granule"))


def test_an_index_build_behind_a_long_transaction_gives_up_and_is_finished_later(
    empty_database_url: str,
) -> None:
    """An index build waits for an open writer only up to the lock timeout; the next run builds it."""
    migrate(empty_database_url)
    with psycopg.connect(empty_database_url) as conn:
        conn.execute("DROP INDEX granule_state_idx")
    writer = psycopg.connect(empty_database_url)
    try:
        writer.execute("UPDATE granule SET expired = expired WHERE false")  # ROW EXCLUSIVE until it ends
        with pytest.raises(StoreError, match="gave up"):
            migrate(empty_database_url, lock_timeout_seconds=0.5)
    finally:
        writer.close()

    assert ["granule_state_idx"] == migrate(empty_database_url)
    assert {"granule_state_idx": True, "granule_in_progress_idx": True} == _index_validity(empty_database_url)


def test_an_index_left_invalid_by_an_interrupted_build_is_rebuilt(empty_database_url: str) -> None:
    """An INVALID index (as a failed CREATE INDEX CONCURRENTLY leaves) is dropped and built again."""
    migrate(empty_database_url)
    with psycopg.connect(empty_database_url) as conn:
        conn.execute(
            "UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'granule_state_idx'::regclass"
        )
    assert {"granule_state_idx": False, "granule_in_progress_idx": True} == _index_validity(
        empty_database_url
    )

    assert ["granule_state_idx"] == migrate(empty_database_url)
    assert {"granule_state_idx": True, "granule_in_progress_idx": True} == _index_validity(empty_database_url)


def test_a_constraint_added_but_not_yet_validated_is_validated(empty_database_url: str) -> None:
    """A run interrupted between NOT VALID and VALIDATE is finished by the next."""
    migrate(empty_database_url)
    with psycopg.connect(empty_database_url) as conn:
        conn.execute("UPDATE pg_constraint SET convalidated = false WHERE conname = 'granule_state_check'")

    assert ["granule_state_check"] == migrate(empty_database_url)


def test_the_state_backfill_runs_in_batches_over_many_rows(empty_database_url: str) -> None:
    """More rows than one batch: every finished row gets its state, by primary-key order, in batches."""
    with psycopg.connect(empty_database_url) as conn:
        conn.execute(HLS_TODAY)
        conn.execute(
            "INSERT INTO granule (id, filename, tileid, size, beginposition, endposition, ingestiondate,"
            " download_url, downloaded) SELECT 'g' || lpad(n::text, 6, '0'), 'f', 'T', 0,"
            " now(), now(), now(), 'u', n % 2 = 0 FROM generate_series(1, 12001) AS n"
        )

    migrate(empty_database_url)

    with psycopg.connect(empty_database_url) as conn:
        counts: dict[str, int] = dict(
            conn.execute("SELECT state, count(*) FROM granule GROUP BY state").fetchall()
        )
    assert {"verified": 6000, "pending": 6001} == counts


def test_a_database_migrated_by_revision_one_is_brought_up_to_date(empty_database_url: str) -> None:
    """The schema an earlier version left (files 0001 and 0002 recorded) only gains the new columns."""
    _hls_database(empty_database_url, HLS_FEB_2021)
    with psycopg.connect(empty_database_url) as conn:
        conn.execute(REVISION_ONE)
        conn.execute("UPDATE granule SET state = 'retrying' WHERE id = 'S2A_MSIL1C_00'")

    applied = migrate(empty_database_url)

    assert ["s3_key_lease table", "columns first_attempt_at, store_upload"] == applied
    assert set(EXPECTED_COLUMNS) == set(_columns(empty_database_url, "granule"))
    with psycopg.connect(empty_database_url) as conn:
        state = conn.execute("SELECT state FROM granule WHERE id = 'S2A_MSIL1C_00'").fetchone()
    assert ("retrying",) == state


# The schema the migration files of revision 1 left, as they ran (0001 + 0002).
REVISION_ONE = """
CREATE TABLE schema_migrations (version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());
INSERT INTO schema_migrations (version) VALUES ('0001_hls_schema'), ('0002_granule_state');
ALTER TABLE granule
    ADD COLUMN state text NOT NULL DEFAULT 'pending' CONSTRAINT granule_state_check
        CHECK (state IN ('pending', 'claimed', 'downloading', 'verified', 'retrying', 'failed')),
    ADD COLUMN lease_owner text NULL,
    ADD COLUMN lease_expires_at timestamptz NULL,
    ADD COLUMN last_error text NULL,
    ADD COLUMN upload_queued_at timestamptz NULL;
UPDATE granule SET state = CASE WHEN downloaded THEN 'verified' ELSE 'failed' END
WHERE downloaded OR download_failed;
CREATE INDEX granule_state_idx ON granule (state);
CREATE INDEX granule_in_progress_idx ON granule (download_started) WHERE state IN ('claimed', 'downloading');
"""
