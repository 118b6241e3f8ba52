"""HLS's requeuer event through AWS's runtime interface client, on PostgreSQL and moto's SQS.

The handler ``s2_downloader.entrypoints.requeue_handler.handler`` runs under awslambdaric
(``s2_downloader.testing.lambda_runtime``), invoked as HLS's ``invoke`` script invokes its
requeuer, over a day of granules in every situation ``requeue`` distinguishes.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import s2_downloader
from s2_downloader.testing.lambda_runtime import Function, RuntimeApi, start_function
from s2_downloader.testing.postgres import SeedGranule, seed_granules
from s2_downloader.testing.stack import Pipeline

HANDLER = "s2_downloader.entrypoints.requeue_handler.handler"
DAY = dt.datetime(2023, 6, 10, 12, 0)

# P1 pending, R1 retrying, F1 failed, V1 verified, L1 under a live lease, E1 under an
# expired one, all ingested on DAY; N1 pending the day after.
_SITUATIONS = """
UPDATE granule SET state = 'retrying', download_retries = 2, last_error = 'throttled: HTTP 429',
    first_attempt_at = '2023-06-10 13:00' WHERE id = 'R1';
UPDATE granule SET state = 'failed', download_failed = true, download_retries = 11,
    last_error = 'not_found: HTTP 404', first_attempt_at = '2023-06-10 13:00' WHERE id = 'F1';
UPDATE granule SET state = 'verified', downloaded = true, checksum = 'd41d8cd98f00b204e9800998ecf8427e'
    WHERE id = 'V1';
UPDATE granule SET state = 'claimed', in_progress = true, lease_owner = 'live-worker',
    lease_expires_at = now() + interval '1 hour' WHERE id = 'L1';
UPDATE granule SET state = 'downloading', in_progress = true, lease_owner = 'dead-worker',
    lease_expires_at = now() - interval '1 minute' WHERE id = 'E1';
"""


@pytest.fixture
def day(pipeline: Pipeline) -> Pipeline:
    """The pipeline's database with a day of granules in each situation, and one the next day."""
    ingested = dict.fromkeys(("P1", "R1", "F1", "V1", "L1", "E1"), DAY) | {"N1": DAY + dt.timedelta(days=1)}
    seed_granules(
        pipeline.database_url,
        [
            SeedGranule(id=i, filename=f"{i}.SAFE", download_url=pipeline.download_url(i), ingestiondate=when)
            for i, when in ingested.items()
        ],
    )
    with psycopg.connect(pipeline.database_url) as conn:
        conn.execute(_SITUATIONS)
    return pipeline


@pytest.fixture
def requeuer(day: Pipeline) -> Iterator[tuple[RuntimeApi, Function]]:
    """The requeuer under awslambdaric, configured as the templates configure it."""
    env = {
        **day.services.sqs.env(),
        "DATABASE_URL": day.database_url,
        "TO_DOWNLOAD_SQS_QUEUE_URL": day.queues.download_url,
        "STAGE": "test",
        # The code under test, whichever copy of the package the interpreter has installed.
        "PYTHONPATH": str(Path(s2_downloader.__file__).resolve().parents[1]),
    }
    with RuntimeApi() as api:
        function = start_function(api, HANDLER, env)
        yield api, function
        function.stop()


def _invoke(requeuer: tuple[RuntimeApi, Function], event: dict[str, Any]) -> Any:
    api, function = requeuer
    return api.invoke(event, timeout_seconds=900, wait_seconds=60, process=function.process)


def _sent(pipeline: Pipeline) -> list[dict[str, str]]:
    return sorted(
        (json.loads(b) for b in pipeline.drain(pipeline.queues.download_url)), key=lambda m: m["id"]
    )


def _message(pipeline: Pipeline, granule_id: str) -> dict[str, str]:
    return {
        "id": granule_id,
        "filename": f"{granule_id}.SAFE",
        "download_url": pipeline.download_url(granule_id),
    }


def _states(pipeline: Pipeline) -> dict[str, tuple[str, int]]:
    return {row_id: (row["state"], row["download_retries"]) for row_id, row in pipeline.rows().items()}


def _backends(pipeline: Pipeline) -> set[int]:
    """The server processes of the connections to the pipeline's database, other than this one."""
    with psycopg.connect(pipeline.database_url) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return {row[0] for row in rows}


def test_a_dry_run_answers_as_hls_and_sends_nothing(
    day: Pipeline, requeuer: tuple[RuntimeApi, Function]
) -> None:
    """Dry: HLS's five keys, the day's pending, retrying and expired-lease granules, no message, no change."""
    before = _states(day)

    result = _invoke(requeuer, {"date": "2023-06-10", "dry_run": True})

    assert "response" == result.outcome, result.body
    granules = sorted(result.body.pop("granules"), key=lambda g: g["id"])
    assert {
        "dry_run": True,
        "queue_url": day.queues.download_url,
        "ingestion_date": "2023-06-10",
        "count": 3,
    } == result.body
    assert [_message(day, i) for i in ("E1", "P1", "R1")] == granules
    assert [] == _sent(day)
    assert before == _states(day)


def test_requeue_sends_the_days_messages_and_never_a_verified_or_leased_one(
    day: Pipeline, requeuer: tuple[RuntimeApi, Function]
) -> None:
    """Sent: one message each for P1, R1 and E1; V1 (verified), L1 (live lease), F1 and N1 are left alone."""
    result = _invoke(requeuer, {"date": "2023-06-10", "dry_run": False})

    assert ("response", False, 3) == (result.outcome, result.body["dry_run"], result.body["count"])
    assert [_message(day, i) for i in ("E1", "P1", "R1")] == _sent(day)
    assert ("failed", 11) == _states(day)["F1"]


def test_revive_failed_takes_the_failed_granule_back_and_sends_it(
    day: Pipeline, requeuer: tuple[RuntimeApi, Function]
) -> None:
    """revive_failed: F1 becomes pending with no retries, and its message goes with the others."""
    result = _invoke(requeuer, {"date": "2023-06-10", "dry_run": False, "revive_failed": True})

    assert ("response", 4) == (result.outcome, result.body["count"])
    assert [_message(day, i) for i in ("E1", "F1", "P1", "R1")] == _sent(day)
    assert ("pending", 0) == _states(day)["F1"]


def test_a_bad_event_is_a_clear_function_error_and_the_next_invocation_works(
    day: Pipeline, requeuer: tuple[RuntimeApi, Function]
) -> None:
    """A bad event fails with InvalidEvent naming the problem; the same process then answers a good one."""
    bad = _invoke(requeuer, {"date": "2023-06-10", "dry_run": "no"})
    good = _invoke(requeuer, {"date": "2023-06-11", "dry_run": True})

    assert ("error", "InvalidEvent") == (bad.outcome, bad.body["errorType"])
    assert "expected true or false, got 'no' @ $.dry_run" in bad.body["errorMessage"]
    assert ("response", ["N1"]) == (good.outcome, [g["id"] for g in good.body["granules"]])
    assert requeuer[1].process.poll() is None


def test_clients_are_built_once_per_execution_environment(
    day: Pipeline, requeuer: tuple[RuntimeApi, Function]
) -> None:
    """Three invocations use one database connection, the one the first opened."""
    _invoke(requeuer, {"date": "2023-06-10", "dry_run": True})
    first = _backends(day)
    _invoke(requeuer, {"date": "2023-06-11", "dry_run": True})
    _invoke(requeuer, {"date": "2023-06-12", "dry_run": True})

    assert 1 == len(first)
    assert first == _backends(day)
