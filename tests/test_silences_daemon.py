"""Silences and mutes in the daemon's loop, in-process, on an injected clock.

The real `Daemon` polls the loopback ElevenLabs fake through the real `LiveCountSource`
and prints to a real `ConsoleNotifier`; its clock is a `ScaledClock` started where the
scenario needs it (just before a mute window closes), running ten times faster than
real time. The audit log is captured as JSON lines.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import SecretStr

from tests.fakes.elevenlabs import FakeElevenLabs
from tests.harness import API_KEY
from watchdog.audit import configure_logging, reset_logging
from watchdog.clock import ScaledClock
from watchdog.daemon import Daemon
from watchdog.errors import InputError
from watchdog.model import AlertState
from watchdog.notify import ConsoleNotifier
from watchdog.rules import parse_config
from watchdog.source import LiveCountSource
from watchdog.store import Store

RULES = """
[watchdog]
poll_interval = "1s"
repeat = "0s"

[[rules]]
name = "high"
kind = "threshold"
above = 5
"""
NIGHT = """
[[mute]]
name = "night"
days = "sat"
hours = "22:00-06:00"
tz = "Europe/Berlin"
"""


@pytest.fixture(autouse=True)
def _default_logging() -> Any:
    yield
    reset_logging()


def events(log: io.StringIO, name: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in log.getvalue().splitlines()]
    return [e for e in lines if e["event"] == name]


def run_daemon(
    open_store: Callable[[], Store],
    rules: str,
    start: datetime,
    scenario: Callable[[Daemon, io.StringIO], Awaitable[None]],
) -> str:
    """Run the daemon from `start` (10x speed) while `scenario` drives it; return the console."""
    log, console = io.StringIO(), io.StringIO()
    configure_logging(level="info", stream=log)
    config = parse_config(rules)

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
                await asyncio.wait_for(scenario(daemon, log), timeout=30)
            finally:
                daemon.request_stop()
                await running

    with FakeElevenLabs(API_KEY, count=9) as api:
        asyncio.run(main(api))
    return console.getvalue()


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.02)


def test_a_card_held_by_an_overnight_mute_is_posted_when_the_window_closes(
    open_store: Callable[[], Store],
) -> None:
    """Firing at 05:59:40 on a Sunday, inside Saturday's "22:00-06:00" window (Berlin), the
    card is held back with the mute's name and posted at 06:00, since the alert still fires."""
    start = datetime(2026, 12, 6, 5, 59, 40, tzinfo=ZoneInfo("Europe/Berlin"))
    closes = datetime(2026, 12, 6, 5, 0, tzinfo=UTC)  # 06:00 in Berlin

    async def scenario(daemon: Daemon, log: io.StringIO) -> None:
        await until(lambda: bool(events(log, "notify.suppressed")))
        (held,) = events(log, "notify.suppressed")
        assert (held["kind"], held["reason"], held["mute"]) == ("firing", "muted", "night")
        await until(lambda: bool(events(log, "notify.sent")))
        (released,) = events(log, "notify.released")
        assert (released["kind"], released["mute"]) == ("firing", "night")

    console = run_daemon(open_store, RULES + NIGHT, start, scenario)
    (card,) = [block for block in console.split("\n\n") if "FIRING" in block]
    assert "reason mute night ended; still firing" in card
    sent_at = datetime.strptime(card.split("at ")[-1].split(" ·")[0], "%Y-%m-%d %H:%M:%S UTC")
    assert sent_at.replace(tzinfo=UTC) >= closes


def test_silence_alert_silences_its_rule_and_series_and_is_listed(
    open_store: Callable[[], Store],
) -> None:
    """`silence_alert` (the Slack button) makes a silence for that alert's rule and series,
    audited with who pressed; `silences_text` lists it; an unknown alert is an InputError."""
    start = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    seen: dict[str, Any] = {}

    async def scenario(daemon: Daemon, log: io.StringIO) -> None:
        assert daemon.silences_text() == "No active silences."
        await until(lambda: any(r.state is AlertState.FIRING for r in daemon.engine.records()))
        (record,) = daemon.engine.records()
        with pytest.raises(InputError, match="no pending or firing alert 'nope'"):
            daemon.silence_alert("nope", timedelta(hours=1), "U123")
        silence = daemon.silence_alert(record.alert_id, timedelta(hours=1), "U123")
        seen["silence"], seen["text"], seen["record"] = silence, daemon.silences_text(), record
        seen["created"] = events(log, "silence.created")

    run_daemon(open_store, RULES, start, scenario)
    silence, record = seen["silence"], seen["record"]
    assert (silence.rule, silence.scope, silence.by) == ("high", "workspace", "U123")
    assert silence.ends - silence.starts == timedelta(hours=1)
    assert seen["text"].splitlines()[0] == "Active silences: 1"
    assert f"#{silence.id} high on workspace until" in seen["text"]
    assert "by U123" in seen["text"]
    (created,) = seen["created"]
    assert (created["silence"], created["by"]) == (silence.id, "U123")
    with open_store() as store:
        assert [s.id for s in store.silences(silence.starts)] == [silence.id]
        assert store.held()[record.alert_id].card  # its card is out: its end will be announced


def test_silencing_from_the_card_names_who_silenced_on_the_alerts_notifications(
    open_store: Callable[[], Store],
) -> None:
    """The card's Silence control: an unknown alert is refused with a reason for the
    presser; a firing one is silenced, and the edit of its card says who silenced it
    (`silenced_by`, for webhooks and the console, beside the card's annotation)."""
    start = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    answers: list[str | None] = []

    async def scenario(daemon: Daemon, log: io.StringIO) -> None:
        await until(lambda: any(r.state is AlertState.FIRING for r in daemon.engine.records()))
        await until(lambda: bool(events(log, "notify.sent")))
        (record,) = daemon.engine.records()
        answers.append(daemon.silence_from_card("nope", timedelta(hours=1), "U123"))
        answers.append(daemon.silence_from_card(record.alert_id, timedelta(hours=1), "U123"))
        await until(lambda: len(events(log, "notify.sent")) == 2)

    console = run_daemon(open_store, RULES, start, scenario)
    assert answers == ["Cannot silence: no pending or firing alert 'nope'.", None]
    (annotated,) = [block for block in console.split("\n\n") if "ANNOTATED" in block]
    assert "silenced by U123" in annotated
