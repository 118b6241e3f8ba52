"""The Lambda batch logic on fakes: the partial batch response for each kind of record."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import attrs
import pytest

from s2_downloader.adapters.hub.urls import check_url
from s2_downloader.domain import Defer, Done, Failed, Reject, RetryLater, State
from s2_downloader.domain.errors import BadRequest, FailureKind, StoreError
from s2_downloader.entrypoints.dispatch import (
    Delete,
    HandBack,
    LeaveForRedrive,
    Outage,
    Resend,
    Unavailable,
    action_for,
)
from s2_downloader.entrypoints.lambda_handler import OutageMet, _Deadline, process_batch
from s2_downloader.entrypoints.wiring import LAMBDA_STOP_MARGIN_SECONDS
from tests.unit.fakes import HubFault
from tests.unit.world import HUB, World


def on_hub(url: str) -> None:
    """The hub rule of these tests: the URL rules, and the origin of the fake hub."""
    if check_url(url) != ("https", "hub.test", 443):
        msg = f"{url[:80]!r} is not on the hub"
        raise BadRequest(msg)


@attrs.define
class Requeue:
    """The download queue's send, recorded."""

    sent: list[tuple[str, int]] = attrs.field(factory=list)
    deleted: list[str] = attrs.field(factory=list)
    batches: int = 0

    def send(self, body: str, delay_seconds: int = 0) -> str:
        self.sent.append((body, delay_seconds))
        return f"m{len(self.sent)}"

    def send_batch(self, entries: Sequence[tuple[str, int]]) -> list[bool]:
        self.batches += 1
        self.sent += entries
        return [True] * len(entries)

    def delete(self, receipt_handle: str) -> None:
        self.deleted.append(receipt_handle)


@attrs.define
class Context:
    """A Lambda context whose remaining time drops by ``step_ms`` per call."""

    remaining_ms: int = 900_000
    step_ms: int = 0

    def get_remaining_time_in_millis(self) -> int:
        self.remaining_ms -= self.step_ms
        return self.remaining_ms


def _record(message_id: str, body: str) -> dict[str, object]:
    return {
        "messageId": message_id,
        "receiptHandle": f"rh-{message_id}",
        "body": body,
        "eventSource": "aws:sqs",
    }


def _body(granule_id: str) -> str:
    return json.dumps(
        {"id": granule_id, "filename": f"{granule_id}.zip", "download_url": f"{HUB}/p/{granule_id}/$value"}
    )


def test_outcomes_map_to_queue_actions() -> None:
    """Done deletes, a delay re-sends, no delay hands back, failed and bad input go to redrive."""
    actions = [
        action_for(Done(reason="")),
        action_for(RetryLater(kind=FailureKind.NOT_FOUND, delay_seconds=60, detail="")),
        action_for(Defer(kind=FailureKind.THROTTLED, delay_seconds=5, detail="")),
        action_for(Defer(kind=FailureKind.CANCELLED, delay_seconds=0, detail="")),
        action_for(Failed(kind=FailureKind.NOT_FOUND, detail="")),
        action_for(Reject(detail="")),
        action_for(Unavailable(reason=""), outage_delay=30),
    ]
    expected = [
        Delete(),
        Resend(delay_seconds=60),
        Resend(delay_seconds=5),
        HandBack(),
        LeaveForRedrive(),
        LeaveForRedrive(),
        Resend(delay_seconds=30),
    ]
    assert expected == actions


def test_a_mixed_batch_reports_only_what_must_come_back() -> None:
    """GIVEN a good record, a throttled one, a bad one and a duplicate THEN only the bad one is a failure."""
    world = World()
    world.add("good", b"good bytes")
    world.add("slow", b"slow bytes")
    world.hub.download_faults["slow"] = [HubFault.fail(FailureKind.THROTTLED, retry_after=30)]
    requeue = Requeue()
    event = {
        "Records": [
            _record("1", _body("good")),
            _record("2", _body("slow")),
            _record("3", "{not json"),
            _record("4", _body("good")),
        ]
    }
    response = process_batch(
        event, Context(), attempt_context=world.context(), requeue=requeue, check_url=on_hub
    )
    assert {"batchItemFailures": [{"itemIdentifier": "3"}]} == response
    assert [(_body("slow"), 30)] == requeue.sent
    assert [("good", "good.zip")] == world.uploads.sent


def test_every_record_failing_is_every_record_reported() -> None:
    """A batch where every granule failed for good names every record."""
    world = World(max_retries=0)
    for name in ("a", "b"):
        world.add(name, b"content")
        world.hub.download_faults[name] = [HubFault(corrupt=True)]
    event = {"Records": [_record("1", _body("a")), _record("2", _body("b"))]}
    response = process_batch(
        event, Context(), attempt_context=world.context(), requeue=Requeue(), check_url=on_hub
    )
    assert {"batchItemFailures": [{"itemIdentifier": "1"}, {"itemIdentifier": "2"}]} == response


def test_records_that_cannot_finish_in_time_are_handed_back_uncounted() -> None:
    """With the clock running out, records are re-added as fresh messages and no retry is counted."""
    world = World()
    world.add("a", b"content")
    world.add("b", b"content")
    event = {"Records": [_record("1", _body("a")), _record("2", _body("b"))]}
    requeue = Requeue()
    response = process_batch(
        event,
        Context(remaining_ms=10_000),
        attempt_context=world.context(),
        requeue=requeue,
        check_url=on_hub,
    )
    assert {"batchItemFailures": []} == response
    assert ([(_body("a"), 0), (_body("b"), 0)], 1) == (requeue.sent, requeue.batches)
    assert [0, 0] == [world.store.granules[g].download_retries for g in ("a", "b")]


def test_a_record_running_out_of_time_mid_transfer_releases_its_granule() -> None:
    """A transfer still running near the deadline stops, releases the granule and re-adds its message."""
    world = World()
    world.add("a", b"x" * 64)
    requeue = Requeue()
    context = Context(remaining_ms=30_000, step_ms=3_000)
    response = process_batch(
        {"Records": [_record("1", _body("a"))]},
        context,
        attempt_context=world.context(),
        requeue=requeue,
        check_url=on_hub,
        margin_seconds=20,
    )
    granule = world.store.granules["a"]
    assert {"batchItemFailures": []} == response
    assert [(_body("a"), 0)] == requeue.sent
    assert (State.PENDING, 0, None) == (granule.state, granule.download_retries, granule.lease)


def test_the_deadline_is_the_remaining_time_less_the_margin() -> None:
    """Hub calls are given the instant the invocation ends, less the stop margin."""
    deadline = _Deadline(lambda: 300_000, 130.0)
    before = time.monotonic()
    at = deadline.deadline()
    assert before + 170 <= at <= time.monotonic() + 170


def test_the_stop_margin_outlasts_a_database_statement_and_two_queue_calls() -> None:
    """The margin covers the steps a deadline does not bound: one statement (with the pool wait),
    re-adding the current record and re-adding the rest in one call."""
    assert 130.0 == LAMBDA_STOP_MARGIN_SECONDS


@attrs.define
class DownStore:
    """A granule store that is down: every call raises StoreError, as with PostgreSQL stopped."""

    calls: int = 0

    def claim(self, *args: object) -> None:
        self.calls += 1
        raise StoreError("granule store: claim failed: connection refused")

    def heartbeat(self, *args: object) -> bool:
        raise StoreError("down")

    def record(self, *args: object) -> None:
        raise StoreError("down")

    def release(self, *args: object) -> bool:
        raise StoreError("down")


def test_a_database_outage_is_a_function_error_that_hands_the_batch_back_uncounted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With the store down, the first record is re-sent with a delay, the rest untried in one call,
    every original deleted by the handler, and the invocation raises (the Errors alarm sees it);
    two invocations log one outage and count two Outages, and a later success ends it."""
    world = World()
    for name in ("a", "b", "c"):
        world.add(name, b"content")
    down = DownStore()
    outage = Outage("granule store")
    metrics = RecordingMetrics()
    event = {"Records": [_record(str(i), _body(n)) for i, n in enumerate(("a", "b", "c"))]}
    requeue = Requeue()
    with caplog.at_level(logging.INFO):
        for _ in range(2):
            with pytest.raises(OutageMet):
                process_batch(
                    event,
                    Context(),
                    attempt_context=world.context(granules=down),
                    requeue=requeue,
                    check_url=on_hub,
                    outage=outage,
                    metrics=metrics,
                )
        third = process_batch(
            event,
            Context(),
            attempt_context=world.context(),
            requeue=Requeue(),
            check_url=on_hub,
            outage=outage,
        )
    events = [getattr(r, "event", None) for r in caplog.records]
    assert {"batchItemFailures": []} == third
    assert (2, 6, 2) == (down.calls, len(requeue.sent), requeue.batches)
    assert ["rh-0", "rh-1", "rh-2"] * 2 == requeue.deleted
    assert all(delay >= 10 for _, delay in requeue.sent)
    assert ["database", "database"] == metrics.outages
    assert (1, 1) == (events.count("outage_started"), events.count("outage_ended"))
    assert {State.VERIFIED} == {world.store.granules[n].state for n in ("a", "b", "c")}
    assert {0} == {world.store.granules[n].download_retries for n in ("a", "b", "c")}


@attrs.define
class StoreDownAfter:
    """A granule store that works for ``claims`` claims, then is down (PostgreSQL stopped mid-batch)."""

    inner: Any
    claims: int

    def claim(self, *args: Any) -> Any:
        self.claims -= 1
        if self.claims < 0:
            raise StoreError("granule store: claim failed: connection refused")
        return self.inner.claim(*args)

    def heartbeat(self, *args: Any) -> bool:
        return bool(self.inner.heartbeat(*args))

    def record(self, *args: Any) -> Any:
        return self.inner.record(*args)

    def release(self, *args: Any) -> bool:
        return bool(self.inner.release(*args))


def test_an_outage_after_finished_records_deletes_them_and_keeps_a_failed_one() -> None:
    """Verified: deleted by the handler; failed: left for redrive; the outage's record re-sent; it raises."""
    world = World()
    world.add("ok", b"content")
    world.add("bad", b"content")
    world.add("late", b"content")
    world.hub.download_faults["bad"] = [HubFault(corrupt=True)]
    base = world.context(granules=StoreDownAfter(inner=world.store, claims=2))
    attempt = attrs.evolve(base, policy=attrs.evolve(base.policy, max_retries=0))
    requeue = Requeue()
    event = {"Records": [_record("0", _body("ok")), _record("1", _body("bad")), _record("2", _body("late"))]}
    with pytest.raises(OutageMet):
        process_batch(event, Context(), attempt_context=attempt, requeue=requeue, check_url=on_hub)
    states = tuple(world.store.granules[n].state for n in ("ok", "bad", "late"))
    assert (["rh-0", "rh-2"], [_body("late")]) == (requeue.deleted, [body for body, _ in requeue.sent])
    assert (State.VERIFIED, State.FAILED, State.PENDING) == states


@attrs.define
class RecordingMetrics:
    """Only the outages, recorded; every other event ignored."""

    outages: list[str] = attrs.field(factory=list)

    def verified(self, transferred: int, seconds: float) -> None:
        del transferred, seconds

    def retry_counted(self, kind: FailureKind) -> None:
        del kind

    def deferred(self, kind: FailureKind) -> None:
        del kind

    def failed(self) -> None:
        pass

    def bad_message(self) -> None:
        pass

    def outage(self, component: str) -> None:
        self.outages.append(component)


def test_the_resend_delay_grows_with_the_outages_age_not_with_the_invocations_that_meet_it() -> None:
    """An environment meets an outage once per invocation (batch size 1): twenty invocations within
    a second still re-send with 10 s; a minute into the outage, with about 60 s; never over 900 s."""
    now = [0.0]
    world = World()
    world.add("a", b"content")
    outage = Outage("granule store", clock=lambda: now[0])
    event = {"Records": [_record("0", _body("a"))]}
    requeue = Requeue()

    def invoke() -> int:
        with pytest.raises(OutageMet):
            process_batch(
                event,
                Context(),
                attempt_context=world.context(granules=DownStore()),
                requeue=requeue,
                check_url=on_hub,
                outage=outage,
            )
        return requeue.sent[-1][1]

    early = [invoke() for _ in range(20)]
    now[0] = 61.0
    a_minute_in = invoke()
    now[0] = 86400.0
    a_day_in = invoke()

    assert ({10}, 61, 900) == (set(early), a_minute_in, a_day_in)
