"""The Lambda handler over the real stack, fed SQS events built from what moto's receive_message returns."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import attrs
import pytest

from s2_downloader.entrypoints import lambda_handler
from s2_downloader.entrypoints.config import ConfigError, Settings
from s2_downloader.entrypoints.wiring import Container, build
from s2_downloader.testing.hubsim import Fault
from s2_downloader.testing.lambda_runtime import sqs_event
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


#: Received messages stay hidden this long, so none comes back while a test runs, whatever
#: the queue's own visibility timeout: a batch item failure left alone would return after it.
_HIDDEN_SECONDS = 300
#: The longest any test waits for the messages it expects.
_RECEIVE_SECONDS = 30


def _event(pipeline: Pipeline, expected: int) -> dict[str, Any]:
    """Receive exactly ``expected`` messages from moto and shape them as the SQS event source mapping does."""
    client = pipeline.services.sqs.client()
    arn = client.get_queue_attributes(QueueUrl=pipeline.queues.download_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    messages: list[Any] = []
    deadline = time.monotonic() + _RECEIVE_SECONDS
    while len(messages) < expected and time.monotonic() < deadline:
        got = client.receive_message(
            QueueUrl=pipeline.queues.download_url,
            # Never more than expected: a second event must find its own message still there.
            MaxNumberOfMessages=min(10, expected - len(messages)),
            WaitTimeSeconds=1,
            VisibilityTimeout=_HIDDEN_SECONDS,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages += got.get("Messages", [])
    assert expected == len(messages), (
        f"{len(messages)} of {expected} messages arrived in {_RECEIVE_SECONDS} s"
    )
    return sqs_event(messages, arn)


def _acknowledge(
    pipeline: Pipeline, event: dict[str, Any], response: dict[str, list[dict[str, str]]]
) -> dict[str, list[dict[str, str]]]:
    """Delete every record not reported in ``batchItemFailures``, as the event source mapping does."""
    failed = {item["itemIdentifier"] for item in response["batchItemFailures"]}
    client = pipeline.services.sqs.client()
    for record in event["Records"]:
        if record["messageId"] not in failed:
            client.delete_message(
                QueueUrl=pipeline.queues.download_url, ReceiptHandle=record["receiptHandle"]
            )
    return response


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


def _process(
    pipeline: Pipeline, container: Container, event: dict[str, Any]
) -> dict[str, list[dict[str, str]]]:
    """Run the batch, then delete what the event source mapping would."""
    response = lambda_handler.process_batch(
        event,
        FakeLambdaContext(),
        attempt_context=container.context,
        requeue=container.download_queue,
        check_url=container.check_download_url,
    )
    return _acknowledge(pipeline, event, response)


def _invoke(pipeline: Pipeline, event: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    """Call the handler, then delete what the event source mapping would."""
    return _acknowledge(pipeline, event, lambda_handler.handler(event, FakeLambdaContext()))


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
    response = _process(pipeline, container, event)
    assert {
        "batchItemFailures": [{"itemIdentifier": i} for i in _message_ids(event, lambda b: b == "{broken")]
    } == (response)
    assert_verified(pipeline, [products[0]])
    assert ["LOK"] == [b["id"] for b in upload_bodies(pipeline)]
    assert "retrying" == rows(pipeline)["LSLOW"]["state"]
    again = _event(pipeline, 1)  # the re-sent one, once its delay is over; the rest were deleted
    assert [json.loads(pipeline.message("LSLOW"))] == [json.loads(r["body"]) for r in again["Records"]]
    assert {"batchItemFailures": []} == _process(pipeline, container, again)
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
        response = _process(pipeline, built, event)
    finally:
        built.close()
    assert {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in event["Records"]]} == response
    assert {"failed"} == {row["state"] for row in rows(pipeline).values()}


@pytest.fixture
def cold_start(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Container]]:
    """The pipeline's environment, a fresh execution environment; the containers listed closed after."""
    for key, value in pipeline.env().items():
        monkeypatch.setenv(key, value)
    lambda_handler._container.cache_clear()
    opened: list[Container] = []
    yield opened
    for container in opened:
        container.close()
    lambda_handler._container.cache_clear()


def _built(event: dict[str, Any], opened: list[Container]) -> Container:
    """The container the handler keeps for ``event`` (already built: the cache answers)."""
    container = lambda_handler._container(lambda_handler._settings(event))
    if all(container is not other for other in opened):
        opened.append(container)
    return container


def test_the_handler_builds_its_container_once(pipeline: Pipeline, cold_start: list[Container]) -> None:
    """Two invocations in one execution environment share the connection pools."""
    products = pipeline.seed([("LCOLD", 64 * KIB), ("LWARM", 64 * KIB)])
    cold, warm = _event(pipeline, 1), _event(pipeline, 1)
    responses = (_invoke(pipeline, cold), _invoke(pipeline, warm))
    cache = lambda_handler._container.cache_info()
    assert ({"batchItemFailures": []}, {"batchItemFailures": []}) == responses
    assert (1, 1) == (cache.misses, cache.hits)
    assert _built(cold, cold_start) is _built(warm, cold_start)
    assert_verified(pipeline, products)


def test_without_a_queue_url_the_handler_resends_to_the_event_source(
    pipeline: Pipeline, cold_start: list[Container], monkeypatch: pytest.MonkeyPatch
) -> None:
    """TO_DOWNLOAD_SQS_QUEUE_URL unset (as in HLS): a deferral is re-sent to the eventSourceARN's queue."""
    monkeypatch.delenv("TO_DOWNLOAD_SQS_QUEUE_URL")
    pipeline.seed([("LSOURCE", 64 * KIB)], faults={"LSOURCE": [Fault.status(503, retry_after="1")]})
    event = _event(pipeline, 1)
    response = _invoke(pipeline, event)
    built = _built(event, cold_start)
    assert ({"batchItemFailures": []}, pipeline.queues.download_url) == (response, built.download_queue.url)
    # The original was deleted: what arrives is the re-sent copy, once its delay is over.
    assert [json.loads(pipeline.message("LSOURCE"))] == [
        json.loads(r["body"]) for r in _event(pipeline, 1)["Records"]
    ]


@pytest.mark.usefixtures("cold_start")
def test_without_a_queue_url_or_an_event_source_the_handler_names_the_variable(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No TO_DOWNLOAD_SQS_QUEUE_URL and no eventSourceARN: a configuration error naming the variable."""
    monkeypatch.delenv("TO_DOWNLOAD_SQS_QUEUE_URL")
    record = {"messageId": "m1", "receiptHandle": "r1", "body": pipeline.message("LNONE")}
    with pytest.raises(ConfigError) as caught:
        lambda_handler.handler({"Records": [record]}, FakeLambdaContext())
    assert "TO_DOWNLOAD_SQS_QUEUE_URL" == caught.value.variable


def test_the_handler_raises_when_every_record_stays(pipeline: Pipeline, cold_start: list[Container]) -> None:
    """A batch whose every record must stay raises, so a mapping without partial responses keeps it."""
    client = pipeline.services.sqs.client()
    client.send_message(QueueUrl=pipeline.queues.download_url, MessageBody="{broken")
    event = _event(pipeline, 1)
    with pytest.raises(lambda_handler.BatchNotHandled):
        lambda_handler.handler(event, FakeLambdaContext())
    _built(event, cold_start)
