"""What ``s2-downloader status`` reports, read in one snapshot."""

from __future__ import annotations

import datetime as dt
import types
from collections.abc import Mapping
from typing import Any, Final

import attrs
import psycopg
from psycopg import sql

from s2_downloader.adapters.postgres.rows import aware_utc
from s2_downloader.adapters.postgres.updates import LEASED, states
from s2_downloader.domain.granule import State

__all__ = ["LAST_FILE_DOWNLOADED_TIME", "InProgressLease", "StoreStatus", "read_status"]

#: The ``status`` row that holds the time of the latest verified download.
LAST_FILE_DOWNLOADED_TIME: Final = "last_file_downloaded_time"

_OLDEST_LEASE: Final = sql.SQL(
    "SELECT id, lease_owner, lease_expires_at, download_started FROM granule"
    " WHERE state IN ({leased})"
    " ORDER BY download_started ASC NULLS LAST, lease_expires_at ASC NULLS LAST, id"
    " LIMIT 1"
).format(leased=states(LEASED))


@attrs.frozen(kw_only=True)
class InProgressLease:
    """A granule being claimed or downloaded, and whose lease it is."""

    granule_id: str
    owner: str | None
    expires_at: dt.datetime | None
    started_at: dt.datetime | None


@attrs.frozen(kw_only=True)
class StoreStatus:
    """What ``s2-downloader status`` reports: counts per state, last download, oldest lease."""

    counts: Mapping[State, int]
    last_file_downloaded_time: str | None
    oldest_in_progress: InProgressLease | None

    @property
    def total(self) -> int:
        """How many granules the table holds."""
        return sum(self.counts.values())


def read_status(conn: psycopg.Connection[Any]) -> StoreStatus:
    """Counts per state, ``last_file_downloaded_time`` and the oldest in-progress lease."""
    # One snapshot, so the three answers agree with each other.
    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
    counts = dict.fromkeys(State, 0)
    for state, count in conn.execute("SELECT state, count(*) FROM granule GROUP BY state"):
        counts[State(state)] = count
    last = conn.execute(
        "SELECT value FROM status WHERE key_name = %s", (LAST_FILE_DOWNLOADED_TIME,)
    ).fetchone()
    oldest = conn.execute(_OLDEST_LEASE).fetchone()
    return StoreStatus(
        counts=types.MappingProxyType(counts),
        last_file_downloaded_time=None if last is None else last[0],
        oldest_in_progress=None
        if oldest is None
        else InProgressLease(
            granule_id=oldest[0],
            owner=oldest[1],
            expires_at=None if oldest[2] is None else aware_utc(oldest[2]),
            started_at=None if oldest[3] is None else aware_utc(oldest[3]),
        ),
    )
