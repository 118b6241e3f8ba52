"""The product store in an S3 bucket: streamed multipart uploads, completed only when the MD5 matches.

The verified product of a granule is the object ``s3://<bucket>/<key>``, the key rendered
from ``S3_KEY_TEMPLATE`` by the ``object_key`` function the composition root passes in.
Nothing unverified is ever visible there:

- The bytes go up as they arrive, in parts of ``part_size`` (16 MiB by default, larger when
  the product's size would need more than 10,000 parts), each ``UploadPart`` with its own
  ``Content-MD5``. The whole product's MD5 is computed over the parts as they are sent.
  One part is buffered, and copied once while it is sent: memory stays flat, whatever the
  product's size (measured by tests/integration/test_s3_store.py: the Python heap peaks at
  about four parts with botocore's own buffers, the same for 2 and 16 MiB products). Parts
  are sent from the downloading thread, one after the other.
- ``promote`` completes the upload only when that MD5 equals the hub's checksum (which was
  set as the object's ``md5`` metadata at ``CreateMultipartUpload``); ``discard_partial``
  aborts it. A product smaller than one part never starts a multipart upload: it is one
  ``PutObject`` with the ``Content-MD5`` of the whole body, sent only at ``promote``.
- After each part the upload id, the part size, the parts done (number, size, ETag) and the
  MD5 state after them are saved through the ``UploadLedger`` (the granule row's
  ``store_upload`` column). The next attempt lists the upload's parts, keeps the recorded
  ones that S3 still has with the same size and ETag, restores the MD5 state and carries on
  from the end of the last one (the use case asks the hub for the rest with a Range
  request). The MD5 state is OpenSSL's ``MD5_CTX`` (adapters/md5state.py), because
  hashlib cannot save one and re-reading the prefix would spend the hub's quota. When that
  state cannot be used (no libcrypto, or a part went missing), the attempt starts from byte
  0 of the hub but re-sends no part S3 already holds with the same bytes: each incoming
  part whose MD5 equals the ETag of the part S3 has under that number is taken as it is.
  ``NoSuchUpload`` (the upload was aborted, e.g. by the bucket's lifecycle rule) restarts.
- ``final_digest`` reads the object's ``md5`` metadata, else its ETag when that is a plain
  MD5 (a single-part upload without SSE-KMS or SSE-C); any other object at the key counts as
  no product and is left alone until a verified upload replaces it (``discard_final`` and
  ``remove`` never delete an object).
- ``remove`` (a granule failed for good) aborts the granule's open multipart uploads.

Every botocore error leaves as ``FileStoreError``: throttling (``SlowDown``, 503) and
unreachable endpoints as ``StoreUnavailable``, which the entry points hand back without
counting, like any file store error.

Two workers never write one granule at once while leases hold; the use case checks its
lease before ``promote``. A worker that lost its lease may still send parts of the same
product to the same upload, which the next one overwrites with the same bytes.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

import attrs
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from s2_downloader.adapters import md5state
from s2_downloader.domain.errors import FileStoreError, PartialInUse, StoreUnavailable

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

    from s2_downloader.domain.ports import FileKey

__all__ = [
    "DEFAULT_PART_SIZE",
    "MAX_PARTS",
    "MIN_PART_SIZE",
    "OpenUpload",
    "S3Partial",
    "S3Store",
    "UploadLedger",
]

MIB: Final = 1024 * 1024
#: The part size unless the product needs larger ones.
DEFAULT_PART_SIZE: Final = 16 * MIB
#: S3's smallest part but the last.
MIN_PART_SIZE: Final = 5 * MIB
#: S3's most parts in one upload.
MAX_PARTS: Final = 10_000

#: Error codes (and statuses) that mean "later", not "never": not the granule's fault.
_UNAVAILABLE_CODES: Final = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "ServiceUnavailable",
        "RequestTimeout",
        "InternalError",
        "500",
        "502",
        "503",
        "504",
    }
)
_UNAVAILABLE_STATUSES: Final = frozenset({500, 502, 503, 504})
_UNREACHABLE: Final = (EndpointConnectionError, ConnectionClosedError, ConnectTimeoutError, ReadTimeoutError)
_HEX: Final = frozenset("0123456789abcdef")


class UploadLedger(Protocol):
    """Where the S3 store keeps the record of a granule's upload in progress (JSON), between attempts."""

    def load_upload(self, granule_id: str) -> Mapping[str, Any] | None:
        """The record last saved for the granule, or ``None``."""
        ...

    def save_upload(self, granule_id: str, record: Mapping[str, Any]) -> None:
        """Replace the granule's record."""
        ...

    def clear_upload(self, granule_id: str) -> None:
        """Forget the granule's record."""
        ...


# -- keys -------------------------------------------------------------------------------


# -- errors -----------------------------------------------------------------------------


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _store_error(operation: str, where: str, exc: BotoCoreError | ClientError) -> FileStoreError:
    if isinstance(exc, ClientError):
        code = _code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = exc.response.get("Error", {}).get("Message", "")
        detail = f"{code or status}{': ' + message if message else ''}"
        if code in _UNAVAILABLE_CODES or status in _UNAVAILABLE_STATUSES:
            return StoreUnavailable(f"S3 {operation} {where}: {detail}")
        return FileStoreError(f"S3 {operation} {where}: {detail}")
    if isinstance(exc, _UNREACHABLE):
        return StoreUnavailable(f"S3 {operation} {where}: {type(exc).__name__}: {exc}")
    return FileStoreError(f"S3 {operation} {where}: {type(exc).__name__}: {exc}")


def _content_md5(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def _md5(data: bytes = b"") -> hashlib._Hash:
    # An integrity checksum the hub publishes and S3 checks, not a security measure.
    return hashlib.md5(data, usedforsecurity=False)


def _plain_etag(etag: str) -> str:
    return etag.strip('"').lower()


def _is_md5(text: str) -> bool:
    return len(text) == 32 and set(text) <= _HEX


def _new_hash() -> md5state.ResumableMd5 | hashlib._Hash:
    return md5state.ResumableMd5() if md5state.available() else _md5()


def _hash_copy(digest: md5state.ResumableMd5 | hashlib._Hash) -> md5state.ResumableMd5 | hashlib._Hash:
    return digest.copy()


# -- records ----------------------------------------------------------------------------


@attrs.frozen
class _Part:
    number: int
    size: int
    etag: str

    def json(self) -> dict[str, Any]:
        return {"number": self.number, "size": self.size, "etag": self.etag}


@attrs.frozen(kw_only=True)
class _Record:
    """The JSON saved on the granule row after each part."""

    upload_id: str
    key: str
    md5: str
    part_size: int
    parts: tuple[_Part, ...]
    md5_state: str | None
    validator: str | None

    def json(self) -> dict[str, Any]:
        return {
            "upload_id": self.upload_id,
            "key": self.key,
            "md5": self.md5,
            "part_size": self.part_size,
            "parts": [part.json() for part in self.parts],
            "md5_state": self.md5_state,
            "validator": self.validator,
        }

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> _Record | None:
        """The record, or ``None`` when ``data`` is not one this version wrote."""
        try:
            parts = tuple(
                _Part(int(part["number"]), int(part["size"]), str(part["etag"])) for part in data["parts"]
            )
            record = cls(
                upload_id=str(data["upload_id"]),
                key=str(data["key"]),
                md5=str(data["md5"]),
                part_size=int(data["part_size"]),
                parts=parts,
                md5_state=None if data.get("md5_state") is None else str(data["md5_state"]),
                validator=None if data.get("validator") is None else str(data["validator"]),
            )
        except (KeyError, TypeError, ValueError):
            return None
        numbers = [part.number for part in parts]
        if numbers != list(range(1, len(parts) + 1)) or record.part_size <= 0:
            return None
        return record


@attrs.frozen(kw_only=True)
class OpenUpload:
    """A multipart upload S3 still holds (and charges for)."""

    key: str
    upload_id: str
    initiated: dt.datetime


# -- the partial ------------------------------------------------------------------------


@attrs.define(eq=False)
class S3Partial:
    """A product on its way into the bucket (the ``Partial`` port); see the module docstring."""

    _store: S3Store = attrs.field(repr=False)
    granule_id: str
    object_key: str
    checksum: str
    part_size: int
    upload_id: str | None = None
    #: The parts sent (or kept) in order; their bytes are exactly what ``_parts_md5`` hashed.
    parts: list[_Part] = attrs.field(factory=list)
    _parts_md5: md5state.ResumableMd5 | hashlib._Hash = attrs.field(factory=_new_hash, repr=False)
    #: Parts S3 holds from an earlier attempt whose bytes are being received again: reused, not re-sent,
    #: when the bytes match.
    candidates: dict[int, _Part] = attrs.field(factory=dict)
    _buffer: bytearray = attrs.field(factory=bytearray, repr=False)
    _done: int = 0
    _validator: str | None = None
    #: Resumed from a saved MD5 state (rather than started from byte 0).
    resumed: bool = False
    closed: bool = False

    @property
    def size(self) -> int:
        """Bytes held: in the parts sent plus the buffer."""
        return self._done + len(self._buffer)

    @property
    def validator(self) -> str | None:
        """The validator of the response the held bytes came from."""
        return self._validator

    def set_validator(self, validator: str | None) -> None:
        """Keep ``validator`` with the upload's record (saved with the next part)."""
        self._validator = validator
        if self.upload_id is not None:
            self._save()

    def expect_size(self, total_size: int | None) -> None:
        """Size the parts so the product fits in 10,000 of them (before the first part only)."""
        if total_size is None or self.parts or self.upload_id is not None:
            return
        needed = -(-total_size // MAX_PARTS)
        if needed > self.part_size:
            self.part_size = -(-needed // MIB) * MIB

    def write(self, chunk: bytes) -> None:
        """Buffer ``chunk``; send each full part as it completes."""
        self._check_open()
        self._buffer += chunk
        while len(self._buffer) >= self.part_size:
            self._send_part(self.part_size)

    def restart(self) -> None:
        """Drop everything held; the parts S3 has become candidates for the bytes that come again."""
        self._check_open()
        for part in self.parts:
            self.candidates.setdefault(part.number, part)
        self.parts = []
        self._parts_md5 = _new_hash()
        self._buffer.clear()
        self._done = 0
        self._validator = None
        if self.upload_id is not None:
            self._save()

    def hexdigest(self) -> str:
        """The MD5 of everything held (the last, short part is sent only by ``promote``)."""
        digest = _hash_copy(self._parts_md5)
        digest.update(bytes(self._buffer))
        return digest.hexdigest()

    # -- used by the store ---------------------------------------------------------------

    def commit(self) -> None:
        """Make the held bytes the object at the key, if their MD5 is the checksum; else raise."""
        self._check_open()
        digest = self.hexdigest()
        if digest != self.checksum:
            where = f"s3://{self._store.bucket}/{self.object_key}"
            msg = f"refused to complete {where}: MD5 {digest}, expected {self.checksum}"
            raise FileStoreError(msg)
        store = self._store
        if not self.parts:
            body = bytes(self._buffer)
            store.call(
                "PutObject",
                self.object_key,
                lambda: store.client.put_object(
                    Bucket=store.bucket,
                    Key=self.object_key,
                    Body=body,
                    ContentMD5=_content_md5(_md5(body).digest()),
                    Metadata={"md5": self.checksum},
                ),
            )
            if self.upload_id is not None:
                self._abort_upload()
        else:
            if self._buffer:
                self._send_part(len(self._buffer))
            upload_id = self.upload_id
            assert upload_id is not None
            parts = [{"PartNumber": part.number, "ETag": part.etag} for part in self.parts]
            store.call(
                "CompleteMultipartUpload",
                self.object_key,
                lambda: store.client.complete_multipart_upload(
                    Bucket=store.bucket,
                    Key=self.object_key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
                ),
            )
        store.ledger.clear_upload(self.granule_id)
        self.closed = True

    def abort(self) -> None:
        """Abort the multipart upload, if any, and forget its record."""
        if self.upload_id is not None:
            self._abort_upload()
        self._store.ledger.clear_upload(self.granule_id)
        self.parts, self.candidates = [], {}
        self._parts_md5 = _new_hash()
        self._buffer.clear()
        self._done = 0

    # -- internals -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            msg = f"the partial of s3://{self._store.bucket}/{self.object_key} is closed"
            raise FileStoreError(msg)

    def _abort_upload(self) -> None:
        upload_id, self.upload_id = self.upload_id, None
        if upload_id is not None:
            self._store.abort_upload(self.object_key, upload_id)

    def _send_part(self, size: int) -> None:
        number = len(self.parts) + 1
        if number > MAX_PARTS:
            where = f"s3://{self._store.bucket}/{self.object_key}"
            msg = f"{where}: more than {MAX_PARTS} parts of {self.part_size} bytes"
            raise FileStoreError(msg)
        with memoryview(self._buffer) as view:
            body = bytes(view[:size])  # one copy: slicing the bytearray first would make two
        part_md5 = _md5(body).digest()
        store = self._store
        if self.upload_id is None:
            self.upload_id = store.create_upload(self.object_key, self.checksum)
            self._save()
        held = self.candidates.pop(number, None)
        if held is not None and held.size == size and _plain_etag(held.etag) == part_md5.hex():
            etag = held.etag  # S3 already has these very bytes as this part
        else:
            upload_id = self.upload_id
            response = store.call(
                "UploadPart",
                self.object_key,
                lambda: store.client.upload_part(
                    Bucket=store.bucket,
                    Key=self.object_key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=body,
                    ContentMD5=_content_md5(part_md5),
                ),
            )
            etag = response["ETag"]
        self._parts_md5.update(body)
        self.parts.append(_Part(number, size, etag))
        self._done += size
        del self._buffer[:size]
        self._save()

    def _save(self) -> None:
        assert self.upload_id is not None
        state = self._parts_md5.state() if isinstance(self._parts_md5, md5state.ResumableMd5) else None
        record = _Record(
            upload_id=self.upload_id,
            key=self.object_key,
            md5=self.checksum,
            part_size=self.part_size,
            parts=tuple(self.parts),
            md5_state=state,
            validator=self._validator,
        )
        self._store.ledger.save_upload(self.granule_id, record.json())


# -- the store --------------------------------------------------------------------------


@attrs.define
class S3Store:
    """Verified products as objects of ``bucket`` (the ``Files`` port); see the module docstring.

    ``client`` is a boto3 S3 client (its retries and timeouts are the caller's choice);
    ``object_key`` renders a product's key (``S3_KEY_TEMPLATE`` filled in). ``min_part_size``
    is S3's floor; lower it only for a test server that allows smaller parts.
    """

    client: S3Client = attrs.field(repr=False)
    bucket: str
    ledger: UploadLedger = attrs.field(repr=False)
    object_key: Callable[[FileKey], str]
    part_size: int = DEFAULT_PART_SIZE
    min_part_size: int = MIN_PART_SIZE
    _open: dict[str, S3Partial] = attrs.field(factory=dict, init=False, repr=False)
    _opening: set[str] = attrs.field(factory=set, init=False, repr=False)
    _open_lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.part_size < self.min_part_size:
            msg = f"part size {self.part_size} is below the smallest S3 allows ({self.min_part_size})"
            raise ValueError(msg)

    # -- calls ---------------------------------------------------------------------------

    def call(self, operation: str, key: str, action: Callable[[], Any]) -> Any:
        """Run one S3 request; botocore errors leave as ``FileStoreError``/``StoreUnavailable``."""
        try:
            return action()
        except (BotoCoreError, ClientError) as exc:
            raise _store_error(operation, f"s3://{self.bucket}/{key}", exc) from exc

    def create_upload(self, key: str, checksum: str) -> str:
        """Start a multipart upload of ``key`` with the expected MD5 as its ``md5`` metadata."""
        response = self.call(
            "CreateMultipartUpload",
            key,
            lambda: self.client.create_multipart_upload(
                Bucket=self.bucket, Key=key, Metadata={"md5": checksum}
            ),
        )
        return str(response["UploadId"])

    def abort_upload(self, key: str, upload_id: str) -> None:
        """Abort one multipart upload; one that is gone already is fine."""
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except ClientError as exc:
            if _code(exc) == "NoSuchUpload":
                return
            raise _store_error("AbortMultipartUpload", f"s3://{self.bucket}/{key}", exc) from exc
        except BotoCoreError as exc:
            raise _store_error("AbortMultipartUpload", f"s3://{self.bucket}/{key}", exc) from exc

    def _list_parts(self, key: str, upload_id: str) -> dict[int, _Part] | None:
        """The parts S3 holds for the upload, or ``None`` when the upload is gone."""
        parts: dict[int, _Part] = {}
        try:
            pages = self.client.get_paginator("list_parts").paginate(
                Bucket=self.bucket, Key=key, UploadId=upload_id
            )
            for page in pages:
                for part in page.get("Parts", []):
                    number = part["PartNumber"]
                    parts[number] = _Part(number, part["Size"], part["ETag"])
        except ClientError as exc:
            if _code(exc) == "NoSuchUpload":
                return None
            raise _store_error("ListParts", f"s3://{self.bucket}/{key}", exc) from exc
        except BotoCoreError as exc:
            raise _store_error("ListParts", f"s3://{self.bucket}/{key}", exc) from exc
        return parts

    # -- FinalFiles ----------------------------------------------------------------------

    def final_digest(self, key: FileKey) -> str | None:
        """The object's MD5 from its ``md5`` metadata or plain ETag; ``None`` without object or MD5."""
        object_key = self.object_key(key)
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=object_key)
        except ClientError as exc:
            if _code(exc) in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise _store_error("HeadObject", f"s3://{self.bucket}/{object_key}", exc) from exc
        except BotoCoreError as exc:
            raise _store_error("HeadObject", f"s3://{self.bucket}/{object_key}", exc) from exc
        stated = head.get("Metadata", {}).get("md5", "").lower()
        if _is_md5(stated):
            return stated
        etag = _plain_etag(head.get("ETag", ""))
        encrypted = str(head.get("ServerSideEncryption", "")).startswith("aws:kms")
        if _is_md5(etag) and not encrypted and "SSECustomerAlgorithm" not in head:
            return etag
        return None

    def discard_final(self, key: FileKey) -> None:
        """Leave the object alone: only a verified upload replaces it."""
        del key

    def remove(self, key: FileKey) -> None:
        """A failed granule: abort its multipart uploads and forget the record; the object stays."""
        self.discard_partial(key)
        with self._open_lock:
            opened = key.granule_id in self._open
        if opened:
            self._abort_uploads_of(self.object_key(key))

    def _abort_uploads_of(self, object_key: str) -> None:
        for upload in self._uploads(prefix=object_key):
            if upload.key == object_key:
                self.abort_upload(upload.key, upload.upload_id)

    # -- PartialFiles --------------------------------------------------------------------

    @contextlib.contextmanager
    def open_partial(self, key: FileKey, *, checksum: str) -> Iterator[S3Partial]:
        """The granule's upload in progress, resumed from its record when S3 still agrees with it."""
        with self._open_lock:
            if key.granule_id in self._open or key.granule_id in self._opening:
                msg = f"the upload of {key.granule_id} is open in this process already"
                raise PartialInUse(msg)
            # Reserved before resuming: resuming may abort uploads of the key.
            self._opening.add(key.granule_id)
        try:
            partial = self._resume(key, checksum.lower())
        finally:
            with self._open_lock:
                self._opening.discard(key.granule_id)
        with self._open_lock:
            self._open[key.granule_id] = partial
        try:
            yield partial
        finally:
            with self._open_lock:
                if self._open.get(key.granule_id) is partial:
                    del self._open[key.granule_id]
            # The buffered tail is dropped, as a crash would: the next attempt asks the hub
            # for it again, from the end of the last part sent.
            partial.closed = True

    def promote(self, key: FileKey) -> None:
        """Complete the open upload (or put the small product) once its MD5 is the checksum."""
        with self._open_lock:
            partial = self._open.get(key.granule_id)
        if partial is None or partial.object_key != self.object_key(key):
            msg = (
                f"cannot promote {key.granule_id}: its upload is not open here (promote it while it is open)"
            )
            raise FileStoreError(msg)
        partial.commit()

    def discard_partial(self, key: FileKey) -> None:
        """Abort the granule's multipart upload (open here or recorded) and forget its record."""
        with self._open_lock:
            partial = self._open.get(key.granule_id)
        if partial is not None:
            partial.abort()
            return
        record = _Record.parse(self.ledger.load_upload(key.granule_id) or {})
        if record is not None:
            self.abort_upload(record.key, record.upload_id)
        self.ledger.clear_upload(key.granule_id)
        # Also one begun by an attempt that died before recording it.
        self._abort_uploads_of(self.object_key(key))

    # -- housekeeping --------------------------------------------------------------------

    def open_uploads_older_than(self, seconds: float, now: dt.datetime | None = None) -> list[OpenUpload]:
        """Multipart uploads started more than ``seconds`` before ``now`` (default: the current time)."""
        cutoff = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(seconds=seconds)
        return [upload for upload in self._uploads(prefix="") if upload.initiated < cutoff]

    def check_bucket(self) -> None:
        """Raise ``FileStoreError`` unless the bucket exists and can be reached with these credentials."""
        self.call("HeadBucket", "", lambda: self.client.head_bucket(Bucket=self.bucket))

    def _uploads(self, *, prefix: str) -> list[OpenUpload]:
        uploads: list[OpenUpload] = []
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=prefix
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
            raise _store_error("ListMultipartUploads", f"s3://{self.bucket}/{prefix}", exc) from exc
        return uploads

    # -- resuming ------------------------------------------------------------------------

    def _resume(self, key: FileKey, checksum: str) -> S3Partial:
        object_key = self.object_key(key)
        fresh = S3Partial(self, key.granule_id, object_key, checksum, self.part_size)
        saved = self.ledger.load_upload(key.granule_id)
        if saved is None:
            # An upload begun by an attempt that died before recording it: nobody can
            # resume it, and the lease makes this attempt the only writer of the key.
            self._abort_uploads_of(object_key)
            return fresh
        record = _Record.parse(saved)
        if record is None or record.key != object_key or record.md5 != checksum:
            # Another key or another checksum (the metadata would be wrong): start over.
            if record is not None:
                self.abort_upload(record.key, record.upload_id)
            self.ledger.clear_upload(key.granule_id)
            return fresh
        listed = self._list_parts(object_key, record.upload_id)
        if listed is None:
            self.ledger.clear_upload(key.granule_id)
            return fresh
        kept: list[_Part] = []
        for part in record.parts:
            there = listed.get(part.number)
            if there is None or there.size != part.size or _plain_etag(there.etag) != _plain_etag(part.etag):
                break
            kept.append(part)
        restored = (
            md5state.ResumableMd5.restore(record.md5_state)
            if record.md5_state is not None and len(kept) == len(record.parts)
            else None
        )
        partial = S3Partial(
            self, key.granule_id, object_key, checksum, record.part_size, upload_id=record.upload_id
        )
        if restored is not None and kept:
            partial.parts = kept
            partial._parts_md5 = restored
            partial._done = sum(part.size for part in kept)
            partial._validator = record.validator
            partial.resumed = True
            # Parts sent after the last record (a crash in between) may hold the next bytes.
            partial.candidates = {number: part for number, part in listed.items() if number > len(kept)}
        else:
            # Without the MD5 state the bytes come again from byte 0: parts S3 holds with the
            # same bytes are reused as they arrive, not sent again.
            partial.candidates = listed
        return partial
