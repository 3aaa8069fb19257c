"""The daemon queues the daily report at `[report] at`, and a missed one once after a restart.

In-process, as `tests/test_silences_daemon.py`: the real `Daemon` polls the loopback
ElevenLabs fake and prints to a real `ConsoleNotifier`, on a `ScaledClock` started just
before the scenario's moment (ten times faster than real time); the audit log is captured.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import SecretStr

from tests.fakes.elevenlabs import FakeElevenLabs
from tests.harness import API_KEY
from watchdog.audit import configure_logging, reset_logging
from watchdog.clock import ScaledClock
from watchdog.daemon import Daemon
from watchdog.daily_report import LAST_DAY_KEY
from watchdog.model import Sample
from watchdog.notify import ConsoleNotifier
from watchdog.rules import parse_config
from watchdog.source import LiveCountSource
from watchdog.store import Store

BERLIN = ZoneInfo("Europe/Berlin")
RULES = """
[watchdog]
poll_interval = "1s"

[report]
at = "09:00"
tz = "Europe/Berlin"
channel = "#voice-ops"

[[rules]]
name = "high"
kind = "threshold"
above = 50
"""
# Tuesday 1 December 2026 in Berlin: three samples, peak 7 at 10:01.
MONDAY_SAMPLES = [
    Sample("workspace", datetime(2026, 12, 1, 10, 0, tzinfo=BERLIN), 3),
    Sample("workspace", datetime(2026, 12, 1, 10, 1, tzinfo=BERLIN), 7),
    Sample("workspace", datetime(2026, 12, 1, 10, 2, tzinfo=BERLIN), 5),
]

Scenario = Callable[[Daemon, ScaledClock, io.StringIO], Awaitable[None]]


@pytest.fixture(autouse=True)
def _default_logging() -> Any:
    yield
    reset_logging()


def events(log: io.StringIO, name: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in log.getvalue().splitlines()]
    return [e for e in lines if e["event"] == name]


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.02)


def run_daemon(
    open_store: Callable[[], Store], start: datetime, scenario: Scenario
) -> tuple[str, io.StringIO]:
    """Run the daemon from `start` while `scenario` drives it; the console and audit log."""
    log, console = io.StringIO(), io.StringIO()
    configure_logging(level="info", stream=log)
    config = parse_config(RULES)

    async def main(api: FakeElevenLabs) -> None:
        clock = ScaledClock(start, speed=10)
        with (
            open_store() as store,
            LiveCountSource(
                SecretStr(API_KEY), api.url, now=clock.now, timeout=1.0, max_concurrency=4
            ) as source,
        ):
            daemon = Daemon(
                config=config,
                source=source,
                store=store,
                notifier=ConsoleNotifier(console),
                clock=clock,
            )
            running = asyncio.create_task(daemon.run())
            try:
                await asyncio.wait_for(scenario(daemon, clock, log), timeout=30)
            finally:
                daemon.request_stop()
                await running

    with FakeElevenLabs(API_KEY, count=9) as api:
        asyncio.run(main(api))
    return console.getvalue(), log


def sent_reports(log: io.StringIO) -> list[dict[str, Any]]:
    return [e for e in events(log, "notify.sent") if e["kind"] == "report"]


def test_the_daily_report_is_posted_at_the_configured_time(open_store: Callable[[], Store]) -> None:
    """Started at 08:59:50 in Berlin, the daemon posts Tuesday's report once 09:00 passed
    (not before, and no earlier day's), to `[report] channel`, with Tuesday's figures."""
    with open_store() as store:
        store.apply(samples=MONDAY_SAMPLES)
    nine = datetime(2026, 12, 2, 9, 0, tzinfo=BERLIN)
    queued_at: list[datetime] = []

    async def scenario(daemon: Daemon, clock: ScaledClock, log: io.StringIO) -> None:
        await until(lambda: bool(events(log, "report.queued")))
        queued_at.append(clock.now())
        await until(lambda: bool(sent_reports(log)))
        await asyncio.sleep(0.3)  # three more checks of the clock: nothing else is due

    console, log = run_daemon(open_store, nine - timedelta(seconds=10), scenario)
    (queued,) = events(log, "report.queued")
    assert (queued["day"], queued["channel"]) == ("2026-12-01", "#voice-ops")
    assert queued_at[0] >= nine
    (sent,) = sent_reports(log)
    assert sent["channel"] == "#voice-ops"
    assert "Daily report: 2026-12-01" in console
    assert "peak 7 at 2026-12-01T09:01:00+00:00" in console  # 10:01 in Berlin
    assert console.count("Daily report") == 1
    with open_store() as store:
        assert store.get_meta(LAST_DAY_KEY) == "2026-12-01"


def test_a_missed_report_is_sent_after_a_restart_once(open_store: Callable[[], Store]) -> None:
    """Down at 09:00 (the last report was Monday's), the daemon started at 11:00 sends
    Tuesday's report at once; started again, it does not send it a second time."""
    with open_store() as store:
        store.apply(samples=MONDAY_SAMPLES)
        store.set_meta(LAST_DAY_KEY, "2026-11-30")
    eleven = datetime(2026, 12, 2, 11, 0, tzinfo=BERLIN)

    async def first(daemon: Daemon, clock: ScaledClock, log: io.StringIO) -> None:
        await until(lambda: bool(sent_reports(log)))

    async def second(daemon: Daemon, clock: ScaledClock, log: io.StringIO) -> None:
        await until(lambda: daemon.cycles >= 3)  # the report task has looked several times

    console, log = run_daemon(open_store, eleven, first)
    assert [e["day"] for e in events(log, "report.queued")] == ["2026-12-01"]
    assert "Daily report: 2026-12-01" in console
    console, log = run_daemon(open_store, eleven + timedelta(seconds=30), second)
    assert events(log, "report.queued") == []
    assert "Daily report" not in console
    with open_store() as store:
        assert store.outbox_depth() == 0


def test_a_report_that_cannot_be_built_is_logged_and_alerting_goes_on(
    open_store: Callable[[], Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in the report must not cost an alert: `report.failed` is logged once for the
    day, the daemon keeps polling, and the day is not marked as reported."""
    with open_store() as store:
        store.apply(samples=MONDAY_SAMPLES)

    def broken(*_: object) -> None:
        raise ZeroDivisionError("injected")

    monkeypatch.setattr("watchdog.daily_report.DailyReport._build", broken)
    nine = datetime(2026, 12, 2, 9, 0, tzinfo=BERLIN)

    async def scenario(daemon: Daemon, clock: ScaledClock, log: io.StringIO) -> None:
        await until(lambda: bool(events(log, "report.failed")))
        cycles = daemon.cycles
        await until(lambda: daemon.cycles >= cycles + 3)  # still polling

    _, log = run_daemon(open_store, nine - timedelta(seconds=10), scenario)
    (failed,) = events(log, "report.failed")
    assert (failed["day"], failed["error"], failed["message"]) == (
        "2026-12-01",
        "ZeroDivisionError",
        "injected",
    )
    assert not events(log, "daemon.crashed")
    with open_store() as store:
        assert store.get_meta(LAST_DAY_KEY) == "2026-11-30"
