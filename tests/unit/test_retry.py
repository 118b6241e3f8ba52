"""The retry policy: budget, exponential back-off with jitter, what counts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s2_downloader.domain.errors import FailureKind
from s2_downloader.domain.retry import MAX_DELAY_SECONDS, RetryPolicy


def _policy(jitter: float = 0.0, base: float = 60.0) -> RetryPolicy:
    return RetryPolicy(max_retries=10, base_delay=base, random=lambda: jitter)


@pytest.mark.parametrize(("retries", "delay"), [(1, 60), (2, 120), (3, 240), (4, 480), (5, 900), (30, 900)])
def test_backoff_doubles_from_the_base_and_is_capped(retries: int, delay: int) -> None:
    """Without jitter the delay is base x 2^(n-1), at most 900 s."""
    assert delay == _policy().backoff(retries)


@given(st.integers(min_value=0, max_value=100), st.floats(min_value=0, max_value=1))
def test_jitter_only_shortens_the_delay_by_at_most_a_fifth(retries: int, rand: float) -> None:
    """Jitter keeps the delay within [0.8, 1] of the un-jittered one and never above the cap."""
    plain = _policy().backoff(retries)
    jittered = _policy(jitter=rand).backoff(retries)
    assert 0.8 * plain - 1 <= jittered <= plain <= MAX_DELAY_SECONDS
    assert jittered >= 1


def test_budget_allows_max_retries_and_one_more_fails() -> None:
    """MAX_DOWNLOAD_RETRIES failures are allowed; one more exhausts the budget."""
    policy = _policy()
    assert (False, True) == (policy.exhausted(10), policy.exhausted(11))


def test_which_failures_count() -> None:
    """Mismatch, broken transfers, 404, unexpected answers and a granule's store error count; throttling,
    202, 5xx, 401 and a key conflict (which fails at once) do not."""
    counted = {kind for kind in FailureKind if _policy().counts(kind)}
    expected = {
        FailureKind.CHECKSUM_MISMATCH,
        FailureKind.TRANSFER_INTERRUPTED,
        FailureKind.NOT_FOUND,
        FailureKind.BAD_RESPONSE,
        FailureKind.STORE,
        FailureKind.NO_PROGRESS,
    }
    assert expected == counted


@pytest.mark.parametrize(("hint", "delay"), [(None, 60), (5.4, 5), (0, 1), (-30, 1), (86400, 900)])
def test_retry_after_is_honoured_between_one_second_and_the_cap(hint: float | None, delay: int) -> None:
    """A Retry-After hint wins over the back-off, but never below 1 s (no hot loop) nor above 900 s."""
    assert delay == _policy().throttled(hint, retries=0)
