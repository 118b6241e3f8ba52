"""The requeuer handler's event: HLS's shape, or one clear line and nothing sent."""

from __future__ import annotations

import pytest

from s2_downloader.entrypoints.requeue_handler import BadRequeueEvent, RequeueEvent, parse_event


def test_hls_event_is_read_with_revive_failed_off_by_default() -> None:
    """{"date", "dry_run"} as HLS sends it; revive_failed defaults to false."""
    expected = RequeueEvent(date="2026-11-30", dry_run=True, revive_failed=False)
    assert expected == parse_event({"date": "2026-11-30", "dry_run": True})


def test_revive_failed_is_taken_when_given() -> None:
    """The optional revive_failed flag is read as a bool."""
    assert parse_event({"date": "2026-11-30", "dry_run": False, "revive_failed": True}).revive_failed


@pytest.mark.parametrize(
    ("event", "fragment"),
    [
        ([], "JSON object"),
        ({"dry_run": True}, '"date"'),
        ({"date": 20261130, "dry_run": True}, '"date"'),
        ({"date": "2026-11-30"}, '"dry_run"'),
        ({"date": "2026-11-30", "dry_run": "yes"}, '"dry_run"'),
        ({"date": "2026-11-30", "dry_run": True, "revive_failed": 1}, '"revive_failed"'),
    ],
)
def test_a_bad_event_is_one_line_naming_the_key(event: object, fragment: str) -> None:
    """A missing or mistyped key: BadRequeueEvent naming it, on one line."""
    with pytest.raises(BadRequeueEvent) as caught:
        parse_event(event)
    assert fragment in str(caught.value)
    assert "\n" not in str(caught.value)
