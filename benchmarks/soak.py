"""``python -m benchmarks.soak``: 200 granules through hub faults, a PostgreSQL restart and a kill -9.

Seeded and bounded (a few minutes). Two runners (the installed CLI, ``run --until-empty``)
share one queue and one database; the hub simulator (in its own process) serves each
granule under a fault script drawn from the seed; at moments drawn from the seed one
runner is killed with SIGKILL (and a replacement started) and PostgreSQL is restarted.
At the end every granule must be verified or failed exactly as its script dictates,
every final file must have the right MD5, each verified granule its upload message,
and no partial file and no download message may be left. Writes ``docs/soak.md``;
exits 1 if any check fails.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

import attrs

from benchmarks.measure import MIB
from benchmarks.report import Machine, render, table
from benchmarks.report import Section as DocSection
from benchmarks.stack import CLI, bench_services, cli_env, log_events, remote_hub
from s2_downloader.testing.hubsim import Fault
from s2_downloader.testing.stack import Pipeline, Services

__all__ = ["main"]

_ROOT = Path(__file__).resolve().parent.parent
MAX_RETRIES = 2
#: Per-connection hub rate: slow enough that a kill lands mid-transfer, fast enough to finish in minutes.
HUB_RATE = 16e6
RUNNER_ENV = {
    "MAX_DOWNLOAD_RETRIES": str(MAX_RETRIES),
    "RETRY_DELAY_SECONDS": "1",
    "LEASE_SECONDS": "10",
    "HTTP_READ_TIMEOUT": "5",
}
DEADLINE_SECONDS = 240.0
HOSTILE_NOTE = (
    "Its companion, `make soak-hostile` (`python -m benchmarks.soak_hostile`), runs 500 granules and 50 "
    "hostile messages (too deep, too large, not JSON, unsafe names, URLs built to carry the hub "
    "credentials elsewhere) through two runners, one with its wall clock four minutes ahead, and a Lambda "
    "handler, against a hub that trickles, resets, throttles, redirects to a credential-collecting "
    "listener and answers 500 for some products forever, with a kill -9 and PostgreSQL restarted twice; "
    "some granules' store places are broken (a file where their directory belongs), the whole mount "
    "goes away for a window, and PostgreSQL is stopped while the Lambda works. "
    "It checks zero requests and zero credentials at that listener, zero crashes, zero unverified bytes "
    "under a final name, the 500-forever granules failed by `MAX_DEFER_SECONDS`, every loop ended, "
    "every outage a function error that spent no receive count, and every message accounted for; its "
    "report is [soak-hostile.md](soak-hostile.md)."
)


# -- the plan -----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Script:
    """One granule: its size, the faults the hub serves it, and the fate they dictate."""

    granule_id: str
    size: int
    kind: str
    faults: tuple[Fault, ...]
    #: Faults that count against the retry budget (docs/interface.md section 6).
    counted: int
    fate: str


def _uncounted(rng: random.Random) -> Fault:
    return rng.choice(
        [
            Fault.status(503, retry_after="1"),
            Fault.status(429, retry_after="1"),
            Fault.status(500),
            Fault.dhus_concurrent_flows(),
            Fault.status(503, retry_after="1").on_checksum(),
        ]
    )


def _counted(rng: random.Random, size: int) -> Fault:
    cut = rng.randrange(1, size)
    return rng.choice(
        [
            Fault.reset_after(cut),
            Fault.short_body(cut),
            Fault.corrupt(),
            Fault.not_found(),
            Fault.wrong_checksum(),
        ]
    )


def plan(rng: random.Random, count: int) -> list[Script]:
    """``count`` granules: mostly clean, some with faults the runner must ride out, a few doomed."""
    scripts = []
    for number in range(count):
        granule_id = f"S2SOAK_{number:03d}"
        # Log-uniform from 16 KiB to 8 MiB: many small products, a few large ones.
        size = int(2 ** rng.uniform(14, 23))
        kind = rng.choices(["clean", "uncounted", "counted", "mixed", "doomed"], [50, 15, 15, 14, 6])[0]
        faults: list[Fault] = []
        counted = 0
        if kind == "uncounted":
            faults = [_uncounted(rng) for _ in range(rng.randint(1, 2))]
        elif kind == "counted":
            counted = rng.randint(1, MAX_RETRIES)
            faults = [_counted(rng, size) for _ in range(counted)]
        elif kind == "mixed":
            counted = 1
            faults = [_counted(rng, size), *(_uncounted(rng) for _ in range(rng.randint(1, 2)))]
            rng.shuffle(faults)
        fate = "failed" if kind == "doomed" else "verified"
        scripts.append(
            Script(
                granule_id=granule_id, size=size, kind=kind, faults=tuple(faults), counted=counted, fate=fate
            )
        )
    return scripts


# -- the runners --------------------------------------------------------------------------


@attrs.define
class _Runner:
    name: str
    process: subprocess.Popen[bytes]
    log: IO[bytes]
    started: float


@attrs.define
class Fleet:
    """Two runners kept alive until each has seen the queue empty; killed ones are replaced."""

    pipeline: Pipeline
    logs: Path
    t0: float
    runner_env: dict[str, str] = attrs.field(factory=lambda: dict(RUNNER_ENV))
    runners: list[_Runner] = attrs.field(factory=list)
    finished: list[_Runner] = attrs.field(factory=list)
    events: list[tuple[float, str]] = attrs.field(factory=list)
    _lock: threading.Lock = attrs.field(factory=threading.Lock)
    _count: int = 0

    def note(self, text: str) -> None:
        """Record a timeline event."""
        with self._lock:
            self.events.append((time.monotonic() - self.t0, text))

    def start(self, extra_env: dict[str, str] | None = None, label: str = "") -> _Runner:
        """Start one more runner (``extra_env`` on top of the fleet's; ``label`` for the timeline)."""
        with self._lock:
            self._count += 1
            name = f"runner-{self._count}"
        log = (self.logs / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [CLI, "run", "--until-empty", "--concurrency", "8"],
            env={**cli_env(self.pipeline, **self.runner_env), **(extra_env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        runner = _Runner(name=name, process=process, log=log, started=time.monotonic())
        with self._lock:
            self.runners.append(runner)
        self.note(f"{name} started (pid {process.pid})" + (f", {label}" if label else ""))
        return runner

    def kill_one(self, rng: random.Random) -> None:
        """SIGKILL a running runner at random and start a replacement."""
        with self._lock:
            alive = [r for r in self.runners if r.process.poll() is None]
        if not alive:
            self.note("kill -9 skipped: no runner alive")
            return
        victim = rng.choice(alive)
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait()
        self.note(f"{victim.name} killed with SIGKILL")
        self.start()

    def reap(self) -> bool:
        """Collect exited runners (restart those that failed); True while any is alive."""
        with self._lock:
            runners = list(self.runners)
        for runner in runners:
            code = runner.process.poll()
            if code is None:
                continue
            with self._lock:
                self.runners.remove(runner)
                self.finished.append(runner)
            runner.log.close()
            if code == 0:
                self.note(f"{runner.name} exited 0 (queue empty)")
            elif code != -signal.SIGKILL:
                self.note(f"{runner.name} exited {code}; replaced")
                self.start()
        with self._lock:
            return bool(self.runners)

    def stop_all(self) -> None:
        """SIGTERM whatever still runs (the deadline passed)."""
        with self._lock:
            runners = list(self.runners)
        for runner in runners:
            runner.process.send_signal(signal.SIGTERM)
        for runner in runners:
            try:
                runner.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                runner.process.kill()
                runner.process.wait()
            runner.log.close()

    def log_events(self) -> list[dict[str, Any]]:
        """Every JSON log record of every runner."""
        events: list[dict[str, Any]] = []
        for path in sorted(self.logs.glob("runner-*.log")):
            events += log_events(path.read_text(errors="replace"))
        return events


# -- the checks ---------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Check:
    """One end-of-soak assertion and its outcome."""

    name: str
    ok: bool
    detail: str = ""


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


def check(services: Services, pipeline: Pipeline, scripts: list[Script], md5s: dict[str, str]) -> list[Check]:
    """Every end state the issue asks for, one Check each."""
    rows = pipeline.rows()
    wrong_fate = [s.granule_id for s in scripts if rows[s.granule_id]["state"] != s.fate]
    verified = [s for s in scripts if s.fate == "verified"]
    failed = [s for s in scripts if s.fate == "failed"]
    bad_md5 = [
        s.granule_id
        for s in verified
        if not pipeline.final_path(s.granule_id).is_file()
        or _md5(pipeline.final_path(s.granule_id)) != md5s[s.granule_id]
    ]
    bad_rows = [
        s.granule_id
        for s in verified
        if (
            rows[s.granule_id]["downloaded"],
            rows[s.granule_id]["in_progress"],
            rows[s.granule_id]["download_failed"],
            rows[s.granule_id]["checksum"],
            rows[s.granule_id]["upload_queued_at"] is not None,
            rows[s.granule_id]["lease_owner"],
        )
        != (True, False, False, md5s[s.granule_id], True, None)
    ]
    bad_rows += [
        s.granule_id
        for s in failed
        if (
            rows[s.granule_id]["download_failed"],
            rows[s.granule_id]["in_progress"],
            rows[s.granule_id]["lease_owner"],
        )
        != (True, False, None)
    ]
    over_counted = [s.granule_id for s in verified if rows[s.granule_id]["download_retries"] > s.counted]
    leftovers = [s.granule_id for s in failed if (pipeline.efs_dir / s.granule_id).exists()]
    partials = sorted(
        str(p.relative_to(pipeline.efs_dir)) for p in pipeline.efs_dir.rglob(".*") if p.is_file()
    )
    uploads = collections.Counter(json.loads(b)["id"] for b in pipeline.drain(pipeline.queues.upload_url))
    missing_uploads = [s.granule_id for s in verified if uploads[s.granule_id] < 1]
    stray_uploads = [gid for gid in uploads if gid not in {s.granule_id for s in verified}]
    counts = services.sqs.client().get_queue_attributes(
        QueueUrl=pipeline.queues.download_url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )["Attributes"]
    left = sum(int(v) for v in counts.values())
    dead = collections.Counter(json.loads(b)["id"] for b in pipeline.drain(pipeline.queues.dead_letter_url))
    dead_not_failed = [gid for gid in dead if gid not in {s.granule_id for s in failed}]
    failed_not_dead = [s.granule_id for s in failed if dead[s.granule_id] < 1]
    duplicates = sum(n - 1 for n in uploads.values() if n > 1)

    def listed(ids: list[str]) -> str:
        return ", ".join(ids[:8]) + (" ..." if len(ids) > 8 else "") if ids else ""

    return [
        Check(name="every granule ends as its script dictates", ok=not wrong_fate, detail=listed(wrong_fate)),
        Check(
            name="every verified file is in place with the right MD5", ok=not bad_md5, detail=listed(bad_md5)
        ),
        Check(
            name="rows consistent (flags, checksum, no lease held)", ok=not bad_rows, detail=listed(bad_rows)
        ),
        Check(
            name="no verified granule counted more failures than its script serves",
            ok=not over_counted,
            detail=listed(over_counted),
        ),
        Check(name="failed granules leave no file or directory", ok=not leftovers, detail=listed(leftovers)),
        Check(name="no partial file anywhere under the mount", ok=not partials, detail=listed(partials)),
        Check(
            name="each verified granule has its upload message",
            ok=not missing_uploads,
            detail=listed(missing_uploads),
        ),
        Check(
            name="no upload message for a granule not verified",
            ok=not stray_uploads,
            detail=listed(stray_uploads),
        ),
        Check(
            name="no message left on the download queue",
            ok=left == 0,
            detail=json.dumps(counts) if left else "",
        ),
        Check(
            name="the dead-letter queue holds exactly the failed granules",
            ok=not dead_not_failed and not failed_not_dead,
            detail=listed(dead_not_failed + failed_not_dead),
        ),
        Check(
            name="duplicate upload messages (at-least-once; reported)",
            ok=True,
            detail=f"{duplicates} duplicate(s)",
        ),
    ]


# -- the run ------------------------------------------------------------------------------


def run_chaos(fleet: Fleet, services: Services, rng: random.Random, moments: list[tuple[float, str]]) -> None:
    """At each (seconds, action) moment: "kill" a runner with SIGKILL, or "restart" PostgreSQL."""
    for at, action in sorted(moments):
        delay = fleet.t0 + at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if action == "kill":
            fleet.kill_one(rng)
        else:
            fleet.note("PostgreSQL restart begins")
            services.postgres.restart()
            fleet.note("PostgreSQL restart done")


def run_soak(seed: int, granules: int, out: Path) -> bool:
    """The whole soak; writes ``out``; True when every check passed."""
    rng = random.Random(seed)
    scripts = plan(rng, granules)
    kill_at, restart_at = rng.uniform(3, 15), rng.uniform(3, 15)
    machine = Machine.here()
    with (
        bench_services(rate_limit=HUB_RATE) as services,
        services.pipeline(visibility_timeout=10, max_receive_count=6) as pipeline,
        tempfile.TemporaryDirectory(prefix="s2soak-logs-") as logs,
    ):
        hub = remote_hub(services)
        products = pipeline.seed(
            [(s.granule_id, s.size) for s in scripts], faults={s.granule_id: list(s.faults) for s in scripts}
        )
        for script in scripts:
            if script.fate == "failed":
                hub.set_checksum_wrong(script.granule_id)
        md5s = {p.id: p.md5 for p in products}
        fleet = Fleet(pipeline=pipeline, logs=Path(logs), t0=time.monotonic())
        fleet.start()
        fleet.start()
        chaos = threading.Thread(
            target=run_chaos,
            args=(fleet, services, rng, [(kill_at, "kill"), (restart_at, "restart")]),
            name="chaos",
            daemon=True,
        )
        chaos.start()
        timed_out = False
        while fleet.reap() or chaos.is_alive():
            if time.monotonic() - fleet.t0 > DEADLINE_SECONDS:
                timed_out = True
                fleet.note(f"deadline of {DEADLINE_SECONDS:.0f} s passed; runners stopped")
                fleet.stop_all()
                break
            time.sleep(0.2)
        seconds = time.monotonic() - fleet.t0
        checks = check(services, pipeline, scripts, md5s)
        if timed_out:
            checks.insert(0, Check(name=f"finished within {DEADLINE_SECONDS:.0f} s", ok=False))
        events = fleet.log_events()
        hub_requests = hub.request_count()
    ok = all(c.ok for c in checks)
    out.write_text(
        _report(
            seed=seed,
            scripts=scripts,
            checks=checks,
            fleet=fleet,
            events=events,
            seconds=seconds,
            hub_requests=hub_requests,
            machine=machine,
            kill_at=kill_at,
            restart_at=restart_at,
        ),
        encoding="utf-8",
    )
    return ok


def _report(
    *,
    seed: int,
    scripts: list[Script],
    checks: list[Check],
    fleet: Fleet,
    events: list[dict[str, Any]],
    seconds: float,
    hub_requests: int,
    machine: Machine,
    kill_at: float,
    restart_at: float,
) -> str:
    kinds = collections.Counter(s.kind for s in scripts)
    fates = collections.Counter(s.fate for s in scripts)
    by_event = collections.Counter(e.get("event") for e in events)
    verified = [e for e in events if e.get("event") == "download_verified"]
    resumed = sum(1 for e in verified if e.get("resumed_from", 0) > 0)
    total_bytes = sum(s.size for s in scripts)
    plan_section = DocSection(title="The plan (from the seed)")
    plan_section.body += [
        f"{len(scripts)} granules, {total_bytes / 1e6:,.0f} MB in all (sizes log-uniform, 16 KiB to 8 MiB); "
        f"`MAX_DOWNLOAD_RETRIES={MAX_RETRIES}`, `RETRY_DELAY_SECONDS=1`, `LEASE_SECONDS=10`, visibility "
        f"timeout 10 s, `maxReceiveCount` 6; the hub paced at {HUB_RATE / 1e6:g} MB/s per connection; "
        "two runners at `--concurrency 8`.",
        "",
        *table(
            ["script", "granules", "faults served", "dictated fate"],
            [
                ["clean", kinds["clean"], "none", "verified"],
                [
                    "uncounted",
                    kinds["uncounted"],
                    "1-2 of 503/429 with Retry-After, 500, DHuS concurrent flows, 503 on the checksum",
                    "verified (nothing counted)",
                ],
                [
                    "counted",
                    kinds["counted"],
                    f"1-{MAX_RETRIES} of reset, short body, corrupt body, 404, wrong published MD5",
                    f"verified (<= {MAX_RETRIES} counted failures)",
                ],
                ["mixed", kinds["mixed"], "1 counted and 1-2 uncounted, shuffled", "verified"],
                ["doomed", kinds["doomed"], "published MD5 wrong for good", "failed, message dead-lettered"],
            ],
        ),
        "",
        f"Chaos: kill -9 of a runner at {kill_at:.1f} s and a PostgreSQL restart at {restart_at:.1f} s "
        "(both drawn from the seed). 202 (offline) is not in the menu: its contract delay is 900 s.",
    ]
    timeline = DocSection(title="Timeline")
    timeline.body += table(["s", "event"], [[f"{at:.1f}", text] for at, text in fleet.events])
    figures = DocSection(title="Figures")
    figures.body += table(
        ["figure", "value"],
        [
            ["wall time to the last runner's exit", f"{seconds:.1f} s"],
            ["granules verified / failed (dictated)", f"{fates['verified']} / {fates['failed']}"],
            ["granules per second, overall", f"{len(scripts) / seconds:.1f}"],
            ["runner processes (2 + replacements)", str(len(fleet.finished) + len(fleet.runners))],
            ["download_verified records (resumed with Range)", f"{len(verified)} ({resumed})"],
            [
                "attempts counted as failures (download_retry + download_failed)",
                str(by_event["download_retry"] + by_event["download_failed"]),
            ],
            ["attempts postponed, uncounted (download_postponed)", str(by_event["download_postponed"])],
            ["messages deferred because another worker held the granule", str(by_event["granule_busy"])],
            [
                "handling failures (e.g. database down), message left to return",
                str(by_event["handle_failed"]),
            ],
            ["hub requests answered", str(hub_requests)],
        ],
    )
    results = DocSection(title="Checks")
    results.body += table(
        ["check", "result", "detail"], [[c.name, "pass" if c.ok else "**FAIL**", c.detail] for c in checks]
    )
    verdict = "All checks passed." if all(c.ok for c in checks) else "**Some checks failed.**"
    return render(
        title="s2-downloader soak",
        intro=[
            "Generated by `make soak` (`python -m benchmarks.soak`). " + verdict,
            "",
            (__doc__ or "").split("\n\n", 1)[1].split("Writes")[0].strip(),
            "",
            f"Seed {seed}: `python -m benchmarks.soak --seed {seed}` replays the same plan and chaos moments "
            "(what the runners race to, and so the timeline, varies from run to run).",
            "",
            HOSTILE_NOTE,
        ],
        machine=machine,
        command=f"make soak SOAK_SEED={seed}",
        sections=[results, plan_section, figures, timeline],
    )


def main(argv: list[str] | None = None) -> int:
    """Run the soak; exit 0 only when every check passed."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--seed", type=int, default=int(os.environ.get("SOAK_SEED", "20251128")))
    parser.add_argument("--granules", type=int, default=200)
    parser.add_argument("--out", default=str(_ROOT / "docs" / "soak.md"))
    args = parser.parse_args(argv)
    ok = run_soak(args.seed, args.granules, Path(args.out))
    print(f"soak {'passed' if ok else 'FAILED'}; report in {args.out}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
