"""Store errors classified by the health check, with real faults on both stores (docs/interface.md section 6).

A fault of one granule (a file where its directory belongs, a key the bucket's policy refuses)
passes the health check: a counted retry, ``store: <what failed>``, and after the budget the
granule fails, never a loop. A fault of the whole store (the mount gone or replaced by a file,
the bucket deleted, the S3 server stopped) fails it: an outage, ``Unavailable``, nothing
counted, the granule released.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import pytest
from botocore.config import Config

from s2_downloader.adapters.store.efs import EfsFileStore
from s2_downloader.adapters.store.s3 import S3Store
from s2_downloader.domain import Done, Failed, RetryLater, State
from s2_downloader.domain.errors import FailureKind, FileStoreError, StoreUnavailable
from s2_downloader.domain.ports import FileKey
from s2_downloader.entrypoints.dispatch import Unavailable, outcome_for
from s2_downloader.testing.s3 import ThrowawayS3, create_bucket, s3_client
from tests.integration.fixtures_s3 import SMALL_PART
from tests.unit.fakes import InMemoryUploadLedger
from tests.unit.world import World

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

PART = SMALL_PART
PRODUCT = bytes(range(256)) * 8  # 2 KiB: two parts on S3


def _message(granule_id: str) -> str:
    request = World.request(granule_id)
    return json.dumps({"id": request.id, "filename": request.filename, "download_url": request.download_url})


def _accept(url: str) -> None:
    del url


def _unchanged(world: World, granule_id: str) -> None:
    granule = world.store.granules[granule_id]
    assert (State.PENDING, None, 0, None) == (
        granule.state,
        granule.lease,
        granule.download_retries,
        granule.last_error,
    )


# -- EFS ---------------------------------------------------------------------------------


@pytest.fixture
def mount(tmp_path: Path) -> Path:
    """An empty directory standing in for the EFS mount."""
    path = tmp_path / "efs"
    path.mkdir()
    return path


def test_the_efs_health_check_passes_on_a_writable_mount_and_leaves_nothing(mount: Path) -> None:
    """The probe file is created and removed: the mount is as it was."""
    EfsFileStore(mount).check_health()
    assert [] == list(mount.iterdir())


def test_a_file_where_the_granule_directory_belongs_is_a_counted_store_failure(mount: Path) -> None:
    """The mount is healthy: the file in the way is the granule's fault, counted with the store's words."""
    world = World()
    request = world.add("g1", PRODUCT)
    (mount / "g1").write_bytes(b"in the way")
    store = EfsFileStore(mount)

    outcome = world.handle(request, files=store)

    assert isinstance(outcome, RetryLater)
    assert FailureKind.STORE is outcome.kind
    granule = world.store.granules["g1"]
    assert (State.RETRYING, 1) == (granule.state, granule.download_retries)
    assert granule.last_error is not None
    assert granule.last_error.startswith("store: cannot ")
    assert str(mount / "g1") in granule.last_error
    assert b"in the way" == (mount / "g1").read_bytes()


def test_a_directory_in_the_way_for_ever_fails_the_granule_after_the_budget(mount: Path) -> None:
    """Every attempt refused the same way: counted each time, then failed: the loop ends."""
    world = World()
    request = world.add("g1", PRODUCT)
    (mount / "g1").write_bytes(b"in the way")
    store = EfsFileStore(mount)

    outcomes = [world.handle(request, files=store) for _ in range(world.max_retries + 1)]

    assert all(isinstance(outcome, RetryLater) for outcome in outcomes[:-1])
    assert isinstance(outcomes[-1], Failed)
    assert FailureKind.STORE is outcomes[-1].kind
    assert State.FAILED is world.store.granules["g1"].state
    # Another granule on the same mount is not affected.
    other = world.add("g2", PRODUCT)
    assert isinstance(world.handle(other, files=store), Done)


@pytest.fixture
def immutable(mount: Path) -> Iterator[Path]:
    """``<mount>/g1`` made immutable (``chattr +i``): read-only even for root, unlike chmod."""
    directory = mount / "g1"
    directory.mkdir()
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(directory)], check=False).returncode:
        pytest.skip("chattr +i is not available on this file system")
    try:
        yield directory
    finally:
        subprocess.run([chattr, "-i", str(directory)], check=True)


def test_a_read_only_granule_directory_is_a_counted_store_failure(mount: Path, immutable: Path) -> None:
    """The granule's directory refuses writes (as root too), the mount does not: counted, ``store: ...``."""
    world = World()
    request = world.add("g1", PRODUCT)

    outcome = world.handle(request, files=EfsFileStore(mount))

    assert isinstance(outcome, RetryLater)
    assert FailureKind.STORE is outcome.kind
    granule = world.store.granules["g1"]
    assert granule.last_error is not None
    assert granule.last_error.startswith("store: cannot ")
    assert str(immutable) in granule.last_error
    assert [] == list(immutable.iterdir())


@pytest.mark.parametrize("fault", ["removed", "replaced by a file"])
def test_a_mount_that_is_gone_is_an_outage_and_nothing_is_counted(
    mount: Path, tmp_path: Path, fault: str
) -> None:
    """The mount removed or replaced: the health check fails, ``Unavailable``, the granule released."""
    world = World()
    world.add("g1", PRODUCT)
    store = EfsFileStore(mount)
    shutil.rmtree(mount)
    if fault == "replaced by a file":
        mount.write_bytes(b"not a mount")

    with pytest.raises(StoreUnavailable):
        store.check_health()
    result = outcome_for(_message("g1"), world.context(files=store), _accept)

    assert isinstance(result, Unavailable)
    assert "StoreUnavailable" in result.reason
    _unchanged(world, "g1")
    assert not (tmp_path / "g1").exists()


# -- S3 ----------------------------------------------------------------------------------


def _denied_prefix(client: S3Client, bucket: str, prefix: str) -> None:
    """A bucket policy that refuses every upload under ``prefix``: a key S3 refuses, the bucket fine."""
    statement = {
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:PutObject",
        "Resource": f"arn:aws:s3:::{bucket}/{prefix}*",
    }
    client.put_bucket_policy(
        Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [statement]})
    )


def _key(key: FileKey) -> str:
    """``deny/<filename>`` for granules named ``deny-...``, else ``<filename>``."""
    return f"deny/{key.filename}" if key.granule_id.startswith("deny") else key.filename


def _s3_store(client: S3Client, bucket: str) -> S3Store:
    return S3Store(client, bucket, InMemoryUploadLedger(), _key, part_size=PART, min_part_size=PART)


@pytest.mark.parametrize("size", [PART // 2, 2 * PART], ids=["one PutObject", "multipart"])
def test_a_key_the_bucket_refuses_is_a_counted_store_failure_with_the_servers_words(
    client: S3Client, size: int
) -> None:
    """HeadBucket passes: the refusal belongs to the granule, ``store: S3 <operation> s3://...: 403...``."""
    bucket = create_bucket(client, f"refusing-{size}")
    _denied_prefix(client, bucket, "deny/")
    world = World()
    request = world.add("deny-1", PRODUCT[:size])
    store = _s3_store(client, bucket)

    outcome = world.handle(request, files=store)

    assert isinstance(outcome, RetryLater)
    assert FailureKind.STORE is outcome.kind
    granule = world.store.granules["deny-1"]
    assert (State.RETRYING, 1) == (granule.state, granule.download_retries)
    assert granule.last_error is not None
    assert granule.last_error.startswith("store: S3 ")
    assert f"s3://{bucket}/deny/deny-1.zip: 403" in granule.last_error
    # The bucket is fine for everyone else.
    assert isinstance(world.handle(world.add("g2", PRODUCT[:size]), files=store), Done)


def test_a_bucket_deleted_under_the_worker_is_an_outage(client: S3Client) -> None:
    """``NoSuchBucket`` and HeadBucket failing: ``Unavailable``, nothing counted."""
    bucket = create_bucket(client, "deleted-later")
    store = _s3_store(client, bucket)
    client.delete_bucket(Bucket=bucket)
    world = World()
    world.add("g1", PRODUCT)

    with pytest.raises(FileStoreError):
        store.check_health()
    result = outcome_for(_message("g1"), world.context(files=store), _accept)

    assert isinstance(result, Unavailable)
    _unchanged(world, "g1")


def test_a_stopped_s3_server_is_an_outage() -> None:
    """A throwaway server of this test's own, stopped: unreachable, ``Unavailable``, nothing counted."""
    with ThrowawayS3(min_part_size=PART) as server:
        client = s3_client(server.endpoint_url)
        bucket = create_bucket(client, "stopped")
        endpoint = server.endpoint_url
    quick = boto3.session.Session(
        aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    ).client(
        "s3",
        endpoint_url=endpoint,
        config=Config(
            retries={"max_attempts": 1}, connect_timeout=1, proxies={}, s3={"addressing_style": "path"}
        ),
    )
    store = _s3_store(quick, bucket)
    world = World()
    world.add("g1", PRODUCT)

    with pytest.raises(StoreUnavailable):
        store.check_health()
    result = outcome_for(_message("g1"), world.context(files=store), _accept)

    assert isinstance(result, Unavailable)
    assert "StoreUnavailable" in result.reason
    _unchanged(world, "g1")


def test_a_part_the_server_refuses_is_counted_with_its_words_and_ends_in_failed() -> None:
    """Parts below the server's floor: ``EntityTooSmall`` at completion, counted each time, never a loop."""
    with ThrowawayS3(min_part_size=4 * PART) as server:
        client = s3_client(server.endpoint_url)
        bucket = create_bucket(client, "too-small")
        store = _s3_store(client, bucket)
        world = World()
        request = world.add("g1", PRODUCT + PRODUCT[:100])

        outcomes = [world.handle(request, files=store) for _ in range(world.max_retries + 1)]

    assert all(isinstance(outcome, RetryLater) for outcome in outcomes[:-1])
    assert isinstance(outcomes[-1], Failed)
    granule = world.store.granules["g1"]
    assert State.FAILED is granule.state
    assert granule.last_error is not None
    assert granule.last_error.startswith(
        f"store: S3 CompleteMultipartUpload s3://{bucket}/g1.zip: EntityTooSmall"
    )
