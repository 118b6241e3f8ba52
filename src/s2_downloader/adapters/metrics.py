"""CloudWatch metrics as Embedded Metric Format (EMF) records, one JSON object per line.

CloudWatch Logs turns each line into metrics in the namespace ``HLS/S2Downloader``; no
API call, no agent, nothing to batch. One record per event, written and flushed under a
lock: a record is a whole line whatever the number of worker threads, and an event is
never in two records, so nothing is counted twice (and nothing waits in a buffer that a
killed process would lose).

Written here rather than taken from a library, because neither maintained one fits a
long-running runner with many worker threads as well as a synchronous Lambda:

- Powertools for AWS Lambda (Python) ``Metrics`` keeps one set of metrics per namespace
  shared by every instance and flushes it at the end of an invocation; its maintainers
  say it is not thread-safe (aws-powertools/powertools-lambda-python#7467: a shared
  instance raced between a worker's flush and another's add). Its one set of dimensions
  per flush also cannot put ``Kind`` on two metrics only, without a ``single_metric``
  per event, which prints to stdout rather than to a stream we choose.
- aws-embedded-metrics (awslabs) is asyncio-first: ``flush()`` is a coroutine
  (awslabs/aws-embedded-metrics-python#52), a thread-local logger is still an open
  proposal (#8), and outside Lambda it detects its environment and ships to a CloudWatch
  agent unless told otherwise.

The format is small and fixed (see the EMF specification in the CloudWatch user guide),
so the few lines below, checked by a schema in the tests, cost less than either.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Final, Protocol, TextIO

import attrs

from s2_downloader.domain.errors import FailureKind

__all__ = ["NAMESPACE", "EmfMetrics", "Metrics", "NullMetrics"]

#: The CloudWatch namespace of every metric this package emits.
NAMESPACE: Final = "HLS/S2Downloader"

_log = logging.getLogger("s2_downloader.metrics")

#: Dimension values must hold a non-blank character and at most 1024 of them.
_MAX_DIMENSION_VALUE: Final = 1024


class Metrics(Protocol):
    """What the entrypoints report, one call per event."""

    def verified(self, transferred: int, seconds: float) -> None:
        """A download was verified after ``transferred`` bytes in ``seconds``."""
        ...

    def retry_counted(self, kind: FailureKind) -> None:
        """A failure of ``kind`` was counted against a granule's retries."""
        ...

    def deferred(self, kind: FailureKind) -> None:
        """A granule was put off for ``kind`` of reason, not counted."""
        ...

    def failed(self) -> None:
        """A granule failed for good."""
        ...

    def bad_message(self) -> None:
        """A download message was bad input."""
        ...

    def outage(self, component: str) -> None:
        """Our infrastructure failed: ``component`` is database, store, queue, secrets, token or schema."""
        ...


@attrs.frozen
class NullMetrics:
    """Reports nothing: the runner without ``--metrics``, and tests."""

    def verified(self, transferred: int, seconds: float) -> None:
        """Nothing."""
        del transferred, seconds

    def retry_counted(self, kind: FailureKind) -> None:
        """Nothing."""
        del kind

    def deferred(self, kind: FailureKind) -> None:
        """Nothing."""
        del kind

    def failed(self) -> None:
        """Nothing."""

    def bad_message(self) -> None:
        """Nothing."""

    def outage(self, component: str) -> None:
        """Nothing."""
        del component


@attrs.define
class EmfMetrics:
    """Writes one EMF record per event to ``stream`` (stdout in the Lambda and the runner).

    ``clock`` gives wall time in seconds since the epoch; the record's timestamp is in
    milliseconds, as the format requires.
    """

    stream: TextIO
    hub: str
    clock: Callable[[], float] = time.time
    _lock: threading.Lock = attrs.field(init=False, factory=threading.Lock)
    _broken: bool = attrs.field(init=False, default=False)

    def verified(self, transferred: int, seconds: float) -> None:
        """``DownloadsVerified`` 1, ``BytesDownloaded`` and ``DownloadSeconds``, in one record."""
        self._emit(
            {
                "DownloadsVerified": ("Count", 1),
                "BytesDownloaded": ("Bytes", max(0, int(transferred))),
                "DownloadSeconds": ("Seconds", _seconds(seconds)),
            }
        )

    def retry_counted(self, kind: FailureKind) -> None:
        """``RetriesCounted`` 1 with ``Kind`` ``kind.value``."""
        self._emit({"RetriesCounted": ("Count", 1)}, kind=kind)

    def deferred(self, kind: FailureKind) -> None:
        """``Deferrals`` 1 with ``Kind`` ``kind.value``."""
        self._emit({"Deferrals": ("Count", 1)}, kind=kind)

    def failed(self) -> None:
        """``GranulesFailed`` 1."""
        self._emit({"GranulesFailed": ("Count", 1)})

    def bad_message(self) -> None:
        """``BadMessages`` 1."""
        self._emit({"BadMessages": ("Count", 1)})

    def outage(self, component: str) -> None:
        """``Outages`` 1 with ``Component`` ``component`` (its own dimension set, without ``Hub``)."""
        self._emit({"Outages": ("Count", 1)}, component=component)

    def _emit(
        self,
        values: Mapping[str, tuple[str, int | float]],
        *,
        kind: FailureKind | None = None,
        component: str | None = None,
    ) -> None:
        dimensions: dict[str, str] = (
            {"Component": _dimension_value(component)}
            if component is not None
            else {"Hub": _dimension_value(self.hub)}
        )
        if kind is not None:
            dimensions["Kind"] = kind.value
        record: dict[str, object] = {
            "_aws": {
                "Timestamp": int(self.clock() * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": NAMESPACE,
                        "Dimensions": [list(dimensions)],
                        "Metrics": [{"Name": name, "Unit": unit} for name, (unit, _) in values.items()],
                    }
                ],
            },
            **dimensions,
            **{name: value for name, (_, value) in values.items()},
        }
        line = json.dumps(record, allow_nan=False, separators=(",", ":")) + "\n"
        with self._lock:
            try:
                self.stream.write(line)
                self.stream.flush()
            except (OSError, ValueError) as exc:
                # A closed or broken stdout must not stop downloads; say so once, not per event.
                if not self._broken:
                    self._broken = True
                    _log.warning("metrics could not be written: %s", exc, extra={"event": "metrics_broken"})


def _seconds(seconds: float) -> float:
    """Seconds as a finite, non-negative number to the millisecond (JSON has no NaN)."""
    return round(seconds, 3) if math.isfinite(seconds) and seconds > 0 else 0.0


def _dimension_value(value: str) -> str:
    """``value`` as CloudWatch accepts a dimension value: not blank, not too long."""
    value = value.strip()[:_MAX_DIMENSION_VALUE]
    return value or "unknown"
