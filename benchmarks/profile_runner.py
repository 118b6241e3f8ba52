"""The CLI under cProfile in every thread, CPU time per thread, one merged profile.

``python -m benchmarks.profile_runner OUT.prof run --until-empty ...`` runs
``s2_downloader.entrypoints.cli.main`` with the remaining arguments. cProfile alone
sees only the thread that enabled it, and the runner works in a thread pool, so each
new thread starts a profiler of its own (``threading.setprofile`` hands it over at
the thread's first event). Time is ``time.thread_time``: CPU seconds of the thread
itself, so waiting on a socket or a lock costs nothing and the figures say where the
CPU goes. Profiling roughly doubles the run's own cost; read shares, not totals.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import threading
import time
from types import FrameType
from typing import Any

__all__ = ["main"]

_profiles: list[cProfile.Profile] = []
_lock = threading.Lock()


def _new_profile() -> cProfile.Profile:
    profile = cProfile.Profile(time.thread_time)
    with _lock:
        _profiles.append(profile)
    return profile


def _hand_over(frame: FrameType, event: str, arg: Any) -> None:
    # The first event of a new thread: replace this hook with the thread's own profiler.
    del frame, event, arg
    sys.setprofile(None)
    _new_profile().enable()


def main(argv: list[str]) -> int:
    """Profile ``s2-downloader ARGV[1:]``; write the merged stats to ``ARGV[0]``."""
    from s2_downloader.entrypoints.cli import main as cli_main

    out, args = argv[0], argv[1:]
    threading.setprofile(_hand_over)
    profile = _new_profile()
    profile.enable()
    try:
        code = cli_main(args)
    finally:
        profile.disable()
        threading.setprofile(None)  # type: ignore[arg-type]
        with _lock:
            profiles = list(_profiles)
        stats = pstats.Stats(profiles[0])
        for other in profiles[1:]:
            stats.add(other)
        stats.dump_stats(out)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
