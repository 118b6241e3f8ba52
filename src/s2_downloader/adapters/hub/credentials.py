"""What a hub authenticates with: HTTP Basic (DHuS), or a bearer token from a token source (CDSE).

The client (``client.py``) asks for the ``Authorization`` value only for a credentialed
origin, and on a 401 tells the credentials, which decide whether one more try is worth it.
"""

from __future__ import annotations

import base64
from typing import Protocol

import attrs

__all__ = ["BasicCredentials", "Credentials", "TokenSource"]


class Credentials(Protocol):
    """What a hub authenticates with: a header value, and a say in retrying a 401."""

    def authorization(self, *, deadline: float | None = None) -> str:
        """The ``Authorization`` header value to send to a credentialed origin."""
        ...

    def rejected(self, authorization: str) -> bool:
        """The hub refused ``authorization``; whether fresh credentials are worth one more try."""
        ...


class TokenSource(Credentials, Protocol):
    """Where ``CdseHub`` gets its bearer token: ``CdseTokens`` (own grants) or ``SsmTokens``.

    ``identity_url`` is CDSE's token endpoint; its host is one of the CDSE hosts.
    """

    @property
    def identity_url(self) -> str:
        """COPERNICUS_IDENTITY_URL."""
        ...


@attrs.frozen
class BasicCredentials:
    """HTTP Basic auth: one user and password, never refreshed."""

    header: str = attrs.field(repr=False)

    @classmethod
    def of(cls, username: str, password: str) -> BasicCredentials:
        """The credentials of ``username`` with ``password``."""
        token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        return cls(f"Basic {token}")

    def authorization(self, *, deadline: float | None = None) -> str:
        """The ``Basic`` header value."""
        del deadline
        return self.header

    def rejected(self, authorization: str) -> bool:
        """Never worth a second try: the same user and password would be refused again."""
        del authorization
        return False
