"""Where a notification goes besides its Slack card: PagerDuty and outgoing webhooks.

Each destination is its own outbox queue, named by the outbox entry's `channel`:
a Slack channel (or "console") for the card, `pagerduty`, or `webhook:<name>`. So every
destination keeps its own order, retries, backoff and dead letters, and one that is down
never holds back another.

`fan_out` is the pipeline stage deciding which extra destinations a notification that is
to be sent goes to (it runs after the suppression stage, so silences and mutes apply to
every destination). It is pure: the notification and the config in, destinations out.

What the Slack card's state means stays the card's own: a delivery to another
destination never sets or drops the alert's message ref, is never folded or dropped by the
card's catch-up (`watchdog.notify.coalesce`), and its dead letters never count as a card
that was never sent (`is_card` tells the outbox worker which entries are cards).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime

from watchdog.errors import NotifyError
from watchdog.model import MessageRef, Notification, TransitionKind
from watchdog.notify import Notifier
from watchdog.rules import Config

__all__ = ["PAGERDUTY", "Router", "fan_out", "is_card", "pagerduty_action", "webhook"]

PAGERDUTY = "pagerduty"
"""The outbox channel of PagerDuty events."""
WEBHOOK_PREFIX = "webhook:"


def webhook(name: str) -> str:
    """The outbox channel of the outgoing webhook `name`."""
    return f"{WEBHOOK_PREFIX}{name}"


def is_card(channel: str) -> bool:
    """Whether an outbox channel is the Slack card's (not PagerDuty's or a webhook's)."""
    return channel != PAGERDUTY and not channel.startswith(WEBHOOK_PREFIX)


def pagerduty_action(note: Notification, config: Config) -> str | None:
    """The PagerDuty `event_action` a notification makes, or None: it does not page.

    One incident per episode (dedup_key: the alert id): `trigger` when an alert fires or
    escalates at a severity that pages; `acknowledge` when someone acknowledged it;
    `resolve` when it resolves. Acknowledge and resolve go for every alert of a rule
    that can page at all (PagerDuty ignores them for an incident never triggered), so a
    de-escalated alert still closes its incident. Repeats never page again.
    """
    kind = note.kind
    if kind in (TransitionKind.FIRING, TransitionKind.ESCALATED):
        return "trigger" if config.pages(note.rule, note.severity) else None
    if not config.may_page(note.rule):
        return None
    if kind is TransitionKind.RESOLVED:
        return "resolve"
    if kind is TransitionKind.ANNOTATION and note.acked_by is not None:
        return "acknowledge"
    return None


def fan_out(
    note: Notification, config: Config, *, released: bool = False
) -> tuple[Notification, ...]:
    """Copies of `note` for each extra destination it goes to (its channel replaced).

    `released`: `note` announces an alert that outlived a silence or mute. Its card may
    have been out before (a reply then), but a page held back by the cover was not, so
    PagerDuty gets it as a trigger (one for an incident already open changes nothing).
    """
    copies: list[Notification] = []
    paged = dataclasses.replace(note, kind=TransitionKind.FIRING) if released else note
    if pagerduty_action(paged, config) is not None:
        copies.append(dataclasses.replace(paged, channel=PAGERDUTY))
    copies += [
        dataclasses.replace(note, channel=webhook(h.name))
        for h in config.webhooks
        if h.receives(note.rule, note.severity)
    ]
    return tuple(copies)


class Router:
    """The outbox's one notifier: hands each entry to its destination's sender.

    Slack channels go to `card`; `pagerduty` and `webhook:<name>` to the sender of that
    name in `others`. An entry for a destination without a sender (a webhook removed from
    the config while its notifications waited) is dead-lettered, saying so.
    """

    def __init__(self, card: Notifier, others: Mapping[str, Notifier]) -> None:
        self.card = card
        self._others = dict(others)
        self.name = card.name

    def name_for(self, channel: str) -> str:
        """The name of the sender an entry of `channel` goes to, for logs."""
        if is_card(channel):
            return self.card.name
        sender = self._others.get(channel)
        return channel if sender is None else sender.name

    def deliver(
        self,
        note: Notification,
        original: MessageRef | None,
        *,
        in_doubt_since: datetime | None = None,
    ) -> MessageRef | None:
        if is_card(note.channel):
            return self.card.deliver(note, original, in_doubt_since=in_doubt_since)
        sender = self._others.get(note.channel)
        if sender is None:
            raise NotifyError(f"{note.channel}: not configured (any more)", recoverable=False)
        sender.deliver(note, None, in_doubt_since=in_doubt_since)
        return None
