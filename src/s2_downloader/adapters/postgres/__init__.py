"""The granule table in PostgreSQL: leases by conditional UPDATE, legacy HLS columns kept in step.

The schema is the one docs/interface.md (the database) describes. One module per concern:

- ``pool``: ``open_pool`` (a pool that checks connections), ``run_on`` (work on one of its
  connections, psycopg's errors as ``StoreError``) and ``describe_error`` (error messages
  with any password removed);
- ``schema``: ``migrate``, creating or upgrading the schema in idempotent, live-safe steps;
- ``updates``: one conditional UPDATE per lifecycle event, generated from
  ``lifecycle.TRANSITIONS`` and ``lifecycle.NEEDS_LEASE``;
- ``rows``: rows as ``Granule`` values, and the time conventions of the columns;
- ``store``: ``PostgresGranuleStore``, the ``GranuleStore`` port;
- ``ledger``: ``PostgresUploadLedger``, the S3 store's ``UploadLedger`` on the granule row;
- ``key_leases``: ``PostgresKeyLeases``, the S3 store's ``KeyLeases`` on ``s3_key_lease``;
- ``status``: what ``s2-downloader status`` reports.
"""

from s2_downloader.adapters.postgres.key_leases import PostgresKeyLeases
from s2_downloader.adapters.postgres.ledger import PostgresUploadLedger
from s2_downloader.adapters.postgres.pool import describe_error, open_pool
from s2_downloader.adapters.postgres.schema import migrate
from s2_downloader.adapters.postgres.status import LAST_FILE_DOWNLOADED_TIME, InProgressLease, StoreStatus
from s2_downloader.adapters.postgres.store import PostgresGranuleStore

__all__ = [
    "LAST_FILE_DOWNLOADED_TIME",
    "InProgressLease",
    "PostgresGranuleStore",
    "PostgresKeyLeases",
    "PostgresUploadLedger",
    "StoreStatus",
    "describe_error",
    "migrate",
    "open_pool",
]
