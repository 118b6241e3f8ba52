"""The local runner: long-polls the download queue and handles up to N messages at once."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

import attrs

from s2_downloader.adapters.sqs import QueueCounts, ReceiptExpired, ReceivedMessage
from s2_downloader.domain import Outcome, Ports
from s2_downloader.domain.errors import QueueError
from s2_downloader.entrypoints.dispatch import (
    Delete,
    HandBack,
    LeaveForRedrive,
    Resend,
    action_for,
    outcome_for,
)
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


@attrs.define
class _InFlight:
    message: ReceivedMessage
    granule_id: str | None
    future: Future[None] | None = None


def _granule_id_of(body: str) -> str | None:
    # Only for the display and logs; the real parse happens in dispatch.
    import json  # noqa: PLC0415 - keep the hot import list short

    try:
        raw = json.loads(body)
    except ValueError:
        return None
    value = raw.get("id") if isinstance(raw, dict) else None
    return value if isinstance(value, str) else None


@attrs.define
class Runner:
    """Receives, hands each message to a worker thread, keeps its visibility alive, maps outcomes."""

    queue: MessageQueue
    ports: Ports
    allowed_origins: Collection[tuple[str, str, int]]
    settings: RunnerSettings = attrs.field(factory=RunnerSettings)
    board: ProgressBoard = attrs.field(factory=ProgressBoard)
    stopping: threading.Event = attrs.field(factory=threading.Event)
    cancel: threading.Event = attrs.field(factory=threading.Event)
    _inflight: dict[str, _InFlight] = attrs.field(factory=dict)
    _lock: threading.Lock = attrs.field(factory=threading.Lock)
    _slot_freed: threading.Event = attrs.field(factory=threading.Event)
    _finished: threading.Event = attrs.field(factory=threading.Event)
    _visibility: int = 30
    _redrive: bool = True

    def __attrs_post_init__(self) -> None:
        # The use case checks this between chunks: set, it releases the granule.
        self.ports = attrs.evolve(self.ports, cancellation=self.cancel, progress=self.board)

    def stop(self) -> None:
        """Stop receiving (a signal handler calls this); in-flight work gets a grace period."""
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
        while not self.stopping.is_set():
            free = settings.concurrency - self._active()
            if free <= 0:
                self._slot_freed.wait(0.5)
                self._slot_freed.clear()
                continue
            try:
                messages = self.queue.receive(
                    max_messages=min(10, free),
                    wait_seconds=1 if settings.until_empty else settings.poll_seconds,
                    visibility_timeout=self._visibility,
                )
            except QueueError as exc:
                _log.warning("receive failed: %s", exc, extra={"event": "receive_failed"})
                self.stopping.wait(2.0)
                continue
            for message in messages:
                if self.stopping.is_set():
                    self._hand_back(message)
                    continue
                self._start(pool, message)
            if settings.until_empty and not messages and self._active() == 0 and self._queue_empty():
                _log.info("queue is empty", extra={"event": "queue_empty"})
                return

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
        entry = _InFlight(message=message, granule_id=_granule_id_of(message.body))
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
            self._inflight[message.message_id] = entry
        entry.future = pool.submit(self._work, entry)

    # -- working ------------------------------------------------------------------

    def _work(self, entry: _InFlight) -> None:
        message = entry.message
        outcome_name = "error"
        try:
            outcome = outcome_for(
                message.body, self.ports, self.allowed_origins, message_id=message.message_id
            )
            outcome_name = _name(outcome)
            # Out of the heartbeat's sight first, so it cannot hide a message just handed back.
            with self._lock:
                self._inflight.pop(message.message_id, None)
            self._settle(message, outcome)
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
                self._inflight.pop(message.message_id, None)
            self.board.finished(entry.granule_id, outcome_name)
            self._slot_freed.set()

    def _settle(self, message: ReceivedMessage, outcome: Outcome) -> None:
        action = action_for(outcome)
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

    def _hand_back(self, message: ReceivedMessage) -> None:
        try:
            self.queue.change_visibility(message.receipt_handle, 0)
        except QueueError as exc:
            _log.warning("could not hand a message back: %s", exc, extra={"event": "hand_back_failed"})

    def _keep_visible(self) -> None:
        interval = max(0.5, self._visibility / 3)
        while not self._finished.wait(interval):
            with self._lock:
                entries = list(self._inflight.values())
            for entry in entries:
                try:
                    self.queue.change_visibility(entry.message.receipt_handle, self._visibility)
                except QueueError as exc:
                    _log.warning("visibility heartbeat failed: %s", exc, extra={"event": "heartbeat_failed"})

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


_NAMES = {
    "Done": "done",
    "RetryLater": "retried",
    "Defer": "deferred",
    "Failed": "failed",
    "Reject": "rejected",
}


def _name(outcome: Outcome) -> str:
    return _NAMES[type(outcome).__name__]
