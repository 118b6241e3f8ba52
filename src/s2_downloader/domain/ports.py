"""The ports: small Protocols for what the core needs from the world.

Most are the use case's own. Two groups serve others through the same inward arrow: the
store's chores the entry points ask for (``StoreChores``), and the ``UploadLedger`` the S3
store keeps its resume record in, so that neither adapter depends on the other.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol

import attrs

from s2_downloader.domain.granule import Granule
from s2_downloader.domain.lifecycle import Event
from s2_downloader.domain.request import DownloadRequest

__all__ = [
    "Cancellation",
    "Clock",
    "FailedCleanup",
    "FileKey",
    "Files",
    "FinalFiles",
    "GranuleStore",
    "Hub",
    "KeyLeases",
    "Leftover",
    "LeftoverReport",
    "LeftoverSweep",
    "Leftovers",
    "Partial",
    "PartialFiles",
    "ProductStream",
    "Progress",
    "Store",
    "StoreChores",
    "StoreHealth",
    "UploadLedger",
    "UploadQueue",
]


class GranuleStore(Protocol):
    """The granule table: leases and recorded outcomes."""

    def claim(self, granule_id: str, owner: str, now: dt.datetime, lease_seconds: float) -> Granule | None:
        """Take the lease if the granule is free, else change nothing.

        Returns the granule as it is after the attempt (the caller holds the lease
        when ``granule.held_by(owner)`` and the state is ``claimed``), or ``None``
        when no such granule exists.
        """
        ...

    def heartbeat(self, granule_id: str, owner: str, now: dt.datetime, lease_seconds: float) -> bool:
        """Extend ``owner``'s lease; ``False`` when ``owner`` no longer holds it."""
        ...

    def record(self, granule_id: str, event: Event) -> Granule:
        """Apply ``event`` atomically; raise ``InvalidTransition`` if it is not legal now."""
        ...

    def release(self, granule_id: str, owner: str) -> bool:
        """Hand the granule back unfinished; ``False`` when ``owner`` did not hold it."""
        ...


@attrs.frozen(kw_only=True)
class FileKey:
    """Which product: ``<mount>/<granule_id>/<filename>`` on EFS, a key rendered from both on S3."""

    granule_id: str
    filename: str


class ProductStream(Protocol):
    """An open product download: the bytes from ``offset`` up to ``total_size``."""

    @property
    def offset(self) -> int:
        """The byte the body starts at (0 when the hub ignored the Range asked for)."""
        ...

    @property
    def total_size(self) -> int | None:
        """The product's full size when the hub said it."""
        ...

    @property
    def validator(self) -> str | None:
        """The product's strong ETag, else its Last-Modified, as the hub sent them; ``None`` without.

        Stored with a partial that starts here, and passed back on resume so that a product
        replaced between attempts restarts from byte 0 instead of being spliced.
        """
        ...

    def chunks(self) -> Iterator[bytes]:
        """The body in chunks; raises ``HubError`` when the transfer breaks."""
        ...


class Hub(Protocol):
    """The product hub (DHuS or CDSE)."""

    def checksum(self, granule_id: str, *, deadline: float | None = None) -> str:
        """The MD5 the hub publishes for the product, lowercase hex; raises ``HubError``.

        ``deadline`` is a ``time.monotonic()`` instant every blocking step must return by;
        past it the call raises ``DeadlineExceeded``.
        """
        ...

    def open_product(
        self,
        request: DownloadRequest,
        offset: int,
        *,
        validator: str | None = None,
        deadline: float | None = None,
    ) -> AbstractContextManager[ProductStream]:
        """Start streaming the product from ``offset``; raises ``HubError``.

        With a ``validator`` (sent as ``If-Range``) a hub whose product changed answers from
        byte 0, and the stream's ``offset`` says so. ``deadline`` bounds the request and
        every read of the body, as for ``checksum``.
        """
        ...

    def product_name(self, granule_id: str, *, deadline: float | None = None) -> str | None:
        """The product's name as the hub lists it (``None`` when it lists none); raises ``HubError``.

        ``NOT_FOUND`` when the hub does not know ``granule_id``. ``deadline`` as for ``checksum``.
        """
        ...


class Partial(Protocol):
    """Data in progress for one product, open for appending; it hashes what it holds as bytes arrive."""

    @property
    def size(self) -> int:
        """Bytes held so far: where the next request to the hub starts."""
        ...

    def write(self, chunk: bytes) -> None:
        """Append ``chunk``."""
        ...

    @property
    def validator(self) -> str | None:
        """The validator of the response the held bytes came from; ``None`` when unknown."""
        ...

    def set_validator(self, validator: str | None) -> None:
        """Record the validator of the response a fresh (empty) partial is about to hold."""
        ...

    def expect_size(self, total_size: int | None) -> None:
        """Say the product's full size (when the hub said it) before a fresh partial's first byte.

        A store that sends the product in pieces sizes them from it; others ignore it.
        """
        ...

    def restart(self) -> None:
        """Drop everything held and start again from byte 0."""
        ...

    def hexdigest(self) -> str:
        """The MD5 of everything held, lowercase hex; flushes to stable storage first."""
        ...


class PartialFiles(Protocol):
    """Data in progress, under a name that can never be taken for a final product."""

    def open_partial(self, key: FileKey, *, checksum: str) -> AbstractContextManager[Partial]:
        """Open the partial for ``key``, resuming what an earlier attempt left.

        ``checksum`` is the MD5 the product must have; a store may keep it with the data in
        progress (S3 sets it as the object's ``md5`` metadata) and refuses to promote
        anything else.
        """
        ...

    def promote(self, key: FileKey) -> None:
        """Make the partial (still open, its digest equal to the checksum) the final product, atomically."""
        ...

    def discard_partial(self, key: FileKey) -> None:
        """Drop the partial, if there is one (S3: abort its multipart upload)."""
        ...


class FinalFiles(Protocol):
    """Products under their final name."""

    def final_digest(self, key: FileKey) -> str | None:
        """The MD5 of the final product, or ``None`` when there is none (or its MD5 cannot be known)."""
        ...

    def discard_final(self, key: FileKey) -> None:
        """Take a final product whose digest does not match out of the way of a new download.

        EFS deletes it (and any partial); S3 leaves the object alone until a verified upload
        replaces it.
        """
        ...


class FailedCleanup(Protocol):
    """What a granule that failed for good leaves in the store, cleared by the worker that fails it."""

    def remove(self, key: FileKey) -> None:
        """Clean up after a granule that failed for good: its partial (S3: the open multipart
        upload is aborted) and, where the store deletes unverified products (EFS), the final file.
        """
        ...


class StoreHealth(Protocol):
    """Whether the store as a whole works: what tells an outage from an error of one granule's."""

    def check_health(self) -> None:
        """Raise ``FileStoreError`` (saying what failed) unless the store as a whole can be used now.

        S3: ``HeadBucket`` answers. EFS: the mount is a directory a file can be created in.
        After a store error the use case asks: a failing check is an outage (nothing counted),
        a passing one means the error was the granule's own (docs/interface.md section 6).
        """
        ...


class Files(FinalFiles, PartialFiles, FailedCleanup, StoreHealth, Protocol):
    """The product store (an EFS mount or an S3 bucket) as an attempt uses it: products, data in
    progress, and the health check that classifies its errors."""


# -- the store's chores, for the entry points ------------------------------------------


@attrs.frozen(kw_only=True)
class Leftover:
    """Data in progress that outlived the attempt that began it."""

    #: Where it is: the object key of an open multipart upload.
    where: str
    #: The multipart upload's id; ``None`` for a store without uploads.
    upload_id: str | None
    #: When it was begun.
    since: dt.datetime


@attrs.frozen(kw_only=True)
class Leftovers:
    """Leftovers of one kind, as ``status`` lists them under ``kind`` ("open multipart uploads")."""

    kind: str
    items: tuple[Leftover, ...]


class LeftoverSweep(Protocol):
    """Clearing away what attempts that are gone left behind, whichever granule they were for.

    A store whose leftovers are cleared otherwise (S3: the bucket's lifecycle rule, and each
    worker aborting its own granule's uploads) sweeps nothing. Neither method raises for a
    place that cannot be read: it is logged and skipped, since a sweep must never stop a
    start or fail an invocation.
    """

    def sweep_leftovers(self) -> int:
        """Sweep the whole store now (a runner's start); how many leftovers were removed."""
        ...

    def sweep_some_leftovers(self) -> int:
        """Sweep the next small share (after a Lambda invocation), the whole store over many calls."""
        ...


class LeftoverReport(Protocol):
    """What ``status`` lists about the store: leftovers that cost money, worth an operator's look."""

    def leftovers(self, older_than_seconds: float, *, now: dt.datetime | None = None) -> Leftovers | None:
        """Leftovers begun more than ``older_than_seconds`` before ``now`` (default: the current time).

        ``None`` when the store has none worth listing (EFS: its partials are swept by the
        workers, and ``status`` runs where the database is, not where the mount is).
        Raises ``FileStoreError`` when they cannot be listed, saying what could not be.
        """
        ...


class StoreChores(LeftoverSweep, LeftoverReport, Protocol):
    """What the entry points ask of the store besides an attempt's files.

    The store's health check (``StoreHealth``) is a Protocol of its own, part of ``Files``
    because the use case asks it after a store error; the composition root asks it too,
    when it builds a worker's store.
    """


class Store(Files, StoreChores, Protocol):
    """The product store as the composition root builds it: ``Files`` for attempts, chores for the rest."""


# -- what a store keeps between attempts -----------------------------------------------


class UploadLedger(Protocol):
    """Where a store keeps the record of a granule's upload in progress between attempts.

    The S3 store's port, not the use case's: it records the multipart upload id and the
    parts done, and reads them back to resume. The record is a JSON object the store
    defines and the ledger keeps as it is (PostgreSQL: the granule row's ``store_upload``);
    a granule the table does not hold has no record.
    """

    def load(self, granule_id: str) -> Mapping[str, Any] | None:
        """The record last saved for the granule (a copy of its own), or ``None``."""
        ...

    def save(self, granule_id: str, record: Mapping[str, Any]) -> None:
        """Replace the granule's record with ``record``."""
        ...

    def clear(self, granule_id: str) -> None:
        """Forget the granule's record, if it has one."""
        ...


class KeyLeases(Protocol):
    """Who may upload to an object key now: at most one granule at a time (docs/interface.md section 4).

    The S3 store's port, not the use case's: two granules whose key template yields the same
    key must not upload to it together, and one must not replace the other's verified
    product. Decided in PostgreSQL (a small lease table, times on the database's clock).
    """

    def take(self, key: str, granule_id: str, seconds: float) -> str | None:
        """Take or renew ``key``'s lease for ``granule_id`` for ``seconds``.

        ``None`` when ``granule_id`` holds it now; else the id of the granule that does.
        """
        ...

    def give_back(self, key: str, granule_id: str) -> None:
        """Let go of ``key``'s lease if ``granule_id`` holds it."""
        ...

    def verified(self, granule_id: str) -> bool:
        """Whether the granule table holds ``granule_id`` as verified."""
        ...


# -- the rest of the use case's world ---------------------------------------------------


class UploadQueue(Protocol):
    """The TO_UPLOAD queue."""

    def send_upload(self, granule_id: str, filename: str) -> None:
        """Announce a verified product to the uploader."""
        ...


class Clock(Protocol):
    """Wall time for leases, monotonic time for durations."""

    def now(self) -> dt.datetime:
        """The current time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        ...


class Cancellation(Protocol):
    """Asked between chunks: set when the attempt must stop and hand the granule back."""

    def is_set(self) -> bool:
        """Whether to stop now."""
        ...

    def deadline(self) -> float | None:
        """The ``time.monotonic()`` instant by which every blocking call must return; ``None``: none."""
        ...


class Progress(Protocol):
    """Told how a transfer goes, for the live display."""

    def transferred(self, granule_id: str, done: int, total: int | None) -> None:
        """``done`` bytes of ``total`` are now in the partial file."""
        ...
