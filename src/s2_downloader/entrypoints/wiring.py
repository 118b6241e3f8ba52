"""The composition root: the one place that picks concrete adapters and builds them from Settings."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import socket
import time
import uuid
from typing import Any

import attrs
import boto3
import psycopg.conninfo
import urllib3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from psycopg_pool import ConnectionPool

from s2_downloader.adapters.efs import EfsFileStore
from s2_downloader.adapters.hub import CdseHub, CdseTokens, DhusHub
from s2_downloader.adapters.postgres import PostgresGranuleStore, open_pool
from s2_downloader.adapters.sqs import SqsQueue, SqsUploadQueue
from s2_downloader.domain import Ports, RetryPolicy
from s2_downloader.entrypoints.config import ConfigError, HubCredentials, Settings

__all__ = ["Container", "SystemClock", "build", "database_url", "open_database"]


@attrs.frozen
class SystemClock:
    """The real clocks."""

    def now(self) -> dt.datetime:
        """Timezone-aware UTC now."""
        return dt.datetime.now(dt.UTC)

    def monotonic(self) -> float:
        """``time.monotonic``."""
        return time.monotonic()


def _new_owner() -> str:
    # Unique per attempt so duplicates inside one process exclude each other too.
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def _secret(arn: str, variable: str) -> dict[str, Any]:
    try:
        value = boto3.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]
        document = json.loads(value)
    except (BotoCoreError, ClientError, KeyError, ValueError) as exc:
        raise ConfigError(variable, f"could not read secret {arn}: {type(exc).__name__}") from None
    if not isinstance(document, dict):
        raise ConfigError(variable, f"secret {arn} is not a JSON object")
    return document


def database_url(settings: Settings) -> str:
    """The libpq connection string: from the environment, or the Secrets Manager secret."""
    settings.require_database()
    if settings.database_url is not None:
        return settings.database_url
    doc = _secret(settings.db_secret_arn or "", "DB_CONNECTION_SECRET_ARN")
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
    """The hub user: from SCIHUB_USERNAME/PASSWORD, or the stage's Secrets Manager secret."""
    if settings.hub_credentials is not None:
        return settings.hub_credentials
    if settings.stage is None:
        raise ConfigError("SCIHUB_USERNAME", "no hub credentials (SCIHUB_USERNAME/SCIHUB_PASSWORD or STAGE)")
    doc = _secret(f"hls-s2-downloader-serverless/{settings.stage}/scihub-credentials", "STAGE")
    try:
        return HubCredentials(username=str(doc["username"]), password=str(doc["password"]))
    except KeyError as exc:
        raise ConfigError("STAGE", f"scihub-credentials secret lacks the key {exc}") from None


def open_database(settings: Settings, *, max_size: int = 4) -> ConnectionPool[Any]:
    """A checked connection pool on the configured database."""
    return open_pool(database_url(settings), max_size=max_size)


def _hub(settings: Settings, http: urllib3.PoolManager) -> DhusHub | CdseHub:
    credentials = hub_credentials(settings)
    connect, read = settings.http_connect_timeout, settings.http_read_timeout
    if settings.hub_api == "cdse":
        tokens = CdseTokens(
            pool=http,
            identity_url=settings.copernicus_identity_url,
            username=credentials.username,
            password=credentials.password,
            connect_timeout=connect,
            read_timeout=read,
        )
        return CdseHub(
            pool=http,
            tokens=tokens,
            checksum_url=settings.copernicus_checksum_url,
            zipper_url=settings.copernicus_zipper_url,
            connect_timeout=connect,
            read_timeout=read,
        )
    return DhusHub(
        pool=http,
        base_url=settings.scihub_url,
        username=credentials.username,
        password=credentials.password,
        connect_timeout=connect,
        read_timeout=read,
    )


@attrs.define
class Container:
    """Every adapter of a worker process, built once and reused (Lambda: per execution environment)."""

    settings: Settings
    db_pool: ConnectionPool[Any] = attrs.field(repr=False)
    http: urllib3.PoolManager = attrs.field(repr=False)
    granules: PostgresGranuleStore
    hub: DhusHub | CdseHub
    files: EfsFileStore
    download_queue: SqsQueue
    uploads: SqsUploadQueue
    ports: Ports

    @property
    def allowed_origins(self) -> frozenset[tuple[str, str, int]]:
        """Origins a message's download_url may name."""
        return self.hub.allowed_origins

    def close(self) -> None:
        """Close the pools."""
        self.db_pool.close()
        self.http.clear()


def build(settings: Settings, *, concurrency: int = 15) -> Container:
    """Build the worker's adapters from ``settings``; raises ConfigError for what is missing."""
    settings.require_worker()
    download_url, upload_url = settings.download_queue_url or "", settings.upload_queue_url or ""
    # Pools sized for the concurrency so no download waits for a connection.
    http = urllib3.PoolManager(num_pools=4, maxsize=concurrency + 2)
    hub = _hub(settings, http)
    db_pool = open_database(settings, max_size=concurrency + 2)
    # SQS long polls last up to 20 s: the read timeout must outlast one.
    sqs_config = Config(
        max_pool_connections=concurrency + 5,
        connect_timeout=5,
        read_timeout=30,
        retries={"max_attempts": 4, "mode": "standard"},
    )
    sqs = boto3.session.Session().client("sqs", config=sqs_config)
    granules = PostgresGranuleStore(pool=db_pool)
    files = EfsFileStore(mount=settings.efs_mount_dir or "")
    download_queue = SqsQueue(client=sqs, url=download_url)
    uploads = SqsUploadQueue(queue=SqsQueue(client=sqs, url=upload_url))
    ports = Ports(
        granules=granules,
        hub=hub,
        files=files,
        uploads=uploads,
        clock=SystemClock(),
        policy=RetryPolicy(
            max_retries=settings.max_download_retries,
            base_delay=settings.retry_delay_seconds,
            random=random.SystemRandom().random,
        ),
        new_owner=_new_owner,
        lease_seconds=settings.lease_seconds,
    )
    return Container(
        settings=settings,
        db_pool=db_pool,
        http=http,
        granules=granules,
        hub=hub,
        files=files,
        download_queue=download_queue,
        uploads=uploads,
        ports=ports,
    )
