"""CDSE's identity service as a token source: one OAuth token per process, shared and renewed.

docs/interface.md (the hub): a password grant, refreshed with ``grant_type=refresh_token``
before it expires; a refused password is remembered for a few minutes so that many
workers never lock the account.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import attrs
import urllib3

from s2_downloader.adapters.hub.client import HubHttp
from s2_downloader.adapters.hub.deadlines import time_left
from s2_downloader.domain.errors import DeadlineExceeded, FailureKind, HubError

__all__ = ["CdseTokens"]

_log = logging.getLogger("s2_downloader.hub.cdse")
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
