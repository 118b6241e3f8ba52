"""One outcome of every ``FailureKind``, and what each reader of the kind must see: the shared table.

Each case arranges a world of fakes (the granule's row, the hub's or the store's fault, the
attempt's settings) so that handling one download message, as the Lambda handler and the
runner do (``dispatch.outcome_for``), ends in an outcome of its kind. Then the three readers
of that kind must agree with it:

- the ``last_error`` the attempt records starts with ``<kind>: `` (or nothing is recorded);
- ``failures`` counts the granule under that kind (or not at all);
- ``observe`` writes the documented metric, with ``Kind`` the kind's value on
  ``RetriesCounted`` and ``Deferrals``.

``tests/unit/test_failure_kinds.py`` runs the table on the in-memory granule store,
``tests/integration/test_failure_kinds_postgres.py`` the recorded cases on PostgreSQL,
whose ``failures`` groups the kinds in SQL.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from s2_downloader.adapters.metrics import EmfMetrics
from s2_downloader.domain import Defer, Failed, Reject, RetryLater, State
from s2_downloader.domain.errors import FailureKind, FileStoreError, KeyConflict
from s2_downloader.domain.granule import Lease
from s2_downloader.entrypoints.dispatch import Result
from s2_downloader.entrypoints.observe import observe
from tests.unit.fakes import EPOCH, FakeCancellation, HubFault
from tests.unit.world import HUB, World

__all__ = ["CASES", "GRANULE", "PRODUCT", "KindCase", "accept_any_url", "emitted", "message", "stored_prefix"]

GRANULE = "S2A_KIND"
PRODUCT = b"0123456789abcdef" * 8

#: The metrics whose records carry the outcome's kind as the ``Kind`` dimension.
KIND_METRICS = frozenset({"RetriesCounted", "Deferrals"})

_Arrange = Callable[[World, str], Mapping[str, Any]]


def _as_is(world: World, granule_id: str) -> Mapping[str, Any]:
    del world, granule_id
    return {}


def _product_fails(fault: HubFault) -> _Arrange:
    def arrange(world: World, granule_id: str) -> Mapping[str, Any]:
        world.hub.download_faults[granule_id] = [fault]
        return {}

    return arrange


def _checksum_fails(fault: HubFault) -> _Arrange:
    def arrange(world: World, granule_id: str) -> Mapping[str, Any]:
        world.hub.checksum_faults[granule_id] = [fault]
        return {}

    return arrange


def _partial_held_elsewhere(world: World, granule_id: str) -> Mapping[str, Any]:
    world.files.open_partials[World.key(granule_id)] += 1
    return {}


def _lease_taken_over_mid_body(world: World, granule_id: str) -> Mapping[str, Any]:
    def take_over(served: str, index: int) -> None:
        if served == granule_id and index == 0:
            world.clock.advance(world.lease_seconds)
            expires = world.clock.now() + dt.timedelta(seconds=world.lease_seconds)
            granule = world.store.granules[granule_id]
            world.store.granules[granule_id] = attrs.evolve(
                granule, lease=Lease(owner="w-2", expires_at=expires)
            )

    world.hub.on_chunk = take_over
    return {}


def _store_refuses(world: World, granule_id: str) -> Mapping[str, Any]:
    # The store as a whole stays healthy: the refusal is the granule's own.
    refusal = f"S3 UploadPart s3://b/{granule_id}.zip: BadDigest: the Content-MD5 did not match"
    world.files.refused_writes[granule_id] = FileStoreError(refusal)
    return {}


def _key_held_by_another(world: World, granule_id: str) -> Mapping[str, Any]:
    world.files.conflicts[granule_id] = KeyConflict(f"{granule_id}.zip", "S2A_OTHER")
    return {}


def _worker_stopping(world: World, granule_id: str) -> Mapping[str, Any]:
    del world, granule_id
    return {"cancellation": FakeCancellation(stop=True)}


@attrs.frozen(kw_only=True)
class KindCase:
    """One attempt that ends in an outcome of ``kind``, and what the readers of the kind must see."""

    name: str
    kind: FailureKind
    ending: type[RetryLater | Defer | Failed | Reject]
    #: The granule's state when the attempt records its kind in ``last_error``; ``None``
    #: when it records nothing (coordination, a redelivery, bad input).
    recorded_as: State | None
    #: The metric ``observe`` writes for the outcome; ``None``: none.
    metric: str | None
    arrange: _Arrange = _as_is
    #: Counted failures before the attempt.
    retries: int = 0
    #: How long before the attempt the first one was (the deferral budget is two days).
    first_attempt_days_ago: int | None = None
    #: What the fakes' row holds besides (a live lease, a failed state).
    row: Mapping[str, object] = attrs.field(factory=dict)
    #: The message, when not the granule's download message.
    body: str | None = None

    def expected(self) -> dict[str, object]:
        """What the outcome, ``last_error``, ``failures`` and the metrics must say."""
        counted = None
        if self.recorded_as is not None:
            counted = {
                "failed": int(self.recorded_as is State.FAILED),
                "retrying": int(self.recorded_as is State.RETRYING),
            }
        # A recorded last_error starts with the kind and is the outcome's reason, word for word.
        return {
            "outcome": (self.ending, self.kind),
            "last_error": (self.kind.value, True) if self.recorded_as is not None else "unchanged",
            "failures": counted,
            "metric": None
            if self.metric is None
            else (self.metric, self.kind.value if self.metric in KIND_METRICS else None),
        }


CASES = [
    KindCase(
        name="checksum_mismatch",
        kind=FailureKind.CHECKSUM_MISMATCH,
        ending=RetryLater,
        recorded_as=State.RETRYING,
        metric="RetriesCounted",
        arrange=_product_fails(HubFault(corrupt=True)),
    ),
    KindCase(
        name="transfer_interrupted",
        kind=FailureKind.TRANSFER_INTERRUPTED,
        ending=RetryLater,
        recorded_as=State.RETRYING,
        metric="RetriesCounted",
        arrange=_product_fails(HubFault(short_by=3)),
    ),
    KindCase(
        name="not_found",
        kind=FailureKind.NOT_FOUND,
        ending=RetryLater,
        recorded_as=State.RETRYING,
        metric="RetriesCounted",
        arrange=_checksum_fails(HubFault.fail(FailureKind.NOT_FOUND)),
    ),
    KindCase(
        name="not_found, the last retry",
        kind=FailureKind.NOT_FOUND,
        ending=Failed,
        recorded_as=State.FAILED,
        metric="GranulesFailed",
        arrange=_checksum_fails(HubFault.fail(FailureKind.NOT_FOUND)),
        retries=3,
    ),
    KindCase(
        name="bad_response",
        kind=FailureKind.BAD_RESPONSE,
        ending=RetryLater,
        recorded_as=State.RETRYING,
        metric="RetriesCounted",
        arrange=_product_fails(HubFault.fail(FailureKind.BAD_RESPONSE)),
    ),
    KindCase(
        name="throttled",
        kind=FailureKind.THROTTLED,
        ending=Defer,
        recorded_as=State.RETRYING,
        metric="Deferrals",
        arrange=_product_fails(HubFault.fail(FailureKind.THROTTLED, retry_after=30)),
    ),
    KindCase(
        name="throttled, past the deferral budget",
        kind=FailureKind.THROTTLED,
        ending=Failed,
        recorded_as=State.FAILED,
        metric="GranulesFailed",
        arrange=_product_fails(HubFault.fail(FailureKind.THROTTLED, retry_after=30)),
        first_attempt_days_ago=3,
    ),
    KindCase(
        name="offline",
        kind=FailureKind.OFFLINE,
        ending=Defer,
        recorded_as=State.RETRYING,
        metric="Deferrals",
        arrange=_checksum_fails(HubFault.fail(FailureKind.OFFLINE)),
    ),
    KindCase(
        name="server_error",
        kind=FailureKind.SERVER_ERROR,
        ending=Defer,
        recorded_as=State.RETRYING,
        metric="Deferrals",
        arrange=_product_fails(HubFault.fail(FailureKind.SERVER_ERROR)),
    ),
    KindCase(
        name="unauthorized",
        kind=FailureKind.UNAUTHORIZED,
        ending=Defer,
        recorded_as=State.RETRYING,
        metric="Deferrals",
        arrange=_checksum_fails(HubFault.fail(FailureKind.UNAUTHORIZED)),
    ),
    KindCase(
        name="partial_in_use",
        kind=FailureKind.PARTIAL_IN_USE,
        ending=Defer,
        recorded_as=State.RETRYING,
        metric="Deferrals",
        arrange=_partial_held_elsewhere,
    ),
    KindCase(
        name="store",
        kind=FailureKind.STORE,
        ending=RetryLater,
        recorded_as=State.RETRYING,
        metric="RetriesCounted",
        arrange=_store_refuses,
    ),
    KindCase(
        name="store, the last retry",
        kind=FailureKind.STORE,
        ending=Failed,
        recorded_as=State.FAILED,
        metric="GranulesFailed",
        arrange=_store_refuses,
        retries=3,
    ),
    KindCase(
        name="key_conflict",
        kind=FailureKind.KEY_CONFLICT,
        ending=Failed,
        recorded_as=State.FAILED,
        metric="GranulesFailed",
        arrange=_key_held_by_another,
    ),
    KindCase(
        name="retry_budget_spent",
        kind=FailureKind.RETRY_BUDGET_SPENT,
        ending=Failed,
        recorded_as=State.FAILED,
        metric="GranulesFailed",
        retries=4,
    ),
    KindCase(
        name="lease_busy",
        kind=FailureKind.LEASE_BUSY,
        ending=Defer,
        recorded_as=None,
        metric=None,
        row={
            "state": State.CLAIMED,
            "lease": Lease(owner="w-2", expires_at=EPOCH + dt.timedelta(seconds=60)),
        },
    ),
    KindCase(
        name="lease_lost",
        kind=FailureKind.LEASE_LOST,
        ending=Defer,
        recorded_as=None,
        metric=None,
        arrange=_lease_taken_over_mid_body,
    ),
    KindCase(
        name="out_of_time",
        kind=FailureKind.OUT_OF_TIME,
        ending=Defer,
        recorded_as=None,
        metric=None,
        arrange=_checksum_fails(HubFault(out_of_time=True)),
    ),
    KindCase(
        # Out of time mid-body with less than 1 MiB more kept than before: counted.
        name="no_progress",
        kind=FailureKind.NO_PROGRESS,
        ending=RetryLater,
        recorded_as=State.RETRYING,
        metric="RetriesCounted",
        arrange=_product_fails(HubFault(out_of_time=True)),
    ),
    KindCase(
        name="cancelled",
        kind=FailureKind.CANCELLED,
        ending=Defer,
        recorded_as=None,
        metric=None,
        arrange=_worker_stopping,
    ),
    KindCase(
        name="failed_earlier",
        kind=FailureKind.FAILED_EARLIER,
        ending=Failed,
        recorded_as=None,
        metric=None,
        row={"state": State.FAILED, "last_error": "not_found: HTTP 404 from hub"},
    ),
    KindCase(
        name="bad_message",
        kind=FailureKind.BAD_MESSAGE,
        ending=Reject,
        recorded_as=None,
        metric="BadMessages",
        body='{"id": "S2A_KIND"',
    ),
]


def message(granule_id: str) -> str:
    """The download message of ``granule_id`` (no checksum: the hub's is asked)."""
    return json.dumps(
        {"id": granule_id, "filename": f"{granule_id}.zip", "download_url": f"{HUB}/p/{granule_id}/$value"}
    )


def accept_any_url(url: str) -> None:
    """A hub rule that accepts every download URL."""
    del url


def stored_prefix(last_error: str | None) -> str | None:
    """The text of ``last_error`` before its first ``": "``."""
    return None if last_error is None else last_error.split(": ", 1)[0]


def emitted(result: Result) -> tuple[str, str | None] | None:
    """The metric ``observe`` writes for ``result`` (first delivery) and its ``Kind``, or ``None``."""
    stream = io.StringIO()
    observe(EmfMetrics(stream, hub="dhus", clock=lambda: 0.0), result, first_delivery=True)
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    if not records:
        return None
    [record] = records
    [directive] = record["_aws"]["CloudWatchMetrics"]
    [metric] = directive["Metrics"]
    return metric["Name"], record.get("Kind")
