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
    "KeyConflict",
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
    """The file store (the EFS mount or the S3 bucket) could not be read or written.

    The use case asks the store's health check which it was: failing, an outage (the error
    leaves ``handle`` with the granule released, nothing counted); passing, the granule's
    own error, counted as ``FailureKind.STORE``.
    """


class StoreUnavailable(FileStoreError):
    """The file store cannot be reached or asks to slow down (S3 ``SlowDown``, 503); try again later.

    Always an outage, without a health check: it leaves ``handle`` with the granule released
    and is never counted; the entry points hand the message back with a delay. A failing
    health check raises it too.
    """


class PartialInUse(FileStoreError):
    """Another attempt is writing the granule's partial file right now."""


class KeyConflict(FileStoreError):
    """The product's key holds another granule's verified product: this granule cannot be stored there.

    Two granules whose key template yields one key (docs/interface.md section 4). Not an
    outage and not worth a retry: the use case fails the granule at once, uncounted, and the
    object is left as it is.
    """

    def __init__(self, key: str, holder: str) -> None:
        super().__init__(f"{key} holds {holder}")
        self.key = key
        self.holder = holder


class QueueError(S2DownloaderError):
    """A queue operation failed."""


class FailureKind(enum.Enum):
    """Why handling a granule did not verify it this time: the one classification of failures.

    Every outcome but success carries one (docs/interface.md section 6 sorts the hub's
    answers; the rest are the use case's own). A failure that is recorded is written to
    ``last_error`` as ``describe(detail)``, so the text before its first ``": "`` is the
    kind, and the metrics' ``Kind`` is ``value``. The values already stored by earlier
    versions (the hub's kinds, ``retry_budget_spent``, ``partial_in_use``) are kept.
    """

    # The hub's answers (docs/interface.md section 6).
    CHECKSUM_MISMATCH = "checksum_mismatch"
    TRANSFER_INTERRUPTED = "transfer_interrupted"
    NOT_FOUND = "not_found"
    THROTTLED = "throttled"
    OFFLINE = "offline"
    SERVER_ERROR = "server_error"
    UNAUTHORIZED = "unauthorized"
    BAD_RESPONSE = "bad_response"
    # The use case's own, recorded in last_error.
    #: Another attempt is writing the granule's partial.
    PARTIAL_IN_USE = "partial_in_use"
    #: The granule's counted failures were already past the budget when it was claimed.
    RETRY_BUDGET_SPENT = "retry_budget_spent"
    #: The store refused this granule while the store as a whole was healthy (its health
    #: check passed): a directory in the way, a key the bucket refuses, a part S3 rejects.
    STORE = "store"
    #: The product's key holds another granule's verified product (docs/interface.md section 4).
    KEY_CONFLICT = "key_conflict"
    #: Time ran out before the attempt kept 1 MiB more than the one before it had: a hub
    #: that ignores Range, or a transfer slower than the time a Lambda has (counted).
    NO_PROGRESS = "no_progress"
    # The use case's own, not recorded: the granule is handed back as it was.
    #: Another worker holds the granule's lease.
    LEASE_BUSY = "lease_busy"
    #: Another worker took the granule over while this attempt ran (our lease ran out).
    LEASE_LOST = "lease_lost"
    #: The attempt's deadline (the Lambda's remaining time) came first.
    OUT_OF_TIME = "out_of_time"
    #: The worker is stopping.
    CANCELLED = "cancelled"
    #: The granule had failed before this message arrived (a redelivery).
    FAILED_EARLIER = "failed_earlier"
    #: The download message breaks the message rules.
    BAD_MESSAGE = "bad_message"

    def describe(self, detail: str) -> str:
        """``<kind>: <detail>``: how ``last_error`` and an outcome's ``reason`` say a failure."""
        return f"{self.value}: {detail}"


class HubError(S2DownloaderError):
    """The hub did not deliver; ``kind`` decides the outcome, ``retry_after`` is its hint."""

    def __init__(self, kind: FailureKind, detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(kind.describe(detail))
        self.kind = kind
        self.detail = detail
        self.retry_after = retry_after
