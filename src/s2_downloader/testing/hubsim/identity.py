"""Who the simulator lets in: the DHuS user's Basic credentials and CDSE's OAuth tokens."""

from __future__ import annotations

import base64
import collections
import hmac
import secrets
import threading
import time
from typing import Any

from s2_downloader.testing.hubsim.faults import Fault

__all__ = ["Identity"]


class Identity:
    """One user, the tokens issued to it, and faults scripted for the token endpoint; thread-safe."""

    def __init__(
        self, *, username: str, password: str, token_lifetime: float, refresh_lifetime: float
    ) -> None:
        self.username = username
        self._password = password
        #: Seconds an access token issued from now on is valid.
        self.token_lifetime = token_lifetime
        #: Seconds a refresh token issued from now on is valid.
        self.refresh_lifetime = refresh_lifetime
        self._lock = threading.Lock()
        self._token_faults: collections.deque[Fault] = collections.deque()
        self._access: dict[str, float] = {}
        self._refresh: dict[str, float] = {}
        self._expiries: list[float] = []
        self._basic = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")

    # -- scripting ----------------------------------------------------------------

    def add_token_faults(self, *faults: Fault) -> None:
        """Queue faults for the token endpoint."""
        with self._lock:
            self._token_faults.extend(faults)

    def pop_token_fault(self) -> Fault | None:
        """The next fault scripted for the token endpoint, used up."""
        with self._lock:
            return self._token_faults.popleft() if self._token_faults else None

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

    # -- checking -----------------------------------------------------------------

    def issue_tokens(self) -> dict[str, Any]:
        """A new access and refresh token, as CDSE's token endpoint answers them."""
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

    def bearer_valid(self, authorization: str | None) -> bool:
        """Whether ``authorization`` is ``Bearer`` with an access token still valid."""
        if not authorization or not authorization.startswith("Bearer "):
            return False
        with self._lock:
            expires = self._access.get(authorization.removeprefix("Bearer "))
        return expires is not None and time.monotonic() < expires

    def refresh_valid(self, token: str) -> bool:
        """Whether ``token`` is a refresh token still valid."""
        with self._lock:
            expires = self._refresh.get(token)
        return expires is not None and time.monotonic() < expires

    def basic_valid(self, authorization: str | None) -> bool:
        """Whether ``authorization`` is the user's Basic credentials."""
        return authorization is not None and hmac.compare_digest(authorization, self._basic)

    def password_valid(self, username: str, password: str) -> bool:
        """Whether ``username`` and ``password`` are the user's."""
        return hmac.compare_digest(username, self.username) and hmac.compare_digest(password, self._password)
