"""A tick's write on PostgreSQL (loopback) against SQLite: `Store.apply` of 20 series.

* Set-up: an empty store of each kind. SQLite in a state directory on this machine's disk
  (WAL, `synchronous=FULL`); PostgreSQL a throwaway cluster on a loopback port (`initdb`
  + `pg_ctl`, as the tests start it, but durable: `fsync` and `synchronous_commit` on).
* Measured: the wall time of `Store.apply` with one sample for each of 20 series (the
  workspace and 19 agents) and one alert record, as the daemon writes every poll cycle;
  median and p95 over the ticks. No target: the figure says what PostgreSQL costs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from benchmarks.common import Figure, info, median, percentile, progress, state_dir
from tests.postgres import PostgresServer, postgres_bindir
from watchdog.model import AlertRecord, AlertState, Sample
from watchdog.store import Store

NAME = "store_write"
SERIES = ["workspace", *(f"agent_{i:02d}" for i in range(19))]
T0 = datetime(2026, 1, 12, 12, 0, tzinfo=UTC)


def _ticks(store: Store, count: int) -> list[float]:
    """Milliseconds per `apply` of one tick's samples and alert record."""
    took = []
    for tick in range(count):
        at = T0 + timedelta(seconds=15 * tick)
        record = AlertRecord("high", "workspace", "a1", AlertState.FIRING, T0, tick, None, "c")
        began = time.perf_counter()
        store.apply(samples=[Sample(name, at, tick % 7) for name in SERIES], alerts=[record])
        took.append((time.perf_counter() - began) * 1000)
    return took


def _figures(backend: str, open_store: Callable[[], Store], count: int) -> list[Figure]:
    with open_store() as store:
        _ticks(store, 20)  # warm up: series ids, prepared statements
        took = _ticks(store, count)
    return [
        info(NAME, f"{backend}: apply of 20 series, median", f"{median(took):.2f} ms"),
        info(NAME, f"{backend}: apply of 20 series, p95", f"{percentile(took, 95):.2f} ms"),
    ]


def run(quick: bool) -> list[Figure]:
    count = 200 if quick else 1000
    figures: list[Figure] = []
    with state_dir(NAME) as state:
        progress(f"{NAME}: {count} ticks on SQLite")
        figures += _figures("SQLite", lambda: Store.open(Store.default_path(state)), count)
    bindir = postgres_bindir()
    if bindir is None:
        return [*figures, info(NAME, "PostgreSQL", "not installed: skipped")]
    server = PostgresServer(bindir, durable=True)
    try:
        server.start()
        url = server.new_database()
        progress(f"{NAME}: {count} ticks on PostgreSQL (loopback)")
        figures += _figures("PostgreSQL", lambda: Store.connect(url), count)
    finally:
        server.stop()
    return figures
