"""Several workspaces end to end: a real `watchdog run` against two loopback ElevenLabs
servers (each with its own key) and the Slack fake.

Every wait is on an audit event, never a sleep.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.fakes.elevenlabs import FakeElevenLabs
from tests.fakes.slack import FakeSlack, channel_id
from tests.harness import SLACK_TOKEN, DaemonProcess, Site, alert_of, base_env, rule
from watchdog.model import AlertRecord, AlertState, Sample
from watchdog.store import Store

pytestmark = pytest.mark.slow

ACME_KEY = "sk_acme_4c1d9e0f8a7b6c5d4e3f2a1b0c9d8e7f"
BETA_KEY = "sk_beta_0a1b2c3d4e5f60718293a4b5c6d7e8f9"
WRONG_KEY = "sk_wrong_ffeeddccbbaa99887766554433221100"


@pytest.fixture
def acme() -> Iterator[FakeElevenLabs]:
    with FakeElevenLabs(api_key=ACME_KEY, count=5) as fake:
        fake.add_agent("agent_acme_support", 0)
        yield fake


@pytest.fixture
def beta() -> Iterator[FakeElevenLabs]:
    with FakeElevenLabs(api_key=BETA_KEY, count=9) as fake:
        fake.add_agent("agent_beta_support", 0)
        yield fake


def _rules(acme: FakeElevenLabs, beta: FakeElevenLabs) -> str:
    return f"""\
[watchdog]
poll_interval = "200ms"
stale_after = "2s"
repeat = "0s"
timeout = "1s"

[slack]
channel = "#oncall"

[[workspaces]]
name = "acme"
api_key_env = "ACME_ELEVENLABS_API_KEY"
base_url = "{acme.url}"
channel = "#acme"
[[workspaces.agents]]
name = "support"
id = "agent_acme_support"

[[workspaces]]
name = "beta"
api_key_env = "BETA_ELEVENLABS_API_KEY"
base_url = "{beta.url}"
channel = "#beta"
[[workspaces.agents]]
name = "support"
id = "agent_beta_support"

{rule("busy", above=3)}
{rule("agent-idle", below=1, scope="*", inhibited_by=["no-data"])}
"""


def test_a_rejected_key_pages_once_for_its_workspace_and_hides_nothing_of_the_other(
    tmp_path: Path, acme: FakeElevenLabs, beta: FakeElevenLabs, slack: FakeSlack
) -> None:
    """Beta's server rejects the key the daemon has for it: exactly one no-data card, for
    beta's workspace series, in beta's channel, naming it; acme's threshold alerts (the
    workspace and its agent) still fire and post, naming acme; beta's agent adds no card
    of its own; no key appears in any output."""
    config = tmp_path / "rules.toml"
    config.write_text(_rules(acme, beta), encoding="utf-8")
    env = base_env(
        tmp_path / "state",
        ACME_ELEVENLABS_API_KEY=ACME_KEY,
        BETA_ELEVENLABS_API_KEY=WRONG_KEY,
        SLACK_BOT_TOKEN=SLACK_TOKEN,
        SLACK_API_URL=slack.api_url,
    )
    with DaemonProcess(["run", "--config", str(config)], env).start() as daemon:
        daemon.wait_for("daemon.started")
        no_data = daemon.wait_for("alert.firing", rule="no-data")
        busy = daemon.wait_for("alert.firing", rule="busy")
        idle = daemon.wait_for("alert.firing", rule="agent-idle")
        for alert in (no_data, busy, idle):
            daemon.wait_for("notify.sent", alert_id=alert["alert_id"], kind="firing")
        seen = len(daemon.find("poll.failed", series="beta/support"))
        daemon.wait_for("poll.failed", series="beta/support", count=seen + 3)
        assert daemon.find("poll.ok", series="acme/support")
        daemon.stop()
    fired = sorted((e["rule"], e["series"]) for e in daemon.find("alert.firing"))
    assert fired == [
        ("agent-idle", "acme/support"),
        ("busy", "acme/workspace"),
        ("no-data", "beta/workspace"),
    ]
    assert not daemon.find("alert.inhibited")
    cards = {alert_of(card): card for card in slack.top_level()}
    assert set(cards) == {no_data["alert_id"], busy["alert_id"], idle["alert_id"]}
    assert cards[no_data["alert_id"]].channel == channel_id("#beta")
    assert cards[busy["alert_id"]].channel == channel_id("#acme")
    assert "beta/workspace" in json.dumps(cards[no_data["alert_id"]].blocks)
    assert "acme/workspace" in json.dumps(cards[busy["alert_id"]].blocks)
    assert "acme/support" in json.dumps(cards[idle["alert_id"]].blocks)
    assert {r.headers.get("xi-api-key") for r in beta.requests} == {WRONG_KEY}
    assert {r.headers.get("xi-api-key") for r in acme.requests} == {ACME_KEY}
    output = "".join(daemon.stdout_lines + daemon.stderr_lines)
    for key in (ACME_KEY, WRONG_KEY):
        assert key not in output


def test_a_file_without_workspaces_restores_its_state_as_before(
    site: Callable[..., Site], api: FakeElevenLabs
) -> None:
    """A state database of today's series names (`workspace`, an agent's name) and a rules
    file without [[workspaces]]: the firing alert is restored, not announced again, and
    resolves under its stored id."""
    since = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    firing = AlertRecord(
        "busy", "support", "0123456789ab", AlertState.FIRING, since, 9, since, "count > 3"
    )
    s = site(rule("busy", above=3, scope="support"), agents=[("support", "agent_s")])
    with Store.open(Store.default_path(s.state)) as store:
        store.apply(samples=[Sample("support", since, 9)], alerts=[firing], notifications=[])
    api.add_agent("agent_s", 9)
    with s.run() as daemon:
        daemon.wait_for("poll.ok", series="support", count=3)
        assert not daemon.find("alert.firing")
        api.set_count(1, "agent_s")
        resolved = daemon.wait_for("alert.resolved", rule="busy")
    assert (resolved["series"], resolved["alert_id"]) == ("support", "0123456789ab")
