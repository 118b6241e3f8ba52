"""One conditional UPDATE per lifecycle event, generated from the transition table.

From ``lifecycle.TRANSITIONS`` each statement gets the states it may start from, the
state it leads to and the legacy flags (``in_progress``, ``downloaded``,
``download_failed``) set in the same statement; from ``lifecycle.NEEDS_LEASE``, whether
it checks the lease's holder. ``COLUMNS_SET`` says what else each event writes.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable, Mapping
from typing import Final, LiteralString

from psycopg import sql

from s2_downloader.adapters.postgres.rows import RETURNING
from s2_downloader.domain import lifecycle
from s2_downloader.domain.granule import State

__all__ = ["COLUMNS_SET", "LEASED", "UPDATES", "states"]

#: The states that hold a lease: those in which a lease can be renewed.
LEASED: Final = frozenset(state for state, kind in lifecycle.TRANSITIONS if kind is lifecycle.Heartbeat)


def _moves(kind: type[lifecycle.Event]) -> dict[State, State]:
    return {state: target for (state, event), target in lifecycle.TRANSITIONS.items() if event is kind}


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


def states(chosen: Iterable[State]) -> sql.Composable:
    """``chosen`` as a list of SQL literals, for ``state IN (...)``."""
    return sql.SQL(", ").join(sql.Literal(state.value) for state in sorted(chosen, key=lambda s: s.value))


_CLEAR_LEASE: Final[Mapping[str, LiteralString]] = {"lease_owner": "NULL", "lease_expires_at": "NULL"}

_HELD_BY_OWNER: Final = sql.SQL("lease_owner = %(owner)s AND lease_expires_at IS NOT NULL")

# Mirrors lifecycle's _claim: only a live lease in a leased state keeps others out, live
# by the database's clock.
_CLAIMABLE: Final = sql.SQL(
    "(state NOT IN ({leased}) OR lease_owner IS NULL OR lease_expires_at IS NULL"
    " OR lease_expires_at <= now())"
).format(leased=states(LEASED))

#: The database's clock as the legacy columns hold time (``timestamp``, UTC).
_NOW_NAIVE: Final = "(now() AT TIME ZONE 'UTC')"

#: The columns each event sets besides the state and the legacy flags.
COLUMNS_SET: Final[Mapping[type[lifecycle.Event], Mapping[str, LiteralString]]] = {
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
        "in_progress": _by_state(moves, lambda target: target in LEASED),
        "downloaded": _by_state(moves, lambda target: target is State.VERIFIED),
        "download_failed": _by_state(moves, lambda target: target is State.FAILED),
    }
    assignments.update({column: sql.SQL(value) for column, value in COLUMNS_SET[kind].items()})
    conditions: list[sql.Composable] = [
        sql.SQL("id = %(id)s"),
        sql.SQL("state IN ({})").format(states(set(moves))),
    ]
    if kind in lifecycle.NEEDS_LEASE:
        conditions.append(_HELD_BY_OWNER)
    if kind is lifecycle.Claim:
        conditions.append(_CLAIMABLE)
    return sql.SQL("UPDATE granule SET {assignments} WHERE {conditions} RETURNING {columns}").format(
        assignments=sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier(column), value) for column, value in assignments.items()
        ),
        conditions=sql.SQL(" AND ").join(conditions),
        columns=RETURNING,
    )


#: Every event of the table, its statement; an event missing from ``COLUMNS_SET`` fails here, at import.
UPDATES: Final[Mapping[type[lifecycle.Event], sql.Composed]] = types.MappingProxyType(
    {kind: _update_for(kind) for _, kind in lifecycle.TRANSITIONS}
)
