"""Assertions the end-to-end tests share: files, rows, queues."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from s2_downloader.testing.hubsim import SimProduct
from s2_downloader.testing.stack import Pipeline

__all__ = [
    "assert_in_bucket",
    "dead_letters",
    "file_md5",
    "on_disk",
    "partial_files",
    "rows",
    "upload_bodies",
]


def file_md5(path: Path) -> str:
    """The MD5 of a file, streamed."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def on_disk(path: Path) -> int:
    """The size of the file at ``path``; 0 when there is none (yet, or any more)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def partial_files(pipeline: Pipeline) -> list[Path]:
    """Every partial (dot-named) file under the mount."""
    return sorted(p for p in pipeline.efs_dir.rglob(".*") if p.is_file())


def rows(pipeline: Pipeline) -> dict[str, dict[str, Any]]:
    """The granule table, keyed by id."""
    return pipeline.rows()


def upload_bodies(pipeline: Pipeline) -> list[dict[str, Any]]:
    """Every upload message sent (drains the upload queue)."""
    return [json.loads(b) for b in pipeline.drain(pipeline.queues.upload_url)]


def dead_letters(pipeline: Pipeline) -> list[str]:
    """Every body in the dead-letter queue (drains it)."""
    return pipeline.drain(pipeline.queues.dead_letter_url)


def assert_verified(pipeline: Pipeline, products: list[SimProduct]) -> None:
    """Each product is verified, in place with the right MD5, flags consistent, no partial left."""
    table = rows(pipeline)
    for product in products:
        row = table[product.id]
        assert ("verified", True, False, False, product.md5) == (
            row["state"],
            row["downloaded"],
            row["in_progress"],
            row["download_failed"],
            row["checksum"],
        ), product.id
        assert product.md5 == file_md5(pipeline.final_path(product.id))
        assert row["upload_queued_at"] is not None
    assert [] == partial_files(pipeline)


def assert_in_bucket(pipeline: Pipeline, products: list[SimProduct]) -> None:
    """Each product is verified and is the object at its key (bytes, ``md5`` metadata); no upload is open."""
    table = rows(pipeline)
    for product in products:
        row = table[product.id]
        assert ("verified", True, False, False, product.md5) == (
            row["state"],
            row["downloaded"],
            row["in_progress"],
            row["download_failed"],
            row["checksum"],
        ), product.id
        stored = pipeline.stored_object(pipeline.object_key(product.id))
        assert stored is not None, product.id
        assert (product.size, product.md5, product.md5) == (
            stored.size,
            stored.md5,
            stored.metadata.get("md5"),
        )
        assert pipeline.store_upload(product.id) is None
    assert [] == pipeline.open_uploads()
