"""Partial files on EFS: opened under an exclusive lock, hashed as bytes arrive, with their validator sidecar.

The validator (an ETag or Last-Modified, sent back as ``If-Range`` on resume) lives in a
sidecar rather than an extended attribute because EFS speaks NFS 4.0/4.1, which has no
extended attributes. It is written before the partial's first byte, atomically (a temporary
name renamed over it), and removed with the partial, so it always describes the bytes held.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import os
from pathlib import Path
from typing import Final

import attrs

from s2_downloader.adapters.store.efs.hashing import BackgroundMd5, hash_fd, new_md5
from s2_downloader.adapters.store.efs.paths import (
    DIR_MODE,
    FILE_MODE,
    OPEN_APPEND,
    OPEN_READ,
    OPEN_REPLACE,
    file_error,
    partial_name,
    sidecar_names,
)
from s2_downloader.domain.errors import FileStoreError, PartialInUse

__all__ = ["EfsPartial", "fsync_dir", "open_locked", "unlink", "unlink_partial"]

#: Once a partial holds this many bytes, the chunks after are hashed in a thread of their
#: own, overlapping MD5 with the socket reads and file writes of the downloading thread
#: (hashlib releases the GIL for buffers over 2047 bytes). Smaller products never pay
#: for a thread.
_BACKGROUND_HASH_FROM: Final = 1024 * 1024
#: A validator is an ETag or an HTTP date: short, printable ASCII. Anything else in a
#: sidecar is not ours to send as a header.
_VALIDATOR_MAX: Final = 1024


def _valid_validator(text: str) -> bool:
    return 0 < len(text) <= _VALIDATOR_MAX and all(" " <= c <= "~" for c in text)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if not written:
            raise OSError(errno.EIO, "write made no progress")
        view = view[written:]


def _read_validator(path: Path) -> str | None:
    """The validator in the sidecar at ``path``; ``None`` when there is none or it is not one."""
    try:
        fd = os.open(path, OPEN_READ)
    except FileNotFoundError:
        return None
    try:
        data = os.read(fd, _VALIDATOR_MAX + 1)
        # Kept as fresh as its partial, so a sweep by age never takes it from a live one.
        os.utime(fd)
    finally:
        os.close(fd)
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return None
    return text if _valid_validator(text) else None


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable; raises ``OSError`` for real I/O errors only."""
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
    updated from the same chunk, so nothing is copied or read back. Past the first
    MiB the MD5 runs in a thread of its own (``BackgroundMd5``), so on a multi-core
    machine hashing overlaps the socket reads and file writes instead of following them.
    """

    path: Path
    _file: io.FileIO = attrs.field(repr=False)
    _md5: hashlib._Hash = attrs.field(repr=False)
    _size: int = 0
    #: The validator sidecar, and the temporary name it is written under.
    sidecar: Path | None = None
    _sidecar_temporary: Path | None = attrs.field(default=None, repr=False)
    _validator: str | None = None
    _background: BackgroundMd5 | None = attrs.field(default=None, init=False, repr=False)

    @property
    def size(self) -> int:
        """Bytes held so far."""
        return self._size

    @property
    def validator(self) -> str | None:
        """The validator stored with the held bytes (read from the sidecar at open), or ``None``."""
        return self._validator

    def set_validator(self, validator: str | None) -> None:
        """Store ``validator`` for the bytes about to be written (atomically), or remove it for ``None``."""
        sidecar, temporary = self.sidecar, self._sidecar_temporary
        if sidecar is None or temporary is None:
            self._validator = validator  # a partial opened without a store keeps it in memory only
            return
        try:
            if validator is None or not _valid_validator(validator):
                sidecar.unlink(missing_ok=True)
                self._validator = None
                return
            fd = os.open(temporary, OPEN_REPLACE, FILE_MODE)
            try:
                _write_all(fd, validator.encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, sidecar)
            # Durable before the partial's first byte is, so it never describes other bytes.
            fsync_dir(sidecar.parent)
        except OSError as exc:
            raise file_error("store the validator beside", self.path, exc) from exc
        self._validator = validator

    def expect_size(self, total_size: int | None) -> None:
        """Nothing to do: a file grows as it is written."""
        del total_size

    def fileno(self) -> int:
        """The descriptor of the open partial: the file that is hashed."""
        return self._file.fileno()

    def write(self, chunk: bytes) -> None:
        """Append ``chunk`` and hash it."""
        try:
            written = self._file.write(chunk)
            if written != len(chunk):
                self._write_rest(chunk, written)
        except OSError as exc:
            raise file_error("append to", self.path, exc) from exc
        if self._background is not None:
            # The port says bytes; a mutable buffer could change before the thread reads it.
            self._background.update(chunk if type(chunk) is bytes else bytes(chunk))
        elif self._size >= _BACKGROUND_HASH_FROM:
            self._background = BackgroundMd5.start(self._md5, f"md5-{self.path.name}")
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
            raise file_error("truncate", self.path, exc) from exc
        self._hashed()
        self._md5 = new_md5()
        self._size = 0

    def hexdigest(self) -> str:
        """Flush the file to stable storage, then return the MD5 of everything held."""
        try:
            # The hashing thread, if any, finishes its backlog while this waits on the disk.
            os.fsync(self._file.fileno())
            on_disk = os.fstat(self._file.fileno()).st_size
        except OSError as exc:
            raise file_error("fsync", self.path, exc) from exc
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
                raise file_error("close", self.path, exc) from exc


def open_locked(directory: Path, filename: str) -> EfsPartial:
    """Open (creating) the partial of ``filename`` in ``directory`` under an exclusive lock.

    Its digest is seeded with what it already holds and its validator read from the
    sidecar; ``PartialInUse`` when another attempt holds the lock. The caller closes it.
    """
    path = directory / partial_name(filename)
    try:
        directory.mkdir(mode=DIR_MODE, exist_ok=True)
        fd = os.open(path, OPEN_APPEND, FILE_MODE)
    except OSError as exc:
        raise file_error("open", path, exc) from exc
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
        raise file_error("lock", path, exc) from exc
    sidecar, temporary = (directory / name for name in sidecar_names(filename))
    try:
        # Resume: the digest must cover the bytes an earlier attempt left.
        digest = new_md5()
        size = hash_fd(fd, digest)
        validator = _read_validator(sidecar) if size else None
        raw = io.FileIO(fd, "r+", closefd=True)
    except OSError as exc:
        os.close(fd)
        raise file_error("read", path, exc) from exc
    return EfsPartial(
        path, raw, digest, size, sidecar=sidecar, sidecar_temporary=temporary, validator=validator
    )


def unlink(path: Path) -> None:
    """Remove ``path`` if it is there."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise file_error("remove", path, exc) from exc


def unlink_partial(directory: Path, filename: str) -> None:
    """Remove the partial of ``filename`` and its sidecar, if there."""
    # Partial first: if the sidecar removal then fails, what is left is a sidecar without
    # a partial, which a fresh partial replaces before its first byte is written.
    unlink(directory / partial_name(filename))
    for name in sidecar_names(filename):
        unlink(directory / name)
