"""The DHuS adapter against the hub simulator over real HTTP (docs/interface.md: files, the hub)."""

from __future__ import annotations

import base64
import logging
import socket
from collections.abc import Iterator

import pytest
import urllib3

from s2_downloader.adapters.hub import MAX_REDIRECTS, DhusHub
from s2_downloader.domain.errors import BadRequest, FailureKind, HubError
from s2_downloader.domain.request import DownloadRequest
from s2_downloader.testing.hubsim import Fault, HubSimulator, http_date
from tests.integration.fixtures_hub import (
    HUB_PASSWORD,
    HUB_USER,
    connections_all_returned,
    dhus_request,
    fetch,
)

pytestmark = pytest.mark.integration

_SIZE = 3 * (1 << 20) + 12_345

# The hub's table of answers (docs/interface.md), row by row, for whichever endpoint the fault is aimed at.
_TABLE = [
    pytest.param(Fault.not_found(), FailureKind.NOT_FOUND, id="404"),
    pytest.param(Fault.status(429), FailureKind.THROTTLED, id="429"),
    pytest.param(Fault.status(503), FailureKind.THROTTLED, id="503"),
    pytest.param(Fault.dhus_concurrent_flows(), FailureKind.THROTTLED, id="403-concurrent-flows"),
    pytest.param(Fault.accepted(), FailureKind.OFFLINE, id="202"),
    pytest.param(Fault.status(500), FailureKind.SERVER_ERROR, id="500"),
    pytest.param(Fault.status(502), FailureKind.SERVER_ERROR, id="502"),
    pytest.param(Fault.status(504), FailureKind.SERVER_ERROR, id="504"),
    pytest.param(Fault.status(401), FailureKind.UNAUTHORIZED, id="401"),
    pytest.param(Fault.status(403), FailureKind.BAD_RESPONSE, id="403-other"),
    pytest.param(Fault.status(400), FailureKind.BAD_RESPONSE, id="400"),
    pytest.param(Fault.status(410), FailureKind.BAD_RESPONSE, id="410"),
]


def _hub(sim: HubSimulator, pool: urllib3.PoolManager, *, read_timeout: float) -> DhusHub:
    return DhusHub(
        pool=pool, base_url=sim.base_url, username=HUB_USER, password=HUB_PASSWORD, read_timeout=read_timeout
    )


def _received_before_failure(hub: DhusHub, sim: HubSimulator, product_id: str) -> tuple[int, HubError]:
    received = 0
    try:
        with hub.open_product(dhus_request(sim, product_id), 0) as stream:
            for chunk in stream.chunks():
                received += len(chunk)
    except HubError as exc:
        return received, exc
    pytest.fail("the download did not fail")


@pytest.fixture
def unresponsive_port() -> Iterator[int]:
    """A port whose accept queue is full, so a new connection never completes its handshake."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    filler = socket.create_connection(listener.getsockname())
    try:
        yield listener.getsockname()[1]
    finally:
        filler.close()
        listener.close()


# -- checksum -----------------------------------------------------------------------------


def test_checksum_is_the_published_md5_in_lower_case(hub_sim: HubSimulator, dhus_hub: DhusHub) -> None:
    """DHuS publishes upper-case hex; the adapter returns it lower-case."""
    product = hub_sim.add_product("P", 1000)

    assert product.md5 == dhus_hub.checksum("P")


def test_checksum_asks_the_contract_url_with_basic_auth(hub_sim: HubSimulator, dhus_hub: DhusHub) -> None:
    """The checksum GET goes to Products('id')/ with $format=json&$select=Checksum and Basic auth."""
    hub_sim.add_product("P", 10)

    dhus_hub.checksum("P")

    (request,) = hub_sim.requests_to("dhus_checksum")
    basic = "Basic " + base64.b64encode(f"{HUB_USER}:{HUB_PASSWORD}".encode()).decode()
    assert "/dhus/odata/v1/Products('P')/?$format=json&$select=Checksum" == request.path
    assert basic == request.authorization


def test_malformed_checksum_is_a_bad_response(hub_sim: HubSimulator, dhus_hub: DhusHub) -> None:
    """A checksum that is not 32 hex digits is BAD_RESPONSE."""
    hub_sim.add_product("P", 10, faults=[Fault.malformed_checksum()])

    with pytest.raises(HubError) as raised:
        dhus_hub.checksum("P")

    assert FailureKind.BAD_RESPONSE == raised.value.kind


def test_unknown_product_checksum_is_not_found(dhus_hub: DhusHub) -> None:
    """The checksum of a product the hub does not know is NOT_FOUND."""
    with pytest.raises(HubError) as raised:
        dhus_hub.checksum("unknown")

    assert FailureKind.NOT_FOUND == raised.value.kind


@pytest.mark.parametrize(("fault", "kind"), _TABLE)
def test_checksum_failures_follow_the_contract_table(
    hub_sim: HubSimulator, dhus_hub: DhusHub, fault: Fault, kind: FailureKind
) -> None:
    """Each hub answer on the checksum endpoint maps to its contract failure kind."""
    hub_sim.add_product("P", 10, faults=[fault.on_checksum()])

    with pytest.raises(HubError) as raised:
        dhus_hub.checksum("P")

    assert kind == raised.value.kind


# -- download -----------------------------------------------------------------------------


def test_download_streams_the_whole_product(
    hub_sim: HubSimulator, dhus_hub: DhusHub, hub_pool: urllib3.PoolManager
) -> None:
    """From offset 0 the stream is the whole product, its size announced, the connection returned."""
    product = hub_sim.add_product("P", _SIZE)

    got = fetch(dhus_hub, dhus_request(hub_sim, "P"), product)

    assert (0, _SIZE, _SIZE, product.md5) == (got.offset, got.total_size, got.received, got.file_md5)
    assert connections_all_returned(hub_pool, hub_sim.base_url)


def test_connection_is_reused_across_downloads(hub_sim: HubSimulator, dhus_hub: DhusHub) -> None:
    """A fully read download leaves its keep-alive connection for the next request."""
    product = hub_sim.add_product("P", 100_000)

    fetch(dhus_hub, dhus_request(hub_sim, "P"), product)
    fetch(dhus_hub, dhus_request(hub_sim, "P"), product)
    dhus_hub.checksum("P")

    assert 1 == len({r.client_port for r in hub_sim.requests})


def test_resume_accepts_a_matching_206(hub_sim: HubSimulator, dhus_hub: DhusHub) -> None:
    """With a partial of N bytes the adapter asks bytes=N- and streams the rest from N."""
    product = hub_sim.add_product("P", _SIZE)
    offset = 1_234_567

    got = fetch(dhus_hub, dhus_request(hub_sim, "P"), product, offset)

    assert (offset, _SIZE, _SIZE - offset, product.md5) == (
        got.offset,
        got.total_size,
        got.received,
        got.file_md5,
    )
    assert f"bytes={offset}-" == hub_sim.requests_to("dhus_value")[0].range


def test_no_range_is_sent_from_offset_zero(hub_sim: HubSimulator, dhus_hub: DhusHub) -> None:
    """A fresh download sends no Range header."""
    product = hub_sim.add_product("P", 10)

    fetch(dhus_hub, dhus_request(hub_sim, "P"), product)

    assert hub_sim.requests_to("dhus_value")[0].range is None


def test_range_ignored_restarts_from_zero(hub_sim: HubSimulator, dhus_hub: DhusHub) -> None:
    """A 200 to a Range request is the whole product: the stream says offset 0."""
    product = hub_sim.add_product("P", _SIZE, faults=[Fault.ignore_range()])

    got = fetch(dhus_hub, dhus_request(hub_sim, "P"), product, 5000)

    assert (0, _SIZE, _SIZE, product.md5) == (got.offset, got.total_size, got.received, got.file_md5)


def test_mismatched_content_range_restarts_without_range(
    hub_sim: HubSimulator, dhus_hub: DhusHub, hub_pool: urllib3.PoolManager
) -> None:
    """A 206 for a range not asked for is dropped and the product asked again from 0, without Range."""
    product = hub_sim.add_product("P", _SIZE, faults=[Fault.wrong_range()])

    got = fetch(dhus_hub, dhus_request(hub_sim, "P"), product, 5000)

    first, second = hub_sim.requests_to("dhus_value")
    assert (0, _SIZE, product.md5) == (got.offset, got.received, got.file_md5)
    assert ("bytes=5000-", 206) == (first.range, first.status)
    assert (None, 200) == (second.range, second.status)
    assert connections_all_returned(hub_pool, hub_sim.base_url)


def test_416_on_a_complete_partial_is_an_empty_stream(hub_sim: HubSimulator, dhus_hub: DhusHub) -> None:
    """When the partial already holds every byte, 416 ``bytes */size`` yields nothing more to write."""
    product = hub_sim.add_product("P", 4096)

    got = fetch(dhus_hub, dhus_request(hub_sim, "P"), product, 4096)

    assert (4096, 4096, 0, product.md5) == (got.offset, got.total_size, got.received, got.file_md5)
    assert 416 == hub_sim.requests_to("dhus_value")[0].status


def test_416_for_a_partial_longer_than_the_product_restarts(hub_sim: HubSimulator, dhus_hub: DhusHub) -> None:
    """A partial longer than the product cannot be resumed: the product is fetched again from 0."""
    product = hub_sim.add_product("P", 4096)

    got = fetch(dhus_hub, dhus_request(hub_sim, "P"), product, 5000)

    assert (0, 4096, product.md5) == (got.offset, got.received, got.file_md5)


@pytest.mark.parametrize(("fault", "kind"), _TABLE)
def test_download_failures_follow_the_contract_table(
    hub_sim: HubSimulator, dhus_hub: DhusHub, hub_pool: urllib3.PoolManager, fault: Fault, kind: FailureKind
) -> None:
    """Each hub answer on the download maps to its contract failure kind, and the connection is returned."""
    product = hub_sim.add_product("P", 1000, faults=[fault])

    with pytest.raises(HubError) as raised:
        fetch(dhus_hub, dhus_request(hub_sim, "P"), product)

    assert kind == raised.value.kind
    assert connections_all_returned(hub_pool, hub_sim.base_url)


def test_retry_after_in_seconds_is_passed_on(hub_sim: HubSimulator, dhus_hub: DhusHub) -> None:
    """A 503 with ``Retry-After: 120`` is THROTTLED with retry_after 120."""
    product = hub_sim.add_product("P", 10, faults=[Fault.status(503, retry_after="120")])

    with pytest.raises(HubError) as raised:
        fetch(dhus_hub, dhus_request(hub_sim, "P"), product)

    assert (FailureKind.THROTTLED, 120.0) == (raised.value.kind, raised.value.retry_after)


def test_retry_after_as_an_http_date_is_seconds_from_now(hub_sim: HubSimulator, dhus_hub: DhusHub) -> None:
    """A 429 whose Retry-After is a date two minutes ahead waits about two minutes."""
    product = hub_sim.add_product("P", 10, faults=[Fault.status(429, retry_after=http_date(120))])

    with pytest.raises(HubError) as raised:
        fetch(dhus_hub, dhus_request(hub_sim, "P"), product)

    assert raised.value.retry_after is not None
    assert 100 <= raised.value.retry_after <= 121


@pytest.mark.parametrize("retry_after", ["3600", http_date(7200)], ids=["seconds", "http-date"])
def test_retry_after_is_capped(hub_sim: HubSimulator, dhus_hub: DhusHub, retry_after: str) -> None:
    """However long the hub asks us to wait, retry_after is at most 900 s."""
    product = hub_sim.add_product("P", 10, faults=[Fault.status(429, retry_after=retry_after)])

    with pytest.raises(HubError) as raised:
        fetch(dhus_hub, dhus_request(hub_sim, "P"), product)

    assert 900.0 == raised.value.retry_after


def test_wrong_password_is_unauthorized_without_a_retry(
    hub_sim: HubSimulator, hub_pool: urllib3.PoolManager
) -> None:
    """DHuS has nothing to refresh: a 401 is UNAUTHORIZED after one request."""
    product = hub_sim.add_product("P", 10)
    hub = DhusHub(pool=hub_pool, base_url=hub_sim.base_url, username=HUB_USER, password="wrong")

    with pytest.raises(HubError) as raised:
        fetch(hub, dhus_request(hub_sim, "P"), product)

    assert FailureKind.UNAUTHORIZED == raised.value.kind
    assert 1 == len(hub_sim.requests_to("dhus_value"))


def test_short_body_is_transfer_interrupted(
    hub_sim: HubSimulator, dhus_hub: DhusHub, hub_pool: urllib3.PoolManager
) -> None:
    """A body that ends before its Content-Length is TRANSFER_INTERRUPTED after the bytes sent."""
    product = hub_sim.add_product("P", _SIZE, faults=[Fault.short_body(1_500_000)])

    received, error = _received_before_failure(dhus_hub, hub_sim, "P")

    assert (FailureKind.TRANSFER_INTERRUPTED, 1_500_000) == (error.kind, received)
    assert connections_all_returned(hub_pool, hub_sim.base_url)
    assert product.md5 == fetch(dhus_hub, dhus_request(hub_sim, "P"), product).file_md5


def test_reset_mid_body_is_transfer_interrupted(hub_sim: HubSimulator, dhus_hub: DhusHub) -> None:
    """A connection reset in the middle of the body is TRANSFER_INTERRUPTED."""
    product = hub_sim.add_product("P", _SIZE, faults=[Fault.reset_after(2_000_000)])

    received, error = _received_before_failure(dhus_hub, hub_sim, "P")

    assert FailureKind.TRANSFER_INTERRUPTED == error.kind
    assert received <= 2_000_000
    assert product.md5 == fetch(dhus_hub, dhus_request(hub_sim, "P"), product).file_md5


def test_stalled_body_times_out_as_transfer_interrupted(
    hub_sim: HubSimulator, hub_pool: urllib3.PoolManager
) -> None:
    """A body that stalls longer than the read timeout is TRANSFER_INTERRUPTED, not a hang."""
    # The stall is far longer than the timeout: without one the test would end in success.
    product = hub_sim.add_product("P", 1000, faults=[Fault.stall(30)])
    hub = _hub(hub_sim, hub_pool, read_timeout=0.3)

    with pytest.raises(HubError) as raised:
        fetch(hub, dhus_request(hub_sim, "P"), product)

    assert FailureKind.TRANSFER_INTERRUPTED == raised.value.kind


def test_stalled_checksum_times_out(hub_sim: HubSimulator, hub_pool: urllib3.PoolManager) -> None:
    """A checksum answer slower than the read timeout fails instead of waiting on."""
    hub_sim.add_product("P", 10, faults=[Fault.stall(30).on_checksum()])
    hub = _hub(hub_sim, hub_pool, read_timeout=0.3)

    with pytest.raises(HubError) as raised:
        hub.checksum("P")

    assert FailureKind.TRANSFER_INTERRUPTED == raised.value.kind


def test_connection_refused_is_a_server_error(hub_pool: urllib3.PoolManager) -> None:
    """Nobody listening on the hub's port is SERVER_ERROR."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    hub = DhusHub(
        pool=hub_pool, base_url=f"http://127.0.0.1:{port}", username=HUB_USER, password=HUB_PASSWORD
    )

    with pytest.raises(HubError) as raised:
        hub.checksum("P")

    assert FailureKind.SERVER_ERROR == raised.value.kind


def test_connect_timeout_is_a_server_error(hub_pool: urllib3.PoolManager, unresponsive_port: int) -> None:
    """A hub that never completes the TCP handshake is SERVER_ERROR after the connect timeout."""
    hub = DhusHub(
        pool=hub_pool,
        base_url=f"http://127.0.0.1:{unresponsive_port}",
        username=HUB_USER,
        password=HUB_PASSWORD,
        connect_timeout=0.3,
    )

    with pytest.raises(HubError) as raised:
        hub.checksum("P")

    assert FailureKind.SERVER_ERROR == raised.value.kind


# -- redirects and credentials ------------------------------------------------------------


def test_redirect_to_another_origin_drops_credentials(
    hub_sim: HubSimulator, mirror_sim: HubSimulator, dhus_hub: DhusHub
) -> None:
    """Following a redirect off the SCIHUB_URL origin, no Authorization header goes along."""
    product = hub_sim.add_product("P", _SIZE, seed=11)
    mirror_sim.add_product("P", _SIZE, seed=11)
    hub_sim.add_faults("P", Fault.redirect(mirror_sim.dhus_download_url("P")))

    got = fetch(dhus_hub, dhus_request(hub_sim, "P"), product)

    (mirrored,) = mirror_sim.requests
    assert product.md5 == got.file_md5
    assert mirrored.authorization is None
    assert hub_sim.requests_to("dhus_value")[0].authorization is not None


def test_redirect_within_the_origin_keeps_credentials(hub_sim: HubSimulator, dhus_hub: DhusHub) -> None:
    """A relative redirect stays on the hub's origin, so Basic auth goes along and the range too."""
    product = hub_sim.add_product("P", _SIZE)
    hub_sim.add_product("Q", _SIZE, seed=product.seed)
    hub_sim.add_faults("P", Fault.redirect("/dhus/odata/v1/Products('Q')/$value", code=307))

    got = fetch(dhus_hub, dhus_request(hub_sim, "P"), product, 1000)

    redirected, served = hub_sim.requests_to("dhus_value")
    assert (1000, product.md5) == (got.offset, got.file_md5)
    assert ("P", "Q") == (redirected.product_id, served.product_id)
    assert (206, "bytes=1000-") == (served.status, served.range)
    assert served.authorization is not None


def test_endless_redirects_are_a_bad_response(hub_sim: HubSimulator, dhus_hub: DhusHub) -> None:
    """More than five redirects is BAD_RESPONSE, and no sixth is followed."""
    product = hub_sim.add_product("P", 10)
    hub_sim.add_faults("P", *[Fault.redirect(hub_sim.dhus_download_url("P"))] * 10)

    with pytest.raises(HubError) as raised:
        fetch(dhus_hub, dhus_request(hub_sim, "P"), product)

    assert FailureKind.BAD_RESPONSE == raised.value.kind
    assert MAX_REDIRECTS + 1 == len(hub_sim.requests_to("dhus_value"))


def test_download_url_on_the_scihub_origin_is_accepted(hub_sim: HubSimulator, dhus_hub: DhusHub) -> None:
    """A download_url on the SCIHUB_URL origin (any case, explicit port) is accepted."""
    for url in (
        hub_sim.dhus_download_url("P"),
        f"HTTP://127.0.0.1:{hub_sim.port}/dhus/odata/v1/Products('P')/$value",
    ):
        try:
            dhus_hub.accepts_download_url(url)
        except BadRequest as exc:
            pytest.fail(f"{url} refused: {exc}")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}1/x",
        "https://127.0.0.1:{port}/x",
        "http://localhost:{port}/x",
        "http://127.0.0.1:{port}\\@evil.example/x",
        "http://u:p@127.0.0.1:{port}/x",
        "ftp://127.0.0.1:{port}/x",
    ],
)
def test_download_url_off_the_scihub_origin_is_bad_input(
    hub_sim: HubSimulator, dhus_hub: DhusHub, url: str
) -> None:
    """Another port, scheme or host, userinfo or a backslash is refused before any request."""
    with pytest.raises(BadRequest):
        dhus_hub.accepts_download_url(url.format(port=hub_sim.port))

    assert [] == hub_sim.requests


def test_open_product_refuses_a_url_off_the_origin(
    hub_sim: HubSimulator, mirror_sim: HubSimulator, dhus_hub: DhusHub
) -> None:
    """A request that skipped the message check still never leaves the SCIHUB_URL origin."""
    mirror_sim.add_product("P", 10)
    request = DownloadRequest(id="P", filename="P.zip", download_url=mirror_sim.dhus_download_url("P"))

    with pytest.raises(HubError) as raised, dhus_hub.open_product(request, 0):
        pass

    assert FailureKind.BAD_RESPONSE == raised.value.kind
    assert [] == mirror_sim.requests


def test_secrets_stay_out_of_reprs_errors_and_logs(
    hub_sim: HubSimulator,
    dhus_hub: DhusHub,
    mirror_sim: HubSimulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Neither the password nor the Basic header shows in a repr, an error or a log record."""
    caplog.set_level(logging.DEBUG)
    product = hub_sim.add_product("P", 10)
    mirror_sim.add_product("P", 10)
    hub_sim.add_faults(
        "P", Fault.redirect(mirror_sim.dhus_download_url("P")), Fault.status(401), Fault.status(500)
    )
    errors: list[str] = []
    fetch(dhus_hub, dhus_request(hub_sim, "P"), product)
    for _ in range(2):
        with pytest.raises(HubError) as raised:
            fetch(dhus_hub, dhus_request(hub_sim, "P"), product)
        errors += [str(raised.value), repr(raised.value), str(raised.value.__cause__)]

    basic = base64.b64encode(f"{HUB_USER}:{HUB_PASSWORD}".encode()).decode()
    logged = [r.getMessage() for r in caplog.records] + [str(vars(r)) for r in caplog.records]
    for text in [repr(dhus_hub), *errors, *logged]:
        assert HUB_PASSWORD not in text
        assert basic not in text
