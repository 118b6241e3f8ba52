"""The simulator's request log: every answer as the simulator saw it, and when it was over."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterable

import attrs

__all__ = ["RecordedRequest", "RequestLog"]


@attrs.frozen(kw_only=True)
class RecordedRequest:
    """One request the simulator answered, as it saw it."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    endpoint: str
    product_id: str | None
    status: int
    #: Body bytes the simulator set out to send (fewer when a fault cuts the body).
    body_bytes: int
    grant_type: str | None
    client_port: int
    #: The request's number in the simulator's life (0 first), so its end can be looked up.
    serial: int = -1
    #: ``time.monotonic()`` when the simulator began to answer (sent the status line).
    at: float = 0.0

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (any case), or ``None``."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)

    @property
    def authorization(self) -> str | None:
        """The ``Authorization`` header, if one was sent."""
        return self.header("Authorization")

    @property
    def range(self) -> str | None:
        """The ``Range`` header, if one was sent."""
        return self.header("Range")


class RequestLog:
    """Every request answered, oldest first, and when each answer was over; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        #: serial -> ``time.monotonic()`` when the answer was over (sent, cut, or given up).
        self._finished: dict[int, float] = {}
        # Never reused, not even after clear, so an answer still going on keeps its own.
        self._serials = itertools.count()

    def record(self, request: RecordedRequest) -> int:
        """Add ``request`` (an answer beginning now); its serial."""
        with self._lock:
            serial = next(self._serials)
            self._requests.append(attrs.evolve(request, serial=serial))
            return serial

    def finish(self, serial: int) -> None:
        """The answer numbered ``serial`` is over."""
        with self._lock:
            self._finished[serial] = time.monotonic()

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request answered so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        """Forget the requests recorded so far."""
        with self._lock:
            self._requests.clear()
            self._finished.clear()

    def finished_at(self, request: RecordedRequest) -> float | None:
        """``time.monotonic()`` when the answer to ``request`` was over, or ``None`` while it goes on."""
        with self._lock:
            return self._finished.get(request.serial)

    def in_flight(self, endpoint: str, product_ids: Iterable[str] | None = None) -> list[RecordedRequest]:
        """Requests to ``endpoint`` (for one of ``product_ids``, if given) still being answered."""
        wanted = None if product_ids is None else set(product_ids)
        with self._lock:
            return [
                r
                for r in self._requests
                if r.endpoint == endpoint
                and (wanted is None or r.product_id in wanted)
                and r.serial not in self._finished
            ]
