"""The project's own error hierarchy; adapters translate library errors into these."""

from __future__ import annotations

import enum

__all__ = [
    "BadRequest",
    "DeadlineExceeded",
    "FailureKind",
    "FileStoreError",
    "HubError",
    "InvalidTransition",
    "PartialInUse",
    "QueueError",
    "S2DownloaderError",
    "StoreError",
    "StoreUnavailable",
]


class S2DownloaderError(Exception):
    """Base of every error this project raises on purpose."""


class InvalidTransition(S2DownloaderError):
    """An event that the granule's current state does not allow; nothing changed."""


class BadRequest(S2DownloaderError):
    """A download message that breaks the message rules (docs/interface.md section 3); ``reason`` says how."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DeadlineExceeded(S2DownloaderError):
    """A blocking call would outlive the attempt's deadline (the Lambda's remaining time).

    Not the hub's fault and not counted: the granule is handed back for a later attempt.
    """


class StoreError(S2DownloaderError):
    """The granule store could not be read or written."""


class FileStoreError(S2DownloaderError):
    """The file store (the EFS mount or the S3 bucket) could not be read or written."""


class StoreUnavailable(FileStoreError):
    """The file store cannot be reached or asks to slow down (S3 ``SlowDown``, 503); try again later.

    Like every ``FileStoreError`` it leaves ``handle`` with the granule released and is never
    counted against the granule: the entry points hand the message back with a delay.
    """


class PartialInUse(FileStoreError):
    """Another attempt is writing the granule's partial file right now."""


class QueueError(S2DownloaderError):
    """A queue operation failed."""


class FailureKind(enum.Enum):
    """Why an attempt at a granule did not verify, as docs/interface.md (the hub) sorts it."""

    CHECKSUM_MISMATCH = "checksum_mismatch"
    TRANSFER_INTERRUPTED = "transfer_interrupted"
    NOT_FOUND = "not_found"
    THROTTLED = "throttled"
    OFFLINE = "offline"
    SERVER_ERROR = "server_error"
    UNAUTHORIZED = "unauthorized"
    BAD_RESPONSE = "bad_response"


class HubError(S2DownloaderError):
    """The hub did not deliver; ``kind`` decides the outcome, ``retry_after`` is its hint."""

    def __init__(self, kind: FailureKind, detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"{kind.value}: {detail}")
        self.kind = kind
        self.detail = detail
        self.retry_after = retry_after
