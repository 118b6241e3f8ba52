"""The requeuer's Lambda event and answer: HLS's shapes, bad events refused with one clear message."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from s2_downloader.adapters.granule_queries import RequeueRow
from s2_downloader.domain.granule import State
from s2_downloader.entrypoints.requeue import RequeueReport
from s2_downloader.entrypoints.requeue_handler import InvalidEvent, RequeueEvent, handler, response

DAY = dt.date(2023, 6, 10)


def test_hls_event_is_read_as_it_is_sent() -> None:
    """HLS's invoke script's event: a date and dry_run; revive_failed defaults to false."""
    assert RequeueEvent(date=DAY, dry_run=True, revive_failed=False) == RequeueEvent.parse(
        {"dry_run": True, "date": "2023-06-10"}
    )


def test_revive_failed_is_read_when_given() -> None:
    """The optional revive_failed flag is taken as given."""
    assert RequeueEvent(date=DAY, dry_run=False, revive_failed=True) == RequeueEvent.parse(
        {"dry_run": False, "date": "2023-06-10", "revive_failed": True}
    )


@pytest.mark.parametrize(
    ("event", "problems"),
    [
        ({"date": "2023-06-10"}, ["required field missing @ $.dry_run"]),
        ({"dry_run": True}, ["required field missing @ $.date"]),
        ({"date": "2023-06-10", "dry_run": "false"}, ["expected true or false, got 'false' @ $.dry_run"]),
        ({"date": "2023-06-10", "dry_run": 0}, ["expected true or false, got 0 @ $.dry_run"]),
        ({"date": "10/06/2023", "dry_run": True}, ["expected a date YYYY-MM-DD, got '10/06/2023' @ $.date"]),
        ({"date": "2023-02-30", "dry_run": True}, ["expected a date YYYY-MM-DD, got '2023-02-30' @ $.date"]),
        ({"date": 20230610, "dry_run": True}, ["expected a date YYYY-MM-DD, got 20230610 @ $.date"]),
        (
            {"date": "2023-06-10", "dry_run": True, "revive-failed": True},
            ["extra fields found (revive-failed) @ $"],
        ),
        (
            {"date": "2023-06-10", "dry_run": True, "revive_failed": "yes"},
            ["expected true or false, got 'yes' @ $.revive_failed"],
        ),
    ],
)
def test_a_bad_event_names_each_problem(event: dict[str, Any], problems: list[str]) -> None:
    """A bad event is refused with the expected shape and every problem, in one message."""
    with pytest.raises(InvalidEvent) as caught:
        RequeueEvent.parse(event)

    message = str(caught.value)
    assert message.startswith('the event must be {"date": "YYYY-MM-DD", "dry_run": true|false')
    assert all(problem in message for problem in problems), message


def test_an_event_that_is_not_an_object_is_refused() -> None:
    """A list (or anything but an object) is refused naming what it was."""
    with pytest.raises(InvalidEvent, match=r"must be a JSON object .* got list"):
        RequeueEvent.parse([{"date": "2023-06-10", "dry_run": True}])


def test_a_bad_event_is_refused_before_anything_is_configured() -> None:
    """The handler refuses a bad event without reading the environment or opening a connection."""
    with pytest.raises(InvalidEvent, match="dry_run"):
        handler({"date": "2023-06-10"}, object())


def test_the_answer_has_exactly_hls_keys() -> None:
    """dry_run, queue_url, ingestion_date, count and granules (id, filename, download_url), nothing else."""
    rows = [
        RequeueRow(id="A", filename="A.SAFE", download_url="https://x/A", state=State.PENDING),
        RequeueRow(id="B", filename="B.SAFE", download_url="https://x/B", state=State.FAILED),
    ]
    report = RequeueReport(dry_run=True, queue_url="https://sqs/q", granules=rows, revived=1)

    assert {
        "dry_run": True,
        "queue_url": "https://sqs/q",
        "ingestion_date": "2023-06-10",
        "count": 2,
        "granules": [
            {"id": "A", "filename": "A.SAFE", "download_url": "https://x/A"},
            {"id": "B", "filename": "B.SAFE", "download_url": "https://x/B"},
        ],
    } == response(report, DAY)
