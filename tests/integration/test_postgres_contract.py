"""The GranuleStore contract on PostgreSQL: the same state machine the in-memory fake passes."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import settings
from psycopg_pool import ConnectionPool

from s2_downloader.adapters.postgres import PostgresGranuleStore
from s2_downloader.testing.postgres import SeedGranule, seed_granules, set_test_clock
from tests.granule_store_contract import run_granule_store_contract
from tests.integration.fixtures_postgres import empty_tables, legacy_flag_mismatches

pytestmark = pytest.mark.integration


def test_postgres_store_honours_the_granule_store_contract(
    postgres_pool: ConnectionPool[Any], clocked_pool: ConnectionPool[Any], db_clock: object
) -> None:
    """PostgreSQL moves granules as lifecycle.apply says, on its own clock, legacy flags always in step."""
    del db_clock  # puts the database clock back afterwards

    def add(_: PostgresGranuleStore, granule_id: str, filename: str) -> None:
        seed_granules(postgres_pool, [SeedGranule(id=granule_id, filename=filename)])

    def flags_follow_state() -> None:
        assert [] == legacy_flag_mismatches(postgres_pool)

    # The store uses the database's now() (here the settable test clock) and must ignore
    # the skewed `now` values the contract passes in.
    run_granule_store_contract(
        make_store=lambda: PostgresGranuleStore(clocked_pool),
        add_granule=add,
        reset=lambda: empty_tables(postgres_pool),
        check_store=flags_follow_state,
        set_store_clock=lambda moment: set_test_clock(postgres_pool, moment),
        # Examples as the active profile says (s2-dev: 60, s2-ci: 300), shorter runs than the
        # fake's: each step is a round trip to PostgreSQL.
        settings=settings(stateful_step_count=25),
    )
