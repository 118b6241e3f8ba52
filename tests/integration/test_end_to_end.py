"""End to end: the installed CLI over PostgreSQL, moto server, the hub simulator and a real directory."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from s2_downloader.testing.hubsim import Fault, RecordedRequest
from s2_downloader.testing.stack import Pipeline
from tests.integration.e2e import (
    assert_verified,
    dead_letters,
    file_md5,
    on_disk,
    partial_files,
    rows,
    upload_bodies,
)
from tests.integration.fixtures_stack import log_events, run_cli, start_runner
from tests.waiting import wait_until

KIB = 1024
MIB = 1024 * KIB


def _run_until_empty(
    pipeline: Pipeline, *args: str, timeout: float = 180, **env: str
) -> subprocess.CompletedProcess[str]:
    result = run_cli(pipeline, "run", "--until-empty", *args, timeout=timeout, **env)
    assert 0 == result.returncode, result.stderr[-3000:]
    return result


def _value_requests(pipeline: Pipeline, product_id: str) -> int:
    return len(pipeline.hub.requests_to("dhus_value", product_id)) + len(
        pipeline.hub.requests_to("zipper", product_id)
    )


def test_thirty_granules_on_the_happy_path(pipeline: Pipeline) -> None:
    """30 granules are each downloaded once, verified, announced, and the queues end empty."""
    products = pipeline.seed([(f"HAPPY{i:02d}", (i + 1) * 37 * KIB) for i in range(30)])
    result = _run_until_empty(pipeline, "--concurrency", "8")
    assert_verified(pipeline, products)
    assert sorted(p.id for p in products) == sorted(b["id"] for b in upload_bodies(pipeline))
    assert all(1 == _value_requests(pipeline, p.id) for p in products)
    verified = [e for e in log_events(result.stderr) if e.get("event") == "download_verified"]
    assert 30 == len(verified)
    assert {"bytes", "seconds", "mb_per_s", "attempt", "resumed_from"} <= set(verified[0])
    status = run_cli(pipeline, "status", "--json")
    assert 0 == status.returncode, status.stderr
    report = json.loads(status.stdout)
    assert 30 == report["counts"]["verified"]
    assert report["last_file_downloaded_time"] is not None


def test_the_same_message_five_times_downloads_once(pipeline: Pipeline) -> None:
    """Five copies of one message give one download and one verified file."""
    pipeline.hub.rate_limit = 4 * MIB
    (product,) = pipeline.seed([("DUP01", 2 * MIB)])
    client = pipeline.services.sqs.client()
    for _ in range(4):
        client.send_message(QueueUrl=pipeline.queues.download_url, MessageBody=pipeline.message("DUP01"))
    _run_until_empty(pipeline, "--concurrency", "5", LEASE_SECONDS="3")
    assert_verified(pipeline, [product])
    assert 1 == _value_requests(pipeline, "DUP01")
    assert ["DUP01"] == sorted({b["id"] for b in upload_bodies(pipeline)})


def test_bad_messages_are_dead_lettered_and_good_ones_still_flow(pipeline: Pipeline) -> None:
    """Every kind of bad message goes to the dead-letter queue without a file; good ones verify."""
    products = pipeline.seed([("GOOD1", 100 * KIB), ("GOOD2", 200 * KIB)])
    good_url = pipeline.download_url("GOOD1")
    bad = [
        "not json",
        "[1, 2, 3]",
        json.dumps({"id": "X1", "filename": "x.zip"}),
        json.dumps({"id": 7, "filename": "x.zip", "download_url": good_url}),
        json.dumps({"id": "../../etc", "filename": "x.zip", "download_url": good_url}),
        json.dumps({"id": "X2", "filename": "../x.zip", "download_url": good_url}),
        json.dumps({"id": "X3", "filename": ".hidden", "download_url": good_url}),
        json.dumps({"id": "X4", "filename": "x.zip", "download_url": "http://198.51.100.7/steal"}),
    ]
    client = pipeline.services.sqs.client()
    for body in bad:
        client.send_message(QueueUrl=pipeline.queues.download_url, MessageBody=body)
    result = _run_until_empty(pipeline)
    assert_verified(pipeline, products)
    assert sorted(bad) == sorted(dead_letters(pipeline))
    assert ["GOOD1", "GOOD2"] == sorted(p.name for p in pipeline.efs_dir.iterdir())
    reasons = [e for e in log_events(result.stderr) if e.get("event") == "bad_message"]
    assert len(bad) <= len(reasons)


def test_transient_hub_faults_resume_the_download(pipeline: Pipeline) -> None:
    """A 503, a reset, a short body and throttling all end verified; the short body is resumed with Range."""
    products = pipeline.seed(
        [("FLAKY1", 3 * MIB), ("FLAKY2", 3 * MIB), ("FLAKY3", 1 * MIB), ("FLAKY4", 2 * MIB)],
        faults={
            "FLAKY1": [Fault.status(503, retry_after="1")],
            "FLAKY2": [Fault.short_body(1 * MIB)],
            "FLAKY4": [Fault.reset_after(1 * MIB)],
            "FLAKY3": [Fault.dhus_concurrent_flows(), Fault.status(500)],
        },
    )
    result = _run_until_empty(pipeline)
    assert_verified(pipeline, products)
    resumed = {
        e["granule_id"]: e["resumed_from"]
        for e in log_events(result.stderr)
        if e.get("event") == "download_verified"
    }
    assert resumed["FLAKY2"] > 0
    ranges = [r.range for r in pipeline.hub.requests_to("dhus_value", "FLAKY2")]
    assert ranges[-1] is not None
    assert ranges[-1].startswith("bytes=")
    table = rows(pipeline)
    assert (0, 1, 0) == (
        table["FLAKY1"]["download_retries"],
        table["FLAKY2"]["download_retries"],
        table["FLAKY3"]["download_retries"],
    )


def test_a_wrong_checksum_then_the_right_one(pipeline: Pipeline) -> None:
    """A wrongly published checksum costs one counted retry; the checksum is fetched again and matches."""
    (product,) = pipeline.seed([("WRONGSUM", 512 * KIB)], faults={"WRONGSUM": [Fault.wrong_checksum()]})
    _run_until_empty(pipeline)
    assert_verified(pipeline, [product])
    assert 1 == rows(pipeline)["WRONGSUM"]["download_retries"]
    assert 2 == len(pipeline.hub.requests_to("dhus_checksum", "WRONGSUM"))


def test_a_spent_retry_budget_fails_the_granule(pipeline: Pipeline) -> None:
    """Always-corrupt bytes exhaust MAX_DOWNLOAD_RETRIES: failed, no file, message dead-lettered."""
    pipeline.seed([("CORRUPT", 256 * KIB)], faults={"CORRUPT": [Fault.corrupt()] * 3})
    _run_until_empty(pipeline, MAX_DOWNLOAD_RETRIES="1")
    row = rows(pipeline)["CORRUPT"]
    assert ("failed", True, False, 2) == (
        row["state"],
        row["download_failed"],
        row["downloaded"],
        row["download_retries"],
    )
    assert not pipeline.final_path("CORRUPT").exists()
    assert [] == partial_files(pipeline)
    assert [pipeline.message("CORRUPT")] == dead_letters(pipeline)


def test_good_and_corrupt_files_already_at_the_final_path(pipeline: Pipeline) -> None:
    """A matching file is verified without a download; a corrupt one is replaced."""
    good, bad = pipeline.seed([("ONDISK1", 300 * KIB), ("ONDISK2", 300 * KIB)])
    for product, content in ((good, b"".join(good.iter_bytes())), (bad, b"garbage" * 1000)):
        path = pipeline.final_path(product.id)
        path.parent.mkdir(parents=True)
        path.write_bytes(content)
    _run_until_empty(pipeline)
    assert_verified(pipeline, [good, bad])
    assert (0, 1) == (_value_requests(pipeline, "ONDISK1"), _value_requests(pipeline, "ONDISK2"))


def test_kill_nine_mid_download_then_restart_resumes(pipeline: Pipeline) -> None:
    """A runner killed with SIGKILL leaves only a partial; the next runner resumes it and verifies."""
    pipeline.hub.rate_limit = 2 * MIB
    (product,) = pipeline.seed([("KILLED", 8 * MIB)])
    runner = start_runner(pipeline, LEASE_SECONDS="3")
    partial = pipeline.efs_dir / "KILLED" / ".KILLED.zip.partial"
    assert wait_until(lambda: partial.exists() and partial.stat().st_size > MIB, timeout=30, interval=0.1), (
        "no partial over 1 MiB within 30 s: the kill would not land mid-download"
    )
    runner.send_signal(signal.SIGKILL)
    runner.communicate(timeout=10)
    assert partial.exists()
    assert not pipeline.final_path("KILLED").exists()
    pipeline.hub.rate_limit = None
    result = _run_until_empty(pipeline, LEASE_SECONDS="3")
    assert_verified(pipeline, [product])
    verified = [e for e in log_events(result.stderr) if e.get("event") == "download_verified"]
    assert verified[0]["resumed_from"] > MIB


def _partial(pipeline: Pipeline, product_id: str) -> Path:
    return pipeline.efs_dir / product_id / f".{pipeline.filename(product_id)}.partial"


def _transfers(pipeline: Pipeline, product_ids: Iterable[str], since: float) -> list[RecordedRequest]:
    """The product requests answered with a body (200/206) since ``since``."""
    wanted = set(product_ids)
    return [
        r
        for r in pipeline.hub.requests
        if r.endpoint in {"dhus_value", "zipper"}
        and r.product_id in wanted
        and r.status in {200, 206}
        and r.at >= since
    ]


def _streaming(pipeline: Pipeline, endpoint: str, product_ids: Iterable[str]) -> bool:
    """Whether a product body is being sent right now for one of ``product_ids``."""
    return any(r.status in {200, 206} for r in pipeline.hub.in_flight(endpoint, product_ids))


@contextlib.contextmanager
def _background(runner: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """The runner, killed on the way out if a failed assertion left it running."""
    try:
        yield runner
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.communicate(timeout=10)


def test_sigterm_hands_messages_back_and_releases_granules(pipeline: Pipeline) -> None:
    """SIGTERM mid-download exits 0, releases the lease and leaves the message to come back."""
    # 40 MiB at 1 MiB/s: the download is under way for far longer than the signal takes to land.
    pipeline.hub.rate_limit = 1 * MIB
    (product,) = pipeline.seed([("TERMED", 40 * MIB)])
    partial = _partial(pipeline, "TERMED")
    began = time.monotonic()
    with _background(start_runner(pipeline)) as runner:
        mid_download = wait_until(
            lambda: on_disk(partial) > 0 and _streaming(pipeline, "dhus_value", ["TERMED"]), timeout=60
        )
        assert mid_download, (
            "TERMED never had bytes on disk while downloading: SIGTERM would miss the download"
        )
        signalled = time.monotonic()
        runner.send_signal(signal.SIGTERM)
        _, stderr = runner.communicate(timeout=60)
    assert 0 == runner.returncode, stderr[-2000:]
    (transfer,) = _transfers(pipeline, ["TERMED"], began)
    assert pipeline.hub.was_in_flight(transfer, signalled)
    assert 0 < on_disk(partial) < product.size
    row = rows(pipeline)["TERMED"]
    assert ("pending", None, False) == (row["state"], row["lease_owner"], row["in_progress"])
    pipeline.hub.rate_limit = None
    result = _run_until_empty(pipeline)
    assert_verified(pipeline, [product])
    verified = [e for e in log_events(result.stderr) if e.get("event") == "download_verified"]
    assert verified[0]["resumed_from"] > 0


def test_postgres_restart_mid_run_loses_nothing(pipeline: Pipeline) -> None:
    """PostgreSQL restarting while downloads run costs time, not granules."""
    # 3 MiB at 1 MiB/s each: a transfer outlasts the restart, so the restart lands inside one.
    pipeline.hub.rate_limit = 1 * MIB
    products = pipeline.seed([(f"PGR{i}", 3 * MIB) for i in range(6)])
    ids = [p.id for p in products]
    began = time.monotonic()
    with _background(start_runner(pipeline, "--until-empty", "--concurrency", "3")) as runner:
        mid_download = wait_until(
            lambda: (
                any(on_disk(_partial(pipeline, i)) > 0 for i in ids)
                and _streaming(pipeline, "dhus_value", ids)
            ),
            timeout=60,
        )
        assert mid_download, "no bytes on disk while a download ran: the restart would not land mid-run"
        restarting = time.monotonic()
        pipeline.services.postgres.restart()
        _, stderr = runner.communicate(timeout=180)
    assert 0 == runner.returncode, stderr[-3000:]
    overlapping = [r for r in _transfers(pipeline, ids, began) if pipeline.hub.was_in_flight(r, restarting)]
    assert overlapping, "no transfer was under way when PostgreSQL went down"
    assert_verified(pipeline, products)


def test_cdse_token_expiring_mid_download(pipeline: Pipeline) -> None:
    """CDSE: a token expiring while a product streams is refused, then refreshed; every product verifies."""
    pipeline.hub_api = "cdse"
    hub = pipeline.hub
    # Tokens live long (the default), so the one expiry is the one made mid-transfer below;
    # 3 MiB at 2 MiB/s keeps each transfer going for 1.5 s, and four products at concurrency 2
    # leave requests to make after it.
    hub.rate_limit = 2 * MIB
    products = pipeline.seed([(f"CDSE{i}", 3 * MIB) for i in range(4)])
    ids = [p.id for p in products]
    began = time.monotonic()
    expiries: list[float] = []

    def expire_while_streaming() -> None:
        # Not on a timer: the runner's start-up alone can outlast one, and then no token expires.
        if wait_until(lambda: _streaming(pipeline, "zipper", ids), timeout=60):
            hub.expire_tokens()
            expiries.append(hub.token_expiries[-1])

    expirer = threading.Thread(target=expire_while_streaming, daemon=True)
    expirer.start()
    _run_until_empty(pipeline, "--concurrency", "2")
    expirer.join(timeout=65)
    assert expiries, "no product transfer was under way within 60 s, so no token expired during one"
    (expiry,) = expiries
    log = [r for r in hub.requests if r.at >= began]
    assert any(hub.was_in_flight(r, expiry) for r in _transfers(pipeline, ids, began))
    old = {r.authorization for r in log if r.endpoint == "zipper" and r.at < expiry}
    refused = [r for r in log if r.at > expiry and r.status == 401 and r.authorization in old]
    assert refused, "no request carrying the expired token was refused after it expired"
    renewed = [r for r in log if r.endpoint == "token" and r.status == 200 and r.at > refused[0].at]
    assert renewed, "no token was granted after the refusal"
    after = [r for r in _transfers(pipeline, ids, renewed[0].at) if r.authorization not in old]
    assert after, "no product was fetched with a new token"
    assert_verified(pipeline, products)
    grants = Counter(r.grant_type for r in log if r.endpoint == "token")
    assert grants["password"] >= 1
    assert sum(grants.values()) >= 2


def test_cdse_messages_as_hls_link_fetcher_sends_them(pipeline: Pipeline) -> None:
    """Catalogue links (push, search), a pre-2023 SciHub link and .SAFE names verify, from the zipper."""
    pipeline.hub_api = "cdse"
    hub = pipeline.hub
    push, search, old = pipeline.seed(
        [("CDSEPUSH", 300 * KIB), ("CDSESEARCH", 200 * KIB), ("CDSEOLD", 100 * KIB)], send=False
    )
    bodies = [
        {
            "id": push.id,
            "filename": f"{push.id}.SAFE",
            "download_url": f"{hub.catalogue_url}/odata/v1/Products({push.id})/$value",
            "checksum": push.md5,
        },
        {
            "id": search.id,
            "filename": f"{search.id}.SAFE",
            "download_url": f"{hub.catalogue_url}/download/{search.id}",
        },
        {
            # A row from the SciHub era, as HLS's requeuer still sends it: SciHub is gone.
            "id": old.id,
            "filename": f"{old.id}.SAFE",
            "download_url": f"https://scihub.copernicus.eu/dhus/odata/v1/Products('{old.id}')/$value",
        },
    ]
    client = pipeline.services.sqs.client()
    for body in bodies:
        client.send_message(QueueUrl=pipeline.queues.download_url, MessageBody=json.dumps(body))
    _run_until_empty(pipeline)
    assert_verified(pipeline, [push, search, old])
    assert pipeline.final_path(push.id).name == f"{push.id}.SAFE"
    zipper, catalogue = (urllib.parse.urlsplit(u).netloc for u in (hub.zipper_url, hub.catalogue_url))
    hosts = {
        (r.endpoint, dict(r.headers).get("Host"))
        for r in hub.requests
        if r.product_id in (push.id, search.id, old.id) or r.endpoint == "token"
    }
    assert catalogue != zipper
    assert {("zipper", zipper), ("token", catalogue)} <= hosts
    assert all(host == zipper for endpoint, host in hosts if endpoint == "zipper")


def test_two_runners_share_one_queue(pipeline: Pipeline) -> None:
    """Two runners on one queue and one database download each granule exactly once."""
    pipeline.hub.rate_limit = 8 * MIB
    products = pipeline.seed([(f"PAIR{i:02d}", 512 * KIB) for i in range(20)])
    runners = [start_runner(pipeline, "--until-empty", "--concurrency", "4") for _ in range(2)]
    for runner in runners:
        _, stderr = runner.communicate(timeout=180)
        assert 0 == runner.returncode, stderr[-3000:]
    assert_verified(pipeline, products)
    assert all(1 == _value_requests(pipeline, p.id) for p in products)
    assert 20 == len({b["id"] for b in upload_bodies(pipeline)})


def test_bad_configuration_exits_two_naming_the_variable(pipeline: Pipeline) -> None:
    """A malformed setting ends run with exit 2 and one line naming the variable."""
    result = run_cli(pipeline, "run", MAX_DOWNLOAD_RETRIES="lots")
    assert 2 == result.returncode
    assert "MAX_DOWNLOAD_RETRIES" in result.stderr
    assert 1 == len(result.stderr.strip().splitlines())


def test_status_while_the_database_is_down_exits_1_with_one_clear_line(pipeline: Pipeline) -> None:
    """GIVEN nothing listening where DATABASE_URL points THEN status exits 1 with one line saying the
    database is unreachable and where, without the password."""
    down = "postgresql://s2:hunter2secret@127.0.0.1:9/granules"

    result = run_cli(pipeline, "status", timeout=60, DATABASE_URL=down)

    assert 1 == result.returncode
    lines = result.stderr.strip().splitlines()
    assert 1 == len(lines), result.stderr
    assert "database unreachable at 127.0.0.1:9" in lines[0]
    assert "hunter2secret" not in result.stderr + result.stdout


def test_migrate_is_idempotent_from_the_cli(pipeline: Pipeline) -> None:
    """migrate on an up-to-date database says so and exits 0."""
    result = run_cli(pipeline, "migrate")
    assert (0, "schema is up to date") == (result.returncode, result.stdout.strip())


def test_no_secret_reaches_the_logs(pipeline: Pipeline) -> None:
    """The hub password never appears in the runner's output, even when the hub fails."""
    pipeline.seed([("QUIET", 64 * KIB)], faults={"QUIET": [Fault.status(500)]})
    result = _run_until_empty(pipeline)
    password = pipeline.services.hub_password
    assert password not in result.stderr + result.stdout
    assert file_md5(pipeline.final_path("QUIET"))
