"""Settings.from_env: defaults, validation naming the variable, secrets kept out of reprs."""

from __future__ import annotations

import pathlib

import pytest

from s2_downloader.entrypoints.cli import main
from s2_downloader.entrypoints.config import ConfigError, Settings
from s2_downloader.entrypoints.wiring import check_not_fifo
from tests.unit.fake_queue import FakeQueue


def test_defaults_are_the_contracts() -> None:
    """An empty environment gives the defaults of docs/interface.md section 2."""
    settings = Settings.from_env({})
    expected = ("dhus", "https://scihub.copernicus.eu", 10, 60.0, 900.0, 10.0, 60.0)
    actual = (
        settings.hub_api,
        settings.scihub_url,
        settings.max_download_retries,
        settings.retry_delay_seconds,
        settings.lease_seconds,
        settings.http_connect_timeout,
        settings.http_read_timeout,
    )
    assert expected == actual


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MAX_DOWNLOAD_RETRIES", "ten"),
        ("MAX_DOWNLOAD_RETRIES", "-1"),
        ("MAX_DOWNLOAD_RETRIES", "1.5"),
        ("RETRY_DELAY_SECONDS", "nan"),
        ("LEASE_SECONDS", "0"),
        ("HTTP_READ_TIMEOUT", "inf"),
        ("HTTP_CONNECT_TIMEOUT", "x"),
        ("HUB_API", "scihub"),
        ("SCIHUB_URL", "ftp://hub"),
        ("TO_DOWNLOAD_SQS_QUEUE_URL", "queue"),
        ("COPERNICUS_IDENTITY_URL", "not a url"),
        ("PG_PORT", "abc"),
        ("SCIHUB_URL", "https://h:99999"),
        ("SCIHUB_URL", "https://[::1"),
        ("SCIHUB_URL", "https://user:pw@hub.example"),
        ("SCIHUB_URL", "https://evil.example\\@hub.example"),
        ("COPERNICUS_ZIPPER_URL", "https://zipper.example:0"),
        ("TO_UPLOAD_SQS_QUEUE_URL", "http://127.0.0.1:70000/q/u"),
        ("TO_DOWNLOAD_SQS_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/1/downloads.fifo"),
        ("MAX_DEFER_SECONDS", "-5"),
        ("COPERNICUS_DOWNLOAD_HOSTS", "https://download.example"),
        ("COPERNICUS_DOWNLOAD_HOSTS", "download.example:8443"),
        ("COPERNICUS_DOWNLOAD_HOSTS", " , "),
    ],
)
def test_a_malformed_value_names_its_variable(variable: str, value: str) -> None:
    """Each malformed value raises ConfigError naming the variable."""
    env = {variable: value, "PG_USER": "u"} if variable == "PG_PORT" else {variable: value}
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert variable == caught.value.variable
    assert str(caught.value).startswith(f"{variable}: ")


@pytest.mark.parametrize(
    "missing", ["TO_DOWNLOAD_SQS_QUEUE_URL", "TO_UPLOAD_SQS_QUEUE_URL", "EFS_MOUNT_DIR", "DATABASE_URL"]
)
def test_the_worker_requires_queues_mount_and_database(missing: str) -> None:
    """run and the Lambda refuse to start without each required variable, naming it."""
    env = {
        "DATABASE_URL": "postgresql://u@h/db",
        "TO_DOWNLOAD_SQS_QUEUE_URL": "http://127.0.0.1:1/q/d",
        "TO_UPLOAD_SQS_QUEUE_URL": "http://127.0.0.1:1/q/u",
        "EFS_MOUNT_DIR": "/mnt/efs",
        "SCIHUB_USERNAME": "user",
        "SCIHUB_PASSWORD": "pw",
    }
    del env[missing]
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env).require_worker()
    assert missing == caught.value.variable


def test_pg_variables_build_a_conninfo_when_database_url_is_unset() -> None:
    """PG_HOST/PORT/USER/PASSWORD/DB become a quoted conninfo string."""
    env = {"PG_HOST": "db", "PG_USER": "hls", "PG_PASSWORD": "p'w d", "PG_DB": "granules"}
    url = Settings.from_env(env).database_url
    assert "host='db' port='5432' user='hls' password='p\\'w d' dbname='granules'" == url


def test_no_secret_in_the_repr() -> None:
    """Passwords and connection strings never show in repr(Settings)."""
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://u:dbsecret@h/db",
            "SCIHUB_USERNAME": "user",
            "SCIHUB_PASSWORD": "hubsecret",
        }
    )
    text = repr(settings)
    assert "user" in text
    assert ("dbsecret" in text, "hubsecret" in text) == (False, False)


def test_a_malformed_database_url_is_refused_without_echoing_it() -> None:
    """A DATABASE_URL libpq cannot parse is a ConfigError that does not repeat the password."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"DATABASE_URL": "postgresql://u:s3%zzcr3t@localhost/db"})
    assert "DATABASE_URL" == caught.value.variable
    assert "s3%zzcr3t" not in str(caught.value)


def test_the_mount_must_be_a_directory(tmp_path: pathlib.Path) -> None:
    """EFS_MOUNT_DIR naming no directory is a configuration error, not a runtime one."""
    env = {
        "DATABASE_URL": "postgresql://u@h/db",
        "TO_DOWNLOAD_SQS_QUEUE_URL": "http://127.0.0.1:1/q/d",
        "TO_UPLOAD_SQS_QUEUE_URL": "http://127.0.0.1:1/q/u",
        "EFS_MOUNT_DIR": str(tmp_path / "not-mounted"),
        "SCIHUB_USERNAME": "user",
        "SCIHUB_PASSWORD": "pw",
    }
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env).require_worker()
    assert "EFS_MOUNT_DIR" == caught.value.variable


def test_a_malformed_url_is_a_configuration_error_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """`run` with SCIHUB_URL=https://h:99999 exits 2 with one line naming the variable."""
    monkeypatch.setenv("SCIHUB_URL", "https://h:99999")
    assert 2 == main(["run"])


def test_a_fifo_queue_url_is_refused_with_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A FIFO download queue is refused at start: exit 2 and the reason."""
    monkeypatch.setenv("TO_DOWNLOAD_SQS_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/1/d.fifo")
    assert 2 == main(["run"])
    assert "TO_DOWNLOAD_SQS_QUEUE_URL: a FIFO queue" in capsys.readouterr().err


def test_a_queue_reporting_fifo_is_refused_naming_its_variable() -> None:
    """A queue whose FifoQueue attribute is true is refused even when its URL does not say so."""
    with pytest.raises(ConfigError) as caught:
        check_not_fifo(
            {"TO_DOWNLOAD_SQS_QUEUE_URL": FakeQueue(), "TO_UPLOAD_SQS_QUEUE_URL": FakeQueue(fifo=True)}
        )
    assert "TO_UPLOAD_SQS_QUEUE_URL" == caught.value.variable


def test_passwords_keep_their_whitespace() -> None:
    """A password's leading and trailing spaces are part of it."""
    settings = Settings.from_env(
        {"SCIHUB_USERNAME": "user", "SCIHUB_PASSWORD": " pw ", "PG_USER": "u", "PG_PASSWORD": " p "}
    )
    assert settings.hub_credentials is not None
    assert (" pw ", True) == (
        settings.hub_credentials.password,
        "password=' p '" in (settings.database_url or ""),
    )


def test_deferral_budget_and_download_hosts() -> None:
    """MAX_DEFER_SECONDS and COPERNICUS_DOWNLOAD_HOSTS have the documented defaults and are read."""
    default = Settings.from_env({})
    custom = Settings.from_env(
        {"MAX_DEFER_SECONDS": "3600", "COPERNICUS_DOWNLOAD_HOSTS": "A.example, b.example,"}
    )
    assert (172800.0, frozenset({"download.dataspace.copernicus.eu"})) == (
        default.max_defer_seconds,
        default.copernicus_download_hosts,
    )
    assert (3600.0, frozenset({"a.example", "b.example"})) == (
        custom.max_defer_seconds,
        custom.copernicus_download_hosts,
    )
