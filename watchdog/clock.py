"""Where time comes from: read once at the edges and passed down, never inside the engine.

The daemon takes a `Clock`, so tests and the demo can run the real loop on their own
time. Wall time stamps samples and messages (it must be truthful); monotonic time paces
polls and retries (it must not jump when the wall clock is set).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Aware UTC wall time."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of this clock's time."""
        ...


class SystemClock:
    """The real clocks."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ScaledClock:
    """Time running `speed` times faster than real time from `start` (the demo's day)."""

    def __init__(self, start: datetime, speed: float) -> None:
        self._start = start
        self._speed = speed
        self._origin = time.monotonic()

    def monotonic(self) -> float:
        return (time.monotonic() - self._origin) * self._speed

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self.monotonic())

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self._speed)


async def sleep_or_stop(
    clock: Clock, seconds: float, stop: asyncio.Event, *also: asyncio.Future[Any]
) -> None:
    """Wait `seconds` of `clock`'s time, or less if `stop` is set or one of `also` is done.

    The long-lived tasks sleep this way so that a stop never waits out a sleep.
    """
    if seconds <= 0 or stop.is_set():
        return
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait([sleeper, stopper, *also], return_when=asyncio.FIRST_COMPLETED)
    sleeper.cancel()
    stopper.cancel()
