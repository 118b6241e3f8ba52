"""The throwaway SQS server: it starts, serves, configures queues and subprocesses, and stops."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from s2_downloader.testing.sqs import REGION, QueueSet, SqsServerError, ThrowawaySqs

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient

    from tests.integration.fixtures_sqs import MakeQueues


def _refuses_connections(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return True
    return False


def test_the_session_server_answers_sqs_calls(sqs_server: ThrowawaySqs, sqs_client: SQSClient) -> None:
    """The running server answers an SQS call from its client on 127.0.0.1."""
    response = sqs_client.list_queues()

    assert sqs_server.running
    assert sqs_server.endpoint_url.startswith("http://127.0.0.1:")
    assert 200 == response["ResponseMetadata"]["HTTPStatusCode"]


def test_create_queues_redrives_the_download_queue_to_the_dead_letter_queue(
    sqs_client: SQSClient, make_sqs_queues: MakeQueues
) -> None:
    """The download queue gets the visibility timeout asked for and a redrive policy to the dead letters."""
    queues = make_sqs_queues(visibility_timeout=45, max_receive_count=4)

    download = sqs_client.get_queue_attributes(QueueUrl=queues.download_url, AttributeNames=["All"])
    dead_letter = sqs_client.get_queue_attributes(
        QueueUrl=queues.dead_letter_url, AttributeNames=["QueueArn"]
    )

    redrive = json.loads(download["Attributes"]["RedrivePolicy"])
    assert dead_letter["Attributes"]["QueueArn"] == redrive["deadLetterTargetArn"]
    assert 4 == int(redrive["maxReceiveCount"])
    assert "45" == download["Attributes"]["VisibilityTimeout"]
    assert queues.upload_url.endswith("-upload")


def test_a_subprocess_reaches_the_server_with_env(sqs_server: ThrowawaySqs, sqs_queues: QueueSet) -> None:
    """A child process given env() and nothing else from AWS finds the queues with plain boto3."""
    child_env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    child_env.update(sqs_server.env())
    script = "import boto3; print('\\n'.join(boto3.client('sqs').list_queues()['QueueUrls']))"

    result = subprocess.run(
        [sys.executable, "-c", script], env=child_env, capture_output=True, text=True, timeout=60, check=True
    )

    assert sqs_queues.download_url in result.stdout.split()
    assert {
        "AWS_ENDPOINT_URL_SQS": sqs_server.endpoint_url,
        "AWS_ENDPOINT_URL": sqs_server.endpoint_url,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    } == sqs_server.env()


def test_stop_ends_the_server_and_can_be_repeated() -> None:
    """After stop the port refuses connections, the process is gone, and stopping again is harmless."""
    server = ThrowawaySqs().start()
    url = server.endpoint_url

    server.stop()
    server.stop()

    assert not server.running
    assert _refuses_connections(url)
    with pytest.raises(SqsServerError, match="not running"):
        _ = server.endpoint_url


def test_a_server_that_does_not_answer_in_time_is_stopped_and_reported() -> None:
    """A startup that outlives its deadline raises SqsServerError and leaves no process behind."""
    server = ThrowawaySqs(startup_timeout=0)

    with pytest.raises(SqsServerError, match="did not answer"):
        server.start()

    assert not server.running


def test_a_host_that_cannot_be_bound_is_reported() -> None:
    """A host address this machine does not have raises SqsServerError naming it."""
    with pytest.raises(SqsServerError, match=r"192\.0\.2\.1"):
        ThrowawaySqs(host="192.0.2.1").start()


def test_the_endpoint_is_unknown_before_start() -> None:
    """Asking for the endpoint of a server never started raises SqsServerError."""
    with pytest.raises(SqsServerError, match="start"):
        _ = ThrowawaySqs().endpoint_url
