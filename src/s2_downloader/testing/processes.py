"""What the throwaway servers (moto, SeaweedFS) share: reading the end of a server's log."""

from __future__ import annotations

import os
from typing import IO, Final

__all__ = ["log_tail"]

_TAIL_BYTES: Final = 4000


def log_tail(log: IO[bytes]) -> str:
    """The last few KB a server wrote to ``log``, for an error message.

    ``pread`` leaves alone the file offset the server process shares with us.
    """
    size = os.fstat(log.fileno()).st_size
    start = max(0, size - _TAIL_BYTES)
    return os.pread(log.fileno(), size - start, start).decode("utf-8", errors="replace").strip()
