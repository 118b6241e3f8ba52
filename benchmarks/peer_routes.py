"""The DHuS endpoints sentinelsat calls that the hub simulator does not serve.

sentinelsat 1.2's ``SentinelAPI.download(id)`` asks, in order:

1. ``GET {api}odata/v1/Products('id')?$format=json``: the whole product entity
   (``Id``, ``Name``, ``ContentLength``, ``Checksum``, ``ContentDate``, ``ContentGeometry``,
   ``CreationDate``, ``IngestionDate``, ``Online``, ``__metadata.media_src``, ``Attributes``);
2. ``HEAD {media_src}``: the file name from ``Content-Disposition``;
3. ``GET {api}odata/v1/Products('id')/Online/$value``: ``true``;
4. ``GET {media_src}``: the ``$value`` download (with ``Range`` when resuming);

then it reads the whole file back to compare its MD5. The simulator serves 4 (and
the ``$select=Checksum`` form of 1 that s2-downloader uses); these routes answer 1-3
on the same server and port, in front of it, so the product bytes still come from
the simulator's own code path, as they do for s2-downloader and curl.
"""

from __future__ import annotations

import base64
import hmac
import json
import re
import urllib.parse

from s2_downloader.testing.hubsim import server as hubsim

__all__ = ["PeerHub"]

_ENTITY = re.compile(r"/dhus/odata/v1/Products\('([^'/]+)'\)")
_ONLINE = re.compile(r"/dhus/odata/v1/Products\('([^'/]+)'\)/Online/\$value")
_VALUE = re.compile(r"/dhus/odata/v1/Products\('([^'/]+)'\)/\$value")
# A real S2 footprint's shape; sentinelsat parses it into WKT whatever the place.
_FOOTPRINT = (
    '<gml:Polygon srsName="http://www.opengis.net/gml/srs/epsg.xml#4326" '
    'xmlns:gml="http://www.opengis.net/gml"><gml:outerBoundaryIs><gml:LinearRing>'
    "<gml:coordinates>0.0,0.0 0.0,1.0 1.0,1.0 1.0,0.0 0.0,0.0</gml:coordinates>"
    "</gml:LinearRing></gml:outerBoundaryIs></gml:Polygon>"
)
_DATE = "/Date(1700000000000)/"


class PeerHub(hubsim.HubSimulator):
    """The hub simulator plus the routes sentinelsat needs (module docstring), with TCP_NODELAY."""

    def __init__(self, *, username: str, password: str, rate_limit: float | None = None) -> None:
        super().__init__(username=username, password=password, rate_limit=rate_limit)
        self.peer_basic = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")

    def start(self) -> PeerHub:
        """Start serving, with the handler that knows the extra routes."""
        super().start()
        # Nobody knows the port before start() returns, so no request can meet the old handler.
        self._server.RequestHandlerClass = _PeerHandler  # type: ignore[union-attr]
        return self


class _PeerHandler(hubsim._Handler):
    server: hubsim._Server
    # TCP_NODELAY, as production HTTP servers set it. Without it the simulator writes the
    # headers and then the body of an answer in two sends, Nagle holds back the second
    # until the first is acknowledged, and the client delays that ACK: every answer on a
    # reused connection waits ~40 ms, which would swamp the per-granule figures.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        parts = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(parts.path)
        if online := _ONLINE.fullmatch(path):
            if self._allowed(online.group(1)):
                self._answer(200, b"true", "application/json")
            return
        entity = _ENTITY.fullmatch(path)
        if entity and "$select" not in urllib.parse.parse_qs(parts.query):
            if self._allowed(entity.group(1)):
                body = json.dumps({"d": self._entity(entity.group(1))}).encode()
                self._answer(200, body, "application/json")
            return
        super().do_GET()

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
        value = _VALUE.fullmatch(urllib.parse.unquote(urllib.parse.urlsplit(self.path).path))
        if value is None:
            self._answer(404, b"", "application/json", head=True)
            return
        if self._allowed(value.group(1), head=True):
            product = self.server.sim.product(value.group(1))
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Disposition", f'inline;filename="{product.id}.zip"')
            self.send_header("Content-Length", str(product.size))
            self.end_headers()

    def _allowed(self, product_id: str, *, head: bool = False) -> bool:
        sim = self.server.sim
        assert isinstance(sim, PeerHub)
        given = self.headers.get("Authorization") or ""
        if not hmac.compare_digest(given, sim.peer_basic):
            self._answer(401, b"", "application/json", head=head)
            return False
        try:
            sim.product(product_id)
        except KeyError:
            self._answer(
                404, b'{"error": {"message": {"value": "Invalid key"}}}', "application/json", head=head
            )
            return False
        return True

    def _entity(self, product_id: str) -> dict[str, object]:
        sim = self.server.sim
        product = sim.product(product_id)
        uri = f"{sim.base_url}/dhus/odata/v1/Products('{product_id}')"
        return {
            "__metadata": {"id": uri, "uri": uri, "type": "DHuS.Product", "media_src": f"{uri}/$value"},
            "Id": product_id,
            "Name": product_id,
            "ContentType": "application/octet-stream",
            "ContentLength": str(product.size),
            "ContentDate": {"Start": _DATE, "End": _DATE},
            "ContentGeometry": _FOOTPRINT,
            "Checksum": {"Algorithm": "MD5", "Value": product.md5.upper()},
            "CreationDate": _DATE,
            "IngestionDate": _DATE,
            "Online": True,
            "Attributes": {"results": []},
        }

    def _answer(self, status: int, body: bytes, content_type: str, *, head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and not head:
            self.wfile.write(body)
