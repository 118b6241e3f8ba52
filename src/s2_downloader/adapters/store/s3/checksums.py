"""The MD5s the S3 store deals in: a body's, a part's ``Content-MD5``, an ETag's, the product's."""

from __future__ import annotations

import base64
import hashlib
from typing import Final, TypeAlias

from s2_downloader.adapters.store import md5state

__all__ = ["ProductHash", "content_md5", "is_md5", "md5", "new_product_hash", "plain_etag", "saved_state"]

_HEX: Final = frozenset("0123456789abcdef")

#: The MD5 of the product so far: OpenSSL's, whose state can be saved, else hashlib's.
ProductHash: TypeAlias = "md5state.ResumableMd5 | hashlib._Hash"


def md5(data: bytes | bytearray | memoryview = b"") -> hashlib._Hash:
    """hashlib's MD5 of ``data``."""
    # An integrity checksum the hub publishes and S3 checks, not a security measure.
    return hashlib.md5(data, usedforsecurity=False)


def content_md5(digest: bytes) -> str:
    """The ``Content-MD5`` header for a body whose raw MD5 is ``digest``."""
    return base64.b64encode(digest).decode("ascii")


def plain_etag(etag: str) -> str:
    """``etag`` without its quotes, lower case."""
    return etag.strip('"').lower()


def is_md5(text: str) -> bool:
    """Whether ``text`` is an MD5 in lowercase hex."""
    return len(text) == 32 and set(text) <= _HEX


def saved_state(product_hash: ProductHash) -> str | None:
    """The hash's state as text, when it is one whose state can be saved (OpenSSL's)."""
    return product_hash.state() if isinstance(product_hash, md5state.ResumableMd5) else None


def new_product_hash() -> ProductHash:
    """A fresh MD5 for a product: one whose state can be saved when libcrypto is there."""
    return md5state.ResumableMd5() if md5state.available() else md5()
