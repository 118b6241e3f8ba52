"""JSON log lines: one object per record, extras kept, secrets scrubbed."""

from __future__ import annotations

import io
import json
import logging

import pytest

from s2_downloader.entrypoints.logs import configure_logging, scrub


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer eyJhbGciOi.abc.def", "eyJhbGciOi"),
        ("{'Authorization': 'Basic dXNlcjpwdw=='}", "dXNlcjpwdw=="),
        ("password=hunter2 host=db", "hunter2"),
        ('{"access_token": "tok123", "refresh_token": "ref456"}', "tok123"),
        ("postgresql://hls:s3cret@db:5432/granules", "s3cret"),
    ],
)
def test_scrub_removes_secrets(text: str, secret: str) -> None:
    """Tokens, passwords and Authorization values are replaced."""
    assert secret not in scrub(text)


def test_each_record_is_one_json_object_with_event_and_extras() -> None:
    """A record with extras becomes one line of JSON carrying level, message, event and granule_id."""
    stream = io.StringIO()
    handler = configure_logging(stream=stream)
    try:
        logging.getLogger("s2_downloader.test").info(
            "download verified password=%s",
            "x1",
            extra={"event": "download_verified", "granule_id": "g", "bytes": 5},
        )
    finally:
        logging.getLogger().removeHandler(handler)
    entry = json.loads(stream.getvalue().strip())
    expected = {"level": "info", "event": "download_verified", "granule_id": "g", "bytes": 5}
    assert expected == {k: entry[k] for k in expected}
    assert "x1" not in entry["message"]
