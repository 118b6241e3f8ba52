"""Scripted misbehaviour: ``Fault``, one per request to the endpoint it targets.

Faults are scripted per product and consumed one per request, separately for the
download and the checksum endpoints (and, with ``add_token_faults``, the token endpoint)::

    sim.add_product("p1", 10_000_000, faults=[Fault.status(503, retry_after="2")])
"""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["Fault"]


@attrs.frozen(kw_only=True)
class Fault:
    """One scripted misbehaviour, used up by one request to its endpoint.

    Faults target the product's download unless made with ``on_checksum()`` (or by
    ``wrong_checksum``/``malformed_checksum``, which only make sense there).
    """

    kind: str
    code: int = 0
    retry_after: str | None = None
    n_bytes: int = 0
    seconds: float = 0.0
    location: str = ""
    checksum: bool = False
    #: Response headers to send instead of (or besides) the simulator's own.
    headers: tuple[tuple[str, str], ...] = ()
    #: For ``catalogue_entry``: fields of the catalogue's product entry to replace.
    entry: tuple[tuple[str, Any], ...] = attrs.field(default=(), eq=False)
    #: For ``json``: the whole answer to send.
    document: Any = attrs.field(default=None, eq=False)

    @classmethod
    def status(
        cls, code: int, *, retry_after: str | None = None, headers: dict[str, str] | None = None
    ) -> Fault:
        """Answer ``code`` with a small DHuS-style error body (and ``Retry-After``, ``headers`` if given)."""
        return cls(kind="status", code=code, retry_after=retry_after, headers=tuple((headers or {}).items()))

    @classmethod
    def accepted(cls) -> Fault:
        """Answer 202: the product is offline and its retrieval was triggered."""
        return cls(kind="status", code=202)

    @classmethod
    def not_found(cls) -> Fault:
        """Answer as for an unknown product (DHuS 404; the CDSE catalogue: an empty list)."""
        return cls(kind="not_found")

    @classmethod
    def dhus_concurrent_flows(cls) -> Fault:
        """Answer 403 with DHuS's 'too many concurrent flows' message."""
        return cls(kind="concurrent_flows")

    @classmethod
    def redirect(cls, location: str, *, code: int = 302) -> Fault:
        """Answer ``code`` with ``Location: location`` (absolute, or relative to the request)."""
        return cls(kind="redirect", code=code, location=location)

    @classmethod
    def reset_after(cls, n_bytes: int) -> Fault:
        """Send the headers and ``n_bytes`` of body, then reset the connection (RST)."""
        return cls(kind="reset", n_bytes=n_bytes)

    @classmethod
    def short_body(cls, n_bytes: int) -> Fault:
        """Promise the full Content-Length, send ``n_bytes``, then close the connection cleanly."""
        return cls(kind="short", n_bytes=n_bytes)

    @classmethod
    def stall(cls, seconds: float) -> Fault:
        """Pause ``seconds`` after the headers, before the body."""
        return cls(kind="stall", seconds=seconds)

    @classmethod
    def corrupt(cls) -> Fault:
        """Serve the body with its first byte changed, so it no longer matches the MD5."""
        return cls(kind="corrupt")

    @classmethod
    def ignore_range(cls) -> Fault:
        """Answer 200 with the whole product even when a Range was asked for."""
        return cls(kind="ignore_range")

    @classmethod
    def wrong_range(cls) -> Fault:
        """Answer a Range request with 206 for the whole product (a Content-Range not asked for)."""
        return cls(kind="wrong_range")

    @classmethod
    def wrong_checksum(cls) -> Fault:
        """Publish a wrong (well-formed) MD5 once."""
        return cls(kind="wrong_checksum", checksum=True)

    @classmethod
    def malformed_checksum(cls) -> Fault:
        """Publish a checksum value that is not 32 hex digits, once."""
        return cls(kind="malformed_checksum", checksum=True)

    @classmethod
    def trickle(cls, seconds_per_byte: float = 1.0) -> Fault:
        """Send the headers at once, then the body one byte every ``seconds_per_byte``.

        Applies to downloads, checksum answers and (with ``add_token_faults``) token answers.
        """
        return cls(kind="trickle", seconds=seconds_per_byte)

    @classmethod
    def with_headers(cls, **headers: str) -> Fault:
        """Answer as usual, with these headers set (``Content_Length`` for ``Content-Length``).

        A replaced ``Content-Length`` is not sent twice, and the connection closes after
        the body, since the client cannot know where the body ends.
        """
        return cls(kind="headers", headers=tuple((k.replace("_", "-"), v) for k, v in headers.items()))

    @classmethod
    def catalogue_entry(cls, **fields: Any) -> Fault:
        """The CDSE catalogue's entry for the product with ``fields`` replaced (``Online=False``,
        ``Checksum=[]``), once."""
        return cls(kind="catalogue_entry", entry=tuple(fields.items()), checksum=True)

    @classmethod
    def json(cls, document: Any, *, code: int = 200) -> Fault:
        """Answer the checksum request with ``document`` as it is (a recorded answer), once."""
        return cls(kind="json", code=code, document=document, checksum=True)

    def on_checksum(self) -> Fault:
        """This fault aimed at the product's checksum endpoint instead of its download."""
        return attrs.evolve(self, checksum=True)
