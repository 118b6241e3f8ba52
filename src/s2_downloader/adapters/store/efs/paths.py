"""Where the EFS store keeps things, and the checks that keep it inside the mount.

A verified product lives at ``<mount>/<granule_id>/<filename>``. Data in progress lives
next to it as ``.<filename>.partial``: docs/interface.md forbids filenames that start with
``.``, so no final file can ever have a partial's name, and a leftover partial can never be
served as a product. (When ``.<filename>.partial`` would pass the 255-byte name limit, the
partial is named after a SHA-256 of the filename.)

The validator of the response a partial's bytes came from lives in a small sidecar,
``..<filename>.partial``: no final name and no partial name can start with two dots, and
ending like a partial it is swept with them. It is written under a temporary
``...<filename>.partial`` and renamed over.

Paths are checked again here, whatever the caller validated: the id and filename must pass
the documented rules, and the granule directory must resolve to a direct child of the
resolved mount (a symlinked id directory pointing elsewhere is refused). Files are opened
with ``O_NOFOLLOW`` (the ``OPEN_*`` flags), so a symlink planted at a file's name is refused
too. The mount itself is never created: a missing mount means EFS is not mounted, and
writing to the local disk underneath would be wrong.
"""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Final

from s2_downloader.domain.errors import BadRequest, FileStoreError
from s2_downloader.domain.request import validate_filename, validate_id

if TYPE_CHECKING:
    from s2_downloader.domain.ports import FileKey

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "OPEN_APPEND",
    "OPEN_READ",
    "OPEN_REPLACE",
    "PARTIAL_SUFFIX",
    "file_error",
    "granule_directory",
    "is_partial_name",
    "partial_name",
    "sidecar_names",
]

#: Partial files are ``.<filename>`` plus this suffix.
PARTIAL_SUFFIX: Final = ".partial"

_NAME_MAX: Final = 255
FILE_MODE: Final = 0o644
DIR_MODE: Final = 0o755
OPEN_APPEND: Final = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
OPEN_READ: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
OPEN_REPLACE: Final = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC


def partial_name(filename: str) -> str:
    """The name of the partial file of ``filename``, in the same directory."""
    name = f".{filename}{PARTIAL_SUFFIX}"
    if len(os.fsencode(name)) <= _NAME_MAX:
        return name
    return f".{hashlib.sha256(os.fsencode(filename)).hexdigest()}{PARTIAL_SUFFIX}"


def sidecar_names(filename: str) -> tuple[str, str]:
    """The validator sidecar of ``filename``'s partial and the temporary name it is written under."""
    stem = filename
    if len(os.fsencode(f"...{filename}{PARTIAL_SUFFIX}")) > _NAME_MAX:
        stem = hashlib.sha256(os.fsencode(filename)).hexdigest()
    return f"..{stem}{PARTIAL_SUFFIX}", f"...{stem}{PARTIAL_SUFFIX}"


def is_partial_name(name: str) -> bool:
    """Whether ``name`` is a partial's (or a sidecar's): what a sweep may remove, never a final file."""
    return name.startswith(".") and name.endswith(PARTIAL_SUFFIX) and len(name) > len(PARTIAL_SUFFIX) + 1


def file_error(action: str, path: Path | str, exc: OSError) -> FileStoreError:
    """``exc`` as the ``FileStoreError`` that names ``path``: no ``OSError`` leaves the store."""
    reason = exc.strerror or type(exc).__name__
    if exc.errno == errno.ELOOP:
        reason = "is a symlink, refused"
    return FileStoreError(f"cannot {action} {path}: {reason}")


def granule_directory(mount: Path, key: FileKey) -> Path:
    """The granule directory of ``key``, checked to be a direct child of the mount."""
    try:
        validate_id(key.granule_id)
        validate_filename(key.filename)
    except BadRequest as exc:
        raise FileStoreError(f"refused unsafe key: {exc.reason}") from exc
    try:
        root = mount.resolve(strict=True)
        directory = (root / key.granule_id).resolve()
    except OSError as exc:
        raise file_error("resolve", mount / key.granule_id, exc) from exc
    if directory.parent != root:
        msg = f"refused {mount / key.granule_id}: it resolves to {directory}, outside {root}"
        raise FileStoreError(msg)
    return directory
