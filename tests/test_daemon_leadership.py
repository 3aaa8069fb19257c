"""The daemon with a Leadership (watchdog.leadership) on a real PostgreSQL server.

The daemon here keeps its state in SQLite: leadership is only the lock, so its standby
mode, take-over and step-down are tested in process without the PostgreSQL store; the
two-daemon process tests (tests/test_ha_process.py) run the real thing.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.harness import rule, write_rules
from watchdog.audit import configure_logging, reset_logging
from watchdog.clock import SystemClock
from watchdog.daemon import Daemon
from watchdog.errors import SteppedDown
from watchdog.leadership import Leadership, Timing
from watchdog.metrics import Metrics
from watchdog.model import Sample
from watchdog.notify.console import ConsoleNotifier
from watchdog.rules import load_config
from watchdog.store import Store

TIMING = Timing.of(timedelta(milliseconds=200), timeout=0.5)


class CountingSource:
    """Answers every poll with count 1 and counts the polls."""

    def __init__(self, clock: SystemClock) -> None:
        self.polls = 0
        self._clock = clock

    async def poll(self, series: str, agent_id: str | None) -> Sample:
        self.polls += 1
        return Sample(series=series, at=self._clock.now(), count=1)


@pytest.fixture
def log() -> Any:
    stream = io.StringIO()
    configure_logging(level="info", stream=stream)
    yield stream
    reset_logging()


def events(log: io.StringIO, name: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in log.getvalue().splitlines() if line.startswith("{")]
    return [e for e in lines if e.get("event") == name]


async def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


def make_daemon(tmp_path: Path, url: str, name: str) -> tuple[Daemon, CountingSource, Metrics]:
    config = load_config(
        write_rules(tmp_path / f"{name}.toml", rule("high", above=5), poll_interval="200ms")
    )
    clock = SystemClock()
    source = CountingSource(clock)
    metrics = Metrics()
    daemon = Daemon(
        config=config,
        source=source,
        store=Store.open(tmp_path / f"{name}.db"),
        notifier=ConsoleNotifier(io.StringIO()),
        clock=clock,
        metrics=metrics,
        leadership=Leadership(url, timing=TIMING, name=f"watchdog {name} pid 1"),
    )
    return daemon, source, metrics


def leader_gauge(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("watchdog_leader")


def test_a_standby_polls_nothing_is_healthy_and_takes_over_when_the_lock_frees(
    tmp_path: Path, postgres_url: str, log: io.StringIO
) -> None:
    """While another session holds the lock the daemon polls nothing, is healthy and says
    who leads; once that session ends it audits leader.acquired and polls."""

    async def scenario() -> None:
        other = Leadership(postgres_url, timing=TIMING, name="watchdog other pid 9")
        assert await other.try_acquire()
        daemon, source, metrics = make_daemon(tmp_path, postgres_url, "b")
        running = asyncio.create_task(daemon.run())
        try:
            await until(lambda: bool(events(log, "leader.standby")))
            await asyncio.sleep(1.0)  # five poll intervals in which a leader would poll
            assert source.polls == 0
            assert daemon.health().problems == ()
            assert daemon.role() == "standby, leader: watchdog other pid 9"
            assert leader_gauge(metrics) == 0
            await other.close()
            await until(lambda: source.polls > 0)
            assert [e["holder"] for e in events(log, "leader.acquired")] == ["watchdog b pid 1"]
            assert daemon.role() == "leader"
            assert leader_gauge(metrics) == 1
        finally:
            daemon.request_stop()
            await running
            await other.close()

    asyncio.run(scenario())


def test_a_leader_whose_lock_session_is_killed_steps_down(
    tmp_path: Path, postgres_url: str, log: io.StringIO
) -> None:
    """pg_terminate_backend on the lock session: leader.lost, polling stops, `run` raises
    SteppedDown and the fence stays closed."""

    async def scenario() -> None:
        daemon, source, metrics = make_daemon(tmp_path, postgres_url, "a")
        running = asyncio.create_task(daemon.run())
        await until(lambda: source.polls > 0)
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'watchdog a pid 1'"
            )
        with pytest.raises(SteppedDown):
            await asyncio.wait_for(running, timeout=20)
        assert len(events(log, "leader.lost")) == 1
        assert leader_gauge(metrics) == 0
        polls = source.polls
        await asyncio.sleep(0.5)
        assert source.polls == polls

    asyncio.run(scenario())


def test_a_daemon_without_leadership_leads_at_once(tmp_path: Path) -> None:
    """Without PostgreSQL nothing changes: the daemon leads at once (watchdog_leader 1)."""

    async def scenario() -> None:
        config = load_config(
            write_rules(tmp_path / "r.toml", rule("high", above=5), poll_interval="200ms")
        )
        clock = SystemClock()
        source = CountingSource(clock)
        metrics = Metrics()
        daemon = Daemon(
            config=config,
            source=source,
            store=Store.open(tmp_path / "s.db"),
            notifier=ConsoleNotifier(io.StringIO()),
            clock=clock,
            metrics=metrics,
        )
        running = asyncio.create_task(daemon.run())
        try:
            await until(lambda: source.polls > 0)
            assert daemon.role() is None
            assert leader_gauge(metrics) == 1
        finally:
            daemon.request_stop()
            await running

    asyncio.run(scenario())


def test_a_standby_that_cannot_reach_the_database_says_so(
    tmp_path: Path, postgres_url: str, log: io.StringIO
) -> None:
    """No server at the URL: the daemon stands by (it cannot lead) and /healthz's probe
    says it cannot reach the database, without the URL's password."""
    dead = postgres_url.replace("watchdog@", "watchdog:hunter2@").rsplit(":", 1)[0] + ":1/none"

    async def scenario() -> None:
        daemon, source, _ = make_daemon(tmp_path, dead, "c")
        running = asyncio.create_task(daemon.run())
        try:
            await until(lambda: bool(events(log, "leader.standby")))
            (problem,) = daemon.health().problems
            assert problem.startswith("standby: cannot reach the database: OperationalError")
            assert "hunter2" not in problem
            assert daemon.health().stalled == ()
            assert source.polls == 0
        finally:
            daemon.request_stop()
            await running

    asyncio.run(scenario())
