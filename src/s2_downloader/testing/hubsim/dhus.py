"""DHuS's routes: a product's OData entry (its checksum, its name) and its ``$value``, over Basic auth."""

from __future__ import annotations

import re
from typing import Any

from s2_downloader.testing.hubsim.exchange import Exchange, dhus_error

__all__ = ["route"]

_DHUS = re.compile(r"/dhus/odata/v1/Products\('([^'/]+)'\)(/\$value|/)?")


def route(exchange: Exchange, path: str) -> bool:
    """Answer a GET of ``path`` when it is a DHuS route; whether it was one."""
    dhus = _DHUS.fullmatch(path)
    if dhus is None:
        return False
    exchange.product_id = dhus.group(1)
    if dhus.group(2) == "/$value":
        exchange.endpoint = "dhus_value"
        if _authorized(exchange):
            exchange.download()
    else:
        exchange.endpoint = "dhus_checksum"
        if _authorized(exchange):
            _entry(exchange)
    return True


def _authorized(exchange: Exchange) -> bool:
    sim = exchange.sim
    if not sim.require_auth or sim.identity.basic_valid(exchange.handler.headers.get("Authorization")):
        return True
    exchange.send(401, dhus_error("Unauthorized"), {"WWW-Authenticate": 'Basic realm="OData service"'})
    return False


def _entry(exchange: Exchange) -> None:
    """The product's entry, its fields cut to ``$select`` when one is given."""
    product_id = exchange.product_id
    assert product_id is not None
    catalogue = exchange.sim.catalogue
    fault = catalogue.pop_fault(product_id, checksum=True)
    if fault is not None and exchange.generic_fault(fault):
        return
    entry = catalogue.entry(product_id)
    if entry is None or (fault is not None and fault.kind == "not_found"):
        exchange.not_found()
        return
    value = exchange.published(entry, fault).upper()  # DHuS publishes upper case
    uri = f"{exchange.sim.base_url}/dhus/odata/v1/Products('{product_id}')"
    fields: dict[str, Any] = {
        "Id": product_id,
        # DHuS names a product without the .SAFE that CDSE's catalogue adds.
        "Name": product_id,
        "ContentLength": entry.product.size,
        "Online": True,
        "Checksum": {"__metadata": {"type": "DHuS.Checksum"}, "Algorithm": "MD5", "Value": value},
    }
    selected = {name.strip() for name in exchange.query.get("$select", [""])[0].split(",") if name.strip()}
    if selected:
        fields = {name: field for name, field in fields.items() if name in selected}
    metadata = {
        "id": uri,
        "uri": uri,
        "type": "DHuS.Product",
        "content_type": "application/octet-stream",
        "media_src": f"{uri}/$value",
        "edit_media": f"{uri}/$value",
    }
    exchange.json(200, {"d": {"__metadata": metadata, **fields}})
