"""pytest fixtures for the postgres part of the throwaway stack.

One throwaway server per test run; a migrated database shared by the run behind
``postgres_url`` / ``postgres_pool``; a fresh empty database per test where a test needs
to own one (migrations). Tests that stop or kill a server start their own
``ThrowawayPostgres`` so the shared one stays up.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from psycopg_pool import ConnectionPool

from s2_downloader.adapters.postgres import PostgresGranuleStore, migrate, open_pool
from s2_downloader.testing.postgres import (
    TEST_CLOCK_OPTIONS,
    ThrowawayPostgres,
    install_test_clock,
    set_test_clock,
)

__all__ = [
    "clocked_pool",
    "db_clock",
    "empty_database_url",
    "empty_tables",
    "granule_store",
    "legacy_flag_mismatches",
    "postgres_pool",
    "postgres_server",
    "postgres_url",
]

_SHARED_DATABASE = "s2dl_shared"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[ThrowawayPostgres]:
    """A throwaway PostgreSQL server for the whole test run."""
    with ThrowawayPostgres() as server:
        yield server


@pytest.fixture
def empty_database_url(postgres_server: ThrowawayPostgres) -> Iterator[str]:
    """The URI of a new database with no tables at all, dropped after the test."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url.rsplit("/", 1)[1])


@pytest.fixture(scope="session")
def postgres_url(postgres_server: ThrowawayPostgres) -> str:
    """The URI of a migrated database shared by the test run."""
    url = postgres_server.create_database(_SHARED_DATABASE)
    migrate(url)
    return url


@pytest.fixture(scope="session")
def postgres_pool(postgres_url: str) -> Iterator[ConnectionPool[Any]]:
    """A connection pool on the shared database, checked as production's is."""
    with open_pool(postgres_url, max_size=24) as pool:
        yield pool


@pytest.fixture(scope="session")
def clocked_pool(postgres_url: str) -> Iterator[ConnectionPool[Any]]:
    """A pool on the shared database whose ``now()`` is the clock ``db_clock`` sets."""
    install_test_clock(postgres_url)
    with open_pool(postgres_url, max_size=8, options=TEST_CLOCK_OPTIONS, name="s2dl-clocked") as pool:
        yield pool


@pytest.fixture
def db_clock(postgres_url: str, clocked_pool: ConnectionPool[Any]) -> Iterator[Callable[[dt.datetime], None]]:
    """Sets the database clock of ``clocked_pool``; back to real time after the test."""
    del clocked_pool  # installs the clock
    yield lambda moment: set_test_clock(postgres_url, moment)
    set_test_clock(postgres_url, None)


@pytest.fixture
def granule_store(postgres_pool: ConnectionPool[Any]) -> PostgresGranuleStore:
    """A PostgreSQL granule store over empty ``granule`` and ``status`` tables."""
    empty_tables(postgres_pool)
    return PostgresGranuleStore(postgres_pool)


def empty_tables(pool: ConnectionPool[Any]) -> None:
    """Delete every granule and status row."""
    with pool.connection() as conn:
        conn.execute("TRUNCATE granule, status")


def legacy_flag_mismatches(pool: ConnectionPool[Any]) -> list[tuple[Any, ...]]:
    """Rows whose legacy flags disagree with their state (docs/interface.md); empty when all agree."""
    with pool.connection() as conn:
        rows: list[tuple[Any, ...]] = conn.execute(
            "SELECT id, state, in_progress, downloaded, download_failed FROM granule"
            " WHERE in_progress IS DISTINCT FROM (state IN ('claimed', 'downloading'))"
            " OR downloaded IS DISTINCT FROM (state = 'verified')"
            " OR download_failed IS DISTINCT FROM (state = 'failed')"
        ).fetchall()
    return rows
