"""Secrets and credential-bearing URLs (docs/interface.md section 2): refused clearly, never echoed."""

from __future__ import annotations

import pytest

from s2_downloader.adapters.secret_values import secret_problem
from s2_downloader.entrypoints.config import ConfigError, Settings

_SECRET = "hunter2-SECRET-VALUE"


@pytest.mark.parametrize("variable", ["SCIHUB_PASSWORD", "PG_PASSWORD"])
@pytest.mark.parametrize("bad", ["\n", "\r\n", "\x00", "\t", "\x1b", "\x85"])
def test_a_secret_with_a_control_character_is_refused_without_echoing_it(variable: str, bad: str) -> None:
    """GIVEN a password ending in a control character THEN ConfigError names the variable, not the value."""
    env = {"SCIHUB_USERNAME": "user", "SCIHUB_PASSWORD": "fine", "PG_HOST": "db", variable: _SECRET + bad}
    with pytest.raises(ConfigError) as excinfo:
        Settings.from_env(env)
    message = str(excinfo.value)
    assert variable == excinfo.value.variable
    assert "control character" in message
    assert "SECRET" not in message
    assert "hunter2" not in message


def test_spaces_inside_a_password_are_kept() -> None:
    """Spaces may be part of a password: not a control character."""
    settings = Settings.from_env({"SCIHUB_USERNAME": "user", "SCIHUB_PASSWORD": " pass word "})
    assert settings.hub_credentials is not None
    assert " pass word " == settings.hub_credentials.password


def test_secret_problem_names_the_code_point_only() -> None:
    """The reason carries the code point and position, nothing of the value."""
    problem = secret_problem("abc\n")
    assert problem is not None
    assert "U+000A" in problem
    assert "abc" not in problem
    assert secret_problem("plain value") is None


@pytest.mark.parametrize("variable", ["SCIHUB_URL", "COPERNICUS_ZIPPER_URL", "COPERNICUS_IDENTITY_URL"])
def test_a_credential_bearing_url_over_plain_http_is_refused(variable: str) -> None:
    """GIVEN http:// on a public host for a URL that carries credentials THEN exit-2 error naming it."""
    with pytest.raises(ConfigError) as excinfo:
        Settings.from_env({variable: "http://hub.example.org/path"})
    assert variable == excinfo.value.variable
    assert "https" in str(excinfo.value)


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080", "http://localhost:9000/x", "http://[::1]:8000", "https://hub.example.org"],
)
def test_https_anywhere_and_http_on_loopback_are_accepted(url: str) -> None:
    """Loopback (the simulator, a tunnel) may be plain http; everything else must be https."""
    settings = Settings.from_env({"SCIHUB_URL": url, "COPERNICUS_ZIPPER_URL": url})
    assert url.rstrip("/") == settings.scihub_url


def test_the_checksum_url_carries_no_credentials_and_may_be_http() -> None:
    """COPERNICUS_CHECKSUM_URL is asked without credentials: http is allowed there."""
    settings = Settings.from_env({"COPERNICUS_CHECKSUM_URL": "http://catalogue.example.org"})
    assert "http://catalogue.example.org" == settings.copernicus_checksum_url
