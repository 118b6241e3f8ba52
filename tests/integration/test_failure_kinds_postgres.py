"""Every recorded failure kind through the use case on PostgreSQL: outcome, last_error, failures agree.

The unit test runs the whole table on the fakes; here the cases that write ``last_error``
run on the real granule table, so that ``failures`` groups them in SQL
(``adapters/granule_queries.py``) under the same kind as the outcome and the metric.
"""

from __future__ import annotations

from typing import Any

import pytest
from psycopg_pool import ConnectionPool

from s2_downloader.adapters.granule_queries import GranuleQueries
from s2_downloader.adapters.postgres import PostgresGranuleStore
from s2_downloader.entrypoints.dispatch import outcome_for
from s2_downloader.entrypoints.failures import failures_json
from s2_downloader.testing.postgres import SeedGranule, seed_granules
from tests.failure_kinds import (
    CASES,
    GRANULE,
    PRODUCT,
    KindCase,
    accept_any_url,
    emitted,
    message,
    stored_prefix,
)
from tests.integration.fixtures_postgres import empty_tables
from tests.unit.world import World

#: The cases that record their kind; the others leave the row as it was.
RECORDED = [case for case in CASES if case.recorded_as is not None]


def _seed(pool: ConnectionPool[Any], case: KindCase) -> None:
    assert not case.row, "a row only the fakes can hold"
    empty_tables(pool)
    seed_granules(pool, [SeedGranule(id=GRANULE, filename=f"{GRANULE}.zip")])
    with pool.connection() as conn:
        conn.execute(
            "UPDATE granule SET download_retries = %(retries)s, first_attempt_at ="
            " (now() AT TIME ZONE 'UTC') - make_interval(days => %(days)s) WHERE id = %(id)s",
            {"retries": case.retries, "days": case.first_attempt_days_ago, "id": GRANULE},
        )


@pytest.mark.parametrize("case", RECORDED, ids=[case.name for case in RECORDED])
def test_outcome_last_error_failures_and_metric_name_the_same_kind(
    postgres_pool: ConnectionPool[Any], case: KindCase
) -> None:
    """One message handled on PostgreSQL: failures (grouped in SQL) counts the outcome's kind."""
    _seed(postgres_pool, case)
    world = World()
    world.hub.add(GRANULE, PRODUCT)
    overrides = case.arrange(world, GRANULE)
    context = world.context(granules=PostgresGranuleStore(postgres_pool), **overrides)

    result = outcome_for(message(GRANULE), context, accept_any_url)

    report = GranuleQueries(postgres_pool).failures(limit=10)
    [row] = report.granules
    kinds = failures_json(report)["kinds"]
    assert isinstance(kinds, dict)
    assert (case.expected(), case.kind.value) == (
        {
            "outcome": (type(result), getattr(result, "kind", None)),
            "last_error": (stored_prefix(row.last_error), row.last_error == getattr(result, "reason", None)),
            "failures": kinds.get(case.kind.value),
            "metric": emitted(result),
        },
        row.kind,
    )
