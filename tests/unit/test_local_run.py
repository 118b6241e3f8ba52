"""The local run's signal handling: SIGINT and SIGTERM stop the runner only while it runs."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from types import FrameType

import pytest

from s2_downloader.entrypoints.local_run import STOP_SIGNALS, stop_on_signals


def _previous(signum: int, frame: FrameType | None) -> None:
    """The handler installed before the run (never called: the run replaces it)."""
    del signum, frame


@pytest.fixture
def handlers() -> Iterator[None]:
    """SIGINT and SIGTERM handled by ``_previous`` during the test, and as they were after it."""
    saved = {sig: signal.signal(sig, _previous) for sig in STOP_SIGNALS}
    yield
    for sig, old in saved.items():
        signal.signal(sig, old)


@pytest.mark.usefixtures("handlers")
@pytest.mark.parametrize("sig", STOP_SIGNALS, ids=lambda s: s.name)
def test_a_stop_signal_inside_the_block_stops_the_run(sig: signal.Signals) -> None:
    """SIGINT or SIGTERM arriving inside the block calls ``stop`` instead of the previous handler."""
    stops: list[str] = []
    with stop_on_signals(lambda: stops.append("stop")):
        signal.raise_signal(sig)
    assert ["stop"] == stops


@pytest.mark.usefixtures("handlers")
def test_the_previous_handlers_are_back_after_the_block() -> None:
    """Leaving the block reinstalls the handlers it replaced."""
    with stop_on_signals(lambda: None):
        inside = [signal.getsignal(sig) for sig in STOP_SIGNALS]
    assert ([_previous, _previous], False) == (
        [signal.getsignal(sig) for sig in STOP_SIGNALS],
        _previous in inside,
    )


@pytest.mark.usefixtures("handlers")
def test_the_previous_handlers_are_back_when_the_block_raises() -> None:
    """An exception leaving the block still reinstalls the handlers it replaced."""
    with pytest.raises(RuntimeError), stop_on_signals(lambda: None):
        raise RuntimeError
    assert [_previous, _previous] == [signal.getsignal(sig) for sig in STOP_SIGNALS]
