"""``EfsFileStore``: final products and resumable partial files on the EFS mount.

Where things live and how paths are checked: ``paths.py``. Partial files, their lock and
their validator sidecar: ``partial.py``. Final files and the rename into place:
``final.py``. Stale partials, the store's chore: ``sweep.py``. Every ``OSError`` from an
attempt's calls leaves as ``FileStoreError`` naming the path; ``check_health`` (a probe
file in the mount's root) tells the use case whether it was the mount's or the granule's.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from s2_downloader.adapters.store.efs import final
from s2_downloader.adapters.store.efs.partial import EfsPartial, open_locked, unlink, unlink_partial
from s2_downloader.adapters.store.efs.paths import (
    OPEN_REPLACE,
    file_error,
    granule_directory,
    partial_name,
    sidecar_names,
)
from s2_downloader.adapters.store.efs.sweep import STALE_PARTIAL_SECONDS, PartialSweep, sweep_mount
from s2_downloader.domain.errors import FileStoreError, StoreUnavailable

if TYPE_CHECKING:
    from s2_downloader.domain.ports import FileKey, Leftovers

__all__ = ["EfsFileStore"]


@attrs.define
class EfsFileStore:
    """Products and partial files under ``mount``: the ``Store`` port (``Files`` and its chores)."""

    mount: Path = attrs.field(converter=Path)
    #: A partial not written for this long belongs to an attempt that is gone (far above any lease).
    stale_after_seconds: float = STALE_PARTIAL_SECONDS
    #: Wall time in seconds since the epoch, which partial files' ages are measured on.
    clock: Callable[[], float] = time.time
    #: The partials open through this store, by path: promote needs the descriptor that was hashed.
    _open: dict[Path, EfsPartial] = attrs.field(factory=dict, init=False, repr=False)
    _open_lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)
    #: Where the next ``sweep_some_leftovers`` carries on.
    _sweep: PartialSweep = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._sweep = PartialSweep(str(self.mount), self.stale_after_seconds, self.clock)

    # -- paths ----------------------------------------------------------------------

    def final_path(self, key: FileKey) -> Path:
        """Where the verified product of ``key`` lives."""
        return granule_directory(self.mount, key) / key.filename

    def partial_path(self, key: FileKey) -> Path:
        """Where the data in progress of ``key`` lives."""
        return granule_directory(self.mount, key) / partial_name(key.filename)

    def sidecar_path(self, key: FileKey) -> Path:
        """Where the validator of the partial of ``key`` lives."""
        return granule_directory(self.mount, key) / sidecar_names(key.filename)[0]

    # -- FinalFiles -----------------------------------------------------------------

    def final_digest(self, key: FileKey) -> str | None:
        """The MD5 of the final file of ``key``, streamed; ``None`` when there is none."""
        return final.digest_of(self.final_path(key))

    def discard_final(self, key: FileKey) -> None:
        """Delete a final file that does not match (and the partial of ``key``), as ``remove`` does."""
        self.remove(key)

    def remove(self, key: FileKey) -> None:
        """Delete the final file and the partial of ``key``, then the granule directory if empty."""
        directory = granule_directory(self.mount, key)
        unlink(directory / key.filename)
        unlink_partial(directory, key.filename)
        final.remove_if_empty(directory)

    # -- PartialFiles ---------------------------------------------------------------

    @contextlib.contextmanager
    def open_partial(self, key: FileKey, *, checksum: str | None = None) -> Iterator[EfsPartial]:
        """Open the partial of ``key`` for appending, its digest seeded with what it already holds.

        ``checksum`` is not needed here: the use case promotes only a matching digest.
        """
        del checksum
        partial = open_locked(granule_directory(self.mount, key), key.filename)
        path = partial.path
        with self._open_lock:
            self._open[path] = partial
        try:
            yield partial
        finally:
            with self._open_lock:
                if self._open.get(path) is partial:
                    del self._open[path]
            partial.close()

    def promote(self, key: FileKey) -> None:
        """Fsync the open partial, rename it onto the final path atomically, fsync the directory.

        Only while the partial is open through this store, and only if its path still
        names the file that was hashed: otherwise ``PartialInUse`` (another attempt put a
        file there) or ``FileStoreError``, and nothing is renamed.
        """
        directory = granule_directory(self.mount, key)
        partial = directory / partial_name(key.filename)
        with self._open_lock:
            held = self._open.get(partial)
        if held is None:
            msg = f"cannot promote {partial}: it is not open here (promote it while it is open)"
            raise FileStoreError(msg)
        final.promote(held, directory / key.filename)

    def discard_partial(self, key: FileKey) -> None:
        """Delete the partial of ``key`` if there is one, then the granule directory if empty."""
        directory = granule_directory(self.mount, key)
        unlink_partial(directory, key.filename)
        final.remove_if_empty(directory)

    # -- StoreHealth ------------------------------------------------------------------

    def check_health(self) -> None:
        """Raise ``StoreUnavailable`` unless the mount is a directory a file can be created in.

        A probe file, named like no product, partial or granule directory (a dot name in the
        mount's root, where the sweep looks only for directories), is created and removed:
        permission bits alone would not say it, since a worker may run as root, and a
        read-only or stale mount refuses only the write.
        """
        probe = self.mount / f".health-{os.getpid()}-{threading.get_ident()}-{os.urandom(4).hex()}"
        try:
            if not stat.S_ISDIR(os.stat(self.mount).st_mode):
                msg = f"EFS mount {self.mount} is not a directory"
                raise StoreUnavailable(msg)
            fd = os.open(probe, OPEN_REPLACE | os.O_EXCL, 0o600)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise StoreUnavailable(
                f"EFS mount {self.mount} unusable: {file_error('write', probe, exc)}"
            ) from exc

    # -- StoreChores -----------------------------------------------------------------

    def sweep_leftovers(self) -> int:
        """Remove the stale partials of every granule directory; an unreadable one is logged and skipped."""
        return sweep_mount(str(self.mount), self.stale_after_seconds, now=self.clock())

    def sweep_some_leftovers(self) -> int:
        """Remove the stale partial files of the next granule directory, round the mount."""
        return self._sweep.step()

    def leftovers(self, older_than_seconds: float, *, now: dt.datetime | None = None) -> Leftovers | None:
        """None: partials cost nothing, the workers sweep them, and ``status`` need not walk the mount."""
        del older_than_seconds, now
        return None
