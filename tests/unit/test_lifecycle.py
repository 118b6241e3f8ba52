"""The granule state machine: the transition table against a plain model."""

from __future__ import annotations

import datetime as dt
import itertools

import attrs
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from s2_downloader.domain import lifecycle
from s2_downloader.domain.errors import InvalidTransition
from s2_downloader.domain.granule import Granule, Lease, State

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
OWNERS = ("w1", "w2")


def _model(granule: Granule, event: lifecycle.Event) -> Granule | None:
    """The lifecycle written out by hand, independent of the table: None means illegal."""
    s = granule.state
    leased = s in (State.CLAIMED, State.DOWNLOADING)
    owner = getattr(event, "owner", None)
    mine = granule.lease is not None and granule.lease.owner == owner
    match event:
        case lifecycle.Claim(now=now, lease_seconds=seconds):
            free = s in (State.PENDING, State.RETRYING)
            expired = leased and (granule.lease is None or granule.lease.expires_at <= now)
            if not (free or expired):
                return None
            lease = Lease(owner=event.owner, expires_at=now + dt.timedelta(seconds=seconds))
            first = granule.first_attempt_at or now
            return attrs.evolve(granule, state=State.CLAIMED, lease=lease, first_attempt_at=first)
        case lifecycle.StartDownload():
            return attrs.evolve(granule, state=State.DOWNLOADING) if s is State.CLAIMED and mine else None
        case lifecycle.Heartbeat(now=now, lease_seconds=seconds):
            if not (leased and mine):
                return None
            lease = Lease(owner=event.owner, expires_at=now + dt.timedelta(seconds=seconds))
            return attrs.evolve(granule, lease=lease)
        case lifecycle.Verify(checksum=checksum):
            if not (leased and mine):
                return None
            return attrs.evolve(granule, state=State.VERIFIED, lease=None, checksum=checksum, last_error=None)
        case lifecycle.CountFailure(error=error) | lifecycle.Exhaust(error=error):
            if not (leased and mine):
                return None
            target = State.RETRYING if isinstance(event, lifecycle.CountFailure) else State.FAILED
            return attrs.evolve(
                granule,
                state=target,
                lease=None,
                download_retries=granule.download_retries + 1,
                last_error=error,
            )
        case lifecycle.GiveUp(error=error):
            if not (s is State.CLAIMED and mine):
                return None
            return attrs.evolve(granule, state=State.FAILED, lease=None, last_error=error)
        case lifecycle.Postpone(error=error):
            if not (leased and mine):
                return None
            return attrs.evolve(granule, state=State.RETRYING, lease=None, last_error=error)
        case lifecycle.Abandon(error=error):
            if not (leased and mine):
                return None
            return attrs.evolve(granule, state=State.FAILED, lease=None, last_error=error)
        case lifecycle.Release():
            return attrs.evolve(granule, state=State.PENDING, lease=None) if leased and mine else None
        case lifecycle.MarkUploadSent():
            return attrs.evolve(granule, upload_sent=True) if s is State.VERIFIED else None
    raise AssertionError(event)


def _events(now: dt.datetime) -> list[lifecycle.Event]:
    events: list[lifecycle.Event] = [lifecycle.MarkUploadSent()]
    for owner in OWNERS:
        events += [
            lifecycle.Claim(owner=owner, now=now, lease_seconds=60),
            lifecycle.StartDownload(owner=owner),
            lifecycle.Heartbeat(owner=owner, now=now, lease_seconds=60),
            lifecycle.Verify(owner=owner, checksum="ab" * 16),
            lifecycle.CountFailure(owner=owner, error="mismatch"),
            lifecycle.Exhaust(owner=owner, error="mismatch"),
            lifecycle.GiveUp(owner=owner, error="budget"),
            lifecycle.Postpone(owner=owner, error="503"),
            lifecycle.Abandon(owner=owner, error="503 for two days"),
            lifecycle.Release(owner=owner),
        ]
    return events


def _granules() -> list[Granule]:
    leases = [None, Lease(owner="w1", expires_at=T0 + dt.timedelta(seconds=30))]
    firsts = [None, T0 - dt.timedelta(days=1)]
    return [
        Granule(
            id="g", filename="f.zip", state=state, lease=lease, download_retries=2, first_attempt_at=first
        )
        for state, lease, first in itertools.product(State, leases, firsts)
    ]


@pytest.mark.parametrize("now", [T0, T0 + dt.timedelta(seconds=31)], ids=["lease-live", "lease-expired"])
def test_every_state_event_pair_is_the_model_transition_or_invalid(now: dt.datetime) -> None:
    """For every (state, event) pair, apply gives the model's granule or raises and changes nothing."""
    for granule, event in itertools.product(_granules(), _events(now)):
        before = attrs.evolve(granule)
        expected = _model(granule, event)
        if expected is None:
            with pytest.raises(InvalidTransition):
                lifecycle.apply(granule, event)
        else:
            assert expected == lifecycle.apply(granule, event), (granule, event)
        assert before == granule


def test_terminal_states_have_no_way_out() -> None:
    """No table entry leaves verified or failed."""
    leaving = [
        (state, event)
        for (state, event), target in lifecycle.TRANSITIONS.items()
        if state in (State.VERIFIED, State.FAILED) and target is not state
    ]
    assert [] == leaving


def test_a_live_lease_blocks_a_claim_and_an_expired_one_can_be_taken_over() -> None:
    """GIVEN w1 holds a 60 s lease WHEN w2 claims at 59 s and at 60 s THEN only the second wins."""
    held = lifecycle.apply(
        Granule(id="g", filename="f"), lifecycle.Claim(owner="w1", now=T0, lease_seconds=60)
    )
    with pytest.raises(InvalidTransition):
        lifecycle.apply(
            held, lifecycle.Claim(owner="w2", now=T0 + dt.timedelta(seconds=59), lease_seconds=60)
        )
    taken = lifecycle.apply(
        held, lifecycle.Claim(owner="w2", now=T0 + dt.timedelta(seconds=60), lease_seconds=60)
    )
    assert taken.held_by("w2")


class LifecycleMachine(RuleBasedStateMachine):
    """Random walks through the lifecycle: apply agrees with the model at every step."""

    def __init__(self) -> None:
        super().__init__()
        self.granule = Granule(id="g", filename="f.zip")
        self.now = T0
        self.terminal_seen: State | None = None
        self.first_attempt_seen: dt.datetime | None = None

    def _step(self, event: lifecycle.Event) -> None:
        expected = _model(self.granule, event)
        if expected is None:
            before = self.granule
            with pytest.raises(InvalidTransition):
                lifecycle.apply(self.granule, event)
            assert before == self.granule
        else:
            self.granule = lifecycle.apply(self.granule, event)
            assert expected == self.granule

    @rule(seconds=st.integers(min_value=0, max_value=120))
    def advance(self, seconds: int) -> None:
        self.now += dt.timedelta(seconds=seconds)

    @rule(owner=st.sampled_from(OWNERS), seconds=st.integers(min_value=1, max_value=90))
    def claim(self, owner: str, seconds: int) -> None:
        self._step(lifecycle.Claim(owner=owner, now=self.now, lease_seconds=seconds))

    @rule(owner=st.sampled_from(OWNERS), seconds=st.integers(min_value=1, max_value=90))
    def heartbeat(self, owner: str, seconds: int) -> None:
        self._step(lifecycle.Heartbeat(owner=owner, now=self.now, lease_seconds=seconds))

    @rule(owner=st.sampled_from(OWNERS))
    def start(self, owner: str) -> None:
        self._step(lifecycle.StartDownload(owner=owner))

    @rule(owner=st.sampled_from(OWNERS), checksum=st.sampled_from(["aa" * 16, "AB" * 16]))
    def verify(self, owner: str, checksum: str) -> None:
        self._step(lifecycle.Verify(owner=owner, checksum=checksum.lower()))

    @rule(
        owner=st.sampled_from(OWNERS),
        kind=st.sampled_from(
            [
                lifecycle.CountFailure,
                lifecycle.Exhaust,
                lifecycle.GiveUp,
                lifecycle.Postpone,
                lifecycle.Abandon,
            ]
        ),
    )
    def fail(
        self,
        owner: str,
        kind: type[
            lifecycle.CountFailure
            | lifecycle.Exhaust
            | lifecycle.GiveUp
            | lifecycle.Postpone
            | lifecycle.Abandon
        ],
    ) -> None:
        self._step(kind(owner=owner, error="boom"))

    @rule(owner=st.sampled_from(OWNERS))
    def release(self, owner: str) -> None:
        self._step(lifecycle.Release(owner=owner))

    @rule()
    def upload_sent(self) -> None:
        self._step(lifecycle.MarkUploadSent())

    @invariant()
    def terminal_states_never_change(self) -> None:
        if self.terminal_seen is not None:
            assert self.terminal_seen == self.granule.state
        if self.granule.is_terminal:
            self.terminal_seen = self.granule.state

    @invariant()
    def the_first_attempt_is_kept_once_a_claim_set_it(self) -> None:
        if self.first_attempt_seen is not None:
            assert self.first_attempt_seen == self.granule.first_attempt_at
        self.first_attempt_seen = self.granule.first_attempt_at

    @invariant()
    def a_lease_exists_exactly_while_claimed_or_downloading(self) -> None:
        assert (self.granule.lease is not None) == (self.granule.state in (State.CLAIMED, State.DOWNLOADING))


TestLifecycleMachine = LifecycleMachine.TestCase


def test_the_first_claim_starts_the_deferral_budget_and_later_claims_keep_it() -> None:
    """GIVEN a claim at T0, a postponement and a claim a day later THEN first_attempt_at stays T0."""
    first = lifecycle.apply(
        Granule(id="g", filename="f"), lifecycle.Claim(owner="w1", now=T0, lease_seconds=60)
    )
    postponed = lifecycle.apply(first, lifecycle.Postpone(owner="w1", error="503"))
    later = T0 + dt.timedelta(days=1)
    again = lifecycle.apply(postponed, lifecycle.Claim(owner="w2", now=later, lease_seconds=60))
    assert (T0, T0) == (first.first_attempt_at, again.first_attempt_at)


def test_abandon_fails_a_granule_from_claimed_or_downloading_for_its_holder_only() -> None:
    """Abandon is the lease holder's, from either leased state, and leaves the reason in last_error."""
    claimed = lifecycle.apply(
        Granule(id="g", filename="f"), lifecycle.Claim(owner="w1", now=T0, lease_seconds=60)
    )
    downloading = lifecycle.apply(claimed, lifecycle.StartDownload(owner="w1"))
    for granule in (claimed, downloading):
        with pytest.raises(InvalidTransition):
            lifecycle.apply(granule, lifecycle.Abandon(owner="w2", error="503"))
        failed = lifecycle.apply(granule, lifecycle.Abandon(owner="w1", error="server_error: 503"))
        assert (State.FAILED, None, "server_error: 503") == (failed.state, failed.lease, failed.last_error)
