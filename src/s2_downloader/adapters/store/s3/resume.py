"""Opening a granule's upload again: what the ledger recorded, checked against what S3 still holds.

The next attempt lists the upload's parts, keeps the recorded ones that S3 still has with
the same size and ETag, restores the MD5 state and carries on from the end of the last one
(the use case asks the hub for the rest with a Range request). The MD5 state is OpenSSL's
``MD5_CTX`` (``adapters/store/md5state.py``), because hashlib cannot save one and
re-reading the prefix would spend the hub's quota; it is used only when its bit count is
8 x the bytes of the kept parts. When that state cannot be used (no libcrypto, a count
that disagrees, or a part went missing), the attempt starts from byte 0 of the hub, but the
parts S3 holds become candidates that are reused, not re-sent, when the same bytes come
again.

A record is never trusted: one that does not parse (``records.py``), whose part size is
outside what the store uses (``min_part_size`` up to ``largest_part_size``), or that names
an upload S3 does not know (``NoSuchUpload``) or whose listed parts hold none of the
recorded ones (another upload's id) is forgotten, not aborted, and the product restarts
from 0 with a new upload. A record for another key or checksum is aborted and forgotten.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from s2_downloader.adapters.store import md5state
from s2_downloader.adapters.store.s3.bucket import Bucket
from s2_downloader.adapters.store.s3.checksums import plain_etag
from s2_downloader.adapters.store.s3.partial import MAX_PARTS, S3Partial, largest_part_size
from s2_downloader.adapters.store.s3.records import Part, UploadRecord
from s2_downloader.domain.ports import UploadLedger

__all__ = ["resume", "trusted_record"]


def resume(
    bucket: Bucket,
    ledger: UploadLedger,
    *,
    granule_id: str,
    object_key: str,
    checksum: str,
    part_size: int,
    min_part_size: int,
    parts_in_flight: int = 1,
) -> S3Partial:
    """The granule's upload in progress, resumed from its record when S3 still agrees with it, else fresh."""
    fresh = S3Partial(
        bucket=bucket,
        ledger=ledger,
        granule_id=granule_id,
        object_key=object_key,
        checksum=checksum,
        part_size=part_size,
        parts_in_flight=parts_in_flight,
    )
    saved = ledger.load(granule_id)
    if saved is None:
        # An upload of the key that no record names is not aborted: it may be another
        # granule's (two granules can share a key), and S3 cannot say whose an open upload
        # is. One this granule began but never recorded is left to the bucket's lifecycle rule.
        return fresh
    record = trusted_record(saved, part_size=part_size, min_part_size=min_part_size)
    if record is None:
        # Corrupt: trusted for nothing, not even to name an upload to abort.
        ledger.clear(granule_id)
        return fresh
    if record.key != object_key or record.md5 != checksum:
        # Another key or another checksum (the metadata would be wrong): start over.
        bucket.abort_upload(record.key, record.upload_id)
        ledger.clear(granule_id)
        return fresh
    listed = bucket.list_parts(object_key, record.upload_id)
    kept = [] if listed is None else _kept_parts(record, listed)
    if listed is None or (record.parts and not kept):
        # NoSuchUpload, or an upload holding none of the recorded parts: not the one this
        # granule began (S3 cannot say whose it is), so it is left alone.
        ledger.clear(granule_id)
        return fresh
    restored = (
        md5state.ResumableMd5.restore(record.md5_state)
        if record.md5_state is not None and len(kept) == len(record.parts)
        else None
    )
    if restored is not None and restored.bit_count != 8 * sum(part.size for part in kept):
        # A state that does not account for exactly the kept parts' bytes is not used.
        restored = None
    same_upload = attrs.evolve(fresh, part_size=record.part_size, upload_id=record.upload_id)
    if restored is None or not kept:
        # Without the MD5 state the bytes come again from byte 0: parts S3 holds with the
        # same bytes are reused as they arrive, not sent again.
        return attrs.evolve(same_upload, candidates=listed)
    return attrs.evolve(
        same_upload,
        parts=kept,
        parts_md5=restored,
        done=sum(part.size for part in kept),
        validator=record.validator,
        resumed=True,
        # Parts sent after the last record (a crash in between) may hold the next bytes.
        candidates={number: part for number, part in listed.items() if number > len(kept)},
    )


def _kept_parts(record: UploadRecord, listed: dict[int, Part]) -> list[Part]:
    """The recorded parts, up to the first that S3 no longer holds with the same size and ETag."""
    kept: list[Part] = []
    for part in record.parts:
        there = listed.get(part.number)
        if there is None or there.size != part.size or plain_etag(there.etag) != plain_etag(part.etag):
            break
        kept.append(part)
    return kept


def trusted_record(saved: Mapping[str, Any], *, part_size: int, min_part_size: int) -> UploadRecord | None:
    """The record, when it parses and its part size and count are ones this store would have used."""
    record = UploadRecord.parse(saved)
    if record is None:
        return None
    if not min_part_size <= record.part_size <= largest_part_size(part_size) or len(record.parts) > MAX_PARTS:
        return None
    return record
