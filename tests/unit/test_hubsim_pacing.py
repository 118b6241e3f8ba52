"""The hub simulator's rate limit: a connection's body at its rate, and no catch-up burst after a stall."""

from __future__ import annotations

import attrs
import pytest

from s2_downloader.testing.hubsim.pacing import Pacer

RATE = 100_000.0


@attrs.define
class Connection:
    """A paced sender on a clock that moves only when told to, or by the waits the pacer asks for."""

    now: float = 0.0
    pacer: Pacer = attrs.field(init=False)
    #: (time sent, bytes) of every piece.
    sent: list[tuple[float, int]] = attrs.field(factory=list)

    def __attrs_post_init__(self) -> None:
        self.pacer = Pacer(RATE, clock=lambda: self.now)

    def send(self, total: int) -> None:
        """Send ``total`` bytes in pieces of a burst, waiting as the pacer asks."""
        while total > 0:
            size = min(self.pacer.burst, total)
            self.now += self.pacer.delay(size)
            self.sent.append((self.now, size))
            total -= size

    def stall(self, seconds: float) -> None:
        """The client stops reading for ``seconds``: nothing can be sent meanwhile."""
        self.now += seconds

    def bytes_between(self, start: float, end: float) -> int:
        """Bytes sent in ``[start, end)``."""
        return sum(size for at, size in self.sent if start <= at < end)


def test_a_body_goes_at_the_rate() -> None:
    """Ten seconds' worth of bytes take ten seconds, within one burst."""
    connection = Connection()

    connection.send(int(RATE * 10))

    assert connection.now == pytest.approx(10.0, abs=connection.pacer.burst / RATE)


def test_a_stall_earns_no_catch_up_burst() -> None:
    """After a 5 s stall, the next second carries one second's bytes (and one burst), not six seconds'."""
    connection = Connection()
    connection.send(int(RATE))
    connection.stall(5.0)
    resumed = connection.now

    connection.send(int(RATE * 3))

    assert connection.bytes_between(resumed, resumed + 1.0) <= RATE + connection.pacer.burst


def test_a_stall_costs_the_time_it_took() -> None:
    """A body of three seconds' bytes with a 5 s stall in the middle ends after about eight seconds."""
    connection = Connection()
    connection.send(int(RATE * 1.5))
    connection.stall(5.0)

    connection.send(int(RATE * 1.5))

    assert connection.now == pytest.approx(8.0, abs=2 * connection.pacer.burst / RATE)
