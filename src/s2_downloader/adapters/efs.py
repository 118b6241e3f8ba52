"""The file store on the EFS mount: final products and resumable partial files.

A verified product lives at ``<mount>/<granule_id>/<filename>``. Data in progress
lives next to it as ``.<filename>.partial``: docs/interface.md forbids filenames that
start with ``.``, so no final file can ever have a partial's name, and a leftover
partial can never be served as a product. (When ``.<filename>.partial`` would pass
the 255-byte name limit, the partial is named after a SHA-256 of the filename.)

The validator of the response a partial's bytes came from (an ETag or Last-Modified,
sent back as ``If-Range`` on resume) lives in a small sidecar, ``..<filename>.partial``:
no final name and no partial name can start with two dots, and ending like a partial it
is swept with them. A sidecar rather than an extended attribute because EFS speaks NFS
4.0/4.1, which has no extended attributes. It is written before the partial's first byte,
atomically (a temporary ``...<filename>.partial`` renamed over it), and removed with the
partial, so it always describes the bytes held.

``promote`` renames the file that was hashed, not merely whatever the partial's path
names by then: it checks that the open descriptor's inode is the path's inode first.

Paths are checked again here, whatever the caller validated: the id and filename
must pass the documented rules, the granule directory must resolve to a direct child
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs

from s2_downloader.domain.errors import BadRequest, FileStoreError, PartialInUse
from s2_downloader.domain.request import validate_filename, validate_id

if TYPE_CHECKING:
    from s2_downloader.domain.ports import FileKey

__all__ = [
    "PARTIAL_SUFFIX",
    "EfsFileStore",
    "EfsPartial",
    "Scan",
    "close_scan",
    "partial_name",
    "sweep_directory",
]

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
#: A validator is an ETag or an HTTP date: short, printable ASCII. Anything else in a
#: sidecar is not ours to send as a header.
_VALIDATOR_MAX: Final = 1024
_FILE_MODE: Final = 0o644
_DIR_MODE: Final = 0o755
_OPEN_APPEND: Final = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_READ: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_REPLACE: Final = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC


def partial_name(filename: str) -> str:
    """The name of the partial file of ``filename``, in the same directory."""
    name = f".{filename}{PARTIAL_SUFFIX}"
    if len(os.fsencode(name)) <= _NAME_MAX:
        return name
    return f".{hashlib.sha256(os.fsencode(filename)).hexdigest()}{PARTIAL_SUFFIX}"


def _sidecar_names(filename: str) -> tuple[str, str]:
    """The validator sidecar of ``filename``'s partial and the temporary name it is written under."""
    stem = filename
    if len(os.fsencode(f"...{filename}{PARTIAL_SUFFIX}")) > _NAME_MAX:
        stem = hashlib.sha256(os.fsencode(filename)).hexdigest()
    return f"..{stem}{PARTIAL_SUFFIX}", f"...{stem}{PARTIAL_SUFFIX}"


def _valid_validator(text: str) -> bool:
    return 0 < len(text) <= _VALIDATOR_MAX and all(" " <= c <= "~" for c in text)


def _is_partial_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(PARTIAL_SUFFIX) and len(name) > len(PARTIAL_SUFFIX) + 1


#: Lists a directory (``os.scandir``; tests pass their own).
Scan = Callable[[str], Iterator[os.DirEntry[str]]]


def sweep_directory(path: str, cutoff: float, *, scan: Scan = os.scandir) -> int:
    """Remove the partial files in ``path`` last written before ``cutoff`` (epoch seconds).

    Never follows a symlink and never touches a final file; raises ``OSError``.
    """
    removed = 0
    entries = scan(path)
    try:
        for entry in entries:
            if not (_is_partial_name(entry.name) and entry.is_file(follow_symlinks=False)):
                continue
            try:
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue  # removed while we looked
    finally:
        close_scan(entries)
    return removed


def close_scan(entries: Iterator[os.DirEntry[str]] | None) -> None:
    # A scandir iterator holds a file descriptor until closed; a test's plain iterator has no close.
    close = getattr(entries, "close", None)
    if close is not None:
        close()


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
        fd = os.open(path, _OPEN_READ)
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
    #: The validator sidecar, and the temporary name it is written under.
    sidecar: Path | None = None
    _sidecar_temporary: Path | None = attrs.field(default=None, repr=False)
    _validator: str | None = None
    _background: _BackgroundMd5 | None = attrs.field(default=None, init=False, repr=False)

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
            fd = os.open(temporary, _OPEN_REPLACE, _FILE_MODE)
            try:
                _write_all(fd, validator.encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, sidecar)
            # Durable before the partial's first byte is, so it never describes other bytes.
            _fsync_dir(sidecar.parent)
        except OSError as exc:
            raise _error("store the validator beside", self.path, exc) from exc
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
    """Products and partial files under ``mount`` (the ``Files`` port: final products and partials)."""

    mount: Path = attrs.field(converter=Path)
    #: The partials open through this store, by path: promote needs the descriptor that was hashed.
    _open: dict[Path, EfsPartial] = attrs.field(factory=dict, init=False, repr=False)
    _open_lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)

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

    def sidecar_path(self, key: FileKey) -> Path:
        """Where the validator of the partial of ``key`` lives."""
        return self._directory(key) / _sidecar_names(key.filename)[0]

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

    def discard_final(self, key: FileKey) -> None:
        """Delete a final file that does not match (and the partial of ``key``), as ``remove`` does."""
        self.remove(key)

    def remove(self, key: FileKey) -> None:
        """Delete the final file and the partial of ``key``, then the granule directory if empty."""
        directory = self._directory(key)
        self._unlink(directory / key.filename)
        self._unlink_partial(directory, key.filename)
        self._remove_if_empty(directory)

    # -- PartialFiles ---------------------------------------------------------------

    @contextlib.contextmanager
    def open_partial(self, key: FileKey, *, checksum: str | None = None) -> Iterator[EfsPartial]:
        """Open the partial of ``key`` for appending, its digest seeded with what it already holds.

        ``checksum`` is not needed here: the use case promotes only a matching digest.
        """
        del checksum
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
        sidecar, temporary = (directory / name for name in _sidecar_names(key.filename))
        try:
            # Resume: the digest must cover the bytes an earlier attempt left.
            digest = _md5()
            size = _hash_fd(fd, digest)
            validator = _read_validator(sidecar) if size else None
            raw = io.FileIO(fd, "r+", closefd=True)
        except OSError as exc:
            os.close(fd)
            raise _error("read", path, exc) from exc
        partial = EfsPartial(
            path, raw, digest, size, sidecar=sidecar, sidecar_temporary=temporary, validator=validator
        )
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
        directory = self._directory(key)
        partial = directory / partial_name(key.filename)
        final = directory / key.filename
        with self._open_lock:
            held = self._open.get(partial)
        if held is None:
            msg = f"cannot promote {partial}: it is not open here (promote it while it is open)"
            raise FileStoreError(msg)
        try:
            fd = held.fileno()
            os.fsync(fd)
            hashed = os.fstat(fd)
            try:
                there = os.stat(partial, follow_symlinks=False)
            except FileNotFoundError:
                msg = f"cannot promote {partial}: it was removed while being written"
                raise FileStoreError(msg) from None
            # The lock is on the inode, not the name: a partial unlinked under us (a sweep,
            # a remove) may have been recreated by another attempt, whose bytes are not ours.
            if (hashed.st_dev, hashed.st_ino) != (there.st_dev, there.st_ino):
                msg = f"{partial} is now another attempt's file, not the one hashed; not promoted"
                raise PartialInUse(msg)
            os.replace(partial, final)
            _fsync_dir(directory)
        except OSError as exc:
            raise _error("promote", partial, exc) from exc
        if held.sidecar is not None:
            self._unlink(held.sidecar)

    def discard_partial(self, key: FileKey) -> None:
        """Delete the partial of ``key`` if there is one, then the granule directory if empty."""
        directory = self._directory(key)
        self._unlink_partial(directory, key.filename)
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
                removed += sweep_directory(granule.path, cutoff)
            except FileNotFoundError:
                continue  # removed while we looked
            except OSError as exc:
                raise _error("sweep", granule.path, exc) from exc
        return removed

    @classmethod
    def _unlink_partial(cls, directory: Path, filename: str) -> None:
        # Partial first: if the sidecar removal then fails, what is left is a sidecar without
        # a partial, which a fresh partial replaces before its first byte is written.
        cls._unlink(directory / partial_name(filename))
        for name in _sidecar_names(filename):
            cls._unlink(directory / name)

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
