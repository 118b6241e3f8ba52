"""HLS's requeuer as a Lambda, driven through AWS's runtime interface client (awslambdaric)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

import psycopg
import pytest

from s2_downloader.testing.lambda_runtime import Function, RuntimeApi, start_function
from s2_downloader.testing.postgres import SeedGranule, seed_granules
from s2_downloader.testing.stack import Pipeline

HANDLER = "s2_downloader.entrypoints.requeue_handler.handler"
DAY = dt.datetime(2026, 11, 30, 12, 0)


@pytest.fixture
def runtime_api() -> Iterator[RuntimeApi]:
    """A Runtime API for one function process."""
    with RuntimeApi() as api:
        yield api


@pytest.fixture
def requeuer(pipeline: Pipeline, runtime_api: RuntimeApi) -> Iterator[Function]:
    """The requeuer handler under awslambdaric, with the pipeline's settings."""
    started = start_function(runtime_api, HANDLER, pipeline.env())
    yield started
    started.stop()


def _seed(pipeline: Pipeline) -> None:
    """Granules of the day in every state that matters, and one of the day after."""
    seed_granules(
        pipeline.database_url,
        [
            SeedGranule(
                id=f"RQ{name}",
                filename=f"RQ{name}.zip",
                download_url=f"https://hub/RQ{name}",
                ingestiondate=when,
            )
            for name, when in (
                ("PENDING", DAY),
                ("VERIFIED", DAY),
                ("LEASED", DAY),
                ("FAILED", DAY),
                ("TOMORROW", DAY + dt.timedelta(days=1)),
            )
        ],
    )
    with psycopg.connect(pipeline.database_url, autocommit=True) as conn:
        conn.execute("UPDATE granule SET state = 'verified', downloaded = true WHERE id = 'RQVERIFIED'")
        conn.execute(
            "UPDATE granule SET state = 'claimed', in_progress = true, lease_owner = 'w',"
            " lease_expires_at = now() + interval '1 hour' WHERE id = 'RQLEASED'"
        )
        conn.execute(
            "UPDATE granule SET state = 'failed', download_failed = true, download_retries = 11,"
            " last_error = 'not_found: gone' WHERE id = 'RQFAILED'"
        )


def test_the_requeuer_answers_as_hls_and_sends_only_what_requeue_would(
    pipeline: Pipeline, runtime_api: RuntimeApi, requeuer: Function
) -> None:
    """Dry run: HLS's answer, nothing sent. Real run: the day's pending granule sent; verified, leased,
    failed and the next day's left alone. With revive_failed: the failed one revived and sent."""
    _seed(pipeline)

    dry = runtime_api.invoke({"date": "2026-11-30", "dry_run": True}, process=requeuer.process)
    sent_dry = pipeline.drain(pipeline.queues.download_url)
    real = runtime_api.invoke({"date": "2026-11-30", "dry_run": False}, process=requeuer.process)
    sent = pipeline.drain(pipeline.queues.download_url)
    revived = runtime_api.invoke(
        {"date": "2026-11-30", "dry_run": False, "revive_failed": True}, process=requeuer.process
    )
    sent_revived = pipeline.drain(pipeline.queues.download_url)

    expected = {
        "dry_run": True,
        "queue_url": pipeline.queues.download_url,
        "ingestion_date": "2026-11-30",
        "count": 1,
        "granules": [
            {"id": "RQPENDING", "filename": "RQPENDING.zip", "download_url": "https://hub/RQPENDING"}
        ],
    }
    assert ("response", expected, []) == (dry.outcome, dry.body, sent_dry)
    assert ("response", {**expected, "dry_run": False}) == (real.outcome, real.body)
    assert [{"id": "RQPENDING", "filename": "RQPENDING.zip", "download_url": "https://hub/RQPENDING"}] == [
        json.loads(body) for body in sent
    ]
    assert ("response", 2) == (revived.outcome, revived.body["count"])
    assert {"RQPENDING", "RQFAILED"} == {json.loads(body)["id"] for body in sent_revived}
    assert "pending" == pipeline.rows()["RQFAILED"]["state"]


def test_a_bad_event_is_an_error_that_sends_nothing(
    pipeline: Pipeline, runtime_api: RuntimeApi, requeuer: Function
) -> None:
    """An event without a date fails the invocation with BadRequeueEvent; the queue stays empty."""
    _seed(pipeline)
    result = runtime_api.invoke({"dry_run": False}, process=requeuer.process)
    assert ("error", "BadRequeueEvent") == (result.outcome, result.body["errorType"])
    assert [] == pipeline.drain(pipeline.queues.download_url)
