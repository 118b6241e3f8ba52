"""A Lambda Runtime API on 127.0.0.1, to run the handler under AWS's own runtime interface client.

AWS Lambda runs a Python function by starting ``awslambdaric`` (the runtime interface
client), which asks the Runtime API for the next event over HTTP, calls the handler, and
posts its result or its error back. ``RuntimeApi`` is that API for one function process:
``invoke`` hands it an event and waits for what the client posts, which is how the tests
(and the benchmarks) drive the real handler entry point through the real client, and see
exactly what AWS would see: a response body, or an error that makes an SQS event source
mapping keep the messages.

Routes (the 2018-06-01 Runtime API): ``GET /runtime/invocation/next`` (blocks until an
event is queued; headers ``Lambda-Runtime-Aws-Request-Id``, ``Lambda-Runtime-Deadline-Ms``,
``Lambda-Runtime-Invoked-Function-Arn``), ``POST /runtime/invocation/<id>/response``,
``POST /runtime/invocation/<id>/error`` and ``POST /runtime/init/error``.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import IO, Any, Final, Literal, Self

import attrs

__all__ = [
    "FUNCTION_ARN",
    "Function",
    "Invocation",
    "RuntimeApi",
    "RuntimeApiError",
    "sqs_event",
    "start_function",
]

#: The ARN the invocations claim to be for.
FUNCTION_ARN: Final = "arn:aws:lambda:us-east-1:123456789012:function:s2-downloader"
_PREFIX: Final = "/2018-06-01/runtime"
_RESULT = re.compile(r"/2018-06-01/runtime/invocation/([A-Za-z0-9-]{1,64})/(response|error)")
_POLL_SECONDS: Final = 0.1
_MAX_BODY: Final = 6 * 1024 * 1024


def sqs_event(messages: Sequence[Mapping[str, Any]], queue_arn: str) -> dict[str, Any]:
    """The event the SQS event source mapping builds from ``ReceiveMessage``'s ``messages``."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": m.get("MessageAttributes", {}),
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": queue_arn.split(":")[3] if queue_arn.count(":") >= 5 else "us-east-1",
            }
            for m in messages
        ]
    }


class RuntimeApiError(RuntimeError):
    """The function did not answer as the Runtime API expects (init error, timeout, exit)."""


@attrs.frozen(kw_only=True)
class Invocation:
    """What the runtime client posted for one event: a response, or an error."""

    request_id: str
    outcome: Literal["response", "error"]
    #: The posted body, parsed as JSON (the handler's return value, or the error document).
    body: Any
    #: The ``Lambda-Runtime-Function-Error-Type`` header of an error.
    error_type: str | None = None


@attrs.define
class _Pending:
    request_id: str
    event: bytes
    deadline_ms: int
    done: threading.Event = attrs.field(factory=threading.Event)
    result: Invocation | None = None


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        del format, args  # quiet: the tests read the function's output, not ours

    def do_GET(self) -> None:
        if self.path != f"{_PREFIX}/invocation/next":
            self._reply(404, b'{"errorMessage": "no such route"}')
            return
        pending = self.server.api.next_pending()
        if pending is None:
            # Stopping: the client's poll ends with an error and the process is ended anyway.
            self._reply(503, b'{"errorMessage": "runtime API stopping"}')
            return
        self._reply(
            200,
            pending.event,
            {
                "Lambda-Runtime-Aws-Request-Id": pending.request_id,
                "Lambda-Runtime-Deadline-Ms": str(pending.deadline_ms),
                "Lambda-Runtime-Invoked-Function-Arn": FUNCTION_ARN,
                "Lambda-Runtime-Trace-Id": f"Root=1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]}",
            },
        )

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(min(length, _MAX_BODY)) if length > 0 else b""
        error_type = self.headers.get("Lambda-Runtime-Function-Error-Type")
        if self.path == f"{_PREFIX}/init/error":
            self.server.api.init_failed(body, error_type)
            self._reply(202, b'{"status": "OK"}')
            return
        match = _RESULT.fullmatch(self.path)
        if match is None or not self.server.api.finish(match.group(1), match.group(2), body, error_type):
            self._reply(400, b'{"errorMessage": "unknown invocation"}')
            return
        self._reply(202, b'{"status": "OK"}')

    def _reply(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], api: RuntimeApi) -> None:
        super().__init__(address, _Handler)
        self.api = api


def _parsed(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError:
        return body.decode("utf-8", errors="replace")


@attrs.define
class RuntimeApi:
    """The Runtime API of one function process, on a free port of ``host``; a context manager."""

    host: str = "127.0.0.1"
    _server: _Server | None = attrs.field(init=False, default=None, repr=False)
    _thread: threading.Thread | None = attrs.field(init=False, default=None, repr=False)
    _queue: queue.Queue[_Pending] = attrs.field(init=False, factory=queue.Queue, repr=False)
    _pending: dict[str, _Pending] = attrs.field(init=False, factory=dict, repr=False)
    _lock: threading.Lock = attrs.field(init=False, factory=threading.Lock, repr=False)
    _stopping: threading.Event = attrs.field(init=False, factory=threading.Event, repr=False)
    _init_error: Invocation | None = attrs.field(init=False, default=None)

    @property
    def address(self) -> str:
        """``host:port``, the value of ``AWS_LAMBDA_RUNTIME_API`` for the function process."""
        if self._server is None:
            msg = "the runtime API is not running; call start() first"
            raise RuntimeApiError(msg)
        return f"{self.host}:{self._server.server_address[1]}"

    def start(self) -> Self:
        """Serve in a daemon thread."""
        if self._server is None:
            self._stopping.clear()
            self._server = _Server((self.host, 0), self)
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                daemon=True,
                name="runtime-api",
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; a poll in progress is answered 503."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def invoke(
        self,
        event: Mapping[str, Any],
        *,
        timeout_seconds: float = 900.0,
        wait_seconds: float | None = None,
        process: subprocess.Popen[bytes] | None = None,
    ) -> Invocation:
        """Queue ``event`` for the function and wait for its response or error.

        ``timeout_seconds`` is the function's timeout (the deadline the client is given);
        ``wait_seconds`` how long to wait here (default: the timeout and 10 s). Raises
        ``RuntimeApiError`` when the function reported an init error, ``process`` exited,
        or nothing came back in time.
        """
        request_id = str(uuid.uuid4())
        deadline_ms = int((time.time() + timeout_seconds) * 1000)
        pending = _Pending(request_id=request_id, event=json.dumps(event).encode(), deadline_ms=deadline_ms)
        with self._lock:
            self._pending[request_id] = pending
        self._queue.put(pending)
        until = time.monotonic() + (timeout_seconds + 10 if wait_seconds is None else wait_seconds)
        while not pending.done.wait(_POLL_SECONDS):
            if self._init_error is not None:
                msg = f"the function failed to start: {self._init_error.body}"
                raise RuntimeApiError(msg)
            if process is not None and process.poll() is not None:
                msg = f"the function process exited with {process.returncode}"
                raise RuntimeApiError(msg)
            if time.monotonic() > until:
                msg = f"no answer to invocation {request_id} in time"
                raise RuntimeApiError(msg)
        assert pending.result is not None
        return pending.result

    # -- called by the request handler -----------------------------------------------

    def next_pending(self) -> _Pending | None:
        while not self._stopping.is_set():
            try:
                return self._queue.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                continue
        return None

    def finish(self, request_id: str, outcome: str, body: bytes, error_type: str | None) -> bool:
        with self._lock:
            pending = self._pending.pop(request_id, None)
        if pending is None:
            return False
        pending.result = Invocation(
            request_id=request_id,
            outcome="response" if outcome == "response" else "error",
            body=_parsed(body),
            error_type=error_type,
        )
        pending.done.set()
        return True

    def init_failed(self, body: bytes, error_type: str | None) -> None:
        self._init_error = Invocation(
            request_id="", outcome="error", body=_parsed(body), error_type=error_type
        )


@attrs.define
class Function:
    """A function process under the runtime interface client; its stdout and stderr go to one file."""

    process: subprocess.Popen[bytes]
    _log: IO[bytes] = attrs.field(repr=False)

    def output(self) -> str:
        """Everything the process wrote so far (the handler's logs, the client's error reports)."""
        size = os.fstat(self._log.fileno()).st_size
        return os.pread(self._log.fileno(), size, 0).decode("utf-8", errors="replace")

    def stop(self, *, grace_seconds: float = 5.0) -> str:
        """End the process and its group (SIGTERM, then SIGKILL); what it wrote."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_seconds)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        output = self.output()
        self._log.close()
        return output


def start_function(api: RuntimeApi, handler: str, env: Mapping[str, str]) -> Function:
    """Start ``python -m awslambdaric <handler>`` against ``api`` with ``env`` (and no other variables).

    The process runs in its own session; end it with ``Function.stop``.
    """
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_LAMBDA_RUNTIME_API": api.address,
        "AWS_LAMBDA_FUNCTION_NAME": "s2-downloader",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/s2-downloader",
        "AWS_LAMBDA_LOG_STREAM_NAME": "local",
        **env,
    }
    # A file, not a pipe: nobody reads while the function runs, and a full pipe would stall it.
    log = tempfile.TemporaryFile(prefix="lambda-function-", suffix=".log")  # noqa: SIM115 - closed by stop()
    process = subprocess.Popen(  # noqa: S603 - our own interpreter, fixed arguments
        [sys.executable, "-m", "awslambdaric", handler],
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return Function(process=process, log=log)
