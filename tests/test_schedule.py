"""Poll scheduling: a slow or hanging request delays only its own series.

In-process, the real `Daemon` drives the real `LiveCountSource` against the loopback
ElevenLabs fake, with a few agents whose requests hang; the fake's request log says
which series were polled how often. The process-level test runs `watchdog run` with the
default concurrency, as many hanging agents as it has connections, and a timeout larger
than the schedule allows.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections import Counter
from pathlib import Path

from pydantic import SecretStr

from tests.fakes.elevenlabs import FakeElevenLabs
from tests.harness import API_KEY, DaemonProcess, daemon_env
from watchdog.audit import configure_logging
from watchdog.clock import SystemClock
from watchdog.daemon import STARVED_CAUSE, Daemon
from watchdog.metrics import Metrics
from watchdog.model import NO_DATA_RULE, WATCHDOG_BEHIND_RULE, AlertState
from watchdog.notify import ConsoleNotifier
from watchdog.rules import load_config
from watchdog.source import LiveCountSource
from watchdog.store import Store

HUNG = [f"agent_h{i}" for i in range(8)]
HEALTHY = [f"agent_ok{i}" for i in range(16)]


def _rules(path: Path, *, poll_interval: str, timeout: str, concurrency: int | None) -> Path:
    lines = [
        "[watchdog]",
        f'poll_interval = "{poll_interval}"',
        'stale_after = "1s"',
        f'timeout = "{timeout}"',
        *([f"concurrency = {concurrency}"] if concurrency is not None else []),
        "",
    ]
    for agent_id in HUNG + HEALTHY:
        lines += ["[[agents]]", f'name = "{agent_id}"', f'id = "{agent_id}"', ""]
    lines += ["[[rules]]", 'name = "busy"', 'kind = "threshold"', 'scope = "*"', "above = 50"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _hanging_api() -> FakeElevenLabs:
    api = FakeElevenLabs(API_KEY, count=1, hang_seconds=60)
    for agent_id in HEALTHY:
        api.add_agent(agent_id, 2)
    for agent_id in HUNG:
        api.add_agent(agent_id, 2)
        api.set_behaviour("hang", agent_id=agent_id)
    return api


def _polls_per_agent(api: FakeElevenLabs) -> Counter[str | None]:
    return Counter(request.query.get("agent_id") for request in api.requests)


def test_hanging_requests_delay_only_their_own_series(tmp_path: Path) -> None:
    """While 8 agents hang, every other series is polled each cycle; the 8 count as late."""
    cycles = 5
    log = io.StringIO()
    configure_logging(level="debug", stream=log)
    config = load_config(
        _rules(tmp_path / "rules.toml", poll_interval="500ms", timeout="30s", concurrency=16)
    )
    metrics = Metrics()

    async def run(api: FakeElevenLabs) -> Daemon:
        clock = SystemClock()
        with (
            Store.open(Store.default_path(tmp_path)) as store,
            LiveCountSource(
                SecretStr(API_KEY), api.url, now=clock.now, timeout=30.0, max_concurrency=16
            ) as source,
        ):
            daemon = Daemon(
                config=config,
                source=source,
                store=store,
                notifier=ConsoleNotifier(io.StringIO()),
                clock=clock,
                metrics=metrics,
            )
            await asyncio.wait_for(daemon.run(max_cycles=cycles), timeout=60)
            return daemon

    with _hanging_api() as api:
        daemon = asyncio.run(run(api))
        polls = _polls_per_agent(api)
    events = [json.loads(line) for line in log.getvalue().splitlines()]
    late = Counter(e["series"] for e in events if e["event"] == "poll.late")
    assert {agent_id: polls[agent_id] for agent_id in HEALTHY} == dict.fromkeys(HEALTHY, cycles)
    assert polls[None] == cycles  # the workspace
    assert {agent_id: polls[agent_id] for agent_id in HUNG} == dict.fromkeys(HUNG, 1)
    assert late == dict.fromkeys(HUNG, cycles - 1)
    assert metrics.polls_late._value.get() == len(HUNG) * (cycles - 1)
    assert not [e for e in events if e["event"] == "poll.failed"]
    no_data = {
        r.series
        for r in daemon.engine.records()
        if r.rule == NO_DATA_RULE and r.state is AlertState.FIRING
    }
    assert not no_data & set(HEALTHY)


def test_request_timeout_is_bounded_by_the_interval(tmp_path: Path) -> None:
    """A 10s timeout at a 1s interval gives up after 500ms: hangs cannot starve the rest.
    (A healthy answer has those 500ms too: at a shorter interval a loaded machine failed
    healthy polls.)"""
    state = tmp_path / "state"
    state.mkdir()
    rules = _rules(tmp_path / "rules.toml", poll_interval="1s", timeout="10s", concurrency=None)
    with _hanging_api() as api:
        env = daemon_env(state, api_url=api.url, WATCHDOG_LOG_LEVEL="debug")
        with DaemonProcess(["run", "--config", str(rules)], env) as proc:
            proc.start()
            # Ten cycles' worth of answers; with 10s hangs holding all 8 connections,
            # the old schedule answered one cycle in 10s.
            api.wait_for_requests(10 * (len(HEALTHY) + 1), timeout=60)
            proc.stop()
        polls = _polls_per_agent(api)
    failed = proc.find("poll.failed")
    assert failed
    assert {e["series"] for e in failed} <= set(HUNG)
    assert {e["detail"] for e in failed} == {"timed out after 500ms"}
    assert min(polls[agent_id] for agent_id in HEALTHY) >= 8


def test_a_starved_poll_loop_is_one_watchdog_behind_alert_not_no_data(tmp_path: Path) -> None:
    """A hog blocking the event loop makes polls start late while the API answers every
    one: the engine gets the share of late series each cycle and raises watchdog-behind
    once, naming the starved loop; no series raises no-data."""
    log = io.StringIO()
    configure_logging(level="debug", stream=log)
    path = _rules(tmp_path / "rules.toml", poll_interval="200ms", timeout="10s", concurrency=2)
    config = load_config(path)

    async def hog(stop: asyncio.Event) -> None:
        while not stop.is_set():
            time.sleep(0.3)  # blocks the loop: what a CPU-bound bug or a swapped host does
            await asyncio.sleep(0.01)

    async def run(api: FakeElevenLabs) -> Daemon:
        clock = SystemClock()
        with (
            Store.open(Store.default_path(tmp_path)) as store,
            LiveCountSource(
                SecretStr(API_KEY), api.url, now=clock.now, timeout=10.0, max_concurrency=2
            ) as source,
        ):
            daemon = Daemon(
                config=config,
                source=source,
                store=store,
                notifier=ConsoleNotifier(io.StringIO()),
                clock=clock,
            )
            stop = asyncio.Event()
            hogging = asyncio.create_task(hog(stop))
            await asyncio.wait_for(daemon.run(max_cycles=8), timeout=60)
            stop.set()
            await hogging
            return daemon

    with FakeElevenLabs(API_KEY, count=1, known_agents=HUNG + HEALTHY) as api:
        daemon = asyncio.run(run(api))
    events = [json.loads(line) for line in log.getvalue().splitlines()]
    assert not [e for e in events if e["event"] == "poll.failed"]
    firing = [r for r in daemon.engine.records() if r.state is AlertState.FIRING]
    assert [(r.rule, r.series) for r in firing] == [(WATCHDOG_BEHIND_RULE, "watchdog")]
    assert STARVED_CAUSE in firing[0].condition
    assert {e["reason"] for e in events if e["event"] == "poll.late"} >= {"poll loop starved"}
