"""The Copernicus Data Space hub: OData catalogue, zipper downloads, one OAuth token per process."""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import urllib3

from s2_downloader.adapters.hub_http import DEFAULT_CHUNK_SIZE, HubHttp, Origin
from s2_downloader.domain.errors import FailureKind, HubError
from s2_downloader.domain.ports import ProductStream
from s2_downloader.domain.request import DownloadRequest, origin_of

__all__ = ["CdseHub", "CdseTokens"]

_log = logging.getLogger("s2_downloader.hub.cdse")
_MD5 = re.compile(r"[0-9A-Fa-f]{32}")
_ACCEPT_JSON = {"Accept": "application/json"}
#: Refresh this long before expiry at most; a short-lived token uses a tenth of its life.
_MAX_MARGIN = 60.0
_MARGIN_SHARE = 0.1
_NEVER = float("inf")


def _margin(lifetime: float) -> float:
    return min(_MAX_MARGIN, lifetime * _MARGIN_SHARE)


@attrs.define
class CdseTokens:
    """The process's CDSE access token, shared by every thread and renewed before it expires.

    ``clock`` is monotonic seconds (injected so tests can move time). The lock is held
    across a token request on purpose: threads that need a token meanwhile wait for
    that one instead of asking for their own.
    """

    pool: urllib3.PoolManager
    identity_url: str
    username: str
    password: str = attrs.field(repr=False)
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    clock: Callable[[], float] = attrs.field(default=time.monotonic, repr=False)
    client_id: str = "cdse-public"
    _lock: threading.Lock = attrs.field(init=False, factory=threading.Lock, repr=False)
    _access: str | None = attrs.field(init=False, default=None, repr=False)
    _access_renew_at: float = attrs.field(init=False, default=0.0, repr=False)
    _refresh: str | None = attrs.field(init=False, default=None, repr=False)
    _refresh_usable_until: float = attrs.field(init=False, default=0.0, repr=False)
    _http: HubHttp = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._http = HubHttp(
            pool=self.pool,
            timeout=urllib3.Timeout(connect=self.connect_timeout, read=self.read_timeout),
            credential_origins=frozenset(),
            # The token endpoint is POSTed to; a redirect there is not followed.
            follow_origins=frozenset(),
            log=_log,
        )

    def access_token(self) -> str:
        """A token valid for a while yet: the held one, refreshed, or newly granted."""
        with self._lock:
            if self._access is not None and self.clock() < self._access_renew_at:
                return self._access
            if self._refresh is not None and self.clock() < self._refresh_usable_until:
                try:
                    return self._grant("refresh_token", {"refresh_token": self._refresh})
                except _Refused:
                    self._refresh = None
                    _log.info(
                        "refresh token refused; asking with the password",
                        extra={"event": "hub_token_refresh_refused"},
                    )
            try:
                return self._grant("password", {"username": self.username, "password": self.password})
            except _Refused as exc:
                raise HubError(
                    FailureKind.UNAUTHORIZED, f"identity provider refused the user: {exc}"
                ) from exc

    def authorization(self) -> str:
        """The ``Authorization`` header value for CDSE requests."""
        return f"Bearer {self.access_token()}"

    def rejected(self, authorization: str) -> bool:
        """A hub refused ``authorization``: forget that token (once, however many threads saw it)."""
        with self._lock:
            if self._access is not None and authorization == f"Bearer {self._access}":
                self._access = None
        return True

    def _grant(self, grant_type: str, fields: dict[str, str]) -> str:
        started = self.clock()
        form = {"client_id": self.client_id, "grant_type": grant_type, **fields}
        body = urllib.parse.urlencode(form).encode("ascii")
        response = self._http.request(
            "POST",
            self.identity_url,
            granule_id=None,
            headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
            body=body,
        )
        if response.status in (400, 401):
            # Keycloak says invalid_grant for a wrong password and for a dead refresh token.
            error = self._http.failure(response, self.identity_url)
            raise _Refused(f"HTTP {response.status}") from error
        document = self._http.read_json(response, self.identity_url)
        access, lifetime, refresh, refresh_lifetime = _parse_token(document)
        self._access = access
        self._access_renew_at = started + lifetime - _margin(lifetime)
        self._refresh = refresh
        self._refresh_usable_until = (
            _NEVER if refresh_lifetime <= 0 else started + refresh_lifetime - _margin(refresh_lifetime)
        )
        _log.info(
            "CDSE token granted",
            extra={"event": "hub_token_granted", "grant_type": grant_type, "expires_in": lifetime},
        )
        return access


class _Refused(Exception):
    """The identity provider refused a grant (a 400 or 401)."""


def _parse_token(document: Any) -> tuple[str, float, str | None, float]:
    try:
        access = document["access_token"]
        lifetime = float(document["expires_in"])
        refresh = document.get("refresh_token")
        refresh_lifetime = float(document.get("refresh_expires_in") or 0)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise HubError(FailureKind.BAD_RESPONSE, "token answer lacks access_token or expires_in") from exc
    if not isinstance(access, str) or not access or lifetime <= 0:
        raise HubError(FailureKind.BAD_RESPONSE, "token answer holds no usable access token")
    if not isinstance(refresh, str) or not refresh:
        refresh = None
    return access, lifetime, refresh, refresh_lifetime


@attrs.define
class CdseHub:
    """A ``Hub`` over CDSE: checksums from the catalogue, products from the zipper.

    The bearer token goes to the catalogue and zipper origins (and ``extra_origins``,
    e.g. a download host the zipper redirects to); a redirect anywhere else is a
    ``BAD_RESPONSE``. ``pool`` is the process's one ``PoolManager``.
    """

    pool: urllib3.PoolManager
    tokens: CdseTokens
    checksum_url: str
    zipper_url: str
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    chunk_size: int = DEFAULT_CHUNK_SIZE
    extra_origins: frozenset[Origin] = frozenset()
    allowed_origins: frozenset[Origin] = attrs.field(init=False)
    _http: HubHttp = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self.checksum_url = self.checksum_url.rstrip("/")
        self.zipper_url = self.zipper_url.rstrip("/")
        self.allowed_origins = frozenset({origin_of(self.zipper_url)})
        hosts = frozenset({origin_of(self.checksum_url), *self.allowed_origins, *self.extra_origins})
        self._http = HubHttp(
            pool=self.pool,
            timeout=urllib3.Timeout(connect=self.connect_timeout, read=self.read_timeout),
            credential_origins=hosts,
            credentials=self.tokens,
            follow_origins=hosts,
            chunk_size=self.chunk_size,
            log=_log,
        )

    def checksum(self, granule_id: str) -> str:
        """The MD5 the CDSE catalogue publishes for the product, lowercase hex; raises ``HubError``."""
        query = urllib.parse.quote(f"Id eq '{granule_id}'", safe="'")
        url = f"{self.checksum_url}/odata/v1/Products?$filter={query}"
        response = self._http.request(
            "GET", url, granule_id=granule_id, headers={"Accept": "application/json"}
        )
        document = self._http.read_json(response, url)
        return _md5_of(document, granule_id)

    @contextlib.contextmanager
    def open_product(self, request: DownloadRequest, offset: int) -> Iterator[ProductStream]:
        """Stream the product from the zipper from ``offset``; the connection is released on exit."""
        url = f"{self.zipper_url}/odata/v1/Products({urllib.parse.quote(request.id, safe='')})/$value"
        stream = self._http.open_stream(url, offset, granule_id=request.id)
        try:
            yield stream
        finally:
            stream.close()


def _md5_of(document: Any, granule_id: str) -> str:
    try:
        products = document["value"]
        if not products:
            raise HubError(FailureKind.NOT_FOUND, f"the CDSE catalogue has no product {granule_id}")
        entries = products[0]["Checksum"]
        values = [e["Value"] for e in entries if str(e.get("Algorithm", "")).upper() == "MD5"]
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        raise HubError(FailureKind.BAD_RESPONSE, f"no checksum in the CDSE answer for {granule_id}") from exc
    if not values:
        raise HubError(FailureKind.BAD_RESPONSE, f"the CDSE catalogue has no MD5 for {granule_id}")
    value = values[0]
    if not isinstance(value, str) or not _MD5.fullmatch(value):
        raise HubError(FailureKind.BAD_RESPONSE, f"CDSE MD5 of {granule_id} is not 32 hex digits")
    return value.lower()
