"""Per-granule overhead: 100 products of 1 KiB end to end through PostgreSQL, SQS and the hub.

Each run is the installed CLI (``s2-downloader run --until-empty``, default concurrency
15) on a fresh pipeline with the 100 granules queued. Granules per second are taken
over the working window (the first ``message_received`` record to the last
``upload_queued``) and over the whole process (start, work, the empty-queue checks,
exit). CPU is the runner process's user + system seconds (``wait4``); a run on an empty
queue, measured alongside, is the fixed cost (interpreter, imports, pools, the
until-empty checks) that the marginal figure subtracts.

The profile is one more run under ``benchmarks.profile_runner``: cProfile in every
thread, timed by each thread's own CPU clock. Built-in functions are charged to the
component that called them.
"""

from __future__ import annotations

import collections
import datetime as dt
import pstats
import sys
import tempfile
from pathlib import Path

import attrs

from benchmarks.measure import Runs, run_child
from benchmarks.report import Section, Target, table
from benchmarks.stack import CLI, cli_env, log_events, stack_cpu
from s2_downloader.testing.stack import Pipeline, Services

__all__ = ["Overhead", "measure_overhead", "section"]

GRANULES = 100
SIZE = 1024
_ROOT = Path(__file__).resolve().parent.parent
_RUN = ["run", "--until-empty", "--concurrency", "15"]


@attrs.define
class Overhead:
    """Runs of the 100-granule batch, of the empty queue, and one profile."""

    window_rate: Runs = attrs.field(factory=Runs)
    process_rate: Runs = attrs.field(factory=Runs)
    cpu: Runs = attrs.field(factory=Runs)
    empty_cpu: Runs = attrs.field(factory=Runs)
    #: CPU seconds each server of the stack used during the batch runs.
    servers: dict[str, Runs] = attrs.field(factory=dict)
    profile: pstats.Stats | None = None

    @property
    def cpu_per_granule(self) -> float:
        """Whole-process CPU seconds over the granules."""
        return self.cpu.median / GRANULES

    @property
    def marginal_cpu_per_granule(self) -> float:
        """CPU seconds per granule beyond the empty-queue run."""
        return (self.cpu.median - self.empty_cpu.median) / GRANULES


def _seeded(services: Services) -> Pipeline:
    pipeline = services.pipeline()
    pipeline.seed([(f"S2BENCH_OVER_{i:03d}", SIZE) for i in range(GRANULES)])
    return pipeline


def _window(stderr: str) -> float:
    events = log_events(stderr)
    received = [dt.datetime.fromisoformat(e["time"]) for e in events if e.get("event") == "message_received"]
    queued = [dt.datetime.fromisoformat(e["time"]) for e in events if e.get("event") == "upload_queued"]
    if len(queued) != GRANULES:
        msg = f"expected {GRANULES} upload messages, got {len(queued)}: {stderr[-2000:]}"
        raise RuntimeError(msg)
    return (max(queued) - min(received)).total_seconds()


def measure_overhead(services: Services, *, rounds: int = 3) -> Overhead:
    """``rounds`` runs of the batch and of an empty queue, alternating, then one profiled run."""
    result = Overhead()
    for _ in range(rounds):
        with _seeded(services) as pipeline:
            before = stack_cpu(services)
            run = run_child([CLI, *_RUN], env=cli_env(pipeline))
            after = stack_cpu(services)
            for name, seconds in after.items():
                result.servers.setdefault(name, Runs()).add(seconds - before.get(name, 0.0))
            if run.returncode != 0:
                msg = f"s2-downloader run failed ({run.returncode}): {run.stderr[-2000:]}"
                raise RuntimeError(msg)
            result.window_rate.add(GRANULES / _window(run.stderr))
            result.process_rate.add(GRANULES / run.wall)
            result.cpu.add(run.cpu)
        with services.pipeline() as pipeline:
            empty = run_child([CLI, *_RUN], env=cli_env(pipeline))
            result.empty_cpu.add(empty.cpu)
    with _seeded(services) as pipeline, tempfile.TemporaryDirectory() as scratch:
        out = str(Path(scratch) / "runner.prof")
        run = run_child(
            [sys.executable, "-m", "benchmarks.profile_runner", out, *_RUN],
            env=cli_env(pipeline),
            cwd=str(_ROOT),
        )
        if run.returncode != 0:
            msg = f"profiled run failed ({run.returncode}): {run.stderr[-2000:]}"
            raise RuntimeError(msg)
        result.profile = pstats.Stats(out)
    return result


# -- reading the profile ------------------------------------------------------------------

_PACKAGES = (
    ("/s2_downloader/", "s2_downloader (ours)"),
    ("/psycopg_pool/", "psycopg + psycopg_pool (PostgreSQL)"),
    ("/psycopg/", "psycopg + psycopg_pool (PostgreSQL)"),
    ("/botocore/", "botocore + boto3 (SQS)"),
    ("/boto3/", "botocore + boto3 (SQS)"),
    ("/dateutil/", "botocore + boto3 (SQS)"),
    ("/urllib3/", "urllib3 (hub, and botocore's transport)"),
    ("/http/", "http.client + email (HTTP parsing, both clients)"),
    ("/email/", "http.client + email (HTTP parsing, both clients)"),
    ("/logging/", "logging + json (log lines)"),
    ("/json/", "logging + json (log lines)"),
)

_Key = tuple[str, int, str]


def _component(key: _Key) -> str | None:
    path = key[0]
    if path == "~":
        return None  # a built-in: charged to its callers
    for marker, name in _PACKAGES:
        if marker in path:
            return name
    return "other Python (stdlib, attrs, cattrs)"


def components(stats: pstats.Stats) -> dict[str, float]:
    """CPU seconds by component, built-ins charged to whoever called them."""
    raw: dict[_Key, tuple[int, int, float, float, dict[_Key, tuple[int, int, float, float]]]] = stats.stats  # type: ignore[attr-defined]
    totals: collections.Counter[str] = collections.Counter()
    for key, (_, _, own, _, callers) in raw.items():
        name = _component(key)
        if name is not None:
            totals[name] += own
            continue
        charged = 0.0
        for caller, (_, _, caller_own, _) in callers.items():
            caller_name = _component(caller) or "built-ins"
            totals[caller_name] += caller_own
            charged += caller_own
        totals["built-ins"] += max(0.0, own - charged)
    return dict(totals)


def _calls(stats: pstats.Stats, path_part: str, function: str) -> int:
    raw = stats.stats  # type: ignore[attr-defined]
    return sum(v[1] for k, v in raw.items() if path_part in k[0] and k[2] == function)


def _ours(stats: pstats.Stats, limit: int) -> list[tuple[str, float, int]]:
    raw = stats.stats  # type: ignore[attr-defined]
    mine = [
        (f"{k[0].split('/s2_downloader/')[1]}:{k[1]}({k[2]})", v[2], v[1])
        for k, v in raw.items()
        if "/s2_downloader/" in k[0]
    ]
    return sorted(mine, key=lambda item: item[1], reverse=True)[:limit]


def section(result: Overhead, notes: list[str]) -> Section:
    """The overhead table, the profile by component, round trips, and what of ours remains."""
    out = Section(title="Overhead per granule")
    out.body.append(__doc__.split("\n\n", 1)[1].strip() if __doc__ else "")
    out.body.append("")
    rows = [
        ["granules/s, working window", f"{result.window_rate.median:.1f}", result.window_rate.spread()],
        ["granules/s, whole process", f"{result.process_rate.median:.1f}", result.process_rate.spread()],
        ["runner CPU s, whole process", f"{result.cpu.median:.2f}", result.cpu.spread()],
        ["runner CPU s, empty queue", f"{result.empty_cpu.median:.2f}", result.empty_cpu.spread()],
        ["CPU ms per granule (whole process / 100)", f"{1000 * result.cpu_per_granule:.1f}", ""],
        ["CPU ms per granule (marginal)", f"{1000 * result.marginal_cpu_per_granule:.1f}", ""],
        *(
            [f"{name} CPU s, same runs", f"{runs.median:.2f}", runs.spread()]
            for name, runs in sorted(result.servers.items())
        ),
    ]
    out.body += table(["figure", "median", "spread"], rows)
    out.body.append("")
    stats = result.profile
    if stats is not None:
        parts = components(stats)
        total = sum(parts.values())
        out.body += ["**Where the CPU goes** (profiled run; shares of the runner's CPU):", ""]
        out.body += table(
            ["component", "share"],
            [
                [name, f"{100 * seconds / total:.0f} %"]
                for name, seconds in sorted(parts.items(), key=lambda x: -x[1])
            ],
        )
        out.body.append("")
        waits = _calls(stats, "/psycopg/", "wait")
        sqs = _calls(stats, "/botocore/", "_make_api_call")
        hub = _calls(stats, "/s2_downloader/adapters/hub/client.py", "_send_once")
        out.body += [
            "**Round trips per granule** (counted in the profiled run): "
            f"PostgreSQL {waits / GRANULES:.1f} (psycopg waits for a server answer), "
            f"SQS {sqs / GRANULES:.1f} API calls (receives, visibility, deletes and upload sends over 100), "
            f"hub {hub / GRANULES:.1f} HTTP requests.",
            "",
            "**Our own functions by own CPU time** (top 8; seconds, calls, in the profiled run):",
            "",
        ]
        out.body += table(["function", "own s", "calls"], [[n, f"{s:.3f}", c] for n, s, c in _ours(stats, 8)])
        out.body.append("")
    out.body += notes
    out.targets.append(
        Target(
            name=f"overhead: {GRANULES} x 1 KiB end to end",
            wanted="reported; profile; remove what is ours",
            measured=f"{result.window_rate.median:.1f} granules/s, "
            f"{1000 * result.cpu_per_granule:.1f} ms CPU/granule",
            met=True,
        )
    )
    return out
