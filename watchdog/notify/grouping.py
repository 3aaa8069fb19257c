"""Grouping: one Slack card for the alerts of a rule that start firing together.

A rule with `group_wait` (more than zero) sends no card per alert. Its first FIRING opens
a group and is held back `group_wait`; every FIRING of the rule within the wait joins the
group, and then one card lists every member (series, count, reason). What is guaranteed:

* A FIRING of the rule while the group's card is open joins it: the card is edited and a
  threaded reply says who joined.
* Members resolve one by one: each RESOLVED edits the card; the last one resolves it and
  closes the group (the rule's next FIRING opens a new one).
* Other kinds of a member (repeats, escalations, annotations) send no Slack message: the
  group's card stands for the member. PagerDuty and webhooks still get every transition
  (`watchdog.notify.destinations`); the audit log and `watchdog status` still show every
  alert instance. Grouping is about Slack messages only.

A group's card is a GROUP notification whose `alert_id` is the group id and whose
`message` holds the card already rendered (as a REPORT's does), so the outbox stores its
Slack message ref under the group id and every later edit finds it there.

Open groups live in memory: a restart forgets them (a member's later news then opens a
new group). The stage reads no clock; the caller passes `now`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from watchdog.model import Notification, Severity, TransitionKind
from watchdog.notify.render import escape, format_count, severity_emoji

__all__ = ["Grouper", "reply_of"]

_SECTION_LIMIT = 3000
"""Slack rejects a section whose text is longer (`invalid_blocks`)."""


@dataclass(frozen=True, slots=True)
class _Member:
    series: str
    count: int | None
    reason: str
    resolved: bool = False


@dataclass(slots=True)
class _Group:
    group_id: str
    rule: str
    channel: str
    severity: Severity
    opened_at: datetime
    card_at: datetime
    """When the card goes out: `group_wait` after the first member fired."""
    posted: bool = False
    members: dict[str, _Member] = field(default_factory=dict)

    @property
    def resolved(self) -> bool:
        return all(member.resolved for member in self.members.values())


class Grouper:
    """The open groups, and the Slack-card notifications that stand for their members."""

    def __init__(self) -> None:
        self._open: dict[tuple[str, str], _Group] = {}

    def admit(self, note: Notification, group_wait: timedelta) -> list[Notification]:
        """The card notifications that stand for `note` of a grouped rule (none while held)."""
        key = (note.rule, note.channel)
        group = self._open.get(key)
        if note.kind is TransitionKind.FIRING:
            if group is None:
                group = self._open[key] = _Group(
                    group_id=f"group-{note.alert_id}",
                    rule=note.rule,
                    channel=note.channel,
                    severity=note.severity,
                    opened_at=note.at,
                    card_at=note.at + group_wait,
                )
            joined = note.alert_id not in group.members
            group.members[note.alert_id] = _Member(note.series, note.count, note.reason)
            if not group.posted:
                return []
            return [self._card(group, note.at, joined=note.series if joined else None)]
        if note.kind is TransitionKind.RESOLVED and group and note.alert_id in group.members:
            group.members[note.alert_id] = _Member(
                note.series, note.count, note.reason, resolved=True
            )
            if not group.posted:
                return []
            return [self._card(group, note.at)]
        return []

    def due(self, now: datetime) -> list[Notification]:
        """The cards of groups whose wait is over at `now`, each sent once."""
        cards = []
        for group in list(self._open.values()):
            if not group.posted and group.card_at <= now:
                group.posted = True
                cards.append(self._card(group, now))
        return cards

    def _card(self, group: _Group, at: datetime, *, joined: str | None = None) -> Notification:
        """The group's card as of `at`; a resolved group is closed."""
        if group.resolved:
            del self._open[(group.rule, group.channel)]
        body = _render(group)
        if joined is not None:
            body["reply"] = f"{joined} joined this group"
        return Notification(
            alert_id=group.group_id,
            kind=TransitionKind.GROUP,
            rule=group.rule,
            series="*",
            severity=group.severity,
            at=at,
            since=group.opened_at,
            count=None,
            condition="",
            channel=group.channel,
            message=json.dumps(body, ensure_ascii=False),
        )


def _render(group: _Group) -> dict[str, object]:
    """The card as JSON of `text`, Block Kit `blocks` and `plain` lines."""
    firing = [m for m in group.members.values() if not m.resolved]
    if firing:
        title = f"{severity_emoji(group.severity)} {group.rule}: {len(firing)} firing"
    else:
        title = f"✅ {group.rule}: resolved"
    lines = [
        f"{member.series}: {format_count(member.count)}"
        + (" (resolved)" if member.resolved else f" {member.reason}".rstrip())
        for member in sorted(group.members.values(), key=lambda m: m.series)
    ]
    text = "\n".join(f"• {escape(line)}" for line in lines)
    if len(text) > _SECTION_LIMIT:
        text = text[: _SECTION_LIMIT - 1] + "…"
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": text or "no members"}},
    ]
    return {"text": title, "blocks": blocks, "plain": [title, *lines]}


def reply_of(note: Notification) -> str | None:
    """The threaded reply a GROUP notification asks for (who joined), if any."""
    reply = json.loads(note.message or "{}").get("reply")
    return None if reply is None else str(reply)
