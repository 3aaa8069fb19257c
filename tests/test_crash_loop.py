"""The crash loop: fifty `kill -9`s at random moments while the count keeps crossing thresholds.

One loopback ElevenLabs and one loopback Slack serve the whole loop; a thread sets a new
count on a seeded schedule; `watchdog run` is started fifty times on the same state
directory and killed at a seeded random moment, most of them after start-up (awaited,
so every such run really ran) and some during it; then one clean run drains the outbox.
Slack answers every post 0.3 s after keeping it, so many kills land between Slack
accepting a post and the daemon hearing so: the case exactly-once delivery is about.

The oracle is the fake Slack. Every post carries metadata naming its notification (alert
id, transition, time), so what Slack holds is attributed exactly, never by timing: each
notification must be there once, no more. The audit logs only say what the engine
decided, to check that everything decided arrived, in order per channel. An episode whose
firing card was still queued when it resolved goes out as one "fired and resolved" card
(a top-level resolution, in the firing's place in the queue): Slack then holds that card
and no firing card for the alert.
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from tests.fakes.elevenlabs import FakeElevenLabs
from tests.fakes.slack import FakeSlack, SlackCall, channel_id
from tests.harness import API_KEY, SLACK_TOKEN, DaemonProcess, daemon_env, write_rules
from watchdog.notify.slack import EVENT_TYPE
from watchdog.store import Store

SEED = 20_250_301
ITERATIONS = 50
KILLED_IN_START_UP = 0.2
"""Share of runs killed at a random moment before start-up may have finished."""
START_UP_KILL = (0.05, 0.5)
RUNNING_KILL = (0.0, 1.5)
ANSWER_LATE = 0.3
FLIP_EVERY = 0.9
COUNTS = (1, 6, 15, 30)
CHANNELS = {"quiet": "#crash-quiet", "busy": "#crash-busy", "very-busy": "#crash-very-busy"}
RULES = """
[[rules]]
name = "quiet"
kind = "threshold"
below = 3
channel = "#crash-quiet"

[[rules]]
name = "busy"
kind = "threshold"
above = 10
channel = "#crash-busy"

[[rules]]
name = "very-busy"
kind = "threshold"
above = 20
channel = "#crash-very-busy"
"""
NOTIFIED = {"alert.firing": "firing", "alert.repeat": "repeat", "alert.resolved": "resolved"}
SECRET_MARKERS = (API_KEY, SLACK_TOKEN, API_KEY[-16:], SLACK_TOKEN[-16:])


class Flipper:
    """Sets a different count on the fake every `every` seconds, from a seeded generator."""

    def __init__(self, fake: FakeElevenLabs, rng: random.Random, every: float) -> None:
        self._fake = fake
        self._rng = rng
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flipper", daemon=True)
        self.flips = 0

    def _run(self) -> None:
        current = None
        while not self._stop.wait(self._every):
            current = self._rng.choice([c for c in COUNTS if c != current])
            self._fake.set_count(current)
            self.flips += 1

    def __enter__(self) -> Flipper:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@dataclass(frozen=True)
class Post:
    """One post Slack kept, named by its metadata: `kind` is the transition it announces."""

    alert_id: str
    kind: str
    at: str
    call: SlackCall


def posts(messages: list[SlackCall]) -> list[Post]:
    """Every post (not edit) Slack kept, attributed by the metadata it carries."""
    out: list[Post] = []
    for call in messages:
        if call.method == "chat.update":
            continue
        assert call.metadata is not None, call
        assert call.metadata["event_type"] == EVENT_TYPE
        payload = call.metadata["event_payload"]
        out.append(Post(payload["alert_id"], payload["transition"], payload["at"], call))
    return out


def integrity(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [row[0] for row in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()


@pytest.mark.slow
def test_fifty_kill9s_leave_every_notification_in_slack_exactly_once(tmp_path: Path) -> None:
    """Fifty kill -9s at random moments, many between Slack keeping a post and answering:
    Slack holds every decided transition exactly once, in order per channel."""
    state = tmp_path / "state"
    db = Store.default_path(state)
    rules = write_rules(tmp_path / "rules.toml", RULES, poll_interval="100ms", stale_after="5m")
    args = ["run", "--config", str(rules)]
    moments = random.Random(SEED)
    runs: list[DaemonProcess] = []
    with (
        FakeElevenLabs(api_key=API_KEY, count=6) as fake,
        FakeSlack(token=SLACK_TOKEN) as slack,
    ):
        slack.answer_late(ANSWER_LATE)
        env = daemon_env(state, api_url=fake.url, slack_api_url=slack.api_url)
        with Flipper(fake, random.Random(SEED + 1), FLIP_EVERY) as flipper:
            for _ in range(ITERATIONS):
                daemon = DaemonProcess(args, env).start()
                runs.append(daemon)
                if moments.random() < KILLED_IN_START_UP:
                    pause = moments.uniform(*START_UP_KILL)
                else:
                    daemon.wait_for("daemon.started", timeout=30)
                    pause = moments.uniform(*RUNNING_KILL)
                # Not synchronisation: the random moment of the kill is the scenario.
                time.sleep(pause)
                daemon.kill()
        assert flipper.flips >= 30

        assert integrity(db) == ["ok"]
        final = DaemonProcess(args, env)
        runs.append(final)
        with final.start():

            def drained() -> bool:
                if len(final.find("poll.ok")) < 2:
                    return False
                with sqlite3.connect(db) as conn:
                    return conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0

            final.wait_until(drained, timeout=60)
            assert final.stop() == 0

        assert integrity(db) == ["ok"]
        with Store.open(db) as store:
            assert store.outbox_depth() == 0
            assert store.dead_letters() == []
        report = check_exactly_once(runs, slack.messages)

        started = sum(bool(run.find("daemon.started")) for run in runs)
        found = sum(len(run.find("notify.found")) for run in runs)
        assert started > ITERATIONS // 2, "most runs must get past start-up"
        assert report["decided"] >= 10  # enough to mean something; fewer on a loaded machine
        assert found >= 1, "no kill landed between Slack keeping a post and answering"
        print(f"crash loop: {started} of {len(runs)} runs started; {found} posts found; {report}")

        out = "".join(line for run in runs for line in run.stdout_lines)
        err = "".join(line for run in runs for line in run.stderr_lines)
        assert "Traceback" not in err
        for text in [out, err, *(m.text + json.dumps(m.blocks) for m in slack.messages)]:
            for secret in SECRET_MARKERS:
                assert secret not in text
        for path in state.rglob("*"):
            if path.is_file():
                for secret in SECRET_MARKERS:
                    assert secret.encode() not in path.read_bytes(), path


def check_exactly_once(runs: list[DaemonProcess], messages: list[SlackCall]) -> dict[str, Any]:
    """Assert the exactly-once contract on what Slack holds; return what was seen."""
    events = [e for run in runs for e in run.events]
    decided = [
        (e["rule"], e["alert_id"], NOTIFIED[e["event"]]) for e in events if e["event"] in NOTIFIED
    ]
    keys = [(alert, kind) for _, alert, kind in decided]
    assert len(keys) == len(set(keys)), "the engine decided a transition twice"

    kept = posts(messages)
    copies = Counter((p.alert_id, p.kind, p.at) for p in kept)
    doubled = {key: n for key, n in copies.items() if n > 1}
    assert not doubled, f"posted more than once: {doubled}"
    cards = {p.alert_id: p.call for p in kept if p.call.thread_ts is None and p.kind == "firing"}
    assert len(cards) == len([p for p in kept if p.kind == "firing"]), "a card per episode"
    # Fired-and-resolved cards: a top-level resolution, never beside a firing card.
    folded = {p.alert_id for p in kept if p.kind == "resolved" and p.call.thread_ts is None}
    assert not folded & cards.keys(), "an episode with a firing card was folded too"
    dropped = {(e["alert_id"], e["kind"]) for e in events if e["event"] == "notify.dropped"}
    assert all(kind == "repeat" for _, kind in dropped), f"only repeats are dropped: {dropped}"

    # Everything decided is in Slack; a resolution edits its card and replies under it.
    in_slack = {(p.alert_id, p.kind): p for p in kept}
    for alert, kind in keys:
        if (alert, kind) in dropped or (alert in folded and kind != "resolved"):
            continue
        assert (alert, kind) in in_slack, f"{kind} of {alert} never reached Slack"
        if kind == "resolved" and alert in cards:
            card = cards[alert]
            reply = in_slack[(alert, kind)].call
            assert reply.thread_ts == card.ts
            assert card.received_at < reply.received_at
            edits = [m for m in messages if m.method == "chat.update" and m.ts == card.ts]
            assert edits, f"the card of {alert} was never edited as resolved"

    # Per channel, Slack holds the transitions in the order the engine decided them; a
    # fired-and-resolved card stands where its firing card would have.
    expected: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for rule, alert, kind in decided:
        if (alert, kind) in dropped or (alert in folded and kind == "repeat"):
            continue
        if alert in folded:
            if kind == "firing":
                expected[channel_id(CHANNELS[rule])].append((alert, "resolved"))
            continue
        expected[channel_id(CHANNELS[rule])].append((alert, kind))
    logged = set(keys)
    actual: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for p in kept:
        if (p.alert_id, p.kind) in logged:
            actual[p.call.channel].append((p.alert_id, p.kind))
    assert dict(actual) == dict(expected)
    return {
        "decided": len(keys),
        "posts": len(kept),
        "folded": len(folded),
        "delivered_but_unlogged": len({(p.alert_id, p.kind) for p in kept} - logged),
    }
