"""Every failure kind through the use case on the fakes: outcome, last_error, failures and metric agree."""

from __future__ import annotations

import datetime as dt

import pytest

from s2_downloader.adapters.granule_queries import FailuresReport, count_kinds
from s2_downloader.domain import State
from s2_downloader.domain.errors import FailureKind
from s2_downloader.entrypoints.dispatch import outcome_for
from s2_downloader.entrypoints.failures import failures_json
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
from tests.unit.fakes import EPOCH
from tests.unit.world import World

#: The states ``failures`` lists (its SQL's WHERE).
_LISTED = (State.FAILED, State.RETRYING)


def test_every_failure_kind_has_a_case() -> None:
    """A kind added to FailureKind without a case here fails this test."""
    assert set(FailureKind) == {case.kind for case in CASES}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_outcome_last_error_failures_and_metric_name_the_same_kind(case: KindCase) -> None:
    """One message handled: the outcome, its last_error, failures and the metric name the case's kind."""
    world = World()
    first_attempt = (
        None
        if case.first_attempt_days_ago is None
        else EPOCH - dt.timedelta(days=case.first_attempt_days_ago)
    )
    world.add(GRANULE, PRODUCT, download_retries=case.retries, first_attempt_at=first_attempt, **case.row)
    before = world.store.granules[GRANULE].last_error
    overrides = case.arrange(world, GRANULE)

    result = outcome_for(case.body or message(GRANULE), world.context(**overrides), accept_any_url)

    after = world.store.granules[GRANULE]
    listed = [(g.state, g.last_error, 1) for g in world.store.granules.values() if g.state in _LISTED]
    kinds = failures_json(FailuresReport(granules=[], kinds=count_kinds(listed)))["kinds"]
    assert isinstance(kinds, dict)
    assert case.expected() == {
        "outcome": (type(result), getattr(result, "kind", None)),
        "last_error": "unchanged"
        if after.last_error == before
        else (stored_prefix(after.last_error), after.last_error == getattr(result, "reason", None)),
        "failures": kinds.get(case.kind.value),
        "metric": emitted(result),
    }


@pytest.mark.parametrize(
    ("last_error", "kind"),
    [
        (None, "none"),
        ("", "none"),
        ("partial_in_use: s3://bucket/G/G.zip: an upload is in progress", "partial_in_use"),
        ("throttled", "throttled"),
        # Written by earlier versions, in words: not read into a kind.
        ("checksum mismatch: expected a, got b", "other"),
        ("retry budget spent (11 failures)", "other"),
        ("/mnt/efs/G/.G.zip.partial is being written by another attempt", "other"),
        ("throttled:HTTP 429", "other"),
    ],
)
def test_the_stored_kind_is_the_prefix_when_it_is_a_kind_and_other_otherwise(
    last_error: str | None, kind: str
) -> None:
    """failures counts a last_error under the kind it starts with, and nothing is guessed from the words."""
    assert {kind: {State.RETRYING: 1}} == count_kinds([(State.RETRYING, last_error, 1)])
