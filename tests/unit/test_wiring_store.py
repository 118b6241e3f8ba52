"""The composition root picks the store (and the S3 store's ledger) once; entry points only see the ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg_pool import ConnectionPool

from s2_downloader.adapters.postgres import PostgresUploadLedger
from s2_downloader.adapters.store.efs import EfsFileStore
from s2_downloader.adapters.store.s3 import S3Store
from s2_downloader.entrypoints.config import Settings
from s2_downloader.entrypoints.wiring import store_for_status


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
