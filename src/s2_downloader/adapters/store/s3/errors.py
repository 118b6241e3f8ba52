"""botocore's errors as the store's own: ``StoreUnavailable`` for "later", ``FileStoreError`` for the rest."""

from __future__ import annotations

from typing import Final

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from s2_downloader.domain.errors import FileStoreError, StoreUnavailable

__all__ = ["error_code", "store_error"]

#: Error codes (and statuses) that mean "later", not "never": not the granule's fault.
_UNAVAILABLE_CODES: Final = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "ServiceUnavailable",
        "RequestTimeout",
        "InternalError",
        "500",
        "502",
        "503",
        "504",
    }
)
_UNAVAILABLE_STATUSES: Final = frozenset({500, 502, 503, 504})
_UNREACHABLE: Final = (EndpointConnectionError, ConnectionClosedError, ConnectTimeoutError, ReadTimeoutError)


def error_code(exc: ClientError) -> str:
    """The S3 error code of ``exc`` (``NoSuchUpload``, ``404``, ...), or ``""``."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def store_error(operation: str, where: str, exc: BotoCoreError | ClientError) -> FileStoreError:
    """``exc`` as ``StoreUnavailable`` (throttled, unreachable, 5xx) or ``FileStoreError``, at ``where``."""
    if isinstance(exc, ClientError):
        code = error_code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = exc.response.get("Error", {}).get("Message", "")
        detail = f"{code or status}{': ' + message if message else ''}"
        if code in _UNAVAILABLE_CODES or status in _UNAVAILABLE_STATUSES:
            return StoreUnavailable(f"S3 {operation} {where}: {detail}")
        return FileStoreError(f"S3 {operation} {where}: {detail}")
    if isinstance(exc, _UNREACHABLE):
        return StoreUnavailable(f"S3 {operation} {where}: {type(exc).__name__}: {exc}")
    return FileStoreError(f"S3 {operation} {where}: {type(exc).__name__}: {exc}")
