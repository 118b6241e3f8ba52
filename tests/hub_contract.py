"""The hub contract: one set of behavioural checks, run against every ``Hub`` implementation.

The use case only relies on what is checked here, so the in-memory ``FakeHub`` the use case
tests run on must pass exactly the checks ``DhusHub`` and ``CdseHub`` pass on the hub
simulator. Each implementation brings a ``HubHarness``: the hub, and how to publish a
product, replace it, and make its next request throttled or offline.

A check that finds a difference raises ``HubContractViolation`` naming the rule broken, so a
test can ask for one specific violation (the suite is itself tested on a wrong hub).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Protocol

from s2_downloader.domain.errors import FailureKind, HubError
from s2_downloader.domain.ports import Hub
from s2_downloader.domain.request import DownloadRequest
from tests.unit.fakes import md5

__all__ = ["CHECKS", "Check", "HubContractViolation", "HubHarness"]

#: The Retry-After the contract asks throttled answers to carry, in seconds.
RETRY_AFTER = 7

_serial = itertools.count()


class HubHarness(Protocol):
    """What the contract needs to know about one hub implementation."""

    #: Products are this many bytes (a few chunks of the hub's, so a resume lands mid-product).
    size: int

    @property
    def hub(self) -> Hub:
        """The hub under test."""
        ...

    def publish(self, product_id: str) -> bytes:
        """Make ``product_id`` available with ``size`` bytes of content; the content."""
        ...

    def listed_name(self, product_id: str) -> str:
        """The name the hub lists a published ``product_id`` under."""
        ...

    def republish(self, product_id: str) -> bytes:
        """Replace ``product_id`` with other content of the same size (its validator changes); the content."""
        ...

    def request(self, product_id: str) -> DownloadRequest:
        """The download request a message for ``product_id`` makes."""
        ...

    def throttle(self, product_id: str, *, checksum: bool) -> None:
        """Make the next product (or checksum) request for ``product_id`` throttled, ``RETRY_AFTER`` s."""
        ...

    def take_offline(self, product_id: str, *, checksum: bool) -> None:
        """Make the next product (or checksum) request for ``product_id`` find it offline."""
        ...


class HubContractViolation(AssertionError):
    """A hub broke ``rule`` of the contract."""

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(f"{rule}: {detail}")
        self.rule = rule


#: One behavioural check: passes, or raises ``HubContractViolation``.
Check = Callable[[HubHarness], None]


def _expect(rule: str, expected: object, actual: object) -> None:
    if expected != actual:
        raise HubContractViolation(rule, f"expected {_shown(expected)}, got {_shown(actual)}")


def _shown(value: object) -> str:
    # Product bodies are long: their size and MD5 tell them apart.
    if isinstance(value, bytes):
        return f"<{len(value)} bytes, md5 {md5(value)}>"
    if isinstance(value, tuple):
        return "(" + ", ".join(_shown(v) for v in value) + ")"
    return repr(value)


def _new_id() -> str:
    return f"HC{next(_serial):05d}"


def _fetch(
    h: HubHarness, product_id: str, offset: int, validator: str | None = None
) -> tuple[int, int | None, bytes, str | None]:
    """(offset, total size, body, validator) of one product stream."""
    with h.hub.open_product(h.request(product_id), offset, validator=validator) as stream:
        body = b"".join(stream.chunks())
        return stream.offset, stream.total_size, body, stream.validator


def _failure(call: Callable[[], object]) -> tuple[FailureKind, float | None] | None:
    """The kind and retry hint of the ``HubError`` ``call`` raised; ``None`` when it raised none."""
    try:
        call()
    except HubError as exc:
        return exc.kind, exc.retry_after
    return None


def _open(h: HubHarness, product_id: str) -> Callable[[], object]:
    return lambda: _fetch(h, product_id, 0)


def checksum_of_a_known_product(h: HubHarness) -> None:
    """The checksum of a published product is the MD5 of its bytes, lowercase hex."""
    product_id = _new_id()
    content = h.publish(product_id)
    _expect("checksum", md5(content), h.hub.checksum(product_id))


def name_of_a_known_product(h: HubHarness) -> None:
    """A published product is listed under its name."""
    product_id = _new_id()
    h.publish(product_id)
    _expect("product name", h.listed_name(product_id), h.hub.product_name(product_id))


def unknown_product_is_not_found(h: HubHarness) -> None:
    """Neither a checksum, a name nor a stream exists for a product never published: NOT_FOUND."""
    product_id = _new_id()
    _expect("unknown checksum", FailureKind.NOT_FOUND, _kind(lambda: h.hub.checksum(product_id)))
    _expect("unknown name", FailureKind.NOT_FOUND, _kind(lambda: h.hub.product_name(product_id)))
    _expect("unknown product", FailureKind.NOT_FOUND, _kind(_open(h, product_id)))


def _kind(call: Callable[[], object]) -> FailureKind | None:
    failure = _failure(call)
    return None if failure is None else failure[0]


def stream_from_the_start(h: HubHarness) -> None:
    """From offset 0 the stream starts at 0, announces the product's size, and is the whole product."""
    product_id = _new_id()
    content = h.publish(product_id)
    offset, total, body, _ = _fetch(h, product_id, 0)
    _expect("stream from the start", (0, len(content), content), (offset, total, body))


def stream_from_an_offset(h: HubHarness) -> None:
    """From an offset (a Range, no validator) the stream starts there and holds the rest of the product."""
    product_id = _new_id()
    content = h.publish(product_id)
    at = h.size // 3
    offset, total, body, _ = _fetch(h, product_id, at)
    _expect("resume from an offset", (at, len(content), content[at:]), (offset, total, body))


def stream_from_the_end(h: HubHarness) -> None:
    """From the product's size (a partial already whole) the stream starts there and is empty."""
    product_id = _new_id()
    content = h.publish(product_id)
    offset, _, body, _ = _fetch(h, product_id, len(content))
    _expect("resume a whole partial", (len(content), b""), (offset, body))


def stream_from_past_the_end(h: HubHarness) -> None:
    """Past the product's end (a partial longer than the product) the stream is the whole product, from 0."""
    product_id = _new_id()
    content = h.publish(product_id)
    offset, total, body, _ = _fetch(h, product_id, len(content) + 10)
    _expect("resume past the end", (0, len(content), content), (offset, total, body))


def validator_resumes_an_unchanged_product(h: HubHarness) -> None:
    """A stream carries a validator; passed back on resume (If-Range), an unchanged product resumes."""
    product_id = _new_id()
    content = h.publish(product_id)
    *_, validator = _fetch(h, product_id, 0)
    if validator is None:
        raise HubContractViolation("validator present", "the stream carried no validator")
    at = h.size // 3
    offset, _, body, again = _fetch(h, product_id, at, validator)
    _expect("If-Range on an unchanged product", (at, content[at:], validator), (offset, body, again))


def changed_product_restarts_from_the_start(h: HubHarness) -> None:
    """A resume whose validator no longer names the product gets the whole new product, from 0."""
    product_id = _new_id()
    h.publish(product_id)
    *_, validator = _fetch(h, product_id, 0)
    replaced = h.republish(product_id)
    offset, total, body, now = _fetch(h, product_id, h.size // 3, validator)
    _expect("If-Range on a changed product", (0, len(replaced), replaced), (offset, total, body))
    if now is None or now == validator:
        raise HubContractViolation("If-Range on a changed product", f"validator {now!r} did not change")


def throttling_is_throttled_with_its_hint(h: HubHarness) -> None:
    """A throttled checksum or product request is THROTTLED with the hub's Retry-After."""
    product_id = _new_id()
    h.publish(product_id)
    h.throttle(product_id, checksum=True)
    h.throttle(product_id, checksum=False)
    expected = (FailureKind.THROTTLED, float(RETRY_AFTER))
    _expect("throttled checksum", expected, _failure(lambda: h.hub.checksum(product_id)))
    _expect("throttled product", expected, _failure(_open(h, product_id)))


def offline_is_offline(h: HubHarness) -> None:
    """A product in the long-term archive is OFFLINE, at its checksum and at its stream."""
    product_id = _new_id()
    h.publish(product_id)
    h.take_offline(product_id, checksum=True)
    h.take_offline(product_id, checksum=False)
    _expect("offline checksum", FailureKind.OFFLINE, _kind(lambda: h.hub.checksum(product_id)))
    _expect("offline product", FailureKind.OFFLINE, _kind(_open(h, product_id)))


CHECKS: tuple[Check, ...] = (
    checksum_of_a_known_product,
    name_of_a_known_product,
    unknown_product_is_not_found,
    stream_from_the_start,
    stream_from_an_offset,
    stream_from_the_end,
    stream_from_past_the_end,
    validator_resumes_an_unchanged_product,
    changed_product_restarts_from_the_start,
    throttling_is_throttled_with_its_hint,
    offline_is_offline,
)
