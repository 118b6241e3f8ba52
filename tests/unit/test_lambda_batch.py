"""The Lambda batch logic on fakes: the partial batch response for each kind of record."""

from __future__ import annotations

import json

import attrs

from s2_downloader.domain import Defer, Done, Failed, Reject, RetryLater, State
from s2_downloader.domain.errors import FailureKind
from s2_downloader.entrypoints.dispatch import Delete, HandBack, LeaveForRedrive, Resend, action_for
from s2_downloader.entrypoints.lambda_handler import process_batch
from tests.unit.fakes import HubFault
from tests.unit.world import HUB, World

ORIGINS = {("https", "hub.test", 443)}


@attrs.define
class Requeue:
    """The download queue's send, recorded."""

    sent: list[tuple[str, int]] = attrs.field(factory=list)

    def send(self, body: str, delay_seconds: int = 0) -> str:
        self.sent.append((body, delay_seconds))
        return f"m{len(self.sent)}"


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
        action_for(RetryLater(delay_seconds=60, reason="")),
        action_for(Defer(delay_seconds=5, reason="")),
        action_for(Defer(delay_seconds=0, reason="cancelled")),
        action_for(Failed(reason="")),
        action_for(Reject(reason="")),
    ]
    expected = [
        Delete(),
        Resend(delay_seconds=60),
        Resend(delay_seconds=5),
        HandBack(),
        LeaveForRedrive(),
        LeaveForRedrive(),
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
    response = process_batch(event, Context(), ports=world.ports(), requeue=requeue, allowed_origins=ORIGINS)
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
        event, Context(), ports=world.ports(), requeue=Requeue(), allowed_origins=ORIGINS
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
        event, Context(remaining_ms=10_000), ports=world.ports(), requeue=requeue, allowed_origins=ORIGINS
    )
    assert {"batchItemFailures": []} == response
    assert [(_body("a"), 0), (_body("b"), 0)] == requeue.sent
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
        ports=world.ports(),
        requeue=requeue,
        allowed_origins=ORIGINS,
    )
    granule = world.store.granules["a"]
    assert {"batchItemFailures": []} == response
    assert [(_body("a"), 0)] == requeue.sent
    assert (State.PENDING, 0, None) == (granule.state, granule.download_retries, granule.lease)
