"""``S3Store``: verified products as objects of a bucket, uploads completed only when the MD5 matches.

The verified product of a granule is the object ``s3://<bucket>/<key>``, the key rendered
from ``S3_KEY_TEMPLATE`` by the ``object_key`` function the composition root passes in.
Nothing unverified is ever visible there: the upload in progress (``partial.py``) is
completed only when its MD5 is the hub's checksum, resumed from the record its
``UploadLedger`` keeps (``resume.py``, ``records.py``). ``final_digest`` trusts only an
MD5 the object states (``bucket.py``); any other object at the key is left alone until a
verified upload replaces it (``discard_final`` and ``remove`` never delete an object).
``remove`` (a granule failed for good) aborts the granule's open multipart uploads. Of the
chores, only the report is S3's: ``status`` lists the bucket's old multipart uploads, which
S3 charges for; a sweep has nothing to do.

Every botocore error leaves as ``FileStoreError``: throttling (``SlowDown``, 503) and
unreachable endpoints as ``StoreUnavailable``, an outage (``errors.py``); the use case
sorts the rest with ``check_health`` (``HeadBucket``): the bucket failing too is an outage,
else the error was the granule's (a key the bucket refuses, a part S3 rejects) and counts.

Who owns a key (docs/interface.md section 4): every upload carries ``granule-id`` and
``md5`` metadata; with ``key_leases`` one granule at a time uploads to a key (another
granule's live lease is ``PartialInUse``), and an object whose ``granule-id`` names another
verified granule is ``KeyConflict``. Only uploads the granule's record names are aborted.

Two workers never write one granule at once while leases hold; the use case checks its
lease before ``promote``. A worker that lost its lease may still send parts of the same
product to the same upload, which the next one overwrites with the same bytes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Final

import attrs

from s2_downloader.adapters.store.s3.bucket import Bucket
from s2_downloader.adapters.store.s3.partial import S3Partial
from s2_downloader.adapters.store.s3.resume import resume, trusted_record
from s2_downloader.domain.errors import FileStoreError, KeyConflict, PartialInUse, S2DownloaderError
from s2_downloader.domain.ports import Leftover, Leftovers

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

    from s2_downloader.domain.ports import FileKey, KeyLeases, UploadLedger

_log = logging.getLogger("s2_downloader.store")

__all__ = ["DEFAULT_PARTS_IN_FLIGHT", "DEFAULT_PART_SIZE", "MIN_PART_SIZE", "S3Store"]

#: The part size unless the product needs larger ones.
DEFAULT_PART_SIZE: Final = 16 * 1024 * 1024
#: Parts of one product uploading at once, unless the entry point says otherwise: the runner's
#: default (the Lambda, one download per environment, sends more: see ``wiring.py``).
DEFAULT_PARTS_IN_FLIGHT: Final = 2
#: S3's smallest part but the last.
MIN_PART_SIZE: Final = 5 * 1024 * 1024
#: How long a granule's lease on its key lasts: taken when its upload is opened, renewed
#: before it is completed, given back when it closes. Longer than any transfer; a worker
#: that died holding one keeps only another granule of the same key waiting.
KEY_LEASE_SECONDS: Final = 3600.0


@attrs.define
class S3Store:
    """Verified products as objects of ``bucket``: the ``Store`` port (``Files`` and its chores).

    ``client`` is a boto3 S3 client (its retries and timeouts are the caller's choice);
    ``object_key`` renders a product's key (``S3_KEY_TEMPLATE`` filled in). ``min_part_size``
    is S3's floor; lower it only for a test server that allows smaller parts. ``key_leases``
    decides which granule may upload to a key (docs/interface.md section 4, "Who owns a
    key"); without it (a test's single granule per key) every granule may.
    """

    client: S3Client = attrs.field(repr=False)
    bucket: str
    ledger: UploadLedger = attrs.field(repr=False)
    object_key: Callable[[FileKey], str]
    part_size: int = DEFAULT_PART_SIZE
    #: Parts of one product uploading at once while its download goes on (``S3_PARTS_IN_FLIGHT``).
    parts_in_flight: int = DEFAULT_PARTS_IN_FLIGHT
    min_part_size: int = MIN_PART_SIZE
    key_leases: KeyLeases | None = attrs.field(default=None, repr=False)
    key_lease_seconds: float = KEY_LEASE_SECONDS
    _open: dict[str, S3Partial] = attrs.field(factory=dict, init=False, repr=False)
    _opening: set[str] = attrs.field(factory=set, init=False, repr=False)
    _open_lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)
    _bucket: Bucket = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.parts_in_flight < 1:
            msg = f"parts in flight must be at least 1, not {self.parts_in_flight}"
            raise ValueError(msg)
        if self.part_size < self.min_part_size:
            msg = f"part size {self.part_size} is below the smallest S3 allows ({self.min_part_size})"
            raise ValueError(msg)
        self._bucket = Bucket(self.client, self.bucket)

    # -- FinalFiles ----------------------------------------------------------------------

    def final_digest(self, key: FileKey) -> str | None:
        """The object's MD5 from its ``md5`` metadata or plain ETag; ``None`` without object or MD5."""
        return self._bucket.object_digest(self.object_key(key))

    def discard_final(self, key: FileKey) -> None:
        """Leave the object alone: only a verified upload replaces it."""
        del key

    def remove(self, key: FileKey) -> None:
        """A failed granule: abort the upload it recorded and forget the record; the object stays."""
        self.discard_partial(key)

    # -- PartialFiles --------------------------------------------------------------------

    @contextlib.contextmanager
    def open_partial(self, key: FileKey, *, checksum: str) -> Iterator[S3Partial]:
        """The granule's upload in progress, resumed from its record when S3 still agrees with it."""
        with self._open_lock:
            if key.granule_id in self._open or key.granule_id in self._opening:
                msg = f"the upload of {key.granule_id} is open in this process already"
                raise PartialInUse(msg)
            # Reserved before resuming: resuming may abort uploads of the key.
            self._opening.add(key.granule_id)
        object_key = self.object_key(key)
        try:
            self._take_key(object_key, key.granule_id)
            try:
                self._check_owner(object_key, key.granule_id)
                partial = resume(
                    self._bucket,
                    self.ledger,
                    granule_id=key.granule_id,
                    object_key=object_key,
                    checksum=checksum.lower(),
                    part_size=self.part_size,
                    min_part_size=self.min_part_size,
                    parts_in_flight=self.parts_in_flight,
                )
            except BaseException:
                self._give_back_key(object_key, key.granule_id)
                raise
        finally:
            with self._open_lock:
                self._opening.discard(key.granule_id)
        with self._open_lock:
            self._open[key.granule_id] = partial
        try:
            yield partial
        finally:
            with self._open_lock:
                if self._open.get(key.granule_id) is partial:
                    del self._open[key.granule_id]
            # The buffered tail is dropped, as a crash would: the next attempt asks the hub
            # for it again, from the end of the last part settled. Parts still uploading are
            # waited for (each ends within the client's timeouts) and recorded if they settle.
            partial.close()
            self._give_back_key(object_key, key.granule_id)

    def promote(self, key: FileKey) -> None:
        """Complete the open upload (or put the small product) once its MD5 is the checksum."""
        with self._open_lock:
            partial = self._open.get(key.granule_id)
        if partial is None or partial.object_key != self.object_key(key):
            msg = (
                f"cannot promote {key.granule_id}: its upload is not open here (promote it while it is open)"
            )
            raise FileStoreError(msg)
        # Renewed first: a lease that ran out during a long transfer may have gone to
        # another granule of the key, which is then the one to write it.
        self._take_key(partial.object_key, key.granule_id)
        partial.commit()

    def discard_partial(self, key: FileKey) -> None:
        """Abort the granule's multipart upload (open here or recorded) and forget its record."""
        with self._open_lock:
            partial = self._open.get(key.granule_id)
        if partial is not None:
            partial.abort()
            return
        record = trusted_record(
            self.ledger.load(key.granule_id) or {}, part_size=self.part_size, min_part_size=self.min_part_size
        )
        if record is not None:
            self._bucket.abort_upload(record.key, record.upload_id)
        self.ledger.clear(key.granule_id)
        # Never an upload of the key that the record does not name: it may be another
        # granule's. One begun by an attempt that died before recording it is left to the
        # bucket's lifecycle rule.

    # -- who owns a key ------------------------------------------------------------------

    def _take_key(self, object_key: str, granule_id: str) -> None:
        """Take (or renew) the key's lease; ``PartialInUse`` while another granule holds it."""
        if self.key_leases is None:
            return
        holder = self.key_leases.take(object_key, granule_id, self.key_lease_seconds)
        if holder is not None:
            msg = f"{self._bucket.where(object_key)} is being uploaded by granule {holder}"
            raise PartialInUse(msg)

    def _give_back_key(self, object_key: str, granule_id: str) -> None:
        if self.key_leases is None:
            return
        try:
            self.key_leases.give_back(object_key, granule_id)
        except S2DownloaderError as exc:
            # The lease runs out by itself; the attempt's own outcome is what matters.
            _log.warning(
                "could not give back the key's lease",
                extra={
                    "granule_id": granule_id,
                    "event": "key_lease_kept",
                    "key": object_key,
                    "error": str(exc),
                },
            )

    def _check_owner(self, object_key: str, granule_id: str) -> None:
        """``KeyConflict`` when the object at the key is another granule's, and that granule is verified.

        Asked only after the use case found the object's MD5 is not this granule's; an object
        without ``granule-id``, this granule's own, or one whose owner is not verified is
        replaced by this granule's verified upload.
        """
        if self.key_leases is None:
            return
        owner = self._bucket.object_owner(object_key)
        if owner is not None and owner != granule_id and self.key_leases.verified(owner):
            raise KeyConflict(object_key, owner)

    # -- StoreChores ---------------------------------------------------------------------

    def sweep_leftovers(self) -> int:
        """Nothing: the bucket's lifecycle rule aborts old uploads; a worker aborts only its granule's."""
        return 0

    def sweep_some_leftovers(self) -> int:
        """Nothing, as ``sweep_leftovers``."""
        return 0

    def leftovers(self, older_than_seconds: float, *, now: dt.datetime | None = None) -> Leftovers:
        """Multipart uploads begun more than ``older_than_seconds`` before ``now`` (S3 charges for them)."""
        cutoff = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(seconds=older_than_seconds)
        try:
            uploads = self._bucket.uploads(prefix="")
        except FileStoreError as exc:
            raise type(exc)(f"cannot list multipart uploads: {exc}") from exc
        return Leftovers(
            kind="open multipart uploads",
            items=tuple(
                Leftover(where=upload.key, upload_id=upload.upload_id, since=upload.initiated)
                for upload in uploads
                if upload.initiated < cutoff
            ),
        )

    # -- StoreHealth ------------------------------------------------------------------

    def check_health(self) -> None:
        """Raise ``FileStoreError`` unless ``HeadBucket`` answers: the bucket is there and lets us in.

        ``StoreUnavailable`` when S3 cannot be reached or is throttling, plain ``FileStoreError``
        when it answers but refuses (no such bucket, access denied).
        """
        self._bucket.check()
