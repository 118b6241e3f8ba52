"""The S3 store on moto's server: Content-MD5 on every request, resume, mismatch, foreign objects, errors."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import itertools
import os
import random
import tracemalloc
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber
from hypothesis import given, settings
from hypothesis import strategies as st

from s2_downloader.adapters.postgres import PostgresGranuleStore, PostgresUploadLedger
from s2_downloader.adapters.store import md5state
from s2_downloader.adapters.store.s3 import S3Store
from s2_downloader.domain import Done, RetryLater, State
from s2_downloader.domain.errors import FileStoreError, PartialInUse, StoreUnavailable
from s2_downloader.domain.ports import FileKey
from s2_downloader.testing.postgres import SeedGranule, seed_granules
from s2_downloader.testing.s3 import create_bucket, s3_client
from tests.integration.fixtures_s3 import SMALL_PART
from tests.unit.fakes import Crash, HubFault, InMemoryUploadLedger, md5
from tests.unit.world import World

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

PART = SMALL_PART
_buckets = itertools.count()


@pytest.fixture
def bucket(client: S3Client) -> str:
    """A new bucket."""
    return create_bucket(client, f"products-{next(_buckets)}")


@pytest.fixture
def ledger() -> InMemoryUploadLedger:
    """The upload records, in memory."""
    return InMemoryUploadLedger()


def _store(client: S3Client, bucket: str, ledger: Any, **kwargs: Any) -> S3Store:
    return S3Store(
        client,
        bucket,
        ledger,
        _stem_zip,
        part_size=kwargs.pop("part_size", PART),
        min_part_size=PART,
        **kwargs,
    )


def _stem_zip(key: FileKey) -> str:
    """HLS's key, ``{stem}.zip``."""
    return key.filename.rsplit(".", 1)[0] + ".zip"


def _object(client: S3Client, bucket: str, key: str) -> bytes | None:
    try:
        return client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except client.exceptions.NoSuchKey:
        return None


def _uploads(client: S3Client, bucket: str) -> list[str]:
    return [upload["Key"] for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def _body(request: Any) -> bytes:
    """The body of a request about to be sent, left readable for sending."""
    body = request.body
    if body is None or isinstance(body, bytes | bytearray):
        # A copy: a part's buffer is filled again once the part has settled.
        return bytes(body or b"")
    data: bytes = body.read()
    body.seek(0)
    return data


KEY = FileKey(granule_id="g1", filename="g1.SAFE")


# -- the resumable MD5 ------------------------------------------------------------------


@settings(max_examples=30)
@given(data=st.binary(max_size=5000), cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=4))
def test_the_resumable_md5_equals_hashlib_across_saves_and_restores(data: bytes, cuts: list[int]) -> None:
    """OpenSSL's MD5 context, saved and restored at any byte, gives hashlib's digest."""
    digest = md5state.ResumableMd5()
    start = 0
    for cut in sorted({*cuts, len(data)}):
        if cut > len(data):
            continue
        digest.update(data[start:cut])
        restored = md5state.ResumableMd5.restore(digest.state())
        assert restored is not None
        digest, start = restored, cut
    assert hashlib.md5(data, usedforsecurity=False).hexdigest() == digest.hexdigest()


def test_the_resumable_md5_agrees_with_hashlib_on_random_megabytes() -> None:
    """Eight random MiB, in uneven updates: the same digest as hashlib."""
    data = os.urandom(8 * 1024 * 1024)
    digest = md5state.ResumableMd5()
    for start in range(0, len(data), 999_983):
        digest.update(data[start : start + 999_983])
    assert hashlib.md5(data, usedforsecurity=False).hexdigest() == digest.hexdigest()


def test_a_state_of_another_format_is_not_restored() -> None:
    """A state with an unknown tag or length is refused, not misread."""
    state = md5state.ResumableMd5().state()
    assert (None, None) == (
        md5state.ResumableMd5.restore("other-v1:" + state.split(":", 1)[1]),
        md5state.ResumableMd5.restore(md5state.STATE_FORMAT + ":AAAA"),
    )


# -- Content-MD5 ------------------------------------------------------------------------


def test_every_part_and_every_put_carries_its_own_content_md5(
    client: S3Client, bucket: str, ledger: InMemoryUploadLedger
) -> None:
    """Recorded before sending: UploadPart and PutObject bodies each go with the base64 MD5 of that body."""
    sent: list[tuple[str, bytes, str | None]] = []

    def record(request: Any, **kwargs: Any) -> None:
        del kwargs
        data = _body(request)
        header = request.headers.get("Content-MD5")
        sent.append((request.method, data, header.decode() if isinstance(header, bytes) else header))

    client.meta.events.register("before-send.s3.UploadPart", record)
    client.meta.events.register("before-send.s3.PutObject", record)
    store = _store(client, bucket, ledger)
    big, small = os.urandom(3 * PART + 17), b"tiny product"
    for key, content in ((KEY, big), (FileKey(granule_id="g2", filename="g2.zip"), small)):
        with store.open_partial(key, checksum=md5(content)) as partial:
            partial.write(content)
            assert md5(content) == partial.hexdigest()
            store.promote(key)

    expected = [big[i : i + PART] for i in range(0, len(big), PART)] + [small]
    # Parts in flight go in any order: each body once, each with its own MD5.
    assert sorted(expected) == sorted(data for _, data, _ in sent)
    assert all(
        base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode() == header
        for _, data, header in sent
    )
    assert (big, small) == (_object(client, bucket, "g1.zip"), _object(client, bucket, "g2.zip"))
    assert md5(big) == client.head_object(Bucket=bucket, Key="g1.zip")["Metadata"]["md5"]


# -- the use case over S3 ---------------------------------------------------------------


def _world() -> World:
    world = World()
    world.hub.chunk_size = 300
    return world


def test_the_use_case_verifies_a_product_into_the_bucket(
    client: S3Client, bucket: str, ledger: InMemoryUploadLedger
) -> None:
    """Happy path: the object holds the hub's bytes, no upload is left open, the record is cleared."""
    store = _store(client, bucket, ledger)
    world = _world()
    product = os.urandom(4 * PART + 5)
    request = world.add("g1", product)

    outcome = world.handle(request, files=store)

    assert Done(reason="verified") == outcome
    assert (product, [], {}) == (_object(client, bucket, "g1.zip"), _uploads(client, bucket), ledger.records)


def test_a_killed_upload_resumes_from_a_part_boundary_with_the_same_upload(
    client: S3Client, bucket: str, ledger: InMemoryUploadLedger
) -> None:
    """kill -9 after 3 parts: the next attempt asks the hub from byte 3 x PART and completes the upload."""
    world = _world()
    product = os.urandom(5 * PART + 100)
    request = world.add("g1", product)

    def die_at_the_twelfth_chunk(granule_id: str, index: int) -> None:
        del granule_id
        if index == 11:  # 11 chunks of 300 bytes written: 3 parts sent, 228 bytes buffered
            world.hub.on_chunk = None
            raise Crash

    world.hub.on_chunk = die_at_the_twelfth_chunk

    with pytest.raises(Crash):
        world.handle(request, files=_store(client, bucket, ledger))
    upload_id = ledger.records["g1"]["upload_id"]
    world.clock.advance(world.lease_seconds + 1)
    outcome = world.handle(request, files=_store(client, bucket, ledger))

    assert Done(reason="verified") == outcome
    assert [0, 3 * PART] == [offset for _, offset, _ in world.hub.requests]
    assert product == _object(client, bucket, "g1.zip")
    assert [] == _uploads(client, bucket)
    assert upload_id not in str(ledger.records)


def test_a_checksum_mismatch_leaves_no_object_and_no_upload(
    client: S3Client, bucket: str, ledger: InMemoryUploadLedger
) -> None:
    """Corrupt bytes from the hub: the multipart upload is aborted and nothing appears under the key."""
    world = _world()
    request = world.add("g1", os.urandom(3 * PART))
    world.hub.download_faults["g1"] = [HubFault(corrupt=True)]

    outcome = world.handle(request, files=_store(client, bucket, ledger))

    assert isinstance(outcome, RetryLater)
    assert (None, [], {}) == (_object(client, bucket, "g1.zip"), _uploads(client, bucket), ledger.records)


def test_an_object_showing_the_expected_md5_is_verified_without_hub_traffic(
    client: S3Client, bucket: str, ledger: InMemoryUploadLedger
) -> None:
    """A single-part object whose ETag is the checksum (HLS today's PutObject) verifies the granule."""
    world = _world()
    product = os.urandom(2 * PART)
    request = world.add("g1", product)
    client.put_object(Bucket=bucket, Key="g1.zip", Body=product)

    outcome = world.handle(request, files=_store(client, bucket, ledger))

    assert (Done(reason="verified"), []) == (outcome, world.hub.requests)
    assert State.VERIFIED == world.store.granules["g1"].state


def test_a_multipart_object_is_known_by_its_md5_metadata_only(
    client: S3Client, bucket: str, ledger: InMemoryUploadLedger
) -> None:
    """A multipart ETag is not an MD5: without ``md5`` metadata the digest is unknown; with it, it is that."""
    store = _store(client, bucket, ledger)
    for name, metadata in (("plain", {}), ("stated", {"md5": "0123456789abcdef0123456789abcdef"})):
        upload = client.create_multipart_upload(Bucket=bucket, Key=f"{name}.zip", Metadata=metadata)
        etag = client.upload_part(
            Bucket=bucket, Key=f"{name}.zip", UploadId=upload["UploadId"], PartNumber=1, Body=b"x"
        )["ETag"]
        client.complete_multipart_upload(
            Bucket=bucket,
            Key=f"{name}.zip",
            UploadId=upload["UploadId"],
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]},
        )

    digests = [store.final_digest(FileKey(granule_id=n, filename=f"{n}.zip")) for n in ("plain", "stated")]

    assert [None, "0123456789abcdef0123456789abcdef"] == digests


def test_another_object_at_the_key_stays_until_a_verified_upload_replaces_it(
    client: S3Client, bucket: str, ledger: InMemoryUploadLedger
) -> None:
    """A stale object survives a failed attempt and is replaced by the verified product."""
    world = _world()
    product = os.urandom(2 * PART + 1)
    request = world.add("g1", product)
    client.put_object(Bucket=bucket, Key="g1.zip", Body=b"an older product")
    world.hub.download_faults["g1"] = [HubFault(corrupt=True)]

    first = world.handle(request, files=_store(client, bucket, ledger))
    kept = _object(client, bucket, "g1.zip")
    world.clock.advance(3600)
    second = world.handle(request, files=_store(client, bucket, ledger))

    assert (b"an older product", Done(reason="verified")) == (kept, second)
    assert isinstance(first, RetryLater)
    assert product == _object(client, bucket, "g1.zip")


def test_a_granule_that_fails_for_good_has_its_upload_aborted(
    client: S3Client, bucket: str, ledger: InMemoryUploadLedger
) -> None:
    """remove aborts the granule's multipart upload and keeps the object at the key."""
    store = _store(client, bucket, ledger)
    client.put_object(Bucket=bucket, Key="g1.zip", Body=b"someone else's")
    product = os.urandom(3 * PART)
    with store.open_partial(KEY, checksum=md5(product)) as partial:
        partial.write(product[: 2 * PART])

    _store(client, bucket, ledger).remove(KEY)

    assert ([], {}, b"someone else's") == (
        _uploads(client, bucket),
        ledger.records,
        _object(client, bucket, "g1.zip"),
    )


# -- resume details -----------------------------------------------------------------------


def test_an_upload_gone_from_s3_restarts_from_byte_zero(
    client: S3Client, bucket: str, ledger: InMemoryUploadLedger
) -> None:
    """NoSuchUpload on ListParts (aborted by a lifecycle rule): the partial opens empty, with a new upload."""
    store = _store(client, bucket, ledger)
    product = os.urandom(3 * PART)
    with store.open_partial(KEY, checksum=md5(product)) as partial:
        partial.write(product[: 2 * PART])
    client.abort_multipart_upload(Bucket=bucket, Key="g1.zip", UploadId=ledger.records["g1"]["upload_id"])

    with store.open_partial(KEY, checksum=md5(product)) as partial:
        held = partial.size
        partial.write(product)
        store.promote(KEY)

    assert (0, product) == (held, _object(client, bucket, "g1.zip"))


def test_parts_that_disagree_with_the_record_are_re_read_but_not_re_sent_when_equal(
    client: S3Client, bucket: str, ledger: InMemoryUploadLedger
) -> None:
    """A record whose ETag no longer matches: from byte 0, but parts S3 holds with the same bytes are kept."""
    store = _store(client, bucket, ledger)
    product = os.urandom(3 * PART + 10)
    with store.open_partial(KEY, checksum=md5(product)) as partial:
        partial.write(product[: 3 * PART])
    ledger.records["g1"]["parts"][1]["etag"] = '"00000000000000000000000000000000"'
    sent: list[int] = []
    client.meta.events.register(
        "before-send.s3.UploadPart", lambda request, **_: sent.append(len(_body(request)))
    )

    with store.open_partial(KEY, checksum=md5(product)) as partial:
        held = partial.size
        partial.write(product)
        store.promote(KEY)

    assert (0, [10]) == (held, sent)
    assert product == _object(client, bucket, "g1.zip")


def test_a_record_for_another_checksum_is_aborted_and_started_again(
    client: S3Client, bucket: str, ledger: InMemoryUploadLedger
) -> None:
    """The hub's checksum changed: the old upload (old md5 metadata) is aborted, the new starts at 0."""
    store = _store(client, bucket, ledger)
    with store.open_partial(KEY, checksum=md5(b"old")) as partial:
        partial.write(os.urandom(2 * PART))
    product = os.urandom(PART + 1)

    with store.open_partial(KEY, checksum=md5(product)) as partial:
        held = partial.size
        partial.write(product)
        store.promote(KEY)

    assert (0, [], md5(product)) == (
        held,
        _uploads(client, bucket),
        client.head_object(Bucket=bucket, Key="g1.zip")["Metadata"]["md5"],
    )


def test_the_upload_record_lives_on_the_granule_row(
    client: S3Client, bucket: str, granule_store: PostgresGranuleStore
) -> None:
    """With the PostgreSQL ledger, a new process resumes from the parts recorded in store_upload."""
    seed_granules(granule_store.pool, [SeedGranule(id="g1", filename="g1.SAFE")])
    ledger = PostgresUploadLedger(granule_store.pool)
    product = os.urandom(3 * PART + 3)
    with _store(client, bucket, ledger).open_partial(KEY, checksum=md5(product)) as partial:
        partial.write(product[: 2 * PART + 50])
    record = ledger.load("g1")

    store = _store(client, bucket, PostgresUploadLedger(granule_store.pool))
    with store.open_partial(KEY, checksum=md5(product)) as partial:
        held = partial.size
        partial.write(product[held:])
        store.promote(KEY)

    assert record is not None
    assert ([1, 2], 2 * PART) == ([p["number"] for p in record["parts"]], held)
    assert (product, None) == (_object(client, bucket, "g1.zip"), ledger.load("g1"))


# -- sizes, keys, housekeeping, errors ----------------------------------------------------


def test_parts_grow_so_a_large_product_fits_in_ten_thousand(
    client: S3Client, bucket: str, ledger: InMemoryUploadLedger
) -> None:
    """A 200 GiB product gets parts of 21 MiB (16 MiB would need 12,800); a small one keeps the default."""
    store = _store(client, bucket, ledger, part_size=16 * 1024 * 1024)
    sizes = []
    for total in (200 * 1024**3, 1024**3, None):
        with store.open_partial(KEY, checksum=md5(b"")) as partial:
            partial.expect_size(total)
            sizes.append(partial.part_size)

    assert [21 * 1024 * 1024, 16 * 1024 * 1024, 16 * 1024 * 1024] == sizes


def test_open_uploads_older_than_a_day_are_listed(
    client: S3Client, bucket: str, ledger: InMemoryUploadLedger
) -> None:
    """status's question: uploads started before the cut-off, none after."""
    store = _store(client, bucket, ledger)
    upload = client.create_multipart_upload(Bucket=bucket, Key="left.zip")["UploadId"]
    # moto dates every upload alike, so the clock is set from what it reports.
    now = client.list_multipart_uploads(Bucket=bucket)["Uploads"][0]["Initiated"] + dt.timedelta(hours=1)

    later = store.leftovers(86400, now=now + dt.timedelta(days=2))
    now_list = store.leftovers(86400, now=now)

    assert "open multipart uploads" == later.kind
    assert ([("left.zip", upload)], ()) == ([(u.where, u.upload_id) for u in later.items], now_list.items)


def test_uploads_that_cannot_be_listed_say_so(ledger: InMemoryUploadLedger) -> None:
    """A bucket that does not answer: FileStoreError saying the multipart uploads could not be listed."""
    client = s3_client("http://127.0.0.1:9")
    with Stubber(client) as stub:
        stub.add_client_error(
            "list_multipart_uploads", service_error_code="AccessDenied", http_status_code=403
        )
        with pytest.raises(FileStoreError, match=r"^cannot list multipart uploads: S3 ListMultipartUploads"):
            _store(client, "products", ledger).leftovers(86400)


def test_the_s3_store_sweeps_nothing(client: S3Client, bucket: str, ledger: InMemoryUploadLedger) -> None:
    """Its leftovers are aborted per granule and by the bucket's lifecycle rule: a sweep leaves uploads be."""
    store = _store(client, bucket, ledger)
    product = os.urandom(2 * PART)
    with store.open_partial(KEY, checksum=md5(product)) as partial:
        partial.write(product[: PART + 1])

    assert (0, 0) == (store.sweep_leftovers(), store.sweep_some_leftovers())
    assert ["g1.zip"] == _uploads(client, bucket)


def test_throttling_becomes_store_unavailable(ledger: InMemoryUploadLedger) -> None:
    """SlowDown (503) from S3 leaves as StoreUnavailable, which is never counted against the granule."""
    client = s3_client("http://127.0.0.1:9")
    store = _store(client, "products", ledger)
    with Stubber(client) as stub:
        stub.add_client_error("head_object", service_error_code="SlowDown", http_status_code=503)
        with pytest.raises(StoreUnavailable, match="SlowDown"):
            store.final_digest(KEY)


def test_an_unreachable_endpoint_becomes_store_unavailable(ledger: InMemoryUploadLedger) -> None:
    """No server: StoreUnavailable naming the bucket and key, no botocore exception."""
    client = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    ).client(
        "s3",
        endpoint_url="http://127.0.0.1:9",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1, proxies={}),
    )
    store = _store(client, "nowhere", ledger)
    with pytest.raises(StoreUnavailable, match=r"s3://nowhere/g1\.zip"):
        store.final_digest(KEY)


def test_a_missing_bucket_fails_the_check_with_a_file_store_error(
    client: S3Client, ledger: InMemoryUploadLedger
) -> None:
    """check_health on a bucket that does not exist: FileStoreError (not StoreUnavailable)."""
    store = _store(client, "no-such-bucket", ledger)
    with pytest.raises(FileStoreError) as caught:
        store.check_health()
    assert not isinstance(caught.value, StoreUnavailable)


def _stream(seed: int, size: int, chunk: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    for start in range(0, size, chunk):
        yield rng.randbytes(min(chunk, size - start))


def _peak_while_uploading(client: S3Client, bucket: str, size: int, part: int, in_flight: int) -> int:
    checksum = hashlib.md5(usedforsecurity=False)
    for piece in _stream(size, size, 64 * 1024):
        checksum.update(piece)
    store = S3Store(
        client,
        bucket,
        InMemoryUploadLedger(),
        lambda key: key.granule_id,
        part_size=part,
        parts_in_flight=in_flight,
        min_part_size=PART,
    )
    key = FileKey(granule_id=f"flat-{size}-{in_flight}", filename="p.zip")
    tracemalloc.start()
    try:
        with store.open_partial(key, checksum=checksum.hexdigest()) as partial:
            for piece in _stream(size, size, 64 * 1024):
                partial.write(piece)
            store.promote(key)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("in_flight", [1, 2, 4])
def test_memory_stays_flat_whatever_the_product_size(client: S3Client, bucket: str, in_flight: int) -> None:
    """Peak Python memory for a 16 MiB product is that of a 2 MiB one, never the product: our own
    buffers (the parts in flight and the one being filled; see the next test) and what the HTTP stack
    holds of the bodies it is sending."""
    part = 256 * 1024
    small = _peak_while_uploading(client, bucket, 2 * 1024 * 1024, part, in_flight)
    large = _peak_while_uploading(client, bucket, 16 * 1024 * 1024, part, in_flight)

    assert large < small + part, (small, large)
    # The parts in flight and the one being filled, plus what the test and the HTTP stack hold.
    assert large < (in_flight + 4) * part, (small, large)


@pytest.mark.parametrize("in_flight", [1, 3])
def test_the_downloading_thread_holds_at_most_the_parts_in_flight_and_one_more(
    client: S3Client, bucket: str, in_flight: int
) -> None:
    """After every write: no more than ``in_flight`` parts on their way and less than a part being
    filled, in at most ``in_flight`` + 1 part buffers; the product completes with every part in order."""
    part, chunk = 5 * PART, 700
    product = os.urandom(40 * part + 123)
    store = S3Store(
        client,
        bucket,
        InMemoryUploadLedger(),
        _stem_zip,
        part_size=part,
        parts_in_flight=in_flight,
        min_part_size=PART,
    )
    key = FileKey(granule_id="g1", filename="g1.SAFE")
    most = 0
    buffers: dict[int, bytearray] = {}
    with store.open_partial(key, checksum=md5(product)) as partial:
        for start in range(0, len(product), chunk):
            partial.write(product[start : start + chunk])
            most = max(most, partial._in_flight.count)
            assert partial._filled < part
            if partial._part is not None:
                buffers[id(partial._part)] = partial._part  # kept alive: ids stay unique
        store.promote(key)
        numbers = [each.number for each in partial.parts]

    assert 1 <= most <= in_flight
    # 41 parts through at most in_flight + 1 part buffers, filled again and again.
    assert len(buffers) <= in_flight + 1, len(buffers)
    assert list(range(1, 42)) == numbers
    assert product == _object(client, bucket, "g1.zip")


def test_without_libcrypto_the_prefix_is_re_read_but_its_parts_are_not_re_sent(
    client: S3Client, bucket: str, ledger: InMemoryUploadLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fallback: no MD5 state to restore, so the hub's bytes come again from 0; S3 gets only the rest."""
    monkeypatch.setattr(md5state, "_lib", None)
    monkeypatch.setattr(md5state, "_tried", True)
    store = _store(client, bucket, ledger)
    product = os.urandom(3 * PART + 10)
    with store.open_partial(KEY, checksum=md5(product)) as partial:
        partial.write(product[: 2 * PART + 7])
    sent: list[int] = []
    client.meta.events.register(
        "before-send.s3.UploadPart", lambda request, **_: sent.append(len(_body(request)))
    )

    with store.open_partial(KEY, checksum=md5(product)) as partial:
        held = partial.size
        partial.write(product)
        store.promote(KEY)

    assert (None, 0, [10, PART]) == (ledger.records.get("g1"), held, sorted(sent))
    assert product == _object(client, bucket, "g1.zip")


def test_a_second_open_of_the_same_granule_in_one_process_is_refused(
    client: S3Client, bucket: str, ledger: InMemoryUploadLedger
) -> None:
    """One writer per granule: a second open while the first is open raises PartialInUse."""
    store = _store(client, bucket, ledger)
    with store.open_partial(KEY, checksum=md5(b"")), pytest.raises(PartialInUse):
        store.open_partial(KEY, checksum=md5(b"")).__enter__()


# -- records and states that are not trusted ----------------------------------------------


def _interrupted(client: S3Client, bucket: str, ledger: InMemoryUploadLedger, product: bytes) -> str:
    """Three parts of ``product`` sent and recorded, then the attempt ends; the upload's id."""
    with _store(client, bucket, ledger).open_partial(KEY, checksum=md5(product)) as partial:
        partial.write(product[: 3 * PART + 7])
    upload_id: str = ledger.records["g1"]["upload_id"]
    return upload_id


def _sizes(record: dict[str, Any], size: int) -> None:
    record["part_size"] = size
    for part in record["parts"]:
        part["size"] = size


def _numbers(record: dict[str, Any], numbers: list[int]) -> None:
    for part, number in zip(record["parts"], numbers, strict=True):
        part["number"] = number


_CORRUPT = {
    "part size 10^15": lambda record: _sizes(record, 10**15),
    "part size 10^15, parts not": lambda record: record.update(part_size=10**15),
    "part size over 5 GiB": lambda record: _sizes(record, 5 * 1024**3 + 1),
    "part size over what the store uses": lambda record: _sizes(record, 600 * 1024**2),
    "part size under S3's floor": lambda record: _sizes(record, PART - 1),
    "part size negative": lambda record: _sizes(record, -PART),
    "parts out of order": lambda record: _numbers(record, [2, 1, 3]),
    "parts duplicated": lambda record: _numbers(record, [1, 1, 2]),
    "parts from 0": lambda record: _numbers(record, [0, 1, 2]),
    "sizes not adding up": lambda record: record["parts"][1].update(size=PART + 1),
    "a short part recorded": lambda record: record["parts"][2].update(size=PART - 1),
    "an ETag not an MD5": lambda record: record["parts"][0].update(etag="not-an-etag"),
    "a size not a number": lambda record: record["parts"][0].update(size="lots"),
    "parts not a list": lambda record: record.update(parts=7),
    "no upload id": lambda record: record.update(upload_id=""),
    "an upload id S3 does not know": lambda record: record.update(upload_id="no-such-upload-id"),
}


@pytest.mark.parametrize("corrupt", list(_CORRUPT.values()), ids=list(_CORRUPT))
def test_a_corrupt_record_is_discarded_and_the_product_restarts_from_zero(
    client: S3Client, bucket: str, ledger: InMemoryUploadLedger, corrupt: Any
) -> None:
    """Never trusted, never a crash: the record is forgotten, a new upload starts at byte 0."""
    product = os.urandom(4 * PART + 10)
    _interrupted(client, bucket, ledger, product)
    corrupt(ledger.records["g1"])
    store = _store(client, bucket, ledger)

    with store.open_partial(KEY, checksum=md5(product)) as partial:
        held, fresh = partial.size, partial.upload_id
        partial.write(product)
        store.promote(KEY)

    assert (0, None) == (held, fresh)
    assert (product, {}) == (_object(client, bucket, "g1.zip"), ledger.records)


def test_a_record_naming_another_granules_upload_is_discarded_and_that_upload_left_alone(
    client: S3Client, bucket: str, ledger: InMemoryUploadLedger
) -> None:
    """An upload id S3 knows holding none of the recorded parts: not ours, neither used nor aborted."""
    product = os.urandom(4 * PART + 10)
    _interrupted(client, bucket, ledger, product)
    other = client.create_multipart_upload(Bucket=bucket, Key="g1.zip")["UploadId"]
    client.upload_part(Bucket=bucket, Key="g1.zip", UploadId=other, PartNumber=1, Body=os.urandom(PART))
    ledger.records["g1"]["upload_id"] = other
    store = _store(client, bucket, ledger)

    with store.open_partial(KEY, checksum=md5(product)) as partial:
        held, fresh = partial.size, partial.upload_id
        partial.write(product)
        store.promote(KEY)

    assert (0, None) == (held, fresh)
    assert product == _object(client, bucket, "g1.zip")
    listed = client.list_parts(Bucket=bucket, Key="g1.zip", UploadId=other)["Parts"]
    assert [1] == [part["PartNumber"] for part in listed]


def test_a_state_whose_bit_count_is_not_the_kept_parts_is_not_used(
    client: S3Client, bucket: str, ledger: InMemoryUploadLedger
) -> None:
    """A state that hashed two parts for a record of three: from byte 0, the parts S3 holds reused."""
    product = os.urandom(3 * PART + 10)
    _interrupted(client, bucket, ledger, product)
    short = md5state.ResumableMd5()
    short.update(product[: 2 * PART])
    ledger.records["g1"]["md5_state"] = short.state()
    sent: list[int] = []
    client.meta.events.register(
        "before-send.s3.UploadPart", lambda request, **_: sent.append(len(_body(request)))
    )
    store = _store(client, bucket, ledger)

    with store.open_partial(KEY, checksum=md5(product)) as partial:
        held = partial.size
        partial.write(product)
        store.promote(KEY)

    assert (0, [10]) == (held, sent)
    assert product == _object(client, bucket, "g1.zip")


def test_the_bit_count_is_read_from_the_restored_context() -> None:
    """``bit_count`` is MD5_CTX's Nh:Nl, 8 x the bytes hashed, across a save and restore."""
    digest = md5state.ResumableMd5()
    digest.update(os.urandom(3 * PART + 5))
    restored = md5state.ResumableMd5.restore(digest.state())
    assert restored is not None
    assert 8 * (3 * PART + 5) == restored.bit_count


def test_a_resumed_upload_whose_md5_mismatches_is_redone_once_from_zero(
    client: S3Client, bucket: str, ledger: InMemoryUploadLedger
) -> None:
    """A state of the right length but other bytes: the mismatch is not counted, the product redone from 0."""
    world = _world()
    product = os.urandom(5 * PART + 100)
    request = world.add("g1", product)
    _interrupted(client, bucket, ledger, product)
    wrong = md5state.ResumableMd5()
    wrong.update(os.urandom(3 * PART))
    ledger.records["g1"]["md5_state"] = wrong.state()

    outcome = world.handle(request, files=_store(client, bucket, ledger))

    assert Done(reason="verified") == outcome
    assert [3 * PART, 0] == [offset for _, offset, _ in world.hub.requests]
    assert (0, product) == (world.store.granules["g1"].download_retries, _object(client, bucket, "g1.zip"))
    assert ([], {}) == (_uploads(client, bucket), ledger.records)


def test_the_short_last_part_is_not_recorded_so_a_failed_completion_resumes(
    client: S3Client, bucket: str, ledger: InMemoryUploadLedger
) -> None:
    """Killed as it completes, after the short last part went up: the record holds full parts only."""
    product = os.urandom(3 * PART + 10)
    store = _store(client, bucket, ledger)

    def die(**_: object) -> None:
        raise Crash

    client.meta.events.register("before-send.s3.CompleteMultipartUpload", die)
    with store.open_partial(KEY, checksum=md5(product)) as partial:
        partial.write(product)
        with pytest.raises(Crash):
            store.promote(KEY)
    client.meta.events.unregister("before-send.s3.CompleteMultipartUpload", die)
    recorded = [part["size"] for part in ledger.records["g1"]["parts"]]
    sent: list[int] = []
    client.meta.events.register(
        "before-send.s3.UploadPart", lambda request, **_: sent.append(len(_body(request)))
    )

    with store.open_partial(KEY, checksum=md5(product)) as partial:
        held = partial.size
        partial.write(product[held:])
        store.promote(KEY)

    assert ([PART] * 3, 3 * PART, []) == (recorded, held, sent)
    assert product == _object(client, bucket, "g1.zip")
