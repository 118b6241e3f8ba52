"""The record of an upload in progress, as the S3 store keeps it in an ``UploadLedger`` between attempts.

After each part the upload id, the object key and checksum it was started for, the part
size, the parts done (number, size, ETag), the MD5 state after them and the validator of
the hub's response are saved as one JSON object (PostgreSQL: the granule row's
``store_upload`` column). A record this version did not write, or one that does not hold
together, parses as ``None`` and is started over: never trusted, not even to abort the
upload it names. Holding together means: part numbers 1, 2, 3, ... in order, each part
exactly ``part_size`` bytes (only full parts are recorded before completion) with an MD5
ETag, and a checksum that is an MD5. Whether the part size is one the store would use,
and whether S3 knows the upload, is ``resume.py``'s to check.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from s2_downloader.adapters.store.s3.checksums import is_md5, plain_etag

__all__ = ["Part", "UploadRecord"]


@attrs.frozen
class Part:
    """One part of a multipart upload: its number (from 1), size and ETag."""

    number: int
    size: int
    etag: str

    def json(self) -> dict[str, Any]:
        """The part as the record holds it."""
        return {"number": self.number, "size": self.size, "etag": self.etag}


@attrs.frozen(kw_only=True)
class UploadRecord:
    """The JSON saved after each part."""

    upload_id: str
    key: str
    md5: str
    part_size: int
    parts: tuple[Part, ...]
    md5_state: str | None
    validator: str | None

    def json(self) -> dict[str, Any]:
        """The record as the ledger keeps it."""
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
    def parse(cls, data: Mapping[str, Any]) -> UploadRecord | None:
        """The record, or ``None`` when ``data`` is not one this version wrote."""
        try:
            parts = tuple(
                Part(int(part["number"]), int(part["size"]), str(part["etag"])) for part in data["parts"]
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
        if (
            numbers != list(range(1, len(parts) + 1))
            or record.part_size <= 0
            or not record.upload_id
            or not is_md5(record.md5)
            or any(part.size != record.part_size or not is_md5(plain_etag(part.etag)) for part in parts)
        ):
            return None
        return record
