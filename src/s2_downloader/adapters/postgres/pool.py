"""Connections to PostgreSQL: the checking pool, and error messages without a password in them."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from s2_downloader.domain.errors import StoreError

__all__ = ["conninfo_of", "describe_error", "open_pool", "redact", "run_on"]

_T = TypeVar("_T")


def open_pool(
    conninfo: str,
    *,
    min_size: int = 1,
    max_size: int = 16,
    timeout: float = 10.0,
    connect_timeout: int = 10,
    name: str = "s2-downloader",
    options: str = "",
) -> ConnectionPool[psycopg.Connection[Any]]:
    """Open a pool that checks each connection before lending it out.

    The check costs one round trip and means a PostgreSQL restart or failover costs no
    request: dead connections are replaced instead of handed out. ``timeout`` bounds how
    long a caller waits for a connection. ``options`` are more server options
    (``-c name=value``) after the statement and lock timeouts.
    """
    return ConnectionPool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        name=name,
        check=ConnectionPool.check_connection,
        # Every statement and every silent network failure has a bound too: a stuck
        # lock or a dropped connection must not hang a claim or a heartbeat.
        kwargs={
            "connect_timeout": connect_timeout,
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
            "tcp_user_timeout": 60_000,
            "options": f"-c statement_timeout=60000 -c lock_timeout=15000 {options}".strip(),
        },
        open=True,
    )


_PASSWORD_ASSIGNMENT = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_URI_CREDENTIALS = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


def redact(text: str, conninfo: str) -> str:
    """``text`` with the password of ``conninfo``, and anything that looks like a password, as ``***``."""
    try:
        password = conninfo_to_dict(conninfo).get("password")
    except psycopg.Error:
        password = None
    if password:
        spellings = {
            str(password),
            urllib.parse.quote(str(password)),
            urllib.parse.quote(str(password), safe=""),
        }
        for spelling in sorted(spellings, key=len, reverse=True):
            text = text.replace(spelling, "***")
    text = _PASSWORD_ASSIGNMENT.sub(r"\1***", text)
    return _URI_CREDENTIALS.sub(r"\1***@", text)


def conninfo_of(pool: ConnectionPool[Any]) -> str:
    """The pool's conninfo, or ``""`` when the pool gets it from a callable."""
    # A pool may get its conninfo from a callable (rotating secrets); that one is not called
    # here, and the generic patterns of redact still apply.
    return pool.conninfo if isinstance(pool.conninfo, str) else ""


def describe_error(operation: str, exc: BaseException, where: str | ConnectionPool[Any]) -> str:
    """``granule store: <operation> failed: <error>``, redacted for ``where`` (a conninfo or a pool)."""
    conninfo = where if isinstance(where, str) else conninfo_of(where)
    detail = str(exc).strip() or type(exc).__name__
    if isinstance(exc, PoolTimeout):
        # No connection in time: the database is down or unreachable, whatever was asked.
        return redact(f"granule store: database unreachable{_at(conninfo)} ({operation}: {detail})", conninfo)
    return redact(f"granule store: {operation} failed: {type(exc).__name__}: {detail}", conninfo)


def _at(conninfo: str) -> str:
    """`` at <host>:<port>`` from ``conninfo``, or ``""`` when it does not say."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.Error:
        return ""
    host = params.get("host")
    return f" at {host}:{params.get('port') or 5432}" if host else ""


def run_on(
    pool: ConnectionPool[Any],
    operation: str,
    work: Callable[[psycopg.Connection[Any]], _T],
    *,
    retry: bool = False,
) -> _T:
    """``work`` on a connection of ``pool``, in one transaction; psycopg's errors leave as ``StoreError``.

    ``retry``: the statements are safe to repeat, so a connection that died under them
    (a server restart) is worth one more go with a fresh one.
    """
    attempts = 2 if retry else 1
    for attempt in range(1, attempts + 1):
        died = False
        try:
            with pool.connection() as conn:
                try:
                    return work(conn)
                except psycopg.OperationalError:
                    # Read here: once the pool takes the connection back it is closed.
                    died = conn.broken
                    raise
        except PoolTimeout as exc:
            raise StoreError(describe_error(operation, exc, pool)) from exc
        except psycopg.OperationalError as exc:
            if attempt < attempts and died:
                continue
            raise StoreError(describe_error(operation, exc, pool)) from exc
        except psycopg.Error as exc:
            raise StoreError(describe_error(operation, exc, pool)) from exc
        except UnicodeEncodeError as exc:
            # psycopg encodes parameters itself and raises this one bare.
            msg = f"granule store: {operation} failed: a value is not valid UTF-8 text"
            raise StoreError(msg) from exc
    msg = "unreachable: every attempt returns or raises"
    raise AssertionError(msg)
