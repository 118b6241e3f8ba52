"""The retry policy of docs/interface.md (the hub): the budgets, the back-off, what counts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import attrs

from s2_downloader.domain.errors import FailureKind

__all__ = [
    "COUNTED_FAILURES",
    "DEFERRAL_BUDGET_FAILURES",
    "MAX_DEFER_SECONDS",
    "MAX_DELAY_SECONDS",
    "MIN_PROGRESS_BYTES",
    "RetryPolicy",
]

#: SQS's longest DelaySeconds, defined here once: the back-off, Retry-After and every re-send
#: with a delay are capped at it (docs/interface.md).
MAX_DELAY_SECONDS = 900

#: Failures that spend the retry budget; the others only postpone. A response the
#: interface does not describe (another 4xx, a malformed checksum) counts, so that no
#: misbehaviour of the hub can keep a granule cycling forever.
COUNTED_FAILURES = frozenset(
    {
        FailureKind.CHECKSUM_MISMATCH,
        FailureKind.TRANSFER_INTERRUPTED,
        FailureKind.NOT_FOUND,
        FailureKind.BAD_RESPONSE,
        FailureKind.STORE,
        FailureKind.NO_PROGRESS,
    }
)

#: An attempt that runs out of time must have kept at least this much more of the product
#: than the attempt before it, or it counts (``NO_PROGRESS``): otherwise a hub that ignores
#: Range under a short Lambda timeout would hand the record back for ever.
MIN_PROGRESS_BYTES = 1024 * 1024

#: Failures that postpone without counting but only for so long: past the deferral budget
#: they fail the granule. The hub's answers about its load, and a partial that another
#: attempt is writing (a writer that never lets go would otherwise defer it for ever).
#: UNAUTHORIZED is not one of them: a 401 (DHuS Basic auth, CDSE after a fresh token) or a
#: refused password grant says our credentials are wrong, which is ours to fix and no fault
#: of the product, so it never fails a granule.
DEFERRAL_BUDGET_FAILURES = frozenset(
    {FailureKind.THROTTLED, FailureKind.OFFLINE, FailureKind.SERVER_ERROR, FailureKind.PARTIAL_IN_USE}
)

#: Default deferral budget: two days from the first attempt.
MAX_DEFER_SECONDS = 172800.0

_JITTER = 0.2


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How many counted failures a granule may have and how long to wait after each."""

    max_retries: int = 10
    base_delay: float = 60.0
    max_defer_seconds: float = MAX_DEFER_SECONDS
    random: Callable[[], float] = attrs.field(eq=False, repr=False)

    def counts(self, kind: FailureKind) -> bool:
        """Whether a failure of ``kind`` is counted against the budget."""
        return kind in COUNTED_FAILURES

    def spends_deferral_budget(self, kind: FailureKind) -> bool:
        """Whether a failure of ``kind``, not counted, may still fail a granule deferred too long."""
        return kind in DEFERRAL_BUDGET_FAILURES

    def deferred_too_long(self, first_attempt_at: dt.datetime | None, now: dt.datetime) -> bool:
        """Whether a granule first attempted at ``first_attempt_at`` has used up its deferral budget."""
        if first_attempt_at is None:
            return False
        return (now - first_attempt_at).total_seconds() >= self.max_defer_seconds

    def exhausted(self, retries: int) -> bool:
        """Whether ``retries`` counted failures are more than the budget allows."""
        return retries > self.max_retries

    def backoff(self, retries: int) -> int:
        """Seconds to wait after the ``retries``-th failure: base x 2^(n-1), capped, jittered down."""
        exponent = max(retries, 1) - 1
        ceiling = min(float(MAX_DELAY_SECONDS), self.base_delay * 2.0 ** min(exponent, 32))
        # At least a second: a zero delay would turn a retry into a hot loop.
        return max(1, round(ceiling * (1.0 - _JITTER * self.random())))

    def throttled(self, retry_after: float | None, retries: int) -> int:
        """Seconds to wait when the hub asked us to slow down, honouring its hint up to the cap."""
        if retry_after is None:
            return self.backoff(retries)
        return max(1, min(MAX_DELAY_SECONDS, round(retry_after)))
