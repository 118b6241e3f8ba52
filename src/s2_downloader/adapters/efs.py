"""The file store on the EFS mount: final products and resumable partial files.

A verified product lives at ``<mount>/<granule_id>/<filename>``. Data in progress
lives next to it as ``.<filename>.partial``: the contract forbids filenames that
start with ``.``, so no final file can ever have a partial's name, and a leftover
partial can never be served as a product. (When ``.<filename>.partial`` would pass
the 255-byte name limit, the partial is named after a SHA-256 of the filename.)

Paths are checked again here, whatever the caller validated: the id and filename
must pass the contract's rules, the granule directory must resolve to a direct child
of the resolved mount (a symlinked id directory pointing elsewhere is refused), and
files are opened with ``O_NOFOLLOW`` so a symlink planted at a file's name is
refused too. The mount itself is never created: a missing mount means EFS is not
mounted, and writing to the local disk underneath would be wrong.

Every ``OSError`` leaves as ``FileStoreError`` naming the path.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import os
import queue
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs

from s2_downloader.domain.errors import BadRequest, FileStoreError, PartialInUse
from s2_downloader.domain.request import validate_filename, validate_id

if TYPE_CHECKING:
    from s2_downloader.domain.ports import FileKey

__all__ = ["PARTIAL_SUFFIX", "EfsFileStore", "EfsPartial", "partial_name"]

#: Partial files are ``.<filename>`` plus this suffix.
PARTIAL_SUFFIX: Final = ".partial"

#: Reads (digests, resume seeding) go in chunks this big: large enough that
#: hashlib runs without the GIL and per-call overhead vanishes, small enough to stay flat.
_READ_CHUNK: Final = 4 * 1024 * 1024
#: Once a partial holds this many bytes, the chunks after are hashed in a thread of their
#: own, overlapping MD5 with the socket reads and file writes of the downloading thread
#: (hashlib releases the GIL for buffers over 2047 bytes). Smaller products never pay
#: for a thread.
_BACKGROUND_HASH_FROM: Final = 1024 * 1024
#: Chunks queued for the hashing thread: enough slack for reads and writes to run ahead
#: of MD5 a little, few enough that memory stays flat (a chunk is normally 1 MiB).
_HASH_BACKLOG: Final = 4
_NAME_MAX: Final = 255
_FILE_MODE: Final = 0o644
_DIR_MODE: Final = 0o755
_OPEN_APPEND: Final = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_READ: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


def partial_name(filename: str) -> str:
    """The name of the partial file of ``filename``, in the same directory."""
    name = f".{filename}{PARTIAL_SUFFIX}"
    if len(os.fsencode(name)) <= _NAME_MAX:
        return name
    return f".{hashlib.sha256(os.fsencode(filename)).hexdigest()}{PARTIAL_SUFFIX}"


def _is_partial_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(PARTIAL_SUFFIX) and len(name) > len(PARTIAL_SUFFIX) + 1


def _error(action: str, path: Path | str, exc: OSError) -> FileStoreError:
    reason = exc.strerror or type(exc).__name__
    if exc.errno == errno.ELOOP:
        reason = "is a symlink, refused"
    return FileStoreError(f"cannot {action} {path}: {reason}")


def _md5() -> hashlib._Hash:
    # MD5 here is an integrity checksum the hub publishes, not a security measure.
    return hashlib.md5(usedforsecurity=False)


def _hash_fd(fd: int, digest: hashlib._Hash) -> int:
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


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some filesystems cannot fsync a directory; the rename is done and NFS (EFS)
        # makes it durable on the server anyway, so only real I/O errors count.
        if exc.errno not in {errno.EINVAL, errno.ENOTSUP}:
            raise
    finally:
        os.close(fd)


class _BackgroundMd5:
    """Feeds chunks to an MD5 in a thread of its own, in order; ``finish`` waits for the last."""

    def __init__(self, digest: hashlib._Hash, name: str) -> None:
        self._digest = digest
        self._chunks: queue.Queue[bytes | None] = queue.Queue(_HASH_BACKLOG)
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @classmethod
    def start(cls, digest: hashlib._Hash, name: str) -> _BackgroundMd5:
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


@attrs.define
class EfsPartial:
    """An open partial file that hashes what it holds as bytes arrive (the ``Partial`` port).

    The file is unbuffered: each ``write`` is one ``write(2)``, and the digest is
    updated from the same chunk, so nothing is copied or read back. Past the first
    MiB the MD5 runs in a thread of its own (``_BackgroundMd5``), so on a multi-core
    machine hashing overlaps the socket reads and file writes instead of following them.
    """

    path: Path
    _file: io.FileIO = attrs.field(repr=False)
    _md5: hashlib._Hash = attrs.field(repr=False)
    _size: int = 0
    _background: _BackgroundMd5 | None = attrs.field(default=None, init=False, repr=False)

    @property
    def size(self) -> int:
        """Bytes held so far."""
        return self._size

    def write(self, chunk: bytes) -> None:
        """Append ``chunk`` and hash it."""
        try:
            written = self._file.write(chunk)
            if written != len(chunk):
                self._write_rest(chunk, written)
        except OSError as exc:
            raise _error("append to", self.path, exc) from exc
        if self._background is not None:
            # The port says bytes; a mutable buffer could change before the thread reads it.
            self._background.update(chunk if type(chunk) is bytes else bytes(chunk))
        elif self._size >= _BACKGROUND_HASH_FROM:
            self._background = _BackgroundMd5.start(self._md5, f"md5-{self.path.name}")
            self._background.update(chunk if type(chunk) is bytes else bytes(chunk))
        else:
            self._md5.update(chunk)
        self._size += len(chunk)

    def _hashed(self) -> hashlib._Hash:
        """The digest with every written chunk in it (the hashing thread, if any, finished)."""
        background, self._background = self._background, None
        if background is not None:
            self._md5 = background.finish()
        return self._md5

    def _write_rest(self, chunk: bytes, written: int | None) -> None:
        # A raw write may be short (a signal, a nearly full disk); finish it or fail.
        view = memoryview(chunk)
        done = written or 0
        while done < len(view):
            step = self._file.write(view[done:])
            if not step:
                raise OSError(errno.EIO, "write made no progress")
            done += step

    def restart(self) -> None:
        """Drop everything held: truncate to 0 and start a new digest."""
        try:
            self._file.truncate(0)
        except OSError as exc:
            raise _error("truncate", self.path, exc) from exc
        self._hashed()
        self._md5 = _md5()
        self._size = 0

    def hexdigest(self) -> str:
        """Flush the file to stable storage, then return the MD5 of everything held."""
        try:
            # The hashing thread, if any, finishes its backlog while this waits on the disk.
            os.fsync(self._file.fileno())
            on_disk = os.fstat(self._file.fileno()).st_size
        except OSError as exc:
            raise _error("fsync", self.path, exc) from exc
        digest = self._hashed().hexdigest()
        if on_disk != self._size:
            # Someone else wrote to the file: the digest no longer describes it.
            msg = f"{self.path} holds {on_disk} bytes, {self._size} were written through this handle"
            raise FileStoreError(msg)
        return digest

    def close(self) -> None:
        """Close the file (and stop the hashing thread); the partial stays for promote, discard or resume."""
        try:
            self._hashed()
        finally:
            try:
                self._file.close()
            except OSError as exc:
                raise _error("close", self.path, exc) from exc


@attrs.define
class EfsFileStore:
    """Products and partial files under ``mount`` (the ``Files`` port: final and partial files)."""

    mount: Path = attrs.field(converter=Path)

    # -- paths ----------------------------------------------------------------------

    def _directory(self, key: FileKey) -> Path:
        """The granule directory of ``key``, checked to be a direct child of the mount."""
        try:
            validate_id(key.granule_id)
            validate_filename(key.filename)
        except BadRequest as exc:
            raise FileStoreError(f"refused unsafe key: {exc.reason}") from exc
        try:
            root = self.mount.resolve(strict=True)
            directory = (root / key.granule_id).resolve()
        except OSError as exc:
            raise _error("resolve", self.mount / key.granule_id, exc) from exc
        if directory.parent != root:
            msg = f"refused {self.mount / key.granule_id}: it resolves to {directory}, outside {root}"
            raise FileStoreError(msg)
        return directory

    def final_path(self, key: FileKey) -> Path:
        """Where the verified product of ``key`` lives."""
        return self._directory(key) / key.filename

    def partial_path(self, key: FileKey) -> Path:
        """Where the data in progress of ``key`` lives."""
        return self._directory(key) / partial_name(key.filename)

    # -- FinalFiles -----------------------------------------------------------------

    def final_digest(self, key: FileKey) -> str | None:
        """The MD5 of the final file of ``key``, streamed; ``None`` when there is none."""
        path = self.final_path(key)
        try:
            fd = os.open(path, _OPEN_READ)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _error("open", path, exc) from exc
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise FileStoreError(f"cannot hash {path}: not a regular file")
            digest = _md5()
            _hash_fd(fd, digest)
        except OSError as exc:
            raise _error("read", path, exc) from exc
        finally:
            os.close(fd)
        return digest.hexdigest()

    def remove(self, key: FileKey) -> None:
        """Delete the final file and the partial of ``key``, then the granule directory if empty."""
        directory = self._directory(key)
        self._unlink(directory / key.filename)
        self._unlink(directory / partial_name(key.filename))
        self._remove_if_empty(directory)

    # -- PartialFiles ---------------------------------------------------------------

    @contextlib.contextmanager
    def open_partial(self, key: FileKey) -> Iterator[EfsPartial]:
        """Open the partial of ``key`` for appending, its digest seeded with what it already holds."""
        directory = self._directory(key)
        path = directory / partial_name(key.filename)
        try:
            directory.mkdir(mode=_DIR_MODE, exist_ok=True)
            fd = os.open(path, _OPEN_APPEND, _FILE_MODE)
        except OSError as exc:
            raise _error("open", path, exc) from exc
        try:
            # One writer at a time, whatever the leases say: a worker that lost its lease
            # but still writes must never interleave bytes with the one that took over.
            # flock conflicts between separate opens, so threads of one process exclude
            # each other too; on NFS (EFS) Linux maps it onto a whole-file POSIX lock.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise PartialInUse(f"{path} is being written by another attempt") from exc
            raise _error("lock", path, exc) from exc
        try:
            # Resume: the digest must cover the bytes an earlier attempt left.
            digest = _md5()
            size = _hash_fd(fd, digest)
            raw = io.FileIO(fd, "r+", closefd=True)
        except OSError as exc:
            os.close(fd)
            raise _error("read", path, exc) from exc
        partial = EfsPartial(path, raw, digest, size)
        try:
            yield partial
        finally:
            partial.close()

    def promote(self, key: FileKey) -> None:
        """Fsync the partial, rename it onto the final path atomically, fsync the directory."""
        directory = self._directory(key)
        partial = directory / partial_name(key.filename)
        final = directory / key.filename
        try:
            fd = os.open(partial, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(partial, final)
            _fsync_dir(directory)
        except OSError as exc:
            raise _error("promote", partial, exc) from exc

    def discard_partial(self, key: FileKey) -> None:
        """Delete the partial of ``key`` if there is one, then the granule directory if empty."""
        directory = self._directory(key)
        self._unlink(directory / partial_name(key.filename))
        self._remove_if_empty(directory)

    # -- housekeeping ---------------------------------------------------------------

    def sweep_stale_partials(self, older_than_seconds: float, now: float | None = None) -> int:
        """Delete partial files not written for ``older_than_seconds``; returns how many.

        Looks one level of granule directories deep and never touches a final file.
        ``now`` is seconds since the epoch (default: the current time). Choose the age
        well above the lease: a partial younger than that may still be written to.
        """
        cutoff = (time.time() if now is None else now) - older_than_seconds
        removed = 0
        try:
            granules = [entry for entry in os.scandir(self.mount) if entry.is_dir(follow_symlinks=False)]
        except OSError as exc:
            raise _error("list", self.mount, exc) from exc
        for granule in granules:
            try:
                entries = list(os.scandir(granule.path))
            except FileNotFoundError:
                continue  # removed while we looked
            except OSError as exc:
                raise _error("list", granule.path, exc) from exc
            for entry in entries:
                if not (_is_partial_name(entry.name) and entry.is_file(follow_symlinks=False)):
                    continue
                try:
                    if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.unlink(entry.path)
                        removed += 1
                except FileNotFoundError:
                    continue  # removed while we looked
                except OSError as exc:
                    raise _error("remove", entry.path, exc) from exc
        return removed

    @staticmethod
    def _unlink(path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise _error("remove", path, exc) from exc

    @staticmethod
    def _remove_if_empty(directory: Path) -> None:
        try:
            directory.rmdir()
        except OSError as exc:
            # Gone already, or still holding something (another file, a partial): leave it.
            if exc.errno in {errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST}:
                return
            raise _error("remove", directory, exc) from exc
