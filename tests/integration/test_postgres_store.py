"""PostgresGranuleStore on real PostgreSQL: legacy columns, concurrency, leases and the status report."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import Any

import pytest
from psycopg_pool import ConnectionPool

from s2_downloader.adapters.postgres import (
    LAST_FILE_DOWNLOADED_TIME,
    InProgressLease,
    PostgresGranuleStore,
    StoreStatus,
)
from s2_downloader.domain import lifecycle
from s2_downloader.domain.errors import InvalidTransition
from s2_downloader.domain.granule import Granule, State
from s2_downloader.testing.postgres import SeedGranule, seed_granules
from tests.integration.fixtures_postgres import legacy_flag_mismatches

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
FINISHED = dt.datetime(2026, 3, 1, 12, 7, 30, 250000, tzinfo=dt.UTC)
NAIVE_NOW = NOW.replace(tzinfo=None)
NAIVE_FINISHED = FINISHED.replace(tzinfo=None)


def _seed(store: PostgresGranuleStore, *granule_ids: str) -> None:
    seed_granules(store.pool, [SeedGranule(id=gid, filename=f"{gid}.zip") for gid in granule_ids])


def _legacy(store: PostgresGranuleStore, granule_id: str) -> dict[str, Any]:
    with store.pool.connection() as conn:
        cursor = conn.execute(
            "SELECT in_progress, downloaded, download_failed, download_retries, checksum,"
            " download_started, download_finished, uploaded, expired, upload_queued_at IS NOT NULL"
            " FROM granule WHERE id = %s",
            (granule_id,),
        )
        row = cursor.fetchone()
    assert row is not None
    names = [
        "in_progress",
        "downloaded",
        "download_failed",
        "download_retries",
        "checksum",
        "download_started",
        "download_finished",
        "uploaded",
        "expired",
        "upload_queued",
    ]
    return dict(zip(names, row, strict=True))


Clock = Callable[[dt.datetime], None]


@pytest.fixture
def store(
    granule_store: PostgresGranuleStore, clocked_pool: ConnectionPool[Any], db_clock: Clock
) -> PostgresGranuleStore:
    """The shared-database store with fixed clocks: the database's at NOW, the finish time at FINISHED."""
    del granule_store  # empties the tables
    db_clock(NOW)
    return PostgresGranuleStore(clocked_pool, clock=lambda: FINISHED)


def test_claim_takes_a_pending_granule_and_marks_it_in_progress(store: PostgresGranuleStore) -> None:
    """A claim leases the granule, sets in_progress and records the start of the attempt."""
    _seed(store, "g")

    claimed = store.claim("g", "w-1", NOW, 900)

    assert claimed is not None
    assert (State.CLAIMED, "w-1", NOW + dt.timedelta(seconds=900)) == (
        claimed.state,
        claimed.lease.owner if claimed.lease else None,
        claimed.lease.expires_at if claimed.lease else None,
    )
    legacy = _legacy(store, "g")
    assert (True, NAIVE_NOW) == (legacy["in_progress"], legacy["download_started"])


def test_claim_of_an_unknown_granule_returns_none(store: PostgresGranuleStore) -> None:
    """Claiming an id the table does not hold changes nothing and returns None."""
    assert store.claim("nope", "w-1", NOW, 900) is None


def test_sixteen_concurrent_claims_have_exactly_one_winner(store: PostgresGranuleStore) -> None:
    """Sixteen workers claiming one granule at once: one holds it, fifteen see it held by that one."""
    _seed(store, "contended")
    barrier = threading.Barrier(16)
    results: dict[str, Granule | None] = {}

    def claim(owner: str) -> None:
        barrier.wait()
        results[owner] = store.claim("contended", owner, NOW, 900)

    threads = [threading.Thread(target=claim, args=(f"w-{n}",)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    winners = [owner for owner, granule in results.items() if granule is not None and granule.held_by(owner)]
    assert 16 == len(results)
    assert 1 == len(winners)
    assert {winners[0]} == {g.lease.owner for g in results.values() if g is not None and g.lease is not None}


def test_heartbeat_extends_only_the_owners_lease(store: PostgresGranuleStore, db_clock: Clock) -> None:
    """The holder's heartbeat moves the expiry; anyone else's is refused and changes nothing."""
    _seed(store, "g")
    store.claim("g", "w-1", NOW, 60)
    later = NOW + dt.timedelta(seconds=30)
    db_clock(later)

    assert store.heartbeat("g", "w-2", later, 600) is False
    after_stranger = store.get("g")
    assert store.heartbeat("g", "w-1", later, 600) is True
    after_owner = store.get("g")

    assert after_stranger is not None
    assert after_owner is not None
    assert NOW + dt.timedelta(seconds=60) == (
        after_stranger.lease.expires_at if after_stranger.lease else None
    )
    assert later + dt.timedelta(seconds=600) == (after_owner.lease.expires_at if after_owner.lease else None)


def test_heartbeat_of_an_unknown_or_finished_granule_is_refused(store: PostgresGranuleStore) -> None:
    """No lease to extend: unknown granule, or one already verified."""
    _seed(store, "g")
    store.claim("g", "w-1", NOW, 60)
    store.record("g", lifecycle.Verify(owner="w-1", checksum="ab"))

    assert (False, False) == (store.heartbeat("nope", "w-1", NOW, 60), store.heartbeat("g", "w-1", NOW, 60))


def test_a_lease_can_be_taken_over_exactly_when_it_expires(
    store: PostgresGranuleStore, db_clock: Clock
) -> None:
    """A lease is live strictly before its expiry (database clock); at the expiry another may claim."""
    _seed(store, "g")
    store.claim("g", "w-1", NOW, 60)

    db_clock(NOW + dt.timedelta(seconds=59.999999))
    just_before = store.claim("g", "w-2", NOW + dt.timedelta(seconds=59.999999), 60)
    db_clock(NOW + dt.timedelta(seconds=60))
    at_expiry = store.claim("g", "w-2", NOW + dt.timedelta(seconds=60), 60)

    assert just_before is not None
    assert at_expiry is not None
    assert (True, True) == (just_before.held_by("w-1"), at_expiry.held_by("w-2"))


def _walk(store: PostgresGranuleStore, events: list[Callable[[], object]]) -> None:
    for step in events:
        step()
        assert [] == legacy_flag_mismatches(store.pool)


def test_legacy_flags_follow_the_state_through_failures_and_a_final_failure(
    store: PostgresGranuleStore,
) -> None:
    """Claim, start, counted failure, postpone, release and exhaust keep every legacy column in step."""
    _seed(store, "g")
    expected: list[tuple[bool, bool, bool, int]] = []

    def snap() -> None:
        legacy = _legacy(store, "g")
        expected.append(
            (
                legacy["in_progress"],
                legacy["downloaded"],
                legacy["download_failed"],
                legacy["download_retries"],
            )
        )

    _walk(
        store,
        [
            lambda: store.claim("g", "w-1", NOW, 60),
            snap,
            lambda: store.record("g", lifecycle.StartDownload(owner="w-1")),
            snap,
            lambda: store.record("g", lifecycle.CountFailure(owner="w-1", error="reset")),
            snap,
            lambda: store.claim("g", "w-2", NOW, 60),
            lambda: store.record("g", lifecycle.Postpone(owner="w-2", error="429")),
            snap,
            lambda: store.claim("g", "w-3", NOW, 60),
            lambda: store.release("g", "w-3"),
            snap,
            lambda: store.claim("g", "w-1", NOW, 60),
            lambda: store.record("g", lifecycle.Exhaust(owner="w-1", error="mismatch")),
            snap,
        ],
    )

    assert [
        (True, False, False, 0),
        (True, False, False, 0),
        (False, False, False, 1),
        (False, False, False, 1),
        (False, False, False, 1),
        (False, False, True, 2),
    ] == expected


def test_verify_sets_checksum_finish_time_and_last_file_downloaded_time(store: PostgresGranuleStore) -> None:
    """Verify stores the lowercase checksum, the finish time and the status row, and clears the last error."""
    _seed(store, "g")
    store.claim("g", "w-1", NOW, 60)
    store.record("g", lifecycle.CountFailure(owner="w-1", error="reset"))
    store.claim("g", "w-1", NOW, 60)

    verified = store.record("g", lifecycle.Verify(owner="w-1", checksum="D41D8CD98F00B204E9800998ECF8427E"))

    assert (State.VERIFIED, "d41d8cd98f00b204e9800998ecf8427e", None, None) == (
        verified.state,
        verified.checksum,
        verified.lease,
        verified.last_error,
    )
    legacy = _legacy(store, "g")
    assert (False, True, False, "d41d8cd98f00b204e9800998ecf8427e", NAIVE_FINISHED) == (
        legacy["in_progress"],
        legacy["downloaded"],
        legacy["download_failed"],
        legacy["checksum"],
        legacy["download_finished"],
    )
    assert FINISHED.isoformat() == store.status_report().last_file_downloaded_time


def test_mark_upload_sent_records_when_and_only_on_verified_granules(store: PostgresGranuleStore) -> None:
    """MarkUploadSent is refused before verification, then sets upload_queued_at but not `uploaded`."""
    _seed(store, "g")
    store.claim("g", "w-1", NOW, 60)
    with pytest.raises(InvalidTransition):
        store.record("g", lifecycle.MarkUploadSent())
    store.record("g", lifecycle.Verify(owner="w-1", checksum="ab"))

    marked = store.record("g", lifecycle.MarkUploadSent())

    legacy = _legacy(store, "g")
    assert (True, True, False) == (marked.upload_sent, legacy["upload_queued"], legacy["uploaded"])


def test_release_frees_the_granule_only_for_its_owner(store: PostgresGranuleStore) -> None:
    """Only the holder can hand a granule back; then it is pending, unleased and not in progress."""
    _seed(store, "g")
    store.claim("g", "w-1", NOW, 60)

    assert store.release("g", "w-2") is False
    assert store.release("g", "w-1") is True
    released = store.get("g")
    assert released is not None
    assert (State.PENDING, None, False) == (
        released.state,
        released.lease,
        _legacy(store, "g")["in_progress"],
    )


def test_an_illegal_event_raises_invalid_transition_naming_the_reason(store: PostgresGranuleStore) -> None:
    """A refused event says why, in the domain's words, and changes nothing."""
    _seed(store, "g")
    store.claim("g", "w-1", NOW, 60)
    before = store.get("g")

    with pytest.raises(InvalidTransition, match="held by w-1"):
        store.record("g", lifecycle.Verify(owner="w-2", checksum="ab"))
    with pytest.raises(InvalidTransition, match="no granule nope"):
        store.record("nope", lifecycle.StartDownload(owner="w-1"))
    assert before == store.get("g")


def test_error_text_postgresql_cannot_hold_is_recorded_readably(store: PostgresGranuleStore) -> None:
    """A failure whose message holds NUL or a lone surrogate is still recorded, those characters replaced."""
    _seed(store, "g")
    store.claim("g", "w-1", NOW, 60)

    failed = store.record("g", lifecycle.CountFailure(owner="w-1", error="bad\x00body\udc80"))

    assert "bad\ufffdbody?" == failed.last_error


def test_status_report_counts_states_and_names_the_oldest_lease(
    store: PostgresGranuleStore, db_clock: Clock
) -> None:
    """The report counts every state (zeros included) and names the lease taken longest ago."""
    _seed(store, "p1", "p2", "c-old", "c-new", "d", "v", "f")
    store.claim("c-new", "w-new", NOW, 60)
    db_clock(NOW - dt.timedelta(minutes=10))
    store.claim("c-old", "w-old", NOW, 60)
    db_clock(NOW - dt.timedelta(minutes=5))
    store.claim("d", "w-d", NOW, 60)
    store.record("d", lifecycle.StartDownload(owner="w-d"))
    db_clock(NOW)
    store.claim("v", "w-v", NOW, 60)
    store.record("v", lifecycle.Verify(owner="w-v", checksum="ab"))
    store.claim("f", "w-f", NOW, 60)
    store.record("f", lifecycle.GiveUp(owner="w-f", error="spent"))

    report = store.status_report()

    assert (
        StoreStatus(
            counts={
                State.PENDING: 2,
                State.CLAIMED: 2,
                State.DOWNLOADING: 1,
                State.VERIFIED: 1,
                State.RETRYING: 0,
                State.FAILED: 1,
            },
            last_file_downloaded_time=FINISHED.isoformat(),
            oldest_in_progress=InProgressLease(
                granule_id="c-old",
                owner="w-old",
                expires_at=NOW - dt.timedelta(minutes=10) + dt.timedelta(seconds=60),
                started_at=NOW - dt.timedelta(minutes=10),
            ),
        )
        == report
    )
    assert 7 == report.total


def test_status_report_of_an_empty_table(store: PostgresGranuleStore) -> None:
    """An empty table reports zero everywhere, no last download and no lease."""
    assert StoreStatus(
        counts=dict.fromkeys(State, 0), last_file_downloaded_time=None, oldest_in_progress=None
    ) == (store.status_report())


def test_verify_overwrites_a_last_file_downloaded_time_left_by_hls(
    postgres_pool: ConnectionPool[Any],
) -> None:
    """A status row the HLS downloader wrote is updated in place by the next verification."""
    store = PostgresGranuleStore(postgres_pool, clock=lambda: FINISHED)
    with postgres_pool.connection() as conn:
        conn.execute("TRUNCATE granule, status")
        conn.execute("INSERT INTO status VALUES (%s, '2021-01-14T12:00:00')", (LAST_FILE_DOWNLOADED_TIME,))
    _seed(store, "g")
    store.claim("g", "w-1", NOW, 60)

    store.record("g", lifecycle.Verify(owner="w-1", checksum="ab"))

    assert FINISHED.isoformat() == store.status_report().last_file_downloaded_time


TEN_MINUTES = dt.timedelta(minutes=10)


def test_workers_ten_minutes_apart_neither_steal_a_live_lease_nor_pin_a_granule(
    store: PostgresGranuleStore, db_clock: Clock
) -> None:
    """Leases are judged by the database's clock: a slow and a fast worker clock change nothing."""
    _seed(store, "stolen?", "pinned?")
    # A worker ten minutes slow takes a 60 s lease; one ten minutes fast, 30 s later, would
    # see it long expired by its own clock.
    slow = store.claim("stolen?", "w-slow", NOW - TEN_MINUTES, 60)
    db_clock(NOW + dt.timedelta(seconds=30))
    thief = store.claim("stolen?", "w-fast", NOW + dt.timedelta(seconds=30) + TEN_MINUTES, 60)
    # A worker ten minutes fast takes a 60 s lease and dies; 61 s later a worker ten
    # minutes slow must be able to take over, though by the dead one's clock it is not time.
    db_clock(NOW)
    store.claim("pinned?", "w-fast", NOW + TEN_MINUTES, 60)
    db_clock(NOW + dt.timedelta(seconds=61))
    rescuer = store.claim("pinned?", "w-slow", NOW + dt.timedelta(seconds=61) - TEN_MINUTES, 60)

    assert slow is not None
    assert thief is not None
    assert rescuer is not None
    assert (True, NOW + dt.timedelta(seconds=60)) == (
        thief.held_by("w-slow"),
        slow.lease.expires_at if slow.lease else None,
    )
    assert (True, NOW + dt.timedelta(seconds=121)) == (
        rescuer.held_by("w-slow"),
        rescuer.lease.expires_at if rescuer.lease else None,
    )


def test_a_heartbeat_extends_the_lease_from_the_database_clock(
    store: PostgresGranuleStore, db_clock: Clock
) -> None:
    """A heartbeat from a worker ten minutes fast extends the lease from the database's now, not its own."""
    _seed(store, "g")
    store.claim("g", "w-1", NOW + TEN_MINUTES, 60)
    db_clock(NOW + dt.timedelta(seconds=50))

    assert store.heartbeat("g", "w-1", NOW + TEN_MINUTES + dt.timedelta(seconds=50), 60) is True
    granule = store.get("g")
    assert granule is not None
    assert NOW + dt.timedelta(seconds=110) == (granule.lease.expires_at if granule.lease else None)


def test_the_first_claim_sets_first_attempt_at_and_later_claims_keep_it(
    store: PostgresGranuleStore, db_clock: Clock
) -> None:
    """first_attempt_at is the database time of the first claim; postponements and claims after keep it."""
    _seed(store, "g")
    store.claim("g", "w-1", NOW - TEN_MINUTES, 60)
    store.record("g", lifecycle.Postpone(owner="w-1", error="503"))
    db_clock(NOW + dt.timedelta(days=1))
    again = store.claim("g", "w-2", NOW, 60)

    assert again is not None
    assert (NOW, "w-2") == (again.first_attempt_at, again.lease.owner if again.lease else None)
    with store.pool.connection() as conn:
        row = conn.execute("SELECT first_attempt_at FROM granule WHERE id = 'g'").fetchone()
    assert (NAIVE_NOW,) == row


def test_abandon_fails_the_granule_with_the_last_reason_and_the_legacy_flags(
    store: PostgresGranuleStore,
) -> None:
    """Past its deferral budget a granule is failed by its holder: download_failed set, reason kept."""
    _seed(store, "g")
    store.claim("g", "w-1", NOW, 60)
    store.record("g", lifecycle.StartDownload(owner="w-1"))
    with pytest.raises(InvalidTransition):
        store.record("g", lifecycle.Abandon(owner="w-2", error="server_error: 500"))

    failed = store.record("g", lifecycle.Abandon(owner="w-1", error="server_error: 500"))

    legacy = _legacy(store, "g")
    assert (State.FAILED, "server_error: 500", None, 0) == (
        failed.state,
        failed.last_error,
        failed.lease,
        failed.download_retries,
    )
    assert (False, True, False) == (legacy["in_progress"], legacy["download_failed"], legacy["downloaded"])


def _set(store: PostgresGranuleStore, granule_id: str, assignments: str) -> None:
    """What another HLS writer does: set columns behind the store's back."""
    with store.pool.connection() as conn:
        conn.execute(f"UPDATE granule SET {assignments} WHERE id = %s", (granule_id,))


def test_a_legacy_flag_set_by_another_writer_wins_at_claim(store: PostgresGranuleStore) -> None:
    """downloaded set on a pending row wins (verified), download_failed on a leased one too (failed)."""
    _seed(store, "done-by-hls", "failed-by-hls")
    _set(store, "done-by-hls", "downloaded = true")
    store.claim("failed-by-hls", "w-1", NOW, 60)
    _set(store, "failed-by-hls", "download_failed = true")

    done = store.claim("done-by-hls", "w-2", NOW, 60)
    failed = store.claim("failed-by-hls", "w-2", NOW, 60)

    assert done is not None
    assert failed is not None
    assert (State.VERIFIED, None, State.FAILED, None) == (done.state, done.lease, failed.state, failed.lease)
    assert [] == legacy_flag_mismatches(store.pool)


def test_a_failed_granule_whose_flags_were_reset_is_revived_at_claim(
    store: PostgresGranuleStore, db_clock: Clock
) -> None:
    """download_failed reset with retries within the budget: pending again, deferral budget restarted."""
    _seed(store, "revived", "still-spent")
    for granule_id in ("revived", "still-spent"):
        store.claim(granule_id, "w-1", NOW, 60)
        store.record(granule_id, lifecycle.Abandon(owner="w-1", error="500 for two days"))
    _set(store, "revived", "download_failed = false, download_retries = 0")
    _set(store, "still-spent", "download_failed = false, download_retries = 11")
    db_clock(NOW + dt.timedelta(days=3))
    reviving = PostgresGranuleStore(store.pool, max_retries=10)

    unconfigured = store.claim("revived", "w-2", NOW, 60)
    revived = reviving.claim("revived", "w-2", NOW, 60)
    spent = reviving.claim("still-spent", "w-2", NOW, 60)

    assert unconfigured is not None
    assert revived is not None
    assert spent is not None
    assert State.FAILED == unconfigured.state
    assert (State.CLAIMED, NOW + dt.timedelta(days=3)) == (revived.state, revived.first_attempt_at)
    assert State.FAILED == spent.state
