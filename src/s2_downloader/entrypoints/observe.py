"""What one handled message adds to the metrics (docs/interface.md section 9), each event once.

``observe(metrics, result, first_delivery=...)`` is called by the Lambda handler and the
runner right after the use case (and in the same thread), for every message:

- ``Done("verified")``: ``DownloadsVerified``, ``BytesDownloaded``, ``DownloadSeconds``.
- ``Done("already verified")``, ``Done("granule unknown")``: nothing (a redelivery, or no
  granule).
- ``RetryLater``: ``RetriesCounted`` with the failure's ``Kind``.
- ``Defer`` for a hub answer (throttled, offline, server error, unauthorized) or a partial
  in use: ``Deferrals`` with that ``Kind``.
- ``Defer`` for a busy lease, a lost lease, out of time, cancelled: nothing. That is
  coordination between workers, not a postponement of the product.
- ``Failed``: ``GranulesFailed``, unless the granule had failed earlier (its message
  redelivered).
- ``Reject``: ``BadMessages`` on the first delivery only (the redrive delivers it again).
- ``Unavailable`` (our infrastructure): nothing (the outage is logged).

No event is counted twice: a verified granule's redelivered message is ``already
verified``, a failed granule's is ``granule failed earlier``, and a bad message counts
on its first receive. The counted failure that spends the last retry is the granule's
failure (``GranulesFailed``), not also a ``RetriesCounted``: one event, one record.

Bytes and seconds: the outcomes do not carry them yet, so they are taken from the
``download_verified`` log record the use case writes just before returning
``Done("verified")``, in the same thread (a filter on the ``s2_downloader.download``
logger keeps the last one per thread; ``observe`` takes it). That record exists only
while that logger is enabled for INFO, which the runner's and the Lambda's logging
set-up does; without it the download is still counted, with 0 bytes and 0 seconds.
"""

from __future__ import annotations

import logging
import threading

import attrs

from s2_downloader.adapters.granule_queries import kind_of
from s2_downloader.adapters.metrics import Metrics
from s2_downloader.domain import Defer, Done, Failed, Outcome, Reject, RetryLater
from s2_downloader.domain.errors import FailureKind

__all__ = ["metric_kind", "observe"]

#: The use case's reason for a Failed outcome on a granule that had failed before.
_FAILED_EARLIER = "granule failed earlier"

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


@attrs.frozen
class _Transfer:
    bytes: int
    seconds: float


class _VerifiedTransfers(logging.Filter):
    """Keeps the bytes and seconds of the last ``download_verified`` record of each thread."""

    def __init__(self) -> None:
        super().__init__()
        self._last = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        """Note a verified download's figures; let every record through."""
        if getattr(record, "event", None) == "download_verified":
            transferred = getattr(record, "bytes", 0)
            seconds = getattr(record, "seconds", 0.0)
            self._last.value = _Transfer(
                bytes=transferred if isinstance(transferred, int) else 0,
                seconds=float(seconds) if isinstance(seconds, int | float) else 0.0,
            )
        return True

    def take(self) -> _Transfer:
        """The figures noted last in this thread (forgotten once taken); zeros when none."""
        value = getattr(self._last, "value", None)
        self._last.value = None
        return value if isinstance(value, _Transfer) else _Transfer(bytes=0, seconds=0.0)


_transfers = _VerifiedTransfers()
# A filter on the logger itself sees each of its records once, whatever the handlers.
logging.getLogger("s2_downloader.download").addFilter(_transfers)


def metric_kind(reason: str) -> str:
    """The ``Kind`` dimension for an outcome's reason: a failure kind of docs/interface.md section 6."""
    return kind_of(reason)


def observe(metrics: Metrics, result: Outcome | object, *, first_delivery: bool) -> None:
    """Report what handling one message came to; ``first_delivery``: its receive count is 1."""
    match result:
        case Done(reason="verified"):
            transfer = _transfers.take()
            metrics.verified(transfer.bytes, transfer.seconds)
        case Done():
            _transfers.take()
        case RetryLater(reason=reason):
            metrics.retry_counted(metric_kind(reason))
        case Defer(reason=reason):
            kind = metric_kind(reason)
            if kind in _DEFERRAL_KINDS:
                metrics.deferred(kind)
        case Failed(reason=reason):
            if not reason.startswith(_FAILED_EARLIER):
                metrics.failed()
        case Reject():
            if first_delivery:
                metrics.bad_message()
        case _:
            pass  # Unavailable: our own outage, logged once by the caller
