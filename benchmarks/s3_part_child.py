"""``s2-downloader`` with the S3 store's part size fixed, for the part-size benchmark.

``python -m benchmarks.s3_part_child MIB ARGS...`` runs ``s2-downloader ARGS`` with parts of
``MIB`` MiB. The part size has no setting (the store sizes parts itself: 16 MiB, larger
only when a product would need more than 10,000 parts), so this process alone replaces the
composition root's store class with one whose default part size is ``MIB`` MiB.
"""

from __future__ import annotations

import functools
import sys

from s2_downloader.adapters.store.s3 import S3Store
from s2_downloader.entrypoints import cli, wiring

__all__ = ["main"]

_MIB = 1024 * 1024


def main(argv: list[str]) -> int:
    """Run the CLI with ``argv[1:]``, parts of ``argv[0]`` MiB."""
    part_size = int(argv[0]) * _MIB
    wiring.S3Store = functools.partial(S3Store, part_size=part_size)  # type: ignore[attr-defined,assignment]
    return cli.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
