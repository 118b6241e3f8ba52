"""``s2-downloader requeue``: a download message for every matching granule not verified yet.

HLS's requeuer Lambda (one ingestion date, ``downloaded = false``), generalised as
docs/interface.md section 1 describes: ingestion days, states, ids; expired claims by
default; failed granules only with ``--revive-failed``; never a granule under a live
lease; messages sent with SendMessageBatch, ten at a time.

Reviving and sending, and a crash between them. The granules are taken ten at a time:
the failed ones of a batch are revived (one conditional UPDATE: back to ``pending``),
then the batch's messages are sent. Revive first, because a message sent for a granule
still ``failed`` is worse than useless: the worker that receives it finds the granule
failed, leaves the message for the redrive, and it ends in the dead-letter queue. If the
process dies after a revival and before its send, those (at most ten) granules are
``pending`` with no message, a state ``requeue`` can recognise: pending, never attempted
since (``first_attempt_at`` is null) yet with a ``last_error``, which only a revival
leaves. ``--revive-failed`` matches those too, so running the same command again sends
them; so does any default-state run (they are pending). Nothing is lost, and the only
duplicates are messages for granules whose message was already sent, which are harmless:
the claim is exclusive (the second copy finds the granule leased and waits, or verified
and is deleted).

A batch whose send partly fails has its failed entries sent again, a few times with a
pause; whatever is still unsent is reported and the command exits 1 (those granules are
pending or retrying, so a rerun finds them).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import attrs

from s2_downloader.adapters.granule_queries import (
    DEFAULT_REQUEUE_STATES,
    RequeueFilter,
    RequeueRow,
)
from s2_downloader.domain.errors import QueueError
from s2_downloader.domain.granule import State
from s2_downloader.entrypoints.usage import UsageError

__all__ = [
    "BATCH_SIZE",
    "BatchQueue",
    "Queries",
    "RequeueReport",
    "download_body",
    "parse_day",
    "parse_filter",
    "requeue",
]

_log = logging.getLogger("s2_downloader.requeue")

#: SendMessageBatch's limit, and the size of each revive-then-send step.
BATCH_SIZE = 10
#: Sends of a batch's failed entries after the first, with a pause doubling from the first.
_SEND_RETRIES = 3
_SEND_PAUSE_SECONDS = 0.5


class Queries(Protocol):
    """The granule table as ``requeue`` uses it (``adapters.granule_queries.GranuleQueries``)."""

    def requeue_candidates(self, selection: RequeueFilter) -> list[RequeueRow]:
        """The granules ``selection`` matches."""
        ...

    def revive_failed(self, ids: Sequence[str]) -> list[RequeueRow]:
        """Take those of ``ids`` still failed back to pending; the rows changed."""
        ...


class BatchQueue(Protocol):
    """The download queue as ``requeue`` uses it (``adapters.sqs.SqsQueue``)."""

    def send_batch(self, entries: Sequence[tuple[str, int]]) -> list[bool]:
        """Send each ``(body, delay)``; which were accepted. ``QueueError`` when a call fails whole."""
        ...


@attrs.frozen(kw_only=True)
class RequeueReport:
    """What ``requeue`` did (or, dry, would do)."""

    dry_run: bool
    queue_url: str
    #: Sent (or, dry, to be sent), in order.
    granules: Sequence[RequeueRow]
    #: Matched but not sent: the queue refused them after every retry.
    unsent: Sequence[RequeueRow] = ()
    #: Of ``granules``, those taken back from failed to pending (or, dry, to be).
    revived: int = 0

    def as_json(self) -> dict[str, object]:
        """HLS's requeuer's answer: ``dry_run``, ``count``, ``granules`` (plus ``queue_url``, ``unsent``)."""
        document: dict[str, object] = {
            "dry_run": self.dry_run,
            "queue_url": self.queue_url,
            "count": len(self.granules),
            "granules": [_message_fields(row) for row in self.granules],
        }
        if self.unsent:
            document["unsent"] = [_message_fields(row) for row in self.unsent]
        return document

    def as_text(self) -> str:
        """A line per granule and a summary, for a person."""
        verb = "would send" if self.dry_run else "sent"
        lines = [f"{row.id}  {row.state.value}  {row.filename}" for row in self.granules]
        summary = f"{verb} {len(self.granules)} download message(s)"
        if self.revived:
            summary += (
                f", {self.revived} of them for failed granules {'to be ' if self.dry_run else ''}revived"
            )
        lines.append(summary)
        if self.unsent:
            lines.append(f"NOT sent (the queue refused them; run requeue again): {len(self.unsent)}")
            lines += [f"  {row.id}" for row in self.unsent]
        return "\n".join(lines)


def _message_fields(row: RequeueRow) -> dict[str, str]:
    return {"id": row.id, "filename": row.filename, "download_url": row.download_url}


def download_body(row: RequeueRow) -> str:
    """The download message of docs/interface.md section 3 for ``row``."""
    return json.dumps(_message_fields(row))


def parse_day(flag: str, value: str) -> dt.date:
    """``YYYY-MM-DD`` as a date, else ``UsageError`` naming ``flag``."""
    problem = f"expected a date YYYY-MM-DD, got {value[:40]!r}"
    # Exactly YYYY-MM-DD, not the other forms fromisoformat accepts (20240101, 2024-W01-1).
    if len(value) != len("YYYY-MM-DD"):
        raise UsageError(flag, problem)
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise UsageError(flag, problem) from None


def parse_filter(
    *,
    ingested_on: Sequence[str] = (),
    ingested_since: str | None = None,
    ingested_until: str | None = None,
    states: Sequence[str] = (),
    ids: Sequence[str] = (),
    all_granules: bool = False,
    revive_failed: bool = False,
) -> RequeueFilter:
    """The flags of ``requeue`` as a filter; ``UsageError`` naming the flag that is wrong."""
    days = tuple(parse_day("--ingested-on", value) for value in ingested_on)
    since = None if ingested_since is None else parse_day("--ingested-since", ingested_since)
    until = None if ingested_until is None else parse_day("--ingested-until", ingested_until)
    if since is not None and until is not None and since > until:
        raise UsageError("--ingested-until", f"{until} is before --ingested-since {since}")
    chosen: set[State] = set()
    for value in states:
        try:
            chosen.add(State(value.strip().lower()))
        except ValueError:
            known = ", ".join(state.value for state in State)
            raise UsageError("--state", f"unknown state {value[:40]!r} (one of {known})") from None
    if State.VERIFIED in chosen:
        raise UsageError("--state", "verified granules are never requeued")
    if State.FAILED in chosen and not revive_failed:
        raise UsageError("--state", "failed granules are requeued only with --revive-failed")
    if revive_failed and chosen and State.FAILED not in chosen:
        raise UsageError("--revive-failed", "the --state filter excludes failed granules; add --state failed")
    has_filter = bool(days or since or until or chosen or ids)
    if not has_filter and not all_granules:
        raise UsageError(
            "--all",
            "no filter given (--ingested-on/--ingested-since/--ingested-until, --state or --id);"
            " pass --all to requeue every granule that is not verified",
        )
    if revive_failed:
        # Failed granules join whatever else is asked for (default: the default states).
        chosen = (chosen or set(DEFAULT_REQUEUE_STATES)) | {State.FAILED}
    return RequeueFilter(
        ingested_on=days,
        ingested_since=since,
        ingested_until=until,
        states=frozenset(chosen) if chosen else None,
        ids=tuple(ids),
        include_revived=revive_failed,
    )


def requeue(
    queries: Queries,
    queue: BatchQueue,
    selection: RequeueFilter,
    *,
    queue_url: str,
    dry_run: bool,
    sleep: Callable[[float], None] = time.sleep,
) -> RequeueReport:
    """Send (revive first where asked) a message for each granule ``selection`` matches."""
    candidates = queries.requeue_candidates(selection)
    to_revive = sum(1 for row in candidates if row.state is State.FAILED)
    if dry_run:
        return RequeueReport(dry_run=True, queue_url=queue_url, granules=candidates, revived=to_revive)
    sent: list[RequeueRow] = []
    unsent: list[RequeueRow] = []
    revived = 0
    for start in range(0, len(candidates), BATCH_SIZE):
        batch = candidates[start : start + BATCH_SIZE]
        failed = [row.id for row in batch if row.state is State.FAILED]
        if failed:
            # Before the send (see the module's docstring); a granule that changed since it
            # was read (verified, claimed, revived by someone else) is not revived here.
            now_pending = {row.id for row in queries.revive_failed(failed)}
            revived += len(now_pending)
            batch = [
                attrs.evolve(row, state=State.PENDING) if row.id in now_pending else row
                for row in batch
                if row.state is not State.FAILED or row.id in now_pending
            ]
        ok, refused = _send(queue, batch, sleep)
        sent += ok
        unsent += refused
    _log.info(
        "requeued",
        extra={"event": "requeued", "count": len(sent), "revived": revived, "unsent": len(unsent)},
    )
    return RequeueReport(dry_run=False, queue_url=queue_url, granules=sent, unsent=unsent, revived=revived)


def _send(
    queue: BatchQueue, batch: Sequence[RequeueRow], sleep: Callable[[float], None]
) -> tuple[list[RequeueRow], list[RequeueRow]]:
    """Send ``batch``, retrying refused entries; (accepted, still refused), each in batch order."""
    waiting = list(batch)
    accepted: set[str] = set()
    pause = _SEND_PAUSE_SECONDS
    for attempt in range(_SEND_RETRIES + 1):
        if attempt:
            sleep(pause)
            pause *= 2
        try:
            answers = queue.send_batch([(download_body(row), 0) for row in waiting])
        except QueueError as exc:
            _log.warning("SendMessageBatch failed: %s", exc, extra={"event": "requeue_send_failed"})
            answers = [False] * len(waiting)
        accepted |= {row.id for row, ok in zip(waiting, answers, strict=True) if ok}
        waiting = [row for row, ok in zip(waiting, answers, strict=True) if not ok]
        if not waiting:
            break
    return [row for row in batch if row.id in accepted], waiting
