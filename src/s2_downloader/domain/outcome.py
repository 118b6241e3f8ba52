"""What handling one request came to, as a value the entrypoints map onto the queue.

Every outcome but ``Done`` carries its ``kind`` (a ``FailureKind``), set where the failure
was found, and a ``detail``; its ``reason`` is ``kind.describe(detail)``, the text a
recorded failure leaves in ``last_error``. Readers branch on ``kind``, never on the text.
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from s2_downloader.domain.errors import FailureKind

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
    """A counted failure of ``kind``: see the message again after ``delay_seconds``."""

    kind: FailureKind
    delay_seconds: int
    detail: str

    @property
    def reason(self) -> str:
        """``<kind>: <detail>``, as recorded in ``last_error``."""
        return self.kind.describe(self.detail)


@attrs.frozen(kw_only=True)
class Defer:
    """Not this worker's turn or a passing problem of ``kind``, not counted: try after ``delay_seconds``."""

    kind: FailureKind
    delay_seconds: int
    detail: str

    @property
    def reason(self) -> str:
        """``<kind>: <detail>``, as recorded in ``last_error`` when the deferral is recorded."""
        return self.kind.describe(self.detail)


@attrs.frozen(kw_only=True)
class Failed:
    """The granule failed for good: leave the message for the queue's dead-letter redrive.

    ``kind`` is that of the failure that ended it (the last counted one, or the last
    deferral when the deferral budget ran out), ``RETRY_BUDGET_SPENT`` when the budget was
    already spent at the claim, and ``FAILED_EARLIER`` when it had failed before this
    message arrived (a redelivery: the failure was already reported once).
    """

    kind: FailureKind
    detail: str

    @property
    def reason(self) -> str:
        """``<kind>: <detail>``, as recorded in ``last_error`` (unless ``FAILED_EARLIER``)."""
        return self.kind.describe(self.detail)


@attrs.frozen(kw_only=True)
class Reject:
    """The message is bad input: log it and leave it for the dead-letter redrive."""

    kind: ClassVar[FailureKind] = FailureKind.BAD_MESSAGE
    detail: str

    @property
    def reason(self) -> str:
        """``bad_message: <detail>``."""
        return self.kind.describe(self.detail)


Outcome = Done | RetryLater | Defer | Failed | Reject
