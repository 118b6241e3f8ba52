"""Peak RSS of the runner for a 64 MiB and a 512 MiB product: flat, and under 100 MiB.

The 512 MiB runs are the single-stream rounds on the same file system (the same
command); the 64 MiB runs are made here. Peak RSS is the CLI process's own ``VmHWM``
(see ``measure.run_child``), the interpreter and its libraries included.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from benchmarks.measure import MIB, Runs
from benchmarks.report import Section, Target, table
from benchmarks.single_stream import SingleStream, run_s2_downloader
from s2_downloader.testing.stack import Services

__all__ = ["measure_small", "section"]

SMALL = 64 * MIB


def measure_small(services: Services, files_root: Path, *, rounds: int = 3) -> Runs:
    """Peak RSS of ``rounds`` CLI runs on one 64 MiB product."""
    rss = Runs()
    scratch = Path(tempfile.mkdtemp(prefix="s2bench-mem-", dir=files_root))
    try:
        for round_no in range(rounds):
            run = run_s2_downloader(services, scratch / str(round_no), "S2BENCH_MEM_64MIB", SMALL)
            rss.add(run.max_rss)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return rss


def section(small: Runs, large: SingleStream) -> Section:
    """The memory table and its two targets."""
    out = Section(title="Memory")
    out.body.append(__doc__.split("\n\n", 1)[1].strip() if __doc__ else "")
    out.body.append("")
    big = large.s2_rss
    rows = [
        [
            "64 MiB",
            f"{small.median / MIB:.1f}",
            f"{min(small.values) / MIB:.1f}-{max(small.values) / MIB:.1f}",
        ],
        [
            f"{large.size // MIB} MiB",
            f"{big.median / MIB:.1f}",
            f"{min(big.values) / MIB:.1f}-{max(big.values) / MIB:.1f}",
        ],
    ]
    out.body += table(["product", "peak RSS MiB (median)", "spread"], rows)
    ratio = big.median / small.median
    out.targets += [
        Target(
            name=f"memory flat ({large.size // MIB} MiB vs 64 MiB product)",
            wanted="ratio <= 1.1",
            measured=f"{ratio:.3f}",
            met=ratio <= 1.1,
        ),
        Target(
            name="peak RSS",
            wanted="< 100 MiB",
            measured=f"{max(big.median, small.median) / MIB:.1f} MiB",
            met=max(big.median, small.median) < 100 * MIB,
        ),
    ]
    return out
