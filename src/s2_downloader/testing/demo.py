"""``s2-downloader demo``: the whole pipeline on 127.0.0.1, no cloud account, no set-up.

``--store s3`` runs the same granules into a bucket on SeaweedFS (a real S3 server) instead of a
directory.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

from s2_downloader.adapters.postgres import PostgresGranuleStore, open_pool
from s2_downloader.entrypoints.config import Settings
from s2_downloader.entrypoints.local_run import run_locally
from s2_downloader.testing.hubsim import Fault
from s2_downloader.testing.stack import Pipeline, Services

__all__ = ["run_demo"]

_MIB = 1024 * 1024
_SIZES = (3, 24, 1, 12, 48, 6, 2, 16)


def _faults(index: int) -> list[Fault]:
    """A few granules meet the hub's bad days; the rest download cleanly."""
    script: dict[int, list[Fault]] = {
        2: [Fault.status(503, retry_after="1")],
        5: [Fault.reset_after(2 * _MIB)],
        8: [Fault.wrong_checksum()],
        11: [Fault.dhus_concurrent_flows()],
        14: [Fault.short_body(5 * _MIB), Fault.ignore_range()],
        17: [Fault.corrupt(), Fault.corrupt(), Fault.corrupt()],
        20: [Fault.status(500)],
    }
    return script.get(index, [])


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)  # noqa: T201


def _where(pipeline: Pipeline, files: Path, store: Literal["efs", "s3"], ids: list[str]) -> tuple[int, str]:
    """How many products are in place, and where they are."""
    if store == "efs":
        return sum(1 for gid in ids if (files / gid / f"{gid}.zip").exists()), f"files: {files}"
    keys = set(pipeline.object_keys())
    present = sum(1 for gid in ids if pipeline.object_key(gid) in keys)
    endpoint = pipeline.services.s3_server(pipeline.s3_server).endpoint_url
    sample = ", ".join(sorted(keys)[:3]) + (", ..." if len(keys) > 3 else "")
    return present, (
        f"objects: s3://{pipeline.bucket}/ on SeaweedFS at {endpoint} ({len(keys)} objects: {sample}; "
        "gone with the demo's servers)"
    )


def run_demo(*, granules: int = 24, store: Literal["efs", "s3"] = "efs") -> int:
    """Start the stack, seed ``granules`` synthetic products, run the runner until empty, summarise.

    ``store``: where verified products go, a directory (``efs``) or a bucket on SeaweedFS (``s3``).
    """
    files = Path(tempfile.mkdtemp(prefix="s2-downloader-demo-"))
    servers = "an SQS endpoint" if store == "efs" else "an SQS endpoint, SeaweedFS for S3"
    _say(f"s2-downloader demo: starting PostgreSQL, {servers} and a hub simulator on 127.0.0.1 ...")
    started = time.monotonic()
    with (
        Services(hub_rate_limit=20e6) as services,
        services.pipeline(
            efs_dir=files,
            store=store,
            # The S3 store runs against a real S3 server; moto is only the queues' endpoint then.
            s3_server="seaweedfs" if store == "s3" else "moto",
            visibility_timeout=30,
            max_receive_count=3,
        ) as pipeline,
    ):
        plan = [(f"S2DEMO{i:03d}", _SIZES[i % len(_SIZES)] * _MIB) for i in range(granules)]
        products = pipeline.seed(plan, faults={gid: _faults(i) for i, (gid, _) in enumerate(plan)})
        faulty = sum(1 for i in range(granules) if _faults(i))
        total_mb = sum(p.size for p in products) / 1e6
        _say(
            f"seeded {granules} granules ({total_mb:,.0f} MB, {faulty} with scripted hub faults; "
            "one is served corrupt every time and must end failed)"
        )
        # The settings and the SQS and S3 clients come from the pipeline, not from this
        # process's environment: the demo leaves the environment as it found it.
        env = pipeline.env(MAX_DOWNLOAD_RETRIES="2", LEASE_SECONDS="60")
        settings = Settings.from_env(env)
        sqs = services.sqs.client()
        s3 = pipeline.s3_client() if store == "s3" else None
        code = run_locally(settings, concurrency=15, until_empty=True, sqs=sqs, s3=s3)
        pool = open_pool(pipeline.database_url, max_size=1)
        try:
            report = PostgresGranuleStore(pool=pool).status_report()
        finally:
            pool.close()
        dead = sqs.get_queue_attributes(
            QueueUrl=pipeline.queues.dead_letter_url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]["ApproximateNumberOfMessages"]
        verified, where = _where(pipeline, files, store, [p.id for p in products])
    seconds = time.monotonic() - started
    if store == "s3":
        files.rmdir()  # made for the EFS store's sake; empty
    counts = ", ".join(f"{state.value} {n}" for state, n in report.counts.items() if n)
    _say("")
    _say(f"summary: {counts} (of {granules}); {dead} message(s) in the dead-letter queue")
    _say(f"         {total_mb:,.0f} MB offered, {verified} products verified in {seconds:,.1f} s all told")
    _say(f"         {where}")
    _say(f"         last_file_downloaded_time: {report.last_file_downloaded_time}")
    _say("everything the demo started has been stopped.")
    return code
