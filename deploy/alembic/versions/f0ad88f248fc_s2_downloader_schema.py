"""s2-downloader's schema on HLS's granule table: what `s2-downloader migrate` adds, live-safe

Revision ID: f0ad88f248fc
Revises: ec89745f0bac

For HLS's own migration runner (alembic_migration/ in NASA-IMPACT/hls-sentinel2-downloader-
serverless): copy this file into its versions/ and add ``s2_downloader`` to what that function
installs. The changes are ``migrate``'s, read from the same source
(``s2_downloader.adapters.postgres.schema``: the columns, the state check, the backfill, the
indexes, the lock both take turns on), and made as ``migrate`` makes them on a live database:

- every lock wait is bounded by ``lock_timeout`` (5 s; ``alembic -x lock_timeout=SECONDS``):
  it fails rather than queue behind a long transaction, and block the link fetcher behind it;
- the missing columns and the CHECK constraint (NOT VALID) in one short transaction, with
  constant defaults, so no row is rewritten;
- then outside any transaction (alembic's ``autocommit_block``): VALIDATE CONSTRAINT (reads and
  writes go on), the state of existing rows in batches of one short transaction each, and the
  indexes built CONCURRENTLY (one left INVALID by an interrupted build is dropped first);
- serialised with ``s2-downloader migrate`` by the same session-level advisory lock, polled
  outside a transaction (released when the connection closes, as HLS's env closes it).

What this revision adds is marked with a comment naming it, so the downgrade removes exactly
that: on a database where ``migrate`` ran first, this revision adds nothing and its downgrade
removes nothing; HLS's own columns (those of its first revision as of February 2021 too) are
never dropped. It needs a live connection (no ``--sql``) and PostgreSQL 11 or later.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import sqlalchemy as sa
from alembic import context, op

from s2_downloader.adapters.postgres import schema
from s2_downloader.domain.granule import State

# revision identifiers, used by Alembic.
revision = "f0ad88f248fc"
down_revision = "ec89745f0bac"
branch_labels = None
depends_on = None

#: The comment on everything this revision adds; the downgrade removes what carries it.
MARK: Final = f"added by s2-downloader alembic revision {revision}"
_LOCK_TIMEOUT_SECONDS: Final = 5.0
#: How long to wait for a running ``s2-downloader migrate`` to finish.
_WAIT_FOR_MIGRATE_SECONDS: Final = 300.0
_IDENTIFIER: Final = re.compile(r"[a-z_][a-z0-9_]*")

# The DDL of ``migrate``, not written a second time.
_ADDED_COLUMNS: Final = schema._ADDED_COLUMNS
_INDEXES: Final = schema._INDEXES
_STATE_CHECK: Final = schema._STATE_CHECK
_MIGRATION_LOCK: Final = schema._MIGRATION_LOCK
_HLS_COLUMNS: Final = schema._HLS_COLUMNS
_NEXT_BATCH: Final = schema._NEXT_BATCH
_BACKFILL: Final = schema._BACKFILL
_BACKFILL_BATCH: Final = schema._BACKFILL_BATCH
_BACKFILL_RECORD: Final = schema._BACKFILL_DONE[0]
_STATES: Final = ", ".join(f"'{state.value}'" for state in State)


def upgrade() -> None:
    """Add what ``migrate`` adds, live-safe; mark each addition for the downgrade."""
    migration = op.get_context()
    with _turn():
        existing = _columns()
        missing = [column for column in _HLS_COLUMNS if column not in existing]
        if missing:
            msg = f"table granule lacks {', '.join(missing)}, which HLS's granule table has always had"
            raise RuntimeError(msg)
        # One short transaction, one ACCESS EXCLUSIVE lock: constant defaults rewrite nothing.
        if _relation("schema_migrations") is None:
            op.execute(
                "CREATE TABLE schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            op.execute(f"COMMENT ON TABLE schema_migrations IS '{MARK}'")
        if _relation(schema.KEY_LEASE_TABLE) is None:
            # A table of its own: creating it locks nothing the link fetcher uses.
            op.execute(schema.KEY_LEASE_DDL)
            op.execute(f"COMMENT ON TABLE {schema.KEY_LEASE_TABLE} IS '{MARK}'")
        for name, kind in _ADDED_COLUMNS:
            if name not in existing:
                op.execute(f"ALTER TABLE granule ADD COLUMN IF NOT EXISTS {_quoted(name)} {kind}")
                op.execute(f"COMMENT ON COLUMN granule.{_quoted(name)} IS '{MARK}'")
        if _constraint_validated() is None:
            check = _quoted(_STATE_CHECK)
            op.execute(f"ALTER TABLE granule ADD CONSTRAINT {check} CHECK (state IN ({_STATES})) NOT VALID")
            op.execute(f"COMMENT ON CONSTRAINT {check} ON granule IS '{MARK}'")
        with migration.autocommit_block():
            if not _constraint_validated():
                # A scan under SHARE UPDATE EXCLUSIVE: reads and writes go on meanwhile.
                op.execute(f"ALTER TABLE granule VALIDATE CONSTRAINT {_quoted(_STATE_CHECK)}")
            _backfill()
            for name, definition in _INDEXES.items():
                _build_index(name, definition)


def downgrade() -> None:
    """Remove what ``upgrade`` added (what carries its mark), and nothing else."""
    migration = op.get_context()
    with _turn():
        with migration.autocommit_block():
            for name in _INDEXES:
                if _comment("pg_class", _relation(name)) == MARK:
                    op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {_quoted(name)}")
        # One short transaction: dropping a column rewrites nothing either.
        constraint = _constraint_oid()
        if constraint is not None and _comment("pg_constraint", constraint) == MARK:
            op.execute(f"ALTER TABLE granule DROP CONSTRAINT {_quoted(_STATE_CHECK)}")
        for name in _marked_columns():
            op.execute(f"ALTER TABLE granule DROP COLUMN {_quoted(name)}")
        if _comment("pg_class", _relation("schema_migrations")) == MARK:
            op.execute("DROP TABLE schema_migrations")
        if _comment("pg_class", _relation(schema.KEY_LEASE_TABLE)) == MARK:
            op.execute(f"DROP TABLE {schema.KEY_LEASE_TABLE}")


# -- taking turns with migrate ------------------------------------------------------------------


@contextmanager
def _turn() -> Iterator[None]:
    """Bound lock waits, and hold ``migrate``'s advisory lock, for the duration of the block."""
    migration = op.get_context()
    if migration.as_sql:
        msg = "this revision reads the catalogue as it goes: run it online, not with --sql"
        raise RuntimeError(msg)
    seconds = float(context.get_x_argument(as_dictionary=True).get("lock_timeout", _LOCK_TIMEOUT_SECONDS))
    with migration.autocommit_block():
        previous = _scalar("SELECT current_setting('lock_timeout')")
        _scalar(
            "SELECT set_config('lock_timeout', :value, false)", value=f"{max(1, round(seconds * 1000))}ms"
        )
        _take_migration_lock()
    yield
    with migration.autocommit_block():
        _scalar("SELECT pg_advisory_unlock(:key)", key=_MIGRATION_LOCK)
        _scalar("SELECT set_config('lock_timeout', :value, false)", value=previous)


def _take_migration_lock() -> None:
    # Polled in autocommit, as migrate polls it: a session waiting inside pg_advisory_lock
    # holds a snapshot that the other migrator's concurrent index build would wait for.
    deadline = time.monotonic() + _WAIT_FOR_MIGRATE_SECONDS
    while not _scalar("SELECT pg_try_advisory_lock(:key)", key=_MIGRATION_LOCK):
        if time.monotonic() >= deadline:
            msg = (
                f"s2-downloader migrate has held the migration lock for over {_WAIT_FOR_MIGRATE_SECONDS:g} s"
            )
            raise RuntimeError(msg)
        time.sleep(0.1)


# -- steps -----------------------------------------------------------------------------------------------


def _backfill() -> None:
    """Existing rows take the state their legacy flags say, in short batches (autocommit)."""
    if _scalar("SELECT count(*) FROM schema_migrations WHERE version = :v", v=_BACKFILL_RECORD):
        return
    # migrate's own statements (%s parameters): on the driver's cursor, each its own transaction.
    cursor = op.get_bind().connection.cursor()
    try:
        after = ""
        while True:
            cursor.execute(_NEXT_BATCH, (after, _BACKFILL_BATCH))
            row = cursor.fetchone()
            last = None if row is None else row[0]
            if last is None:
                break
            cursor.execute(_BACKFILL, (after, last))
            after = last
    finally:
        cursor.close()
    _scalar("INSERT INTO schema_migrations (version) VALUES (:v) RETURNING version", v=_BACKFILL_RECORD)


def _build_index(name: str, definition: str) -> None:
    index = _quoted(name)
    valid = _scalar(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE c.relname = :name AND i.indrelid = to_regclass('granule')",
        name=name,
    )
    if valid:
        return
    mark = valid is None or _comment("pg_class", _relation(name)) == MARK
    if valid is not None:
        # Left INVALID by an interrupted concurrent build: it slows writes and serves no read.
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {index}")
    op.execute(f"CREATE INDEX CONCURRENTLY {index} {definition}")
    if mark:
        op.execute(f"COMMENT ON INDEX {index} IS '{MARK}'")


# -- the catalogue ----------------------------------------------------------------------------------


def _scalar(statement: str, **params: Any) -> Any:
    return op.get_bind().execute(sa.text(statement), params).scalar()


def _columns() -> set[str]:
    rows = op.get_bind().execute(
        sa.text(
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass('granule')"
            " AND attnum > 0 AND NOT attisdropped"
        )
    )
    return {row[0] for row in rows}


def _marked_columns() -> list[str]:
    rows = op.get_bind().execute(
        sa.text(
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass('granule')"
            " AND attnum > 0 AND NOT attisdropped AND col_description(attrelid, attnum) = :mark"
            " ORDER BY attnum DESC"
        ),
        {"mark": MARK},
    )
    return [row[0] for row in rows]


def _relation(name: str) -> int | None:
    oid = _scalar("SELECT to_regclass(:name)::oid", name=name)
    return None if oid is None else int(oid)


def _constraint_oid() -> int | None:
    oid = _scalar(
        "SELECT oid FROM pg_constraint WHERE conrelid = to_regclass('granule') AND conname = :name",
        name=_STATE_CHECK,
    )
    return None if oid is None else int(oid)


def _constraint_validated() -> bool | None:
    """Whether the state check is validated; ``None`` when there is none."""
    validated = _scalar(
        "SELECT convalidated FROM pg_constraint WHERE conrelid = to_regclass('granule') AND conname = :name",
        name=_STATE_CHECK,
    )
    return None if validated is None else bool(validated)


def _comment(catalog: str, oid: int | None) -> str | None:
    if oid is None:
        return None
    value = _scalar("SELECT obj_description(CAST(:oid AS oid), :catalog)", oid=oid, catalog=catalog)
    return None if value is None else str(value)


def _quoted(name: str) -> str:
    # The names are migrate's constants; refuse anything that would need escaping.
    if not _IDENTIFIER.fullmatch(name):
        msg = f"not a plain identifier: {name!r}"
        raise ValueError(msg)
    return f'"{name}"'
