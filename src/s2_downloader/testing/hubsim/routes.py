"""Which route answers a request: DHuS's, CDSE's, or none (404)."""

from __future__ import annotations

import urllib.parse
from http.server import BaseHTTPRequestHandler

from s2_downloader.testing.hubsim import cdse, dhus
from s2_downloader.testing.hubsim.exchange import Exchange, Sim, Stopping

__all__ = ["serve"]


def serve(sim: Sim, handler: BaseHTTPRequestHandler, method: str) -> None:
    """Answer the request ``handler`` holds; the answer is marked over in the request log, however it ends."""
    exchange = Exchange(sim=sim, handler=handler, method=method)
    try:
        _route(exchange)
    except (OSError, Stopping):
        # The client went away mid-answer, or the simulator is stopping: say no more.
        handler.close_connection = True
    finally:
        if exchange.serial is not None:
            sim.request_log.finish(exchange.serial)


def _route(exchange: Exchange) -> None:
    parts = urllib.parse.urlsplit(exchange.handler.path)
    path = urllib.parse.unquote(parts.path)
    exchange.query = urllib.parse.parse_qs(parts.query)
    if exchange.sim.split_origins and not cdse.on_its_origin(exchange, path):
        exchange.json(404, {"error": f"no route for {path} on this host"})
        return
    if exchange.method == "POST":
        body = exchange.read_body()
        if path == cdse.TOKEN_PATH:
            cdse.token(exchange, urllib.parse.parse_qs(body.decode("utf-8", errors="replace")))
        else:
            exchange.json(405, {"error": "method not allowed"})
        return
    if not (dhus.route(exchange, path) or cdse.route(exchange, path)):
        exchange.json(404, {"error": f"no route for {path}"})
