"""``s2-downloader fetch ID``: one product by hand, no queue, no database (docs/interface.md section 1).

A one-off fetch is the workers' use case (``domain.handle``) on other ports: a
one-granule in-memory granule store, no upload queue, the configured hub adapter, and the
EFS file store rooted at a hidden staging directory, ``DIR/.s2-fetch``. The hub adapter
is asked for everything the hub knows (the product's name, its checksum, where its bytes
are), so this module builds no hub URL and reads no hub answer. The EFS store keeps a
product at ``<root>/<id>/<filename>`` and its data in progress beside it as
``.<filename>.partial``, so the product is verified there and then renamed to
``DIR/NAME`` (one directory, one file system: an atomic rename). ``DIR/NAME`` therefore
only ever holds a product whose MD5 matched the hub's.

- Resuming: an interrupted fetch (Ctrl-C, kill -9, a broken connection) leaves the
  partial in ``DIR/.s2-fetch/<id>/``; the next fetch of the same id and name resumes it
  with a ``Range`` request, as a worker resumes a partial on EFS.
- Already there: a file at ``DIR/NAME`` is moved into the staging directory first, so the
  use case checks it against the hub's checksum: if it matches nothing is downloaded, and
  if not it is replaced by a verified download.
- Waiting: counted failures are retried after the back-off (``RETRY_DELAY_SECONDS``) up to
  ``MAX_DOWNLOAD_RETRIES``; deferrals (throttling, offline, hub errors) are waited out
  until ``MAX_DEFER_SECONDS`` after the first attempt. A product the hub does not know, or
  credentials it refuses, end the fetch at once (exit 1, the hub's answer on one line).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol, TextIO

import attrs
import urllib3

from s2_downloader.adapters.memory_granules import MemoryGranuleStore
from s2_downloader.adapters.store.efs import EfsFileStore
from s2_downloader.domain import (
    AttemptContext,
    Defer,
    Done,
    Granule,
    Outcome,
    RetryLater,
    RetryPolicy,
    handle,
)
from s2_downloader.domain.errors import BadRequest, FailureKind, HubError
from s2_downloader.domain.ports import FileKey, Hub
from s2_downloader.domain.request import DownloadRequest, validate_filename, validate_id
from s2_downloader.entrypoints import wiring
from s2_downloader.entrypoints.config import Settings
from s2_downloader.entrypoints.logs import configure_logging, scrub
from s2_downloader.entrypoints.progress import (
    ConsoleFormatter,
    DisplayLogHandler,
    ProgressBoard,
    TerminalDisplay,
)
from s2_downloader.entrypoints.usage import UsageError

__all__ = ["STAGING_DIR", "FetchHub", "FetchResult", "default_filename", "fetch", "fetch_command"]

_log = logging.getLogger("s2_downloader.fetch")

#: The hidden directory under DIR where products are downloaded and verified.
STAGING_DIR = ".s2-fetch"
#: Hub answers that end a fetch at once: waiting would not change them.
_FINAL_KINDS = frozenset({FailureKind.NOT_FOUND, FailureKind.UNAUTHORIZED})


class FetchHub(Hub, Protocol):
    """The hub as ``fetch`` uses it: the ``Hub`` port, and the link a message would carry."""

    def product_url(self, granule_id: str) -> str:
        """The ``download_url`` a download message for ``granule_id`` carries."""
        ...

    def accepts_download_url(self, url: str) -> None:
        """Raise ``BadRequest`` unless the hub serves ``url``."""
        ...


@attrs.frozen(kw_only=True)
class FetchResult:
    """How a fetch ended: ``path`` of the verified product, or ``error`` (the hub's answer)."""

    path: Path | None = None
    error: str | None = None

    @property
    def exit_code(self) -> int:
        """0 verified, 1 not."""
        return 0 if self.path is not None else 1


def default_filename(product_name: str | None, granule_id: str) -> str:
    """The hub's product name with ``.SAFE`` replaced by ``.zip`` (``.zip`` added when it has neither).

    ``<ID>.zip`` when the hub gave no name, or one that is not a safe filename.
    """
    if product_name:
        stem = product_name.strip()
        name = stem[: -len(".SAFE")] + ".zip" if stem.upper().endswith(".SAFE") else stem
        if not name.lower().endswith(".zip"):
            name += ".zip"
        try:
            return validate_filename(name)
        except BadRequest:
            pass
    return f"{granule_id}.zip"


def _ends_the_fetch(outcome: Outcome) -> bool:
    """Whether the hub's answer behind ``outcome`` is final: it does not know the product, or refuses us."""
    match outcome:
        case RetryLater(kind=kind) | Defer(kind=kind):
            return kind in _FINAL_KINDS
    return False


def _filename(hub: FetchHub, granule_id: str) -> str:
    """The default filename, from the hub's name for the product; ``HubError`` when its answer is final."""
    try:
        name = hub.product_name(granule_id)
    except HubError as exc:
        if exc.kind in _FINAL_KINDS:
            raise
        _log.info("no product name from the hub: %s", exc, extra={"event": "fetch_no_name"})
        name = None
    return default_filename(name, granule_id)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@attrs.define
class _Fetch:
    """One product through the use case until it is verified, failed, or the hub's answer is final."""

    settings: Settings
    hub: FetchHub
    request: DownloadRequest
    directory: Path
    progress: ProgressBoard | None
    say: Callable[[str], None]
    sleep: Callable[[float], None]
    files: EfsFileStore = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.files = EfsFileStore(mount=self.staging)

    @property
    def staging(self) -> Path:
        return self.directory / STAGING_DIR

    @property
    def target(self) -> Path:
        return self.directory / self.request.filename

    @property
    def staged(self) -> Path:
        """Where the EFS store keeps the verified product before it is delivered."""
        return self.files.final_path(FileKey(granule_id=self.request.id, filename=self.request.filename))

    def run(self) -> FetchResult:
        self._stage_existing()
        context = self._context()
        while True:
            outcome = handle(self.request, context)
            if isinstance(outcome, Done):
                return FetchResult(path=self._deliver())
            if not isinstance(outcome, RetryLater | Defer) or _ends_the_fetch(outcome):
                return FetchResult(error=outcome.reason)
            delay = outcome.delay_seconds
            self.say(f"waiting {delay} s before trying again ({scrub(outcome.reason)[:200]})")
            self.sleep(max(delay, 1))

    def _stage_existing(self) -> None:
        """Put a file already at ``DIR/NAME`` where the use case checks it like any final file."""
        self.staging.mkdir(exist_ok=True)
        staged = self.staged
        if self.target.exists() and not staged.exists():
            # Kept if it matches the hub's checksum, else replaced.
            staged.parent.mkdir(exist_ok=True)
            os.replace(self.target, staged)

    def _context(self) -> AttemptContext:
        """The use case's ports: this one granule in memory, the hub, the staging store, nobody to tell."""
        granules = MemoryGranuleStore()
        granules.add(Granule(id=self.request.id, filename=self.request.filename))
        settings = self.settings
        context = AttemptContext(
            granules=granules,
            hub=self.hub,
            files=self.files,
            uploads=wiring.NoUploads(),
            clock=wiring.SystemClock(),
            policy=RetryPolicy(
                max_retries=settings.max_download_retries,
                base_delay=settings.retry_delay_seconds,
                max_defer_seconds=settings.max_defer_seconds,
                random=random.SystemRandom().random,
            ),
            new_owner=lambda: f"fetch-{os.getpid()}",
            lease_seconds=settings.lease_seconds,
        )
        return context if self.progress is None else attrs.evolve(context, progress=self.progress)

    def _deliver(self) -> Path:
        staged = self.staged
        os.replace(staged, self.target)
        _fsync_directory(self.directory)
        for leftover in (staged.parent, self.staging):
            with contextlib.suppress(OSError):  # not empty: another fetch is using it
                leftover.rmdir()
        return self.target


def _check_arguments(granule_id: str, filename: str | None, directory: Path) -> None:
    """``UsageError`` naming ID, --filename or --dir when one is unusable; creates the directory."""
    try:
        validate_id(granule_id)
    except BadRequest as exc:
        raise UsageError("ID", exc.reason) from None
    if filename is not None:
        try:
            validate_filename(filename)
        except BadRequest as exc:
            raise UsageError("--filename", exc.reason) from None
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError("--dir", f"cannot use {str(directory)!r}: {exc.strerror}") from None
    if not directory.is_dir():
        raise UsageError("--dir", f"{str(directory)!r} is not a directory")


@contextlib.contextmanager
def _configured_hub(settings: Settings) -> Iterator[FetchHub]:
    """The hub adapter ``settings`` configure, on a pool of its own closed on exit."""
    http = urllib3.PoolManager(num_pools=4, maxsize=2)
    try:
        yield wiring.build_hub(settings, http)
    finally:
        http.clear()


def fetch(
    settings: Settings,
    granule_id: str,
    *,
    directory: Path,
    filename: str | None = None,
    progress: ProgressBoard | None = None,
    say: Callable[[str], None] = lambda line: None,
    sleep: Callable[[float], None] = time.sleep,
    hub: FetchHub | None = None,
) -> FetchResult:
    """Download, verify and deliver one product to ``directory / (filename or its default)``.

    ``hub``: the hub to fetch from (default: the one ``settings`` configure). Raises
    ``UsageError`` for a bad id, filename or directory, ``ConfigError`` for a bad hub
    configuration, and the infrastructure errors of the file store.
    """
    _check_arguments(granule_id, filename, directory)
    source: AbstractContextManager[FetchHub] = (
        _configured_hub(settings) if hub is None else contextlib.nullcontext(hub)
    )
    with source as chosen:
        try:
            name = _filename(chosen, granule_id) if filename is None else filename
        except HubError as exc:
            return FetchResult(error=str(exc))
        request = DownloadRequest.create(
            id=granule_id,
            filename=name,
            download_url=chosen.product_url(granule_id),
            checksum=None,
            check_url=chosen.accepts_download_url,
        )
        return _Fetch(
            settings=settings,
            hub=chosen,
            request=request,
            directory=directory.resolve(),
            progress=progress,
            say=say,
            sleep=sleep,
        ).run()


def fetch_command(
    settings: Settings,
    granule_id: str,
    *,
    directory: str | None,
    filename: str | None,
    interactive: bool | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """``s2-downloader fetch``: progress on a terminal, the product's path on stdout; the exit code."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    interactive = err.isatty() if interactive is None else interactive
    board = ProgressBoard() if interactive else None
    display = TerminalDisplay(board=board, stream=err) if board is not None else None
    if display is not None:
        handler = DisplayLogHandler(display)
        handler.setFormatter(ConsoleFormatter())
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.WARNING)
        display.start()
    else:
        configure_logging(logging.WARNING, stream=err)

    def say(line: str) -> None:
        if display is not None:
            display.print_above(line)
        else:
            err.write(line + "\n")
            err.flush()

    try:
        result = fetch(
            settings,
            granule_id,
            directory=Path(directory or "."),
            filename=filename,
            progress=board,
            say=say,
        )
    finally:
        if display is not None:
            display.stop()
    if result.path is not None:
        out.write(f"{result.path}\n")
        out.flush()
        return 0
    first_line = (result.error or "failed").splitlines()[0] if result.error else "failed"
    err.write(f"s2-downloader: fetch {granule_id} failed: {scrub(first_line)[:500]}\n")
    err.flush()
    return 1
