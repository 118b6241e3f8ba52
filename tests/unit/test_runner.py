"""The local runner on fakes: queue actions, until-empty, shutdown hand-back, visibility heartbeat."""

from __future__ import annotations

import itertools
import json
import threading
import time

import attrs

from s2_downloader.adapters.sqs import QueueCounts, ReceivedMessage
from s2_downloader.domain import State
from s2_downloader.domain.errors import FailureKind
from s2_downloader.entrypoints.runner import Runner, RunnerSettings
from tests.unit.fakes import HubFault
from tests.unit.world import HUB, World

ORIGINS = {("https", "hub.test", 443)}


@attrs.define
class _Stored:
    body: str
    visible_at: float = 0.0
    receive_count: int = 0
    handle: str = ""


@attrs.define
class FakeQueue:
    """An SQS queue in memory, with visibility timeouts on the monotonic clock."""

    visibility: int = 30
    redrive: bool = True
    messages: dict[str, _Stored] = attrs.field(factory=dict)
    deleted: list[str] = attrs.field(factory=list)
    visibility_calls: list[tuple[str, int]] = attrs.field(factory=list)
    _ids: itertools.count[int] = attrs.field(factory=itertools.count)
    _lock: threading.Lock = attrs.field(factory=threading.Lock)

    def send(self, body: str, delay_seconds: int = 0) -> str:
        with self._lock:
            message_id = f"m{next(self._ids)}"
            self.messages[message_id] = _Stored(body=body, visible_at=time.monotonic() + delay_seconds)
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
                    stored.handle = f"{message_id}/{stored.receive_count}"
                    stored.visible_at = now + (visibility_timeout or self.visibility)
                    got.append(
                        ReceivedMessage(
                            message_id=message_id,
                            receipt_handle=stored.handle,
                            body=stored.body,
                            receive_count=stored.receive_count,
                        )
                    )
        if not got:
            time.sleep(0.01)
        return got

    def _find(self, receipt_handle: str) -> str:
        message_id = receipt_handle.split("/", maxsplit=1)[0]
        assert self.messages[message_id].handle == receipt_handle
        return message_id

    def delete(self, receipt_handle: str) -> None:
        with self._lock:
            message_id = self._find(receipt_handle)
            del self.messages[message_id]
            self.deleted.append(message_id)

    def change_visibility(self, receipt_handle: str, seconds: int) -> None:
        with self._lock:
            message_id = self._find(receipt_handle)
            self.messages[message_id].visible_at = time.monotonic() + seconds
            self.visibility_calls.append((message_id, seconds))

    def counts(self) -> QueueCounts:
        with self._lock:
            now = time.monotonic()
            visible = sum(1 for m in self.messages.values() if m.visible_at <= now)
            return QueueCounts(visible=visible, in_flight=len(self.messages) - visible, delayed=0)

    def visibility_timeout(self) -> int:
        return self.visibility

    def has_dead_letter_queue(self) -> bool:
        return self.redrive


def _body(granule_id: str) -> str:
    return json.dumps(
        {"id": granule_id, "filename": f"{granule_id}.zip", "download_url": f"{HUB}/{granule_id}"}
    )


def test_until_empty_handles_everything_and_exits() -> None:
    """Good messages are deleted once verified, a throttled one is re-sent with its delay and then done."""
    world = World()
    queue = FakeQueue()
    for name in ("a", "b", "c"):
        world.add(name, name.encode() * 50)
        queue.send(_body(name))
    world.hub.download_faults["b"] = [HubFault.fail(FailureKind.THROTTLED, retry_after=1)]
    runner = Runner(
        queue=queue, ports=world.ports(), allowed_origins=ORIGINS, settings=RunnerSettings(until_empty=True)
    )
    assert 0 == runner.run()
    assert {} == queue.messages
    assert {State.VERIFIED} == {g.state for g in world.store.granules.values()}
    assert {"done": 3, "deferred": 1} == dict(runner.board.outcomes)


def test_shutdown_hands_in_flight_messages_back_and_releases_their_granules() -> None:
    """After the grace period a stopped runner cancels, releases the lease and makes the message visible."""
    world = World()
    queue = FakeQueue()
    world.add("slow", b"x" * 400)
    queue.send(_body("slow"))
    started = threading.Event()

    def crawl(granule_id: str, index: int) -> None:
        started.set()
        time.sleep(0.05)

    world.hub.on_chunk = crawl
    runner = Runner(
        queue=queue, ports=world.ports(), allowed_origins=ORIGINS, settings=RunnerSettings(grace_seconds=0.2)
    )
    thread = threading.Thread(target=runner.run)
    thread.start()
    assert started.wait(5)
    runner.stop()
    thread.join(10)
    granule = world.store.granules["slow"]
    assert (False, State.PENDING, None) == (thread.is_alive(), granule.state, granule.lease)
    assert [("m0", 0)] == [call for call in queue.visibility_calls if call[1] == 0]
    assert 0 < len(world.files.partials[World.key("slow")]) < 400


def test_long_work_keeps_its_message_invisible() -> None:
    """While a message is worked on, the runner renews its visibility before it runs out."""
    world = World()
    queue = FakeQueue(visibility=1)
    world.add("slow", b"x" * 40)
    queue.send(_body("slow"))
    world.hub.on_chunk = lambda granule_id, index: time.sleep(0.2)
    runner = Runner(
        queue=queue, ports=world.ports(), allowed_origins=ORIGINS, settings=RunnerSettings(until_empty=True)
    )
    assert 0 == runner.run()
    assert ["m0"] == queue.deleted
    assert any(seconds == 1 for _, seconds in queue.visibility_calls)
    assert {"done": 1} == dict(runner.board.outcomes)


def test_bad_input_is_left_for_the_dead_letter_queue() -> None:
    """A malformed body is made visible again at once, never deleted, so the redrive policy takes it."""
    world = World()
    queue = FakeQueue()
    queue.send("not json")
    runner = Runner(queue=queue, ports=world.ports(), allowed_origins=ORIGINS, settings=RunnerSettings())
    thread = threading.Thread(target=runner.run)
    thread.start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and queue.messages["m0"].receive_count < 3:
        time.sleep(0.01)
    runner.stop()
    thread.join(10)
    assert ([], True) == (queue.deleted, queue.messages["m0"].receive_count >= 3)


def test_without_a_dead_letter_queue_bad_input_is_logged_and_deleted() -> None:
    """A queue with no redrive policy would cycle bad messages forever: they are deleted instead."""
    world = World()
    queue = FakeQueue(redrive=False)
    queue.send("not json")
    runner = Runner(
        queue=queue, ports=world.ports(), allowed_origins=ORIGINS, settings=RunnerSettings(until_empty=True)
    )
    assert 0 == runner.run()
    assert (["m0"], 1) == (queue.deleted, dict(runner.board.outcomes)["rejected"])
