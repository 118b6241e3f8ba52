"""``S3Partial``: a product on its way into the bucket as a multipart upload, hashed as it goes.

The bytes go up as they arrive, in parts of ``part_size``, each ``UploadPart`` with its own
``Content-MD5``. The bytes are copied once, from the hub's chunk into a part buffer. Each
slice of at least ``HASH_SLICE`` bytes is handed to ``PartsInFlight`` (``in_flight.py``) as it
fills, to be added to the whole product's MD5 and the part's on threads of their own; each
full part buffer is then handed over as it is, to be uploaded on another thread, while the
downloading thread goes back to the hub, filling a spare buffer. At most
``parts_in_flight`` parts are on their way and buffers are filled again once their part has
settled, so there are never more than ``parts_in_flight`` + 1 part buffers, whatever the
product's size. As parts settle (uploaded and hashed, in order), the upload's record is
saved through the ``UploadLedger`` (``records.py``): only ever the contiguous prefix of
settled parts, with the MD5 state right after the last of them.

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

import contextlib
from collections.abc import Sequence
from typing import Final

import attrs

from s2_downloader.adapters.store.s3.bucket import Bucket
from s2_downloader.adapters.store.s3.checksums import ProductHash, new_product_hash, saved_state
from s2_downloader.adapters.store.s3.in_flight import PartsInFlight, Settled
from s2_downloader.adapters.store.s3.records import Part, UploadRecord
from s2_downloader.domain.errors import FileStoreError, S2DownloaderError
from s2_downloader.domain.ports import UploadLedger

__all__ = ["MAX_PARTS", "MAX_PART_SIZE", "MIB", "S3Partial", "largest_part_size"]

MIB: Final = 1024 * 1024
#: S3's most parts in one upload.
MAX_PARTS: Final = 10_000
#: S3's largest part.
MAX_PART_SIZE: Final = 5 * 1024 * MIB
#: S3's largest object.
MAX_OBJECT_SIZE: Final = 5 * 1024 * 1024 * MIB
#: Bytes gathered in the part being filled before they are handed to the hashing threads: few
#: enough hand-overs to cost nothing, small enough that a full part's MD5 is ready at once.
HASH_SLICE: Final = MIB


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
    #: Parts uploading at once while the downloading thread goes on (``S3_PARTS_IN_FLIGHT``).
    parts_in_flight: int = 1
    upload_id: str | None = None
    #: The parts settled (sent or kept), in order; with the parts in flight and the first ``_hashed``
    #: bytes of the part being filled, they are what ``_parts_md5`` has been handed.
    parts: list[Part] = attrs.field(factory=list)
    _parts_md5: ProductHash = attrs.field(factory=new_product_hash, repr=False)
    #: Parts S3 holds from an earlier attempt whose bytes are being received again: reused, not re-sent,
    #: when the bytes match.
    candidates: dict[int, Part] = attrs.field(factory=dict)
    #: The part being filled, ``_filled`` bytes of it so far; allocated on first use.
    _part: bytearray | None = attrs.field(default=None, init=False, repr=False)
    _filled: int = attrs.field(default=0, init=False, repr=False)
    #: How many of those bytes have been handed to the hashing threads.
    _hashed: int = attrs.field(default=0, init=False, repr=False)
    #: Part buffers back from parts that settled, filled again rather than allocated again.
    _spare: list[bytearray] = attrs.field(factory=list, init=False, repr=False)
    #: Bytes in the parts settled.
    _done: int = 0
    _validator: str | None = None
    #: Resumed from a saved MD5 state (rather than started from byte 0).
    resumed: bool = False
    closed: bool = False
    _in_flight: PartsInFlight = attrs.field(init=False, repr=False)
    #: The MD5 state right after the last full part settled: what a record may hold.
    _prefix_state: str | None = attrs.field(default=None, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._in_flight = PartsInFlight(
            bucket=self.bucket,
            object_key=self.object_key,
            limit=self.parts_in_flight,
            product_hash=self._parts_md5,
        )
        self._prefix_state = saved_state(self._parts_md5)

    @property
    def size(self) -> int:
        """Bytes held: in the parts settled and in flight, plus the buffer."""
        return self._done + self._in_flight.size + self._filled

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
        """Copy ``chunk`` into the part being filled; hand each full part over as it completes, and
        record the parts settled."""
        self._check_open()
        with memoryview(chunk) as view:
            start = 0
            while start < len(view):
                part = self._part_to_fill()
                taken = min(len(view) - start, self.part_size - self._filled)
                part[self._filled : self._filled + taken] = view[start : start + taken]
                self._filled += taken
                start += taken
                if self._filled == self.part_size:
                    self._send_full_part()
                elif self._filled - self._hashed >= HASH_SLICE:
                    self._hand_to_hashers()
        self._record(self._in_flight.settled())

    def restart(self) -> None:
        """Drop everything held; the parts S3 has become candidates for the bytes that come again."""
        self._check_open()
        self._settle_what_can()
        for part in self.parts:
            self.candidates.setdefault(part.number, part)
        self.parts = []
        self._new_product_hash()
        self._filled = self._hashed = 0
        self._done = 0
        self._validator = None
        if self.upload_id is not None:
            self._save()

    def hexdigest(self) -> str:
        """The MD5 of everything held (the last, short part is sent only by ``commit``)."""
        self._hand_to_hashers()
        self._in_flight.hashed()
        return self._parts_md5.hexdigest()

    # -- used by the store ---------------------------------------------------------------

    def commit(self) -> None:
        """Make the held bytes the object at the key, if their MD5 is the checksum; else raise."""
        self._check_open()
        digest = self.hexdigest()
        if digest != self.checksum:
            where = self.bucket.where(self.object_key)
            msg = f"refused to complete {where}: MD5 {digest}, expected {self.checksum}"
            raise FileStoreError(msg)
        if not self.parts and not self._in_flight.count:
            self._put_whole()
        else:
            self._complete()
        self.ledger.clear(self.granule_id)
        self.close()

    def abort(self) -> None:
        """Abort the multipart upload, if any, and forget its record."""
        self._in_flight.close()
        if self.upload_id is not None:
            self._abort_upload()
        self.ledger.clear(self.granule_id)
        self.parts, self.candidates = [], {}
        self._new_product_hash()
        self._filled = self._hashed = 0
        self._done = 0

    def close(self) -> None:
        """Stop: the parts in flight are waited for, and what settled is recorded for the next attempt."""
        if self.closed:
            return
        self.closed = True
        settled = self._in_flight.close()
        if settled and self.upload_id is not None:
            # Only for the next attempt's sake: the record it finds is already a valid prefix.
            with contextlib.suppress(S2DownloaderError):
                self._record(settled)

    # -- internals -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            msg = f"the partial of {self.bucket.where(self.object_key)} is closed"
            raise FileStoreError(msg)

    def _new_product_hash(self) -> None:
        self._parts_md5 = new_product_hash()
        self._in_flight.reset(self._parts_md5)
        self._prefix_state = saved_state(self._parts_md5)

    def _hand_to_hashers(self) -> None:
        """Hand the bytes of the part being filled that the hashing threads have not seen (a view)."""
        if self._filled > self._hashed:
            assert self._part is not None
            self._in_flight.hash(memoryview(self._part)[self._hashed : self._filled])
            self._hashed = self._filled

    def _settle_what_can(self) -> None:
        """Wait for every part in flight; one that failed is simply not kept (its bytes come again)."""
        while self._in_flight.count:
            try:
                self._record(self._in_flight.all_settled())
            except FileStoreError:
                continue

    def _put_whole(self) -> None:
        self.bucket.put_object(
            self.object_key, bytes(self._held_tail()), checksum=self.checksum, granule_id=self.granule_id
        )
        if self.upload_id is not None:
            self._abort_upload()

    def _complete(self) -> None:
        if self._filled:
            self._send_short_part()
        self._record(self._in_flight.all_settled())
        assert self.upload_id is not None
        self.bucket.complete_upload(self.object_key, self.upload_id, self.parts)

    def _abort_upload(self) -> None:
        upload_id, self.upload_id = self.upload_id, None
        if upload_id is not None:
            self.bucket.abort_upload(self.object_key, upload_id)

    def _part_to_fill(self) -> bytearray:
        """The part being filled: a spare one, or a new one of ``part_size`` (grown parts copy what
        they held)."""
        part = self._part
        if part is not None and len(part) == self.part_size:
            return part
        fresh = self._spare.pop() if self._spare else bytearray(self.part_size)
        if len(fresh) != self.part_size:
            fresh = bytearray(self.part_size)
        if part is not None and self._filled:
            fresh[: self._filled] = part[: self._filled]
        self._part = fresh
        return fresh

    def _held_tail(self) -> memoryview:
        """The bytes of the part being filled (a view: no copy)."""
        return memoryview(self._part or b"")[: self._filled]

    def _next_part_number(self) -> int:
        number = len(self.parts) + self._in_flight.count + 1
        if number > MAX_PARTS:
            msg = (
                f"{self.bucket.where(self.object_key)}: more than {MAX_PARTS} parts of {self.part_size} bytes"
            )
            raise FileStoreError(msg)
        if self.upload_id is None:
            self.upload_id = self.bucket.create_upload(
                self.object_key, self.checksum, granule_id=self.granule_id
            )
            self._save()
        # Room first: never more than ``parts_in_flight`` parts on their way.
        self._record(self._in_flight.room())
        return number

    def _send_full_part(self) -> None:
        """Hand the full part itself over (no copy); the next one is a spare or a new buffer."""
        self._hand_to_hashers()
        number = self._next_part_number()
        assert self._part is not None
        assert self.upload_id is not None
        body, self._part, self._filled, self._hashed = self._part, None, 0, 0
        self._in_flight.send(self.upload_id, number, body, self.candidates.pop(number, None))

    def _send_short_part(self) -> None:
        """The last part, shorter than the others (sent at commit): a copy of its bytes."""
        self._hand_to_hashers()
        number = self._next_part_number()
        assert self.upload_id is not None
        body = bytes(self._held_tail())
        self._filled = self._hashed = 0
        self._in_flight.send(self.upload_id, number, body, self.candidates.pop(number, None))

    def _record(self, settled: Sequence[Settled]) -> None:
        """Add parts that settled (in order) and save the record if a full part is among them."""
        full = False
        for each in settled:
            if isinstance(each.body, bytearray) and len(each.body) == self.part_size:
                self._spare.append(each.body)
            self.parts.append(each.part)
            self._done += each.part.size
            if each.part.size == self.part_size:
                self._prefix_state, full = each.md5_state, True
        if full:
            self._save()

    def _save(self) -> None:
        assert self.upload_id is not None
        # The last, short part (sent at commit) is not recorded: a record holds full parts only
        # (records.py); if completing fails, S3 still lists it as a candidate.
        parts = self.parts if not self.parts or self.parts[-1].size == self.part_size else self.parts[:-1]
        record = UploadRecord(
            upload_id=self.upload_id,
            key=self.object_key,
            md5=self.checksum,
            part_size=self.part_size,
            parts=tuple(parts),
            md5_state=self._prefix_state,
            validator=self._validator,
        )
        self.ledger.save(self.granule_id, record.json())
