"""fetch: one product from the hub simulator into a directory, no queue, no database; kill -9 and resume."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from s2_downloader.testing.hubsim import Fault
from s2_downloader.testing.stack import Pipeline
from tests.integration.e2e import file_md5
from tests.integration.fixtures_stack import CLI, cli_env
from tests.waiting import wait_until

KIB = 1024
MIB = 1024 * KIB


def _env(pipeline: Pipeline, **overrides: str) -> dict[str, str]:
    # Neither a database nor a queue: fetch must not need them.
    env = cli_env(pipeline, **overrides)
    for name in ("DATABASE_URL", "TO_DOWNLOAD_SQS_QUEUE_URL", "TO_UPLOAD_SQS_QUEUE_URL", "EFS_MOUNT_DIR"):
        env.pop(name, None)
    return env


def _fetch(pipeline: Pipeline, *args: str, **overrides: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "fetch", *args],
        env=_env(pipeline, **overrides),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.mark.parametrize("hub_api", ["dhus", "cdse"])
def test_fetch_verifies_one_product_into_the_directory(
    pipeline: Pipeline, tmp_path: Path, hub_api: str
) -> None:
    """The product lands verified at DIR/<id>.zip, its path on stdout, and no staging file is left."""
    product = pipeline.hub.add_product(f"FETCH-{hub_api}", 300 * KIB)
    result = _fetch(pipeline, product.id, "--dir", str(tmp_path), HUB_API=hub_api)
    assert 0 == result.returncode, result.stderr
    target = tmp_path / f"{product.id}.zip"
    assert (str(target), product.md5) == (result.stdout.strip(), file_md5(target))
    assert [target] == list(tmp_path.iterdir())


def test_fetch_names_the_file_as_asked_and_skips_a_verified_one(pipeline: Pipeline, tmp_path: Path) -> None:
    """--filename names the file; a second fetch finds it verified and downloads nothing."""
    product = pipeline.hub.add_product("FETCH-NAMED", 64 * KIB)
    first = _fetch(pipeline, product.id, "--dir", str(tmp_path), "--filename", "mine.zip", HUB_API="cdse")
    assert 0 == first.returncode, first.stderr
    downloads = len(pipeline.hub.requests_to("zipper", product.id))
    again = _fetch(pipeline, product.id, "--dir", str(tmp_path), "--filename", "mine.zip", HUB_API="cdse")
    assert 0 == again.returncode, again.stderr
    assert (product.md5, downloads) == (
        file_md5(tmp_path / "mine.zip"),
        len(pipeline.hub.requests_to("zipper", product.id)),
    )
    assert ["mine.zip"] == [p.name for p in tmp_path.iterdir()]


@pytest.mark.parametrize("hub_api", ["dhus", "cdse"])
def test_an_unknown_id_exits_1_with_the_hubs_answer(pipeline: Pipeline, tmp_path: Path, hub_api: str) -> None:
    """An id the hub does not know ends at once with exit 1 and one line saying not found."""
    result = _fetch(pipeline, "NO-SUCH-PRODUCT", "--dir", str(tmp_path), HUB_API=hub_api)
    lines = result.stderr.strip().splitlines()
    assert (1, 1) == (result.returncode, len(lines)), result.stderr
    assert "not_found" in lines[0]


def test_bad_id_or_filename_exits_2_naming_it(pipeline: Pipeline, tmp_path: Path) -> None:
    """An unsafe id or filename is refused before any request, naming ID or --filename."""
    bad_id = _fetch(pipeline, "../etc", "--dir", str(tmp_path))
    bad_name = _fetch(pipeline, "X", "--dir", str(tmp_path), "--filename", ".hidden")
    assert (2, 2) == (bad_id.returncode, bad_name.returncode)
    assert "ID:" in bad_id.stderr
    assert "--filename:" in bad_name.stderr


def test_a_broken_transfer_is_waited_out_and_resumed(pipeline: Pipeline, tmp_path: Path) -> None:
    """A reset mid-body is retried after the back-off and resumed with a Range; the file verifies."""
    product = pipeline.hub.add_product("FETCH-RESET", 512 * KIB, faults=[Fault.reset_after(200 * KIB)])
    result = _fetch(pipeline, product.id, "--dir", str(tmp_path))
    assert 0 == result.returncode, result.stderr
    assert "waiting" in result.stderr
    assert product.md5 == file_md5(tmp_path / f"{product.id}.zip")
    ranges = [r.range for r in pipeline.hub.requests_to("dhus_value", product.id)]
    assert (None, True) == (ranges[0], ranges[-1] is not None and ranges[-1].startswith("bytes="))


def test_a_killed_fetch_is_resumed_by_the_next(pipeline: Pipeline, tmp_path: Path) -> None:
    """kill -9 mid-transfer leaves a partial; the rerun sends a Range from it and the file verifies."""
    pipeline.hub.rate_limit = 256 * KIB
    product = pipeline.hub.add_product("FETCH-KILL", 2 * MIB)
    process = subprocess.Popen(
        [CLI, "fetch", product.id, "--dir", str(tmp_path)],
        env=_env(pipeline),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    partial = tmp_path / ".s2-fetch" / product.id / f".{product.id}.zip.partial"
    assert wait_until(lambda: partial.exists() and partial.stat().st_size >= 256 * KIB, timeout=30), (
        "no 256 KiB partial within 30 s: the kill would not land mid-download"
    )
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    held = partial.stat().st_size
    assert 0 < held < product.size
    pipeline.hub.rate_limit = None
    result = _fetch(pipeline, product.id, "--dir", str(tmp_path))
    assert 0 == result.returncode, result.stderr
    assert product.md5 == file_md5(tmp_path / f"{product.id}.zip")
    last = pipeline.hub.requests_to("dhus_value", product.id)[-1]
    assert last.range is not None
    assert held == int(last.range.removeprefix("bytes=").split("-")[0])
    assert [f"{product.id}.zip"] == [p.name for p in tmp_path.iterdir()]
