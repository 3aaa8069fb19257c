"""no-data means the API failed; the watchdog's own backlog is one `watchdog-behind` alert.

Real `watchdog run` processes against the loopback fakes; the oracle is what the fake
Slack received (cards matched to their rule through the alert id in the audit log).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.fakes.elevenlabs import ALL, FakeElevenLabs
from tests.fakes.slack import FakeSlack
from tests.harness import API_KEY, SLACK_TOKEN, DaemonProcess, alert_of, daemon_env, write_rules
from watchdog.model import NO_DATA_RULE, WATCHDOG_BEHIND_RULE, WORKSPACE

AGENTS = [(f"agent{i:02d}", f"agent_{i:02d}") for i in range(30)]


def firing_cards(daemon: DaemonProcess, slack: FakeSlack) -> Counter[tuple[str, str]]:
    """(rule, series) of every firing card the fake Slack received."""
    alerts = {e["alert_id"]: (e["rule"], e["series"]) for e in daemon.find("alert.firing")}
    posts = [m for m in slack.messages if m.method == "chat.postMessage"]
    return Counter(alerts[alert_id] for m in posts if (alert_id := alert_of(m)) in alerts)


def start(tmp_path: Path, fake: FakeElevenLabs, slack: FakeSlack) -> DaemonProcess:
    """`watchdog run` polling the workspace and AGENTS every second, one request at a time."""
    rules = write_rules(
        tmp_path / "rules.toml", "", poll_interval="1s", stale_after="2s", agents=AGENTS
    )
    one_at_a_time = "[watchdog]\nconcurrency = 1\n"
    rules.write_text(rules.read_text(encoding="utf-8").replace("[watchdog]\n", one_at_a_time))
    env = daemon_env(tmp_path / "state", api_url=fake.url, slack_api_url=slack.api_url)
    return DaemonProcess(["run", "--config", str(rules)], env).start()


@pytest.mark.slow
def test_watchdog_falling_behind_is_one_self_alert_and_no_no_data(tmp_path: Path) -> None:
    """The API answers every request, but one at a time too slowly for 31 series a second:
    exactly one watchdog-behind card (share and cause), zero no-data cards; it resolves
    once the watchdog keeps up again."""
    with (
        FakeElevenLabs(api_key=API_KEY, latency=0.1, known_agents=[a for _, a in AGENTS]) as fake,
        FakeSlack(token=SLACK_TOKEN) as slack,
        start(tmp_path, fake, slack) as daemon,
    ):
        firing = daemon.wait_for("alert.firing", timeout=30, rule=WATCHDOG_BEHIND_RULE)
        assert "% of series late for" in firing["condition"]
        assert "previous requests still in flight" in firing["condition"]
        # Long enough behind that every series went unpolled for more than stale_after.
        daemon.wait_for("poll.ok", count=150, timeout=60)
        fake.latency = 0.0
        daemon.wait_for("alert.resolved", timeout=30, rule=WATCHDOG_BEHIND_RULE)
        daemon.wait_for("notify.sent", timeout=30, kind="resolved", rule=WATCHDOG_BEHIND_RULE)
        assert daemon.stop() == 0
        assert daemon.find("poll.late")
        assert not daemon.find("poll.failed")
        cards = firing_cards(daemon, slack)
    assert cards == Counter({(WATCHDOG_BEHIND_RULE, "watchdog"): 1})


@pytest.mark.slow
def test_api_failing_for_longer_than_stale_after_still_pages_no_data(tmp_path: Path) -> None:
    """The API answering 500 to every request for longer than stale_after: one no-data
    card, for the workspace (the outage rule), and no watchdog-behind."""
    with (
        FakeElevenLabs(api_key=API_KEY, known_agents=[a for _, a in AGENTS]) as fake,
        FakeSlack(token=SLACK_TOKEN) as slack,
        start(tmp_path, fake, slack) as daemon,
    ):
        daemon.wait_for("poll.ok", count=len(AGENTS) + 1, timeout=30)
        fake.set_behaviour(500, ALL)
        daemon.wait_for("alert.firing", timeout=30, rule=NO_DATA_RULE)
        fake.set_behaviour("normal", ALL)
        daemon.wait_for("notify.sent", timeout=30, kind="resolved", rule=NO_DATA_RULE)
        assert daemon.stop() == 0
        cards = firing_cards(daemon, slack)
    assert cards == Counter({(NO_DATA_RULE, WORKSPACE): 1})
