"""Metrics from outcomes: valid EMF records, one per event, nothing counted twice."""

from __future__ import annotations

import io
import json
from typing import Any

import jsonschema
import pytest

from s2_downloader.adapters.metrics import NAMESPACE, EmfMetrics
from s2_downloader.domain import Defer, Done, Failed, Reject, RetryLater, Transfer
from s2_downloader.domain.errors import FailureKind
from s2_downloader.entrypoints.dispatch import Unavailable
from s2_downloader.entrypoints.observe import observe
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
        metrics,
        RetryLater(kind=FailureKind.TRANSFER_INTERRUPTED, delay_seconds=60, detail="body ended"),
        first_delivery=True,
    )
    observe(
        metrics,
        Defer(kind=FailureKind.THROTTLED, delay_seconds=30, detail="HTTP 429 from hub"),
        first_delivery=True,
    )
    observe(
        metrics,
        RetryLater(kind=FailureKind.CHECKSUM_MISMATCH, delay_seconds=60, detail="expected a, got b"),
        first_delivery=True,
    )
    observe(
        metrics,
        Done(reason="verified", transfer=Transfer(transferred=5_000_000, seconds=2.5)),
        first_delivery=True,
    )
    observe(metrics, Failed(kind=FailureKind.NOT_FOUND, detail="HTTP 404"), first_delivery=True)
    observe(metrics, Reject(detail="body is not JSON"), first_delivery=True)
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
        metrics, Failed(kind=FailureKind.FAILED_EARLIER, detail="not_found: HTTP 404"), first_delivery=False
    )
    observe(metrics, Reject(detail="body is not JSON"), first_delivery=False)
    observe(
        metrics,
        Defer(kind=FailureKind.LEASE_BUSY, delay_seconds=31, detail="held by w-2"),
        first_delivery=True,
    )
    observe(metrics, Defer(kind=FailureKind.OUT_OF_TIME, delay_seconds=0, detail="-"), first_delivery=True)
    observe(metrics, Defer(kind=FailureKind.CANCELLED, delay_seconds=0, detail="-"), first_delivery=True)
    observe(metrics, Defer(kind=FailureKind.LEASE_LOST, delay_seconds=1, detail="-"), first_delivery=True)
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
    "kind",
    [
        FailureKind.THROTTLED,
        FailureKind.OFFLINE,
        FailureKind.SERVER_ERROR,
        FailureKind.UNAUTHORIZED,
        FailureKind.PARTIAL_IN_USE,
    ],
    ids=lambda kind: kind.value,
)
def test_a_deferral_reports_its_kind_whatever_its_detail_says(
    emf: tuple[EmfMetrics, io.StringIO], kind: FailureKind
) -> None:
    """The Kind dimension is the outcome's kind; its detail (a path, a key, any wording) is never read."""
    metrics, stream = emf
    observe(
        metrics,
        Defer(kind=kind, delay_seconds=30, detail="s3://bucket/G/G.zip: upload in progress"),
        first_delivery=True,
    )
    assert [kind.value] == [r["Kind"] for r in _records(stream)]
