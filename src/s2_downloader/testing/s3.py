"""S3 on the throwaway moto server: clients, buckets, and a server that allows small parts.

moto's server serves S3 beside SQS, so the SQS server of ``testing.sqs`` works as it is
(parts of at least 5 MiB, as AWS). ``ThrowawayS3`` is the same server started with a
smaller floor for the parts but the last (moto's ``S3_UPLOAD_PART_MIN_SIZE``), so tests can
cross many part boundaries with small products.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from typing import TYPE_CHECKING, Final

import attrs
import boto3
from botocore.config import Config

from s2_downloader.testing.sqs import REGION, ThrowawaySqs, _free_port

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

__all__ = ["ThrowawayS3", "create_bucket", "s3_client"]

_CREDENTIAL: Final = "testing"


def s3_client(endpoint_url: str) -> S3Client:
    """A boto3 S3 client for the throwaway server: dummy credentials, path-style addressing, no proxy."""
    session = boto3.session.Session(
        aws_access_key_id=_CREDENTIAL, aws_secret_access_key=_CREDENTIAL, region_name=REGION
    )
    config = Config(
        connect_timeout=5,
        read_timeout=60,
        retries={"mode": "standard", "max_attempts": 3},
        s3={"addressing_style": "path"},
        proxies={},
        # As production's client (entrypoints/wiring.py): no CRC trailers the servers may not know.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return session.client("s3", endpoint_url=endpoint_url, config=config)


def create_bucket(client: S3Client, name: str) -> str:
    """Create the bucket ``name`` (an existing one is fine); returns its name."""
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=name)
    return name


@attrs.define
class ThrowawayS3(ThrowawaySqs):
    """moto's server (S3 and SQS) allowing parts of ``min_part_size`` bytes but the last."""

    min_part_size: int = 5 * 1024 * 1024

    def client_s3(self) -> S3Client:
        """A new S3 client for this server."""
        return s3_client(self.endpoint_url)

    def _spawn(self) -> None:
        self._port = _free_port(self.host)
        self._log = tempfile.TemporaryFile(prefix="moto-s3-", suffix=".log")  # noqa: SIM115 - lives until stop()
        command = [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self._port)]
        env = {
            **os.environ,
            "S3_UPLOAD_PART_MIN_SIZE": str(self.min_part_size),
            # moto keeps keys below this in memory; its default is derived from the floor above.
            "MOTO_S3_DEFAULT_KEY_BUFFER_SIZE": str(max(self.min_part_size, 1024 * 1024)),
        }
        self._process = subprocess.Popen(  # noqa: S603 - our own interpreter, fixed arguments
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
