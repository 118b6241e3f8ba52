"""The UploadLedger contract on the in-memory fake (and proof that the contract can fail)."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import Phase, settings

from tests.unit.fakes import InMemoryGranuleStore, InMemoryUploadLedger
from tests.upload_ledger_contract import LedgerContractViolation, run_upload_ledger_contract

#: Finding the bug is the point; shrinking it would only cost time.
_HUNT = settings(database=None, max_examples=200, phases=[Phase.generate])


@attrs.define
class _Table:
    """What outlives a process: the granules and their records."""

    granules: InMemoryGranuleStore = attrs.field(factory=InMemoryGranuleStore)
    records: dict[str, dict[str, Any]] = attrs.field(factory=dict)

    def reset(self) -> None:
        self.granules, self.records = InMemoryGranuleStore(), {}

    def add(self, granule_id: str) -> None:
        self.granules.add(granule_id, "product.zip")


class _ForgetfulLedger(InMemoryUploadLedger):
    """A broken ledger: clearing a record does nothing."""

    def clear(self, granule_id: str) -> None:
        del granule_id


class _SharingLedger(InMemoryUploadLedger):
    """A broken ledger: ``load`` hands out the record it holds, not a copy."""

    def load(self, granule_id: str) -> dict[str, Any] | None:
        return self.records.get(granule_id)


def test_the_in_memory_ledger_honours_the_upload_ledger_contract() -> None:
    """The fake keeps, replaces and forgets records as the granule row's column does."""
    table = _Table()
    run_upload_ledger_contract(
        make_ledger=lambda: InMemoryUploadLedger(records=table.records, granules=table.granules),
        add_granule=table.add,
        reset=table.reset,
    )


@pytest.mark.parametrize(
    ("ledger", "operation"),
    [(_ForgetfulLedger, "load('g-"), (_SharingLedger, "load after changing a loaded copy")],
    ids=["forgets-nothing", "shares-its-records"],
)
def test_the_contract_catches_a_broken_ledger(ledger: type[InMemoryUploadLedger], operation: str) -> None:
    """A ledger that ignores clear, or lends out what it holds, fails the contract at a load."""
    table = _Table()
    with pytest.raises(LedgerContractViolation) as failure:
        run_upload_ledger_contract(
            make_ledger=lambda: ledger(records=table.records, granules=table.granules),
            add_granule=table.add,
            reset=table.reset,
            settings=_HUNT,
        )
    assert failure.value.operation.startswith(operation)
