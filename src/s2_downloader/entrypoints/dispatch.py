"""One received message to one Outcome, and each Outcome to what happens to the message.

Shared by the Lambda handler and the local runner so both treat a message alike.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

import attrs

from s2_downloader.adapters.wire import parse_download_message
from s2_downloader.domain import Defer, Done, Failed, Outcome, Ports, Reject, RetryLater, handle
from s2_downloader.domain.errors import BadRequest

__all__ = ["Action", "Delete", "HandBack", "LeaveForRedrive", "Resend", "action_for", "outcome_for"]

_log = logging.getLogger("s2_downloader.dispatch")


@attrs.frozen(kw_only=True)
class Delete:
    """The message is finished with: delete it."""


@attrs.frozen(kw_only=True)
class Resend:
    """Put the body back on the download queue hidden for ``delay_seconds``, then delete this copy.

    A fresh message rather than a longer visibility: deferrals must not use up the
    receive count that the dead-letter redrive reserves for poison messages.
    """

    delay_seconds: int


@attrs.frozen(kw_only=True)
class HandBack:
    """Give the message back at once, uncounted (shutdown, out of time)."""


@attrs.frozen(kw_only=True)
class LeaveForRedrive:
    """Do not delete: after maxReceiveCount deliveries the queue moves it to the dead-letter queue."""


Action = Delete | Resend | HandBack | LeaveForRedrive


def outcome_for(
    body: str, ports: Ports, allowed_origins: Collection[tuple[str, str, int]], *, message_id: str = ""
) -> Outcome:
    """Parse ``body`` and run the use case on it; bad input becomes ``Reject``, never an exception."""
    try:
        request = parse_download_message(body, allowed_origins)
    except BadRequest as exc:
        _log.warning(
            "bad download message: %s",
            exc.reason,
            extra={"event": "bad_message", "message_id": message_id, "reason": exc.reason},
        )
        return Reject(reason=exc.reason)
    return handle(request, ports)


def action_for(outcome: Outcome) -> Action:
    """What the queue should do with the message that led to ``outcome``."""
    match outcome:
        case Done():
            return Delete()
        case RetryLater(delay_seconds=delay) | Defer(delay_seconds=delay) if delay > 0:
            return Resend(delay_seconds=delay)
        case RetryLater() | Defer():
            return HandBack()
        case Failed() | Reject():
            return LeaveForRedrive()
