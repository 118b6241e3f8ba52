"""The GranuleStore contract on the in-memory fake (and proof that the contract can fail)."""

from __future__ import annotations

import datetime as dt
import typing

import attrs
import pytest
from hypothesis import Phase, settings

from s2_downloader.domain import lifecycle
from s2_downloader.domain.granule import Granule, Lease, State
from tests.granule_store_contract import EVENT_KINDS, ContractViolation, run_granule_store_contract
from tests.unit.fakes import InMemoryGranuleStore


def _add(store: InMemoryGranuleStore, granule_id: str, filename: str) -> None:
    store.add(granule_id, filename)


class _LeaseIgnoringStore(InMemoryGranuleStore):
    """A broken store: a claim always wins, even against a live lease."""

    def claim(self, granule_id: str, owner: str, now: dt.datetime, lease_seconds: float) -> Granule | None:
        granule = self.granules.get(granule_id)
        if granule is None or granule.is_terminal:
            return granule
        lease = Lease(owner=owner, expires_at=now + dt.timedelta(seconds=lease_seconds))
        granule = attrs.evolve(granule, state=State.CLAIMED, lease=lease)
        self.granules[granule_id] = granule
        return granule


def test_in_memory_store_honours_the_granule_store_contract() -> None:
    """The in-memory fake moves granules exactly as lifecycle.apply says a store must."""
    run_granule_store_contract(make_store=InMemoryGranuleStore, add_granule=_add)


def test_contract_draws_every_lifecycle_event() -> None:
    """The contract exercises every event type the domain defines, so none goes untested."""
    assert set(typing.get_args(lifecycle.Event)) == set(EVENT_KINDS)


def test_contract_catches_a_store_that_ignores_live_leases() -> None:
    """A store that lets a second worker take a live lease fails the contract at a claim, not elsewhere."""
    with pytest.raises(ContractViolation) as failure:
        run_granule_store_contract(
            make_store=_LeaseIgnoringStore,
            add_granule=_add,
            # Finding the bug is the point; shrinking it would only cost time.
            settings=settings(database=None, max_examples=200, phases=[Phase.generate]),
        )
    assert "claim" == failure.value.operation
