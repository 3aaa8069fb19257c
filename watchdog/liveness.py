"""Liveness of the whole pipeline: what `/healthz` reports and what the systemd ping requires.

Two verdicts, because they call for different cures:

* **Stalled** (a restart helps): a part that must keep moving has stopped. The daemon
  is stalled when
  - the poll loop finished no poll, good or failed, for `poll_silence_limit` seconds
    (3 x `poll_interval` + `timeout` + 30 s: a black-holed API makes every poll last
    `timeout`, which is slow but alive);
  - the ticker (it ticks every second) has not ticked for `TICKER_SILENCE_LIMIT`;
  - the outbox worker has been inside one delivery round for `WORKER_ROUND_LIMIT`
    (a round makes a few Slack calls of 10 s timeout each; waiting for work is fine);
  - a long-lived task ended before the daemon was asked to stop.
  While stalled, `WATCHDOG=1` is withheld, so systemd's `WatchdogSec=` restarts the
  daemon. Pings never depend on `poll_interval`: a healthy daemon pings every half
  `WatchdogSec`, however long its cycles are.
* **Degraded** (a restart would not help): the oldest undelivered notification is older
  than `OUTBOX_AGE_LIMIT`, which no rate limit Slack announces can explain: Slack is
  down or refusing. `/healthz` answers 503 and says so; the ping continues.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from watchdog.durations import format_duration

__all__ = [
    "MIN_WATCHDOG_SEC",
    "OUTBOX_AGE_LIMIT",
    "READY_WITHIN_SECONDS",
    "TICKER_SILENCE_LIMIT",
    "WORKER_ROUND_LIMIT",
    "Health",
    "Heartbeat",
    "poll_silence_limit",
    "watchdog_sec_problems",
]

OUTBOX_AGE_LIMIT = timedelta(minutes=15)
"""An undelivered notification older than this makes `/healthz` fail (Slack's longest
honoured Retry-After is 15 minutes, so only an outage or a rejection gets here)."""
TICKER_SILENCE_LIMIT = 10.0
"""Seconds without a tick (one per second) after which the ticker counts as stopped."""
WORKER_ROUND_LIMIT = 120.0
"""Seconds one delivery round may take before the outbox worker counts as hung."""
READY_WITHIN_SECONDS = 10.0
"""READY=1 goes out after the first poll cycle or after this long, whichever is first:
against a black-holed API the first cycle may outlast systemd's `TimeoutStartSec=`."""
MIN_WATCHDOG_SEC = 15.0
"""Shortest workable `WatchdogSec=`: the store may hold the event loop for up to 5 s
(SQLite's busy timeout) and a ping is due every half `WatchdogSec`, which must
exceed that with room to spare."""


def poll_silence_limit(poll_interval: timedelta, timeout: timedelta) -> float:
    """Seconds without a finished poll after which the poll loop counts as stalled."""
    return 3 * poll_interval.total_seconds() + timeout.total_seconds() + 30.0


class Heartbeat:
    """When a part of the pipeline last showed that it moves (monotonic seconds)."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._last = monotonic()  # the start counts as a beat

    def beat(self) -> None:
        self._last = self._monotonic()

    def silent_for(self) -> float:
        return self._monotonic() - self._last


@dataclass(frozen=True, slots=True)
class Health:
    """The pipeline at one instant; `stalled` and `degraded` each hold one line per reason.

    systemd is pinged while `stalled` is empty; `/healthz` is 200 while `problems` is.
    """

    stalled: tuple[str, ...] = ()
    degraded: tuple[str, ...] = ()

    @property
    def problems(self) -> tuple[str, ...]:
        """Every reason `/healthz` fails, stalled parts first; empty while healthy."""
        return self.stalled + self.degraded


def watchdog_sec_problems(watchdog_usec: str) -> list[str]:
    """What is wrong with `$WATCHDOG_USEC` (systemd's `WatchdogSec=`), with what to change.

    Pings follow the pipeline's health, not poll completions, so `poll_interval` and
    `timeout` put no bound on `WatchdogSec=`; only a value that is not a duration or too
    short to survive one slow disk write can kill a healthy daemon.
    """
    try:
        usec = int(watchdog_usec.strip())
    except ValueError:
        usec = 0
    if usec <= 0:
        return [
            f"WATCHDOG_USEC={watchdog_usec!r} is not a positive number of microseconds:"
            " the watchdog is off; set WatchdogSec= in the unit instead of WATCHDOG_USEC"
        ]
    seconds = usec / 1_000_000
    if seconds < MIN_WATCHDOG_SEC:
        return [
            f"WATCHDOG_USEC={usec} (WatchdogSec={format_duration(timedelta(seconds=seconds))})"
            f" is shorter than {MIN_WATCHDOG_SEC:g}s: one slow disk write can delay a ping"
            " past it and systemd would kill a healthy watchdog;"
            f" set WatchdogSec={MIN_WATCHDOG_SEC:g}s or more (60s recommended)"
        ]
    return []
