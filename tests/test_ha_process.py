"""A high-availability pair: two real `watchdog run` sharing one PostgreSQL database.

Each daemon has its own state directory (as on two hosts) and the same rules file, the
same WATCHDOG_DATABASE_URL, the loopback ElevenLabs and Slack. The poll interval is 1 s,
so "within two poll intervals" is 2 s; a new leader's first post waits the take-over
grace (`watchdog.leadership.Timing`, about 12 s here).
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.fakes.elevenlabs import FakeElevenLabs
from tests.fakes.slack import FakeSlack
from tests.harness import DaemonProcess, Site, alert_of, at, daemon_env, rule, write_rules
from tests.test_liveness import free_port

HIGH = rule("high", above=5, severity="critical")
POLL = 1.0
TAKEOVER_WAIT = 60.0  # generous: the grace is ~12 s, the rest is a loaded CI machine


class Pair:
    """Two daemons' settings against one database; `start` launches one."""

    def __init__(self, tmp_path: Path, url: str, api: FakeElevenLabs, slack: FakeSlack) -> None:
        self.config = write_rules(tmp_path / "rules.toml", HIGH, poll_interval="1s")
        self.url = url
        self._tmp = tmp_path
        self._api, self._slack = api, slack
        self._stack = ExitStack()

    def state(self, name: str) -> Path:
        return self._tmp / name

    def env(self, name: str) -> dict[str, str]:
        return daemon_env(
            self.state(name),
            api_url=self._api.url,
            slack_api_url=self._slack.api_url,
            WATCHDOG_DATABASE_URL=self.url,
            WATCHDOG_METRICS_ADDR=f"127.0.0.1:{free_port()}",
        )

    def start(self, name: str) -> DaemonProcess:
        daemon = DaemonProcess(["run", "--config", str(self.config)], self.env(name))
        return self._stack.enter_context(daemon.start())

    def close(self) -> None:
        self._stack.close()


@pytest.fixture
def pair(
    tmp_path: Path, postgres_url: str, api: FakeElevenLabs, slack: FakeSlack
) -> Iterator[Pair]:
    made = Pair(tmp_path, postgres_url, api, slack)
    try:
        yield made
    finally:
        made.close()


def leader_and_standby(a: DaemonProcess, b: DaemonProcess) -> tuple[DaemonProcess, DaemonProcess]:
    """Wait until one daemon leads and the other stands by; return (leader, standby)."""

    def settled() -> bool:
        return any(
            x.find("leader.acquired") and y.find("leader.standby") for x, y in ((a, b), (b, a))
        )

    a.wait_until(settled, timeout=30)
    return (a, b) if a.find("leader.acquired") else (b, a)


def healthz(daemon: DaemonProcess) -> tuple[int, str]:
    port = daemon.wait_for("metrics.listening")["port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
        return response.status, response.read().decode()


def metric(daemon: DaemonProcess, name: str) -> float:
    port = daemon.wait_for("metrics.listening")["port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


def holder(daemon: DaemonProcess) -> str:
    return str(daemon.wait_for("leader.acquired")["holder"])


def status(pair: Pair, name: str) -> dict[str, Any]:
    """`watchdog status --json` with daemon `name`'s settings."""
    return Site(pair.config, pair.state(name), pair.env(name), {}).status()


def test_two_daemons_started_at_once_elect_one_leader(pair: Pair, api: FakeElevenLabs) -> None:
    """Both started together: one leader.acquired, the other stands by (/healthz 200
    "standby" naming the leader, watchdog_leader 0) and polls nothing; status names the
    leader."""
    a, b = pair.start("a"), pair.start("b")
    leader, standby = leader_and_standby(a, b)
    leader.wait_for("poll.ok", count=3)
    assert len(a.find("leader.acquired")) + len(b.find("leader.acquired")) == 1
    code, body = healthz(standby)
    assert code == 200
    assert body == f"ok: standby, leader: {holder(leader)}\n"
    assert healthz(leader) == (200, "ok: leader\n")
    assert metric(standby, "watchdog_leader") == 0
    assert metric(leader, "watchdog_leader") == 1
    assert standby.find("poll.ok") == []
    assert standby.find("daemon.started") == []
    assert status(pair, "a")["leader"] == holder(leader)


def test_killed_leader_is_replaced_and_its_queued_resolution_edits_the_card(
    pair: Pair, api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """kill -9 the leader while its alert fires and the resolution waits in the outbox
    (Slack down): the standby leads within two poll intervals, edits the original card
    to resolved, and no second card is posted."""
    api.set_count(9)
    a = pair.start("a")
    a.wait_for("leader.acquired")
    b = pair.start("b")
    b.wait_for("leader.standby")
    a.wait_for("notify.sent", timeout=TAKEOVER_WAIT, kind="firing")
    card = slack.wait_for(1)[0]
    alert = alert_of(card)
    slack.outage(True)
    api.set_count(1)
    a.wait_for("alert.resolved")
    a.wait_for("notify.retry", kind="resolved")
    killed_at = datetime.now(UTC)
    a.kill()
    slack.outage(False)

    acquired = b.wait_for("leader.acquired", timeout=10)
    assert (at(acquired) - killed_at).total_seconds() <= 2 * POLL
    b.wait_for("notify.sent", timeout=TAKEOVER_WAIT, kind="resolved", alert_id=alert)
    edits = slack.updates(card.ts)
    assert edits
    assert alert_of(edits[-1]) == alert
    assert "resolved" in json.dumps(edits[-1].blocks).lower()
    cards = [m for m in slack.top_level() if alert_of(m) == alert]
    assert len(cards) == 1
    assert len(slack.replies(card.ts)) == 1  # the resolution's threaded reply, once


def test_leader_cut_from_its_lock_stops_posting_and_the_other_continues(
    pair: Pair, api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """pg_terminate_backend on the leader's lock session: it audits leader.lost, posts
    nothing more and exits 75; the other daemon leads and resolves the alert on the
    original card."""
    api.set_count(9)
    a = pair.start("a")
    name = holder(a)
    b = pair.start("b")
    b.wait_for("leader.standby")
    a.wait_for("notify.sent", timeout=TAKEOVER_WAIT, kind="firing")
    card = slack.wait_for(1)[0]
    with psycopg.connect(pair.url, autocommit=True) as conn:
        ended = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (name,),
        ).fetchall()
    assert len(ended) == 1
    a.wait_for("leader.lost", timeout=10)
    assert a.wait(timeout=15) == 75
    after_loss = a.events[a.events.index(a.find("leader.lost")[0]) :]
    assert [e for e in after_loss if str(e.get("event", "")).startswith("notify.")] == []

    b.wait_for("leader.acquired", timeout=10)
    api.set_count(1)
    b.wait_for("notify.sent", timeout=TAKEOVER_WAIT, kind="resolved")
    assert [alert_of(m) for m in slack.top_level()] == [alert_of(card)]
    assert slack.updates(card.ts)
