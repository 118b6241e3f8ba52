"""An SQS queue in memory for the runner tests, with visibility timeouts on an injectable clock.

By default the clock is ``time.monotonic``; a test that must not depend on how fast the
machine is gives it a clock that moves only when told (``ManualClock``), so a visibility
timeout runs out exactly when the test says and not because the machine was busy.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

import attrs

from s2_downloader.adapters.sqs import QueueCounts, ReceiptExpired, ReceivedMessage

__all__ = ["FakeQueue", "ManualClock"]


@attrs.define
class ManualClock:
    """A monotonic clock that moves only when ``advance`` is called."""

    now: float = 1000.0
    _lock: threading.Lock = attrs.field(factory=threading.Lock)

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward."""
        with self._lock:
            self.now += seconds


@attrs.define
class _Stored:
    body: str
    visible_at: float = 0.0
    receive_count: int = 0
    handles: list[str] = attrs.field(factory=list)


@attrs.define
class FakeQueue:
    """An SQS queue in memory: every delivery gets a new receipt handle, as on SQS."""

    name: str = "downloads"
    visibility: int = 30
    redrive: bool = True
    fifo: bool = False
    #: Counts that miss every message, as SQS's approximate ones can at the edge of a delay.
    blind_counts: bool = False
    messages: dict[str, _Stored] = attrs.field(factory=dict)
    deleted: list[str] = attrs.field(factory=list)
    #: (message id, seconds) of every visibility change.
    visibility_calls: list[tuple[str, int]] = attrs.field(factory=list)
    #: (receipt handle, seconds, ``clock()``) of every visibility change.
    renewals: list[tuple[str, int, float]] = attrs.field(factory=list)
    sent: list[tuple[str, int]] = attrs.field(factory=list)
    #: The highest receive count any delivery has had.
    most_receives: int = 0
    #: Where visibility timeouts and delays are measured.
    clock: Callable[[], float] = time.monotonic
    #: Called (outside the lock) after each reading of the counts: a test's hook to act between readings.
    on_counts: Callable[[], None] | None = None
    _ids: itertools.count[int] = attrs.field(factory=itertools.count)
    _lock: threading.Lock = attrs.field(factory=threading.Lock)
    _changed: threading.Condition = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._changed = threading.Condition(self._lock)

    def send(self, body: str, delay_seconds: int = 0) -> str:
        with self._lock:
            message_id = f"m{next(self._ids)}"
            self.messages[message_id] = _Stored(body=body, visible_at=self.clock() + delay_seconds)
            self.sent.append((body, delay_seconds))
            return message_id

    def receive(
        self, max_messages: int = 10, wait_seconds: int = 20, visibility_timeout: int | None = None
    ) -> list[ReceivedMessage]:
        with self._lock:
            now = self.clock()
            got: list[ReceivedMessage] = []
            for message_id, stored in self.messages.items():
                if stored.visible_at <= now and len(got) < max_messages:
                    stored.receive_count += 1
                    handle = f"{message_id}/{stored.receive_count}"
                    stored.handles.append(handle)
                    self.most_receives = max(self.most_receives, stored.receive_count)
                    stored.visible_at = now + (visibility_timeout or self.visibility)
                    got.append(
                        ReceivedMessage(
                            message_id=message_id,
                            receipt_handle=handle,
                            body=stored.body,
                            receive_count=stored.receive_count,
                        )
                    )
        if not got:
            time.sleep(0.01)
        return got

    def redeliver(self, message_id: str) -> None:
        """Make a message visible now, as if its visibility timeout had run out."""
        with self._lock:
            self.messages[message_id].visible_at = 0.0

    def _find(self, receipt_handle: str) -> str:
        message_id = receipt_handle.split("/", maxsplit=1)[0]
        stored = self.messages.get(message_id)
        if stored is None or receipt_handle not in stored.handles:
            raise ReceiptExpired(f"no message for {receipt_handle}")
        return message_id

    def delete(self, receipt_handle: str) -> None:
        with self._lock:
            message_id = self._find(receipt_handle)
            # As on SQS: an older delivery's handle is accepted but deletes nothing.
            if receipt_handle == self.messages[message_id].handles[-1]:
                del self.messages[message_id]
                self.deleted.append(message_id)

    def change_visibility(self, receipt_handle: str, seconds: int) -> None:
        with self._lock:
            message_id = self._find(receipt_handle)
            if receipt_handle != self.messages[message_id].handles[-1]:
                raise ReceiptExpired(f"{receipt_handle} was superseded by a later delivery")
            now = self.clock()
            self.messages[message_id].visible_at = now + seconds
            self.visibility_calls.append((message_id, seconds))
            self.renewals.append((receipt_handle, seconds, now))
            self._changed.notify_all()

    def wait_for_renewals(self, receipt_handle: str, count: int, timeout: float) -> bool:
        """Wait until ``receipt_handle``'s visibility has been changed ``count`` times; whether it was."""

        def enough() -> bool:
            return count <= sum(1 for handle, _, _ in self.renewals if handle == receipt_handle)

        with self._changed:
            return self._changed.wait_for(enough, timeout)

    def counts(self) -> QueueCounts:
        counts = self._counts()
        if self.on_counts is not None:
            self.on_counts()
        return counts

    def _counts(self) -> QueueCounts:
        if self.blind_counts:
            return QueueCounts(visible=0, in_flight=0, delayed=0)
        with self._lock:
            now = self.clock()
            visible = sum(1 for m in self.messages.values() if m.visible_at <= now)
            return QueueCounts(visible=visible, in_flight=len(self.messages) - visible, delayed=0)

    def visibility_timeout(self) -> int:
        return self.visibility

    def has_dead_letter_queue(self) -> bool:
        return self.redrive

    def is_fifo(self) -> bool:
        return self.fifo
