"""Final files on EFS: their digest, the rename that makes a partial one, and tidying a granule directory.

``promote`` renames the file that was hashed, not merely whatever the partial's path names
by then: it checks that the open descriptor's inode is the path's inode first.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from s2_downloader.adapters.store.efs.hashing import hash_fd, new_md5
from s2_downloader.adapters.store.efs.partial import EfsPartial, fsync_dir, unlink
from s2_downloader.adapters.store.efs.paths import OPEN_READ, file_error
from s2_downloader.domain.errors import FileStoreError, PartialInUse

__all__ = ["digest_of", "promote", "remove_if_empty"]


def digest_of(path: Path) -> str | None:
    """The MD5 of the regular file at ``path``, streamed; ``None`` when there is none."""
    try:
        fd = os.open(path, OPEN_READ)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise file_error("open", path, exc) from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FileStoreError(f"cannot hash {path}: not a regular file")
        digest = new_md5()
        hash_fd(fd, digest)
    except OSError as exc:
        raise file_error("read", path, exc) from exc
    finally:
        os.close(fd)
    return digest.hexdigest()


def promote(held: EfsPartial, final: Path) -> None:
    """Fsync ``held``, rename it onto ``final`` atomically, fsync the directory, drop its sidecar.

    Only if the partial's path still names the file that was hashed: otherwise
    ``PartialInUse`` (another attempt put a file there) or ``FileStoreError``, and nothing
    is renamed.
    """
    partial = held.path
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
        fsync_dir(final.parent)
    except OSError as exc:
        raise file_error("promote", partial, exc) from exc
    if held.sidecar is not None:
        unlink(held.sidecar)


def remove_if_empty(directory: Path) -> None:
    """Remove the granule directory unless it is gone already or still holds something."""
    try:
        directory.rmdir()
    except OSError as exc:
        if exc.errno in {errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST}:
            return
        raise file_error("remove", directory, exc) from exc
