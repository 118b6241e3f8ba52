"""What both hub adapters share: Retry-After, safe URLs, concurrency and flat memory."""

from __future__ import annotations

import email.utils
import threading
from pathlib import Path

import pytest
import urllib3

from s2_downloader.adapters.hub import DhusHub, parse_retry_after
from s2_downloader.adapters.hub_http import safe_url
from s2_downloader.testing.hubsim import HubSimulator
from tests.integration.fixtures_hub import Fetched, connections_all_returned, dhus_request, fetch

pytestmark = pytest.mark.integration

_NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        ("0", 0.0),
        ("901", 900.0),
        (email.utils.formatdate(_NOW + 90, usegmt=True), 90.0),
        (email.utils.formatdate(_NOW - 90, usegmt=True), 0.0),
        (email.utils.formatdate(_NOW + 86_400, usegmt=True), 900.0),
        ("soon", None),
        ("-5", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_is_read_in_both_forms_and_capped(value: str | None, seconds: float | None) -> None:
    """Delta-seconds and HTTP-dates become seconds from now, at most 900; anything else is no hint."""
    assert seconds == parse_retry_after(value, now=_NOW)


def test_safe_url_drops_user_info_and_query() -> None:
    """URLs in messages keep scheme, host, port and path only."""
    assert "https://hub.example:8443/dhus/x" == safe_url("https://u:pw@hub.example:8443/dhus/x?token=abc#f")


def test_sixteen_concurrent_downloads_all_arrive_whole(
    hub_sim: HubSimulator, dhus_hub: DhusHub, hub_pool: urllib3.PoolManager
) -> None:
    """Sixteen downloads at once through one pool each get exactly their own product."""
    products = [hub_sim.add_product(f"P{i}", 4 * (1 << 20) + i) for i in range(16)]
    results: dict[str, Fetched] = {}
    start = threading.Barrier(len(products))

    def download(index: int) -> None:
        start.wait()
        product = products[index]
        results[product.id] = fetch(dhus_hub, dhus_request(hub_sim, product.id), product)

    threads = [threading.Thread(target=download, args=(i,)) for i in range(len(products))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert {p.id: p.md5 for p in products} == {k: v.file_md5 for k, v in results.items()}
    assert 16 == len({r.client_port for r in hub_sim.requests})
    assert connections_all_returned(hub_pool, hub_sim.base_url)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    pytest.skip(f"/proc/self/status has no {field}")


def _reset_peak() -> str:
    """Reset the peak RSS if the kernel lets us; say which figure measures the peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return "VmRSS"
    return "VmHWM"


def test_streaming_a_large_product_keeps_memory_flat(hub_sim: HubSimulator, dhus_hub: DhusHub) -> None:
    """Streaming 256 MiB raises the process's peak RSS by far less than the product's size."""
    product = hub_sim.add_product("BIG", 256 * (1 << 20))
    fetch(dhus_hub, dhus_request(hub_sim, "BIG"), hub_sim.add_product("warm-up", 4 << 20))
    peak = _reset_peak()
    before = _status_kib("VmRSS")

    got = fetch(dhus_hub, dhus_request(hub_sim, "BIG"), product)

    grown_mib = (_status_kib(peak) - before) / 1024
    assert product.md5 == got.file_md5
    assert grown_mib < 64, f"peak RSS grew {grown_mib:.0f} MiB while streaming 256 MiB"
