"""The product store contract (tests/store_contract.py) on the in-memory fake the use case tests use."""

from __future__ import annotations

import attrs
from hypothesis import settings

from s2_downloader.domain.ports import FileKey, Files
from tests.store_contract import store_machine
from tests.unit.fakes import CrashPlan, InMemoryFiles


@attrs.define
class FakeHarness:
    """``InMemoryFiles``: its dicts are what persists, so a new process gets the same object."""

    crashes: CrashPlan = attrs.field(factory=CrashPlan)
    keeps_mismatched_finals: bool = False
    max_size: int = 48
    max_chunk: int = 16
    files: InMemoryFiles = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.files = InMemoryFiles(crashes=self.crashes, keeps_mismatched_finals=self.keeps_mismatched_finals)

    def store(self) -> Files:
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


TestFakeStoreContract = store_machine(FakeHarness(), "FakeStoreContract").TestCase
TestFakeStoreKeepingFinalsContract = store_machine(
    FakeHarness(keeps_mismatched_finals=True), "FakeStoreKeepingFinalsContract"
).TestCase
TestFakeStoreContract.settings = settings(max_examples=40, stateful_step_count=20)
TestFakeStoreKeepingFinalsContract.settings = settings(max_examples=20, stateful_step_count=20)
