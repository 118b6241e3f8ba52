"""``s2-downloader run``: the local runner, with a progress display on a terminal or JSON log lines.

A run, step by step: choose the output, build the adapters, sweep the store's leftovers,
run the runner with SIGINT and SIGTERM stopping it gracefully, then print a summary.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import TYPE_CHECKING

import attrs

from s2_downloader.adapters.metrics import Metrics, NullMetrics
from s2_downloader.domain.ports import LeftoverSweep
from s2_downloader.entrypoints.config import Settings
from s2_downloader.entrypoints.logs import JsonFormatter, configure_logging
from s2_downloader.entrypoints.progress import (
    ConsoleFormatter,
    DisplayLogHandler,
    ProgressBoard,
    TerminalDisplay,
)
from s2_downloader.entrypoints.runner import Runner, RunnerSettings
from s2_downloader.entrypoints.wiring import Container, build, check_not_fifo

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_sqs.client import SQSClient

__all__ = ["STOP_SIGNALS", "run_locally", "stop_on_signals"]

_log = logging.getLogger("s2_downloader.run")

#: The signals that stop a local run gracefully: Ctrl-C, and what ``kill``, systemd and ECS send.
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_on_signals(
    stop: Callable[[], None], signals: Sequence[signal.Signals] = STOP_SIGNALS
) -> Iterator[None]:
    """Call ``stop`` when one of ``signals`` arrives inside the block; restore the previous handlers after.

    Only the main thread may install signal handlers (Python's rule).
    """

    def on_signal(signum: int, frame: FrameType | None) -> None:
        del frame
        _log.info("signal received; stopping", extra={"event": "signal", "signal": signum})
        stop()

    previous: dict[signal.Signals, Callable[[int, FrameType | None], object] | int | None] = {}
    try:
        for sig in signals:
            previous[sig] = signal.signal(sig, on_signal)
        yield
    finally:
        for sig, old in previous.items():
            # None: the handler was not installed from Python; the default is the nearest we can restore.
            signal.signal(sig, signal.SIG_DFL if old is None else old)


@attrs.frozen
class _Output:
    """Where the run reports: a live board on a terminal (``display``), else JSON log lines."""

    board: ProgressBoard
    display: TerminalDisplay | None


def _output(*, interactive: bool) -> _Output:
    board = ProgressBoard()
    if not interactive:
        configure_logging()
        return _Output(board=board, display=None)
    display = TerminalDisplay(board=board)
    handler = DisplayLogHandler(display)
    handler.setFormatter(ConsoleFormatter())
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    return _Output(board=board, display=display)


@contextlib.contextmanager
def _showing(display: TerminalDisplay | None) -> Iterator[None]:
    """The board redrawn while the block runs, drawn once more at its end."""
    if display is None:
        yield
        return
    display.start()
    try:
        yield
    finally:
        display.stop()


def _sweep(store: LeftoverSweep) -> None:
    # What attempts that are gone left behind (EFS: stale partial files; S3: nothing). A
    # place that cannot be read is logged and skipped: it must not stop every start.
    swept = store.sweep_leftovers()
    if swept:
        _log.info("swept stale partial files", extra={"event": "partials_swept", "count": swept})


def _runner(container: Container, board: ProgressBoard, *, concurrency: int, until_empty: bool) -> Runner:
    return Runner(
        queue=container.download_queue,
        context=container.context,
        check_url=container.check_download_url,
        settings=RunnerSettings(concurrency=concurrency, until_empty=until_empty),
        board=board,
        metrics=container.metrics,
    )


def run_locally(
    settings: Settings,
    *,
    concurrency: int,
    until_empty: bool,
    interactive: bool | None = None,
    metrics: Metrics | None = None,
    sqs: SQSClient | None = None,
    s3: S3Client | None = None,
) -> int:
    """Run the runner on ``settings`` until stopped (or, ``until_empty``, the queue is empty); exit code.

    ``interactive``: a live board on stderr (default: when stderr is a terminal), else JSON
    log lines. ``metrics``: where the runner reports (``run --metrics``: EMF records on
    stdout). ``sqs``, ``s3``: the clients (default: boto3's, from the process's AWS configuration).
    """
    output = _output(interactive=sys.stderr.isatty() if interactive is None else interactive)
    container = build(
        settings,
        concurrency=concurrency,
        metrics=NullMetrics() if metrics is None else metrics,
        sqs=sqs,
        s3=s3,
    )
    try:
        check_not_fifo(container.queues)
        _sweep(container.files)
        runner = _runner(container, output.board, concurrency=concurrency, until_empty=until_empty)
        started = time.monotonic()
        with stop_on_signals(runner.stop), _showing(output.display):
            code = runner.run()
        _summary(output, time.monotonic() - started)
        return code
    finally:
        container.close()


def _summary(output: _Output, seconds: float) -> None:
    _, total, outcomes, _ = output.board.snapshot()
    if output.display is not None:
        counts = ", ".join(f"{n} {name}" for name, n in sorted(outcomes.items())) or "nothing handled"
        print(f"done: {counts}; {total / 1e6:,.1f} MB in {seconds:,.1f} s", file=sys.stderr)  # noqa: T201
        return
    fields = {
        "event": "runner_summary",
        "bytes": total,
        "seconds": round(seconds, 3),
        "mb_per_s": round(total / seconds / 1e6, 1) if seconds > 0 else 0.0,
        **{f"outcome_{name}": count for name, count in outcomes.items()},
    }
    record = logging.LogRecord("s2_downloader.runner", logging.INFO, "", 0, "runner summary", (), None)
    record.__dict__.update(fields)
    print(JsonFormatter().format(record), file=sys.stderr)  # noqa: T201
