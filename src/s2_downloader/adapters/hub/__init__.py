"""The hub adapters (docs/interface.md, "The hub"): DHuS over Basic auth, CDSE over an OAuth token.

Both speak urllib3 through one ``PoolManager`` the caller builds once per process, and
translate every failure into ``HubError`` with the documented ``FailureKind`` (or
``DeadlineExceeded`` when the caller's deadline passes first).
"""

from s2_downloader.adapters.hub.cdse import DEFAULT_DOWNLOAD_HOSTS, CdseHub, CdseTokens
from s2_downloader.adapters.hub.client import DEFAULT_CHUNK_SIZE, MAX_REDIRECTS, parse_retry_after
from s2_downloader.adapters.hub.dhus import DhusHub

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_DOWNLOAD_HOSTS",
    "MAX_REDIRECTS",
    "CdseHub",
    "CdseTokens",
    "DhusHub",
    "parse_retry_after",
]
