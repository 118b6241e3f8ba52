"""The composition root picks the store (and the S3 store's ledger) once; entry points only see the ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from psycopg_pool import ConnectionPool

from s2_downloader.adapters.postgres import PostgresKeyLeases, PostgresUploadLedger
from s2_downloader.adapters.store.efs import EfsFileStore
from s2_downloader.adapters.store.s3 import S3Store
from s2_downloader.domain.errors import StoreUnavailable
from s2_downloader.entrypoints import lambda_handler
from s2_downloader.entrypoints.config import ConfigError, Settings
from s2_downloader.entrypoints.wiring import build_store, store_for_status


@pytest.fixture
def pool() -> Iterator[ConnectionPool[Any]]:
    """A pool that is never opened: building a store connects to nothing."""
    unopened: ConnectionPool[Any] = ConnectionPool("dbname=never", open=False)
    yield unopened
    unopened.close()


def test_status_gets_no_store_when_none_is_chosen(pool: ConnectionPool[Any]) -> None:
    """Without STORE, or without the chosen store's place, status reports the database alone."""
    unchosen = Settings.from_env({})
    placeless = Settings.from_env({"STORE": "s3"})

    assert (None, None) == (store_for_status(unchosen, pool), store_for_status(placeless, pool))


def test_status_gets_the_efs_store_which_lists_nothing(pool: ConnectionPool[Any], tmp_path: Path) -> None:
    """STORE=efs: the mount's store, whose partials are the workers' to sweep, not status's to list."""
    store = store_for_status(Settings.from_env({"STORE": "efs", "EFS_MOUNT_DIR": str(tmp_path)}), pool)

    assert isinstance(store, EfsFileStore)
    assert store.leftovers(0) is None


def test_the_s3_store_keeps_its_records_in_the_postgres_ledger(pool: ConnectionPool[Any]) -> None:
    """STORE=s3: the bucket's store, its upload ledger the granule row's, on the pool it was given."""
    store = store_for_status(Settings.from_env({"STORE": "s3", "UPLOAD_BUCKET": "products"}), pool)

    assert isinstance(store, S3Store)
    assert isinstance(store.ledger, PostgresUploadLedger)
    assert ("products", pool) == (store.bucket, store.ledger.pool)


def test_the_s3_store_decides_who_owns_a_key_in_postgres(pool: ConnectionPool[Any]) -> None:
    """STORE=s3: the key leases (docs/interface.md section 4) are PostgreSQL's, on the same pool."""
    store = store_for_status(Settings.from_env({"STORE": "s3", "UPLOAD_BUCKET": "products"}), pool)

    assert isinstance(store, S3Store)
    assert isinstance(store.key_leases, PostgresKeyLeases)
    assert pool is store.key_leases.pool


def _stubbed_head_bucket(status: int, code: str) -> Any:
    client = boto3.session.Session(
        aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1"
    ).client("s3")
    stubber = Stubber(client)
    stubber.add_client_error("head_bucket", service_error_code=code, http_status_code=status)
    stubber.activate()
    return client


@pytest.mark.parametrize(("status", "code"), [(404, "NoSuchBucket"), (403, "AccessDenied")])
def test_a_bucket_that_is_missing_or_refuses_us_stops_the_worker_naming_upload_bucket(
    pool: ConnectionPool[Any], status: int, code: str
) -> None:
    """The health check at start: a setting to fix, ConfigError naming UPLOAD_BUCKET (exit 2)."""
    settings = Settings.from_env({"STORE": "s3", "UPLOAD_BUCKET": "products"})

    with pytest.raises(ConfigError) as caught:
        build_store(settings, pool, s3=_stubbed_head_bucket(status, code))

    assert "UPLOAD_BUCKET" == caught.value.variable


def test_an_s3_that_cannot_be_reached_at_start_is_an_outage_not_a_setting(pool: ConnectionPool[Any]) -> None:
    """HeadBucket answered 503: StoreUnavailable, distinct from ConfigError, for the entry point to report."""
    settings = Settings.from_env({"STORE": "s3", "UPLOAD_BUCKET": "products"})

    with pytest.raises(StoreUnavailable):
        build_store(settings, pool, s3=_stubbed_head_bucket(503, "ServiceUnavailable"))


@pytest.mark.parametrize(
    ("env", "lambda_", "expected"),
    [
        ({}, False, 2),
        ({}, True, 4),
        ({"S3_PARTS_IN_FLIGHT": "6"}, False, 6),
        ({"S3_PARTS_IN_FLIGHT": "1"}, True, 1),
    ],
    ids=["runner default", "Lambda default", "runner set", "Lambda set"],
)
def test_parts_in_flight_default_per_entry_point_unless_set(
    pool: ConnectionPool[Any],
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    lambda_: bool,
    expected: int,
) -> None:
    """The runner sends 2 parts of each download at once, the Lambda 4 (one download per environment)."""
    for key, value in {
        "STORE": "s3",
        "UPLOAD_BUCKET": "products",
        "TO_DOWNLOAD_SQS_QUEUE_URL": "http://127.0.0.1:1/q/d",
        **env,
    }.items():
        monkeypatch.setenv(key, value)
    if not env:
        monkeypatch.delenv("S3_PARTS_IN_FLIGHT", raising=False)
    settings = lambda_handler._settings({"Records": []}) if lambda_ else Settings.from_env()
    store = store_for_status(settings, pool)

    assert isinstance(store, S3Store)
    assert expected == store.parts_in_flight
