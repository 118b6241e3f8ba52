"""A granule store in memory, for ``s2-downloader fetch``: one process, no database.

The ``GranuleStore`` port over a dict, every change made by ``lifecycle.apply`` under one
lock, so the transition table decides here exactly as it does in PostgreSQL. Nothing
survives the process: what ``fetch`` needs to carry across a crash (the bytes already
downloaded) lives in the file store's partial, not here.
"""

from __future__ import annotations

import datetime as dt
import threading

import attrs

from s2_downloader.domain import lifecycle
from s2_downloader.domain.errors import InvalidTransition
from s2_downloader.domain.granule import Granule

__all__ = ["MemoryGranuleStore"]


@attrs.define
class MemoryGranuleStore:
    """Granules by id, in this process only; thread-safe."""

    _granules: dict[str, Granule] = attrs.field(factory=dict, init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)

    def add(self, granule: Granule) -> None:
        """Insert ``granule``, replacing any granule with its id."""
        with self._lock:
            self._granules[granule.id] = granule

    def get(self, granule_id: str) -> Granule | None:
        """The granule as held now, or ``None``."""
        with self._lock:
            return self._granules.get(granule_id)

    def claim(self, granule_id: str, owner: str, now: dt.datetime, lease_seconds: float) -> Granule | None:
        """Take the lease if the granule is free; return it as it is after the attempt, or ``None``."""
        with self._lock:
            granule = self._granules.get(granule_id)
            if granule is None:
                return None
            try:
                granule = lifecycle.apply(
                    granule, lifecycle.Claim(owner=owner, now=now, lease_seconds=lease_seconds)
                )
            except InvalidTransition:
                # Terminal, or leased to someone else: the caller reads which from the granule.
                return granule
            self._granules[granule_id] = granule
            return granule

    def heartbeat(self, granule_id: str, owner: str, now: dt.datetime, lease_seconds: float) -> bool:
        """Extend ``owner``'s lease; ``False`` when ``owner`` does not hold it."""
        event = lifecycle.Heartbeat(owner=owner, now=now, lease_seconds=lease_seconds)
        return self._try(granule_id, event)

    def record(self, granule_id: str, event: lifecycle.Event) -> Granule:
        """Apply ``event``; raise ``InvalidTransition`` (changing nothing) when it is not legal now."""
        with self._lock:
            granule = self._granules.get(granule_id)
            if granule is None:
                raise InvalidTransition(f"no granule {granule_id}")
            granule = lifecycle.apply(granule, event)
            self._granules[granule_id] = granule
            return granule

    def release(self, granule_id: str, owner: str) -> bool:
        """Hand the granule back unfinished; ``False`` when ``owner`` did not hold it."""
        return self._try(granule_id, lifecycle.Release(owner=owner))

    def _try(self, granule_id: str, event: lifecycle.Event) -> bool:
        try:
            self.record(granule_id, event)
        except InvalidTransition:
            return False
        return True
