"""The use case bounded in time and safe against stale workers: deadlines, validators, the deferral budget."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

import attrs
import pytest

from s2_downloader.domain import Defer, Done, Failed, RetryLater, State, lifecycle
from s2_downloader.domain.errors import (
    FailureKind,
    FileStoreError,
    HubError,
    KeyConflict,
    StoreError,
    StoreUnavailable,
)
from s2_downloader.domain.granule import Granule, Lease
from s2_downloader.domain.ports import FileKey, Partial
from tests.unit.fakes import FakeCancellation, HubFault, InMemoryFiles, InMemoryGranuleStore, md5
from tests.unit.world import World

PRODUCT = b"0123456789abcdef" * 8
NEWER = b"the product as it was reprocessed" * 4
DAY = 86400.0


@pytest.fixture
def world() -> World:
    """A world of fakes with a budget of three retries and a deferral budget of two days."""
    return World()


# -- deadlines --------------------------------------------------------------------------


def test_every_hub_call_gets_the_attempts_deadline(world: World) -> None:
    """The checksum request and the product request both carry the cancellation's deadline."""
    request = world.add("g1", PRODUCT)

    assert Done(reason="verified") == world.handle(request, cancellation=FakeCancellation(at=1234.5))
    assert [1234.5, 1234.5] == world.hub.deadlines


def test_a_deadline_hit_hands_the_granule_back_uncounted(world: World) -> None:
    """Out of time before the body: released, deferred with no delay, no retry spent, nothing lost."""
    where = "checksum"
    request = world.add("g1", PRODUCT)
    world.hub.checksum_faults["g1"] = [HubFault(out_of_time=True)]

    outcome = world.handle(request)

    granule = world.store.granules["g1"]
    assert Defer(kind=FailureKind.OUT_OF_TIME, delay_seconds=0, detail=f"{where}: deadline passed") == outcome
    assert (State.PENDING, None, 0) == (granule.state, granule.lease, granule.download_retries)
    assert Done(reason="verified") == world.handle(request)


def test_a_deadline_hit_mid_body_keeps_the_partial_for_a_resume(world: World) -> None:
    """Bytes that arrived before the deadline are kept and the next attempt resumes after them."""
    request = world.add("g1", PRODUCT)
    world.hub.checksum_faults["g1"] = [HubFault(), HubFault(out_of_time=True)]
    world.hub.download_faults["g1"] = [HubFault(short_by=40)]
    assert isinstance(world.handle(request), RetryLater)
    kept = len(world.files.partials[world.key("g1")])

    out_of_time = Defer(kind=FailureKind.OUT_OF_TIME, delay_seconds=0, detail="checksum: deadline passed")
    assert out_of_time == world.handle(request)
    assert kept == len(world.files.partials[world.key("g1")])
    assert Done(reason="verified") == world.handle(request)
    assert ("g1", kept) == world.hub.requests[-1][:2]


# -- validators (If-Range) ----------------------------------------------------------------


def test_a_resume_sends_the_validator_the_first_response_gave(world: World) -> None:
    """The partial keeps the first response's ETag and the resume sends it back."""
    request = world.add("g1", PRODUCT)
    world.hub.download_faults["g1"] = [HubFault(short_by=40)]
    world.handle(request)
    etag = world.hub.validators["g1"]

    assert Done(reason="verified") == world.handle(request)
    assert [("g1", 0, None), ("g1", len(PRODUCT) - 40, etag)] == world.hub.requests
    assert {} == world.files.validators


def test_a_product_replaced_between_attempts_restarts_instead_of_splicing(world: World) -> None:
    """When the hub's product changed, If-Range makes it answer from 0 and only the new bytes are kept."""
    request = world.add("g1", PRODUCT)
    world.hub.download_faults["g1"] = [HubFault(short_by=40)]
    world.handle(request)
    world.hub.add("g1", NEWER)

    assert Done(reason="verified") == world.handle(request)
    assert NEWER == world.files.finals[world.key("g1")]
    assert world.hub.validators["g1"] != world.hub.requests[-1][2]


def test_without_a_validator_from_the_hub_a_resume_sends_none(world: World) -> None:
    """A hub that gives no ETag or Last-Modified gets a plain Range request, as before."""
    world.store.add("g1", "g1.zip")
    world.hub.add("g1", PRODUCT, validator=False)
    world.hub.download_faults["g1"] = [HubFault(short_by=40)]
    request = world.request("g1")
    world.handle(request)

    assert Done(reason="verified") == world.handle(request)
    assert [None, None] == [validator for _, _, validator in world.hub.requests]


def test_a_restart_replaces_the_stored_validator(world: World) -> None:
    """A hub that ignored the Range gives the partial a new start, and its validator is the new one."""
    request = world.add("g1", PRODUCT)
    world.files.partials[world.key("g1")] = bytearray(PRODUCT[:10])
    world.files.validators[world.key("g1")] = '"stale"'
    world.hub.download_faults["g1"] = [HubFault(ignore_range=True, short_by=8)]

    world.handle(request)

    assert world.hub.validators["g1"] == world.files.validators[world.key("g1")]


# -- the deferral budget -----------------------------------------------------------------


def _postponed_until_spent(world: World, fault: HubFault) -> list[object]:
    request = world.add("g1", PRODUCT)
    outcomes: list[object] = []
    for _ in range(3):
        world.hub.download_faults["g1"] = [fault]
        outcomes.append(world.handle(request))
        world.clock.advance(DAY)
    return outcomes


@pytest.mark.parametrize(
    "kind", [FailureKind.SERVER_ERROR, FailureKind.THROTTLED, FailureKind.OFFLINE], ids=lambda k: k.value
)
def test_a_granule_deferred_past_the_budget_fails_with_the_last_reason(
    world: World, kind: FailureKind
) -> None:
    """500/429/202 defer until two days after the first attempt, then fail it, files removed."""
    world.files.finals[world.key("g1")] = b"junk"
    outcomes = _postponed_until_spent(world, HubFault.fail(kind))

    granule = world.store.granules["g1"]
    assert [Defer, Defer, Failed] == [type(o) for o in outcomes]
    assert (State.FAILED, f"{kind.value}: scripted", 0) == (
        granule.state,
        granule.last_error,
        granule.download_retries,
    )
    assert (dt.timedelta(days=2), {}, {}) == (
        world.clock.now() - dt.timedelta(days=1) - (granule.first_attempt_at or world.clock.now()),
        world.files.finals,
        world.files.partials,
    )


def test_the_budget_runs_from_the_first_attempt_not_the_latest(world: World) -> None:
    """Later claims keep first_attempt_at, so a granule deferred every hour still runs out."""
    request = world.add("g1", PRODUCT)
    outcomes = []
    for _ in range(49):
        world.hub.download_faults["g1"] = [HubFault.fail(FailureKind.SERVER_ERROR)]
        outcomes.append(type(world.handle(request)))
        world.clock.advance(3600)

    assert [Defer] * 48 + [Failed] == outcomes


def test_a_download_that_works_past_the_budget_is_still_verified(world: World) -> None:
    """The budget only ends deferrals: a granule whose hub answers after two days is verified."""
    _postponed_until_spent(world, HubFault.fail(FailureKind.SERVER_ERROR))
    fresh = World()
    request = fresh.add("g1", PRODUCT)
    fresh.hub.download_faults["g1"] = [HubFault.fail(FailureKind.SERVER_ERROR)]
    fresh.handle(request)
    fresh.clock.advance(3 * DAY)

    assert Done(reason="verified") == fresh.handle(request)


def test_refused_credentials_never_spend_the_deferral_budget(world: World) -> None:
    """401s are our credentials' fault, not the product's: deferred however long they last."""
    outcomes = _postponed_until_spent(world, HubFault.fail(FailureKind.UNAUTHORIZED))

    assert [Defer, Defer, Defer] == [type(o) for o in outcomes]
    assert State.RETRYING == world.store.granules["g1"].state


def test_a_partial_in_use_past_the_budget_fails_the_granule(world: World) -> None:
    """A writer that never lets go of the partial does not keep the granule deferred for ever."""
    request = world.add("g1", PRODUCT)
    world.handle(request, hub=_Unavailable())  # the first attempt, deferred by the hub
    world.clock.advance(2 * DAY)

    with world.files.open_partial(world.key("g1")):
        outcome = world.handle(request)

    assert isinstance(outcome, Failed)
    assert "being written" in (world.store.granules["g1"].last_error or "")


def test_out_of_time_spends_the_deferral_budget_and_a_busy_lease_never_fails_a_granule(world: World) -> None:
    """Past the budget, a granule held by a live worker is deferred; one out of time again is failed."""
    request = world.add("g1", PRODUCT)
    world.hub.download_faults["g1"] = [HubFault.fail(FailureKind.SERVER_ERROR)]
    world.handle(request)
    world.clock.advance(3 * DAY)

    held = Lease(owner="other", expires_at=world.clock.now() + dt.timedelta(seconds=60))
    world.store.granules["g1"] = attrs.evolve(world.store.granules["g1"], state=State.CLAIMED, lease=held)
    assert Defer(kind=FailureKind.LEASE_BUSY, delay_seconds=61, detail="held by other") == world.handle(
        request
    )

    world.store.granules["g1"] = attrs.evolve(world.store.granules["g1"], state=State.RETRYING, lease=None)
    world.hub.checksum_faults["g1"] = [HubFault(out_of_time=True)]
    outcome = world.handle(request)
    assert Failed(kind=FailureKind.OUT_OF_TIME, detail="checksum: deadline passed") == outcome
    assert (State.FAILED, 0) == (
        world.store.granules["g1"].state,
        world.store.granules["g1"].download_retries,
    )


def test_out_of_time_mid_body_without_a_mebibyte_gained_counts_as_no_progress(world: World) -> None:
    """A hub that never lets the transfer gain 1 MiB before time runs out ends failed, not cycling."""
    request = world.add("g1", PRODUCT)
    world.hub.download_faults["g1"] = [HubFault(out_of_time=True)] * (world.max_retries + 1)
    outcomes = [world.handle(request) for _ in range(world.max_retries + 1)]
    assert {FailureKind.NO_PROGRESS} == {o.kind for o in outcomes if isinstance(o, RetryLater | Failed)}
    assert isinstance(outcomes[-1], Failed)
    assert State.FAILED == world.store.granules["g1"].state


class _FailingStore(InMemoryGranuleStore):
    """A store whose postponement write fails, as a database outage would."""

    def record(self, granule_id: str, event: lifecycle.Event) -> Granule:
        if isinstance(event, lifecycle.Postpone | lifecycle.Abandon):
            msg = "database unavailable"
            raise StoreError(msg)
        return super().record(granule_id, event)


def test_our_own_infrastructure_errors_never_fail_a_granule(world: World) -> None:
    """A database outage while deferring propagates for the edge to hand back; the granule is not failed."""
    store = _FailingStore()
    world.store = store
    store.add("g1", "g1.zip", first_attempt_at=world.clock.now() - dt.timedelta(days=3))
    world.hub.add("g1", PRODUCT)
    world.hub.download_faults["g1"] = [HubFault.fail(FailureKind.SERVER_ERROR)]

    with pytest.raises(StoreError):
        world.handle(world.request("g1"))
    assert State.PENDING == store.granules["g1"].state


class _Unavailable:
    """A hub that answers 503 to everything."""

    def checksum(self, granule_id: str, *, deadline: float | None = None) -> str:
        del granule_id, deadline
        raise HubError(FailureKind.SERVER_ERROR, "503")

    @contextmanager
    def open_product(
        self, request: object, offset: int, *, validator: str | None = None, deadline: float | None = None
    ) -> Iterator[object]:
        del request, offset, validator, deadline
        raise HubError(FailureKind.SERVER_ERROR, "503")
        yield  # pragma: no cover - a generator that never yields


# -- record first, then remove -------------------------------------------------------------


@attrs.define
class _SlowHashingFiles(InMemoryFiles):
    """Files whose digest of the final file takes so long that the hashing worker's lease runs out."""

    meanwhile: list[object] = attrs.field(factory=list)

    def final_digest(self, key: FileKey) -> str | None:
        digest = super().final_digest(key)
        if self.meanwhile:
            step = self.meanwhile.pop()
            assert callable(step)
            step()
        return digest


def test_a_stale_worker_never_deletes_the_file_another_worker_just_verified(world: World) -> None:
    """Worker A hashes a corrupt final file, loses its lease while hashing; B verifies; A removes nothing."""
    files = _SlowHashingFiles()
    world.files = files
    request = world.add("g1", PRODUCT)
    files.finals[world.key("g1")] = b"corrupt"
    second: list[object] = []

    def lease_runs_out_and_worker_b_verifies() -> None:
        world.clock.advance(world.lease_seconds + 1)
        second.append(world.handle(request))

    files.meanwhile.append(lease_runs_out_and_worker_b_verifies)
    first = world.handle(request)

    assert [Done(reason="verified")] == second
    assert isinstance(first, Defer)
    assert (FailureKind.LEASE_LOST, 1) == (first.kind, first.delay_seconds)
    assert PRODUCT == files.finals[world.key("g1")]
    assert (State.VERIFIED, md5(PRODUCT)) == (
        world.store.granules["g1"].state,
        world.store.granules["g1"].checksum,
    )


def test_a_corrupt_final_file_is_removed_only_after_the_start_is_recorded(world: World) -> None:
    """The lease-checked StartDownload comes before a final file that does not match is discarded."""
    request = world.add("g1", PRODUCT)
    world.files.finals[world.key("g1")] = b"corrupt"
    world.crashes.log.clear()

    world.handle(request)

    log = world.crashes.log
    assert log.index("granules.record.StartDownload") < log.index("files.discard_final")


class _BrokenFiles(InMemoryFiles):
    def final_digest(self, key: FileKey) -> str | None:
        del key
        msg = "mount unavailable"
        raise FileStoreError(msg)


def test_store_errors_of_an_unhealthy_store_propagate_without_failing_the_granule(world: World) -> None:
    """The store failing its health check is an outage: its error leaves handle, the granule is released."""
    world.files = _BrokenFiles(healthy=False)
    request = world.add("g1", PRODUCT, first_attempt_at=world.clock.now() - dt.timedelta(days=5))

    with pytest.raises(StoreUnavailable):
        world.handle(request)
    granule = world.store.granules["g1"]
    assert (State.PENDING, None, 0) == (granule.state, granule.lease, granule.download_retries)


def test_store_unavailable_propagates_without_a_health_check(world: World) -> None:
    """S3 throttling or unreachable says "later" by itself: no health check, nothing counted."""
    world.files.refused_writes["g1"] = StoreUnavailable("S3 UploadPart s3://b/g1.zip: SlowDown")
    request = world.add("g1", PRODUCT)

    with pytest.raises(StoreUnavailable, match="SlowDown"):
        world.handle(request)
    granule = world.store.granules["g1"]
    assert (State.PENDING, 0, 0) == (granule.state, granule.download_retries, world.files.health_checks)


def test_a_store_error_of_one_granule_counts_with_the_stores_words(world: World) -> None:
    """Health check passes: the error was the granule's, a counted retry, ``store: <what failed>``."""
    refusal = "S3 UploadPart s3://b/g1.zip: BadDigest: The Content-MD5 you specified did not match"
    world.files.refused_writes["g1"] = FileStoreError(refusal)
    request = world.add("g1", PRODUCT)

    outcome = world.handle(request)

    assert isinstance(outcome, RetryLater)
    assert FailureKind.STORE is outcome.kind
    granule = world.store.granules["g1"]
    assert (State.RETRYING, 1) == (granule.state, granule.download_retries)
    assert f"store: {refusal}" == granule.last_error
    assert 1 == world.files.health_checks


def test_a_store_that_refuses_one_granule_for_ever_fails_it_never_loops(world: World) -> None:
    """A refusal on every attempt spends the retry budget: the granule fails, the loop ends."""
    world.files = _BrokenFiles()
    request = world.add("g1", PRODUCT)

    outcomes = [world.handle(request) for _ in range(world.max_retries + 1)]

    assert all(isinstance(outcome, RetryLater) for outcome in outcomes[:-1])
    assert isinstance(outcomes[-1], Failed)
    assert FailureKind.STORE is outcomes[-1].kind
    granule = world.store.granules["g1"]
    assert (State.FAILED, "store: mount unavailable") == (granule.state, granule.last_error)


def test_a_key_conflict_fails_the_granule_at_once_uncounted(world: World) -> None:
    """The key holds another granule's verified product: failed, not counted, ``key_conflict: ...``."""

    class _TakenKey(InMemoryFiles):
        @contextmanager
        def open_partial(self, key: FileKey, *, checksum: str | None = None) -> Iterator[Partial]:
            del key, checksum
            raise KeyConflict("X.zip", "A")
            yield from ()

    world.files = _TakenKey()
    request = world.add("B", PRODUCT)

    outcome = world.handle(request)

    assert isinstance(outcome, Failed)
    assert FailureKind.KEY_CONFLICT is outcome.kind
    granule = world.store.granules["B"]
    assert (State.FAILED, 0, "key_conflict: X.zip holds A") == (
        granule.state,
        granule.download_retries,
        granule.last_error,
    )


@attrs.define
class _StoreOnItsOwnClock:
    """The in-memory granule store, but on its own clock (as PostgreSQL uses ``now()``), not the worker's."""

    store: InMemoryGranuleStore
    at: dt.datetime

    def claim(self, granule_id: str, owner: str, now: dt.datetime, lease_seconds: float) -> Granule | None:
        del now
        return self.store.claim(granule_id, owner, self.at, lease_seconds)

    def heartbeat(self, granule_id: str, owner: str, now: dt.datetime, lease_seconds: float) -> bool:
        del now
        return self.store.heartbeat(granule_id, owner, self.at, lease_seconds)

    def record(self, granule_id: str, event: lifecycle.Event) -> Granule:
        return self.store.record(granule_id, event)

    def release(self, granule_id: str, owner: str) -> bool:
        return self.store.release(granule_id, owner)


@pytest.mark.parametrize("skew_minutes", [-10, 4, 10])
def test_a_skewed_worker_clock_neither_spends_nor_stretches_the_deferral_budget(
    world: World, skew_minutes: int
) -> None:
    """The budget runs on the store's clock: a worker minutes ahead or behind defers as an exact one."""
    request = world.add("g1", PRODUCT)
    store_now = world.clock.now()
    world.store.granules["g1"] = attrs.evolve(
        world.store.granules["g1"], first_attempt_at=store_now - dt.timedelta(seconds=100)
    )
    world.clock.advance(skew_minutes * 60.0)
    granules = _StoreOnItsOwnClock(store=world.store, at=store_now)
    throttled = HubFault.fail(FailureKind.THROTTLED, retry_after=1)

    world.max_defer_seconds = 150
    world.hub.download_faults["g1"] = [throttled]
    within = world.handle(request, granules=granules)
    world.max_defer_seconds = 90
    world.hub.download_faults["g1"] = [throttled]
    past = world.handle(request, granules=granules)

    assert isinstance(within, Defer)
    assert isinstance(past, Failed)


def test_a_remembered_refusal_of_our_credentials_waits_out_its_hint(world: World) -> None:
    """UNAUTHORIZED with a Retry-After-like hint (the refused password's window) defers by that hint."""
    request = world.add("g1", PRODUCT)
    world.hub.checksum_faults["g1"] = [HubFault.fail(FailureKind.UNAUTHORIZED, retry_after=280)]

    outcome = world.handle(request)

    assert isinstance(outcome, Defer)
    assert 280 == outcome.delay_seconds
