"""Flapping of change alerts and of the built-in alerts (see the engine's module docstring).

Threshold flapping is pinned down in tests/test_engine_escalation.py; here the same
`flap = { changes = 4, window = "10m" }` applies to change rules (whose real state, while
flapping, fires and resolves as their `resolve` says), no-data and watchdog-behind.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from watchdog.engine import Engine
from watchdog.model import (
    NO_DATA_RULE,
    WATCHDOG_BEHIND_RULE,
    WORKSPACE,
    Sample,
    Transition,
)
from watchdog.rules import parse_config

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
"""A Monday noon; every time in these tests is T0 plus an offset in seconds."""

W = WORKSPACE
FLAP = '[watchdog]\nstale_after = "1m"\nrepeat = "0s"\nflap = { changes = 4, window = "10m" }\n'
DROP = '[[rules]]\nname = "c"\nkind = "change"\nwindow = "1m"\ndrop = 5\n'
DROP_BY_WINDOW = DROP + 'resolve = "window"\n'

Event = tuple[object, ...]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def run(rules: str, events: list[Event], watchdog: str = FLAP) -> list[Transition]:
    """(s, count) is a workspace sample, ("tick", s) a tick, ("fail", s, immediate) a
    failed workspace poll, ("late", s, share) a poll cycle report with that share late."""
    engine = Engine(parse_config(watchdog + rules, source="test.toml"), started_at=T0)
    out: list[Transition] = []
    for event in events:
        match event:
            case ("tick", float() | int() as s):
                out += engine.tick(at(s))
            case ("fail", float() | int() as s, bool() as immediate):
                out += engine.poll_failed(W, at(s), "rejected key", immediate=immediate)
            case ("late", float() | int() as s, int() as late):
                out += engine.poll_schedule(at(s), late=late, total=10, cause="busy")
            case (float() | int() as s, int() as count):
                out += engine.observe(Sample(W, at(s), count))
    return out


def brief(out: list[Transition]) -> list[tuple[str, str, float]]:
    return [(t.kind.value, t.rule, (t.at - T0).total_seconds()) for t in out]


# fire (20 -> 10), resolve, fire, (4th change) resolve: flapping at 240
CHANGE_BOUNCE: list[Event] = [(0, 20), (60, 10), (120, 20), (180, 10), (240, 20)]
CHANGE_FLAPPED = [
    ("firing", "c", 60),
    ("resolved", "c", 120),
    ("firing", "c", 180),
    ("flapping", "c", 240),
]

CHANGE_CASES = [
    (
        "change-alert-flaps-instead-of-its-nth-resolution",
        DROP,
        CHANGE_BOUNCE,
        CHANGE_FLAPPED,
    ),
    (
        "really-firing-by-recovery-against-its-base-leaves-to-firing",
        DROP,
        # 300: fires for real (20 -> 10); the window's base is 10 from 360 on, but against
        # 20 the count has not recovered: it stays firing, and leaves so once steady.
        [*CHANGE_BOUNCE, (300, 10), (360, 10), (420, 10), ("tick", 899), ("tick", 900)],
        [*CHANGE_FLAPPED, ("firing", "c", 900)],
    ),
    (
        "by-window-the-real-state-resolves-when-the-window-slides",
        DROP_BY_WINDOW,
        [*CHANGE_BOUNCE, (300, 10), (360, 10), (420, 10), ("tick", 959), ("tick", 960)],
        [*CHANGE_FLAPPED, ("resolved", "c", 960)],
    ),
]


@pytest.mark.parametrize(
    ("rules", "events", "expected"),
    [c[1:] for c in CHANGE_CASES],
    ids=[c[0] for c in CHANGE_CASES],
)
def test_change_alert_flapping(
    rules: str, events: list[Event], expected: list[tuple[str, str, float]]
) -> None:
    """A change alert that fires and resolves too often flaps; its real state follows its
    `resolve` semantics and it leaves flapping to that state once steady."""
    assert brief(run(rules, events)) == expected


def test_change_alert_left_flapping_firing_resolves_against_the_base_it_fired_at() -> None:
    """After leaving flapping firing, the alert recovers against the base of its real firing."""
    events = [*CHANGE_BOUNCE, (300, 12), (360, 12), ("tick", 900), (960, 16)]
    out = run(DROP, events)
    assert brief(out)[-2:] == [("firing", "c", 900), ("resolved", "c", 960)]
    assert out[-2].condition.endswith(": 20 -> 12")
    assert out[-1].reason == "recovered to 16, fired at 20 → 12"


# rejected key: fires at once; a good poll resolves; 4th change at 180
NO_DATA_BOUNCE: list[Event] = [
    ("fail", 0, True),
    (60, 5),
    ("fail", 120, True),
    (180, 5),
]
NO_DATA_FLAPPED = [
    ("firing", NO_DATA_RULE, 0),
    ("resolved", NO_DATA_RULE, 60),
    ("firing", NO_DATA_RULE, 120),
    ("flapping", NO_DATA_RULE, 180),
]
NO_DATA_CASES = [
    ("no-data-flaps-against-a-flaky-api", NO_DATA_BOUNCE, NO_DATA_FLAPPED),
    (
        "silent-while-flapping-then-resolves-once-the-api-is-steady",
        [*NO_DATA_BOUNCE, ("fail", 240, True), (300, 5), ("tick", 899), (900, 5)],
        [*NO_DATA_FLAPPED, ("resolved", NO_DATA_RULE, 900)],
    ),
    (
        "leaves-to-firing-when-the-api-stays-down",
        # failing from 240 on: stale (no good poll for 1m) at the tick at 240 + 60
        [*NO_DATA_BOUNCE, ("fail", 240, False), ("tick", 300), ("tick", 899), ("tick", 900)],
        [*NO_DATA_FLAPPED, ("firing", NO_DATA_RULE, 900)],
    ),
]


@pytest.mark.parametrize(
    ("events", "expected"), [c[1:] for c in NO_DATA_CASES], ids=[c[0] for c in NO_DATA_CASES]
)
def test_no_data_flapping(events: list[Event], expected: list[tuple[str, str, float]]) -> None:
    """no-data that fires and resolves too often flaps like any alert."""
    assert brief(run("", events)) == expected


def test_watchdog_behind_flaps_and_leaves_once_steady() -> None:
    """The watchdog's own backlog alert, fired and resolved too often, flaps; late for
    `stale_after` again and steady after that, it leaves flapping firing."""
    events: list[Event] = [
        ("late", 0, 5),
        ("late", 60, 5),  # late for 1m: fires
        ("late", 120, 0),
        ("late", 180, 5),
        ("late", 240, 5),  # fires
        ("late", 300, 0),  # the 4th change: flapping
        ("late", 360, 5),
        ("late", 420, 5),  # really firing again
        ("tick", 1019),
        ("tick", 1020),
    ]
    assert brief(run("", events)) == [
        ("firing", WATCHDOG_BEHIND_RULE, 60),
        ("resolved", WATCHDOG_BEHIND_RULE, 120),
        ("firing", WATCHDOG_BEHIND_RULE, 240),
        ("flapping", WATCHDOG_BEHIND_RULE, 300),
        ("firing", WATCHDOG_BEHIND_RULE, 1020),
    ]
