"""The hub contract (tests/hub_contract.py) on DhusHub and CdseHub over the hub simulator."""

from __future__ import annotations

import itertools

import attrs
import pytest

from s2_downloader.adapters.hub import CdseHub, DhusHub
from s2_downloader.domain.ports import Hub
from s2_downloader.domain.request import DownloadRequest
from s2_downloader.testing.hubsim import Fault, HubSimulator
from tests.hub_contract import CHECKS, RETRY_AFTER, Check
from tests.integration.fixtures_hub import cdse_request, dhus_request

_seeds = itertools.count(1)


@attrs.define
class SimHarness:
    """A real adapter on the simulator; faults are the simulator's, as each API sends them."""

    sim: HubSimulator
    adapter: DhusHub | CdseHub
    api: str
    #: Not a multiple of the adapter's chunk size, and more than one chunk.
    size: int = 300_007

    @property
    def hub(self) -> Hub:
        """The adapter."""
        return self.adapter

    def publish(self, product_id: str) -> bytes:
        """Add the product to the simulator (a strong ETag and a Last-Modified)."""
        return self.sim.add_product(product_id, self.size).read()

    def listed_name(self, product_id: str) -> str:
        """DHuS lists the id; the CDSE catalogue adds ``.SAFE``."""
        return product_id if self.api == "dhus" else f"{product_id}.SAFE"

    def republish(self, product_id: str) -> bytes:
        """New bytes under the same id: a new ETag and a later Last-Modified."""
        return self.sim.replace_product(product_id, seed=next(_seeds)).read()

    def request(self, product_id: str) -> DownloadRequest:
        """The request on this API's download URL."""
        return (dhus_request if self.api == "dhus" else cdse_request)(self.sim, product_id)

    def throttle(self, product_id: str, *, checksum: bool) -> None:
        """HTTP 429 with Retry-After."""
        fault = Fault.status(429, retry_after=str(RETRY_AFTER))
        self.sim.add_faults(product_id, fault.on_checksum() if checksum else fault)

    def take_offline(self, product_id: str, *, checksum: bool) -> None:
        """HTTP 202 (DHuS, the zipper), or ``Online: false`` in the CDSE catalogue."""
        if checksum and self.api == "cdse":
            self.sim.add_faults(product_id, Fault.catalogue_entry(Online=False))
        else:
            fault = Fault.accepted()
            self.sim.add_faults(product_id, fault.on_checksum() if checksum else fault)


@pytest.fixture(params=["dhus", "cdse"])
def harness(
    request: pytest.FixtureRequest, hub_sim: HubSimulator, dhus_hub: DhusHub, cdse_hub: CdseHub
) -> SimHarness:
    """Each real adapter on its own simulator."""
    api = str(request.param)
    return SimHarness(sim=hub_sim, adapter=dhus_hub if api == "dhus" else cdse_hub, api=api)


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_the_real_hubs_keep_the_contract(harness: SimHarness, check: Check) -> None:
    """DhusHub and CdseHub on the simulator pass every check the fake passes."""
    check(harness)
