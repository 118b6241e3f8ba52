"""``PostgresKeyLeases``: the ``KeyLeases`` port on the table ``s3_key_lease``.

One row per object key being uploaded: the granule that holds it and until when, on the
database's clock. Taking a lease is one statement: an ``INSERT`` that, on a key already
leased, takes it over only when the holder is the same granule (a renewal) or its lease has
run out; otherwise the holder is read back. Giving it back deletes the row only when the
granule still holds it. Two granules whose key template yields one key (docs/interface.md
section 4) therefore never upload to it at once.
"""

from __future__ import annotations

from typing import Any, Final

import attrs
import psycopg
from psycopg_pool import ConnectionPool

from s2_downloader.adapters.postgres.pool import run_on

__all__ = ["KEY_LEASE_TABLE", "PostgresKeyLeases"]

#: The table ``migrate`` creates for the key leases.
KEY_LEASE_TABLE: Final = "s3_key_lease"

_TAKE: Final = (
    "INSERT INTO s3_key_lease AS held (key, granule_id, lease_expires_at)"
    " VALUES (%(key)s, %(granule)s, now() + make_interval(secs => %(seconds)s))"
    " ON CONFLICT (key) DO UPDATE"
    " SET granule_id = EXCLUDED.granule_id, lease_expires_at = EXCLUDED.lease_expires_at"
    " WHERE held.granule_id = EXCLUDED.granule_id OR held.lease_expires_at <= now()"
    " RETURNING granule_id"
)
_HOLDER: Final = "SELECT granule_id FROM s3_key_lease WHERE key = %s AND lease_expires_at > now()"
_GIVE_BACK: Final = "DELETE FROM s3_key_lease WHERE key = %s AND granule_id = %s"
_VERIFIED: Final = "SELECT state = 'verified' OR downloaded FROM granule WHERE id = %s"


@attrs.define
class PostgresKeyLeases:
    """Which granule may upload to each object key now (the ``KeyLeases`` port)."""

    pool: ConnectionPool[Any] = attrs.field(repr=False)

    def take(self, key: str, granule_id: str, seconds: float) -> str | None:
        """Take or renew ``key``'s lease; ``None`` when ``granule_id`` holds it, else the holder's id."""

        def work(conn: psycopg.Connection[Any]) -> str | None:
            params = {"key": key, "granule": granule_id, "seconds": float(seconds)}
            # now() is the transaction's start, so a lease the INSERT found live is live for
            # the SELECT too; only a holder giving it back in between can make it vanish.
            for _ in range(2):
                if conn.execute(_TAKE, params).fetchone() is not None:
                    return None
                row = conn.execute(_HOLDER, (key,)).fetchone()
                if row is not None:
                    return str(row[0])
            return "another granule"

        return run_on(self.pool, "take key lease", work, retry=True)

    def give_back(self, key: str, granule_id: str) -> None:
        """Delete ``key``'s lease if ``granule_id`` holds it."""

        def work(conn: psycopg.Connection[Any]) -> None:
            conn.execute(_GIVE_BACK, (key, granule_id))

        run_on(self.pool, "give back key lease", work, retry=True)

    def verified(self, granule_id: str) -> bool:
        """Whether the granule table holds ``granule_id`` as verified (its state, or the legacy flag)."""

        def work(conn: psycopg.Connection[Any]) -> bool:
            row = conn.execute(_VERIFIED, (granule_id,)).fetchone()
            return row is not None and bool(row[0])

        return run_on(self.pool, "read owner's state", work, retry=True)
