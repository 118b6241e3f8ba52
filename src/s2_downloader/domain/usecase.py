"""The download use case: one request in, one Outcome out, all I/O through the ports.

It follows the original HLS handler (claim, checksum, already downloaded?, download,
compare, hand over or retry) and docs/interface.md (the hub) for what each hub failure means.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Callable

import attrs

from s2_downloader.domain import lifecycle
from s2_downloader.domain.errors import (
    DeadlineExceeded,
    FailureKind,
    HubError,
    InvalidTransition,
    PartialInUse,
)
from s2_downloader.domain.granule import Granule, State
from s2_downloader.domain.outcome import Defer, Done, Failed, Outcome, RetryLater, Transfer
from s2_downloader.domain.ports import (
    Cancellation,
    Clock,
    FileKey,
    Files,
    GranuleStore,
    Hub,
    Partial,
    Progress,
    UploadQueue,
)
from s2_downloader.domain.request import DownloadRequest
from s2_downloader.domain.retry import MAX_DELAY_SECONDS, RetryPolicy

__all__ = ["AttemptContext", "handle"]

_log = logging.getLogger("s2_downloader.download")

#: How often, as a share of the lease, a transfer renews its lease.
_HEARTBEAT_SHARE = 1 / 3


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


def handle(request: DownloadRequest, context: AttemptContext) -> Outcome:
    """Take one download request as far as it can go now, and say what to do with its message."""
    return _Attempt(request=request, ports=context, owner=context.new_owner()).run()


@attrs.frozen(kw_only=True)
class _Filled:
    """What streaming into the partial left: the bytes held, and how the stream ended.

    Exactly one ending is set: ``digest`` (the body ran to its end), ``stopped`` (the
    attempt stopped between chunks: cancelled, or the lease lost) or ``broken`` (the
    hub failed, or time ran out).
    """

    resumed_from: int
    held: int
    #: Our monotonic clock when the stream started, for the transfer rate; ``None``: no stream.
    started: float | None
    digest: str | None = None
    #: Whether ``digest`` is the checksum the product must have: compared once, as the stream ends.
    matches: bool = False
    stopped: Outcome | None = None
    broken: HubError | DeadlineExceeded | None = None

    @classmethod
    def already_final(cls, checksum: str) -> _Filled:
        """Nothing streamed: the final product already had the checksum."""
        return cls(resumed_from=0, held=0, started=None, digest=checksum, matches=True)

    @property
    def transferred(self) -> int:
        """Bytes this attempt added."""
        return self.held - self.resumed_from


@attrs.define
class _Attempt:
    request: DownloadRequest
    ports: AttemptContext
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

    def run(self) -> Outcome:
        ports = self.ports
        now = ports.clock.now()
        claimed = ports.granules.claim(self.request.id, self.owner, now, ports.lease_seconds)
        if claimed is None:
            _log.warning("granule is not in the database", extra=self._extra("granule_unknown"))
            return Done(reason="granule unknown")
        self.granule = claimed
        if claimed.state is State.VERIFIED:
            return self._announce(claimed, "already verified")
        if claimed.state is State.FAILED:
            return Failed(reason=f"granule failed earlier: {claimed.last_error}", earlier=True)
        if not (claimed.state is State.CLAIMED and claimed.held_by(self.owner)):
            return self._busy(claimed, now)
        if ports.policy.exhausted(claimed.download_retries):
            return self._give_up()
        self._note_claim(claimed)
        try:
            return self._finish_attempt()
        except Exception:
            # Not a crash (those release nothing): free the granule for the next delivery,
            # also when recording a failure is what failed.
            self._release_quietly()
            raise

    def _finish_attempt(self) -> Outcome:
        try:
            return self._transfer()
        except HubError as exc:
            return self._hub_failure(exc)
        except DeadlineExceeded as exc:
            return self._out_of_time(exc)
        except InvalidTransition as exc:
            # Every event after the claim is lease-checked: refused means another worker
            # took the granule over (our lease ran out), so stop without touching anything.
            _log.warning("lease lost: %s", exc, extra=self._extra("lease_lost"))
            return Defer(delay_seconds=1, reason="lease lost")

    # -- the branches -------------------------------------------------------------

    def _busy(self, granule: Granule, now: dt.datetime) -> Outcome:
        lease = granule.lease
        wait = 1.0 if lease is None else (lease.expires_at - now).total_seconds() + 1.0
        delay = min(MAX_DELAY_SECONDS, max(1, math.ceil(wait)))
        owner = lease.owner if lease else "nobody"
        _log.info("granule is held by another worker", extra=self._extra("granule_busy", holder=owner))
        return Defer(delay_seconds=delay, reason=f"held by {owner}")

    def _give_up(self) -> Outcome:
        error = f"retry budget spent ({self.granule.download_retries} failures)"
        # Recorded first: the update checks the lease, so a worker that lost it never
        # deletes files the new holder is working on.
        self.granule = self.ports.granules.record(
            self.request.id, lifecycle.GiveUp(owner=self.owner, error=error)
        )
        self.ports.files.remove(self.key)
        _log.error("download failed for good", extra=self._extra("download_failed", error=error))
        return Failed(reason=error)

    def _checksum(self) -> str:
        if self.request.checksum and self.granule.download_retries == 0:
            return self.request.checksum
        return self.ports.hub.checksum(self.request.id, deadline=self.ports.cancellation.deadline()).lower()

    def _transfer(self) -> Outcome:
        checksum = self._checksum()
        on_disk = self.ports.files.final_digest(self.key)
        if on_disk == checksum:
            return self._verified(checksum, _Filled.already_final(checksum))
        self._clear_bad_final(checksum, on_disk)
        try:
            with self.ports.files.open_partial(self.key, checksum=checksum) as partial:
                filled = self._fill(partial, checksum)
                # Still holding the partial: no other attempt can write it until it is
                # promoted or discarded.
                filled = self._keep_or_drop(filled)
        except PartialInUse as exc:
            delay = max(1, min(MAX_DELAY_SECONDS, round(self.ports.lease_seconds / 3)))
            # A writer that never lets go would otherwise defer the granule for ever.
            return self._postpone(str(exc), delay, spends_budget=True)
        return self._settle(filled, checksum)

    def _clear_bad_final(self, checksum: str, on_disk: str | None) -> None:
        # Recorded before anything is removed: the update checks the lease, so a worker
        # that lost it stops here (InvalidTransition) and never deletes a file that the
        # new holder may just have verified.
        self.granule = self.ports.granules.record(self.request.id, lifecycle.StartDownload(owner=self.owner))
        if on_disk is not None:
            _log.warning(
                "final file does not match its checksum; set aside for a new download",
                extra=self._extra("final_file_mismatch", expected=checksum, actual=on_disk),
            )
            self.ports.files.discard_final(self.key)

    def _fill(self, partial: Partial, checksum: str) -> _Filled:
        """Stream the product into ``partial`` until it ends, breaks, or the attempt must stop."""
        started = self.ports.clock.monotonic()
        self._last_beat = started
        resumed_from = partial.size
        try:
            streamed = self._stream_into(partial)
        except (HubError, DeadlineExceeded) as exc:
            return _Filled(resumed_from=resumed_from, held=partial.size, started=started, broken=exc)
        if isinstance(streamed, int):
            digest = partial.hexdigest()
            return _Filled(
                resumed_from=streamed,
                held=partial.size,
                started=started,
                digest=digest,
                matches=digest == checksum,
            )
        return _Filled(resumed_from=resumed_from, held=partial.size, started=started, stopped=streamed)

    def _keep_or_drop(self, filled: _Filled) -> _Filled:
        """Under the partial's lock: promote a complete match, drop a mismatch."""
        ports = self.ports
        if filled.digest is None:
            return filled
        if not filled.matches:
            ports.files.discard_partial(self.key)
            return filled
        if ports.granules.heartbeat(self.request.id, self.owner, ports.clock.now(), ports.lease_seconds):
            ports.files.promote(self.key)
            return filled
        return attrs.evolve(filled, stopped=self._lease_lost())

    def _settle(self, filled: _Filled, checksum: str) -> Outcome:
        """After the partial is closed: what the transfer comes to."""
        if filled.stopped is not None:
            return filled.stopped
        if filled.broken is not None:
            if filled.held == 0:  # nothing to resume: leave no empty file behind
                self.ports.files.discard_partial(self.key)
            if isinstance(filled.broken, DeadlineExceeded):
                return self._out_of_time(filled.broken)
            return self._hub_failure(filled.broken)
        if not filled.matches:
            detail = f"checksum mismatch: expected {checksum}, got {filled.digest}"
            return self._counted(FailureKind.CHECKSUM_MISMATCH, detail)
        return self._verified(checksum, filled)

    def _stream_into(self, partial: Partial) -> int | Outcome:
        """Where this attempt's bytes start once the body has run to its end, or why it stopped early."""
        ports = self.ports
        resumed_from = partial.size
        # Only held bytes need a validator: with it the hub answers from byte 0 when the
        # product changed since they arrived, instead of appending the new product's tail.
        validator = partial.validator if resumed_from else None
        deadline = ports.cancellation.deadline()
        with ports.hub.open_product(
            self.request, resumed_from, validator=validator, deadline=deadline
        ) as stream:
            if stream.offset != resumed_from:
                if stream.offset != 0:
                    detail = f"hub answered from byte {stream.offset}, asked for {resumed_from}"
                    raise HubError(FailureKind.BAD_RESPONSE, detail)
                partial.restart()
                resumed_from = 0
            if resumed_from == 0:
                # Before the first byte, so the stored validator always describes the bytes held.
                partial.set_validator(stream.validator)
                partial.expect_size(stream.total_size)
            total = stream.total_size
            ports.progress.transferred(self.request.id, resumed_from, total)
            for chunk in stream.chunks():
                partial.write(chunk)
                ports.progress.transferred(self.request.id, partial.size, total)
                stop = self._between_chunks()
                if stop is not None:
                    return stop
        if total is not None and partial.size != total:
            detail = f"body ended at byte {partial.size} of {total}"
            raise HubError(FailureKind.TRANSFER_INTERRUPTED, detail)
        return resumed_from

    def _between_chunks(self) -> Outcome | None:
        """``None`` to go on; else the outcome of stopping now (cancelled, or the lease lost)."""
        ports = self.ports
        if ports.cancellation.is_set():
            ports.granules.release(self.request.id, self.owner)
            _log.info("attempt cancelled; granule released", extra=self._extra("download_cancelled"))
            return Defer(delay_seconds=0, reason="cancelled")
        tick = ports.clock.monotonic()
        if tick - self._last_beat >= ports.lease_seconds * _HEARTBEAT_SHARE:
            self._last_beat = tick
            if not ports.granules.heartbeat(
                self.request.id, self.owner, ports.clock.now(), ports.lease_seconds
            ):
                return self._lease_lost()
        return None

    def _out_of_time(self, exc: DeadlineExceeded) -> Outcome:
        # Not the hub's fault and not counted: hand the granule back for a later attempt.
        self.ports.granules.release(self.request.id, self.owner)
        _log.info("out of time; granule released", extra=self._extra("download_out_of_time", error=str(exc)))
        return Defer(delay_seconds=0, reason="out of time")

    def _lease_lost(self) -> Outcome:
        _log.warning("lease lost to another worker; stopping", extra=self._extra("lease_lost"))
        return Defer(delay_seconds=1, reason="lease lost")

    def _verified(self, checksum: str, filled: _Filled) -> Outcome:
        seconds = 0.0 if filled.started is None else self.ports.clock.monotonic() - filled.started
        transferred = filled.transferred
        attempt = self.granule.download_retries + 1
        self.granule = self.ports.granules.record(
            self.request.id, lifecycle.Verify(owner=self.owner, checksum=checksum)
        )
        mb_per_s = transferred / seconds / 1e6 if seconds > 0 else 0.0
        _log.info(
            "download verified",
            extra=self._extra(
                "download_verified",
                bytes=transferred,
                seconds=round(seconds, 3),
                mb_per_s=round(mb_per_s, 1),
                attempt=attempt,
                resumed_from=filled.resumed_from,
            ),
        )
        return self._announce(self.granule, "verified", Transfer(transferred=transferred, seconds=seconds))

    def _announce(self, granule: Granule, reason: str, transfer: Transfer | None = None) -> Outcome:
        if granule.upload_sent:
            return Done(reason=reason, transfer=transfer)
        self.ports.uploads.send_upload(self.request.id, self.request.filename)
        self.ports.granules.record(self.request.id, lifecycle.MarkUploadSent())
        _log.info("upload message sent", extra=self._extra("upload_queued"))
        return Done(reason=reason, transfer=transfer)

    # -- failures -----------------------------------------------------------------

    def _hub_failure(self, exc: HubError) -> Outcome:
        policy = self.ports.policy
        if policy.counts(exc.kind):
            return self._counted(exc.kind, str(exc))
        retries = self.granule.download_retries
        if exc.kind is FailureKind.OFFLINE:
            delay = MAX_DELAY_SECONDS
        elif exc.kind is FailureKind.THROTTLED or (
            exc.kind is FailureKind.UNAUTHORIZED and exc.retry_after is not None
        ):
            # An UNAUTHORIZED with a hint is the remembered refusal of our password: asking
            # again before the hint ends would only be refused (or lock the account).
            delay = policy.throttled(exc.retry_after, retries)
        else:
            delay = policy.backoff(retries)
        return self._postpone(str(exc), delay, spends_budget=policy.spends_deferral_budget(exc.kind))

    def _note_claim(self, claimed: Granule) -> None:
        lease = claimed.lease
        if lease is not None:
            self._claimed_at = lease.expires_at - dt.timedelta(seconds=self.ports.lease_seconds)
            self._claimed_tick = self.ports.clock.monotonic()

    def _store_now(self) -> dt.datetime:
        """Now on the granule store's clock: the claim's time plus what has elapsed since."""
        clock = self.ports.clock
        if self._claimed_at is None:
            return clock.now()
        return self._claimed_at + dt.timedelta(seconds=clock.monotonic() - self._claimed_tick)

    def _postpone(self, error: str, delay: int, *, spends_budget: bool) -> Outcome:
        ports = self.ports
        if spends_budget and ports.policy.deferred_too_long(self.granule.first_attempt_at, self._store_now()):
            return self._abandon(error)
        self.granule = ports.granules.record(
            self.request.id, lifecycle.Postpone(owner=self.owner, error=error)
        )
        _log.warning("postponed", extra=self._extra("download_postponed", error=error, delay=delay))
        return Defer(delay_seconds=delay, reason=error)

    def _abandon(self, error: str) -> Outcome:
        ports = self.ports
        first = self.granule.first_attempt_at
        budget = ports.policy.max_defer_seconds
        self.granule = ports.granules.record(
            self.request.id, lifecycle.Abandon(owner=self.owner, error=error)
        )
        ports.files.remove(self.key)  # after the lease-checked update, as in _give_up
        _log.error(
            "deferred past the budget; download failed",
            extra=self._extra(
                "download_failed",
                error=error,
                first_attempt_at=None if first is None else first.isoformat(),
                max_defer_seconds=budget,
            ),
        )
        return Failed(reason=f"deferred for more than {budget:g} s since the first attempt; last: {error}")

    def _counted(self, kind: FailureKind, detail: str) -> Outcome:
        ports = self.ports
        retries = self.granule.download_retries + 1
        if ports.policy.exhausted(retries):
            self.granule = ports.granules.record(
                self.request.id, lifecycle.Exhaust(owner=self.owner, error=detail)
            )
            ports.files.remove(self.key)  # after the lease-checked update, as in _give_up
            _log.error(
                "retry budget spent; download failed",
                extra=self._extra("download_failed", error=detail, retries=retries),
            )
            return Failed(reason=detail)
        self.granule = ports.granules.record(
            self.request.id, lifecycle.CountFailure(owner=self.owner, error=detail)
        )
        delay = ports.policy.backoff(retries)
        _log.warning(
            "attempt failed; will retry",
            extra=self._extra("download_retry", error=detail, kind=kind.value, retries=retries, delay=delay),
        )
        return RetryLater(delay_seconds=delay, reason=detail)

    def _release_quietly(self) -> None:
        try:
            self.ports.granules.release(self.request.id, self.owner)
        except Exception:  # noqa: BLE001 - the original error is the one worth raising
            _log.warning("could not release the granule after an error", extra=self._extra("release_failed"))
