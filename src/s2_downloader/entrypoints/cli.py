"""The ``s2-downloader`` command line (docs/interface.md section 1): arguments in, exit code out.

migrate, run, status, requeue, failures, fetch, demo. This module parses the arguments,
hands each command to the module that does it, and turns errors into one line and an
exit code (0 done, 2 usage or configuration, 1 anything else).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from s2_downloader.adapters.granule_queries import RequeueFilter
from s2_downloader.adapters.metrics import EmfMetrics
from s2_downloader.adapters.postgres.schema_check import SchemaOutdated
from s2_downloader.domain.errors import S2DownloaderError
from s2_downloader.entrypoints.admin import failures_command, migrate_command, requeue_command, status_command
from s2_downloader.entrypoints.config import ConfigError, Settings
from s2_downloader.entrypoints.fetch import fetch_command
from s2_downloader.entrypoints.local_run import run_locally
from s2_downloader.entrypoints.logs import scrub
from s2_downloader.entrypoints.requeue import parse_filter
from s2_downloader.entrypoints.usage import UsageError

__all__ = ["main"]

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
    run.add_argument(
        "--concurrency",
        type=_positive,
        default=None,
        help="downloads at once (default 4 with HUB_API=cdse, 15 with dhus)",
    )
    run.add_argument(
        "--until-empty", action="store_true", help="exit 0 once nothing is in flight and the queue is empty"
    )
    run.add_argument("--metrics", action="store_true", help="also write CloudWatch EMF records to stdout")
    status = sub.add_parser("status", help="granule counts per state, last download, oldest lease")
    status.add_argument("--json", action="store_true", help="one JSON object on stdout")
    _requeue_parser(sub)
    failures = sub.add_parser("failures", help="failed and retrying granules, newest first, counts per kind")
    failures.add_argument("--json", action="store_true", help="one JSON object on stdout")
    failures.add_argument("--limit", type=_positive, default=50, help="granules listed (default 50)")
    fetch = sub.add_parser("fetch", help="download one product by id: no queue, no database")
    fetch.add_argument("id", metavar="ID", help="the product's id on the hub")
    fetch.add_argument("--dir", default=None, help="where to put it (default: the current directory)")
    fetch.add_argument(
        "--filename", default=None, help="its name (default: the hub's name with .SAFE -> .zip, or ID.zip)"
    )
    demo = sub.add_parser("demo", help="the whole pipeline on 127.0.0.1 with synthetic granules")
    demo.add_argument("--granules", type=_positive, default=24, help="how many granules (default 24)")
    demo.add_argument(
        "--store", choices=("efs", "s3"), default="efs", help="a directory (default) or a bucket on moto"
    )
    return parser


def _requeue_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    requeue_cmd = sub.add_parser(
        "requeue", help="send a download message for each matching granule that is not verified"
    )
    requeue_cmd.add_argument(
        "--ingested-on", action="append", default=[], metavar="DATE", help="UTC day YYYY-MM-DD (repeatable)"
    )
    requeue_cmd.add_argument("--ingested-since", metavar="DATE", help="from this UTC day on (inclusive)")
    requeue_cmd.add_argument("--ingested-until", metavar="DATE", help="up to this UTC day (inclusive)")
    requeue_cmd.add_argument(
        "--state",
        action="append",
        default=[],
        help="granules in this state (repeatable; default: pending, retrying, expired claims)",
    )
    requeue_cmd.add_argument("--id", action="append", default=[], dest="ids", help="this id (repeatable)")
    requeue_cmd.add_argument(
        "--all", action="store_true", dest="all_granules", help="required when no filter is given"
    )
    requeue_cmd.add_argument(
        "--revive-failed", action="store_true", help="take failed granules back to pending and requeue them"
    )
    requeue_cmd.add_argument("--dry-run", action="store_true", help="change nothing; print the same report")
    requeue_cmd.add_argument("--json", action="store_true", help="one JSON object on stdout")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (0 done, 2 usage or configuration, 1 anything else)."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "migrate":
            return migrate_command()
        if args.command == "run":
            settings = Settings.from_env()
            return run_locally(
                settings,
                concurrency=_concurrency(settings, args.concurrency),
                until_empty=args.until_empty,
                metrics=EmfMetrics(sys.stdout, hub=settings.hub_api) if args.metrics else None,
            )
        if args.command == "status":
            return status_command(as_json=args.json)
        if args.command == "requeue":
            return requeue_command(_requeue_filter(args), dry_run=args.dry_run, as_json=args.json)
        if args.command == "failures":
            return failures_command(as_json=args.json, limit=args.limit)
        if args.command == "fetch":
            return fetch_command(Settings.from_env(), args.id, directory=args.dir, filename=args.filename)
        from s2_downloader.testing.demo import run_demo  # noqa: PLC0415 - the demo's stack is optional

        return run_demo(granules=args.granules, store=args.store)
    except KeyboardInterrupt:
        print("s2-downloader: interrupted", file=sys.stderr)  # noqa: T201
        return 1
    except ConfigError as exc:
        print(f"s2-downloader: configuration error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    except UsageError as exc:
        print(f"s2-downloader {args.command}: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    except SchemaOutdated as exc:
        # Configuration, not a failure: the database needs `s2-downloader migrate` first.
        print(f"s2-downloader: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    except S2DownloaderError as exc:
        print(f"s2-downloader: {scrub(str(exc))}", file=sys.stderr)  # noqa: T201
        return 1
    except Exception as exc:  # noqa: BLE001 - never only a stack trace: one line, then the log
        _log.exception("unexpected error", extra={"event": "unexpected_error"})
        print(f"s2-downloader: unexpected {type(exc).__name__}: {scrub(str(exc))}", file=sys.stderr)  # noqa: T201
        return 1


def _concurrency(settings: Settings, asked: int | None) -> int:
    if asked is not None:
        return asked
    # 4 with CDSE (its per-account connection limit), 15 with DHuS: the settings know.
    return settings.default_concurrency


def _requeue_filter(args: argparse.Namespace) -> RequeueFilter:
    return parse_filter(
        ingested_on=args.ingested_on,
        ingested_since=args.ingested_since,
        ingested_until=args.ingested_until,
        states=args.state,
        ids=args.ids,
        all_granules=args.all_granules,
        revive_failed=args.revive_failed,
    )
