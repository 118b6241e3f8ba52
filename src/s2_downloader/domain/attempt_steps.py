"""What the steps of a transfer return: small frozen records, decided once, matched by the use case."""

from __future__ import annotations

import attrs

from s2_downloader.domain.errors import DeadlineExceeded, HubError
from s2_downloader.domain.outcome import Defer, Transfer

__all__ = ["Broken", "Filled", "Matched", "Mismatched", "Stopped", "Streamed"]


@attrs.frozen(kw_only=True)
class Streamed:
    """How streaming the body into the partial ended."""

    #: Where this attempt's bytes start in the partial (0 when the hub restarted the product).
    resumed_from: int
    #: The outcome of stopping between chunks (cancelled, or the lease lost); ``None`` when
    #: the body ran to its end.
    stopped: Defer | None = None


@attrs.frozen(kw_only=True)
class Matched:
    """The body ran to its end and the partial holds the product's checksum."""

    resumed_from: int
    held: int
    #: Our monotonic clock when the stream started, for the transfer rate.
    started: float

    def transfer(self, now: float) -> Transfer:
        """What this attempt moved, as of our monotonic clock reading ``now``."""
        return Transfer(transferred=self.held - self.resumed_from, seconds=now - self.started)


@attrs.frozen(kw_only=True)
class Mismatched:
    """The body ran to its end but the partial's digest is not the product's checksum."""

    digest: str


@attrs.frozen(kw_only=True)
class Stopped:
    """The attempt stopped before the end: cancelled, or the lease lost."""

    outcome: Defer


@attrs.frozen(kw_only=True)
class Broken:
    """The hub failed, or time ran out, mid-transfer; the ``held`` bytes stay for a resume."""

    held: int
    #: What the partial held when this attempt opened it: what the attempt before it kept.
    kept_before: int
    error: HubError | DeadlineExceeded


#: What filling the partial came to, decided once, as the partial is still open.
Filled = Matched | Mismatched | Stopped | Broken
