"""The S3 store: one 512 MiB product into moto's bucket, beside the EFS store and HLS today's way.

Every contender fetches the same product id from the same simulator process; each round
runs every contender once, in an order rotated from round to round.

- **s2-downloader, S3 store**: the installed CLI, ``s2-downloader run --until-empty
  --concurrency 1`` with ``STORE=s3`` (no upload queue): parts of 16 MiB, each
  ``UploadPart`` sent from the downloading thread as it fills, then
  ``CompleteMultipartUpload``. Its figure is the ``download_verified`` record's
  ``seconds`` (from the first byte asked for to the completed upload).
- **s2-downloader, EFS store**: the same command with ``EFS_MOUNT_DIR`` on tmpfs; the same
  figure (to the fsync and rename).
- **HLS today's way**: ``requests.get(...)``, ``response.raw.read()`` of the whole body,
  then one ``PutObject`` with the hub's MD5 as ``Content-MD5`` (``benchmarks/hls_way.py``),
  timed inside its own process from the GET to the put's answer.
- **moto ceiling, one PutObject**: the product's bytes, already in this process's memory,
  put in one request with ``Content-MD5``: the fastest moto takes 512 MiB, whoever sends it.
- **moto ceiling, 16 MiB parts**: the same bytes from memory as 32 ``UploadPart`` requests
  (each with ``Content-MD5``) and ``CompleteMultipartUpload``: the fastest moto takes a
  multipart upload of this size.

Peak RSS is the process's own ``VmHWM`` (``measure.run_child``). The part-size runs use
``benchmarks/s3_part_child.py`` (the CLI with the store's part size replaced: there is no
setting for it).
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
from botocore.config import Config

from benchmarks.measure import MIB, Runs, run_child
from benchmarks.report import Section, Target, mb_s, table
from benchmarks.single_stream import run_s2_downloader
from benchmarks.stack import CLI, cli_env, log_events, remote_hub
from s2_downloader.testing.hubsim import SimProduct
from s2_downloader.testing.s3 import create_bucket
from s2_downloader.testing.sqs import REGION
from s2_downloader.testing.stack import Services

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

__all__ = ["S3Path", "measure_s3_path", "section"]

_ROOT = Path(__file__).resolve().parent.parent
_S3 = "s2-downloader, S3 store"
_EFS = "s2-downloader, EFS store (tmpfs)"
_HLS = "HLS today's way (whole body in memory, one PutObject)"
_PUT = "moto ceiling: one PutObject from memory"
_MULTI = "moto ceiling: 16 MiB parts from memory"
_CONTENDERS = (_S3, _EFS, _HLS, _PUT, _MULTI)
#: Processes measured for their memory (the ceilings run in this process).
_PROCESSES = (_S3, _EFS, _HLS)
PART_SIZES_MIB = (8, 16, 64)
SMALL = 64 * MIB


@attrs.define
class S3Path:
    """Every figure of the S3 section."""

    size: int
    seconds: dict[str, Runs] = attrs.field(factory=lambda: {name: Runs() for name in _CONTENDERS})
    rss: dict[str, Runs] = attrs.field(factory=lambda: {name: Runs() for name in _PROCESSES})
    small_rss: Runs = attrs.field(factory=Runs)
    #: Part size (MiB) -> transfer seconds and peak RSS of the S3 store's runs.
    parts_seconds: dict[int, Runs] = attrs.field(factory=lambda: {m: Runs() for m in PART_SIZES_MIB})
    parts_rss: dict[int, Runs] = attrs.field(factory=lambda: {m: Runs() for m in PART_SIZES_MIB})

    def throughput(self, name: str) -> float:
        """Median MB/s of ``name``."""
        return mb_s(self.size, self.seconds[name].median)


@attrs.frozen
class _Run:
    seconds: float
    max_rss: int


def _bench_client(endpoint_url: str) -> S3Client:
    """A client as the runner's: only the checksums S3 requires (Content-MD5 is ours)."""
    import boto3

    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )
    config = Config(
        read_timeout=600,
        retries={"mode": "standard", "max_attempts": 1},
        s3={"addressing_style": "path"},
        proxies={},
        request_checksum_calculation="when_required",
    )
    return session.client("s3", endpoint_url=endpoint_url, config=config)


def run_s3_store(services: Services, product_id: str, size: int, *, part_mib: int | None = None) -> _Run:
    """Seed one product on a fresh S3 pipeline; run the CLI (or the part-size child) until empty."""
    with services.pipeline(store="s3") as pipeline:
        (product,) = pipeline.seed([(product_id, size)])
        tail = ["run", "--until-empty", "--concurrency", "1"]
        argv = (
            [CLI, *tail]
            if part_mib is None
            else [sys.executable, "-m", "benchmarks.s3_part_child", str(part_mib), *tail]
        )
        run = run_child(argv, env=cli_env(pipeline), cwd=str(_ROOT))
        verified = [e for e in log_events(run.stderr) if e.get("event") == "download_verified"]
        if run.returncode != 0 or len(verified) != 1:
            msg = f"s2-downloader run (S3) failed ({run.returncode}): {run.stderr[-2000:]}"
            raise RuntimeError(msg)
        head = pipeline.s3_client().head_object(Bucket=pipeline.bucket, Key=pipeline.object_key(product_id))
        if (head["ContentLength"], head["Metadata"].get("md5")) != (size, product.md5):
            msg = f"the object of {product_id} is not the product: {head}"
            raise RuntimeError(msg)
        return _Run(seconds=float(verified[0]["seconds"]), max_rss=run.max_rss)


def _hls_way(services: Services, product: SimProduct) -> _Run:
    with services.pipeline(store="s3") as pipeline:
        key = pipeline.object_key(product.id)
        url = pipeline.download_url(product.id)
        argv = [sys.executable, "-m", "benchmarks.hls_way", url, key, product.md5]
        run = run_child(argv, env=cli_env(pipeline), cwd=str(_ROOT))
        if run.returncode != 0:
            msg = f"HLS's way failed ({run.returncode}): {run.stderr[-2000:]}"
            raise RuntimeError(msg)
        return _Run(seconds=float(json.loads(run.stdout)["seconds"]), max_rss=run.max_rss)


def _moto_put(client: S3Client, bucket: str, content: bytes, md5: bytes) -> float:
    started = time.perf_counter()
    client.put_object(
        Bucket=bucket, Key="ceiling", Body=content, ContentMD5=base64.b64encode(md5).decode("ascii")
    )
    seconds = time.perf_counter() - started
    client.delete_object(Bucket=bucket, Key="ceiling")
    return seconds


def _moto_multipart(client: S3Client, bucket: str, content: bytes, part_size: int = 16 * MIB) -> float:
    view = memoryview(content)
    started = time.perf_counter()
    upload_id = client.create_multipart_upload(Bucket=bucket, Key="ceiling-mp")["UploadId"]
    parts = []
    for number, offset in enumerate(range(0, len(content), part_size), start=1):
        body = bytes(view[offset : offset + part_size])
        md5 = base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode("ascii")
        etag = client.upload_part(
            Bucket=bucket, Key="ceiling-mp", UploadId=upload_id, PartNumber=number, Body=body, ContentMD5=md5
        )["ETag"]
        parts.append({"PartNumber": number, "ETag": etag})
    client.complete_multipart_upload(
        Bucket=bucket,
        Key="ceiling-mp",
        UploadId=upload_id,
        MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
    )
    seconds = time.perf_counter() - started
    client.delete_object(Bucket=bucket, Key="ceiling-mp")
    return seconds


def _content(product: SimProduct) -> bytes:
    content = bytearray(product.size)
    at = 0
    for piece in product.iter_bytes():
        content[at : at + len(piece)] = piece
        at += len(piece)
    return bytes(content)


def measure_s3_path(
    services: Services, efs_root: Path, *, size: int = 512 * MIB, rounds: int = 3, say: Callable[[str], None]
) -> S3Path:
    """``rounds`` rounds of every contender, the 64 MiB memory runs and the part sizes."""
    product_id = f"S2BENCH_S3_{size // MIB}MIB"
    product = remote_hub(services).add_product(product_id, size)
    content = _content(product)
    md5 = hashlib.md5(content, usedforsecurity=False).digest()
    if md5.hex() != product.md5:
        msg = "the in-memory copy of the product does not match its MD5"
        raise RuntimeError(msg)
    result = S3Path(size=size)
    client = _bench_client(services.s3.endpoint_url)
    bucket = create_bucket(client, "s2bench-ceiling")
    scratch = Path(tempfile.mkdtemp(prefix="s2bench-s3-", dir=efs_root))

    def s3(round_no: int) -> None:
        del round_no
        run = run_s3_store(services, product_id, size)
        result.seconds[_S3].add(run.seconds)
        result.rss[_S3].add(run.max_rss)

    def efs(round_no: int) -> None:
        run = run_s2_downloader(services, scratch / f"efs-{round_no}", product_id, size)
        result.seconds[_EFS].add(run.transfer_seconds)
        result.rss[_EFS].add(run.max_rss)

    def hls(round_no: int) -> None:
        del round_no
        run = _hls_way(services, product)
        result.seconds[_HLS].add(run.seconds)
        result.rss[_HLS].add(run.max_rss)

    def put(round_no: int) -> None:
        del round_no
        result.seconds[_PUT].add(_moto_put(client, bucket, content, md5))

    def multipart(round_no: int) -> None:
        del round_no
        result.seconds[_MULTI].add(_moto_multipart(client, bucket, content))

    steps: list[Callable[[int], None]] = [s3, efs, hls, put, multipart]
    try:
        for round_no in range(rounds):
            say(f"S3 path, {size // MIB} MiB, round {round_no + 1} of {rounds}")
            shift = round_no % len(steps)
            for step in steps[shift:] + steps[:shift]:
                step(round_no)
        say(f"S3 path, peak RSS with a {SMALL // MIB} MiB product")
        for _ in range(rounds):
            result.small_rss.add(run_s3_store(services, f"S2BENCH_S3_{SMALL // MIB}MIB", SMALL).max_rss)
        for round_no in range(rounds):
            say(f"S3 path, part sizes {PART_SIZES_MIB} MiB, round {round_no + 1} of {rounds}")
            shift = round_no % len(PART_SIZES_MIB)
            for mib in PART_SIZES_MIB[shift:] + PART_SIZES_MIB[:shift]:
                run = run_s3_store(services, product_id, size, part_mib=mib)
                result.parts_seconds[mib].add(run.seconds)
                result.parts_rss[mib].add(run.max_rss)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        client.delete_bucket(Bucket=bucket)
    return result


def _mib(runs: Runs) -> str:
    return f"{runs.median / MIB:.1f} ({min(runs.values) / MIB:.1f}-{max(runs.values) / MIB:.1f})"


def section(result: S3Path, notes: list[str]) -> Section:
    """The S3 tables and their targets."""
    out = Section(title="S3 store")
    out.body.append(__doc__.split("\n\n", 1)[1].strip() if __doc__ else "")
    out.body.append("")
    rounds = len(result.seconds[_S3].values)
    size = result.size // MIB
    out.body.append(f"**{size} MiB, one product** (median of {rounds} rounds; spread = min-max):")
    out.body.append("")
    ceiling = result.throughput(_MULTI)
    rows = [
        [
            name,
            f"{result.throughput(name):.0f}",
            f"{result.seconds[name].median:.2f} ({result.seconds[name].spread()})",
            _mib(result.rss[name]) if name in result.rss else "-",
            f"{result.throughput(name) / ceiling:.2f}",
        ]
        for name in _CONTENDERS
    ]
    out.body += table(
        ["contender", "MB/s", "seconds (spread)", "peak RSS MiB (spread)", "x moto multipart ceiling"], rows
    )
    out.body += ["", f"**Peak RSS of the S3 store's runs** (median of {rounds} rounds; spread):", ""]
    out.body += table(
        ["product", "peak RSS MiB (spread)"],
        [[f"{SMALL // MIB} MiB", _mib(result.small_rss)], [f"{size} MiB", _mib(result.rss[_S3])]],
    )
    out.body += ["", f"**Part size, {size} MiB product** (median of {rounds} rounds; spread):", ""]
    out.body += table(
        ["part size", "parts", "MB/s", "seconds (spread)", "peak RSS MiB (spread)"],
        [
            [
                f"{mib} MiB",
                -(-result.size // (mib * MIB)),
                f"{mb_s(result.size, result.parts_seconds[mib].median):.0f}",
                f"{result.parts_seconds[mib].median:.2f} ({result.parts_seconds[mib].spread()})",
                _mib(result.parts_rss[mib]),
            ]
            for mib in PART_SIZES_MIB
        ],
    )
    out.body += ["", *notes]
    s3, efs, hls = (result.throughput(name) for name in (_S3, _EFS, _HLS))
    s3_rss, hls_rss = result.rss[_S3].median, result.rss[_HLS].median
    flat = result.rss[_S3].median / result.small_rss.median
    peak = max(result.rss[_S3].median, result.small_rss.median)
    out.targets += [
        Target(
            name=f"S3 store vs EFS store ({size} MiB, moto)",
            wanted=">= 0.8x",
            measured=f"{s3 / efs:.2f}x ({s3:.0f} vs {efs:.0f} MB/s; moto's multipart ceiling {ceiling:.0f})",
            met=s3 >= 0.8 * efs,
        ),
        Target(
            name=f"S3 store vs HLS today's way ({size} MiB, moto)",
            wanted="faster, a fraction of the memory",
            measured=f"{s3 / hls:.2f}x the speed, {s3_rss / hls_rss:.2f}x the peak RSS "
            f"({s3_rss / MIB:.0f} vs {hls_rss / MIB:.0f} MiB)",
            met=s3 > hls and s3_rss < 0.5 * hls_rss,
        ),
        Target(
            name=f"S3 store memory flat ({size} vs {SMALL // MIB} MiB product, 16 MiB parts)",
            wanted="ratio <= 1.1, peak < 150 MiB",
            measured=f"{flat:.3f}, {peak / MIB:.1f} MiB",
            met=flat <= 1.1 and peak < 150 * MIB,
        ),
    ]
    return out
