"""The hub simulator in a process of its own, driven over a pipe.

In the benchmark's own process the simulator's threads would share a GIL with
whatever else runs there; in its own process it competes for CPU like a real
server on the same machine would, and no more. ``RemoteHub`` stands in for
``HubSimulator`` wherever the testing stack uses it (``Services.hub``): the same
``start``/``stop``, URLs, ``add_product``, ``add_faults`` and ``rate_limit``.

The child (``python -m benchmarks.hubproc``) reads one JSON config line, prints
``{"base_url": ...}``, then answers one JSON command per line until its stdin
closes, so it dies with the process that started it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import attrs

from benchmarks.measure import child_pythonpath
from benchmarks.peer_routes import PeerHub
from s2_downloader.testing.hubsim import TOKEN_PATH, Fault, SimProduct

__all__ = ["RemoteHub", "serve"]

_ROOT = Path(__file__).resolve().parent.parent


@attrs.define
class RemoteHub:
    """A ``HubSimulator`` (with sentinelsat's extra routes) in a child process."""

    username: str = "sim-user"
    password: str = attrs.field(default="sim-password", repr=False)
    initial_rate_limit: float | None = None
    _process: subprocess.Popen[str] | None = attrs.field(default=None, init=False, repr=False)
    _base_url: str = attrs.field(default="", init=False)
    _rate_limit: float | None = attrs.field(default=None, init=False)
    _products: dict[str, SimProduct] = attrs.field(factory=dict, init=False, repr=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)

    # -- life cycle -----------------------------------------------------------------

    def start(self) -> RemoteHub:
        """Start the child and wait for its URL."""
        if self._process is not None:
            return self
        self._process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.hubproc"],
            cwd=_ROOT,
            env={**os.environ, "PYTHONPATH": child_pythonpath()},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        config = {"username": self.username, "password": self.password, "rate_limit": self.initial_rate_limit}
        self._base_url = self._call(config)["base_url"]
        self._rate_limit = self.initial_rate_limit
        return self

    def stop(self) -> None:
        """Close the child's stdin (it stops serving and exits), then reap it."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> RemoteHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        """The child's process id (for CPU accounting)."""
        assert self._process is not None
        return self._process.pid

    # -- where things are -------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return self._base_url

    @property
    def identity_url(self) -> str:
        """The CDSE token endpoint."""
        return self._base_url + TOKEN_PATH

    @property
    def catalogue_url(self) -> str:
        """COPERNICUS_CHECKSUM_URL: one origin with the zipper here (the benchmarks measure, not route)."""
        return self._base_url

    @property
    def zipper_url(self) -> str:
        """COPERNICUS_ZIPPER_URL."""
        return self._base_url

    def dhus_download_url(self, product_id: str) -> str:
        """The DHuS ``$value`` URL of ``product_id``."""
        return f"{self._base_url}/dhus/odata/v1/Products('{product_id}')/$value"

    def cdse_download_url(self, product_id: str) -> str:
        """The CDSE zipper URL of ``product_id``."""
        return f"{self._base_url}/odata/v1/Products({product_id})/$value"

    # -- scripting --------------------------------------------------------------------

    def add_product(
        self, product_id: str, size: int, *, seed: int | None = None, faults: Iterable[Fault] = ()
    ) -> SimProduct:
        """Serve ``size`` synthetic bytes as ``product_id``; the same bytes as the in-process simulator."""
        reply = self._call(
            {
                "op": "add_product",
                "id": product_id,
                "size": size,
                "seed": seed,
                "faults": [attrs.asdict(f) for f in faults],
            }
        )
        product = SimProduct(id=product_id, size=size, md5=reply["md5"], seed=reply["seed"])
        self._products[product_id] = product
        return product

    def product(self, product_id: str) -> SimProduct:
        """The product added as ``product_id``."""
        return self._products[product_id]

    def add_faults(self, product_id: str, *faults: Fault) -> None:
        """Queue more faults for ``product_id``."""
        self._call({"op": "add_faults", "id": product_id, "faults": [attrs.asdict(f) for f in faults]})

    def set_checksum_wrong(self, product_id: str, *, wrong: bool = True) -> None:
        """Make ``product_id``'s published MD5 wrong for good (or right again)."""
        self._call({"op": "checksum_wrong", "id": product_id, "wrong": wrong})

    @property
    def rate_limit(self) -> float | None:
        """Bytes per second per connection (``None``: as fast as it goes)."""
        return self._rate_limit

    @rate_limit.setter
    def rate_limit(self, value: float | None) -> None:
        self._call({"op": "rate_limit", "value": value})
        self._rate_limit = value

    def request_count(self, endpoint: str | None = None) -> int:
        """How many requests the simulator answered (to ``endpoint``, if given)."""
        return int(self._call({"op": "count", "endpoint": endpoint})["count"])

    def _call(self, command: dict[str, Any]) -> dict[str, Any]:
        process = self._process
        assert process is not None
        assert process.stdin is not None
        assert process.stdout is not None
        with self._lock:
            process.stdin.write(json.dumps(command) + "\n")
            process.stdin.flush()
            line = process.stdout.readline()
        if not line:
            msg = f"the hub process exited ({process.poll()})"
            raise RuntimeError(msg)
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"hub process: {reply['error']}")
        return reply


def _answer(sim: PeerHub, command: dict[str, Any]) -> dict[str, Any]:
    op = command.get("op")
    if op == "add_product":
        faults = [Fault(**f) for f in command["faults"]]
        product = sim.add_product(command["id"], command["size"], seed=command["seed"], faults=faults)
        return {"md5": product.md5, "seed": product.seed}
    if op == "add_faults":
        sim.add_faults(command["id"], *(Fault(**f) for f in command["faults"]))
        return {}
    if op == "checksum_wrong":
        sim.set_checksum_wrong(command["id"], wrong=command["wrong"])
        return {}
    if op == "rate_limit":
        sim.rate_limit = command["value"]
        return {}
    if op == "count":
        wanted = command.get("endpoint")
        return {"count": sum(1 for r in sim.requests if wanted is None or r.endpoint == wanted)}
    return {"error": f"unknown op {op!r}"}


def serve(stdin: IO[str], stdout: IO[str]) -> None:
    """The child's loop: config line, URL, then one reply per command until stdin closes."""
    config = json.loads(stdin.readline())
    sim = PeerHub(username=config["username"], password=config["password"], rate_limit=config["rate_limit"])
    with sim:
        stdout.write(json.dumps({"base_url": sim.base_url}) + "\n")
        stdout.flush()
        for line in stdin:
            try:
                reply = _answer(sim, json.loads(line))
            except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            stdout.write(json.dumps(reply) + "\n")
            stdout.flush()


if __name__ == "__main__":
    serve(sys.stdin, sys.stdout)
