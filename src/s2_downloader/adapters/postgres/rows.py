"""Rows of the granule table as domain values, and the time conventions of its columns."""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from psycopg import sql

from s2_downloader.domain.granule import Granule, Lease, State

__all__ = ["RETURNING", "SELECT", "aware_utc", "granule_of", "naive_utc", "utc_now"]


def utc_now() -> dt.datetime:
    """The current time, timezone-aware UTC."""
    return dt.datetime.now(dt.UTC)


def naive_utc(moment: dt.datetime) -> dt.datetime:
    """``moment`` as the legacy ``timestamp`` columns hold it: UTC without a zone."""
    # The legacy columns are `timestamp` (no zone); HLS writes UTC there.
    if moment.tzinfo is None:
        msg = f"expected a timezone-aware datetime, got {moment!r}"
        raise ValueError(msg)
    return moment.astimezone(dt.UTC).replace(tzinfo=None)


def aware_utc(moment: dt.datetime) -> dt.datetime:
    """A value read from the table, timezone-aware UTC (a naive one is UTC already)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


_COLUMNS: Final = (
    "id",
    "filename",
    "state",
    "download_retries",
    "checksum",
    "lease_owner",
    "lease_expires_at",
    "last_error",
    "upload_queued_at",
    "first_attempt_at",
)
#: The columns ``granule_of`` reads, for ``RETURNING`` and ``SELECT``.
RETURNING: Final = sql.SQL(", ").join(sql.Identifier(column) for column in _COLUMNS)
SELECT: Final = sql.SQL("SELECT {columns} FROM granule WHERE id = %(id)s").format(columns=RETURNING)


def granule_of(row: tuple[Any, ...]) -> Granule:
    """The granule a row of ``RETURNING``'s columns describes."""
    granule_id, filename, state, retries, checksum, owner, expires_at, last_error, queued_at, first = row
    lease = None
    if owner is not None and expires_at is not None:
        lease = Lease(owner=owner, expires_at=aware_utc(expires_at))
    return Granule(
        id=granule_id,
        filename=filename,
        state=State(state),
        download_retries=retries,
        checksum=checksum,
        lease=lease,
        last_error=last_error,
        upload_sent=queued_at is not None,
        first_attempt_at=None if first is None else aware_utc(first),
    )
