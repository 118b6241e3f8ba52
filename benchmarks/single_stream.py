"""One large product, four ways: s2-downloader, ``curl | tee | md5sum``, sentinelsat, and MD5 alone.

All four fetch (or hash) the same bytes: the same product id on the same simulator
process, files written to the same directory. Each round runs every contender once,
in an order rotated from round to round so none always goes first.

- **s2-downloader**: the installed CLI, ``s2-downloader run --until-empty --concurrency 1``
  as a subprocess over PostgreSQL and SQS; its figure is the ``download_verified``
  log record's ``seconds`` (open, stream, hash, fsync, rename), so it excludes the
  interpreter's start, the claim and the checksum request.
- **curl**: ``curl -s URL | tee FILE | md5sum`` under ``bash -o pipefail``, wall time
  of the whole pipeline, its MD5 checked against the product's.
- **sentinelsat**: ``SentinelAPI.download(id)`` timed inside its own process
  (``benchmarks.peer_sentinelsat``): metadata requests, the transfer, the read-back MD5.
- **MD5 ceiling**: ``hashlib.md5`` over the product's bytes held in memory, in 1 MiB
  updates, in this process: what one core of this machine can hash.
- **file write alone** (for reference, no network, no hash): the same bytes written
  from memory to a new file in the same directory in 1 MiB ``write`` calls, then
  ``fsync``: what the file system lets any contender reach.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import attrs

from benchmarks.measure import MIB, Runs, run_child
from benchmarks.report import Section, Target, mb_s, table
from benchmarks.stack import CLI, cli_env, log_events, remote_hub
from s2_downloader.testing.hubsim import SimProduct
from s2_downloader.testing.stack import Services

__all__ = ["SingleStream", "measure_single_stream", "run_s2_downloader", "section"]

_ROOT = Path(__file__).resolve().parent.parent
_CONTENDERS = ("s2-downloader", "curl | tee | md5sum", "sentinelsat", "MD5 in memory", "file write alone")


@attrs.define
class SingleStream:
    """The runs of every contender on one file system."""

    size: int
    where: str
    seconds: dict[str, Runs] = attrs.field(factory=lambda: {name: Runs() for name in _CONTENDERS})
    cpu: dict[str, Runs] = attrs.field(factory=lambda: {name: Runs() for name in _CONTENDERS[:3]})
    #: Peak RSS of each s2-downloader run, bytes.
    s2_rss: Runs = attrs.field(factory=Runs)

    def throughput(self, name: str) -> float:
        """Median MB/s of ``name``."""
        return mb_s(self.size, self.seconds[name].median)


@attrs.frozen(kw_only=True)
class S2Run:
    """One s2-downloader CLI run on one product."""

    transfer_seconds: float
    wall: float
    cpu: float
    max_rss: int


def run_s2_downloader(
    services: Services, directory: Path, product_id: str, size: int, *, concurrency: int = 1
) -> S2Run:
    """Seed one product on a fresh pipeline in ``directory`` and run the CLI until the queue is empty."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        with services.pipeline(efs_dir=directory) as pipeline:
            pipeline.seed([(product_id, size)])
            run = run_child(
                [CLI, "run", "--until-empty", "--concurrency", str(concurrency)], env=cli_env(pipeline)
            )
            verified = [e for e in log_events(run.stderr) if e.get("event") == "download_verified"]
            if run.returncode != 0 or len(verified) != 1:
                msg = f"s2-downloader run failed ({run.returncode}): {run.stderr[-2000:]}"
                raise RuntimeError(msg)
            return S2Run(
                transfer_seconds=float(verified[0]["seconds"]),
                wall=run.wall,
                cpu=run.cpu,
                max_rss=run.max_rss,
            )
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _curl(services: Services, directory: Path, product: SimProduct) -> tuple[float, float]:
    directory.mkdir(parents=True, exist_ok=True)
    hub = remote_hub(services)
    env = {
        **os.environ,
        "HUB_AUTH": f"{services.hub_username}:{services.hub_password}",
        "URL": hub.dhus_download_url(product.id),
        "FILE": str(directory / f"{product.id}.zip"),
    }
    try:
        run = run_child(
            ["bash", "-o", "pipefail", "-c", 'curl -s --fail -u "$HUB_AUTH" "$URL" | tee "$FILE" | md5sum'],
            env=env,
        )
        if run.returncode != 0 or run.stdout.split()[:1] != [product.md5]:
            msg = f"curl pipeline failed ({run.returncode}): {run.stdout} {run.stderr[-500:]}"
            raise RuntimeError(msg)
        return run.wall, run.cpu
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _sentinelsat(services: Services, directory: Path, product: SimProduct) -> tuple[float, float]:
    directory.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "HUB_URL": remote_hub(services).base_url,
        "HUB_USER": services.hub_username,
        "HUB_PASSWORD": services.hub_password,
    }
    try:
        run = run_child(
            [sys.executable, "-m", "benchmarks.peer_sentinelsat", product.id, str(directory)],
            env=env,
            cwd=str(_ROOT),
        )
        if run.returncode != 0:
            msg = f"sentinelsat failed ({run.returncode}): {run.stderr[-2000:]}"
            raise RuntimeError(msg)
        return float(json.loads(run.stdout)["seconds"]), run.cpu
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _md5_ceiling(content: memoryview, expected: str) -> float:
    digest = hashlib.md5(usedforsecurity=False)
    started = time.perf_counter()
    for offset in range(0, len(content), MIB):
        digest.update(content[offset : offset + MIB])
    seconds = time.perf_counter() - started
    if digest.hexdigest() != expected:
        msg = "the in-memory copy of the product does not match its MD5"
        raise RuntimeError(msg)
    return seconds


def _write_ceiling(content: memoryview, directory: Path) -> float:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "write-alone.bin"
    try:
        started = time.perf_counter()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            for offset in range(0, len(content), MIB):
                os.write(fd, content[offset : offset + MIB])
            os.fsync(fd)
        finally:
            os.close(fd)
        return time.perf_counter() - started
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def measure_single_stream(
    services: Services, files_root: Path, *, size: int = 512 * MIB, rounds: int = 3
) -> SingleStream:
    """``rounds`` rounds of all four contenders on a product of ``size`` bytes, files under ``files_root``."""
    product_id = f"S2BENCH_SINGLE_{size // MIB}MIB"
    product = remote_hub(services).add_product(product_id, size)
    content = bytearray(size)
    at = 0
    for piece in product.iter_bytes():
        content[at : at + len(piece)] = piece
        at += len(piece)
    result = SingleStream(size=size, where=str(files_root))
    scratch = Path(tempfile.mkdtemp(prefix="s2bench-", dir=files_root))

    def s2(round_no: int) -> None:
        run = run_s2_downloader(services, scratch / f"s2-{round_no}", product_id, size)
        result.seconds["s2-downloader"].add(run.transfer_seconds)
        result.cpu["s2-downloader"].add(run.cpu)
        result.s2_rss.add(run.max_rss)

    def curl(round_no: int) -> None:
        seconds, cpu = _curl(services, scratch / f"curl-{round_no}", product)
        result.seconds["curl | tee | md5sum"].add(seconds)
        result.cpu["curl | tee | md5sum"].add(cpu)

    def peer(round_no: int) -> None:
        seconds, cpu = _sentinelsat(services, scratch / f"sentinelsat-{round_no}", product)
        result.seconds["sentinelsat"].add(seconds)
        result.cpu["sentinelsat"].add(cpu)

    def ceiling(round_no: int) -> None:
        del round_no
        result.seconds["MD5 in memory"].add(_md5_ceiling(memoryview(content), product.md5))

    def write_alone(round_no: int) -> None:
        seconds = _write_ceiling(memoryview(content), scratch / f"write-{round_no}")
        result.seconds["file write alone"].add(seconds)

    steps: list[Callable[[int], None]] = [s2, curl, peer, ceiling, write_alone]
    try:
        for round_no in range(rounds):
            shift = round_no % len(steps)
            for step in steps[shift:] + steps[:shift]:
                step(round_no)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return result


def section(results: list[SingleStream]) -> Section:
    """The single-stream and peer comparison, one table per file system; targets from the first."""
    out = Section(title="Single stream and peer")
    out.body.append(__doc__.split("\n\n", 1)[1].strip() if __doc__ else "")
    out.body.append("")
    for result in results:
        rounds = len(result.seconds["s2-downloader"].values)
        out.body.append(
            f"**{result.size // MIB} MiB, files in `{result.where}`** "
            f"(median of {rounds} rounds; spread = min-max seconds):"
        )
        out.body.append("")
        ceiling = result.throughput("MD5 in memory")
        rows = []
        for name in _CONTENDERS:
            runs = result.seconds[name]
            cpu = result.cpu.get(name)
            rows.append(
                [
                    name,
                    f"{result.throughput(name):.0f}",
                    f"{runs.median:.2f} ({runs.spread()})",
                    f"{cpu.median:.2f}" if cpu else "-",
                    f"{result.throughput(name) / ceiling:.2f}",
                ]
            )
        out.body += table(["contender", "MB/s", "seconds (spread)", "CPU s (process)", "x MD5 ceiling"], rows)
        out.body.append("")
    first = results[0]
    s2 = first.throughput("s2-downloader")
    curl = first.throughput("curl | tee | md5sum")
    ceiling = first.throughput("MD5 in memory")
    peer = first.throughput("sentinelsat")
    where = f"{first.size // MIB} MiB in {first.where}"
    out.targets += [
        Target(
            name=f"single stream vs curl pipeline ({where})",
            wanted=">= 0.9x",
            measured=f"{s2 / curl:.2f}x ({s2:.0f} vs {curl:.0f} MB/s)",
            met=s2 >= 0.9 * curl,
        ),
        Target(
            name=f"single stream vs MD5 ceiling ({where})",
            wanted=">= 0.8x",
            measured=f"{s2 / ceiling:.2f}x ({s2:.0f} vs {ceiling:.0f} MB/s)",
            met=s2 >= 0.8 * ceiling,
        ),
        Target(
            name=f"peer: s2-downloader vs sentinelsat ({where})",
            wanted="reported (no target)",
            measured=f"{s2 / peer:.2f}x ({s2:.0f} vs {peer:.0f} MB/s)",
            met=True,
        ),
    ]
    return out
