"""The operators' database commands: ``migrate``, ``status``, ``requeue`` and ``failures``.

Each takes what the command line parsed, prints its report on stdout and returns the exit code.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import TYPE_CHECKING

from s2_downloader.adapters.granule_queries import GranuleQueries, RequeueFilter
from s2_downloader.adapters.postgres import PostgresGranuleStore, StoreStatus, migrate
from s2_downloader.adapters.sqs import SqsQueue
from s2_downloader.domain.errors import FileStoreError
from s2_downloader.domain.ports import LeftoverReport, Leftovers
from s2_downloader.entrypoints.config import ConfigError, Settings
from s2_downloader.entrypoints.credentials import database_url
from s2_downloader.entrypoints.failures import failures_json, failures_text
from s2_downloader.entrypoints.logs import configure_logging
from s2_downloader.entrypoints.requeue import requeue
from s2_downloader.entrypoints.wiring import open_checked_database, store_for_status

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient

__all__ = ["failures_command", "migrate_command", "requeue_command", "status_command"]


def migrate_command() -> int:
    """Create or upgrade the schema; say which migrations were applied."""
    configure_logging()
    applied = migrate(database_url(Settings.from_env()))
    print(f"migrations applied: {', '.join(applied)}" if applied else "schema is up to date")  # noqa: T201
    return 0


#: The store's leftovers older than this are listed by ``status`` (S3: multipart uploads, charged for).
OLD_LEFTOVER_SECONDS = 86400.0


def status_command(*, as_json: bool) -> int:
    """Granule counts per state, the last download, the oldest lease, and the store's old leftovers."""
    _quiet_database_logging()
    settings = Settings.from_env()
    pool = open_checked_database(settings, max_size=1)
    try:
        report = PostgresGranuleStore(pool=pool).status_report()
        leftovers = _old_leftovers(store_for_status(settings, pool))
    finally:
        pool.close()
    if as_json:
        document = _status_json(report)
        if leftovers is not None:
            document[f"{leftovers.kind.replace(' ', '_')}_older_than_a_day"] = [
                {"key": item.where, "upload_id": item.upload_id, "initiated": item.since.isoformat()}
                for item in leftovers.items
            ]
        print(json.dumps(document))  # noqa: T201
    else:
        text = _status_text(report)
        if leftovers is not None:
            text += f"\n{leftovers.kind} older than a day: {len(leftovers.items)}"
            text += "".join(
                f"\n  {item.where} (since {item.since.isoformat()})" for item in leftovers.items[:20]
            )
        print(text)  # noqa: T201
    return 0


def _old_leftovers(store: LeftoverReport | None) -> Leftovers | None:
    """What the store has left for more than a day that it lists (S3: multipart uploads); else None."""
    if store is None:
        return None
    try:
        return store.leftovers(OLD_LEFTOVER_SECONDS)
    except FileStoreError as exc:
        print(f"s2-downloader status: {exc}", file=sys.stderr)  # noqa: T201
        return None


def requeue_command(selection: RequeueFilter, *, dry_run: bool, as_json: bool) -> int:
    """A download message for each granule ``selection`` matches; 1 when some could not be sent."""
    settings = Settings.from_env()
    queue_url = settings.download_queue_url
    if queue_url is None:
        raise ConfigError("TO_DOWNLOAD_SQS_QUEUE_URL", "required for requeue, but not set")
    _quiet_database_logging()
    pool = open_checked_database(settings, max_size=1)
    try:
        queue = SqsQueue(client=_sqs_client(), url=queue_url)
        report = requeue(GranuleQueries(pool), queue, selection, queue_url=queue_url, dry_run=dry_run)
    finally:
        pool.close()
    print(json.dumps(report.as_json()) if as_json else report.as_text())  # noqa: T201
    if report.unsent:
        print(  # noqa: T201
            f"s2-downloader requeue: {len(report.unsent)} message(s) not sent; run the same requeue again",
            file=sys.stderr,
        )
        return 1
    return 0


def failures_command(*, as_json: bool, limit: int) -> int:
    """Failed and retrying granules, newest first, and counts per kind."""
    _quiet_database_logging()
    pool = open_checked_database(Settings.from_env(), max_size=1)
    try:
        report = GranuleQueries(pool).failures(limit)
    finally:
        pool.close()
    print(json.dumps(failures_json(report)) if as_json else failures_text(report))  # noqa: T201
    return 0


def _quiet_database_logging() -> None:
    configure_logging(logging.WARNING)
    # The pool logs every failed connection attempt; the command reports the outcome once.
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)


def _sqs_client() -> SQSClient:
    import boto3  # noqa: PLC0415 - only requeue needs a client of its own
    from botocore.config import Config  # noqa: PLC0415

    config = Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 4, "mode": "standard"})
    return boto3.session.Session().client("sqs", config=config)


def _status_json(report: StoreStatus) -> dict[str, object]:
    oldest = report.oldest_in_progress
    return {
        "counts": {state.value: count for state, count in report.counts.items()},
        "total": report.total,
        "last_file_downloaded_time": report.last_file_downloaded_time,
        "oldest_in_progress": None
        if oldest is None
        else {
            "granule_id": oldest.granule_id,
            "owner": oldest.owner,
            "lease_expires_at": oldest.expires_at.isoformat() if oldest.expires_at else None,
            "download_started": oldest.started_at.isoformat() if oldest.started_at else None,
        },
    }


def _status_text(report: StoreStatus) -> str:
    lines = [f"{state.value:<12} {count:>8}" for state, count in report.counts.items()]
    lines.append(f"{'total':<12} {report.total:>8}")
    lines.append(f"last_file_downloaded_time: {report.last_file_downloaded_time or 'never'}")
    oldest = report.oldest_in_progress
    if oldest is None:
        lines.append("oldest in-progress lease: none")
    else:
        expires = oldest.expires_at.isoformat() if oldest.expires_at else "?"
        lines.append(f"oldest in-progress lease: {oldest.granule_id} held by {oldest.owner} until {expires}")
    return "\n".join(lines)
