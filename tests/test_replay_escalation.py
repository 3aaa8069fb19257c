"""`watchdog replay --json` transcripts of escalation in place and flapping."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.harness import ROOT, base_env

ESCALATING = """
[watchdog]
poll_interval = "1m"
stale_after = "10m"
repeat = "0s"

[[rules]]
name = "near-limit"
kind = "threshold"
above = 20
escalate = [
  { above = 25, recover_below = 24, severity = "critical", mention = "<!subteam^S0123>" },
  { after = "5m", mention = "<@lead>" },
]
"""

FLAPPING = """
[watchdog]
poll_interval = "1m"
stale_after = "10m"
repeat = "0s"
flap = { changes = 4, window = "10m" }

[[rules]]
name = "busy"
kind = "threshold"
above = 20
"""


def replay_json(tmp_path: Path, rules: str, counts: list[int]) -> list[dict[str, object]]:
    """Run `watchdog replay --json` over one workspace count a minute from 10:00."""
    (tmp_path / "rules.toml").write_text(rules, encoding="utf-8")
    rows = [f"2026-01-05T10:{minute:02d}:00Z,{count}" for minute, count in enumerate(counts)]
    (tmp_path / "counts.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "watchdog",
            "replay",
            "--config",
            str(tmp_path / "rules.toml"),
            str(tmp_path / "counts.csv"),
            "--json",
        ],
        env=base_env(tmp_path / "state"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return [json.loads(line) for line in done.stdout.splitlines()]


def event(minute: int, rule: str, state: str, count: int) -> dict[str, object]:
    at = f"2026-01-05T10:{minute:02d}:00+00:00"
    return {"at": at, "rule": rule, "scope": "workspace", "state": state, "count": count}


def test_replay_json_shows_escalation_in_place(tmp_path: Path) -> None:
    """Crossing the level escalates, leaving it (below recover_below) de-escalates, and an
    unacknowledged alert escalates by time; one episode, one firing, one resolution."""
    counts = [10, 22, 26, 24, 23, 27, 22, 22, 22, 10]
    assert replay_json(tmp_path, ESCALATING, counts) == [
        event(1, "near-limit", "firing", 22),
        event(2, "near-limit", "escalated", 26),
        event(4, "near-limit", "deescalated", 23),
        event(5, "near-limit", "escalated", 27),
        # 5m unacknowledged since 10:01: decided at the tick, before 10:06's sample
        event(6, "near-limit", "escalated", 27),
        event(6, "near-limit", "deescalated", 22),
        event(9, "near-limit", "resolved", 10),
    ]


def test_replay_json_shows_flapping_once_until_steady(tmp_path: Path) -> None:
    """The fourth change within 10m is flapping; nothing more until 10m steady, then the
    real state (firing)."""
    counts = [10, 22, 10, 22, 10, 22, 10, 22, 22, 22, *[22] * 10]
    assert replay_json(tmp_path, FLAPPING, counts) == [
        event(1, "busy", "firing", 22),
        event(2, "busy", "resolved", 10),
        event(3, "busy", "firing", 22),
        event(4, "busy", "flapping", 10),
        event(17, "busy", "firing", 22),
    ]


CHANGE_FLAPPING = """
[watchdog]
poll_interval = "1m"
stale_after = "10m"
repeat = "0s"
flap = { changes = 4, window = "10m" }

[[rules]]
name = "collapse"
kind = "change"
window = "1m"
drop = 5
"""


def test_replay_json_shows_a_change_alert_flapping_and_recovering(tmp_path: Path) -> None:
    """A change alert flaps at its fourth change; really firing again (20 -> 12) and steady
    for 10m it leaves flapping firing, then resolves on recovery against 20."""
    counts = [20, 10, 20, 10, 20, *[12] * 11, 16]
    assert replay_json(tmp_path, CHANGE_FLAPPING, counts) == [
        event(1, "collapse", "firing", 10),
        event(2, "collapse", "resolved", 20),
        event(3, "collapse", "firing", 10),
        event(4, "collapse", "flapping", 20),
        event(15, "collapse", "firing", 12),
        event(16, "collapse", "resolved", 16),
    ]
