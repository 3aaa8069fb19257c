"""CPU time and memory of a process, read from /proc (Linux; no psutil needed).

`cpu_seconds` sums user and system time of every thread the process ever had (exited
threads included), in clock ticks (usually 10 ms): too coarse for an idle process over
a short window. `thread_cpu_ns` reads each live thread's `schedstat` (nanoseconds) but
cannot see threads that already exited. `CpuMeter` uses the nanosecond figure when every
thread it saw at the start is still alive at the end, else the tick figure. `memory`
gives the resident set now (`VmRSS`) and its high-water mark (`VmHWM`).
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


def thread_cpu_ns(pid: int) -> dict[int, int]:
    """CPU nanoseconds of each live thread of `pid`, by thread id."""
    out: dict[int, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[int(task.name)] = int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # the thread exited meanwhile, or schedstat is unavailable
    return out


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
    """Create it at the beginning of the steady state; `read()` gives the window so far."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._threads0 = thread_cpu_ns(pid)
        self._ticks0 = cpu_seconds(pid)
        self._wall0 = time.monotonic()

    def read(self) -> CpuWindow:
        wall = time.monotonic() - self._wall0
        threads = thread_cpu_ns(self.pid)
        ticks = cpu_seconds(self.pid) - self._ticks0
        if self._threads0 and set(self._threads0) <= set(threads):
            spent = sum(threads.values()) - sum(self._threads0.values())
            return CpuWindow(spent / 1e9, wall)
        return CpuWindow(ticks, wall)
