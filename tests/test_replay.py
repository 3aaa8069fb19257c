"""Replay: CSV parsing (timestamps, scopes, errors with line numbers) and the transitions."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.harness import ROOT, base_env
from watchdog.errors import InputError
from watchdog.model import WORKSPACE, Sample
from watchdog.replay import as_json, parse_timestamp, read_csv, replay
from watchdog.rules import Config, parse_config

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)  # a Monday
EPOCH_T0 = "1767607200"

RULES = """
[watchdog]
poll_interval = "1m"
stale_after = "10m"

[[agents]]
name = "support"
id = "agent_support"

[[rules]]
name = "high"
kind = "threshold"
above = 10
recover_below = 8
for = "2m"

[[rules]]
name = "drop"
kind = "change"
scope = "support"
window = "2m"
drop = 5
resolve = "window"
"""

PLAN_RULES = """
[watchdog]
poll_interval = "1m"
stale_after = "1h"

[plan]
concurrency_limit = 30
burst = true

[[rules]]
name = "near-limit"
kind = "threshold"
above = "80%"
recover_below = "70%"

[[rules]]
name = "collapse"
kind = "change"
window = "5m"
drop_pct = 50
min_base = 5
"""


@pytest.fixture
def config() -> Config:
    """A threshold rule on the workspace and a change rule on the `support` agent."""
    return parse_config(RULES, source="rules.toml")


def write_csv(tmp_path: Path, text: str | bytes, name: str = "series.csv") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


# -- timestamps ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-05T10:00:00Z", T0),
        ("2026-01-05T10:00:00+00:00", T0),
        ("2026-01-05T12:00:00+02:00", T0),
        ("2026-01-05T04:30:00-05:30", T0),
        ("2026-01-05T10:00:00", T0),
        ("2026-01-05 10:00:00", T0),
        ("2026-01-05T10:00:00.250Z", T0 + timedelta(milliseconds=250)),
        (EPOCH_T0, T0),
        (f"{EPOCH_T0}.5", T0 + timedelta(milliseconds=500)),
        (f"  {EPOCH_T0}  ", T0),
        ("0", datetime(1970, 1, 1, tzinfo=UTC)),
    ],
    ids=[
        "iso-z",
        "iso-utc-offset",
        "iso-plus-offset",
        "iso-minus-half-hour",
        "iso-naive-is-utc",
        "iso-space",
        "iso-fraction",
        "epoch",
        "epoch-fraction",
        "epoch-padded",
        "epoch-zero",
    ],
)
def test_timestamps_become_aware_utc(text: str, expected: datetime) -> None:
    """ISO 8601 (Z, offsets, naive = UTC) and epoch seconds all parse to aware UTC."""
    parsed = parse_timestamp(text)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "text", ["yesterday", "", "2026-13-01T00:00:00", "10:00", "nan", "inf", "1e30", "1767607200000"]
)
def test_bad_timestamps_raise_value_error(text: str) -> None:
    """Anything else (including epoch milliseconds) is a ValueError naming the text."""
    with pytest.raises(ValueError, match="invalid timestamp"):
        parse_timestamp(text)


# -- reading a CSV ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "timestamp,count\n2026-01-05T10:00:00Z,3\n2026-01-05T10:01:00Z,4\n",
        "2026-01-05T10:00:00Z,3\n2026-01-05T10:01:00Z,4\n",
        "Time,Count\n1767607200,3\n1767607260,4\n",
        "at,count,scope\n2026-01-05T10:00:00Z,3,\n2026-01-05T10:01:00Z,4,workspace\n",
        "# exported from grafana\n\n2026-01-05T10:00:00Z, 3\n\n2026-01-05T10:01:00Z ,4 \n",
        "2026-01-05T10:01:00Z,4\n2026-01-05T10:00:00Z,3\n",
    ],
    ids=["header", "no-header", "header-case-epoch", "scope-column", "blanks-comments", "unsorted"],
)
def test_read_csv_accepts_the_documented_shapes(tmp_path: Path, config: Config, text: str) -> None:
    """Header optional, scope optional (blank = workspace), rows come back time-sorted."""
    samples = read_csv(write_csv(tmp_path, text), config)
    assert samples == [Sample(WORKSPACE, at(0), 3), Sample(WORKSPACE, at(1), 4)]


def test_read_csv_scope_column_names_agents(tmp_path: Path, config: Config) -> None:
    """The third column selects the series: an agent name from the config."""
    text = "2026-01-05T10:00:00Z,3,support\n2026-01-05T10:00:00Z,9\n"
    assert read_csv(write_csv(tmp_path, text), config) == [
        Sample("support", at(0), 3),
        Sample(WORKSPACE, at(0), 9),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "2026-01-05T10:00:00Z,3\n2026-01-05T10:01:00Z,3,billing\n",
            [":2: unknown series 'billing': not 'workspace' or an agent of the config"],
        ),
        (
            "2026-01-05T10:00:00Z,3,suport\n",
            [":1: unknown series 'suport': did you mean 'support'?"],
        ),
        (
            "timestamp,count\n2026-01-05T10:00:00Z,many\n",
            [":2: invalid count 'many': expected a whole number"],
        ),
        ("2026-01-05T10:00:00Z,2.5\n", [":1: invalid count '2.5': expected a whole number"]),
        ("2026-01-05T10:00:00Z,-1\n", [":1: invalid count -1: must be >= 0"]),
        (
            "2026-01-05T10:00:00Z,1\nyesterday,1\n",
            [":2: invalid timestamp 'yesterday': use ISO 8601 or epoch seconds"],
        ),
        ("2026-01-05T10:00:00Z\n", [":1: expected timestamp,count[,scope], got 1 columns"]),
        (
            "2026-01-05T10:00:00Z,1,support,x\n",
            [":1: expected timestamp,count[,scope], got 4 columns"],
        ),
        (
            "2026-01-05T10:00:00Z,x\n2026-01-05T10:01:00Z,1\nnever,1\n",
            [
                ":1: invalid count 'x': expected a whole number",
                ":3: invalid timestamp 'never': use ISO 8601 or epoch seconds",
            ],
        ),
    ],
    ids=[
        "unknown-scope",
        "near-miss-scope",
        "bad-count",
        "fractional-count",
        "negative-count",
        "bad-timestamp",
        "one-column",
        "four-columns",
        "several",
    ],
)
def test_read_csv_problems_carry_line_numbers(
    tmp_path: Path, config: Config, text: str, expected: list[str]
) -> None:
    """Every bad row is reported as `FILE:LINE: message`, all of them at once."""
    path = write_csv(tmp_path, text)
    with pytest.raises(InputError) as caught:
        read_csv(path, config)
    assert str(caught.value).splitlines() == [f"{path}{line}" for line in expected]


def test_read_csv_stops_after_twenty_problems(tmp_path: Path, config: Config) -> None:
    """A file of garbage gives 20 problem lines and a note, not one per row."""
    path = write_csv(tmp_path, "x,y\n" * 100)
    with pytest.raises(InputError) as caught:
        read_csv(path, config)
    lines = str(caught.value).splitlines()
    assert len(lines) == 21
    assert lines[-1] == f"{path}: (stopped after 20 problems)"


@pytest.mark.parametrize("text", ["", "\n\n", "timestamp,count\n", "# nothing yet\n"])
def test_read_csv_without_samples_is_an_error(tmp_path: Path, config: Config, text: str) -> None:
    """An empty file (or one with only a header or comments) says there are no samples."""
    path = write_csv(tmp_path, text)
    with pytest.raises(InputError) as caught:
        read_csv(path, config)
    assert str(caught.value) == f"{path}: no samples (expected rows of timestamp,count[,scope])"


def test_read_csv_unreadable_inputs(tmp_path: Path, config: Config) -> None:
    """A missing file, a directory and non-UTF-8 bytes are InputErrors naming the path."""
    missing = tmp_path / "missing.csv"
    with pytest.raises(InputError, match=r"missing\.csv: cannot read: No such file"):
        read_csv(missing, config)
    with pytest.raises(InputError, match="cannot read: Is a directory"):
        read_csv(tmp_path, config)
    latin = write_csv(tmp_path, b"2026-01-05T10:00:00Z,3,caf\xe9\n")
    with pytest.raises(InputError) as caught:
        read_csv(latin, config)
    assert str(caught.value) == f"{latin}: not UTF-8 text (byte 26)"


def test_read_csv_accepts_a_byte_order_mark(tmp_path: Path, config: Config) -> None:
    """A CSV saved with a UTF-8 BOM reads like the same file without one."""
    path = write_csv(tmp_path, b"\xef\xbb\xbftimestamp,count\n2026-01-05T10:00:00Z,3\n")
    assert read_csv(path, config) == [Sample(WORKSPACE, at(0), 3)]


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(
        st.lists(
            st.one_of(
                st.text(st.characters(exclude_categories=["Cs"]), max_size=12),
                st.sampled_from(["2026-01-05T10:00:00Z", EPOCH_T0, "3", "support", "-1", "1e9"]),
            ),
            max_size=4,
        ),
        max_size=6,
    )
)
def test_read_csv_never_fails_unexpectedly(
    tmp_path_factory: pytest.TempPathFactory, rows: list[list[str]]
) -> None:
    """Whatever text a CSV holds, read_csv returns samples or raises InputError."""
    path = tmp_path_factory.mktemp("fuzz") / "series.csv"
    path.write_text("\n".join(",".join(row) for row in rows), encoding="utf-8")
    config = parse_config(RULES, source="rules.toml")
    try:
        samples = read_csv(path, config)
    except InputError as exc:
        message = str(exc)
        assert message.startswith(str(path))
    else:
        assert samples
        assert samples == sorted(samples, key=lambda s: s.at)


# -- transitions --------------------------------------------------------------------


def event(when: str, rule: str, scope: str, state: str, count: int | None) -> dict[str, object]:
    """One `--json` object, keys in the documented order."""
    return {"at": when, "rule": rule, "scope": scope, "state": state, "count": count}


def replayed(config: Config, rows: Sequence[tuple[float, int, str]]) -> list[dict[str, object]]:
    """The `--json` objects replay gives for (minutes after T0, count, series) rows."""
    samples = [Sample(series, at(minutes), count) for minutes, count, series in rows]
    return [as_json(t) for t in replay(config, samples)]


def test_replay_threshold_with_for_and_hysteresis(config: Config) -> None:
    """`for` delays firing until the condition held 2m; recover_below delays resolving."""
    rows = [(0, 5, WORKSPACE), (1, 11, WORKSPACE), (2, 12, WORKSPACE), (3, 13, WORKSPACE)]
    rows += [(4, 9, WORKSPACE), (5, 7, WORKSPACE)]
    assert replayed(config, rows) == [
        # pending at 10:01 (11 > 10), held for 2m at 10:03
        event(at(3).isoformat(), "high", "workspace", "firing", 13),
        # 9 is not below recover_below = 8; 7 is
        event(at(5).isoformat(), "high", "workspace", "resolved", 7),
    ]


def test_replay_pending_that_stops_holding_is_not_shown(config: Config) -> None:
    """A condition that stops holding before `for` elapsed leaves no transition."""
    rows = [(0, 11, WORKSPACE), (1, 12, WORKSPACE), (2, 3, WORKSPACE), (3, 12, WORKSPACE)]
    assert replayed(config, rows) == []


def test_replay_change_rule_compares_with_the_window_base(config: Config) -> None:
    """A drop of >= 5 against the sample 2m older fires, and resolves once it no longer does."""
    rows = [(0, 10, "support"), (1, 10, "support"), (2, 4, "support")]
    rows += [(3, 4, "support"), (4, 4, "support")]
    assert replayed(config, rows) == [
        # 10:02: base is 10:00 (10), 10 - 4 = 6 >= 5
        event(at(2).isoformat(), "drop", "support", "firing", 4),
        # 10:03: base 10:01 (10) still holds; 10:04: base 10:02 (4), no drop
        event(at(4).isoformat(), "drop", "support", "resolved", 4),
    ]


def test_replay_change_alert_resolves_when_the_count_recovers() -> None:
    """By default a collapse resolves when the count is back, not when the window slides."""
    config = parse_config(PLAN_RULES, source="rules.toml")
    rows = [(minute, 20, WORKSPACE) for minute in range(6)]
    rows += [(minute, 0, WORKSPACE) for minute in range(6, 16)]
    rows += [(16, 8, WORKSPACE), (17, 10, WORKSPACE), (18, 11, WORKSPACE)]
    assert replayed(config, rows) == [
        event(at(6).isoformat(), "collapse", "workspace", "firing", 0),
        event(at(18).isoformat(), "collapse", "workspace", "resolved", 11),
    ]


def test_replay_plan_rules_and_percentages_of_the_limit() -> None:
    """80 % of 30 fires above 24 and resolves below 21; burst above 30; at-capacity at 90."""
    config = parse_config(PLAN_RULES, source="rules.toml")
    counts = [20, 24, 25, 31, 90, 89, 30, 22, 21, 20]
    rows = [(minute, count, WORKSPACE) for minute, count in enumerate(counts)]
    assert [e for e in replayed(config, rows) if e["rule"] != "collapse"] == [
        event(at(2).isoformat(), "near-limit", "workspace", "firing", 25),
        event(at(3).isoformat(), "burst", "workspace", "firing", 31),
        event(at(4).isoformat(), "at-capacity", "workspace", "firing", 90),
        event(at(5).isoformat(), "at-capacity", "workspace", "resolved", 89),
        event(at(6).isoformat(), "burst", "workspace", "resolved", 30),
        event(at(9).isoformat(), "near-limit", "workspace", "resolved", 20),
    ]


def test_replay_after_a_four_hour_gap_reports_no_false_collapse(config: Config) -> None:
    """After 4 hours without samples a lower count is not a drop against the pre-gap count."""
    before = [(0, 10, "support"), (1, 10, "support")]
    after = [(241 + minute, 3, "support") for minute in range(6)]
    assert [e for e in replayed(config, before + after) if e["rule"] == "drop"] == []


def test_replay_no_data_on_a_gap_of_a_present_series(config: Config) -> None:
    """A gap raises no-data stale_after (10m) after the last sample, as the daemon would."""
    rows = [(0, 5, WORKSPACE), (1, 5, WORKSPACE), (15, 5, WORKSPACE)]
    assert replayed(config, rows) == [
        event(at(11).isoformat(), "no-data", "workspace", "firing", None),
        event(at(15).isoformat(), "no-data", "workspace", "resolved", 5),
    ]


def test_replay_skips_no_data_for_series_absent_from_the_input(config: Config) -> None:
    """A CSV of the workspace alone does not raise no-data for the config's agents."""
    rows = [(minute, 5, WORKSPACE) for minute in range(0, 30, 1)]
    assert replayed(config, rows) == []


def test_replay_of_nothing_is_nothing(config: Config) -> None:
    """No samples, no transitions (and no error from the engine)."""
    assert list(replay(config, [])) == []


# -- the command --------------------------------------------------------------------


def run_replay(
    tmp_path: Path, *args: str, rules_text: str = RULES
) -> subprocess.CompletedProcess[str]:
    rules = tmp_path / "rules.toml"
    rules.write_text(rules_text, encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "watchdog", "replay", "--config", str(rules), *args],
        env=base_env(tmp_path / "state"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


CRAFTED = """timestamp,count,scope
2026-01-05T10:00:00Z,5
2026-01-05T10:01:00Z,11
2026-01-05T10:02:00Z,12
2026-01-05T10:03:00Z,13
2026-01-05T10:04:00Z,9
2026-01-05T10:05:00Z,7
1767607200,10,support
1767607260,10,support
2026-01-05T11:02:00+01:00,4,support
2026-01-05T10:03:00,4,support
2026-01-05T05:04:00-05:00,4,support
"""


def test_replay_json_prints_one_object_per_transition(tmp_path: Path) -> None:
    """`replay --json` prints exactly the hand-computed transitions, in time order."""
    done = run_replay(tmp_path, str(write_csv(tmp_path, CRAFTED)), "--json")
    assert done.returncode == 0, done.stderr
    expected = [
        event("2026-01-05T10:02:00+00:00", "drop", "support", "firing", 4),
        event("2026-01-05T10:03:00+00:00", "high", "workspace", "firing", 13),
        event("2026-01-05T10:04:00+00:00", "drop", "support", "resolved", 4),
        event("2026-01-05T10:05:00+00:00", "high", "workspace", "resolved", 7),
    ]
    assert done.stdout.splitlines() == [json.dumps(e) for e in expected]
    assert done.stderr == ""


def test_replay_text_lists_transitions_and_a_summary(tmp_path: Path) -> None:
    """Without --json: one line per transition on stdout, a sample summary on stderr."""
    done = run_replay(tmp_path, str(write_csv(tmp_path, CRAFTED)))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "2026-01-05T10:02:00+00:00  FIRING   drop [support] count=4  "
        "dropped by >= 5 within 2m: 10 -> 4",
        "2026-01-05T10:03:00+00:00  FIRING   high [workspace] count=13  "
        "count > 10 (resolves below 8) for 2m",
        "2026-01-05T10:04:00+00:00  RESOLVED drop [support] count=4  4 -> 4 no longer matches",
        "2026-01-05T10:05:00+00:00  RESOLVED high [workspace] count=7  count 7: below 8",
    ]
    assert done.stderr == (
        "11 samples from 2026-01-05T10:00:00+00:00 to 2026-01-05T10:05:00+00:00: 4 transitions\n"
    )


def test_replay_json_transcript_of_recovery_and_plan_rules(tmp_path: Path) -> None:
    """`replay --json` of a surge past the limit and a collapse that recovers."""
    minutes = [25, 25, 25, 25, 25, 31, 20, 20, 20, 20, 20, 0, 0, 0, 0, 0, 0, 9, 12]
    rows = "".join(f"{1767607200 + 60 * m},{count}\n" for m, count in enumerate(minutes))
    done = run_replay(tmp_path, str(write_csv(tmp_path, rows)), "--json", rules_text=PLAN_RULES)
    assert done.returncode == 0, done.stderr
    assert [json.loads(line) for line in done.stdout.splitlines()] == [
        event("2026-01-05T10:00:00+00:00", "near-limit", "workspace", "firing", 25),
        event("2026-01-05T10:05:00+00:00", "burst", "workspace", "firing", 31),
        event("2026-01-05T10:06:00+00:00", "near-limit", "workspace", "resolved", 20),
        event("2026-01-05T10:06:00+00:00", "burst", "workspace", "resolved", 20),
        event("2026-01-05T10:11:00+00:00", "collapse", "workspace", "firing", 0),
        event("2026-01-05T10:18:00+00:00", "collapse", "workspace", "resolved", 12),
    ]


def test_replay_bad_csv_exits_1_with_line_numbers(tmp_path: Path) -> None:
    """A bad CSV is exit 1 with `FILE:LINE: message` lines on stderr and no traceback."""
    path = write_csv(tmp_path, "2026-01-05T10:00:00Z,3\n2026-01-05T10:01:00Z,3,billing\nx,1\n")
    done = run_replay(tmp_path, str(path))
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"{path}:2: unknown series 'billing': not 'workspace' or an agent of the config",
        f"{path}:3: invalid timestamp 'x': use ISO 8601 or epoch seconds",
    ]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        ((), 2, "watchdog replay: give either a CSV file or --history"),
        (("missing.csv", "--history"), 2, "watchdog replay: give either a CSV file or --history"),
        (("missing.csv",), 1, "missing.csv: cannot read: No such file or directory"),
    ],
    ids=["neither", "both", "missing-file"],
)
def test_replay_usage_errors(
    tmp_path: Path, args: tuple[str, ...], code: int, message: str
) -> None:
    """Neither or both of CSV and --history is usage (2); a missing CSV is a problem (1)."""
    done = run_replay(tmp_path, *args)
    assert (done.returncode, done.stderr.strip()) == (code, message)
    assert "Traceback" not in done.stderr
