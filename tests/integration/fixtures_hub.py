"""pytest fixtures for the hub part of the throwaway stack: a simulator, a pool, both adapters.

Besides the fixtures (``__all__``), a few helpers the hub tests import by name:
``ManualClock``, ``fetch`` and ``connections_all_returned``.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator

import attrs
import pytest
import urllib3

from s2_downloader.adapters.hub import CdseHub, CdseTokens, DhusHub
from s2_downloader.domain.ports import Hub
from s2_downloader.domain.request import DownloadRequest
from s2_downloader.testing.hubsim import HubSimulator, SimProduct

__all__ = ["cdse_hub", "cdse_tokens", "dhus_hub", "hub_clock", "hub_pool", "hub_sim", "mirror_sim"]

HUB_USER = "hls-downloader"
#: Distinctive, so a test can search every message and repr for it.
HUB_PASSWORD = "s3cret-Pa55word-for-the-hub"
POOL_SIZE = 32
TIMEOUT = 5.0


class ManualClock:
    """A monotonic clock that only moves when a test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        """The current reading."""
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward."""
        with self._lock:
            self._now += seconds


@attrs.frozen(kw_only=True)
class Fetched:
    """What one ``open_product`` gave: where it started, the size it announced, what arrived."""

    offset: int
    total_size: int | None
    received: int
    #: MD5 of the file the domain would hold: the product's first ``offset`` bytes, then the body.
    file_md5: str


def dhus_request(sim: HubSimulator, product_id: str) -> DownloadRequest:
    """A download request for ``product_id`` on the simulator's DHuS API."""
    return DownloadRequest(
        id=product_id, filename=f"{product_id}.zip", download_url=sim.dhus_download_url(product_id)
    )


def cdse_request(sim: HubSimulator, product_id: str) -> DownloadRequest:
    """A download request for ``product_id`` on the simulator's CDSE zipper."""
    return DownloadRequest(
        id=product_id, filename=f"{product_id}.zip", download_url=sim.cdse_download_url(product_id)
    )


def fetch(hub: Hub, request: DownloadRequest, product: SimProduct, offset: int = 0) -> Fetched:
    """Stream ``request`` from ``offset`` the way the use case does, hashing as it goes."""
    digest = hashlib.md5(usedforsecurity=False)
    received = 0
    with hub.open_product(request, offset) as stream:
        for piece in product.iter_bytes(0, stream.offset):
            digest.update(piece)
        for chunk in stream.chunks():
            digest.update(chunk)
            received += len(chunk)
        return Fetched(
            offset=stream.offset, total_size=stream.total_size, received=received, file_md5=digest.hexdigest()
        )


def connections_all_returned(pool: urllib3.PoolManager, url: str) -> bool:
    """Whether every connection ``pool`` holds for ``url``'s host is back in its pool."""
    host_pool = pool.connection_from_url(url)
    assert host_pool.pool is not None
    return POOL_SIZE == host_pool.pool.qsize()


@pytest.fixture
def hub_sim() -> Iterator[HubSimulator]:
    """A running hub simulator that knows ``HUB_USER``/``HUB_PASSWORD``."""
    with HubSimulator(username=HUB_USER, password=HUB_PASSWORD) as sim:
        yield sim


@pytest.fixture
def mirror_sim() -> Iterator[HubSimulator]:
    """A second simulator on another port that checks no credentials: the 'other origin'."""
    with HubSimulator(require_auth=False) as sim:
        yield sim


@pytest.fixture
def hub_pool() -> Iterator[urllib3.PoolManager]:
    """The process-wide pool, sized for the concurrency the runner uses."""
    pool = urllib3.PoolManager(num_pools=8, maxsize=POOL_SIZE)
    yield pool
    pool.clear()


@pytest.fixture
def hub_clock() -> ManualClock:
    """The clock the CDSE token cache reads."""
    return ManualClock()


@pytest.fixture
def dhus_hub(hub_sim: HubSimulator, hub_pool: urllib3.PoolManager) -> DhusHub:
    """The DHuS adapter pointed at the simulator."""
    return DhusHub(
        pool=hub_pool,
        base_url=hub_sim.base_url,
        username=HUB_USER,
        password=HUB_PASSWORD,
        connect_timeout=TIMEOUT,
        read_timeout=TIMEOUT,
    )


@pytest.fixture
def cdse_tokens(hub_sim: HubSimulator, hub_pool: urllib3.PoolManager, hub_clock: ManualClock) -> CdseTokens:
    """The CDSE token cache pointed at the simulator's identity endpoint, on the manual clock."""
    return CdseTokens(
        pool=hub_pool,
        identity_url=hub_sim.identity_url,
        username=HUB_USER,
        password=HUB_PASSWORD,
        connect_timeout=TIMEOUT,
        read_timeout=TIMEOUT,
        clock=hub_clock,
    )


@pytest.fixture
def cdse_hub(hub_sim: HubSimulator, hub_pool: urllib3.PoolManager, cdse_tokens: CdseTokens) -> CdseHub:
    """The CDSE adapter with the simulator as catalogue and zipper."""
    return CdseHub(
        pool=hub_pool,
        tokens=cdse_tokens,
        checksum_url=hub_sim.base_url,
        zipper_url=hub_sim.base_url,
        connect_timeout=TIMEOUT,
        read_timeout=TIMEOUT,
    )
