"""A product's body as it arrives: ``ProductResponseStream``, the ``ProductStream`` port over urllib3.

The body is read in chunks and never held whole. Each read is cut to the read timeout
and to the deadline, and a transfer slower than ``_MIN_BYTES_PER_WINDOW`` per read-timeout
window counts as stalled, so a hub that drips a few bytes per timeout cannot hold an
attempt for ever.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import attrs
import urllib3
from urllib3.exceptions import HTTPError, ReadTimeoutError

from s2_downloader.adapters.hub.bodies import why
from s2_downloader.adapters.hub.deadlines import set_read_timeout, time_left
from s2_downloader.domain.errors import DeadlineExceeded, FailureKind, HubError

__all__ = ["DEFAULT_CHUNK_SIZE", "ProductResponseStream"]

#: One read per chunk; large enough that the per-chunk Python overhead is noise.
DEFAULT_CHUNK_SIZE = 1 << 20
#: The slowest a transfer may be, per read-timeout window, before it counts as stalled.
_MIN_BYTES_PER_WINDOW = 64 * 1024


@attrs.define
class ProductResponseStream:
    """A ``ProductStream`` over one urllib3 response; ``close`` always returns its connection."""

    offset: int
    total_size: int | None
    _response: urllib3.BaseHTTPResponse | None = attrs.field(repr=False)
    _chunk_size: int
    _where: str
    #: Over each window this long at least _MIN_BYTES_PER_WINDOW must arrive (the read timeout).
    _stall_seconds: float = 60.0
    #: The strong ETag or Last-Modified of the response that carries the body.
    validator: str | None = None
    _deadline: float | None = attrs.field(default=None, repr=False)
    _finished: bool = attrs.field(default=False, init=False)

    def chunks(self) -> Iterator[bytes]:
        """The body in ``chunk_size`` pieces; raises ``HubError`` when the transfer breaks.

        Raises ``DeadlineExceeded`` once the deadline has passed: each read is cut to
        the time left, and the deadline is checked between reads.
        """
        response = self._response
        if response is None:
            self._finished = True
            return
        # read1 returns what has arrived (up to ``size``) after at most one socket read,
        # so the caller gets control back at least once per read timeout (to renew its
        # lease, to notice a shutdown) even when the hub trickles; read() would wait for
        # a whole chunk, however long that takes.
        read = response.read1
        size = self._chunk_size
        window = self._stall_seconds
        deadline = self._deadline
        window_start, window_bytes = time.monotonic(), 0
        capped = False
        try:
            while True:
                if deadline is not None:
                    left = time_left(deadline, f"the next read from {self._where}")
                    assert left is not None
                    capped = left < window
                    set_read_timeout(response, min(window, left))
                chunk = read(size)
                if not chunk:
                    break
                yield chunk
                window_bytes += len(chunk)
                now = time.monotonic()
                if now - window_start >= window:
                    # A hub that drips a few bytes per read timeout would never time out.
                    if window_bytes < _MIN_BYTES_PER_WINDOW:
                        seconds = now - window_start
                        detail = (
                            f"transfer from {self._where} stalled: {window_bytes} bytes in {seconds:.0f} s"
                        )
                        raise HubError(FailureKind.TRANSFER_INTERRUPTED, detail)
                    window_start, window_bytes = now, 0
        except ReadTimeoutError as exc:
            if capped:
                raise DeadlineExceeded(f"out of time reading from {self._where}") from exc
            raise HubError(FailureKind.TRANSFER_INTERRUPTED, f"read timed out on {self._where}") from exc
        except (HTTPError, OSError) as exc:
            detail = f"transfer from {self._where} broke: {why(exc)}"
            raise HubError(FailureKind.TRANSFER_INTERRUPTED, detail) from exc
        self._finished = True

    def close(self) -> None:
        """Release the connection: back to the pool after a full body, else closed."""
        response = self._response
        if response is None:
            return
        self._response = None
        if not self._finished:
            # An abandoned body would have to be drained to reuse the connection.
            response.close()
        response.release_conn()
