"""The hub adapters (docs/interface.md, "The hub"): DHuS over Basic auth, CDSE over an OAuth token.

Modules: ``dhus.py`` and ``cdse.py`` (the two ``Hub`` adapters), their token sources
``cdse_tokens.py`` (CDSE's identity service) and ``ssm_tokens.py`` (HLS's token
parameter), ``credentials.py``, the shared HTTP client ``client.py`` with ``redirects.py``,
``resume.py``, ``stream.py``, ``bodies.py``, ``answers.py`` and ``deadlines.py``, and the
URL rules ``urls.py``. Both speak urllib3 through one ``PoolManager`` the caller builds once per process, and
translate every failure into ``HubError`` with the documented ``FailureKind`` (or
``DeadlineExceeded`` when the caller's deadline passes first).
"""

from s2_downloader.adapters.hub.answers import parse_retry_after
from s2_downloader.adapters.hub.cdse import DEFAULT_DOWNLOAD_HOSTS, CdseHub
from s2_downloader.adapters.hub.cdse_tokens import CdseTokens
from s2_downloader.adapters.hub.credentials import TokenSource
from s2_downloader.adapters.hub.dhus import DhusHub
from s2_downloader.adapters.hub.redirects import MAX_REDIRECTS
from s2_downloader.adapters.hub.stream import DEFAULT_CHUNK_SIZE

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_DOWNLOAD_HOSTS",
    "MAX_REDIRECTS",
    "CdseHub",
    "CdseTokens",
    "DhusHub",
    "TokenSource",
    "parse_retry_after",
]
