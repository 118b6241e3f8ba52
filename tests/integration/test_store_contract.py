"""The product store contract (tests/store_contract.py) on EFS and on S3 (moto, and SeaweedFS)."""

from __future__ import annotations

import itertools
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test

from s2_downloader.adapters.store.efs import EfsFileStore
from s2_downloader.adapters.store.s3 import S3Store
from s2_downloader.domain.ports import FileKey, Store
from s2_downloader.testing.s3 import ThrowawayS3, create_bucket
from s2_downloader.testing.seaweed import ThrowawaySeaweed
from tests.integration.fixtures_s3 import SMALL_PART
from tests.store_contract import store_machine
from tests.unit.fakes import CrashPlan, InMemoryUploadLedger

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

#: Small parts, so that products of a few KiB cross several part boundaries (moto allows it).
PART: int = SMALL_PART
_buckets = itertools.count()


@attrs.define
class EfsHarness:
    """The EFS store on a temporary mount; crashes only between the machine's calls."""

    mount: Path
    crashes: CrashPlan = attrs.field(factory=CrashPlan)
    keeps_mismatched_finals: bool = False
    sweeps_partials: bool = True
    max_size: int = 3 * PART + 100
    max_chunk: int = 700

    def store(self) -> Store:
        """A new store on the same mount."""
        return EfsFileStore(self.mount)

    def final_bytes(self, key: FileKey) -> bytes | None:
        """The file at the final path, if any."""
        path = self.mount / key.granule_id / key.filename
        return path.read_bytes() if path.exists() else None

    def put_foreign(self, key: FileKey, content: bytes) -> None:
        """Write a file at the final path."""
        (self.mount / key.granule_id).mkdir(exist_ok=True)
        (self.mount / key.granule_id / key.filename).write_bytes(content)

    def open_uploads(self, key: FileKey) -> int:
        """EFS keeps nothing outside its partial files."""
        del key
        return 0

    def abandon(self, key: FileKey) -> None:
        """Date the partial and its sidecar back to 1970, far past the sweep's age."""
        store = EfsFileStore(self.mount)
        for path in (store.partial_path(key), store.sidecar_path(key)):
            if path.exists():
                os.utime(path, (0, 0))


@attrs.define
class S3Harness:
    """The S3 store on a server; crashes also before each request is sent, after its answer, in the ledger.

    ``part``: the store's part size, the server's floor (moto's lowered to ``PART``, 5 MiB on
    SeaweedFS, which holds S3's rule).
    """

    client: S3Client
    bucket: str
    part: int = PART
    crashes: CrashPlan = attrs.field(factory=CrashPlan)
    keeps_mismatched_finals: bool = True
    sweeps_partials: bool = False
    max_size: int = attrs.field(default=attrs.Factory(lambda self: 3 * self.part + 100, takes_self=True))
    max_chunk: int = attrs.field(
        default=attrs.Factory(lambda self: max(700, self.part // 80), takes_self=True)
    )
    ledger: InMemoryUploadLedger = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.ledger = InMemoryUploadLedger(crashes=self.crashes)

        def tick(event_name: str, **kwargs: Any) -> None:
            del kwargs
            self.crashes.tick(event_name)

        self.client.meta.events.register("before-send.s3", tick)
        self.client.meta.events.register("after-call.s3", tick)

    def store(self) -> Store:
        """A new store on the same bucket and ledger: what a process keeps in memory is gone."""
        return S3Store(
            self.client,
            self.bucket,
            self.ledger,
            lambda key: f"{key.granule_id}/{key.filename}",
            part_size=self.part,
            min_part_size=self.part,
        )

    def final_bytes(self, key: FileKey) -> bytes | None:
        """The object at the key, if any."""
        try:
            return self.client.get_object(Bucket=self.bucket, Key=f"{key.granule_id}/{key.filename}")[
                "Body"
            ].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def put_foreign(self, key: FileKey, content: bytes) -> None:
        """Put an object as another program would (no ``md5`` metadata)."""
        self.client.put_object(Bucket=self.bucket, Key=f"{key.granule_id}/{key.filename}", Body=content)

    def open_uploads(self, key: FileKey) -> int:
        """Multipart uploads of the key that S3 still holds."""
        name = f"{key.granule_id}/{key.filename}"
        uploads = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=name).get("Uploads", [])
        return sum(1 for upload in uploads if upload["Key"] == name)

    def abandon(self, key: FileKey) -> None:
        """Nothing: age is the bucket's lifecycle rule's business, not the store's."""
        del key


def test_the_efs_store_keeps_the_store_contract() -> None:
    """The state machine over EfsFileStore: only verified bytes under the final name, none lost."""
    with tempfile.TemporaryDirectory() as mount:
        machine = store_machine(EfsHarness(Path(mount)), "EfsStoreContract")
        run_state_machine_as_test(machine, settings=settings(max_examples=25, stateful_step_count=15))


def test_the_s3_store_keeps_the_store_contract(s3_server: ThrowawayS3) -> None:
    """The state machine over S3Store on moto, with crashes around every request."""
    client = s3_server.client_s3()
    bucket = create_bucket(client, f"contract-{next(_buckets)}")
    machine = store_machine(S3Harness(client, bucket), "S3StoreContract")
    run_state_machine_as_test(machine, settings=settings(max_examples=25, stateful_step_count=15))


#: S3's smallest part but the last, which SeaweedFS enforces.
S3_MIN_PART = 5 * 1024 * 1024


def test_the_s3_store_keeps_the_store_contract_on_a_real_s3_server() -> None:
    """The same machine on SeaweedFS with 5 MiB parts: S3's part floor and Content-MD5 check hold too."""
    with ThrowawaySeaweed() as server:
        client = server.client_s3()
        bucket = create_bucket(client, f"contract-{next(_buckets)}")
        machine = store_machine(S3Harness(client, bucket, part=S3_MIN_PART), "SeaweedS3StoreContract")
        run_state_machine_as_test(machine, settings=settings(max_examples=8, stateful_step_count=8))
