"""What every benchmark shares: the figure type, statistics, the machine, child processes.

Benchmarks run the real `python -m watchdog run` (through `tests.harness.DaemonProcess`)
against the loopback fakes in `tests/fakes/`, the same ones the test suite uses.
"""

from __future__ import annotations

import os
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tests.fakes import elevenlabs as _fake_elevenlabs
from tests.harness import ROOT, DaemonProcess

# The fake writes a response's headers and body in two sends on a keep-alive connection;
# with Nagle's algorithm on, the body waits for the client's delayed ACK, which adds
# ~40 ms to every answer after the first few on a connection (measured: 44 ms per request
# at latency 0, 93 ms at latency 50 ms; 1.4 ms and 52 ms with TCP_NODELAY). The benchmarks
# configure the API latency, so they switch Nagle off for the fake's sockets, in this
# process only. (Better fixed in tests/fakes/elevenlabs.py itself; see BENCHMARKS.md.)
_fake_elevenlabs._Handler.disable_nagle_algorithm = True

__all__ = [
    "ROOT",
    "ChildProcess",
    "Figure",
    "at_most",
    "below",
    "info",
    "machine",
    "median",
    "naive_process",
    "percentile",
    "progress",
    "report_profile",
    "state_dir",
    "watchdog_process",
]


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured number, its target (if it has one) and whether it met it."""

    benchmark: str
    name: str
    value: str
    target: str = ""
    ok: bool | None = None

    @property
    def result(self) -> str:
        if self.ok is None:
            return ""
        return "PASS" if self.ok else "MISS"


def below(benchmark: str, name: str, value: float, limit: float, unit: str, fmt: str) -> Figure:
    """A figure whose target is `value < limit`."""
    return Figure(benchmark, name, f"{value:{fmt}} {unit}", f"< {limit:g} {unit}", value < limit)


def at_most(benchmark: str, name: str, value: float, limit: float, unit: str, fmt: str) -> Figure:
    """A figure whose target is `value <= limit`."""
    return Figure(benchmark, name, f"{value:{fmt}} {unit}", f"<= {limit:g} {unit}", value <= limit)


def info(benchmark: str, name: str, value: str) -> Figure:
    """A figure shown for context, without a target."""
    return Figure(benchmark, name, value)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) by the nearest-rank method: always a measured value."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))  # ceil(n * p / 100), at least 1
    return ordered[int(rank) - 1]


def progress(message: str) -> None:
    """Where a benchmark stands, on stderr (stdout carries the results), with the load."""
    load = os.getloadavg()[0]
    stamp = f"{datetime.now(UTC):%H:%M:%S} load {load:.2f}"
    print(f"[bench {stamp}] {message}", file=sys.stderr, flush=True)


def machine() -> dict[str, str]:
    """CPU model, cores, memory, Python and OS: what the figures depend on."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    memory = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    sqlite = subprocess.run(
        [sys.executable, "-c", "import sqlite3; print(sqlite3.sqlite_version)"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": model,
        "cores": f"{usable} usable ({os.cpu_count()} online)",
        "memory": memory,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "sqlite": sqlite,
        "os": f"{platform.system()} {platform.release()}",
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


@contextmanager
def state_dir(prefix: str) -> Iterator[Path]:
    """A fresh state directory (and room for a rules file next to it), removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=f"watchdog-bench-{prefix}-") as tmp:
        state = Path(tmp) / "state"
        state.mkdir()
        yield state


class ChildProcess(DaemonProcess):
    """`python -m <module>` as a child, its JSON stdout lines parsed like the daemon's.

    The harness runs `python -m watchdog`; the baseline poller is another module, and
    nothing else about watching a child differs.
    """

    def __init__(self, module: str, args: list[str], env: Mapping[str, str]) -> None:
        super().__init__(args, env)
        self.module = module

    def start(self) -> ChildProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, *self.args],
            env=self.env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for stream, sink in (
            (self.proc.stdout, self.stdout_lines),
            (self.proc.stderr, self.stderr_lines),
        ):
            thread = threading.Thread(target=self._read, args=(stream, sink), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __enter__(self) -> ChildProcess:
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


PROFILE: dict[str, Path] = {}
"""Set by `--profile DIR`: {"dir": DIR}. Daemons then run under cProfile (slower!)."""


def watchdog_process(args: list[str], env: Mapping[str, str], *, name: str) -> ChildProcess:
    """The real daemon: `python -m watchdog ARGS` (not started yet).

    With `--profile DIR` it runs under cProfile instead and writes DIR/NAME.prof when it
    stops (on SIGTERM the daemon returns normally, so the profile is written).
    """
    if "dir" in PROFILE:
        out = PROFILE["dir"] / f"{name}.prof"
        return ChildProcess("cProfile", ["-o", str(out), "-m", "watchdog", *args], env)
    return ChildProcess("watchdog", args, env)


def report_profile(name: str, top: int = 25) -> None:
    """Print the hot spots of a profiled daemon run (by own time, then cumulative) to stderr."""
    if "dir" not in PROFILE:
        return
    path = PROFILE["dir"] / f"{name}.prof"
    if not path.exists():
        progress(f"{name}: no profile written at {path}")
        return
    stats = pstats.Stats(str(path), stream=sys.stderr)
    progress(f"{name}: profile of the daemon ({path}), by own time")
    stats.sort_stats("tottime").print_stats(top)
    progress(f"{name}: the same, by cumulative time")
    stats.sort_stats("cumulative").print_stats(top)


def naive_process(env: Mapping[str, str]) -> ChildProcess:
    """The baseline poller `python -m benchmarks.naive_poller` (not started yet)."""
    return ChildProcess("benchmarks.naive_poller", [], env)
