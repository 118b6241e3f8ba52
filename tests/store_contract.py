"""The product store contract: one Hypothesis state machine, run against every ``Store`` implementation.

Each implementation brings a ``StoreHarness``: how to build the store as a freshly started
process would (same bucket, mount or dicts; nothing in memory), what sits under the final
name, how to put a foreign product there, how many uploads it holds open, and how to make
the partial look left behind by an attempt that is gone. Crashes are
``Crash`` (a ``BaseException``, like kill -9) raised at the n-th call counted by the
harness's ``CrashPlan``: the machine counts its own calls to the store, and a harness may
count more from inside (the fake's methods, each S3 request before it is sent and after its
answer, each save of the upload record).

The invariants: the final name holds nothing but the verified product or the foreign
object that was put there (never bytes in progress, never bytes that did not match), a
verified product stays, and a resumed partial holds exactly a prefix of what was written
to it, so its digest is the digest of those bytes and whatever follows. The chores keep
them too: a sweep takes an abandoned partial (where the store sweeps) and nothing else,
and every upload the store holds open is among the leftovers it reports.
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
from typing import ClassVar, Protocol

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from s2_downloader.domain.ports import FileKey, Store
from tests.unit.fakes import Crash, CrashPlan, md5

__all__ = ["StoreHarness", "StoreMachine", "store_machine"]

_serial = itertools.count()
#: Late enough that every leftover is older than any age asked about.
_FAR_FUTURE = dt.datetime(2999, 1, 1, tzinfo=dt.UTC)
#: Products up to this size are drawn byte by byte; larger ones expand a drawn seed.
_DRAWN_BYTES = 4096


class StoreHarness(Protocol):
    """What the contract needs to know about one store implementation."""

    crashes: CrashPlan
    #: A final product that does not match stays (S3) rather than being deleted (EFS).
    keeps_mismatched_finals: bool
    #: A whole sweep removes an abandoned partial (EFS); a store cleared otherwise (S3) sweeps nothing.
    sweeps_partials: bool
    #: Products up to this many bytes, written in chunks up to ``max_chunk``.
    max_size: int
    max_chunk: int

    def store(self) -> Store:
        """The store as a newly started process builds it: the same persistent state, nothing else."""
        ...

    def final_bytes(self, key: FileKey) -> bytes | None:
        """What is under the final name of ``key`` (read behind the store's back)."""
        ...

    def put_foreign(self, key: FileKey, content: bytes) -> None:
        """Put ``content`` under the final name as another program would."""
        ...

    def open_uploads(self, key: FileKey) -> int:
        """Data in progress the store keeps outside the partial (S3's multipart uploads); 0 otherwise."""
        ...

    def abandon(self, key: FileKey) -> None:
        """Make the partial of ``key``, if any, look left by an attempt that is gone (old enough to sweep)."""
        ...


def _flipped(data: bytes) -> bytes:
    return bytes(b ^ 0x5A for b in data)


class StoreMachine(RuleBasedStateMachine):
    """Writes, crashes at any call, resumes, mismatches, commits, discards, final digests."""

    harness: ClassVar[StoreHarness]

    def __init__(self) -> None:
        super().__init__()
        self.h = self.harness
        self.h.crashes.arm(0)
        self.store = self.h.store()
        self.key = FileKey(granule_id=f"g{next(_serial)}", filename="product.zip")
        self.product = b""
        self.checksum = md5(b"")
        #: What the partial may hold: it holds a prefix of this.
        self.written = b""
        #: What the final name holds; after a crash in promote, either of ``maybe``.
        self.final: bytes | None = None
        self.maybe: tuple[bytes | None, ...] = ()
        self.foreign: bytes | None = None
        #: Uploads a crash may have left unrecorded (begun, the process gone before its record
        #: was saved): no worker aborts them, since S3 cannot say whose they are; the bucket's
        #: lifecycle rule does. At most one per crash.
        self.orphans = 0

    @initialize(data=st.data())
    def choose_product(self, data: st.DataObject) -> None:
        """A product of up to a few parts (sizes drawn evenly, so that most cross part boundaries)."""
        size = data.draw(st.integers(min_value=0, max_value=self.h.max_size), label="size")
        if size <= _DRAWN_BYTES:
            self.product = data.draw(st.binary(min_size=size, max_size=size), label="product")
        else:
            # Megabytes (a real S3 server's 5 MiB parts) are more than Hypothesis draws byte by
            # byte: a drawn seed expands into them, so a failure still replays exactly.
            seed = data.draw(st.integers(min_value=0, max_value=2**32 - 1), label="seed")
            self.product = random.Random(seed).randbytes(size)
        self.checksum = md5(self.product)

    # -- helpers ---------------------------------------------------------------------

    def _tick(self, name: str) -> None:
        self.h.crashes.tick(f"machine.{name}")

    def _crashed(self) -> None:
        self.h.crashes.arm(0)
        self.store = self.h.store()
        self.orphans += 1

    # -- rules -----------------------------------------------------------------------

    @rule(
        cut=st.one_of(st.just(1 << 30), st.integers(min_value=0, max_value=1 << 16)),
        chunk=st.integers(min_value=1, max_value=1 << 16),
        corrupt=st.booleans(),
        crash_at=st.integers(min_value=0, max_value=14),
    )
    def attempt(self, cut: int, chunk: int, corrupt: bool, crash_at: int) -> None:
        """Open (or resume) the partial, write up to ``cut``; at the end promote a match, else discard."""
        # A cut anywhere in the product, whatever its scale: 0..2^16 stretched over 0..max_size.
        self._attempt(
            cut if cut == 1 << 30 else (cut * (self.h.max_size + 1)) >> 16, chunk, corrupt, crash_at
        )

    @rule(
        chunk=st.integers(min_value=1, max_value=1 << 16),
        crash_at=st.integers(min_value=0, max_value=14),
        new_process=st.booleans(),
    )
    def resume_to_the_end(self, chunk: int, crash_at: int, new_process: bool) -> None:
        """Perhaps in a new process (the store built again), resume and write the right bytes to the end."""
        if new_process:
            self.store = self.h.store()
        self._attempt(len(self.product), chunk, False, crash_at)

    def _attempt(self, cut: int, chunk: int, corrupt: bool, crash_at: int) -> None:
        chunk = 1 + chunk % self.h.max_chunk
        source = _flipped(self.product) if corrupt else self.product
        before = self.final
        self.h.crashes.arm(crash_at)
        promoting = False
        try:
            self._tick("open_partial")
            with self.store.open_partial(self.key, checksum=self.checksum) as partial:
                held = partial.size
                assert held <= len(self.written), (held, len(self.written))
                self.written = self.written[:held]
                if held == 0:
                    partial.set_validator('"v1"')
                    partial.expect_size(len(self.product))
                end = max(held, min(cut, len(self.product)))
                for start in range(held, end, chunk):
                    piece = source[start : min(start + chunk, end)]
                    self.written += piece  # a crash inside write may keep it or not
                    self._tick("write")
                    partial.write(piece)
                assert partial.size == len(self.written)
                self._tick("hexdigest")
                digest = partial.hexdigest()
                assert md5(self.written) == digest
                if end < len(self.product):
                    return  # interrupted: left for a resume
                if digest == self.checksum:
                    promoting = True
                    self._tick("promote")
                    self.store.promote(self.key)
                    self.final, self.written = self.product, b""
                    assert self.h.open_uploads(self.key) <= self.orphans
                else:
                    self._tick("discard_partial")
                    self.store.discard_partial(self.key)
                    self.written = b""
                    assert self.h.open_uploads(self.key) <= self.orphans
        except Crash:
            if promoting:
                self.maybe = (before, self.product)
            self._crashed()
        finally:
            self.h.crashes.arm(0)

    @precondition(lambda self: self.final is None and not self.maybe)
    @rule(content=st.binary(min_size=1, max_size=64))
    def put_foreign(self, content: bytes) -> None:
        """Another program leaves a product under the final name."""
        if content == self.product:
            content += b"!"
        self.h.put_foreign(self.key, content)
        self.final = self.foreign = content

    @precondition(lambda self: self.final is not None and self.final == self.foreign and not self.maybe)
    @rule()
    def discard_final(self) -> None:
        """A final product that does not match is set aside: deleted (EFS), left (S3)."""
        self.store.discard_final(self.key)
        if not self.h.keeps_mismatched_finals:
            self.final = None
            self.written = b""

    @precondition(lambda self: self.final != self.product and not self.maybe)
    @rule()
    def remove(self) -> None:
        """The granule failed for good: nothing in progress is left, a foreign product only where kept."""
        self.store.remove(self.key)
        self.written = b""
        if not self.h.keeps_mismatched_finals:
            self.final = None
        assert self.h.open_uploads(self.key) <= self.orphans

    @rule()
    def discard(self) -> None:
        """Discarding drops the partial and every upload in progress."""
        self.store.discard_partial(self.key)
        self.written = b""
        assert self.h.open_uploads(self.key) <= self.orphans

    @rule(whole=st.booleans())
    def sweep(self, whole: bool) -> None:
        """An attempt that is gone left the partial: a sweep may take it, and never a final product."""
        self.h.abandon(self.key)
        swept = self.store.sweep_leftovers() if whole else self.store.sweep_some_leftovers()
        assert swept >= 0
        if whole and self.h.sweeps_partials:
            self.written = b""  # the next attempt finds nothing to resume

    # -- invariants ------------------------------------------------------------------

    @invariant()
    def every_open_upload_is_reported(self) -> None:
        """The leftovers a store reports (for ``status``) include every upload it holds open."""
        report = self.store.leftovers(0, now=_FAR_FUTURE)
        assert self.h.open_uploads(self.key) <= len(() if report is None else report.items)

    @invariant()
    def the_final_name_holds_only_verified_or_foreign_bytes(self) -> None:
        """Never bytes in progress or bytes that did not match; a verified product is never lost."""
        actual = self.h.final_bytes(self.key)
        if self.maybe:
            assert actual in self.maybe
            self.final, self.maybe = actual, ()
        assert self.final == actual
        assert actual in {None, self.product, self.foreign}

    @invariant()
    def the_final_digest_is_the_checksum_once_verified(self) -> None:
        """``final_digest``: the checksum once verified, nothing without a product, else MD5 or nothing."""
        if self.maybe:
            return
        digest = self.store.final_digest(self.key)
        if self.final is None:
            assert digest is None
        elif self.final == self.product:
            assert self.checksum == digest
        else:
            assert digest in {md5(self.final), None}


def store_machine(harness: StoreHarness, name: str) -> type[StoreMachine]:
    """The contract machine bound to ``harness``."""
    return type(name, (StoreMachine,), {"harness": harness})
