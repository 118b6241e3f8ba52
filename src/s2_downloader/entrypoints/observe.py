"""What one handled message adds to the metrics (docs/interface.md section 9), each event once.

``observe(metrics, result, first_delivery=...)`` is called by the Lambda handler and the
runner right after the use case (and in the same thread), for every message:

- ``Done`` with a ``transfer`` (the attempt that verified): ``DownloadsVerified``,
  ``BytesDownloaded``, ``DownloadSeconds``.
- ``Done`` without one ("already verified", "granule unknown"): nothing (a redelivery, or
  no granule).
- ``RetryLater``: ``RetriesCounted`` with the outcome's ``kind`` as ``Kind``.
- ``Defer`` for a hub answer (throttled, offline, server error, unauthorized) or a partial
  in use: ``Deferrals`` with the outcome's ``kind`` as ``Kind``.
- ``Defer`` for a busy lease, a lost lease, out of time, cancelled: nothing. That is
  coordination between workers, not a postponement of the product.
- ``Failed``: ``GranulesFailed``, unless its kind is ``failed_earlier`` (the granule had
  failed before; its message redelivered).
- ``Reject``: ``BadMessages`` on the first delivery only (the redrive delivers it again).
- ``Unavailable`` (our infrastructure): nothing (the outage is logged).

No event is counted twice: a verified granule's redelivered message is ``already
verified``, a failed granule's is ``granule failed earlier``, and a bad message counts
on its first receive. The counted failure that spends the last retry is the granule's
failure (``GranulesFailed``), not also a ``RetriesCounted``: one event, one record.

Bytes and seconds come with the outcome: only the attempt that verified the granule
returns ``Done`` with a ``transfer``. The ``Kind`` is the ``FailureKind`` the use case set
where it found the failure, never read back out of a reason's text.
"""

from __future__ import annotations

from s2_downloader.adapters.metrics import Metrics
from s2_downloader.domain import Defer, Done, Failed, Outcome, Reject, RetryLater, Transfer
from s2_downloader.domain.errors import FailureKind
from s2_downloader.domain.retry import DEFERRAL_BUDGET_FAILURES

__all__ = ["observe"]

#: Deferrals that postpone the product (the hub's answers, and a partial that another
#: attempt holds): the ones the use case records in ``last_error``. The other deferral
#: kinds (a busy or lost lease, out of time, cancelled) are coordination between workers.
_REPORTED_DEFERRALS = DEFERRAL_BUDGET_FAILURES | {FailureKind.UNAUTHORIZED}


def observe(metrics: Metrics, result: Outcome | object, *, first_delivery: bool) -> None:
    """Report what handling one message came to; ``first_delivery``: its receive count is 1."""
    match result:
        case Done(transfer=Transfer(transferred=transferred, seconds=seconds)):
            metrics.verified(transferred, seconds)
        case RetryLater(kind=kind):
            metrics.retry_counted(kind)
        case Defer(kind=kind) if kind in _REPORTED_DEFERRALS:
            metrics.deferred(kind)
        case Failed(kind=kind) if kind is not FailureKind.FAILED_EARLIER:
            metrics.failed()
        case Reject():
            if first_delivery:
                metrics.bad_message()
        case _:
            pass  # a coordination Defer, a redelivered failure, or Unavailable (logged by the caller)
