"""CPU time and memory of a process, read from /proc (Linux; no psutil needed).

`cpu_seconds` sums user and system time of every thread the process ever had (exited
threads included), in clock ticks (usually 10 ms). `memory` gives the resident set now
(`VmRSS`) and its high-water mark since the process started (`VmHWM`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds consumed so far by process `pid`."""
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may contain spaces: split after its closing parenthesis.
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _TICK


@dataclass(frozen=True, slots=True)
class Memory:
    rss_mb: float
    peak_rss_mb: float


def memory(pid: int) -> Memory:
    """Resident set size now and at its peak, in MiB."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024  # kB -> MiB
    return Memory(rss_mb=values["VmRSS"], peak_rss_mb=values["VmHWM"])


@dataclass(frozen=True, slots=True)
class CpuWindow:
    """CPU used by a process between two moments, as a share of one core."""

    cpu_seconds: float
    wall_seconds: float

    @property
    def percent_of_core(self) -> float:
        return 100.0 * self.cpu_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0


class CpuMeter:
    """Start it at the beginning of the steady state; `stop()` gives the window."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._cpu0 = cpu_seconds(pid)
        self._wall0 = time.monotonic()

    def read(self) -> CpuWindow:
        return CpuWindow(cpu_seconds(self.pid) - self._cpu0, time.monotonic() - self._wall0)
