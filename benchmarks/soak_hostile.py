"""``python -m benchmarks.soak_hostile``: hostile messages, slow faults and outages, two runners and a Lambda.

Seeded and bounded (several minutes). 500 granules and 50 hostile messages (bodies that
are too deep, too large, not JSON, with unsafe ids or filenames, and download URLs built
to carry the hub credentials to another listener) share one download queue. Two runners
(the installed CLI, one of them under libfaketime with its wall clock four minutes ahead)
and a Lambda (the real handler, fed by an event source mapping played by
``benchmarks.lambda_poller`` at HLS's mapping: batch size 1, no partial batch responses)
work the queue together. The hub throttles, resets, trickles, redirects to the credential
listener, publishes wrong checksums for good and answers 500 for some products forever.
Some granules' store place is broken (a regular file where the granule directory must be):
those fail after their retry budget with a ``store:`` reason, unless the file is removed
part-way, and then they are verified. The clock-skewed runner is killed with SIGKILL
(libfaketime stops timed waits from timing out, so it could not live through an outage)
and replaced by one on the true clock, PostgreSQL is restarted twice, the whole EFS mount
is renamed away for seconds as the bulk of the queue ends, and PostgreSQL is stopped for
25 s or more while the Lambda is invoked. At the end: every granule verified or failed as
its script dictates (500-forever granules failed by the deferral budget with the server's
reason), every loop ended, no store failure counted for the store's outage, every Lambda
invocation that met an outage ended as a function error and spent no receive count, no
request and no credential at the second listener, no runner crash, no unverified bytes
under a final name, and every message accounted for (deleted after verification, or in the
dead-letter queue: the failed granules and the hostile messages). Writes
``docs/soak-hostile.md``; exits 1 if any check fails.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

import attrs

from benchmarks.outages import (
    OBSTACLE,
    Chaos,
    LambdaOutages,
    Repairs,
    Window,
    emf_outages,
    lambda_outages,
    plant_obstacles,
    read_json_lines,
)
from benchmarks.report import Machine, render, table
from benchmarks.report import Section as DocSection
from benchmarks.soak import Check, Fleet, _md5
from benchmarks.stack import bench_services, cli_env, log_events, remote_hub
from s2_downloader.testing.hubsim import Fault
from s2_downloader.testing.stack import Pipeline, Services

__all__ = ["main"]

_ROOT = Path(__file__).resolve().parent.parent
MAX_RETRIES = 3
#: Longer than the queue takes to drain once (so throttled granules finish), short enough that the
#: 500-forever granules run out of it within the soak.
MAX_DEFER_SECONDS = 150
#: Faults served to a "500 forever" product: more than it can ask for within the budget.
FOREVER = 400
HUB_RATE = 16e6
SKEW = "+240s"
RUNNER_ENV = {
    "MAX_DOWNLOAD_RETRIES": str(MAX_RETRIES),
    "MAX_DEFER_SECONDS": str(MAX_DEFER_SECONDS),
    "RETRY_DELAY_SECONDS": "1",
    "LEASE_SECONDS": "10",
    "HTTP_READ_TIMEOUT": "3",
}
#: The workers (runners and the Lambda poller) import this tree's code, wherever the
#: interpreter's own install of the package points.
WORKER_ENV = {
    **RUNNER_ENV,
    "PYTHONPATH": os.pathsep.join(
        [str(_ROOT / "src"), str(_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    ),
}
DEADLINE_SECONDS = 600.0
#: The whole mount renamed away for this long, while the bulk of the queue is being worked.
STORE_OUTAGE_SECONDS = 8.0
#: PostgreSQL stopped for this long, while the Lambda works the deferred messages.
DATABASE_OUTAGE_SECONDS = 25.0
#: The Lambda as HLS maps it today: batch size 1, no partial batch responses. Its receives
#: hide a message for 30 s, longer than an invocation can work here (150 s less the 130 s
#: stop margin): a Lambda's messages must not come back while it still works on them
#: (AWS: a visibility of six times the function timeout; scaled down so that dead-lettering
#: takes minutes here, not hours). Without partial batch responses the mapping backs off
#: after function errors (1 s, doubled per error in a row, at most 4 s, here): without it, a
#: handler failing fast in an outage (the store gone: 10 ms an invocation) would meet the
#: whole visible backlog within a second (see ``benchmarks.lambda_poller``).
LAMBDA_MAPPING = (
    "--batch-size",
    "1",
    "--timeout",
    "150",
    "--visibility",
    "30",
    "--error-backoff",
    "1",
    "--error-backoff-max",
    "4",
)
_FAKETIME_LIBS = (
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
)

# -- the plan -----------------------------------------------------------------------------

_KINDS = {
    # kind: (weight, dictated fate, reason the failed ones must give)
    "clean": (55, "verified", ""),
    "throttled": (8, "verified", ""),
    "broken": (10, "verified", ""),
    "trickled": (5, "verified", ""),
    "redirected": (5, "verified", ""),
    "forever500": (5, "failed", "server_error"),
    "doomed": (4, "failed", "checksum"),
    # A regular file where the granule directory must be: the store refuses this granule
    # only (the mount passes its health check), each attempt counts, the budget runs out.
    "store_refused": (3, "failed", "store"),
    # The same, repaired (the file removed) once one store failure was counted: verified.
    "store_repaired": (2, "verified", ""),
}
#: The kinds whose store place is broken at the start (a file planted at ``<mount>/<id>``).
_STORE_KINDS = ("store_refused", "store_repaired")


@attrs.frozen(kw_only=True)
class Script:
    """One granule: size, hub faults, and the fate they dictate."""

    granule_id: str
    size: int
    kind: str
    faults: tuple[Fault, ...]
    fate: str


def plan(rng: random.Random, count: int, listener: str) -> list[Script]:
    """``count`` granules with their fault scripts, from the seed."""
    names = list(_KINDS)
    weights = [_KINDS[k][0] for k in names]
    scripts = []
    for number in range(count):
        size = int(2 ** rng.uniform(14, 20))
        kind = rng.choices(names, weights)[0]
        faults: list[Fault] = []
        if kind == "throttled":
            faults = [
                rng.choice([Fault.status(429, retry_after="1"), Fault.status(503, retry_after="1")])
                for _ in range(rng.randint(1, 2))
            ]
        elif kind == "broken":
            cut = rng.randrange(1, size)
            faults = [rng.choice([Fault.reset_after(cut), Fault.short_body(cut), Fault.corrupt()])]
        elif kind == "trickled":
            # Longer than HTTP_READ_TIMEOUT: the attempt must end, not hang.
            faults = [Fault.stall(6.0)]
        elif kind == "redirected":
            faults = [Fault.redirect(f"{listener}/steal/{number}")]
        elif kind == "forever500":
            faults = [Fault.status(500)] * FOREVER
        scripts.append(
            Script(
                granule_id=f"S2HOST_{number:03d}",
                size=size,
                kind=kind,
                faults=tuple(faults),
                fate=_KINDS[kind][1],
            )
        )
    return scripts


def hostile_bodies(rng: random.Random, count: int, hub_base: str, listener: str) -> list[tuple[str, str]]:
    """``count`` (kind, body) pairs, each bad input a worker must refuse and survive."""
    hub_authority = hub_base.split("//", 1)[1].rstrip("/")
    listener_authority = listener.split("//", 1)[1].rstrip("/")
    urls = [
        f"http://{hub_authority}\\@{listener_authority}/x",
        f"http://{listener_authority}\\@{hub_authority}/x",
        f"http://{hub_authority}%5C@{listener_authority}/x",
        f"http://user:pass@{listener_authority}/x",
        f"http://{hub_authority}@{listener_authority}/x",
        f"http://{hub_authority}\t@{listener_authority}/x",
        f"http://{listener_authority}/dhus/odata/v1/Products('x')/$value",
        f"http://{listener_authority}#@{hub_authority}/",
        f"file:///etc/passwd#{hub_authority}",
        f"http://[::ffff:127.0.0.1]:{listener_authority.rsplit(':', 1)[1]}/x",
    ]

    def message(**fields: object) -> str:
        body: dict[str, object] = {
            "id": f"S2EVIL_{rng.randrange(10**6):06d}",
            "filename": "evil.zip",
            "download_url": f"{hub_base}/dhus/odata/v1/Products('x')/$value",
        }
        body.update(fields)
        return json.dumps(body)

    makers: list[tuple[str, Callable[[], str]]] = [
        ("deep list", lambda: "[" * 200_000),
        ("deep object", lambda: '{"a":' * 40_000),
        ("5000-digit integer", lambda: '{"id": ' + "9" * 5000 + "}"),
        ("over 64 KiB", lambda: message(filename="a" * 70_000 + ".zip")),
        ("not JSON", lambda: "{broken"),
        ("not an object", lambda: "[1, 2, 3]"),
        ("unsafe id", lambda: message(id="../../etc")),
        ("unsafe filename", lambda: message(filename="../../root/.ssh/authorized_keys")),
        ("wrong type", lambda: message(id=42)),
        ("credential URL", lambda: message(download_url=rng.choice(urls))),
        ("credential URL", lambda: message(download_url=rng.choice(urls), checksum="0" * 32)),
    ]
    return [(kind, make()) for kind, make in (rng.choice(makers) for _ in range(count))]


# -- the credential listener --------------------------------------------------------------


@attrs.define
class Listener:
    """An HTTP server on its own port that records every request reaching it."""

    requests: list[dict[str, Any]] = attrs.field(factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        """Its base URL."""
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Listener:
        """Listen on 127.0.0.1 on a free port."""
        seen = self.requests

        class _Record(BaseHTTPRequestHandler):
            def _any(self) -> None:
                seen.append({"method": self.command, "path": self.path, "headers": dict(self.headers)})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_HEAD = _any  # noqa: N815 - the names BaseHTTPRequestHandler calls

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                del format, args

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Record)
        threading.Thread(target=self._server.serve_forever, name="listener", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


# -- the workers --------------------------------------------------------------------------


def _faketime_env() -> dict[str, str]:
    for library in _FAKETIME_LIBS:
        if Path(library).exists():
            # Monotonic time is faked too (a constant offset, harmless to durations): with
            # FAKETIME_DONT_FAKE_MONOTONIC=1, libfaketime 0.9.10 makes every sleep fail with EINVAL.
            return {"LD_PRELOAD": library, "FAKETIME": SKEW}
    msg = "libfaketime is missing: `apt-get install faketime` (make soak-hostile does it)"
    raise SystemExit(msg)


@attrs.define
class LambdaProcess:
    """The event source mapping and the handler, in a process of their own."""

    process: subprocess.Popen[bytes]
    out: IO[bytes]
    err: IO[bytes]

    @classmethod
    def start(cls, pipeline: Pipeline, logs: Path) -> LambdaProcess:
        """Start polling ``pipeline``'s download queue; every invocation recorded in ``lambda.jsonl``."""
        out = (logs / "lambda.out").open("wb")
        err = (logs / "lambda.log").open("wb")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.lambda_poller",
                *LAMBDA_MAPPING,
                "--record",
                str(logs / "lambda.jsonl"),
            ],
            cwd=_ROOT,
            env=cli_env(pipeline, **WORKER_ENV),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
        return cls(process=process, out=out, err=err)

    def finish(self, timeout: float) -> int:
        """Wait for the poller to see the queue empty (SIGTERM after ``timeout``); its exit code."""
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            code = self.process.wait(timeout=120)
        self.out.close()
        self.err.close()
        return code


# -- the checks ---------------------------------------------------------------------------


def _queue_empty_three_times(services: Services, url: str) -> tuple[bool, str]:
    client = services.sqs.client()
    readings = []
    for _ in range(3):
        attributes = client.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        readings.append(sum(int(v) for v in attributes.values()))
        time.sleep(1)
    return all(r == 0 for r in readings), f"readings {readings}"


def _unverified_under_final_names(
    pipeline: Pipeline, scripts: list[Script], md5s: dict[str, str], obstacles: set[Path]
) -> list[str]:
    """Every non-partial file under the mount that is not a verified product with its MD5.

    The files planted where a store_refused granule's directory must be are not products
    (``_obstacles_in_place`` checks them).
    """
    verified = {s.granule_id for s in scripts if s.fate == "verified"}
    wrong = []
    for path in pipeline.efs_dir.rglob("*"):
        if not path.is_file() or path.name.startswith(".") or path in obstacles:
            continue
        granule_id = path.parent.name
        ok = (
            path.parent.parent == pipeline.efs_dir
            and granule_id in verified
            and path == pipeline.final_path(granule_id)
            and _md5(path) == md5s[granule_id]
        )
        if not ok:
            wrong.append(str(path.relative_to(pipeline.efs_dir)))
    return wrong


def _leftover_partials(
    pipeline: Pipeline, scripts: list[Script], md5s: dict[str, str]
) -> tuple[list[str], list[str]]:
    """Dot files under the mount: those that must not be there, and orphaned validator sidecars.

    A sidecar (``..<filename>.partial``) with no partial beside it, in the directory of a
    granule whose verified product is in place with its MD5, is what ``promote`` leaves
    when the mount is renamed away between the rename into place and the sidecar's removal
    (its ``unlink`` finds no file at the path and takes it as gone). Harmless (no bytes of a
    product, the sweep removes it after 24 h), so reported apart; anything else is a leftover.
    """
    verified = {s.granule_id for s in scripts if s.fate == "verified"}
    wrong: list[str] = []
    orphans: list[str] = []
    for path in sorted(p for p in pipeline.efs_dir.rglob(".*") if p.is_file()):
        name = str(path.relative_to(pipeline.efs_dir))
        granule_id = path.parent.name
        final = pipeline.final_path(granule_id)
        orphan = (
            path.name == f"..{final.name}.partial"
            and granule_id in verified
            and not (path.parent / f".{final.name}.partial").exists()
            and final.is_file()
            and _md5(final) == md5s[granule_id]
        )
        (orphans if orphan else wrong).append(name)
    return wrong, orphans


def _obstacles_in_place(obstacles: set[Path]) -> list[str]:
    """The planted files of store_refused granules gone or changed (the store must not touch them)."""
    return sorted(p.name for p in obstacles if not p.is_file() or p.read_bytes() != OBSTACLE)


def _store_counted(event: dict[str, Any]) -> bool:
    """Whether a log record is a counted failure of kind store (a retry, or the last one)."""
    if event.get("event") not in {"download_retry", "download_failed"}:
        return False
    return event.get("kind") == "store" or str(event.get("error", "")).startswith("store:")


def _fate_label(script: Script, row: dict[str, Any]) -> str:
    """A granule that ended wrong, with its script, state and reason."""
    return f"{script.granule_id} ({script.kind}: {row['state']}, {(row['last_error'] or '')[:50]})"


def _dead_label(body: str) -> str:
    """A dead-letter body, short: the granule id when it parses, else its start."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return repr(body[:20])
    return str(document.get("id", "?")) if isinstance(document, dict) else repr(body[:20])


@attrs.frozen(kw_only=True)
class Evidence:
    """What the workers left besides the database and the queues: logs, records, the chaos."""

    #: Every JSON log record of the runners and the Lambda.
    events: list[dict[str, Any]]
    #: The Lambda's invocations, as the poller recorded them (``lambda_outages``).
    outages: LambdaOutages
    #: The store_repaired granules repaired, with when and after how many counted failures.
    repaired: dict[str, tuple[float, int]]
    #: The files planted for store_refused granules.
    obstacles: set[Path]
    #: The outage windows the chaos played.
    windows: list[Window]
    #: Where the workers import ``s2_downloader`` from.
    worker_package: str
    #: The Lambda's ``Outages`` EMF records (on its stdout), by component.
    emf_outages: dict[str, int]


def check(
    *,
    services: Services,
    pipeline: Pipeline,
    scripts: list[Script],
    md5s: dict[str, str],
    hostile: list[tuple[str, str]],
    listener: Listener,
    exits: dict[str, int],
    evidence: Evidence,
) -> list[Check]:
    """Every end state the issue asks for, one Check each."""
    rows = pipeline.rows()
    wrong_fate = [
        _fate_label(s, rows[s.granule_id]) for s in scripts if rows[s.granule_id]["state"] != s.fate
    ]
    wrong_reason = [
        s.granule_id
        for s in scripts
        if s.fate == "failed" and not (rows[s.granule_id]["last_error"] or "").startswith(_KINDS[s.kind][2])
    ]
    unverified = _unverified_under_final_names(pipeline, scripts, md5s, evidence.obstacles)
    partials, orphans = _leftover_partials(pipeline, scripts, md5s)
    over_budget = [s.granule_id for s in scripts if rows[s.granule_id]["download_retries"] > MAX_RETRIES + 1]
    unended = [
        f"{s.granule_id} ({rows[s.granule_id]['state']})"
        for s in scripts
        if rows[s.granule_id]["state"] not in {"verified", "failed"}
    ]
    leases = [s.granule_id for s in scripts if rows[s.granule_id]["lease_owner"] is not None]
    empty, readings = _queue_empty_three_times(services, pipeline.queues.download_url)
    dead = collections.Counter(pipeline.drain(pipeline.queues.dead_letter_url))
    expected_dead = collections.Counter(
        [pipeline.message(s.granule_id) for s in scripts if s.fate == "failed"] + [b for _, b in hostile]
    )
    missing_dead = expected_dead - dead
    # A failed granule's message may be there twice: at-least-once delivery (a re-send whose
    # original was then redelivered) can leave two copies, and each ends in the redrive.
    # Anything else there (a verified granule's message, a copy of a hostile one) is wrong.
    failed_bodies = {pipeline.message(s.granule_id) for s in scripts if s.fate == "failed"}
    surplus = dead - expected_dead
    duplicates = collections.Counter({b: n for b, n in surplus.items() if b in failed_bodies})
    stray_dead = surplus - duplicates
    uploads = collections.Counter(json.loads(b)["id"] for b in pipeline.drain(pipeline.queues.upload_url))
    missing_uploads = [s.granule_id for s in scripts if s.fate == "verified" and uploads[s.granule_id] < 1]
    lost = sum(missing_dead.values()) + len(missing_uploads)
    credentials = [r for r in listener.requests if "Authorization" in r["headers"]]
    # A DHuS redirect off the hub is followed without credentials (the "redirected" script);
    # anything else reaching the listener came from a hostile message's URL.
    from_messages = [r for r in listener.requests if not r["path"].startswith("/steal/")]
    crashed = {name: code for name, code in exits.items() if code not in (0, -9)}
    store_broken = {s.granule_id for s in scripts if s.kind in _STORE_KINDS}
    stray_store = sorted(
        {str(e.get("granule_id")) for e in evidence.events if _store_counted(e)} - store_broken
    )
    refused_wrong = [
        f"{s.granule_id} ({rows[s.granule_id]['download_retries']})"
        for s in scripts
        if s.kind == "store_refused"
        and (
            rows[s.granule_id]["download_retries"] != MAX_RETRIES + 1
            or not (rows[s.granule_id]["last_error"] or "").startswith("store:")
        )
    ]
    unrepaired = [
        s.granule_id for s in scripts if s.kind == "store_repaired" and s.granule_id not in evidence.repaired
    ]
    moved = _obstacles_in_place(evidence.obstacles)
    store_met = [
        e
        for e in evidence.events
        if e.get("event") == "store_unhealthy"
        or (e.get("event") == "outage_started" and e.get("component") == "store")
    ]
    lam = evidence.outages
    this_tree = str(_ROOT / "src")

    def listed(ids: list[str]) -> str:
        return ", ".join(ids[:8]) + (" ..." if len(ids) > 8 else "") if ids else ""

    return [
        Check(
            name="the workers run this tree's code",
            ok=evidence.worker_package.startswith(this_tree),
            detail=evidence.worker_package.replace(str(_ROOT), "<this tree>", 1),
        ),
        Check(name="every granule ends as its script dictates", ok=not wrong_fate, detail=listed(wrong_fate)),
        Check(
            name="failed granules give the dictated reason (server_error by the deferral budget, checksum, "
            "store)",
            ok=not wrong_reason,
            detail=listed(wrong_reason),
        ),
        Check(
            name="loops that ended (all): every granule verified or failed, none pending or in progress",
            ok=not unended,
            detail=f"{len(scripts) - len(unended)} of {len(scripts)}"
            + (f"; not ended: {listed(unended)}" if unended else ""),
        ),
        Check(
            name="store_refused granules failed after the whole budget, every attempt counted as store",
            ok=not refused_wrong,
            detail=listed(refused_wrong),
        ),
        Check(
            name="store_repaired granules repaired after a counted store failure, within the budget",
            ok=not unrepaired,
            detail=listed(unrepaired)
            or ", ".join(f"{g}: {n}" for g, (_, n) in sorted(evidence.repaired.items())),
        ),
        Check(
            name="store failures counted only where the store place was broken (the store outage counted "
            "nothing)",
            ok=not stray_store,
            detail=listed(stray_store),
        ),
        Check(
            name="the files planted for store_refused granules left as they were",
            ok=not moved,
            detail=listed(moved),
        ),
        Check(
            name="the store outage was met (store errors whose health check failed, or outages begun)",
            ok=bool(store_met),
            detail=f"{len(store_met)} log record(s)",
        ),
        Check(
            name="the database outage was met by Lambda invocations",
            ok=lam.by_component.get("database", 0) > 0,
            detail=f"{lam.by_component.get('database', 0)} outage-raised invocation(s) for the database; "
            f"{lam.in_database_window} wholly inside the window",
        ),
        Check(
            name="outages seen as function errors (all): every invocation that met an outage raised for it",
            ok=lam.met > 0 and not lam.not_function_errors,
            detail=f"{lam.met - len(lam.not_function_errors)} of {lam.met}"
            + (f"; not: {listed(lam.not_function_errors)}" if lam.not_function_errors else ""),
        ),
        Check(
            name="receive counts spent on outages (0): no message of an outage-raised invocation received "
            "again",
            ok=not lam.spent,
            detail=f"{len(lam.spent)}" + (f": {listed(lam.spent)}" if lam.spent else ""),
        ),
        Check(
            name="zero requests from hostile messages at the second listener",
            ok=not from_messages,
            detail=listed([r["path"] for r in from_messages]),
        ),
        Check(
            name="zero credentials at the second listener", ok=not credentials, detail=str(len(credentials))
        ),
        Check(name="zero runner or Lambda crashes", ok=not crashed, detail=json.dumps(crashed)),
        Check(
            name="zero unverified bytes under a final name (every file checked)",
            ok=not unverified,
            detail=listed(unverified),
        ),
        Check(name="no partial file left under the mount", ok=not partials, detail=listed(partials)),
        Check(
            name="validator sidecars left beside a verified product, no partial with them (reported: the "
            "mount went away as the product was promoted; the sweep takes them after 24 h)",
            ok=True,
            detail=listed(orphans) or "0",
        ),
        Check(
            name="retries bounded (at most the budget + 1)", ok=not over_budget, detail=listed(over_budget)
        ),
        Check(name="no lease left held", ok=not leases, detail=listed(leases)),
        Check(
            name="download queue empty (three readings, 1 s apart)",
            ok=empty,
            detail="" if empty else readings,
        ),
        Check(
            name="dead-letter queue holds every failed granule's and hostile message, and nothing else",
            ok=not missing_dead and not stray_dead,
            detail=f"missing {sum(missing_dead.values())}, stray {sum(stray_dead.values())}: "
            + listed([_dead_label(body) for body in (missing_dead + stray_dead).elements()])
            if missing_dead or stray_dead
            else "",
        ),
        Check(
            name="extra copies of failed granules' messages in the dead-letter queue (reported)",
            ok=True,
            detail=f"{sum(duplicates.values())}: "
            + listed([_dead_label(body) for body in duplicates.elements()])
            if duplicates
            else "0",
        ),
        Check(
            name="each verified granule has its upload message",
            ok=not missing_uploads,
            detail=listed(missing_uploads),
        ),
        Check(
            name="messages lost (0): dead-letter entries missing plus upload messages missing",
            ok=lost == 0,
            detail=str(lost),
        ),
    ]


# -- the run ------------------------------------------------------------------------------


def _send_all(pipeline: Pipeline, bodies: list[str]) -> None:
    client = pipeline.services.sqs.client()
    for start in range(0, len(bodies), 10):
        batch = bodies[start : start + 10]
        entries = [{"Id": str(i), "MessageBody": b} for i, b in enumerate(batch)]
        # One at a time when a batch would pass SQS's 256 KiB per-request limit.
        if sum(len(b.encode()) for b in batch) < 200_000:
            client.send_message_batch(QueueUrl=pipeline.queues.download_url, Entries=entries)  # type: ignore[arg-type]
        else:
            for body in batch:
                client.send_message(QueueUrl=pipeline.queues.download_url, MessageBody=body)


def _seed(
    pipeline: Pipeline,
    services: Services,
    scripts: list[Script],
    hostile: list[tuple[str, str]],
    rng: random.Random,
) -> tuple[dict[str, str], set[Path]]:
    """Publish the products, insert their granules, break the store places of the store kinds,
    queue every message shuffled; the MD5s, and the files planted for store_refused granules."""
    products = pipeline.seed(
        [(s.granule_id, s.size) for s in scripts],
        faults={s.granule_id: list(s.faults) for s in scripts},
        send=False,
    )
    hub = remote_hub(services)
    for script in scripts:
        if script.kind == "doomed":
            hub.set_checksum_wrong(script.granule_id)
    plant_obstacles(pipeline.efs_dir, [s.granule_id for s in scripts if s.kind in _STORE_KINDS])
    refused = {pipeline.efs_dir / s.granule_id for s in scripts if s.kind == "store_refused"}
    bodies = [pipeline.message(s.granule_id) for s in scripts] + [b for _, b in hostile]
    rng.shuffle(bodies)
    _send_all(pipeline, bodies)
    return {p.id: p.md5 for p in products}, refused


def _worker_package(pipeline: Pipeline, cwd: Path) -> str:
    """Where a worker started with the soak's environment imports ``s2_downloader`` from."""
    found = subprocess.run(
        [sys.executable, "-c", "import s2_downloader; print(s2_downloader.__file__)"],
        env=cli_env(pipeline, **WORKER_ENV),
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    return found.stdout.strip() or found.stderr.strip()[-200:]


def _evidence(
    *,
    fleet: Fleet,
    logs: Path,
    scripts: list[Script],
    repairs: Repairs,
    played: Chaos,
    obstacles: set[Path],
    worker_package: str,
) -> Evidence:
    """The workers' logs and the Lambda's record, read once the workers are done."""
    runner_events = fleet.log_events()
    return Evidence(
        events=runner_events + log_events((logs / "lambda.log").read_text(errors="replace")),
        outages=lambda_outages(
            read_json_lines(logs / "lambda.jsonl"),
            runner_events,
            played.windows,
            {s.granule_id for s in scripts},
        ),
        repaired=dict(repairs.repaired),
        obstacles=obstacles,
        windows=list(played.windows),
        worker_package=worker_package,
        emf_outages=dict(emf_outages(read_json_lines(logs / "lambda.out"))),
    )


def _drive(fleet: Fleet, played: Chaos) -> bool:
    """Play the chaos while the runners work; True when the deadline stopped them."""
    chaos = threading.Thread(target=played.run, name="chaos", daemon=True)
    chaos.start()
    while fleet.reap() or chaos.is_alive():
        if time.monotonic() - fleet.t0 > DEADLINE_SECONDS:
            fleet.note(f"deadline of {DEADLINE_SECONDS:.0f} s passed; runners stopped")
            played.halt()
            fleet.stop_all()
            return True
        time.sleep(0.5)
    return False


def _stop_leftovers(fleet: Fleet, function: LambdaProcess) -> None:
    """Whatever still runs when the soak ends early (an error, Ctrl-C): stopped, not left behind."""
    if fleet.runners:
        fleet.stop_all()
    if function.process.poll() is None:
        function.process.terminate()
        try:
            function.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            function.process.kill()
            function.process.wait()


def run_soak(seed: int, granules: int, hostile_count: int, out: Path, keep_logs: Path | None = None) -> bool:
    """The whole hostile soak; writes ``out``; True when every check passed."""
    rng = random.Random(seed)
    skew_env = _faketime_env()
    listener = Listener().start()
    scripts = plan(rng, granules, listener.url)
    moments = [
        # The clock-skewed runner is the one killed, before the outages: under libfaketime
        # 0.9.10 no timed wait times out (threading's Lock.acquire, Event.wait and
        # Condition.wait with a timeout block until woken), so that runner cannot live
        # through an outage: its pool never retries a refused connection and its outage
        # pause never ends. It works the first seconds of the bulk, with its clock ahead.
        (rng.uniform(5, 30), "kill", 0.0),
        (rng.uniform(5, 30), "restart", 0.0),
        (rng.uniform(35, 70), "restart", 0.0),
        # As the bulk of the queue ends (it is worked in the first half minute or so): the
        # runners meet it, and the Lambda, at a receive every second or so, a few times.
        (rng.uniform(35, 45), "store", STORE_OUTAGE_SECONDS),
        # After the bulk, once most hostile messages are dead-lettered: the Lambda works the
        # deferred messages (each claims its granule), a receive every few seconds, so
        # invocations meet the stopped database (it stays stopped until one has, up to twice
        # as long).
        (rng.uniform(90, 100), "database", DATABASE_OUTAGE_SECONDS),
    ]
    machine = Machine.here()
    exits: dict[str, int] = {}
    with (
        bench_services(rate_limit=HUB_RATE) as services,
        services.pipeline(visibility_timeout=10, max_receive_count=4) as pipeline,
        tempfile.TemporaryDirectory(prefix="s2hostile-logs-") as logs_dir,
    ):
        logs = Path(logs_dir)
        hub = remote_hub(services)
        hostile = hostile_bodies(rng, hostile_count, hub.base_url, listener.url)
        md5s, obstacles = _seed(pipeline, services, scripts, hostile, rng)
        worker_package = _worker_package(pipeline, logs)
        fleet = Fleet(pipeline=pipeline, logs=logs, t0=time.monotonic(), runner_env=WORKER_ENV)
        fleet.start()
        skewed = fleet.start(extra_env=skew_env, label=f"clock {SKEW}")
        function = LambdaProcess.start(pipeline, logs)
        fleet.note("Lambda poller started")
        repairs = Repairs(
            pipeline=pipeline,
            fleet=fleet,
            granule_ids=[s.granule_id for s in scripts if s.kind == "store_repaired"],
        ).start()
        played = Chaos(
            fleet=fleet,
            services=services,
            pipeline=pipeline,
            rng=rng,
            moments=moments,
            victim=skewed.name,
            lambda_record=logs / "lambda.jsonl",
        )
        try:
            timed_out = _drive(fleet, played)
            exits["lambda"] = function.finish(
                timeout=max(1.0, DEADLINE_SECONDS - (time.monotonic() - fleet.t0))
            )
            fleet.note(f"Lambda poller exited {exits['lambda']}")
        finally:
            played.halt()
            repairs.stop()
            _stop_leftovers(fleet, function)
        seconds = time.monotonic() - fleet.t0
        for runner in fleet.finished:
            exits[runner.name] = runner.process.returncode
        evidence = _evidence(
            fleet=fleet,
            logs=logs,
            scripts=scripts,
            repairs=repairs,
            played=played,
            obstacles=obstacles,
            worker_package=worker_package,
        )
        checks = check(
            services=services,
            pipeline=pipeline,
            scripts=scripts,
            md5s=md5s,
            hostile=hostile,
            listener=listener,
            exits=exits,
            evidence=evidence,
        )
        if timed_out:
            checks.insert(0, Check(name=f"finished within {DEADLINE_SECONDS:.0f} s", ok=False))
        rows = pipeline.rows()
        hub_requests = hub.request_count()
        if keep_logs is not None or not all(c.ok for c in checks):
            kept = keep_logs or Path(tempfile.mkdtemp(prefix="s2hostile-kept-"))
            shutil.copytree(logs, kept, dirs_exist_ok=True)
            fleet.note(f"logs kept in {kept}")
    listener.stop()
    out.write_text(
        _report(
            seed=seed,
            scripts=scripts,
            hostile=hostile,
            checks=checks,
            fleet=fleet,
            events=evidence.events,
            evidence=evidence,
            rows=rows,
            seconds=seconds,
            hub_requests=hub_requests,
            redirects_followed=len(listener.requests),
            machine=machine,
        ),
        encoding="utf-8",
    )
    return all(c.ok for c in checks)


def _report(
    *,
    seed: int,
    scripts: list[Script],
    hostile: list[tuple[str, str]],
    checks: list[Check],
    fleet: Fleet,
    events: list[dict[str, Any]],
    evidence: Evidence,
    rows: dict[str, dict[str, Any]],
    seconds: float,
    hub_requests: int,
    redirects_followed: int,
    machine: Machine,
) -> str:
    kinds = collections.Counter(s.kind for s in scripts)
    fates = collections.Counter(rows[s.granule_id]["state"] for s in scripts)
    reasons = collections.Counter(
        (rows[s.granule_id]["last_error"] or "").split(":", 1)[0]
        for s in scripts
        if rows[s.granule_id]["state"] == "failed"
    )
    by_event = collections.Counter(e.get("event") for e in events)
    hostile_kinds = collections.Counter(kind for kind, _ in hostile)
    lam = evidence.outages
    lost = next((c.detail for c in checks if c.name.startswith("messages lost")), "?")
    plan_section = DocSection(title="The plan (from the seed)")
    plan_section.body += [
        f"{len(scripts)} granules (16 KiB to 1 MiB) and {len(hostile)} hostile messages, shuffled onto one "
        f"queue; `MAX_DOWNLOAD_RETRIES={MAX_RETRIES}`, `MAX_DEFER_SECONDS={MAX_DEFER_SECONDS}`, "
        "`RETRY_DELAY_SECONDS=1`, `LEASE_SECONDS=10`, `HTTP_READ_TIMEOUT=3`; visibility timeout 10 s, "
        f"`maxReceiveCount` 4; the hub paced at {HUB_RATE / 1e6:g} MB/s per connection. Two runners at "
        f"`--concurrency 8`, one with its wall clock at `{SKEW}` (libfaketime); one Lambda handler fed "
        "one record per invocation by `benchmarks.lambda_poller` (HLS's mapping: batch size 1, no partial "
        "batch responses), its receives hidden for 30 s, backing off after function errors (1 s doubled per "
        "error in a row, at most 4 s).",
        "",
        *table(
            ["script", "granules", "dictated fate"],
            [[kind, kinds[kind], _KINDS[kind][1]] for kind in _KINDS],
        ),
        "",
        *table(["hostile message", "count"], [[kind, n] for kind, n in sorted(hostile_kinds.items())]),
        "",
        "store_refused and store_repaired granules start with a regular file at `<mount>/<id>`, where "
        "their granule directory must be: the store refuses that granule only, while the mount passes its "
        "health check (a probe file in the mount's root). A store_repaired granule's file is removed once "
        "the database shows a counted `store:` failure.",
        "",
        "Chaos, at moments drawn from the seed (see the timeline): a runner killed with SIGKILL, "
        f"PostgreSQL restarted twice, the whole mount renamed away for {STORE_OUTAGE_SECONDS:.0f} s as the "
        f"bulk of the queue ends, and PostgreSQL stopped for {DATABASE_OUTAGE_SECONDS:.0f} s or more (until "
        "a Lambda invocation has met it, at most twice as long) while the Lambda works the deferred "
        "messages.",
    ]
    figures = DocSection(title="Figures")
    figures.body += table(
        ["figure", "value"],
        [
            ["wall time", f"{seconds:.1f} s"],
            ["verified", str(fates["verified"])],
            ["failed, by reason", ", ".join(f"{k}: {n}" for k, n in sorted(reasons.items())) or "none"],
            ["failed by the deferral budget (server_error)", str(reasons["server_error"])],
            ["bad messages refused (bad_message log records)", str(by_event["bad_message"])],
            [
                "Lambda invocations (raised)",
                f"{lam.invocations} ({lam.raised})",
            ],
            ["Lambda invocations that met an outage", str(lam.met)],
            [
                "outages seen as function errors (all)",
                f"{lam.met - len(lam.not_function_errors)} of {lam.met}",
            ],
            [
                "Lambda invocations raised for an outage, by component (exception and logged outcome)",
                ", ".join(f"{k}: {n}" for k, n in sorted(lam.by_component.items())) or "none",
            ],
            [
                "Lambda `Outages` EMF records, by component",
                ", ".join(f"{k}: {n}" for k, n in sorted(evidence.emf_outages.items())) or "none",
            ],
            [
                "Lambda invocations wholly inside the database outage (a granule's message)",
                str(lam.in_database_window),
            ],
            ["receive counts spent on outages", str(len(lam.spent))],
            ["messages lost", str(lost)],
            [
                "outage windows",
                "; ".join(
                    f"{w.component} {w.start - fleet.t0:.1f}-{w.end - fleet.t0:.1f} s"
                    for w in evidence.windows
                ),
            ],
            [
                "store failures counted (store_refused + store_repaired granules)",
                str(sum(1 for e in events if _store_counted(e))),
            ],
            [
                "store errors found to be the store's outage (store_unhealthy)",
                str(by_event["store_unhealthy"]),
            ],
            ["outages begun, as the workers logged them (outage_started)", str(by_event["outage_started"])],
            ["attempts counted (download_retry)", str(by_event["download_retry"])],
            ["attempts postponed (download_postponed)", str(by_event["download_postponed"])],
            ["hub requests answered", str(hub_requests)],
            ["redirects off the hub followed without credentials", str(redirects_followed)],
        ],
    )
    timeline = DocSection(title="Timeline")
    timeline.body += table(["s", "event"], [[f"{at:.1f}", text] for at, text in fleet.events])
    results = DocSection(title="Checks")
    results.body += table(
        ["check", "result", "detail"], [[c.name, "pass" if c.ok else "**FAIL**", c.detail] for c in checks]
    )
    verdict = "All checks passed." if all(c.ok for c in checks) else "**Some checks failed.**"
    return render(
        title="s2-downloader hostile soak",
        intro=[
            "Generated by `make soak-hostile` (`python -m benchmarks.soak_hostile`). " + verdict,
            "",
            (__doc__ or "").split("\n\n", 1)[1].split("Writes")[0].strip(),
            "",
            f"Seed {seed}: `python -m benchmarks.soak_hostile --seed {seed}` replays the same plan and chaos "
            "moments.",
        ],
        machine=machine,
        command=f"make soak-hostile SOAK_SEED={seed}",
        sections=[results, figures, plan_section, timeline],
    )


def main(argv: list[str] | None = None) -> int:
    """Run the hostile soak; exit 0 only when every check passed."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak_hostile", description=__doc__)
    parser.add_argument("--seed", type=int, default=int(os.environ.get("SOAK_SEED", "20261201")))
    parser.add_argument("--granules", type=int, default=500)
    parser.add_argument("--hostile", type=int, default=50)
    parser.add_argument("--out", default=str(_ROOT / "docs" / "soak-hostile.md"))
    parser.add_argument("--logs", default=None, help="keep the workers' logs and records in this directory")
    args = parser.parse_args(argv)
    ok = run_soak(
        args.seed, args.granules, args.hostile, Path(args.out), None if args.logs is None else Path(args.logs)
    )
    print(f"hostile soak {'passed' if ok else 'FAILED'}; report in {args.out}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
