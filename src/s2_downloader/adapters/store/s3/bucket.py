"""The S3 requests the store makes, each translated to the store's errors: uploads, parts, object checks.

Every body goes with its ``Content-MD5``, so S3 refuses one damaged on the way.

``object_digest`` reads an object's ``md5`` metadata, else its ETag when that is a plain
MD5 (a single-part upload without SSE-KMS or SSE-C); any other object counts as no product.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import attrs
from botocore.exceptions import BotoCoreError, ClientError

from s2_downloader.adapters.store.s3.checksums import content_md5, is_md5, md5, plain_etag
from s2_downloader.adapters.store.s3.errors import error_code, store_error
from s2_downloader.adapters.store.s3.records import Part

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

__all__ = ["GRANULE_ID", "Bucket", "OpenUpload"]

#: The metadata that names the granule an object or a multipart upload is of (``md5`` is its MD5).
GRANULE_ID = "granule-id"


@attrs.frozen(kw_only=True)
class OpenUpload:
    """A multipart upload S3 still holds (and charges for)."""

    key: str
    upload_id: str
    initiated: dt.datetime


@attrs.frozen
class Bucket:
    """One bucket through a boto3 S3 client (its retries and timeouts are the caller's choice)."""

    client: S3Client = attrs.field(repr=False)
    name: str

    def where(self, key: str) -> str:
        """``s3://<bucket>/<key>``, for messages."""
        return f"s3://{self.name}/{key}"

    def call(self, operation: str, key: str, action: Callable[[], Any]) -> Any:
        """Run one S3 request; botocore errors leave as ``FileStoreError``/``StoreUnavailable``."""
        try:
            return action()
        except (BotoCoreError, ClientError) as exc:
            raise store_error(operation, self.where(key), exc) from exc

    def check(self) -> None:
        """Raise ``FileStoreError`` unless the bucket exists and can be reached with these credentials."""
        self.call("HeadBucket", "", lambda: self.client.head_bucket(Bucket=self.name))

    def object_digest(self, key: str) -> str | None:
        """The object's MD5 from its ``md5`` metadata or plain ETag; ``None`` without object or MD5."""
        head = self._head(key)
        if head is None:
            return None
        stated = str(head.get("Metadata", {}).get("md5", "")).lower()
        if is_md5(stated):
            return stated
        etag = plain_etag(head.get("ETag", ""))
        encrypted = str(head.get("ServerSideEncryption", "")).startswith("aws:kms")
        if is_md5(etag) and not encrypted and "SSECustomerAlgorithm" not in head:
            return etag
        return None

    def object_owner(self, key: str) -> str | None:
        """The ``granule-id`` metadata of the object at ``key``; ``None`` without object or metadata."""
        head = self._head(key)
        owner = None if head is None else head.get("Metadata", {}).get(GRANULE_ID)
        return str(owner) if owner else None

    def _head(self, key: str) -> Mapping[str, Any] | None:
        """``HeadObject``'s answer, or ``None`` when there is no object at ``key``."""
        try:
            return self.client.head_object(Bucket=self.name, Key=key)
        except ClientError as exc:
            if error_code(exc) in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise store_error("HeadObject", self.where(key), exc) from exc
        except BotoCoreError as exc:
            raise store_error("HeadObject", self.where(key), exc) from exc

    def create_upload(self, key: str, checksum: str, *, granule_id: str) -> str:
        """Start a multipart upload of ``key``, its metadata the expected MD5 (``md5``) and ``granule-id``."""
        response = self.call(
            "CreateMultipartUpload",
            key,
            lambda: self.client.create_multipart_upload(
                Bucket=self.name, Key=key, Metadata={"md5": checksum, GRANULE_ID: granule_id}
            ),
        )
        return str(response["UploadId"])

    def put_object(self, key: str, body: bytes, *, checksum: str, granule_id: str) -> None:
        """Put ``body`` at ``key`` whole, with its ``Content-MD5``, its metadata as ``create_upload``'s."""
        self.call(
            "PutObject",
            key,
            lambda: self.client.put_object(
                Bucket=self.name,
                Key=key,
                Body=body,
                ContentMD5=content_md5(md5(body).digest()),
                Metadata={"md5": checksum, GRANULE_ID: granule_id},
            ),
        )

    def upload_part(
        self, key: str, upload_id: str, number: int, body: bytes | bytearray, body_md5: bytes
    ) -> str:
        """Send part ``number`` of the upload with the ``Content-MD5`` of ``body_md5``; its ETag."""
        response = self.call(
            "UploadPart",
            key,
            lambda: self.client.upload_part(
                Bucket=self.name,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=cast("bytes", body),
                ContentMD5=content_md5(body_md5),
            ),
        )
        return str(response["ETag"])

    def complete_upload(self, key: str, upload_id: str, parts: Sequence[Part]) -> None:
        """Make the upload's ``parts`` the object at ``key``."""
        listed = [{"PartNumber": part.number, "ETag": part.etag} for part in parts]
        self.call(
            "CompleteMultipartUpload",
            key,
            lambda: self.client.complete_multipart_upload(
                Bucket=self.name,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": listed},  # type: ignore[typeddict-item]
            ),
        )

    def abort_upload(self, key: str, upload_id: str) -> None:
        """Abort one multipart upload; one that is gone already is fine."""
        try:
            self.client.abort_multipart_upload(Bucket=self.name, Key=key, UploadId=upload_id)
        except ClientError as exc:
            if error_code(exc) == "NoSuchUpload":
                return
            raise store_error("AbortMultipartUpload", self.where(key), exc) from exc
        except BotoCoreError as exc:
            raise store_error("AbortMultipartUpload", self.where(key), exc) from exc

    def list_parts(self, key: str, upload_id: str) -> dict[int, Part] | None:
        """The parts S3 holds for the upload, or ``None`` when the upload is gone."""
        parts: dict[int, Part] = {}
        try:
            pages = self.client.get_paginator("list_parts").paginate(
                Bucket=self.name, Key=key, UploadId=upload_id
            )
            for page in pages:
                for part in page.get("Parts", []):
                    number = part["PartNumber"]
                    parts[number] = Part(number, part["Size"], part["ETag"])
        except ClientError as exc:
            if error_code(exc) == "NoSuchUpload":
                return None
            raise store_error("ListParts", self.where(key), exc) from exc
        except BotoCoreError as exc:
            raise store_error("ListParts", self.where(key), exc) from exc
        return parts

    def uploads(self, *, prefix: str) -> list[OpenUpload]:
        """The multipart uploads S3 holds under ``prefix``."""
        uploads: list[OpenUpload] = []
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.name, Prefix=prefix
            )
            for page in pages:
                for upload in page.get("Uploads", []):
                    initiated = upload["Initiated"]
                    if initiated.tzinfo is None:
                        initiated = initiated.replace(tzinfo=dt.UTC)
                    uploads.append(
                        OpenUpload(key=upload["Key"], upload_id=upload["UploadId"], initiated=initiated)
                    )
        except (BotoCoreError, ClientError) as exc:
            raise store_error("ListMultipartUploads", self.where(prefix), exc) from exc
        return uploads
