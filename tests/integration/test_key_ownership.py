"""Who owns an S3 key (docs/interface.md section 4), on moto's server and PostgreSQL.

Two granules whose default key ``{stem}.zip`` is the same (ids A and B, both ``X.SAFE``):
one uploader at a time (the key lease in ``s3_key_lease``), ``granule-id`` and ``md5``
metadata on every upload, a verified owner's object never replaced (``key_conflict``), an
unverified owner's replaced, and a worker aborting only the uploads its granule recorded.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import pytest
from psycopg_pool import ConnectionPool

from s2_downloader.adapters.postgres import PostgresGranuleStore, PostgresKeyLeases, PostgresUploadLedger
from s2_downloader.adapters.store.s3 import S3Store
from s2_downloader.domain import Defer, Done, Failed, State, handle
from s2_downloader.domain.errors import FailureKind
from s2_downloader.domain.ports import FileKey
from s2_downloader.domain.request import DownloadRequest
from s2_downloader.testing.postgres import SeedGranule, seed_granules
from s2_downloader.testing.s3 import create_bucket
from tests.integration.fixtures_s3 import SMALL_PART
from tests.unit.world import HUB, World

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

PART = SMALL_PART
FILENAME = "X.SAFE"
KEY = "X.zip"
PRODUCT_A = bytes(range(256)) * 10  # multipart: three parts
PRODUCT_B = bytes(reversed(range(256))) * 2  # one PutObject


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


_buckets = iter(range(1000))


@pytest.fixture
def bucket(client: S3Client) -> str:
    """A new bucket."""
    return create_bucket(client, f"keys-{next(_buckets)}")


@pytest.fixture
def leases(granule_store: PostgresGranuleStore) -> PostgresKeyLeases:
    """The key leases, on empty tables; A and B are pending granules of ``X.SAFE``."""
    pool: ConnectionPool[Any] = granule_store.pool
    with pool.connection() as conn:
        conn.execute("TRUNCATE s3_key_lease")
    seed_granules(pool, [SeedGranule(id="A", filename=FILENAME), SeedGranule(id="B", filename=FILENAME)])
    return PostgresKeyLeases(pool)


def _stem_zip(key: FileKey) -> str:
    return key.filename.rsplit(".", 1)[0] + ".zip"


def _store(
    client: S3Client, bucket: str, granules: PostgresGranuleStore, leases: PostgresKeyLeases
) -> S3Store:
    return S3Store(
        client,
        bucket,
        PostgresUploadLedger(granules.pool),
        _stem_zip,
        part_size=PART,
        min_part_size=PART,
        key_leases=leases,
    )


def _request(granule_id: str) -> DownloadRequest:
    return DownloadRequest(
        id=granule_id, filename=FILENAME, download_url=f"{HUB}/dhus/odata/v1/Products('{granule_id}')/$value"
    )


def _world(store: S3Store, granules: PostgresGranuleStore) -> tuple[World, Any]:
    world = World()
    world.hub.add("A", PRODUCT_A)
    world.hub.add("B", PRODUCT_B)
    return world, world.context(files=store, granules=granules)


def _object(client: S3Client, bucket: str) -> tuple[bytes, dict[str, str]]:
    got = client.get_object(Bucket=bucket, Key=KEY)
    return got["Body"].read(), dict(got["Metadata"])


# -- the lease table ---------------------------------------------------------------------


def test_a_key_lease_is_one_granules_at_a_time_renewed_by_it_and_given_back(
    leases: PostgresKeyLeases,
) -> None:
    """Taken by A: A renews it, B is told A holds it; given back (by A only), B takes it."""
    assert leases.take(KEY, "A", 60) is None
    assert leases.take(KEY, "A", 60) is None
    assert "A" == leases.take(KEY, "B", 60)
    leases.give_back(KEY, "B")  # not B's: nothing changes
    assert "A" == leases.take(KEY, "B", 60)
    leases.give_back(KEY, "A")
    assert leases.take(KEY, "B", 60) is None


def test_a_lease_that_ran_out_goes_to_the_next_granule(leases: PostgresKeyLeases) -> None:
    """A worker that died holding the key keeps the other granule waiting only until its lease ends."""
    assert leases.take(KEY, "A", 0) is None
    assert leases.take(KEY, "B", 60) is None
    assert "B" == leases.take(KEY, "A", 60)


def test_verified_reads_the_granule_table(
    leases: PostgresKeyLeases, granule_store: PostgresGranuleStore
) -> None:
    """Pending is not verified; an unknown granule is not either; the legacy flag counts."""
    assert (False, False) == (leases.verified("A"), leases.verified("nobody"))
    with granule_store.pool.connection() as conn:
        conn.execute("UPDATE granule SET state = 'verified', downloaded = true WHERE id = 'A'")
    assert leases.verified("A")


# -- the use case on a shared key --------------------------------------------------------


def test_the_second_granule_of_a_key_fails_with_key_conflict_and_the_first_object_is_untouched(
    client: S3Client, bucket: str, granule_store: PostgresGranuleStore, leases: PostgresKeyLeases
) -> None:
    """A verifies at X.zip; B, another product under the same name, fails at once, uncounted."""
    store = _store(client, bucket, granule_store, leases)
    world, context = _world(store, granule_store)

    first = handle(_request("A"), context)
    assert isinstance(first, Done)
    assert (PRODUCT_A, {"md5": _md5(PRODUCT_A), "granule-id": "A"}) == _object(client, bucket)
    served = sum(world.hub.bytes_served.values())

    second = handle(_request("B"), context)

    assert isinstance(second, Failed)
    assert FailureKind.KEY_CONFLICT is second.kind
    b = granule_store.get("B")
    assert b is not None
    assert (State.FAILED, 0, f"key_conflict: {KEY} holds A") == (b.state, b.download_retries, b.last_error)
    assert (PRODUCT_A, {"md5": _md5(PRODUCT_A), "granule-id": "A"}) == _object(client, bucket)
    assert served == sum(world.hub.bytes_served.values()), "B's product was not downloaded"
    assert [] == client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def test_an_object_whose_owner_is_not_verified_is_replaced_by_a_verified_upload(
    client: S3Client, bucket: str, granule_store: PostgresGranuleStore, leases: PostgresKeyLeases
) -> None:
    """X.zip names A, but A is not verified: B's verified upload replaces it."""
    client.put_object(
        Bucket=bucket, Key=KEY, Body=b"left by A", Metadata={"granule-id": "A", "md5": "0" * 32}
    )
    store = _store(client, bucket, granule_store, leases)
    _, context = _world(store, granule_store)

    outcome = handle(_request("B"), context)

    assert isinstance(outcome, Done)
    assert (PRODUCT_B, {"md5": _md5(PRODUCT_B), "granule-id": "B"}) == _object(client, bucket)


def test_the_second_granule_is_deferred_uncounted_while_the_first_holds_the_key(
    client: S3Client, bucket: str, granule_store: PostgresGranuleStore, leases: PostgresKeyLeases
) -> None:
    """A holds X.zip's lease: B is deferred like a busy lease, not counted; once A lets go, B uploads."""
    store = _store(client, bucket, granule_store, leases)
    _, context = _world(store, granule_store)
    assert leases.take(KEY, "A", 60) is None

    deferred = handle(_request("B"), context)

    assert isinstance(deferred, Defer)
    assert FailureKind.PARTIAL_IN_USE is deferred.kind
    b = granule_store.get("B")
    assert b is not None
    assert 0 == b.download_retries
    assert "being uploaded by granule A" in (b.last_error or "")

    leases.give_back(KEY, "A")
    assert isinstance(handle(_request("B"), context), Done)
    assert leases.take(KEY, "A", 60) is None, "B gave the key back when its upload closed"


def test_a_worker_aborts_only_the_uploads_its_granule_recorded(
    client: S3Client, bucket: str, granule_store: PostgresGranuleStore, leases: PostgresKeyLeases
) -> None:
    """A's open upload of X.zip survives B's attempt and B's failure; B's own upload is aborted."""
    store = _store(client, bucket, granule_store, leases)
    with store.open_partial(FileKey(granule_id="A", filename=FILENAME), checksum=_md5(PRODUCT_A)) as partial:
        partial.write(PRODUCT_A[: 2 * PART])
    [a_upload] = client.list_multipart_uploads(Bucket=bucket)["Uploads"]
    b_key = FileKey(granule_id="B", filename=FILENAME)
    with store.open_partial(b_key, checksum=_md5(PRODUCT_A)) as partial:
        partial.write(PRODUCT_A[: 2 * PART])
    assert 2 == len(client.list_multipart_uploads(Bucket=bucket)["Uploads"])

    store.remove(b_key)

    assert [a_upload["UploadId"]] == [
        u["UploadId"] for u in client.list_multipart_uploads(Bucket=bucket)["Uploads"]
    ]
