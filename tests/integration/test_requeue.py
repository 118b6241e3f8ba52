"""requeue over PostgreSQL and moto's SQS: which granules, what is sent, what changes, dry runs."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from s2_downloader.adapters.granule_queries import GranuleQueries
from s2_downloader.adapters.postgres import open_pool
from s2_downloader.adapters.sqs import SqsQueue
from s2_downloader.entrypoints.requeue import RequeueReport, parse_filter, requeue
from s2_downloader.testing.postgres import SeedGranule, seed_granules
from s2_downloader.testing.stack import Pipeline
from tests.integration.e2e import assert_verified
from tests.integration.fixtures_stack import run_cli

DAY = dt.datetime(2024, 5, 1, 12, 0)
NEXT_DAY_START = dt.datetime(2024, 5, 2, 0, 0)
NEXT_DAY_END = dt.datetime(2024, 5, 2, 23, 59, 59)

# One day of granules in every situation, and two on the next day.
_SITUATIONS = """
UPDATE granule SET state = 'retrying', download_retries = 2, last_error = 'throttled: HTTP 429',
    first_attempt_at = '2024-05-01 13:00', download_started = '2024-05-01 14:00' WHERE id = 'R1';
UPDATE granule SET state = 'failed', download_failed = true, download_retries = 11,
    last_error = 'not_found: HTTP 404', first_attempt_at = '2024-05-01 13:00',
    download_started = '2024-05-01 15:00' WHERE id = 'F1';
UPDATE granule SET state = 'verified', downloaded = true, checksum = 'd41d8cd98f00b204e9800998ecf8427e'
    WHERE id = 'V1';
UPDATE granule SET state = 'claimed', in_progress = true, lease_owner = 'live-worker',
    lease_expires_at = now() + interval '1 hour', download_started = '2024-05-01 16:00' WHERE id = 'L1';
UPDATE granule SET state = 'downloading', in_progress = true, lease_owner = 'dead-worker',
    lease_expires_at = now() - interval '1 minute', download_started = '2024-05-01 16:00' WHERE id = 'E1';
"""


@pytest.fixture
def day(pipeline: Pipeline) -> Iterator[ConnectionPool[Any]]:
    """The pipeline's database with a day of granules in each state, and two the next day."""
    on = {"P1": DAY, "R1": DAY, "F1": DAY, "V1": DAY, "L1": DAY, "E1": DAY}
    on |= {"N1": NEXT_DAY_START, "N2": NEXT_DAY_END}
    seed_granules(
        pipeline.database_url,
        [
            SeedGranule(id=i, filename=f"{i}.zip", download_url=pipeline.download_url(i), ingestiondate=when)
            for i, when in on.items()
        ],
    )
    with open_pool(pipeline.database_url, max_size=2) as pool:
        with pool.connection() as conn:
            conn.execute(_SITUATIONS)
        yield pool


def _requeue(
    pipeline: Pipeline, pool: ConnectionPool[Any], *, dry_run: bool = False, **flags: Any
) -> RequeueReport:
    queue = SqsQueue(client=pipeline.services.sqs.client(), url=pipeline.queues.download_url)
    return requeue(
        GranuleQueries(pool),
        queue,
        parse_filter(**flags),
        queue_url=queue.url,
        dry_run=dry_run,
        sleep=lambda s: None,
    )


def _sent(pipeline: Pipeline) -> list[dict[str, str]]:
    return sorted(
        (json.loads(b) for b in pipeline.drain(pipeline.queues.download_url)), key=lambda m: m["id"]
    )


def _ids(report: RequeueReport) -> list[str]:
    return sorted(row.id for row in report.granules)


def _states(pipeline: Pipeline) -> dict[str, tuple[Any, ...]]:
    with pipeline_connection(pipeline) as conn:
        rows = conn.execute(
            "SELECT id, state, download_retries, download_failed, in_progress, first_attempt_at, last_error,"
            " lease_owner FROM granule"
        ).fetchall()
    return {row[0]: row[1:] for row in rows}


def pipeline_connection(pipeline: Pipeline) -> psycopg.Connection[Any]:
    """A plain connection to the pipeline's database."""
    return psycopg.connect(pipeline.database_url)


def test_default_states_of_one_day(pipeline: Pipeline, day: ConnectionPool[Any]) -> None:
    """The day's pending, retrying and expired claim are sent; not failed, verified, leased, other days."""
    before = _states(pipeline)
    report = _requeue(pipeline, day, ingested_on=["2024-05-01"])
    assert ["E1", "P1", "R1"] == _ids(report)
    assert [
        {"id": i, "filename": f"{i}.zip", "download_url": pipeline.download_url(i)}
        for i in ("E1", "P1", "R1")
    ] == _sent(pipeline)
    assert before == _states(pipeline)


def test_a_dry_run_changes_nothing_and_reports_the_same(pipeline: Pipeline, day: ConnectionPool[Any]) -> None:
    """--dry-run, also with --revive-failed, sends nothing, changes no row, and lists what it would send."""
    before = _states(pipeline)
    report = _requeue(pipeline, day, dry_run=True, ingested_on=["2024-05-01"], revive_failed=True)
    assert (["E1", "F1", "P1", "R1"], 1) == (_ids(report), report.revived)
    assert {"dry_run": True, "count": 4} == {k: report.as_json()[k] for k in ("dry_run", "count")}
    assert [] == _sent(pipeline)
    assert before == _states(pipeline)


def test_revive_failed_resets_the_budgets_and_keeps_the_error(
    pipeline: Pipeline, day: ConnectionPool[Any]
) -> None:
    """--state failed --revive-failed sends F1 only, after putting it back to pending with fresh budgets."""
    report = _requeue(pipeline, day, states=["failed"], revive_failed=True)
    assert (["F1"], 1) == (_ids(report), report.revived)
    assert ["F1"] == [m["id"] for m in _sent(pipeline)]
    assert ("pending", 0, False, False, None, "not_found: HTTP 404", None) == _states(pipeline)["F1"]


def test_a_revival_interrupted_before_its_send_is_finished_by_the_same_command(
    pipeline: Pipeline, day: ConnectionPool[Any]
) -> None:
    """Granules revived by a run that died before sending are found and sent by the same command run again."""
    GranuleQueries(day).revive_failed(["F1"])  # the crashed run got this far
    assert [] == _sent(pipeline)
    report = _requeue(pipeline, day, states=["failed"], revive_failed=True)
    assert (["F1"], 0) == (_ids(report), report.revived)
    assert ["F1"] == [m["id"] for m in _sent(pipeline)]
    # Sent once it is attempted, it is an ordinary granule again: not matched any more.
    with pipeline_connection(pipeline) as conn:
        conn.execute("UPDATE granule SET first_attempt_at = '2024-05-03' WHERE id = 'F1'")
    assert [] == _ids(_requeue(pipeline, day, dry_run=True, states=["failed"], revive_failed=True))


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"ingested_since": "2024-05-02"}, ["N1", "N2"]),
        ({"ingested_until": "2024-05-01"}, ["E1", "P1", "R1"]),
        ({"ingested_since": "2024-05-01", "ingested_until": "2024-05-02"}, ["E1", "N1", "N2", "P1", "R1"]),
        ({"ingested_on": ["2024-05-02", "2024-04-30"]}, ["N1", "N2"]),
        ({"ids": ["L1", "V1", "F1", "P1", "nope"]}, ["P1"]),
        ({"states": ["downloading", "claimed"]}, ["E1"]),
        ({"states": ["retrying"], "ingested_on": ["2024-05-01"]}, ["R1"]),
        ({"all_granules": True}, ["E1", "N1", "N2", "P1", "R1"]),
        ({"all_granules": True, "revive_failed": True}, ["E1", "F1", "N1", "N2", "P1", "R1"]),
        ({"ids": ["F1"], "revive_failed": True}, ["F1"]),
    ],
)
def test_each_filter_selects_what_it_says(
    pipeline: Pipeline, day: ConnectionPool[Any], flags: dict[str, Any], expected: list[str]
) -> None:
    """Day bounds are inclusive UTC days; live leases, verified and unrevived failed never match."""
    report = _requeue(pipeline, day, **flags)
    assert expected == _ids(report)
    assert expected == [m["id"] for m in _sent(pipeline)]
    states = _states(pipeline)
    assert ("claimed", "live-worker") == (states["L1"][0], states["L1"][6])
    assert "verified" == states["V1"][0]


def test_requeue_command_prints_hls_shaped_json(pipeline: Pipeline, day: ConnectionPool[Any]) -> None:
    """The installed command sends the day's messages and prints dry_run, count and granules."""
    del day
    result = run_cli(pipeline, "requeue", "--ingested-on", "2024-05-01", "--json")
    assert 0 == result.returncode, result.stderr
    document = json.loads(result.stdout)
    assert (False, 3) == (document["dry_run"], document["count"])
    assert ["E1", "P1", "R1"] == sorted(g["id"] for g in document["granules"])
    assert {"id", "filename", "download_url"} == set(document["granules"][0])
    assert 3 == len(_sent(pipeline))


def test_requeue_after_lost_messages_gets_them_downloaded(pipeline: Pipeline) -> None:
    """Granules whose messages were lost are requeued by ingestion day, and the runner then verifies them."""
    products = pipeline.seed([(f"LOST{i}", 40_000 + i) for i in range(3)], send=False)
    requeued = run_cli(pipeline, "requeue", "--ingested-on", "2026-01-01")
    assert 0 == requeued.returncode, requeued.stderr
    assert "sent 3 download message(s)" in requeued.stdout
    ran = run_cli(pipeline, "run", "--until-empty", "--metrics", timeout=120)
    assert 0 == ran.returncode, ran.stderr[-2000:]
    assert_verified(pipeline, products)
