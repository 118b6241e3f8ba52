"""The local runner: long-polls the download queue and handles up to N messages at once."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

import attrs

from s2_downloader.adapters.metrics import Metrics, NullMetrics
from s2_downloader.adapters.sqs import QueueCounts, ReceiptExpired, ReceivedMessage
from s2_downloader.adapters.wire import peek_granule_id
from s2_downloader.domain import AttemptContext, Outcome
from s2_downloader.domain.errors import QueueError
from s2_downloader.entrypoints.dispatch import (
    Delete,
    HandBack,
    LeaveForRedrive,
    Outage,
    Resend,
    Result,
    Unavailable,
    action_for,
    outcome_for,
)
from s2_downloader.entrypoints.observe import observe
from s2_downloader.entrypoints.progress import ProgressBoard

__all__ = ["MessageQueue", "Runner", "RunnerSettings"]

_log = logging.getLogger("s2_downloader.runner")


class MessageQueue(Protocol):
    """The download queue as the runner uses it."""

    def receive(
        self, max_messages: int = 10, wait_seconds: int = 20, visibility_timeout: int | None = None
    ) -> list[ReceivedMessage]:
        """Long-poll for messages."""
        ...

    def delete(self, receipt_handle: str) -> None:
        """Delete a received message."""
        ...

    def change_visibility(self, receipt_handle: str, seconds: int) -> None:
        """Hide a received message for ``seconds`` more."""
        ...

    def send(self, body: str, delay_seconds: int = 0) -> str:
        """Send a message."""
        ...

    def counts(self) -> QueueCounts:
        """Visible, in-flight and delayed counts."""
        ...

    def visibility_timeout(self) -> int:
        """The queue's own visibility timeout."""
        ...

    def has_dead_letter_queue(self) -> bool:
        """Whether a redrive policy will take messages that keep failing."""
        ...


@attrs.frozen(kw_only=True)
class RunnerSettings:
    """How the runner paces itself."""

    concurrency: int = 15
    until_empty: bool = False
    poll_seconds: int = 5
    #: Hide received messages this long, renewed while they are worked on; None: the queue's own.
    visibility_seconds: int | None = None
    grace_seconds: float = 10.0
    #: ``until_empty`` stops after this many consecutive empty readings of the queue's counts,
    #: each at least ``empty_interval`` seconds after the one before (SQS's counts are
    #: approximate, and each is taken at its own instant).
    empty_readings: int = 3
    empty_interval: float = 1.0
    #: Seconds between visibility renewals; None: a third of the visibility timeout (at least 0.5 s).
    heartbeat_seconds: float | None = None


@attrs.define
class _InFlight:
    message: ReceivedMessage
    granule_id: str | None
    future: Future[None] | None = None


@attrs.define
class _Cancellation:
    """The runner's Cancellation: set when the grace period is over.

    Until ``stop``, hub calls have no deadline of their own (their timeouts bound them);
    after it, every hub call started during the grace period must end with it, so that
    a download still running then can be handed back at once.
    """

    _event: threading.Event = attrs.field(factory=threading.Event)
    _deadline: float | None = None

    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        self._event.set()

    def deadline(self) -> float | None:
        return self._deadline

    def start_grace(self, seconds: float) -> None:
        self._deadline = time.monotonic() + seconds


@attrs.define
class Runner:
    """Receives, hands each message to a worker thread, keeps its visibility alive, maps outcomes."""

    queue: MessageQueue
    context: AttemptContext
    check_url: Callable[[str], object]
    settings: RunnerSettings = attrs.field(factory=RunnerSettings)
    board: ProgressBoard = attrs.field(factory=ProgressBoard)
    #: Where each handled message's metric events go (``run --metrics``: EMF on stdout).
    metrics: Metrics = attrs.field(factory=NullMetrics)
    stopping: threading.Event = attrs.field(factory=threading.Event)
    cancel: _Cancellation = attrs.field(factory=_Cancellation)
    #: The database, the mount or the upload queue failing; while it lasts, one message at a time.
    outage: Outage = attrs.field(factory=lambda: Outage("granule store, file store or upload queue"))
    #: The download queue itself failing.
    queue_outage: Outage = attrs.field(factory=lambda: Outage("download queue"))
    #: Keyed by receipt handle: a redelivered message is a second entry, with its own renewals.
    _inflight: dict[str, _InFlight] = attrs.field(factory=dict)
    _lock: threading.Lock = attrs.field(factory=threading.Lock)
    _slot_freed: threading.Event = attrs.field(factory=threading.Event)
    _finished: threading.Event = attrs.field(factory=threading.Event)
    _visibility: int = 30
    _redrive: bool = True

    def __attrs_post_init__(self) -> None:
        # The use case checks this between chunks: set, it releases the granule.
        self.context = attrs.evolve(self.context, cancellation=self.cancel, progress=self.board)

    def stop(self) -> None:
        """Stop receiving (a signal handler calls this); in-flight work gets a grace period."""
        self.cancel.start_grace(self.settings.grace_seconds)
        self.stopping.set()
        self._slot_freed.set()

    def run(self) -> int:
        """Handle messages until stopped (or, with ``until_empty``, until the queue is empty); exit code."""
        settings = self.settings
        # The queue's own timeout is what an operator set for crashed workers' messages to return.
        self._visibility = settings.visibility_seconds or max(1, self.queue.visibility_timeout())
        self._redrive = self.queue.has_dead_letter_queue()
        if not self._redrive:
            _log.warning(
                "the download queue has no dead-letter queue: failed and bad messages are logged and deleted",
                extra={"event": "no_dead_letter_queue"},
            )
        beat = threading.Thread(target=self._keep_visible, name="visibility-heartbeat", daemon=True)
        beat.start()
        _log.info(
            "runner started",
            extra={
                "event": "runner_started",
                "concurrency": settings.concurrency,
                "until_empty": settings.until_empty,
            },
        )
        with ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="download") as pool:
            try:
                self._receive_loop(pool)
            finally:
                self._wind_down()
        self._finished.set()
        beat.join(timeout=5)
        _log.info("runner stopped", extra={"event": "runner_stopped", **self.board.outcomes})
        return 0

    # -- receiving ----------------------------------------------------------------

    def _receive_loop(self, pool: ThreadPoolExecutor) -> None:
        settings = self.settings
        empty = _EmptyWatch(readings=settings.empty_readings, interval=settings.empty_interval)
        while not self.stopping.is_set():
            free = settings.concurrency - self._active()
            if self.outage.active:
                # One message at a time until one gets through: a probe, after a growing pause.
                if self._active():
                    self._wait_for_slot()
                    continue
                if self.stopping.wait(self.outage.pause()):
                    return
                free = 1
            if free <= 0:
                self._wait_for_slot()
                continue
            try:
                messages = self.queue.receive(
                    max_messages=min(10, free),
                    wait_seconds=1 if settings.until_empty else settings.poll_seconds,
                    visibility_timeout=self._visibility,
                )
            except QueueError as exc:
                if self.queue_outage.failed(str(exc), "queue"):
                    self.metrics.outage("queue")
                self.stopping.wait(self.queue_outage.pause())
                continue
            self.queue_outage.recovered()
            for message in messages:
                if self.stopping.is_set():
                    self._hand_back(message)
                    continue
                self._start(pool, message)
            if not settings.until_empty:
                continue
            if messages or self._active():
                empty.reset()
            elif empty.check(self._queue_empty):
                _log.info("queue is empty", extra={"event": "queue_empty"})
                return

    def _wait_for_slot(self) -> None:
        self._slot_freed.wait(0.5)
        self._slot_freed.clear()

    def _queue_empty(self) -> bool:
        try:
            return self.queue.counts().empty
        except QueueError as exc:
            _log.warning("queue counts failed: %s", exc, extra={"event": "counts_failed"})
            return False

    def _active(self) -> int:
        with self._lock:
            return len(self._inflight)

    def _start(self, pool: ThreadPoolExecutor, message: ReceivedMessage) -> None:
        entry = _InFlight(message=message, granule_id=peek_granule_id(message.body))
        _log.info(
            "message received",
            extra={
                "event": "message_received",
                "granule_id": entry.granule_id,
                "message_id": message.message_id,
                "receive_count": message.receive_count,
            },
        )
        with self._lock:
            self._inflight[message.receipt_handle] = entry
        entry.future = pool.submit(self._work, entry)

    # -- working ------------------------------------------------------------------

    def _work(self, entry: _InFlight) -> None:
        message = entry.message
        outcome_name = "error"
        try:
            result = outcome_for(message.body, self.context, self.check_url, message_id=message.message_id)
            observe(self.metrics, result, first_delivery=message.receive_count <= 1)
            if isinstance(result, Unavailable):
                if self.outage.failed(result.reason, result.component):
                    self.metrics.outage(result.component)
                outcome_name = "unavailable"
            else:
                self.outage.recovered()
                outcome_name = _name(result)
            # Out of the heartbeat's sight first, so it cannot hide a message just handed back.
            with self._lock:
                self._inflight.pop(message.receipt_handle, None)
            self._settle(message, result)
        except Exception:  # noqa: BLE001 - logged with its trace; one message must not stop the runner
            # Left alone, the message comes back after its visibility timeout.
            _log.exception(
                "handling failed; the message will come back",
                extra={
                    "event": "handle_failed",
                    "granule_id": entry.granule_id,
                    "message_id": message.message_id,
                },
            )
        finally:
            with self._lock:
                self._inflight.pop(message.receipt_handle, None)
            self.board.finished(entry.granule_id, outcome_name)
            self._slot_freed.set()

    def _settle(self, message: ReceivedMessage, result: Result) -> None:
        action = action_for(result, outage_delay=self.outage.resend_delay())
        try:
            match action:
                case Delete():
                    self.queue.delete(message.receipt_handle)
                case Resend(delay_seconds=delay):
                    self.queue.send(message.body, delay)
                    self.queue.delete(message.receipt_handle)
                case HandBack():
                    self.queue.change_visibility(message.receipt_handle, 0)
                case LeaveForRedrive() if self._redrive:
                    # Visible at once: after maxReceiveCount receives it is in the dead-letter queue.
                    self.queue.change_visibility(message.receipt_handle, 0)
                case LeaveForRedrive():
                    # Without a redrive policy it would cycle forever; its granule (if any) is
                    # recorded as failed, and the body is kept in the log.
                    _log.error(
                        "no dead-letter queue; message deleted",
                        extra={
                            "event": "message_dropped",
                            "message_id": message.message_id,
                            "body": message.body[:2000],
                        },
                    )
                    self.queue.delete(message.receipt_handle)
        except ReceiptExpired:
            _log.warning(
                "message was redelivered meanwhile; its new holder settles it",
                extra={"event": "receipt_expired", "message_id": message.message_id},
            )
        except QueueError as exc:
            # The message comes back after its visibility timeout; the outage is logged once.
            self.queue_outage.failed(str(exc))

    def _hand_back(self, message: ReceivedMessage) -> None:
        try:
            self.queue.change_visibility(message.receipt_handle, 0)
        except QueueError as exc:
            _log.warning("could not hand a message back: %s", exc, extra={"event": "hand_back_failed"})

    def _keep_visible(self) -> None:
        interval = self.settings.heartbeat_seconds or max(0.5, self._visibility / 3)
        while not self._finished.wait(interval):
            with self._lock:
                entries = list(self._inflight.values())
            for entry in entries:
                try:
                    self.queue.change_visibility(entry.message.receipt_handle, self._visibility)
                except ReceiptExpired:
                    continue  # redelivered meanwhile: its new holder renews it
                except QueueError as exc:
                    self.queue_outage.failed(str(exc))

    # -- stopping -----------------------------------------------------------------

    def _wind_down(self) -> None:
        deadline = time.monotonic() + self.settings.grace_seconds
        while self._active() and time.monotonic() < deadline:
            self._slot_freed.wait(0.2)
            self._slot_freed.clear()
        if self._active():
            _log.info(
                "grace period over; handing in-flight messages back",
                extra={"event": "handing_back", "in_flight": self._active()},
            )
            self.cancel.set()


@attrs.define
class _EmptyWatch:
    """Counts consecutive empty readings of the queue, each ``interval`` after the last."""

    readings: int
    interval: float
    clock: Callable[[], float] = time.monotonic
    _streak: int = 0
    _last: float | None = None

    def reset(self) -> None:
        self._streak, self._last = 0, None

    def check(self, is_empty: Callable[[], bool]) -> bool:
        """Take a reading if one is due; True once ``readings`` in a row were empty."""
        now = self.clock()
        if self._last is not None and now - self._last < self.interval:
            return False
        self._last = now
        self._streak = self._streak + 1 if is_empty() else 0
        return self._streak >= self.readings


_NAMES = {
    "Done": "done",
    "RetryLater": "retried",
    "Defer": "deferred",
    "Failed": "failed",
    "Reject": "rejected",
}


def _name(outcome: Outcome) -> str:
    return _NAMES[type(outcome).__name__]
