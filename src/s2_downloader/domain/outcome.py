"""What handling one request came to, as a value the entrypoints map onto the queue."""

from __future__ import annotations

import attrs

__all__ = ["Defer", "Done", "Failed", "Outcome", "Reject", "RetryLater", "Transfer"]


@attrs.frozen(kw_only=True)
class Transfer:
    """What the attempt that verified a product moved, for the metrics."""

    transferred: int
    seconds: float


@attrs.frozen(kw_only=True)
class Done:
    """The granule is terminal for this message (verified and announced, or unknown): delete it.

    ``transfer`` is set only by the attempt that verified the granule, so a redelivered
    message of a verified granule is never counted as a second download.
    """

    reason: str
    # Figures, not identity: two outcomes with the same reason mean the same to the queue.
    transfer: Transfer | None = attrs.field(default=None, eq=False)


@attrs.frozen(kw_only=True)
class RetryLater:
    """A counted failure: see the message again after ``delay_seconds``."""

    delay_seconds: int
    reason: str


@attrs.frozen(kw_only=True)
class Defer:
    """Not this worker's turn or a passing hub problem, not counted: try after ``delay_seconds``."""

    delay_seconds: int
    reason: str


@attrs.frozen(kw_only=True)
class Failed:
    """The granule failed for good: leave the message for the queue's dead-letter redrive.

    ``earlier`` when it had failed before this message arrived (a redelivery): the
    failure was already reported once.
    """

    reason: str
    earlier: bool = attrs.field(default=False, eq=False)


@attrs.frozen(kw_only=True)
class Reject:
    """The message is bad input: log it and leave it for the dead-letter redrive."""

    reason: str


Outcome = Done | RetryLater | Defer | Failed | Reject
