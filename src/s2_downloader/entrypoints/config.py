"""Settings: docs/interface.md section 2, read from the environment once and validated."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import Literal, TypeVar

import attrs
import psycopg.conninfo

from s2_downloader.adapters.urls import check_url
from s2_downloader.domain.errors import BadRequest, S2DownloaderError

__all__ = ["ConfigError", "HubCredentials", "Settings"]

_T = TypeVar("_T")

CDSE_CHECKSUM_URL = "https://catalogue.dataspace.copernicus.eu"
CDSE_ZIPPER_URL = "https://zipper.dataspace.copernicus.eu"
CDSE_IDENTITY_URL = "https://identity.dataspace.copernicus.eu/auth/realms/CDSE/protocol/openid-connect/token"
CDSE_DOWNLOAD_HOSTS = frozenset({"download.dataspace.copernicus.eu"})


class ConfigError(S2DownloaderError):
    """A missing or malformed setting; the message names the variable and what is wrong."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


@attrs.frozen(kw_only=True)
class HubCredentials:
    """A hub user name and password; the password never shows in a repr."""

    username: str
    password: str = attrs.field(repr=False)


def _url(name: str, value: str) -> str:
    # The same rules as a message's download_url: a port out of range, an unclosed IPv6
    # bracket or user info is refused here, naming the variable, not later with exit 1.
    try:
        check_url(value)
    except BadRequest as exc:
        raise ConfigError(name, f"expected an http(s) URL: {exc.reason}") from None
    return value.rstrip("/")


def _queue_url(name: str, value: str) -> str:
    url = _url(name, value)
    if url.lower().endswith(".fifo"):
        raise ConfigError(
            name,
            "a FIFO queue: retries and deferrals are re-sent with a per-message delay, "
            "which FIFO queues do not support; use a standard queue",
        )
    return url


def _hosts(name: str, value: str) -> frozenset[str]:
    hosts: set[str] = set()
    for item in value.split(","):
        host = item.strip().lower()
        if not host:
            continue
        try:
            origin = check_url(f"https://{host}/")
        except BadRequest:
            origin = None
        # A bare host name: no port, no path, no scheme (always reached over https).
        if origin is None or origin[1] != host or origin[2] != 443:
            raise ConfigError(name, f"expected comma-separated host names, got {item.strip()[:80]!r}")
        hosts.add(host)
    if not hosts:
        raise ConfigError(name, "no host name given")
    return frozenset(hosts)


def _number(kind: Callable[[str], _T], minimum: float) -> Callable[[str, str], _T]:
    def parse(name: str, value: str) -> _T:
        try:
            number = kind(value)
        except ValueError:
            raise ConfigError(name, f"expected a number >= {minimum:g}, got {value[:40]!r}") from None
        if not (isinstance(number, int | float) and math.isfinite(number) and number >= minimum):
            raise ConfigError(name, f"expected a number >= {minimum:g}, got {value[:40]!r}")
        return number

    return parse


@attrs.frozen(kw_only=True)
class Settings:
    """Everything the commands and the Lambda handler are configured with."""

    database_url: str | None = attrs.field(default=None, repr=False)
    db_secret_arn: str | None = None
    download_queue_url: str | None = None
    upload_queue_url: str | None = None
    efs_mount_dir: str | None = None
    hub_api: Literal["dhus", "cdse"] = "dhus"
    scihub_url: str = "https://scihub.copernicus.eu"
    hub_credentials: HubCredentials | None = None
    stage: str | None = None
    copernicus_checksum_url: str = CDSE_CHECKSUM_URL
    copernicus_zipper_url: str = CDSE_ZIPPER_URL
    copernicus_identity_url: str = CDSE_IDENTITY_URL
    copernicus_download_hosts: frozenset[str] = CDSE_DOWNLOAD_HOSTS
    max_download_retries: int = 10
    max_defer_seconds: float = 172800.0
    retry_delay_seconds: float = 60.0
    lease_seconds: float = 900.0
    http_connect_timeout: float = 10.0
    http_read_timeout: float = 60.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read docs/interface.md section 2 from ``env`` (the process environment by default)."""
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        def parsed(name: str, parse: Callable[[str, str], _T], default: _T) -> _T:
            value = get(name)
            return default if value is None else parse(name, value)

        def secret(name: str) -> str | None:
            # Whitespace may be part of a password: only an empty value counts as unset.
            return env.get(name) or None

        hub_api = (get("HUB_API") or "dhus").lower()
        if hub_api not in {"dhus", "cdse"}:
            raise ConfigError("HUB_API", f"expected 'dhus' or 'cdse', got {hub_api[:20]!r}")
        username, password = get("SCIHUB_USERNAME"), secret("SCIHUB_PASSWORD")
        if username and password is None:
            raise ConfigError("SCIHUB_PASSWORD", "missing while SCIHUB_USERNAME is set")
        return cls(
            database_url=_database_url(get, secret),
            db_secret_arn=get("DB_CONNECTION_SECRET_ARN"),
            download_queue_url=parsed("TO_DOWNLOAD_SQS_QUEUE_URL", _queue_url, None),
            upload_queue_url=parsed("TO_UPLOAD_SQS_QUEUE_URL", _queue_url, None),
            efs_mount_dir=get("EFS_MOUNT_DIR"),
            hub_api="cdse" if hub_api == "cdse" else "dhus",
            scihub_url=parsed("SCIHUB_URL", _url, "https://scihub.copernicus.eu"),
            hub_credentials=HubCredentials(username=username, password=password or "") if username else None,
            stage=get("STAGE"),
            copernicus_checksum_url=parsed("COPERNICUS_CHECKSUM_URL", _url, CDSE_CHECKSUM_URL),
            copernicus_zipper_url=parsed("COPERNICUS_ZIPPER_URL", _url, CDSE_ZIPPER_URL),
            copernicus_identity_url=parsed("COPERNICUS_IDENTITY_URL", _url, CDSE_IDENTITY_URL),
            copernicus_download_hosts=parsed("COPERNICUS_DOWNLOAD_HOSTS", _hosts, CDSE_DOWNLOAD_HOSTS),
            max_download_retries=parsed("MAX_DOWNLOAD_RETRIES", _number(int, 0), 10),
            max_defer_seconds=parsed("MAX_DEFER_SECONDS", _number(float, 0), 172800.0),
            retry_delay_seconds=parsed("RETRY_DELAY_SECONDS", _number(float, 0), 60.0),
            lease_seconds=parsed("LEASE_SECONDS", _number(float, 1), 900.0),
            http_connect_timeout=parsed("HTTP_CONNECT_TIMEOUT", _number(float, 0.001), 10.0),
            http_read_timeout=parsed("HTTP_READ_TIMEOUT", _number(float, 0.001), 60.0),
        )

    def require_database(self) -> None:
        """Fail with ConfigError unless some database source is configured."""
        if self.database_url is None and self.db_secret_arn is None:
            raise ConfigError(
                "DATABASE_URL", "no database configured (DATABASE_URL, PG_* or DB_CONNECTION_SECRET_ARN)"
            )

    def require_worker(self) -> None:
        """Fail with ConfigError unless everything ``run`` and the Lambda need is set."""
        self.require_database()
        for name, value in (
            ("TO_DOWNLOAD_SQS_QUEUE_URL", self.download_queue_url),
            ("TO_UPLOAD_SQS_QUEUE_URL", self.upload_queue_url),
            ("EFS_MOUNT_DIR", self.efs_mount_dir),
        ):
            if value is None:
                raise ConfigError(name, "required for run and the Lambda handler, but not set")
        if not os.path.isdir(self.efs_mount_dir or ""):
            raise ConfigError("EFS_MOUNT_DIR", f"{self.efs_mount_dir!r} is not a directory (is EFS mounted?)")
        if self.hub_credentials is None and self.stage is None:
            raise ConfigError(
                "SCIHUB_USERNAME", "no hub credentials (SCIHUB_USERNAME/SCIHUB_PASSWORD or STAGE)"
            )


def _database_url(get: Callable[[str], str | None], secret: Callable[[str], str | None]) -> str | None:
    url = get("DATABASE_URL")
    if url is not None:
        try:
            psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.Error:
            # libpq's message quotes the offending text, which may be the password.
            raise ConfigError("DATABASE_URL", "not a valid libpq URI or conninfo string") from None
        return url
    user, dbname = get("PG_USER"), get("PG_DB")
    if user is None and dbname is None and get("PG_HOST") is None:
        return None
    port = get("PG_PORT") or "5432"
    if not port.isdigit():
        raise ConfigError("PG_PORT", f"expected a port number, got {port[:20]!r}")
    # A conninfo string built from parts keeps odd characters in passwords intact.
    parts = {
        "host": get("PG_HOST") or "localhost",
        "port": port,
        "user": user,
        "password": secret("PG_PASSWORD"),
        "dbname": dbname,
    }
    return " ".join(f"{k}={_quote(v)}" for k, v in parts.items() if v is not None)


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"
