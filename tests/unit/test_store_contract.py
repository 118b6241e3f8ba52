"""The product store contract (tests/store_contract.py) on the in-memory fake the use case tests use."""

from __future__ import annotations

import datetime as dt

import attrs
import pytest
from hypothesis import Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from s2_downloader.domain.ports import FileKey, Store
from tests.store_contract import store_machine
from tests.unit.fakes import EPOCH, CrashPlan, InMemoryFiles


@attrs.define
class FakeHarness:
    """``InMemoryFiles``: its dicts are what persists, so a new process gets the same object."""

    crashes: CrashPlan = attrs.field(factory=CrashPlan)
    keeps_mismatched_finals: bool = False
    sweeps_partials: bool = True
    max_size: int = 48
    max_chunk: int = 16
    files: InMemoryFiles = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.files = InMemoryFiles(crashes=self.crashes, keeps_mismatched_finals=self.keeps_mismatched_finals)

    def store(self) -> Store:
        """The same fake: nothing of it lives only in a process."""
        return self.files

    def final_bytes(self, key: FileKey) -> bytes | None:
        """The final product, if any."""
        return self.files.finals.get(key)

    def put_foreign(self, key: FileKey, content: bytes) -> None:
        """Place a product directly."""
        self.files.finals[key] = content

    def open_uploads(self, key: FileKey) -> int:
        """The fake keeps nothing outside its partials."""
        del key
        return 0

    def abandon(self, key: FileKey) -> None:
        """Mark the partial abandoned two days before the fake's epoch."""
        self.files.abandoned[key] = EPOCH - dt.timedelta(days=2)


TestFakeStoreContract = store_machine(FakeHarness(), "FakeStoreContract").TestCase
TestFakeStoreKeepingFinalsContract = store_machine(
    FakeHarness(keeps_mismatched_finals=True), "FakeStoreKeepingFinalsContract"
).TestCase
TestFakeStoreContract.settings = settings(max_examples=40, stateful_step_count=20)
TestFakeStoreKeepingFinalsContract.settings = settings(max_examples=20, stateful_step_count=20)


class _IdleSweepFiles(InMemoryFiles):
    """A broken store: its whole sweep leaves abandoned partials where they are."""

    def sweep_leftovers(self) -> int:
        return 0


def test_the_contract_catches_a_sweep_that_leaves_an_abandoned_partial() -> None:
    """A store that says it sweeps but keeps an abandoned partial fails when the next attempt resumes it."""
    harness = FakeHarness()
    machine = store_machine(harness, "IdleSweepContract")

    class EachExampleOnItsOwnStore(machine):  # type: ignore[misc,valid-type]
        """A new broken store per example: a sweep's choice never depends on an earlier example's
        partials, so the failure found replays the same (else Hypothesis reports it as flaky)."""

        def __init__(self) -> None:
            harness.files = _IdleSweepFiles(crashes=harness.crashes)
            super().__init__()

    hunt = settings(database=None, max_examples=300, phases=[Phase.generate])
    with pytest.raises(AssertionError):
        run_state_machine_as_test(EachExampleOnItsOwnStore, settings=hunt)
