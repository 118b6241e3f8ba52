"""The DHuS hub (SciHub, IntHub): OData over HTTP Basic auth (docs/interface.md, "The hub").

Every DHuS URL is built here: the product's entry (its checksum, its name) and its ``$value``.
"""

from __future__ import annotations

import logging
import urllib.parse
from contextlib import AbstractContextManager
from typing import Any

import attrs
import urllib3

from s2_downloader.adapters.hub.answers import is_md5
from s2_downloader.adapters.hub.client import HubHttp
from s2_downloader.adapters.hub.credentials import BasicCredentials
from s2_downloader.adapters.hub.stream import DEFAULT_CHUNK_SIZE, ProductResponseStream
from s2_downloader.adapters.hub.urls import Origin, check_url, shown
from s2_downloader.domain.errors import BadRequest, FailureKind, HubError
from s2_downloader.domain.request import DownloadRequest

__all__ = ["DhusHub"]

_log = logging.getLogger("s2_downloader.hub.dhus")


@attrs.define
class DhusHub:
    """A ``Hub`` over the DHuS OData API; credentials go only to the ``base_url`` origin.

    ``pool`` is the process's one ``PoolManager``; give it ``maxsize`` at least the number
    of concurrent downloads so connections are reused rather than discarded.
    """

    pool: urllib3.PoolManager
    base_url: str
    username: str
    password: str = attrs.field(repr=False)
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    chunk_size: int = DEFAULT_CHUNK_SIZE
    _origin: Origin = attrs.field(init=False)
    _http: HubHttp = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        self._origin = check_url(self.base_url)
        self._http = HubHttp(
            pool=self.pool,
            timeout=urllib3.Timeout(connect=self.connect_timeout, read=self.read_timeout),
            credential_origins=frozenset({self._origin}),
            credentials=BasicCredentials.of(self.username, self.password),
            chunk_size=self.chunk_size,
            log=_log,
        )

    def accepts_download_url(self, url: str) -> None:
        """Raise ``BadRequest`` unless a request to ``url`` would reach the ``SCIHUB_URL`` origin."""
        if check_url(url) != self._origin:
            msg = f"download_url {shown(url)!r} is not on the origin of SCIHUB_URL"
            raise BadRequest(msg)

    def product_url(self, granule_id: str) -> str:
        """The product's ``$value`` link: the ``download_url`` a message for ``granule_id`` carries."""
        return f"{self._entry_url(granule_id)}/$value"

    def checksum(self, granule_id: str, *, deadline: float | None = None) -> str:
        """The MD5 DHuS publishes for the product, lowercase hex; raises ``HubError``."""
        url = f"{self._entry_url(granule_id)}/?$format=json&$select=Checksum"
        return _md5_of(self._http.get_json(url, granule_id=granule_id, deadline=deadline), granule_id)

    def product_name(self, granule_id: str, *, deadline: float | None = None) -> str | None:
        """The product's ``Name`` in DHuS (``None`` when the answer has none); raises ``HubError``.

        An unknown product is ``NOT_FOUND`` (DHuS answers 404).
        """
        url = f"{self._entry_url(granule_id)}/?$format=json&$select=Name"
        return _name_of(self._http.get_json(url, granule_id=granule_id, deadline=deadline))

    def open_product(
        self,
        request: DownloadRequest,
        offset: int,
        *,
        validator: str | None = None,
        deadline: float | None = None,
    ) -> AbstractContextManager[ProductResponseStream]:
        """Stream ``request.download_url`` from ``offset`` (``HubHttp.product``); raises ``HubError``."""
        try:
            # Checked again here, not only when the message was read: credentials follow this URL.
            self.accepts_download_url(request.download_url)
        except BadRequest as exc:
            raise HubError(FailureKind.BAD_RESPONSE, exc.reason) from exc
        return self._http.product(
            request.download_url, offset, granule_id=request.id, validator=validator, deadline=deadline
        )

    def _entry_url(self, granule_id: str) -> str:
        """The product's OData entry: ``{SCIHUB_URL}/dhus/odata/v1/Products('<id>')``."""
        return f"{self.base_url}/dhus/odata/v1/Products('{urllib.parse.quote(granule_id, safe='')}')"


def _name_of(document: Any) -> str | None:
    try:
        name = document["d"].get("Name")
    except (KeyError, TypeError, AttributeError):
        return None
    return name if isinstance(name, str) and name.strip() else None


def _md5_of(document: Any, granule_id: str) -> str:
    try:
        checksum = document["d"]["Checksum"]
        algorithm = checksum.get("Algorithm", "MD5")
        value = checksum["Value"]
    except (KeyError, TypeError, AttributeError) as exc:
        raise HubError(FailureKind.BAD_RESPONSE, f"no checksum in the DHuS answer for {granule_id}") from exc
    if not isinstance(algorithm, str) or algorithm.upper() != "MD5":
        raise HubError(
            FailureKind.BAD_RESPONSE, f"DHuS checksum of {granule_id} is not MD5: {algorithm!r:.40}"
        )
    if not is_md5(value):
        raise HubError(FailureKind.BAD_RESPONSE, f"DHuS checksum of {granule_id} is not 32 hex digits")
    return value.lower()
