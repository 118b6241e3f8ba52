"""The GranuleStore contract: one Hypothesis state machine, run against every implementation.

Its model is a plain dict of ``Granule`` moved by the domain's own ``lifecycle.apply``
(as ``zarr.testing.stateful`` models a store with the in-memory one). After every step
the store must hold exactly what the model holds, and ``record`` must raise
``InvalidTransition`` exactly when ``apply`` does. The unit tier runs it on the
in-memory fake, the integration tier on PostgreSQL.

Leases are judged by a clock: the fake takes the ``now`` each call passes in, PostgreSQL
takes its own (``now()`` in the statement) and ignores the worker's. For a store with its
own clock the runner passes ``set_store_clock``: the contract then sets that clock as time
advances, models leases and first attempts on it, and keeps passing skewed ``now`` values
that the store must ignore.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Protocol, TypeVar

import attrs
import hypothesis
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from s2_downloader.domain import lifecycle
from s2_downloader.domain.errors import InvalidTransition
from s2_downloader.domain.granule import Granule
from s2_downloader.domain.ports import GranuleStore

__all__ = [
    "EVENT_KINDS",
    "ContractStore",
    "ContractViolation",
    "GranuleStoreContract",
    "run_granule_store_contract",
]

#: Present from the start; LATE is inserted by a rule, so steps also meet a granule that appears.
IDS = ("g-1", "g-2")
LATE = "g-3"
UNKNOWN = "g-unknown"
OWNERS = ("w-1", "w-2", "w-3")
#: Stands for "whoever holds the lease now", so owner-only events are often legal.
HOLDER = "<holder>"
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

_ids = st.sampled_from((*IDS, LATE, UNKNOWN))
_owners = st.sampled_from(OWNERS)
# Weighted towards the holder: most interesting transitions are the holder's.
_actors = st.sampled_from((HOLDER, HOLDER, HOLDER, *OWNERS))
_lease_seconds = st.sampled_from((0.0, 1.0, 60.0, 900.0)) | st.floats(0, 3600, allow_nan=False)
# Workers' clocks disagree: a little, or by ten minutes. A store with its own clock must
# ignore them; the fake judges leases by the `now` passed in.
_skews = st.integers(-90, 90) | st.sampled_from((-600, 600))
# Upper case often, since the store must keep checksums lower case.
_checksums = st.sampled_from(("", "D41D8CD98F00B204E9800998ECF8427E")) | st.text(
    "0123456789abcdefABCDEF", max_size=32
)
# Text a database can hold: UTF-8 without NUL (the adapter replaces NUL and lone surrogates,
# which PostgreSQL cannot store; the contract does not ask about them).
_errors = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)

_S = TypeVar("_S", bound="ContractStore")


class ContractViolation(AssertionError):
    """The store broke the contract; ``operation`` names the port call that disagreed with the model."""

    def __init__(self, operation: str, expected: object, actual: object) -> None:
        super().__init__(f"{operation}: expected {expected!r}, got {actual!r}")
        self.operation = operation


def _agree(operation: str, expected: object, actual: object) -> None:
    if expected != actual:
        raise ContractViolation(operation, expected, actual)


@attrs.frozen(kw_only=True)
class _Draw:
    owner: str
    now: dt.datetime
    lease_seconds: float
    checksum: str
    error: str


_MAKE_EVENT: dict[type[lifecycle.Event], Callable[[_Draw], lifecycle.Event]] = {
    lifecycle.Claim: lambda d: lifecycle.Claim(owner=d.owner, now=d.now, lease_seconds=d.lease_seconds),
    lifecycle.StartDownload: lambda d: lifecycle.StartDownload(owner=d.owner),
    lifecycle.Heartbeat: lambda d: lifecycle.Heartbeat(
        owner=d.owner, now=d.now, lease_seconds=d.lease_seconds
    ),
    lifecycle.Verify: lambda d: lifecycle.Verify(owner=d.owner, checksum=d.checksum),
    lifecycle.CountFailure: lambda d: lifecycle.CountFailure(owner=d.owner, error=d.error),
    lifecycle.Exhaust: lambda d: lifecycle.Exhaust(owner=d.owner, error=d.error),
    lifecycle.GiveUp: lambda d: lifecycle.GiveUp(owner=d.owner, error=d.error),
    lifecycle.Postpone: lambda d: lifecycle.Postpone(owner=d.owner, error=d.error),
    lifecycle.Abandon: lambda d: lifecycle.Abandon(owner=d.owner, error=d.error),
    lifecycle.Release: lambda d: lifecycle.Release(owner=d.owner),
    lifecycle.MarkUploadSent: lambda _: lifecycle.MarkUploadSent(),
}

#: How an attempt ends; the ones that leave the granule open are listed twice, so more
#: examples see a granule through several attempts.
_ENDINGS: tuple[type[lifecycle.Event], ...] = (
    lifecycle.CountFailure,
    lifecycle.CountFailure,
    lifecycle.Postpone,
    lifecycle.Postpone,
    lifecycle.Release,
    lifecycle.Verify,
    lifecycle.Exhaust,
    lifecycle.GiveUp,
    lifecycle.Abandon,
)

#: Every event type the contract records.
EVENT_KINDS: tuple[type[lifecycle.Event], ...] = tuple(_MAKE_EVENT)


class ContractStore(GranuleStore, Protocol):
    """A granule store that can also be read back, for the contract to compare with its model."""

    def get(self, granule_id: str) -> Granule | None:
        """The granule as stored, or ``None``."""
        ...


class GranuleStoreContract(RuleBasedStateMachine):
    """Drives one store and the model side by side; they must never disagree."""

    def __init__(
        self,
        store: ContractStore,
        add_granule: Callable[[str, str], None],
        check_store: Callable[[], None] | None = None,
        set_store_clock: Callable[[dt.datetime], None] | None = None,
    ) -> None:
        super().__init__()
        self.store = store
        self.add_granule = add_granule
        self.check_store = check_store
        self.set_store_clock = set_store_clock
        self.model: dict[str, Granule] = {}
        self.clock = START
        if set_store_clock is not None:
            set_store_clock(self.clock)

    # -- rules ----------------------------------------------------------------------

    @initialize()
    def first_granules(self) -> None:
        """Start with pending granules, so examples reach deep states within few steps."""
        for granule_id in IDS:
            self.add_late(granule_id=granule_id, filename="first.zip")

    @rule(granule_id=st.just(LATE), filename=st.sampled_from(("a.zip", "S2B_MSIL1C.zip")))
    def add_late(self, *, granule_id: str, filename: str) -> None:
        """The link fetcher inserts a granule; it starts pending."""
        if granule_id in self.model:
            return
        self.add_granule(granule_id, filename)
        self.model[granule_id] = Granule(id=granule_id, filename=filename)

    @rule(seconds=st.floats(0, 2000, allow_nan=False))
    def advance_clock(self, *, seconds: float) -> None:
        """Wall time passes, so leases may expire."""
        self.clock += dt.timedelta(seconds=seconds)
        if self.set_store_clock is not None:
            self.set_store_clock(self.clock)

    @rule(granule_id=_ids, owner=_owners, lease_seconds=_lease_seconds, skew=_skews)
    def claim(self, *, granule_id: str, owner: str, lease_seconds: float, skew: int) -> None:
        """A claim takes a free granule and otherwise returns it unchanged (None when unknown)."""
        self._check_claim(granule_id, owner, self.clock + dt.timedelta(seconds=skew), lease_seconds)

    @rule(
        granule_id=_ids,
        owner=_owners,
        lease_seconds=_lease_seconds,
        start=st.booleans(),
        ending=st.sampled_from(_ENDINGS),
        announce=st.booleans(),
        checksum=_checksums,
        error=_errors,
    )
    def attempt(
        self,
        *,
        granule_id: str,
        owner: str,
        lease_seconds: float,
        start: bool,
        ending: type[lifecycle.Event],
        announce: bool,
        checksum: str,
        error: str,
    ) -> None:
        """A worker claims, maybe starts, ends its attempt and maybe announces, as the use case does."""
        # Random single steps seldom line up a claim with its holder's events; this does,
        # and its non-terminal endings let later attempts build on earlier ones.
        self._check_claim(granule_id, owner, self.clock, lease_seconds)
        kinds = [*([lifecycle.StartDownload] if start else []), ending]
        if announce:
            kinds.append(lifecycle.MarkUploadSent)
        draw = _Draw(owner=owner, now=self.clock, lease_seconds=lease_seconds, checksum=checksum, error=error)
        for kind in kinds:
            self._check_record(granule_id, _MAKE_EVENT[kind](draw))

    @rule(granule_id=_ids, actor=_actors, lease_seconds=_lease_seconds, skew=_skews)
    def heartbeat(self, *, granule_id: str, actor: str, lease_seconds: float, skew: int) -> None:
        """A heartbeat extends the lease of its holder only."""
        owner = self._who(granule_id, actor)
        now = self.clock + dt.timedelta(seconds=skew)
        current = self.model.get(granule_id)
        expected = current is not None and current.held_by(owner)
        if current is not None and expected:
            event = lifecycle.Heartbeat(owner=owner, now=self._judged(now), lease_seconds=lease_seconds)
            self.model[granule_id] = lifecycle.apply(current, event)
        _agree("heartbeat", expected, self.store.heartbeat(granule_id, owner, now, lease_seconds))

    @rule(granule_id=_ids, actor=_actors)
    def release(self, *, granule_id: str, actor: str) -> None:
        """A release hands back the holder's granule, and is refused to anyone else."""
        owner = self._who(granule_id, actor)
        current = self.model.get(granule_id)
        expected = current is not None and current.held_by(owner)
        if current is not None and expected:
            self.model[granule_id] = lifecycle.apply(current, lifecycle.Release(owner=owner))
        _agree("release", expected, self.store.release(granule_id, owner))

    @rule(
        granule_id=_ids,
        kind=st.sampled_from(EVENT_KINDS),
        actor=_actors,
        lease_seconds=_lease_seconds,
        skew=_skews,
        checksum=_checksums,
        error=_errors,
    )
    def record(
        self,
        *,
        granule_id: str,
        kind: type[lifecycle.Event],
        actor: str,
        lease_seconds: float,
        skew: int,
        checksum: str,
        error: str,
    ) -> None:
        """Recording an event does what apply does, or raises InvalidTransition when apply does."""
        owner = self._who(granule_id, actor)
        now = self.clock + dt.timedelta(seconds=skew)
        draw = _Draw(owner=owner, now=now, lease_seconds=lease_seconds, checksum=checksum, error=error)
        modelled = attrs.evolve(draw, now=self._judged(now))
        self._check_record(granule_id, _MAKE_EVENT[kind](draw), _MAKE_EVENT[kind](modelled))

    # -- invariants -----------------------------------------------------------------

    @invariant()
    def store_holds_the_model(self) -> None:
        """Every granule reads back exactly as the model has it, and unknown ones stay unknown."""
        for granule_id in (*IDS, LATE, UNKNOWN):
            assert self.model.get(granule_id) == self.store.get(granule_id)

    @invariant()
    def implementation_checks_pass(self) -> None:
        """Whatever else the implementation promises (e.g. legacy columns) holds after each step."""
        if self.check_store is not None:
            self.check_store()

    # -- helpers --------------------------------------------------------------------

    def _judged(self, passed: dt.datetime) -> dt.datetime:
        """The time a store judges an event by: its own clock if it has one, else the ``now`` passed."""
        return passed if self.set_store_clock is None else self.clock

    def _check_claim(self, granule_id: str, owner: str, now: dt.datetime, lease_seconds: float) -> None:
        expected = self.model.get(granule_id)
        if expected is not None:
            try:
                expected = lifecycle.apply(
                    expected,
                    lifecycle.Claim(owner=owner, now=self._judged(now), lease_seconds=lease_seconds),
                )
            except InvalidTransition:
                pass  # the port returns the granule unchanged
            else:
                self.model[granule_id] = expected
        _agree("claim", expected, self.store.claim(granule_id, owner, now, lease_seconds))

    def _check_record(
        self, granule_id: str, event: lifecycle.Event, modelled: lifecycle.Event | None = None
    ) -> None:
        # None stands for InvalidTransition, on both sides. `modelled` is `event` as the
        # store judges it (its own clock), when that differs from what is passed.
        expected: Granule | None = None
        current = self.model.get(granule_id)
        if current is not None:
            try:
                expected = lifecycle.apply(current, event if modelled is None else modelled)
            except InvalidTransition:
                expected = None
            else:
                self.model[granule_id] = expected
        try:
            actual: Granule | None = self.store.record(granule_id, event)
        except InvalidTransition:
            actual = None
        _agree(f"record {type(event).__name__}", expected, actual)

    def _who(self, granule_id: str, actor: str) -> str:
        if actor != HOLDER:
            return actor
        granule = self.model.get(granule_id)
        return granule.lease.owner if granule is not None and granule.lease is not None else OWNERS[0]


def run_granule_store_contract(
    *,
    make_store: Callable[[], _S],
    add_granule: Callable[[_S, str, str], None],
    reset: Callable[[], None] = lambda: None,
    check_store: Callable[[], None] | None = None,
    set_store_clock: Callable[[dt.datetime], None] | None = None,
    settings: hypothesis.settings | None = None,
) -> None:
    """Run the contract: ``reset`` then ``make_store`` before each example.

    ``add_granule(store, id, filename)`` inserts a pending granule as the link fetcher
    would; ``check_store`` is an extra invariant the implementation promises;
    ``set_store_clock`` sets the clock of a store that keeps its own (see the module).
    """

    class Bound(GranuleStoreContract):
        def __init__(self) -> None:
            reset()
            store = make_store()
            super().__init__(
                store,
                lambda granule_id, filename: add_granule(store, granule_id, filename),
                check_store,
                set_store_clock,
            )

    run_state_machine_as_test(Bound, settings=settings)
