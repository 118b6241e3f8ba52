"""``s2-downloader failures``: failed and retrying granules, newest first, and counts per kind.

The kind of a granule is the text of its ``last_error`` before the first ``": "``: the use
case writes every ``last_error`` as ``<kind>: <detail>`` from the failure's ``FailureKind``,
so that text is the kind by construction (``adapters.granule_queries.stored_kind``). A
``last_error`` that does not start with a kind (an earlier version's) is ``other``.
"""

from __future__ import annotations

import datetime as dt

from s2_downloader.adapters.granule_queries import FailuresReport
from s2_downloader.domain.granule import State

__all__ = ["failures_json", "failures_text"]

#: How much of ``last_error`` a table row shows; the JSON has all of it.
_ERROR_WIDTH = 90


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _short(moment: dt.datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


def _kinds(report: FailuresReport) -> list[tuple[str, int, int]]:
    rows = [
        (kind, per_state.get(State.FAILED, 0), per_state.get(State.RETRYING, 0))
        for kind, per_state in report.kinds.items()
    ]
    return sorted(rows, key=lambda row: (-(row[1] + row[2]), row[0]))


def failures_json(report: FailuresReport) -> dict[str, object]:
    """``{"totals", "kinds", "granules"}``: one object for scripts."""
    totals = report.totals
    return {
        "totals": {"failed": totals[State.FAILED], "retrying": totals[State.RETRYING]},
        "kinds": {
            kind: {"failed": failed, "retrying": retrying} for kind, failed, retrying in _kinds(report)
        },
        "granules": [
            {
                "id": row.id,
                "state": row.state.value,
                "kind": row.kind,
                "last_error": row.last_error,
                "retries": row.retries,
                "first_attempt_at": _iso(row.first_attempt_at),
                "last_attempt_at": _iso(row.last_attempt_at),
            }
            for row in report.granules
        ],
    }


def failures_text(report: FailuresReport) -> str:
    """The counts per kind, then one line per granule (newest attempt first), for a person."""
    totals = report.totals
    lines = [f"failed {totals[State.FAILED]}, retrying {totals[State.RETRYING]}"]
    kinds = _kinds(report)
    if kinds:
        lines.append("")
        lines.append(f"{'kind':<24} {'failed':>8} {'retrying':>8}")
        lines += [f"{kind:<24} {failed:>8} {retrying:>8}" for kind, failed, retrying in kinds]
    if report.granules:
        lines.append("")
        lines.append(
            f"{'id':<40} {'state':<8} {'retries':>7} {'first attempt':<19} {'last attempt':<19} last error"
        )
        for row in report.granules:
            error = (row.last_error or "-").replace("\n", " ")
            if len(error) > _ERROR_WIDTH:
                error = error[: _ERROR_WIDTH - 3] + "..."
            lines.append(
                f"{row.id:<40} {row.state.value:<8} {row.retries:>7} {_short(row.first_attempt_at):<19}"
                f" {_short(row.last_attempt_at):<19} {error}"
            )
    return "\n".join(lines)
