"""The start-up schema check in the commands and the Lambda: nothing received before it passes."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from s2_downloader.adapters.postgres import migrate
from s2_downloader.adapters.postgres.schema_check import SchemaOutdated
from s2_downloader.domain.errors import StoreError
from s2_downloader.entrypoints import lambda_handler
from s2_downloader.entrypoints.wiring import LAMBDA_STOP_MARGIN_SECONDS
from s2_downloader.testing.stack import Pipeline
from tests.integration.e2e import assert_verified
from tests.integration.fixtures_stack import log_events, metric_records, run_cli
from tests.integration.test_lambda_handler import FakeLambdaContext, _event

KIB = 1024


def _older_schema(pipeline: Pipeline) -> None:
    """The database as code newer than ``migrate`` would find it: one column missing."""
    with psycopg.connect(pipeline.database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE granule DROP COLUMN first_attempt_at")


def _queue_counts(pipeline: Pipeline) -> tuple[int, int]:
    """(visible, in flight) on the download queue: moto's counts are exact for a quiet queue."""
    attributes = pipeline.services.sqs.client().get_queue_attributes(
        QueueUrl=pipeline.queues.download_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


@pytest.mark.parametrize(
    "command",
    [("run", "--until-empty"), ("status",), ("failures",), ("requeue", "--all", "--dry-run")],
)
def test_a_command_on_an_older_schema_exits_2_naming_migrate(
    pipeline: Pipeline, command: tuple[str, ...]
) -> None:
    """GIVEN a column missing WHEN a command starts THEN exit 2, one line naming migrate, nothing received."""
    pipeline.seed([("SCHEMA1", 64 * KIB)])
    _older_schema(pipeline)

    result = run_cli(pipeline, *command, timeout=60)

    assert 2 == result.returncode, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if "s2-downloader migrate" in line]
    assert 1 == len(lines), result.stderr[-2000:]
    assert "granule.first_attempt_at" in lines[0]
    assert (1, 0) == _queue_counts(pipeline)
    message = pipeline.services.sqs.client().receive_message(
        QueueUrl=pipeline.queues.download_url, MessageSystemAttributeNames=["ApproximateReceiveCount"]
    )["Messages"][0]
    assert "1" == message["Attributes"]["ApproximateReceiveCount"]


@pytest.mark.usefixtures("lambda_env")
def test_the_lambda_on_an_older_schema_is_an_outage_that_spends_no_receive_count(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN a column missing THEN the invocation raises (Errors alarm), the message is re-sent and its
    original deleted, the line is logged once per environment and Outages counts Component=schema."""
    pipeline.seed([("SCHEMA2", 64 * KIB)], send=False)
    _older_schema(pipeline)
    client = pipeline.services.sqs.client()
    for _ in range(2):
        client.send_message(QueueUrl=pipeline.queues.download_url, MessageBody=pipeline.message("SCHEMA2"))
    events = [_event(pipeline, 1), _event(pipeline, 1)]

    for event in events:
        # Time for one try only: the retry is the next test's.
        context = FakeLambdaContext(deadline=time.monotonic() + LAMBDA_STOP_MARGIN_SECONDS + 0.5)
        with pytest.raises(SchemaOutdated):
            lambda_handler.handler(event, context)

    captured = capsys.readouterr()
    logged = [record for record in log_events(captured.err) if record.get("event") == "outage"]
    assert 1 == len(logged)
    assert ("error", "schema") == (logged[0]["level"], logged[0]["component"])
    assert "s2-downloader migrate" in logged[0]["message"]
    outages = metric_records(captured.out, "Outages")
    assert ["schema", "schema"] == [record["Component"] for record in outages]
    # Both originals deleted, both bodies back on the queue as new messages (delayed).
    assert ((0, 0), 2) == (_queue_counts(pipeline), _delayed(pipeline))
    assert "pending" == pipeline.rows()["SCHEMA2"]["state"]


@pytest.mark.usefixtures("lambda_env")
def test_the_lambda_waits_for_a_migrate_that_runs_during_its_cold_start(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN a column missing and ``migrate`` run 1.5 s into the invocation THEN the cold start tries
    the schema check again after its pause and the record is downloaded: no outage, no raise."""
    products = pipeline.seed([("SCHEMA3", 64 * KIB)])
    _older_schema(pipeline)
    event = _event(pipeline, 1)
    migrating = threading.Timer(1.5, migrate, args=(pipeline.database_url,))
    migrating.start()
    try:
        response = lambda_handler.handler(event, FakeLambdaContext())
    finally:
        migrating.join()

    assert {"batchItemFailures": []} == response
    assert_verified(pipeline, products)
    events = log_events(capsys.readouterr().err)
    # The precondition: the schema check failed at least once before migrate had run.
    retried = [record["component"] for record in events if record.get("event") == "cold_start_retry"]
    assert retried, events
    assert {"schema"} == set(retried)
    assert not [record for record in events if record.get("event") == "outage"]


def _delayed(pipeline: Pipeline) -> int:
    attributes = pipeline.services.sqs.client().get_queue_attributes(
        QueueUrl=pipeline.queues.download_url, AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessagesDelayed"])


@pytest.mark.usefixtures("lambda_env")
def test_a_database_down_at_cold_start_is_an_outage_that_spends_no_receive_count(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN the database unreachable when the container is built THEN, once the invocation's time
    for retries is spent, the record is re-sent with a delay, its original deleted, Outages counts
    Component=database, and the invocation raises."""
    pipeline.seed([("COLDDB", 64 * KIB)])
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:9/none?connect_timeout=1")
    event = _event(pipeline, 1)
    # Only just more than the stop margin: no time for a second try.
    context = FakeLambdaContext(deadline=time.monotonic() + LAMBDA_STOP_MARGIN_SECONDS + 1)

    with pytest.raises(StoreError):
        lambda_handler.handler(event, context)

    outages = metric_records(capsys.readouterr().out, "Outages")
    assert ["database"] == [record["Component"] for record in outages]
    assert ((0, 0), 1) == (_queue_counts(pipeline), _delayed(pipeline))
