"""The local runner on fakes: queue actions, until-empty, shutdown hand-back, visibility heartbeat."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import threading
import time
from typing import Any

import attrs
import pytest

from s2_downloader.adapters.hub.urls import check_url
from s2_downloader.domain import State, lifecycle
from s2_downloader.domain.errors import BadRequest, FailureKind, StoreError
from s2_downloader.domain.granule import Granule
from s2_downloader.entrypoints.dispatch import Outage
from s2_downloader.entrypoints.runner import Runner, RunnerSettings
from tests.unit.fake_queue import FakeQueue, ManualClock
from tests.unit.fakes import HubFault, InMemoryGranuleStore
from tests.unit.test_lambda_batch import RecordingMetrics
from tests.unit.world import HUB, World
from tests.waiting import wait_until

#: Readings of an empty queue this far apart keep the until-empty tests quick.
FAST_EMPTY = RunnerSettings(until_empty=True, empty_interval=0.02)


def on_hub(url: str) -> None:
    """The hub rule of these tests: the URL rules, and the origin of the fake hub."""
    if check_url(url) != ("https", "hub.test", 443):
        msg = f"{url[:80]!r} is not on the hub"
        raise BadRequest(msg)


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
    runner = Runner(queue=queue, context=world.context(), check_url=on_hub, settings=FAST_EMPTY)
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
    runner = Runner(
        queue=queue, context=world.context(), check_url=on_hub, settings=RunnerSettings(grace_seconds=0.2)
    )

    def crawl(granule_id: str, index: int) -> None:
        # The first chunk lasts until the grace period is over: however slow the machine,
        # the download is still running when the runner gives up on it.
        started.set()
        if index == 0:
            wait_until(runner.cancel.is_set, timeout=10)

    world.hub.on_chunk = crawl
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
    clock = ManualClock()
    queue = FakeQueue(visibility=1, clock=clock)
    world.add("slow", b"x" * 40)
    queue.send(_body("slow"))
    renewed: list[bool] = []

    def crawl(granule_id: str, index: int) -> None:
        # Three chunks, each waiting for one more renewal and then spending 0.9 s of the
        # queue's clock: 2.7 s in all, so the 1 s visibility would have run out without them.
        if index < 3:
            renewed.append(queue.wait_for_renewals("m0/1", index + 1, timeout=10))
            clock.advance(0.9)

    world.hub.on_chunk = crawl
    runner = Runner(queue=queue, context=world.context(), check_url=on_hub, settings=FAST_EMPTY)
    assert 0 == runner.run()
    assert [True, True, True] == renewed
    assert (["m0"], 1) == (queue.deleted, queue.most_receives)
    assert {1} == {seconds for handle, seconds, _ in queue.renewals if handle == "m0/1"}
    assert {"done": 1} == dict(runner.board.outcomes)


def test_bad_input_is_left_for_the_dead_letter_queue() -> None:
    """A malformed body is made visible again at once, never deleted, so the redrive policy takes it."""
    world = World()
    queue = FakeQueue()
    queue.send("not json")
    runner = Runner(queue=queue, context=world.context(), check_url=on_hub, settings=RunnerSettings())
    thread = threading.Thread(target=runner.run)
    thread.start()
    assert wait_until(lambda: queue.messages["m0"].receive_count >= 3, timeout=5), "not received 3 times"
    runner.stop()
    thread.join(10)
    assert ([], True) == (queue.deleted, queue.messages["m0"].receive_count >= 3)


def test_without_a_dead_letter_queue_bad_input_is_logged_and_deleted() -> None:
    """A queue with no redrive policy would cycle bad messages forever: they are deleted instead."""
    world = World()
    queue = FakeQueue(redrive=False)
    queue.send("not json")
    runner = Runner(queue=queue, context=world.context(), check_url=on_hub, settings=FAST_EMPTY)
    assert 0 == runner.run()
    assert (["m0"], 1) == (queue.deleted, dict(runner.board.outcomes)["rejected"])


@attrs.define
class GatedStore:
    """A granule store whose first claim waits for ``gate``: a worker slow to reach the database."""

    store: InMemoryGranuleStore
    gate: threading.Event = attrs.field(factory=threading.Event)
    waiting: threading.Event = attrs.field(factory=threading.Event)
    _first: bool = True

    def claim(self, granule_id: str, owner: str, now: dt.datetime, lease_seconds: float) -> Granule | None:
        if self._first:
            self._first = False
            self.waiting.set()
            self.gate.wait(10)
        return self.store.claim(granule_id, owner, now, lease_seconds)

    def heartbeat(self, granule_id: str, owner: str, now: dt.datetime, lease_seconds: float) -> bool:
        return self.store.heartbeat(granule_id, owner, now, lease_seconds)

    def record(self, granule_id: str, event: lifecycle.Event) -> Granule:
        return self.store.record(granule_id, event)

    def release(self, granule_id: str, owner: str) -> bool:
        return self.store.release(granule_id, owner)


def test_a_redelivered_message_keeps_the_later_delivery_renewed() -> None:
    """In-flight work is tracked by receipt handle: when an earlier delivery of a message is settled,
    the later delivery, still downloading, keeps its visibility renewed."""
    world = World()
    gated = GatedStore(store=world.store)
    queue = FakeQueue(visibility=3)
    world.add("slow", b"x" * 200)
    queue.send(_body("slow"))
    downloading = threading.Event()
    finish = threading.Event()

    def crawl(granule_id: str, index: int) -> None:
        # The second delivery's download lasts until the test has seen what it waits for.
        downloading.set()
        if index == 1:
            finish.wait(10)

    world.hub.on_chunk = crawl
    runner = Runner(
        queue=queue,
        context=world.context(granules=gated),
        check_url=on_hub,
        settings=RunnerSettings(grace_seconds=5),
    )
    thread = threading.Thread(target=runner.run)
    thread.start()
    assert gated.waiting.wait(5)
    queue.redeliver("m0")  # the first delivery's visibility ran out while it waited
    assert downloading.wait(5)  # the second delivery holds the lease and downloads
    gated.gate.set()  # the first finds the lease held: deferred, re-sent, settled
    assert wait_until(lambda: bool(queue.sent[1:]), timeout=5)
    settled = time.monotonic()
    renewed_later = wait_until(
        lambda: any(h == "m0/2" and at > settled for h, _, at in queue.renewals), timeout=10
    )
    finish.set()
    runner.stop()
    thread.join(10)
    renewed_after = {handle for handle, seconds, at in queue.renewals if seconds == 3 and at > settled}
    assert (True, 1, {"m0/2"}) == (renewed_later, len(queue.sent[1:]), renewed_after)


def test_until_empty_needs_three_empty_readings_apart() -> None:
    """A message whose delay ends after a first empty reading is still handled before the runner exits."""
    world = World()
    world.add("late", b"late bytes")
    # Approximate counts: the delayed message shows up in none of them, as on SQS at the edge.
    queue = FakeQueue(blind_counts=True)
    queue.send(_body("late"))
    queue.messages["m0"].visible_at = float("inf")
    readings: list[float] = []

    def delay_ends_after_the_first_reading() -> None:
        readings.append(time.monotonic())
        if len(readings) == 1:
            queue.redeliver("m0")

    queue.on_counts = delay_ends_after_the_first_reading
    runner = Runner(
        queue=queue,
        context=world.context(),
        check_url=on_hub,
        settings=RunnerSettings(until_empty=True, empty_interval=0.2),
    )
    assert 0 == runner.run()
    assert ({}, ["m0"]) == (queue.messages, queue.deleted)
    gaps = [later - earlier for earlier, later in itertools.pairwise(readings[1:])]
    assert (3, True) == (len(readings[1:]), all(gap >= 0.2 for gap in gaps))


@attrs.define
class FlakyStore:
    """A granule store that raises StoreError while ``down`` is set, as a database outage does."""

    store: InMemoryGranuleStore
    down: threading.Event = attrs.field(factory=threading.Event)
    #: The outage ends by itself after this many refusals (counted, not timed).
    up_after: int | None = None
    refused: int = 0
    at_once: int = 0
    most_at_once: int = 0
    _lock: threading.Lock = attrs.field(factory=threading.Lock)

    def _check(self) -> None:
        if self.down.is_set():
            with self._lock:
                self.refused += 1
                self.at_once += 1
                self.most_at_once = max(self.most_at_once, self.at_once)
            time.sleep(0.02)  # a connection attempt that fails
            with self._lock:
                self.at_once -= 1
                if self.up_after is not None and self.refused >= self.up_after:
                    self.down.clear()
            raise StoreError("granule store: claim failed: connection refused")

    def claim(self, granule_id: str, owner: str, now: dt.datetime, lease_seconds: float) -> Granule | None:
        self._check()
        return self.store.claim(granule_id, owner, now, lease_seconds)

    def heartbeat(self, granule_id: str, owner: str, now: dt.datetime, lease_seconds: float) -> bool:
        self._check()
        return self.store.heartbeat(granule_id, owner, now, lease_seconds)

    def record(self, granule_id: str, event: lifecycle.Event) -> Granule:
        self._check()
        return self.store.record(granule_id, event)

    def release(self, granule_id: str, owner: str) -> bool:
        self._check()
        return self.store.release(granule_id, owner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_a_database_outage_spends_no_receive_count_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    """While the store is down, messages are re-sent fresh, the runner probes one at a time, and the
    outage is logged once as it starts and once as it ends."""
    world = World()
    metrics = RecordingMetrics()
    # Up after the first burst (one refusal per worker at most) and a refused probe after it.
    flaky = FlakyStore(store=world.store, up_after=4 + 1)
    flaky.down.set()
    queue = FakeQueue()
    names = [f"g{i}" for i in range(6)]
    for name in names:
        world.add(name, name.encode() * 20)
        queue.send(_body(name))
    runner = Runner(
        queue=queue,
        context=world.context(granules=flaky),
        check_url=on_hub,
        settings=RunnerSettings(until_empty=True, empty_interval=0.02, concurrency=4),
        outage=Outage("granule store", base_seconds=0.05, max_seconds=0.2, min_resend_seconds=1),
        metrics=metrics,
    )
    with caplog.at_level(logging.INFO):
        assert 0 == runner.run()
    events = [getattr(r, "event", None) for r in caplog.records]
    started = [r for r in caplog.records if getattr(r, "event", None) == "outage_started"]
    assert {State.VERIFIED} == {world.store.granules[n].state for n in names}
    assert (1, 1, 1) == (events.count("outage_started"), events.count("outage_ended"), queue.most_receives)
    # One ERROR line and one Outages data point for the episode, naming the component.
    assert (["ERROR"], ["database"], ["database"]) == (
        [r.levelname for r in started],
        [getattr(r, "component", None) for r in started],
        metrics.outages,
    )
    assert 0 == sum(1 for _, seconds in queue.visibility_calls if seconds == 0)
    assert flaky.refused >= 4 + 1
