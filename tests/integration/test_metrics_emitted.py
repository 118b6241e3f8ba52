"""Metrics end to end: the runner with --metrics and the Lambda write valid EMF records, one per event."""

from __future__ import annotations

import io
import json
from typing import Any

import jsonschema

from s2_downloader.adapters.metrics import NAMESPACE, EmfMetrics
from s2_downloader.entrypoints import lambda_handler
from s2_downloader.entrypoints.config import Settings
from s2_downloader.entrypoints.wiring import build
from s2_downloader.testing.hubsim import Fault
from s2_downloader.testing.stack import Pipeline
from tests.integration.fixtures_stack import run_cli
from tests.integration.test_lambda_handler import FakeLambdaContext
from tests.unit.test_metrics import EMF_SCHEMA


def _emf(text: str) -> list[dict[str, Any]]:
    """The EMF records among ``text``'s lines, each validated against the EMF schema."""
    records = [json.loads(line) for line in text.splitlines() if line.startswith('{"_aws"')]
    for record in records:
        jsonschema.validate(record, EMF_SCHEMA)
        assert NAMESPACE == record["_aws"]["CloudWatchMetrics"][0]["Namespace"]
    return records


def _total(records: list[dict[str, Any]], metric: str) -> float:
    return sum(float(record.get(metric, 0)) for record in records)


def test_the_runner_with_metrics_reports_each_download_and_retry_once(pipeline: Pipeline) -> None:
    """Two verified products (one after a counted reset) and a bad message give exactly those counts."""
    products = pipeline.seed([("MET1", 50_000), ("MET2", 60_000)], faults={"MET2": [Fault.reset_after(1000)]})
    pipeline.services.sqs.client().send_message(QueueUrl=pipeline.queues.download_url, MessageBody="{broken")

    ran = run_cli(pipeline, "run", "--until-empty", "--metrics", timeout=120)

    assert 0 == ran.returncode, ran.stderr[-2000:]
    records = _emf(ran.stdout)
    assert 2 == _total(records, "DownloadsVerified")
    # The verifying attempts' bytes: MET2's resumed after the 1000 bytes its first attempt kept.
    assert sum(p.size for p in products) - 1000 == _total(records, "BytesDownloaded")
    assert 1 == _total(records, "RetriesCounted")
    assert 1 == _total(records, "BadMessages")
    assert {"dhus"} == {record["Hub"] for record in records}


def test_without_the_flag_the_runner_writes_no_metrics(pipeline: Pipeline) -> None:
    """Plain `run` keeps stdout free of EMF records."""
    pipeline.seed([("NOMET", 30_000)])

    ran = run_cli(pipeline, "run", "--until-empty", timeout=120)

    assert 0 == ran.returncode, ran.stderr[-2000:]
    assert [] == _emf(ran.stdout)


def test_the_lambda_reports_a_verified_download(pipeline: Pipeline) -> None:
    """process_batch with EMF metrics writes one DownloadsVerified record for the verified record."""
    pipeline.seed([("LMET", 40_000)], send=False)
    stream = io.StringIO()
    container = build(Settings.from_env(pipeline.env()), concurrency=1, sqs=pipeline.services.sqs.client())
    try:
        record = {
            "messageId": "m-1",
            "receiptHandle": "r-1",
            "body": pipeline.message("LMET"),
            "attributes": {"ApproximateReceiveCount": "1"},
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:download",
        }
        response = lambda_handler.process_batch(
            {"Records": [record]},
            FakeLambdaContext(),
            attempt_context=container.context,
            requeue=container.download_queue,
            check_url=container.check_download_url,
            metrics=EmfMetrics(stream, hub="dhus"),
        )
    finally:
        container.close()
    assert {"batchItemFailures": []} == response
    records = _emf(stream.getvalue())
    assert (1, 40_000) == (_total(records, "DownloadsVerified"), _total(records, "BytesDownloaded"))
