"""``python -m benchmarks``: every benchmark on the testing stack, into ``docs/benchmarks.md``.

PostgreSQL, moto's SQS server and SeaweedFS (the S3 store's bucket) run as throwaway
processes (``s2_downloader.testing``), the hub simulator in a process of its own
(``benchmarks.hubproc``); the runner and the Lambda handler are measured as their own
processes. ``--only`` runs a subset (the document then holds only those sections);
``python -m benchmarks.s3_path --into docs/benchmarks.md`` reruns the S3 section alone
and replaces it (and its targets) in the document, keeping the rest.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import concurrency, lambda_bench, memory, notes, overhead, s3_path, single_stream
from benchmarks.measure import MIB
from benchmarks.report import CpuSteal, Machine, Section, render
from benchmarks.stack import bench_services
from s2_downloader.testing.stack import Services

__all__ = ["main"]

_ROOT = Path(__file__).resolve().parent.parent
_SECTIONS = ("single", "memory", "concurrency", "overhead", "lambda", "s3")
#: The per-connection rate of the hub in the concurrency benchmark; notes.RATE_WHY says why.
HUB_RATE = 25e6


def _file_systems(wanted: list[str]) -> list[Path]:
    if wanted:
        return [Path(p) for p in wanted]
    # tmpfs first: the downloader's own path, not this VM's disk; then the disk for reference.
    roots = []
    shm = Path("/dev/shm")
    if shm.is_dir() and shutil.disk_usage(shm).free > 3 * 1024 * MIB:
        roots.append(shm)
    disk = Path(tempfile.gettempdir())
    if disk not in roots:
        roots.append(disk)
    return roots


def _say(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _s3_section(services: Services, efs_root: Path, *, rounds: int) -> Section:
    _say("S3 store, 512 MiB on SeaweedFS (several minutes)")
    measured = s3_path.measure_s3_path(services, efs_root, rounds=rounds, say=_say)
    return s3_path.section(measured, notes.S3_PATH)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and write the report."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the quick benchmarks (default 5)")
    parser.add_argument(
        "--slow-rounds", type=int, default=3, help="rounds of the rate-limited concurrency runs (default 3)"
    )
    parser.add_argument(
        "--s3-rounds", type=int, default=5, help="rounds of the S3 store's 512 MiB runs (default 5)"
    )
    parser.add_argument("--only", default=",".join(_SECTIONS), help=f"comma-separated subset of {_SECTIONS}")
    parser.add_argument("--files-dir", action="append", default=[], help="where files go (repeatable)")
    parser.add_argument("--out", default=str(_ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    rounds = max(3, args.rounds)
    roots = _file_systems(args.files_dir)
    machine = Machine.here()
    sections: list[Section] = []
    started = time.monotonic()
    steal = CpuSteal()
    with bench_services() as services:
        _say(f"stack up; files under {', '.join(map(str, roots))}")
        singles: list[single_stream.SingleStream] = []
        if only & {"single", "memory"}:
            for number, root in enumerate(roots):
                _say(f"single stream, 512 MiB, in {root}")
                singles.append(
                    single_stream.measure_single_stream(services, root, rounds=rounds if number == 0 else 3)
                )
        if "single" in only:
            section = single_stream.section(singles)
            section.body += notes.SINGLE_STREAM
            sections.append(section)
        if "memory" in only:
            _say("memory, 64 MiB")
            small = memory.measure_small(services, roots[0], rounds=rounds)
            sections.append(memory.section(small, singles[0]))
        if "concurrency" in only:
            _say(f"concurrency, {HUB_RATE / 1e6:g} MB/s per connection")
            limited = concurrency.measure_concurrency(
                services, roots[0], rate=HUB_RATE, rounds=max(3, args.slow_rounds)
            )
            _say("concurrency, unlimited")
            unlimited = concurrency.measure_concurrency(services, roots[0], rate=None, rounds=rounds)
            sections.append(concurrency.section([limited, unlimited], notes.RATE_WHY))
        if "overhead" in only:
            _say("overhead, 100 x 1 KiB")
            sections.append(
                overhead.section(overhead.measure_overhead(services, rounds=rounds), notes.OVERHEAD)
            )
        if "lambda" in only:
            _say("lambda handler")
            sections.append(lambda_bench.section(lambda_bench.measure_lambda(services, rounds=rounds)))
        if "s3" in only:
            sections.append(_s3_section(services, roots[0], rounds=max(3, args.s3_rounds)))
    sections.append(Section(title="Optimisations", body=list(notes.OPTIMISATIONS)))
    command = "make bench" if only == set(_SECTIONS) else f"python -m benchmarks --only {args.only}"
    document = render(
        title="s2-downloader benchmarks",
        intro=[
            *notes.INTRO,
            "",
            f"This run took {(time.monotonic() - started) / 60:.1f} minutes; the hypervisor took "
            f"{100 * steal.share():.1f} % of the CPU time meanwhile (steal, from /proc/stat).",
        ],
        machine=machine,
        command=command,
        sections=sections,
    )
    Path(args.out).write_text(document, encoding="utf-8")
    _say(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
