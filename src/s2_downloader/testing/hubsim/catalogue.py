"""The simulator's products: what each serves, its validators, and the faults scripted for it."""

from __future__ import annotations

import collections
import email.utils
import threading
import time
from collections.abc import Iterable

import attrs

from s2_downloader.testing.hubsim.content import SimProduct, content_md5, seed_of
from s2_downloader.testing.hubsim.faults import Fault

__all__ = ["Catalogue", "Entry"]


@attrs.define
class Entry:
    """One product as the simulator holds it."""

    product: SimProduct
    download_faults: collections.deque[Fault] = attrs.field(factory=collections.deque)
    checksum_faults: collections.deque[Fault] = attrs.field(factory=collections.deque)
    checksum_wrong: bool = False
    #: "strong", "weak" or "none": the ETag the product's downloads carry.
    etag: str = "strong"
    #: POSIX time the product last changed (its Last-Modified), or None to send none.
    modified: float | None = attrs.field(factory=lambda: float(int(time.time())))

    def etag_value(self) -> str | None:
        """The ``ETag`` its downloads carry, or ``None``."""
        tag = f'"{self.product.md5}"'
        return {"strong": tag, "weak": f"W/{tag}"}.get(self.etag)

    def last_modified(self) -> str | None:
        """The ``Last-Modified`` its downloads carry, or ``None``."""
        return None if self.modified is None else email.utils.formatdate(self.modified, usegmt=True)


class Catalogue:
    """Products by id; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._products: dict[str, Entry] = {}

    def add_product(
        self,
        product_id: str,
        size: int,
        *,
        seed: int | None = None,
        faults: Iterable[Fault] = (),
        etag: str = "strong",
        last_modified: bool = True,
    ) -> SimProduct:
        """Serve ``size`` synthetic bytes as ``product_id`` (``HubSimulator.add_product``)."""
        chosen = seed_of(product_id) if seed is None else seed
        product = SimProduct(id=product_id, size=size, md5=content_md5(chosen, size), seed=chosen)
        entry = Entry(product=product, etag=etag)
        if not last_modified:
            entry.modified = None
        with self._lock:
            self._products[product_id] = entry
        self.add_faults(product_id, *faults)
        return product

    def replace_product(self, product_id: str, *, seed: int, size: int | None = None) -> SimProduct:
        """Change ``product_id``'s content (``HubSimulator.replace_product``)."""
        with self._lock:
            entry = self._products[product_id]
            old = entry.product
            new_size = old.size if size is None else size
            entry.product = SimProduct(
                id=product_id, size=new_size, md5=content_md5(seed, new_size), seed=seed
            )
            if entry.modified is not None:
                # HTTP dates have one-second resolution: make the change visible in them.
                entry.modified = max(entry.modified + 1, float(int(time.time())))
            return entry.product

    def product(self, product_id: str) -> SimProduct:
        """The product added as ``product_id``; ``KeyError`` when there is none."""
        with self._lock:
            return self._products[product_id].product

    def validators(self, product_id: str) -> tuple[str | None, str | None]:
        """The ``ETag`` and ``Last-Modified`` ``product_id``'s downloads carry now (``None``: not sent)."""
        with self._lock:
            entry = self._products[product_id]
            return entry.etag_value(), entry.last_modified()

    def add_faults(self, product_id: str, *faults: Fault) -> None:
        """Queue more faults for ``product_id``'s endpoints."""
        with self._lock:
            entry = self._products[product_id]
            for fault in faults:
                (entry.checksum_faults if fault.checksum else entry.download_faults).append(fault)

    def set_checksum_wrong(self, product_id: str, *, wrong: bool = True) -> None:
        """Make ``product_id``'s published MD5 wrong for good (or right again)."""
        with self._lock:
            self._products[product_id].checksum_wrong = wrong

    def pop_fault(self, product_id: str, *, checksum: bool) -> Fault | None:
        """The next fault scripted for ``product_id``'s checksum or download endpoint, used up."""
        with self._lock:
            entry = self._products.get(product_id)
            if entry is None:
                return None
            queue = entry.checksum_faults if checksum else entry.download_faults
            return queue.popleft() if queue else None

    def entry(self, product_id: str) -> Entry | None:
        """The product's entry, or ``None``."""
        with self._lock:
            return self._products.get(product_id)
