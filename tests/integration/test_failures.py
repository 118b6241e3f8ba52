"""failures over PostgreSQL: failed and retrying granules, newest attempt first, counts per kind."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from typing import Any

from psycopg_pool import ConnectionPool

from s2_downloader.adapters.granule_queries import GranuleQueries
from s2_downloader.domain.granule import State
from s2_downloader.entrypoints.failures import failures_json, failures_text
from s2_downloader.testing.postgres import SeedGranule, seed_granules
from tests.integration.fixtures_postgres import empty_tables
from tests.integration.fixtures_stack import CLI

# id, state, download_failed, downloaded, retries, last_error, last attempt (hour of 2024-05-01)
_ROWS = [
    ("F-404", "failed", True, False, 11, "not_found: HTTP 404 from hub", 9),
    ("F-MD5", "failed", True, False, 11, "checksum_mismatch: expected a, got b", 11),
    ("F-BUDGET", "failed", True, False, 11, "retry_budget_spent: 11 counted failures", 8),
    # Worded by an earlier version: no kind before its first ": ", so it is not guessed.
    ("F-OLD", "failed", True, False, 11, "checksum mismatch: expected a, got b", None),
    ("R-429", "retrying", False, False, 0, "throttled: HTTP 429 from hub", 12),
    ("R-CUT", "retrying", False, False, 3, "transfer_interrupted: body ended at byte 5 of 9", 10),
    ("R-OLD", "retrying", False, False, 1, "throttled: HTTP 503 from hub", None),
    # Another HLS writer set the flag; the state was not moved yet: it counts as failed.
    ("LEGACY", "pending", True, False, 10, None, 7),
    ("OK", "verified", False, True, 0, None, 13),
    ("WAIT", "pending", False, False, 0, None, None),
]


def _seed(pool: ConnectionPool[Any]) -> None:
    empty_tables(pool)
    seed_granules(pool, [SeedGranule(id=row[0], filename=f"{row[0]}.zip") for row in _ROWS])
    with pool.connection() as conn:
        for granule_id, state, failed, downloaded, retries, error, hour in _ROWS:
            started = None if hour is None else dt.datetime(2024, 5, 1, hour)
            conn.execute(
                "UPDATE granule SET state = %s, download_failed = %s, downloaded = %s, download_retries = %s,"
                " last_error = %s, download_started = %s, first_attempt_at = %s WHERE id = %s",
                (state, failed, downloaded, retries, error, started, dt.datetime(2024, 5, 1, 6), granule_id),
            )


def test_newest_attempt_first_with_counts_per_kind(postgres_pool: ConnectionPool[Any]) -> None:
    """Failed and retrying granules come newest attempt first, and every one is counted under its kind."""
    _seed(postgres_pool)
    report = GranuleQueries(postgres_pool).failures(limit=4)
    assert ["R-429", "F-MD5", "R-CUT", "F-404"] == [row.id for row in report.granules]
    assert {State.FAILED: 5, State.RETRYING: 3} == report.totals
    document = failures_json(report)
    assert {
        "throttled": {"failed": 0, "retrying": 2},
        "checksum_mismatch": {"failed": 1, "retrying": 0},
        "not_found": {"failed": 1, "retrying": 0},
        "retry_budget_spent": {"failed": 1, "retrying": 0},
        "transfer_interrupted": {"failed": 0, "retrying": 1},
        "none": {"failed": 1, "retrying": 0},
        "other": {"failed": 1, "retrying": 0},
    } == document["kinds"]
    first = document["granules"][0]  # type: ignore[index]
    assert {
        "id": "R-429",
        "state": "retrying",
        "kind": "throttled",
        "last_error": "throttled: HTTP 429 from hub",
        "retries": 0,
        "first_attempt_at": "2024-05-01T06:00:00+00:00",
        "last_attempt_at": "2024-05-01T12:00:00+00:00",
    } == first
    text = failures_text(report)
    assert text.startswith("failed 5, retrying 3")
    assert "not_found: HTTP 404 from hub" in text


def test_failures_command_prints_one_json_object(
    postgres_pool: ConnectionPool[Any], postgres_url: str
) -> None:
    """The installed command reads DATABASE_URL and prints the report as one JSON object."""
    _seed(postgres_pool)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "DATABASE_URL"))}
    result = subprocess.run(
        [CLI, "failures", "--json", "--limit", "2"],
        env={**env, "DATABASE_URL": postgres_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 0 == result.returncode, result.stderr
    document = json.loads(result.stdout)
    assert (["R-429", "F-MD5"], {"failed": 5, "retrying": 3}) == (
        [g["id"] for g in document["granules"]],
        document["totals"],
    )
