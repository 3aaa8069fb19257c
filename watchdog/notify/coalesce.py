"""Bring a channel's queued notifications up to date before the oldest one is sent.

One channel takes about one message per second. When transitions arrive faster, or Slack
was away for a while, the outbox holds notifications that the queue behind them has
already overtaken: a firing card whose alert has resolved since, a "still firing" reply
followed by a newer one. Sending them in order would keep the channel minutes behind with
news nobody needs. `plan_head` decides, for a channel's head, what to do instead:

* **send** it as it is, because nothing queued behind it changes what it says
  (`up_to_date`), or because an earlier attempt may already have reached Slack
  (`possibly_sent`: its answer was lost or unclear). A message that may be in Slack is
  never folded or dropped, so it keeps its later notifications (a firing card that went
  out still gets its resolution, as an edit in place).
* **fold** a FIRING whose RESOLVED is queued behind it into one "fired and resolved"
  notification (`fired_and_resolved`); the RESOLVED and anything in between (repeats,
  escalations, flapping, annotations) are consumed with it. It is sent in the FIRING's
  place, so order is kept. A FIRING whose card is already in Slack (`announced`: the
  alert left flapping firing) is an edit of that card and is never folded.
* **fold** a FIRING with the annotations queued behind it (`annotated`: someone
  acknowledged the alert before its card went out): the card goes out annotated.
* **drop** a REPEAT when a later notification other than an annotation of the same alert
  is queued behind it (`superseded_repeat`): the later one says what it would have said,
  newer.
* **drop** an ANNOTATION when a later annotation or resolution of the same alert is
  queued behind it (`superseded_annotation`): each carries all of the alert's annotations.
* **drop** a group's card (GROUP, `watchdog.notify.grouping`) when a later one of the same
  group is queued behind it and it asks for no threaded reply (`superseded_group_card`):
  each carries the whole group, so twenty resolutions queued at once cost one edit.
* **drop** a RESOLVED, ESCALATED, DEESCALATED, FLAPPING or ANNOTATION whose firing card
  was never sent (`never_announced`: given up as a dead letter on its first attempt): a
  change to a card nobody saw confuses more than it helps, and must not become a new card.

Pure: the caller passes the queue and what the store knows, applies the plan, and logs it
(`notify.folded`, `notify.dropped`). The transitions themselves are in the audit log
whatever is decided here.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Container, Sequence
from dataclasses import dataclass
from enum import StrEnum

from watchdog.model import Notification, TransitionKind

__all__ = ["Action", "Plan", "Queued", "Reason", "fired_and_resolved", "plan_head"]


class Action(StrEnum):
    """What happens to a channel's head."""

    SEND = "send"
    FOLD = "fold"
    DROP = "drop"


class Reason(StrEnum):
    """Why; stable names, logged and used as a metric label."""

    UP_TO_DATE = "up_to_date"
    POSSIBLY_SENT = "possibly_sent"
    FIRED_AND_RESOLVED = "fired_and_resolved"
    ANNOTATED = "annotated"
    SUPERSEDED_REPEAT = "superseded_repeat"
    SUPERSEDED_ANNOTATION = "superseded_annotation"
    NEVER_ANNOUNCED = "never_announced"
    SUPERSEDED_GROUP_CARD = "superseded_group_card"


@dataclass(frozen=True, slots=True)
class Queued:
    """One queued notification, as the planner needs to see it.

    `possibly_sent` is true once an attempt may have reached Slack (any earlier attempt,
    whatever its answer said): such an entry is never folded or dropped.
    """

    outbox_id: int
    note: Notification
    possibly_sent: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    """The decision for the head `outbox_id`.

    For SEND, `note` is the head's notification; for FOLD, the "fired and resolved"
    notification that replaces it, and `consumed` the later entries it makes redundant;
    for DROP, the dropped notification.
    """

    action: Action
    reason: Reason
    outbox_id: int
    note: Notification
    consumed: tuple[int, ...] = ()


def plan_head(
    queue: Sequence[Queued],
    *,
    never_announced: Container[str] = (),
    announced: Container[str] = (),
) -> Plan:
    """Decide what to do with `queue[0]`, given the rest of the channel's queue behind it.

    `queue` is the channel's queue in order, from its head (entries of other alerts may be
    left out: only the head's alert matters). `never_announced` holds the alert ids whose
    firing card was given up without any chance of having reached Slack; `announced`
    those whose card is in Slack.
    """
    if not queue:
        raise ValueError("plan_head needs at least the head of the queue")
    head, *behind = queue
    note = head.note
    later = [q for q in behind if q.note.alert_id == note.alert_id]

    def send(reason: Reason) -> Plan:
        return Plan(Action.SEND, reason, head.outbox_id, note)

    if head.possibly_sent:
        return send(Reason.POSSIBLY_SENT)
    if note.kind is TransitionKind.FIRING and note.alert_id not in announced:
        return _fold(head, later) or _annotate(head, later) or send(Reason.UP_TO_DATE)
    newer = {q.note.kind for q in later}
    if note.kind is TransitionKind.REPEAT and newer - {TransitionKind.ANNOTATION}:
        return Plan(Action.DROP, Reason.SUPERSEDED_REPEAT, head.outbox_id, note)
    if note.kind is TransitionKind.ANNOTATION and newer & {
        TransitionKind.ANNOTATION,
        TransitionKind.RESOLVED,
    }:
        return Plan(Action.DROP, Reason.SUPERSEDED_ANNOTATION, head.outbox_id, note)
    if (
        note.kind is TransitionKind.GROUP
        and TransitionKind.GROUP in newer
        and not _asks_for_reply(note)
    ):
        return Plan(Action.DROP, Reason.SUPERSEDED_GROUP_CARD, head.outbox_id, note)
    if (
        (note.kind in (TransitionKind.RESOLVED, TransitionKind.ANNOTATION) or note.kind.edits_card)
        and not note.fired_and_resolved
        and note.alert_id in never_announced
    ):
        return Plan(Action.DROP, Reason.NEVER_ANNOUNCED, head.outbox_id, note)
    return send(Reason.UP_TO_DATE)


def _asks_for_reply(note: Notification) -> bool:
    """Whether a GROUP notification posts a threaded reply (who joined) besides its edit."""
    return "reply" in json.loads(note.message or "{}")


def _fold(firing: Queued, later: Sequence[Queued]) -> Plan | None:
    """The FIRING with everything up to its queued RESOLVED as one notification, if it can be."""
    for position, entry in enumerate(later):
        if entry.possibly_sent:
            return None
        if entry.note.kind is TransitionKind.RESOLVED:
            consumed = tuple(q.outbox_id for q in later[: position + 1])
            merged = fired_and_resolved(firing.note, entry.note)
            return Plan(Action.FOLD, Reason.FIRED_AND_RESOLVED, firing.outbox_id, merged, consumed)
    return None


def _annotate(firing: Queued, later: Sequence[Queued]) -> Plan | None:
    """The FIRING carrying the annotations queued behind it (the latest has them all)."""
    annotations = [q for q in later if q.note.kind is TransitionKind.ANNOTATION]
    if not annotations or any(q.possibly_sent for q in annotations):
        return None
    latest = annotations[-1].note
    merged = dataclasses.replace(
        firing.note, annotations=latest.annotations, acked_by=latest.acked_by
    )
    consumed = tuple(q.outbox_id for q in annotations)
    return Plan(Action.FOLD, Reason.ANNOTATED, firing.outbox_id, merged, consumed)


def fired_and_resolved(firing: Notification, resolved: Notification) -> Notification:
    """One notification for an episode whose firing card was never sent.

    It reads as the resolution (count, time and reason of the end) plus when the alert
    fired and with what count. It mentions nobody: the alert is already over.
    """
    return dataclasses.replace(
        resolved,
        runbook=resolved.runbook or firing.runbook,
        mention=None,
        fired_at=firing.at,
        fired_count=firing.count,
    )
