"""Which events need the lease: the explicit set agrees with the events and the table."""

from __future__ import annotations

import datetime as dt
import typing
from typing import Any

import attrs
import pytest

from s2_downloader.domain import lifecycle
from s2_downloader.domain.errors import InvalidTransition
from s2_downloader.domain.granule import Granule, Lease, State

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_every_event_that_needs_the_lease_names_its_owner() -> None:
    """Each event of NEEDS_LEASE has the ``owner`` field that ``apply`` checks against the lease."""
    without_owner = {kind for kind in lifecycle.NEEDS_LEASE if "owner" not in attrs.fields_dict(kind)}
    assert set() == without_owner


def test_every_event_is_in_the_table() -> None:
    """Every member of the Event union has at least one row in TRANSITIONS."""
    in_table = {kind for _, kind in lifecycle.TRANSITIONS}
    assert set(typing.get_args(lifecycle.Event)) == in_table


@pytest.mark.parametrize(
    "kind", [pytest.param(kind, id=kind.__name__) for kind in sorted(lifecycle.NEEDS_LEASE, key=repr)]
)
def test_an_event_that_needs_the_lease_is_refused_to_another_worker(kind: type[lifecycle.Event]) -> None:
    """Recorded by a worker that does not hold the lease, an event of NEEDS_LEASE is refused."""
    lease = Lease(owner="w1", expires_at=T0 + dt.timedelta(seconds=60))
    granule = Granule(id="g", filename="f", state=State.CLAIMED, lease=lease)
    fields: dict[str, Any] = {
        "owner": "w2",
        "now": T0,
        "lease_seconds": 60.0,
        "checksum": "0" * 32,
        "error": "e",
    }
    event = kind(**{name: fields[name] for name in attrs.fields_dict(kind)})
    with pytest.raises(InvalidTransition, match="held by w1"):
        lifecycle.apply(granule, event)
