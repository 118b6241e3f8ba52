"""The local runner's live view: active downloads, totals and outcomes, or nothing off a terminal."""

from __future__ import annotations

import collections
import logging
import sys
import threading
import time
from typing import TextIO

import attrs

from s2_downloader.entrypoints.logs import scrub

__all__ = ["ConsoleFormatter", "DisplayLogHandler", "ProgressBoard", "TerminalDisplay"]


@attrs.define
class _Transfer:
    total: int | None
    done: int = 0
    first_done: int = 0
    started: float = attrs.field(factory=time.monotonic)

    def rate(self, now: float) -> float:
        elapsed = now - self.started
        return (self.done - self.first_done) / elapsed if elapsed > 0 else 0.0


@attrs.define
class ProgressBoard:
    """Thread-safe tallies of transfers and outcomes; the use case's ``Progress`` port."""

    _lock: threading.Lock = attrs.field(factory=threading.Lock)
    _active: dict[str, _Transfer] = attrs.field(factory=dict)
    outcomes: collections.Counter[str] = attrs.field(factory=collections.Counter)
    bytes_total: int = 0
    started: float = attrs.field(factory=time.monotonic)

    def transferred(self, granule_id: str, done: int, total: int | None) -> None:
        """``done`` bytes of ``granule_id`` are in its partial file."""
        with self._lock:
            transfer = self._active.get(granule_id)
            if transfer is None:
                transfer = self._active[granule_id] = _Transfer(total=total, done=done, first_done=done)
                return
            self.bytes_total += max(0, done - transfer.done)
            transfer.done = done
            transfer.total = total

    def finished(self, granule_id: str | None, outcome: str) -> None:
        """The message for ``granule_id`` came to ``outcome``."""
        with self._lock:
            if granule_id is not None:
                self._active.pop(granule_id, None)
            self.outcomes[outcome] += 1

    def snapshot(self) -> tuple[list[tuple[str, int, int | None, float]], int, dict[str, int], float]:
        """Active transfers (id, done, total, bytes/s), bytes so far, outcome counts, seconds running."""
        now = time.monotonic()
        with self._lock:
            active = [(gid, t.done, t.total, t.rate(now)) for gid, t in sorted(self._active.items())]
            return active, self.bytes_total, dict(self.outcomes), now - self.started


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


@attrs.define
class TerminalDisplay:
    """Redraws the board in place a few times a second; log lines are printed above it."""

    board: ProgressBoard
    stream: TextIO = sys.stderr
    interval: float = 0.5
    _lines: int = 0
    _lock: threading.Lock = attrs.field(factory=threading.Lock)
    _stop: threading.Event = attrs.field(factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        """Begin redrawing in a daemon thread."""
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Draw one last time and stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self.redraw()

    def print_above(self, line: str) -> None:
        """Print ``line`` above the board without tearing it."""
        with self._lock:
            self._clear()
            self.stream.write(line + "\n")
            self._draw()

    def redraw(self) -> None:
        """Replace the board with its current state."""
        with self._lock:
            self._clear()
            self._draw()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.redraw()

    def _clear(self) -> None:
        if self._lines:
            self.stream.write(f"\x1b[{self._lines}F\x1b[J")
            self._lines = 0

    def _draw(self) -> None:
        active, total, outcomes, seconds = self.board.snapshot()
        rows = []
        for gid, done, size, rate in active[:15]:
            share = f"{100 * done / size:5.1f}%" if size else "   ?  "
            rows.append(f"  {gid[:40]:<40} {share} {_mb(done):>12} {rate / 1e6:8.1f} MB/s")
        counts = "  ".join(f"{name} {n}" for name, n in sorted(outcomes.items())) or "no message handled yet"
        rate = total / seconds / 1e6 if seconds > 0 else 0.0
        rows.append(f"{len(active)} active | {_mb(total)} in {seconds:,.0f} s ({rate:.1f} MB/s) | {counts}")
        self.stream.write("\n".join(rows) + "\n")
        self.stream.flush()
        self._lines = len(rows)


class ConsoleFormatter(logging.Formatter):
    """``LEVEL granule: message (error)`` for people watching a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        """One short line."""
        granule = getattr(record, "granule_id", None)
        detail = getattr(record, "error", None) or getattr(record, "reason", None)
        line = f"{record.levelname:<7} {granule + ': ' if granule else ''}{record.getMessage()}"
        return scrub(f"{line} ({str(detail)[:160]})" if detail else line)


class DisplayLogHandler(logging.Handler):
    """Routes log records through the display so they scroll above the board."""

    def __init__(self, display: TerminalDisplay) -> None:
        super().__init__(level=logging.WARNING)
        self.display = display

    def emit(self, record: logging.LogRecord) -> None:
        """Print the record above the board."""
        try:
            self.display.print_above(self.format(record))
        except Exception:  # noqa: BLE001 - logging must never break the runner
            self.handleError(record)
