"""What one handled message adds to the metrics (docs/interface.md section 9), each event once.

``observe(metrics, result, first_delivery=...)`` is called by the Lambda handler and the
runner right after the use case (and in the same thread), for every message:

- ``Done`` with a ``transfer`` (the attempt that verified): ``DownloadsVerified``,
  ``BytesDownloaded``, ``DownloadSeconds``.
- ``Done`` without one ("already verified", "granule unknown"): nothing (a redelivery, or
  no granule).
- ``RetryLater``: ``RetriesCounted`` with the failure's ``Kind``.
- ``Defer`` for a hub answer (throttled, offline, server error, unauthorized) or a partial
  in use: ``Deferrals`` with that ``Kind``.
- ``Defer`` for a busy lease, a lost lease, out of time, cancelled: nothing. That is
  coordination between workers, not a postponement of the product.
- ``Failed``: ``GranulesFailed``, unless ``earlier`` (the granule had failed before; its
  message redelivered).
- ``Reject``: ``BadMessages`` on the first delivery only (the redrive delivers it again).
- ``Unavailable`` (our infrastructure): nothing (the outage is logged).

No event is counted twice: a verified granule's redelivered message is ``already
verified``, a failed granule's is ``granule failed earlier``, and a bad message counts
on its first receive. The counted failure that spends the last retry is the granule's
failure (``GranulesFailed``), not also a ``RetriesCounted``: one event, one record.

Bytes and seconds come with the outcome: only the attempt that verified the granule
returns ``Done`` with a ``transfer``.
"""

from __future__ import annotations

from s2_downloader.adapters.granule_queries import kind_of
from s2_downloader.adapters.metrics import Metrics
from s2_downloader.domain import Defer, Done, Failed, Outcome, Reject, RetryLater, Transfer
from s2_downloader.domain.errors import FailureKind

__all__ = ["metric_kind", "observe"]

#: Defer kinds that are a postponement of the product (hub answers, and a partial that
#: another attempt holds); the others are coordination between workers.
_DEFERRAL_KINDS = frozenset(
    {
        FailureKind.THROTTLED.value,
        FailureKind.OFFLINE.value,
        FailureKind.SERVER_ERROR.value,
        FailureKind.UNAUTHORIZED.value,
        "partial_in_use",
    }
)


def metric_kind(reason: str) -> str:
    """The ``Kind`` dimension for an outcome's reason: a failure kind of docs/interface.md section 6."""
    return kind_of(reason)


def observe(metrics: Metrics, result: Outcome | object, *, first_delivery: bool) -> None:
    """Report what handling one message came to; ``first_delivery``: its receive count is 1."""
    match result:
        case Done(transfer=Transfer(transferred=transferred, seconds=seconds)):
            metrics.verified(transferred, seconds)
        case RetryLater(reason=reason):
            metrics.retry_counted(metric_kind(reason))
        case Defer(reason=reason):
            kind = metric_kind(reason)
            if kind in _DEFERRAL_KINDS:
                metrics.deferred(kind)
        case Failed(earlier=False):
            metrics.failed()
        case Reject():
            if first_delivery:
                metrics.bad_message()
        case _:
            pass  # Unavailable: our own outage, logged once by the caller
