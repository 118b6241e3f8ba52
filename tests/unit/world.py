"""A world of fakes wired into the use case, shared by the example and stateful tests."""

from __future__ import annotations

import itertools
from typing import Any

import attrs

from s2_downloader.domain import Outcome, handle
from s2_downloader.domain.ports import FileKey
from s2_downloader.domain.request import DownloadRequest
from s2_downloader.domain.retry import RetryPolicy
from s2_downloader.domain.usecase import AttemptContext
from tests.unit.fakes import (
    CrashPlan,
    FakeClock,
    FakeHub,
    FakeUploadQueue,
    InMemoryFiles,
    InMemoryGranuleStore,
)

__all__ = ["HUB", "World"]

HUB = "https://hub.test"


@attrs.define
class World:
    """Fakes of every port sharing one crash plan, and the settings the use case runs with."""

    crashes: CrashPlan = attrs.field(factory=CrashPlan)
    clock: FakeClock = attrs.field(factory=FakeClock)
    max_retries: int = 3
    lease_seconds: float = 900.0
    max_defer_seconds: float = 172800.0
    store: InMemoryGranuleStore = attrs.field(init=False)
    hub: FakeHub = attrs.field(init=False)
    files: InMemoryFiles = attrs.field(init=False)
    uploads: FakeUploadQueue = attrs.field(init=False)
    _owners: itertools.count[int] = attrs.field(init=False, factory=itertools.count)

    def __attrs_post_init__(self) -> None:
        self.store = InMemoryGranuleStore(crashes=self.crashes)
        self.hub = FakeHub(crashes=self.crashes)
        self.files = InMemoryFiles(crashes=self.crashes)
        self.uploads = FakeUploadQueue(crashes=self.crashes)

    def context(self, **overrides: Any) -> AttemptContext:
        """The attempt context (the use case's ports and settings) over these fakes."""
        context = AttemptContext(
            granules=self.store,
            hub=self.hub,
            files=self.files,
            uploads=self.uploads,
            clock=self.clock,
            policy=RetryPolicy(
                max_retries=self.max_retries,
                base_delay=60,
                max_defer_seconds=self.max_defer_seconds,
                random=lambda: 0.5,
            ),
            new_owner=lambda: f"worker-{next(self._owners)}",
            lease_seconds=self.lease_seconds,
        )
        return attrs.evolve(context, **overrides)

    def add(self, granule_id: str, content: bytes, **fields: object) -> DownloadRequest:
        """A granule in the table, its product on the hub, and the request that names it."""
        self.store.add(granule_id, f"{granule_id}.zip", **fields)
        self.hub.add(granule_id, content)
        return self.request(granule_id)

    @staticmethod
    def request(granule_id: str, checksum: str | None = None) -> DownloadRequest:
        """The download request for ``granule_id``."""
        return DownloadRequest(
            id=granule_id,
            filename=f"{granule_id}.zip",
            download_url=f"{HUB}/dhus/odata/v1/Products('{granule_id}')/$value",
            checksum=checksum,
        )

    @staticmethod
    def key(granule_id: str) -> FileKey:
        """Where the product of ``granule_id`` lands."""
        return FileKey(granule_id=granule_id, filename=f"{granule_id}.zip")

    def handle(self, request: DownloadRequest, **overrides: Any) -> Outcome:
        """Run the use case once."""
        return handle(request, self.context(**overrides))
