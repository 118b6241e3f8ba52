"""The URL rules: a URL is accepted for the hub only if urllib3 would connect to the hub.

The oracle is urllib3 itself: ``PoolManager.connection_from_url`` picks the pool (scheme,
host, port) a request goes to, and the connection it makes resolves ``_dns_host`` the way
``socket.create_connection`` does (IDNA codec, trailing dot ignored).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import urllib3
from hypothesis import example, given
from hypothesis import strategies as st
from urllib3.exceptions import HTTPError
from urllib3.util import parse_url

from s2_downloader.adapters.hub import CdseHub, CdseTokens, DhusHub
from s2_downloader.adapters.hub.urls import check_redirect, check_url, safe_url, shown
from s2_downloader.domain.errors import BadRequest

HUB = "hub.example"
HUB_ORIGIN = ("https", HUB, 443)
_POOL = urllib3.PoolManager()
_DHUS = DhusHub(pool=_POOL, base_url=f"https://{HUB}", username="u", password="p")
_CDSE = CdseHub(
    pool=_POOL,
    tokens=CdseTokens(pool=_POOL, identity_url=f"https://identity.{HUB}/token", username="u", password="p"),
    checksum_url=f"https://catalogue.{HUB}",
    zipper_url=f"https://{HUB}",
    download_hosts=frozenset({f"download.{HUB}"}),
)
_CDSE_HOSTS = {HUB, f"catalogue.{HUB}", f"identity.{HUB}", f"download.{HUB}"}

_SCHEMES = ["https", "http", "HTTPS", "HtTp", "ftp", "", "javascript", "https\t"]
_SEPARATORS = ["://", ":/", ":", ":\\\\", ":/\\", "://\\", ":///", "\\\\", "//"]
_HOSTS = [
    HUB,
    HUB.upper(),
    f"{HUB}.",
    "evil.example",
    f"{HUB}.evil.example",
    f"evil.example.{HUB}",
    "127.0.0.1",
    "2130706433",
    "[::1]",
    "[::ffff:127.0.0.1]",
    "[v1.x]",
    "[::1",
    "hub\u3002example",
    "hub\uff0eexample",
    "hub%2eexample",
    "h\u00fcb.example",
    "",
]
_FRAGMENTS = [
    *_HOSTS,
    "@",
    "\\",
    "%5C",
    "%5c",
    "%40",
    "%2F",
    "\t",
    "\n",
    "\r",
    " ",
    "\x00",
    "\u200b",
    "#",
    "?",
    "/",
    ":",
    ":443",
    ":80",
    ":8443",
    ":0443",
    ":99999",
    ":-1",
    "user",
    "user:pw",
    "\u3002",
    ".",
    "/path",
    ";",
]
_DEFAULT_PORTS = {"http": 80, "https": 443}


def urllib3_target(url: str) -> tuple[str, str, int] | None:
    """Where a PoolManager would connect for ``url`` (scheme, host as resolved, port), or None."""
    try:
        pool = _POOL.connection_from_url(url)
        connection = pool._new_conn()
    except (HTTPError, ValueError, LookupError):
        return None  # urllib3 refuses the URL: no connection at all
    dns_host: str = getattr(connection, "_dns_host")  # noqa: B009 - what create_connection resolves
    host = dns_host.strip("[]")
    try:
        # create_connection encodes with the IDNA codec, which maps U+3002 and U+FF0E to ".".
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    return pool.scheme.lower(), host.lower().rstrip("."), int(pool.port or _DEFAULT_PORTS[pool.scheme])


def _accepted_by_dhus(url: str) -> bool:
    try:
        _DHUS.accepts_download_url(url)
    except BadRequest:
        return False
    return True


# Weighted towards a well-formed start ("https://hub.example"), so that many URLs are
# accepted and what follows the host (userinfo, separators, encodings) is what varies.
urls = st.builds(
    lambda scheme, separator, head, rest: scheme + separator + head + "".join(rest),
    st.sampled_from(["https"] * 8 + _SCHEMES),
    st.sampled_from(["://"] * 8 + _SEPARATORS),
    st.sampled_from([HUB] * 8 + _HOSTS),
    st.lists(st.sampled_from(["/path"] * 6 + _FRAGMENTS), max_size=5),
)


@given(urls)
@example(f"https://{HUB}\\@evil.example/")
@example(f"https://evil.example\\@{HUB}/")
@example(f"https://{HUB}%5C@evil.example/")
@example(f"https://{HUB}%40evil.example/")
@example(f"https://{HUB}\t@evil.example/")
@example(f"https://evil.example#@{HUB}/")
@example(f"https://evil.example?@{HUB}/")
@example(f"https://{HUB}:443@evil.example/")
@example(f"https://{HUB}:@evil.example/")
@example("https://hub\u3002example/")
@example(f"HTTPS://{HUB.upper()}/p")
def test_an_accepted_url_reaches_the_hub_and_nothing_else(url: str) -> None:
    """Whenever urllib3 would connect anywhere but the hub's origin, DHuS's check refuses the URL."""
    if _accepted_by_dhus(url):
        assert HUB_ORIGIN == urllib3_target(url)


@given(urls)
def test_an_accepted_cdse_link_is_on_a_cdse_host(url: str) -> None:
    """CDSE accepts a link only when urllib3 would connect to one of its hosts over http(s)."""
    try:
        _CDSE.accepts_download_url(url)
    except BadRequest:
        return
    target = urllib3_target(url)
    assert target is not None
    assert target[0] in _DEFAULT_PORTS
    assert target[1] in _CDSE_HOSTS


@given(st.lists(st.sampled_from([*_FRAGMENTS, "//", "\\\\", "/\\", "https:", "http:"]), max_size=7))
@example(["//", "evil.example"])
@example(["//", "[::1"])
@example(["\\\\", "evil.example"])
@example(["/\\", "evil.example"])
@example(["\t", "//", "evil.example"])
@example(["//", "evil", "\t", ".example"])
def test_a_redirect_is_credentialed_only_when_it_reaches_the_hub(pieces: list[str]) -> None:
    """A Location joined to a hub URL whose checked origin is the hub's is a request to the hub."""
    location = "".join(pieces)
    try:
        target, origin = check_redirect(f"https://{HUB}/dhus/a/b", location)
    except BadRequest:
        return
    if origin == HUB_ORIGIN:
        assert HUB_ORIGIN == urllib3_target(target)


@pytest.mark.parametrize(
    "url",
    [
        f"https://{HUB}\\@evil.example/",
        f"https://{HUB}%5C@evil.example/",
        f"https://{HUB}%40evil.example/",
        f"https://user:pw@{HUB}/",
        f"https://{HUB}@evil.example/",
        f"https://{HUB}\t/",
        f" https://{HUB}/",
        f"https://{HUB}/\n",
        f"https://{HUB}/\u200b",
        "https://hub\u3002example/",
        "https://hub\uff0eexample/",
        f"https://{HUB}./",
        f"https://{HUB}:0/",
        f"https://{HUB}:99999/",
        "https://[::1/",
        "https://[1.2.3.4]/",
        "https://[fe80::1%25eth0]/",
        f"ftp://{HUB}/",
        f"https:{HUB}/",
        f"//{HUB}/",
        "https:///x",
        "https://" + "a" * 9000,
    ],
)
def test_urls_breaking_the_rules_are_bad_input(url: str) -> None:
    """Userinfo, backslashes, whitespace, controls, encoded separators, odd hosts and schemes are refused."""
    with pytest.raises(BadRequest):
        check_url(url)


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        (f"https://{HUB}/p", HUB_ORIGIN),
        (f"HTTPS://{HUB.upper()}:443/p?q#f", HUB_ORIGIN),
        (f"http://{HUB}:8080", ("http", HUB, 8080)),
        ("http://[0:0::1]:81/x", ("http", "::1", 81)),
        (f"https://{HUB}#@evil.example/", HUB_ORIGIN),
        (f"https://{HUB}/a%5Cb/%40", HUB_ORIGIN),
    ],
)
def test_well_formed_urls_give_their_origin(url: str, origin: tuple[str, str, int]) -> None:
    """Scheme and host are lowercased, default ports filled in, IPv6 compressed."""
    assert origin == check_url(url)
    assert origin == urllib3_target(url) or origin[1] == "::1"


def test_a_refused_url_never_shows_its_userinfo() -> None:
    """The refusal message keeps a password in a URL out of the logs."""
    with pytest.raises(BadRequest) as raised:
        check_url(f"https://user:s3cret@{HUB}/")

    assert "s3cret" not in raised.value.reason
    assert "s3cret" not in shown(f"https://user:s3cret\\@{HUB}/")


def test_a_location_with_a_tab_is_refused_before_joining() -> None:
    """``urljoin`` would drop the tab and read ``//ev<TAB>il`` as ``//evil``; the raw header is refused."""
    with pytest.raises(BadRequest):
        check_redirect(f"https://{HUB}/a", "//ev\til.example/x")


def test_the_oracle_sees_what_the_check_prevents() -> None:
    """urllib3 really would connect to the host before the backslash, the attack the rules stop."""
    assert ("https", HUB, 443) == urllib3_target(f"https://{HUB}\\@evil.example/")
    assert parse_url(f"https://{HUB}\\@evil.example/").host == HUB
    assert ("https", "evil.example", 443) == urllib3_target(f"https://evil.example\\@{HUB}/")


_SIGNED = "https://download.hub.example/p.zip?X-Amz-Signature=SECRETSIG&token=SECRETTOKEN#frag-SECRET"


@pytest.mark.parametrize("show", [shown, safe_url])
def test_urls_in_messages_lose_their_query_and_fragment(show: Callable[[str], str]) -> None:
    """A signed download link shown in a log or last_error keeps its path, never its query or fragment."""
    text = show(_SIGNED)
    assert "https://download.hub.example/p.zip" == text
    assert "SECRET" not in text


def test_a_refused_redirect_names_no_query_string() -> None:
    """The message of a redirect refused for its target shows the target without its query."""
    location = "https://elsewhere.example/p.zip?X-Amz-Signature=SECRETSIG"
    with pytest.raises(BadRequest) as excinfo:
        check_redirect("https://hub.example/x", "ftp://elsewhere.example/p.zip?sig=SECRETSIG")
    assert "SECRET" not in str(excinfo.value)
    assert "SECRET" not in shown(location)


def test_an_unreadable_url_is_shown_without_its_query() -> None:
    """Even a URL refused as unreadable (a control character in its query) is shown up to the query."""
    with pytest.raises(BadRequest) as excinfo:
        check_url("https://hub.example/p?sig=SECRET\nX")
    assert "SECRET" not in str(excinfo.value)
    assert "https://hub.example/p" in str(excinfo.value)
