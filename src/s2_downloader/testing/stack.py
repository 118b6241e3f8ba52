"""The throwaway stack: PostgreSQL, moto's server (SQS and S3), SeaweedFS (a real S3), the hub simulator.

``Services`` are the long-lived servers (one per test session, or per demo). A
``Pipeline`` is one isolated deployment on them: its own database, queues, bucket and
mount directory, with the environment a runner needs for the store it is given
(``store="efs"``, the default, or ``"s3"``, on moto's S3 or on SeaweedFS: ``s3_server``).
Shared by the integration tests, the benchmarks and ``s2-downloader demo``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

import attrs
import psycopg
import psycopg.rows

from s2_downloader.adapters.postgres import migrate
from s2_downloader.entrypoints.config import S3_KEY_TEMPLATE, s3_key
from s2_downloader.testing.hubsim import Fault, HubSimulator, SimProduct
from s2_downloader.testing.postgres import SeedGranule, ThrowawayPostgres, seed_granules
from s2_downloader.testing.s3 import ThrowawayS3, create_bucket
from s2_downloader.testing.seaweed import ThrowawaySeaweed
from s2_downloader.testing.sqs import QueueSet

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

__all__ = ["Pipeline", "S3Server", "Services", "StoredObject"]

Store = Literal["efs", "s3"]
#: Which server holds a pipeline's bucket: moto (lenient, beside SQS) or SeaweedFS (S3's strictness).
S3Server = Literal["moto", "seaweedfs"]


@attrs.define
class Services:
    """PostgreSQL, moto's server (SQS and S3) and the hub simulator, all on 127.0.0.1; a context manager."""

    hub_rate_limit: float | None = None
    hub_username: str = "sim-user"
    hub_password: str = attrs.field(factory=lambda: secrets.token_urlsafe(12), repr=False)
    postgres: ThrowawayPostgres = attrs.field(init=False, factory=ThrowawayPostgres)
    #: One moto server for both: ``sqs`` (its SQS clients, queues) and ``s3`` (the same server).
    sqs: ThrowawayS3 = attrs.field(init=False, factory=ThrowawayS3)
    hub: HubSimulator = attrs.field(init=False)
    #: Started on first use (``seaweed()``): about 4 s that only S3 tests on it pay.
    _seaweed: ThrowawaySeaweed | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        # CDSE's catalogue (and identity service) and its zipper on distinct origins, as in
        # production: messages name the catalogue, products come from the zipper.
        self.hub = HubSimulator(
            username=self.hub_username,
            password=self.hub_password,
            rate_limit=self.hub_rate_limit,
            split_origins=True,
        )

    def start(self) -> Self:
        """Start every server (each within its own bounded wait)."""
        try:
            self.postgres.start()
            self.sqs.start()
            self.hub.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop everything started; safe to call twice."""
        seaweed, self._seaweed = self._seaweed, None
        stops = [self.hub.stop, self.sqs.stop, self.postgres.close] + ([seaweed.stop] if seaweed else [])
        for stop in stops:
            with contextlib.suppress(Exception):
                stop()

    @property
    def s3(self) -> ThrowawayS3:
        """moto's server, for its S3 side (the same process as ``sqs``)."""
        return self.sqs

    def seaweed(self) -> ThrowawaySeaweed:
        """SeaweedFS, a real S3 server, started on first use and stopped with the rest."""
        if self._seaweed is None:
            self._seaweed = ThrowawaySeaweed().start()
        return self._seaweed

    def s3_server(self, which: S3Server) -> ThrowawayS3 | ThrowawaySeaweed:
        """The S3 server ``which`` names (moto's is the SQS server)."""
        return self.s3 if which == "moto" else self.seaweed()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def pipeline(
        self,
        *,
        hub_api: Literal["dhus", "cdse"] = "dhus",
        store: Store = "efs",
        s3_server: S3Server = "moto",
        upload_queue: bool | None = None,
        efs_dir: Path | None = None,
        visibility_timeout: int = 30,
        max_receive_count: int = 3,
    ) -> Pipeline:
        """A fresh, migrated database, a fresh set of queues, an empty bucket and an empty mount directory.

        ``store``: which store ``Pipeline.env`` configures (``"efs"`` or ``"s3"``).
        ``s3_server``: where the bucket lives, moto's S3 or SeaweedFS.
        ``upload_queue``: whether it names the upload queue (default: with EFS only).
        """
        token = secrets.token_hex(4)
        name = f"s2dl_{token}"
        database_url = self.postgres.create_database(name)
        migrate(database_url)
        queues = self.sqs.create_queues(
            name, visibility_timeout=visibility_timeout, max_receive_count=max_receive_count
        )
        # Bucket names allow neither "_" nor capitals.
        bucket = create_bucket(self.s3_server(s3_server).client_s3(), f"s2dl-{token}")
        owns_dir = efs_dir is None
        mount = Path(tempfile.mkdtemp(prefix="s2dl-efs-")) if efs_dir is None else efs_dir
        mount.mkdir(parents=True, exist_ok=True)
        return Pipeline(
            services=self,
            database_name=name,
            database_url=database_url,
            queues=queues,
            efs_dir=mount,
            bucket=bucket,
            s3_server=s3_server,
            hub_api=hub_api,
            store=store,
            upload_queue=upload_queue,
            owns_dir=owns_dir,
        )


@attrs.frozen(kw_only=True)
class StoredObject:
    """An object in a pipeline's bucket, as HeadObject and a read of its body show it."""

    key: str
    size: int
    #: The MD5 of the body's bytes, computed here as they are read.
    md5: str
    etag: str
    metadata: dict[str, str]


@attrs.define
class Pipeline:
    """One isolated deployment on the shared services."""

    services: Services
    database_name: str
    database_url: str
    queues: QueueSet
    efs_dir: Path
    bucket: str = ""
    s3_server: S3Server = "moto"
    hub_api: Literal["dhus", "cdse"] = "dhus"
    store: Store = "efs"
    #: Whether ``env`` sets TO_UPLOAD_SQS_QUEUE_URL; ``None``: with the EFS store only.
    upload_queue: bool | None = None
    owns_dir: bool = True

    @property
    def hub(self) -> HubSimulator:
        """The hub simulator."""
        return self.services.hub

    def env(self, **overrides: str) -> dict[str, str]:
        """The environment ``s2-downloader run`` needs to work on this pipeline.

        The pipeline's ``store``: ``"efs"`` sets ``EFS_MOUNT_DIR``; ``"s3"`` sets ``STORE=s3``,
        ``UPLOAD_BUCKET`` and the S3 endpoint of ``s3_server``. ``TO_UPLOAD_SQS_QUEUE_URL`` is set when
        ``upload_queue`` says so (by default with EFS only, as HLS runs the S3 store today).
        ``overrides`` win over everything.
        """
        hub = self.hub
        chosen = self.store
        announce = chosen == "efs" if self.upload_queue is None else self.upload_queue
        where: dict[str, str] = (
            {"EFS_MOUNT_DIR": str(self.efs_dir)}
            if chosen == "efs"
            else {
                "STORE": "s3",
                "UPLOAD_BUCKET": self.bucket,
                "AWS_ENDPOINT_URL_S3": self.services.s3_server(self.s3_server).endpoint_url,
            }
        )
        env = {
            **self.services.sqs.env(),
            **where,
            **({"TO_UPLOAD_SQS_QUEUE_URL": self.queues.upload_url} if announce else {}),
            "DATABASE_URL": self.database_url,
            "TO_DOWNLOAD_SQS_QUEUE_URL": self.queues.download_url,
            "HUB_API": self.hub_api,
            "SCIHUB_URL": hub.base_url,
            "SCIHUB_USERNAME": self.services.hub_username,
            "SCIHUB_PASSWORD": self.services.hub_password,
            "COPERNICUS_CHECKSUM_URL": hub.catalogue_url,
            "COPERNICUS_ZIPPER_URL": hub.zipper_url,
            "COPERNICUS_IDENTITY_URL": hub.identity_url,
            "RETRY_DELAY_SECONDS": "1",
            "LEASE_SECONDS": "30",
            "HTTP_CONNECT_TIMEOUT": "5",
            "HTTP_READ_TIMEOUT": "10",
        }
        env.update(overrides)
        return env

    def download_url(self, product_id: str) -> str:
        """The download_url HLS's link fetcher would put in the message for this pipeline's hub API.

        CDSE: the catalogue's ``$value`` link of a push subscription (not the zipper's: the
        downloader fetches from the zipper whatever the message names).
        """
        if self.hub_api == "cdse":
            return f"{self.hub.catalogue_url}/odata/v1/Products({product_id})/$value"
        return self.hub.dhus_download_url(product_id)

    def filename(self, product_id: str) -> str:
        """The message's filename: CDSE's product Name (``.SAFE``), or DHuS's ``.zip``."""
        return f"{product_id}.SAFE" if self.hub_api == "cdse" else f"{product_id}.zip"

    def message(self, product_id: str, *, checksum: str | None = None) -> str:
        """A download message body for ``product_id``, as HLS's link fetcher writes it."""
        body: dict[str, str] = {
            "id": product_id,
            "filename": self.filename(product_id),
            "download_url": self.download_url(product_id),
        }
        if checksum is not None:
            body["checksum"] = checksum
        return json.dumps(body)

    def seed(
        self,
        products: Iterable[tuple[str, int]],
        *,
        faults: dict[str, list[Fault]] | None = None,
        send: bool = True,
    ) -> list[SimProduct]:
        """Publish products on the hub, insert their granules, and (by default) queue a message each."""
        faults = faults or {}
        added = [
            self.hub.add_product(product_id, size, faults=faults.get(product_id, ()))
            for product_id, size in products
        ]
        seed_granules(
            self.database_url,
            [
                SeedGranule(
                    id=p.id, filename=self.filename(p.id), download_url=self.download_url(p.id), size=p.size
                )
                for p in added
            ],
        )
        if send:
            client = self.services.sqs.client()
            for product in added:
                client.send_message(QueueUrl=self.queues.download_url, MessageBody=self.message(product.id))
        return added

    def final_path(self, product_id: str) -> Path:
        """Where a verified product lands (EFS store: under the message's filename)."""
        return self.efs_dir / product_id / self.filename(product_id)

    # -- the bucket (S3 store) ---------------------------------------------------------

    def s3_client(self) -> S3Client:
        """A new S3 client for the server holding this pipeline's bucket."""
        return self.services.s3_server(self.s3_server).client_s3()

    def object_key(self, product_id: str, template: str = S3_KEY_TEMPLATE) -> str:
        """Where a verified product lands (S3 store): the key ``template`` gives (HLS's ``{stem}.zip``)."""
        return s3_key(template, product_id, self.filename(product_id))

    def object_keys(self) -> list[str]:
        """Every key in the bucket, sorted."""
        keys: list[str] = []
        for page in self.s3_client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            keys += [item["Key"] for item in page.get("Contents", [])]
        return sorted(keys)

    def stored_object(self, key: str) -> StoredObject | None:
        """The object at ``key`` with the MD5 of its body (streamed), or ``None`` when there is none."""
        client = self.s3_client()
        try:
            got = client.get_object(Bucket=self.bucket, Key=key)
        except client.exceptions.NoSuchKey:
            return None
        digest = hashlib.md5(usedforsecurity=False)
        body = got["Body"]
        try:
            while chunk := body.read(1 << 20):
                digest.update(chunk)
        finally:
            body.close()
        return StoredObject(
            key=key,
            size=got["ContentLength"],
            md5=digest.hexdigest(),
            etag=got["ETag"].strip('"'),
            metadata=dict(got.get("Metadata", {})),
        )

    def open_uploads(self) -> list[tuple[str, str]]:
        """Every multipart upload the bucket holds, as (key, upload id)."""
        uploads: list[tuple[str, str]] = []
        for page in self.s3_client().get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket):
            uploads += [(u["Key"], u["UploadId"]) for u in page.get("Uploads", [])]
        return uploads

    def store_upload(self, product_id: str) -> dict[str, Any] | None:
        """The granule row's record of its upload in progress (``store_upload``), or ``None``."""
        with psycopg.connect(self.database_url) as conn:
            row = conn.execute("SELECT store_upload FROM granule WHERE id = %s", (product_id,)).fetchone()
        return None if row is None or row[0] is None else dict(row[0])

    def _empty_bucket(self) -> None:
        # moto keeps every byte until the bucket goes: a benchmark's 512 MiB objects add up.
        client = self.s3_client()
        for key, upload_id in self.open_uploads():
            client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        for key in self.object_keys():
            client.delete_object(Bucket=self.bucket, Key=key)
        client.delete_bucket(Bucket=self.bucket)

    def rows(self) -> dict[str, dict[str, Any]]:
        """The granule table as the downloader leaves it, keyed by id."""
        with (
            psycopg.connect(self.database_url) as conn,
            conn.cursor(row_factory=psycopg.rows.dict_row) as cur,
        ):
            cur.execute(
                "SELECT id, state, download_retries, downloaded, in_progress, download_failed, checksum,"
                " lease_owner, upload_queued_at, last_error FROM granule"
            )
            return {row["id"]: row for row in cur.fetchall()}

    def drain(self, url: str) -> list[str]:
        """Every body on queue ``url``, received once and hidden for 5 minutes (keep queues shallow)."""
        client = self.services.sqs.client()
        bodies: list[str] = []
        while messages := client.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=300
        ).get("Messages", []):
            bodies += [m["Body"] for m in messages]
        return bodies

    def close(self) -> None:
        """Drop the database, queues and bucket; remove the mount directory if this pipeline made it."""
        with contextlib.suppress(Exception):
            self.services.sqs.delete_queues(self.queues)
        with contextlib.suppress(Exception):
            self._empty_bucket()
        with contextlib.suppress(Exception):
            self.services.postgres.drop_database(self.database_name)
        if self.owns_dir:
            shutil.rmtree(self.efs_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


@contextlib.contextmanager
def running_services(*, hub_rate_limit: float | None = None) -> Iterator[Services]:
    """Start the services for the duration of a ``with`` block."""
    with Services(hub_rate_limit=hub_rate_limit) as services:
        yield services
