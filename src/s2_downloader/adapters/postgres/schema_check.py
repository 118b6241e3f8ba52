"""The start-up schema check: is the database at least at the schema ``migrate`` builds?

New code deployed before ``migrate`` ran would meet an undefined column at its first claim,
and that error, classed as a database outage, would cycle every message forever. So the
runner, the operators' commands and the Lambda handlers check once, in one catalogue
query, before they receive anything: the ``granule``, ``status`` and ``s3_key_lease`` tables exist and
``granule`` has every column this version uses. What is missing is named, with the one
command that adds it.
"""

from __future__ import annotations

from typing import Any, Final

import psycopg
from psycopg_pool import ConnectionPool

from s2_downloader.adapters.postgres.pool import describe_error
from s2_downloader.adapters.postgres.schema import required_columns
from s2_downloader.domain.errors import StoreError

__all__ = ["SchemaOutdated", "check_schema", "schema_gaps"]

# One round trip: granule's live columns, and whether each table exists at all.
_CATALOGUE: Final = (
    "SELECT to_regclass('granule') IS NOT NULL, to_regclass('status') IS NOT NULL,"
    " to_regclass('s3_key_lease') IS NOT NULL,"
    " ARRAY(SELECT attname::text FROM pg_attribute"
    "       WHERE attrelid = to_regclass('granule') AND attnum > 0 AND NOT attisdropped)"
)


class SchemaOutdated(StoreError):
    """The database lacks tables or columns this version needs: ``s2-downloader migrate`` adds them.

    Not an error of any granule: the commands exit 2 with this message, the Lambda
    handlers treat it as an outage (component ``schema``).
    """

    def __init__(self, missing: list[str]) -> None:
        self.missing = missing
        super().__init__(
            "the database schema is older than this version of s2-downloader: run"
            f" `s2-downloader migrate` first (missing: {', '.join(missing)})"
        )


def schema_gaps(conn: psycopg.Connection[Any]) -> list[str]:
    """What the schema lacks, as ``table`` or ``table.column`` names; empty when it is complete."""
    row = conn.execute(_CATALOGUE).fetchone()
    assert row is not None  # a SELECT without FROM returns one row
    has_granule, has_status, has_key_lease = bool(row[0]), bool(row[1]), bool(row[2])
    columns = set(row[3])
    missing: list[str] = []
    if not has_granule:
        missing.append("granule")
    else:
        missing += [f"granule.{name}" for name in required_columns() if name not in columns]
    if not has_status:
        missing.append("status")
    if not has_key_lease:
        missing.append("s3_key_lease")
    return missing


def check_schema(pool: ConnectionPool[Any]) -> None:
    """Raise ``SchemaOutdated`` naming what is missing; ``StoreError`` when the database cannot be asked."""
    try:
        with pool.connection() as conn:
            missing = schema_gaps(conn)
    except psycopg.Error as exc:
        # PoolTimeout (no connection in time) is a psycopg.Error too.
        raise StoreError(describe_error("schema check", exc, pool)) from exc
    if missing:
        raise SchemaOutdated(missing)
