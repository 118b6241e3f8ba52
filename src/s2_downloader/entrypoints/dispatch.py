"""One received message to one Outcome, and each Outcome to what happens to the message.

Shared by the Lambda handler and the local runner so both treat a message alike.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

import attrs

from s2_downloader.adapters.wire import parse_download_message
from s2_downloader.domain import AttemptContext, Defer, Done, Failed, Outcome, Reject, RetryLater, handle
from s2_downloader.domain.errors import BadRequest, FileStoreError, QueueError, StoreError
from s2_downloader.domain.retry import MAX_DELAY_SECONDS

__all__ = [
    "INFRASTRUCTURE_ERRORS",
    "Action",
    "Delete",
    "HandBack",
    "LeaveForRedrive",
    "Outage",
    "Resend",
    "Result",
    "Unavailable",
    "action_for",
    "outcome_for",
]

_log = logging.getLogger("s2_downloader.dispatch")

#: Our own infrastructure failing (the database, the mount, the upload queue): not the
#: message's fault, so its receive count must not pay for it.
INFRASTRUCTURE_ERRORS: tuple[type[Exception], ...] = (StoreError, FileStoreError, QueueError)


@attrs.frozen(kw_only=True)
class Unavailable:
    """The message could not be handled because our own infrastructure failed.

    ``component`` names which part, as the ``Outages`` metric does: ``database`` (the
    granule store), ``store`` (the file store as a whole) or ``queue``.
    """

    reason: str
    component: str = "database"


def component_of(exc: Exception) -> str:
    """The ``Outages`` component an infrastructure error belongs to."""
    if isinstance(exc, FileStoreError):
        return "store"
    if isinstance(exc, QueueError):
        return "queue"
    return "database"


#: What handling one message came to: the use case's outcome, or an outage of ours.
Result = Outcome | Unavailable


@attrs.frozen(kw_only=True)
class Delete:
    """The message is finished with: delete it."""


@attrs.frozen(kw_only=True)
class Resend:
    """Put the body back on the download queue hidden for ``delay_seconds``, then delete this copy.

    A fresh message rather than a longer visibility: deferrals must not use up the
    receive count that the dead-letter redrive reserves for poison messages.
    """

    delay_seconds: int


@attrs.frozen(kw_only=True)
class HandBack:
    """Give the message back at once, uncounted (shutdown, out of time)."""


@attrs.frozen(kw_only=True)
class LeaveForRedrive:
    """Do not delete: after maxReceiveCount deliveries the queue moves it to the dead-letter queue."""


Action = Delete | Resend | HandBack | LeaveForRedrive


def outcome_for(
    body: str, context: AttemptContext, check_url: Callable[[str], object], *, message_id: str = ""
) -> Result:
    """Parse ``body`` and run the use case on it.

    Bad input becomes ``Reject`` and an infrastructure error ``Unavailable``, never an
    exception; anything else raised is a bug and propagates.
    """
    try:
        request = parse_download_message(body, check_url)
    except BadRequest as exc:
        _log.warning(
            "bad download message: %s",
            exc.reason,
            extra={"event": "bad_message", "message_id": message_id, "reason": exc.reason},
        )
        return Reject(detail=exc.reason)
    try:
        return handle(request, context)
    except INFRASTRUCTURE_ERRORS as exc:
        # Logged once per outage by the caller's Outage, not once per message here.
        return Unavailable(reason=f"{type(exc).__name__}: {exc}", component=component_of(exc))


def action_for(result: Result, *, outage_delay: int = 60) -> Action:
    """What the queue should do with the message that led to ``result``.

    ``outage_delay`` is how long a message handed back during an outage stays hidden.
    """
    match result:
        case Done():
            return Delete()
        case RetryLater(delay_seconds=delay) | Defer(delay_seconds=delay) if delay > 0:
            return Resend(delay_seconds=delay)
        case RetryLater() | Defer():
            return HandBack()
        case Failed() | Reject():
            return LeaveForRedrive()
        case Unavailable():
            return Resend(delay_seconds=max(1, outage_delay))


@attrs.define
class Outage:
    """Whether a dependency is down, with a growing back-off, logged once as it starts and ends.

    ``failed`` and ``recovered`` may be called from many threads: however many messages
    fail during one outage, the log gets one line when it starts and one when it ends.
    """

    what: str
    base_seconds: float = 2.0
    max_seconds: float = 120.0
    #: A message handed back during the outage stays hidden at least this long.
    min_resend_seconds: int = 10
    clock: Callable[[], float] = time.monotonic
    _started: float | None = None
    _level: int = 0
    _failures: int = 0
    _lock: threading.Lock = attrs.field(factory=threading.Lock)

    @property
    def active(self) -> bool:
        """Whether an outage is going on."""
        return self._started is not None

    def failed(self, reason: str, component: str | None = None) -> bool:
        """Note one failure; the first of an outage is logged (ERROR) and ``True`` is returned.

        ``component`` names the part that failed (``database``, ``store``, ``queue``), as
        the ``Outages`` metric does; the caller counts that metric once per episode.
        """
        with self._lock:
            self._failures += 1
            if self._started is not None:
                return False
            self._started = self.clock()
            self._level = 0
        _log.error(
            "%s unavailable; backing off: %s",
            component or self.what,
            reason,
            extra={"event": "outage_started", "component": component or self.what, "reason": reason},
        )
        return True

    def pause(self) -> float:
        """Seconds to wait before trying again; doubles with each call during one outage."""
        with self._lock:
            seconds = min(self.max_seconds, self.base_seconds * 2.0 ** min(self._level, 32))
            self._level += 1
            return seconds

    def resend_delay(self) -> int:
        """How long a message handed back now stays hidden: the current back-off or the outage's age,
        whichever is longer, at least the minimum and at most SQS's 900 s.

        The age makes the delay grow with time, however often messages meet the outage: a
        Lambda environment meets it once per invocation, and counting those would hide a
        backlog for 15 minutes within seconds of a short outage.
        """
        with self._lock:
            seconds = self.base_seconds * 2.0 ** min(self._level, 32)
            age = 0.0 if self._started is None else self.clock() - self._started
        return min(MAX_DELAY_SECONDS, max(self.min_resend_seconds, math.ceil(seconds), math.ceil(age)))

    def recovered(self) -> None:
        """Note a success; the end of an outage is logged."""
        with self._lock:
            if self._started is None:
                return
            seconds = self.clock() - self._started
            failures = self._failures
            self._started, self._level, self._failures = None, 0, 0
        _log.warning(
            "%s available again after %.0f s (%d failures)",
            self.what,
            seconds,
            failures,
            extra={
                "event": "outage_ended",
                "component": self.what,
                "seconds": round(seconds, 3),
                "failures": failures,
            },
        )
