"""``python -m benchmarks.lambda_poller``: the SQS event source mapping, played for the real handler.

Long-polls the download queue, shapes each batch as the event source mapping does
(``Records`` with ``messageId``, ``receiptHandle``, ``body``, ``eventSourceARN``), calls
``s2_downloader.entrypoints.lambda_handler.handler`` in this process (one execution
environment, reused across invocations, as Lambda reuses a warm container), and then
does what the mapping does with ReportBatchItemFailures on: deletes every record not
named in ``batchItemFailures``; when the handler raises, deletes nothing (the whole
batch returns after its visibility timeout). Configured by the same environment as
``s2-downloader run``. Stops on SIGTERM or once the queue has read empty three times
in a row, one second apart. With ``--error-backoff SECONDS``, after an invocation that
raised, the next receive waits SECONDS, doubled for each further error in a row (up to
``--error-backoff-max``), until one returns: the mapping's back-off after function errors
when it does not report batch item failures (AWS: "Lambda gradually backs off, reducing
the amount of concurrency allocated to your Amazon SQS event source mapping"; with
ReportBatchItemFailures it does not scale polling down). Prints one JSON line per
invocation on stdout (where the handler's EMF records go too). With ``--record PATH``
it also appends one JSON line per invocation to PATH: every message received
(``MessageId``, ``ApproximateReceiveCount``), the invocation's outcome (returned, or the
exception type it raised), its start and end on the monotonic clock, and the handler's
log events that say it met an outage.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import boto3

from s2_downloader.entrypoints import lambda_handler
from s2_downloader.testing.lambda_runtime import sqs_event

__all__ = ["OUTAGE_EVENTS", "main"]

_COUNTS = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]

#: Handler log events that say an invocation met our own infrastructure failing (besides
#: a record whose outcome was ``unavailable``): a cold start retried or given up, a store
#: error whose health check failed, a record whose handling raised, a re-send or delete
#: that the queue refused.
OUTAGE_EVENTS = frozenset(
    {"cold_start_retry", "outage", "store_unhealthy", "record_failed", "requeue_failed", "delete_failed"}
)


class _Context:
    """The Lambda context: a fixed budget per invocation, counted down on a monotonic clock."""

    def __init__(self, seconds: float) -> None:
        self._deadline = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class _Signals(logging.Handler):
    """Collects, during one invocation, the handler's log events that show an outage."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.seen: list[dict[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        event = str(getattr(record, "event", ""))
        outcome = str(getattr(record, "outcome", ""))
        if event in OUTAGE_EVENTS or (event == "record_handled" and outcome == "unavailable"):
            self.seen.append({"event": event, "component": str(getattr(record, "component", ""))})


def _empty(client: Any, url: str) -> bool:
    attributes = client.get_queue_attributes(QueueUrl=url, AttributeNames=_COUNTS)["Attributes"]
    return all(int(attributes.get(name, "0")) == 0 for name in _COUNTS)


def _receive_count(message: Mapping[str, Any]) -> int:
    return int(message.get("Attributes", {}).get("ApproximateReceiveCount", "0"))


def _granule_of(body: str) -> str | None:
    """The ``id`` of a small JSON object body, else ``None`` (hostile bodies are left alone)."""
    if len(body) > 4096:
        return None
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    granule = document.get("id") if isinstance(document, dict) else None
    return granule if isinstance(granule, str) else None


def _invoke(
    messages: Sequence[Mapping[str, Any]], arn: str, timeout: float, signals: _Signals
) -> tuple[dict[str, Any] | None, Exception | None]:
    """One invocation: the handler's response, or the exception it raised."""
    signals.seen = []
    try:
        return lambda_handler.handler(sqs_event(messages, arn), _Context(timeout)), None
    except Exception as exc:  # noqa: BLE001 - what Lambda records as an Errors datapoint
        return None, exc


def main(argv: list[str] | None = None) -> int:
    """Poll until stopped or the queue stays empty; exit 0."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lambda_poller", description=__doc__)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per invocation")
    parser.add_argument(
        "--visibility",
        type=int,
        default=None,
        help="hide received messages this long (default: the queue's); must outlast an invocation",
    )
    parser.add_argument("--record", default=None, help="append one JSON line per invocation to this file")
    parser.add_argument(
        "--error-backoff",
        type=float,
        default=0.0,
        help="seconds to wait after a function error, doubled per error in a row (0: none)",
    )
    parser.add_argument("--error-backoff-max", type=float, default=8.0, help="the longest such wait")
    args = parser.parse_args(argv)
    url = os.environ["TO_DOWNLOAD_SQS_QUEUE_URL"]
    client = boto3.client("sqs")
    arn = client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signals = _Signals()
    logging.getLogger("s2_downloader").addHandler(signals)
    empty_readings = 0
    errors_in_a_row = 0
    with contextlib.ExitStack() as stack:
        record = (
            None
            if args.record is None
            else stack.enter_context(Path(args.record).open("a", encoding="utf-8"))
        )
        while not stop.is_set():
            hide = {} if args.visibility is None else {"VisibilityTimeout": args.visibility}
            messages = client.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=args.batch_size,
                WaitTimeSeconds=1,
                AttributeNames=["All"],
                **hide,
            ).get("Messages", [])
            if not messages:
                empty_readings = empty_readings + 1 if _empty(client, url) else 0
                if empty_readings >= 3:
                    break
                time.sleep(1)
                continue
            empty_readings = 0
            started = time.monotonic()
            response, error = _invoke(messages, arn, args.timeout, signals)
            ended = time.monotonic()
            if record is not None:
                line = {
                    "start": started,
                    "end": ended,
                    "messages": [
                        {
                            "id": m["MessageId"],
                            "receive_count": _receive_count(m),
                            "granule": _granule_of(m["Body"]),
                        }
                        for m in messages
                    ],
                    "outcome": "returned" if error is None else "raised",
                    "error": None if error is None else type(error).__name__,
                    "detail": None if error is None else str(error)[:300],
                    "signals": signals.seen,
                }
                record.write(json.dumps(line) + "\n")
                record.flush()
            if error is not None or response is None:
                name = type(error).__name__
                print(json.dumps({"records": len(messages), "error": name}), flush=True)
                errors_in_a_row += 1
                if args.error_backoff > 0:
                    pause = args.error_backoff * 2.0 ** min(errors_in_a_row - 1, 16)
                    stop.wait(min(args.error_backoff_max, pause))
                continue
            errors_in_a_row = 0
            named = {item["itemIdentifier"] for item in response.get("batchItemFailures", [])}
            for message in messages:
                if message["MessageId"] not in named:
                    client.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            print(
                json.dumps(
                    {"records": len(messages), "named": len(named), "seconds": round(ended - started, 3)}
                ),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
