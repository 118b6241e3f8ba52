"""The granule: a Sentinel-2 product's download lifecycle as a frozen value."""

from __future__ import annotations

import datetime as dt
import enum

import attrs

__all__ = ["TERMINAL_STATES", "Granule", "Lease", "State"]


class State(enum.Enum):
    """Where a granule is in its download lifecycle (the ``granule.state`` column)."""

    PENDING = "pending"
    CLAIMED = "claimed"
    DOWNLOADING = "downloading"
    VERIFIED = "verified"
    RETRYING = "retrying"
    FAILED = "failed"


TERMINAL_STATES = frozenset({State.VERIFIED, State.FAILED})


@attrs.frozen(kw_only=True)
class Lease:
    """A worker's claim on a granule, valid until ``expires_at`` unless renewed."""

    owner: str
    expires_at: dt.datetime

    def is_live(self, now: dt.datetime) -> bool:
        """Whether the lease still excludes other workers at ``now``."""
        return now < self.expires_at


@attrs.frozen(kw_only=True)
class Granule:
    """One product as the granule table records it."""

    id: str
    filename: str
    state: State = State.PENDING
    download_retries: int = 0
    checksum: str = ""
    lease: Lease | None = None
    last_error: str | None = None
    upload_sent: bool = False
    #: When the first attempt began (its first claim); the deferral budget runs from here.
    first_attempt_at: dt.datetime | None = None

    @property
    def is_terminal(self) -> bool:
        """Whether nothing can move the granule out of its state any more."""
        return self.state in TERMINAL_STATES

    def held_by(self, owner: str) -> bool:
        """Whether ``owner`` holds the granule's lease (live or not)."""
        return self.lease is not None and self.lease.owner == owner
