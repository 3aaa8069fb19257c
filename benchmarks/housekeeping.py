"""Hourly housekeeping at scale: the longest event-loop block while history is pruned and thinned.

* Set-up: a state database built synthetically with SQL (seconds, not a week): 1,000
  agents plus the workspace, the history `Daemon` leaves after a week of 15 s polls: one
  sample per series per minute back to the retention (7 days) and one more hour past it
  (due for pruning), and every sample of the last two hours (the older of them due for
  thinning). About 10 million rows, ~200 MB.
* Measured: the daemon's own hourly housekeeping (`Daemon.housekeep`: prune past the
  retention, thin past the full-resolution horizon) in this process's event loop, while
  two tasks run beside it as in the daemon: a heartbeat every 5 ms, whose lateness is the
  loop's block, and every 100 ms a poll cycle's 1,001 samples written by the daemon's own
  `Daemon.flush_samples` (a worker thread; it contends with housekeeping for the store).
  Target: no block of 100 ms or more.
* Also measured: the first second of flushes into the freshly opened (cold) database,
  before housekeeping, and how long the slowest flush took in its thread.
"""

from __future__ import annotations

import asyncio
import io
import sqlite3
import time
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchmarks.common import Figure, below, info, progress, state_dir
from benchmarks.engine import scale_config
from watchdog.daemon import Daemon
from watchdog.model import Sample
from watchdog.notify import ConsoleNotifier
from watchdog.rules import Config
from watchdog.simulated import SimulatedSource
from watchdog.store import Store

NAME = "housekeeping"
NOW = datetime(2026, 1, 12, 12, 0, tzinfo=UTC)
STEP = timedelta(seconds=15)
TARGET_MS = 100.0
HEARTBEAT = 0.005
FLUSH_EVERY = 0.1


class _FixedClock:
    """Wall time stands at NOW (what housekeeping reads); monotonic time is real."""

    def now(self) -> datetime:
        return NOW

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def build_history(path: Path, config: Config, *, days: int) -> int:
    """Write `days` of thinned history plus two full-resolution hours; return the rows."""
    Store.open(path).close()  # the schema, as the daemon creates it
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO series (name) VALUES (?)", [(n,) for n, _ in config.series])
        full_from = NOW - timedelta(hours=2)
        for start, end, step in (
            (NOW - timedelta(days=days, hours=1), full_from, timedelta(minutes=1)),
            (full_from, NOW, STEP),
        ):
            conn.execute(
                """WITH RECURSIVE t(at) AS (
                       SELECT ?1 UNION ALL SELECT at + ?3 FROM t WHERE at + ?3 < ?2)
                   INSERT INTO samples (series_id, at, count)
                   SELECT s.id, t.at, (s.id * 7 + t.at / 60000) % 23
                   FROM series s CROSS JOIN t""",
                (_ms(start), _ms(end), int(step.total_seconds() * 1000)),
            )
        conn.execute("COMMIT")
        (rows,) = conn.execute("SELECT COUNT(*) FROM samples").fetchone()
    finally:
        conn.close()
    return int(rows)


async def _measure(daemon: Daemon, store: Store, config: Config) -> dict[str, float]:
    """The loop's longest block and slowest flush, without and then with housekeeping."""
    loop = asyncio.get_running_loop()
    worst = 0.0
    flushes: list[float] = []
    tick = 0

    async def flush() -> None:
        nonlocal tick
        tick += 1
        samples = [Sample(name, NOW + timedelta(milliseconds=tick), 5) for name, _ in config.series]
        daemon._unsaved.samples.extend(samples)  # what a poll cycle leaves
        began = time.perf_counter()
        await daemon.flush_samples()
        flushes.append(time.perf_counter() - began)

    async def heartbeat(done: asyncio.Event) -> None:
        nonlocal worst
        while not done.is_set():
            due = loop.time() + HEARTBEAT
            await asyncio.sleep(HEARTBEAT)
            worst = max(worst, loop.time() - due)

    async def cycle_flushes(done: asyncio.Event) -> None:
        while not done.is_set():
            await flush()
            await asyncio.sleep(FLUSH_EVERY)

    async def phase(work: Awaitable[object]) -> tuple[float, float]:
        nonlocal worst
        worst = 0.0
        flushes.clear()
        done = asyncio.Event()
        beside = [asyncio.create_task(heartbeat(done)), asyncio.create_task(cycle_flushes(done))]
        await asyncio.sleep(0)  # both are running before the work starts
        await work
        done.set()
        await asyncio.gather(*beside)
        return worst, max(flushes)

    cold_block, cold_flush = await phase(asyncio.sleep(1.0))  # the first, cold flushes
    floor_block, floor_flush = await phase(asyncio.sleep(1.0))
    began = time.perf_counter()
    result: list[tuple[int, int]] = []

    async def housekeeping() -> None:
        result.append(await daemon.housekeep())

    block, slowest_flush = await phase(housekeeping())
    return {
        "block": block,
        "flush": slowest_flush,
        "floor_block": floor_block,
        "floor_flush": floor_flush,
        "cold_block": cold_block,
        "cold_flush": cold_flush,
        "took": time.perf_counter() - began,
        "removed": float(sum(result[0])),
    }


def run(quick: bool) -> list[Figure]:
    config = scale_config(1000)
    days = 1 if quick else 7
    with state_dir(NAME) as state:
        path = Store.default_path(state)
        progress(f"{NAME}: building {days} day(s) of history for {len(config.series)} series")
        began = time.perf_counter()
        rows = build_history(path, config, days=days)
        built = time.perf_counter() - began
        size = path.stat().st_size / 1e6
        progress(f"{NAME}: {rows:,} rows, {size:.0f} MB in {built:.0f} s; housekeeping")
        clock = _FixedClock()
        with Store.open(path) as store:
            daemon = Daemon(
                config=config,
                source=SimulatedSource(clock, midnight=NOW, agents=()),  # never polled here
                store=store,
                notifier=ConsoleNotifier(io.StringIO()),
                clock=clock,
            )
            measured = asyncio.run(_measure(daemon, store, config))
    return [
        info(
            NAME,
            "set-up",
            f"{len(config.series)} series, {days} day(s) of history: {rows:,} rows, {size:.0f} MB",
        ),
        below(
            NAME,
            "longest event-loop block during prune + thin",
            measured["block"] * 1e3,
            TARGET_MS,
            "ms",
            ".1f",
        ),
        below(
            NAME,
            "longest event-loop block during the first second of flushes (cold database)",
            measured["cold_block"] * 1e3,
            TARGET_MS,
            "ms",
            ".1f",
        ),
        info(
            NAME,
            "the same without housekeeping (heartbeat and flushes alone)",
            f"{measured['floor_block'] * 1e3:.1f} ms",
        ),
        info(
            NAME,
            "slowest 1,001-sample flush (in its thread): cold / during housekeeping / without",
            f"{measured['cold_flush'] * 1e3:.1f} / {measured['flush'] * 1e3:.1f} / "
            f"{measured['floor_flush'] * 1e3:.1f} ms",
        ),
        info(
            NAME,
            "prune + thin: wall time, rows removed",
            f"{measured['took']:.2f} s, {measured['removed']:,.0f} rows",
        ),
    ]
