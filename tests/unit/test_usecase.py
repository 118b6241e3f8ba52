"""The download use case, branch by branch, on in-memory fakes."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from s2_downloader.domain import Defer, Done, Failed, RetryLater, State
from s2_downloader.domain.errors import FailureKind
from s2_downloader.domain.granule import Lease
from tests.unit.fakes import Crash, FakeCancellation, HubFault, md5
from tests.unit.world import World

PRODUCT = b"0123456789abcdef" * 8


@pytest.fixture
def world() -> World:
    """A world of fakes with a budget of three retries."""
    return World()


def test_unknown_granule_is_done_without_hub_traffic(world: World) -> None:
    """A message for a granule the database does not know is deleted, nothing downloaded."""
    assert Done(reason="granule unknown") == world.handle(world.request("ghost"))
    assert {} == dict(world.hub.downloads)


def test_happy_path_verifies_promotes_and_announces(world: World, caplog: pytest.LogCaptureFixture) -> None:
    """A fresh granule is downloaded, verified, moved into place and sent to the upload queue."""
    request = world.add("g1", PRODUCT)
    with caplog.at_level(logging.INFO):
        outcome = world.handle(request)
    granule = world.store.granules["g1"]
    assert Done(reason="verified") == outcome
    assert (State.VERIFIED, True, md5(PRODUCT)) == (granule.state, granule.upload_sent, granule.checksum)
    assert PRODUCT == world.files.finals[world.key("g1")]
    assert {} == world.files.partials
    assert [("g1", "g1.zip")] == world.uploads.sent
    verified = [r for r in caplog.records if getattr(r, "event", None) == "download_verified"]
    assert [(len(PRODUCT), 1, 0)] == [(r.bytes, r.attempt, r.resumed_from) for r in verified]  # type: ignore[attr-defined]


def test_message_checksum_is_used_first_without_asking_the_hub(world: World) -> None:
    """A checksum in the message saves the checksum request."""
    world.add("g1", PRODUCT)
    world.hub.checksum_faults["g1"] = [HubFault.fail(FailureKind.SERVER_ERROR)]
    assert Done(reason="verified") == world.handle(world.request("g1", checksum=md5(PRODUCT)))


def test_verified_granule_is_done_and_not_announced_twice(world: World) -> None:
    """A duplicate message for a verified, announced granule does nothing."""
    request = world.add("g1", PRODUCT)
    world.handle(request)
    assert Done(reason="already verified") == world.handle(request)
    assert 1 == len(world.uploads.sent)
    assert 1 == world.hub.downloads["g1"]


def test_verified_granule_without_upload_message_gets_one(world: World) -> None:
    """A crash after verification but before the upload message is mended by the next delivery."""
    request = world.add("g1", PRODUCT)
    calls_until_send = _calls_until(world, request, "uploads.send")
    fresh = World()
    fresh_request = fresh.add("g1", PRODUCT)
    fresh.crashes.arm(calls_until_send)
    with pytest.raises(Crash):
        fresh.handle(fresh_request)
    assert (State.VERIFIED, False) == (
        fresh.store.granules["g1"].state,
        fresh.store.granules["g1"].upload_sent,
    )
    assert Done(reason="already verified") == fresh.handle(fresh_request)
    assert [("g1", "g1.zip")] == fresh.uploads.sent
    assert fresh.store.granules["g1"].upload_sent


def _calls_until(world: World, request: object, name: str) -> int:
    """How many port calls a clean run makes up to and including the first call ``name``."""
    world.crashes.log.clear()
    world.crashes.calls = 0
    world.handle(request)  # type: ignore[arg-type]
    return world.crashes.log.index(name) + 1


def test_failed_granule_is_left_for_the_dead_letter_queue(world: World) -> None:
    """A granule that failed earlier is not retried; its message goes to the redrive policy."""
    request = world.add("g1", PRODUCT, state=State.FAILED, last_error="mismatch")
    assert Failed(kind=FailureKind.FAILED_EARLIER, detail="mismatch") == world.handle(request)
    assert 0 == world.hub.downloads["g1"]


def test_retries_over_the_limit_fail_the_granule_and_remove_its_files(world: World) -> None:
    """A legacy row already past the budget becomes failed and its partial is removed."""
    request = world.add("g1", PRODUCT, state=State.RETRYING, download_retries=4)
    world.files.partials[world.key("g1")] = bytearray(b"stale")
    outcome = world.handle(request)
    assert isinstance(outcome, Failed)
    assert State.FAILED == world.store.granules["g1"].state
    assert {} == world.files.partials


def test_existing_good_final_file_is_verified_without_downloading(world: World) -> None:
    """A final file whose checksum matches is accepted with no product request."""
    request = world.add("g1", PRODUCT)
    world.files.finals[world.key("g1")] = PRODUCT
    assert Done(reason="verified") == world.handle(request)
    assert 0 == world.hub.downloads["g1"]
    assert [("g1", "g1.zip")] == world.uploads.sent


def test_existing_corrupt_final_file_is_removed_and_replaced(world: World) -> None:
    """A final file that does not match is removed and the product downloaded again."""
    request = world.add("g1", PRODUCT)
    world.files.finals[world.key("g1")] = b"corrupt"
    assert Done(reason="verified") == world.handle(request)
    assert PRODUCT == world.files.finals[world.key("g1")]


def test_checksum_mismatch_discards_counts_and_refetches_the_checksum(world: World) -> None:
    """Wrong bytes are discarded and counted; the next attempt asks the hub for the checksum again."""
    request = world.request("g1", checksum=md5(b"what the link fetcher saw"))
    world.add("g1", PRODUCT)
    outcome = world.handle(request)
    assert isinstance(outcome, RetryLater)
    assert 60 >= outcome.delay_seconds >= 48
    granule = world.store.granules["g1"]
    assert (State.RETRYING, 1) == (granule.state, granule.download_retries)
    assert world.key("g1") not in world.files.finals
    assert world.key("g1") not in world.files.partials
    assert Done(reason="verified") == world.handle(request)


def test_interrupted_transfer_keeps_the_partial_and_resumes(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """A reset mid-body counts, keeps the partial, and the next attempt resumes from its size."""
    request = world.add("g1", PRODUCT)
    world.hub.download_faults["g1"] = [HubFault(short_by=40)]
    outcome = world.handle(request)
    assert isinstance(outcome, RetryLater)
    assert len(PRODUCT) - 40 == len(world.files.partials[world.key("g1")])
    with caplog.at_level(logging.INFO):
        assert Done(reason="verified") == world.handle(request)
    assert 40 == world.hub.bytes_served["g1"] - (len(PRODUCT) - 40)
    verified = [r for r in caplog.records if getattr(r, "event", None) == "download_verified"]
    assert [len(PRODUCT) - 40] == [r.resumed_from for r in verified]  # type: ignore[attr-defined]


def test_hub_ignoring_range_restarts_the_partial(world: World) -> None:
    """When the hub answers from byte 0 the partial is restarted, not appended to."""
    request = world.add("g1", PRODUCT)
    world.files.partials[world.key("g1")] = bytearray(PRODUCT[:10])
    world.hub.download_faults["g1"] = [HubFault(ignore_range=True)]
    assert Done(reason="verified") == world.handle(request)
    assert PRODUCT == world.files.finals[world.key("g1")]


def test_corrupt_resume_is_redone_once_from_byte_zero_uncounted(world: World) -> None:
    """A resumed partial holding wrong bytes is never promoted: redone from 0 in the same attempt."""
    request = world.add("g1", PRODUCT)
    world.files.partials[world.key("g1")] = bytearray(b"X" * 10)
    assert Done(reason="verified") == world.handle(request)
    assert [10, 0] == [offset for _, offset, _ in world.hub.requests]
    assert (PRODUCT, 0) == (
        bytes(world.files.finals[world.key("g1")]),
        world.store.granules["g1"].download_retries,
    )


def test_a_resumed_product_that_mismatches_again_from_zero_counts_once(world: World) -> None:
    """The redo from 0 mismatching too is the checksum mismatch: counted once, nothing promoted."""
    request = world.add("g1", PRODUCT)
    world.files.partials[world.key("g1")] = bytearray(b"X" * 10)
    world.hub.download_faults["g1"] = [HubFault(corrupt=True), HubFault(corrupt=True)]
    assert isinstance(world.handle(request), RetryLater)
    assert [10, 0] == [offset for _, offset, _ in world.hub.requests]
    assert world.key("g1") not in world.files.finals
    assert (1, None) == (
        world.store.granules["g1"].download_retries,
        world.files.partials.get(world.key("g1")),
    )
    assert Done(reason="verified") == world.handle(request)


@pytest.mark.parametrize(
    ("fault", "delay"),
    [
        (HubFault.fail(FailureKind.THROTTLED, retry_after=7), 7),
        (HubFault.fail(FailureKind.THROTTLED, retry_after=5000), 900),
        (HubFault.fail(FailureKind.OFFLINE), 900),
        (HubFault.fail(FailureKind.SERVER_ERROR), 54),
        (HubFault.fail(FailureKind.UNAUTHORIZED), 54),
    ],
)
def test_transient_hub_trouble_is_deferred_uncounted(world: World, fault: HubFault, delay: int) -> None:
    """429/503/202/5xx/401 postpone the granule without spending its budget."""
    request = world.add("g1", PRODUCT)
    world.hub.download_faults["g1"] = [fault]
    outcome = world.handle(request)
    assert isinstance(outcome, Defer)
    assert delay == outcome.delay_seconds
    granule = world.store.granules["g1"]
    assert (State.RETRYING, 0, None) == (granule.state, granule.download_retries, granule.lease)


def test_not_found_counts(world: World) -> None:
    """A 404 for the checksum spends one retry."""
    request = world.add("g1", PRODUCT)
    world.hub.checksum_faults["g1"] = [HubFault.fail(FailureKind.NOT_FOUND)]
    assert isinstance(world.handle(request), RetryLater)
    assert 1 == world.store.granules["g1"].download_retries


def test_budget_spent_fails_the_granule(world: World) -> None:
    """After max_retries counted failures, one more fails the granule and removes its files."""
    request = world.add("g1", PRODUCT)
    world.hub.download_faults["g1"] = [HubFault(corrupt=True)] * 4
    outcomes = [world.handle(request) for _ in range(4)]
    assert [RetryLater, RetryLater, RetryLater, Failed] == [type(o) for o in outcomes]
    granule = world.store.granules["g1"]
    assert (State.FAILED, 4) == (granule.state, granule.download_retries)
    assert isinstance(world.handle(request), Failed)
    assert 4 == world.store.granules["g1"].download_retries


def test_another_workers_live_lease_defers_until_it_can_expire(world: World) -> None:
    """A granule claimed by a live worker is deferred, not dropped, for as long as its lease."""
    expires = world.clock.now() + dt.timedelta(seconds=300)
    request = world.add(
        "g1", PRODUCT, state=State.DOWNLOADING, lease=Lease(owner="other", expires_at=expires)
    )
    assert Defer(kind=FailureKind.LEASE_BUSY, delay_seconds=301, detail="held by other") == world.handle(
        request
    )
    world.clock.advance(301)
    assert Done(reason="verified") == world.handle(request)


def test_cancellation_releases_the_granule_and_keeps_the_partial(world: World) -> None:
    """A shutdown mid-transfer hands the granule back at once, its partial kept for a resume."""
    request = world.add("g1", PRODUCT)

    outcome = world.handle(request, cancellation=FakeCancellation(stop=True))

    assert Defer(kind=FailureKind.CANCELLED, delay_seconds=0, detail="the worker is stopping") == outcome
    granule = world.store.granules["g1"]
    assert (State.PENDING, None) == (granule.state, granule.lease)
    assert 4 == len(world.files.partials[world.key("g1")])


def test_long_transfer_renews_its_lease(world: World) -> None:
    """A transfer slower than the lease keeps renewing it, so nobody else can take over."""
    world.lease_seconds = 30
    world.clock.step = 5.0
    request = world.add("g1", PRODUCT)
    seen: list[dt.datetime] = []

    def watch(granule_id: str, index: int) -> None:
        lease = world.store.granules[granule_id].lease
        assert lease is not None
        assert lease.is_live(world.clock.now())
        seen.append(lease.expires_at)

    world.hub.on_chunk = watch
    assert Done(reason="verified") == world.handle(request)
    assert len(set(seen)) > 3


def test_two_workers_at_once_download_once(world: World) -> None:
    """A duplicate handled while the first worker streams is deferred; one download in all."""
    request = world.add("g1", PRODUCT)
    inner: list[object] = []

    def second_worker(granule_id: str, index: int) -> None:
        if index == 2 and not inner:
            inner.append(world.handle(request))

    world.hub.on_chunk = second_worker
    assert Done(reason="verified") == world.handle(request)
    assert [Defer(kind=FailureKind.LEASE_BUSY, delay_seconds=900, detail="held by worker-0")] == inner
    assert 1 == world.hub.downloads["g1"]
    assert 1 == len(world.uploads.sent)


def test_crash_after_promote_is_recovered_without_downloading_again(world: World) -> None:
    """A crash between the rename and the verified mark is mended from the final file."""
    request = world.add("g1", PRODUCT)
    world.crashes.arm(_first_call_after(world, request, "files.promote"))
    with pytest.raises(Crash):
        world.handle(request)
    assert PRODUCT == world.files.finals[world.key("g1")]
    world.clock.advance(world.lease_seconds)
    assert Done(reason="verified") == world.handle(request)
    assert 1 == world.hub.downloads["g1"]


def _first_call_after(world: World, request: object, name: str) -> int:
    """Port-call number just after ``name`` in a clean run on a copy of ``world``'s setup."""
    probe = World()
    probe.add("g1", PRODUCT)
    return _calls_until(probe, request, name) + 1


def test_a_partial_still_being_written_defers_the_attempt(world: World) -> None:
    """If a stale attempt still writes the partial, the new one postpones rather than interleaving bytes."""
    request = world.add("g1", PRODUCT)
    with world.files.open_partial(world.key("g1")):
        outcome = world.handle(request)
    assert (
        Defer(kind=FailureKind.PARTIAL_IN_USE, delay_seconds=300, detail="partial of g1 is being written")
        == outcome
    )
    granule = world.store.granules["g1"]
    assert (State.RETRYING, 0, None) == (granule.state, granule.download_retries, granule.lease)
    assert Done(reason="verified") == world.handle(request)


def test_a_worker_that_lost_its_lease_deletes_nothing(world: World) -> None:
    """A worker whose lease ran out stops at its next heartbeat and removes nothing."""
    world.max_retries = 0
    request = world.add("g1", PRODUCT)
    world.hub.download_faults["g1"] = [HubFault(short_by=10)]
    taken: list[object] = []

    def lease_runs_out(granule_id: str, index: int) -> None:
        if index == 0:
            world.clock.advance(world.lease_seconds + 1)
            taken.append(world.handle(request))

    world.hub.on_chunk = lease_runs_out
    assert Defer(
        kind=FailureKind.LEASE_LOST, delay_seconds=1, detail="the lease could not be renewed"
    ) == world.handle(request)
    assert [
        Defer(kind=FailureKind.PARTIAL_IN_USE, delay_seconds=300, detail="partial of g1 is being written")
    ] == taken
    assert 4 == len(world.files.partials[world.key("g1")])  # the first chunk, kept for a resume
    world.hub.on_chunk = None
    assert Done(reason="verified") == world.handle(request)
    assert PRODUCT == world.files.finals[world.key("g1")]
