"""The store across PostgreSQL restarts and outages, and the throwaway server itself."""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Iterator

import psycopg
import pytest

from s2_downloader.adapters.postgres import PostgresGranuleStore, migrate, open_pool
from s2_downloader.domain import lifecycle
from s2_downloader.domain.errors import StoreError
from s2_downloader.domain.granule import State
from s2_downloader.testing.postgres import (
    SeedGranule,
    ThrowawayPostgres,
    ThrowawayPostgresError,
    seed_granules,
)

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
PASSWORD = "s3cr3t-Pa55word"


@pytest.fixture
def own_server() -> Iterator[ThrowawayPostgres]:
    """A server of this test's own, so stopping it disturbs no other test."""
    with ThrowawayPostgres() as server:
        yield server


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize("outage", ["restart", "kill"])
def test_store_works_again_after_postgresql_restarts(own_server: ThrowawayPostgres, outage: str) -> None:
    """After a clean restart or a crash and recovery, the same store and pool serve requests again."""
    url = own_server.create_database("s2dl")
    migrate(url)
    seed_granules(
        url, [SeedGranule(id="before", filename="a.zip"), SeedGranule(id="after", filename="b.zip")]
    )
    with open_pool(url, min_size=2, max_size=4) as pool:
        store = PostgresGranuleStore(pool)
        store.claim("before", "w-1", NOW, 60)
        store.record("before", lifecycle.StartDownload(owner="w-1"))

        if outage == "restart":
            own_server.restart()
        else:
            own_server.kill()
            own_server.start()

        claimed = store.claim("after", "w-2", NOW, 60)
        beat = store.heartbeat("before", "w-1", NOW, 60)
        verified = store.record("before", lifecycle.Verify(owner="w-1", checksum="ab"))

    assert claimed is not None
    assert (State.CLAIMED, True, State.VERIFIED) == (claimed.state, beat, verified.state)


def test_store_raises_store_error_while_postgresql_is_down(own_server: ThrowawayPostgres) -> None:
    """With the server stopped a call fails with StoreError, not a psycopg error, then recovers."""
    url = own_server.create_database("s2dl")
    migrate(url)
    seed_granules(url, [SeedGranule(id="g", filename="a.zip")])
    with open_pool(url, max_size=2, timeout=1.0) as pool:
        store = PostgresGranuleStore(pool)
        own_server.stop()
        with pytest.raises(StoreError):
            store.get("g")
        own_server.start()
        # The pool reconnects in the background with a back-off; give it a few tries.
        granule = None
        for _ in range(20):
            try:
                granule = store.get("g")
                break
            except StoreError:
                continue

    assert granule is not None
    assert State.PENDING == granule.state


def test_store_error_for_an_unreachable_database_shows_no_password() -> None:
    """Neither the message nor the repr of a StoreError from an unreachable database holds the password."""
    url = f"postgresql://downloader:{PASSWORD}@127.0.0.1:{_closed_port()}/hls"
    with open_pool(url, max_size=1, timeout=0.5, connect_timeout=1) as pool:
        store = PostgresGranuleStore(pool)
        with pytest.raises(StoreError) as from_pool:
            store.claim("g", "w-1", NOW, 60)
        store_repr = repr(store)
    with pytest.raises(StoreError) as from_migrate:
        migrate(url)
    with pytest.raises(StoreError) as from_keyword_conninfo:
        migrate(f"host=127.0.0.1 port={_closed_port()} user=downloader password={PASSWORD} dbname=hls")

    for error in (from_pool.value, from_migrate.value, from_keyword_conninfo.value):
        assert PASSWORD not in f"{error} {error!r}"
    assert PASSWORD not in store_repr
    assert "migrate failed" in str(from_migrate.value)


def test_throwaway_server_keeps_data_and_port_across_restart(own_server: ThrowawayPostgres) -> None:
    """A restart keeps the port and the data, so the same URL finds the same rows."""
    url = own_server.create_database("keep")
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE kept (value int)")
        conn.execute("INSERT INTO kept VALUES (42)")
    port = own_server.port

    own_server.restart()

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT value FROM kept").fetchone()
    assert (port, (42,)) == (own_server.port, row)


def test_throwaway_server_close_removes_everything() -> None:
    """After close the server no longer accepts connections."""
    server = ThrowawayPostgres()
    server.start()
    url = server.url

    server.close()
    server.close()

    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2)


def test_throwaway_server_start_failure_shows_the_server_log(own_server: ThrowawayPostgres) -> None:
    """A start that cannot bind its port fails with an error quoting the server log."""
    own_server.stop()
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", own_server.port))
        squatter.listen()
        with pytest.raises(ThrowawayPostgresError, match="server log"):
            own_server.start()
    own_server.start()
    assert own_server.running
