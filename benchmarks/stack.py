"""The testing stack with the hub simulator moved out to a process of its own."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.hubproc import RemoteHub
from benchmarks.measure import child_pythonpath
from s2_downloader.testing.stack import Pipeline, Services

__all__ = [
    "CLI",
    "bench_services",
    "child_pythonpath",
    "cli_env",
    "cpu_seconds",
    "log_events",
    "pin",
    "remote_hub",
    "stack_cpu",
]

#: The installed console script, next to the interpreter running the benchmarks.
CLI = str(Path(sys.executable).parent / "s2-downloader")


@contextlib.contextmanager
def bench_services(*, rate_limit: float | None = None) -> Iterator[Services]:
    """PostgreSQL, moto's SQS server and a hub simulator in its own process, for a ``with`` block."""
    services = Services()
    # RemoteHub has the HubSimulator surface the stack uses (start, stop, URLs, add_product).
    services.hub = RemoteHub(  # type: ignore[assignment]
        username=services.hub_username, password=services.hub_password, initial_rate_limit=rate_limit
    )
    with services:
        yield services


def remote_hub(services: Services) -> RemoteHub:
    """The services' hub, as the ``RemoteHub`` it is."""
    hub: Any = services.hub
    assert isinstance(hub, RemoteHub)
    return hub


def cli_env(pipeline: Pipeline, **overrides: str) -> dict[str, str]:
    """The process environment for ``s2-downloader`` on ``pipeline`` (no inherited AWS or PG settings)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PG", "DATABASE_URL"))}
    return {**base, "PYTHONPATH": child_pythonpath(), **pipeline.env(**overrides)}


def log_events(text: str) -> list[dict[str, Any]]:
    """The JSON log records in a runner's stderr."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    """User + system CPU seconds of ``pid`` (all its threads), and of its reaped children if asked."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the ")" of the command: state is field 3, utime 14 .. cstime 17 (proc(5)).
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def stack_cpu(services: Services) -> dict[str, float]:
    """CPU seconds used so far by each server of the stack (PostgreSQL: postmaster and backends)."""
    cpu: dict[str, float] = {"hub simulator": cpu_seconds(remote_hub(services).pid, reaped_children=False)}
    sqs: Any = services.sqs
    if sqs._process is not None:
        cpu["moto SQS server"] = cpu_seconds(sqs._process.pid, reaped_children=True)
    postgres: Any = services.postgres
    pid_file = postgres._data_dir / "postmaster.pid"
    if pid_file.exists():
        postmaster = int(pid_file.read_text().split()[0])
        cpu["PostgreSQL"] = cpu_seconds(postmaster, reaped_children=True) + sum(
            cpu_seconds(child, reaped_children=True) for child in _children(postmaster)
        )
    return cpu


def pin(pid: int, cpus: set[int]) -> None:
    """Let every thread of process ``pid`` run only on ``cpus``; the threads it starts later inherit it.

    ``sched_setaffinity`` applies to one thread, so each task under ``/proc/<pid>/task`` is set;
    a thread that ends meanwhile is skipped.
    """
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError, FileNotFoundError):
            os.sched_setaffinity(int(task.name), cpus)
