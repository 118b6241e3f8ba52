"""HLS's requeuer as an AWS Lambda handler: ``requeue`` for one ingestion day, in HLS's words.

The event is the one HLS's ``lambdas/requeuer`` takes (its ``invoke`` script sends it):
``{"date": "YYYY-MM-DD", "dry_run": true|false}``, plus, optionally, ``"revive_failed":
true|false`` (default false, as ``requeue --revive-failed``). The answer is HLS's:
``{"dry_run", "queue_url", "ingestion_date", "count", "granules": [{"id", "filename",
"download_url"}, ...]}``, the granules sent (or, dry, to be sent).

The rules are ``requeue``'s (``entrypoints.requeue``), run on its code: granules ingested
that UTC day that are not verified, by default pending, retrying or claimed under an
expired lease; never one under a live lease; failed ones only with ``revive_failed``.

A bad event raises ``InvalidEvent`` naming each problem, before anything is built or read.
Messages the queue still refused after ``requeue``'s retries raise ``RequeueIncomplete``
(a function error, as HLS's requeuer fails on a refused send); invoking it again sends
them, and the ones already sent again, which is harmless (claims are exclusive).
Clients are built once per execution environment (``wiring.build_requeue``).
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Mapping
from typing import Any, Final

import attrs
import cattrs
from cattrs.v import format_exception

from s2_downloader.domain.errors import S2DownloaderError
from s2_downloader.entrypoints.config import Settings
from s2_downloader.entrypoints.logs import configure_logging
from s2_downloader.entrypoints.requeue import RequeueReport, parse_day, parse_filter, requeue
from s2_downloader.entrypoints.usage import UsageError
from s2_downloader.entrypoints.wiring import RequeueContainer, build_requeue

__all__ = ["InvalidEvent", "RequeueEvent", "RequeueIncomplete", "handler", "response"]

_log = logging.getLogger("s2_downloader.requeue_handler")

#: The event, as the error messages show it.
_EVENT_SHAPE: Final = '{"date": "YYYY-MM-DD", "dry_run": true|false[, "revive_failed": true|false]}'


class InvalidEvent(S2DownloaderError):
    """The event is not HLS's requeuer event; the message names each problem."""


class RequeueIncomplete(S2DownloaderError):
    """The queue refused some messages after every retry; invoking again sends them."""


@attrs.frozen(kw_only=True)
class RequeueEvent:
    """HLS's requeuer event, parsed: one UTC ingestion day, whether to send, whether to revive."""

    date: dt.date
    dry_run: bool
    revive_failed: bool = False

    @classmethod
    def parse(cls, event: object) -> RequeueEvent:
        """The event as sent to the function, or ``InvalidEvent`` saying what is wrong."""
        if not isinstance(event, Mapping):
            raise InvalidEvent(f"the event must be a JSON object {_EVENT_SHAPE}, got {type(event).__name__}")
        try:
            return _converter.structure(dict(event), cls)
        except cattrs.BaseValidationError as exc:
            problems = "; ".join(cattrs.transform_error(exc, format_exception=_problem))
            raise InvalidEvent(f"the event must be {_EVENT_SHAPE}: {problems}") from None


def _strict_bool(value: Any, _: type) -> bool:
    # cattrs would take "false" for True; HLS's requeuer refuses anything but a boolean too.
    if not isinstance(value, bool):
        msg = f"expected true or false, got {_shown(value)}"
        raise TypeError(msg)
    return value


def _day(value: Any, _: type) -> dt.date:
    if not isinstance(value, str):
        msg = f"expected a date YYYY-MM-DD, got {_shown(value)}"
        raise TypeError(msg)
    try:
        return parse_day("date", value)
    except UsageError as exc:
        raise ValueError(exc.problem) from None


def _shown(value: Any) -> str:
    return repr(value)[:40] if isinstance(value, str | int | float) else type(value).__name__


def _problem(exc: BaseException, kind: type | None) -> str:
    if isinstance(exc, TypeError | ValueError) and exc.args and isinstance(exc.args[0], str):
        return exc.args[0]
    return format_exception(exc, kind)


_converter = cattrs.Converter(forbid_extra_keys=True)
_converter.register_structure_hook(bool, _strict_bool)
_converter.register_structure_hook(dt.date, _day)


def response(report: RequeueReport, day: dt.date) -> dict[str, object]:
    """HLS's requeuer's answer for ``report`` of ingestion day ``day``: exactly its five keys."""
    document = report.as_json()
    return {
        "dry_run": document["dry_run"],
        "queue_url": document["queue_url"],
        "ingestion_date": day.isoformat(),
        "count": document["count"],
        "granules": document["granules"],
    }


def handler(event: Mapping[str, Any], context: object) -> dict[str, object]:
    """Requeue one ingestion day as HLS's requeuer does, with ``requeue``'s rules; HLS's answer."""
    del context
    request = RequeueEvent.parse(event)
    requeuer = _requeuer(Settings.from_env())
    selection = parse_filter(ingested_on=[request.date.isoformat()], revive_failed=request.revive_failed)
    report = requeue(
        requeuer.queries,
        requeuer.queue,
        selection,
        queue_url=requeuer.queue_url,
        dry_run=request.dry_run,
    )
    _log.info(
        "requeuer invoked",
        extra={
            "event": "requeuer_invoked",
            "ingestion_date": request.date.isoformat(),
            "dry_run": request.dry_run,
            "revive_failed": request.revive_failed,
            "count": len(report.granules),
            "unsent": len(report.unsent),
        },
    )
    if report.unsent:
        msg = (
            f"{len(report.unsent)} of {len(report.granules) + len(report.unsent)} download message(s)"
            f" were refused by the queue and not sent; invoke again to send them"
        )
        raise RequeueIncomplete(msg)
    return response(report, request.date)


@functools.cache
def _requeuer(settings: Settings) -> RequeueContainer:
    """The requeuer's clients for ``settings``: built at the first invocation, reused by the next."""
    configure_logging()
    return build_requeue(settings)
