"""The Lambda's cold start meeting an outage: retried with back-off, then handed back and raised.

Real faults: PostgreSQL reached through a relay that only starts listening during the
invocation (down, then back), and an SSM endpoint where nothing listens.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from s2_downloader.adapters.ssm import SsmError
from s2_downloader.entrypoints import lambda_handler, wiring
from s2_downloader.entrypoints.config import ConfigError
from s2_downloader.entrypoints.wiring import LAMBDA_STOP_MARGIN_SECONDS
from s2_downloader.testing.stack import Pipeline
from tests.integration.e2e import assert_verified
from tests.integration.fixtures_stack import log_events, metric_records
from tests.integration.test_lambda_handler import FakeLambdaContext, _event
from tests.integration.test_schema_check_wired import _delayed, _queue_counts
from tests.tcp_relay import LateRelay

KIB = 1024


def _through(database_url: str, port: int) -> str:
    """``database_url`` with its port replaced."""
    parts = urlsplit(database_url)
    return urlunsplit(parts._replace(netloc=f"{parts.netloc.rsplit(':', 1)[0]}:{port}"))


def _logged(stderr: str, event: str) -> list[dict[str, Any]]:
    return [record for record in log_events(stderr) if record.get("event") == event]


@pytest.mark.usefixtures("lambda_env")
def test_a_database_that_comes_back_during_the_cold_start_costs_only_the_wait(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN PostgreSQL unreachable for longer than the pool waits for a connection, then back THEN the
    cold start tries again after its pause, builds the container and downloads the record: no outage,
    no raise."""
    products = pipeline.seed([("COLDBACK", 64 * KIB)])
    target = urlsplit(pipeline.database_url).port
    assert target is not None
    relay = LateRelay(target_port=target)
    monkeypatch.setenv("DATABASE_URL", _through(pipeline.database_url, relay.port))
    # The pool waits 1 s for a connection (10 s in production), so the first try fails.
    monkeypatch.setattr(wiring, "DB_POOL_TIMEOUT_SECONDS", 1.0)
    event = _event(pipeline, 1)
    relay.open_after(2.5)
    try:
        response = lambda_handler.handler(event, FakeLambdaContext())
    finally:
        relay.close()

    assert {"batchItemFailures": []} == response
    assert_verified(pipeline, products)
    captured = capsys.readouterr()
    retries = _logged(captured.err, "cold_start_retry")
    assert retries, captured.err[-2000:]
    assert {"database"} == {record["component"] for record in retries}
    assert [] == _logged(captured.err, "outage")
    assert '"Outages"' not in captured.out


@pytest.mark.usefixtures("lambda_env")
def test_ssm_unreachable_at_cold_start_is_a_token_outage_that_spends_no_receive_count(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN HLS's settings (STAGE, no credentials: the token comes from the rotator's SSM parameter) and
    SSM unreachable THEN the invocation raises ``SsmError``, Outages counts Component=token, and the
    record is re-sent with a delay, its original deleted: not a configuration error, no receive spent."""
    pipeline.seed([("COLDSSM", 64 * KIB)])
    for name in ("SCIHUB_USERNAME", "SCIHUB_PASSWORD"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("HUB_API", "cdse")
    monkeypatch.setenv("STAGE", "soak")
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", "http://127.0.0.1:9")
    event = _event(pipeline, 1)
    # No time for a second try: the hand-back is what is checked here.
    context = FakeLambdaContext(deadline=time.monotonic() + LAMBDA_STOP_MARGIN_SECONDS + 1)

    with pytest.raises(SsmError):
        lambda_handler.handler(event, context)

    captured = capsys.readouterr()
    outages = metric_records(captured.out, "Outages")
    assert ["token"] == [record["Component"] for record in outages]
    logged = _logged(captured.err, "outage")
    assert [("error", "token")] == [(record["level"], record["component"]) for record in logged]
    assert ((0, 0), 1) == (_queue_counts(pipeline), _delayed(pipeline))
    assert "pending" == pipeline.rows()["COLDSSM"]["state"]


@pytest.mark.usefixtures("lambda_env")
def test_a_missing_bucket_at_cold_start_is_a_store_outage_that_spends_no_receive_count(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN UPLOAD_BUCKET naming a bucket that does not exist THEN the Lambda (unlike the runner, which
    exits 2 naming it) treats it as an outage of the store: it raises, Outages counts Component=store,
    and the record is re-sent with a delay, its original deleted."""
    pipeline.seed([("COLDBUCKET", 64 * KIB)])
    monkeypatch.delenv("EFS_MOUNT_DIR")
    monkeypatch.setenv("STORE", "s3")
    monkeypatch.setenv("UPLOAD_BUCKET", "s2dl-no-such-bucket")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", pipeline.services.s3.endpoint_url)
    event = _event(pipeline, 1)
    context = FakeLambdaContext(deadline=time.monotonic() + LAMBDA_STOP_MARGIN_SECONDS + 1)

    with pytest.raises(ConfigError, match="UPLOAD_BUCKET"):
        lambda_handler.handler(event, context)

    outages = metric_records(capsys.readouterr().out, "Outages")
    assert ["store"] == [record["Component"] for record in outages]
    assert ((0, 0), 1) == (_queue_counts(pipeline), _delayed(pipeline))
