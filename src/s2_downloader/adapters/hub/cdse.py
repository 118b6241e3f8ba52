"""The Copernicus Data Space hub: OData catalogue, zipper downloads, one OAuth token per process."""

from __future__ import annotations

import logging
import threading
import time
import urllib.parse
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

import attrs
import urllib3

from s2_downloader.adapters.hub.client import (
    DEFAULT_CHUNK_SIZE,
    Credentials,
    HubHttp,
    ProductResponseStream,
    is_md5,
    time_left,
)
from s2_downloader.adapters.hub.urls import Origin, check_url, shown
from s2_downloader.domain.errors import BadRequest, DeadlineExceeded, FailureKind, HubError
from s2_downloader.domain.request import DownloadRequest

__all__ = ["DEFAULT_DOWNLOAD_HOSTS", "CdseHub", "CdseTokens", "TokenSource"]

#: Where CDSE's zipper redirects downloads today (reached over https only).
DEFAULT_DOWNLOAD_HOSTS = frozenset({"download.dataspace.copernicus.eu"})

_log = logging.getLogger("s2_downloader.hub.cdse")
#: Refresh this long before expiry at most; a short-lived token uses a tenth of its life.
_MAX_MARGIN = 60.0
_MARGIN_SHARE = 0.1
_NEVER = float("inf")


class TokenSource(Credentials, Protocol):
    """Where ``CdseHub`` gets its bearer token: ``CdseTokens`` (own grants) or an SSM parameter.

    ``identity_url`` is CDSE's token endpoint; its host is one of the CDSE hosts.
    """

    @property
    def identity_url(self) -> str:
        """COPERNICUS_IDENTITY_URL."""
        ...


def _margin(lifetime: float) -> float:
    return min(_MAX_MARGIN, lifetime * _MARGIN_SHARE)


@attrs.define
class CdseTokens:
    """The process's CDSE access token, shared by every thread and renewed before it expires.

    ``clock`` is monotonic seconds (injected so tests can move time). The lock is held
    across a token request on purpose: threads that need a token meanwhile wait for
    that one instead of asking for their own (each no longer than its deadline).

    A password grant the identity service refuses (400/401) is remembered for
    ``refused_seconds``: every call in that window is ``UNAUTHORIZED`` at once, without
    asking again, so a wrong password in many workers never locks the account.
    """

    pool: urllib3.PoolManager
    identity_url: str
    username: str
    password: str = attrs.field(repr=False)
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    clock: Callable[[], float] = attrs.field(default=time.monotonic, repr=False)
    client_id: str = "cdse-public"
    refused_seconds: float = 300.0
    _lock: threading.Lock = attrs.field(init=False, factory=threading.Lock, repr=False)
    _access: str | None = attrs.field(init=False, default=None, repr=False)
    _access_renew_at: float = attrs.field(init=False, default=0.0, repr=False)
    _refresh: str | None = attrs.field(init=False, default=None, repr=False)
    _refresh_usable_until: float = attrs.field(init=False, default=0.0, repr=False)
    _refused_until: float | None = attrs.field(init=False, default=None, repr=False)
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

    def access_token(self, *, deadline: float | None = None) -> str:
        """A token valid for a while yet: the held one, refreshed, or newly granted.

        Raises ``HubError`` (``UNAUTHORIZED`` while a refused password is remembered)
        or ``DeadlineExceeded`` when ``deadline`` passes first, waiting for the lock included.
        """
        left = time_left(deadline, "a CDSE token")
        if not self._lock.acquire(timeout=-1 if left is None else left):
            raise DeadlineExceeded("out of time waiting for another thread's CDSE token request")
        try:
            return self._token(deadline)
        finally:
            self._lock.release()

    def _token(self, deadline: float | None) -> str:
        now = self.clock()
        if self._access is not None and now < self._access_renew_at:
            return self._access
        if self._refused_until is not None:
            if now < self._refused_until:
                wait = self._refused_until - now
                detail = f"the identity service refused the password; not asking again for {wait:.0f} s"
                raise HubError(FailureKind.UNAUTHORIZED, detail, retry_after=wait)
            self._refused_until = None
        if self._refresh is not None and now < self._refresh_usable_until:
            try:
                return self._grant("refresh_token", {"refresh_token": self._refresh}, deadline)
            except _Refused:
                self._refresh = None
                _log.info(
                    "refresh token refused; asking with the password",
                    extra={"event": "hub_token_refresh_refused"},
                )
        try:
            return self._grant("password", {"username": self.username, "password": self.password}, deadline)
        except _Refused as exc:
            self._refused_until = self.clock() + self.refused_seconds
            _log.error(
                "the identity service refused the CDSE user; downloads are deferred meanwhile",
                extra={"event": "hub_password_refused", "seconds": self.refused_seconds},
            )
            raise HubError(
                FailureKind.UNAUTHORIZED,
                f"identity provider refused the user: {exc}",
                retry_after=self.refused_seconds,
            ) from exc

    def authorization(self, *, deadline: float | None = None) -> str:
        """The ``Authorization`` header value for CDSE requests."""
        return f"Bearer {self.access_token(deadline=deadline)}"

    def rejected(self, authorization: str) -> bool:
        """A hub refused ``authorization``: forget that token (once, however many threads saw it)."""
        with self._lock:
            if self._access is not None and authorization == f"Bearer {self._access}":
                self._access = None
        return True

    def _grant(self, grant_type: str, fields: dict[str, str], deadline: float | None) -> str:
        started = self.clock()
        form = {"client_id": self.client_id, "grant_type": grant_type, **fields}
        body = urllib.parse.urlencode(form).encode("ascii")
        response = self._http.request(
            "POST",
            self.identity_url,
            granule_id=None,
            headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
            body=body,
            deadline=deadline,
        )
        if response.status in (400, 401):
            # Keycloak says invalid_grant for a wrong password and for a dead refresh token.
            error = self._http.failure(response, self.identity_url, deadline=deadline)
            raise _Refused(f"HTTP {response.status}") from error
        document = self._http.read_json(response, self.identity_url, deadline=deadline)
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

    The bearer token goes to the catalogue and zipper origins, and follows a download's
    redirects only to the zipper origin or to ``https://<h>`` for ``h`` in
    ``download_hosts``; a redirect anywhere else is a ``BAD_RESPONSE``. ``pool`` is the
    process's one ``PoolManager``.
    """

    pool: urllib3.PoolManager
    tokens: TokenSource
    checksum_url: str
    zipper_url: str
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    chunk_size: int = DEFAULT_CHUNK_SIZE
    download_hosts: frozenset[str] = DEFAULT_DOWNLOAD_HOSTS
    _hosts: frozenset[str] = attrs.field(init=False, repr=False)
    _catalogue: HubHttp = attrs.field(init=False, repr=False)
    _zipper: HubHttp = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self.checksum_url = self.checksum_url.rstrip("/")
        self.zipper_url = self.zipper_url.rstrip("/")
        catalogue = check_url(self.checksum_url)
        zipper = check_url(self.zipper_url)
        identity = check_url(self.tokens.identity_url)
        downloads = frozenset(_https_origin(host) for host in self.download_hosts)
        self.download_hosts = frozenset(host for _, host, _ in downloads)
        self._hosts = frozenset({catalogue[1], zipper[1], identity[1], *self.download_hosts})
        timeout = urllib3.Timeout(connect=self.connect_timeout, read=self.read_timeout)
        self._catalogue = HubHttp(
            pool=self.pool,
            timeout=timeout,
            credential_origins=frozenset({catalogue}),
            credentials=self.tokens,
            follow_origins=frozenset({catalogue}),
            chunk_size=self.chunk_size,
            log=_log,
        )
        self._zipper = HubHttp(
            pool=self.pool,
            timeout=timeout,
            credential_origins=frozenset({zipper, *downloads}),
            credentials=self.tokens,
            follow_origins=frozenset({zipper, *downloads}),
            chunk_size=self.chunk_size,
            log=_log,
        )

    def accepts_download_url(self, url: str) -> None:
        """Raise ``BadRequest`` unless ``url`` is an http(s) URL on a CDSE host.

        The hosts are those of the catalogue, zipper and identity URLs and
        ``download_hosts``. The URL only has to be a CDSE link: the product is always
        fetched from the zipper, whatever link the message carries.
        """
        _, host, _ = check_url(url)
        if host not in self._hosts:
            msg = f"download_url {shown(url)!r} is not on a CDSE host"
            raise BadRequest(msg)

    def follows_redirect_to(self, url: str) -> bool:
        """Whether a download redirected to ``url`` is followed (with the token)."""
        try:
            return self._zipper.may_follow(check_url(url))
        except BadRequest:
            return False

    def checksum(self, granule_id: str, *, deadline: float | None = None) -> str:
        """The MD5 the CDSE catalogue publishes for the product, lowercase hex; raises ``HubError``.

        No product is ``NOT_FOUND``; a product offline, or whose MD5 is not published
        yet (CDSE adds checksums seconds to minutes after the product), is ``OFFLINE``.
        """
        query = urllib.parse.quote(f"Id eq '{granule_id}'", safe="'")
        url = f"{self.checksum_url}/odata/v1/Products?$filter={query}"
        return _md5_of(self._catalogue.get_json(url, granule_id=granule_id, deadline=deadline), granule_id)

    def open_product(
        self,
        request: DownloadRequest,
        offset: int,
        *,
        validator: str | None = None,
        deadline: float | None = None,
    ) -> AbstractContextManager[ProductResponseStream]:
        """Stream the product from the zipper from ``offset`` (``HubHttp.product``); raises ``HubError``.

        ``request.download_url`` is not fetched: CDSE products come from
        ``{zipper}/odata/v1/Products(<id>)/$value`` whatever link the message carried.
        """
        url = f"{self.zipper_url}/odata/v1/Products({urllib.parse.quote(request.id, safe='')})/$value"
        return self._zipper.product(
            url, offset, granule_id=request.id, validator=validator, deadline=deadline
        )


def _https_origin(host: str) -> Origin:
    try:
        return check_url(f"https://{host.strip()}/")
    except BadRequest as exc:
        msg = f"download host {host[:80]!r} is not a host name"
        raise ValueError(msg) from exc


def _md5_of(document: Any, granule_id: str) -> str:
    try:
        products = document["value"]
        if not products:
            raise HubError(FailureKind.NOT_FOUND, f"the CDSE catalogue has no product {granule_id}")
        product = products[0]
        online = product.get("Online", True)
        entries = product.get("Checksum") or []
        values = [e.get("Value") for e in entries if str(e.get("Algorithm", "")).upper() == "MD5"]
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        raise HubError(FailureKind.BAD_RESPONSE, f"no checksum in the CDSE answer for {granule_id}") from exc
    if online is False:
        # Like a 202: the product is in the long-term archive until CDSE brings it back.
        raise HubError(FailureKind.OFFLINE, f"CDSE product {granule_id} is offline")
    if not values:
        # Published seconds to minutes after the product: wait for it, without counting.
        raise HubError(FailureKind.OFFLINE, f"the CDSE catalogue has no MD5 for {granule_id} yet")
    value = values[0]
    if not is_md5(value):
        raise HubError(FailureKind.BAD_RESPONSE, f"CDSE MD5 of {granule_id} is not 32 hex digits")
    return value.lower()
