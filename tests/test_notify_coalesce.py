"""The coalescing planner: what to do with a channel's head, given the queue behind it."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from watchdog.model import Notification, Severity, TransitionKind
from watchdog.notify.coalesce import (
    Action,
    Plan,
    Queued,
    Reason,
    fired_and_resolved,
    plan_head,
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
FIRING, REPEAT, RESOLVED = TransitionKind.FIRING, TransitionKind.REPEAT, TransitionKind.RESOLVED
ANNOTATION = TransitionKind.ANNOTATION


def note(alert_id: str, kind: TransitionKind, minute: int = 0, count: int = 12) -> Notification:
    return Notification(
        alert_id=alert_id,
        kind=kind,
        rule="too-many",
        series="workspace",
        severity=Severity.WARNING,
        at=T0 + timedelta(minutes=minute),
        since=T0 - timedelta(minutes=1),
        count=count,
        condition="count > 10",
        channel="#alerts",
        runbook="https://runbooks.example/too-many",
        mention="@oncall" if kind is FIRING else None,
    )


def queue(*items: tuple[str, TransitionKind] | tuple[str, TransitionKind, bool]) -> list[Queued]:
    """Outbox ids 1, 2, ... in order; a third item True marks an entry possibly sent."""
    return [
        Queued(number, note(item[0], item[1], minute=number), possibly_sent=item[2:] == (True,))
        for number, item in enumerate(items, start=1)
    ]


def decision(plan: Plan) -> tuple[Action, Reason, tuple[int, ...]]:
    return plan.action, plan.reason, plan.consumed


@pytest.mark.parametrize(
    ("entries", "never_announced", "expected"),
    [
        pytest.param(
            [("a", FIRING)], (), (Action.SEND, Reason.UP_TO_DATE, ()), id="lone firing is sent"
        ),
        pytest.param(
            [("a", FIRING), ("b", RESOLVED), ("c", FIRING)],
            (),
            (Action.SEND, Reason.UP_TO_DATE, ()),
            id="other alerts' entries change nothing",
        ),
        pytest.param(
            [("a", FIRING), ("a", RESOLVED)],
            (),
            (Action.FOLD, Reason.FIRED_AND_RESOLVED, (2,)),
            id="firing with its resolution queued is folded",
        ),
        pytest.param(
            [("a", FIRING), ("b", FIRING), ("a", REPEAT), ("a", REPEAT), ("a", RESOLVED)],
            (),
            (Action.FOLD, Reason.FIRED_AND_RESOLVED, (3, 4, 5)),
            id="the fold consumes the repeats in between, not other alerts",
        ),
        pytest.param(
            [("a", FIRING), ("a", REPEAT)],
            (),
            (Action.SEND, Reason.UP_TO_DATE, ()),
            id="firing of an alert still firing is sent",
        ),
        pytest.param(
            [("a", FIRING, True), ("a", RESOLVED)],
            (),
            (Action.SEND, Reason.POSSIBLY_SENT, ()),
            id="in-doubt firing is never folded",
        ),
        pytest.param(
            [("a", FIRING), ("a", REPEAT, True), ("a", RESOLVED)],
            (),
            (Action.SEND, Reason.UP_TO_DATE, ()),
            id="no fold across an entry in doubt",
        ),
        pytest.param(
            [("a", REPEAT), ("a", REPEAT)],
            (),
            (Action.DROP, Reason.SUPERSEDED_REPEAT, ()),
            id="repeat overtaken by a newer repeat is dropped",
        ),
        pytest.param(
            [("a", REPEAT), ("b", FIRING), ("a", RESOLVED)],
            (),
            (Action.DROP, Reason.SUPERSEDED_REPEAT, ()),
            id="repeat of a resolved alert is dropped",
        ),
        pytest.param(
            [("a", REPEAT), ("b", REPEAT)],
            (),
            (Action.SEND, Reason.UP_TO_DATE, ()),
            id="latest repeat is sent",
        ),
        pytest.param(
            [("a", REPEAT, True), ("a", REPEAT)],
            (),
            (Action.SEND, Reason.POSSIBLY_SENT, ()),
            id="in-doubt repeat is sent as is",
        ),
        pytest.param(
            [("a", RESOLVED)],
            (),
            (Action.SEND, Reason.UP_TO_DATE, ()),
            id="already sent firing keeps its resolution",
        ),
        pytest.param(
            [("a", RESOLVED)],
            {"a"},
            (Action.DROP, Reason.NEVER_ANNOUNCED, ()),
            id="resolution of a card never sent is dropped",
        ),
        pytest.param(
            [("a", RESOLVED)],
            {"b"},
            (Action.SEND, Reason.UP_TO_DATE, ()),
            id="another alert's unsent card changes nothing",
        ),
        pytest.param(
            [("a", RESOLVED, True)],
            {"a"},
            (Action.SEND, Reason.POSSIBLY_SENT, ()),
            id="in-doubt resolution is sent as is",
        ),
        pytest.param(
            [("a", FIRING), ("b", FIRING), ("a", ANNOTATION), ("a", ANNOTATION)],
            (),
            (Action.FOLD, Reason.ANNOTATED, (3, 4)),
            id="a card not yet sent goes out annotated",
        ),
        pytest.param(
            [("a", FIRING), ("a", ANNOTATION), ("a", RESOLVED)],
            (),
            (Action.FOLD, Reason.FIRED_AND_RESOLVED, (2, 3)),
            id="fired, annotated and resolved: one card",
        ),
        pytest.param(
            [("a", FIRING), ("a", ANNOTATION, True)],
            (),
            (Action.SEND, Reason.UP_TO_DATE, ()),
            id="an annotation in doubt is not folded",
        ),
        pytest.param(
            [("a", ANNOTATION)],
            (),
            (Action.SEND, Reason.UP_TO_DATE, ()),
            id="an annotation of a sent card is sent",
        ),
        pytest.param(
            [("a", ANNOTATION), ("a", ANNOTATION)],
            (),
            (Action.DROP, Reason.SUPERSEDED_ANNOTATION, ()),
            id="an annotation overtaken by a newer one is dropped",
        ),
        pytest.param(
            [("a", ANNOTATION), ("a", RESOLVED)],
            (),
            (Action.DROP, Reason.SUPERSEDED_ANNOTATION, ()),
            id="an annotation overtaken by the resolution is dropped",
        ),
        pytest.param(
            [("a", ANNOTATION)],
            {"a"},
            (Action.DROP, Reason.NEVER_ANNOUNCED, ()),
            id="an annotation of a card never sent is dropped",
        ),
        pytest.param(
            [("a", REPEAT), ("a", ANNOTATION)],
            (),
            (Action.SEND, Reason.UP_TO_DATE, ()),
            id="a repeat is not overtaken by an annotation",
        ),
    ],
)
def test_plan_for_the_head(
    entries: list[tuple[str, TransitionKind] | tuple[str, TransitionKind, bool]],
    never_announced: set[str] | tuple[()],
    expected: tuple[Action, Reason, tuple[int, ...]],
) -> None:
    """Each decision and its reason, from the head and its alert's entries behind it."""
    plan = plan_head(queue(*entries), never_announced=never_announced)
    assert decision(plan) == expected
    assert plan.outbox_id == 1


def test_send_and_drop_carry_the_head_unchanged() -> None:
    """Only a fold changes what is sent; send and drop name the head's own notification."""
    entries = queue(("a", REPEAT), ("a", REPEAT))
    assert plan_head(entries).note == entries[0].note
    assert plan_head(entries[1:]).note == entries[1].note


def test_fold_reads_as_the_resolution_plus_when_it_fired() -> None:
    """The folded notification: the resolution's facts, the firing's time and count, no page."""
    firing = note("a", FIRING, minute=0, count=31)
    resolved = dataclasses.replace(note("a", RESOLVED, minute=3, count=4), reason="back to 4")
    plan = plan_head([Queued(7, firing), Queued(9, resolved)])
    assert plan.note == fired_and_resolved(firing, resolved)
    assert plan.note == dataclasses.replace(
        resolved, fired_at=firing.at, fired_count=31, mention=None, runbook=firing.runbook
    )
    assert plan.note.fired_and_resolved
    assert (plan.outbox_id, plan.consumed) == (7, (9,))


def test_annotated_fold_is_the_card_with_the_latest_annotations() -> None:
    """The folded card: the firing notification, with the last annotation's lines and acker."""
    firing = note("a", FIRING)
    older = dataclasses.replace(note("a", ANNOTATION, minute=1), annotations=("first",))
    latest = dataclasses.replace(
        note("a", ANNOTATION, minute=2), annotations=("first", "second"), acked_by="U0ALICE"
    )
    plan = plan_head([Queued(1, firing), Queued(2, older), Queued(3, latest)])
    assert plan.note == dataclasses.replace(
        firing, annotations=("first", "second"), acked_by="U0ALICE"
    )


def test_an_empty_queue_is_refused() -> None:
    """There is no head to plan for."""
    with pytest.raises(ValueError, match="at least the head"):
        plan_head([])


kinds = st.sampled_from([FIRING, REPEAT, RESOLVED, ANNOTATION])
any_queue = st.lists(st.tuples(st.sampled_from("ab"), kinds, st.booleans()), min_size=1)


@given(any_queue)
def test_possibly_sent_heads_are_always_sent(items: list[tuple[str, TransitionKind, bool]]) -> None:
    """Whatever is queued behind it, a head that may be in Slack is sent as it is."""
    head = (items[0][0], items[0][1], True)
    plan = plan_head(queue(head, *items[1:]), never_announced={"a", "b"})
    assert decision(plan) == (Action.SEND, Reason.POSSIBLY_SENT, ())


@given(any_queue)
def test_nothing_possibly_sent_is_ever_consumed(
    items: list[tuple[str, TransitionKind, bool]],
) -> None:
    """A fold never removes an entry that may already be in Slack, nor another alert's."""
    queued = queue(*items)
    plan = plan_head(queued)
    by_id = {q.outbox_id: q for q in queued}
    for consumed in plan.consumed:
        assert not by_id[consumed].possibly_sent
        assert by_id[consumed].note.alert_id == queued[0].note.alert_id
