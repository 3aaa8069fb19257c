"""The daily report: figures computed by hand from a CSV, and the `report` command."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.harness import ROOT, SLACK_TOKEN, base_env
from watchdog.model import Sample
from watchdog.replay import read_csv
from watchdog.report import Report, percentile, report_of
from watchdog.rules import parse_config
from watchdog.store import Store

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)

RULES = """
[watchdog]
poll_interval = "1m"
stale_after = "1h"

[plan]
concurrency_limit = 10
burst = true

[[agents]]
name = "support"
id = "agent_support"

[[rules]]
name = "high"
kind = "threshold"
above = 10
"""

# The workspace every minute, with a gap from 10:05 to 10:09; support at 10:00 and 10:01.
CSV = """timestamp,count,scope
2026-01-05T10:00:00Z,5
2026-01-05T10:01:00Z,12
2026-01-05T10:02:00Z,15
2026-01-05T10:03:00Z,31
2026-01-05T10:04:00Z,8
2026-01-05T10:05:00Z,3
2026-01-05T10:09:00Z,20
2026-01-05T10:00:00Z,4,support
2026-01-05T10:01:00Z,6,support
"""


def _report(tmp_path: Path) -> Report:
    config = parse_config(RULES)
    path = tmp_path / "day.csv"
    path.write_text(CSV, encoding="utf-8")
    samples = read_csv(path, config)
    return report_of(config, samples, start=T0, end=T0 + timedelta(minutes=10))


def test_report_figures_from_a_csv_match_the_hand_computation(tmp_path: Path) -> None:
    """Peak, nearest-rank percentiles, time beyond levels and without data, alerts fired."""
    report = _report(tmp_path)
    workspace, support = report.series
    # Sorted counts 3 5 8 12 15 20 31: p50 is rank ceil(3.5) = 4, p95 rank ceil(6.65) = 7.
    assert (workspace.series, workspace.samples, workspace.min, workspace.max) == (
        "workspace",
        7,
        3,
        31,
    )
    assert workspace.peak_at == T0 + timedelta(minutes=3)
    assert (workspace.p50, workspace.p95) == (12, 31)
    assert workspace.mean == 94 / 7
    # Each sample holds one minute (10:05 holds one poll interval before the 4m gap):
    # 12, 15, 31, 20 are above 10 (also burst: above the limit 10); 31 is at the cap 30.
    assert dict(workspace.minutes_above) == {"high": 4.0}
    assert (workspace.minutes_in_burst, workspace.minutes_at_capacity) == (4.0, 1.0)
    assert workspace.minutes_without_data == 3.0  # 10:06 to 10:09
    # 24 buckets of 25 s: minute k falls in bucket int(2.4 k).
    expected_shape: list[int | None] = [None] * 24
    for bucket, count in ((0, 5), (2, 12), (4, 15), (7, 31), (9, 8), (12, 3), (21, 20)):
        expected_shape[bucket] = count
    assert list(workspace.shape) == expected_shape
    # support: 4 holds 10:00-10:01, 6 holds one poll interval (the span ends 8 min later).
    assert (support.p50, support.p95, support.mean) == (4, 6, 5.0)
    assert support.minutes_without_data == 8.0
    assert support.minutes_above == ()  # `high` watches the workspace only
    assert support.minutes_in_burst is None
    # high and burst fire at 10:01, resolve at 10:04, fire at 10:09 until the end (10:10).
    assert {r.rule: (r.fired, r.firing_seconds) for r in report.rules} == {
        "high": (2, 240.0),
        "burst": (2, 240.0),
        "at-capacity": (1, 60.0),
        "no-data": (0, 0.0),
    }


def test_percentile_is_nearest_rank() -> None:
    """The p-th percentile is the count at rank ceil(p/100 n), never interpolated."""
    assert percentile([1, 2, 3, 4], 50) == 2
    assert percentile([1, 2, 3, 4], 95) == 4
    assert percentile([7], 50) == 7
    assert percentile(list(range(1, 101)), 95) == 95


def run_report(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES, encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "watchdog", "report", "--config", str(rules), *args],
        env=base_env(tmp_path / "state"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_report_command_from_a_csv_prints_json_lines(tmp_path: Path) -> None:
    """--json: one line per series, then one per rule, with the documented keys."""
    (tmp_path / "day.csv").write_text(CSV, encoding="utf-8")
    result = run_report(tmp_path, str(tmp_path / "day.csv"), "--json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    series = {line["series"]: line for line in lines if "series" in line}
    rules = {line["rule"]: line for line in lines if "rule" in line}
    assert {k: series["workspace"][k] for k in ("samples", "min", "max", "p50", "p95")} == {
        "samples": 7,
        "min": 3,
        "max": 31,
        "p50": 12,
        "p95": 31,
    }
    assert series["workspace"]["peak_at"] == "2026-01-05T10:03:00+00:00"
    assert series["workspace"]["mean"] == round(94 / 7, 3)
    assert series["support"]["max"] == 6
    assert rules["high"] == {"rule": "high", "fired": 2, "firing_seconds": 240.0}


def test_report_command_from_a_csv_prints_text(tmp_path: Path) -> None:
    """Text: a sparkline and the figures per series, then the alerts per rule."""
    (tmp_path / "day.csv").write_text(CSV, encoding="utf-8")
    result = run_report(tmp_path, str(tmp_path / "day.csv"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "peak 31 at 2026-01-05T10:03:00+00:00, p50 12, p95 31, mean 13.4, min 3" in out
    assert "above high's level 4m; in burst 4m; at capacity 1m; without data 3m" in out
    assert "high: fired 2, firing 4m" in out


def test_report_command_reads_the_state_database(tmp_path: Path) -> None:
    """Without a CSV, `report --since` reads the stored samples of that span."""
    now = datetime.now(UTC).replace(microsecond=0)
    with Store.open(Store.default_path(tmp_path / "state")) as store:
        store.apply(
            samples=[
                Sample("workspace", now - timedelta(hours=3), 50),  # before --since 2h
                Sample("workspace", now - timedelta(minutes=30), 4),
                Sample("workspace", now - timedelta(minutes=29), 9),
                Sample("workspace", now - timedelta(minutes=28), 7),
            ]
        )
    result = run_report(tmp_path, "--since", "2h", "--json")
    assert result.returncode == 0, result.stderr
    first = json.loads(result.stdout.splitlines()[0])
    assert (first["series"], first["samples"], first["max"], first["p50"]) == ("workspace", 3, 9, 7)
    text = run_report(tmp_path, "--since", "2h")
    assert text.returncode == 0, text.stderr
    assert "peak 9" in text.stdout


def test_report_command_errors_are_clear(tmp_path: Path) -> None:
    """No database, a bad --since, or both a CSV and --since: one line, no traceback."""
    missing = run_report(tmp_path)
    assert missing.returncode != 0
    assert "no state database yet" in missing.stderr
    bad = run_report(tmp_path, "--since", "soon")
    assert bad.returncode != 0
    assert "--since" in bad.stderr
    both = run_report(tmp_path, "x.csv", "--since", "1h")
    assert both.returncode != 0
    assert "either a CSV file or --since" in both.stderr
    for result in (missing, bad, both):
        assert "Traceback" not in result.stderr


def test_check_in_bot_mode_needs_a_channel_for_the_report(tmp_path: Path) -> None:
    """With a bot token, a [report] without a channel and no [slack] channel is a problem."""
    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[no_data]\nchannel = "#nd"\n[report]\nat = "09:00"\n'
        '[[rules]]\nname = "r"\nkind = "threshold"\nabove = 5\nchannel = "#r"\n',
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, "-m", "watchdog", "check", "--config", str(rules)],
        env=base_env(tmp_path / "state", SLACK_BOT_TOKEN=SLACK_TOKEN),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert (
        f"{rules}: slack.channel: required with SLACK_BOT_TOKEN ([report] have no channel of"
        " their own)"
    ) in done.stderr
