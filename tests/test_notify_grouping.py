"""The grouping stage: which Slack-card notifications stand for a grouped rule's alerts."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

from watchdog.model import Notification, Severity, TransitionKind
from watchdog.notify.coalesce import Action, Queued, Reason, plan_head
from watchdog.notify.grouping import Grouper, reply_of

T0 = datetime(2026, 1, 1, 9, tzinfo=UTC)
WAIT = timedelta(seconds=30)


def note(kind: TransitionKind, series: str, seconds: float, count: int = 0) -> Notification:
    return Notification(
        alert_id=f"a-{series}",
        kind=kind,
        rule="dropped",
        series=series,
        severity=Severity.CRITICAL,
        at=T0 + timedelta(seconds=seconds),
        since=T0,
        count=count,
        condition="count < 1",
        channel="#oncall",
        reason="below 1",
    )


def lines(card: Notification) -> list[str]:
    return [str(line) for line in json.loads(card.message or "{}")["plain"]]


def test_alerts_firing_within_the_wait_share_one_card_sent_when_the_wait_is_over() -> None:
    """Members within `group_wait` send nothing; then one card lists them all, once."""
    groups = Grouper()
    assert groups.admit(note(TransitionKind.FIRING, "sales", 0), WAIT) == []
    assert groups.admit(note(TransitionKind.FIRING, "support", 10), WAIT) == []
    assert groups.due(T0 + timedelta(seconds=29)) == []
    (card,) = groups.due(T0 + WAIT)
    assert card.kind is TransitionKind.GROUP
    assert lines(card) == ["🔴 dropped: 2 firing", "sales: 0 below 1", "support: 0 below 1"]
    assert reply_of(card) is None
    assert groups.due(T0 + 2 * WAIT) == []


def test_a_later_member_joins_the_open_card_with_a_reply() -> None:
    """After the card went out, a new member edits it (same group id) and says who joined."""
    groups = Grouper()
    groups.admit(note(TransitionKind.FIRING, "sales", 0), WAIT)
    (card,) = groups.due(T0 + WAIT)
    (edit,) = groups.admit(note(TransitionKind.FIRING, "support", 40), WAIT)
    assert edit.alert_id == card.alert_id
    assert reply_of(edit) == "support joined this group"
    assert lines(edit)[0] == "🔴 dropped: 2 firing"


def test_members_resolve_one_by_one_and_the_last_resolves_and_closes_the_group() -> None:
    """Each resolution edits the card; the last resolves it; the next firing opens a new group."""
    groups = Grouper()
    groups.admit(note(TransitionKind.FIRING, "sales", 0), WAIT)
    groups.admit(note(TransitionKind.FIRING, "support", 1), WAIT)
    (card,) = groups.due(T0 + WAIT)
    (first,) = groups.admit(note(TransitionKind.RESOLVED, "sales", 40, count=5), WAIT)
    assert lines(first) == ["🔴 dropped: 1 firing", "sales: 5 (resolved)", "support: 0 below 1"]
    assert groups.admit(note(TransitionKind.REPEAT, "support", 50), WAIT) == []
    (last,) = groups.admit(note(TransitionKind.RESOLVED, "support", 60, count=5), WAIT)
    assert (last.alert_id, lines(last)[0]) == (card.alert_id, "✅ dropped: resolved")
    next_episode = dataclasses.replace(note(TransitionKind.FIRING, "sales", 70), alert_id="a-2")
    assert groups.admit(next_episode, WAIT) == []
    (again,) = groups.due(T0 + timedelta(seconds=100))
    assert again.alert_id != card.alert_id


def test_a_queued_group_card_is_dropped_for_a_later_one_unless_it_replies() -> None:
    """Queued edits of one group shrink to the latest; one that says who joined is kept."""
    groups = Grouper()
    groups.admit(note(TransitionKind.FIRING, "sales", 0), WAIT)
    groups.admit(note(TransitionKind.FIRING, "support", 1), WAIT)
    (card,) = groups.due(T0 + WAIT)
    (joined,) = groups.admit(note(TransitionKind.FIRING, "billing", 31), WAIT)
    (resolved,) = groups.admit(note(TransitionKind.RESOLVED, "sales", 40, count=5), WAIT)
    (last,) = groups.admit(note(TransitionKind.RESOLVED, "support", 41, count=5), WAIT)
    queue = [Queued(n, c) for n, c in enumerate([card, joined, resolved, last])]
    dropped = plan_head(queue)
    assert (dropped.action, dropped.reason) == (Action.DROP, Reason.SUPERSEDED_GROUP_CARD)
    assert plan_head(queue[1:]).action is Action.SEND
    assert plan_head(queue[2:]).action is Action.DROP
    assert plan_head(queue[3:]).action is Action.SEND


def test_a_member_firing_again_edits_the_card_without_saying_it_joined() -> None:
    """A member's own later FIRING (it left flapping) updates its line; nobody joined."""
    groups = Grouper()
    groups.admit(note(TransitionKind.FIRING, "sales", 0), WAIT)
    groups.due(T0 + WAIT)
    (edit,) = groups.admit(note(TransitionKind.FIRING, "sales", 40, count=2), WAIT)
    assert reply_of(edit) is None
    assert lines(edit)[1:] == ["sales: 2 below 1"]
