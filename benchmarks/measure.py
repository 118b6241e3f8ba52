"""Measuring a child process (wall time, CPU seconds, peak RSS) and summarising repeated runs."""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import attrs

__all__ = ["MIB", "ChildRun", "Runs", "child_pythonpath", "run_child"]

MIB = 1024 * 1024
_SAMPLE_SECONDS = 0.01
_ROOT = Path(__file__).resolve().parent.parent


def child_pythonpath() -> str:
    """PYTHONPATH for the benchmark's children: this checkout's ``src`` and root first.

    The venv's editable install may point at another checkout (a git worktree sharing the
    venv): the CLI and the child scripts must run the code being measured, this one's.
    """
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    ours = [str(_ROOT / "src"), str(_ROOT)]
    return os.pathsep.join(ours + [p for p in inherited if p not in ours])


@attrs.frozen(kw_only=True)
class ChildRun:
    """One child process from start to exit, as the kernel accounted it."""

    returncode: int
    wall: float
    #: User plus system CPU seconds of the child and every descendant it waited for.
    cpu: float
    #: Peak resident set size of the child's own program in bytes (``VmHWM`` sampled after its exec).
    max_rss: int
    stdout: str
    stderr: str


def run_child(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    timeout: float = 600,
    cwd: str | None = None,
    stdin_text: str = "",
) -> ChildRun:
    """Run ``argv`` to its end and account for it with ``wait4`` (rusage of that child alone)."""
    with tempfile.TemporaryFile() as given, tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        given.write(stdin_text.encode())
        given.seek(0)
        started = time.perf_counter()
        process = subprocess.Popen(
            list(argv),
            env=env,
            cwd=cwd,
            stdin=given,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        # wait4 has no timeout: a timer kills the whole process group if the child hangs.
        watchdog = threading.Timer(timeout, _kill_group, args=(process.pid,))
        watchdog.start()
        sampler = _PeakSampler(process.pid)
        sampler.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            watchdog.cancel()
            sampler.stop()
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return ChildRun(
            returncode=process.returncode,
            wall=wall,
            cpu=usage.ru_utime + usage.ru_stime,
            max_rss=sampler.peak,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
        )


class _PeakSampler:
    """Samples a child's ``VmHWM`` (peak RSS of its current program) until it exits.

    ``ru_maxrss`` will not do: at ``exec`` the kernel folds the peak of the memory the
    child inherited (this benchmark's own, copied by fork or shared by vfork) into it.
    ``VmHWM`` starts afresh with the new program. Samples taken before the exec (the
    command line is still ours) are ignored; the last ~10 ms before exit can be missed.
    """

    def __init__(self, pid: int) -> None:
        self._status = Path(f"/proc/{pid}/status")
        self._cmdline = Path(f"/proc/{pid}/cmdline")
        self._ours = Path("/proc/self/cmdline").read_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.peak = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._cmdline.read_bytes() != self._ours:
                    for line in self._status.read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            self.peak = max(self.peak, int(line.split()[1]) * 1024)
            except (OSError, ValueError):
                pass  # not started yet, or gone
            self._stop.wait(_SAMPLE_SECONDS)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


@attrs.define
class Runs:
    """Repeated measurements of one quantity; reported as the median with the spread."""

    values: list[float] = attrs.field(factory=list)

    def add(self, value: float) -> None:
        """Record one run."""
        self.values.append(value)

    @property
    def median(self) -> float:
        """The median of the runs."""
        return statistics.median(self.values)

    def spread(self) -> str:
        """``min-max`` of the runs, for the reader to judge the noise."""
        return f"{min(self.values):.3g}-{max(self.values):.3g}"
