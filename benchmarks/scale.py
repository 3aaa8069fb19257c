"""Scale: 1,000 agents plus the workspace, 3 rules each, 15 s interval, API latency 50 ms.

The real daemon polls a `FakeElevenLabs` that knows 1,000 agents. Each interval a churn
thread moves a quarter of the agents by one conversation around their level (live counts
wobble; most polls see no change), and spikes two agents for three intervals so alerts
fire and resolve on every rule and Slack's 1 message/s/channel pacing is exercised (one
channel per rule). Measured:

* cycles: from the fake's request log, cycle k runs from the k-th workspace request to
  the last k-th answer of any series; every cycle after the first must end inside its
  interval, and the daemon must log no `poll.cycle_overrun` (its own measure, which also
  counts the commit at the end of the cycle; the first overrun is always logged). The
  spacing of cycle starts is shown too: it exceeds the interval when a cycle overran,
  and by a few ms of event-loop jitter otherwise.
* the most requests the fake ever had in flight, against the configured concurrency;
* CPU (from /proc) over the steady state after the first cycle, and peak RSS (VmHWM);
* the state database: a generated history written through the `Store` the way the
  daemon writes it (see `generate_history`), with the same wobble, extrapolated from its
  hourly growth to a week; and, for reference, how much the daemon's own file grew per
  answered poll during the run (at full resolution: thinning only starts after an hour).

The change rules use 1m and 2m windows so that they are evaluated within a run of a few
minutes (the cost per evaluation does not depend on the window; see the engine benchmark).
The naive baseline poller then runs the same scenario, in the same benchmark process.
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchmarks.common import (
    ChildProcess,
    Figure,
    at_most,
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
from tests.harness import API_KEY, SLACK_TOKEN, daemon_env, write_rules
from watchdog.daemon import FULL_RESOLUTION_FOR, PRUNE_EVERY_SECONDS, THINNED_RESOLUTION
from watchdog.engine import SPARKLINE_LENGTH
from watchdog.model import Sample
from watchdog.store import Store

NAME = "scale"
AGENTS = 1000
INTERVAL = 15.0
API_LATENCY = 0.05
CONCURRENCY = 8
SPIKE, SPIKE_CYCLES, SPIKES_PER_CYCLE = 30, 3, 2
CHANNELS = {"busy": "#scale-busy", "collapse": "#scale-collapse", "surge": "#scale-surge"}
WEEK = timedelta(days=7)
RETENTION = timedelta(days=7)
WINDOWS = (timedelta(minutes=1), timedelta(minutes=2))  # of the collapse and surge rules


def agent_ids() -> list[tuple[str, str]]:
    return [(f"a{i:04d}", f"agent_{i:04d}") for i in range(AGENTS)]


def rules_body() -> str:
    scope = '["workspace", "*"]'
    return f"""
[[rules]]
name = "busy"
kind = "threshold"
scope = {scope}
above = 20
recover_below = 15
for = "30s"
channel = "{CHANNELS["busy"]}"

[[rules]]
name = "collapse"
kind = "change"
scope = {scope}
window = "{WINDOWS[0].seconds}s"
drop_pct = 50
min_base = 5
channel = "{CHANNELS["collapse"]}"

[[rules]]
name = "surge"
kind = "change"
scope = {scope}
window = "{WINDOWS[1].seconds}s"
rise = 15
channel = "{CHANNELS["surge"]}"
"""


WOBBLE_SHARE = 0.25
"""Share of series whose count re-draws its offset (-1, 0, +1) from its level each poll."""


class Churn:
    """Each interval: wobbles a quarter of the agents, spikes two, lets older spikes go."""

    def __init__(self, api: FakeElevenLabs, baseline: dict[str, int], seed: int) -> None:
        self._api = api
        self._baseline = baseline
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="churn", daemon=True)

    def start(self) -> Churn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        spiked: list[list[str]] = []
        ids = list(self._baseline)
        rng = self._rng
        while not self._stop.wait(INTERVAL):
            busy = {agent_id for chosen in spiked for agent_id in chosen}
            for agent_id in rng.sample(ids, int(len(ids) * WOBBLE_SHARE)):
                if agent_id not in busy:
                    self._api.set_count(self._baseline[agent_id] + rng.randint(-1, 1), agent_id)
            if len(spiked) >= SPIKE_CYCLES:
                for agent_id in spiked.pop(0):
                    self._api.set_count(self._baseline[agent_id], agent_id)
            chosen = rng.sample(ids, SPIKES_PER_CYCLE)
            for agent_id in chosen:
                self._api.set_count(SPIKE, agent_id)
            spiked.append(chosen)


def _fake_api(seed: int) -> tuple[FakeElevenLabs, dict[str, int]]:
    rng = random.Random(seed)
    api = FakeElevenLabs(API_KEY, latency=API_LATENCY, count=12)
    baseline = {agent_id: rng.randint(3, 10) for _, agent_id in agent_ids()}
    for agent_id, count in baseline.items():
        api.add_agent(agent_id, count)
    return api, baseline


@dataclass
class Run:
    cpu_percent: float
    cpu_window: float
    rss_mb: float
    peak_rss_mb: float
    cycle_durations: list[float]
    cycle_starts: list[float]
    max_in_flight: int
    db_growth: int = 0  # bytes the state database grew by during the window
    polls_answered: int = 0  # good answers the fake sent during the window


def _cycles(api: FakeElevenLabs, since: float, until: float) -> tuple[list[float], list[float]]:
    """Durations and start times of complete cycles (after the first) in [since, until].

    Every cycle polls every series once, so the k-th answer to each series belongs to
    cycle k (this holds while no poll fails; the run reports poll failures).
    """
    starts = [r.at for r in api.requests if "agent_id" not in r.query]
    answers: dict[str | None, list[float]] = defaultdict(list)
    for response in api.responses:
        answers[response.agent_id].append(response.sent_at)
    durations: list[float] = []
    kept: list[float] = []
    for k, start in enumerate(starts):
        if k == 0 or start < since:
            continue
        if any(len(times) <= k for times in answers.values()):
            break  # the cycle was not complete when the run ended
        end = max(times[k] for times in answers.values())
        if end > until:
            break
        durations.append(end - start)
        kept.append(start)
    return durations, kept


def _measure(
    proc: ChildProcess, api: FakeElevenLabs, seconds: float, db: Path | None = None
) -> Run:
    """After the first full cycle, measure `seconds` of steady state."""
    api.wait_for_requests(AGENTS + 1, timeout=60)
    time.sleep(1.0)  # the first cycle's commit and tick
    meter = CpuMeter(proc.pid)
    since = time.monotonic()
    answered0 = len(api.responses)
    size0 = _db_size(db) if db is not None else 0
    deadline = since + seconds
    while time.monotonic() < deadline:
        assert proc.proc is not None
        if proc.proc.poll() is not None:
            raise RuntimeError("process exited during the run:\n" + proc.output())
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    window = meter.read()
    mem = memory(proc.pid)
    size1 = _db_size(db) if db is not None else 0
    answered = len(api.responses) - answered0
    durations, starts = _cycles(api, since, time.monotonic())
    return Run(
        cpu_percent=window.percent_of_core,
        cpu_window=window.wall_seconds,
        rss_mb=mem.rss_mb,
        peak_rss_mb=mem.peak_rss_mb,
        cycle_durations=durations,
        cycle_starts=starts,
        max_in_flight=api.max_in_flight,
        db_growth=size1 - size0,
        polls_answered=answered,
    )


def _db_size(path: Path) -> int:
    """Bytes of the database as a reader sees it (committed pages, WAL included)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return _size(conn)


@dataclass
class Ours:
    run: Run
    overrun_events: list[dict[str, object]]
    poll_failures: int
    alerts_fired: int
    sent: int
    outbox_left: int
    min_spacing: float | None
    db_bytes: int
    db_samples: int


def _ours(seconds: float) -> Ours:
    api, baseline = _fake_api(seed=3)
    with api, FakeSlack(SLACK_TOKEN) as slack, state_dir(NAME) as state:
        rules = write_rules(
            state.parent / "rules.toml",
            rules_body(),
            poll_interval=f"{INTERVAL:g}s",
            stale_after="2m",
            repeat="0s",
            channel="#scale",
            agents=agent_ids(),
        )
        env = daemon_env(
            state,
            api_url=api.url,
            slack_api_url=slack.api_url,
            WATCHDOG_LOG_LEVEL="info",
            WATCHDOG_CONCURRENCY=str(CONCURRENCY),
            WATCHDOG_TIMEOUT="10s",
        )
        churn = Churn(api, baseline, seed=5)
        db = Store.default_path(state)
        with watchdog_process(["run", "--config", str(rules)], env, name=NAME) as proc:
            proc.start()
            proc.wait_for("daemon.started", timeout=60)
            churn.start()
            try:
                run = _measure(proc, api, seconds, db)
            finally:
                churn.stop()
            proc.stop(timeout=30)
        report_profile(NAME)
        spacings = [slack.min_spacing(channel) for channel in CHANNELS.values()]
        measured = [s for s in spacings if s is not None]
        db_bytes = sum(p.stat().st_size for p in state.iterdir() if p.name.startswith(db.name))
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            (samples,) = conn.execute("SELECT COUNT(*) FROM samples").fetchone()
            (outbox,) = conn.execute("SELECT COUNT(*) FROM outbox").fetchone()
        return Ours(
            run=run,
            overrun_events=proc.find("poll.cycle_overrun"),
            poll_failures=len(proc.find("poll.failed")),
            alerts_fired=len(proc.find("alert.firing")),
            sent=len(proc.find("notify.sent")),
            outbox_left=int(outbox),
            min_spacing=min(measured) if measured else None,
            db_bytes=db_bytes,
            db_samples=int(samples),
        )


def _naive(seconds: float) -> Run:
    api, baseline = _fake_api(seed=3)
    with api, FakeSlack(SLACK_TOKEN) as slack:
        env = {
            "PATH": "/usr/bin:/bin",
            "PYTHONUNBUFFERED": "1",
            "ELEVENLABS_BASE_URL": api.url,
            "ELEVENLABS_API_KEY": API_KEY,
            "SLACK_API_URL": slack.api_url,
            "SLACK_BOT_TOKEN": SLACK_TOKEN,
            "SLACK_CHANNEL": CHANNELS["busy"],
            "POLL_INTERVAL": f"{INTERVAL:g}",
            "ABOVE": "20",
            "CONCURRENCY": str(CONCURRENCY),
            "AGENT_IDS": ",".join(agent_id for _, agent_id in agent_ids()),
        }
        churn = Churn(api, baseline, seed=5)
        with naive_process(env) as proc:
            proc.start()
            proc.wait_for("naive.started", timeout=60)
            churn.start()
            try:
                run = _measure(proc, api, seconds)
            finally:
                churn.stop()
            proc.stop(timeout=30)
    return run


@dataclass
class History:
    """A generated history: database size at each hour, and how fast it was written."""

    sizes: list[tuple[float, int]]  # (hours written, bytes)
    samples_per_second: float

    def per_hour(self) -> float:
        """Bytes the file grows by per hour over the later half (the last hour if short)."""
        hours, size = self.sizes[-1]
        span = hours / 2 if hours >= 8 else 1.0
        earlier = min(self.sizes, key=lambda point: abs(point[0] - (hours - span)))
        return (size - earlier[1]) / (hours - earlier[0])

    def week_bytes(self) -> float:
        """Size after a week: the last size plus that hourly growth until the week is full.

        The full-resolution horizon and the thinning lag reach a steady state within a few
        hours; from then on the file grows by the same amount each hour until `retention`
        starts deleting, so a straight line from the later half gives the week's size.
        """
        hours, size = self.sizes[-1]
        week_hours = WEEK / timedelta(hours=1)
        return size + self.per_hour() * max(0.0, week_hours - hours)


def generate_history(hours: float) -> History:
    """Write `hours` of 1,001-series history through `Store`, as the daemon does.

    This mirrors the daemon's write policy as of this writing: `Daemon._flush` stores
    every good sample; `Daemon._prune`, hourly, deletes what is older than the retention
    and thins samples older than the full-resolution horizon (the longest of the change
    windows, the sparkline and `FULL_RESOLUTION_FOR`) to one per `THINNED_RESOLUTION`. If
    that policy changes, change this to match. One apply per poll cycle would cost one
    fsync per cycle; the rows and their order are the same with 40 cycles per apply, which
    is what makes generating hours quick.
    """
    names = ["workspace", *(name for name, _ in agent_ids())]
    cycles = int(hours * 3600 / INTERVAL)
    per_apply = 40
    step = timedelta(seconds=INTERVAL)
    sparkline = step * (SPARKLINE_LENGTH + 1)
    full = max(*WINDOWS, sparkline, FULL_RESOLUTION_FOR)
    prune_every = timedelta(seconds=PRUNE_EVERY_SECONDS)
    start = datetime(2025, 1, 6, tzinfo=UTC)
    rng = random.Random(11)
    level = {name: rng.randint(3, 10) for name in names}
    count = dict(level)
    sizes: list[tuple[float, int]] = []
    with tempfile.TemporaryDirectory(prefix="watchdog-bench-history-") as tmp:
        path = Path(tmp) / "watchdog.db"
        store = Store.open(path)
        reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        began = time.perf_counter()
        batch: list[Sample] = []
        last_prune = start
        for cycle in range(cycles):
            at = start + cycle * step
            for name in rng.sample(names, int(len(names) * WOBBLE_SHARE)):
                count[name] = level[name] + rng.randint(-1, 1)
            batch.extend(Sample(name, at, count[name]) for name in names)
            if (cycle + 1) % per_apply == 0 or cycle == cycles - 1:
                store.apply(samples=batch)
                batch = []
                if at - last_prune >= prune_every:
                    store.prune_samples(at - RETENTION)
                    store.thin_samples(
                        after=at - full - 2 * prune_every,
                        before=at - full,
                        resolution=THINNED_RESOLUTION,
                    )
                    last_prune = at
            if (cycle + 1) % int(3600 / INTERVAL) == 0:
                sizes.append(((cycle + 1) * INTERVAL / 3600, _size(reader)))
        rate = cycles * len(names) / (time.perf_counter() - began)
        reader.close()
        store.close()
        return History(sizes, rate)


def _size(conn: sqlite3.Connection) -> int:
    """Bytes the database occupies (what the file will be once the WAL is checkpointed)."""
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    return int(pages) * int(page_size)


def run(quick: bool) -> list[Figure]:
    seconds = 45.0 if quick else 150.0
    naive_seconds = 30.0 if quick else 90.0
    history_hours = 4.0 if quick else 24.0
    progress(f"{NAME}: watchdog, {AGENTS} agents + workspace, {seconds:.0f}s of steady state")
    ours = _ours(seconds)
    progress(f"{NAME}: naive baseline, {naive_seconds:.0f}s of steady state")
    naive = _naive(naive_seconds)
    progress(f"{NAME}: writing {history_hours:g}h of history through Store.apply")
    history = generate_history(history_hours)
    series = AGENTS + 1
    week_samples = series * WEEK / timedelta(seconds=INTERVAL)
    week_mb = history.week_bytes() / 1e6
    shown = [point for point in history.sizes if point[0] in (1, 2, 3, 4, 6, 12, 18, 24)]
    run_ = ours.run
    live_per_poll = run_.db_growth / run_.polls_answered if run_.polls_answered else 0.0
    overruns = sum(int(str(e.get("overruns", 1))) for e in ours.overrun_events)
    worst_took = max((float(str(e.get("took", 0))) for e in ours.overrun_events), default=0.0)
    durations = run_.cycle_durations
    gaps = [b - a for a, b in zip(run_.cycle_starts, run_.cycle_starts[1:], strict=False)]
    return [
        info(
            NAME,
            "set-up",
            f"{series} series x 3 rules, {INTERVAL:g}s interval, API {API_LATENCY * 1000:g} ms, "
            f"concurrency {CONCURRENCY}, {run_.cpu_window:.0f}s measured "
            f"({len(durations)} complete cycles after the first)",
        ),
        at_most(
            NAME,
            "slowest cycle, first request to last answer",
            max(durations, default=float("nan")),
            INTERVAL,
            "s",
            ".3f",
        ),
        info(
            NAME,
            "cycle start to next start: median / max (drift of the schedule)",
            f"{median(gaps):.3f} / {max(gaps, default=float('nan')):.3f} s",
        ),
        Figure(
            NAME,
            "poll.cycle_overrun events (overruns they report; worst `took`)",
            f"{len(ours.overrun_events)} ({overruns}; {worst_took:.3f} s)",
            "0",
            not ours.overrun_events,
        ),
        at_most(NAME, "most API requests in flight", run_.max_in_flight, CONCURRENCY, "", "d"),
        below(NAME, "average CPU, steady state", run_.cpu_percent, 7, "% of a core", ".2f"),
        below(NAME, "peak RSS (VmHWM)", run_.peak_rss_mb, 120, "MiB", ".1f"),
        info(
            NAME,
            "alerts fired / notifications sent / left in outbox / poll failures",
            f"{ours.alerts_fired} / {ours.sent} / {ours.outbox_left} / {ours.poll_failures}",
        ),
        info(
            NAME,
            "closest two posts in one channel (pacing 1/s)",
            "n/a" if ours.min_spacing is None else f"{ours.min_spacing:.3f} s",
        ),
        info(
            NAME,
            "daemon's own database after the run",
            f"{ours.db_bytes / 1e6:.2f} MB for {ours.db_samples:,} samples; grew "
            f"{run_.db_growth / 1e3:.0f} kB for {run_.polls_answered:,} polls in the window "
            f"= {live_per_poll:.1f} B/poll at full resolution (nothing is thinned yet)",
        ),
        info(
            NAME,
            "generated history: MB after " + ", ".join(f"{h:g}h" for h, _ in shown),
            ", ".join(f"{b / 1e6:.1f}" for _, b in shown)
            + f"; then {history.per_hour() / 1e6:.2f} MB/hour"
            + f" (written at {history.samples_per_second:,.0f} samples/s)",
        ),
        below(
            NAME,
            f"state database after a week ({week_samples / 1e6:.1f}M polls; extrapolated "
            f"from {history_hours:g}h of generated history)",
            week_mb,
            500,
            "MB",
            ".0f",
        ),
        info(
            NAME,
            "naive baseline: CPU / peak RSS",
            f"{naive.cpu_percent:.2f} % / {naive.peak_rss_mb:.1f} MiB "
            f"(slowest cycle {max(naive.cycle_durations, default=float('nan')):.3f} s)",
        ),
        info(
            NAME,
            "ratio watchdog / naive: CPU, peak RSS",
            f"{run_.cpu_percent / naive.cpu_percent:.2f}x, "
            f"{run_.peak_rss_mb / naive.peak_rss_mb:.2f}x",
        ),
    ]
