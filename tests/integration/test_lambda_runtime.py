"""The Lambda handler under AWS's runtime interface client (awslambdaric), in both event source mapping modes.

A small Runtime API (``s2_downloader.testing.lambda_runtime``) feeds the real client SQS
events received from moto, and this module plays the event source mapping: without
ReportBatchItemFailures (HLS today: batch size 1) a response deletes every record and an
error deletes none; with it, a response deletes the records it does not name.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from s2_downloader.testing.hubsim import Fault
from s2_downloader.testing.lambda_runtime import Function, Invocation, RuntimeApi, sqs_event, start_function
from s2_downloader.testing.stack import Pipeline
from tests.integration.e2e import assert_verified, rows

KIB = 1024
HANDLER = "s2_downloader.entrypoints.lambda_handler.handler"


@pytest.fixture
def runtime_api() -> Iterator[RuntimeApi]:
    """A Runtime API for one function process."""
    with RuntimeApi() as api:
        yield api


@pytest.fixture
def cdse(pipeline: Pipeline) -> Pipeline:
    """The pipeline with CDSE messages (catalogue links, .SAFE names) on split origins."""
    pipeline.hub_api = "cdse"
    return pipeline


@pytest.fixture
def function(cdse: Pipeline, runtime_api: RuntimeApi) -> Iterator[Function]:
    """The handler under awslambdaric, configured as HLS configures its downloader: no queue URL."""
    env = cdse.env()
    # HLS's downloader has no TO_DOWNLOAD_SQS_QUEUE_URL: the queue comes from eventSourceARN.
    del env["TO_DOWNLOAD_SQS_QUEUE_URL"]
    started = start_function(runtime_api, HANDLER, env)
    yield started
    started.stop()


def _receive(pipeline: Pipeline, count: int) -> list[Any]:
    client = pipeline.services.sqs.client()
    messages: list[Any] = []
    deadline = time.monotonic() + 15
    while len(messages) < count and time.monotonic() < deadline:
        messages += client.receive_message(
            QueueUrl=pipeline.queues.download_url,
            MaxNumberOfMessages=count - len(messages),
            WaitTimeSeconds=1,
            VisibilityTimeout=60,
            MessageSystemAttributeNames=["All"],
        ).get("Messages", [])
    assert count == len(messages)
    return messages


def _deliver(
    pipeline: Pipeline,
    api: RuntimeApi,
    function: Function,
    *,
    batch_size: int,
    report_batch_item_failures: bool,
) -> Invocation:
    """Play the event source mapping once: receive, invoke, delete what the mapping would delete."""
    client = pipeline.services.sqs.client()
    arn = client.get_queue_attributes(QueueUrl=pipeline.queues.download_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    messages = _receive(pipeline, batch_size)
    event = sqs_event(messages, arn)
    result = api.invoke(event, timeout_seconds=900, wait_seconds=120, process=function.process)
    if result.outcome == "error":
        return result  # the mapping deletes nothing: every message comes back after its visibility timeout
    named = set()
    if report_batch_item_failures:
        named = {item["itemIdentifier"] for item in result.body["batchItemFailures"]}
    for message in messages:
        if message["MessageId"] not in named:
            client.delete_message(
                QueueUrl=pipeline.queues.download_url, ReceiptHandle=message["ReceiptHandle"]
            )
    return result


def _counts(pipeline: Pipeline) -> tuple[int, int, int]:
    """(visible, in flight, delayed) on the download queue."""
    attributes = pipeline.services.sqs.client().get_queue_attributes(
        QueueUrl=pipeline.queues.download_url, AttributeNames=["All"]
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
        int(attributes["ApproximateNumberOfMessagesDelayed"]),
    )


def _send(pipeline: Pipeline, body: str) -> None:
    pipeline.services.sqs.client().send_message(QueueUrl=pipeline.queues.download_url, MessageBody=body)


def test_batch_size_one_without_partial_responses(
    cdse: Pipeline, runtime_api: RuntimeApi, function: Function
) -> None:
    """HLS's mapping: verified and deferred records answer, bad input raises and its message stays."""
    (good,) = cdse.seed([("RTGOOD", 200 * KIB)])
    done = _deliver(cdse, runtime_api, function, batch_size=1, report_batch_item_failures=False)
    assert ("response", {"batchItemFailures": []}) == (done.outcome, done.body)
    assert_verified(cdse, [good])
    assert (0, 0, 0) == _counts(cdse)

    cdse.seed([("RTSLOW", 64 * KIB)], faults={"RTSLOW": [Fault.status(503, retry_after="30")]})
    deferred = _deliver(cdse, runtime_api, function, batch_size=1, report_batch_item_failures=False)
    # Re-sent with a delay to the queue named by eventSourceARN, then answered: the original goes.
    assert ("response", {"batchItemFailures": []}) == (deferred.outcome, deferred.body)
    assert (0, 0, 1) == _counts(cdse)
    assert "retrying" == rows(cdse)["RTSLOW"]["state"]

    bad = json.dumps({"id": "RTBAD", "filename": "RTBAD.SAFE", "download_url": "https://evil.example/x"})
    _send(cdse, bad)
    refused = _deliver(cdse, runtime_api, function, batch_size=1, report_batch_item_failures=False)
    assert ("error", "BatchNotHandled") == (refused.outcome, refused.body["errorType"])
    assert (0, 1, 1) == _counts(cdse)
    assert function.process.poll() is None


def test_partial_batch_responses(cdse: Pipeline, runtime_api: RuntimeApi, function: Function) -> None:
    """With ReportBatchItemFailures only the bad record stays; a batch of nothing but bad records raises."""
    products = cdse.seed([("RTP1", 100 * KIB), ("RTP2", 150 * KIB)])
    _send(cdse, "{not json")
    mixed = _deliver(cdse, runtime_api, function, batch_size=3, report_batch_item_failures=True)
    assert "response" == mixed.outcome
    assert 1 == len(mixed.body["batchItemFailures"])
    assert_verified(cdse, products)
    assert (0, 1, 0) == _counts(cdse)

    _send(cdse, "[]")
    unsafe = {"id": "RTX", "filename": "../RTX.SAFE", "download_url": cdse.download_url("RTX")}
    _send(cdse, json.dumps(unsafe))
    refused = _deliver(cdse, runtime_api, function, batch_size=2, report_batch_item_failures=True)
    assert ("error", "BatchNotHandled") == (refused.outcome, refused.body["errorType"])
    assert (0, 3, 0) == _counts(cdse)
