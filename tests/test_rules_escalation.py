"""Rules files: `escalate` stages on threshold rules and `[watchdog] flap`."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from watchdog.errors import ConfigError
from watchdog.model import Severity
from watchdog.rules import Config, FlapSettings, ThresholdRule, load_config, parse_config


def parse(text: str) -> Config:
    return parse_config(text, source="rules.toml")


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    return caught.value.problems


def rule(body: str, kind: str = "threshold") -> str:
    return f'[[rules]]\nname = "high"\nkind = "{kind}"\n{body}\n'


def test_escalate_takes_one_table_or_a_list() -> None:
    """A single stage and a list of stages both validate, stages in file order."""
    one = parse(rule('above = 20\nescalate = { above = 30, severity = "critical" }')).rules[0]
    many = parse(
        rule(
            'above = 20\nescalate = [{ above = 30, mention = "@a" },'
            ' { after = "15m", mention = "@b" }]'
        )
    ).rules[0]
    assert isinstance(one, ThresholdRule)
    assert isinstance(many, ThresholdRule)
    assert [(s.above, s.severity) for s in one.escalate] == [(30, Severity.CRITICAL)]
    assert [(s.above, s.after) for s in many.escalate] == [
        (30, None),
        (None, timedelta(minutes=15)),
    ]


ESCALATE_PROBLEMS = [
    (
        'above = 20\nescalate = { above = 20, severity = "critical" }',
        "rules.toml: rules[0] (high).escalate[0].above: must be more than the rule's above (20):"
        " an escalation lies beyond it",
    ),
    (
        'below = 5\nescalate = { below = 5, severity = "critical" }',
        "rules.toml: rules[0] (high).escalate[0].below: must be less than the rule's below (5):"
        " an escalation lies beyond it",
    ),
    (
        'above = 20\nescalate = { below = 3, severity = "critical" }',
        "rules.toml: rules[0] (high).escalate[0].below: an 'above' rule escalates with 'above'",
    ),
    (
        'above = 20\nescalate = { above = 30, severity = "critcal" }',
        "rules.toml: rules[0] (high).escalate[0].severity: Input should be 'info', 'warning' or"
        " 'critical' (got 'critcal'): did you mean 'critical'?",
    ),
    (
        'above = 20\nescalate = { after = "soon", mention = "@a" }',
        "rules.toml: rules[0] (high).escalate[0].after: invalid duration 'soon': use a number"
        " and ms, s, m, h or d, e.g. '15s'",
    ),
    (
        'above = 20\nescalate = { after = "0s", mention = "@a" }',
        "rules.toml: rules[0] (high).escalate[0].after: must be more than 0s",
    ),
    (
        'above = 20\nescalate = { above = 30, after = "5m", mention = "@a" }',
        "rules.toml: rules[0] (high).escalate[0].above: set exactly one of 'above', 'below'"
        " or 'after'",
    ),
    (
        "above = 20\nescalate = { above = 30 }",
        "rules.toml: rules[0] (high).escalate[0]: set 'severity' or 'mention': a stage must"
        " change something",
    ),
    (
        'above = 20\nseverity = "critical"\nescalate = { above = 30, severity = "warning" }',
        "rules.toml: rules[0] (high).escalate[0].severity: must be more severe than the rule's"
        " severity (critical)",
    ),
    (
        'above = 20\nescalate = { above = 30, recover_below = 35, severity = "critical" }',
        "rules.toml: rules[0] (high).escalate[0].recover_below: must be <= above (30)",
    ),
    (
        'above = 20\nescalate = [{ above = 30, mention = "@a" }, { after = "5m",'
        ' recover_below = 3, mention = "@b" }]',
        "rules.toml: rules[0] (high).escalate[1].recover_below: only a stage with 'above' has it",
    ),
    (
        'above = 20\nescalate = { above = 30, severty = "critical" }',
        "rules.toml: rules[0] (high).escalate[0].severty: unknown key: did you mean 'severity'?",
    ),
]


@pytest.mark.parametrize(("body", "expected"), ESCALATE_PROBLEMS)
def test_escalate_problems_name_the_stage_and_key(body: str, expected: str) -> None:
    """Every wrong stage is reported at `rules[N] (name).escalate[i].key`."""
    assert expected in problems(rule(body))


def test_escalate_belongs_to_threshold_rules() -> None:
    """A change rule with `escalate` is told the key is for threshold rules."""
    found = problems(
        rule('window = "1m"\ndrop = 5\nescalate = { above = 3, mention = "@a" }', "change")
    )
    assert found == [
        "rules.toml: rules[0] (high).escalate: unknown key: 'escalate' belongs to threshold rules"
    ]


def test_flap_is_on_by_default_and_can_be_set_or_turned_off() -> None:
    """No `flap`: 6 changes in 1h; a table sets it; `false` turns it off."""
    assert parse("").watchdog.flap == FlapSettings(changes=6, window=timedelta(hours=1))
    set_ = parse('[watchdog]\nflap = { changes = 4, window = "10m" }\n').watchdog.flap
    assert set_ == FlapSettings(changes=4, window=timedelta(minutes=10))
    assert parse("[watchdog]\nflap = false\n").watchdog.flap is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "{ changes = 1 }",
            "rules.toml: watchdog.flap.changes: Input should be greater than or equal to 2 (got 1)",
        ),
        ('{ window = "0s" }', "rules.toml: watchdog.flap.window: must be more than 0s"),
        (
            '"off"',
            'rules.toml: watchdog.flap: expected a table like { changes = 6, window = "1h" }'
            " or false",
        ),
        (
            "{ chnages = 3 }",
            "rules.toml: watchdog.flap.chnages: unknown key: did you mean 'changes'?",
        ),
    ],
)
def test_flap_problems(value: str, expected: str) -> None:
    """A wrong `flap` is named at `watchdog.flap[.key]`."""
    assert problems(f"[watchdog]\nflap = {value}\n") == [expected]


def test_example_escalates_the_concurrency_alert_by_time() -> None:
    """rules.example.toml shows a time stage that pages a group, and the default `flap`."""
    example = Path(__file__).resolve().parent.parent / "rules.example.toml"
    config = load_config(example)
    limit = config.rule("near-concurrency-limit")
    assert isinstance(limit, ThresholdRule)
    assert [(s.after, s.mention) for s in limit.escalate] == [
        (timedelta(minutes=15), "<!subteam^S0123>")
    ]
    assert config.watchdog.flap == FlapSettings()


PLAN = "[plan]\nconcurrency_limit = 30\n"


def test_escalation_levels_may_be_percentages_of_the_plan_limit() -> None:
    """`escalate = { above = "90%" }` resolves like a rule's threshold: 90 % of 30 is 27,
    a below-stage rounds up and its hysteresis the same way as the rule's keys."""
    above = parse(
        PLAN
        + rule(
            'above = "80%"\nescalate = { above = "90%", recover_below = "85%",'
            ' severity = "critical" }'
        )
    ).rules[0]
    below = parse(
        PLAN
        + rule('below = 10\nescalate = { below = "5%", recover_above = "12.5%", mention = "@a" }')
    ).rules[0]
    assert isinstance(above, ThresholdRule)
    assert isinstance(below, ThresholdRule)
    assert (above.escalate[0].above, above.escalate[0].recover_below) == (27, 26)
    assert (below.escalate[0].below, below.escalate[0].recover_above) == (2, 3)


STAGE_PERCENT_PROBLEMS = [
    (
        rule('above = 20\nescalate = { above = "90%", severity = "critical" }'),
        "rules.toml: rules[0] (high).escalate[0].above: '90%' needs the plan's concurrency"
        " limit: set [plan] concurrency_limit",
    ),
    (
        PLAN + rule('above = 20\nescalate = { above = "1500%", severity = "critical" }'),
        "rules.toml: rules[0] (high).escalate[0].above: '1500%' is more than 1000% of the"
        " plan's limit",
    ),
    (
        PLAN + rule('above = 20\nescalate = { above = "90 percent", severity = "critical" }'),
        "rules.toml: rules[0] (high).escalate[0].above: expected a count or a percentage of the"
        " plan's limit like '80%', got '90 percent'",
    ),
    (
        "[plan]\nconcurrency_limit = 0\n"
        + rule('above = 20\nescalate = { above = "90%", severity = "critical" }'),
        "rules.toml: rules[0] (high).escalate[0].above: '90%' cannot be resolved: [plan] is"
        " not valid",
    ),
    (
        PLAN + rule('above = 20\nescalate = { above = "50%", severity = "critical" }'),
        "rules.toml: rules[0] (high).escalate[0].above: must be more than the rule's above (20):"
        " an escalation lies beyond it",
    ),
]


@pytest.mark.parametrize(("text", "expected"), STAGE_PERCENT_PROBLEMS)
def test_escalation_percentages_are_checked_like_the_rules(text: str, expected: str) -> None:
    """A stage's percentage fails with the same messages as a rule's, under escalate[N]."""
    assert expected in problems(text)
