"""deploy/alembic's revision, applied by alembic itself on real PostgreSQL after a stand-in of HLS's chain.

The chain (``hls_alembic/``: HLS's two revisions written from the table shapes of the shared
fixture, and an env that runs them as HLS's does, all in one transaction) brings a database to
``ec89745f0bac`` with rows in it; the revision then does what ``s2-downloader migrate`` does,
live-safe, the runner downloads the rows, and the downgrade gives HLS its table back.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import psycopg.rows
import pytest
import sqlalchemy.exc
from alembic import command
from alembic.config import Config

from s2_downloader.adapters.postgres import migrate
from s2_downloader.adapters.postgres.schema import _MIGRATION_LOCK
from s2_downloader.testing.stack import Pipeline
from tests.integration.e2e import assert_verified
from tests.integration.fixtures_stack import run_cli
from tests.integration.test_postgres_migrations import TODAY_COLUMNS

ROOT = Path(__file__).resolve().parents[2]
HLS_CHAIN = Path(__file__).resolve().parent / "hls_alembic"
REVISIONS = ROOT / "deploy" / "alembic" / "versions"
HLS_HEAD = "ec89745f0bac"
HEAD = "f0ad88f248fc"
MARK = f"added by s2-downloader alembic revision {HEAD}"

#: What HLS's first revision also had in February 2021 (``feb_2021_revision_1c8c38951d47``):
#: databases created then still have them at ``ec89745f0bac``.
FEB_2021_EXTRA = (
    ("in_progress", "boolean NOT NULL DEFAULT false"),
    ("uploaded", "boolean NOT NULL DEFAULT false"),
    ("download_failed", "boolean NOT NULL DEFAULT false"),
    ("download_started", "timestamp NULL"),
    ("download_finished", "timestamp NULL"),
)
MOMENT = dt.datetime(2024, 11, 25, 18, 13, 36)


def _config(url: str, *, lock_timeout: float | None = None) -> Config:
    """alembic's config for the stand-in chain plus deploy/alembic/versions, on database ``url``."""
    options = argparse.Namespace(x=[] if lock_timeout is None else [f"lock_timeout={lock_timeout}"])
    config = Config(cmd_opts=options)
    config.set_main_option("script_location", str(HLS_CHAIN))
    config.set_main_option("path_separator", "os")
    config.set_main_option(
        "version_locations", os.pathsep.join([str(HLS_CHAIN / "versions"), str(REVISIONS)])
    )
    config.set_main_option("sqlalchemy.url", url.replace("postgresql://", "postgresql+psycopg://", 1))
    return config


def _hls_database(url: str, *, feb_2021: bool = False, bulk: int = 0) -> None:
    """HLS's chain to ec89745f0bac, then rows as its link fetcher and downloader left them.

    32 rows with every combination of the flags the table has (and ``bulk`` more, pending
    or downloaded, so the backfill takes several batches), a granule_count and a status row.
    """
    command.upgrade(_config(url), HLS_HEAD)
    with psycopg.connect(url) as conn:
        if feb_2021:
            for name, kind in FEB_2021_EXTRA:
                conn.execute(f"ALTER TABLE granule ADD COLUMN {name} {kind}")
        for number in range(32):
            downloaded, expired, failed, in_progress, uploaded = (
                bool(number & bit) for bit in (1, 2, 4, 8, 16)
            )
            row: dict[str, Any] = {
                "id": f"S2B_MSIL1C_{number:02d}",
                "filename": f"S2B_MSIL1C_{number:02d}.SAFE",
                "tileid": "32TQM",
                "size": 700_000_000 + number,
                "beginposition": MOMENT,
                "endposition": MOMENT + dt.timedelta(seconds=1),
                "ingestiondate": MOMENT + dt.timedelta(hours=3),
                "download_url": f"https://catalogue.dataspace.copernicus.eu/odata/v1/Products({number})/$value",
                "checksum": "ABCDEF0123456789ABCDEF0123456789" if downloaded else "",
                "downloaded": downloaded,
                "download_retries": number % 12,
                "expired": expired,
            }
            if feb_2021:
                row |= {
                    "download_failed": failed and not downloaded,
                    "in_progress": in_progress,
                    "uploaded": uploaded,
                    "download_started": MOMENT if in_progress or downloaded else None,
                    "download_finished": MOMENT if downloaded else None,
                }
            names = ", ".join(row)
            conn.execute(
                f"INSERT INTO granule ({names}) VALUES ({', '.join(['%s'] * len(row))})",
                list(row.values()),
            )
        if bulk:
            conn.execute(
                "INSERT INTO granule (id, filename, tileid, size, beginposition, endposition, ingestiondate,"
                " download_url, downloaded)"
                " SELECT 'BULK' || lpad(n::text, 7, '0'), 'BULK.SAFE', '32TQM', n, now(), now(), now(), 'u',"
                " n %% 3 = 0 FROM generate_series(1, %s) AS n",
                (bulk,),
            )
        conn.execute("INSERT INTO granule_count VALUES ('2024-11-25', 10, 9, %s, 'S2B')", (MOMENT,))
        conn.execute("INSERT INTO status VALUES ('last_linkfetch_time', '2024-11-25T12:00:00')")


def _catalogue(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """The schema as the catalogue shows it: tables, columns, constraints (validated?), indexes (valid?)."""
    with psycopg.connect(url) as conn:
        return {
            "columns": conn.execute(
                "SELECT table_name, column_name, data_type, character_maximum_length, is_nullable,"
                " column_default FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2"
            ).fetchall(),
            "constraints": conn.execute(
                "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), convalidated"
                " FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2"
            ).fetchall(),
            "indexes": conn.execute(
                "SELECT c.relname, pg_get_indexdef(i.indexrelid), i.indisvalid FROM pg_index i"
                " JOIN pg_class c ON c.oid = i.indexrelid"
                " WHERE c.relnamespace = 'public'::regnamespace ORDER BY 1"
            ).fetchall(),
        }


def _marks(url: str) -> int:
    """How many objects carry the revision's mark (its bookkeeping, not part of the schema)."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM pg_description WHERE description = %s", (MARK,)).fetchone()
    assert row is not None
    return int(row[0])


def _rows(url: str, table: str = "granule") -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cursor:
        cursor.execute(f"SELECT * FROM {table} ORDER BY 1")
        return cursor.fetchall()


def _columns(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = 'public' AND table_name = 'granule' ORDER BY ordinal_position"
        ).fetchall()
    return [row[0] for row in rows]


def _version(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    assert row is not None
    return str(row[0])


@pytest.fixture
def second_database_url(postgres_server: Any) -> Iterator[str]:
    """Another empty database, for comparing the revision's result with migrate's."""
    url: str = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url.rsplit("/", 1)[1])


# -- the revision is migrate ----------------------------------------------------------------------


def test_the_revision_makes_the_schema_migrate_makes(
    empty_database_url: str, second_database_url: str
) -> None:
    """On two copies of HLS's database, the revision and migrate leave the same schema and the same rows."""
    _hls_database(empty_database_url)
    _hls_database(second_database_url)

    command.upgrade(_config(empty_database_url), "head")
    migrate(second_database_url)

    assert HEAD == _version(empty_database_url)
    assert _catalogue(second_database_url) == _catalogue(empty_database_url)
    assert _rows(second_database_url) == _rows(empty_database_url)
    assert _rows(second_database_url, "schema_migrations")[0]["version"] == "state_backfill"
    assert ["state_backfill"] == [r["version"] for r in _rows(empty_database_url, "schema_migrations")]


def test_migrate_after_the_revision_changes_nothing(empty_database_url: str) -> None:
    """migrate finds nothing to do after the revision: no step, the same catalogue."""
    _hls_database(empty_database_url)
    command.upgrade(_config(empty_database_url), "head")
    before = _catalogue(empty_database_url)

    assert [] == migrate(empty_database_url)
    assert before == _catalogue(empty_database_url)


def test_the_revision_after_migrate_changes_nothing(empty_database_url: str) -> None:
    """After migrate the revision only moves alembic's version: same catalogue, nothing marked as its own."""
    _hls_database(empty_database_url)
    migrate(empty_database_url)
    before = _catalogue(empty_database_url), _rows(empty_database_url)

    command.upgrade(_config(empty_database_url), "head")

    assert (HEAD, before, 0) == (
        _version(empty_database_url),
        (_catalogue(empty_database_url), _rows(empty_database_url)),
        _marks(empty_database_url),
    )


def test_the_backfill_in_batches_gives_every_row_its_state(empty_database_url: str) -> None:
    """12,001 more rows (three batches): downloaded ones verified, the rest pending, no lease anywhere."""
    _hls_database(empty_database_url, bulk=12_001)

    command.upgrade(_config(empty_database_url), "head")

    with psycopg.connect(empty_database_url) as conn:
        wrong = conn.execute(
            "SELECT count(*) FROM granule"
            " WHERE state <> CASE WHEN downloaded THEN 'verified' ELSE 'pending' END"
            " OR lease_owner IS NOT NULL OR in_progress OR download_failed"
        ).fetchone()
        total = conn.execute("SELECT count(*) FROM granule").fetchone()
    assert (0, 12_033) == (wrong and wrong[0], total and total[0])


def test_hls_runner_applies_the_whole_chain_and_the_revision_in_one_run(empty_database_url: str) -> None:
    """A new HLS deployment: base to head in one run (one transaction until the revision's own blocks)."""
    command.upgrade(_config(empty_database_url), "head")

    assert HEAD == _version(empty_database_url)
    assert [] == migrate(empty_database_url)


# -- live-safe ----------------------------------------------------------------------------------------


def test_a_long_transaction_makes_the_revision_give_up_not_queue(empty_database_url: str) -> None:
    """A transaction holding the table: the revision fails within its lock timeout and changes nothing."""
    _hls_database(empty_database_url)
    before = _catalogue(empty_database_url)
    with psycopg.connect(empty_database_url) as blocker:
        blocker.execute("SELECT count(*) FROM granule")  # an open transaction, as a slow reader's
        # Should the revision queue after all, the reader ends after 20 s and the test fails.
        release = threading.Timer(20, blocker.rollback)
        release.start()
        started = time.monotonic()
        try:
            with pytest.raises(sqlalchemy.exc.OperationalError, match="lock timeout"):
                command.upgrade(_config(empty_database_url, lock_timeout=0.5), "head")
        finally:
            elapsed = time.monotonic() - started
            release.cancel()
        blocker.rollback()

    assert elapsed < 10
    assert (HLS_HEAD, before) == (_version(empty_database_url), _catalogue(empty_database_url))
    command.upgrade(_config(empty_database_url), "head")
    assert HEAD == _version(empty_database_url)


def test_the_revision_waits_for_a_running_migrate(empty_database_url: str) -> None:
    """While migrate holds the migration lock the revision waits, then runs."""
    _hls_database(empty_database_url)
    held = threading.Event()

    def hold() -> None:
        with psycopg.connect(empty_database_url, autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
            held.set()
            time.sleep(1.5)

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(10)
    started = time.monotonic()
    command.upgrade(_config(empty_database_url), "head")
    elapsed = time.monotonic() - started
    holder.join(10)

    assert elapsed >= 1.0
    assert HEAD == _version(empty_database_url)


# -- downgrade --------------------------------------------------------------------------------------------


def test_downgrade_gives_hls_its_table_back_with_every_row(empty_database_url: str) -> None:
    """Up and down again: HLS's catalogue exactly, every row and value as before, other tables untouched."""
    _hls_database(empty_database_url)
    before = _catalogue(empty_database_url), _rows(empty_database_url)
    others = [_rows(empty_database_url, table) for table in ("granule_count", "status")]

    command.upgrade(_config(empty_database_url), "head")
    command.downgrade(_config(empty_database_url), HLS_HEAD)

    assert list(TODAY_COLUMNS) == _columns(empty_database_url)
    assert before == (_catalogue(empty_database_url), _rows(empty_database_url))
    assert others == [_rows(empty_database_url, table) for table in ("granule_count", "status")]
    assert (HLS_HEAD, 0) == (_version(empty_database_url), _marks(empty_database_url))


def test_downgrade_keeps_the_columns_hls_had_in_february_2021(empty_database_url: str) -> None:
    """An old HLS table keeps in_progress, download_failed and the rest: only what the revision added goes."""
    _hls_database(empty_database_url, feb_2021=True)
    before = _catalogue(empty_database_url), _rows(empty_database_url)

    command.upgrade(_config(empty_database_url), "head")
    command.downgrade(_config(empty_database_url), HLS_HEAD)

    assert [*TODAY_COLUMNS, *(name for name, _ in FEB_2021_EXTRA)] == _columns(empty_database_url)
    assert before == (_catalogue(empty_database_url), _rows(empty_database_url))


def test_downgrade_after_migrate_removes_nothing(empty_database_url: str) -> None:
    """What migrate added, the revision did not: its downgrade leaves it (and moves alembic's version)."""
    _hls_database(empty_database_url)
    migrate(empty_database_url)
    command.upgrade(_config(empty_database_url), "head")
    before = _catalogue(empty_database_url)

    command.downgrade(_config(empty_database_url), HLS_HEAD)

    assert (HLS_HEAD, before) == (_version(empty_database_url), _catalogue(empty_database_url))


# -- the runner on a database the revision upgraded -------------------------------------------------------


def test_the_runner_downloads_the_rows_of_an_upgraded_hls_database(pipeline: Pipeline) -> None:
    """HLS's chain, the link fetcher's rows and messages, the revision: the runner verifies them all;
    downgraded afterwards, HLS's table keeps what the downloads wrote."""
    url = pipeline.database_url
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    command.upgrade(_config(url), HLS_HEAD)
    products = pipeline.seed([(f"ALEMBIC{i}", (i + 1) * 40 * 1024) for i in range(4)])

    command.upgrade(_config(url), "head")
    result = run_cli(pipeline, "run", "--until-empty", "--concurrency", "2")

    assert 0 == result.returncode, result.stderr[-3000:]
    assert_verified(pipeline, products)
    verified = [{k: row[k] for k in TODAY_COLUMNS} for row in _rows(url)]
    command.downgrade(_config(url), HLS_HEAD)
    assert list(TODAY_COLUMNS) == _columns(url)
    assert verified == _rows(url)
    assert all(row["downloaded"] for row in verified)
