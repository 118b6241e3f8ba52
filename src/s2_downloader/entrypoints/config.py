"""Settings: docs/interface.md section 2, read from the environment once and validated."""

from __future__ import annotations

import ipaddress
import math
import os
import string
from collections.abc import Callable, Mapping
from typing import Literal, TypeVar

import attrs
import psycopg.conninfo

from s2_downloader.adapters.hub.urls import check_url
from s2_downloader.adapters.secret_values import secret_problem
from s2_downloader.domain.errors import BadRequest, S2DownloaderError

__all__ = [
    "DEFAULT_CONCURRENCY",
    "S3_KEY_TEMPLATE",
    "BucketUnusable",
    "ConfigError",
    "HubCredentials",
    "Settings",
    "s3_key",
]

_T = TypeVar("_T")

CDSE_CHECKSUM_URL = "https://catalogue.dataspace.copernicus.eu"
CDSE_ZIPPER_URL = "https://zipper.dataspace.copernicus.eu"
CDSE_IDENTITY_URL = "https://identity.dataspace.copernicus.eu/auth/realms/CDSE/protocol/openid-connect/token"
CDSE_DOWNLOAD_HOSTS = frozenset({"download.dataspace.copernicus.eu"})
#: The S3 store's default object key: HLS's own (``<root>.zip``).
S3_KEY_TEMPLATE = "{stem}.zip"
#: Downloads at once by default: CDSE allows 4 connections per account; DHuS mirrors more.
DEFAULT_CONCURRENCY: Mapping[str, int] = {"cdse": 4, "dhus": 15}
_KEY_FIELDS = frozenset({"id", "filename", "stem"})
#: The longest template accepted: its fields can add up to 256 + 255 bytes, and S3 keys end at 1024.
_MAX_TEMPLATE_BYTES = 500


class ConfigError(S2DownloaderError):
    """A missing or malformed setting; the message names the variable and what is wrong."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


class BucketUnusable(ConfigError):
    """UPLOAD_BUCKET names a bucket that does not exist or refuses us: a setting for ``run`` (exit 2),
    an outage of the store for the Lambda, whose operator is not at hand to fix it."""

    def __init__(self, problem: str) -> None:
        super().__init__("UPLOAD_BUCKET", problem)


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


def _credential_url(name: str, value: str) -> str:
    # Credentials (a password, a token) travel to these URLs: never in clear text, except
    # to this machine (the hub simulator, a tunnel).
    url = _url(name, value)
    scheme, host, _ = check_url(url)
    if scheme != "https" and not _loopback(host):
        raise ConfigError(name, "carries credentials, so it must be https (http only for a loopback host)")
    return url


def _loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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


def _store(name: str, value: str) -> Literal["efs", "s3"]:
    store = value.lower()
    if store == "efs":
        return "efs"
    if store == "s3":
        return "s3"
    raise ConfigError(name, f"expected 'efs' or 's3', got {value[:20]!r}")


def _key_template(name: str, value: str) -> str:
    """An S3 key template: placeholders {id}, {filename}, {stem} only, never an empty or absolute key."""
    try:
        pieces = list(string.Formatter().parse(value))
    except ValueError as exc:
        raise ConfigError(name, f"not a key template: {exc}") from None
    fields: set[str] = set()
    for literal, field, spec, conversion in pieces:
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in literal):
            raise ConfigError(name, "control characters in the key template")
        if field is None:
            continue
        if field not in _KEY_FIELDS or spec or conversion:
            shown = (
                "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            )
            raise ConfigError(
                name, f"unknown placeholder {shown[:40]!r}: use {{id}}, {{filename}} or {{stem}}"
            )
        fields.add(field)
    # Each placeholder is at least one character and never starts with "/" (the
    # id and filename rules of docs/interface.md): only the literal text can make a key
    # empty or absolute.
    if not fields:
        raise ConfigError(name, "no {id}, {filename} or {stem}: every granule would get the same key")
    if value.startswith("/"):
        raise ConfigError(name, "the key would start with '/'")
    if len(value.encode("utf-8")) > _MAX_TEMPLATE_BYTES:
        raise ConfigError(name, f"longer than {_MAX_TEMPLATE_BYTES} bytes")
    return value


def s3_key(template: str, granule_id: str, filename: str) -> str:
    """The object key of a granule: ``template`` with {id}, {filename} and {stem} filled in.

    ``stem`` is the filename without its last extension (``X.SAFE`` -> ``X``), as HLS names objects.
    """
    stem = filename.rsplit(".", 1)[0] if "." in filename else filename
    return template.format(id=granule_id, filename=filename, stem=stem or filename)


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


#: The most parts of one product in flight S3_PARTS_IN_FLIGHT may ask for (each is a part's worth of memory).
MAX_PARTS_IN_FLIGHT = 16


def _parts_in_flight(name: str, value: str) -> int:
    number = _number(int, 1)(name, value)
    if number > MAX_PARTS_IN_FLIGHT:
        raise ConfigError(
            name, f"expected at most {MAX_PARTS_IN_FLIGHT} (each is a part in memory), got {number}"
        )
    return number


@attrs.frozen(kw_only=True)
class Settings:
    """Everything the commands and the Lambda handler are configured with."""

    database_url: str | None = attrs.field(default=None, repr=False)
    db_secret_arn: str | None = None
    download_queue_url: str | None = None
    upload_queue_url: str | None = None
    efs_mount_dir: str | None = None
    #: ``None`` when STORE is unset and UPLOAD_BUCKET and EFS_MOUNT_DIR do not decide it.
    store: Literal["efs", "s3"] | None = None
    upload_bucket: str | None = None
    s3_key_template: str = S3_KEY_TEMPLATE
    #: Parts of one product uploading at once; ``None``: the entry point's default.
    s3_parts_in_flight: int | None = None
    hub_api: Literal["dhus", "cdse"] = "cdse"
    scihub_url: str | None = None
    hub_credentials: HubCredentials | None = None
    stage: str | None = None
    copernicus_token_parameter: str | None = None
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
            value = env.get(name) or None
            if value is not None and (problem := secret_problem(value)):
                raise ConfigError(name, problem)
            return value

        hub_api = (get("HUB_API") or "cdse").lower()
        if hub_api not in {"dhus", "cdse"}:
            raise ConfigError("HUB_API", f"expected 'dhus' or 'cdse', got {hub_api[:20]!r}")
        username, password = get("SCIHUB_USERNAME"), secret("SCIHUB_PASSWORD")
        if username and password is None:
            raise ConfigError("SCIHUB_PASSWORD", "missing while SCIHUB_USERNAME is set")
        efs_mount_dir, upload_bucket = get("EFS_MOUNT_DIR"), get("UPLOAD_BUCKET")
        store = parsed("STORE", _store, None)
        if store is None and (upload_bucket is None) != (efs_mount_dir is None):
            # HLS stacks have set UPLOAD_BUCKET since 2021: that alone means the S3 store.
            store = "s3" if upload_bucket is not None else "efs"
        return cls(
            database_url=_database_url(get, secret),
            db_secret_arn=get("DB_CONNECTION_SECRET_ARN"),
            download_queue_url=parsed("TO_DOWNLOAD_SQS_QUEUE_URL", _queue_url, None),
            upload_queue_url=parsed("TO_UPLOAD_SQS_QUEUE_URL", _queue_url, None),
            efs_mount_dir=efs_mount_dir,
            store=store,
            upload_bucket=upload_bucket,
            s3_key_template=parsed("S3_KEY_TEMPLATE", _key_template, S3_KEY_TEMPLATE),
            s3_parts_in_flight=parsed("S3_PARTS_IN_FLIGHT", _parts_in_flight, None),
            hub_api="cdse" if hub_api == "cdse" else "dhus",
            scihub_url=parsed("SCIHUB_URL", _credential_url, None),
            hub_credentials=HubCredentials(username=username, password=password or "") if username else None,
            stage=get("STAGE"),
            copernicus_token_parameter=parsed("COPERNICUS_TOKEN_PARAMETER", _parameter_name, None),
            copernicus_checksum_url=parsed("COPERNICUS_CHECKSUM_URL", _url, CDSE_CHECKSUM_URL),
            copernicus_zipper_url=parsed("COPERNICUS_ZIPPER_URL", _credential_url, CDSE_ZIPPER_URL),
            copernicus_identity_url=parsed("COPERNICUS_IDENTITY_URL", _credential_url, CDSE_IDENTITY_URL),
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

    @property
    def default_concurrency(self) -> int:
        """Downloads at once when ``run --concurrency`` is not given: 4 with CDSE, 15 with DHuS."""
        return DEFAULT_CONCURRENCY[self.hub_api]

    def s3_key(self, granule_id: str, filename: str) -> str:
        """The S3 store's object key for a granule (S3_KEY_TEMPLATE filled in)."""
        return s3_key(self.s3_key_template, granule_id, filename)

    def require_hub(self) -> None:
        """Fail with ConfigError unless the hub can be reached and authenticated with."""
        if self.hub_api == "dhus" and self.scihub_url is None:
            raise ConfigError("SCIHUB_URL", "required when HUB_API=dhus, but not set")
        token_parameter = self.hub_api == "cdse" and self.copernicus_token_parameter is not None
        if self.hub_credentials is None and self.stage is None and not token_parameter:
            names = "SCIHUB_USERNAME/SCIHUB_PASSWORD, STAGE"
            if self.hub_api == "cdse":
                names += " or COPERNICUS_TOKEN_PARAMETER"
            raise ConfigError("SCIHUB_USERNAME", f"no hub credentials ({names})")

    def require_store(self) -> None:
        """Fail with ConfigError unless one store is chosen and has what it needs."""
        if self.store is None:
            both = self.upload_bucket is not None and self.efs_mount_dir is not None
            raise ConfigError(
                "STORE",
                "set to 'efs' or 's3': "
                + (
                    "both UPLOAD_BUCKET and EFS_MOUNT_DIR are set"
                    if both
                    else "neither UPLOAD_BUCKET nor EFS_MOUNT_DIR is set"
                ),
            )
        if self.store == "s3":
            if self.upload_bucket is None:
                raise ConfigError("UPLOAD_BUCKET", "required with STORE=s3, but not set")
            return
        if self.efs_mount_dir is None:
            raise ConfigError("EFS_MOUNT_DIR", "required with STORE=efs, but not set")
        if self.upload_queue_url is None:
            raise ConfigError("TO_UPLOAD_SQS_QUEUE_URL", "required with STORE=efs, but not set")
        if not os.path.isdir(self.efs_mount_dir):
            raise ConfigError("EFS_MOUNT_DIR", f"{self.efs_mount_dir!r} is not a directory (is EFS mounted?)")

    def require_worker(self) -> None:
        """Fail with ConfigError unless everything ``run`` and the Lambda need is set.

        The Lambda fills in TO_DOWNLOAD_SQS_QUEUE_URL from its event before asking.
        """
        self.require_database()
        if self.download_queue_url is None:
            raise ConfigError(
                "TO_DOWNLOAD_SQS_QUEUE_URL", "required for run and the Lambda handler, but not set"
            )
        self.require_store()
        self.require_hub()


def _parameter_name(name: str, value: str) -> str:
    # An SSM parameter name or ARN: printable ASCII without spaces (SSM allows [a-zA-Z0-9_.\-/]).
    if len(value) > 2048 or not all(0x21 <= ord(c) < 0x7F for c in value):
        raise ConfigError(name, "expected an SSM parameter name")
    return value


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
