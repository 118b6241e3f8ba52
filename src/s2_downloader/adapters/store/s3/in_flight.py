"""``PartsInFlight``: a product's parts uploaded and hashed on their own threads, settled in order.

The downloading thread hands each full part over and goes back to the hub at once; it waits
only when ``limit`` parts are already in flight, so at most ``limit`` parts (plus the one
being filled) are in memory. Each part's ``Content-MD5`` is computed by the thread that
uploads it. The whole product's MD5 must see the parts in order, so one hashing thread
updates it part after part and snapshots its state after each (what a resume needs).

A part counts as settled once it is uploaded and hashed; parts settle in order of number, so
what has settled is always a contiguous prefix of the product: only that prefix is ever
recorded for a resume. A part whose upload fails is tried again (``PART_ATTEMPTS`` in all,
on top of botocore's own retries) before its error is raised, by the next call that settles.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Final

import attrs

from s2_downloader.adapters.store.s3.bucket import Bucket
from s2_downloader.adapters.store.s3.checksums import ProductHash, md5, plain_etag, saved_state
from s2_downloader.adapters.store.s3.records import Part
from s2_downloader.domain.errors import FileStoreError

__all__ = ["PART_ATTEMPTS", "PartsInFlight", "Settled"]

#: Tries of one part's upload within an attempt (each with botocore's own retries inside).
PART_ATTEMPTS: Final = 3
#: The pause before the second try of a part; it doubles before each further one.
PART_RETRY_PAUSE_SECONDS: Final = 0.5


@attrs.frozen
class Settled:
    """A part uploaded and hashed, and the product hash's state right after it (``None``: not resumable)."""

    part: Part
    md5_state: str | None
    #: The part's bytes, done with: a full part's buffer goes back to be filled again.
    body: bytes | bytearray = attrs.field(repr=False)


@attrs.frozen
class _Pending:
    number: int
    body: bytes | bytearray
    upload: concurrent.futures.Future[str]
    hashed: concurrent.futures.Future[str | None]

    def done(self) -> bool:
        return self.upload.done() and self.hashed.done()


@attrs.define(eq=False, kw_only=True)
class PartsInFlight:
    """Up to ``limit`` parts of one multipart upload on their way at once; see the module docstring."""

    bucket: Bucket = attrs.field(repr=False)
    object_key: str
    limit: int
    product_hash: ProductHash = attrs.field(repr=False)
    pause: Callable[[float], None] = attrs.field(default=time.sleep, repr=False)
    _pending: collections.deque[_Pending] = attrs.field(factory=collections.deque, init=False, repr=False)
    _uploaders: ThreadPoolExecutor | None = attrs.field(default=None, init=False, repr=False)
    _hasher: ThreadPoolExecutor | None = attrs.field(default=None, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.limit < 1:
            msg = f"parts in flight must be at least 1, not {self.limit}"
            raise ValueError(msg)

    @property
    def count(self) -> int:
        """Parts handed over and not yet settled."""
        return len(self._pending)

    @property
    def size(self) -> int:
        """Bytes in the parts not yet settled."""
        return sum(len(pending.body) for pending in self._pending)

    def room(self) -> list[Settled]:
        """Wait until fewer than ``limit`` parts are in flight; the parts settled meanwhile, in order."""
        settled = self.settled()
        while len(self._pending) >= self.limit:
            settled.append(self._settle_oldest())
        return settled

    def send(self, upload_id: str, number: int, body: bytes | bytearray, held: Part | None) -> None:
        """Upload ``body`` as part ``number`` (unless ``held`` is S3's part of the same bytes) and hash it."""
        if self._uploaders is None or self._hasher is None:
            self._uploaders = ThreadPoolExecutor(self.limit, thread_name_prefix="s3-part")
            self._hasher = ThreadPoolExecutor(1, thread_name_prefix="s3-md5")
        upload = self._uploaders.submit(self._upload, upload_id, number, body, held)
        hashed = self._hasher.submit(self._hash, body)
        self._pending.append(_Pending(number, body, upload, hashed))

    def settled(self) -> list[Settled]:
        """The parts that have settled since the last call, in order, without waiting."""
        settled = []
        while self._pending and self._pending[0].done():
            settled.append(self._settle_oldest())
        return settled

    def all_settled(self) -> list[Settled]:
        """Wait for every part in flight; the parts settled, in order. The first failure is raised."""
        settled = []
        while self._pending:
            settled.append(self._settle_oldest())
        return settled

    def hashed(self) -> None:
        """Wait until every part handed over is in the product hash (uploads may still be running)."""
        for pending in list(self._pending):
            pending.hashed.result()

    def close(self) -> list[Settled]:
        """Wait for the parts in flight (each ends within its timeouts and tries); the parts that
        settled, in order, up to the first that failed. None is dropped: a part sent is a part a
        resume can keep."""
        for executor in (self._uploaders, self._hasher):
            if executor is not None:
                executor.shutdown(wait=True)
        self._uploaders = self._hasher = None
        settled = []
        with contextlib.suppress(Exception):
            while self._pending:
                settled.append(self._settle_oldest())
        self._pending.clear()
        return settled

    # -- internals -----------------------------------------------------------------------

    def _settle_oldest(self) -> Settled:
        pending = self._pending.popleft()  # gone from the queue whether it settled or failed
        state = pending.hashed.result()
        etag = pending.upload.result()
        return Settled(Part(pending.number, len(pending.body), etag), state, pending.body)

    def _hash(self, body: bytes | bytearray) -> str | None:
        self.product_hash.update(body)
        return saved_state(self.product_hash)

    def _upload(self, upload_id: str, number: int, body: bytes | bytearray, held: Part | None) -> str:
        part_md5 = md5(body).digest()
        if held is not None and held.size == len(body) and plain_etag(held.etag) == part_md5.hex():
            return held.etag  # S3 already has these very bytes as this part
        pause = PART_RETRY_PAUSE_SECONDS
        for attempt in range(1, PART_ATTEMPTS + 1):
            try:
                return self.bucket.upload_part(self.object_key, upload_id, number, body, part_md5)
            except FileStoreError as exc:
                if attempt == PART_ATTEMPTS:
                    # The server's own words stay first: they are what ``last_error`` shows.
                    raise type(exc)(f"{exc} (part {number}, tried {PART_ATTEMPTS} times)") from exc
                self.pause(pause)
                pause *= 2
        raise AssertionError  # pragma: no cover - the loop returns or raises
