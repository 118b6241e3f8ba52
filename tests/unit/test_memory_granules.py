"""The in-memory granule store that ``fetch`` uses honours the GranuleStore contract."""

from __future__ import annotations

from hypothesis import settings

from s2_downloader.adapters.memory_granules import MemoryGranuleStore
from s2_downloader.domain.granule import Granule
from tests.granule_store_contract import run_granule_store_contract


def _add(store: MemoryGranuleStore, granule_id: str, filename: str) -> None:
    store.add(Granule(id=granule_id, filename=filename))


def test_memory_store_honours_the_granule_store_contract() -> None:
    """The production in-memory store moves granules exactly as lifecycle.apply says a store must."""
    run_granule_store_contract(
        make_store=MemoryGranuleStore, add_granule=_add, settings=settings(max_examples=25, deadline=None)
    )
