"""The operators' queries on the granule table: what to requeue, reviving failed granules, failures.

Used by ``s2-downloader requeue`` and ``s2-downloader failures`` (docs/interface.md section
1), never by the workers. Like the store (``adapters/postgres/``), every time test is on
the database's clock (``now()`` in the statement), and the legacy flags win over
``state`` where another HLS writer set them behind the state's back (``downloaded`` means
verified, ``download_failed`` failed). psycopg errors leave this module as ``StoreError``
with any password removed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, Final, TypeVar

import attrs
import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from s2_downloader.adapters.postgres import describe_error
from s2_downloader.domain.errors import FailureKind, StoreError
from s2_downloader.domain.granule import State

__all__ = [
    "DEFAULT_REQUEUE_STATES",
    "NO_KIND",
    "OTHER_KIND",
    "FailureRow",
    "FailuresReport",
    "GranuleQueries",
    "RequeueFilter",
    "RequeueRow",
    "count_kinds",
    "stored_kind",
]

_T = TypeVar("_T")

#: Without ``--state``: waiting granules, and claims whose lease has run out.
DEFAULT_REQUEUE_STATES: Final = frozenset({State.PENDING, State.RETRYING, State.CLAIMED, State.DOWNLOADING})

#: The state a row is in once the legacy flags have had their say (they win at claim too).
_EFFECTIVE_STATE: Final = sql.SQL(
    "(CASE WHEN downloaded THEN 'verified' WHEN download_failed THEN 'failed' ELSE state END)"
)

#: A claim nobody may take over yet, by the database's clock (the store's _CLAIMABLE negated).
_LIVE_LEASE: Final = sql.SQL(
    "(state IN ('claimed', 'downloading') AND lease_owner IS NOT NULL"
    " AND lease_expires_at IS NOT NULL AND lease_expires_at > now())"
)

#: What an earlier ``--revive-failed`` leaves until a worker claims the granule: pending,
#: never attempted since (first_attempt_at is cleared by the revival and set by the first
#: claim), and the old last_error kept. A fresh granule has no last_error; a released one
#: has a first_attempt_at.
_REVIVED_NOT_ATTEMPTED: Final = sql.SQL(
    "(state = 'pending' AND NOT download_failed AND first_attempt_at IS NULL AND last_error IS NOT NULL)"
)

_REVIVE: Final = sql.SQL(
    "UPDATE granule SET state = 'pending', download_retries = 0, download_failed = false,"
    " in_progress = false, first_attempt_at = NULL, lease_owner = NULL, lease_expires_at = NULL"
    " WHERE id = ANY(%(ids)s) AND NOT downloaded AND (state = 'failed' OR download_failed)"
    " AND NOT {live}"
    " RETURNING id, filename, download_url"
).format(live=_LIVE_LEASE)

_FAILURE_ROWS: Final = sql.SQL(
    "SELECT id, {state} AS effective, last_error, download_retries, first_attempt_at, download_started"
    " FROM granule WHERE NOT downloaded AND {state} IN ('failed', 'retrying')"
    " ORDER BY download_started DESC NULLS LAST, id LIMIT %(limit)s"
).format(state=_EFFECTIVE_STATE)

# Grouped by the text before the first ": ", which is the failure kind by construction
# (every writer writes ``FailureKind.describe``); ``stored_kind`` names the group.
_FAILURE_GROUPS: Final = sql.SQL(
    "SELECT {state} AS effective, split_part(coalesce(last_error, ''), ': ', 1) AS prefix, count(*)"
    " FROM granule WHERE NOT downloaded AND {state} IN ('failed', 'retrying')"
    " GROUP BY 1, 2"
).format(state=_EFFECTIVE_STATE)

_KINDS: Final = frozenset(kind.value for kind in FailureKind)

#: The kind ``failures`` gives a granule without a ``last_error``.
NO_KIND: Final = "none"
#: The kind ``failures`` gives a ``last_error`` that does not start with a failure kind
#: (written by an earlier version of the downloader, or by hand).
OTHER_KIND: Final = "other"


def stored_kind(last_error: str | None) -> str:
    """The failure kind a stored ``last_error`` starts with: its text before the first ``": "``.

    The use case writes every ``last_error`` as ``kind.describe(detail)``, so that text is
    the kind's value; ``NO_KIND`` when there is no ``last_error``, ``OTHER_KIND`` when the
    text is not a ``FailureKind`` value. Nothing else is read out of the text.
    """
    if not last_error:
        return NO_KIND
    prefix = last_error.split(": ", 1)[0]
    return prefix if prefix in _KINDS else OTHER_KIND


def count_kinds(groups: Iterable[tuple[State, str | None, int]]) -> dict[str, dict[State, int]]:
    """Granules per stored kind and state, from ``(state, last_error or its kind prefix, count)`` groups."""
    kinds: dict[str, dict[State, int]] = {}
    for state, last_error, count in groups:
        per_state = kinds.setdefault(stored_kind(last_error), {})
        per_state[state] = per_state.get(state, 0) + count
    return kinds


@attrs.frozen(kw_only=True)
class RequeueFilter:
    """Which granules ``requeue`` looks at; the fields narrow each other (an empty one: no limit).

    ``states`` ``None`` is the default: pending, retrying and expired claims. Verified
    granules and granules under a live lease are never matched.
    """

    ingested_on: tuple[dt.date, ...] = ()
    ingested_since: dt.date | None = None
    ingested_until: dt.date | None = None
    states: frozenset[State] | None = None
    ids: tuple[str, ...] = ()
    #: Also match granules an earlier revival left pending and not yet attempted.
    include_revived: bool = False


@attrs.frozen(kw_only=True)
class RequeueRow:
    """A granule to requeue: what its download message holds, and the state it is in."""

    id: str
    filename: str
    download_url: str
    state: State


@attrs.frozen(kw_only=True)
class FailureRow:
    """A failed or retrying granule as ``failures`` lists it."""

    id: str
    state: State
    last_error: str | None
    retries: int
    first_attempt_at: dt.datetime | None
    last_attempt_at: dt.datetime | None

    @property
    def kind(self) -> str:
        """The failure kind its ``last_error`` starts with (``stored_kind``)."""
        return stored_kind(self.last_error)


@attrs.frozen(kw_only=True)
class FailuresReport:
    """The newest failures, and how many failed and retrying granules there are of each kind."""

    granules: Sequence[FailureRow]
    #: kind -> state (failed or retrying) -> count, over every such granule, not only those listed.
    kinds: Mapping[str, Mapping[State, int]]

    @property
    def totals(self) -> dict[State, int]:
        """Failed and retrying granules in all."""
        totals = {State.FAILED: 0, State.RETRYING: 0}
        for per_state in self.kinds.values():
            for state, count in per_state.items():
                totals[state] += count
        return totals


def _day_start(day: dt.date) -> dt.datetime:
    # ingestiondate is a `timestamp` holding UTC, as HLS writes it: compare naive UTC.
    return dt.datetime(day.year, day.month, day.day)


def _candidates(selection: RequeueFilter) -> tuple[sql.Composed, dict[str, Any]]:
    params: dict[str, Any] = {}
    conditions: list[sql.Composable] = [
        sql.SQL("NOT downloaded"),
        sql.SQL("{} <> 'verified'").format(_EFFECTIVE_STATE),
        sql.SQL("NOT {}").format(_LIVE_LEASE),
    ]
    states = DEFAULT_REQUEUE_STATES if selection.states is None else selection.states
    wanted = sorted(state.value for state in states if state is not State.VERIFIED)
    params["states"] = wanted
    state_match: sql.Composable = sql.SQL("{} = ANY(%(states)s)").format(_EFFECTIVE_STATE)
    if selection.include_revived:
        state_match = sql.SQL("({} OR {})").format(state_match, _REVIVED_NOT_ATTEMPTED)
    conditions.append(state_match)
    if selection.ingested_on:
        days: list[sql.Composable] = []
        for index, day in enumerate(sorted(set(selection.ingested_on))):
            start, end = f"on_{index}", f"on_{index}_end"
            params[start] = _day_start(day)
            params[end] = _day_start(day + dt.timedelta(days=1))
            days.append(
                sql.SQL("(ingestiondate >= {} AND ingestiondate < {})").format(
                    sql.Placeholder(start), sql.Placeholder(end)
                )
            )
        conditions.append(sql.SQL("({})").format(sql.SQL(" OR ").join(days)))
    if selection.ingested_since is not None:
        params["since"] = _day_start(selection.ingested_since)
        conditions.append(sql.SQL("ingestiondate >= %(since)s"))
    if selection.ingested_until is not None:
        # Inclusive: the whole of the last day.
        params["until"] = _day_start(selection.ingested_until + dt.timedelta(days=1))
        conditions.append(sql.SQL("ingestiondate < %(until)s"))
    if selection.ids:
        params["ids"] = sorted(set(selection.ids))
        conditions.append(sql.SQL("id = ANY(%(ids)s)"))
    query = sql.SQL(
        "SELECT id, filename, download_url, {state} FROM granule WHERE {conditions}"
        " ORDER BY ingestiondate, id"
    ).format(state=_EFFECTIVE_STATE, conditions=sql.SQL(" AND ").join(conditions))
    return query, params


def _aware(moment: dt.datetime | None) -> dt.datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


@attrs.define
class GranuleQueries:
    """Read the granule table for operators, and revive failed granules; over a psycopg pool."""

    pool: ConnectionPool[Any]

    def requeue_candidates(self, selection: RequeueFilter) -> list[RequeueRow]:
        """The granules ``selection`` matches, oldest ingestion first; reads only."""
        query, params = _candidates(selection)

        def work(conn: psycopg.Connection[Any]) -> list[RequeueRow]:
            return [
                RequeueRow(id=row[0], filename=row[1], download_url=row[2] or "", state=State(row[3]))
                for row in conn.execute(query, params)
            ]

        return self._run("select granules to requeue", work)

    def revive_failed(self, ids: Collection[str]) -> list[RequeueRow]:
        """Take those of ``ids`` still failed back to pending; return the rows changed.

        Retries go back to 0, ``download_failed`` to false and ``first_attempt_at`` to null
        (a fresh deferral budget); ``last_error`` is kept. One conditional UPDATE: a
        granule that changed meanwhile (verified, already revived, claimed) is left alone.
        """
        if not ids:
            return []

        def work(conn: psycopg.Connection[Any]) -> list[RequeueRow]:
            rows = conn.execute(_REVIVE, {"ids": list(ids)}).fetchall()
            return [
                RequeueRow(id=row[0], filename=row[1], download_url=row[2] or "", state=State.PENDING)
                for row in rows
            ]

        return self._run("revive failed granules", work)

    def failures(self, limit: int) -> FailuresReport:
        """The ``limit`` failed or retrying granules attempted last, and counts per kind of all of them."""

        def work(conn: psycopg.Connection[Any]) -> FailuresReport:
            # One snapshot, so the list and the counts agree.
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            granules = [
                FailureRow(
                    id=row[0],
                    state=State(row[1]),
                    last_error=row[2],
                    retries=row[3],
                    first_attempt_at=_aware(row[4]),
                    last_attempt_at=_aware(row[5]),
                )
                for row in conn.execute(_FAILURE_ROWS, {"limit": limit})
            ]
            groups = [(State(state), prefix, count) for state, prefix, count in conn.execute(_FAILURE_GROUPS)]
            return FailuresReport(granules=granules, kinds=count_kinds(groups))

        return self._run("list failures", work)

    def _run(self, operation: str, work: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        try:
            with self.pool.connection() as conn:
                return work(conn)
        except (PoolTimeout, psycopg.Error) as exc:
            # The store's redaction: the pool's password, and password-looking text, never shown.
            raise StoreError(describe_error(operation, exc, self.pool)) from exc
