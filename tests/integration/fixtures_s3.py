"""pytest fixtures for the S3 store's own tests: one moto server that allows tiny parts, and clients on it.

Parts of ``SMALL_PART`` bytes keep these tests fast; SeaweedFS, which holds S3's 5 MiB floor,
has its tests elsewhere (``test_s3_servers.py``, ``test_s3_parts_in_flight.py``, the store
contract and the end-to-end suites).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from s2_downloader.testing.s3 import ThrowawayS3

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

__all__ = ["SMALL_PART", "client", "s3_server"]

#: The smallest part the server allows (S3's is 5 MiB).
SMALL_PART = 1024


@pytest.fixture(scope="session")
def s3_server() -> Iterator[ThrowawayS3]:
    """A moto server allowing parts of ``SMALL_PART`` bytes, for the whole session."""
    with ThrowawayS3(min_part_size=SMALL_PART) as server:
        yield server


@pytest.fixture
def client(s3_server: ThrowawayS3) -> S3Client:
    """A new S3 client on that server, configured as production's."""
    return s3_server.client_s3()
