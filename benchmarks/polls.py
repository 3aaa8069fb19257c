"""Poll cost: 100 agents plus the workspace polled every second, watchdog against naive.

The real daemon (with its durable store, audit log at info, metrics off, Slack pacing)
polls a `FakeElevenLabs` (API latency 50 ms) that knows 100 agents, under the scale
benchmark's three rules; the naive baseline poller polls the same series the same way.
The two run one after the other in rounds (watchdog, naive, watchdog, naive, ...), so
that both see the same conditions on a shared machine; CPU is the process's own
user + system time from /proc over the steady state after the first cycle, never wall
time. Shown: CPU per run, CPU per answered poll, and the ratio of the medians.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from benchmarks.common import (
    ChildProcess,
    Figure,
    at_most,
    info,
    median,
    naive_process,
    progress,
    report_profile,
    state_dir,
    watchdog_process,
)
from benchmarks.procstat import CpuMeter
from benchmarks.scale import rules_body
from tests.fakes.elevenlabs import FakeElevenLabs
from tests.fakes.slack import FakeSlack
from tests.harness import API_KEY, SLACK_TOKEN, daemon_env, write_rules

NAME = "polls"
AGENTS = 100
INTERVAL = 1.0
API_LATENCY = 0.05
CONCURRENCY = 8
RATIO_TARGET = 1.3


def _agents() -> list[tuple[str, str]]:
    return [(f"a{i:03d}", f"agent_{i:03d}") for i in range(AGENTS)]


def _fake_api() -> FakeElevenLabs:
    api = FakeElevenLabs(API_KEY, latency=API_LATENCY, count=5)
    for index, (_, agent_id) in enumerate(_agents()):
        api.add_agent(agent_id, 3 + index % 7)
    return api


@dataclass(frozen=True)
class Run:
    cpu_percent: float
    polls: int
    cpu_seconds: float

    @property
    def micros_per_poll(self) -> float:
        return 1e6 * self.cpu_seconds / self.polls if self.polls else float("nan")


def _measure(proc: ChildProcess, api: FakeElevenLabs, seconds: float) -> Run:
    api.wait_for_requests(2 * (AGENTS + 1), timeout=60)  # past the first cycle
    meter = CpuMeter(proc.pid)
    answered = len(api.responses)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.proc is not None
        if proc.proc.poll() is not None:
            raise RuntimeError("process exited during the run:\n" + proc.output())
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    window = meter.read()
    return Run(window.percent_of_core, len(api.responses) - answered, window.cpu_seconds)


def _ours(seconds: float) -> Run:
    with _fake_api() as api, FakeSlack(SLACK_TOKEN) as slack, state_dir(NAME) as state:
        rules = write_rules(
            state.parent / "rules.toml",
            rules_body(),
            poll_interval=f"{INTERVAL:g}s",
            stale_after="10s",
            repeat="0s",
            channel="#polls",
            agents=_agents(),
        )
        env = daemon_env(
            state,
            api_url=api.url,
            slack_api_url=slack.api_url,
            WATCHDOG_LOG_LEVEL="info",
            WATCHDOG_CONCURRENCY=str(CONCURRENCY),
        )
        with watchdog_process(["run", "--config", str(rules)], env, name=NAME) as proc:
            proc.start()
            proc.wait_for("daemon.started", timeout=60)
            run = _measure(proc, api, seconds)
            proc.stop(timeout=30)
        report_profile(NAME)
    return run


def _naive(seconds: float) -> Run:
    with _fake_api() as api, FakeSlack(SLACK_TOKEN) as slack:
        env = {
            "PATH": "/usr/bin:/bin",
            "PYTHONUNBUFFERED": "1",
            "ELEVENLABS_BASE_URL": api.url,
            "ELEVENLABS_API_KEY": API_KEY,
            "SLACK_API_URL": slack.api_url,
            "SLACK_BOT_TOKEN": SLACK_TOKEN,
            "SLACK_CHANNEL": "#polls",
            "POLL_INTERVAL": f"{INTERVAL:g}",
            "ABOVE": "20",
            "CONCURRENCY": str(CONCURRENCY),
            "AGENT_IDS": ",".join(agent_id for _, agent_id in _agents()),
        }
        with naive_process(env) as proc:
            proc.start()
            proc.wait_for("naive.started", timeout=60)
            run = _measure(proc, api, seconds)
            proc.stop(timeout=30)
    return run


def run(quick: bool) -> list[Figure]:
    rounds = 1 if quick else 3
    seconds = 30.0 if quick else 60.0
    ours: list[Run] = []
    naive: list[Run] = []
    for number in range(1, rounds + 1):
        progress(f"{NAME}: round {number}/{rounds}, watchdog, {seconds:.0f}s")
        ours.append(_ours(seconds))
        progress(f"{NAME}: round {number}/{rounds}, naive baseline, {seconds:.0f}s")
        naive.append(_naive(seconds))
    ours_cpu = median([r.cpu_percent for r in ours])
    naive_cpu = median([r.cpu_percent for r in naive])
    return [
        info(
            NAME,
            "set-up",
            f"{AGENTS + 1} series x 3 rules, {INTERVAL:g}s interval, API "
            f"{API_LATENCY * 1000:g} ms, concurrency {CONCURRENCY}; {rounds} round(s) of "
            f"{seconds:.0f}s each, watchdog and naive alternating",
        ),
        info(
            NAME,
            "watchdog: CPU per run; CPU per answered poll (median)",
            ", ".join(f"{r.cpu_percent:.1f} %" for r in ours)
            + f"; {median([r.micros_per_poll for r in ours]):.0f} µs/poll",
        ),
        info(
            NAME,
            "naive baseline: CPU per run; CPU per answered poll (median)",
            ", ".join(f"{r.cpu_percent:.1f} %" for r in naive)
            + f"; {median([r.micros_per_poll for r in naive]):.0f} µs/poll",
        ),
        at_most(
            NAME,
            "ratio watchdog / naive, median CPU",
            ours_cpu / naive_cpu,
            RATIO_TARGET,
            "x",
            ".2f",
        ),
    ]
