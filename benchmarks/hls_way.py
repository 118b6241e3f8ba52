"""HLS today's way of storing a product, timed from inside its own process.

HLS's downloader handler reads the whole body into memory (``response.raw.read()``) and
stores it with one ``PutObject`` whose ``Content-MD5`` is the hub's checksum, so S3
checks the bytes. ``python -m benchmarks.hls_way URL KEY MD5`` does the same with
``requests`` and boto3, the hub's user in ``SCIHUB_USERNAME``/``SCIHUB_PASSWORD``, the
bucket in ``UPLOAD_BUCKET`` and the AWS variables of the throwaway stack, and prints one
JSON line: ``{"seconds": ..., "bytes": ...}``. ``seconds`` covers the GET and the put,
not the interpreter's start or imports (s2-downloader's figure excludes those too).
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time

__all__ = ["main"]


def main(argv: list[str]) -> int:
    """Fetch ``argv[0]`` whole into memory and put it at key ``argv[1]`` with Content-MD5 ``argv[2]``."""
    import boto3
    import requests
    from botocore.config import Config

    url, key, md5 = argv
    # Only the checksums S3 asks for: s2-downloader's client does the same (entrypoints/wiring.py).
    client = boto3.session.Session().client(
        "s3", config=Config(request_checksum_calculation="when_required", read_timeout=300)
    )
    auth = (os.environ["SCIHUB_USERNAME"], os.environ["SCIHUB_PASSWORD"])
    started = time.perf_counter()
    with requests.get(url, auth=auth, stream=True, timeout=60) as response:
        response.raise_for_status()
        body = response.raw.read()
    client.put_object(
        Bucket=os.environ["UPLOAD_BUCKET"],
        Key=key,
        Body=body,
        ContentMD5=base64.b64encode(bytes.fromhex(md5)).decode("ascii"),
    )
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "bytes": len(body)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
