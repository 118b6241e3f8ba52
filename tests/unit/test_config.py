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
    expected = ("cdse", None, 4, None, "{stem}.zip", 10, 60.0, 900.0, 10.0, 60.0)
    actual = (
        settings.hub_api,
        settings.scihub_url,
        settings.default_concurrency,
        settings.store,
        settings.s3_key_template,
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
        ("STORE", "disk"),
        ("S3_KEY_TEMPLATE", "/{stem}.zip"),
        ("S3_KEY_TEMPLATE", "granule.zip"),
        ("S3_KEY_TEMPLATE", "{name}.zip"),
        ("S3_KEY_TEMPLATE", "{}.zip"),
        ("S3_KEY_TEMPLATE", "{id!r}.zip"),
        ("S3_KEY_TEMPLATE", "{stem:>9}.zip"),
        ("S3_KEY_TEMPLATE", "{id[0]}/{stem}"),
        ("S3_KEY_TEMPLATE", "{stem"),
        ("S3_KEY_TEMPLATE", "a\x01/{id}"),
        ("COPERNICUS_TOKEN_PARAMETER", "my token"),
        ("S3_PARTS_IN_FLIGHT", "0"),
        ("S3_PARTS_IN_FLIGHT", "17"),
        ("S3_PARTS_IN_FLIGHT", "two"),
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
    """run and the Lambda with the EFS store refuse to start without each required variable, naming it."""
    env = {
        "STORE": "efs",
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


_WORKER = {
    "DATABASE_URL": "postgresql://u@h/db",
    "TO_DOWNLOAD_SQS_QUEUE_URL": "http://127.0.0.1:1/q/d",
    "SCIHUB_USERNAME": "user",
    "SCIHUB_PASSWORD": "pw",
}


@pytest.mark.parametrize(
    ("env", "store"),
    [
        ({"UPLOAD_BUCKET": "hls-bucket"}, "s3"),
        ({"EFS_MOUNT_DIR": "/mnt/efs"}, "efs"),
        ({"UPLOAD_BUCKET": "b", "EFS_MOUNT_DIR": "/mnt/efs", "STORE": "EFS"}, "efs"),
        ({"UPLOAD_BUCKET": "b", "EFS_MOUNT_DIR": "/mnt/efs", "STORE": "s3"}, "s3"),
        ({"UPLOAD_BUCKET": "b", "EFS_MOUNT_DIR": "/mnt/efs"}, None),
        ({}, None),
    ],
)
def test_the_store_follows_store_or_the_one_variable_set(env: dict[str, str], store: str | None) -> None:
    """STORE wins; unset, UPLOAD_BUCKET alone means s3 and EFS_MOUNT_DIR alone efs; else undecided."""
    assert store == Settings.from_env(env).store


@pytest.mark.parametrize("env", [{"UPLOAD_BUCKET": "b", "EFS_MOUNT_DIR": "/mnt/efs"}, {}])
def test_an_undecided_store_stops_the_worker_naming_store(env: dict[str, str]) -> None:
    """Both or neither of UPLOAD_BUCKET and EFS_MOUNT_DIR, and no STORE: the worker stops naming STORE."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(_WORKER | env).require_worker()
    assert "STORE" == caught.value.variable


def test_the_s3_store_needs_its_bucket_but_no_upload_queue() -> None:
    """STORE=s3 requires UPLOAD_BUCKET; TO_UPLOAD_SQS_QUEUE_URL is optional there (HLS has no uploader)."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(_WORKER | {"STORE": "s3"}).require_worker()
    Settings.from_env(_WORKER | {"UPLOAD_BUCKET": "hls-bucket"}).require_worker()
    assert "UPLOAD_BUCKET" == caught.value.variable


@pytest.mark.parametrize(
    ("template", "key"),
    [
        ("{stem}.zip", "S2A_MSIL1C_T28PHQ.zip"),
        ("{id}/{filename}", "f867a59a/S2A_MSIL1C_T28PHQ.SAFE"),
        ("l1c/{{raw}}/{stem}", "l1c/{raw}/S2A_MSIL1C_T28PHQ"),
    ],
)
def test_the_s3_key_fills_in_the_template(template: str, key: str) -> None:
    """{id}, {filename} and {stem} (the filename without its last extension) make the object key."""
    settings = Settings.from_env({"S3_KEY_TEMPLATE": template})
    assert key == settings.s3_key("f867a59a", "S2A_MSIL1C_T28PHQ.SAFE")


def test_dhus_needs_scihub_url() -> None:
    """SCIHUB_URL has no default: HUB_API=dhus without it stops the worker naming SCIHUB_URL."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(
            _WORKER
            | {"EFS_MOUNT_DIR": "/", "TO_UPLOAD_SQS_QUEUE_URL": "http://127.0.0.1:1/q/u", "HUB_API": "dhus"}
        ).require_worker()
    assert "SCIHUB_URL" == caught.value.variable


def test_the_default_concurrency_follows_the_hub() -> None:
    """4 downloads at once with CDSE (its per-account limit), 15 with DHuS."""
    cdse, dhus = Settings.from_env({}), Settings.from_env({"HUB_API": "dhus"})
    assert (4, 15) == (cdse.default_concurrency, dhus.default_concurrency)


def test_cdse_credentials_may_be_a_token_parameter_alone() -> None:
    """COPERNICUS_TOKEN_PARAMETER stands for credentials with CDSE; with neither, SCIHUB_USERNAME is named."""
    base = {k: v for k, v in _WORKER.items() if not k.startswith("SCIHUB_")} | {"UPLOAD_BUCKET": "b"}
    Settings.from_env(base | {"COPERNICUS_TOKEN_PARAMETER": "/hls/token"}).require_hub()
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(base).require_hub()
    assert "SCIHUB_USERNAME" == caught.value.variable


def test_parts_in_flight_is_the_entry_points_to_choose_unless_set() -> None:
    """Unset: ``None`` (the runner's 2, the Lambda's 4 are the entry points'); set: the number."""
    assert (None, 3) == (
        Settings.from_env({}).s3_parts_in_flight,
        Settings.from_env({"S3_PARTS_IN_FLIGHT": "3"}).s3_parts_in_flight,
    )
