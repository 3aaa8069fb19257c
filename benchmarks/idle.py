"""Idle cost: one series polled every 15 s, and how long `watchdog check` takes.

The daemon watches the workspace alone with one threshold rule that never fires; CPU
(from /proc) is measured over the steady state after the first poll, RSS at the end
(VmRSS) and at its peak (VmHWM). The naive baseline poller then runs the same scenario,
in the same benchmark process. `watchdog check --config rules.example.toml` is timed
as a subprocess (`python -m watchdog` and the `.venv/bin/watchdog` entry point), after
one untimed run that warms the page cache and the bytecode cache.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import (
    ROOT,
    ChildProcess,
    Figure,
    below,
    info,
    median,
    naive_process,
    progress,
    report_profile,
    state_dir,
    watchdog_process,
)
from benchmarks.procstat import CpuMeter, memory
from tests.fakes.elevenlabs import FakeElevenLabs
from tests.fakes.slack import FakeSlack
from tests.harness import API_KEY, SLACK_TOKEN, base_env, daemon_env, write_rules

NAME = "idle"
INTERVAL = 15.0
COUNT, ABOVE = 3, 25

RULES = f"""
[[rules]]
name = "near-concurrency-limit"
kind = "threshold"
scope = "workspace"
above = {ABOVE}
recover_below = 20
for = "1m"
"""


@dataclass
class Idle:
    cpu_percent: float
    cpu_seconds: float
    wall: float
    rss_mb: float
    peak_rss_mb: float
    polls: int


def _measure(proc: ChildProcess, api: FakeElevenLabs, seconds: float) -> Idle:
    api.wait_for_requests(1, timeout=30)
    time.sleep(1.0)  # the first cycle's commit, READY and status
    meter = CpuMeter(proc.pid)
    polls_before = api.served
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.proc is not None
        if proc.proc.poll() is not None:
            raise RuntimeError("process exited during the run:\n" + proc.output())
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    window = meter.read()
    mem = memory(proc.pid)
    return Idle(
        cpu_percent=window.percent_of_core,
        cpu_seconds=window.cpu_seconds,
        wall=window.wall_seconds,
        rss_mb=mem.rss_mb,
        peak_rss_mb=mem.peak_rss_mb,
        polls=api.served - polls_before,
    )


def _ours(seconds: float) -> Idle:
    with (
        FakeElevenLabs(API_KEY, latency=0.05, count=COUNT) as api,
        FakeSlack(SLACK_TOKEN) as slack,
        state_dir(NAME) as state,
    ):
        rules = write_rules(
            state.parent / "rules.toml",
            RULES,
            poll_interval=f"{INTERVAL:g}s",
            stale_after="2m",
            repeat="1h",
            channel="#idle",
        )
        env = daemon_env(
            state, api_url=api.url, slack_api_url=slack.api_url, WATCHDOG_LOG_LEVEL="info"
        )
        with watchdog_process(["run", "--config", str(rules)], env, name=NAME) as proc:
            proc.start()
            proc.wait_for("daemon.started", timeout=30)
            result = _measure(proc, api, seconds)
            proc.stop()
        report_profile(NAME)
    return result


def _naive(seconds: float) -> Idle:
    with FakeElevenLabs(API_KEY, latency=0.05, count=COUNT) as api, FakeSlack(SLACK_TOKEN) as slack:
        env = {
            "PATH": "/usr/bin:/bin",
            "PYTHONUNBUFFERED": "1",
            "ELEVENLABS_BASE_URL": api.url,
            "ELEVENLABS_API_KEY": API_KEY,
            "SLACK_API_URL": slack.api_url,
            "SLACK_BOT_TOKEN": SLACK_TOKEN,
            "SLACK_CHANNEL": "#idle",
            "POLL_INTERVAL": f"{INTERVAL:g}",
            "ABOVE": str(ABOVE),
        }
        with naive_process(env) as proc:
            proc.start()
            proc.wait_for("naive.started", timeout=30)
            result = _measure(proc, api, seconds)
            proc.stop()
    return result


def _check_times(command: list[str], runs: int) -> list[float]:
    with state_dir("check") as state:
        env = base_env(state)
        config = str(ROOT / "rules.example.toml")
        times = []
        for number in range(runs + 1):
            began = time.perf_counter()
            done = subprocess.run(
                [*command, "check", "--config", config],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=False,
            )
            took = time.perf_counter() - began
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(command)} check failed:\n{done.stderr}")
            if number > 0:  # the first run warms caches
                times.append(took)
    return times


def run(quick: bool) -> list[Figure]:
    seconds = 40.0 if quick else 300.0
    naive_seconds = 25.0 if quick else 150.0
    runs = 3 if quick else 9
    progress(f"{NAME}: watchdog, one series at {INTERVAL:g}s for {seconds:.0f}s")
    ours = _ours(seconds)
    progress(f"{NAME}: naive baseline for {naive_seconds:.0f}s")
    naive = _naive(naive_seconds)
    progress(f"{NAME}: watchdog check x {runs} (two ways)")
    module = _check_times([sys.executable, "-m", "watchdog"], runs)
    script = Path(sys.executable).parent / "watchdog"
    entry = _check_times([str(script)], runs) if script.exists() else []
    figures = [
        info(
            NAME,
            "set-up",
            f"1 series, 1 rule, {INTERVAL:g}s interval; measured {ours.wall:.0f}s "
            f"({ours.polls} polls; naive {naive.wall:.0f}s)",
        ),
        below(NAME, "average CPU", ours.cpu_percent, 0.2, "% of a core", ".3f"),
        info(NAME, "CPU time in the window", f"{ours.cpu_seconds * 1000:.0f} ms"),
        below(NAME, "peak RSS (VmHWM)", ours.peak_rss_mb, 70, "MiB", ".1f"),
        info(NAME, "RSS at the end (VmRSS)", f"{ours.rss_mb:.1f} MiB"),
        below(NAME, "`python -m watchdog check` (median)", median(module), 1.0, "s", ".3f"),
    ]
    if entry:
        figures.append(
            below(NAME, "`.venv/bin/watchdog check` (median)", median(entry), 1.0, "s", ".3f")
        )
    figures += [
        info(
            NAME,
            "naive baseline: CPU / peak RSS",
            f"{naive.cpu_percent:.3f} % / {naive.peak_rss_mb:.1f} MiB",
        ),
        info(
            NAME,
            "ratio watchdog / naive: CPU, peak RSS",
            f"{_ratio(ours.cpu_percent, naive.cpu_percent)}, "
            f"{_ratio(ours.peak_rss_mb, naive.peak_rss_mb)}",
        ),
    ]
    return figures


def _ratio(ours: float, naive: float) -> str:
    return f"{ours / naive:.2f}x" if naive > 0 else "n/a (baseline used < 1 tick)"
