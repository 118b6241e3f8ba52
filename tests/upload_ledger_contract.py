"""The UploadLedger contract: one Hypothesis state machine, run against every implementation.

Its model is a plain dict of records by granule id. After every step each granule's
``load`` must give exactly the model's record (a JSON object, as saved), the copy a
``load`` returns must be the caller's own, and a granule the table does not hold has no
record, whatever was saved for it. Each example may also start a "new process" (the
ledger built again), which must find every record where it was. The unit tier runs it
on the in-memory fake, the integration tier on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import hypothesis
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from s2_downloader.domain.ports import UploadLedger

__all__ = ["LedgerContractViolation", "UploadLedgerContract", "run_upload_ledger_contract"]

#: Granules the table holds; UNKNOWN it never does.
IDS = ("g-1", "g-2")
UNKNOWN = "g-unknown"

_ids = st.sampled_from((*IDS, UNKNOWN))
# What a column of JSON can hold as it was written: no NUL in text (PostgreSQL refuses
# it), integers rather than floats (the S3 store writes none, and a float's digits may
# not read back as the same float).
_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | _text
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)
_parts = st.lists(
    st.fixed_dictionaries({"number": st.integers(1, 10_000), "size": st.integers(0, 2**40), "etag": _text}),
    max_size=3,
)
# Records as the S3 store writes them, and any other JSON object.
_records: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {
        "upload_id": _text,
        "key": _text,
        "md5": _text,
        "part_size": st.integers(1, 2**32),
        "parts": _parts,
        "md5_state": st.none() | _text,
        "validator": st.none() | _text,
    }
) | st.dictionaries(_text, _json, max_size=5)

_L = TypeVar("_L", bound=UploadLedger)


class LedgerContractViolation(AssertionError):
    """The ledger broke the contract; ``operation`` names the port call that disagreed with the model."""

    def __init__(self, operation: str, expected: object, actual: object) -> None:
        super().__init__(f"{operation}: expected {expected!r}, got {actual!r}")
        self.operation = operation


def _agree(operation: str, expected: object, actual: object) -> None:
    if expected != actual:
        raise LedgerContractViolation(operation, expected, actual)


class UploadLedgerContract(RuleBasedStateMachine):
    """Drives one ledger and the model side by side; they must never disagree."""

    def __init__(self, make_ledger: Callable[[], UploadLedger], add_granule: Callable[[str], None]) -> None:
        super().__init__()
        self.make_ledger = make_ledger
        self.ledger = make_ledger()
        self.add_granule = add_granule
        self.model: dict[str, dict[str, Any]] = {}

    @initialize()
    def granules(self) -> None:
        """The table holds IDS, without records."""
        for granule_id in IDS:
            self.add_granule(granule_id)

    @rule(granule_id=_ids, record=_records)
    def save(self, *, granule_id: str, record: dict[str, Any]) -> None:
        """A record replaces the granule's; for a granule the table does not hold, nothing is kept."""
        self.ledger.save(granule_id, record)
        if granule_id in IDS:
            self.model[granule_id] = record

    @rule(granule_id=_ids)
    def clear(self, *, granule_id: str) -> None:
        """The granule's record is forgotten; clearing none is fine."""
        self.ledger.clear(granule_id)
        self.model.pop(granule_id, None)

    @rule(granule_id=_ids)
    def load_gives_a_copy(self, *, granule_id: str) -> None:
        """Changing what ``load`` returned changes nothing the ledger holds."""
        loaded = self.ledger.load(granule_id)
        if isinstance(loaded, dict):
            loaded["changed by the caller"] = True
            loaded.pop("parts", None)
        _agree("load after changing a loaded copy", self.model.get(granule_id), self.ledger.load(granule_id))

    @rule()
    def new_process(self) -> None:
        """A ledger built again (a new process) finds the same records."""
        self.ledger = self.make_ledger()

    @invariant()
    def every_record_is_the_models(self) -> None:
        """Each granule's ``load`` is the record last saved for it, or ``None``."""
        for granule_id in (*IDS, UNKNOWN):
            _agree(f"load({granule_id!r})", self.model.get(granule_id), self.ledger.load(granule_id))


def run_upload_ledger_contract(
    *,
    make_ledger: Callable[[], _L],
    add_granule: Callable[[str], None],
    reset: Callable[[], None] = lambda: None,
    settings: hypothesis.settings | None = None,
) -> None:
    """Run the contract: ``reset`` before each example; ``make_ledger`` builds a ledger on what persists.

    ``add_granule(id)`` inserts a granule as the link fetcher would.
    """

    class Bound(UploadLedgerContract):
        def __init__(self) -> None:
            reset()
            super().__init__(make_ledger, add_granule)

    run_state_machine_as_test(Bound, settings=settings)
