"""The Copernicus Data Space hub: OData catalogue, zipper downloads, a bearer token from a ``TokenSource``."""

from __future__ import annotations

import logging
import re
import urllib.parse
from contextlib import AbstractContextManager
from typing import Any

import attrs
import urllib3

from s2_downloader.adapters.hub.answers import is_md5
from s2_downloader.adapters.hub.client import HubHttp
from s2_downloader.adapters.hub.credentials import TokenSource
from s2_downloader.adapters.hub.stream import DEFAULT_CHUNK_SIZE, ProductResponseStream
from s2_downloader.adapters.hub.urls import Origin, check_url, shown
from s2_downloader.domain.errors import BadRequest, FailureKind, HubError
from s2_downloader.domain.request import DownloadRequest

__all__ = ["DEFAULT_DOWNLOAD_HOSTS", "CdseHub"]

#: Where CDSE's zipper redirects downloads today (reached over https only).
DEFAULT_DOWNLOAD_HOSTS = frozenset({"download.dataspace.copernicus.eu"})

_log = logging.getLogger("s2_downloader.hub.cdse")


#: The hubs of the SciHub era, retired in 2023: SciHub, its API hub and the
#: international hubs (inthub, inthub2, ...). Old rows name them; only the id is used.
_RETIRED_SCIHUB = re.compile(r"(?:scihub|apihub|inthub[a-z0-9-]*)\.copernicus\.eu")


def is_retired_scihub_host(host: str) -> bool:
    """Whether ``host`` (lowercase, as ``check_url`` gives it) is a hub of the retired SciHub era."""
    return _RETIRED_SCIHUB.fullmatch(host) is not None


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
    _public: HubHttp = attrs.field(init=False, repr=False)
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
        # The catalogue is public: a name is looked up without asking for a token.
        self._public = HubHttp(
            pool=self.pool,
            timeout=timeout,
            credential_origins=frozenset(),
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
        """Raise ``BadRequest`` unless ``url`` is an http(s) URL on a CDSE host or a retired SciHub one.

        The CDSE hosts are those of the catalogue, zipper and identity URLs and
        ``download_hosts``. The URL only has to name the product: it is always fetched
        from the zipper by id, whatever link the message carries. Rows from before 2023
        still carry SciHub links (HLS's requeuer sends them as they are); nothing is ever
        asked of those hosts, which are gone.
        """
        _, host, _ = check_url(url)
        if host not in self._hosts and not is_retired_scihub_host(host):
            msg = f"download_url {shown(url)!r} is neither on a CDSE host nor on a retired SciHub host"
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
        url = self._catalogue_query(granule_id)
        return _md5_of(self._catalogue.get_json(url, granule_id=granule_id, deadline=deadline), granule_id)

    def product_name(self, granule_id: str, *, deadline: float | None = None) -> str | None:
        """The product's ``Name`` in the CDSE catalogue (``None`` when it lists none); raises ``HubError``.

        No product is ``NOT_FOUND``. Asked without the token: the catalogue is public.
        """
        url = self._catalogue_query(granule_id)
        document = self._public.get_json(url, granule_id=granule_id, deadline=deadline)
        try:
            name = _entry(document, granule_id).get("Name")
        except (KeyError, TypeError, AttributeError, IndexError):
            return None
        return name if isinstance(name, str) and name.strip() else None

    def product_url(self, granule_id: str) -> str:
        """The zipper's link for ``granule_id``, where ``open_product`` fetches it from."""
        return f"{self.zipper_url}/odata/v1/Products({urllib.parse.quote(granule_id, safe='')})/$value"

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
        return self._zipper.product(
            self.product_url(request.id),
            offset,
            granule_id=request.id,
            validator=validator,
            deadline=deadline,
        )

    def _catalogue_query(self, granule_id: str) -> str:
        """The catalogue's query for the one product ``granule_id``."""
        query = urllib.parse.quote(f"Id eq '{granule_id}'", safe="'")
        return f"{self.checksum_url}/odata/v1/Products?$filter={query}"


def _https_origin(host: str) -> Origin:
    try:
        return check_url(f"https://{host.strip()}/")
    except BadRequest as exc:
        msg = f"download host {host[:80]!r} is not a host name"
        raise ValueError(msg) from exc


def _entry(document: Any, granule_id: str) -> Any:
    """The catalogue's entry for the product; ``NOT_FOUND`` when the list is empty.

    Raises ``KeyError``, ``TypeError``, ``AttributeError`` or ``IndexError`` for a
    malformed answer, for the caller to say what it was looking for.
    """
    products = document["value"]
    if not products:
        raise HubError(FailureKind.NOT_FOUND, f"the CDSE catalogue has no product {granule_id}")
    return products[0]


def _md5_of(document: Any, granule_id: str) -> str:
    try:
        product = _entry(document, granule_id)
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
