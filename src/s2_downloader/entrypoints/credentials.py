"""Credentials the composition root reads: the database connection and the hub user.

From the environment (``Settings``) when it has them, else from Secrets Manager as the
Lambda has them (``DB_CONNECTION_SECRET_ARN``, the stage's secret). A secret that cannot be
read, is not a JSON object, lacks a key, or holds a password with a control character is a
``ConfigError`` naming the variable; no value is ever part of a message.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import psycopg.conninfo
from botocore.exceptions import BotoCoreError, ClientError

from s2_downloader.adapters.secret_values import secret_problem
from s2_downloader.domain.errors import S2DownloaderError
from s2_downloader.entrypoints.config import ConfigError, HubCredentials, Settings

__all__ = ["SecretsUnavailable", "database_url", "hub_credentials"]


class SecretsUnavailable(S2DownloaderError):
    """Secrets Manager could not be reached or refused us for now: an outage, not bad configuration."""


#: Answers that say the configuration is wrong (no retry helps); any other error is an outage.
_CONFIGURATION_ERRORS = frozenset(
    {"ResourceNotFoundException", "InvalidParameterException", "ValidationException"}
)


def _secret(arn: str, variable: str) -> dict[str, Any]:
    try:
        value = boto3.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]
        document = json.loads(value)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _CONFIGURATION_ERRORS:
            raise ConfigError(variable, f"could not read secret {arn}: {code}") from None
        raise SecretsUnavailable(f"Secrets Manager: could not read secret {arn}: {code or 'error'}") from None
    except BotoCoreError as exc:
        raise SecretsUnavailable(
            f"Secrets Manager: could not read secret {arn}: {type(exc).__name__}"
        ) from None
    except (KeyError, ValueError) as exc:
        raise ConfigError(variable, f"could not read secret {arn}: {type(exc).__name__}") from None
    if not isinstance(document, dict):
        raise ConfigError(variable, f"secret {arn} is not a JSON object")
    return document


def _refuse_control_characters(doc: dict[str, Any], variable: str, where: str) -> None:
    """ConfigError naming the secret's password key, never its value, if it holds a control character."""
    password = doc.get("password")
    if isinstance(password, str) and (problem := secret_problem(password)):
        raise ConfigError(variable, f"the password of {where} {problem}")


def database_url(settings: Settings) -> str:
    """The libpq connection string: from the environment, or the Secrets Manager secret."""
    settings.require_database()
    if settings.database_url is not None:
        return settings.database_url
    doc = _secret(settings.db_secret_arn or "", "DB_CONNECTION_SECRET_ARN")
    _refuse_control_characters(doc, "DB_CONNECTION_SECRET_ARN", "the database secret")
    try:
        return psycopg.conninfo.make_conninfo(
            host=doc["host"],
            port=str(doc.get("port", 5432)),
            user=doc["username"],
            password=doc["password"],
            dbname=doc["dbname"],
        )
    except KeyError as exc:
        raise ConfigError("DB_CONNECTION_SECRET_ARN", f"secret lacks the key {exc}") from None


def hub_credentials(settings: Settings) -> HubCredentials:
    """The hub user: from SCIHUB_USERNAME/PASSWORD, or the stage's Secrets Manager secret.

    The secret is HLS's: ``hls-s2-downloader-serverless/<STAGE>/copernicus-credentials``
    with CDSE, ``.../scihub-credentials`` with DHuS.
    """
    if settings.hub_credentials is not None:
        return settings.hub_credentials
    if settings.stage is None:
        raise ConfigError("SCIHUB_USERNAME", "no hub credentials (SCIHUB_USERNAME/SCIHUB_PASSWORD or STAGE)")
    kind = "copernicus-credentials" if settings.hub_api == "cdse" else "scihub-credentials"
    doc = _secret(f"hls-s2-downloader-serverless/{settings.stage}/{kind}", "STAGE")
    _refuse_control_characters(doc, "STAGE", f"the {kind} secret")
    try:
        return HubCredentials(username=str(doc["username"]), password=str(doc["password"]))
    except KeyError as exc:
        raise ConfigError("STAGE", f"{kind} secret lacks the key {exc}") from None
