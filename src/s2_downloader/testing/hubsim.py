"""A hub simulator: DHuS and CDSE on one 127.0.0.1 origin, with scripted faults.

Real HTTP/1.1 with keep-alive over ``ThreadingHTTPServer``, so the adapters are tested
on the wire. Product bytes are synthetic and deterministic: a ~1 MiB block drawn from
the product's seed, repeated and cut to size, so a product of any size costs one block
of memory and is served from ``memoryview`` slices.

Faults are scripted per product and consumed one per request, separately for the
download and the checksum endpoints::

    with HubSimulator(username="u", password="p") as sim:
        product = sim.add_product("p1", 10_000_000, faults=[Fault.status(503, retry_after="2")])
"""

from __future__ import annotations

import base64
import collections
import contextlib
import email.utils
import functools
import hashlib
import hmac
import itertools
import json
import random
import re
import secrets
import socket
import struct
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar

import attrs

__all__ = ["TOKEN_PATH", "Fault", "HubSimulator", "RecordedRequest", "SimProduct", "http_date"]

#: Where the simulator's CDSE identity provider takes token requests.
TOKEN_PATH = "/auth/realms/CDSE/protocol/openid-connect/token"  # noqa: S105 - a path, not a secret

# Not a power of two, so the content's period never lines up with chunk sizes or
# resume offsets: a byte served from the wrong place shows up in the checksum.
_PERIOD = (1 << 20) + 37
_CLIENT_ID = "cdse-public"

_DHUS = re.compile(r"/dhus/odata/v1/Products\('([^'/]+)'\)(/\$value|/)?")
_ZIPPER = re.compile(r"/odata/v1/Products\(([^()'/]+)\)/\$value")
_CATALOGUE = "/odata/v1/Products"
_FILTER_ID = re.compile(r"\s*Id\s+eq\s+'([^']*)'\s*")
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


@functools.lru_cache(maxsize=32)
def _doubled_block(seed: int) -> bytes:
    # Two periods back to back: any slice of up to one period is contiguous.
    block = random.Random(seed).randbytes(_PERIOD)
    return block + block


def _pieces(seed: int, start: int, stop: int) -> Iterator[memoryview]:
    view = memoryview(_doubled_block(seed))
    position = start
    while position < stop:
        at = position % _PERIOD
        size = min(_PERIOD, stop - position)
        yield view[at : at + size]
        position += size


@functools.lru_cache(maxsize=256)
def _md5(seed: int, size: int) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    for piece in _pieces(seed, 0, size):
        digest.update(piece)
    return digest.hexdigest()


def _seed_of(product_id: str) -> int:
    return int.from_bytes(hashlib.sha256(product_id.encode()).digest()[:8], "big")


@attrs.frozen(kw_only=True)
class SimProduct:
    """A product the simulator serves: its id, size, MD5 (lowercase hex) and content seed."""

    id: str
    size: int
    md5: str
    seed: int

    def iter_bytes(self, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        """The product's bytes from ``start`` to ``stop`` (default: the end), in pieces."""
        end = self.size if stop is None else min(stop, self.size)
        for piece in _pieces(self.seed, start, end):
            yield bytes(piece)

    def read(self, start: int = 0, stop: int | None = None) -> bytes:
        """The product's bytes from ``start`` to ``stop`` at once; for small slices in tests."""
        return b"".join(self.iter_bytes(start, stop))


@attrs.frozen(kw_only=True)
class Fault:
    """One scripted misbehaviour, used up by one request to its endpoint.

    Faults target the product's download unless made with ``on_checksum()`` (or by
    ``wrong_checksum``/``malformed_checksum``, which only make sense there).
    """

    kind: str
    code: int = 0
    retry_after: str | None = None
    n_bytes: int = 0
    seconds: float = 0.0
    location: str = ""
    checksum: bool = False
    #: Response headers to send instead of (or besides) the simulator's own.
    headers: tuple[tuple[str, str], ...] = ()
    #: For ``catalogue_entry``: fields of the catalogue's product entry to replace.
    entry: tuple[tuple[str, Any], ...] = attrs.field(default=(), eq=False)
    #: For ``json``: the whole answer to send.
    document: Any = attrs.field(default=None, eq=False)

    @classmethod
    def status(
        cls, code: int, *, retry_after: str | None = None, headers: dict[str, str] | None = None
    ) -> Fault:
        """Answer ``code`` with a small DHuS-style error body (and ``Retry-After``, ``headers`` if given)."""
        return cls(kind="status", code=code, retry_after=retry_after, headers=tuple((headers or {}).items()))

    @classmethod
    def accepted(cls) -> Fault:
        """Answer 202: the product is offline and its retrieval was triggered."""
        return cls(kind="status", code=202)

    @classmethod
    def not_found(cls) -> Fault:
        """Answer as for an unknown product (DHuS 404; the CDSE catalogue: an empty list)."""
        return cls(kind="not_found")

    @classmethod
    def dhus_concurrent_flows(cls) -> Fault:
        """Answer 403 with DHuS's 'too many concurrent flows' message."""
        return cls(kind="concurrent_flows")

    @classmethod
    def redirect(cls, location: str, *, code: int = 302) -> Fault:
        """Answer ``code`` with ``Location: location`` (absolute, or relative to the request)."""
        return cls(kind="redirect", code=code, location=location)

    @classmethod
    def reset_after(cls, n_bytes: int) -> Fault:
        """Send the headers and ``n_bytes`` of body, then reset the connection (RST)."""
        return cls(kind="reset", n_bytes=n_bytes)

    @classmethod
    def short_body(cls, n_bytes: int) -> Fault:
        """Promise the full Content-Length, send ``n_bytes``, then close the connection cleanly."""
        return cls(kind="short", n_bytes=n_bytes)

    @classmethod
    def stall(cls, seconds: float) -> Fault:
        """Pause ``seconds`` after the headers, before the body."""
        return cls(kind="stall", seconds=seconds)

    @classmethod
    def corrupt(cls) -> Fault:
        """Serve the body with its first byte changed, so it no longer matches the MD5."""
        return cls(kind="corrupt")

    @classmethod
    def ignore_range(cls) -> Fault:
        """Answer 200 with the whole product even when a Range was asked for."""
        return cls(kind="ignore_range")

    @classmethod
    def wrong_range(cls) -> Fault:
        """Answer a Range request with 206 for the whole product (a Content-Range not asked for)."""
        return cls(kind="wrong_range")

    @classmethod
    def wrong_checksum(cls) -> Fault:
        """Publish a wrong (well-formed) MD5 once."""
        return cls(kind="wrong_checksum", checksum=True)

    @classmethod
    def malformed_checksum(cls) -> Fault:
        """Publish a checksum value that is not 32 hex digits, once."""
        return cls(kind="malformed_checksum", checksum=True)

    @classmethod
    def trickle(cls, seconds_per_byte: float = 1.0) -> Fault:
        """Send the headers at once, then the body one byte every ``seconds_per_byte``.

        Applies to downloads, checksum answers and (with ``add_token_faults``) token answers.
        """
        return cls(kind="trickle", seconds=seconds_per_byte)

    @classmethod
    def with_headers(cls, **headers: str) -> Fault:
        """Answer as usual, with these headers set (``Content_Length`` for ``Content-Length``).

        A replaced ``Content-Length`` is not sent twice, and the connection closes after
        the body, since the client cannot know where the body ends.
        """
        return cls(kind="headers", headers=tuple((k.replace("_", "-"), v) for k, v in headers.items()))

    @classmethod
    def catalogue_entry(cls, **fields: Any) -> Fault:
        """The CDSE catalogue's entry for the product with ``fields`` replaced (``Online=False``,
        ``Checksum=[]``), once."""
        return cls(kind="catalogue_entry", entry=tuple(fields.items()), checksum=True)

    @classmethod
    def json(cls, document: Any, *, code: int = 200) -> Fault:
        """Answer the checksum request with ``document`` as it is (a recorded answer), once."""
        return cls(kind="json", code=code, document=document, checksum=True)

    def on_checksum(self) -> Fault:
        """This fault aimed at the product's checksum endpoint instead of its download."""
        return attrs.evolve(self, checksum=True)


@attrs.frozen(kw_only=True)
class RecordedRequest:
    """One request the simulator answered, as it saw it."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    endpoint: str
    product_id: str | None
    status: int
    #: Body bytes the simulator set out to send (fewer when a fault cuts the body).
    body_bytes: int
    grant_type: str | None
    client_port: int
    #: The request's number in the simulator's life (0 first), so its end can be looked up.
    serial: int = -1
    #: ``time.monotonic()`` when the simulator began to answer (sent the status line).
    at: float = 0.0

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (any case), or ``None``."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)

    @property
    def authorization(self) -> str | None:
        """The ``Authorization`` header, if one was sent."""
        return self.header("Authorization")

    @property
    def range(self) -> str | None:
        """The ``Range`` header, if one was sent."""
        return self.header("Range")


@attrs.define
class _Entry:
    product: SimProduct
    download_faults: collections.deque[Fault] = attrs.field(factory=collections.deque)
    checksum_faults: collections.deque[Fault] = attrs.field(factory=collections.deque)
    checksum_wrong: bool = False
    #: "strong", "weak" or "none": the ETag the product's downloads carry.
    etag: str = "strong"
    #: POSIX time the product last changed (its Last-Modified), or None to send none.
    modified: float | None = attrs.field(factory=lambda: float(int(time.time())))

    def etag_value(self) -> str | None:
        tag = f'"{self.product.md5}"'
        return {"strong": tag, "weak": f"W/{tag}"}.get(self.etag)

    def last_modified(self) -> str | None:
        return None if self.modified is None else email.utils.formatdate(self.modified, usegmt=True)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], sim: HubSimulator) -> None:
        self.sim = sim
        self.live: set[socket.socket] = set()
        self.live_lock = threading.Lock()
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Idle keep-alive connections give up after this, so threads do not pile up.
    timeout = 60
    # Answers go out at once instead of waiting ~40 ms for Nagle on a reused connection.
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.live_lock:
            self.server.live.add(self.connection)

    def handle(self) -> None:
        # A client that gives up on a body closes with unread data, so the kernel resets the
        # connection: waiting for its next request then fails, which is no fault of ours.
        with contextlib.suppress(ConnectionError):
            super().handle()

    def finish(self) -> None:
        with self.server.live_lock:
            self.server.live.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def do_GET(self) -> None:
        self.server.sim._serve(self, "GET")

    def do_POST(self) -> None:
        self.server.sim._serve(self, "POST")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        del format, args


class _Stopping(Exception):
    """The simulator stopped while an answer was under way."""


def _dhus_error(message: str) -> bytes:
    return json.dumps({"error": {"code": None, "message": {"lang": "en", "value": message}}}).encode()


class HubSimulator:
    """DHuS and CDSE on one 127.0.0.1 origin: products, tokens, faults, and a request log.

    ``require_auth=False`` makes a public mirror (no credentials checked), handy as the
    "other origin" a redirect points to. ``rate_limit`` caps each connection's body at
    that many bytes per second.
    """

    def __init__(
        self,
        *,
        username: str = "sim-user",
        password: str = "sim-password",  # noqa: S107 - a test double's default
        token_lifetime: float = 600.0,
        refresh_lifetime: float = 3600.0,
        rate_limit: float | None = None,
        require_auth: bool = True,
        host: str = "127.0.0.1",
        split_origins: bool = False,
    ) -> None:
        self.username = username
        self._password = password
        self.token_lifetime = token_lifetime
        self.refresh_lifetime = refresh_lifetime
        self.rate_limit = rate_limit
        self.require_auth = require_auth
        self._host = host
        #: CDSE's catalogue and identity service answer only on ``catalogue_url``'s origin,
        #: its zipper only on ``zipper_url``'s (chosen by the Host header), as in production.
        self.split_origins = split_origins
        self._lock = threading.Lock()
        self._products: dict[str, _Entry] = {}
        self._token_faults: collections.deque[Fault] = collections.deque()
        self._access: dict[str, float] = {}
        self._refresh: dict[str, float] = {}
        self._requests: list[RecordedRequest] = []
        #: serial -> ``time.monotonic()`` when the answer was over (sent, cut, or given up).
        self._finished: dict[int, float] = {}
        # Never reused, not even after clear_requests, so an answer still going on keeps its own.
        self._serials = itertools.count()
        self._expiries: list[float] = []
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._basic = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")

    def __repr__(self) -> str:
        return f"HubSimulator(base_url={self.base_url if self._port else None!r})"

    # -- life cycle ---------------------------------------------------------------

    def start(self) -> HubSimulator:
        """Bind a free port on the host and serve in a daemon thread."""
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server((self._host, 0), self)
        self._port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name="hubsim"
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut every open connection."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        with server.live_lock:
            live = list(server.live)
        for sock in live:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> HubSimulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- where things are ---------------------------------------------------------

    @property
    def port(self) -> int:
        """The port bound (still known after ``stop``)."""
        if self._port is None:
            msg = "the simulator has not been started"
            raise RuntimeError(msg)
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``: SCIHUB_URL, and the CDSE catalogue and zipper URLs."""
        return f"http://{self._host}:{self.port}"

    @property
    def identity_url(self) -> str:
        """The CDSE token endpoint (COPERNICUS_IDENTITY_URL), on the catalogue's origin."""
        return self.catalogue_url + TOKEN_PATH

    @property
    def catalogue_url(self) -> str:
        """COPERNICUS_CHECKSUM_URL: with ``split_origins``, ``http://localhost:<port>``.

        The same server as ``zipper_url`` under another host name, so the catalogue and the
        zipper are different origins, as in production, without a second server.
        """
        if self.split_origins and self._host == "127.0.0.1":
            return f"http://localhost:{self.port}"
        return self.base_url

    @property
    def zipper_url(self) -> str:
        """COPERNICUS_ZIPPER_URL: ``base_url``."""
        return self.base_url

    def dhus_download_url(self, product_id: str) -> str:
        """The DHuS ``$value`` URL of ``product_id``."""
        return f"{self.base_url}/dhus/odata/v1/Products('{product_id}')/$value"

    def cdse_download_url(self, product_id: str) -> str:
        """The CDSE zipper URL of ``product_id``."""
        return f"{self.base_url}/odata/v1/Products({product_id})/$value"

    # -- scripting ----------------------------------------------------------------

    def add_product(
        self,
        product_id: str,
        size: int,
        *,
        seed: int | None = None,
        faults: Iterable[Fault] = (),
        etag: str = "strong",
        last_modified: bool = True,
    ) -> SimProduct:
        """Serve ``size`` synthetic bytes as ``product_id`` (same seed, same bytes).

        Downloads carry ``ETag: "<md5>"`` (``etag="weak"``: a weak one; ``"none"``: none)
        and a ``Last-Modified`` unless ``last_modified=False``; a Range request with an
        ``If-Range`` that matches neither is answered 200 with the whole product.
        """
        chosen = _seed_of(product_id) if seed is None else seed
        product = SimProduct(id=product_id, size=size, md5=_md5(chosen, size), seed=chosen)
        entry = _Entry(product=product, etag=etag)
        if not last_modified:
            entry.modified = None
        with self._lock:
            self._products[product_id] = entry
        self.add_faults(product_id, *faults)
        return product

    def replace_product(self, product_id: str, *, seed: int, size: int | None = None) -> SimProduct:
        """Change ``product_id``'s content (and so its MD5, ETag and Last-Modified), keeping its faults.

        The hub republishing a product between two attempts: a resume must not splice
        the old partial onto the new bytes.
        """
        with self._lock:
            entry = self._products[product_id]
            old = entry.product
            new_size = old.size if size is None else size
            entry.product = SimProduct(id=product_id, size=new_size, md5=_md5(seed, new_size), seed=seed)
            if entry.modified is not None:
                # HTTP dates have one-second resolution: make the change visible in them.
                entry.modified = max(entry.modified + 1, float(int(time.time())))
            return entry.product

    def product(self, product_id: str) -> SimProduct:
        """The product added as ``product_id``."""
        with self._lock:
            return self._products[product_id].product

    def validators(self, product_id: str) -> tuple[str | None, str | None]:
        """The ``ETag`` and ``Last-Modified`` ``product_id``'s downloads carry now (``None``: not sent)."""
        with self._lock:
            entry = self._products[product_id]
            return entry.etag_value(), entry.last_modified()

    def content_md5(self, product_id: str) -> str:
        """The MD5 of ``product_id``'s true content, lowercase hex."""
        return self.product(product_id).md5

    def add_faults(self, product_id: str, *faults: Fault) -> None:
        """Queue more faults for ``product_id``'s endpoints."""
        with self._lock:
            entry = self._products[product_id]
            for fault in faults:
                (entry.checksum_faults if fault.checksum else entry.download_faults).append(fault)

    def add_token_faults(self, *faults: Fault) -> None:
        """Queue faults for the token endpoint (``status`` and ``stall`` apply there)."""
        with self._lock:
            self._token_faults.extend(faults)

    def set_checksum_wrong(self, product_id: str, *, wrong: bool = True) -> None:
        """Make ``product_id``'s published MD5 wrong for good (or right again)."""
        with self._lock:
            self._products[product_id].checksum_wrong = wrong

    def expire_tokens(self, *, refresh: bool = False) -> None:
        """Make every access token issued so far invalid now (and the refresh tokens, if asked)."""
        with self._lock:
            self._access.clear()
            if refresh:
                self._refresh.clear()
            self._expiries.append(time.monotonic())

    @property
    def token_expiries(self) -> list[float]:
        """``time.monotonic()`` of every ``expire_tokens`` call, oldest first."""
        with self._lock:
            return list(self._expiries)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request answered so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    def requests_to(self, endpoint: str, product_id: str | None = None) -> list[RecordedRequest]:
        """The requests to ``endpoint`` (and ``product_id``, if given), oldest first."""
        return [
            r
            for r in self.requests
            if r.endpoint == endpoint and (product_id is None or r.product_id == product_id)
        ]

    def clear_requests(self) -> None:
        """Forget the requests recorded so far."""
        with self._lock:
            self._requests.clear()
            self._finished.clear()

    def finished_at(self, request: RecordedRequest) -> float | None:
        """``time.monotonic()`` when the answer to ``request`` was over, or ``None`` while it goes on."""
        with self._lock:
            return self._finished.get(request.serial)

    def in_flight(self, endpoint: str, product_ids: Iterable[str] | None = None) -> list[RecordedRequest]:
        """Requests to ``endpoint`` (for one of ``product_ids``, if given) still being answered."""
        wanted = None if product_ids is None else set(product_ids)
        with self._lock:
            return [
                r
                for r in self._requests
                if r.endpoint == endpoint
                and (wanted is None or r.product_id in wanted)
                and r.serial not in self._finished
            ]

    def was_in_flight(self, request: RecordedRequest, instant: float) -> bool:
        """Whether the answer to ``request`` had begun before ``instant`` and was not over by then."""
        finished = self.finished_at(request)
        return request.at < instant and (finished is None or finished > instant)

    # -- serving ------------------------------------------------------------------

    def _serve(self, handler: _Handler, method: str) -> None:
        exchange = _Exchange(sim=self, handler=handler, method=method)
        try:
            exchange.route()
        except (OSError, _Stopping):
            # The client went away mid-answer, or the simulator is stopping: say no more.
            handler.close_connection = True
        finally:
            if exchange.serial is not None:
                with self._lock:
                    self._finished[exchange.serial] = time.monotonic()

    def _record(self, request: RecordedRequest) -> int:
        with self._lock:
            serial = next(self._serials)
            self._requests.append(attrs.evolve(request, serial=serial))
            return serial

    def _pop_fault(self, product_id: str, *, checksum: bool) -> Fault | None:
        with self._lock:
            entry = self._products.get(product_id)
            if entry is None:
                return None
            queue = entry.checksum_faults if checksum else entry.download_faults
            return queue.popleft() if queue else None

    def _entry(self, product_id: str) -> _Entry | None:
        with self._lock:
            return self._products.get(product_id)

    def _issue_tokens(self) -> dict[str, Any]:
        access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        now = time.monotonic()
        with self._lock:
            self._access[access] = now + self.token_lifetime
            self._refresh[refresh] = now + self.refresh_lifetime
        return {
            "access_token": access,
            "expires_in": self.token_lifetime,
            "refresh_token": refresh,
            "refresh_expires_in": self.refresh_lifetime,
            "token_type": "Bearer",
            "not-before-policy": 0,
            "scope": "email profile",
        }

    def _bearer_valid(self, authorization: str | None) -> bool:
        if not authorization or not authorization.startswith("Bearer "):
            return False
        with self._lock:
            expires = self._access.get(authorization.removeprefix("Bearer "))
        return expires is not None and time.monotonic() < expires

    def _refresh_valid(self, token: str) -> bool:
        with self._lock:
            expires = self._refresh.get(token)
        return expires is not None and time.monotonic() < expires

    def _basic_valid(self, authorization: str | None) -> bool:
        return authorization is not None and hmac.compare_digest(authorization, self._basic)

    def _password_valid(self, username: str, password: str) -> bool:
        return hmac.compare_digest(username, self.username) and hmac.compare_digest(password, self._password)


@attrs.define
class _Exchange:
    """One request and its answer."""

    sim: HubSimulator
    handler: _Handler
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

    # -- routing ------------------------------------------------------------------

    def route(self) -> None:
        parts = urllib.parse.urlsplit(self.handler.path)
        path = urllib.parse.unquote(parts.path)
        self.query = urllib.parse.parse_qs(parts.query)
        if self.sim.split_origins and not self._on_its_origin(path):
            self._json(404, {"error": f"no route for {path} on this host"})
            return
        if self.method == "POST":
            body = self._read_body()
            if path == TOKEN_PATH:
                self.endpoint = "token"
                self._token(urllib.parse.parse_qs(body.decode("utf-8", errors="replace")))
            else:
                self._json(405, {"error": "method not allowed"})
            return
        self._route_get(path)

    def _on_its_origin(self, path: str) -> bool:
        """Split origins: the zipper answers on ``zipper_url``'s host, catalogue and token on the other."""
        host = (self.handler.headers.get("Host") or "").lower()
        catalogue = urllib.parse.urlsplit(self.sim.catalogue_url).netloc
        zipper = urllib.parse.urlsplit(self.sim.zipper_url).netloc
        if _ZIPPER.fullmatch(path):
            return host == zipper
        if path in (_CATALOGUE, TOKEN_PATH):
            return host == catalogue
        return True

    def _route_get(self, path: str) -> None:
        if dhus := _DHUS.fullmatch(path):
            self.product_id = dhus.group(1)
            if dhus.group(2) == "/$value":
                self.endpoint = "dhus_value"
                if self._authorized_basic():
                    self._download()
            else:
                self.endpoint = "dhus_checksum"
                if self._authorized_basic():
                    self._dhus_checksum()
        elif zipper := _ZIPPER.fullmatch(path):
            self.endpoint = "zipper"
            self.product_id = zipper.group(1)
            if self._authorized_bearer(required=True):
                self._download()
        elif path == _CATALOGUE:
            self.endpoint = "cdse_checksum"
            wanted = _FILTER_ID.fullmatch(self.query.get("$filter", [""])[0])
            self.product_id = wanted.group(1) if wanted else None
            if self._authorized_bearer(required=False):
                self._cdse_checksum()
        else:
            self._json(404, {"error": f"no route for {path}"})

    def _read_body(self) -> bytes:
        length = int(self.handler.headers.get("Content-Length") or 0)
        return self.handler.rfile.read(length) if length > 0 else b""

    # -- authentication -----------------------------------------------------------

    def _authorized_basic(self) -> bool:
        if not self.sim.require_auth or self.sim._basic_valid(self.handler.headers.get("Authorization")):
            return True
        self._send(401, _dhus_error("Unauthorized"), {"WWW-Authenticate": 'Basic realm="OData service"'})
        return False

    def _authorized_bearer(self, *, required: bool) -> bool:
        authorization = self.handler.headers.get("Authorization")
        if not self.sim.require_auth or (authorization is None and not required):
            return True
        if self.sim._bearer_valid(authorization):
            return True
        self._json(401, {"detail": "Expired signature!"}, {"WWW-Authenticate": "Bearer"})
        return False

    # -- endpoints ----------------------------------------------------------------

    def _token(self, form: dict[str, list[str]]) -> None:
        def field(name: str) -> str:
            return form.get(name, [""])[0]

        self.grant_type = field("grant_type")
        fault = _pop(self.sim._token_faults, self.sim._lock)
        if fault is not None and self._generic_fault(fault):
            return
        if field("client_id") != _CLIENT_ID:
            self._json(401, {"error": "unauthorized_client", "error_description": "Invalid client"})
        elif self.grant_type == "password":
            if self.sim._password_valid(field("username"), field("password")):
                self._json(200, self.sim._issue_tokens())
            else:
                self._json(401, {"error": "invalid_grant", "error_description": "Invalid user credentials"})
        elif self.grant_type == "refresh_token":
            if self.sim._refresh_valid(field("refresh_token")):
                self._json(200, self.sim._issue_tokens())
            else:
                self._json(400, {"error": "invalid_grant", "error_description": "Token is not active"})
        else:
            self._json(400, {"error": "unsupported_grant_type"})

    def _dhus_checksum(self) -> None:
        assert self.product_id is not None
        fault = self.sim._pop_fault(self.product_id, checksum=True)
        if fault is not None and self._generic_fault(fault):
            return
        entry = self.sim._entry(self.product_id)
        if entry is None or (fault is not None and fault.kind == "not_found"):
            self._not_found()
            return
        value = self._published(entry, fault).upper()  # DHuS publishes upper case
        uri = f"{self.sim.base_url}/dhus/odata/v1/Products('{self.product_id}')"
        fields: dict[str, Any] = {
            "Id": self.product_id,
            # DHuS names a product without the .SAFE that CDSE's catalogue adds.
            "Name": self.product_id,
            "ContentLength": entry.product.size,
            "Online": True,
            "Checksum": {"__metadata": {"type": "DHuS.Checksum"}, "Algorithm": "MD5", "Value": value},
        }
        selected = {name.strip() for name in self.query.get("$select", [""])[0].split(",") if name.strip()}
        if selected:
            fields = {name: field for name, field in fields.items() if name in selected}
        metadata = {
            "id": uri,
            "uri": uri,
            "type": "DHuS.Product",
            "content_type": "application/octet-stream",
            "media_src": f"{uri}/$value",
            "edit_media": f"{uri}/$value",
        }
        self._json(200, {"d": {"__metadata": metadata, **fields}})

    def _cdse_checksum(self) -> None:
        product_id = self.product_id
        fault = self.sim._pop_fault(product_id, checksum=True) if product_id else None
        if fault is not None and self._generic_fault(fault):
            return
        entry = self.sim._entry(product_id) if product_id else None
        if entry is None or (fault is not None and fault.kind == "not_found"):
            self._json(200, {"@odata.context": "$metadata#Products", "value": []})
            return
        product = entry.product
        blake3 = hashlib.sha256(f"{product.id}:{product.seed}".encode()).hexdigest()
        item: dict[str, Any] = {
            "@odata.mediaContentType": "application/octet-stream",
            "Id": product.id,
            "Name": f"{product.id}.SAFE",
            "ContentType": "application/octet-stream",
            "ContentLength": product.size,
            "Online": True,
            "Checksum": [
                {"Value": self._published(entry, fault), "Algorithm": "MD5"},
                {"Value": blake3, "Algorithm": "BLAKE3"},
            ],
        }
        if fault is not None and fault.kind == "catalogue_entry":
            item.update(fault.entry)
        self._json(200, {"@odata.context": "$metadata#Products", "value": [item]})

    def _published(self, entry: _Entry, fault: Fault | None) -> str:
        if fault is not None and fault.kind == "malformed_checksum":
            return "A-TEST-CHECKSUM"
        if entry.checksum_wrong or (fault is not None and fault.kind == "wrong_checksum"):
            real = entry.product.md5
            return self._WRONG if real != self._WRONG else self._WRONG[::-1]
        return entry.product.md5

    def _download(self) -> None:
        assert self.product_id is not None
        entry = self.sim._entry(self.product_id)
        if entry is None:
            self._not_found()
            return
        fault = self.sim._pop_fault(self.product_id, checksum=False)
        if fault is not None and self._generic_fault(fault):
            return
        if fault is not None and fault.kind == "not_found":
            self._not_found()
            return
        self._body(entry.product, fault)

    # -- answers ------------------------------------------------------------------

    def _generic_fault(self, fault: Fault) -> bool:
        """Answer a fault that replaces the whole response; ``False`` when it is not one."""
        if fault.kind == "status":
            self.override = fault.headers
            extra = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            if fault.code == 202:
                self._send(202, _dhus_error("The product has been requested from the long term archive"))
            else:
                self._send(fault.code, _dhus_error(f"Simulated HTTP {fault.code}"), extra)
            return True
        if fault.kind == "concurrent_flows":
            message = f'Maximum number of 4 concurrent flows achieved by the user "{self.sim.username}"'
            self._send(403, _dhus_error(message), {"cause-message": f"ForbiddenError : {message}"})
            return True
        if fault.kind == "redirect":
            self._send(fault.code, b"", {"Location": fault.location})
            return True
        if fault.kind == "json":
            self._json(fault.code, fault.document)
            return True
        if fault.kind == "trickle":
            self.trickle = fault.seconds
            return False
        if fault.kind == "headers":
            self.override = fault.headers
            return False
        # Outside a download there is no body to pause before: pause before answering.
        stalled = fault.kind == "stall" and self.endpoint not in {"dhus_value", "zipper"}
        if stalled and self.sim._stopping.wait(fault.seconds):
            raise _Stopping
        return False

    def _not_found(self) -> None:
        message = f"Invalid key ({self.product_id}) to access Products"
        self._send(404, _dhus_error(message), {"cause-message": f"InvalidKeyException : {message}"})

    def _json(self, status: int, document: object, headers: dict[str, str] | None = None) -> None:
        self._send(
            status, json.dumps(document).encode(), {"Content-Type": "application/json", **(headers or {})}
        )

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
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
            if self.sim._stopping.wait(self.trickle):
                raise _Stopping

    def _start(
        self, status: int, length: int, headers: dict[str, str], *, body_bytes: int | None = None
    ) -> None:
        handler = self.handler
        self.serial = self.sim._record(
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

    def _body(self, product: SimProduct, fault: Fault | None) -> None:
        kind = fault.kind if fault is not None else ""
        size = product.size
        start, stop, status = 0, size, 200
        asked = _RANGE.fullmatch(self.handler.headers.get("Range", "").strip())
        headers = {
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "Content-Disposition": f'inline;filename="{product.id}.zip"',
        }
        entry = self.sim._entry(product.id)
        etag = entry.etag_value() if entry is not None else None
        modified = entry.last_modified() if entry is not None else None
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
                self._send(416, b"", {"Content-Range": f"bytes */{size}"})
                return
            start, stop, status = first, min(last + 1, size), 206
            if kind == "wrong_range" and first > 0:
                start, stop = 0, size
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
        length = stop - start
        cut = fault.n_bytes if kind in {"reset", "short"} and fault is not None else length
        self._start(status, length, headers, body_bytes=min(cut, length))
        if kind == "stall" and fault is not None and self.sim._stopping.wait(fault.seconds):
            raise _Stopping
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
            first = _doubled_block(product.seed)[start % _PERIOD]
            sendall(bytes([first ^ 0xFF]))
            start += 1
        rate = self.sim.rate_limit
        if rate is None:
            for piece in _pieces(product.seed, start, stop):
                sendall(piece)
            return
        # Paced: small pieces, sleeping whenever the sender is ahead of the rate.
        step = max(1, int(rate // 50))
        began, sent = time.monotonic(), 0
        for piece in _pieces(product.seed, start, stop):
            for at in range(0, len(piece), step):
                part = piece[at : at + step]
                sendall(part)
                sent += len(part)
                ahead = sent / rate - (time.monotonic() - began)
                if ahead > 0 and self.sim._stopping.wait(ahead):
                    raise _Stopping

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


def _pop(queue: collections.deque[Fault], lock: threading.Lock) -> Fault | None:
    with lock:
        return queue.popleft() if queue else None


def http_date(seconds_from_now: float) -> str:
    """An HTTP-date ``seconds_from_now`` in the future, for ``Retry-After`` faults."""
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)
