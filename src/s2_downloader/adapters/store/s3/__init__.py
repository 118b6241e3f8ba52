"""The product store in an S3 bucket (``STORE=s3``): multipart uploads completed only when the MD5 matches.

One module per concept: ``errors`` (botocore's errors as the store's), ``checksums`` (the
MD5s of bodies, parts, ETags and the product in progress), ``bucket`` (the S3 requests and
object checks), ``in_flight`` (parts uploading and hashed on threads of their own),
``records`` (the resume record an ``UploadLedger`` keeps), ``partial`` (the
multipart upload in progress), ``resume`` (opening it again from its record) and ``store``
(``S3Store``, the port they make together).
"""

from s2_downloader.adapters.store.s3.partial import MAX_PARTS, S3Partial
from s2_downloader.adapters.store.s3.store import (
    DEFAULT_PART_SIZE,
    DEFAULT_PARTS_IN_FLIGHT,
    MIN_PART_SIZE,
    S3Store,
)

__all__ = [
    "DEFAULT_PARTS_IN_FLIGHT",
    "DEFAULT_PART_SIZE",
    "MAX_PARTS",
    "MIN_PART_SIZE",
    "S3Partial",
    "S3Store",
]
