"""HLS's requeuer as a Lambda handler: one ingestion day's granules back on the download queue.

The event is the one HLS's own requeuer takes, ``{"date": "YYYY-MM-DD", "dry_run": bool}``,
plus an optional ``"revive_failed": bool``; the answer is its answer, ``{"dry_run",
"queue_url", "ingestion_date", "count", "granules": [{"id", "filename", "download_url"}]}``.
The rules are ``s2-downloader requeue --ingested-on DATE``'s (entrypoints/requeue.py):
verified granules are never sent, a granule under a live lease is left alone, and failed
granules are revived only when asked. The database pool and the queue client are built
once per execution environment and reused.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any

import attrs
from psycopg_pool import ConnectionPool

from s2_downloader.adapters.granule_queries import GranuleQueries
from s2_downloader.adapters.sqs import SqsQueue
from s2_downloader.entrypoints.config import ConfigError, Settings
from s2_downloader.entrypoints.logs import configure_logging
from s2_downloader.entrypoints.requeue import parse_filter, requeue
from s2_downloader.entrypoints.usage import UsageError
from s2_downloader.entrypoints.wiring import lambda_download_queue, open_checked_database

__all__ = ["BadRequeueEvent", "RequeueEvent", "RequeueIncomplete", "handler", "parse_event"]

_log = logging.getLogger("s2_downloader.requeuer")


class BadRequeueEvent(ValueError):
    """The event is not the requeuer's: one line saying what is wrong; nothing was sent."""


class RequeueIncomplete(RuntimeError):
    """The queue refused some messages after every retry; running the requeuer again sends them."""


@attrs.frozen(kw_only=True)
class RequeueEvent:
    """What the requeuer was asked: one UTC ingestion day, whether to send, whether to revive."""

    date: str
    dry_run: bool
    revive_failed: bool = False


def parse_event(event: object) -> RequeueEvent:
    """The event as HLS's requeuer takes it; ``BadRequeueEvent`` naming the key that is wrong."""
    if not isinstance(event, Mapping):
        msg = f"the event must be a JSON object, got {type(event).__name__}"
        raise BadRequeueEvent(msg)
    date = event.get("date")
    if not isinstance(date, str):
        msg = 'the event needs "date": "YYYY-MM-DD" (an ingestion day, UTC)'
        raise BadRequeueEvent(msg)
    flags: dict[str, bool] = {}
    for key, default in (("dry_run", None), ("revive_failed", False)):
        value = event.get(key, default)
        if not isinstance(value, bool):
            msg = f'"{key}" must be true or false, got {value!r:.40}'
            raise BadRequeueEvent(msg)
        flags[key] = value
    return RequeueEvent(date=date, dry_run=flags["dry_run"], revive_failed=flags["revive_failed"])


@attrs.define
class _Requeuer:
    """What one execution environment keeps: the settings, the pool and the queue."""

    settings: Settings
    pool: ConnectionPool[Any]
    queue: SqsQueue


@functools.cache
def _requeuer() -> _Requeuer:
    configure_logging()
    settings = Settings.from_env()
    if settings.download_queue_url is None:
        raise ConfigError("TO_DOWNLOAD_SQS_QUEUE_URL", "required for the requeuer, but not set")
    pool = open_checked_database(settings, max_size=1)
    return _Requeuer(settings=settings, pool=pool, queue=lambda_download_queue(settings))


def handler(event: Mapping[str, Any], context: object) -> dict[str, object]:
    """Requeue the granules of ``event["date"]``; HLS's requeuer's answer."""
    del context
    asked = parse_event(event)
    try:
        selection = parse_filter(ingested_on=[asked.date], revive_failed=asked.revive_failed)
    except UsageError as exc:
        raise BadRequeueEvent(f'"date": {exc}') from None
    kept = _requeuer()
    queue_url = kept.settings.download_queue_url or ""
    report = requeue(
        GranuleQueries(kept.pool), kept.queue, selection, queue_url=queue_url, dry_run=asked.dry_run
    )
    answer = report.as_json()
    if report.unsent:
        # HLS's answer has no place for them: an error, so the invocation is seen to fail.
        msg = f"{len(report.unsent)} of {answer['count']} message(s) not sent; invoke again"
        raise RequeueIncomplete(msg)
    _log.info(
        "requeued" if not asked.dry_run else "requeue dry run",
        extra={"event": "requeued", "date": asked.date, "count": answer["count"], "dry_run": asked.dry_run},
    )
    return {
        "dry_run": answer["dry_run"],
        "queue_url": answer["queue_url"],
        "ingestion_date": asked.date,
        "count": answer["count"],
        "granules": answer["granules"],
    }
