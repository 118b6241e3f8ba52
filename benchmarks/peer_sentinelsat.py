"""sentinelsat downloading and verifying one product, timed from inside its own process.

``python -m benchmarks.peer_sentinelsat PRODUCT_ID DIRECTORY`` with ``HUB_URL``,
``HUB_USER`` and ``HUB_PASSWORD`` in the environment prints one JSON line:
``{"seconds": ..., "path": ..., "bytes": ...}``. ``seconds`` covers ``download(id)``
alone: its metadata requests, the transfer, and the MD5 check it makes by reading
the file back; not the interpreter's start or imports (s2-downloader's figure
excludes those too).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

__all__ = ["main"]


def main(argv: list[str]) -> int:
    """Download ``argv[0]`` into ``argv[1]`` with sentinelsat; print the timing as JSON."""
    from sentinelsat import SentinelAPI

    product_id, directory = argv
    logging.disable(logging.CRITICAL)
    api = SentinelAPI(
        os.environ["HUB_USER"],
        os.environ["HUB_PASSWORD"],
        api_url=os.environ["HUB_URL"].rstrip("/") + "/dhus/",
        show_progressbars=False,
    )
    started = time.perf_counter()
    info = api.download(product_id, directory)  # raises InvalidChecksumError on a mismatch
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "path": info["path"], "bytes": info["size"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
