"""Metrics from outcomes: valid EMF records, one per event, nothing counted twice."""

from __future__ import annotations

import io
import json
from typing import Any

import jsonschema
import pytest

from s2_downloader.adapters.metrics import NAMESPACE, EmfMetrics
from s2_downloader.domain import Defer, Done, Failed, Reject, RetryLater, Transfer
from s2_downloader.entrypoints.dispatch import Unavailable
from s2_downloader.entrypoints.observe import metric_kind, observe
from tests.unit.test_metrics import EMF_SCHEMA


def _records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _metrics(record: dict[str, Any]) -> dict[str, Any]:
    names = [m["Name"] for m in record["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
    return {name: record[name] for name in names}


@pytest.fixture
def emf() -> tuple[EmfMetrics, io.StringIO]:
    """EMF metrics for the cdse hub, written to a string."""
    stream = io.StringIO()
    return EmfMetrics(stream, hub="cdse", clock=lambda: 1_700_000_000.0), stream


def test_a_sequence_of_outcomes_gives_one_valid_record_per_event(emf: tuple[EmfMetrics, io.StringIO]) -> None:
    """Each event of a granule's life is one EMF record with the documented metric, unit and dimensions."""
    metrics, stream = emf
    observe(
        metrics, RetryLater(delay_seconds=60, reason="transfer_interrupted: body ended"), first_delivery=True
    )
    observe(metrics, Defer(delay_seconds=30, reason="throttled: HTTP 429 from hub"), first_delivery=True)
    observe(
        metrics,
        RetryLater(delay_seconds=60, reason="checksum mismatch: expected a, got b"),
        first_delivery=True,
    )
    observe(
        metrics,
        Done(reason="verified", transfer=Transfer(transferred=5_000_000, seconds=2.5)),
        first_delivery=True,
    )
    observe(metrics, Failed(reason="not_found: HTTP 404"), first_delivery=True)
    observe(metrics, Reject(reason="body is not JSON"), first_delivery=True)
    records = _records(stream)
    for record in records:
        jsonschema.validate(record, EMF_SCHEMA)
        assert NAMESPACE == record["_aws"]["CloudWatchMetrics"][0]["Namespace"]
        assert "cdse" == record["Hub"]
    summary = [(_metrics(r), r["_aws"]["CloudWatchMetrics"][0]["Dimensions"], r.get("Kind")) for r in records]
    assert [
        ({"RetriesCounted": 1}, [["Hub", "Kind"]], "transfer_interrupted"),
        ({"Deferrals": 1}, [["Hub", "Kind"]], "throttled"),
        ({"RetriesCounted": 1}, [["Hub", "Kind"]], "checksum_mismatch"),
        ({"DownloadsVerified": 1, "BytesDownloaded": 5_000_000, "DownloadSeconds": 2.5}, [["Hub"]], None),
        ({"GranulesFailed": 1}, [["Hub"]], None),
        ({"BadMessages": 1}, [["Hub"]], None),
    ] == summary


def test_redeliveries_and_coordination_count_nothing(emf: tuple[EmfMetrics, io.StringIO]) -> None:
    """A redelivered verified, failed or bad message, a busy lease, a hand-back and an outage emit nothing."""
    metrics, stream = emf
    observe(metrics, Done(reason="already verified"), first_delivery=False)
    observe(metrics, Done(reason="granule unknown"), first_delivery=True)
    observe(
        metrics,
        Failed(reason="granule failed earlier: not_found: HTTP 404", earlier=True),
        first_delivery=False,
    )
    observe(metrics, Reject(reason="body is not JSON"), first_delivery=False)
    observe(metrics, Defer(delay_seconds=31, reason="held by worker-2"), first_delivery=True)
    observe(metrics, Defer(delay_seconds=0, reason="out of time"), first_delivery=True)
    observe(metrics, Defer(delay_seconds=0, reason="cancelled"), first_delivery=True)
    observe(metrics, Defer(delay_seconds=1, reason="lease lost"), first_delivery=True)
    observe(metrics, Unavailable(reason="StoreError: down"), first_delivery=True)
    assert [] == _records(stream)


def test_only_the_attempt_that_verified_reports_bytes(emf: tuple[EmfMetrics, io.StringIO]) -> None:
    """A Done with a transfer counts its bytes; a Done without one (a redelivery) counts nothing."""
    metrics, stream = emf
    observe(
        metrics,
        Done(reason="verified", transfer=Transfer(transferred=1234, seconds=1.0)),
        first_delivery=True,
    )
    observe(metrics, Done(reason="already verified"), first_delivery=False)
    assert [1234] == [r["BytesDownloaded"] for r in _records(stream)]


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("offline: HTTP 202 from hub", "offline"),
        ("server_error: HTTP 500", "server_error"),
        ("unauthorized: HTTP 401", "unauthorized"),
        ("/mnt/efs/G/.G.zip.partial is being written by another attempt", "partial_in_use"),
        ("retry budget spent (11 failures)", "retry_budget_spent"),
        ("held by worker-2", "other"),
    ],
)
def test_metric_kind_names_the_failure_kind(reason: str, kind: str) -> None:
    """The Kind dimension is the failure kind the reason starts with, or the use case's own reason."""
    assert kind == metric_kind(reason)
