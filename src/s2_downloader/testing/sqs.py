"""A throwaway SQS-compatible endpoint: moto's server in a subprocess on 127.0.0.1.

Used by the integration tests, the benchmarks and ``s2-downloader demo``. The server
runs in its own process group so that ``stop`` can end it and anything it spawned;
the parent never imports moto. Keep the queues shallow: moto scans a queue's whole
message list on every receive, so deep queues slow every call down.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from types import TracebackType
from typing import IO, TYPE_CHECKING, Final, Self

import attrs
import boto3
from botocore.config import Config

from s2_downloader.testing.processes import log_tail

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient

__all__ = ["REGION", "QueueSet", "SqsServerError", "ThrowawaySqs"]

#: The region and dummy credentials every client of the throwaway server uses.
REGION: Final = "us-east-1"
_CREDENTIAL: Final = "testing"

_POLL_SECONDS: Final = 0.05
_STOP_GRACE_SECONDS: Final = 5.0
_PORT_ATTEMPTS: Final = 3


class SqsServerError(RuntimeError):
    """The throwaway SQS server could not be started or is not running."""


@attrs.frozen(kw_only=True)
class QueueSet:
    """The queues of one pipeline: download (redriving to dead-letter), upload, dead-letter."""

    download_url: str
    upload_url: str
    dead_letter_url: str


def _free_port(host: str) -> int:
    # Another process may take the port before moto binds it; start() retries then.
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
            port: int = probe.getsockname()[1]
    except OSError as exc:
        msg = f"cannot bind a port on {host}: {exc.strerror or exc}"
        raise SqsServerError(msg) from exc
    return port


@attrs.define
class ThrowawaySqs:
    """moto's server on a free port of ``host``, from ``start`` (or ``with``) until ``stop``."""

    host: str = "127.0.0.1"
    startup_timeout: float = 20.0
    _process: subprocess.Popen[bytes] | None = attrs.field(init=False, default=None, repr=False)
    _log: IO[bytes] | None = attrs.field(init=False, default=None, repr=False)
    _port: int = attrs.field(init=False, default=0)
    _admin: SQSClient | None = attrs.field(init=False, default=None, repr=False)

    @property
    def endpoint_url(self) -> str:
        """The server's base URL, ``http://host:port``."""
        if self._process is None:
            msg = "the throwaway SQS server is not running; call start() first"
            raise SqsServerError(msg)
        return f"http://{self.host}:{self._port}"

    def start(self) -> Self:
        """Start the server and wait until it answers; raises ``SqsServerError`` with its stderr otherwise."""
        if self._process is not None:
            return self
        if importlib.util.find_spec("moto") is None:
            msg = "moto is not installed; install s2_downloader[testing] for the throwaway SQS server"
            raise SqsServerError(msg)
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            self._spawn()
            try:
                self._wait_until_answering()
            except SqsServerError as exc:
                clash = "Address already in use" in str(exc)
                self.stop()
                if clash and attempt < _PORT_ATTEMPTS:
                    continue
                raise
            atexit.register(self.stop)
            return self
        msg = "unreachable: every attempt either returned or raised"
        raise AssertionError(msg)

    def stop(self) -> None:
        """Stop the server and its process group for sure (SIGTERM, then SIGKILL); idempotent."""
        process, log = self._process, self._log
        self._process, self._log, self._admin = None, None, None
        atexit.unregister(self.stop)
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=_STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if log is not None:
            log.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def client(self) -> SQSClient:
        """A new boto3 SQS client for the server: dummy credentials, short connect timeout, 32 connections."""
        session = boto3.session.Session(
            aws_access_key_id=_CREDENTIAL,
            aws_secret_access_key=_CREDENTIAL,
            region_name=REGION,
        )
        config = Config(
            connect_timeout=5,
            # Longer than a 20 s long poll, or every empty poll would time out.
            read_timeout=30,
            max_pool_connections=32,
            retries={"mode": "standard", "max_attempts": 3},
            # An HTTP(S)_PROXY in the environment must not catch traffic to 127.0.0.1.
            proxies={},
        )
        return session.client("sqs", endpoint_url=self.endpoint_url, config=config)

    def env(self) -> dict[str, str]:
        """The AWS variables a subprocess needs to reach this server with boto3."""
        return {
            "AWS_ENDPOINT_URL_SQS": self.endpoint_url,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": _CREDENTIAL,
            "AWS_SECRET_ACCESS_KEY": _CREDENTIAL,
        }

    def create_queues(
        self, prefix: str, *, visibility_timeout: int = 30, max_receive_count: int = 3
    ) -> QueueSet:
        """Create the queues ``<prefix>-download``, ``-upload`` and ``-dead-letter``.

        The download queue redrives to the dead-letter queue after ``max_receive_count`` receives.
        """
        client = self._admin_client()
        dead_letter = client.create_queue(QueueName=f"{prefix}-dead-letter")["QueueUrl"]
        arn = client.get_queue_attributes(QueueUrl=dead_letter, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        redrive = {"deadLetterTargetArn": arn, "maxReceiveCount": str(max_receive_count)}
        download = client.create_queue(
            QueueName=f"{prefix}-download",
            Attributes={"VisibilityTimeout": str(visibility_timeout), "RedrivePolicy": json.dumps(redrive)},
        )["QueueUrl"]
        upload = client.create_queue(
            QueueName=f"{prefix}-upload", Attributes={"VisibilityTimeout": str(visibility_timeout)}
        )["QueueUrl"]
        return QueueSet(download_url=download, upload_url=upload, dead_letter_url=dead_letter)

    def delete_queues(self, queues: QueueSet) -> None:
        """Delete the queues of ``queues``, keeping the server's state small; missing ones are fine."""
        client = self._admin_client()
        for url in (queues.download_url, queues.upload_url, queues.dead_letter_url):
            with contextlib.suppress(client.exceptions.QueueDoesNotExist):
                client.delete_queue(QueueUrl=url)

    def _admin_client(self) -> SQSClient:
        if self._admin is None:
            self._admin = self.client()
        return self._admin

    def _spawn(self) -> None:
        self._port = _free_port(self.host)
        # A file, not a pipe: werkzeug logs every request to stderr and a pipe nobody
        # reads would fill up and stall the server.
        self._log = tempfile.TemporaryFile(prefix="moto-sqs-", suffix=".log")  # noqa: SIM115 - lives until stop()
        command = [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self._port)]
        self._process = subprocess.Popen(  # noqa: S603 - our own interpreter, fixed arguments
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _wait_until_answering(self) -> None:
        assert self._process is not None
        assert self._log is not None
        # The readiness probe bypasses any proxy configured in the environment.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = self._process.poll()
            if code is not None:
                msg = f"moto server exited with {code} before answering: {log_tail(self._log)}"
                raise SqsServerError(msg)
            try:
                with opener.open(f"{self.endpoint_url}/moto-api/data.json", timeout=1):
                    return
            except urllib.error.HTTPError:
                return  # it answered, if not with 200
            except OSError:
                pass
            if time.monotonic() > deadline:
                msg = (
                    f"moto server did not answer on {self.endpoint_url} within "
                    f"{self.startup_timeout:g} s: {log_tail(self._log)}"
                )
                raise SqsServerError(msg)
            time.sleep(_POLL_SECONDS)
