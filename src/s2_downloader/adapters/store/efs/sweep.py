"""Stale partial files: swept one granule directory at a time, an unreadable one logged and skipped.

A partial nobody has written for ``STALE_PARTIAL_SECONDS`` (far above any lease) belongs
to an attempt that is gone: a failed granule, a crashed worker whose granule was then
verified elsewhere under another filename. The runner sweeps the whole mount at start
(``sweep_mount``); the Lambda sweeps the next directory after each invocation
(``PartialSweep``), so an execution environment walks the whole mount over many
invocations at the cost of one small listing each. One directory that cannot be read or
cleaned (permissions, a stale NFS handle) is logged and skipped: it must never stop a
start or fail an invocation. A sweep never follows a symlink and never touches a final file.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Final

import attrs

from s2_downloader.adapters.store.efs.paths import is_partial_name

__all__ = ["STALE_PARTIAL_SECONDS", "PartialSweep", "Scan", "sweep_directory", "sweep_mount"]

_log = logging.getLogger("s2_downloader.sweep")

#: Partial files untouched this long belong to nobody.
STALE_PARTIAL_SECONDS: Final = 24 * 3600

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
            if not (is_partial_name(entry.name) and entry.is_file(follow_symlinks=False)):
                continue
            try:
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue  # removed while we looked
    finally:
        _close_scan(entries)
    return removed


def _close_scan(entries: Iterator[os.DirEntry[str]] | None) -> None:
    # A scandir iterator holds a file descriptor until closed; a test's plain iterator has no close.
    close = getattr(entries, "close", None)
    if close is not None:
        close()


def _skip(path: str, exc: OSError) -> None:
    _log.warning(
        "could not sweep %s: %s",
        path,
        exc.strerror or type(exc).__name__,
        extra={"event": "sweep_skipped", "path": path, "error": type(exc).__name__},
    )


def sweep_mount(
    mount: str,
    older_than_seconds: float = STALE_PARTIAL_SECONDS,
    *,
    now: float | None = None,
    scan: Scan = os.scandir,
) -> int:
    """Sweep every granule directory of ``mount``; how many partials were removed.

    A directory (or the mount) that raises ``OSError`` is logged and skipped.
    """
    cutoff = (time.time() if now is None else now) - older_than_seconds
    removed = 0
    entries = None
    try:
        entries = scan(mount)
        directories = [entry.path for entry in entries if entry.is_dir(follow_symlinks=False)]
    except OSError as exc:
        _skip(mount, exc)
        return 0
    finally:
        _close_scan(entries)
    for path in directories:
        try:
            removed += sweep_directory(path, cutoff, scan=scan)
        except FileNotFoundError:
            continue  # removed while we looked
        except OSError as exc:
            _skip(path, exc)
    return removed


@attrs.define
class PartialSweep:
    """Sweeps the next granule directory of ``mount`` each ``step``, round and round."""

    mount: str
    older_than_seconds: float = STALE_PARTIAL_SECONDS
    clock: Callable[[], float] = time.time
    scan: Scan = os.scandir
    _entries: Iterator[os.DirEntry[str]] | None = None

    def step(self) -> int:
        """Sweep one directory; how many partials it removed. Never raises ``OSError``."""
        path = self._next_directory()
        if path is None:
            return 0
        try:
            removed = sweep_directory(path, self.clock() - self.older_than_seconds, scan=self.scan)
        except FileNotFoundError:
            return 0
        except OSError as exc:
            _skip(path, exc)
            return 0
        if removed:
            _log.info(
                "swept stale partial files",
                extra={"event": "partials_swept", "count": removed, "path": path},
            )
        return removed

    def _next_directory(self) -> str | None:
        try:
            if self._entries is None:
                self._entries = self.scan(self.mount)
            for entry in self._entries:
                if entry.is_dir(follow_symlinks=False):
                    return entry.path
        except OSError as exc:
            _skip(self.mount, exc)
        # The listing is done (or broke): the next step starts over.
        self._close()
        return None

    def _close(self) -> None:
        entries, self._entries = self._entries, None
        _close_scan(entries)
