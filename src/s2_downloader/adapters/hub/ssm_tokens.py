"""The CDSE bearer token from the SSM parameter HLS's token rotator keeps it in.

HLS runs one token rotator that asks CDSE's identity service for a token every five
minutes and writes it to ``/hls-s2-downloader-serverless/<STAGE>/copernicus-token``, so
that its many downloaders never each log in (docs/interface.md, configuration). ``SsmTokens``
reads that token in place of ``CdseTokens``: cached per process, read again once when
CDSE answers 401, and after that the download is deferred as ``UNAUTHORIZED``.

SSM's errors become ``HubError`` here, since a hub call is under way; the token is never
logged, shown in a ``repr`` or put in an error.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import attrs

from s2_downloader.adapters.hub.deadlines import time_left
from s2_downloader.adapters.secret_values import secret_problem
from s2_downloader.adapters.ssm import DETAIL_LIMIT, SSM_STEP_SECONDS, SsmError, SsmParameter
from s2_downloader.domain.errors import DeadlineExceeded, FailureKind, HubError

__all__ = ["SsmTokens", "hls_token_parameter"]

_log = logging.getLogger("s2_downloader.hub.ssm")


def hls_token_parameter(stage: str) -> str:
    """The SSM parameter HLS's token rotator writes the CDSE access token to."""
    return f"/hls-s2-downloader-serverless/{stage}/copernicus-token"


@attrs.define
class SsmTokens:
    """The CDSE bearer token from an SSM parameter, as ``CdseHub``'s token source.

    The value is read on first use and kept; when CDSE refuses it (``rejected``) it is
    forgotten, once however many threads saw the 401, and the retry reads the parameter
    again. A token still refused after that is ``UNAUTHORIZED`` for that attempt (the
    granule is deferred, not counted). ``max_age`` bounds how long a read value is kept
    without a 401, so a token the rotator has replaced is picked up before it expires.

    ``identity_url`` is CDSE's token endpoint: never contacted from here, its host is
    only one of the CDSE hosts a message's ``download_url`` may name.
    """

    parameter: SsmParameter
    identity_url: str
    max_age: float = 240.0
    clock: Callable[[], float] = attrs.field(default=time.monotonic, repr=False)
    _lock: threading.Lock = attrs.field(init=False, factory=threading.Lock, repr=False)
    _token: str | None = attrs.field(init=False, default=None, repr=False)
    _read_at: float = attrs.field(init=False, default=0.0, repr=False)

    def authorization(self, *, deadline: float | None = None) -> str:
        """``Bearer <token>``; raises ``HubError`` (``UNAUTHORIZED``) or ``DeadlineExceeded``."""
        left = time_left(deadline, "the CDSE token from SSM")
        if not self._lock.acquire(timeout=-1 if left is None else left):
            raise DeadlineExceeded("out of time waiting for another thread's SSM token read")
        try:
            token = self._token
            if token is None or self.clock() - self._read_at >= self.max_age:
                token = self._read(deadline)
            return f"Bearer {token}"
        finally:
            self._lock.release()

    def rejected(self, authorization: str) -> bool:
        """CDSE refused ``authorization``: forget that token so the retry reads the parameter again."""
        with self._lock:
            if self._token is not None and authorization == f"Bearer {self._token}":
                self._token = None
        return True

    def _read(self, deadline: float | None) -> str:
        # botocore cannot be given a per-call deadline: start a read only when the
        # longest one the client can take still ends in time.
        left = time_left(deadline, "the CDSE token from SSM")
        if left is not None and left < SSM_STEP_SECONDS:
            msg = f"out of time before reading the CDSE token from SSM ({left:.1f} s left)"
            raise DeadlineExceeded(msg)
        try:
            value = self.parameter.read().strip()
        except SsmError as exc:
            _log.error(
                "could not read the CDSE token: %s",
                exc,
                extra={"event": "hub_token_parameter_failed", "parameter": self.parameter.name},
            )
            raise HubError(FailureKind.UNAUTHORIZED, f"no CDSE token: {exc}") from None
        if not value:
            msg = f"SSM parameter {self.parameter.name[:DETAIL_LIMIT]} is empty"
            raise HubError(FailureKind.UNAUTHORIZED, msg)
        if problem := secret_problem(value):
            # Never sent: a control character would split or corrupt the Authorization header.
            msg = f"SSM parameter {self.parameter.name[:DETAIL_LIMIT]} {problem}"
            _log.error(msg, extra={"event": "hub_token_refused", "parameter": self.parameter.name})
            raise HubError(FailureKind.UNAUTHORIZED, msg)
        self._token, self._read_at = value, self.clock()
        _log.info(
            "CDSE token read from SSM",
            extra={"event": "hub_token_read", "parameter": self.parameter.name},
        )
        return value
