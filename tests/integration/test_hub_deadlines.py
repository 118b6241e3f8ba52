"""Deadlines: no hub call outlives the attempt's deadline, however slowly the hub trickles.

The simulator sends one byte per second; the adapters' read timeout is 60 s, so a
per-read timeout alone would let each of these calls run for minutes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import urllib3

from s2_downloader.adapters.hub import CdseHub, CdseTokens, DhusHub
from s2_downloader.domain.errors import DeadlineExceeded
from s2_downloader.testing.hubsim import Fault, HubSimulator
from tests.integration.fixtures_hub import HUB_PASSWORD, HUB_USER, cdse_request, dhus_request

pytestmark = pytest.mark.integration

_SLOW = 60.0
#: The deadline each call gets, and the most it may take on a loaded machine.
_DEADLINE = 2.0
_UPPER_BOUND = 10.0


def _dhus(sim: HubSimulator, pool: urllib3.PoolManager) -> DhusHub:
    return DhusHub(
        pool=pool,
        base_url=sim.base_url,
        username=HUB_USER,
        password=HUB_PASSWORD,
        connect_timeout=_SLOW,
        read_timeout=_SLOW,
    )


def _cdse(sim: HubSimulator, pool: urllib3.PoolManager) -> CdseHub:
    tokens = CdseTokens(
        pool=pool,
        identity_url=sim.identity_url,
        username=HUB_USER,
        password=HUB_PASSWORD,
        connect_timeout=_SLOW,
        read_timeout=_SLOW,
    )
    return CdseHub(
        pool=pool,
        tokens=tokens,
        checksum_url=sim.base_url,
        zipper_url=sim.base_url,
        connect_timeout=_SLOW,
        read_timeout=_SLOW,
    )


def _timed(call: Callable[[float], object]) -> tuple[float, BaseException | None]:
    started = time.monotonic()
    try:
        call(started + _DEADLINE)
    except DeadlineExceeded as exc:
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


def test_a_trickled_dhus_checksum_ends_at_the_deadline(
    hub_sim: HubSimulator, hub_pool: urllib3.PoolManager
) -> None:
    """A checksum answer sent one byte per second raises DeadlineExceeded within the deadline's time."""
    hub_sim.add_product("P", 10, faults=[Fault.trickle(1.0).on_checksum()])
    hub = _dhus(hub_sim, hub_pool)

    seconds, raised = _timed(lambda deadline: hub.checksum("P", deadline=deadline))

    assert isinstance(raised, DeadlineExceeded)
    assert _DEADLINE - 0.1 <= seconds < _UPPER_BOUND


def test_a_trickled_cdse_checksum_ends_at_the_deadline(
    hub_sim: HubSimulator, hub_pool: urllib3.PoolManager
) -> None:
    """The CDSE catalogue trickling its answer is cut off at the deadline too."""
    hub_sim.add_product("P", 10, faults=[Fault.trickle(1.0).on_checksum()])
    hub = _cdse(hub_sim, hub_pool)

    seconds, raised = _timed(lambda deadline: hub.checksum("P", deadline=deadline))

    assert isinstance(raised, DeadlineExceeded)
    assert seconds < _UPPER_BOUND


def test_a_trickled_token_answer_ends_at_the_deadline(
    hub_sim: HubSimulator, hub_pool: urllib3.PoolManager
) -> None:
    """The identity service trickling the token is cut off at the checksum call's deadline."""
    hub_sim.add_product("P", 10)
    hub_sim.add_token_faults(Fault.trickle(1.0))
    hub = _cdse(hub_sim, hub_pool)

    seconds, raised = _timed(lambda deadline: hub.checksum("P", deadline=deadline))

    assert isinstance(raised, DeadlineExceeded)
    assert seconds < _UPPER_BOUND


def test_a_trickled_product_read_ends_at_the_deadline(
    hub_sim: HubSimulator, hub_pool: urllib3.PoolManager
) -> None:
    """Streaming a product sent one byte per second stops with DeadlineExceeded at the deadline."""
    hub_sim.add_product("P", 100_000, faults=[Fault.trickle(1.0)])
    hub = _dhus(hub_sim, hub_pool)
    received: list[bytes] = []

    def stream(deadline: float) -> None:
        with hub.open_product(dhus_request(hub_sim, "P"), 0, deadline=deadline) as product:
            received.extend(product.chunks())

    seconds, raised = _timed(stream)

    assert isinstance(raised, DeadlineExceeded)
    assert _DEADLINE - 0.1 <= seconds < _UPPER_BOUND
    assert 0 < sum(map(len, received)) < 10


def test_a_silent_hub_ends_at_the_deadline(hub_sim: HubSimulator, hub_pool: urllib3.PoolManager) -> None:
    """Headers then silence: the read, cut to the time left, ends at the deadline, not the read timeout."""
    hub_sim.add_product("P", 100_000, faults=[Fault.stall(30)])
    hub = _cdse(hub_sim, hub_pool)

    def stream(deadline: float) -> None:
        with hub.open_product(cdse_request(hub_sim, "P"), 0, deadline=deadline) as product:
            for _ in product.chunks():
                pass

    seconds, raised = _timed(stream)

    assert isinstance(raised, DeadlineExceeded)
    assert seconds < _UPPER_BOUND


def test_a_deadline_already_past_sends_nothing(hub_sim: HubSimulator, hub_pool: urllib3.PoolManager) -> None:
    """With no time left, the call raises at once and the hub is not asked."""
    hub_sim.add_product("P", 10)
    hub = _cdse(hub_sim, hub_pool)

    with pytest.raises(DeadlineExceeded):
        hub.checksum("P", deadline=time.monotonic() - 1)

    assert [] == hub_sim.requests


def test_a_deadline_far_away_changes_nothing(hub_sim: HubSimulator, hub_pool: urllib3.PoolManager) -> None:
    """A deadline with time to spare leaves a normal checksum and download as they were."""
    product = hub_sim.add_product("P", 3 * (1 << 20))
    hub = _dhus(hub_sim, hub_pool)
    deadline = time.monotonic() + 60

    checksum = hub.checksum("P", deadline=deadline)
    with hub.open_product(dhus_request(hub_sim, "P"), 0, deadline=deadline) as stream:
        size = sum(len(chunk) for chunk in stream.chunks())

    assert (product.md5, product.size) == (checksum, size)
