"""Resumes are conditional: a product replaced between attempts restarts from 0, never splices.

The stream's ``validator`` is the strong ETag (else the Last-Modified) of the response that
started the partial; passed back to ``open_product`` it is sent as ``If-Range``.
"""

from __future__ import annotations

import hashlib

import pytest

from s2_downloader.adapters.hub import CdseHub, DhusHub
from s2_downloader.domain.request import DownloadRequest
from s2_downloader.testing.hubsim import HubSimulator
from tests.integration.fixtures_hub import cdse_request, dhus_request

pytestmark = pytest.mark.integration

_SIZE = 2 * (1 << 20) + 4321
_OFFSET = 1_000_003


def _first_part(hub: DhusHub | CdseHub, request: DownloadRequest) -> tuple[bytes, str | None]:
    """Start a download, keep its first ``_OFFSET`` bytes and its validator, then give up."""
    held = bytearray()
    with hub.open_product(request, 0) as stream:
        for chunk in stream.chunks():
            held += chunk
            if len(held) >= _OFFSET:
                break
        return bytes(held[:_OFFSET]), stream.validator


def _resume(
    hub: DhusHub | CdseHub, request: DownloadRequest, held: bytes, validator: str | None
) -> tuple[int, bytes]:
    with hub.open_product(request, len(held), validator=validator) as stream:
        body = b"".join(stream.chunks())
        return stream.offset, (held[: stream.offset] + body)


def _request(sim: HubSimulator, api: str) -> DownloadRequest:
    return dhus_request(sim, "P") if api == "dhus" else cdse_request(sim, "P")


@pytest.fixture(params=["dhus", "cdse"])
def api(request: pytest.FixtureRequest) -> str:
    """Both hub APIs."""
    return str(request.param)


@pytest.fixture
def hub(api: str, dhus_hub: DhusHub, cdse_hub: CdseHub) -> DhusHub | CdseHub:
    """The adapter of ``api``."""
    return dhus_hub if api == "dhus" else cdse_hub


def test_the_validator_is_the_strong_etag(hub_sim: HubSimulator, hub: DhusHub | CdseHub, api: str) -> None:
    """A product served with a strong ETag gives that ETag as the validator."""
    product = hub_sim.add_product("P", _SIZE)

    _, validator = _first_part(hub, _request(hub_sim, api))

    assert f'"{product.md5}"' == validator


def test_without_a_strong_etag_the_validator_is_last_modified(
    hub_sim: HubSimulator, hub: DhusHub | CdseHub, api: str
) -> None:
    """A weak ETag cannot be used with If-Range: the Last-Modified date is the validator."""
    hub_sim.add_product("P", _SIZE, etag="weak")

    _, validator = _first_part(hub, _request(hub_sim, api))

    (served,) = hub_sim.requests_to("dhus_value" if api == "dhus" else "zipper")
    assert validator is not None
    assert (f'W/"{hub_sim.content_md5("P")}"', validator) == hub_sim.validators("P")
    assert served.status == 200


def test_without_validators_there_is_none(hub_sim: HubSimulator, hub: DhusHub | CdseHub, api: str) -> None:
    """No ETag and no Last-Modified: no validator, and a resume sends no If-Range."""
    product = hub_sim.add_product("P", _SIZE, etag="none", last_modified=False)
    request = _request(hub_sim, api)
    held, validator = _first_part(hub, request)

    offset, whole = _resume(hub, request, held, validator)

    resumed = hub_sim.requests[-1]
    assert (None, _OFFSET, product.md5) == (validator, offset, _md5(whole))
    assert resumed.header("If-Range") is None


def test_an_unchanged_product_resumes_with_if_range(
    hub_sim: HubSimulator, hub: DhusHub | CdseHub, api: str
) -> None:
    """The validator goes back as If-Range; the hub still has that product, so it answers 206."""
    product = hub_sim.add_product("P", _SIZE)
    request = _request(hub_sim, api)
    held, validator = _first_part(hub, request)

    offset, whole = _resume(hub, request, held, validator)

    resumed = hub_sim.requests[-1]
    assert (_OFFSET, product.md5) == (offset, _md5(whole))
    assert (206, validator, f"bytes={_OFFSET}-") == (
        resumed.status,
        resumed.header("If-Range"),
        resumed.range,
    )


@pytest.mark.parametrize("etag", ["strong", "weak"])
def test_a_replaced_product_restarts_from_zero(
    hub_sim: HubSimulator, hub: DhusHub | CdseHub, api: str, etag: str
) -> None:
    """Replaced between attempts, the product comes back whole (200) and the new stream starts at 0."""
    hub_sim.add_product("P", _SIZE, etag=etag)
    request = _request(hub_sim, api)
    held, validator = _first_part(hub, request)
    replaced = hub_sim.replace_product("P", seed=99)

    offset, whole = _resume(hub, request, held, validator)

    resumed = hub_sim.requests[-1]
    assert (0, replaced.md5) == (offset, _md5(whole))
    assert (200, validator) == (resumed.status, resumed.header("If-Range"))


def test_the_simulator_splices_without_if_range(hub_sim: HubSimulator, dhus_hub: DhusHub) -> None:
    """Without a validator a replaced product is spliced: the hazard If-Range exists for."""
    hub_sim.add_product("P", _SIZE)
    request = dhus_request(hub_sim, "P")
    held, _ = _first_part(dhus_hub, request)
    replaced = hub_sim.replace_product("P", seed=99)

    offset, whole = _resume(dhus_hub, request, held, None)

    assert _OFFSET == offset
    assert replaced.md5 != _md5(whole)


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()
