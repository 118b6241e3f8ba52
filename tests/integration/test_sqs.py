"""The SQS adapter against moto's server over HTTP."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from s2_downloader.adapters.sqs import (
    QueueCounts,
    ReceiptExpired,
    ReceivedMessage,
    SqsQueue,
    SqsUploadQueue,
)
from s2_downloader.domain.errors import QueueError
from s2_downloader.domain.ports import UploadQueue
from s2_downloader.testing.sqs import QueueSet, ThrowawaySqs

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient

    from tests.integration.fixtures_sqs import MakeQueues


@pytest.fixture
def download(sqs_client: SQSClient, sqs_queues: QueueSet) -> SqsQueue:
    """The adapter on a fresh download queue."""
    return SqsQueue(sqs_client, sqs_queues.download_url)


def _receive_one(queue: SqsQueue, **options: int) -> ReceivedMessage:
    messages = queue.receive(wait_seconds=5, **options)
    assert 1 == len(messages)
    return messages[0]


def test_a_sent_message_is_received_with_its_body_and_attributes(download: SqsQueue) -> None:
    """A sent message comes back with its id, body, first receive count and send time."""
    before = time.time()
    message_id = download.send('{"id": "g1"}')

    message = _receive_one(download)

    assert message_id == message.message_id
    assert '{"id": "g1"}' == message.body
    assert 1 == message.receive_count
    assert message.receipt_handle
    assert message.sent_at is not None
    assert abs(message.sent_at.timestamp() - before) < 60


def test_delete_removes_the_message_from_the_queue(download: SqsQueue) -> None:
    """After delete the queue holds nothing, visible or in flight."""
    download.send("body")
    message = _receive_one(download)

    download.delete(message.receipt_handle)

    assert QueueCounts(visible=0, in_flight=0, delayed=0) == download.counts()
    assert download.counts().empty


def test_counts_tell_visible_in_flight_and_delayed_apart(download: SqsQueue) -> None:
    """One message of each kind shows up in its own count."""
    download.send("in flight")
    _receive_one(download, max_messages=1)
    download.send("visible")
    download.send("delayed", delay_seconds=600)

    assert QueueCounts(visible=1, in_flight=1, delayed=1) == download.counts()


def test_change_visibility_to_zero_makes_the_message_visible_again(download: SqsQueue) -> None:
    """A message handed back with visibility 0 is received again, its receive count up by one."""
    download.send("again")
    first = _receive_one(download)

    download.change_visibility(first.receipt_handle, 0)
    second = _receive_one(download)

    assert first.message_id == second.message_id
    assert 2 == second.receive_count


def test_change_visibility_keeps_the_message_hidden_for_the_given_time(download: SqsQueue) -> None:
    """A message whose 1 s visibility is extended to 600 s does not come back after 1 s."""
    download.send("hidden")
    message = _receive_one(download, visibility_timeout=1)

    download.change_visibility(message.receipt_handle, 600)

    assert [] == download.receive(wait_seconds=2)
    assert QueueCounts(visible=0, in_flight=1, delayed=0) == download.counts()


def test_out_of_range_numbers_are_clamped_not_sent_to_fail(download: SqsQueue) -> None:
    """Delay, visibility and batch size beyond SQS's limits are clamped to them."""
    download.send("late", delay_seconds=10_000)
    download.send("now", delay_seconds=-3)
    message = _receive_one(download, max_messages=50)
    download.change_visibility(message.receipt_handle, -5)

    assert "now" == message.body
    assert QueueCounts(visible=1, in_flight=0, delayed=1) == download.counts()


def test_a_delayed_message_arrives_after_its_delay(download: SqsQueue) -> None:
    """A message sent with a delay is not there at first, then arrives."""
    download.send("soon", delay_seconds=1)

    assert [] == download.receive(wait_seconds=0)
    assert "soon" == _receive_one(download).body


def test_long_polling_returns_as_soon_as_a_message_arrives(download: SqsQueue) -> None:
    """A 20 s long poll returns the message sent while it waits, long before 20 s."""
    sender = threading.Timer(0.5, download.send, args=("arrived",))
    started = time.monotonic()
    sender.start()
    try:
        messages = download.receive(wait_seconds=20)
    finally:
        sender.join()

    assert ["arrived"] == [message.body for message in messages]
    assert time.monotonic() - started < 10


def test_long_polling_an_empty_queue_returns_nothing(download: SqsQueue) -> None:
    """A poll of an empty queue ends with an empty list."""
    assert [] == download.receive(wait_seconds=1)


def test_a_bogus_receipt_handle_raises_receipt_expired(download: SqsQueue) -> None:
    """Delete and change_visibility with a handle SQS never gave raise ReceiptExpired."""
    with pytest.raises(ReceiptExpired, match="DeleteMessage"):
        download.delete("not-a-receipt-handle")
    with pytest.raises(ReceiptExpired, match="ChangeMessageVisibility"):
        download.change_visibility("not-a-receipt-handle", 10)


def test_the_handle_of_a_deleted_message_has_expired(download: SqsQueue) -> None:
    """Changing the visibility of a message already deleted raises ReceiptExpired, a QueueError."""
    download.send("gone")
    message = _receive_one(download)
    download.delete(message.receipt_handle)

    with pytest.raises(ReceiptExpired) as caught:
        download.change_visibility(message.receipt_handle, 10)

    assert isinstance(caught.value, QueueError)
    assert isinstance(caught.value.__cause__, ClientError)


def test_a_message_received_too_often_moves_to_the_dead_letter_queue(
    sqs_client: SQSClient, make_sqs_queues: MakeQueues
) -> None:
    """After maxReceiveCount receives, the next receive moves the message to the dead-letter queue."""
    queues = make_sqs_queues(max_receive_count=2)
    download = SqsQueue(sqs_client, queues.download_url)
    dead_letter = SqsQueue(sqs_client, queues.dead_letter_url)
    download.send("poison")

    counts = [_receive_one(download, visibility_timeout=0).receive_count for _ in range(2)]
    after = download.receive(wait_seconds=0)

    assert [1, 2] == counts
    assert [] == after
    assert ["poison"] == [message.body for message in dead_letter.receive(wait_seconds=5)]


_OPERATIONS: dict[str, Callable[[SqsQueue], object]] = {
    "ReceiveMessage": lambda queue: queue.receive(wait_seconds=0),
    "SendMessage": lambda queue: queue.send("x"),
    "DeleteMessage": lambda queue: queue.delete("handle"),
    "ChangeMessageVisibility": lambda queue: queue.change_visibility("handle", 1),
    "GetQueueAttributes": lambda queue: queue.counts(),
}


@pytest.mark.parametrize("operation", sorted(_OPERATIONS))
def test_an_aws_error_becomes_a_queue_error_naming_operation_and_code(
    sqs_server: ThrowawaySqs, sqs_client: SQSClient, operation: str
) -> None:
    """Any operation on a queue that does not exist raises QueueError with the operation and error code."""
    missing = SqsQueue(sqs_client, f"{sqs_server.endpoint_url}/123456789012/no-such-queue")

    with pytest.raises(QueueError) as caught:
        _OPERATIONS[operation](missing)

    assert ReceiptExpired is not type(caught.value)
    assert f"SQS {operation} on no-such-queue failed: AWS.SimpleQueueService.NonExistentQueue" in str(
        caught.value
    )
    assert isinstance(caught.value.__cause__, ClientError)


def test_an_unreachable_endpoint_becomes_a_queue_error_without_secrets() -> None:
    """A refused connection raises QueueError naming the operation, and no password in the URL."""
    config = Config(connect_timeout=1, read_timeout=1, retries={"total_max_attempts": 1}, proxies={})
    client = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    ).client("sqs", endpoint_url="http://user:hunter2@127.0.0.1:9", config=config)
    queue = SqsQueue(client, "http://127.0.0.1:9/123456789012/nowhere")

    with pytest.raises(QueueError) as caught:
        queue.receive(wait_seconds=0)

    assert str(caught.value).startswith("SQS ReceiveMessage on nowhere failed: EndpointConnectionError")
    assert "hunter2" not in str(caught.value)
    assert isinstance(caught.value.__cause__, BotoCoreError)


def test_the_upload_queue_sends_id_and_filename_as_json(sqs_client: SQSClient, sqs_queues: QueueSet) -> None:
    """send_upload puts the documented upload message on the upload queue."""
    uploads: UploadQueue = SqsUploadQueue(SqsQueue(sqs_client, sqs_queues.upload_url))

    uploads.send_upload("S2A_TILE_1", "S2A_TILE_1.zip")

    received = SqsQueue(sqs_client, sqs_queues.upload_url).receive(wait_seconds=5)
    assert [{"id": "S2A_TILE_1", "filename": "S2A_TILE_1.zip"}] == [json.loads(m.body) for m in received]


def test_a_received_message_keeps_its_receipt_handle_out_of_repr(download: SqsQueue) -> None:
    """The repr of a message shows its id and body but not the receipt handle."""
    download.send("shown")
    message = _receive_one(download)

    assert message.receipt_handle not in repr(message)
    assert message.message_id in repr(message)


def test_send_batch_sends_every_entry_with_its_delay(download: SqsQueue) -> None:
    """One batched call re-adds several bodies, each hidden for its own delay."""
    accepted = download.send_batch([("a", 0), ("b", 0), ("c", 60)])
    got = download.receive(max_messages=10, wait_seconds=1)
    assert ([True, True, True], ["a", "b"]) == (accepted, sorted(m.body for m in got))
    assert 1 == download.counts().delayed


def test_a_fifo_queue_is_recognised(sqs_client: SQSClient, download: SqsQueue) -> None:
    """is_fifo tells a FIFO queue from a standard one (asking SQS for the standard one's attribute)."""
    fifo_url = sqs_client.create_queue(QueueName="is-fifo-test.fifo", Attributes={"FifoQueue": "true"})[
        "QueueUrl"
    ]
    try:
        assert (True, False) == (SqsQueue(client=sqs_client, url=fifo_url).is_fifo(), download.is_fifo())
    finally:
        sqs_client.delete_queue(QueueUrl=fifo_url)
