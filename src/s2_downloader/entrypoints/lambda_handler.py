"""The AWS Lambda handler: a thin SQS batch handler with partial batch response.

Adapters are built once per execution environment and reused by every invocation: the
cached ``_container(settings)`` builds them at the first invocation (the settings of an
execution environment do not change); tests start afresh with ``_container.cache_clear()``.

Two event source mappings are supported (docs/interface.md, Lambda): with
ReportBatchItemFailures the response names the records to keep; without it (HLS today:
batch size 1) a response is taken as success and every record is deleted, so when every
record of the event must stay on the queue the handler raises ``BatchNotHandled``
instead: the messages stay and the function's Errors metric counts the invocation.

Time: every hub call of a record gets the deadline ``now + remaining - margin`` and ends
by then (``DeadlineExceeded``, the record handed back uncounted). The margin is for
what the deadline does not bound: see ``wiring.LAMBDA_STOP_MARGIN_SECONDS``.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import attrs

from s2_downloader.adapters.metrics import Metrics, NullMetrics
from s2_downloader.adapters.postgres.schema_check import SchemaOutdated
from s2_downloader.adapters.sqs import queue_url_of_arn
from s2_downloader.adapters.ssm import SsmError
from s2_downloader.domain import AttemptContext
from s2_downloader.domain.errors import FileStoreError, QueueError, S2DownloaderError, StoreError
from s2_downloader.entrypoints.config import BucketUnusable, ConfigError, Settings
from s2_downloader.entrypoints.credentials import SecretsUnavailable
from s2_downloader.entrypoints.dispatch import (
    Delete,
    HandBack,
    LeaveForRedrive,
    Outage,
    Resend,
    Result,
    Unavailable,
    action_for,
    outcome_for,
)
from s2_downloader.entrypoints.logs import configure_logging
from s2_downloader.entrypoints.observe import observe
from s2_downloader.entrypoints.wiring import (
    LAMBDA_STOP_MARGIN_SECONDS,
    Container,
    build,
    check_not_fifo,
    emf_metrics,
    lambda_download_queue,
)

__all__ = ["BatchNotHandled", "LambdaContext", "OutageMet", "handler", "process_batch"]

_log = logging.getLogger("s2_downloader.lambda")

#: Outages outlive an invocation: one line when the database goes down, one when it is back.
_outage = Outage("granule store, file store or upload queue")


class BatchNotHandled(S2DownloaderError):
    """Every record of the event must stay on the queue: raised so that no mapping deletes them."""


class LambdaContext(Protocol):
    """The part of the Lambda context object the handler uses."""

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left in this invocation."""
        ...


class Requeue(Protocol):
    """The download queue as the handler uses it: re-adding a deferred message."""

    def send(self, body: str, delay_seconds: int = 0) -> str:
        """Send ``body`` hidden for ``delay_seconds``."""
        ...

    def send_batch(self, entries: Sequence[tuple[str, int]]) -> list[bool]:
        """Send each ``(body, delay_seconds)``; which were accepted, in order."""
        ...

    def delete(self, receipt_handle: str) -> None:
        """Delete one received message (the handler does it itself before raising for an outage)."""
        ...


class OutageMet(S2DownloaderError):
    """Our own infrastructure failed during the invocation: raised so the Errors alarm sees it.

    Before it is raised, the messages of finished records are deleted and every other
    record's message is re-sent with a delay and its original deleted, so the error spends
    no receive count and nothing is done twice.
    """


@attrs.frozen
class _Deadline:
    """The use case's Cancellation: the invocation's end, less the stop margin."""

    remaining_ms: Callable[[], int]
    margin: float

    def is_set(self) -> bool:
        return self.remaining_ms() / 1000 < self.margin

    def deadline(self) -> float:
        """The monotonic instant every hub call must end by."""
        return time.monotonic() + self.remaining_ms() / 1000 - self.margin


def handler(event: Mapping[str, Any], context: LambdaContext) -> dict[str, list[dict[str, str]]]:
    """Handle an SQS batch; name only the records to retry in ``batchItemFailures``.

    Raises ``BatchNotHandled`` when that would name every record (see the module's doc).
    """
    settings = _settings(event)
    container = _cold_start(event, settings, context)
    response = process_batch(
        event,
        context,
        attempt_context=container.context,
        requeue=container.download_queue,
        check_url=container.check_download_url,
        outage=_outage,
        metrics=container.metrics,
    )
    if context.get_remaining_time_in_millis() > 1000 * _SWEEP_MIN_SECONDS:
        # The store's share of sweeping per invocation (EFS: one granule directory; S3:
        # nothing): the whole store over many invocations, cheaply.
        container.files.sweep_some_leftovers()
    _raise_if_nothing_handled(event, response)
    return response


#: Parts of the product uploading at once unless S3_PARTS_IN_FLIGHT says otherwise: an environment
#: downloads one product, so more than the runner's 2 (each of its downloads has its own), and
#: 5 parts of 16 MiB in memory sit well inside HLS's 1200 MB.
LAMBDA_PARTS_IN_FLIGHT = 4

#: The first pause between cold-start attempts; it doubles, within the invocation's time.
_COLD_START_PAUSE_SECONDS = 1.0


def _outage_component(exc: Exception) -> str | None:
    """Which part an error at cold start says is out; ``None`` when it is not an outage."""
    if isinstance(exc, SchemaOutdated):
        return "schema"
    if isinstance(exc, SecretsUnavailable):
        return "secrets"
    if isinstance(exc, SsmError):
        return "token"
    if isinstance(exc, FileStoreError | BucketUnusable):
        # BucketUnusable: a setting for the runner, an outage here (no receive count is spent
        # while the bucket is fixed).
        return "store"
    if isinstance(exc, QueueError):
        return "queue"
    if isinstance(exc, StoreError):
        return "database"
    return None


def _cold_start(event: Mapping[str, Any], settings: Settings, context: LambdaContext) -> Container:
    """The execution environment's container; an outage while building it is retried with back-off
    within the invocation's time, then handed back (``_hand_back_for_outage``) and raised.

    A schema older than the code is retried too: ``migrate`` may be running as the new code
    is deployed, and the records are worked on as soon as it has.
    """
    pause = _COLD_START_PAUSE_SECONDS
    while True:
        try:
            return _container(settings)
        except Exception as exc:
            component = _outage_component(exc)
            if component is None:
                raise  # configuration, or a bug: as before
            left = context.get_remaining_time_in_millis() / 1000 - LAMBDA_STOP_MARGIN_SECONDS
            if left < pause:
                _hand_back_for_outage(event, settings, component, exc)
                raise
            _log.warning(
                "cold start failed (%s); trying again in %.0f s",
                component,
                pause,
                extra={"event": "cold_start_retry", "component": component, "error": str(exc)},
            )
            time.sleep(pause)
            pause *= 2


def _hand_back_for_outage(
    event: Mapping[str, Any], settings: Settings, component: str, exc: Exception
) -> None:
    """Before raising for an outage at cold start: every record re-sent with a delay, its original deleted.

    The invocation still ends as a function error (the Errors alarm sees the outage), but
    no receive count is spent on it, so a long outage never moves the backlog to the
    dead-letter queue. Where the queue itself refuses, the messages come back after their
    visibility timeout, as they would anyway.
    """
    _log_outage_once(component, str(exc))
    emf_metrics(settings).outage(component)
    records = _records(event)
    if not records:
        return
    queue = lambda_download_queue(settings)
    delay = _outage.resend_delay()
    try:
        accepted = queue.send_batch([(_body(record), delay) for record in records])
        for record, sent in zip(records, accepted, strict=True):
            if sent:
                queue.delete(str(record.get("receiptHandle", "")))
    except QueueError:
        _log.exception(
            "could not hand the batch back", extra={"event": "requeue_failed", "count": len(records)}
        )


@functools.cache
def _log_outage_once(component: str, line: str) -> None:
    """One ERROR line per component and cause per execution environment, not one per invocation."""
    _log.error(line, extra={"event": "outage", "component": component})


def _settings(event: Mapping[str, Any]) -> Settings:
    """The settings from the environment; without TO_DOWNLOAD_SQS_QUEUE_URL, the event's source queue."""
    settings = Settings.from_env()
    if settings.download_queue_url is None:
        settings = attrs.evolve(settings, download_queue_url=_source_queue_url(event))
    if settings.s3_parts_in_flight is None:
        settings = attrs.evolve(settings, s3_parts_in_flight=LAMBDA_PARTS_IN_FLIGHT)
    return settings


@functools.cache
def _container(settings: Settings) -> Container:
    """The adapters for ``settings``: built at the first invocation, reused by the next ones."""
    configure_logging()
    container = build(settings, concurrency=1, long_poll=False, metrics=emf_metrics(settings))
    try:
        check_not_fifo(container.queues)
    except BaseException:
        container.close()
        raise
    return container


def _raise_if_nothing_handled(event: Mapping[str, Any], response: Mapping[str, list[dict[str, str]]]) -> None:
    """Raise ``BatchNotHandled`` when the response names every record of ``event``.

    Everything that could be re-sent or handed back was already; what is named must stay
    on the queue, and only an error keeps it there under a mapping without partial
    batch responses (with them, an error keeps the whole batch: the same records).
    """
    records = _records(event)
    if not records or len(response["batchItemFailures"]) < len(records):
        return
    _log.error(
        "no record of the batch was handled; raising so that its messages stay on the queue",
        extra={"event": "batch_not_handled", "count": len(records)},
    )
    msg = (
        f"all {len(records)} record(s) of the batch stay on the queue "
        "(failed granules, bad input or re-sends that failed: see the log)"
    )
    raise BatchNotHandled(msg)


def _records(event: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    records = event.get("Records", [])
    if not isinstance(records, list):
        return []
    return [record for record in records if isinstance(record, Mapping)]


def _source_queue_url(event: Mapping[str, Any]) -> str:
    """The URL of the queue the event's records came from (TO_DOWNLOAD_SQS_QUEUE_URL unset)."""
    arns = {str(record.get("eventSourceARN", "")) for record in _records(event)} - {""}
    if len(arns) != 1:
        problem = "not set, and the event names no single source queue (eventSourceARN)"
        raise ConfigError("TO_DOWNLOAD_SQS_QUEUE_URL", problem)
    (arn,) = arns
    try:
        return queue_url_of_arn(arn)
    except QueueError as exc:
        raise ConfigError("TO_DOWNLOAD_SQS_QUEUE_URL", f"not set, and {exc}") from None


#: The sweep of one directory is a few metadata calls; skipped when time is this short.
_SWEEP_MIN_SECONDS = 5.0


def process_batch(
    event: Mapping[str, Any],
    context: LambdaContext,
    *,
    attempt_context: AttemptContext,
    requeue: Requeue,
    check_url: Callable[[str], object],
    margin_seconds: float = LAMBDA_STOP_MARGIN_SECONDS,
    outage: Outage | None = None,
    metrics: Metrics | None = None,
) -> dict[str, list[dict[str, str]]]:
    """Run each record through the use case; return the partial batch response.

    Records left when time runs out, or after an infrastructure outage showed itself in
    this invocation, are not tried: they are re-added as fresh messages in one call.
    """
    outage = Outage("granule store, file store or upload queue") if outage is None else outage
    deadline = _Deadline(context.get_remaining_time_in_millis, margin_seconds)
    attempt_context = attrs.evolve(attempt_context, cancellation=deadline)
    failures: list[dict[str, str]] = []
    records = _records(event)
    if records and deadline.is_set():
        # Nothing can ever run: every invocation would hand its whole batch back.
        _log.error(
            "less time left than the stop margin of %.0f s: raise the function's timeout",
            margin_seconds,
            extra={"event": "timeout_too_short", "margin_seconds": margin_seconds},
        )
    down: Unavailable | None = None
    #: Records this invocation is done with (handled, or re-sent): deleted by the mapping,
    #: or by the handler itself when it raises for an outage.
    finished: list[Mapping[str, Any]] = []
    for index, record in enumerate(records):
        if deadline.is_set() or down is not None:
            rest = records[index:]
            delay = outage.resend_delay() if down is not None else 0
            _log.info(
                "records handed back untried",
                extra={
                    "event": "handed_back",
                    "count": len(rest),
                    "reason": "infrastructure unavailable" if down is not None else "no time left",
                },
            )
            left = _requeue_all(rest, requeue, delay)
            failures += left
            not_sent = {item["itemIdentifier"] for item in left}
            finished += [r for r in rest if str(r.get("messageId", "")) not in not_sent]
            break
        message_id = str(record.get("messageId", ""))
        result = _handle_record(record, message_id, attempt_context, check_url)
        if result is not None:
            observe(metrics or NullMetrics(), result, first_delivery=_receive_count(record) <= 1)
        if isinstance(result, Unavailable):
            # The delay of the messages handed back grows with the outage's age (resend_delay),
            # not with the invocations that meet it.
            outage.failed(result.reason, result.component)
            down = result
        elif result is not None:
            outage.recovered()
        done = _settle(record, message_id, result, requeue, outage)
        if done:
            finished.append(record)
        else:
            failures.append({"itemIdentifier": message_id})
    if down is not None:
        _end_with_outage(down, finished, requeue, metrics or NullMetrics())
    return {"batchItemFailures": failures}


def _end_with_outage(
    down: Unavailable, finished: Sequence[Mapping[str, Any]], requeue: Requeue, metrics: Metrics
) -> None:
    """Delete the finished records' messages ourselves, count the outage, and raise ``OutageMet``.

    A function error makes the mapping delete nothing, whatever the response: without these
    deletes, the re-sent messages would be done twice and the handled ones redone.
    """
    metrics.outage(down.component)
    for record in finished:
        try:
            requeue.delete(str(record.get("receiptHandle", "")))
        except QueueError:
            # It comes back after its visibility timeout; a verified granule's message is
            # then deleted without work, a re-sent one arrives twice and is claimed once.
            _log.warning(
                "could not delete a finished record's message",
                extra={"event": "delete_failed", "message_id": str(record.get("messageId", ""))},
            )
    msg = f"{down.component} unavailable: {down.reason}; the batch was handed back with a delay"
    raise OutageMet(msg)


def _receive_count(record: Mapping[str, Any]) -> int:
    """How many times the record's message was received, this time included (1 when unknown)."""
    attributes = record.get("attributes")
    raw = attributes.get("ApproximateReceiveCount", "1") if isinstance(attributes, Mapping) else "1"
    text = str(raw)
    return int(text) if text.isascii() and text.isdigit() else 1


def _body(record: Mapping[str, Any]) -> str:
    body = record.get("body")
    return body if isinstance(body, str) else ""


def _requeue(record: Mapping[str, Any], message_id: str, requeue: Requeue, delay: int) -> bool:
    """Re-add the record's body as a fresh message (Lambda then deletes this one); False if that fails.

    A fresh message rather than a batch item failure: waiting or handing back must not
    spend the receive count that the dead-letter redrive keeps for poison messages.
    """
    try:
        requeue.send(_body(record), delay)
    except QueueError:
        _log.exception(
            "could not re-add the message", extra={"event": "requeue_failed", "message_id": message_id}
        )
        return False
    return True


def _requeue_all(records: Sequence[Mapping[str, Any]], requeue: Requeue, delay: int) -> list[dict[str, str]]:
    """Re-add every record in one call; the batch item failures for those that could not be."""
    ids = [str(record.get("messageId", "")) for record in records]
    try:
        accepted = requeue.send_batch([(_body(record), delay) for record in records])
    except QueueError:
        _log.exception("could not re-add the messages", extra={"event": "requeue_failed", "count": len(ids)})
        accepted = [False] * len(ids)
    return [{"itemIdentifier": message_id} for message_id, ok in zip(ids, accepted, strict=True) if not ok]


def _handle_record(
    record: Mapping[str, Any],
    message_id: str,
    attempt_context: AttemptContext,
    check_url: Callable[[str], object],
) -> Result | None:
    """The record's result, or None when handling it raised (a bug: logged with its trace)."""
    started = time.monotonic()
    try:
        result = outcome_for(_body(record), attempt_context, check_url, message_id=message_id)
    except Exception:  # noqa: BLE001 - logged with its trace; the record comes back after its visibility timeout
        _log.exception("record failed", extra={"event": "record_failed", "message_id": message_id})
        return None
    _log.info(
        "record handled",
        extra={
            "event": "record_handled",
            "message_id": message_id,
            "outcome": type(result).__name__.lower(),
            "reason": getattr(result, "reason", ""),
            "seconds": round(time.monotonic() - started, 3),
        },
    )
    return result


def _settle(
    record: Mapping[str, Any], message_id: str, result: Result | None, requeue: Requeue, outage: Outage
) -> bool:
    """True when the record is finished with (Lambda deletes it), False to leave it to the queue."""
    if result is None:
        return False
    match action_for(result, outage_delay=outage.resend_delay()):
        case Delete():
            return True
        case Resend(delay_seconds=delay):
            return _requeue(record, message_id, requeue, delay)
        case HandBack():
            return _requeue(record, message_id, requeue, 0)
        case LeaveForRedrive():
            return False
