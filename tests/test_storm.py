"""Storm control's pure stage (`watchdog.notify.storm`): when a channel's cards are held."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from watchdog.model import Notification, Severity, TransitionKind
from watchdog.notify.storm import (
    Reason,
    Storm,
    StormPolicy,
    closing_summary,
    plan_storm,
    release,
    summary,
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
POLICY = StormPolicy(max=10, window=timedelta(minutes=1))


def card(alert_id: str, kind: TransitionKind = TransitionKind.FIRING) -> Notification:
    return Notification(
        alert_id=alert_id,
        kind=kind,
        rule=f"rule-{alert_id}",
        series="workspace",
        severity=Severity.WARNING,
        at=T0,
        since=T0,
        count=0,
        condition="count < 1",
        channel="#alerts",
    )


def storm(*notes: Notification) -> Storm:
    return Storm(id="storm-1", channel="#alerts", started_at=T0, last_held_at=T0).holding(notes, T0)


ANNOTATION = TransitionKind.ANNOTATION


def ago(*seconds: int) -> list[datetime]:
    return [T0 - timedelta(seconds=s) for s in seconds]


@pytest.mark.parametrize(
    ("head", "possibly_sent", "released", "queued", "sends", "in_storm", "policy", "expected"),
    [
        (card("a"), False, False, 10, [], False, POLICY, Reason.BELOW_LIMIT),
        (card("a"), False, False, 11, [], False, POLICY, Reason.STORM_STARTED),
        (card("a"), False, False, 5, ago(1, 2, 3, 4, 5, 6), False, POLICY, Reason.STORM_STARTED),
        (card("a"), False, False, 5, ago(*range(60, 70)), False, POLICY, Reason.BELOW_LIMIT),
        (card("a"), False, False, 1, [], True, POLICY, Reason.STORM_ONGOING),
        (card("a"), True, False, 20, [], True, POLICY, Reason.POSSIBLY_SENT),
        (card("a"), False, True, 20, [], True, POLICY, Reason.RELEASED),
        (card("a"), False, False, 50, [], False, StormPolicy(max=0), Reason.BELOW_LIMIT),
        (summary(storm(card("a")), T0), False, False, 20, [], True, POLICY, Reason.NOT_AN_ALERT),
        (card("g", TransitionKind.GROUP), False, False, 20, [], True, POLICY, Reason.NOT_AN_ALERT),
        (
            card("a", TransitionKind.ANNOTATION),
            False,
            False,
            20,
            [],
            True,
            POLICY,
            Reason.NOT_AN_ALERT,
        ),
    ],
    ids=[
        "at-the-limit",
        "one-above-the-limit",
        "recent-posts-count",
        "posts-before-the-window-do-not",
        "storm-holds-every-card",
        "a-card-that-may-be-in-slack-is-sent",
        "a-released-card-is-sent",
        "max-0-is-off",
        "the-summary-itself-is-sent",
        "a-group-card-is-sent",
        "an-annotation-is-sent",
    ],
)
def test_plan_storm(
    head: Notification,
    possibly_sent: bool,
    released: bool,
    queued: int,
    sends: list[datetime],
    in_storm: bool,
    policy: StormPolicy,
    expected: Reason,
) -> None:
    """The head is held exactly when more than max cards would go out within the window."""
    plan = plan_storm(
        head,
        possibly_sent=possibly_sent,
        released=released,
        queued=queued,
        recent_sends=sends,
        storm=storm(card("x")) if in_storm else None,
        now=T0,
        policy=policy,
    )
    assert plan.reason is expected
    assert plan.hold is (expected in (Reason.STORM_STARTED, Reason.STORM_ONGOING))


def test_a_storm_subsides_after_a_window_without_holds() -> None:
    """Nothing held for a whole window ends the storm; a hold within it does not."""
    held = storm(card("a")).holding([card("b")], T0 + timedelta(seconds=30))
    assert not held.subsided(T0 + timedelta(seconds=89), POLICY)
    assert held.subsided(T0 + timedelta(seconds=90), POLICY)


def test_release_gives_alerts_still_firing_their_own_firing_card() -> None:
    """Held alerts still firing come back as FIRING cards; resolved ones do not."""
    held = storm(card("a"), card("b", TransitionKind.REPEAT), card("c"), card("d"))
    held = held.holding([card("c", TransitionKind.RESOLVED)], T0)
    cards = release(held, still_firing={"a", "b"})
    assert [(c.alert_id, c.kind) for c in cards] == [
        ("a", TransitionKind.FIRING),
        ("b", TransitionKind.FIRING),
    ]


def test_summaries_count_and_list_the_held_alerts() -> None:
    """The summary counts what fires; the closing one lists everything held, once."""
    held = storm(*(card(str(i)) for i in range(14)))
    held = held.holding([card("3", TransitionKind.RESOLVED)], T0)
    open_card = summary(held, T0)
    assert open_card.alert_id == "storm-1"
    assert json.loads(open_card.message or "")["text"].startswith("13 alerts firing")
    closing = closing_summary(held, {"1", "2"}, T0)
    body = json.loads(closing.message or "")
    assert closing.alert_id != open_card.alert_id
    assert body["text"].startswith("Storm over: 14 alerts held, 2 still firing")
    assert len(body["plain"]) == 15


def test_a_storm_survives_its_json() -> None:
    """What the worker keeps in the store reads back as the same storm."""
    held = storm(card("a"), card("b", TransitionKind.RESOLVED))
    assert Storm.from_json(held.to_json()) == held


def test_release_resolves_a_card_posted_before_the_storm() -> None:
    """An alert whose card predates the storm and that resolved in it gets its RESOLVED."""
    held = storm(card("old", TransitionKind.RESOLVED), card("new", TransitionKind.RESOLVED))
    cards = release(held, still_firing=set(), announced={"old"})
    assert [(c.alert_id, c.kind) for c in cards] == [("old", TransitionKind.RESOLVED)]
