"""The granule state machine: every legal transition in one table.

``apply(granule, event)`` returns the next granule or raises ``InvalidTransition``
and changes nothing. The events of ``NEEDS_LEASE`` are only legal for the lease's
holder; a ``Claim`` may take over a lease that has expired.

To add an event, touch these places (mypy or a test names each one you miss):

1. here: the event class, the ``Event`` union and ``__all__``; its rows in
   ``TRANSITIONS``; whether it belongs in ``NEEDS_LEASE``; its case in ``_effect``
   (what it changes besides the state; ``assert_never`` makes mypy name a missing case);
2. ``adapters/postgres/updates.py``: the columns it sets in ``COLUMNS_SET`` (the
   UPDATE's state, lease check and legacy flags come from ``TRANSITIONS`` and
   ``NEEDS_LEASE``; a missing entry fails at import), and in
   ``adapters/postgres/store.py`` its statement parameters (``_params``, a ``match``
   ending in ``assert_never``);
3. ``tests/granule_store_contract.py``: how to make it (``_MAKE_EVENT``) and whether the
   machine draws it as an ending (``_ENDINGS``); ``tests/unit/test_lifecycle.py``: the
   hand-written model's expectations;
4. ``domain/usecase.py``: where it is recorded;
5. the diagrams in ``README.md`` and ``docs/architecture.md``: paste ``mermaid_diagram()``;
   their tests fail until you do.

The in-memory stores (``adapters/memory_granules.py``, the unit tests' fake) apply events
with ``apply`` and need nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Final, Protocol, TypeGuard, assert_never

import attrs

from s2_downloader.domain.errors import InvalidTransition
from s2_downloader.domain.granule import Granule, Lease, State

__all__ = [
    "NEEDS_LEASE",
    "TRANSITIONS",
    "Abandon",
    "Claim",
    "CountFailure",
    "Event",
    "Exhaust",
    "GiveUp",
    "Heartbeat",
    "MarkUploadSent",
    "Postpone",
    "Release",
    "StartDownload",
    "Verify",
    "apply",
    "mermaid_diagram",
    "needs_lease",
]


@attrs.frozen(kw_only=True)
class Claim:
    """A worker takes the granule for one attempt, with a lease until ``now + lease_seconds``."""

    owner: str
    now: dt.datetime
    lease_seconds: float


@attrs.frozen(kw_only=True)
class StartDownload:
    """The lease holder starts transferring bytes from the hub."""

    owner: str


@attrs.frozen(kw_only=True)
class Heartbeat:
    """The lease holder extends its lease to ``now + lease_seconds``."""

    owner: str
    now: dt.datetime
    lease_seconds: float


@attrs.frozen(kw_only=True)
class Verify:
    """The lease holder found content matching ``checksum`` at the final path."""

    owner: str
    checksum: str


@attrs.frozen(kw_only=True)
class CountFailure:
    """A failure that counts against the retry budget, with budget left."""

    owner: str
    error: str


@attrs.frozen(kw_only=True)
class Exhaust:
    """A counted failure that spends the last of the retry budget."""

    owner: str
    error: str


@attrs.frozen(kw_only=True)
class GiveUp:
    """The budget was already spent when the granule was claimed."""

    owner: str
    error: str


@attrs.frozen(kw_only=True)
class Postpone:
    """A failure that does not count (throttling, hub outage); try again later."""

    owner: str
    error: str


@attrs.frozen(kw_only=True)
class Abandon:
    """A failure that does not count but fails the granule: deferred past its budget, or a key conflict."""

    owner: str
    error: str


@attrs.frozen(kw_only=True)
class Release:
    """The lease holder hands the granule back unfinished (shutdown, out of time)."""

    owner: str


@attrs.frozen(kw_only=True)
class MarkUploadSent:
    """The verified granule's upload message was sent."""


Event = (
    Claim
    | StartDownload
    | Heartbeat
    | Verify
    | CountFailure
    | Exhaust
    | GiveUp
    | Postpone
    | Abandon
    | Release
    | MarkUploadSent
)

_LEASED = (State.CLAIMED, State.DOWNLOADING)

#: (state, event type) -> next state. Anything not listed is an InvalidTransition.
TRANSITIONS: Final[Mapping[tuple[State, type[Event]], State]] = {
    (State.PENDING, Claim): State.CLAIMED,
    (State.RETRYING, Claim): State.CLAIMED,
    (State.CLAIMED, Claim): State.CLAIMED,
    (State.DOWNLOADING, Claim): State.CLAIMED,
    (State.CLAIMED, StartDownload): State.DOWNLOADING,
    (State.CLAIMED, Heartbeat): State.CLAIMED,
    (State.DOWNLOADING, Heartbeat): State.DOWNLOADING,
    (State.CLAIMED, Verify): State.VERIFIED,
    (State.DOWNLOADING, Verify): State.VERIFIED,
    (State.CLAIMED, CountFailure): State.RETRYING,
    (State.DOWNLOADING, CountFailure): State.RETRYING,
    (State.CLAIMED, Exhaust): State.FAILED,
    (State.DOWNLOADING, Exhaust): State.FAILED,
    (State.CLAIMED, GiveUp): State.FAILED,
    (State.CLAIMED, Postpone): State.RETRYING,
    (State.DOWNLOADING, Postpone): State.RETRYING,
    (State.CLAIMED, Abandon): State.FAILED,
    (State.DOWNLOADING, Abandon): State.FAILED,
    (State.CLAIMED, Release): State.PENDING,
    (State.DOWNLOADING, Release): State.PENDING,
    (State.VERIFIED, MarkUploadSent): State.VERIFIED,
}

#: Events only the lease's holder (their ``owner``) may record; a transition of any other
#: event is legal whoever records it. ``Claim`` takes the lease (over an expired one too),
#: and ``MarkUploadSent`` comes after the lease was let go.
NEEDS_LEASE: Final[frozenset[type[Event]]] = frozenset(
    {StartDownload, Heartbeat, Verify, CountFailure, Exhaust, GiveUp, Postpone, Abandon, Release}
)


def _claim(granule: Granule, event: Claim) -> Granule:
    lease = granule.lease
    if granule.state in _LEASED and lease is not None and lease.is_live(event.now):
        msg = f"granule {granule.id} is leased to {lease.owner} until {lease.expires_at.isoformat()}"
        raise InvalidTransition(msg)
    expires = event.now + dt.timedelta(seconds=event.lease_seconds)
    # The first claim starts the deferral budget; later claims keep that start.
    first = granule.first_attempt_at if granule.first_attempt_at is not None else event.now
    return attrs.evolve(granule, lease=Lease(owner=event.owner, expires_at=expires), first_attempt_at=first)


def _effect(granule: Granule, event: Event) -> Granule:
    """What ``event`` changes besides the state; ``assert_never`` makes mypy name a missing event."""
    match event:
        case Claim():
            return _claim(granule, event)
        case Heartbeat(owner=owner, now=now, lease_seconds=seconds):
            return attrs.evolve(
                granule, lease=Lease(owner=owner, expires_at=now + dt.timedelta(seconds=seconds))
            )
        case Verify(checksum=checksum):
            return attrs.evolve(granule, lease=None, checksum=checksum.lower(), last_error=None)
        case CountFailure(error=error) | Exhaust(error=error):
            return attrs.evolve(
                granule, lease=None, download_retries=granule.download_retries + 1, last_error=error
            )
        case GiveUp(error=error) | Postpone(error=error) | Abandon(error=error):
            return attrs.evolve(granule, lease=None, last_error=error)
        case Release():
            return attrs.evolve(granule, lease=None)
        case StartDownload():
            return granule
        case MarkUploadSent():
            return attrs.evolve(granule, upload_sent=True)
        case _:
            assert_never(event)


class _ByOwner(Protocol):
    @property
    def owner(self) -> str: ...


def needs_lease(event: Event) -> TypeGuard[_ByOwner]:
    """Whether only the lease's holder (``event.owner``) may record ``event``."""
    return type(event) in NEEDS_LEASE


def apply(granule: Granule, event: Event) -> Granule:
    """Return ``granule`` after ``event``, or raise ``InvalidTransition`` changing nothing."""
    target = TRANSITIONS.get((granule.state, type(event)))
    if target is None:
        msg = f"{type(event).__name__} is not allowed in state {granule.state.value} (granule {granule.id})"
        raise InvalidTransition(msg)
    if needs_lease(event) and not granule.held_by(event.owner):
        holder = granule.lease.owner if granule.lease else "nobody"
        msg = f"{type(event).__name__} by {event.owner} but granule {granule.id} is held by {holder}"
        raise InvalidTransition(msg)
    changed = _effect(granule, event)
    return attrs.evolve(changed, state=target)


def mermaid_diagram() -> str:
    """The transition table as a Mermaid state diagram (the README's diagram is checked against it)."""
    edges: dict[tuple[State, State], list[str]] = {}
    for (source, event), target in TRANSITIONS.items():
        edges.setdefault((source, target), []).append(event.__name__)
    lines = ["stateDiagram-v2", "    [*] --> pending"]
    lines += [f"    {a.value} --> {b.value}: {', '.join(names)}" for (a, b), names in edges.items()]
    lines += ["    verified --> [*]", "    failed --> [*]"]
    return "\n".join(lines)
