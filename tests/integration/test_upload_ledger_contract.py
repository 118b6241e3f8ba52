"""The UploadLedger contract on PostgreSQL (the row's ``store_upload``), the machine the fake passes."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import settings
from psycopg_pool import ConnectionPool

from s2_downloader.adapters.postgres import PostgresGranuleStore, PostgresUploadLedger
from s2_downloader.domain.granule import State
from s2_downloader.testing.postgres import SeedGranule, seed_granules
from tests.integration.fixtures_postgres import empty_tables, legacy_flag_mismatches
from tests.upload_ledger_contract import run_upload_ledger_contract

pytestmark = pytest.mark.integration


def test_the_postgres_ledger_honours_the_upload_ledger_contract(postgres_pool: ConnectionPool[Any]) -> None:
    """store_upload keeps, replaces and forgets records per granule; rows it does not hold get none."""
    run_upload_ledger_contract(
        make_ledger=lambda: PostgresUploadLedger(postgres_pool),
        add_granule=lambda granule_id: seed_granules(
            postgres_pool, [SeedGranule(id=granule_id, filename="product.zip")]
        ),
        reset=lambda: empty_tables(postgres_pool),
        # Each step is a round trip to PostgreSQL: shorter runs than the fake's.
        settings=settings(stateful_step_count=20),
    )


def test_a_record_changes_nothing_else_on_the_row(granule_store: PostgresGranuleStore) -> None:
    """Saving and clearing a record leave the granule's state and legacy flags as they were."""
    seed_granules(granule_store.pool, [SeedGranule(id="g1", filename="g1.zip")])
    ledger = PostgresUploadLedger(granule_store.pool)

    ledger.save("g1", {"upload_id": "u-1", "parts": [{"number": 1, "size": 5, "etag": '"ab"'}]})
    saved = granule_store.get("g1")
    ledger.clear("g1")

    assert saved is not None
    assert (State.PENDING, State.PENDING) == (saved.state, granule_store.get("g1").state)  # type: ignore[union-attr]
    assert [] == legacy_flag_mismatches(granule_store.pool)
