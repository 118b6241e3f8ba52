"""Parts in flight on real S3 servers: the record holds only the settled prefix, a refused part is
sent again within the attempt, and a part the server refuses for good is a counted store failure.

Faults are injected into the real requests with botocore's own event hooks (a delay before one
part is sent, a wrong ``Content-MD5`` or ``ETag`` in its parameters); the servers answer as they
do: SeaweedFS refuses a wrong ``Content-MD5`` with ``BadDigest`` (moto does not, so those tests
run on SeaweedFS only), both refuse a completion naming a wrong ``ETag`` with ``InvalidPart``.
Parts are 5 MiB, the floor SeaweedFS enforces.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import attrs
import pytest

from s2_downloader.adapters.store import md5state
from s2_downloader.adapters.store.s3 import S3Store
from s2_downloader.adapters.store.s3.in_flight import PART_ATTEMPTS
from s2_downloader.domain import Done, Failed, RetryLater, State
from s2_downloader.domain.errors import FailureKind
from s2_downloader.domain.ports import FileKey
from s2_downloader.testing.stack import S3Server, Services
from tests.unit.fakes import InMemoryUploadLedger, md5
from tests.unit.world import World

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

MIB = 1024 * 1024
PART = 5 * MIB


@attrs.define
class RecordingLedger(InMemoryUploadLedger):
    """The in-memory ledger, keeping every record saved (the part numbers of each) in order."""

    saved: list[list[int]] = attrs.field(factory=list)

    def save(self, granule_id: str, record: Mapping[str, Any]) -> None:
        self.saved.append([part["number"] for part in record["parts"]])
        super().save(granule_id, record)


def _client_and_bucket(services: Services, server: S3Server) -> tuple[S3Client, str]:
    client = services.s3_server(server).client_s3()
    bucket = f"s2dl-flight-{secrets.token_hex(4)}"
    client.create_bucket(Bucket=bucket)
    return client, bucket


def _key(key: FileKey) -> str:
    return f"{key.granule_id}.zip"


def _part_number(params: Mapping[str, Any]) -> int:
    return int(params.get("PartNumber", 0))


@pytest.mark.parametrize("server", ["seaweedfs", "moto"])
def test_the_record_holds_only_the_settled_prefix_while_a_part_lags(
    services: Services, server: S3Server
) -> None:
    """GIVEN part 2 slow to send and three parts in flight THEN part 3 is uploaded before part 2, but
    every record saved holds parts 1..k with no gap, and the product completes in order."""
    client, bucket = _client_and_bucket(services, server)
    finished: list[int] = []

    def part_two_lags(request: Any, **_: Any) -> None:
        if parse_qs(urlsplit(request.url).query).get("partNumber") == ["2"]:
            time.sleep(1.5)

    def remember_the_part(params: Mapping[str, Any], context: dict[str, Any], **_: Any) -> None:
        # ``params`` here is the serialized request: the part number is in its query string.
        context["part"] = int(params["query_string"]["partNumber"])

    def part_finished(context: Mapping[str, Any], **_: Any) -> None:
        finished.append(context["part"])

    client.meta.events.register("before-call.s3.UploadPart", remember_the_part)
    client.meta.events.register("before-send.s3.UploadPart", part_two_lags)
    client.meta.events.register("after-call.s3.UploadPart", part_finished)
    ledger = RecordingLedger()
    store = S3Store(client, bucket, ledger, _key, part_size=PART, parts_in_flight=3)
    product = os.urandom(5 * PART + 1234)
    key = FileKey(granule_id="lag", filename="lag.SAFE")

    with store.open_partial(key, checksum=md5(product)) as partial:
        for start in range(0, len(product), MIB):
            partial.write(product[start : start + MIB])
        store.promote(key)

    assert finished.index(3) < finished.index(2), finished
    saved = [numbers for numbers in ledger.saved if numbers]
    assert saved
    assert all(numbers == list(range(1, len(numbers) + 1)) for numbers in saved), saved
    assert product == client.get_object(Bucket=bucket, Key="lag.zip")["Body"].read()


def _wrong_md5_for_part_two(client: S3Client, times: int) -> list[int]:
    """Give part 2's first ``times`` sends the ``Content-MD5`` of other bytes; the sends it changed."""
    changed: list[int] = []

    def corrupt(params: dict[str, Any], **_: Any) -> None:
        if _part_number(params) == 2 and len(changed) < times:
            changed.append(2)
            params["ContentMD5"] = "XUFAKrxLKna5cZ2REBfFkg=="  # MD5 of "hello"

    client.meta.events.register("before-parameter-build.s3.UploadPart", corrupt)
    return changed


def test_a_part_refused_once_is_sent_again_within_the_attempt(services: Services) -> None:
    """GIVEN SeaweedFS answering BadDigest to part 2's first send THEN the part is sent again and the
    attempt verifies: one hub request, nothing counted."""
    client, bucket = _client_and_bucket(services, "seaweedfs")
    changed = _wrong_md5_for_part_two(client, times=1)
    world = World()
    request = world.add("once", os.urandom(3 * PART + 99))
    store = S3Store(client, bucket, InMemoryUploadLedger(), _key, part_size=PART, parts_in_flight=2)

    outcome = world.handle(request, files=store)

    assert Done(reason="verified") == outcome
    assert ([2], 1) == (changed, len(world.hub.requests))
    assert 0 == world.store.granules["once"].download_retries


def test_a_part_refused_every_time_is_counted_with_the_servers_words_and_ends_in_failed(
    services: Services,
) -> None:
    """GIVEN SeaweedFS answering BadDigest to every send of part 2 THEN each attempt tries the part
    PART_ATTEMPTS times and is a counted ``store`` failure naming BadDigest; the budget fails it."""
    client, bucket = _client_and_bucket(services, "seaweedfs")
    _wrong_md5_for_part_two(client, times=10**6)
    world = World()
    request = world.add("never", os.urandom(2 * PART + 99))
    store = S3Store(client, bucket, InMemoryUploadLedger(), _key, part_size=PART, parts_in_flight=2)

    outcomes = [world.handle(request, files=store) for _ in range(world.max_retries + 1)]

    assert all(
        isinstance(outcome, RetryLater) and outcome.kind is FailureKind.STORE for outcome in outcomes[:-1]
    )
    assert isinstance(outcomes[-1], Failed)
    granule = world.store.granules["never"]
    assert State.FAILED is granule.state
    assert granule.last_error is not None
    assert granule.last_error.startswith(f"store: S3 UploadPart s3://{bucket}/never.zip: BadDigest")
    assert f"(part 2, tried {PART_ATTEMPTS} times)" in granule.last_error


@pytest.mark.parametrize("server", ["seaweedfs", "moto"])
def test_a_completion_the_server_refuses_is_counted_with_its_words(
    services: Services, server: S3Server
) -> None:
    """GIVEN the completion naming a wrong ETag for part 1 THEN the server says InvalidPart: a counted
    ``store`` failure with its words, never a loop, and the next attempt (the fault gone) verifies."""
    client, bucket = _client_and_bucket(services, server)
    broken = [True]

    def wrong_etag(params: dict[str, Any], **_: Any) -> None:
        if broken[0]:
            params["MultipartUpload"]["Parts"][0]["ETag"] = '"' + "0" * 32 + '"'

    client.meta.events.register("before-parameter-build.s3.CompleteMultipartUpload", wrong_etag)
    world = World()
    request = world.add("invalid", os.urandom(2 * PART + 99))
    store = S3Store(client, bucket, InMemoryUploadLedger(), _key, part_size=PART)

    outcome = world.handle(request, files=store)

    assert isinstance(outcome, RetryLater)
    assert FailureKind.STORE is outcome.kind
    last_error = world.store.granules["invalid"].last_error
    assert last_error is not None
    assert last_error.startswith(f"store: S3 CompleteMultipartUpload s3://{bucket}/invalid.zip: InvalidPart")
    broken[0] = False
    world.clock.advance(3600)
    assert Done(reason="verified") == world.handle(request, files=store)


def test_each_part_is_hashed_as_it_fills_in_slices_that_straddle_the_parts(services: Services) -> None:
    """GIVEN writes of 777,777 bytes, which never line up with 5 MiB parts THEN the product's MD5 has
    taken in the bytes of the part being filled before the part is full, and SeaweedFS, which refuses
    a wrong ``Content-MD5``, takes every part: each part's MD5 covers exactly its own bytes."""
    client, bucket = _client_and_bucket(services, "seaweedfs")
    store = S3Store(client, bucket, InMemoryUploadLedger(), _key, part_size=PART, parts_in_flight=2)
    product = os.urandom(3 * PART + PART // 2)
    key = FileKey(granule_id="slices", filename="slices.SAFE")
    chunk = 777_777
    taken_before_the_first_part: int | None = None
    assert md5state.available()  # the product's MD5 is OpenSSL's, which counts the bits it has taken

    with store.open_partial(key, checksum=md5(product)) as partial:
        for start in range(0, len(product), chunk):
            partial.write(product[start : start + chunk])
            if taken_before_the_first_part is None and start + chunk > 3 * MIB:
                # The precondition: part 1 is still being filled, nothing handed over to upload.
                assert (partial.parts, partial._in_flight.count) == ([], 0)
                partial._in_flight.hashed()
                taken_before_the_first_part = partial._parts_md5.bit_count // 8  # type: ignore[union-attr]
        store.promote(key)

    assert taken_before_the_first_part is not None
    assert 2 * MIB <= taken_before_the_first_part < PART
    assert [part.number for part in partial.parts] == [1, 2, 3, 4]
    assert product == client.get_object(Bucket=bucket, Key="slices.zip")["Body"].read()


def test_a_failure_to_hash_fails_the_attempt_and_completes_nothing(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN OpenSSL's MD5 failing once the product's MD5 has taken in 7 MiB (on its own thread) THEN
    the attempt fails with a store error saying so, and no object is completed under the key."""
    from s2_downloader.domain.errors import FileStoreError

    assert md5state.available()
    real_update = md5state.ResumableMd5.update
    taken = [0]

    def failing_update(self: md5state.ResumableMd5, data: Any) -> None:
        taken[0] += len(data)
        if taken[0] > 7 * MIB:
            msg = "MD5_Update failed"
            raise RuntimeError(msg)
        real_update(self, data)

    monkeypatch.setattr(md5state.ResumableMd5, "update", failing_update)
    client, bucket = _client_and_bucket(services, "moto")
    store = S3Store(client, bucket, InMemoryUploadLedger(), _key, part_size=PART, parts_in_flight=2)
    product = os.urandom(4 * PART)
    key = FileKey(granule_id="broken-md5", filename="broken-md5.SAFE")

    def upload() -> None:
        with store.open_partial(key, checksum=md5(product)) as partial:
            for start in range(0, len(product), MIB):
                partial.write(product[start : start + MIB])
            store.promote(key)

    with pytest.raises(FileStoreError, match="hashing the product failed: MD5_Update failed"):
        upload()

    assert taken[0] > 7 * MIB
    assert "Contents" not in client.list_objects_v2(Bucket=bucket)
