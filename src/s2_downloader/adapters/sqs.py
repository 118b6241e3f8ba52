"""The SQS adapter: the download and upload queues over an already-built boto3 client.

Every botocore error leaves this module as a ``QueueError`` naming the operation, the
queue and the AWS error code. A receipt handle SQS no longer honours (the message was
deleted, its visibility ran out and someone else received it, or the handle is junk)
raises ``ReceiptExpired``, which callers may ignore: the message is no longer theirs.

The client must have a read timeout longer than ``wait_seconds`` of the long poll
(``LONG_POLL_SECONDS`` by default), or every empty poll ends in a read timeout.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Final, NoReturn

import attrs
import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from s2_downloader.adapters.wire import upload_message
from s2_downloader.domain.errors import QueueError
from s2_downloader.domain.retry import MAX_DELAY_SECONDS

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient
    from mypy_boto3_sqs.literals import MessageSystemAttributeNameType, QueueAttributeNameType
    from mypy_boto3_sqs.type_defs import (
        MessageTypeDef,
        ReceiveMessageRequestTypeDef,
        SendMessageBatchRequestEntryTypeDef,
    )

__all__ = [
    "LONG_POLL_SECONDS",
    "MAX_VISIBILITY_SECONDS",
    "QueueCounts",
    "ReceiptExpired",
    "ReceivedMessage",
    "SqsQueue",
    "SqsUploadQueue",
    "queue_url_of_arn",
]

#: SQS's own limits; values outside them are clamped rather than sent to fail (the longest
#: DelaySeconds, which is also the longest back-off, is the domain's MAX_DELAY_SECONDS).
LONG_POLL_SECONDS: Final = 20
MAX_VISIBILITY_SECONDS: Final = 43_200
_MAX_BATCH: Final = 10
#: SendMessageBatch's limit on the bodies of one call, with room for the attributes.
_MAX_BATCH_BYTES: Final = 240 * 1024

#: Error codes that mean "this receipt handle is no longer yours", under the query
#: protocol's names and the JSON protocol's.
_RECEIPT_CODES: Final = frozenset(
    {
        "ReceiptHandleIsInvalid",
        "AWS.SimpleQueueService.ReceiptHandleIsInvalid",
        "MessageNotInflight",
        "AWS.SimpleQueueService.MessageNotInflight",
    }
)
_SYSTEM_ATTRIBUTES: Final[list[MessageSystemAttributeNameType]] = [
    "ApproximateReceiveCount",
    "SentTimestamp",
    "ApproximateFirstReceiveTimestamp",
]
_COUNT_ATTRIBUTES: Final[list[QueueAttributeNameType]] = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]
_DETAIL_LIMIT: Final = 200
#: ``arn:<partition>:sqs:<region>:<account>:<queue name>``
_QUEUE_ARN = re.compile(
    r"arn:[a-z0-9-]{1,20}:sqs:([a-z0-9-]{1,40}):([0-9]{12}|[0-9a-z]{1,40}):([A-Za-z0-9_.-]{1,80})"
)
# An endpoint URL may carry user:password@; error text must not.
_USERINFO = re.compile(r"//[^/@\s]+@")


class ReceiptExpired(QueueError):
    """The receipt handle is no longer valid: the message is gone or someone else holds it."""


@attrs.frozen(kw_only=True)
class ReceivedMessage:
    """One message as ``receive`` got it; ``receive_count`` counts this delivery too."""

    message_id: str
    receipt_handle: str = attrs.field(repr=False)
    body: str
    receive_count: int
    sent_at: dt.datetime | None = None
    first_received_at: dt.datetime | None = None


@attrs.frozen(kw_only=True)
class QueueCounts:
    """SQS's approximate message counts for one queue."""

    visible: int
    in_flight: int
    delayed: int

    @property
    def empty(self) -> bool:
        """Whether the queue holds no message at all, visible or not."""
        return self.visible == 0 and self.in_flight == 0 and self.delayed == 0


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, int(value)))


def _timestamp(
    attributes: Mapping[MessageSystemAttributeNameType, str], name: MessageSystemAttributeNameType
) -> dt.datetime | None:
    raw = attributes.get(name)
    if raw is None or not raw.isdigit():
        return None
    return dt.datetime.fromtimestamp(int(raw) / 1000, tz=dt.UTC)


def _parse(message: MessageTypeDef) -> ReceivedMessage:
    attributes = message.get("Attributes", {})
    count = attributes.get("ApproximateReceiveCount", "1")
    return ReceivedMessage(
        message_id=message.get("MessageId", ""),
        receipt_handle=message.get("ReceiptHandle", ""),
        body=message.get("Body", ""),
        receive_count=int(count) if count.isdigit() else 1,
        sent_at=_timestamp(attributes, "SentTimestamp"),
        first_received_at=_timestamp(attributes, "ApproximateFirstReceiveTimestamp"),
    )


def _batches(entries: Sequence[tuple[str, int]]) -> Iterator[tuple[int, Sequence[tuple[str, int]]]]:
    """Runs of at most ten entries and ``_MAX_BATCH_BYTES`` of bodies, with their first index."""
    start = 0
    while start < len(entries):
        end, size = start, 0
        while end < len(entries) and end - start < _MAX_BATCH:
            body_size = len(entries[end][0].encode("utf-8", "surrogatepass"))
            if end > start and size + body_size > _MAX_BATCH_BYTES:
                break
            size += body_size
            end += 1
        yield start, entries[start:end]
        start = end


def _is_receipt_error(error: Mapping[str, str]) -> bool:
    codes = {error.get("Code", ""), error.get("QueryErrorCode", "")}
    if codes & _RECEIPT_CODES:
        return True
    # Real SQS answers an expired handle on ChangeMessageVisibility with
    # InvalidParameterValue "... for parameter ReceiptHandle is invalid ...".
    return "InvalidParameterValue" in codes and "ReceiptHandle" in error.get("Message", "")


def _scrub(text: str) -> str:
    text = _USERINFO.sub("//***@", text)
    return text if len(text) <= _DETAIL_LIMIT else text[: _DETAIL_LIMIT - 3] + "..."


@attrs.define
class SqsQueue:
    """One SQS queue, reached through ``client`` (built by the caller, reused across calls)."""

    client: SQSClient = attrs.field(repr=False)
    url: str

    @property
    def name(self) -> str:
        """The queue's name, the last component of its URL."""
        return self.url.rstrip("/").rsplit("/", 1)[-1]

    def receive(
        self,
        max_messages: int = _MAX_BATCH,
        wait_seconds: int = LONG_POLL_SECONDS,
        visibility_timeout: int | None = None,
    ) -> list[ReceivedMessage]:
        """Long-poll for up to ``max_messages`` (1-10) messages, waiting up to ``wait_seconds`` (0-20).

        ``visibility_timeout`` overrides the queue's for these messages (0-43200 s).
        """
        request: ReceiveMessageRequestTypeDef = {
            "QueueUrl": self.url,
            "MaxNumberOfMessages": _clamp(max_messages, 1, _MAX_BATCH),
            "WaitTimeSeconds": _clamp(wait_seconds, 0, LONG_POLL_SECONDS),
            "MessageSystemAttributeNames": _SYSTEM_ATTRIBUTES,
        }
        if visibility_timeout is not None:
            request["VisibilityTimeout"] = _clamp(visibility_timeout, 0, MAX_VISIBILITY_SECONDS)
        try:
            response = self.client.receive_message(**request)
        except (BotoCoreError, ClientError) as exc:
            self._fail("ReceiveMessage", exc)
        return [_parse(message) for message in response.get("Messages", [])]

    def delete(self, receipt_handle: str) -> None:
        """Delete the message received with ``receipt_handle``; ``ReceiptExpired`` if it is not ours."""
        try:
            self.client.delete_message(QueueUrl=self.url, ReceiptHandle=receipt_handle)
        except (BotoCoreError, ClientError) as exc:
            self._fail("DeleteMessage", exc)

    def change_visibility(self, receipt_handle: str, seconds: int) -> None:
        """Make the message visible again in ``seconds`` (0-43200, clamped).

        Raises ``ReceiptExpired`` when the message is no longer ours.
        """
        try:
            self.client.change_message_visibility(
                QueueUrl=self.url,
                ReceiptHandle=receipt_handle,
                VisibilityTimeout=_clamp(seconds, 0, MAX_VISIBILITY_SECONDS),
            )
        except (BotoCoreError, ClientError) as exc:
            self._fail("ChangeMessageVisibility", exc)

    def send(self, body: str, delay_seconds: int = 0) -> str:
        """Send ``body``, hidden for ``delay_seconds`` (0-900, clamped); returns the message id."""
        try:
            response = self.client.send_message(
                QueueUrl=self.url,
                MessageBody=body,
                DelaySeconds=_clamp(delay_seconds, 0, MAX_DELAY_SECONDS),
            )
        except (BotoCoreError, ClientError) as exc:
            self._fail("SendMessage", exc)
        return response["MessageId"]

    def send_batch(self, entries: Sequence[tuple[str, int]]) -> list[bool]:
        """Send each ``(body, delay_seconds)`` in as few calls as SQS allows; which were accepted.

        Raises ``QueueError`` only when a call fails as a whole.
        """
        accepted = [False] * len(entries)
        for start, chunk in _batches(entries):
            request: list[SendMessageBatchRequestEntryTypeDef] = [
                {
                    "Id": str(start + offset),
                    "MessageBody": body,
                    "DelaySeconds": _clamp(delay, 0, MAX_DELAY_SECONDS),
                }
                for offset, (body, delay) in enumerate(chunk)
            ]
            try:
                response = self.client.send_message_batch(QueueUrl=self.url, Entries=request)
            except (BotoCoreError, ClientError) as exc:
                self._fail("SendMessageBatch", exc)
            for success in response.get("Successful", []):
                accepted[int(success["Id"])] = True
        return accepted

    def is_fifo(self) -> bool:
        """Whether this is a FIFO queue (by its name, else by its FifoQueue attribute)."""
        if self.name.lower().endswith(".fifo"):
            return True
        try:
            response = self.client.get_queue_attributes(QueueUrl=self.url, AttributeNames=["FifoQueue"])
        except (BotoCoreError, ClientError) as exc:
            self._fail("GetQueueAttributes", exc)
        return response.get("Attributes", {}).get("FifoQueue", "false").lower() == "true"

    def counts(self) -> QueueCounts:
        """The queue's approximate visible, in-flight and delayed message counts."""
        try:
            response = self.client.get_queue_attributes(
                QueueUrl=self.url,
                AttributeNames=_COUNT_ATTRIBUTES,
            )
        except (BotoCoreError, ClientError) as exc:
            self._fail("GetQueueAttributes", exc)
        attributes = response.get("Attributes", {})
        return QueueCounts(
            visible=int(attributes.get("ApproximateNumberOfMessages", "0")),
            in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", "0")),
            delayed=int(attributes.get("ApproximateNumberOfMessagesDelayed", "0")),
        )

    def visibility_timeout(self) -> int:
        """The queue's default visibility timeout in seconds."""
        try:
            response = self.client.get_queue_attributes(
                QueueUrl=self.url, AttributeNames=["VisibilityTimeout"]
            )
        except (BotoCoreError, ClientError) as exc:
            self._fail("GetQueueAttributes", exc)
        return int(response.get("Attributes", {}).get("VisibilityTimeout", "30"))

    def has_dead_letter_queue(self) -> bool:
        """Whether the queue has a redrive policy that moves poison messages to a dead-letter queue."""
        try:
            response = self.client.get_queue_attributes(QueueUrl=self.url, AttributeNames=["RedrivePolicy"])
        except (BotoCoreError, ClientError) as exc:
            self._fail("GetQueueAttributes", exc)
        return bool(response.get("Attributes", {}).get("RedrivePolicy"))

    def _fail(self, operation: str, exc: BotoCoreError | ClientError) -> NoReturn:
        _fail(operation, self.name, exc)


def _fail(operation: str, queue: str, exc: BotoCoreError | ClientError) -> NoReturn:
    """Raise the ``QueueError`` (or ``ReceiptExpired``) that ``exc`` from ``operation`` on ``queue`` means."""
    if isinstance(exc, ClientError):
        # botocore-stubs' TypedDict lacks QueryErrorCode, which the JSON protocol adds.
        error: Mapping[str, str] = exc.response.get("Error", {})  # type: ignore[assignment]
        code = error.get("Code") or "Unknown"
        msg = f"SQS {operation} on {queue} failed: {code}: {_scrub(error.get('Message', ''))}"
        if operation in {"DeleteMessage", "ChangeMessageVisibility"} and _is_receipt_error(error):
            raise ReceiptExpired(msg) from exc
        raise QueueError(msg) from exc
    msg = f"SQS {operation} on {queue} failed: {type(exc).__name__}: {_scrub(str(exc))}"
    raise QueueError(msg) from exc


@attrs.define
class SqsUploadQueue:
    """The TO_UPLOAD queue as the use case's ``UploadQueue`` port."""

    queue: SqsQueue

    def send_upload(self, granule_id: str, filename: str) -> None:
        """Send the upload message ``{"id": ..., "filename": ...}`` for a verified granule."""
        self.queue.send(upload_message(granule_id, filename))


def queue_url_of_arn(arn: str, client: SQSClient | None = None) -> str:
    """The URL of the queue ``arn`` names (an SQS event record's ``eventSourceARN``), by GetQueueUrl.

    ``client`` defaults to a short-lived one in the ARN's region. Raises ``QueueError``.
    """
    match = _QUEUE_ARN.fullmatch(arn)
    if match is None:
        msg = f"{_scrub(arn)!r} is not an SQS queue ARN"
        raise QueueError(msg)
    region, account, name = match.groups()
    if client is None:
        config = Config(connect_timeout=3, read_timeout=10, retries={"max_attempts": 2, "mode": "standard"})
        client = boto3.session.Session().client("sqs", region_name=region, config=config)
    try:
        # The owner's account is passed on so a queue of another account is found too.
        return client.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
    except (BotoCoreError, ClientError) as exc:
        _fail("GetQueueUrl", name, exc)
