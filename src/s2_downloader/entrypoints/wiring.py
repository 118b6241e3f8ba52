"""The composition root: the one place that picks concrete adapters and builds them from Settings."""

from __future__ import annotations

import datetime as dt
import os
import random
import socket
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import boto3
import urllib3
from botocore.config import Config
from psycopg_pool import ConnectionPool

from s2_downloader.adapters.granule_queries import GranuleQueries
from s2_downloader.adapters.hub import CdseHub, CdseTokens, DhusHub, TokenSource
from s2_downloader.adapters.hub.ssm_tokens import SsmTokens, hls_token_parameter
from s2_downloader.adapters.metrics import EmfMetrics, Metrics, NullMetrics
from s2_downloader.adapters.postgres import (
    PostgresGranuleStore,
    PostgresKeyLeases,
    PostgresUploadLedger,
    open_pool,
)
from s2_downloader.adapters.postgres.schema_check import check_schema
from s2_downloader.adapters.sqs import SqsQueue, SqsUploadQueue
from s2_downloader.adapters.ssm import SsmParameter, ssm_client
from s2_downloader.adapters.store.efs import EfsFileStore
from s2_downloader.adapters.store.s3 import DEFAULT_PARTS_IN_FLIGHT, S3Store
from s2_downloader.domain import AttemptContext, RetryPolicy
from s2_downloader.domain.errors import FileStoreError, StoreUnavailable
from s2_downloader.domain.ports import Store
from s2_downloader.entrypoints.config import BucketUnusable, ConfigError, Settings
from s2_downloader.entrypoints.credentials import database_url, hub_credentials

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs.client import SQSClient

__all__ = [
    "LAMBDA_STOP_MARGIN_SECONDS",
    "Container",
    "NoUploads",
    "RequeueContainer",
    "SystemClock",
    "build",
    "build_hub",
    "build_requeue",
    "build_store",
    "cdse_token_source",
    "check_not_fifo",
    "emf_metrics",
    "lambda_download_queue",
    "open_checked_database",
    "open_database",
    "store_for_status",
]

#: How long a caller waits for a pooled database connection (``open_pool``'s ``timeout``).
DB_POOL_TIMEOUT_SECONDS = 10.0
#: The ``statement_timeout`` that ``adapters.postgres.open_pool`` sets on every connection.
DB_STATEMENT_TIMEOUT_SECONDS = 60.0

#: SQS client for the runner: long polls last up to 20 s, so the read timeout outlasts one.
_RUNNER_SQS = {"connect_timeout": 5, "read_timeout": 30, "max_attempts": 4}
#: SQS client for the Lambda, which never long-polls: every call must end well inside the
#: stop margin below.
_LAMBDA_SQS = {"connect_timeout": 3, "read_timeout": 10, "max_attempts": 2}
#: botocore's standard retry mode sleeps at most this long before its second attempt.
_SQS_RETRY_PAUSE_SECONDS = 2.0


def _sqs_step_seconds(config: dict[str, int]) -> float:
    attempts = config["max_attempts"]
    per_attempt = config["connect_timeout"] + config["read_timeout"]
    return attempts * per_attempt + (attempts - 1) * _SQS_RETRY_PAUSE_SECONDS


#: What the Lambda keeps back from its remaining time. Hub calls are bounded by the
#: deadline (remaining time less this margin), but three steps that may follow the stop
#: are not: one database statement (waiting for a connection, then up to the statement
#: timeout: a heartbeat in progress or the release of the lease), re-adding the record
#: being worked on, and re-adding the records not yet started (one batched call). With
#: the values above: 70 + 2 x 28 + 4 = 130 s. A function timeout shorter than this
#: hands every record back untried.
LAMBDA_STOP_MARGIN_SECONDS = (
    DB_POOL_TIMEOUT_SECONDS + DB_STATEMENT_TIMEOUT_SECONDS + 2 * _sqs_step_seconds(_LAMBDA_SQS) + 4.0
)


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


def open_database(settings: Settings, *, max_size: int = 4) -> ConnectionPool[Any]:
    """A checked connection pool on the configured database."""
    return open_pool(database_url(settings), max_size=max_size, timeout=DB_POOL_TIMEOUT_SECONDS)


def open_checked_database(settings: Settings, *, max_size: int = 4) -> ConnectionPool[Any]:
    """``open_database``, then the start-up schema check: ``SchemaOutdated`` names what ``migrate`` adds.

    Every worker and operator command starts here, so nothing is received from a queue or
    changed in the table by code newer than the schema.
    """
    pool = open_database(settings, max_size=max_size)
    try:
        check_schema(pool)
    except BaseException:
        pool.close()
        raise
    return pool


def _token_parameter(settings: Settings) -> SsmParameter | None:
    """The SSM parameter holding CDSE's access token, when that is where the token comes from.

    COPERNICUS_TOKEN_PARAMETER names it; otherwise, with STAGE and no credentials set, it
    is HLS's token rotator's parameter if that exists (else the stage's credentials are used).
    """
    if settings.copernicus_token_parameter is not None:
        return SsmParameter(client=ssm_client(), name=settings.copernicus_token_parameter)
    if settings.hub_credentials is not None or settings.stage is None:
        return None
    parameter = SsmParameter(client=ssm_client(), name=hls_token_parameter(settings.stage))
    # SSM failing to answer (``SsmError``) is not a setting to fix but an outage of the
    # token's component: raised as it is, for the entry point to retry and report.
    return parameter if parameter.exists() else None


def cdse_token_source(settings: Settings, http: urllib3.PoolManager) -> TokenSource:
    """The CDSE token source: an SSM parameter (``SsmTokens``) or our own grants (``CdseTokens``)."""
    parameter = _token_parameter(settings)
    if parameter is not None:
        return SsmTokens(parameter=parameter, identity_url=settings.copernicus_identity_url)
    credentials = hub_credentials(settings)
    return CdseTokens(
        pool=http,
        identity_url=settings.copernicus_identity_url,
        username=credentials.username,
        password=credentials.password,
        connect_timeout=settings.http_connect_timeout,
        read_timeout=settings.http_read_timeout,
    )


def build_hub(settings: Settings, http: urllib3.PoolManager) -> DhusHub | CdseHub:
    """The configured hub adapter on ``http`` (for commands that need the hub without the rest)."""
    settings.require_hub()
    connect, read = settings.http_connect_timeout, settings.http_read_timeout
    if settings.hub_api == "cdse":
        return CdseHub(
            pool=http,
            tokens=cdse_token_source(settings, http),
            checksum_url=settings.copernicus_checksum_url,
            zipper_url=settings.copernicus_zipper_url,
            download_hosts=settings.copernicus_download_hosts,
            connect_timeout=connect,
            read_timeout=read,
        )
    credentials = hub_credentials(settings)
    return DhusHub(
        pool=http,
        base_url=settings.scihub_url or "",
        username=credentials.username,
        password=credentials.password,
        connect_timeout=connect,
        read_timeout=read,
    )


def _sqs_client(concurrency: int, *, long_poll: bool) -> SQSClient:
    timeouts = _RUNNER_SQS if long_poll else _LAMBDA_SQS
    config = Config(
        max_pool_connections=concurrency + 5,
        connect_timeout=timeouts["connect_timeout"],
        read_timeout=timeouts["read_timeout"],
        retries={"max_attempts": timeouts["max_attempts"], "mode": "standard"},
    )
    return boto3.session.Session().client("sqs", config=config)


def lambda_download_queue(settings: Settings) -> SqsQueue:
    """The download queue with the Lambda's short-call client, built without the rest.

    For handing a batch back when the rest cannot be built (an outage at cold start): it
    needs no network to build.
    """
    return SqsQueue(client=_sqs_client(1, long_poll=False), url=settings.download_queue_url or "")


def _s3_client(concurrency: int, parts_in_flight: int) -> S3Client:
    config = Config(
        # Each download's parts in flight, and its other calls (ledger checks, completion).
        max_pool_connections=concurrency * (parts_in_flight + 1) + 4,
        connect_timeout=10,
        read_timeout=60,
        retries={"max_attempts": 3, "mode": "standard"},
        # Each part carries its Content-MD5 and the whole product is checked against the
        # hub's MD5; botocore's default CRC32 would hash every byte a third time.
        request_checksum_calculation="when_required",
    )
    return boto3.session.Session().client("s3", config=config)


def _chosen_store(
    settings: Settings, db_pool: ConnectionPool[Any], *, concurrency: int, s3: S3Client | None, check: bool
) -> Store | None:
    """The one place that picks the store's adapter: the one ``STORE`` names, if its place is set."""
    if settings.store == "s3" and settings.upload_bucket:
        parts_in_flight = settings.s3_parts_in_flight or DEFAULT_PARTS_IN_FLIGHT
        store = S3Store(
            client=_s3_client(concurrency, parts_in_flight) if s3 is None else s3,
            parts_in_flight=parts_in_flight,
            bucket=settings.upload_bucket,
            ledger=PostgresUploadLedger(db_pool),
            object_key=lambda key: settings.s3_key(key.granule_id, key.filename),
            key_leases=PostgresKeyLeases(db_pool),
        )
        if check:
            # The health check: a bucket that is missing or refuses us is a setting to fix
            # (exit 2 naming UPLOAD_BUCKET); S3 unreachable or throttling is an outage,
            # raised as it is (StoreUnavailable) for the entry point to report.
            try:
                store.check_health()
            except StoreUnavailable:
                raise
            except FileStoreError as exc:
                raise BucketUnusable(str(exc)) from None
        return store
    if settings.store == "efs" and settings.efs_mount_dir:
        return EfsFileStore(mount=settings.efs_mount_dir)
    return None


def build_store(
    settings: Settings, db_pool: ConnectionPool[Any], *, concurrency: int = 1, s3: S3Client | None = None
) -> Store:
    """A worker's store: the one ``STORE`` names, checked to answer before any message is taken.

    The EFS mount, or the bucket (its upload ledger on the granule row, its bucket checked).
    Raises ``ConfigError`` for what the store lacks. ``s3``: the S3 client (default: boto3's,
    with the timeouts above).
    """
    settings.require_store()
    store = _chosen_store(settings, db_pool, concurrency=concurrency, s3=s3, check=True)
    if store is None:
        msg = "unreachable: require_store holds the place of the store STORE names"
        raise AssertionError(msg)
    return store


def store_for_status(settings: Settings, db_pool: ConnectionPool[Any]) -> Store | None:
    """The store ``status`` reports on, built as a worker's but unchecked.

    ``None`` when ``STORE`` names no store whose place is set: ``status`` then reports the
    database alone, as it does when the store cannot be reached.
    """
    return _chosen_store(settings, db_pool, concurrency=1, s3=None, check=False)


def emf_metrics(settings: Settings) -> EmfMetrics:
    """CloudWatch metrics as EMF records on stdout, with the hub as their dimension."""
    return EmfMetrics(sys.stdout, hub=settings.hub_api)


@attrs.frozen
class NoUploads:
    """The upload port where TO_UPLOAD_SQS_QUEUE_URL is unset (the S3 store, as HLS runs today)."""

    def send_upload(self, granule_id: str, filename: str) -> None:
        """Nothing: no uploader is listening."""
        del granule_id, filename


@attrs.define
class Container:
    """Every adapter of a worker process, built once and reused (Lambda: per execution environment)."""

    settings: Settings
    db_pool: ConnectionPool[Any] = attrs.field(repr=False)
    http: urllib3.PoolManager = attrs.field(repr=False)
    granules: PostgresGranuleStore
    hub: DhusHub | CdseHub
    files: Store
    download_queue: SqsQueue
    uploads: SqsUploadQueue | NoUploads
    context: AttemptContext
    metrics: Metrics = attrs.field(factory=NullMetrics)

    @property
    def check_download_url(self) -> Callable[[str], None]:
        """The hub's rule for a message's download_url: raises ``BadRequest`` unless it is acceptable."""
        return self.hub.accepts_download_url

    @property
    def queues(self) -> dict[str, SqsQueue]:
        """The queues by the variable that names them."""
        queues = {"TO_DOWNLOAD_SQS_QUEUE_URL": self.download_queue}
        if isinstance(self.uploads, SqsUploadQueue):
            queues["TO_UPLOAD_SQS_QUEUE_URL"] = self.uploads.queue
        return queues

    def close(self) -> None:
        """Close the pools."""
        self.db_pool.close()
        self.http.clear()


class _Queue(Protocol):
    @property
    def name(self) -> str: ...

    def is_fifo(self) -> bool: ...


def check_not_fifo(queues: Mapping[str, _Queue]) -> None:
    """Raise ConfigError naming the variable of the first FIFO queue: per-message delays do not work there."""
    for variable, queue in queues.items():
        if queue.is_fifo():
            raise ConfigError(
                variable,
                f"{queue.name} is a FIFO queue: retries and deferrals are re-sent with a "
                "per-message delay, which FIFO queues do not support; use a standard queue",
            )


def build(
    settings: Settings,
    *,
    concurrency: int | None = None,
    long_poll: bool = True,
    metrics: Metrics | None = None,
    sqs: SQSClient | None = None,
    s3: S3Client | None = None,
) -> Container:
    """Build the worker's adapters from ``settings``; raises ConfigError for what is missing.

    ``concurrency``: downloads at once (default: ``settings.default_concurrency``).
    ``long_poll``: the runner's SQS client (long polls); False for the Lambda's, whose
    every call is short (``LAMBDA_STOP_MARGIN_SECONDS`` counts on it). ``metrics``: where
    events are counted (default: nowhere). ``sqs``: the SQS client for both queues, as
    given (default: boto3's from the process's AWS configuration, with the timeouts above);
    the demo passes its local endpoint's, so nothing has to change the process environment.
    ``s3``: the S3 client of the S3 store, likewise.
    """
    settings.require_worker()
    concurrency = settings.default_concurrency if concurrency is None else concurrency
    download_url = settings.download_queue_url or ""
    # Pools sized for the concurrency so no download waits for a connection.
    http = urllib3.PoolManager(num_pools=4, maxsize=concurrency + 2)
    hub = build_hub(settings, http)
    db_pool = open_checked_database(settings, max_size=concurrency + 2)
    sqs = _sqs_client(concurrency, long_poll=long_poll) if sqs is None else sqs
    granules = PostgresGranuleStore(pool=db_pool, max_retries=settings.max_download_retries)
    files = build_store(settings, db_pool, concurrency=concurrency, s3=s3)
    download_queue = SqsQueue(client=sqs, url=download_url)
    uploads: SqsUploadQueue | NoUploads = (
        NoUploads()
        if settings.upload_queue_url is None
        else SqsUploadQueue(queue=SqsQueue(client=sqs, url=settings.upload_queue_url))
    )
    context = AttemptContext(
        granules=granules,
        hub=hub,
        files=files,
        uploads=uploads,
        clock=SystemClock(),
        policy=RetryPolicy(
            max_retries=settings.max_download_retries,
            base_delay=settings.retry_delay_seconds,
            max_defer_seconds=settings.max_defer_seconds,
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
        context=context,
        metrics=NullMetrics() if metrics is None else metrics,
    )


# -- the requeuer's Lambda handler ---------------------------------------------------------------


@attrs.define
class RequeueContainer:
    """What the requeuer's handler uses, built once per execution environment."""

    queue_url: str
    db_pool: ConnectionPool[Any] = attrs.field(repr=False)
    queries: GranuleQueries
    queue: SqsQueue

    def close(self) -> None:
        """Close the pool."""
        self.db_pool.close()


def build_requeue(settings: Settings) -> RequeueContainer:
    """The requeuer's adapters: granule queries on one connection, the download queue (Lambda timeouts)."""
    settings.require_database()
    queue_url = settings.download_queue_url
    if queue_url is None:
        raise ConfigError("TO_DOWNLOAD_SQS_QUEUE_URL", "required for the requeuer, but not set")
    pool = open_checked_database(settings, max_size=1)
    return RequeueContainer(
        queue_url=queue_url,
        db_pool=pool,
        queries=GranuleQueries(pool),
        queue=SqsQueue(client=_sqs_client(1, long_poll=False), url=queue_url),
    )
