"""What each benchmark hands back (sections, targets) and the markdown they become."""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
from collections.abc import Sequence

import attrs

__all__ = ["CpuSteal", "Machine", "Section", "Target", "mb_s", "render", "table"]


@attrs.frozen(kw_only=True)
class Target:
    """One target of issue 5 and whether this run met it."""

    name: str
    wanted: str
    measured: str
    met: bool


@attrs.define
class Section:
    """One benchmark's findings: a title, markdown lines and the targets it judged."""

    title: str
    body: list[str] = attrs.field(factory=list)
    targets: list[Target] = attrs.field(factory=list)


@attrs.frozen(kw_only=True)
class Machine:
    """Where the figures were taken."""

    cores: int
    cpu: str
    python: str
    kernel: str
    date: str
    load: str

    @classmethod
    def here(cls) -> Machine:
        """This machine, now."""
        return cls(
            cores=os.cpu_count() or 0,
            cpu=_cpu_model(),
            python=f"{platform.python_implementation()} {sys.version.split()[0]}",
            kernel=f"{platform.system()} {platform.release()}",
            date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            load=" ".join(f"{x:.2f}" for x in os.getloadavg()),
        )


def _steal_ticks() -> tuple[int, int]:
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    # user nice system idle iowait irq softirq steal ...; guest time is already in user.
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


@attrs.define
class CpuSteal:
    """The share of CPU time the hypervisor gave to others over a stretch (``/proc/stat``)."""

    _start: tuple[int, int] = attrs.field(factory=_steal_ticks)

    def share(self) -> float:
        """Steal over all CPU time since this object was made, 0-1 (0 where unknown)."""
        steal, total = _steal_ticks()
        spent = total - self._start[1]
        return (steal - self._start[0]) / spent if spent > 0 else 0.0


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mb_s(n_bytes: float, seconds: float) -> float:
    """Throughput in MB/s (10^6 bytes per second), as the downloader's logs state it."""
    return n_bytes / seconds / 1e6 if seconds > 0 else 0.0


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """A markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    # A "|" inside a cell (the curl pipeline's name) would end the cell.
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def render(
    *, title: str, intro: Sequence[str], machine: Machine, command: str, sections: Sequence[Section]
) -> str:
    """The whole document: machine, targets at a glance, then each section."""
    lines = [f"# {title}", "", *intro, ""]
    lines += [
        "## Machine",
        "",
        *table(
            ["cores", "CPU", "Python", "kernel", "date", "load average at start (1/5/15 min)"],
            [[machine.cores, machine.cpu, machine.python, machine.kernel, machine.date, machine.load]],
        ),
        "",
        f"Reproduce with `{command}` from a clone of the repository.",
        "",
    ]
    targets = [t for s in sections for t in s.targets]
    if targets:
        lines += ["## Targets", ""]
        lines += table(
            ["target", "wanted", "measured", "met"],
            [[t.name, t.wanted, t.measured, "yes" if t.met else "**no**"] for t in targets],
        )
        lines.append("")
    for section in sections:
        lines += [f"## {section.title}", "", *section.body, ""]
    return "\n".join(lines).rstrip() + "\n"
