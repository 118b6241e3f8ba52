"""The CDSE adapter and its shared token against the hub simulator over real HTTP."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import pytest
import urllib3

from s2_downloader.adapters.hub import CdseHub, CdseTokens
from s2_downloader.domain.errors import BadRequest, FailureKind, HubError
from s2_downloader.domain.request import DownloadRequest
from s2_downloader.testing.hubsim import Fault, HubSimulator
from tests.integration.fixtures_hub import (
    HUB_PASSWORD,
    HUB_USER,
    ManualClock,
    cdse_request,
    connections_all_returned,
    fetch,
)

pytestmark = pytest.mark.integration

_SIZE = 2 * (1 << 20) + 999

_TABLE = [
    pytest.param(Fault.not_found(), FailureKind.NOT_FOUND, id="404"),
    pytest.param(Fault.status(429), FailureKind.THROTTLED, id="429"),
    pytest.param(Fault.status(503), FailureKind.THROTTLED, id="503"),
    pytest.param(Fault.accepted(), FailureKind.OFFLINE, id="202"),
    pytest.param(Fault.status(500), FailureKind.SERVER_ERROR, id="500"),
    pytest.param(Fault.status(502), FailureKind.SERVER_ERROR, id="502"),
    pytest.param(Fault.status(403), FailureKind.BAD_RESPONSE, id="403"),
    pytest.param(Fault.status(400), FailureKind.BAD_RESPONSE, id="400"),
]


def _grants(sim: HubSimulator) -> list[tuple[str | None, int]]:
    return [(r.grant_type, r.status) for r in sim.requests_to("token")]


# -- checksum -----------------------------------------------------------------------------


def test_checksum_is_the_md5_entry(hub_sim: HubSimulator, cdse_hub: CdseHub) -> None:
    """Of the catalogue's MD5 and BLAKE3 entries, the MD5 is returned."""
    product = hub_sim.add_product("0ee5de89-fadb-496b", 1000)

    assert product.md5 == cdse_hub.checksum("0ee5de89-fadb-496b")


def test_checksum_filters_on_the_id(hub_sim: HubSimulator, cdse_hub: CdseHub) -> None:
    """The catalogue is asked ``$filter=Id eq '<id>'`` with the bearer token."""
    hub_sim.add_product("P", 10)

    cdse_hub.checksum("P")

    (request,) = hub_sim.requests_to("cdse_checksum")
    assert "/odata/v1/Products?$filter=Id%20eq%20'P'" == request.path
    assert (request.authorization or "").startswith("Bearer ")


def test_checksum_of_a_product_missing_from_the_catalogue_is_not_found(cdse_hub: CdseHub) -> None:
    """An empty ``value`` list is NOT_FOUND."""
    with pytest.raises(HubError) as raised:
        cdse_hub.checksum("unknown")

    assert FailureKind.NOT_FOUND == raised.value.kind


@pytest.mark.parametrize(("fault", "kind"), [*_TABLE, pytest.param(Fault.status(404), FailureKind.NOT_FOUND)])
def test_checksum_failures_follow_the_contract_table(
    hub_sim: HubSimulator, cdse_hub: CdseHub, fault: Fault, kind: FailureKind
) -> None:
    """Each catalogue answer maps to its contract failure kind."""
    hub_sim.add_product("P", 10, faults=[fault.on_checksum()])

    with pytest.raises(HubError) as raised:
        cdse_hub.checksum("P")

    assert kind == raised.value.kind


def test_malformed_md5_is_a_bad_response(hub_sim: HubSimulator, cdse_hub: CdseHub) -> None:
    """An MD5 entry that is not 32 hex digits is BAD_RESPONSE."""
    hub_sim.add_product("P", 10, faults=[Fault.malformed_checksum()])

    with pytest.raises(HubError) as raised:
        cdse_hub.checksum("P")

    assert FailureKind.BAD_RESPONSE == raised.value.kind


# -- download -----------------------------------------------------------------------------


def test_download_comes_from_the_zipper_with_a_bearer_token(
    hub_sim: HubSimulator, cdse_hub: CdseHub, hub_pool: urllib3.PoolManager
) -> None:
    """The product streams from ``Products(<id>)/$value`` with ``Authorization: Bearer``."""
    product = hub_sim.add_product("P", _SIZE)

    got = fetch(cdse_hub, cdse_request(hub_sim, "P"), product)

    (request,) = hub_sim.requests_to("zipper")
    assert (0, _SIZE, product.md5) == (got.offset, got.total_size, got.file_md5)
    assert "/odata/v1/Products(P)/$value" == request.path
    assert (request.authorization or "").startswith("Bearer ")
    assert connections_all_returned(hub_pool, hub_sim.base_url)


def test_resume_accepts_a_matching_206(hub_sim: HubSimulator, cdse_hub: CdseHub) -> None:
    """A partial is resumed from its size when the zipper answers the matching 206."""
    product = hub_sim.add_product("P", _SIZE)

    got = fetch(cdse_hub, cdse_request(hub_sim, "P"), product, 777_777)

    assert (777_777, _SIZE, product.md5) == (got.offset, got.total_size, got.file_md5)


def test_resume_restarts_when_the_range_is_ignored(hub_sim: HubSimulator, cdse_hub: CdseHub) -> None:
    """A 200 to a Range request restarts from byte 0."""
    product = hub_sim.add_product("P", _SIZE, faults=[Fault.ignore_range()])

    got = fetch(cdse_hub, cdse_request(hub_sim, "P"), product, 777_777)

    assert (0, product.md5) == (got.offset, got.file_md5)


@pytest.mark.parametrize(("fault", "kind"), _TABLE)
def test_download_failures_follow_the_contract_table(
    hub_sim: HubSimulator, cdse_hub: CdseHub, fault: Fault, kind: FailureKind
) -> None:
    """Each zipper answer maps to its contract failure kind."""
    product = hub_sim.add_product("P", 1000, faults=[fault])

    with pytest.raises(HubError) as raised:
        fetch(cdse_hub, cdse_request(hub_sim, "P"), product)

    assert kind == raised.value.kind


def test_short_body_is_transfer_interrupted(hub_sim: HubSimulator, cdse_hub: CdseHub) -> None:
    """A zipper body cut short is TRANSFER_INTERRUPTED."""
    product = hub_sim.add_product("P", _SIZE, faults=[Fault.short_body(100_000)])

    with pytest.raises(HubError) as raised:
        fetch(cdse_hub, cdse_request(hub_sim, "P"), product)

    assert FailureKind.TRANSFER_INTERRUPTED == raised.value.kind


# -- the token ----------------------------------------------------------------------------


def test_concurrent_requests_share_one_token(hub_sim: HubSimulator, cdse_hub: CdseHub) -> None:
    """Twenty threads asking for checksums at once cause a single token request."""
    product = hub_sim.add_product("P", 10)
    start = threading.Barrier(20)
    results: list[str] = []

    def ask() -> None:
        start.wait()
        results.append(cdse_hub.checksum("P"))

    threads = [threading.Thread(target=ask) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [product.md5] * 20 == results
    assert [("password", 200)] == _grants(hub_sim)


def test_token_is_refreshed_before_it_expires(
    hub_sim: HubSimulator, cdse_hub: CdseHub, hub_clock: ManualClock
) -> None:
    """Within the last 60 s of a 600 s token, the next request first refreshes it."""
    hub_sim.add_product("P", 10)
    cdse_hub.checksum("P")

    hub_clock.advance(545)
    cdse_hub.checksum("P")

    first, second = (r.authorization for r in hub_sim.requests_to("cdse_checksum"))
    assert [("password", 200), ("refresh_token", 200)] == _grants(hub_sim)
    assert first != second


def test_token_is_kept_until_the_margin(
    hub_sim: HubSimulator, cdse_hub: CdseHub, hub_clock: ManualClock
) -> None:
    """Before the refresh margin, the held token is reused without asking again."""
    hub_sim.add_product("P", 10)
    cdse_hub.checksum("P")

    hub_clock.advance(535)
    cdse_hub.checksum("P")

    assert [("password", 200)] == _grants(hub_sim)


def test_rejected_refresh_token_falls_back_to_the_password(
    hub_sim: HubSimulator, cdse_hub: CdseHub, hub_clock: ManualClock
) -> None:
    """When the identity provider refuses the refresh token, a password grant follows."""
    hub_sim.add_product("P", 10)
    cdse_hub.checksum("P")
    hub_sim.expire_tokens(refresh=True)

    hub_clock.advance(545)
    cdse_hub.checksum("P")

    assert [("password", 200), ("refresh_token", 400), ("password", 200)] == _grants(hub_sim)


def test_expired_refresh_token_is_not_tried(
    hub_sim: HubSimulator, cdse_hub: CdseHub, hub_clock: ManualClock
) -> None:
    """Past the refresh token's own lifetime, the adapter goes straight to a password grant."""
    hub_sim.add_product("P", 10)
    cdse_hub.checksum("P")

    hub_clock.advance(3600)
    cdse_hub.checksum("P")

    assert [("password", 200), ("password", 200)] == _grants(hub_sim)


def test_401_refreshes_the_token_once_and_succeeds(hub_sim: HubSimulator, cdse_hub: CdseHub) -> None:
    """A token the zipper no longer accepts is refreshed and the download retried once."""
    product = hub_sim.add_product("P", _SIZE)
    cdse_hub.checksum("P")
    hub_sim.expire_tokens()

    got = fetch(cdse_hub, cdse_request(hub_sim, "P"), product)

    assert product.md5 == got.file_md5
    assert [401, 200] == [r.status for r in hub_sim.requests_to("zipper")]
    assert [("password", 200), ("refresh_token", 200)] == _grants(hub_sim)


def test_401_on_the_checksum_refreshes_once(hub_sim: HubSimulator, cdse_hub: CdseHub) -> None:
    """A 401 from the catalogue is answered the same way: refresh, retry once."""
    product = hub_sim.add_product("P", 10)
    cdse_hub.checksum("P")
    hub_sim.expire_tokens()

    assert product.md5 == cdse_hub.checksum("P")
    assert [200, 401, 200] == [r.status for r in hub_sim.requests_to("cdse_checksum")]


def test_second_401_is_unauthorized(hub_sim: HubSimulator, cdse_hub: CdseHub) -> None:
    """When the fresh token is refused too, the download is UNAUTHORIZED after two tries."""
    product = hub_sim.add_product("P", 10, faults=[Fault.status(401), Fault.status(401), Fault.status(401)])

    with pytest.raises(HubError) as raised:
        fetch(cdse_hub, cdse_request(hub_sim, "P"), product)

    assert FailureKind.UNAUTHORIZED == raised.value.kind
    assert 2 == len(hub_sim.requests_to("zipper"))


def test_wrong_password_is_unauthorized(hub_sim: HubSimulator, hub_pool: urllib3.PoolManager) -> None:
    """The identity provider refusing the user is UNAUTHORIZED."""
    hub_sim.add_product("P", 10)
    tokens = CdseTokens(pool=hub_pool, identity_url=hub_sim.identity_url, username=HUB_USER, password="wrong")
    hub = CdseHub(pool=hub_pool, tokens=tokens, checksum_url=hub_sim.base_url, zipper_url=hub_sim.base_url)

    with pytest.raises(HubError) as raised:
        hub.checksum("P")

    assert FailureKind.UNAUTHORIZED == raised.value.kind


def test_identity_provider_throttling_is_throttled(hub_sim: HubSimulator, cdse_hub: CdseHub) -> None:
    """A 503 with Retry-After from the token endpoint is THROTTLED with that hint."""
    hub_sim.add_product("P", 10)
    hub_sim.add_token_faults(Fault.status(503, retry_after="30"))

    with pytest.raises(HubError) as raised:
        cdse_hub.checksum("P")

    assert (FailureKind.THROTTLED, 30.0) == (raised.value.kind, raised.value.retry_after)


# -- redirects and secrets ----------------------------------------------------------------


def test_redirect_outside_the_configured_hosts_is_refused(
    hub_sim: HubSimulator, mirror_sim: HubSimulator, cdse_hub: CdseHub
) -> None:
    """The zipper redirecting to a host not configured is BAD_RESPONSE, and that host is never asked."""
    product = hub_sim.add_product("P", 10)
    mirror_sim.add_product("P", 10)
    hub_sim.add_faults("P", Fault.redirect(mirror_sim.cdse_download_url("P")))

    with pytest.raises(HubError) as raised:
        fetch(cdse_hub, cdse_request(hub_sim, "P"), product)

    assert FailureKind.BAD_RESPONSE == raised.value.kind
    assert [] == mirror_sim.requests


def test_redirect_to_a_download_host_over_http_is_refused(
    hub_sim: HubSimulator, mirror_sim: HubSimulator, hub_pool: urllib3.PoolManager, cdse_tokens: CdseTokens
) -> None:
    """A download host is reached over https only: an http redirect there is refused, unasked."""
    product = hub_sim.add_product("P", 10)
    mirror_sim.add_product("P", 10)
    hub_sim.add_faults(
        "P", Fault.redirect(mirror_sim.cdse_download_url("P").replace("127.0.0.1", "localhost"))
    )
    hub = CdseHub(
        pool=hub_pool,
        tokens=cdse_tokens,
        checksum_url=hub_sim.base_url,
        zipper_url=hub_sim.base_url,
        download_hosts=frozenset({"localhost"}),
    )

    with pytest.raises(HubError) as raised:
        fetch(hub, cdse_request(hub_sim, "P"), product)

    assert FailureKind.BAD_RESPONSE == raised.value.kind
    assert [] == mirror_sim.requests


def test_redirect_within_the_zipper_keeps_the_token(hub_sim: HubSimulator, cdse_hub: CdseHub) -> None:
    """A relative redirect stays on the zipper's origin, so the bearer token goes along."""
    product = hub_sim.add_product("P", _SIZE)
    hub_sim.add_product("Q", _SIZE, seed=product.seed)
    hub_sim.add_faults("P", Fault.redirect("/odata/v1/Products(Q)/$value", code=307))

    got = fetch(cdse_hub, cdse_request(hub_sim, "P"), product)

    redirected, served = hub_sim.requests_to("zipper")
    assert (product.md5, "Q") == (got.file_md5, served.product_id)
    assert redirected.authorization == served.authorization
    assert (served.authorization or "").startswith("Bearer ")


@pytest.mark.parametrize(
    ("url", "followed"),
    [
        ("https://download.dataspace.copernicus.eu/odata/v1/Products(P)/$value", True),
        ("https://DOWNLOAD.dataspace.copernicus.eu:443/x", True),
        ("http://download.dataspace.copernicus.eu/x", False),
        ("https://download.dataspace.copernicus.eu:8443/x", False),
        ("https://evil.example/x", False),
        ("https://download.dataspace.copernicus.eu\\@evil.example/x", False),
        ("http://127.0.0.1:{port}/odata/v1/Products(P)/$value", True),
        ("http://127.0.0.1:{port}1/x", False),
    ],
)
def test_redirects_are_followed_only_to_the_zipper_or_https_download_hosts(
    hub_sim: HubSimulator, cdse_hub: CdseHub, url: str, followed: bool
) -> None:
    """With default download hosts, the token follows to the zipper origin or https download hosts only."""
    assert followed == cdse_hub.follows_redirect_to(url.format(port=hub_sim.port))


_CDSE_LINKS = [
    "https://catalogue.dataspace.copernicus.eu/odata/v1/Products(P)/$value",
    "https://catalogue.dataspace.copernicus.eu/download/P",
    "https://zipper.dataspace.copernicus.eu/odata/v1/Products(P)/$value",
    "http://identity.dataspace.copernicus.eu/anything",
    "https://download.dataspace.copernicus.eu:8443/x",
]
#: Rows from before 2023 that HLS's requeuer still sends: accepted, fetched from the zipper by id.
_SCIHUB_ERA_LINKS = [
    "https://scihub.copernicus.eu/dhus/odata/v1/Products('P')/$value",
    "https://apihub.copernicus.eu/apihub/odata/v1/Products('P')/$value",
    "https://inthub.copernicus.eu/dhus/odata/v1/Products('P')/$value",
    "https://inthub2.copernicus.eu/dhus/odata/v1/Products('P')/$value",
    "http://scihub.copernicus.eu/dhus/odata/v1/Products('P')/$value",
]
_FOREIGN_LINKS = [
    "https://evil.example/odata/v1/Products(P)/$value",
    "https://catalogue.dataspace.copernicus.eu.evil.example/x",
    "https://catalogue.dataspace.copernicus.eu\\@evil.example/x",
    "https://u@catalogue.dataspace.copernicus.eu/x",
    "ftp://catalogue.dataspace.copernicus.eu/x",
    "https://catalogue%2Edataspace.copernicus.eu/x",
    "https://scihub.copernicus.eu.evil.example/x",
    "https://notscihub.copernicus.eu/x",
    "https://scihub.copernicus.org/x",
    "https://inthub.evil.example/x",
]


def _accepted(hub: CdseHub, url: str) -> bool:
    """Whether the hub takes ``url`` as a message's link (it raises BadRequest when not)."""
    try:
        hub.accepts_download_url(url)
    except BadRequest:
        return False
    return True


@pytest.mark.parametrize(
    ("url", "accepted"),
    [(url, True) for url in _CDSE_LINKS + _SCIHUB_ERA_LINKS] + [(url, False) for url in _FOREIGN_LINKS],
)
def test_links_on_cdse_or_retired_scihub_hosts_are_accepted_and_others_are_bad_input(
    hub_pool: urllib3.PoolManager, url: str, accepted: bool
) -> None:
    """CDSE hosts and the SciHub era's are links to a product; another host, userinfo, a backslash,
    another scheme or percent-encoding is bad input."""
    assert accepted == _accepted(_production_hub(hub_pool), url)


def test_a_scihub_era_link_downloads_from_the_zipper_by_id(hub_sim: HubSimulator, cdse_hub: CdseHub) -> None:
    """A SciHub link of a pre-2023 row asks nothing of SciHub: the product comes from the zipper by id."""
    product = hub_sim.add_product("OLD", 1000)
    request = DownloadRequest(
        id="OLD",
        filename="OLD.SAFE",
        download_url="https://scihub.copernicus.eu/dhus/odata/v1/Products('OLD')/$value",
    )

    got = fetch(cdse_hub, request, product)

    assert (product.md5, ["/odata/v1/Products(OLD)/$value"]) == (
        got.file_md5,
        [r.path for r in hub_sim.requests_to("zipper")],
    )


def test_download_comes_from_the_zipper_whatever_the_link(hub_sim: HubSimulator, cdse_hub: CdseHub) -> None:
    """A catalogue link in the message still downloads from ``{zipper}/odata/v1/Products(<id>)/$value``."""
    product = hub_sim.add_product("P", 1000)
    request = DownloadRequest(
        id="P", filename="P.SAFE", download_url="https://catalogue.dataspace.copernicus.eu/download/P"
    )

    got = fetch(cdse_hub, request, product)

    assert (product.md5, ["/odata/v1/Products(P)/$value"]) == (
        got.file_md5,
        [r.path for r in hub_sim.requests_to("zipper")],
    )


def _production_hub(pool: urllib3.PoolManager) -> CdseHub:
    tokens = CdseTokens(
        pool=pool,
        identity_url="http://identity.dataspace.copernicus.eu/auth/realms/CDSE/protocol/openid-connect/token",
        username=HUB_USER,
        password=HUB_PASSWORD,
    )
    return CdseHub(
        pool=pool,
        tokens=tokens,
        checksum_url="https://catalogue.dataspace.copernicus.eu",
        zipper_url="https://zipper.dataspace.copernicus.eu",
    )


def test_secrets_stay_out_of_reprs_errors_and_logs(
    hub_sim: HubSimulator, cdse_hub: CdseHub, cdse_tokens: CdseTokens, caplog: pytest.LogCaptureFixture
) -> None:
    """Neither the password nor any token shows in a repr, an error or a log record."""
    caplog.set_level(logging.DEBUG)
    product = hub_sim.add_product("P", 10, faults=[Fault.status(401), Fault.status(401)])
    errors: list[str] = []
    with pytest.raises(HubError) as raised:
        fetch(cdse_hub, cdse_request(hub_sim, "P"), product)
    errors += [str(raised.value), repr(raised.value), str(raised.value.__cause__)]
    hub_sim.add_token_faults(Fault.status(401), Fault.status(401))
    cdse_tokens.rejected(cdse_tokens.authorization())
    with pytest.raises(HubError) as raised:
        cdse_hub.checksum("P")
    errors += [str(raised.value), repr(raised.value), str(raised.value.__cause__)]

    tokens = [r.authorization for r in hub_sim.requests if r.authorization]
    secrets = {HUB_PASSWORD, *(t.removeprefix("Bearer ") for t in tokens)}
    logged = [r.getMessage() for r in caplog.records] + [str(vars(r)) for r in caplog.records]
    for text in [repr(cdse_hub), repr(cdse_tokens), *errors, *logged]:
        for secret in secrets:
            assert secret not in text


# -- what the catalogue says about a product (recorded answers, edited) --------------------

_RECORDED = Path(__file__).parent / "recorded" / "cdse_checksum_response.json"


def _recorded(**changes: Any) -> dict[str, Any]:
    """CDSE's recorded catalogue answer, its product entry with ``changes`` applied."""
    document: dict[str, Any] = json.loads(_RECORDED.read_text())
    document["value"][0].update(changes)
    return document


def test_the_recorded_answer_gives_its_md5(hub_sim: HubSimulator, cdse_hub: CdseHub) -> None:
    """CDSE's real answer (MD5 and BLAKE3 entries with dates) gives the MD5, lowercase."""
    hub_sim.add_product("P", 10, faults=[Fault.json(_recorded())])

    assert "ef0e036af119acf95a8d79c0a27aa1d7" == cdse_hub.checksum("P")


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"Checksum": []}, id="empty-checksum-list"),
        pytest.param({"Checksum": [{"Value": "f" * 64, "Algorithm": "BLAKE3"}]}, id="no-md5-yet"),
        pytest.param({"Checksum": None}, id="checksum-null"),
        pytest.param({"Online": False}, id="offline"),
    ],
)
def test_a_checksum_not_published_yet_or_an_offline_product_defers(
    hub_sim: HubSimulator, cdse_hub: CdseHub, changes: dict[str, Any]
) -> None:
    """No MD5 yet, or ``"Online": false``, is OFFLINE: deferred like a 202, not counted."""
    hub_sim.add_product("P", 10, faults=[Fault.json(_recorded(**changes))])

    with pytest.raises(HubError) as raised:
        cdse_hub.checksum("P")

    assert FailureKind.OFFLINE == raised.value.kind


def test_an_empty_value_list_is_not_found(hub_sim: HubSimulator, cdse_hub: CdseHub) -> None:
    """No product in the recorded answer's shape (``value: []``) counts like a 404."""
    document = _recorded()
    document["value"] = []
    hub_sim.add_product("P", 10, faults=[Fault.json(document)])

    with pytest.raises(HubError) as raised:
        cdse_hub.checksum("P")

    assert FailureKind.NOT_FOUND == raised.value.kind


def test_the_simulator_can_publish_an_entry_without_md5(hub_sim: HubSimulator, cdse_hub: CdseHub) -> None:
    """``Fault.catalogue_entry`` edits the simulator's own entry: an empty list defers, then the MD5 comes."""
    product = hub_sim.add_product("P", 10, faults=[Fault.catalogue_entry(Checksum=[])])

    with pytest.raises(HubError) as raised:
        cdse_hub.checksum("P")

    assert FailureKind.OFFLINE == raised.value.kind
    assert product.md5 == cdse_hub.checksum("P")


# -- a refused password is remembered ------------------------------------------------------


def _wrong_password_hub(sim: HubSimulator, pool: urllib3.PoolManager, clock: ManualClock) -> CdseHub:
    tokens = CdseTokens(
        pool=pool,
        identity_url=sim.identity_url,
        username=HUB_USER,
        password="wrong",
        clock=clock,
        refused_seconds=300,
    )
    return CdseHub(pool=pool, tokens=tokens, checksum_url=sim.base_url, zipper_url=sim.base_url)


def test_a_refused_password_is_not_tried_again_for_a_while(
    hub_sim: HubSimulator, hub_pool: urllib3.PoolManager, hub_clock: ManualClock
) -> None:
    """After one refused password grant, every call for five minutes is UNAUTHORIZED without asking."""
    product = hub_sim.add_product("P", 10)
    hub = _wrong_password_hub(hub_sim, hub_pool, hub_clock)
    kinds = []
    for _ in range(5):
        with pytest.raises(HubError) as raised:
            hub.checksum("P")
        kinds.append(raised.value.kind)
        with pytest.raises(HubError) as raised:
            fetch(hub, cdse_request(hub_sim, "P"), product)
        kinds.append(raised.value.kind)
        hub_clock.advance(59)

    assert [FailureKind.UNAUTHORIZED] * 10 == kinds
    assert [("password", 401)] == _grants(hub_sim)
    assert [] == hub_sim.requests_to("zipper") + hub_sim.requests_to("cdse_checksum")


def test_the_password_is_tried_again_after_the_window(
    hub_sim: HubSimulator, hub_pool: urllib3.PoolManager, hub_clock: ManualClock
) -> None:
    """Past the window the grant is asked again (once), so a fixed password starts working."""
    hub_sim.add_product("P", 10)
    hub = _wrong_password_hub(hub_sim, hub_pool, hub_clock)
    with pytest.raises(HubError):
        hub.checksum("P")

    hub_clock.advance(301)
    with pytest.raises(HubError) as raised:
        hub.checksum("P")

    assert FailureKind.UNAUTHORIZED == raised.value.kind
    assert [("password", 401), ("password", 401)] == _grants(hub_sim)


def test_a_refused_grant_says_how_long_to_wait(
    hub_sim: HubSimulator, hub_pool: urllib3.PoolManager, hub_clock: ManualClock
) -> None:
    """The remembered refusal's Retry-After hint is the rest of the window."""
    hub_sim.add_product("P", 10)
    hub = _wrong_password_hub(hub_sim, hub_pool, hub_clock)
    with pytest.raises(HubError):
        hub.checksum("P")

    hub_clock.advance(100)
    with pytest.raises(HubError) as raised:
        hub.checksum("P")

    assert 200.0 == raised.value.retry_after


# -- catalogue, identity service and zipper on different origins ----------------------------


def test_catalogue_identity_and_zipper_on_their_own_origins(
    hub_pool: urllib3.PoolManager, hub_clock: ManualClock
) -> None:
    """With the catalogue and identity on ``localhost`` and the zipper on ``127.0.0.1``, each request
    goes to its own origin (the simulator refuses any other), and the token reaches both."""
    with HubSimulator(username=HUB_USER, password=HUB_PASSWORD, split_origins=True) as sim:
        product = sim.add_product("P", _SIZE)
        tokens = CdseTokens(
            pool=hub_pool,
            identity_url=sim.identity_url,
            username=HUB_USER,
            password=HUB_PASSWORD,
            clock=hub_clock,
        )
        hub = CdseHub(pool=hub_pool, tokens=tokens, checksum_url=sim.catalogue_url, zipper_url=sim.zipper_url)
        link = f"{sim.catalogue_url}/odata/v1/Products(P)/$value"
        hub.accepts_download_url(link)

        checksum = hub.checksum("P")
        got = fetch(hub, DownloadRequest(id="P", filename="P.SAFE", download_url=link), product)

        assert sim.catalogue_url != sim.zipper_url
        assert (product.md5, product.md5) == (checksum, got.file_md5)
        assert [200, 200, 200] == [r.status for r in sim.requests]
        assert [f"localhost:{sim.port}", f"localhost:{sim.port}", f"127.0.0.1:{sim.port}"] == [
            r.header("Host") for r in sim.requests
        ]
