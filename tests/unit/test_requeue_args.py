"""requeue's flags exit 2 naming the flag when wrong; a batch's refused entries are sent again."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pytest

from s2_downloader.adapters.granule_queries import RequeueFilter, RequeueRow
from s2_downloader.domain.errors import QueueError
from s2_downloader.domain.granule import State
from s2_downloader.entrypoints.cli import main
from s2_downloader.entrypoints.requeue import parse_filter, requeue


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        ([], "--all"),
        (["--dry-run", "--json"], "--all"),
        (["--revive-failed"], "--all"),
        (["--ingested-on", "2024-13-01"], "--ingested-on"),
        (["--ingested-on", "20240101"], "--ingested-on"),
        (["--ingested-since", "yesterday"], "--ingested-since"),
        (["--ingested-until", "2024-02-30"], "--ingested-until"),
        (["--ingested-since", "2024-02-02", "--ingested-until", "2024-02-01"], "--ingested-until"),
        (["--state", "stuck"], "--state"),
        (["--state", "verified"], "--state"),
        (["--state", "failed"], "--state"),
        (["--state", "pending", "--revive-failed"], "--revive-failed"),
    ],
)
def test_bad_requeue_usage_exits_2_naming_the_flag(
    args: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each bad combination exits 2 before touching the database, with one line naming the flag."""
    code = main(["requeue", *args])
    err = capsys.readouterr().err
    assert (2, 1) == (code, len(err.strip().splitlines()))
    assert err.startswith(f"s2-downloader requeue: {flag}:"), err


def test_filters_combine_as_documented() -> None:
    """Days, bounds, states and ids become one filter; --revive-failed adds failed to the states."""
    selection = parse_filter(
        ingested_on=["2024-05-01", "2024-05-03"],
        ingested_until="2024-05-31",
        states=["RETRYING", "failed"],
        ids=["A"],
        revive_failed=True,
    )
    assert (
        RequeueFilter(
            ingested_on=(dt.date(2024, 5, 1), dt.date(2024, 5, 3)),
            ingested_until=dt.date(2024, 5, 31),
            states=frozenset({State.RETRYING, State.FAILED}),
            ids=("A",),
            include_revived=True,
        )
        == selection
    )
    assert parse_filter(all_granules=True).states is None


class _FlakyQueue:
    """Refuses the entries named in ``refuse`` ``times`` times each; raises once when ``outage``."""

    def __init__(self, refuse: set[str], times: int, *, outage: bool = False) -> None:
        self.refuse = dict.fromkeys(refuse, times)
        self.outage = outage
        self.calls: list[list[str]] = []

    def send_batch(self, entries: Sequence[tuple[str, int]]) -> list[bool]:
        ids = [body.split('"id": "')[1].split('"')[0] for body, _ in entries]
        self.calls.append(ids)
        if self.outage:
            self.outage = False
            raise QueueError("SQS SendMessageBatch failed: throttled")
        answers = []
        for granule_id in ids:
            left = self.refuse.get(granule_id, 0)
            self.refuse[granule_id] = left - 1
            answers.append(left <= 0)
        return answers


class _Rows:
    def __init__(self, rows: list[RequeueRow]) -> None:
        self.rows = rows

    def requeue_candidates(self, selection: RequeueFilter) -> list[RequeueRow]:
        del selection
        return self.rows

    def revive_failed(self, ids: Sequence[str]) -> list[RequeueRow]:
        return [r for r in self.rows if r.id in ids]


def _rows(n: int) -> list[RequeueRow]:
    return [
        RequeueRow(id=f"G{i:02d}", filename=f"G{i:02d}.zip", download_url="u", state=State.PENDING)
        for i in range(n)
    ]


def test_refused_entries_of_a_batch_are_sent_again_alone() -> None:
    """Entries a batch refused are re-sent (only they), and all 12 end up sent in two batches of 10 and 2."""
    queue = _FlakyQueue({"G03", "G11"}, times=2, outage=False)
    report = requeue(
        _Rows(_rows(12)), queue, RequeueFilter(), queue_url="q", dry_run=False, sleep=lambda s: None
    )
    assert ([f"G{i:02d}" for i in range(12)], []) == ([r.id for r in report.granules], list(report.unsent))
    assert [10, 1, 1, 2, 1, 1] == [len(call) for call in queue.calls]


def test_entries_refused_past_the_retries_are_reported_unsent() -> None:
    """A whole-call failure is retried; an entry refused every time is reported, not dropped silently."""
    queue = _FlakyQueue({"G01"}, times=99, outage=True)
    report = requeue(
        _Rows(_rows(3)), queue, RequeueFilter(), queue_url="q", dry_run=False, sleep=lambda s: None
    )
    assert (["G00", "G02"], ["G01"]) == ([r.id for r in report.granules], [r.id for r in report.unsent])
    assert "unsent" in report.as_json()
