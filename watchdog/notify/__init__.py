"""Delivering notifications: rendering (pure) and the senders (Slack bot, webhook, console).

Senders implement `Notifier`; the daemon calls `deliver` from a worker thread, once per
attempt, and the outbox decides from `NotifyError.recoverable` whether to try again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from watchdog.model import MessageRef, Notification
from watchdog.notify.console import ConsoleNotifier
from watchdog.notify.render import RenderedMessage, render
from watchdog.notify.slack import Guarantee, SlackBotNotifier, SlackWebhookNotifier

__all__ = [
    "ConsoleNotifier",
    "Guarantee",
    "Notifier",
    "RenderedMessage",
    "SlackBotNotifier",
    "SlackWebhookNotifier",
    "render",
]


class Notifier(Protocol):
    """Something that delivers one notification per call, synchronously.

    `deliver` either returns (delivered) or raises `NotifyError`; it never retries by
    itself. It returns the Slack message now standing for the alert, to be passed back as
    `original` for the alert's later notifications, or None when the sender cannot thread.

    `in_doubt_since` is given when an earlier attempt (the first started then) may have
    been accepted without the answer arriving: a sender that can look for that post
    adopts it instead of posting again; the others ignore it (at least once).
    """

    name: str
    """Stable sender name for logs and metrics: "slack-bot", "slack-webhook", "console"."""

    def deliver(
        self,
        note: Notification,
        original: MessageRef | None,
        *,
        in_doubt_since: datetime | None = None,
    ) -> MessageRef | None: ...
