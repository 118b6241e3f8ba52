"""The ``s2-downloader`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="s2-downloader", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="create or upgrade the database schema")
    run = sub.add_parser("run", help="the local runner")
    run.add_argument("--concurrency", type=int, default=15)
    run.add_argument("--until-empty", action="store_true")
    status = sub.add_parser("status", help="granule counts per state")
    status.add_argument("--json", action="store_true")
    sub.add_parser("demo", help="the whole pipeline on 127.0.0.1")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code."""
    args = _parser().parse_args(argv)
    print(f"s2-downloader {args.command}: not built yet", file=sys.stderr)  # noqa: T201
    return 1
