"""One request and its answer: the machinery every route shares.

Status lines and headers (recorded in the request log as they go out), JSON and error
bodies, the faults that replace or bend a whole answer, and a product's body with its
ranges, validators, pacing and cuts. Which route answers is ``routes.py``; what DHuS and
CDSE answer is ``dhus.py`` and ``cdse.py``.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import ClassVar, Protocol

import attrs

from s2_downloader.testing.hubsim.catalogue import Catalogue, Entry
from s2_downloader.testing.hubsim.content import PERIOD, SimProduct, doubled_block, pieces
from s2_downloader.testing.hubsim.faults import Fault
from s2_downloader.testing.hubsim.identity import Identity
from s2_downloader.testing.hubsim.pacing import Pacer
from s2_downloader.testing.hubsim.requestlog import RecordedRequest, RequestLog

__all__ = ["Exchange", "Sim", "Stopping", "dhus_error"]

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


class Sim(Protocol):
    """What an exchange sees of the simulator."""

    @property
    def catalogue(self) -> Catalogue:
        """The products."""
        ...

    @property
    def identity(self) -> Identity:
        """The user and its tokens."""
        ...

    @property
    def request_log(self) -> RequestLog:
        """Where answers are recorded."""
        ...

    @property
    def stopping(self) -> threading.Event:
        """Set when the simulator stops: every wait ends."""
        ...

    @property
    def rate_limit(self) -> float | None:
        """Bytes per second a connection's product body is paced at (``pacing.py``); ``None``: unpaced."""
        ...

    @property
    def require_auth(self) -> bool:
        """Whether credentials are checked."""
        ...

    @property
    def split_origins(self) -> bool:
        """Whether CDSE's catalogue and zipper answer only on their own origins."""
        ...

    @property
    def base_url(self) -> str:
        """SCIHUB_URL."""
        ...

    @property
    def catalogue_url(self) -> str:
        """COPERNICUS_CHECKSUM_URL."""
        ...

    @property
    def zipper_url(self) -> str:
        """COPERNICUS_ZIPPER_URL."""
        ...


class Stopping(Exception):
    """The simulator stopped while an answer was under way."""


def dhus_error(message: str) -> bytes:
    """An OData error body as DHuS sends it."""
    return json.dumps({"error": {"code": None, "message": {"lang": "en", "value": message}}}).encode()


@attrs.define
class Exchange:
    """One request and its answer."""

    sim: Sim
    handler: BaseHTTPRequestHandler
    method: str
    endpoint: str = "other"
    product_id: str | None = None
    grant_type: str | None = None
    query: dict[str, list[str]] = attrs.field(factory=dict)
    #: Seconds between body bytes when a ``trickle`` fault applies.
    trickle: float | None = None
    #: Headers a ``with_headers`` fault puts on the answer.
    override: tuple[tuple[str, str], ...] = ()
    #: The answer's place in the request log, once recorded.
    serial: int | None = None

    _WRONG: ClassVar[str] = "0123456789abcdef0123456789abcdef"

    def read_body(self) -> bytes:
        """The request's body."""
        length = int(self.handler.headers.get("Content-Length") or 0)
        return self.handler.rfile.read(length) if length > 0 else b""

    # -- faults -------------------------------------------------------------------

    def generic_fault(self, fault: Fault) -> bool:
        """Answer a fault that replaces the whole response; ``False`` when it is not one."""
        if fault.kind == "status":
            self.override = fault.headers
            extra = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            if fault.code == 202:
                self.send(202, dhus_error("The product has been requested from the long term archive"))
            else:
                self.send(fault.code, dhus_error(f"Simulated HTTP {fault.code}"), extra)
            return True
        if fault.kind == "concurrent_flows":
            user = self.sim.identity.username
            message = f'Maximum number of 4 concurrent flows achieved by the user "{user}"'
            self.send(403, dhus_error(message), {"cause-message": f"ForbiddenError : {message}"})
            return True
        if fault.kind == "redirect":
            self.send(fault.code, b"", {"Location": fault.location})
            return True
        if fault.kind == "json":
            self.json(fault.code, fault.document)
            return True
        if fault.kind == "trickle":
            self.trickle = fault.seconds
            return False
        if fault.kind == "headers":
            self.override = fault.headers
            return False
        # Outside a download there is no body to pause before: pause before answering.
        stalled = fault.kind == "stall" and self.endpoint not in {"dhus_value", "zipper"}
        if stalled and self.sim.stopping.wait(fault.seconds):
            raise Stopping
        return False

    def published(self, entry: Entry, fault: Fault | None) -> str:
        """The MD5 the hub publishes for ``entry`` under ``fault`` (lowercase)."""
        if fault is not None and fault.kind == "malformed_checksum":
            return "A-TEST-CHECKSUM"
        if entry.checksum_wrong or (fault is not None and fault.kind == "wrong_checksum"):
            real = entry.product.md5
            return self._WRONG if real != self._WRONG else self._WRONG[::-1]
        return entry.product.md5

    # -- answers ------------------------------------------------------------------

    def not_found(self) -> None:
        """DHuS's 404 for an unknown product."""
        message = f"Invalid key ({self.product_id}) to access Products"
        self.send(404, dhus_error(message), {"cause-message": f"InvalidKeyException : {message}"})

    def json(self, status: int, document: object, headers: dict[str, str] | None = None) -> None:
        """Answer ``document`` as JSON."""
        self.send(
            status, json.dumps(document).encode(), {"Content-Type": "application/json", **(headers or {})}
        )

    def send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        """Answer ``body`` (trickled when a ``trickle`` fault applies)."""
        self._start(status, len(body), {"Content-Type": "application/json", **(headers or {})})
        if body and self.trickle is not None:
            self._drip(body)
        elif body:
            self.handler.wfile.write(body)

    def _drip(self, body: bytes | memoryview) -> None:
        """Send ``body`` one byte per ``self.trickle`` seconds."""
        assert self.trickle is not None
        sendall = self.handler.connection.sendall
        for at in range(len(body)):
            sendall(bytes(body[at : at + 1]))
            if self.sim.stopping.wait(self.trickle):
                raise Stopping

    def _start(
        self, status: int, length: int, headers: dict[str, str], *, body_bytes: int | None = None
    ) -> None:
        handler = self.handler
        self.serial = self.sim.request_log.record(
            RecordedRequest(
                method=self.method,
                path=handler.path,
                headers=tuple(handler.headers.items()),
                endpoint=self.endpoint,
                product_id=self.product_id,
                status=status,
                body_bytes=length if body_bytes is None else body_bytes,
                grant_type=self.grant_type,
                client_port=handler.client_address[1],
                at=time.monotonic(),
            )
        )
        handler.send_response(status)
        replaced = {name.lower() for name, _ in self.override}
        for name, value in headers.items():
            if name.lower() not in replaced:
                handler.send_header(name, value)
        for name, value in self.override:
            handler.send_header(name, value)
        if "content-length" in replaced:
            # The client cannot tell where the body ends: closing the connection says it.
            handler.close_connection = True
        else:
            handler.send_header("Content-Length", str(length))
        handler.end_headers()

    # -- products -----------------------------------------------------------------

    def download(self) -> None:
        """Answer a product download (DHuS ``$value``, the zipper) with its faults."""
        assert self.product_id is not None
        entry = self.sim.catalogue.entry(self.product_id)
        if entry is None:
            self.not_found()
            return
        fault = self.sim.catalogue.pop_fault(self.product_id, checksum=False)
        if fault is not None and self.generic_fault(fault):
            return
        if fault is not None and fault.kind == "not_found":
            self.not_found()
            return
        self._body(entry, fault)

    def _body(self, entry: Entry, fault: Fault | None) -> None:
        product = entry.product
        kind = fault.kind if fault is not None else ""
        size = product.size
        start, stop, status = 0, size, 200
        asked = _RANGE.fullmatch(self.handler.headers.get("Range", "").strip())
        headers = {
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "Content-Disposition": f'inline;filename="{product.id}.zip"',
        }
        etag, modified = entry.etag_value(), entry.last_modified()
        if etag is not None:
            headers["ETag"] = etag
        if modified is not None:
            headers["Last-Modified"] = modified
        if_range = self.handler.headers.get("If-Range")
        if asked and if_range is not None and not _if_range_matches(if_range.strip(), etag, modified):
            # RFC 9110 section 13.1.5: the representation changed, so the Range is ignored.
            asked = None
        if asked and kind != "ignore_range":
            first = int(asked.group(1))
            last = int(asked.group(2)) if asked.group(2) else size - 1
            if first >= size:
                self.send(416, b"", {"Content-Range": f"bytes */{size}"})
                return
            start, stop, status = first, min(last + 1, size), 206
            if kind == "wrong_range" and first > 0:
                start, stop = 0, size
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
        length = stop - start
        cut = fault.n_bytes if kind in {"reset", "short"} and fault is not None else length
        self._start(status, length, headers, body_bytes=min(cut, length))
        if kind == "stall" and fault is not None and self.sim.stopping.wait(fault.seconds):
            raise Stopping
        if self.trickle is not None:
            self._drip(product.read(start, start + min(cut, length)))
            return
        self._write(product, start, start + min(cut, length), corrupt=kind == "corrupt")
        if kind == "reset":
            self._abort()
        elif kind == "short":
            self.handler.close_connection = True

    def _write(self, product: SimProduct, start: int, stop: int, *, corrupt: bool) -> None:
        sendall = self.handler.connection.sendall
        if corrupt and start < stop:
            first = doubled_block(product.seed)[start % PERIOD]
            sendall(bytes([first ^ 0xFF]))
            start += 1
        rate = self.sim.rate_limit
        if rate is None:
            for piece in pieces(product.seed, start, stop):
                sendall(piece)
            return
        # Paced in pieces of at most a burst, each sent once the connection's budget allows.
        pacer = Pacer(rate)
        for piece in pieces(product.seed, start, stop):
            for at in range(0, len(piece), pacer.burst):
                part = piece[at : at + pacer.burst]
                wait = pacer.delay(len(part))
                if wait > 0 and self.sim.stopping.wait(wait):
                    raise Stopping
                sendall(part)

    def _abort(self) -> None:
        """Close the socket with an RST, the way a crashed peer or a middlebox does."""
        handler = self.handler
        handler.close_connection = True
        sock = handler.connection
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # The rfile holds a reference to the socket; the fd closes only when both go.
        handler.rfile.close()
        sock.close()


def _if_range_matches(value: str, etag: str | None, modified: str | None) -> bool:
    """Whether ``If-Range: value`` still names the product: a strong ETag match, or its exact date."""
    if value.startswith('"'):
        return etag is not None and not etag.startswith("W/") and value == etag
    return modified is not None and value == modified
