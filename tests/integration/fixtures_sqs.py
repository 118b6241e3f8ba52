"""pytest fixtures for the sqs part of the throwaway stack."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

from s2_downloader.testing.sqs import QueueSet, ThrowawaySqs

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient

__all__ = ["make_sqs_queues", "sqs_client", "sqs_queues", "sqs_server"]

#: Makes a fresh QueueSet; keyword arguments go to ``ThrowawaySqs.create_queues``.
MakeQueues = Callable[..., QueueSet]

_serial = itertools.count()


@pytest.fixture(scope="session")
def sqs_server() -> Iterator[ThrowawaySqs]:
    """One moto server for the whole session; each test gets its own queues on it."""
    with ThrowawaySqs() as server:
        yield server


@pytest.fixture(scope="session")
def sqs_client(sqs_server: ThrowawaySqs) -> SQSClient:
    """A boto3 SQS client for the session's server (clients are thread-safe, so one is shared)."""
    return sqs_server.client()


@pytest.fixture
def make_sqs_queues(sqs_server: ThrowawaySqs) -> Iterator[MakeQueues]:
    """A factory of fresh, uniquely named queue sets, all deleted after the test."""
    made: list[QueueSet] = []

    def make(**options: int) -> QueueSet:
        # Unique names keep tests independent on the shared server.
        prefix = f"t{next(_serial)}-{uuid.uuid4().hex[:8]}"
        queues = sqs_server.create_queues(prefix, **options)
        made.append(queues)
        return queues

    yield make
    # Deleting keeps moto's state small, which keeps it fast for the next tests.
    for queues in made:
        sqs_server.delete_queues(queues)


@pytest.fixture
def sqs_queues(make_sqs_queues: MakeQueues) -> QueueSet:
    """Fresh download, upload and dead-letter queues (30 s visibility, redrive after 3 receives)."""
    return make_sqs_queues()
