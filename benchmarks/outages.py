"""Outages for the hostile soak: broken store places, the store gone, the database stopped.

Three kinds of infrastructure fault, played for real on the soak's own stack:

- A store place broken for one granule only: a regular file where the granule directory
  ``<mount>/<granule_id>`` must be (``plant_obstacles``), so every attempt at that granule
  fails in the store while the mount passes its health check. ``Repairs`` removes the file
  of some of them once the database shows a counted ``store:`` failure, so they must end
  verified within the budget left.
- The whole store gone for a window: the mount directory renamed away and back
  (``Chaos.store_outage``); the EFS store's health check (a probe file in the mount) fails
  throughout, so nothing may be counted.
- PostgreSQL stopped for a window long enough that Lambda invocations meet it
  (``Chaos.database_outage``).

Then, from the Lambda poller's record of every invocation and the runners' logs,
``lambda_outages`` works out which invocations met an outage, how they ended, and whether
a message an outage-raised invocation received was ever received again (a receive count
spent on an outage).
"""

from __future__ import annotations

import collections
import contextlib
import json
import random
import signal
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs
import psycopg

from benchmarks.soak import Fleet
from s2_downloader.testing.stack import Pipeline, Services

__all__ = [
    "OBSTACLE",
    "OUTAGE_ERRORS",
    "Chaos",
    "LambdaOutages",
    "Repairs",
    "Window",
    "emf_outages",
    "lambda_outages",
    "plant_obstacles",
    "read_json_lines",
]

#: What the handler raises when an invocation met an outage: ``OutageMet`` after handing the
#: batch back, or at cold start the error itself (database, store, queue, schema, secrets, token).
OUTAGE_ERRORS = frozenset(
    {
        "OutageMet",
        "StoreError",
        "FileStoreError",
        "StoreUnavailable",
        "QueueError",
        "SchemaOutdated",
        "SecretsUnavailable",
        "SsmError",
    }
)

#: The content of a planted file.
OBSTACLE = b"a regular file where the granule directory must be (hostile soak)\n"


def plant_obstacles(mount: Path, granule_ids: Iterable[str]) -> list[Path]:
    """A regular file at ``<mount>/<id>`` for each id: the store refuses those granules only."""
    planted = []
    for granule_id in granule_ids:
        path = mount / granule_id
        path.write_bytes(OBSTACLE)
        planted.append(path)
    return planted


@attrs.frozen
class Window:
    """One outage, on the monotonic clock (comparable across processes on Linux)."""

    component: str
    start: float
    #: When the component was brought back (it may answer a little before ``end``).
    restoring: float
    #: When it answered again.
    end: float

    def holds(self, start: float, end: float) -> bool:
        """Whether ``[start, end]`` lies wholly inside the time the component was surely out."""
        return self.start <= start and end <= self.restoring


@attrs.define
class Repairs:
    """Removes the obstacle of each granule in ``granule_ids`` once it has a counted ``store:`` failure."""

    pipeline: Pipeline
    fleet: Fleet
    granule_ids: Sequence[str]
    #: Granule id -> (monotonic time of the repair, counted retries the row showed then).
    repaired: dict[str, tuple[float, int]] = attrs.field(factory=dict)
    _stop: threading.Event = attrs.field(factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Repairs:
        """Watch the rows in a thread of its own."""
        self._thread = threading.Thread(target=self._watch, name="repairs", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _rows(self) -> list[tuple[str, int, str]]:
        with (
            psycopg.connect(self.pipeline.database_url, connect_timeout=2) as conn,
            conn.cursor() as cur,
        ):
            cur.execute(
                "SELECT id, download_retries, coalesce(last_error, '') FROM granule WHERE id = ANY(%s)",
                (list(self.granule_ids),),
            )
            return [(str(r[0]), int(r[1]), str(r[2])) for r in cur.fetchall()]

    def _watch(self) -> None:
        while not self._stop.wait(0.25) and len(self.repaired) < len(self.granule_ids):
            try:
                rows = self._rows()
            except psycopg.Error:
                continue  # the database is out (the chaos stopped it): look again
            for granule_id, retries, error in rows:
                if granule_id in self.repaired or retries < 1 or not error.startswith("store:"):
                    continue
                try:
                    (self.pipeline.efs_dir / granule_id).unlink()
                except FileNotFoundError:
                    continue  # the mount is renamed away (a store outage): once it is back
                self.repaired[granule_id] = (time.monotonic(), retries)
                self.fleet.note(f"{granule_id}: store place repaired after {retries} counted failure(s)")


@attrs.define
class Chaos:
    """The soak's chaos moments, in order: kill -9, quick PostgreSQL restarts, and outage windows."""

    fleet: Fleet
    services: Services
    pipeline: Pipeline
    rng: random.Random
    #: (seconds from the start, action, seconds the action lasts).
    moments: list[tuple[float, str, float]]
    #: The runner "kill" takes (the clock-skewed one), if it is still alive; else one at random.
    victim: str = ""
    #: The Lambda poller's record of its invocations (``--record``), read to hold the database
    #: outage until an invocation has met it.
    lambda_record: Path | None = None
    windows: list[Window] = attrs.field(factory=list)
    _halted: threading.Event = attrs.field(factory=threading.Event)

    def halt(self) -> None:
        """Play nothing more (the soak is ending early): a window in progress ends at once."""
        self._halted.set()

    def run(self) -> None:
        """Play every moment at its time (one after the other: a window ends before the next starts)."""
        for at, action, seconds in sorted(self.moments):
            if self._halted.wait(max(0.0, self.fleet.t0 + at - time.monotonic())):
                return
            if action == "kill":
                self.kill()
            elif action == "restart":
                self.fleet.note("PostgreSQL restart begins")
                self.services.postgres.restart()
                self.fleet.note("PostgreSQL restart done")
            elif action == "store":
                self.store_outage(seconds)
            elif action == "database":
                self.database_outage(seconds)
            else:
                msg = f"unknown chaos action {action!r}"
                raise ValueError(msg)

    def kill(self) -> None:
        """SIGKILL the victim runner (or one at random) and start a replacement (not clock-skewed)."""
        alive = [r for r in list(self.fleet.runners) if r.process.poll() is None]
        victim = next((r for r in alive if r.name == self.victim), None)
        if victim is None:
            self.fleet.kill_one(self.rng)
            return
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait()
        self.fleet.note(f"{victim.name} killed with SIGKILL")
        self.fleet.start()

    def store_outage(self, seconds: float) -> None:
        """The mount directory renamed away for ``seconds``, then put back."""
        mount = self.pipeline.efs_dir
        away = mount.with_name(mount.name + ".away")
        start = time.monotonic()
        mount.rename(away)
        self.fleet.note(f"store outage begins: the mount renamed away for {seconds:.0f} s")
        try:
            self._halted.wait(seconds)
        finally:
            restoring = time.monotonic()
            away.rename(mount)
            end = time.monotonic()
            self.windows.append(Window("store", start, restoring, end))
            self.fleet.note("store outage ends: the mount is back")

    def database_outage(self, seconds: float) -> None:
        """PostgreSQL stopped for ``seconds``, and on until a Lambda invocation has met it (within as long
        again), then started on the same data and port."""
        self.fleet.note(f"database outage begins: PostgreSQL stopped for at least {seconds:.0f} s")
        start = time.monotonic()
        self.services.postgres.stop()
        try:
            self._halted.wait(seconds)
            while not self._lambda_met("database", start) and time.monotonic() - start < 2 * seconds:
                if self._halted.wait(1.0):
                    break
        finally:
            restoring = time.monotonic()
            if not self._halted.is_set():  # halted: the services are being torn down
                self.services.postgres.start()
            end = time.monotonic()
            self.windows.append(Window("database", start, restoring, end))
            self.fleet.note(
                f"database outage ends after {restoring - start:.0f} s: PostgreSQL accepts connections"
            )

    def _lambda_met(self, component: str, since: float) -> bool:
        """Whether the Lambda's record shows an invocation begun since ``since`` raised for ``component``."""
        if self.lambda_record is None:
            return True
        return any(
            line.get("start", 0.0) >= since
            and line.get("error") in OUTAGE_ERRORS
            and str(line.get("detail") or "").startswith(component)
            for line in read_json_lines(self.lambda_record)
        )


# -- the Lambda's invocations -------------------------------------------------------------


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    """Every JSON object line of ``path`` (none when it does not exist)."""
    if not path.exists():
        return []
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            document = json.loads(line)
            if isinstance(document, dict):
                lines.append(document)
    return lines


def emf_outages(stdout_lines: Iterable[dict[str, Any]]) -> collections.Counter[str]:
    """The ``Outages`` EMF records on the Lambda's stdout, by ``Component``."""
    counts: collections.Counter[str] = collections.Counter()
    for line in stdout_lines:
        if "_aws" in line and "Outages" in line:
            counts[str(line.get("Component", "?"))] += int(line["Outages"])
    return counts


@attrs.frozen(kw_only=True)
class LambdaOutages:
    """What the invocations' record says about outages."""

    invocations: int
    raised: int
    #: Invocations that met an outage (the handler logged one, or a scripted granule's
    #: record was invoked wholly inside a database outage window).
    met: int
    #: Of those, the ones that returned normally or raised something else (must be none).
    not_function_errors: list[str]
    #: Invocations that raised an outage error.
    outage_raised: int
    #: By component (from the handler's logged outcome, or the OutageMet message).
    by_component: dict[str, int]
    #: Messages an outage-raised invocation received that were received again later.
    spent: list[str]
    #: Invocations wholly inside the database window, working a scripted granule's message.
    in_database_window: int


def _component(invocation: dict[str, Any]) -> str:
    for seen in invocation.get("signals", []):
        if seen.get("component"):
            return str(seen["component"])
    detail = str(invocation.get("detail") or "")
    return detail.split(" ", 1)[0] if " unavailable" in detail else "?"


def lambda_outages(
    invocations: Sequence[dict[str, Any]],
    runner_events: Iterable[dict[str, Any]],
    windows: Sequence[Window],
    granule_ids: set[str],
) -> LambdaOutages:
    """Classify every invocation; find receive counts spent on outages."""
    # Every receive of every message, by the Lambda or a runner: message id -> receive counts.
    receives: dict[str, list[int]] = collections.defaultdict(list)
    for invocation in invocations:
        for message in invocation["messages"]:
            receives[message["id"]].append(int(message["receive_count"]))
    for event in runner_events:
        if event.get("event") == "message_received" and event.get("message_id"):
            receives[str(event["message_id"])].append(int(event.get("receive_count", 0)))
    database = [w for w in windows if w.component == "database"]
    met = outage_raised = in_window = 0
    wrong: list[str] = []
    spent: list[str] = []
    by_component: collections.Counter[str] = collections.Counter()
    for number, invocation in enumerate(invocations):
        scripted = any(m.get("granule") in granule_ids for m in invocation["messages"])
        inside = scripted and any(w.holds(invocation["start"], invocation["end"]) for w in database)
        in_window += inside
        error = invocation.get("error")
        if invocation.get("signals") or inside:
            met += 1
            if error not in OUTAGE_ERRORS:
                wrong.append(
                    f"#{number} ({invocation['outcome']} {error or ''}: {invocation['signals'][:2]})"
                )
        if error in OUTAGE_ERRORS:
            outage_raised += 1
            by_component[_component(invocation)] += 1
            for message in invocation["messages"]:
                later = [c for c in receives[message["id"]] if c > int(message["receive_count"])]
                if later:
                    spent.append(
                        f"{message['id'][:8]} ({message.get('granule')}: received again {len(later)}x)"
                    )
    return LambdaOutages(
        invocations=len(invocations),
        raised=sum(1 for i in invocations if i["outcome"] == "raised"),
        met=met,
        not_function_errors=wrong,
        outage_raised=outage_raised,
        by_component=dict(by_component),
        spent=spent,
        in_database_window=in_window,
    )
