"""Silences, mute windows and the suppression stage (`watchdog.silences`), as pure functions.

Time is always an argument: the mute windows are judged at instants built here, on
ordinary days, across midnight and on the days the clocks change.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from watchdog.inhibition import Inhibitions, inhibitions
from watchdog.model import AlertRecord, AlertState, Notification, Severity, TransitionKind
from watchdog.rules import MuteWindow, parse_config
from watchdog.silences import Cover, Held, Reason, Silence, cover, decide, reconcile

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")


def silence(
    id: int = 1,
    rule: str = "high",
    scope: str | None = None,
    starts: datetime = T0,
    ends: datetime = T0 + timedelta(hours=1),
) -> Silence:
    return Silence(id, rule, scope, starts, ends, "cli:alice", "deploy")


def mute(**fields: object) -> MuteWindow:
    values: dict[str, object] = {
        "name": "night",
        "days": "sat",
        "hours": "22:00-06:00",
        "tz": "Europe/Berlin",
    }
    values.update(fields)
    return MuteWindow.model_validate(values)


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)  # type: ignore[misc]


def note(
    kind: TransitionKind,
    *,
    alert_id: str = "a1",
    rule: str = "high",
    series: str = "workspace",
    at: datetime = T0,
    fired_at: datetime | None = None,
) -> Notification:
    return Notification(
        alert_id=alert_id,
        kind=kind,
        rule=rule,
        series=series,
        severity=Severity.CRITICAL,
        at=at,
        since=at - timedelta(minutes=1),
        count=9,
        condition="count > 5",
        channel="#oncall",
        fired_at=fired_at,
        fired_count=9 if fired_at else None,
    )


def firing(alert_id: str = "a1", rule: str = "high", series: str = "workspace") -> AlertRecord:
    return AlertRecord(
        rule=rule,
        series=series,
        alert_id=alert_id,
        state=AlertState.FIRING,
        since=T0 - timedelta(hours=1),
        last_count=9,
        last_notified=None,
        condition="count > 5",
        severity=Severity.CRITICAL,
    )


# -- silences ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "rule", "series", "at", "covered"),
    [
        (silence(), "high", "workspace", T0, True),
        (silence(), "high", "support", T0 + timedelta(minutes=59), True),
        (silence(), "high", "workspace", T0 - timedelta(milliseconds=1), False),
        (silence(), "high", "workspace", T0 + timedelta(hours=1), False),  # ends is exclusive
        (silence(), "low", "workspace", T0, False),
        (silence(rule="*"), "no-data", "support", T0, True),
        (silence(scope="support"), "high", "support", T0, True),
        (silence(scope="support"), "high", "workspace", T0, False),
    ],
    ids=[
        "at-start",
        "any-series-until-end",
        "before-start",
        "at-end",
        "other-rule",
        "star-covers-every-rule",
        "own-series",
        "other-series",
    ],
)
def test_silence_covers_its_rule_and_scope_from_start_until_end(
    given: Silence, rule: str, series: str, at: datetime, covered: bool
) -> None:
    """A silence covers its rule ("*": all) on its scope (None: all) in [starts, ends)."""
    assert given.covers(rule, series, at) is covered


def test_the_oldest_covering_silence_wins_over_a_mute() -> None:
    """`cover` names the silence with the lowest id that covers, before any mute."""
    always = mute(days="mon-sun", hours="00:00-24:00", tz="UTC")
    later, earlier = silence(id=7), silence(id=3)
    assert cover("high", "workspace", T0, [later, earlier], [always]) == Cover(silence=3)
    assert cover("low", "workspace", T0, [later, earlier], [always]) == Cover(mute="night")
    assert cover("low", "workspace", T0, [later], []) is None


# -- mute windows -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "covered"),
    [
        (berlin(2026, 12, 5, 21, 59), False),  # Saturday, before the window
        (berlin(2026, 12, 5, 22, 0), True),  # Saturday 22:00: it opens
        (berlin(2026, 12, 6, 0, 0), True),  # Sunday midnight: still Saturday's window
        (berlin(2026, 12, 6, 5, 59), True),
        (berlin(2026, 12, 6, 6, 0), False),  # Sunday 06:00: it closes
        (berlin(2026, 12, 6, 22, 30), False),  # Sunday night: not a Saturday
        (berlin(2026, 12, 5, 3, 0), False),  # Saturday early: Friday's night, not muted
        (berlin(2026, 12, 5, 21, 30).astimezone(UTC), False),  # the zone is the window's
        (datetime(2026, 12, 5, 21, 30, tzinfo=UTC), True),  # 22:30 in Berlin
    ],
    ids=[
        "sat-21:59",
        "sat-22:00",
        "sun-00:00",
        "sun-05:59",
        "sun-06:00",
        "sun-22:30",
        "sat-03:00",
        "utc-20:30",
        "utc-21:30",
    ],
)
def test_overnight_mute_belongs_to_the_day_it_starts(at: datetime, covered: bool) -> None:
    """A "22:00-06:00" mute on "sat" covers Saturday 22:00 until Sunday 06:00, in its zone."""
    assert mute().active(at) is covered
    assert mute().covers("high", "workspace", at) is covered


def test_overnight_mute_on_the_night_the_clocks_go_forward() -> None:
    """On 29 March 2026 (02:00 -> 03:00 in Berlin) the window still ends at 06:00 local time,
    so it lasts seven real hours; 02:30 local does not exist and is never asked."""
    window = mute()  # Saturday 28 March 22:00 until Sunday 06:00 CEST
    opens = berlin(2026, 3, 28, 22, 0)
    closes = berlin(2026, 3, 29, 6, 0)
    assert closes - opens == timedelta(hours=8)  # wall clock
    assert closes.astimezone(UTC) - opens.astimezone(UTC) == timedelta(hours=7)  # real time
    assert window.active(opens.astimezone(UTC))
    assert window.active(datetime(2026, 3, 29, 0, 59, tzinfo=UTC))  # 01:59 CET
    assert window.active(datetime(2026, 3, 29, 1, 0, tzinfo=UTC))  # 03:00 CEST
    assert window.active(datetime(2026, 3, 29, 3, 59, tzinfo=UTC))  # 05:59 CEST
    assert not window.active(datetime(2026, 3, 29, 4, 0, tzinfo=UTC))  # 06:00 CEST


def test_overnight_mute_on_the_night_the_clocks_go_back() -> None:
    """On 25 October 2026 (03:00 -> 02:00 in Berlin) the window lasts nine real hours, and
    both 02:30s are inside it."""
    window = mute()
    first_0230 = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST
    second_0230 = datetime(2026, 10, 25, 1, 30, tzinfo=UTC)  # 02:30 CET
    assert window.active(first_0230)
    assert window.active(second_0230)
    assert window.active(datetime(2026, 10, 24, 20, 0, tzinfo=UTC))  # Sat 22:00 CEST
    assert not window.active(datetime(2026, 10, 24, 19, 59, tzinfo=UTC))
    assert window.active(datetime(2026, 10, 25, 4, 59, tzinfo=UTC))  # 05:59 CET
    assert not window.active(datetime(2026, 10, 25, 5, 0, tzinfo=UTC))  # 06:00 CET


def test_mute_covers_only_its_rules_and_scope() -> None:
    """`rules` and `scope` narrow a mute; left out, it covers every rule and series."""
    inside = berlin(2026, 12, 5, 23, 0)
    narrow = mute(rules=["high"], scope=["support"])
    assert narrow.covers("high", "support", inside)
    assert not narrow.covers("low", "support", inside)
    assert not narrow.covers("high", "workspace", inside)
    assert mute().covers("no-data", "billing", inside)
    assert mute(scope="*").covers("high", "billing", inside)


def test_mute_windows_reach_the_config() -> None:
    """`[[mute]]` tables become `Config.mutes`, in file order."""
    config = parse_config(
        """
[[rules]]
name = "high"
kind = "threshold"
above = 5

[[mute]]
name = "deploys"
days = "tue,thu"
hours = "02:00-03:00"
tz = "UTC"
rules = ["high"]
"""
    )
    (deploys,) = config.mutes
    assert deploys.name == "deploys"
    assert deploys.covers("high", "workspace", datetime(2026, 12, 1, 2, 30, tzinfo=UTC))
    assert not deploys.covers("high", "workspace", datetime(2026, 12, 2, 2, 30, tzinfo=UTC))


# -- the suppression stage --------------------------------------------------------------

ON = [silence(id=3)]  # covers "high" on every series at T0
OFF: list[Silence] = []
HELD_NO_CARD = Held("a1", "high", "workspace", card=False, cover=Cover(silence=3))
HELD_CARD = Held("a1", "high", "workspace", card=True, cover=Cover(silence=3))
FIRING, REPEAT, RESOLVED = TransitionKind.FIRING, TransitionKind.REPEAT, TransitionKind.RESOLVED


@pytest.mark.parametrize(
    ("kind", "silences", "held", "send", "reason", "held_after"),
    [
        (FIRING, OFF, None, True, Reason.NOT_COVERED, None),
        (FIRING, ON, None, False, Reason.SILENCED, HELD_NO_CARD),
        (REPEAT, OFF, None, True, Reason.NOT_COVERED, None),
        (REPEAT, ON, None, False, Reason.SILENCED, HELD_CARD),
        (REPEAT, ON, HELD_NO_CARD, False, Reason.SILENCED, HELD_NO_CARD),
        (REPEAT, OFF, HELD_CARD, False, Reason.RELEASE_PENDING, HELD_CARD),
        (RESOLVED, ON, HELD_NO_CARD, False, Reason.NEVER_ANNOUNCED, None),
        (RESOLVED, OFF, HELD_NO_CARD, False, Reason.NEVER_ANNOUNCED, None),
        (RESOLVED, ON, HELD_CARD, True, Reason.RESOLVES_CARD, None),
        (RESOLVED, ON, None, True, Reason.RESOLVES_CARD, None),
        (RESOLVED, OFF, None, True, Reason.NOT_COVERED, None),
        (TransitionKind.ESCALATED, ON, None, False, Reason.SILENCED, HELD_CARD),
        (TransitionKind.FLAPPING, ON, HELD_NO_CARD, False, Reason.SILENCED, HELD_NO_CARD),
        (TransitionKind.ANNOTATION, ON, None, True, Reason.EDITS_CARD, None),
        (TransitionKind.ANNOTATION, ON, HELD_CARD, True, Reason.EDITS_CARD, HELD_CARD),
        (TransitionKind.ANNOTATION, ON, HELD_NO_CARD, False, Reason.NEVER_ANNOUNCED, HELD_NO_CARD),
    ],
    ids=[
        "firing-uncovered-sent",
        "firing-silenced-held-without-card",
        "repeat-uncovered-sent",
        "repeat-silenced-held-with-card",
        "repeat-silenced-keeps-no-card",
        "repeat-after-cover-waits-for-release",
        "resolved-never-announced-inside",
        "resolved-never-announced-after",
        "resolved-of-posted-card-sent",
        "resolved-covered-card-sent",
        "resolved-uncovered-sent",
        "escalated-silenced-held-with-card",
        "flapping-silenced-keeps-no-card",
        "annotation-silenced-edits-card",
        "annotation-held-card-edits-card",
        "annotation-without-card-not-sent",
    ],
)
def test_suppression_stage(
    kind: TransitionKind,
    silences: list[Silence],
    held: Held | None,
    send: bool,
    reason: Reason,
    held_after: Held | None,
) -> None:
    """Whether a notification is sent, why, and what the alert's held news becomes."""
    decision = decide(note(kind), T0, silences=silences, mutes=[], held=held)
    assert (decision.send, decision.reason, decision.held) == (send, reason, held_after)
    if not send:
        assert decision.cover == Cover(silence=3)


def test_suppression_by_a_mute_names_the_mute() -> None:
    """A mute's decision says `muted` and names it; a silence is preferred when both cover."""
    always = mute(name="deploys", days="mon-sun", hours="00:00-24:00", tz="UTC")
    by_mute = decide(note(FIRING), T0, silences=[], mutes=[always], held=None)
    assert (by_mute.send, by_mute.reason, by_mute.cover) == (
        False,
        Reason.MUTED,
        Cover(mute="deploys"),
    )
    assert by_mute.cover.fields() == {"mute": "deploys"}
    both = decide(note(FIRING), T0, silences=ON, mutes=[always], held=None)
    assert both.cover is not None
    assert both.cover.fields() == {"silence": 3}


def test_a_fired_and_resolved_card_inside_a_silence_is_not_sent() -> None:
    """A queued firing folded with its resolution is held back whole while covered."""
    folded = note(RESOLVED, fired_at=T0 - timedelta(minutes=5))
    assert not decide(folded, T0, silences=ON, mutes=[], held=None).send
    assert decide(folded, T0, silences=OFF, mutes=[], held=None).send


def test_a_silence_judges_the_time_it_is_asked_about() -> None:
    """The same notification is covered at a time inside the silence, not after it."""
    after = T0 + timedelta(hours=2)
    assert not decide(note(FIRING), T0, silences=ON, mutes=[], held=None).send
    assert decide(note(FIRING, at=after), after, silences=ON, mutes=[], held=None).send


# -- releasing held news ----------------------------------------------------------------


def test_reconcile_releases_held_news_once_the_cover_ends() -> None:
    """A held alert still firing when nothing covers it any more is released."""
    after = T0 + timedelta(hours=1)
    record = firing()
    during = reconcile({"a1": HELD_NO_CARD}, [record], T0, silences=ON, mutes=[])
    assert not during
    ended = reconcile({"a1": HELD_NO_CARD}, [record], after, silences=ON, mutes=[])
    assert ended.release == ((HELD_NO_CARD, record),)
    assert not ended.hold
    assert not ended.forget


def test_reconcile_forgets_alerts_that_fire_no_more() -> None:
    """Held news of an alert that resolved (or is unknown) is dropped, never released."""
    resolved = reconcile({"a1": HELD_NO_CARD}, [], T0 + timedelta(hours=2), silences=ON, mutes=[])
    assert resolved.forget == ("a1",)
    assert not resolved.release


def test_reconcile_holds_a_firing_alert_whose_card_is_out_when_a_cover_begins() -> None:
    """An alert firing with its card in Slack is held (card=True) once a silence covers it,
    so that the silence's end is announced even if no repeat was due in between."""
    record = firing()
    began = reconcile({}, [record], T0, silences=ON, mutes=[])
    assert began.hold == (HELD_CARD,)
    pending = replace(record, state=AlertState.PENDING)
    assert not reconcile({}, [pending], T0, silences=ON, mutes=[])


def test_reconcile_follows_a_change_of_cover() -> None:
    """When another silence or a mute takes over, the held news names the new cover."""
    always = mute(name="deploys", days="mon-sun", hours="00:00-24:00", tz="UTC")
    after = T0 + timedelta(hours=1)
    moved = reconcile({"a1": HELD_NO_CARD}, [firing()], after, silences=ON, mutes=[always])
    assert moved.hold == (Held("a1", "high", "workspace", False, Cover(mute="deploys")),)
    assert not moved.release


def test_silence_describes_itself_for_people() -> None:
    """One line: id, rule, scope, end and time left, who and why."""
    text = silence(id=4, rule="*", scope="support").describe(T0 + timedelta(minutes=30))
    assert text == (
        "#4 every rule on support until 2026-12-01 13:00:00 UTC (30m left), by cli:alice: deploy"
    )


# -- inhibition (watchdog.inhibition) ---------------------------------------------------

INHIBITED_BY = {"agent-low": ("collapsed", "no-data")}
BY_COLLAPSE = Cover(inhibitor="collapsed")
HELD_INHIBITED = Held("a1", "agent-low", "sales", card=False, cover=BY_COLLAPSE)


def firing_now(*alerts: tuple[str, str]) -> Inhibitions:
    """The inhibitions while the (rule, series) `alerts` fire."""
    records = [firing(f"f{i}", rule, series) for i, (rule, series) in enumerate(alerts)]
    return inhibitions(INHIBITED_BY, records)


@pytest.mark.parametrize(
    ("kind", "now_firing", "held", "send", "reason", "held_after"),
    [
        (FIRING, [("collapsed", "workspace")], None, False, Reason.INHIBITED, HELD_INHIBITED),
        (FIRING, [("collapsed", "sales")], None, False, Reason.INHIBITED, HELD_INHIBITED),
        (FIRING, [("collapsed", "support")], None, True, Reason.NOT_COVERED, None),
        (FIRING, [("other", "workspace")], None, True, Reason.NOT_COVERED, None),
        (FIRING, [], None, True, Reason.NOT_COVERED, None),
        (
            REPEAT,
            [("collapsed", "workspace")],
            HELD_INHIBITED,
            False,
            Reason.INHIBITED,
            HELD_INHIBITED,
        ),
        (
            RESOLVED,
            [("collapsed", "workspace")],
            HELD_INHIBITED,
            False,
            Reason.NEVER_ANNOUNCED,
            None,
        ),
        (RESOLVED, [], HELD_INHIBITED, False, Reason.NEVER_ANNOUNCED, None),
        (REPEAT, [], HELD_INHIBITED, False, Reason.RELEASE_PENDING, HELD_INHIBITED),
    ],
    ids=[
        "inhibitor-on-workspace",
        "inhibitor-on-same-series",
        "inhibitor-on-another-agent-does-not",
        "unnamed-rule-does-not",
        "nothing-firing",
        "repeat-stays-held",
        "fired-and-resolved-while-inhibited-posts-nothing",
        "resolved-after-inhibitor-posts-nothing",
        "repeat-waits-for-release",
    ],
)
def test_inhibition_stage(
    kind: TransitionKind,
    now_firing: list[tuple[str, str]],
    held: Held | None,
    send: bool,
    reason: Reason,
    held_after: Held | None,
) -> None:
    """An alert whose rule is inhibited by a rule firing on its series or the workspace is
    held, not sent; one that resolves while held posts nothing."""
    decision = decide(
        note(kind, rule="agent-low", series="sales"),
        T0,
        silences=OFF,
        mutes=[],
        held=held,
        inhibitions=firing_now(*now_firing),
    )
    assert (decision.send, decision.reason, decision.held) == (send, reason, held_after)


def test_an_inhibition_is_named_before_a_silence() -> None:
    """Covered by both, the alert is inhibited, and the audit fields name the inhibitor."""
    decision = decide(
        note(FIRING, rule="agent-low", series="sales"),
        T0,
        silences=[silence(rule="*")],
        mutes=[],
        held=None,
        inhibitions=firing_now(("no-data", "workspace")),
    )
    assert decision.cover == Cover(inhibitor="no-data")
    assert decision.cover.fields() == {"inhibited_by": "no-data"}


def test_reconcile_releases_inhibited_news_once_the_inhibitor_resolves() -> None:
    """Held by an inhibition: kept while the inhibitor fires, released as a new card
    (`card=False`) once it resolved and the inhibited alert still fires."""
    record = firing("a1", "agent-low", "sales")
    inhibitor = firing("w1", "collapsed", "workspace")
    held = {"a1": HELD_INHIBITED}
    during = reconcile(
        held,
        [record, inhibitor],
        T0,
        silences=OFF,
        mutes=[],
        inhibitions=inhibitions(INHIBITED_BY, [record, inhibitor]),
    )
    assert not during
    after = reconcile(
        held, [record], T0, silences=OFF, mutes=[], inhibitions=inhibitions(INHIBITED_BY, [record])
    )
    assert after.release == ((HELD_INHIBITED, record),)


def test_a_pending_inhibitor_inhibits_nothing() -> None:
    """Only a firing alert of a named rule inhibits."""
    pending = replace(firing("w1", "collapsed", "workspace"), state=AlertState.PENDING)
    assert inhibitions(INHIBITED_BY, [pending]).inhibitor("agent-low", "sales") is None
