"""Secrets Manager as the Lambda uses it: the database secret and the stage's hub credentials, over moto."""

from __future__ import annotations

import json

import boto3
import pytest

from s2_downloader.entrypoints.config import ConfigError, Settings
from s2_downloader.entrypoints.credentials import database_url, hub_credentials
from s2_downloader.testing.stack import Services


@pytest.fixture
def secrets_env(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """boto3 in this process reaches moto server, which also speaks Secrets Manager."""
    for key, value in services.sqs.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_SQS")


def _put(name: str, value: object) -> str:
    client = boto3.client("secretsmanager")
    return client.create_secret(Name=name, SecretString=json.dumps(value))["ARN"]


@pytest.mark.usefixtures("secrets_env")
def test_database_url_from_the_connection_secret() -> None:
    """DB_CONNECTION_SECRET_ARN gives a conninfo with every part of the secret."""
    arn = _put(
        "db-secret-1",
        {"username": "hls", "password": "p@ss w'rd", "host": "db.internal", "dbname": "granules"},
    )
    url = database_url(Settings.from_env({"DB_CONNECTION_SECRET_ARN": arn}))
    assert "host=db.internal port=5432 user=hls password='p@ss w\\'rd' dbname=granules" == url


@pytest.mark.usefixtures("secrets_env")
def test_hub_credentials_from_the_stage_secret() -> None:
    """STAGE with HUB_API=dhus reads hls-s2-downloader-serverless/<STAGE>/scihub-credentials."""
    _put("hls-s2-downloader-serverless/test-stage/scihub-credentials", {"username": "esa", "password": "pw"})
    credentials = hub_credentials(Settings.from_env({"STAGE": "test-stage", "HUB_API": "dhus"}))
    assert ("esa", "pw") == (credentials.username, credentials.password)


@pytest.mark.usefixtures("secrets_env")
def test_a_missing_secret_names_the_variable_without_secrets() -> None:
    """An unreadable secret is a ConfigError naming the variable."""
    with pytest.raises(ConfigError) as caught:
        database_url(
            Settings.from_env({"DB_CONNECTION_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:1:secret:nope"})
        )
    assert "DB_CONNECTION_SECRET_ARN" == caught.value.variable


@pytest.mark.usefixtures("secrets_env")
@pytest.mark.parametrize("bad", ["\n", "\r", "\x00"])
def test_a_secret_password_with_a_control_character_is_refused_unshown(bad: str) -> None:
    """A newline written into the database or hub secret: ConfigError naming the variable, not the value."""
    db = _put(
        f"db-secret-cc-{ord(bad)}",
        {"username": "u", "password": f"SECRETPW{bad}", "host": "h", "dbname": "d"},
    )
    with pytest.raises(ConfigError) as caught:
        database_url(Settings.from_env({"DB_CONNECTION_SECRET_ARN": db}))
    assert "DB_CONNECTION_SECRET_ARN" == caught.value.variable
    assert "control character" in str(caught.value)
    assert "SECRETPW" not in str(caught.value)

    _put(
        f"hls-s2-downloader-serverless/cc{ord(bad)}/scihub-credentials",
        {"username": "u", "password": f"SECRETPW{bad}"},
    )
    with pytest.raises(ConfigError) as caught:
        hub_credentials(Settings.from_env({"STAGE": f"cc{ord(bad)}", "HUB_API": "dhus"}))
    assert "STAGE" == caught.value.variable
    assert "SECRETPW" not in str(caught.value)
