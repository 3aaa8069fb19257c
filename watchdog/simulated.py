"""A built-in stand-in for the ElevenLabs API: one scripted working day, for `watchdog demo`.

It plays what the watchdog exists to catch, on the clock it is given: a morning ramp, a
surge past the concurrency limit (10:30), a collapse to zero (13:30) and an API outage
(15:30), then the evening lull. The counts are deterministic so the demo tells the same
story every time.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from datetime import datetime, timedelta

from watchdog.clock import Clock
from watchdog.errors import PollFailure, SourceError
from watchdog.model import WORKSPACE, Sample

SURGE = (timedelta(hours=10, minutes=30), timedelta(hours=10, minutes=52))
COLLAPSE = (timedelta(hours=13, minutes=30), timedelta(hours=13, minutes=48))
OUTAGE = (timedelta(hours=15, minutes=30), timedelta(hours=15, minutes=36))


def _noise(series: str, minute: int) -> int:
    digest = hashlib.blake2b(f"{series}:{minute}".encode(), digest_size=1).digest()[0]
    return digest % 3 - 1


class SimulatedSource:
    """Counts for the workspace and each agent as a function of the local time of day."""

    def __init__(self, clock: Clock, *, midnight: datetime, agents: Sequence[str]) -> None:
        self._clock = clock
        self._midnight = midnight
        self._agents = list(agents)

    def workspace_count(self, at: datetime) -> int:
        elapsed = at - self._midnight
        hours = elapsed.total_seconds() / 3600
        # A working day: quiet nights, a broad daytime hump peaking mid-afternoon.
        daytime = max(0.0, math.sin(math.pi * (hours - 7.0) / 13.0)) if 7 <= hours <= 20 else 0.0
        count = 5 + round(14 * daytime)
        if count > 8:
            count += _noise(WORKSPACE, int(elapsed.total_seconds() // 60))
        if SURGE[0] <= elapsed < SURGE[1]:
            # Up in 4 minutes, down in 12: a real surge ebbs rather than vanishes.
            up = (elapsed - SURGE[0]) / timedelta(minutes=4)
            down = (SURGE[1] - elapsed) / timedelta(minutes=12)
            count += round(16 * max(0.0, min(1.0, up, down)))
        if COLLAPSE[0] <= elapsed < COLLAPSE[1]:
            count = 0
        return max(0, count)

    def agent_count(self, agent: str, at: datetime) -> int:
        total = self.workspace_count(at)
        if not self._agents or agent not in self._agents:
            return 0
        index = self._agents.index(agent)
        elapsed = at - self._midnight
        if index == 0 and SURGE[0] <= elapsed < SURGE[1]:
            share = 0.85  # the surge lands on the first agent
        else:
            share = 0.6 if index == 0 else 0.4 / max(1, len(self._agents) - 1)
        return max(0, round(total * share))

    async def poll(self, series: str, agent_id: str | None) -> Sample:
        at = self._clock.now()
        elapsed = at - self._midnight
        if OUTAGE[0] <= elapsed < OUTAGE[1]:
            raise SourceError(series, PollFailure.UNREACHABLE, "connection refused (simulated)")
        count = self.workspace_count(at) if series == WORKSPACE else self.agent_count(series, at)
        return Sample(series=series, at=at, count=count)
