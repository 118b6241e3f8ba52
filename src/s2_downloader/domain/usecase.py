"""The download use case: one request in, one Outcome out, all I/O through the ports.

It follows the original HLS handler (claim, checksum, already downloaded?, download,
compare, hand over or retry) and docs/interface.md (the hub) for what each hub failure means.
"""

from __future__ import annotations

import datetime as dt
import logging
import math

import attrs

from s2_downloader.domain import lifecycle
from s2_downloader.domain.attempt_context import AttemptContext
from s2_downloader.domain.attempt_endings import AttemptEndings
from s2_downloader.domain.attempt_steps import Broken, Filled, Matched, Mismatched, Stopped, Streamed
from s2_downloader.domain.errors import (
    DeadlineExceeded,
    FailureKind,
    FileStoreError,
    HubError,
    InvalidTransition,
    KeyConflict,
    PartialInUse,
)
from s2_downloader.domain.granule import Granule, State
from s2_downloader.domain.outcome import Defer, Done, Failed, Outcome, Transfer
from s2_downloader.domain.ports import (
    Partial,
)
from s2_downloader.domain.request import DownloadRequest
from s2_downloader.domain.retry import MAX_DELAY_SECONDS, MIN_PROGRESS_BYTES

__all__ = ["AttemptContext", "handle"]

_log = logging.getLogger("s2_downloader.download")

#: How often, as a share of the lease, a transfer renews its lease.
_HEARTBEAT_SHARE = 1 / 3


def handle(request: DownloadRequest, context: AttemptContext) -> Outcome:
    """Take one download request as far as it can go now, and say what to do with its message."""
    return _Attempt(request=request, context=context, owner=context.new_owner()).run()


@attrs.define
class _Attempt(AttemptEndings):
    """One attempt at one granule: claim, checksum, transfer, verify; its endings are the base's."""

    def run(self) -> Outcome:
        context = self.context
        now = context.clock.now()
        claimed = context.granules.claim(self.request.id, self.owner, now, context.lease_seconds)
        if claimed is None:
            _log.warning("granule is not in the database", extra=self._extra("granule_unknown"))
            return Done(reason="granule unknown")
        self.granule = claimed
        if claimed.state is State.VERIFIED:
            return self._announce(claimed, "already verified")
        if claimed.state is State.FAILED:
            return Failed(kind=FailureKind.FAILED_EARLIER, detail=claimed.last_error or "no reason recorded")
        if not (claimed.state is State.CLAIMED and claimed.held_by(self.owner)):
            return self._busy(claimed, now)
        if context.policy.exhausted(claimed.download_retries):
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
        except KeyConflict as exc:
            return self._key_conflict(exc)
        except FileStoreError as exc:
            return self._store_failure(exc)
        except InvalidTransition as exc:
            # Every event after the claim is lease-checked: refused means another worker
            # took the granule over (our lease ran out), so stop without touching anything.
            _log.warning("lease lost: %s", exc, extra=self._extra("lease_lost"))
            return Defer(kind=FailureKind.LEASE_LOST, delay_seconds=1, detail=str(exc))

    # -- the branches -------------------------------------------------------------

    def _busy(self, granule: Granule, now: dt.datetime) -> Outcome:
        lease = granule.lease
        wait = 1.0 if lease is None else (lease.expires_at - now).total_seconds() + 1.0
        delay = min(MAX_DELAY_SECONDS, max(1, math.ceil(wait)))
        owner = lease.owner if lease else "nobody"
        _log.info("granule is held by another worker", extra=self._extra("granule_busy", holder=owner))
        return Defer(kind=FailureKind.LEASE_BUSY, delay_seconds=delay, detail=f"held by {owner}")

    def _give_up(self) -> Outcome:
        failed = Failed(
            kind=FailureKind.RETRY_BUDGET_SPENT, detail=f"{self.granule.download_retries} counted failures"
        )
        # Recorded first: the update checks the lease, so a worker that lost it never
        # deletes files the new holder is working on.
        self.granule = self.context.granules.record(
            self.request.id, lifecycle.GiveUp(owner=self.owner, error=failed.reason)
        )
        self._remove_files()
        _log.error("download failed for good", extra=self._extra("download_failed", error=failed.reason))
        return failed

    def _checksum(self) -> str:
        if self.request.checksum and self.granule.download_retries == 0:
            return self.request.checksum
        context = self.context
        return context.hub.checksum(self.request.id, deadline=context.cancellation.deadline()).lower()

    def _transfer(self) -> Outcome:
        files = self.context.files
        checksum = self._checksum()
        on_disk = files.final_digest(self.key)
        if on_disk == checksum:
            return self._verified(checksum, resumed_from=0, transfer=Transfer(transferred=0, seconds=0.0))
        self._clear_bad_final(checksum, on_disk)
        try:
            with files.open_partial(self.key, checksum=checksum) as partial:
                # Decided while the partial is still open: no other attempt can write it
                # until it is promoted or discarded.
                filled = self._keep_or_drop(self._fill(partial, checksum))
        except PartialInUse as exc:
            delay = max(1, min(MAX_DELAY_SECONDS, round(self.context.lease_seconds / 3)))
            return self._postpone(FailureKind.PARTIAL_IN_USE, str(exc), delay)
        return self._settle(filled, checksum)

    def _clear_bad_final(self, checksum: str, on_disk: str | None) -> None:
        # Recorded before anything is removed: the update checks the lease, so a worker
        # that lost it stops here (InvalidTransition) and never deletes a file that the
        # new holder may just have verified.
        self.granule = self.context.granules.record(
            self.request.id, lifecycle.StartDownload(owner=self.owner)
        )
        if on_disk is not None:
            _log.warning(
                "final file does not match its checksum; set aside for a new download",
                extra=self._extra("final_file_mismatch", expected=checksum, actual=on_disk),
            )
            self.context.files.discard_final(self.key)

    def _fill(self, partial: Partial, checksum: str) -> Filled:
        """Stream the product into ``partial`` until it ends, breaks, or the attempt must stop."""
        started = self.context.clock.monotonic()
        self._last_beat = started
        kept_before = partial.size
        try:
            streamed = self._stream_into(partial)
            if streamed.stopped is None and streamed.resumed_from and partial.hexdigest() != checksum:
                # The bytes held from before (or the hash state kept with them) may be what is
                # wrong: a resumed product is redone once from byte 0 before a mismatch counts.
                _log.warning(
                    "resumed product does not match its checksum; redone from byte 0",
                    extra=self._extra("resumed_mismatch", resumed_from=streamed.resumed_from),
                )
                partial.restart()
                streamed = self._stream_into(partial)
        except (HubError, DeadlineExceeded) as exc:
            return Broken(held=partial.size, kept_before=kept_before, error=exc)
        if streamed.stopped is not None:
            return Stopped(outcome=streamed.stopped)
        digest = partial.hexdigest()
        if digest != checksum:
            return Mismatched(digest=digest)
        return Matched(resumed_from=streamed.resumed_from, held=partial.size, started=started)

    def _keep_or_drop(self, filled: Filled) -> Filled:
        """Under the partial's lock: promote a complete match, drop a mismatch."""
        context = self.context
        match filled:
            case Mismatched():
                context.files.discard_partial(self.key)
            case Matched():
                if not context.granules.heartbeat(
                    self.request.id, self.owner, context.clock.now(), context.lease_seconds
                ):
                    return Stopped(outcome=self._lease_lost())
                context.files.promote(self.key)
            case Stopped() | Broken():
                pass
        return filled

    def _settle(self, filled: Filled, checksum: str) -> Outcome:
        """After the partial is closed: what the transfer comes to."""
        match filled:
            case Stopped(outcome=outcome):
                return outcome
            case Broken(held=held, kept_before=kept_before, error=error):
                if held == 0:  # nothing to resume: leave no empty file behind
                    self.context.files.discard_partial(self.key)
                if isinstance(error, DeadlineExceeded):
                    if held < kept_before + MIN_PROGRESS_BYTES:
                        detail = (
                            f"out of time holding {held} bytes, {held - kept_before:+d} on the attempt"
                            f" before; less than {MIN_PROGRESS_BYTES} gained ({error})"
                        )
                        return self._counted(FailureKind.NO_PROGRESS, detail)
                    return self._out_of_time(error)
                return self._hub_failure(error)
            case Mismatched(digest=digest):
                return self._counted(FailureKind.CHECKSUM_MISMATCH, f"expected {checksum}, got {digest}")
            case Matched(resumed_from=resumed_from):
                transfer = filled.transfer(self.context.clock.monotonic())
                return self._verified(checksum, resumed_from=resumed_from, transfer=transfer)

    def _stream_into(self, partial: Partial) -> Streamed:
        """Stream the body into ``partial`` to its end, or until the attempt must stop between chunks."""
        context = self.context
        resumed_from = partial.size
        # Only held bytes need a validator: with it the hub answers from byte 0 when the
        # product changed since they arrived, instead of appending the new product's tail.
        validator = partial.validator if resumed_from else None
        deadline = context.cancellation.deadline()
        with context.hub.open_product(
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
            context.progress.transferred(self.request.id, resumed_from, total)
            for chunk in stream.chunks():
                partial.write(chunk)
                context.progress.transferred(self.request.id, partial.size, total)
                stop = self._between_chunks()
                if stop is not None:
                    return Streamed(resumed_from=resumed_from, stopped=stop)
        if total is not None and partial.size != total:
            detail = f"body ended at byte {partial.size} of {total}"
            raise HubError(FailureKind.TRANSFER_INTERRUPTED, detail)
        return Streamed(resumed_from=resumed_from)

    def _between_chunks(self) -> Defer | None:
        """``None`` to go on; else the outcome of stopping now (cancelled, or the lease lost)."""
        context = self.context
        if context.cancellation.is_set():
            context.granules.release(self.request.id, self.owner)
            _log.info("attempt cancelled; granule released", extra=self._extra("download_cancelled"))
            return Defer(kind=FailureKind.CANCELLED, delay_seconds=0, detail="the worker is stopping")
        tick = context.clock.monotonic()
        if tick - self._last_beat >= context.lease_seconds * _HEARTBEAT_SHARE:
            self._last_beat = tick
            if not context.granules.heartbeat(
                self.request.id, self.owner, context.clock.now(), context.lease_seconds
            ):
                return self._lease_lost()
        return None

    def _out_of_time(self, exc: DeadlineExceeded) -> Outcome:
        # Not the hub's fault and not counted, but its time is spent from the deferral
        # budget: a granule that never finishes in the time it is given ends failed.
        context = self.context
        if context.policy.deferred_too_long(self.granule.first_attempt_at, self._store_now()):
            return self._abandon(FailureKind.OUT_OF_TIME, str(exc))
        # Hand the granule back for a later attempt.
        self.context.granules.release(self.request.id, self.owner)
        _log.info("out of time; granule released", extra=self._extra("download_out_of_time", error=str(exc)))
        return Defer(kind=FailureKind.OUT_OF_TIME, delay_seconds=0, detail=str(exc))

    def _lease_lost(self) -> Defer:
        _log.warning("lease lost to another worker; stopping", extra=self._extra("lease_lost"))
        return Defer(kind=FailureKind.LEASE_LOST, delay_seconds=1, detail="the lease could not be renewed")

    def _verified(self, checksum: str, *, resumed_from: int, transfer: Transfer) -> Outcome:
        attempt = self.granule.download_retries + 1
        self.granule = self.context.granules.record(
            self.request.id, lifecycle.Verify(owner=self.owner, checksum=checksum)
        )
        seconds = transfer.seconds
        mb_per_s = transfer.transferred / seconds / 1e6 if seconds > 0 else 0.0
        _log.info(
            "download verified",
            extra=self._extra(
                "download_verified",
                bytes=transfer.transferred,
                seconds=round(seconds, 3),
                mb_per_s=round(mb_per_s, 1),
                attempt=attempt,
                resumed_from=resumed_from,
            ),
        )
        return self._announce(self.granule, "verified", transfer)

    def _announce(self, granule: Granule, reason: str, transfer: Transfer | None = None) -> Outcome:
        if granule.upload_sent:
            return Done(reason=reason, transfer=transfer)
        self.context.uploads.send_upload(self.request.id, self.request.filename)
        self.context.granules.record(self.request.id, lifecycle.MarkUploadSent())
        _log.info("upload message sent", extra=self._extra("upload_queued"))
        return Done(reason=reason, transfer=transfer)

    # -- failures -----------------------------------------------------------------

    def _hub_failure(self, exc: HubError) -> Outcome:
        policy = self.context.policy
        if policy.counts(exc.kind):
            return self._counted(exc.kind, exc.detail)
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
        return self._postpone(exc.kind, exc.detail, delay)
