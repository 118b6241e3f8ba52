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
import hashlib
import io
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs

from s2_downloader.domain.errors import BadRequest, FileStoreError
from s2_downloader.domain.request import validate_filename, validate_id

if TYPE_CHECKING:
    from s2_downloader.domain.ports import FileKey

__all__ = ["PARTIAL_SUFFIX", "EfsFileStore", "EfsPartial", "partial_name"]

#: Partial files are ``.<filename>`` plus this suffix.
PARTIAL_SUFFIX: Final = ".partial"

#: Reads (digests, resume seeding) go in chunks this big: large enough that
#: hashlib runs without the GIL and per-call overhead vanishes, small enough to stay flat.
_READ_CHUNK: Final = 4 * 1024 * 1024
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
    buffer = bytearray(_READ_CHUNK)
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


@attrs.define
class EfsPartial:
    """An open partial file that hashes what it holds as bytes arrive (the ``Partial`` port).

    The file is unbuffered: each ``write`` is one ``write(2)``, and the digest is
    updated from the same chunk, so nothing is copied or read back. Hashing stays
    behind ``write``/``hexdigest``, so it could move to a background thread without
    changing the port.
    """

    path: Path
    _file: io.FileIO = attrs.field(repr=False)
    _md5: hashlib._Hash = attrs.field(repr=False)
    _size: int = 0

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
        self._md5.update(chunk)
        self._size += len(chunk)

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
        self._md5 = _md5()
        self._size = 0

    def hexdigest(self) -> str:
        """Flush the file to stable storage, then return the MD5 of everything held."""
        try:
            os.fsync(self._file.fileno())
        except OSError as exc:
            raise _error("fsync", self.path, exc) from exc
        return self._md5.hexdigest()

    def close(self) -> None:
        """Close the file; the partial stays on disk for promote, discard or a later resume."""
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
