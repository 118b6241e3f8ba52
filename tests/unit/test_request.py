"""Download messages: each kind of bad input is rejected with a precise reason."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s2_downloader.adapters.hub.urls import check_url
from s2_downloader.adapters.wire import parse_download_message, upload_message
from s2_downloader.domain.errors import BadRequest
from s2_downloader.domain.request import DownloadRequest

URL = "https://scihub.copernicus.eu/dhus/odata/v1/Products('abc')/$value"


def on_hub(url: str) -> None:
    """The test's hub rule: the URL rules, and the origin of the hub at scihub.copernicus.eu."""
    if check_url(url) != ("https", "scihub.copernicus.eu", 443):
        msg = f"download_url {url[:120]!r} is outside the configured hub origin"
        raise BadRequest(msg)


def _body(**fields: object) -> str:
    message: dict[str, object] = {"id": "abc", "filename": "S2A_X.zip", "download_url": URL}
    message.update(fields)
    return json.dumps({k: v for k, v in message.items() if v is not ...})


def test_a_good_message_becomes_a_request() -> None:
    """A well-formed message with an upper-case checksum and an unknown key parses."""
    request = parse_download_message(_body(checksum="AB" * 16, extra=1), on_hub)
    assert DownloadRequest(id="abc", filename="S2A_X.zip", download_url=URL, checksum="ab" * 16) == request


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("not json", "body is not JSON"),
        ("", "body is not JSON"),
        ("[" * 40 + "]" * 40, "nested 40 levels deep"),
        ('{"id": ' + "9" * 5000 + "}", "a number of 5000 characters"),
        ('{"id": NaN}', "NaN is not a JSON value"),
        ('{"id": "a", "id": "b"}', "repeats the key 'id'"),
        ('{"pad": "' + "x" * 70_000 + '"}', "more than 65536 bytes"),
        ("[1, 2]", "body is a JSON list, not an object"),
        ('"abc"', "body is a JSON str, not an object"),
        (_body(id=...), "required field missing @ body.id"),
        (_body(filename=...), "required field missing @ body.filename"),
        (_body(download_url=...), "required field missing @ body.download_url"),
        (_body(id=42), "expected str @ body.id"),
        (_body(filename=None), "expected str @ body.filename"),
        (_body(checksum=5), "@ body.checksum"),
        (_body(id="../etc"), "unsafe id"),
        (_body(id=".."), "unsafe id"),
        (_body(id="."), "unsafe id"),
        (_body(id=""), "unsafe id"),
        (_body(id="a" * 257), "unsafe id"),
        (_body(id="a b"), "unsafe id"),
        (_body(filename="a/b.zip"), "unsafe filename"),
        (_body(filename="a\\b.zip"), "unsafe filename"),
        (_body(filename="a\x00b"), "unsafe filename"),
        (_body(filename="a\nb"), "unsafe filename"),
        (_body(filename="a\u0085b"), "unsafe filename"),
        (_body(filename="a\u007fb"), "unsafe filename"),
        (_body(filename="x\ud800.zip"), "lone surrogate"),
        (_body(filename=".hidden"), "starts with '.'"),
        (_body(filename=""), "0 bytes"),
        (_body(filename="é" * 128), "256 bytes"),
        (_body(download_url="https://evil.example/x"), "outside the configured hub origin"),
        (_body(download_url="http://scihub.copernicus.eu/x"), "outside the configured hub origin"),
        (_body(download_url="https://scihub.copernicus.eu:8443/x"), "outside the configured hub origin"),
        (_body(download_url="file:///etc/passwd"), "refused"),
        (_body(download_url="https://scihub.copernicus.eu:99999/x"), "refused"),
        (_body(download_url="https://evil.example\\@scihub.copernicus.eu/x"), "refused"),
        (_body(download_url="https://u@scihub.copernicus.eu/x"), "refused"),
        (_body(download_url=5), "expected str @ body.download_url"),
    ],
)
def test_bad_input_is_rejected_with_its_reason(body: str, reason: str) -> None:
    """Each rule of the message format has its own rejection reason."""
    with pytest.raises(BadRequest) as caught:
        parse_download_message(body, on_hub)
    assert reason in caught.value.reason


@pytest.mark.parametrize("checksum", ["xyz", "ab" * 15, "ab" * 17, "g" * 32, ""])
def test_a_checksum_that_is_not_32_hex_digits_is_ignored(checksum: str) -> None:
    """A malformed checksum is dropped (the hub's is fetched), not a reason to refuse the message."""
    assert None is parse_download_message(_body(checksum=checksum), on_hub).checksum


def test_an_explicit_default_port_is_the_hub_origin() -> None:
    """An explicit default port names the same origin as none."""
    url = "https://SciHub.Copernicus.EU:443/dhus/x"
    assert url == parse_download_message(_body(download_url=url), on_hub).download_url


@given(st.text(min_size=1, max_size=300))
def test_any_accepted_id_and_filename_is_one_safe_path_component(text: str) -> None:
    """Whatever text is offered, an accepted id or filename never navigates the file system."""
    try:
        request = DownloadRequest.create(
            id=text, filename=text, download_url=URL, checksum=None, check_url=on_hub
        )
    except BadRequest:
        return
    for part in (request.id, request.filename):
        assert "/" not in part
        assert "\\" not in part
        assert part not in {".", ".."}
        assert not part.startswith(".")


def test_upload_message_carries_id_and_filename() -> None:
    """The TO_UPLOAD body is the documented JSON object."""
    assert {"id": "abc", "filename": "f.zip"} == json.loads(upload_message("abc", "f.zip"))
