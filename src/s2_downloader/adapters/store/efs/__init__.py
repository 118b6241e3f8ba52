"""The product store on the EFS mount (``STORE=efs``): final files, resumable partial files, their sweep.

One module per concept: ``paths`` (names and the checks that keep every path inside the
mount), ``hashing`` (streamed and background MD5), ``partial`` (partial files, their lock
and validator sidecar), ``final`` (final files and the rename into place), ``sweep``
(stale partials) and ``store`` (``EfsFileStore``, the port they make together).
"""

from s2_downloader.adapters.store.efs.partial import EfsPartial
from s2_downloader.adapters.store.efs.paths import PARTIAL_SUFFIX, partial_name
from s2_downloader.adapters.store.efs.store import EfsFileStore

__all__ = ["PARTIAL_SUFFIX", "EfsFileStore", "EfsPartial", "partial_name"]
