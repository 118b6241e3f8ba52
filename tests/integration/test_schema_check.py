"""The start-up schema check names what ``migrate`` would add, in one catalogue query."""

from __future__ import annotations

import psycopg
import pytest

from s2_downloader.adapters.postgres import migrate, open_pool
from s2_downloader.adapters.postgres.schema import required_columns
from s2_downloader.adapters.postgres.schema_check import SchemaOutdated, check_schema, schema_gaps
from s2_downloader.domain.errors import StoreError
from tests.integration.test_postgres_migrations import EXPECTED_COLUMNS, HLS_TODAY, _hls_database


def _gaps(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return schema_gaps(conn)


def test_the_check_knows_every_column_migrate_builds() -> None:
    """The columns the check requires are exactly the columns of a migrated table."""
    assert set(EXPECTED_COLUMNS) == set(required_columns())


def test_an_empty_database_lacks_both_tables(empty_database_url: str) -> None:
    """GIVEN no tables THEN the check names granule, status and s3_key_lease."""
    assert ["granule", "status", "s3_key_lease"] == _gaps(empty_database_url)


def test_todays_hls_table_before_migrate_is_named_column_by_column(empty_database_url: str) -> None:
    """GIVEN HLS's table of today THEN the check names what migrate adds; after migrate, nothing."""
    _hls_database(empty_database_url, HLS_TODAY)
    missing = _gaps(empty_database_url)
    assert "granule.state" in missing
    assert "granule.store_upload" in missing
    assert "granule.download_failed" in missing
    assert "s3_key_lease" in missing
    assert all(name.startswith("granule.") for name in missing if name != "s3_key_lease")
    migrate(empty_database_url)
    assert [] == _gaps(empty_database_url)


def test_check_schema_raises_one_line_naming_migrate(empty_database_url: str) -> None:
    """GIVEN a migrated table missing one column THEN SchemaOutdated names migrate and that column."""
    migrate(empty_database_url)
    with psycopg.connect(empty_database_url) as conn:
        conn.execute("ALTER TABLE granule DROP COLUMN first_attempt_at")
    pool = open_pool(empty_database_url, max_size=1)
    try:
        with pytest.raises(SchemaOutdated) as excinfo:
            check_schema(pool)
    finally:
        pool.close()
    assert ["granule.first_attempt_at"] == excinfo.value.missing
    message = str(excinfo.value)
    assert "\n" not in message
    assert "s2-downloader migrate" in message
    assert "granule.first_attempt_at" in message


def test_check_schema_on_an_unreachable_database_is_a_store_error_not_outdated(
    empty_database_url: str,
) -> None:
    """GIVEN a pool that cannot connect THEN StoreError (an outage), never SchemaOutdated."""
    base, _ = empty_database_url.rsplit("/", 1)
    pool = open_pool(f"{base}/no_such_database", min_size=0, max_size=1, timeout=2, connect_timeout=2)
    try:
        with pytest.raises(StoreError) as excinfo:
            check_schema(pool)
    finally:
        pool.close()
    assert not isinstance(excinfo.value, SchemaOutdated)
