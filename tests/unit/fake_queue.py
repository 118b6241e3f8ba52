"""An SQS queue in memory for the runner tests, with visibility timeouts on the monotonic clock."""

from __future__ import annotations

import itertools
import threading
import time

import attrs

from s2_downloader.adapters.sqs import QueueCounts, ReceiptExpired, ReceivedMessage

__all__ = ["FakeQueue"]


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
    #: (receipt handle, seconds, monotonic time) of every visibility change.
    renewals: list[tuple[str, int, float]] = attrs.field(factory=list)
    sent: list[tuple[str, int]] = attrs.field(factory=list)
    #: The highest receive count any delivery has had.
    most_receives: int = 0
    _ids: itertools.count[int] = attrs.field(factory=itertools.count)
    _lock: threading.Lock = attrs.field(factory=threading.Lock)

    def send(self, body: str, delay_seconds: int = 0) -> str:
        with self._lock:
            message_id = f"m{next(self._ids)}"
            self.messages[message_id] = _Stored(body=body, visible_at=time.monotonic() + delay_seconds)
            self.sent.append((body, delay_seconds))
            return message_id

    def receive(
        self, max_messages: int = 10, wait_seconds: int = 20, visibility_timeout: int | None = None
    ) -> list[ReceivedMessage]:
        with self._lock:
            now = time.monotonic()
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
            self.messages[message_id].visible_at = time.monotonic() + seconds
            self.visibility_calls.append((message_id, seconds))
            self.renewals.append((receipt_handle, seconds, time.monotonic()))

    def counts(self) -> QueueCounts:
        if self.blind_counts:
            return QueueCounts(visible=0, in_flight=0, delayed=0)
        with self._lock:
            now = time.monotonic()
            visible = sum(1 for m in self.messages.values() if m.visible_at <= now)
            return QueueCounts(visible=visible, in_flight=len(self.messages) - visible, delayed=0)

    def visibility_timeout(self) -> int:
        return self.visibility

    def has_dead_letter_queue(self) -> bool:
        return self.redrive

    def is_fifo(self) -> bool:
        return self.fifo
