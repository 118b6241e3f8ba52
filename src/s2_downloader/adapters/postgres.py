"""The granule table in PostgreSQL: leases by conditional UPDATE, legacy HLS columns kept in step.

The schema is CONTRACT section 5, created or upgraded by ``migrate`` from the ordered
``migrations/*.sql`` files. Each lifecycle event is one conditional UPDATE whose allowed
from-states and next state come from ``lifecycle.TRANSITIONS``; the legacy flags
(``in_progress``, ``downloaded``, ``download_failed``) are set in that same statement.
psycopg errors leave this module as ``StoreError`` with any password removed.
"""

from __future__ import annotations

import datetime as dt
import importlib.resources
import re
import types
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final, LiteralString, TypeVar, assert_never

import attrs
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
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

#: Any constant both migrators agree on; "S2DL" in ASCII.
_MIGRATION_LOCK: Final = 0x5332444C


def _migration_files() -> list[tuple[str, bytes]]:
    folder = importlib.resources.files("s2_downloader.adapters") / "migrations"
    files = sorted((entry.name, entry) for entry in folder.iterdir() if entry.name.endswith(".sql"))
    return [(name.removesuffix(".sql"), entry.read_bytes()) for name, entry in files]


def migrate(target: str | ConnectionPool[Any]) -> list[str]:
    """Create or upgrade the schema in ``target`` (a conninfo/URI or a pool); idempotent.

    Returns the migration versions applied by this call, empty when already up to date.
    Concurrent calls are safe: they queue on an advisory lock and the later one applies
    nothing.
    """
    conninfo = target if isinstance(target, str) else _conninfo(target)
    applied_now: list[str] = []
    try:
        with _connection_for(target) as conn:
            # One transaction: all pending files apply together or not at all, and the lock
            # is held until they are recorded.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for version, body in _migration_files():
                if version in done:
                    continue
                conn.execute(body)
                conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
                applied_now.append(version)
    except psycopg.Error as exc:
        raise StoreError(_describe("migrate", exc, conninfo)) from exc
    return applied_now


@contextmanager
def _connection_for(target: str | ConnectionPool[Any]) -> Iterator[psycopg.Connection[Any]]:
    if isinstance(target, str):
        # Bounded, unless the caller's conninfo says otherwise.
        extra = {} if "connect_timeout" in conninfo_to_dict(target) else {"connect_timeout": 10}
        with psycopg.connect(make_conninfo(target, **extra)) as conn:
            yield conn
    else:
        with target.connection() as conn:
            yield conn


def open_pool(
    conninfo: str,
    *,
    min_size: int = 1,
    max_size: int = 16,
    timeout: float = 10.0,
    connect_timeout: int = 10,
    name: str = "s2-downloader",
) -> ConnectionPool[psycopg.Connection[Any]]:
    """Open a pool that checks each connection before lending it out.

    The check costs one round trip and means a PostgreSQL restart or failover costs no
    request: dead connections are replaced instead of handed out. ``timeout`` bounds how
    long a caller waits for a connection.
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
            "options": "-c statement_timeout=60000 -c lock_timeout=15000",
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
)
_RETURNING: Final = sql.SQL(", ").join(sql.Identifier(column) for column in _COLUMNS)
_SELECT: Final = sql.SQL("SELECT {columns} FROM granule WHERE id = %(id)s").format(columns=_RETURNING)


def _granule(row: tuple[Any, ...]) -> Granule:
    granule_id, filename, state, retries, checksum, owner, expires_at, last_error, queued_at = row
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

# Mirrors lifecycle's _claim: only a live lease in a leased state keeps others out.
_CLAIMABLE: Final = sql.SQL(
    "(state NOT IN ({leased}) OR lease_owner IS NULL OR lease_expires_at IS NULL"
    " OR lease_expires_at <= %(now)s)"
).format(leased=_states(_LEASED))

#: The columns each event sets besides the state and the legacy flags.
_EFFECTS: Final[Mapping[type[lifecycle.Event], Mapping[str, LiteralString]]] = {
    lifecycle.Claim: {
        "lease_owner": "%(owner)s",
        "lease_expires_at": "%(expires_at)s",
        "download_started": "%(now_naive)s",
    },
    lifecycle.StartDownload: {},
    lifecycle.Heartbeat: {"lease_expires_at": "%(expires_at)s"},
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


def _expires(now: dt.datetime, lease_seconds: float) -> dt.datetime:
    # Computed here, exactly as lifecycle does, so a lease reads back as the domain built it.
    return now + dt.timedelta(seconds=lease_seconds)


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
    store keeps working across a PostgreSQL restart. ``clock`` gives the times the events
    themselves do not carry (``download_finished``, ``upload_queued_at``,
    ``last_file_downloaded_time``).
    """

    pool: ConnectionPool[Any]
    clock: Callable[[], dt.datetime] = _utc_now

    def claim(self, granule_id: str, owner: str, now: dt.datetime, lease_seconds: float) -> Granule | None:
        """Take the lease if the granule is free; return it as it is after the attempt, or None."""
        event = lifecycle.Claim(owner=owner, now=now, lease_seconds=lease_seconds)

        def work(conn: psycopg.Connection[Any]) -> Granule | None:
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

    # -- helpers ------------------------------------------------------------------

    def _params(self, granule_id: str, event: lifecycle.Event) -> dict[str, Any]:
        params: dict[str, Any] = {"id": granule_id}
        match event:
            case lifecycle.Claim(owner=owner, now=now, lease_seconds=lease_seconds):
                params.update(
                    owner=owner,
                    now=now,
                    now_naive=_naive_utc(now),
                    expires_at=_expires(now, lease_seconds),
                )
            case lifecycle.Heartbeat(owner=owner, now=now, lease_seconds=lease_seconds):
                params.update(owner=owner, expires_at=_expires(now, lease_seconds))
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
