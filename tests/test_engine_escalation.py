"""The engine's escalation in place, acknowledgement and flapping (see its module docstring)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from watchdog.engine import Engine
from watchdog.model import WORKSPACE, AlertState, Sample, Severity, Transition, TransitionKind
from watchdog.rules import Config, parse_config

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
"""A Monday noon; every time in these tests is T0 plus an offset in seconds."""

W = WORKSPACE
NO_FLAP = '[watchdog]\nstale_after = "1d"\nrepeat = "0s"\nflap = false\n'
FLAP = '[watchdog]\nstale_after = "1d"\nrepeat = "0s"\nflap = { changes = 4, window = "10m" }\n'

Event = tuple[float, int] | tuple[str, float] | tuple[str, float, str]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def config(rules: str, watchdog: str = NO_FLAP) -> Config:
    return parse_config(watchdog + rules, source="test.toml")


def rule(body: str, name: str = "r") -> str:
    return f'[[rules]]\nname = "{name}"\nkind = "threshold"\n{body}\n'


def feed(engine: Engine, events: list[Event]) -> list[Transition]:
    """(seconds, count) is a workspace sample, ("tick", s) a tick, ("ack", s, by) an ack."""
    out: list[Transition] = []
    for event in events:
        match event:
            case ("tick", seconds):
                out += engine.tick(at(seconds))
            case ("ack", seconds, by):
                engine.acknowledge("r", W, by=by, at=at(seconds))
            case (seconds, count):
                out += engine.observe(Sample(W, at(seconds), count))
    return out


def brief(transitions: list[Transition]) -> list[tuple[str, float, str]]:
    return [(t.kind.value, (t.at - T0).total_seconds(), t.severity.value) for t in transitions]


def run(rules: str, events: list[Event], watchdog: str = NO_FLAP) -> list[Transition]:
    return feed(Engine(config(rules, watchdog), started_at=T0), events)


LEVEL = rule(
    'above = 20\nescalate = { above = 30, recover_below = 27, severity = "critical", '
    'mention = "<!subteam^S1>" }'
)
TIMED = rule('above = 20\nescalate = { after = "15m", severity = "critical", mention = "@lead" }')
BOTH = rule(
    'above = 20\nescalate = [{ above = 30, severity = "critical" }, '
    '{ after = "15m", mention = "@lead" }]'
)
BELOW = rule('below = 10\nescalate = { below = 3, recover_above = 5, severity = "critical" }')

ESCALATION_CASES = [
    (
        "level-up-and-down-with-hysteresis",
        LEVEL,
        [(0, 25), (60, 31), (120, 28), (180, 26), (240, 35), (300, 10)],
        [
            ("firing", 0, "warning"),
            ("escalated", 60, "critical"),
            ("deescalated", 180, "warning"),
            ("escalated", 240, "critical"),
            ("resolved", 300, "critical"),
        ],
    ),
    (
        "fires-with-the-level-already-reached",
        LEVEL,
        [(0, 40), (60, 26)],
        [("firing", 0, "critical"), ("deescalated", 60, "warning")],
    ),
    (
        "pending-does-not-escalate",
        rule('above = 20\nfor = "2m"\nescalate = { above = 30, severity = "critical" }'),
        [(0, 40), (60, 40), (120, 40), (180, 25)],
        [("pending", 0, "warning"), ("firing", 120, "critical"), ("deescalated", 180, "warning")],
    ),
    (
        "below-rule-escalates-further-down",
        BELOW,
        [(0, 8), (60, 2), (120, 5), (180, 6)],
        [("firing", 0, "warning"), ("escalated", 60, "critical"), ("deescalated", 180, "warning")],
    ),
    (
        "after-escalates-at-the-tick-it-is-due",
        TIMED,
        [(0, 25), ("tick", 899), ("tick", 900), ("tick", 1500), (1600, 5)],
        [("firing", 0, "warning"), ("escalated", 900, "critical"), ("resolved", 1600, "critical")],
    ),
    (
        "after-never-escalates-an-acknowledged-alert",
        TIMED,
        [(0, 25), ("ack", 300, "ann"), ("tick", 900), ("tick", 3600)],
        [("firing", 0, "warning")],
    ),
    (
        "after-escalation-stays-when-the-level-is-left",
        BOTH,
        [(0, 25), (60, 31), ("tick", 900), (960, 25)],
        [
            ("firing", 0, "warning"),
            ("escalated", 60, "critical"),
            ("escalated", 900, "critical"),
            ("deescalated", 960, "warning"),
        ],
    ),
]


@pytest.mark.parametrize(
    ("rules", "events", "expected"),
    [c[1:] for c in ESCALATION_CASES],
    ids=[c[0] for c in ESCALATION_CASES],
)
def test_escalation_transitions(
    rules: str, events: list[Event], expected: list[tuple[str, float, str]]
) -> None:
    """Escalation stages raise and lower the severity in place at the documented moments."""
    assert brief(run(rules, events)) == expected


def test_escalation_keeps_the_alert_and_carries_the_stage_mention() -> None:
    """Escalated and deescalated belong to the one firing episode; only escalation pages."""
    out = run(LEVEL, [(0, 25), (60, 31), (120, 26)])
    assert len({t.alert_id for t in out}) == 1
    assert [t.mention for t in out] == [None, "<!subteam^S1>", None]
    assert out[1].reason == "escalated: count > 30"
    assert out[2].reason == "count 26: no longer count > 30"


def test_firing_with_a_level_reached_pages_its_mention() -> None:
    """An alert that fires beyond the level carries the stage's mention on its firing."""
    (firing,) = run(LEVEL, [(0, 45)])
    assert (firing.kind, firing.severity, firing.mention) == (
        TransitionKind.FIRING,
        Severity.CRITICAL,
        "<!subteam^S1>",
    )


def test_time_stage_adds_its_mention_without_a_severity() -> None:
    """`after` without a severity pages, and the severity in force stays."""
    out = run(BOTH, [(0, 25), ("tick", 900)])
    assert [(t.kind.value, t.severity.value, t.mention) for t in out] == [
        ("firing", "warning", None),
        ("escalated", "warning", "@lead"),
    ]


def test_acknowledge_marks_only_a_firing_alert() -> None:
    """`acknowledge` is True for a firing alert (recorded with who and when), else False."""
    engine = Engine(config(rule('above = 20\nfor = "5m"')), started_at=T0)
    assert not engine.acknowledge("r", W, by="ann", at=at(0))
    feed(engine, [(0, 25)])
    assert not engine.acknowledge("r", W, by="ann", at=at(10))  # pending
    feed(engine, [(300, 25)])
    assert engine.acknowledge("r", W, by="ann", at=at(320))
    (record,) = engine.records()
    assert (record.acked_by, record.acked_at) == ("ann", at(320))


def test_reload_with_a_changed_escalation_starts_it_afresh() -> None:
    """A new `escalate` drops the stages in force; the next sample escalates anew."""
    engine = Engine(config(LEVEL), started_at=T0)
    feed(engine, [(0, 25), (60, 35)])
    new = config(rule('above = 20\nescalate = { above = 40, severity = "critical" }'))
    assert engine.reconfigure(new, at(90)) == []
    (record,) = engine.records()
    assert (record.escalation, record.severity) == (0, Severity.WARNING)
    assert brief(feed(engine, [(120, 35), (180, 41)])) == [("escalated", 180, "critical")]


def test_reload_with_the_same_escalation_keeps_it() -> None:
    """A reload that leaves `escalate` alone keeps the stages and severity in force."""
    engine = Engine(config(LEVEL), started_at=T0)
    feed(engine, [(0, 25), (60, 35)])
    engine.reconfigure(config(LEVEL.replace("above = 20", "above = 21")), at(90))
    (record,) = engine.records()
    assert (record.escalation, record.severity) == (1, Severity.CRITICAL)
    assert brief(feed(engine, [(120, 35)])) == []


# -- flapping ---------------------------------------------------------------------------------

HIGH = rule("above = 20")
BOUNCE = [(0, 25), (60, 10), (120, 25), (180, 10)]  # fire, resolve, fire, (4th) resolve

FLAP_CASES = [
    (
        "enters-at-the-resolution-that-is-the-nth-change",
        BOUNCE,
        [("firing", 0), ("resolved", 60), ("firing", 120), ("flapping", 180)],
    ),
    (
        "a-change-exactly-window-old-still-counts",
        [(0, 25), (60, 10), (120, 25), (600, 10)],
        [("firing", 0), ("resolved", 60), ("firing", 120), ("flapping", 600)],
    ),
    (
        "a-change-older-than-the-window-does-not",
        [(0, 25), (60, 10), (120, 25), (601, 10)],
        [("firing", 0), ("resolved", 60), ("firing", 120), ("resolved", 601)],
    ),
    (
        "silent-while-flapping-then-resolves-once-steady",
        [*BOUNCE, (200, 25), (300, 10), ("tick", 899), ("tick", 900)],
        [("firing", 0), ("resolved", 60), ("firing", 120), ("flapping", 180), ("resolved", 900)],
    ),
    (
        "leaves-to-firing-when-steadily-firing",
        [*BOUNCE, (200, 25), (500, 30), (799, 26), (800, 27), (900, 10)],
        [
            ("firing", 0),
            ("resolved", 60),
            ("firing", 120),
            ("flapping", 180),
            ("firing", 800),
            ("resolved", 900),
        ],
    ),
    (
        "flaps-again-after-leaving",
        [*BOUNCE, ("tick", 780), (800, 25), (860, 10), (900, 25), (960, 10), (1000, 25)],
        [
            ("firing", 0),
            ("resolved", 60),
            ("firing", 120),
            ("flapping", 180),
            ("resolved", 780),
            ("firing", 800),
            ("resolved", 860),
            ("firing", 900),
            ("flapping", 960),
        ],
    ),
]


@pytest.mark.parametrize(
    ("events", "expected"), [c[1:] for c in FLAP_CASES], ids=[c[0] for c in FLAP_CASES]
)
def test_flapping_transitions(events: list[Event], expected: list[tuple[str, float]]) -> None:
    """Firing and resolving too often becomes one flapping alert until it is steady."""
    out = run(HIGH, events, FLAP)
    assert [(t.kind.value, (t.at - T0).total_seconds()) for t in out] == expected


def test_flapping_keeps_the_alert_id_of_the_card_it_edits() -> None:
    """Flapping and leaving it belong to the episode whose card exists."""
    out = run(HIGH, [*BOUNCE, (200, 25), (800, 25)], FLAP)
    assert [t.kind.value for t in out[2:]] == ["firing", "flapping", "firing"]
    assert len({t.alert_id for t in out[2:]}) == 1
    assert out[3].reason == "4 firings and resolutions within 10m"
    assert out[4].reason == "steady for 10m: no longer flapping"


def test_flapping_is_on_by_default_six_changes_in_an_hour() -> None:
    """Without `flap`, the sixth firing or resolution within an hour is flapping."""
    watchdog = '[watchdog]\nstale_after = "1d"\nrepeat = "0s"\n'
    events: list[Event] = [(s * 600, 25 if s % 2 == 0 else 10) for s in range(7)]
    kinds = [t.kind.value for t in run(HIGH, events, watchdog)]
    assert kinds == ["firing", "resolved"] * 2 + ["firing", "flapping"]


def test_flap_false_turns_it_off() -> None:
    """With `flap = false` an alert fires and resolves as often as its condition says."""
    events: list[Event] = [(s * 10, 25 if s % 2 == 0 else 10) for s in range(20)]
    assert [t.kind.value for t in run(HIGH, events)] == ["firing", "resolved"] * 10


def test_leaving_active_hours_resolves_a_flapping_alert() -> None:
    """A flapping alert outside its rule's active hours resolves like any other."""
    rules = rule('above = 20\nactive = { hours = "12:00-12:05" }')
    out = run(rules, [*BOUNCE, ("tick", 300)], FLAP)
    assert [t.kind.value for t in out][-2:] == ["flapping", "resolved"]
    assert out[-1].reason == "outside active hours"


# -- restart ----------------------------------------------------------------------------------


def restarted(engine: Engine, seconds: float, rules: Config) -> Engine:
    """A new engine restored from `engine`'s records, as the daemon does after a restart."""
    records = engine.records()
    changes = {(r.rule, r.series): r.changes for r in records}
    changes.update({("r", W): engine.changes("r", W)} if engine.changes("r", W) else {})
    second = Engine(rules, started_at=at(seconds))
    assert second.restore(records, [], changes) == []
    return second


def test_restart_keeps_the_escalation_in_force() -> None:
    """A restored escalated alert neither escalates again nor forgets to de-escalate."""
    rules = config(LEVEL)
    first = Engine(rules, started_at=T0)
    feed(first, [(0, 25), (60, 35)])
    second = restarted(first, 100, rules)
    assert brief(feed(second, [(120, 36), (180, 26)])) == [("deescalated", 180, "warning")]


def test_restart_keeps_the_acknowledgement() -> None:
    """An acknowledged alert does not escalate by time after a restart."""
    rules = config(TIMED)
    first = Engine(rules, started_at=T0)
    feed(first, [(0, 25), ("ack", 60, "ann")])
    second = restarted(first, 100, rules)
    assert feed(second, [("tick", 900), ("tick", 2000)]) == []


def test_restart_keeps_flapping_and_leaves_on_time() -> None:
    """A restored flapping alert stays silent and leaves once steady for the window."""
    rules = config(HIGH, FLAP)
    first = Engine(rules, started_at=T0)
    feed(first, [*BOUNCE, (200, 25)])
    (record,) = first.records()
    assert record.state is AlertState.FIRING
    assert record.flapping is not None
    second = restarted(first, 250, rules)
    assert feed(second, [(260, 10), (300, 25), ("tick", 899)]) == []
    assert brief(feed(second, [("tick", 900)])) == [("firing", 900, "warning")]


def test_restart_keeps_the_count_of_changes_between_episodes() -> None:
    """Firings and resolutions before a restart still count towards flapping after it."""
    rules = config(HIGH, FLAP)
    first = Engine(rules, started_at=T0)
    feed(first, [(0, 25), (60, 10)])
    assert first.records() == []  # between episodes: only the count is left
    second = restarted(first, 90, rules)
    assert [t.kind.value for t in feed(second, [(120, 25), (180, 10)])] == ["firing", "flapping"]
