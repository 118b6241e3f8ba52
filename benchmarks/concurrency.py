"""15 products of 64 MiB at ``--concurrency 15`` against ``--concurrency 1``.

Each run is the installed CLI (``s2-downloader run --until-empty``) on a fresh pipeline
with the 15 granules queued. Aggregate throughput is the bytes of the 15 products over
the transfer window: from the start of the first transfer (a ``download_verified``
record's time less its ``seconds``) to the last verification, so the interpreter's
start and the final empty-queue checks are left out of both sides alike.

The hub simulator caps each connection at ``rate`` bytes per second, as a real hub
does; runs at both concurrencies alternate, round by round.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from pathlib import Path

import attrs

from benchmarks.measure import MIB, Runs, run_child
from benchmarks.report import Section, Target, mb_s, table
from benchmarks.stack import CLI, cli_env, log_events, remote_hub
from s2_downloader.testing.stack import Services

__all__ = ["Concurrency", "measure_concurrency", "section"]

PRODUCTS = 15
SIZE = 64 * MIB


@attrs.define
class Concurrency:
    """Aggregate MB/s per concurrency, for one per-connection rate (``None``: unlimited)."""

    rate: float | None
    throughput: dict[int, Runs] = attrs.field(factory=dict)
    cpu: dict[int, Runs] = attrs.field(factory=dict)

    def ratio(self, high: int, low: int) -> float:
        """Median throughput at ``high`` over median at ``low``."""
        return self.throughput[high].median / self.throughput[low].median


def _window(stderr: str) -> float:
    verified = [e for e in log_events(stderr) if e.get("event") == "download_verified"]
    if len(verified) != PRODUCTS:
        msg = f"expected {PRODUCTS} verified downloads, got {len(verified)}: {stderr[-2000:]}"
        raise RuntimeError(msg)
    ends = [dt.datetime.fromisoformat(e["time"]).timestamp() for e in verified]
    starts = [end - float(e["seconds"]) for end, e in zip(ends, verified, strict=True)]
    return max(ends) - min(starts)


def _one(services: Services, directory: Path, concurrency: int) -> tuple[float, float]:
    directory.mkdir(parents=True)
    try:
        with services.pipeline(efs_dir=directory) as pipeline:
            pipeline.seed([(f"S2BENCH_CONC_{i:02d}", SIZE) for i in range(PRODUCTS)])
            run = run_child(
                [CLI, "run", "--until-empty", "--concurrency", str(concurrency)], env=cli_env(pipeline)
            )
            if run.returncode != 0:
                msg = f"s2-downloader run failed ({run.returncode}): {run.stderr[-2000:]}"
                raise RuntimeError(msg)
            return mb_s(PRODUCTS * SIZE, _window(run.stderr)), run.cpu
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def measure_concurrency(
    services: Services,
    files_root: Path,
    *,
    rate: float | None,
    levels: tuple[int, ...] = (15, 1),
    rounds: int = 3,
) -> Concurrency:
    """``rounds`` rounds, each one run per level, with the hub capped at ``rate`` bytes/s per connection."""
    hub = remote_hub(services)
    result = Concurrency(rate=rate)
    scratch = Path(tempfile.mkdtemp(prefix="s2bench-conc-", dir=files_root))
    hub.rate_limit = rate
    try:
        for round_no in range(rounds):
            for level in levels:
                throughput, cpu = _one(services, scratch / f"{round_no}-{level}", level)
                result.throughput.setdefault(level, Runs()).add(throughput)
                result.cpu.setdefault(level, Runs()).add(cpu)
    finally:
        hub.rate_limit = None
        shutil.rmtree(scratch, ignore_errors=True)
    return result


def _rate(rate: float | None) -> str:
    return "unlimited" if rate is None else f"{rate / 1e6:g} MB/s per connection"


def section(results: list[Concurrency], why: list[str]) -> Section:
    """A table per rate; the target is judged on the first (rate-limited) one."""
    out = Section(title="Concurrency")
    out.body.append(__doc__.split("\n\n", 1)[1].strip() if __doc__ else "")
    out.body += ["", *why, ""]
    rows = []
    for result in results:
        for level in sorted(result.throughput, reverse=True):
            runs = result.throughput[level]
            rows.append(
                [
                    _rate(result.rate),
                    f"--concurrency {level}",
                    f"{runs.median:.0f}",
                    runs.spread(),
                    f"{result.cpu[level].median:.2f}",
                ]
            )
    out.body += table(
        ["hub rate", "runner", "aggregate MB/s (median)", "spread", "runner CPU s (whole process)"], rows
    )
    out.body.append("")
    for result in results[1:]:
        out.body.append(f"At {_rate(result.rate)}: {result.ratio(15, 1):.2f}x (reported, no target).")
    first = results[0]
    ratio = first.ratio(15, 1)
    out.targets.append(
        Target(
            name=f"concurrency 15 vs 1, {PRODUCTS} x {SIZE // MIB} MiB ({_rate(first.rate)})",
            wanted=">= 1.6x",
            measured=f"{ratio:.2f}x ({first.throughput[15].median:.0f} vs "
            f"{first.throughput[1].median:.0f} MB/s)",
            met=ratio >= 1.6,
        )
    )
    return out
