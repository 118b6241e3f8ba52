"""`migrate` on real PostgreSQL: an empty database, a second run, and an HLS database with rows."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import psycopg
import pytest
from psycopg import sql

from s2_downloader.adapters.postgres import PostgresGranuleStore, migrate, open_pool
from s2_downloader.domain.granule import State

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)

# The HLS downloader's schema as its alembic revision 1c8c38951d47 creates it.
HLS_SCHEMA = """
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

# What CONTRACT section 5 says each column is: (data type, length, nullable, default).
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
}


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


def test_migrate_creates_the_contract_schema_on_an_empty_database(empty_database_url: str) -> None:
    """An empty database gets the granule and status tables exactly as CONTRACT section 5 lists them."""
    applied = migrate(empty_database_url)

    assert ["0001_hls_schema", "0002_granule_state"] == applied
    assert EXPECTED_COLUMNS == _columns(empty_database_url, "granule")
    assert {
        "key_name": ("character varying", 256, "NO", None),
        "value": ("character varying", 256, "NO", None),
    } == _columns(empty_database_url, "status")


def test_migrate_twice_is_a_no_op(empty_database_url: str) -> None:
    """A second migrate applies nothing and leaves the schema as it was."""
    migrate(empty_database_url)
    before = _schema_fingerprint(empty_database_url)

    assert [] == migrate(empty_database_url)
    assert before == _schema_fingerprint(empty_database_url)


def test_state_column_rejects_values_outside_the_six_states(empty_database_url: str) -> None:
    """The CHECK constraint keeps `state` to the six lifecycle states."""
    migrate(empty_database_url)
    with psycopg.connect(empty_database_url) as conn:
        conn.execute(
            "INSERT INTO granule (id, filename, tileid, size, beginposition, endposition, ingestiondate,"
            " download_url) VALUES ('g', 'g.zip', 'T', 0, now(), now(), now(), '')"
        )
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("UPDATE granule SET state = 'lost' WHERE id = 'g'")


def test_concurrent_migrations_apply_each_file_once(empty_database_url: str) -> None:
    """Eight migrates at once all succeed and together apply every file exactly once."""
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
    assert ["0001_hls_schema", "0002_granule_state"] == sorted(v for applied in results for v in applied)


def _hls_database(url: str) -> None:
    """Create the HLS tables and fill them with rows of every combination of legacy flags."""
    with psycopg.connect(url) as conn:
        conn.execute(HLS_SCHEMA)
        # Naive, as HLS stores UTC.
        moment = dt.datetime(2021, 1, 14, 12, 30, 9, 347153)
        for number in range(32):
            flags = [bool(number & bit) for bit in (1, 2, 4, 8, 16)]
            downloaded, in_progress, uploaded, expired, failed = flags
            conn.execute(
                "INSERT INTO granule (id, filename, tileid, size, beginposition, endposition, ingestiondate,"
                " download_url, checksum, downloaded, in_progress, uploaded, download_retries,"
                " download_failed, expired, download_started, download_finished)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    f"S2A_MSIL1C_{number:02d}",
                    f"S2A_MSIL1C_{number:02d}.zip",
                    "32TQM",
                    700_000_000 + number,
                    moment,
                    moment + dt.timedelta(seconds=1),
                    moment + dt.timedelta(hours=3),
                    f"https://scihub.copernicus.eu/dhus/odata/v1/Products('{number}')/$value",
                    "" if number % 3 else "ABCDEF0123456789ABCDEF0123456789",
                    downloaded,
                    in_progress,
                    uploaded,
                    number % 12,
                    failed,
                    expired,
                    moment if in_progress or downloaded else None,
                    moment + dt.timedelta(minutes=5) if downloaded else None,
                ),
            )
        conn.execute("INSERT INTO granule_count VALUES ('2021-01-14', 10, 9, %s)", (moment,))
        conn.execute("INSERT INTO status VALUES ('last_linkfetch_time', '2021-01-14T12:00:00')")


def test_upgrading_an_hls_database_keeps_every_legacy_value(empty_database_url: str) -> None:
    """Migrating an HLS database (twice) changes no legacy value of any row of any table."""
    _hls_database(empty_database_url)
    rows_before = _legacy_rows(empty_database_url)
    with psycopg.connect(empty_database_url) as conn:
        others_before = [
            conn.execute("SELECT * FROM granule_count").fetchall(),
            conn.execute("SELECT * FROM status").fetchall(),
        ]

    migrate(empty_database_url)
    migrate(empty_database_url)

    assert rows_before == _legacy_rows(empty_database_url)
    with psycopg.connect(empty_database_url) as conn:
        assert others_before == [
            conn.execute("SELECT * FROM granule_count").fetchall(),
            conn.execute("SELECT * FROM status").fetchall(),
        ]


def test_upgrading_an_hls_database_derives_state_from_legacy_flags(empty_database_url: str) -> None:
    """downloaded becomes verified, download_failed failed, anything else pending; no row gets a lease."""
    _hls_database(empty_database_url)

    migrate(empty_database_url)

    with psycopg.connect(empty_database_url) as conn:
        rows = conn.execute(
            "SELECT downloaded, download_failed, state, lease_owner, lease_expires_at, upload_queued_at"
            " FROM granule"
        ).fetchall()
    assert 32 == len(rows)
    for downloaded, failed, state, *added in rows:
        expected = "verified" if downloaded else "failed" if failed else "pending"
        assert (expected, [None, None, None]) == (state, added)


def test_a_row_inserted_later_with_only_hls_columns_is_pending_and_claimable(empty_database_url: str) -> None:
    """A granule the HLS link fetcher inserts after the upgrade starts pending and can be claimed."""
    _hls_database(empty_database_url)
    migrate(empty_database_url)
    with psycopg.connect(empty_database_url) as conn:
        conn.execute(
            "INSERT INTO granule (id, filename, tileid, size, beginposition, endposition, ingestiondate,"
            " download_url) VALUES ('S2B_NEW', 'S2B_NEW.zip', '32TQM', 1, now(), now(), now(), 'u')"
        )

    with open_pool(empty_database_url, max_size=2) as pool:
        store = PostgresGranuleStore(pool)
        before = store.get("S2B_NEW")
        claimed = store.claim("S2B_NEW", "w-1", NOW, 60)

    assert before is not None
    assert State.PENDING == before.state
    assert claimed is not None
    assert (State.CLAIMED, True) == (claimed.state, claimed.held_by("w-1"))
