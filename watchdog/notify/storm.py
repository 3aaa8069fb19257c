"""Storm control: one summary card instead of a flood of cards in one Slack channel.

A channel takes about one message per second; when a provider fails, every rule and agent
fires at once and the on-call engineer needs one message, not twenty. `plan_storm`
decides, for a channel's head card, before it is sent:

* **send** it (`below_limit`): the cards posted in the last `window` plus those queued do
  not exceed `max`; or it is no alert's card (`not_an_alert`: a summary or the daily
  report), or it may already be in Slack (`possibly_sent`), or a storm that ended
  released it (`released`: the alert still fires and gets its own card).
* **hold** it (`storm_started`, `storm_ongoing`): more than `max` cards would go out within
  `window`, or the channel is in a storm already. The held notifications are folded into
  the storm's summary card ("14 alerts firing: ..."), which the caller queues in the
  head's place, so it is edited in place at the channel's pace.

A storm subsides once nothing was held for `window` (`subsided`). Then the caller queues
the closing summary and, for each held alert still firing, its own card, and for each
alert whose card predates the storm and that resolved, its resolution (`release`).
Pure: the caller keeps the `Storm` in the store, applies the plan and logs it
(`notify.held`, `notify.storm_ended`); the transitions are in the audit log and in
`watchdog status` whatever is decided here. `max = 0` turns storm control off.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Container, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from watchdog.model import WORKSPACE, Notification, Severity, TransitionKind
from watchdog.notify.render import _context, _header, _section, escape

__all__ = [
    "STORM_RULE",
    "Plan",
    "Reason",
    "Storm",
    "StormPolicy",
    "closing_summary",
    "plan_storm",
    "release",
    "summary",
]

STORM_RULE = "storm"
"""The `rule` a summary notification carries, for logs (it is no rule's alert)."""

_LISTED = 40
"""Alerts listed in a summary: within Slack's 50 blocks with the header and the note."""


@dataclass(frozen=True, slots=True)
class StormPolicy:
    """`[storm]`: more than `max` cards within `window` in one channel is a storm (0: off)."""

    max: int = 10
    window: timedelta = timedelta(minutes=1)


class Reason(StrEnum):
    """Why; stable names, logged."""

    BELOW_LIMIT = "below_limit"
    NOT_AN_ALERT = "not_an_alert"
    POSSIBLY_SENT = "possibly_sent"
    RELEASED = "released"
    STORM_STARTED = "storm_started"
    STORM_ONGOING = "storm_ongoing"


@dataclass(frozen=True, slots=True)
class Plan:
    """`hold` is False to send the head, True to fold `queued` into the storm's summary."""

    hold: bool
    reason: Reason


@dataclass(frozen=True, slots=True)
class Storm:
    """One channel's storm: its summary card's id, and the latest held note of each alert."""

    id: str
    channel: str
    started_at: datetime
    last_held_at: datetime
    held: dict[str, Notification] = field(default_factory=dict)

    def holding(self, notes: Sequence[Notification], at: datetime) -> Storm:
        """This storm with `notes` held too (the latest of each alert wins)."""
        held = dict(self.held)
        for note in notes:
            held[note.alert_id] = note
        return dataclasses.replace(self, held=held, last_held_at=at)

    def subsided(self, now: datetime, policy: StormPolicy) -> bool:
        """True once nothing was held for the policy's window."""
        return now - self.last_held_at >= policy.window

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "channel": self.channel,
                "started_at": self.started_at.isoformat(),
                "last_held_at": self.last_held_at.isoformat(),
                "held": [note.to_json() for note in self.held.values()],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Storm:
        data = json.loads(text)
        notes = [Notification.from_json(item) for item in data["held"]]
        return cls(
            id=str(data["id"]),
            channel=str(data["channel"]),
            started_at=datetime.fromisoformat(data["started_at"]),
            last_held_at=datetime.fromisoformat(data["last_held_at"]),
            held={note.alert_id: note for note in notes},
        )


_NEVER_HELD = frozenset({TransitionKind.REPORT, TransitionKind.GROUP, TransitionKind.ANNOTATION})
"""Summaries and the daily report are no alert's; a group's card already stands for many
alerts (grouping's own answer to a storm: its members are not released one by one); an
annotation only edits a card in place and pages nobody."""


def is_alert_card(note: Notification) -> bool:
    """Whether storm control may hold `note` (and counts it towards a storm)."""
    return note.kind not in _NEVER_HELD


def plan_storm(
    head: Notification,
    *,
    possibly_sent: bool,
    released: bool = False,
    queued: int,
    recent_sends: Sequence[datetime],
    storm: Storm | None,
    now: datetime,
    policy: StormPolicy,
) -> Plan:
    """Decide about a channel's head card; `queued` counts the channel's queued alert cards.

    `recent_sends` are when the channel's cards were posted (older ones are ignored).
    """
    if not is_alert_card(head):
        return Plan(hold=False, reason=Reason.NOT_AN_ALERT)
    if possibly_sent:
        return Plan(hold=False, reason=Reason.POSSIBLY_SENT)
    if released:
        return Plan(hold=False, reason=Reason.RELEASED)
    if storm is not None:
        return Plan(hold=True, reason=Reason.STORM_ONGOING)
    if policy.max <= 0:
        return Plan(hold=False, reason=Reason.BELOW_LIMIT)
    posted = sum(1 for at in recent_sends if now - at < policy.window)
    if posted + queued > policy.max:
        return Plan(hold=True, reason=Reason.STORM_STARTED)
    return Plan(hold=False, reason=Reason.BELOW_LIMIT)


def release(
    storm: Storm, still_firing: Container[str], announced: Container[str] = ()
) -> list[Notification]:
    """What the held alerts still need once the storm is over, in their own cards.

    An alert still firing gets a FIRING card (or, `announced` before the storm, its card
    edited). An alert whose card was posted before the storm and that resolved during it
    gets its RESOLVED, so no card in Slack is left saying it fires.
    """
    cards = []
    for alert_id, note in storm.held.items():
        if alert_id in still_firing and note.kind is not TransitionKind.RESOLVED:
            cards.append(
                dataclasses.replace(
                    note, kind=TransitionKind.FIRING, fired_at=None, fired_count=None
                )
            )
        elif alert_id in announced and note.kind is TransitionKind.RESOLVED:
            cards.append(note)
    return cards


def summary(storm: Storm, now: datetime) -> Notification:
    """The storm's summary card, as a prerendered notification (edited in place)."""
    firing = [n for n in storm.held.values() if n.kind is not TransitionKind.RESOLVED]
    title = f"{len(firing)} alerts firing: storm control holds their cards in {storm.channel}"
    return _card(storm, storm.id, title, now, firing)


def closing_summary(storm: Storm, still_firing: Container[str], now: datetime) -> Notification:
    """The one message that ends a storm: what it held and what still fires."""
    firing = [n for n in storm.held.values() if n.alert_id in still_firing]
    title = (
        f"Storm over: {len(storm.held)} alerts held, "
        f"{len(firing)} still firing (each gets its own card)"
    )
    return _card(storm, f"{storm.id}-end", title, now, list(storm.held.values()))


def _card(
    storm: Storm, alert_id: str, title: str, now: datetime, listed: Sequence[Notification]
) -> Notification:
    lines = [f"{n.rule} on {n.series}: {n.kind.value}" for n in listed]
    blocks = [_header(title)]
    blocks += [_section(escape(line)) for line in lines[:_LISTED]]
    if len(lines) > _LISTED:
        blocks.append(_context(f"{len(lines) - _LISTED} more: see `watchdog status`"))
    body = {"text": title, "blocks": blocks, "plain": [title, *lines]}
    return Notification(
        alert_id=alert_id,
        kind=TransitionKind.REPORT,
        rule=STORM_RULE,
        series=WORKSPACE,
        severity=Severity.WARNING,
        at=now,
        since=storm.started_at,
        count=None,
        condition="",
        channel=storm.channel,
        message=json.dumps(body, ensure_ascii=False),
    )
