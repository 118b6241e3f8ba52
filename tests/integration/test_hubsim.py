"""The hub simulator on its own: content, ranges, both APIs, faults and the request log."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import urllib.parse
from typing import Any

import pytest
import urllib3

from s2_downloader.adapters.hub import CdseHub, DhusHub
from s2_downloader.testing.hubsim import TOKEN_PATH, Fault, HubSimulator
from tests.integration.fixtures_hub import HUB_PASSWORD, HUB_USER

pytestmark = pytest.mark.integration

_BASIC = {"Authorization": "Basic " + base64.b64encode(f"{HUB_USER}:{HUB_PASSWORD}".encode()).decode()}


def _get(
    pool: urllib3.PoolManager, url: str, headers: dict[str, str] | None = None
) -> urllib3.BaseHTTPResponse:
    return pool.request("GET", url, headers={**_BASIC, **(headers or {})}, retries=False, redirect=False)


def _token(pool: urllib3.PoolManager, sim: HubSimulator, **form: str) -> urllib3.BaseHTTPResponse:
    return pool.request(
        "POST",
        sim.identity_url,
        body=urllib.parse.urlencode({"client_id": "cdse-public", **form}),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        retries=False,
    )


def _json(response: urllib3.BaseHTTPResponse) -> Any:
    return json.loads(response.data)


@pytest.mark.parametrize("size", [0, 1, (1 << 20) + 36, (1 << 20) + 38, 3 * (1 << 20) + 5])
def test_published_md5_is_the_md5_of_the_bytes(hub_sim: HubSimulator, size: int) -> None:
    """A product's md5 is the MD5 of exactly ``size`` bytes, whatever the size."""
    product = hub_sim.add_product("P", size)

    content = product.read()

    assert size == len(content)
    assert hashlib.md5(content, usedforsecurity=False).hexdigest() == product.md5


def test_same_seed_gives_the_same_bytes(hub_sim: HubSimulator) -> None:
    """Two products with one seed and size are byte for byte the same; another seed differs."""
    first = hub_sim.add_product("A", 5000, seed=7)
    second = hub_sim.add_product("B", 5000, seed=7)
    other = hub_sim.add_product("C", 5000, seed=8)

    assert first.md5 == second.md5
    assert first.md5 != other.md5


def test_download_serves_the_product(hub_sim: HubSimulator, hub_pool: urllib3.PoolManager) -> None:
    """A DHuS $value GET answers 200 with the whole product and its Content-Length."""
    product = hub_sim.add_product("P", 300_000)

    response = _get(hub_pool, hub_sim.dhus_download_url("P"))

    assert 200 == response.status
    assert "300000" == response.headers["Content-Length"]
    assert product.read() == response.data


def test_range_is_answered_with_206(hub_sim: HubSimulator, hub_pool: urllib3.PoolManager) -> None:
    """``Range: bytes=N-`` gets 206, the matching Content-Range and the bytes from N."""
    product = hub_sim.add_product("P", 1000)

    response = _get(hub_pool, hub_sim.dhus_download_url("P"), {"Range": "bytes=100-"})

    assert 206 == response.status
    assert "bytes 100-999/1000" == response.headers["Content-Range"]
    assert product.read(100) == response.data


def test_range_past_the_end_is_answered_with_416(
    hub_sim: HubSimulator, hub_pool: urllib3.PoolManager
) -> None:
    """A range starting at the size gets 416 with ``Content-Range: bytes */size``."""
    hub_sim.add_product("P", 1000)

    response = _get(hub_pool, hub_sim.dhus_download_url("P"), {"Range": "bytes=1000-"})

    assert 416 == response.status
    assert "bytes */1000" == response.headers["Content-Range"]


def test_unknown_product_gets_a_dhus_404(hub_sim: HubSimulator, hub_pool: urllib3.PoolManager) -> None:
    """An unknown id gets 404 with DHuS's InvalidKeyException body and header."""
    response = _get(hub_pool, hub_sim.dhus_download_url("nope"))

    assert 404 == response.status
    assert "Invalid key (nope) to access Products" == _json(response)["error"]["message"]["value"]
    assert response.headers["cause-message"].startswith("InvalidKeyException")


def test_dhus_checksum_is_shaped_like_the_recorded_answer(
    hub_sim: HubSimulator, hub_pool: urllib3.PoolManager
) -> None:
    """The DHuS checksum answer has ``d.Checksum`` with MD5 in upper case, like the real hub."""
    product = hub_sim.add_product("P", 10)

    response = _get(
        hub_pool, f"{hub_sim.base_url}/dhus/odata/v1/Products('P')/?$format=json&$select=Checksum"
    )

    checksum = _json(response)["d"]["Checksum"]
    assert {"Algorithm": "MD5", "Value": product.md5.upper()} == {
        "Algorithm": checksum["Algorithm"],
        "Value": checksum["Value"],
    }


def test_cdse_catalogue_lists_md5_and_blake3(hub_sim: HubSimulator, hub_pool: urllib3.PoolManager) -> None:
    """The catalogue answers a filter on Id with one product holding MD5 and BLAKE3 entries."""
    product = hub_sim.add_product("0ee5de89-fadb", 10)
    query = urllib.parse.quote("Id eq '0ee5de89-fadb'", safe="'")

    response = hub_pool.request("GET", f"{hub_sim.base_url}/odata/v1/Products?$filter={query}")

    (entry,) = _json(response)["value"]
    checksums = {c["Algorithm"]: c["Value"] for c in entry["Checksum"]}
    assert product.md5 == checksums["MD5"]
    assert 64 == len(checksums["BLAKE3"])


def test_faults_are_used_up_one_per_request_in_order(
    hub_sim: HubSimulator, hub_pool: urllib3.PoolManager
) -> None:
    """Download faults apply to successive downloads, then the product is served normally."""
    hub_sim.add_product("P", 10, faults=[Fault.status(503, retry_after="2"), Fault.accepted()])
    url = hub_sim.dhus_download_url("P")

    statuses = [_get(hub_pool, url).status for _ in range(3)]

    assert [503, 202, 200] == statuses
    assert [503, 202, 200] == [r.status for r in hub_sim.requests_to("dhus_value", "P")]


def test_checksum_faults_do_not_touch_downloads(hub_sim: HubSimulator, hub_pool: urllib3.PoolManager) -> None:
    """A fault aimed at the checksum endpoint leaves the download alone, and the reverse."""
    hub_sim.add_product("P", 10, faults=[Fault.status(500).on_checksum(), Fault.status(404)])
    checksum_url = f"{hub_sim.base_url}/dhus/odata/v1/Products('P')/?$format=json&$select=Checksum"

    download = _get(hub_pool, hub_sim.dhus_download_url("P")).status
    checksum = _get(hub_pool, checksum_url).status

    assert (404, 500) == (download, checksum)


def test_wrong_checksum_fault_publishes_a_wrong_md5_once(hub_sim: HubSimulator, dhus_hub: DhusHub) -> None:
    """``wrong_checksum`` spoils one checksum answer; the next one is right again."""
    product = hub_sim.add_product("P", 10, faults=[Fault.wrong_checksum()])

    first, second = dhus_hub.checksum("P"), dhus_hub.checksum("P")

    assert product.md5 != first
    assert product.md5 == second


def test_checksum_can_be_made_wrong_for_good(hub_sim: HubSimulator, cdse_hub: CdseHub) -> None:
    """``set_checksum_wrong`` spoils every checksum answer until it is undone."""
    product = hub_sim.add_product("P", 10)
    hub_sim.set_checksum_wrong("P")

    published = {cdse_hub.checksum("P") for _ in range(3)}
    hub_sim.set_checksum_wrong("P", wrong=False)

    assert 1 == len(published)
    assert product.md5 not in published
    assert product.md5 == cdse_hub.checksum("P")


def test_retry_after_is_sent_as_given(hub_sim: HubSimulator, hub_pool: urllib3.PoolManager) -> None:
    """A status fault with a Retry-After sends that header verbatim."""
    hub_sim.add_product("P", 10, faults=[Fault.status(429, retry_after="Wed, 21 Oct 2015 07:28:00 GMT")])

    response = _get(hub_pool, hub_sim.dhus_download_url("P"))

    assert "Wed, 21 Oct 2015 07:28:00 GMT" == response.headers["Retry-After"]


def test_wrong_basic_credentials_get_401(hub_sim: HubSimulator, hub_pool: urllib3.PoolManager) -> None:
    """DHuS endpoints refuse a wrong password with 401."""
    hub_sim.add_product("P", 10)
    wrong = {"Authorization": "Basic " + base64.b64encode(b"hls-downloader:nope").decode()}

    response = _get(hub_pool, hub_sim.dhus_download_url("P"), wrong)

    assert 401 == response.status


def test_zipper_wants_a_live_bearer_token(hub_sim: HubSimulator, hub_pool: urllib3.PoolManager) -> None:
    """The zipper serves a freshly issued token, and refuses it once tokens are expired."""
    product = hub_sim.add_product("P", 100)
    token = _json(_token(hub_pool, hub_sim, grant_type="password", username=HUB_USER, password=HUB_PASSWORD))
    bearer = {"Authorization": f"Bearer {token['access_token']}"}

    served = _get(hub_pool, hub_sim.cdse_download_url("P"), bearer)
    hub_sim.expire_tokens()
    refused = _get(hub_pool, hub_sim.cdse_download_url("P"), bearer)

    assert (200, product.read()) == (served.status, served.data)
    assert 401 == refused.status


def test_refresh_grant_issues_new_tokens_until_refresh_tokens_expire(
    hub_sim: HubSimulator, hub_pool: urllib3.PoolManager
) -> None:
    """A refresh grant works with a live refresh token and gets 400 invalid_grant after expiry."""
    token = _json(_token(hub_pool, hub_sim, grant_type="password", username=HUB_USER, password=HUB_PASSWORD))

    refreshed = _token(hub_pool, hub_sim, grant_type="refresh_token", refresh_token=token["refresh_token"])
    hub_sim.expire_tokens(refresh=True)
    refused = _token(hub_pool, hub_sim, grant_type="refresh_token", refresh_token=token["refresh_token"])

    assert 200 == refreshed.status
    assert {"access_token", "expires_in", "refresh_token", "refresh_expires_in"} <= set(_json(refreshed))
    assert (400, "invalid_grant") == (refused.status, _json(refused)["error"])


def test_bad_password_grant_gets_401(hub_sim: HubSimulator, hub_pool: urllib3.PoolManager) -> None:
    """The token endpoint refuses a wrong password with 401."""
    response = _token(hub_pool, hub_sim, grant_type="password", username=HUB_USER, password="nope")

    assert 401 == response.status


def test_requests_are_recorded_with_their_headers(
    hub_sim: HubSimulator, hub_pool: urllib3.PoolManager
) -> None:
    """Each answered request is logged with method, endpoint, product, status, headers and body bytes."""
    hub_sim.add_product("P", 1000)

    _get(hub_pool, hub_sim.dhus_download_url("P"), {"Range": "bytes=10-"})
    _token(hub_pool, hub_sim, grant_type="password", username=HUB_USER, password=HUB_PASSWORD)

    download, token = hub_sim.requests
    assert ("GET", "dhus_value", "P", 206, 990) == (
        download.method,
        download.endpoint,
        download.product_id,
        download.status,
        download.body_bytes,
    )
    assert "bytes=10-" == download.range
    assert _BASIC["Authorization"] == download.authorization
    assert ("POST", TOKEN_PATH, "password") == (token.method, token.path, token.grant_type)


def test_corrupt_fault_serves_bytes_that_miss_the_md5(
    hub_sim: HubSimulator, hub_pool: urllib3.PoolManager
) -> None:
    """A corrupt body has the right length but not the published MD5."""
    product = hub_sim.add_product("P", 5000, faults=[Fault.corrupt()])

    body = _get(hub_pool, hub_sim.dhus_download_url("P")).data

    assert product.size == len(body)
    assert product.md5 != hashlib.md5(body, usedforsecurity=False).hexdigest()


def test_rate_limit_still_serves_every_byte(hub_pool: urllib3.PoolManager) -> None:
    """A rate-limited simulator paces the body but serves it whole."""
    with HubSimulator(require_auth=False, rate_limit=4_000_000) as sim:
        product = sim.add_product("P", 400_000)

        body = _get(hub_pool, sim.dhus_download_url("P")).data

    assert product.read() == body


def test_stop_closes_the_port(hub_pool: urllib3.PoolManager) -> None:
    """After ``stop`` the simulator's port refuses connections."""
    sim = HubSimulator().start()
    url = sim.base_url
    sim.stop()

    with pytest.raises(urllib3.exceptions.NewConnectionError):
        hub_pool.request("GET", url, retries=False)


def test_downloads_carry_a_quoted_etag_and_last_modified(
    hub_sim: HubSimulator, hub_pool: urllib3.PoolManager
) -> None:
    """The product's ETag is its quoted MD5, with a Last-Modified date beside it."""
    product = hub_sim.add_product("P", 100)
    hub_sim.require_auth = False

    response = hub_pool.request("GET", hub_sim.dhus_download_url("P"))

    assert (f'"{product.md5}"', response.headers["Last-Modified"]) == hub_sim.validators("P")
    assert f'"{product.md5}"' == response.headers["ETag"]


def test_if_range_that_no_longer_matches_gets_the_whole_new_product(
    hub_sim: HubSimulator, hub_pool: urllib3.PoolManager
) -> None:
    """After ``replace_product`` the old ETag in If-Range makes the Range be ignored: 200, new bytes."""
    old = hub_sim.add_product("P", 100)
    new = hub_sim.replace_product("P", seed=7)
    hub_sim.require_auth = False
    headers = {"Range": "bytes=10-", "If-Range": f'"{old.md5}"'}

    response = hub_pool.request("GET", hub_sim.dhus_download_url("P"), headers=headers)

    assert (200, new.read()) == (response.status, response.data)


def test_trickle_sends_one_byte_at_a_time(hub_sim: HubSimulator, hub_pool: urllib3.PoolManager) -> None:
    """A trickled body still arrives whole, one byte per interval."""
    product = hub_sim.add_product("P", 5, faults=[Fault.trickle(0.05)])
    hub_sim.require_auth = False
    started = time.monotonic()

    response = hub_pool.request("GET", hub_sim.dhus_download_url("P"))

    assert product.read() == response.data
    assert time.monotonic() - started >= 0.2
