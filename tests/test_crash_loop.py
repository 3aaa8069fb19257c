"""The crash loop: fifty `kill -9`s at random moments while the count keeps crossing thresholds.

One loopback ElevenLabs and one loopback Slack serve the whole loop; a thread sets a new
count on a seeded schedule; `watchdog run` is started fifty times on the same state
directory and killed 0.05-1.5 s after each start (seeded); then one clean run drains the
outbox. The audit logs of all runs are the record of what the engine decided.

What must hold afterwards: every notified transition in the audit log reached Slack, in
audit order per channel; the engine never decided a transition twice; a firing card is
posted once per alert and a resolution edits it and replies in its thread once. Delivery
is at-least-once by design (an entry is removed only after Slack accepted it), so a kill
between Slack accepting a message and the store recording that may repeat the message:
such a repeat is accepted only inside a killed run that logged no `notify.sent` for it.
"""

from __future__ import annotations

import json
import random
import re
import sqlite3
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from tests.fakes.elevenlabs import FakeElevenLabs
from tests.fakes.slack import FakeSlack, SlackCall, channel_id
from tests.harness import API_KEY, SLACK_TOKEN, DaemonProcess, daemon_env, write_rules
from watchdog.store import Store

SEED = 20_250_301
ITERATIONS = 50
KILL_AFTER = (0.05, 1.5)
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
_ALERT_ID = re.compile(r"alert `([0-9a-f]{12})`")


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


@dataclass
class Run:
    """One daemon process of the loop: when it started, and whether it was killed."""

    daemon: DaemonProcess
    began: float
    killed: bool
    sent: Counter[tuple[str, str]] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        for e in self.daemon.events:
            if e.get("event") == "notify.sent":
                self.sent[(e["alert_id"], e["kind"])] += 1


FOLDED = "fired_and_resolved"
"""The kind of a card for a firing folded with its resolution before it was sent."""


@dataclass(frozen=True)
class Delivery:
    """One accepted Slack call about a transition: `part` is "post", "edit" or "reply"."""

    alert_id: str
    kind: str
    part: str
    call: SlackCall


def deliveries(messages: Iterable[SlackCall]) -> list[Delivery]:
    """Attribute each call to its alert: cards carry the alert id, replies their thread's."""
    cards: dict[tuple[str, str], str] = {}
    out: list[Delivery] = []
    for call in messages:
        blob = call.text + json.dumps(call.blocks, ensure_ascii=False)
        if call.thread_ts is not None:
            alert = cards[(call.channel, call.thread_ts)]
            kind = "resolved" if call.text.startswith("✅") else "repeat"
            out.append(Delivery(alert, kind, "reply", call))
            continue
        found = _ALERT_ID.search(blob)
        assert found is not None, call
        if call.method == "chat.update":
            out.append(Delivery(found.group(1), "resolved", "edit", call))
            continue
        header = str(call.blocks[0]["text"]["text"]) if call.blocks else call.text
        kind = (
            FOLDED
            if "FIRED AND RESOLVED" in header
            else "resolved"
            if "RESOLVED" in header
            else "repeat"
            if "STILL" in header
            else "firing"
        )
        cards[(call.channel, call.ts)] = found.group(1)
        out.append(Delivery(found.group(1), kind, "post", call))
    return out


def run_of(runs: list[Run], at: float) -> Run:
    """The run that made a call Slack received at `at` (monotonic).

    Runs follow each other; a new interpreter needs well over 0.1 s before it can call
    Slack, so a call arriving just after the next run began is the previous run's.
    """
    return [run for run in runs if run.began + 0.1 <= at][-1]


def integrity(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [row[0] for row in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()


@pytest.mark.slow
def test_fifty_kill9s_deliver_every_decided_transition_exactly_once(tmp_path: Path) -> None:
    """Fifty kill -9s at random moments while thresholds are crossed and recrossed: every
    transition in the audit log reaches Slack once, in order per channel (a repeat only in
    the kill window between Slack's answer and the store's record)."""
    state = tmp_path / "state"
    db = Store.default_path(state)
    rules = write_rules(tmp_path / "rules.toml", RULES, poll_interval="100ms", stale_after="5m")
    args = ["run", "--config", str(rules)]
    moments = random.Random(SEED)
    runs: list[Run] = []
    with (
        FakeElevenLabs(api_key=API_KEY, count=6) as fake,
        FakeSlack(token=SLACK_TOKEN) as slack,
    ):
        env = daemon_env(state, api_url=fake.url, slack_api_url=slack.api_url)
        with Flipper(fake, random.Random(SEED + 1), FLIP_EVERY) as flipper:
            for _ in range(ITERATIONS):
                daemon = DaemonProcess(args, env)
                began = time.monotonic()
                daemon.start()
                # Not synchronisation: the random moment of the kill is the scenario.
                time.sleep(moments.uniform(*KILL_AFTER))
                daemon.kill()
                runs.append(Run(daemon, began, killed=True))
        assert flipper.flips >= 30

        assert integrity(db) == ["ok"]
        with Store.open(db) as store:
            backlog = store.outbox_depth()
        final = DaemonProcess(args, env)
        runs.append(Run(final, time.monotonic(), killed=False))
        with final.start():

            def drained() -> bool:
                decided = [e for e in final.events if e["event"] in NOTIFIED]
                # Each queued entry is sent, or consumed by a fold, or dropped.
                settled = (
                    len(final.find("notify.sent"))
                    + sum(len(e["folded"]) for e in final.find("notify.folded"))
                    + len(final.find("notify.dropped"))
                )
                return len(final.find("poll.ok")) >= 2 and settled >= backlog + len(decided)

            final.wait_until(drained, timeout=60)
            assert final.stop() == 0
        runs[-1] = Run(final, runs[-1].began, killed=False)

        assert integrity(db) == ["ok"]
        with Store.open(db) as store:
            assert store.outbox_depth() == 0
            assert store.dead_letters() == []
        report = check_exactly_once(runs, slack.messages)

        started = sum(bool(run.daemon.find("daemon.started")) for run in runs)
        assert started >= ITERATIONS // 5  # most kills land after start-up (~0.3-0.8 s)
        assert report["decided"] >= 15
        print(f"crash loop: {started} of {len(runs)} runs started; {report}")

        out = "".join(line for run in runs for line in run.daemon.stdout_lines)
        err = "".join(line for run in runs for line in run.daemon.stderr_lines)
        assert "Traceback" not in err
        for text in [out, err, *(m.text + json.dumps(m.blocks) for m in slack.messages)]:
            for secret in SECRET_MARKERS:
                assert secret not in text
        for path in state.rglob("*"):
            if path.is_file():
                for secret in SECRET_MARKERS:
                    assert secret.encode() not in path.read_bytes(), path


def check_exactly_once(runs: list[Run], messages: list[SlackCall]) -> dict[str, Any]:
    """Assert the exactly-once contract over all runs; return what was seen, for the report."""
    events = [e for run in runs for e in run.daemon.events]
    decided = [
        (e["rule"], e["alert_id"], NOTIFIED[e["event"]]) for e in events if e["event"] in NOTIFIED
    ]
    keys = [(alert, kind) for _, alert, kind in decided]
    assert len(keys) == len(set(keys)), "the engine decided a transition twice"
    logged = set(keys)

    seen = deliveries(messages)
    by_key: dict[tuple[str, str, str], list[Delivery]] = defaultdict(list)
    for d in seen:
        by_key[(d.alert_id, d.kind, d.part)].append(d)
    # Episodes whose firing and resolution were both still queued went out as one card
    # (notify.folded); the card is sent as the resolution. A firing card of such an
    # episode can only be the kill window's: posted, then killed before it was recorded.
    folded = {d.alert_id for d in seen if d.kind == FOLDED}
    for alert in folded:
        for stray in by_key.pop((alert, "firing", "post"), []):
            run = run_of(runs, stray.call.received_at)
            assert run.killed, f"firing of folded {alert} posted in a clean run"
            assert not run.sent[(alert, "firing")]

    # Every decided transition was delivered; anything more is the kill window only.
    repeats = 0
    for alert, kind in logged:
        if alert in folded and kind != "resolved":
            continue
        parts = (
            [(FOLDED, "post")]
            if alert in folded
            else [(kind, "post")]
            if kind == "firing"
            else [(kind, "edit"), (kind, "reply")]
        )
        for shown, part in parts:
            found = by_key[(alert, shown, part)]
            assert found, f"{kind} of {alert} ({part}) never reached Slack"
            confirmed = [d for d in found if run_of(runs, d.call.received_at).sent[(alert, kind)]]
            assert len(confirmed) <= 1, f"{kind} of {alert} sent twice with notify.sent"
            for extra in (d for d in found if d not in confirmed):
                run = run_of(runs, extra.call.received_at)
                assert run.killed, f"{kind} of {alert} repeated in a clean run"
                assert not run.sent[(alert, kind)]
            repeats += len(found) - 1
    sent_total = Counter[tuple[str, str]]()
    for run in runs:
        sent_total.update(run.sent)
    assert all(n == 1 for n in sent_total.values()), "notify.sent logged twice for one entry"

    # Per alert: the card first, then the resolution; per channel: audit order.
    first_seen: dict[tuple[str, str, str], float] = {}
    for d in seen:
        first_seen.setdefault((d.alert_id, d.kind, d.part), d.call.received_at)
    for alert, kind in logged:
        if kind == "resolved" and alert not in folded and (alert, "firing", "post") in first_seen:
            card = first_seen[(alert, "firing", "post")]
            assert card < first_seen[(alert, "resolved", "edit")]
            assert card < first_seen[(alert, "resolved", "reply")]
    expected: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for rule, alert, kind in decided:
        if alert not in folded:
            expected[channel_id(CHANNELS[rule])].append((alert, kind))
        elif kind == "firing":
            expected[channel_id(CHANNELS[rule])].append((alert, FOLDED))
    actual: dict[str, list[tuple[str, str]]] = defaultdict(list)
    unlogged: set[tuple[str, str]] = set()
    for d in seen:
        key = (d.alert_id, d.kind)
        if d.part == "edit" or (d.alert_id in folded and d.kind == "firing"):
            continue
        if (d.alert_id, "resolved" if d.kind == FOLDED else d.kind) not in logged:
            unlogged.add(key)  # committed, then killed before the audit line was written
        elif key not in actual[d.call.channel]:
            actual[d.call.channel].append(key)
    assert dict(actual) == dict(expected)
    return {
        "decided": len(keys),
        "slack_calls": len(messages),
        "repeats_in_kill_window": repeats,
        "folded": len(folded),
        "delivered_but_unlogged": len(unlogged),
    }
