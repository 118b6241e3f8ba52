"""pytest fixtures for end-to-end tests: the whole throwaway stack and the installed CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from s2_downloader.entrypoints import lambda_handler
from s2_downloader.testing.stack import Pipeline, S3Server, Services

__all__ = ["lambda_env", "pipeline", "s3_pipeline", "services"]

#: The installed console script, next to the interpreter running the tests.
CLI = str(Path(sys.executable).parent / "s2-downloader")


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    """PostgreSQL, moto server and the hub simulator for the whole session."""
    with Services() as running:
        yield running


@pytest.fixture
def pipeline(services: Services) -> Iterator[Pipeline]:
    """A fresh database, queue set and mount directory; the hub's rate limit reset afterwards."""
    # Four receives before dead-lettering: a SIGKILLed runner's orphaned long poll can take one.
    with services.pipeline(visibility_timeout=5, max_receive_count=4) as made:
        yield made
    services.hub.rate_limit = None
    services.hub.token_lifetime = 600.0


@pytest.fixture
def lambda_env(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A fresh Lambda execution environment in this process, on the pipeline's settings."""
    for key, value in pipeline.env().items():
        monkeypatch.setenv(key, value)
    lambda_handler._container.cache_clear()
    lambda_handler._log_outage_once.cache_clear()
    yield
    lambda_handler._container.cache_clear()


@pytest.fixture(params=["moto", "seaweedfs"])
def s3_pipeline(services: Services, request: pytest.FixtureRequest) -> Iterator[Pipeline]:
    """A fresh pipeline choosing the S3 store (no upload queue, as HLS today), on each S3 server.

    moto is lenient (any part size, a wrong Content-MD5 accepted); SeaweedFS holds S3's rules,
    so every test that passes on both holds the stricter reading.
    """
    server: S3Server = request.param
    # The same product ids run on both servers: each run reads only its own requests.
    services.hub.clear_requests()
    with services.pipeline(store="s3", s3_server=server, visibility_timeout=5, max_receive_count=4) as made:
        yield made
    services.hub.rate_limit = None


def cli_env(pipeline: Pipeline, **overrides: str) -> dict[str, str]:
    """The process environment for the CLI on ``pipeline`` (no inherited AWS settings)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PG", "DATABASE_URL"))}
    return {**base, **pipeline.env(**overrides)}


def run_cli(
    pipeline: Pipeline, *args: str, timeout: float = 120, **overrides: str
) -> subprocess.CompletedProcess[str]:
    """Run ``s2-downloader ARGS`` to completion against ``pipeline``."""
    return subprocess.run(  # noqa: PLW1510 - callers assert on returncode
        [CLI, *args],
        env=cli_env(pipeline, **overrides),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def start_runner(pipeline: Pipeline, *args: str, **overrides: str) -> subprocess.Popen[str]:
    """Start ``s2-downloader run ARGS`` in the background."""
    return subprocess.Popen(
        [CLI, "run", *args],
        env=cli_env(pipeline, **overrides),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def metric_records(stdout: str, metric: str) -> list[dict[str, Any]]:
    """The EMF records on ``stdout`` (the Lambda's) that carry ``metric``."""
    return [json.loads(line) for line in stdout.splitlines() if f'"{metric}"' in line]


def log_events(stderr: str) -> list[dict[str, Any]]:
    """The JSON log records in a runner's stderr."""
    events = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return events
