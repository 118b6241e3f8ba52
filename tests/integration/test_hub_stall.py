"""A hub that trickles bytes is a broken transfer, not a download that never ends."""

from __future__ import annotations

import pytest
import urllib3

from s2_downloader.adapters.hub import DhusHub
from s2_downloader.domain.errors import FailureKind, HubError
from s2_downloader.testing.hubsim import HubSimulator
from tests.integration.fixtures_hub import HUB_PASSWORD, HUB_USER, dhus_request


def test_a_trickling_body_is_interrupted_after_one_read_timeout_window(
    hub_sim: HubSimulator, hub_pool: urllib3.PoolManager
) -> None:
    """GIVEN a hub sending 8 KB/s and a 1 s read timeout WHEN streaming THEN it stops early, interrupted."""
    hub = DhusHub(
        pool=hub_pool,
        base_url=hub_sim.base_url,
        username=HUB_USER,
        password=HUB_PASSWORD,
        connect_timeout=1.0,
        read_timeout=1.0,
    )
    hub_sim.add_product("TRICKLE", 4 * 1024 * 1024)
    hub_sim.rate_limit = 8 * 1024
    received: list[int] = []

    def stream_all() -> None:
        with hub.open_product(dhus_request(hub_sim, "TRICKLE"), 0) as stream:
            received.extend(len(chunk) for chunk in stream.chunks())

    with pytest.raises(HubError) as caught:
        stream_all()
    assert FailureKind.TRANSFER_INTERRUPTED == caught.value.kind
    assert "stalled" in caught.value.detail
    assert sum(received) < 64 * 1024  # one window's worth, not the 4 MiB a trickle would take minutes for
