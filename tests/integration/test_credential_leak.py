"""No credential leaves the hub: hostile download URLs and redirects against a second listener.

A listener on another port of 127.0.0.1 records every connection and request that reaches
it. Hostile ``download_url`` values and hostile redirect ``Location`` headers go through the
real hub adapters (DHuS and CDSE) over real HTTP; the listener must see no request carrying
credentials, and for every URL the rules refuse, no connection at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import attrs
import pytest
import urllib3

from s2_downloader.adapters.hub import CdseHub, DhusHub
from s2_downloader.domain.errors import BadRequest, HubError
from s2_downloader.domain.request import DownloadRequest
from s2_downloader.testing.hubsim import Fault, HubSimulator
from s2_downloader.testing.stack import Services
from tests.integration.fixtures_hub import HUB_PASSWORD, cdse_request, dhus_request, fetch
from tests.integration.fixtures_stack import run_cli

pytestmark = pytest.mark.integration


@attrs.define
class Seen:
    """What reached the listener: connections accepted, and each request's method, path and headers."""

    connections: int = 0
    requests: list[tuple[str, str, dict[str, str]]] = attrs.field(factory=list)
    lock: threading.Lock = attrs.field(factory=threading.Lock)

    @property
    def authorizations(self) -> list[str]:
        """Every Authorization header received."""
        with self.lock:
            return [h["authorization"] for _, _, h in self.requests if "authorization" in h]


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Listener

    def setup(self) -> None:
        super().setup()
        with self.server.seen.lock:
            self.server.seen.connections += 1

    def _record(self) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        with self.server.seen.lock:
            self.server.seen.requests.append((self.command, self.path, headers))
        body = b"collected"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_HEAD = _record  # noqa: N815 - http.server's naming

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        del format, args


class _Listener(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        self.seen = Seen()
        super().__init__(("127.0.0.1", 0), _Recorder)


@pytest.fixture
def listener() -> Iterator[_Listener]:
    """The attacker's server: a second port on 127.0.0.1 that records whatever reaches it."""
    server = _Listener()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _hostile_urls(hub: str, evil: str, path: str) -> list[str]:
    """Download URLs that name the hub somewhere but (for some reader) lead to ``evil``."""
    return [
        f"http://{evil}\\@{hub}{path}",
        f"http://{evil}%5C@{hub}{path}",
        f"http://{evil}%40{hub}{path}",
        f"http://{evil}\t@{hub}{path}",
        f"http://{evil}\n@{hub}{path}",
        f"http://{evil}#@{hub}{path}",
        f"http://{evil}?@{hub}{path}",
        f"http://{evil}/{hub}{path}",
        f"http://{hub}@{evil}{path}",
        f"http://user:pw@{evil}{path}",
        f"http://{evil}{path}",
        f"http://{evil.replace('127.0.0.1', 'localhost')}{path}",
        f"HTTP://{evil}{path}",
        f"http://{evil}\u3002{path}",
        f"\thttp://{evil}{path}",
        f"http:\\\\{evil}{path}",
        f"http:/{evil}{path}",
    ]


def _hostile_locations(hub: str, evil: str) -> list[str]:
    """Redirect targets a compromised or confused hub might send."""
    return [
        f"http://{evil}\\@{hub}/x",
        f"http://{evil}%5C@{hub}/x",
        f"http://{evil}\t@{hub}/x",
        f"//{evil}\\@{hub}/x",
        f"\\\\{evil}/x",
        f"/\\{evil}/x",
        "//" + evil.replace(".", "\t.", 1) + "/x",
        f"http://{hub}@{evil}/x",
        f"http://user:pw@{evil}/x",
        f"ftp://{evil}/x",
    ]


def _address(listener: _Listener) -> str:
    return f"127.0.0.1:{listener.server_address[1]}"


@pytest.mark.parametrize("index", range(len(_hostile_urls("h", "e", "/p"))))
def test_hostile_download_urls_never_reach_another_listener_through_dhus(
    hub_sim: HubSimulator, dhus_hub: DhusHub, listener: _Listener, index: int
) -> None:
    """Every hostile download_url is bad input for DHuS and, given to the adapter anyway, reaches no one."""
    hub_sim.add_product("P", 1000)
    hub = f"127.0.0.1:{hub_sim.port}"
    url = _hostile_urls(hub, _address(listener), "/dhus/odata/v1/Products('P')/$value")[index]

    with pytest.raises(BadRequest):
        dhus_hub.accepts_download_url(url)
    with pytest.raises(HubError), dhus_hub.open_product(_request(url), 0):
        pass

    assert (0, []) == (listener.seen.connections, listener.seen.requests)


@pytest.mark.parametrize("index", range(len(_hostile_urls("h", "e", "/p"))))
def test_hostile_download_urls_never_reach_another_listener_through_cdse(
    hub_sim: HubSimulator, cdse_hub: CdseHub, listener: _Listener, index: int
) -> None:
    """CDSE fetches from the zipper whatever the link says, so no hostile link reaches the listener."""
    product = hub_sim.add_product("P", 1000)
    hub = f"127.0.0.1:{hub_sim.port}"
    url = _hostile_urls(hub, _address(listener), "/odata/v1/Products(P)/$value")[index]

    # Most are bad input; a well-formed link to another port of a CDSE host (127.0.0.1 here)
    # is an acceptable link, harmless because it is never fetched.
    with contextlib.suppress(BadRequest):
        cdse_hub.accepts_download_url(url)
    got = fetch(cdse_hub, _request(url), product)

    assert product.md5 == got.file_md5
    assert (0, []) == (listener.seen.connections, listener.seen.requests)


@pytest.mark.parametrize("index", range(len(_hostile_locations("h", "e"))))
def test_hostile_redirects_from_dhus_reach_no_one(
    hub_sim: HubSimulator, dhus_hub: DhusHub, listener: _Listener, index: int
) -> None:
    """A malformed or userinfo-laden Location from the hub is a BAD_RESPONSE and is not followed."""
    product = hub_sim.add_product("P", 1000)
    location = _hostile_locations(f"127.0.0.1:{hub_sim.port}", _address(listener))[index]
    hub_sim.add_faults("P", Fault.redirect(location))

    with pytest.raises(HubError):
        fetch(dhus_hub, dhus_request(hub_sim, "P"), product)

    assert (0, []) == (listener.seen.connections, listener.seen.requests)


@pytest.mark.parametrize("index", range(len(_hostile_locations("h", "e"))))
def test_hostile_redirects_from_cdse_reach_no_one(
    hub_sim: HubSimulator, cdse_hub: CdseHub, listener: _Listener, index: int
) -> None:
    """The same Locations from the CDSE zipper are refused before any connection."""
    product = hub_sim.add_product("P", 1000)
    location = _hostile_locations(f"127.0.0.1:{hub_sim.port}", _address(listener))[index]
    hub_sim.add_faults("P", Fault.redirect(location))

    with pytest.raises(HubError):
        fetch(cdse_hub, cdse_request(hub_sim, "P"), product)

    assert (0, []) == (listener.seen.connections, listener.seen.requests)


def test_a_plain_redirect_off_the_dhus_origin_carries_no_credentials(
    hub_sim: HubSimulator, dhus_hub: DhusHub, listener: _Listener
) -> None:
    """A well-formed redirect to another origin is followed (DHuS mirrors do that) without Authorization."""
    product = hub_sim.add_product("P", 1000)
    hub_sim.add_faults("P", Fault.redirect(f"http://{_address(listener)}/stolen"))

    with contextlib.suppress(HubError):
        fetch(dhus_hub, dhus_request(hub_sim, "P"), product)

    assert [] == listener.seen.authorizations
    assert all(HUB_PASSWORD not in str(request) for request in listener.seen.requests)


def test_a_plain_redirect_off_the_cdse_hosts_is_refused(
    hub_sim: HubSimulator, cdse_hub: CdseHub, listener: _Listener
) -> None:
    """CDSE follows the token only to the zipper or an https download host: the listener sees nothing."""
    product = hub_sim.add_product("P", 1000)
    hub_sim.add_faults("P", Fault.redirect(f"http://{_address(listener)}/stolen"))

    with pytest.raises(HubError):
        fetch(cdse_hub, cdse_request(hub_sim, "P"), product)

    assert (0, []) == (listener.seen.connections, listener.seen.requests)


def test_the_listener_does_record_what_reaches_it(listener: _Listener) -> None:
    """The listener is not blind: a direct request is recorded with its headers."""
    with urllib3.PoolManager() as pool:
        pool.request("GET", f"http://{_address(listener)}/probe", headers={"Authorization": "Basic x"})

    assert (1, ["Basic x"]) == (listener.seen.connections, listener.seen.authorizations)


def _request(url: str) -> DownloadRequest:
    # Built directly, skipping the message check, to prove the adapter holds the line by itself.
    return DownloadRequest(id="P", filename="P.zip", download_url=url)


# -- the whole pipeline: hostile messages through the installed runner ----------------------


@pytest.mark.parametrize("hub_api", ["dhus", "cdse"])
def test_hostile_messages_through_the_runner_reach_no_one(
    services: Services, listener: _Listener, hub_api: Literal["dhus", "cdse"]
) -> None:
    """Hostile download_urls (DHuS: with a forged checksum) on the queue: the runner verifies the good
    granule, stores nothing from the listener, and the listener sees no connection at all."""
    suffix = secrets.token_hex(3).upper()
    hostile = _hostile_urls("HUB", _address(listener), "PATH")
    with services.pipeline(hub_api=hub_api, visibility_timeout=2, max_receive_count=1) as pipeline:
        # One granule per hostile message, so no message waits behind another's lease.
        good, *targets = pipeline.seed(
            [(f"GOOD{suffix}", 100_000), *((f"EVIL{suffix}{i:02d}", 1000) for i in range(len(hostile)))],
            send=False,
        )
        hub = f"127.0.0.1:{pipeline.hub.port}"
        forged = hashlib.md5(b"collected", usedforsecurity=False).hexdigest()
        client = services.sqs.client()
        client.send_message(QueueUrl=pipeline.queues.download_url, MessageBody=pipeline.message(good.id))
        for index, target in enumerate(targets):
            path = urllib.parse.urlsplit(pipeline.download_url(target.id)).path
            url = _hostile_urls(hub, _address(listener), path)[index]
            body = {"id": target.id, "filename": f"{target.id}.zip", "download_url": url}
            if hub_api == "dhus":
                # The full attack: the listener's bytes would pass as verified. (CDSE accepts a
                # well-formed link to another port of its own host, harmlessly, since it
                # downloads from the zipper; a forged checksum there only costs retries.)
                body["checksum"] = forged
            client.send_message(QueueUrl=pipeline.queues.download_url, MessageBody=json.dumps(body))

        result = run_cli(pipeline, "run", "--until-empty", timeout=180)

        assert 0 == result.returncode, result.stderr[-3000:]
        assert (0, []) == (listener.seen.connections, listener.seen.requests)
        assert "verified" == pipeline.rows()[good.id]["state"]
        for target in targets:
            stored = pipeline.final_path(target.id)
            if stored.exists():
                assert forged != hashlib.md5(stored.read_bytes(), usedforsecurity=False).hexdigest()
