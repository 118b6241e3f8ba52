"""The hub simulator: DHuS and CDSE on one 127.0.0.1 origin, with scripted faults.

Real HTTP/1.1 with keep-alive over ``ThreadingHTTPServer``, so the adapters are tested
on the wire. ``HubSimulator`` holds the products (``catalogue.py``), the user and its
tokens (``identity.py``) and the request log (``requestlog.py``), and serves each request
through ``routes.py``::

    with HubSimulator(username="u", password="p") as sim:
        product = sim.add_product("p1", 10_000_000, faults=[Fault.status(503, retry_after="2")])
"""

from __future__ import annotations

import contextlib
import email.utils
import socket
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from s2_downloader.testing.hubsim import routes
from s2_downloader.testing.hubsim.catalogue import Catalogue
from s2_downloader.testing.hubsim.cdse import TOKEN_PATH
from s2_downloader.testing.hubsim.content import SimProduct
from s2_downloader.testing.hubsim.faults import Fault
from s2_downloader.testing.hubsim.identity import Identity
from s2_downloader.testing.hubsim.requestlog import RecordedRequest, RequestLog

__all__ = ["HubSimulator", "http_date"]


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
        routes.serve(self.server.sim, self, "GET")

    def do_POST(self) -> None:
        routes.serve(self.server.sim, self, "POST")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        del format, args


class HubSimulator:
    """DHuS and CDSE on one 127.0.0.1 origin: products, tokens, faults, and a request log.

    ``require_auth=False`` makes a public mirror (no credentials checked), handy as the
    "other origin" a redirect points to. ``rate_limit`` caps each connection's body at
    that many bytes per second, and a connection that stalls does not catch up afterwards
    (``pacing.py``).
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
        self.rate_limit = rate_limit
        self.require_auth = require_auth
        self._host = host
        #: CDSE's catalogue and identity service answer only on ``catalogue_url``'s origin,
        #: its zipper only on ``zipper_url``'s (chosen by the Host header), as in production.
        self.split_origins = split_origins
        #: The products, their faults and validators.
        self.catalogue = Catalogue()
        #: The user, its tokens and the token endpoint's faults.
        self.identity = Identity(
            username=username,
            password=password,
            token_lifetime=token_lifetime,
            refresh_lifetime=refresh_lifetime,
        )
        #: Every answer, as it went out.
        self.request_log = RequestLog()
        #: Set while stopping: every pause of an answer ends.
        self.stopping = threading.Event()
        self._server: _Server | None = None
        self._port: int | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"HubSimulator(base_url={self.base_url if self._port else None!r})"

    # -- life cycle ---------------------------------------------------------------

    def start(self) -> HubSimulator:
        """Bind a free port on the host and serve in a daemon thread."""
        if self._server is not None:
            return self
        self.stopping.clear()
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
        self.stopping.set()
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

    # -- the user -----------------------------------------------------------------

    @property
    def username(self) -> str:
        """The one user's name."""
        return self.identity.username

    @property
    def token_lifetime(self) -> float:
        """Seconds an access token issued from now on is valid."""
        return self.identity.token_lifetime

    @token_lifetime.setter
    def token_lifetime(self, seconds: float) -> None:
        self.identity.token_lifetime = seconds

    @property
    def refresh_lifetime(self) -> float:
        """Seconds a refresh token issued from now on is valid."""
        return self.identity.refresh_lifetime

    @refresh_lifetime.setter
    def refresh_lifetime(self, seconds: float) -> None:
        self.identity.refresh_lifetime = seconds

    def add_token_faults(self, *faults: Fault) -> None:
        """Queue faults for the token endpoint (``status``, ``stall`` and ``trickle`` apply there)."""
        self.identity.add_token_faults(*faults)

    def expire_tokens(self, *, refresh: bool = False) -> None:
        """Make every access token issued so far invalid now (and the refresh tokens, if asked)."""
        self.identity.expire_tokens(refresh=refresh)

    @property
    def token_expiries(self) -> list[float]:
        """``time.monotonic()`` of every ``expire_tokens`` call, oldest first."""
        return self.identity.token_expiries

    # -- the products -------------------------------------------------------------

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
        return self.catalogue.add_product(
            product_id, size, seed=seed, faults=faults, etag=etag, last_modified=last_modified
        )

    def replace_product(self, product_id: str, *, seed: int, size: int | None = None) -> SimProduct:
        """Change ``product_id``'s content (and so its MD5, ETag and Last-Modified), keeping its faults.

        The hub republishing a product between two attempts: a resume must not splice
        the old partial onto the new bytes.
        """
        return self.catalogue.replace_product(product_id, seed=seed, size=size)

    def product(self, product_id: str) -> SimProduct:
        """The product added as ``product_id``."""
        return self.catalogue.product(product_id)

    def validators(self, product_id: str) -> tuple[str | None, str | None]:
        """The ``ETag`` and ``Last-Modified`` ``product_id``'s downloads carry now (``None``: not sent)."""
        return self.catalogue.validators(product_id)

    def content_md5(self, product_id: str) -> str:
        """The MD5 of ``product_id``'s true content, lowercase hex."""
        return self.product(product_id).md5

    def add_faults(self, product_id: str, *faults: Fault) -> None:
        """Queue more faults for ``product_id``'s endpoints."""
        self.catalogue.add_faults(product_id, *faults)

    def set_checksum_wrong(self, product_id: str, *, wrong: bool = True) -> None:
        """Make ``product_id``'s published MD5 wrong for good (or right again)."""
        self.catalogue.set_checksum_wrong(product_id, wrong=wrong)

    # -- the request log ----------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request answered so far, oldest first (a copy)."""
        return self.request_log.requests

    def requests_to(self, endpoint: str, product_id: str | None = None) -> list[RecordedRequest]:
        """The requests to ``endpoint`` (and ``product_id``, if given), oldest first."""
        return [
            r
            for r in self.requests
            if r.endpoint == endpoint and (product_id is None or r.product_id == product_id)
        ]

    def clear_requests(self) -> None:
        """Forget the requests recorded so far."""
        self.request_log.clear()

    def finished_at(self, request: RecordedRequest) -> float | None:
        """``time.monotonic()`` when the answer to ``request`` was over, or ``None`` while it goes on."""
        return self.request_log.finished_at(request)

    def in_flight(self, endpoint: str, product_ids: Iterable[str] | None = None) -> list[RecordedRequest]:
        """Requests to ``endpoint`` (for one of ``product_ids``, if given) still being answered."""
        return self.request_log.in_flight(endpoint, product_ids)

    def was_in_flight(self, request: RecordedRequest, instant: float) -> bool:
        """Whether the answer to ``request`` had begun before ``instant`` and was not over by then."""
        finished = self.finished_at(request)
        return request.at < instant and (finished is None or finished > instant)


def http_date(seconds_from_now: float) -> str:
    """An HTTP-date ``seconds_from_now`` in the future, for ``Retry-After`` faults."""
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)
