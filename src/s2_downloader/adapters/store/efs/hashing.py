"""MD5 for the EFS store: files hashed by streamed reads, and chunks hashed in a thread of their own."""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from typing import Final

__all__ = ["BackgroundMd5", "hash_fd", "new_md5"]

#: Reads (digests, resume seeding) go in chunks this big: large enough that
#: hashlib runs without the GIL and per-call overhead vanishes, small enough to stay flat.
_READ_CHUNK: Final = 4 * 1024 * 1024
#: Chunks queued for the hashing thread: enough slack for reads and writes to run ahead
#: of MD5 a little, few enough that memory stays flat (a chunk is normally 1 MiB).
_HASH_BACKLOG: Final = 4


def new_md5() -> hashlib._Hash:
    """A fresh MD5."""
    # MD5 here is an integrity checksum the hub publishes, not a security measure.
    return hashlib.md5(usedforsecurity=False)


def hash_fd(fd: int, digest: hashlib._Hash) -> int:
    """Feed the file behind ``fd`` from its start into ``digest``, streamed; returns its size."""
    size = os.fstat(fd).st_size
    if size == 0:
        # Every new partial starts empty: skip zeroing a 4 MiB buffer per granule.
        return 0
    # At least one page more than the size, so the read that meets the end fits too.
    buffer = bytearray(min(_READ_CHUNK, size + 4096))
    view = memoryview(buffer)
    offset = 0
    while n := os.preadv(fd, [buffer], offset):
        digest.update(view[:n])
        offset += n
    return offset


class BackgroundMd5:
    """Feeds chunks to an MD5 in a thread of its own, in order; ``finish`` waits for the last."""

    def __init__(self, digest: hashlib._Hash, name: str) -> None:
        self._digest = digest
        self._chunks: queue.Queue[bytes | None] = queue.Queue(_HASH_BACKLOG)
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @classmethod
    def start(cls, digest: hashlib._Hash, name: str) -> BackgroundMd5:
        """Hand ``digest`` to a new hashing thread; the caller must not touch it until ``finish``."""
        hasher = cls(digest, name)
        hasher._thread.start()
        return hasher

    def update(self, chunk: bytes) -> None:
        """Queue ``chunk`` (immutable, so no copy is needed); blocks while the backlog is full."""
        self._chunks.put(chunk)

    def finish(self) -> hashlib._Hash:
        """Wait until every queued chunk is hashed; the digest is the caller's again."""
        self._chunks.put(None)
        self._thread.join()
        if self._failure is not None:
            raise self._failure
        return self._digest

    def _run(self) -> None:
        get, update = self._chunks.get, self._digest.update
        while (chunk := get()) is not None:
            if self._failure is None:
                try:
                    update(chunk)
                except BaseException as exc:  # noqa: BLE001 - handed to finish(); keep draining
                    self._failure = exc
