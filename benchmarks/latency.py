"""Detection latency: from the fake API answering a breaching count to Slack receiving it.

One threshold rule (`for = "0s"`) on the workspace, polled every second. Each round sets
a breaching count at a random moment of the poll cycle, waits for the Slack message,
then sets a normal count and waits for the resolution. Per transition:

* detection = Slack `received_at` - the moment the fake started serving the new count
  (`FakeElevenLabs.set_count`), i.e. what an operator waits for;
* own part = Slack `received_at` - `sent_at` of the first API answer carrying the new
  count, i.e. the watchdog's own share (receive, evaluate, commit, deliver).

Rounds are spaced so the 1 message/s/channel pacing never delays a measured message.
The naive baseline poller runs the same rounds right after, in the same benchmark process.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from benchmarks.common import (
    Figure,
    at_most,
    below,
    info,
    median,
    naive_process,
    percentile,
    progress,
    report_profile,
    state_dir,
    watchdog_process,
)
from tests.fakes.elevenlabs import FakeElevenLabs
from tests.fakes.slack import FakeSlack
from tests.harness import API_KEY, SLACK_TOKEN, daemon_env, write_rules

NAME = "latency"
INTERVAL = 1.0
API_LATENCY = 0.05
NORMAL, BREACH, ABOVE = 3, 30, 10
CHANNEL = "#latency"
PACING_GAP = 1.05  # > the 1 s per-channel pace, counted from the previous attempt's start

RULES = f"""
[[rules]]
name = "latency-probe"
kind = "threshold"
scope = "workspace"
above = {ABOVE}
for = "0s"
severity = "critical"
"""


@dataclass
class Timings:
    detection: dict[str, list[float]] = field(
        default_factory=lambda: {"firing": [], "resolved": []}
    )
    own: dict[str, list[float]] = field(default_factory=lambda: {"firing": [], "resolved": []})


def _rounds(
    api: FakeElevenLabs,
    slack: FakeSlack,
    rounds: int,
    messages_per: dict[str, int],
    alive: Callable[[], None],
    seed: int,
) -> Timings:
    rng = random.Random(seed)
    out = Timings()
    for number in range(rounds):
        for kind, count in (("firing", BREACH), ("resolved", NORMAL)):
            time.sleep(PACING_GAP + rng.uniform(0.0, INTERVAL))  # a random poll phase
            alive()
            before = len(slack.messages)
            set_at = api.set_count(count)
            arrived = slack.wait_for(before + messages_per[kind], timeout=15)
            received = arrived[before].received_at
            answer = next(
                r
                for r in api.responses
                if r.agent_id is None and r.count == count and r.sent_at >= set_at
            )
            out.detection[kind].append(received - set_at)
            out.own[kind].append(received - answer.sent_at)
        if (number + 1) % 10 == 0:
            progress(f"{NAME}: {number + 1}/{rounds} rounds")
    return out


def _ours(rounds: int) -> Timings:
    with (
        FakeElevenLabs(API_KEY, latency=API_LATENCY, count=NORMAL) as api,
        FakeSlack(SLACK_TOKEN) as slack,
        state_dir(NAME) as state,
    ):
        rules = write_rules(
            state.parent / "rules.toml",
            RULES,
            poll_interval=f"{INTERVAL:g}s",
            stale_after="1m",
            repeat="0s",
            channel=CHANNEL,
        )
        env = daemon_env(
            state, api_url=api.url, slack_api_url=slack.api_url, WATCHDOG_LOG_LEVEL="info"
        )
        with watchdog_process(["run", "--config", str(rules)], env, name=NAME) as proc:
            proc.start()
            proc.wait_for("daemon.started", timeout=30)
            api.wait_for_requests(2, timeout=10)

            def alive() -> None:
                assert proc.proc is not None
                if proc.proc.poll() is not None:
                    raise RuntimeError("watchdog exited:\n" + proc.output())

            # A firing is one new message; a resolution edits it and replies in its thread.
            timings = _rounds(api, slack, rounds, {"firing": 1, "resolved": 2}, alive, seed=1)
            proc.stop()
        report_profile(NAME)
    return timings


def _naive(rounds: int) -> Timings:
    with (
        FakeElevenLabs(API_KEY, latency=API_LATENCY, count=NORMAL) as api,
        FakeSlack(SLACK_TOKEN) as slack,
    ):
        env = {
            "PATH": "/usr/bin:/bin",
            "PYTHONUNBUFFERED": "1",
            "ELEVENLABS_BASE_URL": api.url,
            "ELEVENLABS_API_KEY": API_KEY,
            "SLACK_API_URL": slack.api_url,
            "SLACK_BOT_TOKEN": SLACK_TOKEN,
            "SLACK_CHANNEL": CHANNEL,
            "POLL_INTERVAL": f"{INTERVAL:g}",
            "ABOVE": str(ABOVE),
        }
        with naive_process(env) as proc:
            proc.start()
            proc.wait_for("naive.started", timeout=30)
            api.wait_for_requests(2, timeout=10)

            def alive() -> None:
                assert proc.proc is not None
                if proc.proc.poll() is not None:
                    raise RuntimeError("naive poller exited:\n" + proc.output())

            timings = _rounds(api, slack, rounds, {"firing": 1, "resolved": 1}, alive, seed=1)
            proc.stop()
    return timings


def run(quick: bool) -> list[Figure]:
    rounds = 8 if quick else 30
    naive_rounds = 5 if quick else 15
    progress(f"{NAME}: watchdog, {rounds} breach/resolve rounds at {INTERVAL:g}s polls")
    ours = _ours(rounds)
    progress(f"{NAME}: naive baseline, {naive_rounds} rounds")
    naive = _naive(naive_rounds)
    worst_allowed = INTERVAL + 0.1
    figures: list[Figure] = [
        info(
            NAME,
            "set-up",
            f"poll {INTERVAL:g}s, API latency {API_LATENCY * 1000:g} ms, "
            f"{rounds} rounds (naive {naive_rounds}), bot mode",
        )
    ]
    for kind in ("firing", "resolved"):
        detection = ours.detection[kind]
        own_ms = [x * 1000 for x in ours.own[kind]]
        figures += [
            info(NAME, f"{kind}: detection median", f"{median(detection) * 1000:.0f} ms"),
            at_most(NAME, f"{kind}: detection worst", max(detection), worst_allowed, "s", ".3f"),
            info(NAME, f"{kind}: own part median", f"{median(own_ms):.1f} ms"),
            below(NAME, f"{kind}: own part p99", percentile(own_ms, 99), 20, "ms", ".1f"),
            info(
                NAME,
                f"{kind}: naive baseline own part median / worst",
                f"{median(naive.own[kind]) * 1000:.1f} / {max(naive.own[kind]) * 1000:.1f} ms "
                f"(detection worst {max(naive.detection[kind]):.3f} s)",
            ),
        ]
    return figures
