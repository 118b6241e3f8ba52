"""End to end with ``STORE=s3``: the installed CLI and the Lambda handler over PostgreSQL, moto and the hub.

moto's server is the bucket (and the queues). The runner's parts are S3's own size
(16 MiB, no setting lowers it), so the products that must cross a part boundary are
larger than 16 MiB, and the one killed mid-upload is slowed down by the hub.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
from collections.abc import Iterator

import pytest

from s2_downloader.entrypoints import lambda_handler
from s2_downloader.entrypoints.config import Settings
from s2_downloader.entrypoints.wiring import build
from s2_downloader.testing.hubsim import Fault, RecordedRequest
from s2_downloader.testing.postgres import SeedGranule, seed_granules
from s2_downloader.testing.stack import Pipeline
from tests.integration.e2e import assert_in_bucket, rows, upload_bodies
from tests.integration.fixtures_stack import log_events, run_cli, start_runner
from tests.integration.test_lambda_handler import FakeLambdaContext, _acknowledge, _event
from tests.integration.test_schema_check_wired import _queue_counts
from tests.waiting import wait_until

KIB = 1024
MIB = 1024 * KIB
#: The S3 store's part size (adapters/store/s3/store.py DEFAULT_PART_SIZE).
PART = 16 * MIB


def _run_until_empty(
    pipeline: Pipeline, *args: str, timeout: float = 180, **env: str
) -> subprocess.CompletedProcess[str]:
    result = run_cli(pipeline, "run", "--until-empty", *args, timeout=timeout, **env)
    assert 0 == result.returncode, result.stderr[-3000:]
    return result


def _transfers(pipeline: Pipeline, product_id: str) -> list[RecordedRequest]:
    """The product's download requests answered with a body, oldest first."""
    return [r for r in pipeline.hub.requests_to("dhus_value", product_id) if r.status in {200, 206}]


def _range_start(request: RecordedRequest) -> int:
    """The first byte a request asked for (0 without a Range)."""
    if request.range is None:
        return 0
    match = re.fullmatch(r"bytes=(\d+)-\d*", request.range)
    assert match is not None, request.range
    return int(match.group(1))


@contextlib.contextmanager
def _background(runner: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """The runner, killed on the way out if a failed assertion left it running."""
    try:
        yield runner
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.communicate(timeout=10)


def test_runner_puts_verified_products_at_their_keys(s3_pipeline: Pipeline) -> None:
    """A small and a multipart product become objects at {stem}.zip with their MD5; no upload message."""
    products = s3_pipeline.seed([("S3SMALL", 300 * KIB), ("S3MULTI", PART + 3 * MIB)])
    result = _run_until_empty(s3_pipeline, "--concurrency", "2")
    assert_in_bucket(s3_pipeline, products)
    assert ["S3MULTI.zip", "S3SMALL.zip"] == s3_pipeline.object_keys()
    multi = s3_pipeline.stored_object("S3MULTI.zip")
    assert multi is not None
    assert multi.etag.endswith("-2")  # two parts: 16 MiB and the 3 MiB tail
    assert [] == upload_bodies(s3_pipeline)
    assert all(1 == len(_transfers(s3_pipeline, p.id)) for p in products)
    verified = [e for e in log_events(result.stderr) if e.get("event") == "download_verified"]
    assert 2 == len(verified)
    status = run_cli(s3_pipeline, "status")
    assert 0 == status.returncode, status.stderr
    assert "open multipart uploads older than a day: 0" in status.stdout


def test_kill_nine_mid_upload_then_resume_from_a_part_boundary(s3_pipeline: Pipeline) -> None:
    """A runner SIGKILLed after a part resumes at a part boundary; the object is exactly the hub's bytes."""
    # 40 MiB at 4 MiB/s: the first part is recorded after ~4 s, the last long after.
    s3_pipeline.hub.rate_limit = 4 * MIB
    (product,) = s3_pipeline.seed([("S3KILLED", 2 * PART + 8 * MIB)])

    def parts_recorded() -> int:
        record = s3_pipeline.store_upload("S3KILLED")
        return 0 if record is None else len(record["parts"])

    with _background(start_runner(s3_pipeline, LEASE_SECONDS="3")) as runner:
        assert wait_until(lambda: parts_recorded() >= 1, timeout=60, interval=0.1), (
            "no part was recorded within 60 s: the kill would not land mid-upload"
        )
        runner.send_signal(signal.SIGKILL)
        runner.communicate(timeout=10)
    recorded = parts_recorded()
    assert 1 <= recorded < 3
    assert [] == s3_pipeline.object_keys()
    assert 1 == len(s3_pipeline.open_uploads())
    s3_pipeline.hub.rate_limit = None
    result = _run_until_empty(s3_pipeline, LEASE_SECONDS="3")
    assert_in_bucket(s3_pipeline, [product])
    first, *_, resumed = _transfers(s3_pipeline, "S3KILLED")
    start = _range_start(resumed)
    assert (0, 0) == (_range_start(first), start % PART)
    assert recorded * PART <= start < product.size
    verified = [e for e in log_events(result.stderr) if e.get("event") == "download_verified"]
    assert [start] == [e["resumed_from"] for e in verified]


def test_checksum_mismatch_leaves_no_object_and_no_upload(s3_pipeline: Pipeline) -> None:
    """Corrupt bytes every time: the granule fails, no object at its key, every multipart upload aborted."""
    s3_pipeline.seed([("S3CORRUPT", PART + 2 * MIB)], faults={"S3CORRUPT": [Fault.corrupt()] * 2})
    _run_until_empty(s3_pipeline, MAX_DOWNLOAD_RETRIES="1")
    row = rows(s3_pipeline)["S3CORRUPT"]
    assert ("failed", 2) == (row["state"], row["download_retries"])
    assert 2 == len(_transfers(s3_pipeline, "S3CORRUPT"))
    assert [] == s3_pipeline.object_keys()
    assert [] == s3_pipeline.open_uploads()
    assert s3_pipeline.store_upload("S3CORRUPT") is None


def test_the_same_message_three_times_uploads_once(s3_pipeline: Pipeline) -> None:
    """Three copies of one message give one download and one object."""
    s3_pipeline.hub.rate_limit = 8 * MIB
    (product,) = s3_pipeline.seed([("S3DUP", PART + MIB)])
    client = s3_pipeline.services.sqs.client()
    for _ in range(2):
        client.send_message(
            QueueUrl=s3_pipeline.queues.download_url, MessageBody=s3_pipeline.message("S3DUP")
        )
    _run_until_empty(s3_pipeline, "--concurrency", "3", LEASE_SECONDS="3")
    assert_in_bucket(s3_pipeline, [product])
    assert 1 == len(_transfers(s3_pipeline, "S3DUP"))
    assert ["S3DUP.zip"] == s3_pipeline.object_keys()


def test_a_checksum_wrong_three_times_then_right(s3_pipeline: Pipeline) -> None:
    """A hub publishing a wrong MD5 three times costs three counted retries, then the product verifies."""
    (product,) = s3_pipeline.seed(
        [("S3WRONG3", PART + MIB)], faults={"S3WRONG3": [Fault.wrong_checksum()] * 3}
    )
    _run_until_empty(s3_pipeline, MAX_DOWNLOAD_RETRIES="3")
    assert_in_bucket(s3_pipeline, [product])
    assert 3 == rows(s3_pipeline)["S3WRONG3"]["download_retries"]
    assert 4 == len(s3_pipeline.hub.requests_to("dhus_checksum", "S3WRONG3"))


def test_the_runner_exits_2_naming_upload_bucket_when_the_bucket_does_not_exist(
    s3_pipeline: Pipeline,
) -> None:
    """GIVEN UPLOAD_BUCKET naming no bucket THEN run exits 2 with one line naming it, nothing received."""
    s3_pipeline.seed([("S3NOBUCKET", 64 * KIB)])

    result = run_cli(s3_pipeline, "run", "--until-empty", timeout=60, UPLOAD_BUCKET="s2dl-no-such-bucket")

    assert 2 == result.returncode, result.stderr[-2000:]
    named = [line for line in result.stderr.splitlines() if "UPLOAD_BUCKET:" in line]
    assert 1 == len(named), result.stderr[-2000:]
    assert "pending" == rows(s3_pipeline)["S3NOBUCKET"]["state"]
    # Nothing received: the message is still visible, none in flight.
    assert (1, 0) == _queue_counts(s3_pipeline)


@pytest.fixture
def lambda_env(s3_pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The S3 pipeline's environment in this process, as the Lambda's configuration; no container cached."""
    for key, value in s3_pipeline.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("EFS_MOUNT_DIR", raising=False)
    monkeypatch.delenv("TO_UPLOAD_SQS_QUEUE_URL", raising=False)
    lambda_handler._container.cache_clear()
    yield
    lambda_handler._container.cache_clear()


@pytest.mark.usefixtures("lambda_env")
def test_lambda_handler_puts_products_in_the_bucket_once(s3_pipeline: Pipeline) -> None:
    """The handler, cold, puts a small and a multipart product in the bucket; a duplicate costs nothing."""
    products = s3_pipeline.seed([("S3LSMALL", 200 * KIB), ("S3LMULTI", PART + 2 * MIB)])
    client = s3_pipeline.services.sqs.client()
    client.send_message(QueueUrl=s3_pipeline.queues.download_url, MessageBody=s3_pipeline.message("S3LSMALL"))
    event = _event(s3_pipeline, 3)
    try:
        response = _acknowledge(s3_pipeline, event, lambda_handler.handler(event, FakeLambdaContext()))
    finally:
        with contextlib.suppress(Exception):
            lambda_handler._container(lambda_handler._settings(event)).close()
    assert {"batchItemFailures": []} == response
    assert_in_bucket(s3_pipeline, products)
    assert (1, 1) == (len(_transfers(s3_pipeline, "S3LSMALL")), len(_transfers(s3_pipeline, "S3LMULTI")))
    assert [] == upload_bodies(s3_pipeline)


@pytest.mark.usefixtures("lambda_env")
def test_lambda_checksum_mismatch_reports_the_record_and_aborts(s3_pipeline: Pipeline) -> None:
    """In the Lambda, corrupt bytes with no retries left: the record is reported, no object, no upload."""
    s3_pipeline.seed([("S3LBAD", PART + MIB)], faults={"S3LBAD": [Fault.corrupt()]})
    container = build(
        Settings.from_env({**s3_pipeline.env(), "MAX_DOWNLOAD_RETRIES": "0"}), concurrency=1, long_poll=False
    )
    try:
        event = _event(s3_pipeline, 1)
        response = lambda_handler.process_batch(
            event,
            FakeLambdaContext(),
            attempt_context=container.context,
            requeue=container.download_queue,
            check_url=container.check_download_url,
        )
        _acknowledge(s3_pipeline, event, response)
    finally:
        container.close()
    assert {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in event["Records"]]} == response
    assert "failed" == rows(s3_pipeline)["S3LBAD"]["state"]
    assert ([], []) == (s3_pipeline.object_keys(), s3_pipeline.open_uploads())


def test_two_granules_of_one_key_one_verifies_the_other_fails_with_key_conflict(
    s3_pipeline: Pipeline,
) -> None:
    """Ids S3KEYA and S3KEYB, both ``X.SAFE``, so both ``X.zip``: the first verifies, the second fails.

    The second's ``last_error`` names the key and the first; the first's object is untouched,
    and its ``granule-id`` metadata says whose it is; nothing is left uploading.
    """
    products = [s3_pipeline.hub.add_product(product_id, 300 * KIB) for product_id in ("S3KEYA", "S3KEYB")]
    seed_granules(
        s3_pipeline.database_url,
        [
            SeedGranule(id=p.id, filename="X.SAFE", download_url=s3_pipeline.download_url(p.id), size=p.size)
            for p in products
        ],
    )
    client = s3_pipeline.services.sqs.client()
    for product in products:
        body = {"id": product.id, "filename": "X.SAFE", "download_url": s3_pipeline.download_url(product.id)}
        client.send_message(QueueUrl=s3_pipeline.queues.download_url, MessageBody=json.dumps(body))

    _run_until_empty(s3_pipeline, "--concurrency", "1")

    table = rows(s3_pipeline)
    [winner] = [p for p in products if table[p.id]["state"] == "verified"]
    [loser] = [p for p in products if p is not winner]
    assert ("failed", 0, f"key_conflict: X.zip holds {winner.id}") == (
        table[loser.id]["state"],
        table[loser.id]["download_retries"],
        table[loser.id]["last_error"],
    )
    stored = s3_pipeline.stored_object("X.zip")
    assert stored is not None
    assert (winner.md5, winner.id, winner.md5) == (
        stored.md5,
        stored.metadata["granule-id"],
        stored.metadata["md5"],
    )
    assert [] == s3_pipeline.open_uploads()
