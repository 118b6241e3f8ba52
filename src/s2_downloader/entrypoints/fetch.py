"""``s2-downloader fetch ID``: one product by hand, no queue, no database (docs/interface.md section 1).

The same use case as the workers (``domain.handle``), over an in-memory granule store,
the configured hub, and the EFS file store rooted at a hidden staging directory,
``DIR/.s2-fetch``: the EFS store keeps a product at ``<root>/<id>/<filename>`` and its
data in progress beside it as ``.<filename>.partial``, so the product is verified there
and then renamed to ``DIR/NAME`` (one directory, one file system: an atomic rename).
``DIR/NAME`` therefore only ever holds a product whose MD5 matched the hub's.

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

import base64
import contextlib
import logging
import os
import random
import sys
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import attrs
import urllib3

from s2_downloader.adapters.efs import EfsFileStore
from s2_downloader.adapters.granule_queries import kind_of
from s2_downloader.adapters.hub import CdseHub, DhusHub
from s2_downloader.adapters.hub.client import HubHttp
from s2_downloader.adapters.hub.urls import check_url
from s2_downloader.adapters.memory_granules import MemoryGranuleStore
from s2_downloader.domain import AttemptContext, Defer, Done, Failed, Granule, RetryLater, RetryPolicy, handle
from s2_downloader.domain.errors import BadRequest, FailureKind, HubError
from s2_downloader.domain.ports import FileKey
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

__all__ = ["STAGING_DIR", "FetchResult", "default_filename", "fetch", "fetch_command"]

_log = logging.getLogger("s2_downloader.fetch")

#: The hidden directory under DIR where products are downloaded and verified.
STAGING_DIR = ".s2-fetch"


@attrs.frozen(kw_only=True)
class FetchResult:
    """How a fetch ended: ``path`` of the verified product, or ``error`` (the hub's answer)."""

    path: Path | None = None
    error: str | None = None

    @property
    def exit_code(self) -> int:
        """0 verified, 1 not."""
        return 0 if self.path is not None else 1


@attrs.frozen
class _NoUploads:
    """Nobody to announce a fetched product to."""

    def send_upload(self, granule_id: str, filename: str) -> None:
        del granule_id, filename


@attrs.frozen
class _Basic:
    """HTTP Basic credentials for the DHuS name lookup (the hub adapter keeps its own)."""

    header: str = attrs.field(repr=False)

    def authorization(self, *, deadline: float | None = None) -> str:
        del deadline
        return self.header

    def rejected(self, authorization: str) -> bool:
        del authorization
        return False


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


def _name_lookup(settings: Settings, http: urllib3.PoolManager, granule_id: str) -> Any:
    """The hub's catalogue entry for ``granule_id`` (its JSON answer); raises ``HubError``."""
    timeout = urllib3.Timeout(connect=settings.http_connect_timeout, read=settings.http_read_timeout)
    key = urllib.parse.quote(granule_id, safe="")
    if settings.hub_api == "cdse":
        # The CDSE catalogue is public: no token is sent for a name.
        base = settings.copernicus_checksum_url.rstrip("/")
        query = urllib.parse.quote(f"Id eq '{granule_id}'", safe="'")
        url = f"{base}/odata/v1/Products?$filter={query}"
        client = HubHttp(pool=http, timeout=timeout, credential_origins=frozenset())
    else:
        base = str(settings.scihub_url or "").rstrip("/")
        credentials = wiring.hub_credentials(settings)
        token = base64.b64encode(f"{credentials.username}:{credentials.password}".encode()).decode("ascii")
        url = f"{base}/dhus/odata/v1/Products('{key}')/?$format=json&$select=Name"
        client = HubHttp(
            pool=http,
            timeout=timeout,
            credential_origins=frozenset({check_url(base)}),
            credentials=_Basic(f"Basic {token}"),
        )
    response = client.request("GET", url, granule_id=granule_id, headers={"Accept": "application/json"})
    return client.read_json(response, url)


def product_name(settings: Settings, http: urllib3.PoolManager, granule_id: str) -> str | None:
    """The product's name as the hub lists it; ``None`` when the answer has none.

    Raises ``HubError`` (``NOT_FOUND`` when the hub does not know the id).
    """
    document = _name_lookup(settings, http, granule_id)
    try:
        if settings.hub_api == "cdse":
            products = document["value"]
            if not products:
                raise HubError(FailureKind.NOT_FOUND, f"the CDSE catalogue has no product {granule_id}")
            name = products[0].get("Name")
        else:
            name = document["d"].get("Name")
    except (KeyError, TypeError, AttributeError, IndexError):
        return None
    return name if isinstance(name, str) and name.strip() else None


def _download_url(settings: Settings, granule_id: str) -> str:
    key = urllib.parse.quote(granule_id, safe="")
    if settings.hub_api == "cdse":
        return f"{settings.copernicus_zipper_url.rstrip('/')}/odata/v1/Products({key})/$value"
    return f"{str(settings.scihub_url or '').rstrip('/')}/dhus/odata/v1/Products('{key}')/$value"


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@attrs.define
class _Fetch:
    settings: Settings
    hub: DhusHub | CdseHub
    request: DownloadRequest
    directory: Path
    progress: ProgressBoard | None
    say: Callable[[str], None]
    sleep: Callable[[float], None]

    @property
    def staging(self) -> Path:
        return self.directory / STAGING_DIR

    @property
    def target(self) -> Path:
        return self.directory / self.request.filename

    def run(self) -> FetchResult:
        files = EfsFileStore(mount=self.staging)
        key = FileKey(granule_id=self.request.id, filename=self.request.filename)
        self.staging.mkdir(exist_ok=True)
        staged = files.final_path(key)
        if self.target.exists() and not staged.exists():
            # Checked by the use case like any final file: kept if it matches, else replaced.
            staged.parent.mkdir(exist_ok=True)
            os.replace(self.target, staged)
        granules = MemoryGranuleStore()
        granules.add(Granule(id=self.request.id, filename=self.request.filename))
        settings = self.settings
        ports = AttemptContext(
            granules=granules,
            hub=self.hub,
            files=files,
            uploads=_NoUploads(),
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
        if self.progress is not None:
            ports = attrs.evolve(ports, progress=self.progress)
        while True:
            outcome = handle(self.request, ports)
            match outcome:
                case Done():
                    return FetchResult(path=self._deliver(staged))
                case Failed(reason=reason):
                    return FetchResult(error=reason)
                case RetryLater(reason=reason) if kind_of(reason) == FailureKind.NOT_FOUND.value:
                    return FetchResult(error=reason)
                case Defer(reason=reason) if kind_of(reason) == FailureKind.UNAUTHORIZED.value:
                    return FetchResult(error=reason)
                case (
                    RetryLater(delay_seconds=delay, reason=reason) | Defer(delay_seconds=delay, reason=reason)
                ):
                    self.say(f"waiting {delay} s before trying again ({scrub(reason)[:200]})")
                    self.sleep(max(delay, 1))
                case _:
                    return FetchResult(error=getattr(outcome, "reason", "unexpected outcome"))

    def _deliver(self, staged: Path) -> Path:
        os.replace(staged, self.target)
        _fsync_directory(self.directory)
        for leftover in (staged.parent, self.staging):
            with contextlib.suppress(OSError):  # not empty: another fetch is using it
                leftover.rmdir()
        return self.target


def fetch(
    settings: Settings,
    granule_id: str,
    *,
    directory: Path,
    filename: str | None = None,
    progress: ProgressBoard | None = None,
    say: Callable[[str], None] = lambda line: None,
    sleep: Callable[[float], None] = time.sleep,
) -> FetchResult:
    """Download, verify and deliver one product to ``directory / (filename or its default)``.

    Raises ``UsageError`` for a bad id, filename or directory, ``ConfigError`` for a bad
    hub configuration, and the infrastructure errors of the file store.
    """
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
    http = urllib3.PoolManager(num_pools=4, maxsize=2)
    try:
        hub = wiring.build_hub(settings, http)
        if filename is None:
            try:
                name = product_name(settings, http, granule_id)
            except HubError as exc:
                if exc.kind in (FailureKind.NOT_FOUND, FailureKind.UNAUTHORIZED):
                    return FetchResult(error=str(exc))
                _log.info("no product name from the hub: %s", exc, extra={"event": "fetch_no_name"})
                name = None
            filename = default_filename(name, granule_id)
        request = DownloadRequest.create(
            id=granule_id,
            filename=filename,
            download_url=_download_url(settings, granule_id),
            checksum=None,
            check_url=hub.accepts_download_url,
        )
        return _Fetch(
            settings=settings,
            hub=hub,
            request=request,
            directory=directory.resolve(),
            progress=progress,
            say=say,
            sleep=sleep,
        ).run()
    finally:
        http.clear()


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
