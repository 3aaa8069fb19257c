"""`watchdog demo`: the real loop on a simulated working day, no account needed.

The daemon, engine, store, outbox and console notifier are the production ones; only the
source (a scripted day) and the clock (a day compressed into ~20 seconds) are stand-ins.
The audit log goes to a file in a temporary state directory so the alerts stay readable.
"""

from __future__ import annotations

import asyncio
import tempfile
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import TextIO
from zoneinfo import ZoneInfo

from watchdog.audit import configure_logging
from watchdog.clock import ScaledClock
from watchdog.daemon import Daemon
from watchdog.notify import ConsoleNotifier
from watchdog.rules import Config, load_config, parse_config
from watchdog.simulated import COLLAPSE, OUTAGE, SURGE, SimulatedSource
from watchdog.store import Store

DAY_START = timedelta(hours=6)
DAY_END = timedelta(hours=22)
DEFAULT_SECONDS = 20.0


def example_config() -> Config:
    """The embedded copy of rules.example.toml, the demo's default."""
    text = resources.files("watchdog").joinpath("data/rules.example.toml").read_text("utf-8")
    return parse_config(text, source="rules.example.toml (embedded)")


def _demo_zone(config: Config) -> ZoneInfo:
    for rule in config.rules:
        if rule.active is not None:
            return ZoneInfo(rule.active.tz)
    return ZoneInfo("UTC")


def run_demo(out: TextIO, *, config_path: Path | None = None, speed: float | None = None) -> int:
    """Play one day from 06:00 to 22:00 local time and print every alert as it is sent."""
    config = load_config(config_path) if config_path else example_config()
    zone = _demo_zone(config)
    midnight = datetime(2026, 11, 23, tzinfo=zone)  # a Monday: business hours apply
    span = DAY_END - DAY_START
    speed = speed or span.total_seconds() / DEFAULT_SECONDS
    clock = ScaledClock(midnight + DAY_START, speed)
    with tempfile.TemporaryDirectory(prefix="watchdog-demo-") as state:
        log_path = Path(state) / "audit.jsonl"
        out.write(
            f"watchdog demo: {config.source}, {len(config.rules)} rules on "
            f"{len(config.series)} series; one simulated day, "
            f"{_hhmm(DAY_START)}-{_hhmm(DAY_END)} {zone.key}, "
            f"in about {span.total_seconds() / speed:.0f} s.\n"
            f"Scripted: a surge at {_hhmm(SURGE[0])}, a collapse to zero at "
            f"{_hhmm(COLLAPSE[0])}, an API outage at {_hhmm(OUTAGE[0])}.\n\n"
        )
        out.flush()
        with log_path.open("w", encoding="utf-8") as log, Store.open(Path(state) / "w.db") as store:
            configure_logging(level="info", stream=log, journald=False)
            source = SimulatedSource(
                clock, midnight=midnight, agents=[a.name for a in config.agents]
            )
            notifier = ConsoleNotifier(out)
            daemon = Daemon(
                config=config,
                source=source,
                store=store,
                notifier=notifier,
                clock=clock,
                fixed_channel="console",
            )
            asyncio.run(_play(daemon, clock, midnight + DAY_END))
            depth = store.outbox_depth()
        events = log_path.read_text("utf-8").splitlines()
    fired = sum('"event": "alert.firing"' in line for line in events)
    resolved = sum('"event": "alert.resolved"' in line for line in events)
    sent = sum('"event": "notify.sent"' in line for line in events)
    out.write(
        f"\nDay over: {fired} alerts fired, {resolved} resolved, {sent} notifications "
        f"delivered, {depth} undelivered; {len(events)} audit events were logged.\n"
        "Next: `watchdog check --config rules.example.toml`, then set ELEVENLABS_API_KEY and "
        "SLACK_BOT_TOKEN and `watchdog run` (see README).\n"
    )
    return 0


async def _play(daemon: Daemon, clock: ScaledClock, end: datetime) -> None:
    async def stop_at_end() -> None:
        await clock.sleep((end - clock.now()).total_seconds())
        # Let the outbox drain what the last minutes decided before stopping.
        await clock.sleep(5.0)
        daemon.request_stop()

    stopper = asyncio.create_task(stop_at_end())
    await daemon.run()
    stopper.cancel()


def _hhmm(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}"
