"""``migrate``: bring a database to the schema of docs/interface.md (the database), live-safe.

`migrate` brings any of these to the schema of docs/interface.md: an empty database,
HLS's table of February 2021 (alembic 1c8c38951d47), HLS's table of today (1c8c38951d47
+ ec89745f0bac, which lacks in_progress, uploaded, download_failed, download_started and
download_finished) and a database an earlier version of this project migrated. Each
step looks at the catalog and does only what is missing, so it is idempotent and a run
that stopped half-way is finished by the next. It is safe on a live database: every lock
wait is bounded by `lock_timeout` (it gives up instead of queueing behind a long
transaction, which would block the link fetcher behind it), the CHECK constraint is added
NOT VALID and validated apart, indexes are built CONCURRENTLY (an INVALID one left by an
interrupted build is dropped and built again), and existing rows get their state in
batches. Nothing here is newer than PostgreSQL 11.
"""

from __future__ import annotations

import importlib.resources
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final, LiteralString

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool

from s2_downloader.adapters.postgres.key_leases import KEY_LEASE_TABLE
from s2_downloader.adapters.postgres.pool import conninfo_of, describe_error
from s2_downloader.domain.errors import StoreError
from s2_downloader.domain.granule import State

__all__ = ["KEY_LEASE_DDL", "KEY_LEASE_TABLE", "migrate"]

#: The S3 store's key leases (who uploads to a key), as migrate and the alembic revision create it.
KEY_LEASE_DDL: Final = (
    "CREATE TABLE IF NOT EXISTS s3_key_lease (key text PRIMARY KEY,"
    " granule_id varchar(256) NOT NULL, lease_expires_at timestamptz NOT NULL)"
)

#: Any constant both migrators agree on; "S2DL" in ASCII.
_MIGRATION_LOCK: Final = 0x5332444C

#: Columns HLS's granule table has had in every form: without one, it is not that table.
_HLS_COLUMNS: Final = ("id", "filename", "download_url", "downloaded", "download_retries")

#: The columns migrate adds where missing, in order, typed and defaulted as the interface
#: says: HLS's legacy flags first (today's HLS table lacks some), then this project's.
_ADDED_COLUMNS: Final[tuple[tuple[str, LiteralString], ...]] = (
    ("checksum", "varchar(256) NOT NULL DEFAULT ''"),
    ("in_progress", "boolean NOT NULL DEFAULT false"),
    ("uploaded", "boolean NOT NULL DEFAULT false"),
    ("download_failed", "boolean NOT NULL DEFAULT false"),
    ("expired", "boolean NOT NULL DEFAULT false"),
    ("download_started", "timestamp NULL"),
    ("download_finished", "timestamp NULL"),
    ("state", "text NOT NULL DEFAULT 'pending'"),
    ("lease_owner", "text NULL"),
    ("lease_expires_at", "timestamptz NULL"),
    ("last_error", "text NULL"),
    ("upload_queued_at", "timestamptz NULL"),
    ("first_attempt_at", "timestamp NULL"),
    ("store_upload", "jsonb NULL"),
)

_STATE_CHECK: Final = "granule_state_check"
_STATE_VALUES: Final = sql.SQL(", ").join(sql.Literal(state.value) for state in State)

#: name -> definition, built CONCURRENTLY where missing or INVALID.
_INDEXES: Final[Mapping[str, LiteralString]] = {
    # Counts per state for the status command.
    "granule_state_idx": "ON granule (state)",
    # The oldest in-progress lease, without scanning the (large, mostly finished) table.
    "granule_in_progress_idx": "ON granule (download_started) WHERE state IN ('claimed', 'downloading')",
}

#: Recorded in schema_migrations when every existing row has its state; the migration
#: file of revision 1 that did the same in one statement counts too.
_BACKFILL_DONE: Final = ("state_backfill", "0002_granule_state")
_BACKFILL_BATCH: Final = 5000

_NEXT_BATCH: Final = (
    "SELECT max(id) FROM (SELECT id FROM granule WHERE id > %s ORDER BY id LIMIT %s) AS batch"
)
# Rows whose legacy flags say they are finished take that state; others stay pending.
_BACKFILL: Final = (
    "UPDATE granule SET state = CASE WHEN downloaded THEN 'verified' ELSE 'failed' END"
    " WHERE id > %s AND id <= %s AND state = 'pending' AND (downloaded OR download_failed)"
)


class _GaveUp(Exception):
    """A lock was not granted within the bound; carries the operator's message."""


def migrate(
    target: str | ConnectionPool[Any],
    *,
    lock_timeout_seconds: float = 5.0,
    wait_for_other_migrate_seconds: float = 300.0,
) -> list[str]:
    """Create or upgrade the schema in ``target`` (a conninfo/URI or a pool); idempotent, live-safe.

    Returns what this call did (step names), empty when the schema was already up to
    date. Concurrent calls take turns on a session-level advisory lock. Raises
    ``StoreError`` with a clear message, having changed nothing more than the steps
    already finished, when a lock is not granted within ``lock_timeout_seconds``, and
    before any change when ``granule`` lacks a column HLS's table has always had.
    """
    conninfo = target if isinstance(target, str) else conninfo_of(target)
    try:
        with _migration_connection(conninfo) as conn:
            conn.execute(
                sql.SQL("SET lock_timeout = {}").format(
                    sql.Literal(f"{max(1, round(lock_timeout_seconds * 1000))}ms")
                )
            )
            # A concurrent index build or a batched backfill may take long: no statement bound.
            conn.execute("SET statement_timeout = 0")
            _take_turn(conn, wait_for_other_migrate_seconds)
            try:
                return _migrate_steps(conn)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    except _GaveUp as exc:
        raise StoreError(f"migrate gave up: {exc}") from exc
    except psycopg.errors.LockNotAvailable as exc:
        msg = (
            f"migrate gave up: a lock was not granted within {lock_timeout_seconds:g} s"
            " (a long transaction holds the table; migrate does not queue behind it and block"
            " others). What finished stays done; run migrate again when that transaction has"
            f" ended. ({describe_error('migrate', exc, conninfo)})"
        )
        raise StoreError(msg) from exc
    except psycopg.Error as exc:
        raise StoreError(describe_error("migrate", exc, conninfo)) from exc


@contextmanager
def _migration_connection(conninfo: str) -> Iterator[psycopg.Connection[Any]]:
    # Its own connection, in autocommit: CREATE INDEX CONCURRENTLY cannot run in a
    # transaction block, and each step opens the transaction it needs.
    extra = {} if "connect_timeout" in conninfo_to_dict(conninfo) else {"connect_timeout": 10}
    with psycopg.connect(make_conninfo(conninfo, **extra), autocommit=True) as conn:
        yield conn


def _take_turn(conn: psycopg.Connection[Any], wait_seconds: float) -> None:
    # Polled, not waited for in one statement: a session waiting inside pg_advisory_lock
    # holds a snapshot, and the concurrent index build of the migrator it waits for would
    # wait for that snapshot in turn.
    deadline = time.monotonic() + wait_seconds
    while True:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (_MIGRATION_LOCK,)).fetchone()
        if row is not None and row[0]:
            return
        if time.monotonic() >= deadline:
            msg = f"another migrate has held the migration lock for over {wait_seconds:g} s"
            raise _GaveUp(msg)
        time.sleep(0.1)


def _migrate_steps(conn: psycopg.Connection[Any]) -> list[str]:
    done: list[str] = []
    existing = _columns(conn)
    if existing:
        missing = [column for column in _HLS_COLUMNS if column not in existing]
        if missing:
            msg = (
                f"table granule has no column {', '.join(missing)}, which HLS's granule table"
                " has always had: not an HLS downloader database? Nothing was changed."
            )
            raise _GaveUp(msg)
    with conn.transaction():
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        if not existing:
            conn.execute(_hls_schema())
            done.append("tables")
            existing = _columns(conn)
        done += _create_side_tables(conn)
    # One short ACCESS EXCLUSIVE lock for every missing column and the constraint: with
    # constant defaults (PostgreSQL 11) adding a column rewrites nothing.
    missing_columns = [(name, kind) for name, kind in _ADDED_COLUMNS if name not in existing]
    constraint = _constraint_validated(conn, _STATE_CHECK)
    if missing_columns or constraint is None:
        with conn.transaction():
            for name, kind in missing_columns:
                conn.execute(
                    sql.SQL("ALTER TABLE granule ADD COLUMN IF NOT EXISTS {} {}").format(
                        sql.Identifier(name), sql.SQL(kind)
                    )
                )
            if constraint is None:
                conn.execute(
                    sql.SQL("ALTER TABLE granule ADD CONSTRAINT {} CHECK (state IN ({})) NOT VALID").format(
                        sql.Identifier(_STATE_CHECK), _STATE_VALUES
                    )
                )
        if missing_columns:
            done.append("columns " + ", ".join(name for name, _ in missing_columns))
    if not _constraint_validated(conn, _STATE_CHECK):
        # A scan under SHARE UPDATE EXCLUSIVE: reads and writes go on meanwhile.
        conn.execute(
            sql.SQL("ALTER TABLE granule VALIDATE CONSTRAINT {}").format(sql.Identifier(_STATE_CHECK))
        )
        done.append(_STATE_CHECK)
    if _backfill(conn):
        done.append("state backfill")
    for name, definition in _INDEXES.items():
        if _build_index(conn, name, definition):
            done.append(name)
    return done


def _create_side_tables(conn: psycopg.Connection[Any]) -> list[str]:
    """``status`` and the S3 store's key leases (``key_leases.py``) where missing; what was created.

    New tables of their own: creating them locks nothing another writer uses.
    """
    done: list[str] = []
    if not _table_exists(conn, "status"):
        conn.execute("CREATE TABLE status (key_name varchar(256) PRIMARY KEY, value varchar(256) NOT NULL)")
        done.append("status table")
    if not _table_exists(conn, KEY_LEASE_TABLE):
        conn.execute(KEY_LEASE_DDL)
        done.append(f"{KEY_LEASE_TABLE} table")
    return done


def _hls_schema() -> bytes:
    folder = importlib.resources.files("s2_downloader.adapters") / "migrations"
    return (folder / "hls_schema.sql").read_bytes()


def _columns(conn: psycopg.Connection[Any]) -> set[str]:
    rows = conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass('granule')"
        " AND attnum > 0 AND NOT attisdropped"
    ).fetchall()
    return {row[0] for row in rows}


def _table_exists(conn: psycopg.Connection[Any], name: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    return bool(row and row[0])


def _constraint_validated(conn: psycopg.Connection[Any], name: str) -> bool | None:
    """Whether the granule constraint ``name`` is validated; ``None`` when there is none."""
    row = conn.execute(
        "SELECT convalidated FROM pg_constraint WHERE conrelid = to_regclass('granule') AND conname = %s",
        (name,),
    ).fetchone()
    return None if row is None else bool(row[0])


def _backfill(conn: psycopg.Connection[Any]) -> bool:
    recorded = conn.execute(
        "SELECT 1 FROM schema_migrations WHERE version = ANY(%s)", (list(_BACKFILL_DONE),)
    ).fetchone()
    if recorded is not None:
        return False
    # In primary-key order, one short transaction per batch. Rows not reached yet are
    # safe meanwhile: at claim the legacy flags win over a `pending` state.
    after = ""
    while True:
        row = conn.execute(_NEXT_BATCH, (after, _BACKFILL_BATCH)).fetchone()
        last = None if row is None else row[0]
        if last is None:
            break
        conn.execute(_BACKFILL, (after, last))
        after = last
    conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (_BACKFILL_DONE[0],))
    return True


def _build_index(conn: psycopg.Connection[Any], name: str, definition: LiteralString) -> bool:
    row = conn.execute(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE c.relname = %s AND i.indrelid = to_regclass('granule')",
        (name,),
    ).fetchone()
    if row is not None and row[0]:
        return False
    index = sql.Identifier(name)
    if row is not None:
        # Left INVALID by an interrupted concurrent build: it slows writes and serves no read.
        conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(index))
    conn.execute(sql.SQL("CREATE INDEX CONCURRENTLY {} {}").format(index, sql.SQL(definition)))
    return True


#: The columns of HLS's table today (alembic ec89745f0bac) that migrate does not add.
_HLS_TODAY_COLUMNS: Final = (
    "id",
    "filename",
    "tileid",
    "size",
    "beginposition",
    "endposition",
    "ingestiondate",
    "download_url",
    "downloaded",
    "download_retries",
)


def required_columns() -> tuple[str, ...]:
    """Every column of a migrated ``granule`` table: HLS's own and what ``migrate`` adds."""
    return _HLS_TODAY_COLUMNS + tuple(name for name, _ in _ADDED_COLUMNS)
