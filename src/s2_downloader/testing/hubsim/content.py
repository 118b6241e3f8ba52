"""Synthetic product bytes: deterministic, any size, one block of memory.

A ~1 MiB block drawn from the product's seed, repeated and cut to size, so a product of
any size costs one block of memory and is served from ``memoryview`` slices.
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Iterator

import attrs

__all__ = ["PERIOD", "SimProduct", "content_md5", "doubled_block", "pieces", "seed_of"]

# Not a power of two, so the content's period never lines up with chunk sizes or
# resume offsets: a byte served from the wrong place shows up in the checksum.
PERIOD = (1 << 20) + 37


@functools.lru_cache(maxsize=32)
def doubled_block(seed: int) -> bytes:
    """Two periods of the seed's bytes back to back: any slice of up to one period is contiguous."""
    block = random.Random(seed).randbytes(PERIOD)
    return block + block


def pieces(seed: int, start: int, stop: int) -> Iterator[memoryview]:
    """The bytes from ``start`` to ``stop`` of the content drawn from ``seed``, in slices."""
    view = memoryview(doubled_block(seed))
    position = start
    while position < stop:
        at = position % PERIOD
        size = min(PERIOD, stop - position)
        yield view[at : at + size]
        position += size


@functools.lru_cache(maxsize=256)
def content_md5(seed: int, size: int) -> str:
    """The MD5 of ``size`` bytes drawn from ``seed``, lowercase hex."""
    digest = hashlib.md5(usedforsecurity=False)
    for piece in pieces(seed, 0, size):
        digest.update(piece)
    return digest.hexdigest()


def seed_of(product_id: str) -> int:
    """The seed a product's content is drawn from unless one is given."""
    return int.from_bytes(hashlib.sha256(product_id.encode()).digest()[:8], "big")


@attrs.frozen(kw_only=True)
class SimProduct:
    """A product the simulator serves: its id, size, MD5 (lowercase hex) and content seed."""

    id: str
    size: int
    md5: str
    seed: int

    def iter_bytes(self, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        """The product's bytes from ``start`` to ``stop`` (default: the end), in pieces."""
        end = self.size if stop is None else min(stop, self.size)
        for piece in pieces(self.seed, start, end):
            yield bytes(piece)

    def read(self, start: int = 0, stop: int | None = None) -> bytes:
        """The product's bytes from ``start`` to ``stop`` at once; for small slices in tests."""
        return b"".join(self.iter_bytes(start, stop))
