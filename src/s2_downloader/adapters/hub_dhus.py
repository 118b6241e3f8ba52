"""The DHuS hub (SciHub, IntHub): OData over HTTP Basic auth, CONTRACT section 6."""

from __future__ import annotations

import base64
import contextlib
import logging
import re
import urllib.parse
from collections.abc import Iterator
from typing import Any

import attrs
import urllib3

from s2_downloader.adapters.hub_http import DEFAULT_CHUNK_SIZE, HubHttp, Origin
from s2_downloader.domain.errors import FailureKind, HubError
from s2_downloader.domain.ports import ProductStream
from s2_downloader.domain.request import DownloadRequest, origin_of

__all__ = ["DhusHub"]

_log = logging.getLogger("s2_downloader.hub.dhus")
_MD5 = re.compile(r"[0-9A-Fa-f]{32}")
_ACCEPT_JSON = {"Accept": "application/json"}


@attrs.frozen
class _Basic:
    header: str = attrs.field(repr=False)

    def authorization(self) -> str:
        return self.header

    def rejected(self, authorization: str) -> bool:
        # The same user and password would be refused again.
        del authorization
        return False


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
    allowed_origins: frozenset[Origin] = attrs.field(init=False)
    _http: HubHttp = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        origin = origin_of(self.base_url)
        self.allowed_origins = frozenset({origin})
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode("ascii")
        self._http = HubHttp(
            pool=self.pool,
            timeout=urllib3.Timeout(connect=self.connect_timeout, read=self.read_timeout),
            credential_origins=self.allowed_origins,
            credentials=_Basic(f"Basic {token}"),
            chunk_size=self.chunk_size,
            log=_log,
        )

    def checksum(self, granule_id: str) -> str:
        """The MD5 DHuS publishes for the product, lowercase hex; raises ``HubError``."""
        key = urllib.parse.quote(granule_id, safe="")
        url = f"{self.base_url}/dhus/odata/v1/Products('{key}')/?$format=json&$select=Checksum"
        response = self._http.request(
            "GET", url, granule_id=granule_id, headers={"Accept": "application/json"}
        )
        document = self._http.read_json(response, url)
        return _md5_of(document, granule_id)

    @contextlib.contextmanager
    def open_product(self, request: DownloadRequest, offset: int) -> Iterator[ProductStream]:
        """Stream ``request.download_url`` from ``offset``; the connection is released on exit."""
        stream = self._http.open_stream(request.download_url, offset, granule_id=request.id)
        try:
            yield stream
        finally:
            stream.close()


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
    if not isinstance(value, str) or not _MD5.fullmatch(value):
        raise HubError(FailureKind.BAD_RESPONSE, f"DHuS checksum of {granule_id} is not 32 hex digits")
    return value.lower()
