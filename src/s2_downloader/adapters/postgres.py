"""The granule table in PostgreSQL: leases by conditional UPDATE, legacy HLS columns kept in step.

The schema is the one docs/interface.md (the database) describes, created or upgraded
by ``migrate`` in idempotent, live-safe steps (see its section below). Each lifecycle
event is one conditional UPDATE whose allowed from-states and next state come from
``lifecycle.TRANSITIONS``; the legacy flags (``in_progress``, ``downloaded``,
``download_failed``) are set in that same statement.
psycopg errors leave this module as ``StoreError`` with any password removed.

Leases are on the database's clock: claim, heartbeat and the expiry test use ``now()``
in the statement, never the ``now`` a worker passes in, so workers whose clocks disagree
neither take over a live lease nor hold a granule past its lease. (Write ``now()``, not
``CURRENT_TIMESTAMP``: the tests stand a settable clock in for ``now()`` by search path.)
"""

from __future__ import annotations

import datetime as dt
import importlib.resources
import re
import time
import types
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final, LiteralString, TypeVar, assert_never

import attrs
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from s2_downloader.domain import lifecycle
from s2_downloader.domain.errors import InvalidTransition, StoreError
from s2_downloader.domain.granule import Granule, Lease, State

__all__ = [
    "LAST_FILE_DOWNLOADED_TIME",
    "InProgressLease",
    "PostgresGranuleStore",
    "StoreStatus",
    "migrate",
    "open_pool",
]

#: The ``status`` row that holds the time of the latest verified download.
LAST_FILE_DOWNLOADED_TIME: Final = "last_file_downloaded_time"

_T = TypeVar("_T")

# -- migrations ---------------------------------------------------------------------
#
# `migrate` brings any of these to the schema of docs/interface.md: an empty database,
# HLS's table of February 2021 (alembic 1c8c38951d47), HLS's table of today (1c8c38951d47
# + ec89745f0bac, which lacks in_progress, uploaded, download_failed, download_started and
# download_finished) and a database an earlier version of this project migrated. Each
# step looks at the catalog and does only what is missing, so it is idempotent and a run
# that stopped half-way is finished by the next. It is safe on a live database: every lock
# wait is bounded by `lock_timeout` (it gives up instead of queueing behind a long
# transaction, which would block the link fetcher behind it), the CHECK constraint is added
# NOT VALID and validated apart, indexes are built CONCURRENTLY (an INVALID one left by an
# interrupted build is dropped and built again), and existing rows get their state in
# batches. Nothing here is newer than PostgreSQL 11.

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
    conninfo = target if isinstance(target, str) else _conninfo(target)
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
            f" ended. ({_describe('migrate', exc, conninfo)})"
        )
        raise StoreError(msg) from exc
    except psycopg.Error as exc:
        raise StoreError(_describe("migrate", exc, conninfo)) from exc


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
        if not _table_exists(conn, "status"):
            conn.execute(
                "CREATE TABLE status (key_name varchar(256) PRIMARY KEY, value varchar(256) NOT NULL)"
            )
            done.append("status table")
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


def open_pool(
    conninfo: str,
    *,
    min_size: int = 1,
    max_size: int = 16,
    timeout: float = 10.0,
    connect_timeout: int = 10,
    name: str = "s2-downloader",
    options: str = "",
) -> ConnectionPool[psycopg.Connection[Any]]:
    """Open a pool that checks each connection before lending it out.

    The check costs one round trip and means a PostgreSQL restart or failover costs no
    request: dead connections are replaced instead of handed out. ``timeout`` bounds how
    long a caller waits for a connection. ``options`` are more server options
    (``-c name=value``) after the statement and lock timeouts.
    """
    return ConnectionPool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        name=name,
        check=ConnectionPool.check_connection,
        # Every statement and every silent network failure has a bound too: a stuck
        # lock or a dropped connection must not hang a claim or a heartbeat.
        kwargs={
            "connect_timeout": connect_timeout,
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
            "tcp_user_timeout": 60_000,
            "options": f"-c statement_timeout=60000 -c lock_timeout=15000 {options}".strip(),
        },
        open=True,
    )


# -- errors -------------------------------------------------------------------------

_PASSWORD_ASSIGNMENT = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_URI_CREDENTIALS = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


def _redact(text: str, conninfo: str) -> str:
    try:
        password = conninfo_to_dict(conninfo).get("password")
    except psycopg.Error:
        password = None
    if password:
        spellings = {
            str(password),
            urllib.parse.quote(str(password)),
            urllib.parse.quote(str(password), safe=""),
        }
        for spelling in sorted(spellings, key=len, reverse=True):
            text = text.replace(spelling, "***")
    text = _PASSWORD_ASSIGNMENT.sub(r"\1***", text)
    return _URI_CREDENTIALS.sub(r"\1***@", text)


def _conninfo(pool: ConnectionPool[Any]) -> str:
    # A pool may get its conninfo from a callable (rotating secrets); that one is not called
    # here, and the generic patterns of _redact still apply.
    return pool.conninfo if isinstance(pool.conninfo, str) else ""


def _describe(operation: str, exc: psycopg.Error, conninfo: str) -> str:
    detail = str(exc).strip() or type(exc).__name__
    return _redact(f"granule store: {operation} failed: {type(exc).__name__}: {detail}", conninfo)


# -- time ---------------------------------------------------------------------------


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _naive_utc(moment: dt.datetime) -> dt.datetime:
    # The legacy columns are `timestamp` (no zone); HLS writes UTC there.
    if moment.tzinfo is None:
        msg = f"expected a timezone-aware datetime, got {moment!r}"
        raise ValueError(msg)
    return moment.astimezone(dt.UTC).replace(tzinfo=None)


def _aware_utc(moment: dt.datetime) -> dt.datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


# -- rows ---------------------------------------------------------------------------

_COLUMNS: Final = (
    "id",
    "filename",
    "state",
    "download_retries",
    "checksum",
    "lease_owner",
    "lease_expires_at",
    "last_error",
    "upload_queued_at",
    "first_attempt_at",
)
_RETURNING: Final = sql.SQL(", ").join(sql.Identifier(column) for column in _COLUMNS)
_SELECT: Final = sql.SQL("SELECT {columns} FROM granule WHERE id = %(id)s").format(columns=_RETURNING)


def _granule(row: tuple[Any, ...]) -> Granule:
    granule_id, filename, state, retries, checksum, owner, expires_at, last_error, queued_at, first = row
    lease = None
    if owner is not None and expires_at is not None:
        lease = Lease(owner=owner, expires_at=_aware_utc(expires_at))
    return Granule(
        id=granule_id,
        filename=filename,
        state=State(state),
        download_retries=retries,
        checksum=checksum,
        lease=lease,
        last_error=last_error,
        upload_sent=queued_at is not None,
        first_attempt_at=None if first is None else _aware_utc(first),
    )


# -- one UPDATE per event, from the transition table ---------------------------------

# The states in which a lease can be renewed are the states that hold one.
_LEASED: Final = frozenset(state for state, kind in lifecycle.TRANSITIONS if kind is lifecycle.Heartbeat)


def _moves(kind: type[lifecycle.Event]) -> dict[State, State]:
    return {state: target for (state, event), target in lifecycle.TRANSITIONS.items() if event is kind}


def _acts_under_lease(kind: type[lifecycle.Event]) -> bool:
    # As in lifecycle.apply: an event carrying an owner is only legal for the lease holder,
    # except a Claim, which takes the lease.
    return kind is not lifecycle.Claim and "owner" in attrs.fields_dict(kind)


def _by_state(moves: Mapping[State, State], value_of: Callable[[State], object]) -> sql.Composable:
    """The value each from-state leads to, as one literal when they agree, else a CASE on ``state``."""
    values = {state: value_of(target) for state, target in moves.items()}
    distinct = set(values.values())
    if len(distinct) == 1:
        return sql.Literal(distinct.pop())
    whens = sql.SQL(" ").join(
        sql.SQL("WHEN {} THEN {}").format(sql.Literal(state.value), sql.Literal(value))
        for state, value in values.items()
    )
    return sql.SQL("CASE state {} END").format(whens)


def _states(states: Iterable[State]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Literal(state.value) for state in sorted(states, key=lambda s: s.value))


_CLEAR_LEASE: Final[Mapping[str, LiteralString]] = {"lease_owner": "NULL", "lease_expires_at": "NULL"}

_HELD_BY_OWNER: Final = sql.SQL("lease_owner = %(owner)s AND lease_expires_at IS NOT NULL")

# Mirrors lifecycle's _claim: only a live lease in a leased state keeps others out, live
# by the database's clock.
_CLAIMABLE: Final = sql.SQL(
    "(state NOT IN ({leased}) OR lease_owner IS NULL OR lease_expires_at IS NULL"
    " OR lease_expires_at <= now())"
).format(leased=_states(_LEASED))

#: The database's clock as the legacy columns hold time (``timestamp``, UTC).
_NOW_NAIVE: Final = "(now() AT TIME ZONE 'UTC')"

#: The columns each event sets besides the state and the legacy flags.
_EFFECTS: Final[Mapping[type[lifecycle.Event], Mapping[str, LiteralString]]] = {
    lifecycle.Claim: {
        "lease_owner": "%(owner)s",
        "lease_expires_at": "now() + %(lease)s",
        "download_started": _NOW_NAIVE,
        # The deferral budget runs from the first claim; only a revival clears it.
        "first_attempt_at": f"COALESCE(first_attempt_at, {_NOW_NAIVE})",
    },
    lifecycle.StartDownload: {},
    lifecycle.Heartbeat: {"lease_expires_at": "now() + %(lease)s"},
    lifecycle.Verify: {
        **_CLEAR_LEASE,
        "checksum": "%(checksum)s",
        "last_error": "NULL",
        "download_finished": "%(finished_naive)s",
    },
    lifecycle.CountFailure: {
        **_CLEAR_LEASE,
        "download_retries": "download_retries + 1",
        "last_error": "%(error)s",
    },
    lifecycle.Exhaust: {
        **_CLEAR_LEASE,
        "download_retries": "download_retries + 1",
        "last_error": "%(error)s",
    },
    lifecycle.GiveUp: {**_CLEAR_LEASE, "last_error": "%(error)s"},
    lifecycle.Postpone: {**_CLEAR_LEASE, "last_error": "%(error)s"},
    lifecycle.Abandon: {**_CLEAR_LEASE, "last_error": "%(error)s"},
    lifecycle.Release: _CLEAR_LEASE,
    lifecycle.MarkUploadSent: {"upload_queued_at": "%(queued_at)s"},
}


def _update_for(kind: type[lifecycle.Event]) -> sql.Composed:
    moves = _moves(kind)
    assignments: dict[str, sql.Composable] = {
        "state": _by_state(moves, lambda target: target.value),
        "in_progress": _by_state(moves, lambda target: target in _LEASED),
        "downloaded": _by_state(moves, lambda target: target is State.VERIFIED),
        "download_failed": _by_state(moves, lambda target: target is State.FAILED),
    }
    assignments.update({column: sql.SQL(value) for column, value in _EFFECTS[kind].items()})
    conditions: list[sql.Composable] = [
        sql.SQL("id = %(id)s"),
        sql.SQL("state IN ({})").format(_states(set(moves))),
    ]
    if _acts_under_lease(kind):
        conditions.append(_HELD_BY_OWNER)
    if kind is lifecycle.Claim:
        conditions.append(_CLAIMABLE)
    return sql.SQL("UPDATE granule SET {assignments} WHERE {conditions} RETURNING {columns}").format(
        assignments=sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier(column), value) for column, value in assignments.items()
        ),
        conditions=sql.SQL(" AND ").join(conditions),
        columns=_RETURNING,
    )


_UPDATES: Final[Mapping[type[lifecycle.Event], sql.Composed]] = types.MappingProxyType(
    {kind: _update_for(kind) for kind in _EFFECTS}
)

# Another HLS writer (or a row the batched backfill has not reached) may have set a legacy
# flag behind the state's back: the flag wins, before anything else is decided.
_ADOPT_LEGACY_FLAGS: Final = sql.SQL(
    "UPDATE granule SET state = CASE WHEN downloaded THEN 'verified' ELSE 'failed' END,"
    " in_progress = false, lease_owner = NULL, lease_expires_at = NULL"
    " WHERE id = %(id)s AND ((downloaded AND state <> 'verified')"
    " OR (download_failed AND NOT downloaded AND state NOT IN ('verified', 'failed')))"
)

# A failed granule whose flags another HLS tool reset (download_failed false, retries within
# the budget) is revived: pending again, its deferral budget started afresh.
_REVIVE: Final = sql.SQL(
    "UPDATE granule SET state = 'pending', first_attempt_at = NULL"
    " WHERE id = %(id)s AND state = 'failed' AND NOT download_failed AND NOT downloaded"
    " AND download_retries <= %(max_retries)s"
)

_UPSERT_STATUS: Final = sql.SQL(
    "INSERT INTO status (key_name, value) VALUES (%(key)s, %(value)s)"
    " ON CONFLICT (key_name) DO UPDATE SET value = EXCLUDED.value"
)


_OLDEST_LEASE: Final = sql.SQL(
    "SELECT id, lease_owner, lease_expires_at, download_started FROM granule"
    " WHERE state IN ({leased})"
    " ORDER BY download_started ASC NULLS LAST, lease_expires_at ASC NULLS LAST, id"
    " LIMIT 1"
).format(leased=_states(_LEASED))


def _clean_text(text: str) -> str:
    # PostgreSQL text cannot hold NUL or lone surrogates; an error message quoting a binary
    # body may, and recording the failure matters more than those characters.
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def _lease(lease_seconds: float) -> dt.timedelta:
    # An interval rounded exactly as lifecycle rounds it, so a lease reads back as the
    # domain would build it from the database's clock.
    return dt.timedelta(seconds=lease_seconds)


# -- the status report ---------------------------------------------------------------


@attrs.frozen(kw_only=True)
class InProgressLease:
    """A granule being claimed or downloaded, and whose lease it is."""

    granule_id: str
    owner: str | None
    expires_at: dt.datetime | None
    started_at: dt.datetime | None


@attrs.frozen(kw_only=True)
class StoreStatus:
    """What ``s2-downloader status`` reports: counts per state, last download, oldest lease."""

    counts: Mapping[State, int]
    last_file_downloaded_time: str | None
    oldest_in_progress: InProgressLease | None

    @property
    def total(self) -> int:
        """How many granules the table holds."""
        return sum(self.counts.values())


# -- the store ----------------------------------------------------------------------


@attrs.define
class PostgresGranuleStore:
    """The ``GranuleStore`` port on the HLS ``granule`` table.

    ``pool`` should check connections before lending them (see ``open_pool``) so the
    store keeps working across a PostgreSQL restart. Leases, ``download_started`` and
    ``first_attempt_at`` use the database's clock and ignore the ``now`` passed in;
    ``clock`` gives the other times the events do not carry (``download_finished``,
    ``upload_queued_at``, ``last_file_downloaded_time``).

    At claim the legacy flags win over the state when another writer set them
    (``downloaded`` -> verified, ``download_failed`` -> failed), and, given ``max_retries``
    (the retry budget), a failed granule whose ``download_failed`` was reset with its
    retries within the budget is revived to pending.
    """

    pool: ConnectionPool[Any]
    clock: Callable[[], dt.datetime] = _utc_now
    max_retries: int | None = None

    def claim(self, granule_id: str, owner: str, now: dt.datetime, lease_seconds: float) -> Granule | None:
        """Take the lease if the granule is free; return it as it is after the attempt, or None."""
        event = lifecycle.Claim(owner=owner, now=now, lease_seconds=lease_seconds)

        def work(conn: psycopg.Connection[Any]) -> Granule | None:
            conn.execute(_ADOPT_LEGACY_FLAGS, {"id": granule_id})
            if self.max_retries is not None:
                conn.execute(_REVIVE, {"id": granule_id, "max_retries": self.max_retries})
            row = conn.execute(_UPDATES[lifecycle.Claim], self._params(granule_id, event)).fetchone()
            if row is None:
                row = conn.execute(_SELECT, {"id": granule_id}).fetchone()
            return None if row is None else _granule(row)

        # A repeat after a lost reply is harmless: the lease is then ours and still live.
        return self._run("claim", work, retry=True)

    def heartbeat(self, granule_id: str, owner: str, now: dt.datetime, lease_seconds: float) -> bool:
        """Extend ``owner``'s lease; ``False`` when ``owner`` does not hold it."""
        event = lifecycle.Heartbeat(owner=owner, now=now, lease_seconds=lease_seconds)

        def work(conn: psycopg.Connection[Any]) -> bool:
            cursor = conn.execute(_UPDATES[lifecycle.Heartbeat], self._params(granule_id, event))
            return cursor.fetchone() is not None

        # Idempotent: a repeat sets the same expiry.
        return self._run("heartbeat", work, retry=True)

    def record(self, granule_id: str, event: lifecycle.Event) -> Granule:
        """Apply ``event`` in one conditional UPDATE; raise ``InvalidTransition`` when it is not legal now."""

        def work(conn: psycopg.Connection[Any]) -> Granule:
            params = self._params(granule_id, event)
            row = conn.execute(_UPDATES[type(event)], params).fetchone()
            if row is None:
                raise self._invalid(conn, granule_id, event)
            if isinstance(event, lifecycle.Verify):
                conn.execute(
                    _UPSERT_STATUS,
                    {"key": LAST_FILE_DOWNLOADED_TIME, "value": params["finished"].isoformat()},
                )
            return _granule(row)

        return self._run(f"record {type(event).__name__}", work)

    def release(self, granule_id: str, owner: str) -> bool:
        """Hand the granule back unfinished; ``False`` when ``owner`` did not hold it."""
        event = lifecycle.Release(owner=owner)

        def work(conn: psycopg.Connection[Any]) -> bool:
            cursor = conn.execute(_UPDATES[lifecycle.Release], self._params(granule_id, event))
            return cursor.fetchone() is not None

        return self._run("release", work)

    def get(self, granule_id: str) -> Granule | None:
        """The granule as the table holds it, or ``None``; reads only."""

        def work(conn: psycopg.Connection[Any]) -> Granule | None:
            row = conn.execute(_SELECT, {"id": granule_id}).fetchone()
            return None if row is None else _granule(row)

        return self._run("get", work, retry=True)

    def status_report(self) -> StoreStatus:
        """Counts per state, ``last_file_downloaded_time`` and the oldest in-progress lease."""

        def work(conn: psycopg.Connection[Any]) -> StoreStatus:
            # One snapshot, so the three answers agree with each other.
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            counts = dict.fromkeys(State, 0)
            for state, count in conn.execute("SELECT state, count(*) FROM granule GROUP BY state"):
                counts[State(state)] = count
            last = conn.execute(
                "SELECT value FROM status WHERE key_name = %s", (LAST_FILE_DOWNLOADED_TIME,)
            ).fetchone()
            oldest = conn.execute(_OLDEST_LEASE).fetchone()
            return StoreStatus(
                counts=types.MappingProxyType(counts),
                last_file_downloaded_time=None if last is None else last[0],
                oldest_in_progress=None
                if oldest is None
                else InProgressLease(
                    granule_id=oldest[0],
                    owner=oldest[1],
                    expires_at=None if oldest[2] is None else _aware_utc(oldest[2]),
                    started_at=None if oldest[3] is None else _aware_utc(oldest[3]),
                ),
            )

        return self._run("status report", work, retry=True)

    # -- the S3 store's upload record (its UploadLedger) -----------------------------

    def load_upload(self, granule_id: str) -> Mapping[str, Any] | None:
        """The ``store_upload`` record of the granule, or ``None``."""

        def work(conn: psycopg.Connection[Any]) -> Mapping[str, Any] | None:
            row = conn.execute("SELECT store_upload FROM granule WHERE id = %s", (granule_id,)).fetchone()
            record = None if row is None else row[0]
            return record if isinstance(record, dict) else None

        return self._run("load upload record", work, retry=True)

    def save_upload(self, granule_id: str, record: Mapping[str, Any]) -> None:
        """Replace the granule's ``store_upload`` record."""

        def work(conn: psycopg.Connection[Any]) -> None:
            conn.execute(
                "UPDATE granule SET store_upload = %s WHERE id = %s", (Jsonb(dict(record)), granule_id)
            )

        # Idempotent: a repeat writes the same record.
        self._run("save upload record", work, retry=True)

    def clear_upload(self, granule_id: str) -> None:
        """Forget the granule's ``store_upload`` record."""

        def work(conn: psycopg.Connection[Any]) -> None:
            conn.execute("UPDATE granule SET store_upload = NULL WHERE id = %s", (granule_id,))

        self._run("clear upload record", work, retry=True)

    # -- helpers ------------------------------------------------------------------

    def _params(self, granule_id: str, event: lifecycle.Event) -> dict[str, Any]:
        params: dict[str, Any] = {"id": granule_id}
        match event:
            case (
                lifecycle.Claim(owner=owner, lease_seconds=lease_seconds)
                | lifecycle.Heartbeat(owner=owner, lease_seconds=lease_seconds)
            ):
                # The event's `now` is the worker's clock: the statement uses the database's.
                params.update(owner=owner, lease=_lease(lease_seconds))
            case lifecycle.Verify(owner=owner, checksum=checksum):
                finished = self.clock()
                params.update(
                    owner=owner,
                    checksum=checksum.lower(),
                    finished=finished,
                    finished_naive=_naive_utc(finished),
                )
            case (
                lifecycle.CountFailure(owner=owner, error=error)
                | lifecycle.Exhaust(owner=owner, error=error)
                | lifecycle.GiveUp(owner=owner, error=error)
                | lifecycle.Postpone(owner=owner, error=error)
                | lifecycle.Abandon(owner=owner, error=error)
            ):
                params.update(owner=owner, error=_clean_text(error))
            case lifecycle.StartDownload(owner=owner) | lifecycle.Release(owner=owner):
                params.update(owner=owner)
            case lifecycle.MarkUploadSent():
                params.update(queued_at=self.clock())
            case _:
                assert_never(event)
        return params

    @staticmethod
    def _invalid(conn: psycopg.Connection[Any], granule_id: str, event: lifecycle.Event) -> InvalidTransition:
        row = conn.execute(_SELECT, {"id": granule_id}).fetchone()
        if row is None:
            return InvalidTransition(f"no granule {granule_id}")
        try:
            # The domain words the refusal best; it sees the row the UPDATE did not match.
            lifecycle.apply(_granule(row), event)
        except InvalidTransition as refusal:
            return refusal
        return InvalidTransition(
            f"{type(event).__name__} on granule {granule_id} lost a race with a concurrent change"
        )

    def _run(
        self, operation: str, work: Callable[[psycopg.Connection[Any]], _T], *, retry: bool = False
    ) -> _T:
        attempts = 2 if retry else 1
        for attempt in range(1, attempts + 1):
            died = False
            try:
                with self.pool.connection() as conn:
                    try:
                        return work(conn)
                    except psycopg.OperationalError:
                        # Read here: once the pool takes the connection back it is closed.
                        died = conn.broken
                        raise
            except PoolTimeout as exc:
                raise StoreError(_describe(operation, exc, _conninfo(self.pool))) from exc
            except psycopg.OperationalError as exc:
                # A connection that died under us (server restart) is worth one more go
                # with a fresh one, for the statements that are safe to repeat.
                if attempt < attempts and died:
                    continue
                raise StoreError(_describe(operation, exc, _conninfo(self.pool))) from exc
            except psycopg.Error as exc:
                raise StoreError(_describe(operation, exc, _conninfo(self.pool))) from exc
            except UnicodeEncodeError as exc:
                # psycopg encodes parameters itself and raises this one bare.
                msg = f"granule store: {operation} failed: a value is not valid UTF-8 text"
                raise StoreError(msg) from exc
        msg = "unreachable: every attempt returns or raises"
        raise AssertionError(msg)
