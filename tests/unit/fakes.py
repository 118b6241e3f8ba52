"""In-memory fakes of every port, with fault injection; checked against the Protocols by mypy."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import attrs

from s2_downloader.domain import lifecycle
from s2_downloader.domain.errors import (
    DeadlineExceeded,
    FailureKind,
    FileStoreError,
    HubError,
    InvalidTransition,
    KeyConflict,
    PartialInUse,
    StoreUnavailable,
)
from s2_downloader.domain.granule import Granule
from s2_downloader.domain.ports import (
    Cancellation,
    Clock,
    FileKey,
    GranuleStore,
    Hub,
    Leftover,
    Leftovers,
    Partial,
    ProductStream,
    Store,
    UploadLedger,
    UploadQueue,
)
from s2_downloader.domain.request import DownloadRequest

__all__ = [
    "EPOCH",
    "Crash",
    "CrashPlan",
    "FakeCancellation",
    "FakeClock",
    "FakeHub",
    "FakeUploadQueue",
    "HubFault",
    "InMemoryFiles",
    "InMemoryGranuleStore",
    "InMemoryUploadLedger",
    "md5",
]

EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def md5(data: bytes) -> str:
    """The lowercase hex MD5 of ``data``."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class Crash(BaseException):
    """A simulated process death at a port call: like kill -9, nothing gets to clean up."""


@attrs.define
class CrashPlan:
    """Raises ``Crash`` at the ``at``-th port call counted from now (1-based); 0 never."""

    at: int = 0
    calls: int = 0
    log: list[str] = attrs.field(factory=list)
    #: What the chosen call raises instead of ``Crash``: an outage of our infrastructure
    #: (``StoreError``, ``QueueError``, ``StoreUnavailable``), which the caller survives.
    error: Callable[[str], BaseException] | None = None
    #: Calls come from the S3 store's part threads too: one counts at a time.
    _lock: threading.Lock = attrs.field(factory=threading.Lock, repr=False)

    def tick(self, name: str) -> None:
        """Count one port call and crash (or fail as armed) if it is the chosen one."""
        with self._lock:
            self.calls += 1
            self.log.append(name)
            if not (self.at and self.calls == self.at):
                return
            self.at = 0
            error, self.error = self.error, None
        raise Crash(name) if error is None else error(name)

    def arm(self, at: int, error: Callable[[str], BaseException] | None = None) -> None:
        """Crash (or raise ``error(call name)``) at the ``at``-th call from now."""
        self.calls = 0
        self.at = at
        self.error = error


@attrs.define
class FakeClock:
    """A clock that moves only when told to."""

    current: dt.datetime = EPOCH
    ticks: float = 0.0
    step: float = 0.0

    def now(self) -> dt.datetime:
        """The fake wall time."""
        return self.current

    def monotonic(self) -> float:
        """The fake monotonic time; advances by ``step`` per call to model slow transfers."""
        self.ticks += self.step
        self.current += dt.timedelta(seconds=self.step)
        return self.ticks

    def advance(self, seconds: float) -> None:
        """Move both clocks forward."""
        self.current += dt.timedelta(seconds=seconds)
        self.ticks += seconds


@attrs.define
class FakeCancellation:
    """A cancellation the test sets by hand, with an optional deadline to hand to the hub."""

    stop: bool = False
    at: float | None = None

    def is_set(self) -> bool:
        """Whether the test asked the attempt to stop."""
        return self.stop

    def deadline(self) -> float | None:
        """The deadline the test chose (a fake monotonic instant), or ``None``."""
        return self.at


@attrs.define
class InMemoryGranuleStore:
    """The granule table as a dict, with the same conditional semantics as the SQL."""

    granules: dict[str, Granule] = attrs.field(factory=dict)
    crashes: CrashPlan = attrs.field(factory=CrashPlan)
    verified_at: list[tuple[str, dt.datetime]] = attrs.field(factory=list)

    def add(self, granule_id: str, filename: str, **fields: object) -> Granule:
        """Insert a granule as the link fetcher would."""
        granule = Granule(id=granule_id, filename=filename, **fields)  # type: ignore[arg-type]
        self.granules[granule_id] = granule
        return granule

    def get(self, granule_id: str) -> Granule | None:
        """The granule as stored, or ``None``; reads only (used by the store contract)."""
        return self.granules.get(granule_id)

    def claim(self, granule_id: str, owner: str, now: dt.datetime, lease_seconds: float) -> Granule | None:
        """Take the lease if free; return the granule as it now is."""
        self.crashes.tick("granules.claim")
        granule = self.granules.get(granule_id)
        if granule is None:
            return None
        try:
            granule = lifecycle.apply(
                granule, lifecycle.Claim(owner=owner, now=now, lease_seconds=lease_seconds)
            )
        except InvalidTransition:
            return granule
        self.granules[granule_id] = granule
        return granule

    def heartbeat(self, granule_id: str, owner: str, now: dt.datetime, lease_seconds: float) -> bool:
        """Extend the owner's lease."""
        self.crashes.tick("granules.heartbeat")
        granule = self.granules.get(granule_id)
        if granule is None or not granule.held_by(owner):
            return False
        event = lifecycle.Heartbeat(owner=owner, now=now, lease_seconds=lease_seconds)
        self.granules[granule_id] = lifecycle.apply(granule, event)
        return True

    def record(self, granule_id: str, event: lifecycle.Event) -> Granule:
        """Apply one event atomically."""
        self.crashes.tick(f"granules.record.{type(event).__name__}")
        granule = self.granules.get(granule_id)
        if granule is None:
            msg = f"no granule {granule_id}"
            raise InvalidTransition(msg)
        updated = lifecycle.apply(granule, event)
        self.granules[granule_id] = updated
        if isinstance(event, lifecycle.Verify):
            self.verified_at.append((granule_id, EPOCH))
        return updated

    def release(self, granule_id: str, owner: str) -> bool:
        """Give the granule back if ``owner`` holds it."""
        self.crashes.tick("granules.release")
        granule = self.granules.get(granule_id)
        if granule is None or not granule.held_by(owner):
            return False
        self.granules[granule_id] = lifecycle.apply(granule, lifecycle.Release(owner=owner))
        return True


@attrs.frozen(kw_only=True)
class HubFault:
    """One scripted misbehaviour of the hub, consumed by one request."""

    error: HubError | None = None
    short_by: int = 0
    corrupt: bool = False
    ignore_range: bool = False
    wrong_checksum: bool = False
    out_of_time: bool = False

    @classmethod
    def fail(cls, kind: FailureKind, retry_after: float | None = None) -> HubFault:
        """The request fails with ``kind``."""
        return cls(error=HubError(kind, "scripted", retry_after=retry_after))


@attrs.frozen
class _Stream:
    offset: int
    total_size: int | None
    validator: str | None
    _body: bytes
    _chunk: int
    _on_chunk: Callable[[int], None]
    _cut_with: HubError | None

    def chunks(self) -> Iterator[bytes]:
        for index, start in enumerate(range(0, len(self._body), self._chunk)):
            self._on_chunk(index)
            yield self._body[start : start + self._chunk]
        if self._cut_with is not None:
            raise self._cut_with


@attrs.define
class FakeHub:
    """Products in memory, a published checksum each, and scripted faults per product."""

    products: dict[str, bytes] = attrs.field(factory=dict)
    published: dict[str, str] = attrs.field(factory=dict)
    download_faults: dict[str, list[HubFault]] = attrs.field(factory=dict)
    checksum_faults: dict[str, list[HubFault]] = attrs.field(factory=dict)
    chunk_size: int = 4
    crashes: CrashPlan = attrs.field(factory=CrashPlan)
    on_chunk: Callable[[str, int], None] | None = None
    downloads: Counter[str] = attrs.field(factory=Counter)
    bytes_served: Counter[str] = attrs.field(factory=Counter)
    streaming: Counter[str] = attrs.field(factory=Counter)
    most_at_once: Counter[str] = attrs.field(factory=Counter)
    #: The validator (an ETag) each product is served with; ``None`` serves none.
    validators: dict[str, str | None] = attrs.field(factory=dict)
    #: The name each product is listed under; ``None`` lists none.
    names: dict[str, str | None] = attrs.field(factory=dict)
    #: (granule id, offset asked, validator sent) of every product request, in order.
    requests: list[tuple[str, int, str | None]] = attrs.field(factory=list)
    #: The deadline every call was given, in order.
    deadlines: list[float | None] = attrs.field(factory=list)
    _versions: Counter[str] = attrs.field(factory=Counter)

    def add(
        self, granule_id: str, content: bytes, *, validator: bool = True, name: str | None = None
    ) -> None:
        """Publish a product and its true checksum, with an ETag unless ``validator`` is false.

        Listed as ``name`` (default: ``<id>.SAFE``, as CDSE lists products).
        """
        self.names[granule_id] = f"{granule_id}.SAFE" if name is None else name
        self.products[granule_id] = content
        self.published[granule_id] = md5(content)
        self._versions[granule_id] += 1
        self.validators[granule_id] = f'"{granule_id}-v{self._versions[granule_id]}"' if validator else None

    def checksum(self, granule_id: str, *, deadline: float | None = None) -> str:
        """The published MD5, or the scripted fault."""
        self.crashes.tick("hub.checksum")
        self.deadlines.append(deadline)
        fault = self._next(self.checksum_faults, granule_id)
        if fault and fault.out_of_time:
            raise DeadlineExceeded("checksum: deadline passed")
        if fault and fault.error:
            raise fault.error
        if granule_id not in self.published:
            raise HubError(FailureKind.NOT_FOUND, f"no product {granule_id}")
        if fault and fault.wrong_checksum:
            return md5(b"not the product")
        return self.published[granule_id]

    def product_name(self, granule_id: str, *, deadline: float | None = None) -> str | None:
        """The name the product is listed under; ``NOT_FOUND`` for a product never added."""
        self.crashes.tick("hub.product_name")
        self.deadlines.append(deadline)
        if granule_id not in self.products:
            raise HubError(FailureKind.NOT_FOUND, f"no product {granule_id}")
        return self.names.get(granule_id)

    @contextmanager
    def open_product(
        self,
        request: DownloadRequest,
        offset: int,
        *,
        validator: str | None = None,
        deadline: float | None = None,
    ) -> Iterator[ProductStream]:
        """Serve from ``offset``, or from 0 when ``validator`` is not the current one (If-Range)."""
        self.crashes.tick("hub.open_product")
        self.deadlines.append(deadline)
        self.requests.append((request.id, offset, validator))
        fault = self._next(self.download_faults, request.id)
        if fault and fault.out_of_time:
            raise DeadlineExceeded("product: deadline passed")
        if fault and fault.error:
            raise fault.error
        content = self.products.get(request.id)
        if content is None:
            raise HubError(FailureKind.NOT_FOUND, f"no product {request.id}")
        if fault and fault.corrupt:
            content = bytes(b ^ 0xFF for b in content)
        current = self.validators.get(request.id)
        # If-Range: a range only while the validator still names the product served now.
        changed = validator is not None and validator != current
        # Past the end (a partial longer than the product) the real hubs answer 416 and the
        # adapters restart from byte 0.
        past_end = offset > len(content)
        start = 0 if (changed or past_end or (fault and fault.ignore_range)) else offset
        body = content[start:]
        cut: HubError | None = None
        if fault and fault.short_by:
            body = body[: max(0, len(body) - fault.short_by)]
            cut = HubError(FailureKind.TRANSFER_INTERRUPTED, "connection reset")
        self.downloads[request.id] += 1
        self.bytes_served[request.id] += len(body)

        def on_chunk(index: int) -> None:
            self.crashes.tick("hub.chunk")
            if self.on_chunk is not None:
                self.on_chunk(request.id, index)

        self.streaming[request.id] += 1
        self.most_at_once[request.id] = max(self.most_at_once[request.id], self.streaming[request.id])
        try:
            yield _Stream(start, len(content), current, body, self.chunk_size, on_chunk, cut)
        finally:
            self.streaming[request.id] -= 1

    @staticmethod
    def _next(script: dict[str, list[HubFault]], granule_id: str) -> HubFault | None:
        faults = script.get(granule_id)
        return faults.pop(0) if faults else None


@attrs.define
class _FakePartial:
    store: InMemoryFiles
    key: FileKey

    @property
    def size(self) -> int:
        return len(self.store.partials[self.key])

    @property
    def validator(self) -> str | None:
        return self.store.validators.get(self.key)

    def set_validator(self, validator: str | None) -> None:
        if validator is None:
            self.store.validators.pop(self.key, None)
        else:
            self.store.validators[self.key] = validator

    def write(self, chunk: bytes) -> None:
        self.store.crashes.tick("files.write")
        refusal = self.store.refused_writes.get(self.key.granule_id)
        if refusal is not None:
            raise refusal
        self.store.partials[self.key].extend(chunk)

    def expect_size(self, total_size: int | None) -> None:
        self.store.expected_sizes[self.key] = total_size

    def restart(self) -> None:
        self.store.partials[self.key].clear()

    def hexdigest(self) -> str:
        self.store.crashes.tick("files.hexdigest")
        return md5(bytes(self.store.partials[self.key]))


@attrs.define
class InMemoryFiles:
    """The product store as dicts: final products and partials (with the checksum each was opened for).

    Its chores act on the partials a test marks ``abandoned``, as if an attempt that is gone left them.
    """

    finals: dict[FileKey, bytes] = attrs.field(factory=dict)
    partials: dict[FileKey, bytearray] = attrs.field(factory=dict)
    validators: dict[FileKey, str] = attrs.field(factory=dict)
    checksums: dict[FileKey, str | None] = attrs.field(factory=dict)
    expected_sizes: dict[FileKey, int | None] = attrs.field(factory=dict)
    #: Keep a final product that does not match (as S3 does) instead of deleting it (as EFS does).
    keeps_mismatched_finals: bool = False
    crashes: CrashPlan = attrs.field(factory=CrashPlan)
    open_partials: Counter[FileKey] = attrs.field(factory=Counter)
    #: Partials an attempt that is gone left behind (the test says which), and when it began them.
    abandoned: dict[FileKey, dt.datetime] = attrs.field(factory=dict)
    #: Store errors raised by a write to a granule's partial (the store refusing that granule).
    refused_writes: dict[str, FileStoreError] = attrs.field(factory=dict)
    #: Key conflicts ``open_partial`` raises, by granule id (the key holds another's product).
    conflicts: dict[str, KeyConflict] = attrs.field(factory=dict)
    #: Whether the store as a whole works: ``check_health`` raises ``StoreUnavailable`` when not.
    healthy: bool = True
    #: How often ``check_health`` was asked.
    health_checks: int = 0

    def check_health(self) -> None:
        """Raise ``StoreUnavailable`` unless the test says the store is healthy."""
        self.health_checks += 1
        if not self.healthy:
            msg = "fake store down"
            raise StoreUnavailable(msg)

    def final_digest(self, key: FileKey) -> str | None:
        """MD5 of the final file, if any."""
        self.crashes.tick("files.final_digest")
        content = self.finals.get(key)
        return None if content is None else md5(content)

    def discard_final(self, key: FileKey) -> None:
        """Delete the final product and the partial (EFS), or leave the product (S3)."""
        self.crashes.tick("files.discard_final")
        if not self.keeps_mismatched_finals:
            self.finals.pop(key, None)
        self._drop_partial(key)

    def remove(self, key: FileKey) -> None:
        """Delete the partial, and the final product unless it is kept (S3)."""
        self.crashes.tick("files.remove")
        if not self.keeps_mismatched_finals:
            self.finals.pop(key, None)
        self._drop_partial(key)

    def _drop_partial(self, key: FileKey) -> None:
        self.partials.pop(key, None)
        self.validators.pop(key, None)
        self.checksums.pop(key, None)

    @contextmanager
    def open_partial(self, key: FileKey, *, checksum: str | None = None) -> Iterator[Partial]:
        """Resume the partial (creating it empty), remembering the checksum it must reach."""
        self.crashes.tick("files.open_partial")
        conflict = self.conflicts.get(key.granule_id)
        if conflict is not None:
            raise conflict
        if self.open_partials[key]:
            msg = f"partial of {key.granule_id} is being written"
            raise PartialInUse(msg)
        self.checksums[key] = checksum
        self.partials.setdefault(key, bytearray())
        self.open_partials[key] += 1
        try:
            yield _FakePartial(self, key)
        finally:
            self.open_partials[key] -= 1

    def promote(self, key: FileKey) -> None:
        """Move the partial to the final path; refused unless it is open and holds its checksum."""
        self.crashes.tick("files.promote")
        expected = self.checksums.get(key)
        mismatch = expected is not None and md5(bytes(self.partials[key])) != expected
        if not self.open_partials[key] or mismatch:
            msg = f"cannot promote {key.granule_id}: not open, or not the bytes of its checksum"
            raise FileStoreError(msg)
        self.finals[key] = bytes(self.partials.pop(key))
        self.validators.pop(key, None)
        self.checksums.pop(key, None)

    def discard_partial(self, key: FileKey) -> None:
        """Drop the partial."""
        self.crashes.tick("files.discard_partial")
        self._drop_partial(key)

    def sweep_leftovers(self) -> int:
        """Drop every abandoned partial that is not open now; how many there were."""
        return sum(self._sweep(key) for key in list(self.abandoned))

    def sweep_some_leftovers(self) -> int:
        """Drop the first abandoned partial that is not open now, if any."""
        for key in list(self.abandoned):
            if self._sweep(key):
                return 1
        return 0

    def leftovers(self, older_than_seconds: float, *, now: dt.datetime | None = None) -> Leftovers:
        """The abandoned partials begun more than ``older_than_seconds`` before ``now`` (default: EPOCH)."""
        cutoff = (now or EPOCH) - dt.timedelta(seconds=older_than_seconds)
        return Leftovers(
            kind="abandoned partials",
            items=tuple(
                Leftover(where=f"{key.granule_id}/{key.filename}", upload_id=None, since=since)
                for key, since in self.abandoned.items()
                if since < cutoff and key in self.partials
            ),
        )

    def _sweep(self, key: FileKey) -> bool:
        if self.open_partials[key]:
            return False
        del self.abandoned[key]
        held = key in self.partials
        self._drop_partial(key)
        return held


@attrs.define
class InMemoryUploadLedger:
    """The ``store_upload`` column as a dict (the S3 store's ``UploadLedger``), with crashes.

    Like the column, it keeps records only for granules the table holds: those in
    ``granules`` when one is given, every granule otherwise.
    """

    records: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    crashes: CrashPlan = attrs.field(factory=CrashPlan)
    granules: InMemoryGranuleStore | None = None

    def load(self, granule_id: str) -> dict[str, Any] | None:
        """The record of the granule's upload in progress, or ``None``."""
        self.crashes.tick("ledger.load")
        record = self.records.get(granule_id)
        return None if record is None else json.loads(json.dumps(record))

    def save(self, granule_id: str, record: Mapping[str, Any]) -> None:
        """Replace the record (a JSON round trip, as the column does)."""
        self.crashes.tick("ledger.save")
        if self.granules is None or granule_id in self.granules.granules:
            self.records[granule_id] = json.loads(json.dumps(record))

    def clear(self, granule_id: str) -> None:
        """Forget the record."""
        self.crashes.tick("ledger.clear")
        self.records.pop(granule_id, None)


@attrs.define
class FakeUploadQueue:
    """The TO_UPLOAD queue as a list of (id, filename)."""

    sent: list[tuple[str, str]] = attrs.field(factory=list)
    crashes: CrashPlan = attrs.field(factory=CrashPlan)

    def send_upload(self, granule_id: str, filename: str) -> None:
        """Record the upload message."""
        self.crashes.tick("uploads.send")
        self.sent.append((granule_id, filename))


def _check_protocols(  # noqa: PLR0917 - one argument per port
    store: InMemoryGranuleStore,
    hub: FakeHub,
    files: InMemoryFiles,
    uploads: FakeUploadQueue,
    clock: FakeClock,
    cancellation: FakeCancellation,
    ledger: InMemoryUploadLedger,
) -> tuple[GranuleStore, Hub, Store, UploadQueue, Clock, Cancellation, UploadLedger]:
    """Never called: mypy checks each fake against its Protocol here."""
    return store, hub, files, uploads, clock, cancellation, ledger
