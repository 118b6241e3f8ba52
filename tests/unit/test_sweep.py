"""The sweep of stale partial files: per directory, an unreadable one logged and skipped."""

from __future__ import annotations

import logging
import os
import pathlib
from collections.abc import Iterator

import pytest

from s2_downloader.adapters.store.efs.sweep import PartialSweep, sweep_mount

NOW = 2_000_000_000.0
DAY = 24 * 3600


def _granule(mount: pathlib.Path, name: str, *, age: float) -> pathlib.Path:
    directory = mount / name
    directory.mkdir()
    partial = directory / f".{name}.zip.partial"
    final = directory / f"{name}.zip"
    for path in (partial, final):
        path.write_bytes(b"x")
        os.utime(path, (NOW - age, NOW - age))
    return partial


def _refusing(path_to_refuse: pathlib.Path) -> object:
    def scan(path: str) -> Iterator[os.DirEntry[str]]:
        if path == str(path_to_refuse):
            raise PermissionError(13, "Permission denied", path)
        return os.scandir(path)

    return scan


def test_an_unreadable_directory_is_logged_and_the_rest_swept(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One directory raising OSError does not stop the sweep of the others, and is logged."""
    stale = [_granule(tmp_path, name, age=2 * DAY) for name in ("a", "b", "c")]
    fresh = _granule(tmp_path, "d", age=60)
    with caplog.at_level(logging.WARNING):
        removed = sweep_mount(str(tmp_path), DAY, now=NOW, scan=_refusing(tmp_path / "b"))  # type: ignore[arg-type]
    existing = [path.exists() for path in (*stale, fresh)]
    assert (2, [False, True, False, True]) == (removed, existing)
    assert ["sweep_skipped"] == [getattr(r, "event", None) for r in caplog.records]
    assert all((tmp_path / n / f"{n}.zip").exists() for n in "abcd")


def test_an_unreadable_mount_is_logged_not_raised(tmp_path: pathlib.Path) -> None:
    """A mount that cannot be listed sweeps nothing and raises nothing."""
    assert 0 == sweep_mount(str(tmp_path / "missing"), DAY, now=NOW)


def test_the_lambda_sweep_takes_one_directory_a_step_and_goes_round(tmp_path: pathlib.Path) -> None:
    """Each step sweeps one granule directory; after the last it starts over; errors are skipped."""
    partials = [_granule(tmp_path, name, age=2 * DAY) for name in ("a", "b", "c")]
    sweep = PartialSweep(mount=str(tmp_path), older_than_seconds=DAY, clock=lambda: NOW)
    sweep.scan = _refusing(tmp_path / "b")  # type: ignore[assignment]
    removed = [sweep.step() for _ in range(3)]
    assert ([0, 1, 1], 1) == (sorted(removed), sum(p.exists() for p in partials))
    sweep.scan = os.scandir
    assert 0 == sweep.step()  # the listing ended: this step starts over
    assert [1] == [n for n in (sweep.step(), sweep.step(), sweep.step()) if n]
    assert not any(p.exists() for p in partials)


def test_the_lambda_sweep_survives_a_missing_mount(tmp_path: pathlib.Path) -> None:
    """A mount that is not there makes a step sweep nothing, without raising."""
    assert 0 == PartialSweep(mount=str(tmp_path / "missing")).step()
