"""What one attempt runs with: the ports the use case talks through, and its settings."""

from __future__ import annotations

from collections.abc import Callable

import attrs

from s2_downloader.domain.ports import Cancellation, Clock, Files, GranuleStore, Hub, Progress, UploadQueue
from s2_downloader.domain.retry import RetryPolicy

__all__ = ["AttemptContext"]


class _Never:
    def is_set(self) -> bool:
        return False

    def deadline(self) -> float | None:
        return None


class _Silent:
    def transferred(self, granule_id: str, done: int, total: int | None) -> None:
        del granule_id, done, total


@attrs.frozen(kw_only=True)
class AttemptContext:
    """What an attempt runs with: the ports ``handle`` talks through, and the settings that shape it.

    The ports (the granule store, the hub, the files, the upload queue, the clock), the retry
    policy, how owners are named and how long a lease lasts, and the attempt's cancellation
    and progress display.
    """

    granules: GranuleStore
    hub: Hub
    files: Files
    uploads: UploadQueue
    clock: Clock
    policy: RetryPolicy
    new_owner: Callable[[], str]
    lease_seconds: float = 900.0
    cancellation: Cancellation = attrs.field(factory=_Never)
    progress: Progress = attrs.field(factory=_Silent)
