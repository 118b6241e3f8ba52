"""The AWS Lambda handler (CONTRACT section 7): a thin SQS batch handler with partial batch response.

Adapters are built once per execution environment and reused by every invocation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any, Protocol

import attrs

from s2_downloader.domain import Ports
from s2_downloader.domain.errors import QueueError
from s2_downloader.entrypoints.config import Settings
from s2_downloader.entrypoints.dispatch import (
    Delete,
    HandBack,
    LeaveForRedrive,
    Resend,
    action_for,
    outcome_for,
)
from s2_downloader.entrypoints.logs import configure_logging
from s2_downloader.entrypoints.wiring import Container, build

__all__ = ["LambdaContext", "handler", "process_batch"]

_log = logging.getLogger("s2_downloader.lambda")

#: Below this much remaining time a record is not started, and a running one is handed back.
_STOP_MARGIN_SECONDS = 20.0

_container: Container | None = None


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


@attrs.frozen
class _Deadline:
    """Set once the invocation is about to run out of time (the use case's Cancellation)."""

    remaining_ms: Callable[[], int]
    margin: float

    def is_set(self) -> bool:
        return self.remaining_ms() / 1000 < self.margin


def handler(event: Mapping[str, Any], context: LambdaContext) -> dict[str, list[dict[str, str]]]:
    """Handle an SQS batch; name only the records to retry in ``batchItemFailures``."""
    global _container  # noqa: PLW0603 - one container per execution environment, by design
    if _container is None:
        configure_logging()
        _container = build(Settings.from_env(), concurrency=1)
    return process_batch(
        event,
        context,
        ports=_container.ports,
        requeue=_container.download_queue,
        allowed_origins=_container.allowed_origins,
    )


def process_batch(
    event: Mapping[str, Any],
    context: LambdaContext,
    *,
    ports: Ports,
    requeue: Requeue,
    allowed_origins: Collection[tuple[str, str, int]],
    margin_seconds: float = _STOP_MARGIN_SECONDS,
) -> dict[str, list[dict[str, str]]]:
    """Run each record through the use case; return the partial batch response."""
    deadline = _Deadline(context.get_remaining_time_in_millis, margin_seconds)
    ports = attrs.evolve(ports, cancellation=deadline)
    failures: list[dict[str, str]] = []
    for record in event.get("Records", []):
        message_id = str(record.get("messageId", ""))
        if deadline.is_set():
            _log.info(
                "no time left; record handed back", extra={"event": "handed_back", "message_id": message_id}
            )
            done = _requeue(record, message_id, requeue, 0)
        else:
            done = _handle_record(record, message_id, ports, requeue, allowed_origins)
        if not done:
            failures.append({"itemIdentifier": message_id})
    return {"batchItemFailures": failures}


def _requeue(record: Mapping[str, Any], message_id: str, requeue: Requeue, delay: int) -> bool:
    """Re-add the record's body as a fresh message (Lambda then deletes this one); False if that fails.

    A fresh message rather than a batch item failure: waiting or handing back must not
    spend the receive count that the dead-letter redrive keeps for poison messages.
    """
    try:
        requeue.send(str(record.get("body", "")), delay)
    except QueueError:
        _log.exception(
            "could not re-add the message", extra={"event": "requeue_failed", "message_id": message_id}
        )
        return False
    return True


def _handle_record(
    record: Mapping[str, Any],
    message_id: str,
    ports: Ports,
    requeue: Requeue,
    allowed_origins: Collection[tuple[str, str, int]],
) -> bool:
    """True when the record is finished with (Lambda deletes it), False to leave it to the queue."""
    body = record.get("body")
    started = time.monotonic()
    try:
        outcome = outcome_for(
            body if isinstance(body, str) else "", ports, allowed_origins, message_id=message_id
        )
    except Exception:  # noqa: BLE001 - logged with its trace; the record comes back after its visibility timeout
        _log.exception("record failed", extra={"event": "record_failed", "message_id": message_id})
        return False
    _log.info(
        "record handled",
        extra={
            "event": "record_handled",
            "message_id": message_id,
            "outcome": type(outcome).__name__.lower(),
            "reason": getattr(outcome, "reason", ""),
            "seconds": round(time.monotonic() - started, 3),
        },
    )
    match action_for(outcome):
        case Delete():
            return True
        case Resend(delay_seconds=delay):
            return _requeue(record, message_id, requeue, delay)
        case HandBack():
            return _requeue(record, message_id, requeue, 0)
        case LeaveForRedrive():
            return False
