"""CDSE's routes: the OData catalogue, the zipper and the identity service's token endpoint.

With ``split_origins`` each answers only on its own origin, chosen by the Host header as
in production: the catalogue and the token endpoint on ``catalogue_url``'s, the zipper on
``zipper_url``'s.
"""

from __future__ import annotations

import hashlib
import re
import urllib.parse
from typing import Any

from s2_downloader.testing.hubsim.exchange import Exchange

__all__ = ["TOKEN_PATH", "on_its_origin", "route", "token"]

#: Where the simulator's CDSE identity provider takes token requests.
TOKEN_PATH = "/auth/realms/CDSE/protocol/openid-connect/token"  # noqa: S105 - a path, not a secret

_CLIENT_ID = "cdse-public"
_ZIPPER = re.compile(r"/odata/v1/Products\(([^()'/]+)\)/\$value")
_CATALOGUE = "/odata/v1/Products"
_FILTER_ID = re.compile(r"\s*Id\s+eq\s+'([^']*)'\s*")


def on_its_origin(exchange: Exchange, path: str) -> bool:
    """Split origins: the zipper answers on ``zipper_url``'s host, catalogue and token on the other."""
    sim = exchange.sim
    host = (exchange.handler.headers.get("Host") or "").lower()
    catalogue = urllib.parse.urlsplit(sim.catalogue_url).netloc
    zipper = urllib.parse.urlsplit(sim.zipper_url).netloc
    if _ZIPPER.fullmatch(path):
        return host == zipper
    if path in (_CATALOGUE, TOKEN_PATH):
        return host == catalogue
    return True


def route(exchange: Exchange, path: str) -> bool:
    """Answer a GET of ``path`` when it is a CDSE route; whether it was one."""
    if zipper := _ZIPPER.fullmatch(path):
        exchange.endpoint = "zipper"
        exchange.product_id = zipper.group(1)
        if _authorized(exchange, required=True):
            exchange.download()
        return True
    if path == _CATALOGUE:
        exchange.endpoint = "cdse_checksum"
        wanted = _FILTER_ID.fullmatch(exchange.query.get("$filter", [""])[0])
        exchange.product_id = wanted.group(1) if wanted else None
        if _authorized(exchange, required=False):
            _catalogue(exchange)
        return True
    return False


def _authorized(exchange: Exchange, *, required: bool) -> bool:
    """Whether the bearer token is valid (or, where not ``required``, absent)."""
    sim = exchange.sim
    authorization = exchange.handler.headers.get("Authorization")
    if not sim.require_auth or (authorization is None and not required):
        return True
    if sim.identity.bearer_valid(authorization):
        return True
    exchange.json(401, {"detail": "Expired signature!"}, {"WWW-Authenticate": "Bearer"})
    return False


def token(exchange: Exchange, form: dict[str, list[str]]) -> None:
    """Answer a POST to the token endpoint: a password or refresh-token grant."""

    def field(name: str) -> str:
        return form.get(name, [""])[0]

    identity = exchange.sim.identity
    exchange.endpoint = "token"
    exchange.grant_type = field("grant_type")
    fault = identity.pop_token_fault()
    if fault is not None and exchange.generic_fault(fault):
        return
    if field("client_id") != _CLIENT_ID:
        exchange.json(401, {"error": "unauthorized_client", "error_description": "Invalid client"})
    elif exchange.grant_type == "password":
        if identity.password_valid(field("username"), field("password")):
            exchange.json(200, identity.issue_tokens())
        else:
            exchange.json(401, {"error": "invalid_grant", "error_description": "Invalid user credentials"})
    elif exchange.grant_type == "refresh_token":
        if identity.refresh_valid(field("refresh_token")):
            exchange.json(200, identity.issue_tokens())
        else:
            exchange.json(400, {"error": "invalid_grant", "error_description": "Token is not active"})
    else:
        exchange.json(400, {"error": "unsupported_grant_type"})


def _catalogue(exchange: Exchange) -> None:
    """The catalogue's answer to ``$filter=Id eq '<id>'``: a list of one entry, or empty."""
    product_id = exchange.product_id
    catalogue = exchange.sim.catalogue
    fault = catalogue.pop_fault(product_id, checksum=True) if product_id else None
    if fault is not None and exchange.generic_fault(fault):
        return
    entry = catalogue.entry(product_id) if product_id else None
    if entry is None or (fault is not None and fault.kind == "not_found"):
        exchange.json(200, {"@odata.context": "$metadata#Products", "value": []})
        return
    product = entry.product
    blake3 = hashlib.sha256(f"{product.id}:{product.seed}".encode()).hexdigest()
    item: dict[str, Any] = {
        "@odata.mediaContentType": "application/octet-stream",
        "Id": product.id,
        "Name": f"{product.id}.SAFE",
        "ContentType": "application/octet-stream",
        "ContentLength": product.size,
        "Online": True,
        "Checksum": [
            {"Value": exchange.published(entry, fault), "Algorithm": "MD5"},
            {"Value": blake3, "Algorithm": "BLAKE3"},
        ],
    }
    if fault is not None and fault.kind == "catalogue_entry":
        item.update(fault.entry)
    exchange.json(200, {"@odata.context": "$metadata#Products", "value": [item]})
