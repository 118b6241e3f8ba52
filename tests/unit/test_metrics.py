"""EMF metric records: valid by the Embedded Metric Format specification, one per event, whole lines."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest

from s2_downloader.adapters.metrics import NAMESPACE, EmfMetrics, Metrics, NullMetrics
from s2_downloader.domain.errors import FailureKind

#: The units CloudWatch accepts (the EMF specification's MetricDefinition.Unit).
_UNITS = [
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
]

#: The structure the EMF specification gives for the ``_aws`` metadata of a record.
EMF_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["_aws"],
    "properties": {
        "_aws": {
            "type": "object",
            "required": ["Timestamp", "CloudWatchMetrics"],
            "properties": {
                "Timestamp": {"type": "integer", "minimum": 0},
                "CloudWatchMetrics": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["Namespace", "Dimensions", "Metrics"],
                        "properties": {
                            "Namespace": {"type": "string", "minLength": 1, "maxLength": 255},
                            "Dimensions": {
                                "type": "array",
                                "items": {
                                    "type": "array",
                                    "minItems": 1,
                                    "maxItems": 30,
                                    "items": {"type": "string", "minLength": 1, "maxLength": 250},
                                },
                            },
                            "Metrics": {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": 100,
                                "items": {
                                    "type": "object",
                                    "required": ["Name"],
                                    "properties": {
                                        "Name": {"type": "string", "minLength": 1, "maxLength": 1024},
                                        "Unit": {"enum": _UNITS},
                                        "StorageResolution": {"enum": [1, 60]},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        }
    },
}


def emf_errors(record: dict[str, Any]) -> list[str]:
    """What is wrong with ``record`` as an EMF record (empty when it is valid)."""
    validator = jsonschema.Draft202012Validator(EMF_SCHEMA)
    errors = [error.message for error in validator.iter_errors(record)]
    if errors:
        return errors
    for directive in record["_aws"]["CloudWatchMetrics"]:
        for dimension_set in directive["Dimensions"]:
            for key in dimension_set:
                value = record.get(key)
                if not (isinstance(value, str) and value.strip()):
                    errors.append(f"dimension {key!r} is not a non-blank string at the root")
        for metric in directive["Metrics"]:
            value = record.get(metric["Name"])
            if isinstance(value, bool) or not isinstance(value, int | float):
                errors.append(f"metric {metric['Name']!r} has no number at the root")
    return errors


def _records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _metrics(stream: io.StringIO, clock: Callable[[], float] = lambda: 1_700_000_000.25) -> EmfMetrics:
    return EmfMetrics(stream, hub="cdse", clock=clock)


EVENTS: list[tuple[str, Callable[[Metrics], None], dict[str, tuple[str, float]], list[list[str]]]] = [
    (
        "verified",
        lambda m: m.verified(123_456_789, 12.3456),
        {
            "DownloadsVerified": ("Count", 1),
            "BytesDownloaded": ("Bytes", 123_456_789),
            "DownloadSeconds": ("Seconds", 12.346),
        },
        [["Hub"]],
    ),
    (
        "retry_counted",
        lambda m: m.retry_counted(FailureKind.CHECKSUM_MISMATCH),
        {"RetriesCounted": ("Count", 1)},
        [["Hub", "Kind"]],
    ),
    ("deferred", lambda m: m.deferred(FailureKind.THROTTLED), {"Deferrals": ("Count", 1)}, [["Hub", "Kind"]]),
    ("failed", lambda m: m.failed(), {"GranulesFailed": ("Count", 1)}, [["Hub"]]),
    ("bad_message", lambda m: m.bad_message(), {"BadMessages": ("Count", 1)}, [["Hub"]]),
    ("outage", lambda m: m.outage("schema"), {"Outages": ("Count", 1)}, [["Component"]]),
]


@pytest.mark.parametrize(
    ("call", "expected", "dimensions"), [e[1:] for e in EVENTS], ids=[e[0] for e in EVENTS]
)
def test_each_event_is_one_valid_emf_record(
    call: Callable[[Metrics], None], expected: dict[str, tuple[str, float]], dimensions: list[list[str]]
) -> None:
    """Each call writes one line: a valid EMF record with the documented names, units and dimensions."""
    stream = io.StringIO()
    call(_metrics(stream))

    assert stream.getvalue().endswith("\n")
    [record] = _records(stream)
    assert [] == emf_errors(record)
    [directive] = record["_aws"]["CloudWatchMetrics"]
    assert NAMESPACE == directive["Namespace"] == "HLS/S2Downloader"
    assert dimensions == directive["Dimensions"]
    assert {name: unit for name, (unit, _) in expected.items()} == {
        metric["Name"]: metric["Unit"] for metric in directive["Metrics"]
    }
    assert {name: value for name, (_, value) in expected.items()} == {name: record[name] for name in expected}
    # Every dimension the record names has its value in the record (Hub, or Component alone).
    assert all(record[name] for name in dimensions[0])
    assert ("cdse" if "Hub" in dimensions[0] else "schema") == record.get("Hub", record.get("Component"))


def test_kind_is_a_dimension_value() -> None:
    """Retries and deferrals carry their kind as the Kind dimension."""
    stream = io.StringIO()
    metrics = _metrics(stream)
    metrics.retry_counted(FailureKind.TRANSFER_INTERRUPTED)
    metrics.deferred(FailureKind.OFFLINE)

    assert ["transfer_interrupted", "offline"] == [record["Kind"] for record in _records(stream)]


def test_timestamp_is_the_clock_in_milliseconds() -> None:
    """The record's Timestamp is the injected wall clock in whole milliseconds."""
    stream = io.StringIO()
    _metrics(stream, clock=lambda: 1_700_000_000.25).failed()

    assert 1_700_000_000_250 == _records(stream)[0]["_aws"]["Timestamp"]


@pytest.mark.parametrize("kind", list(FailureKind), ids=lambda kind: kind.value)
def test_every_failure_kind_is_a_valid_kind_dimension(kind: FailureKind) -> None:
    """Each FailureKind's value is the Kind of a valid record (not blank, short enough)."""
    stream = io.StringIO()
    _metrics(stream).deferred(kind)

    [record] = _records(stream)
    assert [] == emf_errors(record)
    assert kind.value == record["Kind"]


@pytest.mark.parametrize(("seconds", "expected"), [(float("nan"), 0.0), (float("inf"), 0.0), (-1.0, 0.0)])
def test_odd_durations_still_make_valid_json(seconds: float, expected: float) -> None:
    """A duration JSON cannot carry (NaN, infinity) or that cannot be (negative) is written as 0."""
    stream = io.StringIO()
    _metrics(stream).verified(10, seconds)

    [record] = _records(stream)
    assert [] == emf_errors(record)
    assert expected == record["DownloadSeconds"]


class _SlowStream(io.StringIO):
    """A stream that writes in small pieces and yields between them, as a pipe may split a write."""

    def write(self, text: str) -> int:
        for start in range(0, len(text), 32):
            super().write(text[start : start + 32])
            time.sleep(0)
        return len(text)


def test_threads_writing_at_once_produce_whole_lines() -> None:
    """Many threads reporting at once give one whole, valid record per event, none lost or merged."""
    stream = _SlowStream()
    metrics = _metrics(stream)
    threads, per_thread = 4, 10
    barrier = threading.Barrier(threads)

    def work() -> None:
        barrier.wait()
        for _ in range(per_thread):
            metrics.verified(1, 0.5)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    records = _records(stream)
    assert threads * per_thread == len(records)
    assert [] == [error for record in records for error in emf_errors(record)]


def test_each_record_is_flushed_when_written() -> None:
    """A record reaches the stream's flush at once, so a killed process loses none already reported."""
    flushed: list[str] = []

    class Recording(io.StringIO):
        def flush(self) -> None:
            flushed.append(self.getvalue())

    stream = Recording()
    _metrics(stream).bad_message()

    assert [stream.getvalue()] == flushed


def test_a_broken_stream_does_not_stop_the_caller(caplog: pytest.LogCaptureFixture) -> None:
    """Writing to a closed stream is logged once and never raises into the download."""
    stream = io.StringIO()
    stream.close()
    metrics = _metrics(stream)

    with caplog.at_level(logging.WARNING, logger="s2_downloader.metrics"):
        metrics.failed()
        metrics.failed()

    assert 1 == len([r for r in caplog.records if getattr(r, "event", "") == "metrics_broken"])


def test_null_metrics_write_nothing(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """NullMetrics takes every call and writes nothing to stdout, stderr or the log (EMF, alike, does)."""
    caplog.set_level(logging.DEBUG)
    null: Metrics = NullMetrics()
    for _, call, _, _ in EVENTS:
        call(null)
    assert ("", "", []) == (*capsys.readouterr(), caplog.records)

    # The same capture sees what a writing implementation writes: the check above can fail.
    emf: Metrics = EmfMetrics(sys.stdout, hub="cdse")
    for _, call, _, _ in EVENTS:
        call(emf)
    assert len(EVENTS) == len(capsys.readouterr().out.splitlines())


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda r: r.pop("_aws"), "'_aws' is a required property"),
        (lambda r: r["_aws"].update(Timestamp=1.5), "is not of type 'integer'"),
        (
            lambda r: r["_aws"]["CloudWatchMetrics"][0]["Metrics"][0].update(Unit="Count/Minute"),
            "is not one of",
        ),
        (
            lambda r: r["_aws"]["CloudWatchMetrics"][0].update(Dimensions=[["Hub", 1]]),
            "is not of type 'string'",
        ),
        (lambda r: r.pop("Hub"), "dimension 'Hub'"),
        (lambda r: r.update(GranulesFailed="1"), "metric 'GranulesFailed'"),
    ],
)
def test_the_emf_check_rejects_broken_records(
    mutate: Callable[[dict[str, Any]], object], fragment: str
) -> None:
    """The validation these tests rely on fails on a record that breaks the specification."""
    stream = io.StringIO()
    _metrics(stream).failed()
    [record] = _records(stream)

    mutate(record)

    assert any(fragment in error for error in emf_errors(record))
