"""``S3Partial``: a product on its way into the bucket as a multipart upload, hashed as it goes.

The bytes go up as they arrive, in parts of ``part_size``, each ``UploadPart`` with its own
``Content-MD5``; the whole product's MD5 is computed over the parts as they are sent. One
part is buffered, and copied once while it is sent: memory stays flat, whatever the
product's size. Parts are sent from the downloading thread, one after the other. After
each part the upload's record is saved through the ``UploadLedger`` (``records.py``).

``commit`` completes the upload only when that MD5 equals the hub's checksum (set as the
object's ``md5`` metadata at ``CreateMultipartUpload``, with the granule's id as
``granule-id``); ``abort`` aborts it. A product
smaller than one part never starts a multipart upload: it is one ``PutObject`` with the
``Content-MD5`` of the whole body, sent only at ``commit``.

Parts S3 holds from an earlier attempt whose bytes are being received again (``candidates``)
are reused, not sent again, when the bytes match: each incoming part whose MD5 equals the
ETag of the part S3 has under that number is taken as it is.
"""

from __future__ import annotations

from typing import Final

import attrs

from s2_downloader.adapters.store import md5state
from s2_downloader.adapters.store.s3.bucket import Bucket
from s2_downloader.adapters.store.s3.checksums import ProductHash, md5, new_product_hash, plain_etag
from s2_downloader.adapters.store.s3.records import Part, UploadRecord
from s2_downloader.domain.errors import FileStoreError
from s2_downloader.domain.ports import UploadLedger

__all__ = ["MAX_PARTS", "MAX_PART_SIZE", "MIB", "S3Partial", "largest_part_size"]

MIB: Final = 1024 * 1024
#: S3's most parts in one upload.
MAX_PARTS: Final = 10_000
#: S3's largest part.
MAX_PART_SIZE: Final = 5 * 1024 * MIB
#: S3's largest object.
MAX_OBJECT_SIZE: Final = 5 * 1024 * 1024 * MIB


def grown_part_size(part_size: int, total_size: int) -> int:
    """``part_size``, or the whole MiBs a product of ``total_size`` bytes needs to fit in ``MAX_PARTS``."""
    needed = -(-total_size // MAX_PARTS)
    return part_size if needed <= part_size else -(-needed // MIB) * MIB


def largest_part_size(part_size: int) -> int:
    """The largest part a store of ``part_size`` ever uses: grown for S3's largest object, at most S3's."""
    return min(MAX_PART_SIZE, grown_part_size(part_size, MAX_OBJECT_SIZE))


@attrs.define(eq=False, kw_only=True)
class S3Partial:
    """A product on its way into the bucket (the ``Partial`` port); see the module docstring."""

    bucket: Bucket = attrs.field(repr=False)
    ledger: UploadLedger = attrs.field(repr=False)
    granule_id: str
    object_key: str
    checksum: str
    part_size: int
    upload_id: str | None = None
    #: The parts sent (or kept) in order; their bytes are exactly what ``_parts_md5`` hashed.
    parts: list[Part] = attrs.field(factory=list)
    _parts_md5: ProductHash = attrs.field(factory=new_product_hash, repr=False)
    #: Parts S3 holds from an earlier attempt whose bytes are being received again: reused, not re-sent,
    #: when the bytes match.
    candidates: dict[int, Part] = attrs.field(factory=dict)
    _buffer: bytearray = attrs.field(factory=bytearray, init=False, repr=False)
    #: Bytes in the parts sent (or kept).
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
        self.part_size = grown_part_size(self.part_size, total_size)

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
        self._parts_md5 = new_product_hash()
        self._buffer.clear()
        self._done = 0
        self._validator = None
        if self.upload_id is not None:
            self._save()

    def hexdigest(self) -> str:
        """The MD5 of everything held (the last, short part is sent only by ``commit``)."""
        digest = self._parts_md5.copy()
        digest.update(bytes(self._buffer))
        return digest.hexdigest()

    # -- used by the store ---------------------------------------------------------------

    def commit(self) -> None:
        """Make the held bytes the object at the key, if their MD5 is the checksum; else raise."""
        self._check_open()
        digest = self.hexdigest()
        if digest != self.checksum:
            where = self.bucket.where(self.object_key)
            msg = f"refused to complete {where}: MD5 {digest}, expected {self.checksum}"
            raise FileStoreError(msg)
        if not self.parts:
            self._put_whole()
        else:
            self._complete()
        self.ledger.clear(self.granule_id)
        self.closed = True

    def abort(self) -> None:
        """Abort the multipart upload, if any, and forget its record."""
        if self.upload_id is not None:
            self._abort_upload()
        self.ledger.clear(self.granule_id)
        self.parts, self.candidates = [], {}
        self._parts_md5 = new_product_hash()
        self._buffer.clear()
        self._done = 0

    # -- internals -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            msg = f"the partial of {self.bucket.where(self.object_key)} is closed"
            raise FileStoreError(msg)

    def _put_whole(self) -> None:
        self.bucket.put_object(
            self.object_key, bytes(self._buffer), checksum=self.checksum, granule_id=self.granule_id
        )
        if self.upload_id is not None:
            self._abort_upload()

    def _complete(self) -> None:
        if self._buffer:
            self._send_part(len(self._buffer))
        assert self.upload_id is not None
        self.bucket.complete_upload(self.object_key, self.upload_id, self.parts)

    def _abort_upload(self) -> None:
        upload_id, self.upload_id = self.upload_id, None
        if upload_id is not None:
            self.bucket.abort_upload(self.object_key, upload_id)

    def _send_part(self, size: int) -> None:
        number = len(self.parts) + 1
        if number > MAX_PARTS:
            msg = (
                f"{self.bucket.where(self.object_key)}: more than {MAX_PARTS} parts of {self.part_size} bytes"
            )
            raise FileStoreError(msg)
        with memoryview(self._buffer) as view:
            body = bytes(view[:size])  # one copy: slicing the bytearray first would make two
        part_md5 = md5(body).digest()
        bucket = self.bucket
        if self.upload_id is None:
            self.upload_id = bucket.create_upload(self.object_key, self.checksum, granule_id=self.granule_id)
            self._save()
        held = self.candidates.pop(number, None)
        if held is not None and held.size == size and plain_etag(held.etag) == part_md5.hex():
            etag = held.etag  # S3 already has these very bytes as this part
        else:
            etag = bucket.upload_part(self.object_key, self.upload_id, number, body, part_md5)
        self._parts_md5.update(body)
        self.parts.append(Part(number, size, etag))
        self._done += size
        del self._buffer[:size]
        if size == self.part_size:
            # The last, short part (sent at commit) is not recorded: a record holds full parts
            # only (records.py); if completing fails, S3 still lists it as a candidate.
            self._save()

    def _save(self) -> None:
        assert self.upload_id is not None
        state = self._parts_md5.state() if isinstance(self._parts_md5, md5state.ResumableMd5) else None
        record = UploadRecord(
            upload_id=self.upload_id,
            key=self.object_key,
            md5=self.checksum,
            part_size=self.part_size,
            parts=tuple(self.parts),
            md5_state=state,
            validator=self._validator,
        )
        self.ledger.save(self.granule_id, record.json())
