"""The granule state machine: every legal transition in one table.

``apply(granule, event)`` returns the next granule or raises ``InvalidTransition``
and changes nothing. Events that act under a lease carry the owner and are only
legal for the lease's holder; a ``Claim`` may take over a lease that has expired.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Final

import attrs

from s2_downloader.domain.errors import InvalidTransition
from s2_downloader.domain.granule import Granule, Lease, State

__all__ = [
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
    """A failure that does not count, but the granule has been deferred past its budget: it fails."""

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


def _claim(granule: Granule, event: Claim) -> Granule:
    lease = granule.lease
    if granule.state in _LEASED and lease is not None and lease.is_live(event.now):
        msg = f"granule {granule.id} is leased to {lease.owner} until {lease.expires_at.isoformat()}"
        raise InvalidTransition(msg)
    expires = event.now + dt.timedelta(seconds=event.lease_seconds)
    # The first claim starts the deferral budget; later claims keep that start.
    first = granule.first_attempt_at if granule.first_attempt_at is not None else event.now
    return attrs.evolve(granule, lease=Lease(owner=event.owner, expires_at=expires), first_attempt_at=first)


def _heartbeat(granule: Granule, event: Heartbeat) -> Granule:
    expires = event.now + dt.timedelta(seconds=event.lease_seconds)
    return attrs.evolve(granule, lease=Lease(owner=event.owner, expires_at=expires))


def _verify(granule: Granule, event: Verify) -> Granule:
    return attrs.evolve(granule, lease=None, checksum=event.checksum.lower(), last_error=None)


def _count(granule: Granule, event: CountFailure | Exhaust) -> Granule:
    return attrs.evolve(
        granule,
        lease=None,
        download_retries=granule.download_retries + 1,
        last_error=event.error,
    )


def _postpone(granule: Granule, event: Postpone | GiveUp | Abandon) -> Granule:
    return attrs.evolve(granule, lease=None, last_error=event.error)


def _unchanged_but_lease(granule: Granule, event: StartDownload | Release) -> Granule:
    if isinstance(event, Release):
        return attrs.evolve(granule, lease=None)
    return granule


def _upload_sent(granule: Granule, event: MarkUploadSent) -> Granule:
    del event
    return attrs.evolve(granule, upload_sent=True)


_Effect = Callable[[Granule, "Event"], Granule]

_EFFECTS: Final[Mapping[type[Event], _Effect]] = {
    Claim: _claim,  # type: ignore[dict-item]
    StartDownload: _unchanged_but_lease,  # type: ignore[dict-item]
    Heartbeat: _heartbeat,  # type: ignore[dict-item]
    Verify: _verify,  # type: ignore[dict-item]
    CountFailure: _count,  # type: ignore[dict-item]
    Exhaust: _count,  # type: ignore[dict-item]
    GiveUp: _postpone,  # type: ignore[dict-item]
    Postpone: _postpone,  # type: ignore[dict-item]
    Abandon: _postpone,  # type: ignore[dict-item]
    Release: _unchanged_but_lease,  # type: ignore[dict-item]
    MarkUploadSent: _upload_sent,  # type: ignore[dict-item]
}


def apply(granule: Granule, event: Event) -> Granule:
    """Return ``granule`` after ``event``, or raise ``InvalidTransition`` changing nothing."""
    target = TRANSITIONS.get((granule.state, type(event)))
    if target is None:
        msg = f"{type(event).__name__} is not allowed in state {granule.state.value} (granule {granule.id})"
        raise InvalidTransition(msg)
    owner = getattr(event, "owner", None)
    if owner is not None and not isinstance(event, Claim) and not granule.held_by(owner):
        holder = granule.lease.owner if granule.lease else "nobody"
        msg = f"{type(event).__name__} by {owner} but granule {granule.id} is held by {holder}"
        raise InvalidTransition(msg)
    changed = _EFFECTS[type(event)](granule, event)
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
