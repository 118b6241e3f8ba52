"""``PostgresUploadLedger``: the ``UploadLedger`` port on the granule row's ``store_upload`` column.

The S3 store saves its record of an upload in progress after each part and reads it back
to resume (``adapters/store/s3/records.py``); here it is one ``jsonb`` value per granule,
kept as it is. A granule the table does not hold has no record: saving one changes nothing.
Every statement is safe to repeat, so a connection that dies under one is retried once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import attrs
import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from s2_downloader.adapters.postgres.pool import run_on

__all__ = ["PostgresUploadLedger"]

_LOAD: Final = "SELECT store_upload FROM granule WHERE id = %s"
_SAVE: Final = "UPDATE granule SET store_upload = %s WHERE id = %s"
_CLEAR: Final = "UPDATE granule SET store_upload = NULL WHERE id = %s"


@attrs.define
class PostgresUploadLedger:
    """The record of each granule's upload in progress, on its row (the ``UploadLedger`` port)."""

    pool: ConnectionPool[Any] = attrs.field(repr=False)

    def load(self, granule_id: str) -> Mapping[str, Any] | None:
        """The ``store_upload`` record of the granule, or ``None`` (also when it is not a JSON object)."""

        def work(conn: psycopg.Connection[Any]) -> Mapping[str, Any] | None:
            row = conn.execute(_LOAD, (granule_id,)).fetchone()
            record = None if row is None else row[0]
            return record if isinstance(record, dict) else None

        return run_on(self.pool, "load upload record", work, retry=True)

    def save(self, granule_id: str, record: Mapping[str, Any]) -> None:
        """Replace the granule's ``store_upload`` record."""

        def work(conn: psycopg.Connection[Any]) -> None:
            conn.execute(_SAVE, (Jsonb(dict(record)), granule_id))

        run_on(self.pool, "save upload record", work, retry=True)

    def clear(self, granule_id: str) -> None:
        """Empty the granule's ``store_upload`` column."""

        def work(conn: psycopg.Connection[Any]) -> None:
            conn.execute(_CLEAR, (granule_id,))

        run_on(self.pool, "clear upload record", work, retry=True)
