"""What a test database holds beyond the schema: seeded granule rows, and a clock tests can set.

Used with the throwaway PostgreSQL of ``testing.postgres`` (which re-exports these) by the
integration tests, the benchmarks and the demo.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import attrs
import psycopg
from psycopg_pool import ConnectionPool

__all__ = ["TEST_CLOCK_OPTIONS", "SeedGranule", "install_test_clock", "seed_granules", "set_test_clock"]


# -- seed rows ------------------------------------------------------------------------

# The HLS timestamp columns are naive UTC.
_SEED_TIME = dt.datetime(2026, 1, 1)


@attrs.frozen(kw_only=True)
class SeedGranule:
    """A granule row as the HLS link fetcher inserts it: HLS columns only, so it starts pending."""

    id: str
    filename: str
    download_url: str = ""
    size: int = 0
    tileid: str = "00XXX"
    beginposition: dt.datetime = _SEED_TIME
    endposition: dt.datetime = _SEED_TIME
    ingestiondate: dt.datetime = _SEED_TIME


_INSERT_SEED = (
    "INSERT INTO granule"
    " (id, filename, tileid, size, beginposition, endposition, ingestiondate, download_url)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
)


def seed_granules(target: str | ConnectionPool[Any], granules: Iterable[SeedGranule]) -> None:
    """Insert ``granules`` into a migrated database (a conninfo/URI or a pool) in one transaction."""
    rows = [
        (g.id, g.filename, g.tileid, g.size, g.beginposition, g.endposition, g.ingestiondate, g.download_url)
        for g in granules
    ]
    if isinstance(target, str):
        with psycopg.connect(target, connect_timeout=10) as conn, conn.cursor() as cursor:
            cursor.executemany(_INSERT_SEED, rows)
    else:
        with target.connection() as conn, conn.cursor() as cursor:
            cursor.executemany(_INSERT_SEED, rows)


# -- a settable database clock ----------------------------------------------------------

#: Server options for a connection whose ``now()`` is the test clock: a schema named before
#: pg_catalog in the search path shadows pg_catalog's ``now()``, so the store's statements
#: run unchanged against a clock the test sets (``set_test_clock``).
TEST_CLOCK_OPTIONS = "-c search_path=s2dl_test_clock,pg_catalog,public"

_INSTALL_CLOCK = """
CREATE SCHEMA IF NOT EXISTS s2dl_test_clock;
CREATE TABLE IF NOT EXISTS s2dl_test_clock.frozen (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    at timestamptz NOT NULL
);
CREATE OR REPLACE FUNCTION s2dl_test_clock.now() RETURNS timestamptz
    LANGUAGE sql STABLE
    AS $$ SELECT coalesce((SELECT at FROM s2dl_test_clock.frozen), pg_catalog.now()) $$;
"""
_SET_CLOCK = (
    "INSERT INTO s2dl_test_clock.frozen (at) VALUES (%s)"
    " ON CONFLICT (only_row) DO UPDATE SET at = EXCLUDED.at"
)
_UNSET_CLOCK = "DELETE FROM s2dl_test_clock.frozen"


def _execute(target: str | ConnectionPool[Any], statement: str, params: tuple[object, ...] = ()) -> None:
    if isinstance(target, str):
        with psycopg.connect(target, connect_timeout=10) as conn:
            conn.execute(statement.encode(), params)
    else:
        with target.connection() as conn:
            conn.execute(statement.encode(), params)


def install_test_clock(target: str | ConnectionPool[Any]) -> None:
    """Create the settable clock in a database (idempotent); it reads the real time until set."""
    _execute(target, _INSTALL_CLOCK)


def set_test_clock(target: str | ConnectionPool[Any], moment: dt.datetime | None) -> None:
    """Make ``now()`` be ``moment`` on connections with ``TEST_CLOCK_OPTIONS``; ``None``: real time."""
    if moment is None:
        _execute(target, _UNSET_CLOCK)
    else:
        _execute(target, _SET_CLOCK, (moment,))
