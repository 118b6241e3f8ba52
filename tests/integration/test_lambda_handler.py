"""The Lambda handler over the real stack, fed SQS events built from what moto's receive_message returns."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import attrs
import pytest

from s2_downloader.entrypoints import lambda_handler
from s2_downloader.entrypoints.config import Settings
from s2_downloader.entrypoints.wiring import Container, build
from s2_downloader.testing.hubsim import Fault
from s2_downloader.testing.stack import Pipeline
from tests.integration.e2e import assert_verified, rows, upload_bodies

KIB = 1024


@attrs.define
class FakeLambdaContext:
    """The attributes and method AWS passes as the Lambda context."""

    deadline: float = attrs.field(factory=lambda: time.monotonic() + 900)
    function_name: str = "s2-downloader"
    function_version: str = "$LATEST"
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:s2-downloader"
    memory_limit_in_mb: int = 1024
    aws_request_id: str = "c0ffee00-0000-4000-8000-000000000000"
    log_group_name: str = "/aws/lambda/s2-downloader"
    log_stream_name: str = "2026/11/28/[$LATEST]0123456789abcdef"

    def get_remaining_time_in_millis(self) -> int:
        return int((self.deadline - time.monotonic()) * 1000)


def _event(pipeline: Pipeline, expected: int) -> dict[str, Any]:
    """Receive ``expected`` messages from moto and shape them as the SQS event source mapping does."""
    client = pipeline.services.sqs.client()
    arn = client.get_queue_attributes(QueueUrl=pipeline.queues.download_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    messages: list[Any] = []
    while len(messages) < expected:
        got = client.receive_message(
            QueueUrl=pipeline.queues.download_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages += got.get("Messages", [])
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": m.get("MessageAttributes", {}),
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": arn,
                "awsRegion": "us-east-1",
            }
            for m in messages
        ]
    }


@pytest.fixture
def aws_env(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """boto3 in this process reaches moto, as the standard AWS variables say."""
    for key, value in pipeline.services.sqs.env().items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def container(pipeline: Pipeline, aws_env: None) -> Iterator[Container]:
    """The Lambda's adapters built from the pipeline's environment."""
    built = build(Settings.from_env(pipeline.env()), concurrency=1, long_poll=False)
    yield built
    built.close()


def _message_ids(event: dict[str, Any], body_predicate: Any) -> list[str]:
    return [r["messageId"] for r in event["Records"] if body_predicate(r["body"])]


def _process(container: Container, event: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    return lambda_handler.process_batch(
        event,
        FakeLambdaContext(),
        ports=container.ports,
        requeue=container.download_queue,
        check_url=container.check_download_url,
    )


def test_a_batch_with_a_transient_failure_a_bad_record_and_a_duplicate(
    pipeline: Pipeline, container: Container
) -> None:
    """Only the bad record is reported; the throttled one is re-added; the duplicate is done."""
    products = pipeline.seed(
        [("LOK", 200 * KIB), ("LSLOW", 200 * KIB)], faults={"LSLOW": [Fault.status(503, retry_after="1")]}
    )
    client = pipeline.services.sqs.client()
    client.send_message(QueueUrl=pipeline.queues.download_url, MessageBody="{broken")
    client.send_message(QueueUrl=pipeline.queues.download_url, MessageBody=pipeline.message("LOK"))
    event = _event(pipeline, 4)
    response = _process(container, event)
    assert {
        "batchItemFailures": [{"itemIdentifier": i} for i in _message_ids(event, lambda b: b == "{broken")]
    } == (response)
    assert_verified(pipeline, [products[0]])
    assert ["LOK"] == [b["id"] for b in upload_bodies(pipeline)]
    assert "retrying" == rows(pipeline)["LSLOW"]["state"]
    time.sleep(1.5)
    again = _event(pipeline, 1)
    assert [json.loads(pipeline.message("LSLOW"))] == [json.loads(r["body"]) for r in again["Records"]]
    assert {"batchItemFailures": []} == _process(container, again)
    assert_verified(pipeline, products)


@pytest.mark.usefixtures("aws_env")
def test_a_batch_where_every_record_fails(pipeline: Pipeline) -> None:
    """Granules whose budget is spent are all reported as batch item failures."""
    pipeline.seed(
        [(f"LBAD{i}", 64 * KIB) for i in range(3)], faults={f"LBAD{i}": [Fault.corrupt()] for i in range(3)}
    )
    built = build(Settings.from_env(pipeline.env(MAX_DOWNLOAD_RETRIES="0")), concurrency=1, long_poll=False)
    try:
        event = _event(pipeline, 3)
        response = _process(built, event)
    finally:
        built.close()
    assert {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in event["Records"]]} == response
    assert {"failed"} == {row["state"] for row in rows(pipeline).values()}


def test_the_handler_builds_its_container_once(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two invocations in one execution environment share the connection pools."""
    for key, value in pipeline.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(lambda_handler, "_container", None)
    products = pipeline.seed([("LCOLD", 64 * KIB), ("LWARM", 64 * KIB)])
    first = lambda_handler.handler(_event(pipeline, 1), FakeLambdaContext())
    built = lambda_handler._container
    second = lambda_handler.handler(_event(pipeline, 1), FakeLambdaContext())
    assert ({"batchItemFailures": []}, {"batchItemFailures": []}) == (first, second)
    assert built is lambda_handler._container
    assert_verified(pipeline, products)
    assert built is not None
    built.close()
