"""JSON log lines (docs/interface.md section 8): one object per record, secrets scrubbed."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
from typing import TextIO

__all__ = ["JsonFormatter", "configure_logging", "scrub"]

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
_SECRETS = [
    (re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)(basic|bearer)\s+[^\s'\",]+"), r"\1\2 ***"),
    (
        re.compile(r"(?i)(password|access_token|refresh_token|secret)(['\"]?\s*[:=]\s*['\"]?)[^\s'\",&]+"),
        r"\1\2***",
    ),
    (re.compile(r"(postgres(?:ql)?://[^:/@\s]+:)[^@\s]+@"), r"\1***@"),
]


def scrub(text: str) -> str:
    """``text`` with passwords, tokens and Authorization values replaced by ``***``."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: time, level, logger, message, event and extras."""

    def format(self, record: logging.LogRecord) -> str:
        """One line of JSON."""
        entry: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": scrub(record.getMessage()),
            "event": getattr(record, "event", record.name.rsplit(".", 1)[-1]),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry:
                entry[key] = (
                    value if isinstance(value, int | float | bool | type(None)) else scrub(str(value))
                )
        if record.exc_info:
            entry["error"] = scrub(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


def configure_logging(level: int = logging.INFO, stream: TextIO | None = None) -> logging.Handler:
    """Send every s2_downloader log record to ``stream`` (stderr) as JSON lines; idempotent."""
    root = logging.getLogger()
    # Every other root handler goes too: the Lambda runtime installs a plain-text one,
    # which would print each record a second time, unscrubbed.
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("botocore", "boto3", "urllib3", "psycopg", "psycopg.pool"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler
