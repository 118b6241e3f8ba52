"""The hub contract (tests/hub_contract.py) on the in-memory fake, and on wrong hubs it must catch."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import attrs
import pytest

from s2_downloader.domain.errors import FailureKind, HubError
from s2_downloader.domain.ports import Hub, ProductStream
from s2_downloader.domain.request import DownloadRequest
from tests.hub_contract import (
    CHECKS,
    RETRY_AFTER,
    Check,
    HubContractViolation,
    stream_from_an_offset,
    throttling_is_throttled_with_its_hint,
    unknown_product_is_not_found,
)
from tests.unit.fakes import FakeHub, HubFault
from tests.unit.world import World


def _content(product_id: str, version: int, size: int) -> bytes:
    seed = hashlib.sha256(f"{product_id}/{version}".encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


@attrs.define
class FakeHarness:
    """``FakeHub`` with its faults scripted directly."""

    size: int = 1001
    fake: FakeHub = attrs.field(factory=FakeHub)

    @property
    def hub(self) -> Hub:
        """The fake."""
        return self.fake

    def publish(self, product_id: str) -> bytes:
        """Add the product (with an ETag-like validator)."""
        content = _content(product_id, 1, self.size)
        self.fake.add(product_id, content)
        return content

    def listed_name(self, product_id: str) -> str:
        """The fake lists products as CDSE does."""
        return f"{product_id}.SAFE"

    def republish(self, product_id: str) -> bytes:
        """Add it again with other bytes: the fake gives it a new validator."""
        content = _content(product_id, 2, self.size)
        self.fake.add(product_id, content)
        return content

    def request(self, product_id: str) -> DownloadRequest:
        """The request the use case tests use."""
        return World.request(product_id)

    def throttle(self, product_id: str, *, checksum: bool) -> None:
        """Script a THROTTLED failure with the contract's hint."""
        self._script(product_id, HubFault.fail(FailureKind.THROTTLED, retry_after=RETRY_AFTER), checksum)

    def take_offline(self, product_id: str, *, checksum: bool) -> None:
        """Script an OFFLINE failure."""
        self._script(product_id, HubFault.fail(FailureKind.OFFLINE), checksum)

    def _script(self, product_id: str, fault: HubFault, checksum: bool) -> None:
        script = self.fake.checksum_faults if checksum else self.fake.download_faults
        script.setdefault(product_id, []).append(fault)


#: Where the fake still differs from the real adapters: strict, so fixing the fake turns this red
#: until the mark goes. (The adapters answer a 416 for an offset past the end by restarting
#: from byte 0; the fake serves an empty stream at the product's size.)


@pytest.mark.parametrize(
    "check",
    CHECKS,
    ids=lambda check: check.__name__,
)
def test_the_fake_hub_keeps_the_contract(check: Check) -> None:
    """The fake the use case tests run on passes every check the real hubs pass."""
    check(FakeHarness())


@attrs.frozen
class _Claimed:
    """A stream that claims an offset its body does not start at."""

    offset: int
    total_size: int | None
    validator: str | None
    body: list[bytes]

    def chunks(self) -> Iterator[bytes]:
        yield from self.body


@attrs.define
class RangeIgnoringHub:
    """A wrong hub: it says it resumed from the offset asked, but sends the product from byte 0."""

    fake: FakeHub

    def checksum(self, granule_id: str, *, deadline: float | None = None) -> str:
        return self.fake.checksum(granule_id, deadline=deadline)

    def product_name(self, granule_id: str, *, deadline: float | None = None) -> str | None:
        return self.fake.product_name(granule_id, deadline=deadline)

    @contextmanager
    def open_product(
        self,
        request: DownloadRequest,
        offset: int,
        *,
        validator: str | None = None,
        deadline: float | None = None,
    ) -> Iterator[ProductStream]:
        with self.fake.open_product(request, 0, validator=validator, deadline=deadline) as stream:
            yield _Claimed(offset, stream.total_size, stream.validator, list(stream.chunks()))


@attrs.define
class HintDroppingHub:
    """A wrong hub: it reports a throttled checksum without the hub's Retry-After."""

    fake: FakeHub

    def checksum(self, granule_id: str, *, deadline: float | None = None) -> str:
        try:
            return self.fake.checksum(granule_id, deadline=deadline)
        except HubError as exc:
            raise HubError(exc.kind, exc.detail) from exc

    def product_name(self, granule_id: str, *, deadline: float | None = None) -> str | None:
        return self.fake.product_name(granule_id, deadline=deadline)

    def open_product(
        self,
        request: DownloadRequest,
        offset: int,
        *,
        validator: str | None = None,
        deadline: float | None = None,
    ) -> AbstractContextManager[ProductStream]:
        return self.fake.open_product(request, offset, validator=validator, deadline=deadline)


@attrs.define
class WrongHarness(FakeHarness):
    """The fake's harness around a wrong hub."""

    wrong: Hub | None = None

    @property
    def hub(self) -> Hub:
        """The wrong hub."""
        assert self.wrong is not None
        return self.wrong


def test_the_contract_catches_a_hub_that_ignores_the_range() -> None:
    """A hub that sends from byte 0 while claiming the offset breaks the resume rule, and only that rule."""
    harness = WrongHarness()
    harness.wrong = RangeIgnoringHub(harness.fake)
    with pytest.raises(HubContractViolation) as caught:
        stream_from_an_offset(harness)
    assert "resume from an offset" == caught.value.rule


@attrs.define
class NamelessHub(HintDroppingHub):
    """A wrong hub: it answers an unknown product's name with no name instead of NOT_FOUND."""

    def product_name(self, granule_id: str, *, deadline: float | None = None) -> str | None:
        if granule_id not in self.fake.products:
            return None
        return self.fake.product_name(granule_id, deadline=deadline)


def test_the_contract_catches_a_hub_that_does_not_know_it_lacks_a_product() -> None:
    """A hub that gives no name for an unknown product, instead of NOT_FOUND, breaks the unknown-name rule."""
    harness = WrongHarness()
    harness.wrong = NamelessHub(harness.fake)
    with pytest.raises(HubContractViolation) as caught:
        unknown_product_is_not_found(harness)
    assert "unknown name" == caught.value.rule


def test_the_contract_catches_a_hub_that_drops_the_retry_hint() -> None:
    """A hub that loses Retry-After breaks the throttling rule at the checksum."""
    harness = WrongHarness()
    harness.wrong = HintDroppingHub(harness.fake)
    with pytest.raises(HubContractViolation) as caught:
        throttling_is_throttled_with_its_hint(harness)
    assert "throttled checksum" == caught.value.rule
