"""How an attempt ends when it does not verify: counted, postponed, abandoned, or failed at once.

Every ending is recorded in the granule store under the attempt's lease, with its failure
kind as data, and returns the Outcome the entry points map onto the queue.
"""

from __future__ import annotations

import datetime as dt
import logging

import attrs

from s2_downloader.domain import lifecycle
from s2_downloader.domain.attempt_context import AttemptContext
from s2_downloader.domain.errors import (
    FailureKind,
    FileStoreError,
    KeyConflict,
    PartialInUse,
    StoreUnavailable,
)
from s2_downloader.domain.granule import Granule
from s2_downloader.domain.outcome import Defer, Failed, Outcome, RetryLater
from s2_downloader.domain.ports import FileKey
from s2_downloader.domain.request import DownloadRequest

__all__ = ["AttemptEndings"]

_log = logging.getLogger("s2_downloader.download")


@attrs.define
class AttemptEndings:
    """One attempt's identity and lease, and how it records a failure that ends it.

    The use case's ``_Attempt`` builds on this: the steps of a transfer live there, the
    bookkeeping of retries, deferrals, budgets and clean-up here.
    """

    request: DownloadRequest
    context: AttemptContext
    owner: str
    granule: Granule = attrs.field(init=False)
    _last_beat: float = attrs.field(init=False, default=0.0)
    #: The granule store's clock at the claim (the lease's start), and our monotonic clock
    #: then: the deferral budget is measured on the store's clock, like first_attempt_at,
    #: so a worker whose wall clock is skewed neither fails granules early nor late.
    _claimed_at: dt.datetime | None = attrs.field(init=False, default=None)
    _claimed_tick: float = attrs.field(init=False, default=0.0)

    @property
    def key(self) -> FileKey:
        return FileKey(granule_id=self.request.id, filename=self.request.filename)

    def _extra(self, event: str, **fields: object) -> dict[str, object]:
        return {"granule_id": self.request.id, "event": event, **fields}

    def _note_claim(self, claimed: Granule) -> None:
        lease = claimed.lease
        if lease is not None:
            self._claimed_at = lease.expires_at - dt.timedelta(seconds=self.context.lease_seconds)
            self._claimed_tick = self.context.clock.monotonic()

    def _store_now(self) -> dt.datetime:
        """Now on the granule store's clock: the claim's time plus what has elapsed since."""
        clock = self.context.clock
        if self._claimed_at is None:
            return clock.now()
        return self._claimed_at + dt.timedelta(seconds=clock.monotonic() - self._claimed_tick)

    def _postpone(self, kind: FailureKind, detail: str, delay: int) -> Outcome:
        context = self.context
        if context.policy.spends_deferral_budget(kind) and context.policy.deferred_too_long(
            self.granule.first_attempt_at, self._store_now()
        ):
            return self._abandon(kind, detail)
        deferral = Defer(kind=kind, delay_seconds=delay, detail=detail)
        self.granule = context.granules.record(
            self.request.id, lifecycle.Postpone(owner=self.owner, error=deferral.reason)
        )
        _log.warning("postponed", extra=self._extra("download_postponed", error=deferral.reason, delay=delay))
        return deferral

    def _abandon(self, kind: FailureKind, detail: str) -> Outcome:
        context = self.context
        first = self.granule.first_attempt_at
        budget = context.policy.max_defer_seconds
        # The last reason is what last_error keeps (docs/interface.md section 6): the
        # budget that ran out is in the log line.
        failed = Failed(kind=kind, detail=detail)
        self.granule = context.granules.record(
            self.request.id, lifecycle.Abandon(owner=self.owner, error=failed.reason)
        )
        self._remove_files()  # after the lease-checked update, as in _give_up
        _log.error(
            "deferred past the budget; download failed",
            extra=self._extra(
                "download_failed",
                error=failed.reason,
                first_attempt_at=None if first is None else first.isoformat(),
                max_defer_seconds=budget,
            ),
        )
        return failed

    def _counted(self, kind: FailureKind, detail: str) -> Outcome:
        context = self.context
        retries = self.granule.download_retries + 1
        if context.policy.exhausted(retries):
            failed = Failed(kind=kind, detail=detail)
            self.granule = context.granules.record(
                self.request.id, lifecycle.Exhaust(owner=self.owner, error=failed.reason)
            )
            self._remove_files()  # after the lease-checked update, as in _give_up
            _log.error(
                "retry budget spent; download failed",
                extra=self._extra("download_failed", error=failed.reason, retries=retries),
            )
            return failed
        retry = RetryLater(kind=kind, delay_seconds=context.policy.backoff(retries), detail=detail)
        self.granule = context.granules.record(
            self.request.id, lifecycle.CountFailure(owner=self.owner, error=retry.reason)
        )
        _log.warning(
            "attempt failed; will retry",
            extra=self._extra(
                "download_retry",
                error=retry.reason,
                kind=kind.value,
                retries=retries,
                delay=retry.delay_seconds,
            ),
        )
        return retry

    def _store_failure(self, exc: FileStoreError) -> Outcome:
        """A store error: an outage when the store as a whole fails its health check, else this granule's.

        ``StoreUnavailable`` (unreachable, throttled) and ``PartialInUse`` are never the
        granule's: they leave as they are, for the entry point's outage handling (``run``
        releases the granule). Otherwise the store is checked: failing, its error leaves
        instead (nothing counted or spent); passing, the error was this granule's own (a
        directory in the way, a key the bucket refuses, a part S3 rejects), so it counts.
        """
        if isinstance(exc, StoreUnavailable | PartialInUse):
            raise exc
        try:
            self.context.files.check_health()
        except FileStoreError as health:
            _log.warning(
                "store error, and the store fails its health check: an outage",
                extra=self._extra("store_unhealthy", error=str(exc), health=str(health)),
            )
            raise health from exc
        return self._counted(FailureKind.STORE, str(exc))

    def _key_conflict(self, exc: KeyConflict) -> Outcome:
        """The key holds another granule's verified product: fail at once, uncounted, the object untouched."""
        failed = Failed(kind=FailureKind.KEY_CONFLICT, detail=str(exc))
        self.granule = self.context.granules.record(
            self.request.id, lifecycle.Abandon(owner=self.owner, error=failed.reason)
        )
        self._remove_files()  # this granule's own upload, if any: never the object at the key
        _log.error(
            "the key holds another granule's product; download failed",
            extra=self._extra("download_failed", error=failed.reason, key=exc.key, holder=exc.holder),
        )
        return failed

    def _remove_files(self) -> None:
        """Clean up after a granule that failed for good; a store error here is logged, not raised.

        The failure is already recorded: the store's leftovers are cleared later (EFS: the
        sweep; S3: the bucket's lifecycle rule), whereas raising would hand back a message
        whose granule has failed.
        """
        try:
            self.context.files.remove(self.key)
        except FileStoreError as exc:
            _log.warning(
                "could not clean up after a failed granule",
                extra=self._extra("cleanup_failed", error=str(exc)),
            )

    def _release_quietly(self) -> None:
        try:
            self.context.granules.release(self.request.id, self.owner)
        except Exception:  # noqa: BLE001 - the original error is the one worth raising
            _log.warning("could not release the granule after an error", extra=self._extra("release_failed"))
