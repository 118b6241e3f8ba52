"""The whole use case under duplicates, redeliveries, crashes, hub faults and racing workers."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import attrs
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

from s2_downloader.domain import Defer, Done, Failed, Outcome, Reject, RetryLater, State
from s2_downloader.domain.errors import FailureKind, FileStoreError, QueueError, StoreError, StoreUnavailable
from s2_downloader.domain.request import DownloadRequest
from s2_downloader.domain.retry import DEFERRAL_BUDGET_FAILURES
from s2_downloader.entrypoints.dispatch import INFRASTRUCTURE_ERRORS
from tests.unit.fakes import Crash, HubFault, md5
from tests.unit.world import World

IDS = ("g0", "g1", "g2")
MAX_RETRIES = 2
#: Short, so that examples reach it: a few steps of time passing spend it.
MAX_DEFER_SECONDS = 3000.0

_FAULTS = st.sampled_from(
    [
        HubFault(short_by=3),
        HubFault(corrupt=True),
        HubFault(ignore_range=True),
        HubFault.fail(FailureKind.THROTTLED, retry_after=5),
        HubFault.fail(FailureKind.OFFLINE),
        HubFault.fail(FailureKind.SERVER_ERROR),
        HubFault.fail(FailureKind.NOT_FOUND),
        HubFault.fail(FailureKind.UNAUTHORIZED),
        HubFault.fail(FailureKind.TRANSFER_INTERRUPTED),
        HubFault(out_of_time=True),
    ]
)


_OUTAGE_ERRORS: dict[str, Callable[[str], BaseException]] = {
    "database": lambda call: StoreError(f"granule store: {call} failed: connection refused"),
    "store": lambda call: StoreUnavailable(f"store: {call}: unreachable"),
    "queue": lambda call: QueueError(f"queue: {call}: unreachable"),
}
_OUTAGES = st.sampled_from(sorted(_OUTAGE_ERRORS))


@attrs.frozen
class Message:
    """One SQS message on the download queue."""

    number: int
    request: DownloadRequest


class UseCaseMachine(RuleBasedStateMachine):
    """Messages delivered in any order, any number of times, with faults; nothing is lost or corrupted."""

    messages = Bundle("messages")

    def __init__(self) -> None:
        super().__init__()
        self.world = World(max_retries=MAX_RETRIES, lease_seconds=600, max_defer_seconds=MAX_DEFER_SECONDS)
        self.queue: dict[int, Message] = {}
        self.dead_letters: list[Message] = []
        self.numbers = itertools.count()
        self.terminal: dict[str, State] = {}
        self.contents: dict[str, bytes] = {}
        self.ever_sent: set[str] = set()
        self.outages_met = 0

    @initialize(
        contents=st.lists(st.binary(min_size=0, max_size=24), min_size=len(IDS), max_size=len(IDS)),
        known=st.lists(st.booleans(), min_size=len(IDS), max_size=len(IDS)),
    )
    def granules(self, contents: list[bytes], known: list[bool]) -> None:
        for granule_id, content, in_table in zip(IDS, contents, known, strict=True):
            self.contents[granule_id] = content
            self.world.hub.add(granule_id, content)
            if in_table:
                self.world.store.add(granule_id, f"{granule_id}.zip")

    @rule(target=messages, granule_id=st.sampled_from(IDS), with_checksum=st.booleans(), wrong=st.booleans())
    def link_fetcher_sends(self, granule_id: str, with_checksum: bool, wrong: bool) -> Message:
        content = self.contents[granule_id]
        checksum = None if not with_checksum else md5(content + b"x" if wrong else content)
        message = Message(next(self.numbers), World.request(granule_id, checksum))
        self.queue[message.number] = message
        self.ever_sent.add(granule_id)
        return message

    @rule(message=messages)
    def queue_duplicates(self, message: Message) -> None:
        copy = Message(next(self.numbers), message.request)
        self.queue[copy.number] = copy

    @rule(message=messages)
    def deliver(self, message: Message) -> None:
        if message.number in self.queue:
            self._settle(message, self.world.handle(message.request))

    @rule(message=messages, at=st.integers(min_value=1, max_value=25))
    def deliver_and_crash(self, message: Message, at: int) -> None:
        if message.number not in self.queue:
            return
        self.world.crashes.arm(at)
        try:
            outcome = self.world.handle(message.request)
        except Crash:
            return  # the message stays on the queue: it comes back after its visibility timeout
        finally:
            self.world.crashes.arm(0)
        self._settle(message, outcome)

    @rule(message=messages, at=st.integers(min_value=1, max_value=25), outage=_OUTAGES)
    def deliver_during_an_outage(self, message: Message, at: int, outage: str) -> None:
        """Our database, store or upload queue fails at any port call: the message is handed back
        (the entry point re-sends it), and the granule's retries and state are as they were."""
        if message.number not in self.queue:
            return
        before = self.world.store.granules.get(message.request.id)
        self.world.crashes.arm(at, error=_OUTAGE_ERRORS[outage])
        try:
            outcome = self.world.handle(message.request)
        except INFRASTRUCTURE_ERRORS:
            after = self.world.store.granules.get(message.request.id)
            if before is not None and after is not None:
                # An outage never counts, never fails a granule and never ends its clock.
                assert before.download_retries == after.download_retries
                assert after.state is not State.FAILED or before.state is State.FAILED
            self.outages_met += 1
            return  # re-sent with a delay by the entry point: still on the queue
        finally:
            self.world.crashes.arm(0)
        self._settle(message, outcome)

    @rule(message=messages)
    def deliver_while_the_whole_store_is_down(self, message: Message) -> None:
        """The mount gone or the bucket unreachable: every write fails and so does the health check.

        An outage: the message is handed back, and nothing is counted as the store's fault.
        """
        if message.number not in self.queue:
            return
        files, granule_id = self.world.files, message.request.id
        kept = files.refused_writes.get(granule_id)
        files.healthy = False
        files.refused_writes[granule_id] = FileStoreError(f"{granule_id}: the mount is gone")
        before = self.world.store.granules.get(granule_id)
        try:
            outcome = self.world.handle(message.request)
        except INFRASTRUCTURE_ERRORS:
            after = self.world.store.granules.get(granule_id)
            if before is not None and after is not None:
                assert before.download_retries == after.download_retries
                assert after.state is not State.FAILED or before.state is State.FAILED
            self.outages_met += 1
            return
        finally:
            files.healthy = True
            if kept is None:
                files.refused_writes.pop(granule_id, None)
            else:
                files.refused_writes[granule_id] = kept
        # Done (already verified), or the hub failed before a byte was written: never the store's count.
        assert not (isinstance(outcome, RetryLater | Failed) and outcome.kind is FailureKind.STORE), outcome
        self._settle(message, outcome)

    @rule(first=messages, second=messages, at_chunk=st.integers(min_value=0, max_value=3))
    def two_workers_at_once(self, first: Message, second: Message, at_chunk: int) -> None:
        if first.number not in self.queue or second.number not in self.queue or first == second:
            return
        outcomes: list[Outcome] = []

        def other_worker(granule_id: str, index: int) -> None:
            if index == at_chunk and not outcomes:
                outcomes.append(self.world.handle(second.request))

        self.world.hub.on_chunk = other_worker
        try:
            outcome = self.world.handle(first.request)
        finally:
            self.world.hub.on_chunk = None
        if outcomes:
            self._settle(second, outcomes[0])
        self._settle(first, outcome)

    @rule(granule_id=st.sampled_from(IDS), fault=_FAULTS)
    def hub_misbehaves(self, granule_id: str, fault: HubFault) -> None:
        self.world.hub.download_faults.setdefault(granule_id, []).append(fault)

    @rule(
        granule_id=st.sampled_from(IDS), kind=st.sampled_from([FailureKind.SERVER_ERROR, FailureKind.OFFLINE])
    )
    def hub_answers_the_same_error_for_a_long_time(self, granule_id: str, kind: FailureKind) -> None:
        self.world.hub.download_faults.setdefault(granule_id, []).extend([HubFault.fail(kind)] * 8)

    @rule(granule_id=st.sampled_from(IDS))
    def hub_replaces_the_product(self, granule_id: str) -> None:
        granule = self.world.store.granules.get(granule_id)
        if granule is not None and granule.state is State.VERIFIED:
            return  # a verified product stays as it was verified
        self.contents[granule_id] = self.contents[granule_id][::-1] + b"v2"
        self.world.hub.add(granule_id, self.contents[granule_id])

    @rule(granule_id=st.sampled_from(IDS))
    def hub_publishes_a_wrong_checksum(self, granule_id: str) -> None:
        self.world.hub.checksum_faults.setdefault(granule_id, []).append(HubFault(wrong_checksum=True))

    @rule(granule_id=st.sampled_from(IDS), junk=st.binary(min_size=1, max_size=8))
    def leftover_files(self, granule_id: str, junk: bytes) -> None:
        granule = self.world.store.granules.get(granule_id)
        if granule is not None and granule.state is State.VERIFIED:
            return  # a verified product's file is never touched by anyone else
        key = World.key(granule_id)
        if key not in self.world.files.finals:
            self.world.files.finals[key] = junk

    @rule(granule_id=st.sampled_from(IDS))
    def store_refuses_one_granule(self, granule_id: str) -> None:
        """A file where the granule's directory must be (EFS), a key the bucket refuses (S3): the store
        is healthy, so each attempt is a counted ``store`` failure until the budget fails the granule."""
        self.world.files.refused_writes[granule_id] = FileStoreError(f"{granule_id}: a file is in the way")

    @rule(granule_id=st.sampled_from(IDS))
    def store_stops_refusing_the_granule(self, granule_id: str) -> None:
        self.world.files.refused_writes.pop(granule_id, None)

    @rule(seconds=st.sampled_from([1, 60, 601, 900, 3000]))
    def time_passes(self, seconds: int) -> None:
        self.world.clock.advance(seconds)

    def _settle(self, message: Message, outcome: Outcome) -> None:
        if isinstance(outcome, Defer) and outcome.kind in DEFERRAL_BUDGET_FAILURES:
            # Deferred by the hub (or a partial in use): only within the budget.
            granule = self.world.store.granules[message.request.id]
            assert granule.first_attempt_at is not None
            deferred_for = (self.world.clock.now() - granule.first_attempt_at).total_seconds()
            assert deferred_for < MAX_DEFER_SECONDS, (outcome, deferred_for)
        match outcome:
            case Done():
                del self.queue[message.number]
            case Failed() | Reject():
                del self.queue[message.number]
                self.dead_letters.append(message)
            case RetryLater() | Defer():
                pass  # re-sent with a delay or made visible again later: still on the queue

    # -- invariants ---------------------------------------------------------------

    @invariant()
    def final_files_hold_only_the_right_content_once_verified(self) -> None:
        for granule_id, granule in self.world.store.granules.items():
            on_disk = self.world.files.finals.get(World.key(granule_id))
            if granule.state is State.VERIFIED:
                assert self.contents[granule_id] == on_disk
                assert md5(self.contents[granule_id]) == granule.checksum

    @invariant()
    def verified_granules_are_announced_or_still_queued(self) -> None:
        queued = {m.request.id for m in self.queue.values()}
        announced = {granule_id for granule_id, _ in self.world.uploads.sent}
        for granule_id, granule in self.world.store.granules.items():
            if granule.state is State.VERIFIED:
                assert granule_id in announced or granule_id in queued
            if granule.upload_sent:
                assert granule_id in announced

    @invariant()
    def retries_stay_within_the_budget_plus_one(self) -> None:
        for granule in self.world.store.granules.values():
            assert granule.download_retries <= MAX_RETRIES + 1

    @invariant()
    def terminal_states_never_change(self) -> None:
        for granule_id, granule in self.world.store.granules.items():
            if granule_id in self.terminal:
                assert self.terminal[granule_id] == granule.state
            elif granule.is_terminal:
                self.terminal[granule_id] = granule.state

    @invariant()
    def one_download_per_granule_at_a_time(self) -> None:
        assert all(n <= 1 for n in self.world.hub.most_at_once.values())
        assert all(n <= 1 for n in self.world.files.open_partials.values())

    @invariant()
    def no_message_is_lost(self) -> None:
        queued = {m.request.id for m in self.queue.values()}
        dead = {m.request.id for m in self.dead_letters}
        sent = {m.request.id for m in itertools.chain(self.queue.values(), self.dead_letters)}
        for granule_id, granule in self.world.store.granules.items():
            if granule.state is State.FAILED:
                continue
            if granule.state is State.VERIFIED and granule.upload_sent:
                continue
            if granule_id in sent or granule.state is not State.PENDING:
                assert granule_id in queued or granule_id in dead, granule_id
        for message in self.dead_letters:
            assert self.world.store.granules[message.request.id].state is State.FAILED

    def teardown(self) -> None:
        """Drain: with the hub healthy again (a store refusing a granule still does), every queued message
        reaches a terminal outcome within its budgets."""
        self.world.hub.download_faults.clear()
        self.world.hub.checksum_faults.clear()
        for _ in range(4 * (MAX_RETRIES + 2)):
            if not self.queue:
                break
            self.world.clock.advance(901)
            for message in list(self.queue.values()):
                if message.number in self.queue:
                    self._settle(message, self.world.handle(message.request))
        assert {} == self.queue
        for granule_id, granule in self.world.store.granules.items():
            if granule.state is State.VERIFIED:
                assert self.contents[granule_id] == self.world.files.finals[World.key(granule_id)]
                assert granule.upload_sent
            elif granule_id in self.ever_sent:
                assert State.FAILED == granule.state
        assert not self.world.files.partials.keys() & {
            World.key(g) for g, gr in self.world.store.granules.items() if gr.is_terminal
        }


TestUseCaseMachine = UseCaseMachine.TestCase
