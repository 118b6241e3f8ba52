"""What both hub adapters share: Retry-After, headers, safe URLs, concurrency and flat memory."""

from __future__ import annotations

import email.utils
import threading
import time
import tracemalloc
from pathlib import Path

import pytest
import urllib3

from s2_downloader.adapters.hub import DhusHub, parse_retry_after
from s2_downloader.adapters.hub.urls import safe_url
from s2_downloader.domain.errors import FailureKind, HubError
from s2_downloader.testing.hubsim import Fault, HubSimulator
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


def _status_kib(field: str) -> int | None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return None


def _peak_rss_resettable() -> bool:
    """Reset the process's peak RSS (VmHWM) if the kernel lets us."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def test_streaming_a_large_product_keeps_memory_flat(hub_sim: HubSimulator, dhus_hub: DhusHub) -> None:
    """Streaming 256 MiB raises the peak memory by far less than the product's size.

    The peak is the kernel's VmHWM where it can be reset; elsewhere it is the peak of
    Python's own allocations (tracemalloc), where a product held in memory would show
    just the same: never the current RSS after the fact, which cannot see a peak.
    """
    product = hub_sim.add_product("BIG", 256 * (1 << 20))
    fetch(dhus_hub, dhus_request(hub_sim, "BIG"), hub_sim.add_product("warm-up", 4 << 20))
    if _peak_rss_resettable():
        before = _status_kib("VmRSS") or 0
        got = fetch(dhus_hub, dhus_request(hub_sim, "BIG"), product)
        grown_mib = ((_status_kib("VmHWM") or 0) - before) / 1024
        measured = "peak RSS"
    else:
        tracemalloc.start()
        try:
            got = fetch(dhus_hub, dhus_request(hub_sim, "BIG"), product)
            grown_mib = tracemalloc.get_traced_memory()[1] / (1 << 20)
        finally:
            tracemalloc.stop()
        measured = "peak of Python allocations"
    assert product.md5 == got.file_md5
    assert grown_mib < 64, f"{measured} grew {grown_mib:.0f} MiB while streaming 256 MiB"


# -- headers that are not numbers ----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("\u00b2", None),  # superscript two: str.isdigit() says yes, float() and int() say no
        ("\uff11\uff12", None),  # fullwidth digits
        ("\u0661\u0662", None),  # Arabic-Indic digits
        ("9" * 5000, 900.0),  # past int()'s digit limit
        ("1e3", None),
        ("12.5", None),
        ("Thu, 01 Jan 99999 00:00:00 GMT", None),
        ("Mon, 32 Foo 2024 99:99:99 GMT", None),
    ],
)
def test_retry_after_takes_ascii_digits_only(value: str, seconds: float | None) -> None:
    """Anything but ASCII digits or an HTTP-date is no hint, never an exception."""
    assert seconds == parse_retry_after(value, now=_NOW)


def test_a_retry_after_that_is_not_a_number_is_ignored_on_the_wire(
    hub_sim: HubSimulator, dhus_hub: DhusHub
) -> None:
    """A 503 with ``Retry-After: \u00b2`` is THROTTLED without a hint, not a crash."""
    product = hub_sim.add_product("P", 10, faults=[Fault.status(503, retry_after="\u00b2")])

    with pytest.raises(HubError) as raised:
        fetch(dhus_hub, dhus_request(hub_sim, "P"), product)

    assert (FailureKind.THROTTLED, None) == (raised.value.kind, raised.value.retry_after)


@pytest.mark.parametrize("value", ["\u00b2", "\u00b9\u00b2", "-5", "1e3", "12 34"])
def test_a_product_content_length_that_is_not_a_number_is_a_bad_response(
    hub_sim: HubSimulator, dhus_hub: DhusHub, value: str
) -> None:
    """A product answer whose Content-Length is not ASCII digits is BAD_RESPONSE, not a crash."""
    product = hub_sim.add_product("P", 1000, faults=[Fault.with_headers(Content_Length=value)])

    with pytest.raises(HubError) as raised:
        fetch(dhus_hub, dhus_request(hub_sim, "P"), product)

    assert FailureKind.BAD_RESPONSE == raised.value.kind


def test_a_checksum_content_length_that_is_not_a_number_is_a_bad_response(
    hub_sim: HubSimulator, dhus_hub: DhusHub
) -> None:
    """The same header on a checksum answer is BAD_RESPONSE too."""
    hub_sim.add_product("P", 10, faults=[Fault.with_headers(Content_Length="\u00b2").on_checksum()])

    with pytest.raises(HubError) as raised:
        dhus_hub.checksum("P")

    assert FailureKind.BAD_RESPONSE == raised.value.kind


def test_an_error_content_length_that_is_not_a_number_keeps_the_status(
    hub_sim: HubSimulator, dhus_hub: DhusHub
) -> None:
    """On an error answer the bad header only costs the body: the status still decides (404 here)."""
    bad_length = {"Content-Length": "\u00b2"}
    product = hub_sim.add_product("P", 10, faults=[Fault.status(404, headers=bad_length)])

    with pytest.raises(HubError) as raised:
        fetch(dhus_hub, dhus_request(hub_sim, "P"), product)

    assert FailureKind.NOT_FOUND == raised.value.kind


def test_a_trickled_json_answer_without_a_deadline_ends_after_one_read_timeout(
    hub_sim: HubSimulator, hub_pool: urllib3.PoolManager
) -> None:
    """Without a deadline a JSON answer still has an overall limit: one read timeout, not one per byte."""
    hub_sim.add_product("P", 10, faults=[Fault.trickle(0.2).on_checksum()])
    hub = DhusHub(pool=hub_pool, base_url=hub_sim.base_url, username="u", password="p", read_timeout=1.0)
    hub_sim.require_auth = False
    started = time.monotonic()

    with pytest.raises(HubError) as raised:
        hub.checksum("P")

    assert FailureKind.TRANSFER_INTERRUPTED == raised.value.kind
    assert time.monotonic() - started < 5.0
