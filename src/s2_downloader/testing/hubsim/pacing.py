"""The simulator's rate limit: one connection's body paced at a rate, with no catch-up after a stall.

A token bucket. Budget accrues at ``rate`` bytes per second but never beyond ``burst``
(20 ms of the rate), so time the connection spent stalled (a client that stopped
reading, a full socket buffer) is lost, as on a link of that speed: the body goes on at
the rate afterwards instead of making up for the pause in a burst, which would flatter a
resume.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import attrs

__all__ = ["Pacer"]

#: The budget a connection may hold: this many seconds of its rate.
_BURST_SECONDS = 0.02


@attrs.define
class Pacer:
    """Paces one connection at ``rate`` bytes per second; ``clock`` is monotonic seconds."""

    rate: float
    clock: Callable[[], float] = attrs.field(default=time.monotonic, repr=False)
    #: The most bytes that may go out at once, and the most budget ever held.
    burst: int = attrs.field(init=False)
    _budget: float = attrs.field(init=False)
    _last: float = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.burst = max(1, int(self.rate * _BURST_SECONDS))
        self._budget = float(self.burst)
        self._last = self.clock()

    def delay(self, size: int) -> float:
        """Seconds to wait before sending ``size`` bytes (at most ``burst``), which count as sent."""
        now = self.clock()
        # Capped: budget a stall would have earned is not kept.
        self._budget = min(float(self.burst), self._budget + (now - self._last) * self.rate)
        self._last = now
        self._budget -= size
        return max(0.0, -self._budget / self.rate)
