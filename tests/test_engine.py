"""The rule engine: samples, poll failures and ticks in, transitions out."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from watchdog.engine import SPARKLINE_LENGTH, Engine, alert_id
from watchdog.model import (
    NO_DATA_RULE,
    WORKSPACE,
    AlertState,
    FiredChange,
    Sample,
    Severity,
    Transition,
    TransitionKind,
)
from watchdog.rules import Config, parse_config

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
"""A Monday noon; every time in these tests is T0 plus an offset in seconds."""

QUIET = '[watchdog]\nstale_after = "1d"\nrepeat = "0s"\n'
"""No no-data and no repeats unless a test asks for them."""

AGENTS = (
    '[[agents]]\nname = "support"\nid = "agent_s"\n\n[[agents]]\nname = "sales"\nid = "agent_x"\n'
)

Event = tuple[object, ...]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def tick(seconds: float) -> Event:
    return ("tick", seconds)


def fail(seconds: float, series: str = WORKSPACE, *, immediate: bool = True) -> Event:
    return ("fail", seconds, series, immediate)


def down(seconds: float, *series: str) -> Any:
    """Polls of `series` (the workspace by default) failing at `seconds`, retry may help."""
    return [fail(seconds, name, immediate=False) for name in series or (WORKSPACE,)]


def sample(seconds: float, count: int, series: str = WORKSPACE) -> Event:
    return ("sample", seconds, count, series)


def config(rules: str = "", *, watchdog: str = QUIET, agents: str = AGENTS) -> Config:
    return parse_config(watchdog + agents + rules, source="test.toml")


def feed(engine: Engine, events: list[Event]) -> list[Transition]:
    """Run events through the engine; a bare (seconds, count) is a workspace sample."""
    out: list[Transition] = []
    for event in events:
        match event:
            case list():  # several events at once, e.g. `down(...)`
                out += feed(engine, event)
            case ("tick", seconds):
                out += engine.tick(at(seconds))  # type: ignore[arg-type]
            case ("ack", seconds, rule, series):
                engine.acknowledge(rule, series, by="U0ALICE", at=at(seconds))  # type: ignore[arg-type]
            case ("fail", seconds, series, immediate):
                out += engine.poll_failed(series, at(seconds), "rejected key", immediate=immediate)  # type: ignore[arg-type]
            case ("sample", seconds, count, series):
                out += engine.observe(Sample(series, at(seconds), count))  # type: ignore[arg-type]
            case (seconds, count):
                out += engine.observe(Sample(WORKSPACE, at(seconds), count))  # type: ignore[arg-type]
            case _:
                raise AssertionError(f"unknown event {event!r}")
    return out


def brief(transitions: list[Transition]) -> list[tuple[str, str, str, float]]:
    return [(t.kind.value, t.rule, t.series, (t.at - T0).total_seconds()) for t in transitions]


def run(rules: str, events: list[Event], **kwargs: str) -> list[Transition]:
    engine = Engine(config(rules, **kwargs), started_at=T0)
    return feed(engine, events)


def ack(seconds: float, rule: str = "r", series: str = WORKSPACE) -> Event:
    return ("ack", seconds, rule, series)


def threshold(body: str, name: str = "r") -> str:
    return f'[[rules]]\nname = "{name}"\nkind = "threshold"\n{body}\n'


def change(body: str, name: str = "c") -> str:
    return f'[[rules]]\nname = "{name}"\nkind = "change"\n{body}\n'


W = WORKSPACE

CASES = [
    # -- threshold above / below ------------------------------------------------------
    (
        "above-fires-while-greater",
        threshold("above = 10"),
        [(0, 10), (15, 11), (30, 12), (45, 10), (60, 9)],
        [("firing", "r", W, 15), ("resolved", "r", W, 45)],
    ),
    (
        "above-equal-never-fires",
        threshold("above = 10"),
        [(0, 10), (15, 10)],
        [],
    ),
    (
        "below-fires-while-less",
        threshold("below = 3"),
        [(0, 5), (15, 2), (30, 0), (45, 3)],
        [("firing", "r", W, 15), ("resolved", "r", W, 45)],
    ),
    (
        "fires-again-after-resolving",
        threshold("above = 10"),
        [(0, 11), (15, 5), (30, 11)],
        [("firing", "r", W, 0), ("resolved", "r", W, 15), ("firing", "r", W, 30)],
    ),
    # -- `for` --------------------------------------------------------------------------
    (
        "for-fires-after-holding",
        threshold('above = 10\nfor = "1m"'),
        [(0, 11), (30, 11), (59, 11), (60, 11), (75, 5)],
        [("pending", "r", W, 0), ("firing", "r", W, 60), ("resolved", "r", W, 75)],
    ),
    (
        "for-dip-cancels-pending",
        threshold('above = 10\nfor = "1m"'),
        [(0, 11), (30, 9), (45, 11), (90, 11), (105, 11)],
        [
            ("pending", "r", W, 0),
            ("cancelled", "r", W, 30),
            ("pending", "r", W, 45),
            ("firing", "r", W, 105),
        ],
    ),
    (
        "for-fires-at-next-sample-after-gap",
        threshold('above = 10\nfor = "1m"'),
        [(0, 11), (300, 11)],
        [("pending", "r", W, 0), ("firing", "r", W, 300)],
    ),
    (
        "for-is-not-decided-at-ticks",
        threshold('above = 10\nfor = "1m"'),
        [(0, 11), tick(120), (130, 11)],
        [("pending", "r", W, 0), ("firing", "r", W, 130)],
    ),
    (
        "below-with-for",
        threshold('below = 2\nfor = "30s"'),
        [(0, 1), (15, 0), (30, 1), (45, 2)],
        [("pending", "r", W, 0), ("firing", "r", W, 30), ("resolved", "r", W, 45)],
    ),
    # -- hysteresis ---------------------------------------------------------------------
    (
        "hysteresis-above",
        threshold("above = 10\nrecover_below = 5"),
        [(0, 11), (15, 8), (30, 5), (45, 4), (60, 8), (75, 11)],
        [("firing", "r", W, 0), ("resolved", "r", W, 45), ("firing", "r", W, 75)],
    ),
    (
        "hysteresis-below",
        threshold("below = 2\nrecover_above = 5"),
        [(0, 1), (15, 4), (30, 5), (45, 6)],
        [("firing", "r", W, 0), ("resolved", "r", W, 45)],
    ),
    (
        "hysteresis-does-not-delay-firing",
        threshold("above = 10\nrecover_below = 5"),
        [(0, 7), (15, 11)],
        [("firing", "r", W, 15)],
    ),
    # -- active hours (T0 is Monday 12:00 UTC) ----------------------------------------------
    (
        "active-inside-fires-leaving-resolves-at-tick",
        threshold('above = 10\nactive = { hours = "12:00-12:05" }'),
        [(0, 11), (120, 11), tick(299), tick(300), (330, 11), tick(400)],
        [("firing", "r", W, 0), ("resolved", "r", W, 300)],
    ),
    (
        "active-leaving-resolves-at-sample",
        threshold('above = 10\nactive = { hours = "12:00-12:05" }'),
        [(0, 11), (301, 11)],
        [("firing", "r", W, 0), ("resolved", "r", W, 301)],
    ),
    (
        "active-before-window-does-not-fire",
        threshold('above = 10\nactive = { hours = "12:01-13:00" }'),
        [(0, 11), (59, 11), (60, 11)],
        [("firing", "r", W, 60)],
    ),
    (
        "active-leaving-cancels-pending",
        threshold('above = 10\nfor = "10m"\nactive = { hours = "12:00-12:05" }'),
        [(0, 11), tick(300)],
        [("pending", "r", W, 0), ("cancelled", "r", W, 300)],
    ),
    (
        "active-other-days-do-not-fire",
        threshold('above = 10\nactive = { days = "sat-sun" }'),
        [(0, 11), tick(60)],
        [],
    ),
    (
        "active-in-local-time",
        threshold('above = 10\nactive = { hours = "13:00-14:00", tz = "Europe/Berlin" }'),
        [(0, 11), tick(3599), tick(3600)],
        [("firing", "r", W, 0), ("resolved", "r", W, 3600)],
    ),
    # -- change windows -----------------------------------------------------------------------
    (
        "change-not-evaluated-before-window",
        change('window = "1m"\ndrop = 5'),
        [(0, 20), (30, 10), (59, 0)],
        [],
    ),
    (
        "change-drop-fires-and-resolves-by-window",
        change('window = "1m"\ndrop = 5\nresolve = "window"'),
        [(0, 20), (30, 10), (60, 14), (75, 14), (90, 14)],
        [("firing", "c", W, 60), ("resolved", "c", W, 90)],
    ),
    (
        "change-drop-below-amount",
        change('window = "1m"\ndrop = 5'),
        [(0, 20), (60, 16)],
        [],
    ),
    (
        "change-base-is-latest-old-enough-sample",
        change('window = "1m"\ndrop = 5'),
        [(0, 20), (10, 12), (70, 10)],
        [],
    ),
    (
        "change-base-older-than-two-windows-is-not-used",  # a 4-hour poll gap, then a dip
        change('window = "5m"\ndrop_pct = 50\nmin_base = 5'),
        [(0, 20), (15, 20), (15 + 4 * 3600, 6), (15 + 4 * 3600 + 60, 6)],
        [],
    ),
    (
        "change-base-exactly-two-windows-old-is-used",
        change('window = "1m"\ndrop = 5'),
        [(0, 20), (120, 10)],
        [("firing", "c", W, 120)],
    ),
    (
        "change-after-gap-evaluates-once-a-fitting-base-exists",
        change('window = "1m"\ndrop = 5\nresolve = "window"'),
        [(0, 20), (3600, 20), (3630, 20), (3660, 14), (3690, 14), (3720, 14)],
        [("firing", "c", W, 3660), ("resolved", "c", W, 3720)],
    ),
    (
        "change-rise-by-window",
        change('window = "1m"\nrise = 5\nresolve = "window"'),
        [(0, 10), (60, 15), (120, 15)],
        [("firing", "c", W, 60), ("resolved", "c", W, 120)],
    ),
    (
        "change-rise-ignores-drop",
        change('window = "1m"\nrise = 5'),
        [(0, 30), (60, 0)],
        [],
    ),
    (
        "change-drop-pct-by-window",
        change('window = "1m"\ndrop_pct = 50\nresolve = "window"'),
        [(0, 10), (60, 6), (120, 3), (180, 3)],
        [("firing", "c", W, 120), ("resolved", "c", W, 180)],
    ),
    (
        "change-rise-pct-by-window",
        change('window = "1m"\nrise_pct = 100\nresolve = "window"'),
        [(0, 4), (60, 7), (61, 8), (121, 8)],
        [("firing", "c", W, 61), ("resolved", "c", W, 121)],
    ),
    (
        "change-pct-below-min-base",
        change('window = "1m"\ndrop_pct = 50\nmin_base = 5'),
        [(0, 4), (60, 0)],
        [],
    ),
    (
        "change-pct-at-min-base",
        change('window = "1m"\ndrop_pct = 50\nmin_base = 5'),
        [(0, 5), (60, 1)],
        [("firing", "c", W, 60)],
    ),
    (
        "change-pct-default-min-base-ignores-zero",
        change('window = "1m"\nrise_pct = 10'),
        [(0, 0), (60, 40)],
        [],
    ),
    (
        "change-absolute-ignores-min-base",
        change('window = "1m"\nrise = 3\nmin_base = 50'),
        [(0, 0), (60, 3)],
        [("firing", "c", W, 60)],
    ),
    (
        "change-outside-active-hours",
        change('window = "1m"\ndrop = 5\nresolve = "window"\nactive = { hours = "12:02-13:00" }'),
        [(0, 20), (60, 10), (120, 0), (180, 0)],
        [("firing", "c", W, 120), ("resolved", "c", W, 180)],
    ),
    # -- change alerts resolve on recovery (the default) ---------------------------------------
    (
        "change-drop-pct-resolves-on-recovery",  # fired at 20 -> 0: resolves above 10
        change('window = "1m"\ndrop_pct = 50'),
        [(0, 20), (60, 0), (120, 0), (180, 8), (240, 10), (300, 11)],
        [("firing", "c", W, 60), ("resolved", "c", W, 300)],
    ),
    (
        "change-rise-resolves-on-recovery",  # fired at 10 -> 25: resolves below 25
        change('window = "1m"\nrise = 15'),
        [(0, 10), (60, 25), (120, 25), (180, 30), (240, 25), (300, 24)],
        [("firing", "c", W, 60), ("resolved", "c", W, 300)],
    ),
    (
        "change-rise-pct-resolves-on-recovery",  # fired at 4 -> 8: resolves below 8
        change('window = "1m"\nrise_pct = 100'),
        [(0, 4), (60, 8), (120, 9), (180, 8), (240, 7)],
        [("firing", "c", W, 60), ("resolved", "c", W, 240)],
    ),
    (
        "change-recovery-needs-no-window-base",  # an hour's gap: judged against the base kept
        change('window = "1m"\ndrop = 5'),
        [(0, 20), (60, 10), (3660, 16), (3700, 15)],
        [("firing", "c", W, 60), ("resolved", "c", W, 3660)],
    ),
    (
        "change-recovery-resolves-outside-active-hours",
        change('window = "1m"\ndrop = 5\nactive = { hours = "12:02-12:10" }'),
        [(0, 20), (60, 10), (120, 0), (180, 0), tick(599), tick(600)],
        [("firing", "c", W, 120), ("resolved", "c", W, 600)],
    ),
    (
        "change-window-mode-keeps-firing-without-a-base",  # today's behaviour, kept
        change('window = "1m"\ndrop = 5\nresolve = "window"'),
        [(0, 20), (60, 10), (3660, 16), (3700, 15)],
        [("firing", "c", W, 60)],
    ),
    # -- repeats --------------------------------------------------------------------------------
    (
        "repeat-at-ticks",
        threshold('above = 10\nrepeat = "1m"'),
        [(0, 11), tick(30), tick(60), tick(90), tick(120), (130, 5), tick(200)],
        [
            ("firing", "r", W, 0),
            ("repeat", "r", W, 60),
            ("repeat", "r", W, 120),
            ("resolved", "r", W, 130),
        ],
    ),
    (
        "acknowledged-stops-repeating-and-still-resolves",
        threshold('above = 10\nrepeat = "1m"'),
        [(0, 11), tick(60), ack(61), tick(120), tick(180), (190, 5)],
        [("firing", "r", W, 0), ("repeat", "r", W, 60), ("resolved", "r", W, 190)],
    ),
    (
        "acknowledging-a-pending-alert-does-nothing",
        threshold('above = 10\nfor = "1m"\nrepeat = "1m"'),
        [(0, 11), ack(10), (60, 11), tick(120)],
        [("pending", "r", W, 0), ("firing", "r", W, 60), ("repeat", "r", W, 120)],
    ),
    (
        "the-next-episode-starts-unacknowledged",
        threshold('above = 10\nrepeat = "1m"'),
        [(0, 11), ack(1), (30, 5), (40, 11), tick(100)],
        [
            ("firing", "r", W, 0),
            ("resolved", "r", W, 30),
            ("firing", "r", W, 40),
            ("repeat", "r", W, 100),
        ],
    ),
    (
        "repeat-counts-from-last-notification",
        threshold('above = 10\nrepeat = "1m"'),
        [(0, 11), tick(70), tick(120), tick(130)],
        [("firing", "r", W, 0), ("repeat", "r", W, 70), ("repeat", "r", W, 130)],
    ),
    (
        "repeat-zero-never",
        threshold('above = 10\nrepeat = "0s"'),
        [(0, 11), tick(60), tick(80000)],
        [("firing", "r", W, 0)],
    ),
    (
        "pending-does-not-repeat",
        threshold('above = 10\nfor = "1h"\nrepeat = "1m"'),
        [(0, 11), tick(120), tick(300)],
        [("pending", "r", W, 0)],
    ),
]


@pytest.mark.parametrize(
    ("rules", "events", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_rule_transitions(
    rules: str, events: list[Event], expected: list[tuple[str, str, str, float]]
) -> None:
    """Samples and ticks produce exactly the documented transitions at the documented times."""
    assert brief(run(rules, events)) == expected


NO_DATA = '[watchdog]\nstale_after = "2m"\nrepeat = "0s"\n'
ND = NO_DATA_RULE

NO_DATA_CASES = [
    (
        "stale-after-last-good-poll",
        [(0, 5), down(30), tick(60), tick(119), tick(120), tick(130), (140, 5)],
        [("firing", ND, W, 120), ("resolved", ND, W, 140)],
    ),
    (
        "stale-from-engine-start-without-samples",
        [down(5), tick(119), tick(120)],
        [("firing", ND, W, 120)],
    ),
    (
        "failed-polls-alone-do-not-fire-early",
        [(0, 5), fail(30, immediate=False), tick(31), tick(120)],
        [("firing", ND, W, 120)],
    ),
    (
        "immediate-on-rejected-key",
        [(0, 5), fail(10)],
        [("firing", ND, W, 10)],
    ),
    (
        "immediate-fires-once",
        [fail(10), fail(20), tick(30), tick(500)],
        [("firing", ND, W, 10)],
    ),
    (
        "immediate-resolves-on-good-sample",
        [fail(10), (20, 3), tick(30)],
        [("firing", ND, W, 10), ("resolved", ND, W, 20)],
    ),
    (
        "agent-immediate-when-workspace-fine",
        [(0, 5), fail(10, "support")],
        [("firing", ND, "support", 10)],
    ),
    (
        "workspace-no-data-suppresses-agents",
        [down(5), tick(120), tick(200), fail(210, "sales")],
        [("firing", ND, W, 120)],
    ),
    (
        "agents-get-a-fresh-stale-after-once-workspace-recovers",
        [
            down(5, W, "support", "sales"),
            *[tick(120), (130, 5), tick(135), (240, 5), tick(249), tick(250)],
        ],
        [
            ("firing", ND, W, 120),
            ("resolved", ND, W, 130),
            ("firing", ND, "support", 250),
            ("firing", ND, "sales", 250),
        ],
    ),
    (
        "agents-stale-after-their-own-last-sample",
        [
            *[sample(100, 1, "support"), sample(100, 1, "sales"), (110, 3), tick(130)],
            *[down(150, "support", "sales"), tick(221)],
        ],
        [("firing", ND, "support", 221), ("firing", ND, "sales", 221)],
    ),
    (
        "failing-workspace-does-not-hide-agents-quiet-long-before",
        [
            sample(0, 1, "support"),
            sample(0, 1, "sales"),
            (50, 5),
            down(60, "support", "sales"),
            fail(100, immediate=False),
            tick(120),
            (130, 5),
            tick(135),
        ],
        [("firing", ND, "support", 120), ("firing", ND, "sales", 120)],
    ),
    (
        "failing-workspace-hides-agents-that-went-quiet-with-it",
        [
            sample(0, 1, "support"),
            sample(0, 1, "sales"),
            (5, 5),
            fail(100, immediate=False),
            tick(120),
            tick(125),
        ],
        [("firing", ND, W, 125)],
    ),
    (
        "stale-agent-while-workspace-fine",
        [
            sample(0, 1, "support"),
            sample(0, 1, "sales"),
            (100, 3),
            sample(100, 1, "sales"),
            down(110, "support"),
            tick(120),
        ],
        [("firing", ND, "support", 120)],
    ),
    (
        "not-polled-without-a-failure-never-fires",
        [(0, 5), sample(0, 1, "support"), tick(120), tick(600), tick(3600)],
        [],
    ),
    (
        "never-polled-since-start-never-fires",
        [tick(120), tick(3600)],
        [],
    ),
    (
        "a-failure-before-the-last-good-poll-does-not-count",
        [down(10), (20, 5), tick(139), tick(140), tick(600)],
        [],
    ),
    (
        "late-then-failing-fires-once-stale-after-has-passed",
        [(0, 5), tick(100), down(110), tick(119), tick(120)],
        [("firing", ND, W, 120)],
    ),
]


@pytest.mark.parametrize(
    ("events", "expected"), [c[1:] for c in NO_DATA_CASES], ids=[c[0] for c in NO_DATA_CASES]
)
def test_no_data_transitions(
    events: list[Event], expected: list[tuple[str, str, str, float]]
) -> None:
    """The built-in no-data rule fires on staleness or rejected polls, resolves on data."""
    assert brief(run("", events, watchdog=NO_DATA)) == expected


# -- details of single transitions ------------------------------------------------------


def test_active_hours_reason() -> None:
    """Leaving the active window resolves with the reason 'outside active hours'."""
    out = run(threshold('above = 10\nactive = { hours = "12:00-12:05" }'), [(0, 11), tick(300)])
    assert [t.reason for t in out] == ["", "outside active hours"]
    out = run(threshold('above = 10\nactive = { hours = "12:00-12:05" }'), [(0, 11), (300, 11)])
    assert out[-1].reason == "outside active hours"
    assert out[-1].count == 11


def test_resolution_reasons_name_the_recovery() -> None:
    """Threshold, hysteresis, change and no-data resolutions say why they resolved."""
    assert run(threshold("above = 10"), [(0, 11), (15, 10)])[-1].reason == (
        "count 10: at or below 10"
    )
    assert run(threshold("above = 10\nrecover_below = 5"), [(0, 11), (15, 4)])[-1].reason == (
        "count 4: below 5"
    )
    assert run(threshold("below = 3\nrecover_above = 6"), [(0, 1), (15, 7)])[-1].reason == (
        "count 7: above 6"
    )
    assert run(threshold('above = 10\nfor = "1m"'), [(0, 11), (15, 2)])[-1].reason == (
        "count 2 no longer matches"
    )
    by_window = change('window = "1m"\ndrop = 5\nresolve = "window"')
    assert run(by_window, [(0, 20), (60, 10), (120, 10)])[-1].reason == (
        "10 -> 10 no longer matches"
    )
    assert run(change('window = "1m"\ndrop_pct = 50'), [(0, 20), (60, 0), (120, 12)])[
        -1
    ].reason == ("recovered to 12, fired at 20 → 0")
    assert run("", [fail(0), (5, 1)], watchdog=NO_DATA)[-1].reason == "good poll received"


def test_transition_carries_rule_details() -> None:
    """A transition names its severity, count, since and a readable condition."""
    rules = threshold('above = 10\nrecover_below = 5\nfor = "1m"\nseverity = "critical"')
    pending, firing = run(rules, [(0, 11), (60, 12)])
    assert pending.kind is TransitionKind.PENDING
    assert not pending.kind.notifies
    assert firing.kind.notifies
    assert firing.severity is Severity.CRITICAL
    assert (firing.count, firing.since, firing.at) == (12, at(0), at(60))
    assert firing.condition == "count > 10 (resolves below 5) for 1m"
    assert firing.alert_id == pending.alert_id


def test_change_condition_names_the_counts() -> None:
    """A change alert's condition shows the old and the new count."""
    (firing,) = run(change('window = "5m"\ndrop_pct = 50\nmin_base = 5'), [(0, 10), (300, 4)])
    assert firing.condition == "dropped >= 50% within 5m (base >= 5): 10 -> 4"


def test_no_data_details() -> None:
    """No-data uses the [watchdog] severity, has no count and says what went wrong."""
    text = '[watchdog]\nstale_after = "2m"\nno_data_severity = "warning"\n'
    engine = Engine(config(watchdog=text), started_at=T0)
    # the agents' no-data is suppressed: the workspace is failing too
    (stale,) = feed(engine, [(0, 5), *down(10, W, "support", "sales"), tick(150)])
    assert stale.severity is Severity.WARNING
    assert stale.count is None
    assert stale.since == at(0)
    assert stale.condition == "no good poll for 2m 30s (last error: rejected key)"
    feed(engine, [(155, 5)])
    (rejected,) = engine.poll_failed("support", at(160), "rejected key", immediate=True)
    assert rejected.condition == "no data: rejected key"
    assert rejected.since == at(160)


def test_no_data_table_sets_when_and_how_severe() -> None:
    """[no_data] stale_after and severity are what the engine judges the built-in alert by."""
    text = '[watchdog]\nrepeat = "0s"\n[no_data]\nstale_after = "3m"\nseverity = "info"\n'
    engine = Engine(config(watchdog=text, agents=""), started_at=T0)
    assert feed(engine, [(0, 5), *down(10), tick(179)]) == []
    (stale,) = engine.tick(at(180))
    assert (stale.rule, stale.severity) == (ND, Severity.INFO)


def test_stale_condition_mentions_last_error() -> None:
    """A stale series quotes the last poll error in its condition."""
    engine = Engine(config(watchdog=NO_DATA), started_at=T0)
    engine.poll_failed(WORKSPACE, at(60), "server error", immediate=False)
    (stale,) = engine.tick(at(120))
    assert stale.condition == "no good poll for 2m (last error: server error)"


def test_no_data_repeats_with_watchdog_repeat() -> None:
    """A firing no-data alert re-notifies every [watchdog] repeat."""
    text = '[watchdog]\nstale_after = "2m"\nrepeat = "10m"\n'
    out = run("", [*down(1), tick(120), tick(600), tick(720), tick(1320)], watchdog=text)
    assert brief(out) == [
        ("firing", ND, W, 120),
        ("repeat", ND, W, 720),
        ("repeat", ND, W, 1320),
    ]


def test_samples_of_unknown_series_are_ignored() -> None:
    """A sample or failure for a series not in the config changes nothing."""
    engine = Engine(config(threshold("above = 1")), started_at=T0)
    assert engine.observe(Sample("ghost", at(0), 99)) == []
    assert engine.poll_failed("ghost", at(0), "unknown agent", immediate=True) == []
    assert engine.recent("ghost") == ()


def test_rule_scoped_to_every_agent_fires_per_series() -> None:
    """A '*' rule keeps one alert per agent and leaves the workspace alone."""
    rules = threshold('above = 1\nscope = "*"')
    out = run(
        rules,
        [(0, 50), sample(1, 2, "support"), sample(2, 2, "sales"), sample(3, 0, "support")],
    )
    assert brief(out) == [
        ("firing", "r", "support", 1),
        ("firing", "r", "sales", 2),
        ("resolved", "r", "support", 3),
    ]


# -- sparkline ----------------------------------------------------------------------------


def test_transitions_carry_recent_counts() -> None:
    """`recent` holds the series' latest counts, the current one last."""
    out = run(threshold("above = 10"), [(0, 3), (15, 7), (30, 12), (45, 2)])
    assert [t.recent for t in out] == [(3, 7, 12), (3, 7, 12, 2)]


def test_recent_counts_are_capped() -> None:
    """The sparkline keeps the last SPARKLINE_LENGTH counts of a series."""
    engine = Engine(config(threshold("above = 100")), started_at=T0)
    feed(engine, [(i, i) for i in range(SPARKLINE_LENGTH + 10)])
    (firing,) = engine.observe(Sample(WORKSPACE, at(1000), 101))
    assert len(firing.recent) == SPARKLINE_LENGTH
    assert firing.recent[-1] == 101
    assert firing.recent[0] == 11
    assert engine.recent(WORKSPACE) == firing.recent
    assert engine.recent("support") == ()


# -- alert ids ------------------------------------------------------------------------------

EPISODES: list[Event] = [(0, 11), (15, 11), (30, 5), (45, 12), tick(60), (75, 1)]


def test_alert_ids_are_stable() -> None:
    """The same inputs give the same alert ids, in a fresh engine or a replay."""
    rules = threshold("above = 10")
    first = [t.alert_id for t in run(rules, EPISODES)]
    second = [t.alert_id for t in run(rules, EPISODES)]
    assert first == second
    assert first[0] == first[1] != first[2] == first[3]
    assert first[0] == alert_id("r", WORKSPACE, at(0))
    assert first[2] == alert_id("r", WORKSPACE, at(45))


def test_alert_ids_differ_per_rule_and_series() -> None:
    """Two rules or two series never share an alert id, even starting together."""
    assert len({alert_id(r, s, T0) for r in ("a", "b") for s in (W, "support")}) == 4
    assert alert_id("a", W, T0) != alert_id("a", W, T0 + timedelta(microseconds=1))


def test_alert_id_does_not_depend_on_when_the_engine_started() -> None:
    """An episode's id depends on the rule, series and start, not on the engine's start."""
    rules = config(threshold("above = 10"), agents="")
    early = feed(Engine(rules, started_at=T0 - timedelta(days=1)), EPISODES)
    late = feed(Engine(rules, started_at=T0), EPISODES)
    assert [t.alert_id for t in early] == [t.alert_id for t in late]


# -- restore ----------------------------------------------------------------------------------


def test_restore_resumes_firing_without_announcing_again() -> None:
    """A restored FIRING alert stays firing silently and resolves under its old id."""
    rules = config(threshold('above = 10\nfor = "1m"'))
    first = Engine(rules, started_at=T0)
    history = [Sample(W, at(s), 11) for s in range(0, 75, 15)]
    out = [t for s in history for t in first.observe(s)]
    assert [t.kind for t in out] == [TransitionKind.PENDING, TransitionKind.FIRING]
    records = first.records()
    assert [r.state for r in records] == [AlertState.FIRING]

    second = Engine(rules, started_at=at(600))
    second.restore(records, history)
    assert second.recent(W) == (11, 11, 11, 11, 11)
    assert feed(second, [(600, 12), tick(610), (620, 11)]) == []
    (resolved,) = feed(second, [(630, 3)])
    assert resolved.kind is TransitionKind.RESOLVED
    assert resolved.alert_id == out[-1].alert_id
    assert resolved.since == at(0)
    assert second.records() == []


def test_restore_keeps_the_repeat_schedule() -> None:
    """A restored alert repeats counting from its last notification, not from the restart."""
    rules = config(threshold('above = 10\nrepeat = "10m"'))
    first = Engine(rules, started_at=T0)
    feed(first, [(0, 11), tick(600)])
    second = Engine(rules, started_at=at(700))
    second.restore(first.records(), [])
    assert brief(second.tick(at(1199))) == []
    assert brief(second.tick(at(1200))) == [("repeat", "r", W, 1200)]


def test_acknowledge_marks_only_a_firing_unacknowledged_alert() -> None:
    """True once for a firing alert; False when unknown, pending or already acknowledged."""
    engine = Engine(
        config(threshold("above = 10") + threshold('above = 5\nfor = "1m"', "p")), started_at=T0
    )
    feed(engine, [(0, 11)])
    assert not engine.acknowledge("r", "support", by="U0BOB", at=at(1))
    assert not engine.acknowledge("p", W, by="U0BOB", at=at(1))  # pending
    assert engine.acknowledge("r", W, by="U0ALICE", at=at(2))
    assert not engine.acknowledge("r", W, by="U0BOB", at=at(3))  # the first one stands
    record = engine.record("r", W)
    assert record is not None
    assert (record.acked_by, record.acked_at) == ("U0ALICE", at(2))


def test_resolution_says_who_acknowledged() -> None:
    """The resolved transition carries the acknowledgement (the card's edit keeps showing it)."""
    engine = Engine(config(threshold("above = 10")), started_at=T0)
    feed(engine, [(0, 11), ack(5)])
    (resolved,) = feed(engine, [(10, 3)])
    assert (resolved.kind, resolved.acked_by, resolved.acked_at) == (
        TransitionKind.RESOLVED,
        "U0ALICE",
        at(5),
    )


def test_restore_keeps_the_acknowledgement() -> None:
    """A restarted watchdog does not resume the repeats of an acknowledged alert."""
    rules = config(threshold('above = 10\nrepeat = "10m"'))
    first = Engine(rules, started_at=T0)
    feed(first, [(0, 11), ack(60)])
    second = Engine(rules, started_at=at(700))
    second.restore(first.records(), [], {("r", "workspace"): first.changes("r", "workspace")})
    assert second.tick(at(3600)) == []
    assert second.records() == first.records()


def test_restore_warms_change_windows() -> None:
    """Restored samples give change rules the base they compare with."""
    engine = Engine(config(change('window = "5m"\ndrop = 5')), started_at=at(400))
    engine.restore([], [Sample(W, at(0), 20), Sample(W, at(100), 20)])
    assert brief(engine.observe(Sample(W, at(400), 10))) == [("firing", "c", W, 400)]


def test_restore_resumes_a_change_alert_against_the_base_it_fired_at() -> None:
    """The base travels in the alert's record: a restarted engine resolves on recovery."""
    rules = config(change('window = "1m"\ndrop_pct = 50'))
    first = Engine(rules, started_at=T0)
    feed(first, [(0, 20), (60, 0), (120, 0)])
    (record,) = first.records()
    assert record.fired_change == FiredChange(base=20, count=0)
    second = Engine(rules, started_at=at(130))
    second.restore([record], [Sample(W, at(60), 0), Sample(W, at(120), 0)])
    assert feed(second, [(180, 10)]) == []  # the window's base is 0 now; against 20, not yet
    (resolved,) = feed(second, [(240, 11)])
    assert (resolved.kind, resolved.alert_id) == (TransitionKind.RESOLVED, record.alert_id)
    assert resolved.reason == "recovered to 11, fired at 20 → 0"


def test_restored_change_alert_without_a_base_resolves_by_window() -> None:
    """An alert stored before bases were kept has none: it resolves the old way."""
    rules = config(change('window = "1m"\ndrop_pct = 50'))
    first = Engine(rules, started_at=T0)
    feed(first, [(0, 20), (60, 0)])
    (record,) = first.records()
    second = Engine(rules, started_at=at(70))
    second.restore([replace(record, fired_change=None)], [Sample(W, at(60), 0)])
    (resolved,) = feed(second, [(120, 0)])  # 0 -> 0 against the window's base
    assert resolved.reason == "0 -> 0 no longer matches"


def test_restore_warms_last_good_poll() -> None:
    """Restored samples count as good polls for staleness (when later than the start)."""
    text = '[watchdog]\nstale_after = "10m"\n'
    engine = Engine(config(watchdog=text, agents=""), started_at=at(50))
    engine.restore([], [Sample(W, at(0), 20), Sample(W, at(100), 20)])
    engine.poll_failed(W, at(200), "server error", immediate=False)
    assert engine.tick(at(699)) == []
    assert brief(engine.tick(at(700))) == [("firing", ND, W, 700)]


def test_restore_ignores_inactive_records_and_unknown_series() -> None:
    """Inactive records and samples of unknown series are skipped on restore."""
    rules = config(threshold("above = 10"))
    first = Engine(rules, started_at=T0)
    feed(first, [(0, 11)])
    (record,) = first.records()
    engine = Engine(rules, started_at=T0)
    engine.restore([replace(record, state=AlertState.INACTIVE)], [Sample("ghost", at(0), 1)])
    assert engine.records() == []
    assert brief(feed(engine, [(10, 11)])) == [("firing", "r", W, 10)]


def test_restored_alert_of_a_removed_rule_does_not_linger() -> None:
    """An alert restored for a rule the config no longer has does not keep repeating."""
    old = config(threshold('above = 1\nseverity = "info"', name="gone"))
    first = Engine(old, started_at=T0)
    feed(first, [(0, 5)])
    text = '[watchdog]\nrepeat = "1m"\nstale_after = "1d"\n'
    engine = Engine(config(watchdog=text), started_at=at(100))
    (resolved,) = engine.restore(first.records(), [])
    assert brief([resolved]) == [("resolved", "gone", W, 100)]
    assert resolved.reason == "rule removed from config"
    assert resolved.alert_id == alert_id("gone", W, T0)
    out = feed(engine, [tick(200), (210, 0), tick(300)])
    assert TransitionKind.REPEAT not in [t.kind for t in out]
    assert engine.record("gone", W) is None


def test_restored_alert_of_a_removed_rule_resolves_with_its_severity() -> None:
    """The resolution of a removed rule's restored alert keeps that rule's severity."""
    old = config(threshold('above = 1\nseverity = "info"', name="gone"))
    first = Engine(old, started_at=T0)
    feed(first, [(0, 5)])
    engine = Engine(config(), started_at=at(100))
    (resolved,) = engine.restore(first.records(), [])
    assert resolved.severity is Severity.INFO


# -- reconfigure ------------------------------------------------------------------------------


def test_reconfigure_resolves_removed_rules_and_keeps_the_rest() -> None:
    """Removing a rule resolves its alert; unchanged rules keep theirs untouched."""
    both = threshold("above = 10", name="a") + threshold("above = 5", name="b")
    engine = Engine(config(both), started_at=T0)
    fired = feed(engine, [(0, 11)])
    assert brief(fired) == [("firing", "a", W, 0), ("firing", "b", W, 0)]
    kept_before = engine.record("b", W)

    out = engine.reconfigure(config(threshold("above = 5", name="b")), at(30))
    assert brief(out) == [("resolved", "a", W, 30)]
    assert out[0].reason == "rule removed from config"
    assert out[0].alert_id == fired[0].alert_id
    assert out[0].count == 11
    assert engine.record("a", W) is None
    assert engine.record("b", W) == kept_before
    assert feed(engine, [(45, 12)]) == []
    (resolved,) = feed(engine, [(60, 2)])
    assert resolved.alert_id == fired[1].alert_id


def test_reconfigure_keeps_pending_and_applies_new_definition() -> None:
    """A kept rule keeps its pending alert; the next sample uses the new definition."""
    engine = Engine(config(threshold('above = 10\nfor = "1m"')), started_at=T0)
    feed(engine, [(0, 11)])
    assert engine.reconfigure(config(threshold('above = 10\nfor = "30s"')), at(10)) == []
    assert brief(feed(engine, [(30, 11)])) == [("firing", "r", W, 30)]


def test_reconfigure_kind_change_resolves_with_a_note_and_starts_afresh() -> None:
    """A rule whose kind changed resolves its alert with a note; the new kind starts over."""
    engine = Engine(config(threshold("above = 10", name="c")), started_at=T0)
    (fired,) = feed(engine, [(0, 11), (30, 11)])
    history = [Sample(W, at(0), 11), Sample(W, at(30), 11)]
    (resolved,) = engine.reconfigure(config(change('window = "1m"\ndrop = 5')), at(40), history)
    assert (resolved.kind, resolved.alert_id) == (TransitionKind.RESOLVED, fired.alert_id)
    assert resolved.reason == "rule changed from threshold to change: starting afresh"
    assert engine.record("c", W) is None
    (again,) = feed(engine, [(90, 4)])  # 11 -> 4 within a minute: the change rule fires anew
    assert again.kind is TransitionKind.FIRING
    assert again.alert_id != fired.alert_id
    assert again.condition == "dropped by >= 5 within 1m: 11 -> 4"


def test_reconfigure_threshold_change_judges_a_firing_alert_at_the_next_sample() -> None:
    """A firing alert whose new threshold no longer holds resolves at the next sample."""
    engine = Engine(config(threshold("above = 5\nrecover_below = 2")), started_at=T0)
    (fired,) = feed(engine, [(0, 9)])
    assert engine.reconfigure(config(threshold("above = 20\nrecover_below = 2")), at(10)) == []
    kept = engine.record("r", W)
    assert kept is not None
    assert (kept.state, kept.alert_id) == (AlertState.FIRING, fired.alert_id)
    assert kept.condition == "count > 20 (resolves below 2)"
    (resolved,) = feed(engine, [(15, 9)])  # 9 is no recovery under either rule, but 9 <= 20
    assert (resolved.kind, resolved.alert_id) == (TransitionKind.RESOLVED, fired.alert_id)
    assert resolved.reason == (
        "count 9: does not match the redefined rule (count > 20 (resolves below 2))"
    )


def test_reconfigure_threshold_change_that_still_holds_keeps_firing_with_hysteresis() -> None:
    """A redefined alert that still holds stays firing; hysteresis applies afterwards."""
    engine = Engine(config(threshold("above = 5")), started_at=T0)
    (fired,) = feed(engine, [(0, 30)])
    engine.reconfigure(config(threshold("above = 20\nrecover_below = 10")), at(10))
    assert feed(engine, [(15, 30), (30, 15)]) == []  # 15: no longer above 20, not below 10
    (resolved,) = feed(engine, [(45, 9)])
    assert resolved.alert_id == fired.alert_id


def test_reconfigure_severity_change_applies_to_the_firing_alert() -> None:
    """A new severity is the alert's at once: its later transitions carry it."""
    engine = Engine(config(threshold("above = 5\nrecover_below = 2")), started_at=T0)
    (fired,) = feed(engine, [(0, 9)])
    assert fired.severity is Severity.WARNING
    raised = threshold('above = 5\nrecover_below = 2\nseverity = "critical"')
    assert engine.reconfigure(config(raised), at(10)) == []
    record = engine.record("r", W)
    assert record is not None
    assert record.severity is Severity.CRITICAL
    assert feed(engine, [(15, 4)]) == []  # unchanged condition: hysteresis still applies
    (resolved,) = feed(engine, [(30, 1)])
    assert (resolved.alert_id, resolved.severity) == (fired.alert_id, Severity.CRITICAL)


def test_reconfigure_no_data_severity_applies_to_a_firing_no_data_alert() -> None:
    """`no_data_severity` changed on reload is the severity of a no-data alert already firing."""
    engine = Engine(config(watchdog=NO_DATA), started_at=T0)
    (fired,) = feed(engine, [fail(0)])
    assert fired.severity is Severity.CRITICAL
    engine.reconfigure(config(watchdog=NO_DATA + 'no_data_severity = "info"\n'), at(10))
    (resolved,) = feed(engine, [(20, 5)])
    assert (resolved.alert_id, resolved.severity) == (fired.alert_id, Severity.INFO)


def test_reconfigure_change_window_change_judges_a_firing_alert_at_the_next_sample() -> None:
    """A firing change alert is judged against its new window's base at the next sample."""
    engine = Engine(config(change('window = "1m"\ndrop = 5')), started_at=T0)
    seen = [(0, 20), (30, 20), (60, 10)]
    (fired,) = feed(engine, seen)
    history = [Sample(W, at(s), count) for s, count in seen]
    engine.reconfigure(config(change('window = "1m"\ndrop = 15')), at(70), history)
    (resolved,) = feed(engine, [(90, 10)])  # base 20 (at 30): a drop of 10 < 15
    assert (resolved.kind, resolved.alert_id) == (TransitionKind.RESOLVED, fired.alert_id)


def test_reconfigure_judges_a_recovery_alert_by_the_new_rule_against_its_base() -> None:
    """A redefined change alert keeps its base: the new condition is judged against it."""
    engine = Engine(config(change('window = "1m"\ndrop_pct = 50')), started_at=T0)
    (fired,) = feed(engine, [(0, 20), (60, 0)])
    engine.reconfigure(config(change('window = "1m"\ndrop_pct = 40')), at(70))
    assert feed(engine, [(120, 11)]) == []  # 20 -> 11 is a 45 % drop: still firing
    record = engine.record("c", W)
    assert record is not None
    assert record.condition == "dropped >= 40% within 1m (base >= 1): 20 -> 0"
    (resolved,) = feed(engine, [(180, 13)])  # 35 %
    assert (resolved.alert_id, resolved.reason) == (
        fired.alert_id,
        "recovered to 13, fired at 20 → 0",
    )


def test_reconfigure_window_mode_alert_refires_against_the_new_base() -> None:
    """A redefined alert resolving by window takes the new base as the one it fired at."""
    rules = change('window = "1m"\ndrop = 5\nresolve = "window"')
    engine = Engine(config(rules), started_at=T0)
    feed(engine, [(0, 20), (60, 10)])
    engine.reconfigure(config(rules.replace("drop = 5", "drop = 3")), at(70))
    assert feed(engine, [(120, 6)]) == []  # 10 -> 6 against the window's base
    record = engine.record("c", W)
    assert record is not None
    assert record.fired_change == FiredChange(base=10, count=6)


def test_reconfigure_redefines_and_removes_the_plan_rules() -> None:
    """A raised limit judges `at-capacity` anew at the next sample; no [plan], no plan rules."""
    engine = Engine(config("[plan]\nconcurrency_limit = 30\n"), started_at=T0)
    (fired,) = feed(engine, [(0, 30)])
    assert (fired.rule, fired.condition) == (
        "at-capacity",
        "count >= 30, the plan's limit (no burst): new calls are rejected",
    )
    engine.reconfigure(config("[plan]\nconcurrency_limit = 40\n"), at(10))
    (resolved,) = feed(engine, [(15, 30)])
    assert resolved.reason.startswith("count 30: does not match the redefined rule (count >= 40")
    feed(engine, [(20, 40)])
    (removed,) = engine.reconfigure(config(), at(30))
    assert (removed.rule, removed.reason) == ("at-capacity", "rule removed from config")


def test_reconfigure_resolves_series_out_of_scope() -> None:
    """Narrowing a scope or removing an agent resolves the alerts left behind."""
    rules = threshold('above = 1\nscope = "*"')
    engine = Engine(config(rules, watchdog=NO_DATA), started_at=T0)
    feed(engine, [(0, 5), sample(1, 5, "support"), sample(2, 5, "sales"), fail(3, "sales")])
    narrowed = config(
        threshold('above = 1\nscope = "support"'),
        watchdog=NO_DATA,
        agents='[[agents]]\nname = "support"\nid = "agent_s"\n',
    )
    out = engine.reconfigure(narrowed, at(10))
    assert sorted((t.kind.value, t.rule, t.series, t.reason) for t in out) == [
        ("resolved", ND, "sales", "series removed from config"),
        ("resolved", "r", "sales", "series no longer in scope"),
    ]
    assert engine.record("r", "support") is not None


def test_reconfigure_keeps_change_history_for_same_window() -> None:
    """A change rule kept across a reload still compares with samples from before it."""
    rules = change('window = "1m"\ndrop = 5')
    engine = Engine(config(rules), started_at=T0)
    feed(engine, [(0, 20), (30, 20)])
    engine.reconfigure(config(rules + threshold("above = 100")), at(40))
    assert brief(feed(engine, [(60, 10)])) == [("firing", "c", W, 60)]


def test_reconfigure_shorter_window_uses_longer_history() -> None:
    """A new, shorter change window is answered from the history an older window kept."""
    engine = Engine(config(change('window = "5m"\ndrop = 5')), started_at=T0)
    feed(engine, [(s, 20) for s in range(0, 300, 30)])
    both = change('window = "5m"\ndrop = 5') + change('window = "1m"\ndrop = 5', name="d")
    engine.reconfigure(config(both), at(300))
    assert brief(feed(engine, [(300, 10)])) == [("firing", "c", W, 300), ("firing", "d", W, 300)]


@pytest.mark.parametrize(
    "before",
    [
        change('window = "1m"\ndrop = 5'),  # lengthened: the 1m window kept too little
        change('window = "10m"\ndrop = 5'),  # shortened: the 10m window is dropped
        threshold("above = 100", name="c"),  # a change rule replaces a threshold rule
    ],
    ids=["lengthened", "shortened", "new"],
)
def test_reconfigure_new_window_uses_seen_samples(before: str) -> None:
    """A changed change window compares with history passed in (the daemon's store)."""
    engine = Engine(config(before), started_at=T0)
    seen = [(s, 20) for s in range(0, 600, 30)]
    feed(engine, seen)
    history = [Sample(W, at(s), count) for s, count in seen]
    engine.reconfigure(config(change('window = "5m"\ndrop = 5')), at(600), history)
    assert brief(feed(engine, [(630, 10)])) == [("firing", "c", W, 630)]


def test_records_describe_live_alerts() -> None:
    """records() lists pending and firing alerts with what a restart needs."""
    rules = threshold('above = 10\nfor = "1m"', name="slow") + threshold("above = 10", name="fast")
    engine = Engine(config(rules), started_at=T0)
    feed(engine, [(0, 11)])
    by_rule = {r.rule: r for r in engine.records()}
    assert by_rule["slow"].state is AlertState.PENDING
    assert by_rule["fast"].state is AlertState.FIRING
    assert by_rule["fast"].last_notified == at(0)
    assert by_rule["fast"].last_count == 11
    assert engine.config.rule("fast") is not None


# -- watchdog-behind: the watchdog's own backlog ------------------------------------------

BEHIND = "watchdog-behind"


def behind(seconds: float, late: int, total: int = 10, cause: str = "cause") -> Event:
    return ("schedule", seconds, late, total, cause)


def run_schedule(events: list[Event]) -> list[Transition]:
    engine = Engine(config(watchdog=NO_DATA), started_at=T0)
    out: list[Transition] = []
    for event in events:
        match event:
            case ("schedule", seconds, late, total, cause):
                out += engine.poll_schedule(at(seconds), late=late, total=total, cause=cause)  # type: ignore[arg-type]
            case _:
                out += feed(engine, [event])
    return out


BEHIND_CASES = [
    (
        "late-share-above-a-tenth-for-stale-after-fires-once",
        [behind(0, 5), behind(60, 5), behind(119, 5), behind(120, 5), tick(121), behind(180, 5)],
        [("firing", BEHIND, "watchdog", 120)],
    ),
    (
        "resolves-when-the-share-falls-back",
        [behind(0, 5), behind(120, 5), behind(125, 1)],
        [("firing", BEHIND, "watchdog", 120), ("resolved", BEHIND, "watchdog", 125)],
    ),
    (
        "a-tenth-exactly-is-not-behind",
        [behind(0, 1), behind(120, 1), tick(600)],
        [],
    ),
    (
        "a-dip-below-restarts-the-clock",
        [behind(0, 5), behind(100, 0), behind(110, 5), behind(200, 5), behind(230, 5)],
        [("firing", BEHIND, "watchdog", 230)],
    ),
    (
        "fires-at-a-tick-when-no-report-comes",
        [behind(0, 9), tick(119), tick(120)],
        [("firing", BEHIND, "watchdog", 120)],
    ),
    (
        "late-series-raise-no-no-data-of-their-own",
        [(0, 5), sample(0, 1, "support"), behind(1, 3, 3), tick(121), tick(600)],
        [("firing", BEHIND, "watchdog", 121)],
    ),
]


@pytest.mark.parametrize(
    ("events", "expected"), [c[1:] for c in BEHIND_CASES], ids=[c[0] for c in BEHIND_CASES]
)
def test_watchdog_behind_transitions(
    events: list[Event], expected: list[tuple[str, str, str, float]]
) -> None:
    """More than a tenth of the series late for stale_after is one watchdog-behind alert."""
    assert brief(run_schedule(events)) == expected


def test_watchdog_behind_says_the_share_and_the_cause() -> None:
    """The self-alert's condition names the share late, for how long, and why."""
    (firing,) = run_schedule(
        [behind(0, 37, 100, "previous requests still in flight"), behind(150, 37, 100)]
    )
    assert firing.condition == "37 % of series late for 2m 30s: cause"
    assert firing.since == at(0)
    assert firing.severity is Severity.CRITICAL
    assert firing.count is None
    assert firing.recent == ()


def test_watchdog_behind_is_kept_across_a_reload() -> None:
    """A reload keeps the self-alert firing (it is built in, not a rule removed)."""
    engine = Engine(config(watchdog=NO_DATA), started_at=T0)
    engine.poll_schedule(at(0), late=5, total=10, cause="x")
    (firing,) = engine.poll_schedule(at(120), late=5, total=10, cause="x")
    assert engine.reconfigure(config(watchdog=NO_DATA), at(130)) == []
    (resolved,) = engine.poll_schedule(at(140), late=0, total=10, cause="")
    assert (resolved.kind, resolved.alert_id) == (TransitionKind.RESOLVED, firing.alert_id)


def test_watchdog_behind_keeps_its_length_across_a_clock_jump() -> None:
    """A wall clock set an hour ahead moves the backlog's start with it: no early alert."""
    engine = Engine(config(watchdog=NO_DATA), started_at=T0)
    engine.poll_schedule(at(0), late=5, total=10, cause="x")
    engine.shift(timedelta(hours=1))
    assert engine.poll_schedule(at(3600 + 119), late=5, total=10, cause="x") == []
    (firing,) = engine.poll_schedule(at(3600 + 120), late=5, total=10, cause="x")
    assert firing.rule == BEHIND


def test_watchdog_behind_survives_a_restart_and_resolves_on_time() -> None:
    """A restored watchdog-behind alert is not resolved as a removed rule; the first
    cycle with few late series resolves it (same episode)."""
    first = Engine(config(watchdog=NO_DATA), started_at=T0)
    first.poll_schedule(at(0), late=5, total=10, cause="x")
    (firing,) = first.poll_schedule(at(120), late=5, total=10, cause="x")
    second = Engine(config(watchdog=NO_DATA), started_at=at(200))
    assert second.restore(first.records(), []) == []
    assert second.poll_schedule(at(210), late=5, total=10, cause="x") == []
    (resolved,) = second.poll_schedule(at(220), late=0, total=10, cause="")
    assert (resolved.kind, resolved.alert_id) == (TransitionKind.RESOLVED, firing.alert_id)
