"""``PostgresGranuleStore``: the ``GranuleStore`` port on HLS's ``granule`` table.

Each lifecycle event is one conditional UPDATE (``updates.py``); the legacy flags
(``in_progress``, ``downloaded``, ``download_failed``) are set in that same statement.
psycopg errors leave this module as ``StoreError`` with any password removed.

Leases are on the database's clock: claim, heartbeat and the expiry test use ``now()``
in the statement, never the ``now`` a worker passes in, so workers whose clocks disagree
neither take over a live lease nor hold a granule past its lease. (Write ``now()``, not
``CURRENT_TIMESTAMP``: the tests stand a settable clock in for ``now()`` by search path.)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, Final, TypeVar, assert_never

import attrs
import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from s2_downloader.adapters.postgres.pool import run_on
from s2_downloader.adapters.postgres.rows import SELECT, granule_of, naive_utc, utc_now
from s2_downloader.adapters.postgres.status import LAST_FILE_DOWNLOADED_TIME, StoreStatus, read_status
from s2_downloader.adapters.postgres.updates import UPDATES
from s2_downloader.domain import lifecycle
from s2_downloader.domain.errors import InvalidTransition
from s2_downloader.domain.granule import Granule

__all__ = ["PostgresGranuleStore"]

_T = TypeVar("_T")

# Another HLS writer (or a row the batched backfill has not reached) may have set a legacy
# flag behind the state's back: the flag wins, before anything else is decided.
_ADOPT_LEGACY_FLAGS: Final = sql.SQL(
    "UPDATE granule SET state = CASE WHEN downloaded THEN 'verified' ELSE 'failed' END,"
    " in_progress = false, lease_owner = NULL, lease_expires_at = NULL"
    " WHERE id = %(id)s AND ((downloaded AND state <> 'verified')"
    " OR (download_failed AND NOT downloaded AND state NOT IN ('verified', 'failed')))"
)

# A failed granule whose flags another HLS tool reset (download_failed false, retries within
# the budget) is revived: pending again, its deferral budget started afresh.
_REVIVE: Final = sql.SQL(
    "UPDATE granule SET state = 'pending', first_attempt_at = NULL"
    " WHERE id = %(id)s AND state = 'failed' AND NOT download_failed AND NOT downloaded"
    " AND download_retries <= %(max_retries)s"
)

_UPSERT_STATUS: Final = sql.SQL(
    "INSERT INTO status (key_name, value) VALUES (%(key)s, %(value)s)"
    " ON CONFLICT (key_name) DO UPDATE SET value = EXCLUDED.value"
)


def _clean_text(text: str) -> str:
    # PostgreSQL text cannot hold NUL or lone surrogates; an error message quoting a binary
    # body may, and recording the failure matters more than those characters.
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def _lease(lease_seconds: float) -> dt.timedelta:
    # An interval rounded exactly as lifecycle rounds it, so a lease reads back as the
    # domain would build it from the database's clock.
    return dt.timedelta(seconds=lease_seconds)


@attrs.define
class PostgresGranuleStore:
    """The ``GranuleStore`` port on the HLS ``granule`` table.

    ``pool`` should check connections before lending them (see ``open_pool``) so the
    store keeps working across a PostgreSQL restart. Leases, ``download_started`` and
    ``first_attempt_at`` use the database's clock and ignore the ``now`` passed in;
    ``clock`` gives the other times the events do not carry (``download_finished``,
    ``upload_queued_at``, ``last_file_downloaded_time``).

    At claim the legacy flags win over the state when another writer set them
    (``downloaded`` -> verified, ``download_failed`` -> failed), and, given ``max_retries``
    (the retry budget), a failed granule whose ``download_failed`` was reset with its
    retries within the budget is revived to pending.
    """

    pool: ConnectionPool[Any]
    clock: Callable[[], dt.datetime] = utc_now
    max_retries: int | None = None

    def claim(self, granule_id: str, owner: str, now: dt.datetime, lease_seconds: float) -> Granule | None:
        """Take the lease if the granule is free; return it as it is after the attempt, or None."""
        event = lifecycle.Claim(owner=owner, now=now, lease_seconds=lease_seconds)

        def work(conn: psycopg.Connection[Any]) -> Granule | None:
            conn.execute(_ADOPT_LEGACY_FLAGS, {"id": granule_id})
            if self.max_retries is not None:
                conn.execute(_REVIVE, {"id": granule_id, "max_retries": self.max_retries})
            row = conn.execute(UPDATES[lifecycle.Claim], self._params(granule_id, event)).fetchone()
            if row is None:
                row = conn.execute(SELECT, {"id": granule_id}).fetchone()
            return None if row is None else granule_of(row)

        # A repeat after a lost reply is harmless: the lease is then ours and still live.
        return self._run("claim", work, retry=True)

    def heartbeat(self, granule_id: str, owner: str, now: dt.datetime, lease_seconds: float) -> bool:
        """Extend ``owner``'s lease; ``False`` when ``owner`` does not hold it."""
        event = lifecycle.Heartbeat(owner=owner, now=now, lease_seconds=lease_seconds)

        def work(conn: psycopg.Connection[Any]) -> bool:
            cursor = conn.execute(UPDATES[lifecycle.Heartbeat], self._params(granule_id, event))
            return cursor.fetchone() is not None

        # Idempotent: a repeat sets the same expiry.
        return self._run("heartbeat", work, retry=True)

    def record(self, granule_id: str, event: lifecycle.Event) -> Granule:
        """Apply ``event`` in one conditional UPDATE; raise ``InvalidTransition`` when it is not legal now."""

        def work(conn: psycopg.Connection[Any]) -> Granule:
            params = self._params(granule_id, event)
            row = conn.execute(UPDATES[type(event)], params).fetchone()
            if row is None:
                raise self._invalid(conn, granule_id, event)
            if isinstance(event, lifecycle.Verify):
                conn.execute(
                    _UPSERT_STATUS,
                    {"key": LAST_FILE_DOWNLOADED_TIME, "value": params["finished"].isoformat()},
                )
            return granule_of(row)

        return self._run(f"record {type(event).__name__}", work)

    def release(self, granule_id: str, owner: str) -> bool:
        """Hand the granule back unfinished; ``False`` when ``owner`` did not hold it."""
        event = lifecycle.Release(owner=owner)

        def work(conn: psycopg.Connection[Any]) -> bool:
            cursor = conn.execute(UPDATES[lifecycle.Release], self._params(granule_id, event))
            return cursor.fetchone() is not None

        return self._run("release", work)

    def get(self, granule_id: str) -> Granule | None:
        """The granule as the table holds it, or ``None``; reads only."""

        def work(conn: psycopg.Connection[Any]) -> Granule | None:
            row = conn.execute(SELECT, {"id": granule_id}).fetchone()
            return None if row is None else granule_of(row)

        return self._run("get", work, retry=True)

    def status_report(self) -> StoreStatus:
        """Counts per state, ``last_file_downloaded_time`` and the oldest in-progress lease."""

        return self._run("status report", read_status, retry=True)

    # -- helpers ------------------------------------------------------------------

    def _params(self, granule_id: str, event: lifecycle.Event) -> dict[str, Any]:
        params: dict[str, Any] = {"id": granule_id}
        match event:
            case (
                lifecycle.Claim(owner=owner, lease_seconds=lease_seconds)
                | lifecycle.Heartbeat(owner=owner, lease_seconds=lease_seconds)
            ):
                # The event's `now` is the worker's clock: the statement uses the database's.
                params.update(owner=owner, lease=_lease(lease_seconds))
            case lifecycle.Verify(owner=owner, checksum=checksum):
                finished = self.clock()
                params.update(
                    owner=owner,
                    checksum=checksum.lower(),
                    finished=finished,
                    finished_naive=naive_utc(finished),
                )
            case (
                lifecycle.CountFailure(owner=owner, error=error)
                | lifecycle.Exhaust(owner=owner, error=error)
                | lifecycle.GiveUp(owner=owner, error=error)
                | lifecycle.Postpone(owner=owner, error=error)
                | lifecycle.Abandon(owner=owner, error=error)
            ):
                params.update(owner=owner, error=_clean_text(error))
            case lifecycle.StartDownload(owner=owner) | lifecycle.Release(owner=owner):
                params.update(owner=owner)
            case lifecycle.MarkUploadSent():
                params.update(queued_at=self.clock())
            case _:
                assert_never(event)
        return params

    @staticmethod
    def _invalid(conn: psycopg.Connection[Any], granule_id: str, event: lifecycle.Event) -> InvalidTransition:
        row = conn.execute(SELECT, {"id": granule_id}).fetchone()
        if row is None:
            return InvalidTransition(f"no granule {granule_id}")
        try:
            # The domain words the refusal best; it sees the row the UPDATE did not match.
            lifecycle.apply(granule_of(row), event)
        except InvalidTransition as refusal:
            return refusal
        return InvalidTransition(
            f"{type(event).__name__} on granule {granule_id} lost a race with a concurrent change"
        )

    def _run(
        self, operation: str, work: Callable[[psycopg.Connection[Any]], _T], *, retry: bool = False
    ) -> _T:
        return run_on(self.pool, operation, work, retry=retry)
