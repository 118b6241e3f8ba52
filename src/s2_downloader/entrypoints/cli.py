"""The ``s2-downloader`` command line: migrate, run, status, demo (docs/interface.md section 1)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType

from s2_downloader.adapters.postgres import PostgresGranuleStore, StoreStatus, migrate
from s2_downloader.domain.errors import S2DownloaderError
from s2_downloader.entrypoints.config import ConfigError, Settings
from s2_downloader.entrypoints.logs import JsonFormatter, configure_logging, scrub
from s2_downloader.entrypoints.progress import (
    ConsoleFormatter,
    DisplayLogHandler,
    ProgressBoard,
    TerminalDisplay,
)
from s2_downloader.entrypoints.runner import Runner, RunnerSettings
from s2_downloader.entrypoints.sweep import sweep_mount
from s2_downloader.entrypoints.wiring import build, check_not_fifo, database_url, open_database

__all__ = ["main", "run_command"]

_log = logging.getLogger("s2_downloader.cli")


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value!r}")
    return number


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="s2-downloader", description="Downloads Sentinel-2 products for the HLS pipeline."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("migrate", help="create or upgrade the database schema (idempotent)")
    run = sub.add_parser("run", help="the local runner: long-poll the download queue and download")
    run.add_argument("--concurrency", type=_positive, default=15, help="downloads at once (default 15)")
    run.add_argument(
        "--until-empty", action="store_true", help="exit 0 once nothing is in flight and the queue is empty"
    )
    status = sub.add_parser("status", help="granule counts per state, last download, oldest lease")
    status.add_argument("--json", action="store_true", help="one JSON object on stdout")
    demo = sub.add_parser("demo", help="the whole pipeline on 127.0.0.1 with synthetic granules")
    demo.add_argument("--granules", type=_positive, default=24, help="how many granules (default 24)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (0 done, 2 usage or configuration, 1 anything else)."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "migrate":
            return _migrate()
        if args.command == "run":
            return run_command(
                Settings.from_env(), concurrency=args.concurrency, until_empty=args.until_empty
            )
        if args.command == "status":
            return _status(as_json=args.json)
        from s2_downloader.testing.demo import run_demo  # noqa: PLC0415 - the demo's stack is optional

        return run_demo(granules=args.granules)
    except KeyboardInterrupt:
        print("s2-downloader: interrupted", file=sys.stderr)  # noqa: T201
        return 1
    except ConfigError as exc:
        print(f"s2-downloader: configuration error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    except S2DownloaderError as exc:
        print(f"s2-downloader: {scrub(str(exc))}", file=sys.stderr)  # noqa: T201
        return 1
    except Exception as exc:  # noqa: BLE001 - never only a stack trace: one line, then the log
        _log.exception("unexpected error", extra={"event": "unexpected_error"})
        print(f"s2-downloader: unexpected {type(exc).__name__}: {scrub(str(exc))}", file=sys.stderr)  # noqa: T201
        return 1


def _migrate() -> int:
    configure_logging()
    applied = migrate(database_url(Settings.from_env()))
    print(f"migrations applied: {', '.join(applied)}" if applied else "schema is up to date")  # noqa: T201
    return 0


def _status(*, as_json: bool) -> int:
    configure_logging(logging.WARNING)
    # The pool logs every failed connection attempt; status reports the outcome once.
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    pool = open_database(Settings.from_env(), max_size=1)
    try:
        report = PostgresGranuleStore(pool=pool).status_report()
    finally:
        pool.close()
    print(json.dumps(_status_json(report)) if as_json else _status_text(report))  # noqa: T201
    return 0


def _status_json(report: StoreStatus) -> dict[str, object]:
    oldest = report.oldest_in_progress
    return {
        "counts": {state.value: count for state, count in report.counts.items()},
        "total": report.total,
        "last_file_downloaded_time": report.last_file_downloaded_time,
        "oldest_in_progress": None
        if oldest is None
        else {
            "granule_id": oldest.granule_id,
            "owner": oldest.owner,
            "lease_expires_at": oldest.expires_at.isoformat() if oldest.expires_at else None,
            "download_started": oldest.started_at.isoformat() if oldest.started_at else None,
        },
    }


def _status_text(report: StoreStatus) -> str:
    lines = [f"{state.value:<12} {count:>8}" for state, count in report.counts.items()]
    lines.append(f"{'total':<12} {report.total:>8}")
    lines.append(f"last_file_downloaded_time: {report.last_file_downloaded_time or 'never'}")
    oldest = report.oldest_in_progress
    if oldest is None:
        lines.append("oldest in-progress lease: none")
    else:
        expires = oldest.expires_at.isoformat() if oldest.expires_at else "?"
        lines.append(f"oldest in-progress lease: {oldest.granule_id} held by {oldest.owner} until {expires}")
    return "\n".join(lines)


def run_command(
    settings: Settings,
    *,
    concurrency: int,
    until_empty: bool,
    interactive: bool | None = None,
) -> int:
    """The local runner with its progress display (on a terminal) or JSON log lines (otherwise)."""
    interactive = sys.stderr.isatty() if interactive is None else interactive
    board = ProgressBoard()
    display = TerminalDisplay(board=board) if interactive else None
    if display is not None:
        handler = DisplayLogHandler(display)
        handler.setFormatter(ConsoleFormatter())
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.INFO)
    else:
        configure_logging()
    container = build(settings, concurrency=concurrency)
    try:
        check_not_fifo(container.queues)
        # An unreadable directory is logged and skipped: it must not stop every start.
        swept = sweep_mount(settings.efs_mount_dir or "")
        if swept:
            _log.info("swept stale partial files", extra={"event": "partials_swept", "count": swept})
        runner = Runner(
            queue=container.download_queue,
            ports=container.ports,
            check_url=container.check_download_url,
            settings=RunnerSettings(concurrency=concurrency, until_empty=until_empty),
            board=board,
        )

        def on_signal(signum: int, frame: FrameType | None) -> None:
            del frame
            _log.info("signal received; stopping", extra={"event": "signal", "signal": signum})
            runner.stop()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        started = time.monotonic()
        if display is not None:
            display.start()
        try:
            code = runner.run()
        finally:
            if display is not None:
                display.stop()
            for sig, old in previous.items():
                signal.signal(sig, old)
        _summary(board, time.monotonic() - started, display is not None)
        return code
    finally:
        container.close()


def _summary(board: ProgressBoard, seconds: float, interactive: bool) -> None:
    _, total, outcomes, _ = board.snapshot()
    fields = {
        "event": "runner_summary",
        "bytes": total,
        "seconds": round(seconds, 3),
        "mb_per_s": round(total / seconds / 1e6, 1) if seconds > 0 else 0.0,
        **{f"outcome_{name}": count for name, count in outcomes.items()},
    }
    if interactive:
        counts = ", ".join(f"{n} {name}" for name, n in sorted(outcomes.items())) or "nothing handled"
        print(f"done: {counts}; {total / 1e6:,.1f} MB in {seconds:,.1f} s", file=sys.stderr)  # noqa: T201
    else:
        record = logging.LogRecord("s2_downloader.runner", logging.INFO, "", 0, "runner summary", (), None)
        record.__dict__.update(fields)
        print(JsonFormatter().format(record), file=sys.stderr)  # noqa: T201
