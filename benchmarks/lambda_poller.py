"""``python -m benchmarks.lambda_poller``: the SQS event source mapping, played for the real handler.

Long-polls the download queue, shapes each batch as the event source mapping does
(``Records`` with ``messageId``, ``receiptHandle``, ``body``, ``eventSourceARN``), calls
``s2_downloader.entrypoints.lambda_handler.handler`` in this process (one execution
environment, reused across invocations, as Lambda reuses a warm container), and then
does what the mapping does with ReportBatchItemFailures on: deletes every record not
named in ``batchItemFailures``; when the handler raises, deletes nothing (the whole
batch returns after its visibility timeout). Configured by the same environment as
``s2-downloader run``. Stops on SIGTERM or once the queue has read empty three times
in a row, one second apart. Prints one JSON line per invocation on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from typing import Any

import boto3

from s2_downloader.entrypoints import lambda_handler
from s2_downloader.testing.lambda_runtime import sqs_event

__all__ = ["main"]

_COUNTS = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]


class _Context:
    """The Lambda context: a fixed budget per invocation, counted down on a monotonic clock."""

    def __init__(self, seconds: float) -> None:
        self._deadline = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def _empty(client: Any, url: str) -> bool:
    attributes = client.get_queue_attributes(QueueUrl=url, AttributeNames=_COUNTS)["Attributes"]
    return all(int(attributes.get(name, "0")) == 0 for name in _COUNTS)


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
    args = parser.parse_args(argv)
    url = os.environ["TO_DOWNLOAD_SQS_QUEUE_URL"]
    client = boto3.client("sqs")
    arn = client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    empty_readings = 0
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
        try:
            response = lambda_handler.handler(sqs_event(messages, arn), _Context(args.timeout))
        except Exception as exc:  # noqa: BLE001 - what Lambda records as an Errors datapoint
            print(json.dumps({"records": len(messages), "error": type(exc).__name__}), flush=True)
            continue
        named = {item["itemIdentifier"] for item in response.get("batchItemFailures", [])}
        for message in messages:
            if message["MessageId"] not in named:
                client.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        print(
            json.dumps(
                {
                    "records": len(messages),
                    "named": len(named),
                    "seconds": round(time.monotonic() - started, 3),
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
