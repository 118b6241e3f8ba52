"""The hexagon: the granule state machine, the use case, its ports and policies.

Imports only the standard library and attrs; time and randomness are passed in.
"""

from s2_downloader.domain.errors import (
    BadRequest,
    FailureKind,
    FileStoreError,
    HubError,
    InvalidTransition,
    QueueError,
    S2DownloaderError,
    StoreError,
)
from s2_downloader.domain.granule import TERMINAL_STATES, Granule, Lease, State
from s2_downloader.domain.lifecycle import TRANSITIONS, apply
from s2_downloader.domain.outcome import Defer, Done, Failed, Outcome, Reject, RetryLater, Transfer
from s2_downloader.domain.ports import FileKey, Files
from s2_downloader.domain.request import DownloadRequest
from s2_downloader.domain.retry import RetryPolicy
from s2_downloader.domain.usecase import AttemptContext, handle

__all__ = [
    "TERMINAL_STATES",
    "TRANSITIONS",
    "AttemptContext",
    "BadRequest",
    "Defer",
    "Done",
    "DownloadRequest",
    "Failed",
    "FailureKind",
    "FileKey",
    "FileStoreError",
    "Files",
    "Granule",
    "HubError",
    "InvalidTransition",
    "Lease",
    "Outcome",
    "QueueError",
    "Reject",
    "RetryLater",
    "RetryPolicy",
    "S2DownloaderError",
    "State",
    "StoreError",
    "Transfer",
    "apply",
    "handle",
]
