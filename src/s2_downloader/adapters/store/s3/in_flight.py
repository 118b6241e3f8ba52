"""``PartsInFlight``: a product's parts hashed as they fill and uploaded on threads of their own.

The downloading thread copies the hub's bytes into a part buffer and hands each slice of it
over (``hash``) as it fills; two hashing threads add every slice, in order, one to the whole
product's MD5 and one to the MD5 of the part being filled. So when a part is full its
``Content-MD5`` is ready within one slice, and its upload (``send``) starts at once, on one of
``limit`` upload threads, while the downloading thread goes back to the hub. That thread
waits only when ``limit`` parts are already in flight, so at most ``limit`` parts (plus the
one being filled) are in memory. After each part the product hasher snapshots its state
(what a resume needs).

A part counts as settled once it is uploaded and the product's MD5 has taken it in; parts
settle in order of number, so what has settled is always a contiguous prefix of the product:
only that prefix is ever recorded for a resume. A part whose upload fails is tried again
(``PART_ATTEMPTS`` in all, on top of botocore's own retries) before its error is raised, by
the next call that settles.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import functools
import hashlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Final, TypeVar

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

_T = TypeVar("_T")


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


class _Hasher:
    """One thread that feeds slices to MD5s in the order they come; its first failure sticks."""

    def __init__(self, name: str) -> None:
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._failure: BaseException | None = None

    def update(self, digest: ProductHash, piece: memoryview) -> None:
        self._thread.submit(self._update, digest, piece)

    def then(self, result: Callable[[], _T]) -> concurrent.futures.Future[_T]:
        """``result()`` once every slice handed over before has been hashed (or the failure)."""
        return self._thread.submit(self._then, result)

    def drain(self) -> None:
        """Wait until every slice handed over has been hashed; raise the failure, if any."""
        self.then(lambda: None).result()

    def shutdown(self) -> None:
        self._thread.shutdown(wait=True)

    def _update(self, digest: ProductHash, piece: memoryview) -> None:
        if self._failure is not None:
            return
        try:
            digest.update(piece)
        except Exception as exc:  # noqa: BLE001 - kept and raised by the next ``then``
            self._failure = exc

    def _then(self, result: Callable[[], _T]) -> _T:
        if self._failure is not None:
            msg = f"hashing the product failed: {self._failure}"
            raise FileStoreError(msg) from self._failure
        return result()


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
    #: The whole product's MD5, and the MD5 of the part being filled: one thread each.
    _product_hasher: _Hasher | None = attrs.field(default=None, init=False, repr=False)
    _part_hasher: _Hasher | None = attrs.field(default=None, init=False, repr=False)
    _part_md5: hashlib._Hash = attrs.field(factory=md5, init=False, repr=False)

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

    def hash(self, piece: memoryview) -> None:
        """Add ``piece`` (the next bytes of the part being filled) to the product's MD5 and the part's.

        Its bytes must stay as they are until their part has settled (or ``reset``/``close``)."""
        product, part = self._hashers()
        product.update(self.product_hash, piece)
        part.update(self._part_md5, piece)

    def send(self, upload_id: str, number: int, body: bytes | bytearray, held: Part | None) -> None:
        """Upload ``body`` as part ``number`` (unless ``held`` is S3's part of the same bytes).

        ``body`` holds the bytes handed to ``hash`` since the last part, no more and no less."""
        product, part = self._hashers()
        if self._uploaders is None:
            self._uploaders = ThreadPoolExecutor(self.limit, thread_name_prefix="s3-part")
        digest = part.then(self._part_md5.digest)
        self._part_md5 = md5()
        hashed = product.then(functools.partial(saved_state, self.product_hash))
        upload = self._uploaders.submit(self._upload, upload_id, number, body, held, digest)
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
        """Wait until every slice handed over is in the product's MD5 (uploads may still be running)."""
        if self._product_hasher is not None:
            self._product_hasher.drain()

    def reset(self, product_hash: ProductHash) -> None:
        """Hash from here on into ``product_hash`` and a new part's MD5 (nothing may be in flight)."""
        for hasher in (self._product_hasher, self._part_hasher):
            if hasher is not None:
                with contextlib.suppress(FileStoreError):
                    hasher.drain()
        self.product_hash = product_hash
        self._part_md5 = md5()

    def close(self) -> list[Settled]:
        """Wait for the parts in flight (each ends within its timeouts and tries); the parts that
        settled, in order, up to the first that failed. None is dropped: a part sent is a part a
        resume can keep."""
        for hasher in (self._product_hasher, self._part_hasher):
            if hasher is not None:
                hasher.shutdown()
        if self._uploaders is not None:
            self._uploaders.shutdown(wait=True)
        self._uploaders = self._product_hasher = self._part_hasher = None
        settled = []
        with contextlib.suppress(Exception):
            while self._pending:
                settled.append(self._settle_oldest())
        self._pending.clear()
        return settled

    # -- internals -----------------------------------------------------------------------

    def _hashers(self) -> tuple[_Hasher, _Hasher]:
        if self._product_hasher is None or self._part_hasher is None:
            self._product_hasher, self._part_hasher = _Hasher("s3-md5"), _Hasher("s3-part-md5")
        return self._product_hasher, self._part_hasher

    def _settle_oldest(self) -> Settled:
        pending = self._pending.popleft()  # gone from the queue whether it settled or failed
        state = pending.hashed.result()
        etag = pending.upload.result()
        return Settled(Part(pending.number, len(pending.body), etag), state, pending.body)

    def _upload(
        self,
        upload_id: str,
        number: int,
        body: bytes | bytearray,
        held: Part | None,
        digest: concurrent.futures.Future[bytes],
    ) -> str:
        part_md5 = digest.result()
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
