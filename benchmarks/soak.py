"""Soak: an operator's bad day, checked against what the fake Slack actually received.

200 agents and the workspace polled every second by the real daemon (`python -m watchdog
run`) against the loopback fakes. Seeded; 20 minutes by default, 3 with `--quick`,
any length with `--soak-minutes N`. What the soak does:

* churn: every second, with some chance, one quiet agent is spiked above the `busy`
  threshold for 4 to 10 s, so alerts fire and resolve every few seconds;
* a collapse of the workspace (to 0 for 30 s) every five minutes;
* every ~30 s one fault, in turn: Slack 429 (Retry-After 3 s), Slack 500 x3, a 20 s Slack
  outage, the API answering 500 for 5 s, a burst of 8 API requests that hang for 30 s,
  a post whose answer is lost (kept by Slack, connection reset);
* SIGHUP every three minutes; one kill -9 and restart at 55 % of the run.

A pass under 10 minutes (`--quick`) compresses the pace so it still sees every kind of
event: a collapse every minute, a fault every 25 s, a SIGHUP every minute.

Then the counts go quiet and the outbox gets 60 s to drain.

The oracle is the fakes, never the daemon's log. Expected transitions come from the
counts the fake API actually served: per series, the first served answer above the
threshold after one at or below it is a firing, the first back at or below is a
resolution (for the collapse rule, below and back). A transition counts as delivered
when the fake Slack holds a post or update whose metadata names the same rule and
series, that transition, and a time within `MATCH_SECONDS` of the serving; a "fired and
resolved" card (a firing folded into its resolution) covers both. "Lost" = expected
transitions not delivered; "duplicated" = one notification's identity (alert id,
transition, time; from the metadata) posted twice (a second card or thread reply); an
edit (`chat.update`) repeated is counted apart: edits are idempotent and may repeat;
"unexpected cards" = posts matching no expected transition (a no-data page while the API
was healthy would show here). Delivery lag = the card's arrival minus the later of the
moment the soak set the count and the last failed Slack attempt before the card (the
channel being reachable again). Stalls = gaps over 2 s in the API's request log outside
the restart. Late series = `watchdog_polls_late_total` from /metrics if the daemon
exports it, else n/a. RSS is sampled every 10 s; its slope is a least-squares fit per
daemon life, after the first minute.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from pathlib import Path

from benchmarks.common import (
    ChildProcess,
    Figure,
    info,
    percentile,
    progress,
    state_dir,
    watchdog_process,
)
from benchmarks.procstat import CpuMeter, memory
from tests.fakes.elevenlabs import ALL, FakeElevenLabs
from tests.fakes.slack import Fail, FakeSlack, SlackCall
from tests.harness import API_KEY, SLACK_TOKEN, daemon_env, rule, write_rules

NAME = "soak"
AGENTS = 200
DEFAULT_MINUTES = 20.0
QUICK_MINUTES = 3.0
MINUTES: dict[str, float] = {}
"""Set by `--soak-minutes N` (overrides the default and --quick)."""
KILL: dict[str, float] = {}
"""Set by `--soak-kill-at F`: when to kill -9, as a share of the churn (0 = never)."""

QUIET, SPIKE, ABOVE = 5, 30, 20
WORKSPACE_LEVEL, COLLAPSE_BELOW = 100, 5
SPIKE_CHANCE = 0.45
SPIKE_SECONDS = (4, 10)
COLLAPSE_SECONDS = 30.0
FAULT_EVERY = 30.0
SIGHUP_EVERY = 180.0
SHORT_FAULT_EVERY, SHORT_SIGHUP_EVERY = 25.0, 60.0
"""In a pass under 10 minutes: so that 3 minutes see every fault and some SIGHUPs."""
KILL_AT = 0.55
DRAIN_SECONDS = 60.0
RSS_EVERY = 10.0
MATCH_SECONDS = 3.0
STALL_SECONDS = 2.0
CHANNELS = {"busy": "#soak-busy", "collapse": "#soak-collapse"}
FAULTS = (
    "slack 429",
    "slack 500 x3",
    "slack outage 20 s",
    "api 500 5 s",
    "api hang x8",
    "lost answer",
)


def _agents() -> list[tuple[str, str]]:
    return [(f"agent_{i:03d}", f"a{i:03d}") for i in range(AGENTS)]


def _rules() -> str:
    return rule("busy", scope=["*"], above=ABOVE, for_="0s", channel=CHANNELS["busy"]) + rule(
        "collapse",
        scope=["workspace"],
        below=COLLAPSE_BELOW,
        for_="0s",
        channel=CHANNELS["collapse"],
    )


@dataclass
class Life:
    """One daemon process: its samples of RSS (seconds since start, MiB), CPU, fds."""

    proc: ChildProcess
    started: float
    cpu: CpuMeter
    rss: list[tuple[float, float]] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)
    cpu_seconds: float = 0.0
    late: float | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid


class Soak:
    """Drives the fakes and the daemon for one run; everything observed is kept here."""

    def __init__(self, minutes: float, seed: int = 16) -> None:
        self.seconds = minutes * 60
        self.rng = random.Random(seed)
        self.api = FakeElevenLabs(API_KEY, count=WORKSPACE_LEVEL, hang_seconds=30.0)
        self.slack = FakeSlack(SLACK_TOKEN)
        self.sets: list[tuple[float, str, int]] = []  # (monotonic, series, count)
        self.faults: Counter[str] = Counter()
        self.lives: list[Life] = []
        self.kill_window: tuple[float, float] | None = None
        self.sighups = 0
        self.collapses = 0
        self._stop = threading.Event()
        self.metrics_port = _free_port()

    # -- the scenario -------------------------------------------------------------------

    @property
    def long(self) -> bool:
        """At least 10 minutes: the issue's pace of collapses, faults and SIGHUPs."""
        return self.seconds >= 600

    def _set(self, series: str, agent_id: str | None, count: int) -> None:
        self.sets.append((self.api.set_count(count, agent_id), series, count))

    def churn(self, until: float) -> None:
        """Spikes, collapses and faults, once a second, until `until` (monotonic)."""
        agents = _agents()
        spiked: dict[str, tuple[str, float]] = {}  # agent id -> (name, ends)
        began = time.monotonic()
        collapse_every = 300.0 if self.long else 60.0
        fault_every = FAULT_EVERY if self.long else SHORT_FAULT_EVERY
        next_collapse, collapse_ends = began + collapse_every, None
        next_fault, fault_index = began + fault_every, 0
        tick = began
        while (now := time.monotonic()) < until and not self._stop.is_set():
            for agent_id, (name, ends) in list(spiked.items()):
                if now >= ends:
                    self._set(name, agent_id, QUIET)
                    del spiked[agent_id]
            if self.rng.random() < SPIKE_CHANCE:
                name, agent_id = self.rng.choice(agents)
                if agent_id not in spiked:
                    spiked[agent_id] = (name, now + self.rng.uniform(*SPIKE_SECONDS))
                    self._set(name, agent_id, SPIKE)
            if collapse_ends is None and now >= next_collapse:
                self._set("workspace", None, 0)
                self.collapses += 1
                collapse_ends = now + COLLAPSE_SECONDS
            elif collapse_ends is not None and now >= collapse_ends:
                self._set("workspace", None, WORKSPACE_LEVEL)
                collapse_ends, next_collapse = None, next_collapse + collapse_every
            if now >= next_fault:
                self._fault(FAULTS[fault_index % len(FAULTS)])
                fault_index += 1
                next_fault += fault_every
            tick += 1.0
            self._stop.wait(max(0.0, tick - time.monotonic()))
        for agent_id, (series, _) in spiked.items():
            self._set(series, agent_id, QUIET)
        if collapse_ends is not None:
            self._set("workspace", None, WORKSPACE_LEVEL)

    def _fault(self, fault: str) -> None:
        self.faults[fault] += 1
        if fault == "slack 429":
            self.slack.fail_next([Fail.status(429, retry_after=3)])
        elif fault == "slack 500 x3":
            self.slack.fail_next([Fail.status(500)] * 3)
        elif fault == "slack outage 20 s":
            self.slack.outage(True)
            threading.Timer(20.0, self.slack.outage, args=(False,)).start()
        elif fault == "api 500 5 s":
            self.api.set_behaviour(500, ALL)
            threading.Timer(5.0, self.api.set_behaviour, args=("normal", ALL)).start()
        elif fault == "api hang x8":
            self.api.set_behaviour("hang", ALL, times=8)
        elif fault == "lost answer":
            self.slack.fail_next([Fail.reset(accept=True)])

    # -- the daemon -------------------------------------------------------------------

    def start_daemon(self, config: Path, env: dict[str, str]) -> Life:
        proc = watchdog_process(["run", "--config", str(config)], env, name=NAME)
        proc.start()
        proc.wait_for("daemon.started", timeout=60)
        life = Life(proc, time.monotonic(), CpuMeter(proc.pid))
        self.lives.append(life)
        return life

    def sample(self, life: Life) -> None:
        """RSS and fds now; CPU so far (kept, since a killed process cannot be read)."""
        try:
            life.rss.append((time.monotonic() - life.started, memory(life.pid).rss_mb))
            life.fds.append(len(os.listdir(f"/proc/{life.pid}/fd")))
            life.cpu_seconds = life.cpu.read().cpu_seconds
            life.late = self.late_polls()
        except (OSError, KeyError):
            pass

    def late_polls(self) -> float | None:
        """`watchdog_polls_late_total` summed over labels, if the daemon exports it."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                text = response.read().decode()
        except OSError:
            return None
        values = [
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("watchdog_polls_late_total")
        ]
        return sum(values) if values else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the oracle --------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    rule: str
    series: str
    kind: str  # "firing" or "resolved"
    served_at: float  # monotonic: the first answer that carried the change
    set_at: float  # monotonic: when the soak set that count


def expected_transitions(api: FakeElevenLabs, sets: list[tuple[float, str, int]]) -> list[Expected]:
    """Crossings in the answers the fake API served, per series."""
    names = {agent_id: name for name, agent_id in _agents()}
    set_times: dict[str, list[tuple[float, int]]] = {}
    for at, series, count in sets:
        set_times.setdefault(series, []).append((at, count))
    breaching: dict[str, bool] = {}
    out: list[Expected] = []
    for response in api.responses:
        if response.count is None:
            continue
        named = "workspace" if response.agent_id is None else names.get(response.agent_id)
        if named is None:
            continue
        series = named
        rule_name = "collapse" if series == "workspace" else "busy"
        now = response.count < COLLAPSE_BELOW if series == "workspace" else response.count > ABOVE
        was = breaching.get(series, False)
        if now != was:
            set_at = max(
                (
                    at
                    for at, count in set_times.get(series, [])
                    if at <= response.sent_at and count == response.count
                ),
                default=response.sent_at,
            )
            kind = "firing" if now else "resolved"
            out.append(Expected(rule_name, series, kind, response.sent_at, set_at))
        breaching[series] = now
    return out


@dataclass(frozen=True)
class Card:
    """One accepted Slack call with our metadata."""

    call: SlackCall
    alert_id: str
    transition: str
    at: float  # the notification's time, as monotonic in this process
    rule: str
    series: str
    folded: bool


def cards(slack: FakeSlack, wall_minus_mono: float) -> list[Card]:
    out: list[Card] = []
    for call in slack.messages:
        payload = (call.metadata or {}).get("event_payload")
        if not isinstance(payload, dict):
            continue
        at = datetime.fromisoformat(payload["at"]).timestamp() - wall_minus_mono
        text = call.text + " ".join(str(b) for b in call.blocks)
        out.append(
            Card(
                call,
                payload["alert_id"],
                payload["transition"],
                at,
                payload.get("rule", ""),
                payload.get("series", ""),
                folded=payload["transition"] == "resolved" and "fired and resolved" in text.lower(),
            )
        )
    return out


@dataclass
class Verdict:
    expected: int
    delivered: int
    lost: list[Expected]
    duplicated: int
    repeated_edits: int
    unexpected: Counter[str]  # by rule
    lags: list[float]


def judge(expected: list[Expected], got: list[Card], slack: FakeSlack) -> Verdict:
    failed_attempts = sorted(a.received_at for a in slack.attempts if not a.ok)
    by_key: dict[tuple[str, str, str], list[Card]] = {}
    for card in got:
        by_key.setdefault((card.rule, card.series, card.transition), []).append(card)
    matched: set[int] = set()
    lost: list[Expected] = []
    lags: list[float] = []
    for want in expected:
        candidates = [
            c
            for c in by_key.get((want.rule, want.series, want.kind), [])
            if abs(c.at - want.served_at) <= MATCH_SECONDS
        ]
        if not candidates and want.kind == "firing":
            # folded into a "fired and resolved" card: the resolution's card covers it
            candidates = [
                c
                for c in by_key.get((want.rule, want.series, "resolved"), [])
                if c.folded
                and c.at >= want.served_at - MATCH_SECONDS
                and c.at - want.served_at <= SPIKE_SECONDS[1] + COLLAPSE_SECONDS
            ][:1]
        if not candidates:
            lost.append(want)
            continue
        first = min(candidates, key=lambda c: c.call.received_at)
        matched.update(id(c) for c in candidates)
        arrived = first.call.received_at
        reachable = max(
            (t for t in failed_attempts if want.set_at <= t < arrived), default=want.set_at
        )
        lags.append(arrived - reachable)
    identities = Counter((c.call.method, c.alert_id, c.transition, c.at) for c in got)
    duplicated = sum(
        n - 1 for key, n in identities.items() if n > 1 and key[0] == "chat.postMessage"
    )
    repeated_edits = sum(
        n - 1 for key, n in identities.items() if n > 1 and key[0] != "chat.postMessage"
    )
    unexpected = Counter(
        c.rule
        for c in got
        if id(c) not in matched and c.call.method == "chat.postMessage" and c.call.thread_ts is None
    )
    return Verdict(
        len(expected), len(expected) - len(lost), lost, duplicated, repeated_edits, unexpected, lags
    )


# -- the run -----------------------------------------------------------------------------


def _slope_mib_per_hour(points: list[tuple[float, float]], after: float = 60.0) -> float:
    pts = [(t, v) for t, v in points if t >= after]
    if len(pts) < 3:
        return float("nan")
    n = len(pts)
    mt = sum(t for t, _ in pts) / n
    mv = sum(v for _, v in pts) / n
    var = sum((t - mt) ** 2 for t, _ in pts)
    return 3600 * sum((t - mt) * (v - mv) for t, v in pts) / var if var else float("nan")


def _stalls(soak: Soak, since: float, until: float) -> list[float]:
    """Gaps over `STALL_SECONDS` between two API requests, except across the restart."""
    times = [r.at for r in soak.api.requests if since <= r.at <= until]
    k0, k1 = soak.kill_window or (float("inf"), float("-inf"))
    return [
        b - a for a, b in pairwise(times) if b - a > STALL_SECONDS and not (a <= k1 and b >= k0)
    ]


def _by_kind(lost: list[Expected]) -> str:
    return ", ".join(f"{n} {key}" for key, n in Counter(f"{e.rule} {e.kind}" for e in lost).items())


def _rss_at(points: list[tuple[float, float]], seconds: float) -> str:
    """The last RSS sample taken by `seconds` into a life ("-" if the life was shorter)."""
    if not points or (seconds != float("inf") and points[-1][0] < seconds):
        return "-"
    return f"{[v for t, v in points if t <= seconds][-1]:.1f}"


def _flat_memory(points: list[tuple[float, float]]) -> list[Figure]:
    """Issue 16's criterion, where one life spans it: RSS at 60 min within 10 % of 10 min."""
    if not points or points[-1][0] < 3600:
        return []
    at10 = [v for t, v in points if t <= 600][-1]
    at60 = [v for t, v in points if t <= 3600][-1]
    change = 100 * (at60 - at10) / at10
    return [
        Figure(
            NAME,
            "RSS at 10 min -> 60 min (one life)",
            f"{at10:.1f} -> {at60:.1f} MiB ({change:+.1f} %)",
            "within 10 %",
            abs(change) <= 10,
        )
    ]


def run(quick: bool) -> list[Figure]:
    minutes = MINUTES.get("minutes", QUICK_MINUTES if quick else DEFAULT_MINUTES)
    soak = Soak(minutes)
    wall_minus_mono = time.time() - time.monotonic()
    with soak.api, soak.slack, state_dir(NAME) as state:
        for _name, agent_id in _agents():
            soak.api.add_agent(agent_id, QUIET)
        for channel in CHANNELS.values():
            soak.slack.add_channel(channel)
        config = write_rules(
            state.parent / "rules.toml",
            _rules(),
            poll_interval="1s",
            stale_after="10s",
            repeat="0s",
            channel=CHANNELS["busy"],
            agents=_agents(),
        )
        env = daemon_env(
            state,
            api_url=soak.api.url,
            slack_api_url=soak.slack.api_url,
            WATCHDOG_LOG_LEVEL="info",
            WATCHDOG_TIMEOUT="10s",
            WATCHDOG_METRICS_ADDR=f"127.0.0.1:{soak.metrics_port}",
        )
        life = soak.start_daemon(config, env)
        began = time.monotonic()
        churn_until = began + soak.seconds
        churner = threading.Thread(
            target=soak.churn, args=(churn_until,), name="churn", daemon=True
        )
        churner.start()
        sighup_every = SIGHUP_EVERY if soak.long else SHORT_SIGHUP_EVERY
        next_sample, next_hup, killed = began, began + sighup_every, False
        kill_at = KILL.get("at", KILL_AT)
        end = churn_until + DRAIN_SECONDS
        try:
            while (now := time.monotonic()) < end:
                if now >= next_sample:
                    soak.sample(life)
                    next_sample += RSS_EVERY
                if now >= next_hup and now < churn_until:
                    life.proc.send(signal.SIGHUP)
                    soak.sighups += 1
                    next_hup += sighup_every
                if not killed and kill_at and now >= began + kill_at * soak.seconds:
                    soak.sample(life)
                    k0 = time.monotonic()
                    life.proc.kill()
                    progress(f"{NAME}: killed -9 at {k0 - began:.0f} s, restarting")
                    life = soak.start_daemon(config, env)
                    soak.kill_window = (k0, time.monotonic() + 1.0)
                    killed = True
                    next_sample = time.monotonic()
                if int(now - began) % 60 == 0 and life.rss:
                    progress(
                        f"{NAME}: {now - began:.0f} s, {len(soak.slack.messages)} Slack calls, "
                        f"RSS {life.rss[-1][1]:.1f} MiB"
                    )
                time.sleep(1.0)
            soak.sample(life)
        finally:
            soak._stop.set()
            churner.join(timeout=10)
            life.proc.stop(timeout=30)
        expected = expected_transitions(soak.api, soak.sets)
        got = cards(soak.slack, wall_minus_mono)
        verdict = judge(expected, got, soak.slack)
        stalls = _stalls(soak, began, churn_until)
        polls = sum(1 for r in soak.api.responses if r.count is not None)
        tracebacks = sum(
            "Traceback" in line
            for lf in soak.lives
            for line in lf.proc.stderr_lines + lf.proc.stdout_lines
        )
    return _figures(soak, minutes, verdict, stalls, polls, got, tracebacks)


def _figures(
    soak: Soak,
    minutes: float,
    v: Verdict,
    stalls: list[float],
    polls: int,
    got: list[Card],
    tracebacks: int,
) -> list[Figure]:
    lives = soak.lives
    rss_first, rss_last = lives[0].rss, lives[-1].rss
    slopes = ", ".join(f"{_slope_mib_per_hour(lf.rss):.1f}" for lf in lives)
    cpu = sum(lf.cpu_seconds for lf in lives)
    fds = [n for lf in lives for n in lf.fds]
    late = lives[-1].late
    rss_points = "; ".join(
        ", ".join(_rss_at(lf.rss, t) for t in (60, 300, 600, float("inf"))) + " MiB" for lf in lives
    )
    return [
        info(
            NAME,
            "set-up",
            f"{AGENTS} agents + workspace, 1 s polls, {minutes:g} min churn + "
            f"{DRAIN_SECONDS:g} s drain, seed 16; faults {dict(soak.faults)}, "
            f"{soak.collapses} collapses, {soak.sighups} SIGHUPs, "
            f"{len(lives) - 1} kill -9",
        ),
        info(NAME, "polls answered with a count", f"{polls:,}"),
        info(
            NAME,
            "transitions expected (from the counts served) / delivered",
            f"{v.expected} / {v.delivered}",
        ),
        info(
            NAME,
            "cards (Slack calls with our metadata): posts / updates",
            f"{sum(c.call.method == 'chat.postMessage' for c in got)} / "
            f"{sum(c.call.method == 'chat.update' for c in got)}",
        ),
        Figure(
            NAME,
            "lost transitions",
            f"{len(v.lost)}" + (f" ({_by_kind(v.lost)}; e.g. {v.lost[0]})" if v.lost else ""),
            "0",
            not v.lost,
        ),
        Figure(NAME, "duplicated posts", f"{v.duplicated}", "0", v.duplicated == 0),
        info(NAME, "repeated edits (idempotent chat.update)", f"{v.repeated_edits}"),
        info(
            NAME,
            "unexpected top-level cards (no expected transition; e.g. no-data)",
            f"{v.unexpected.total()}"
            + (f" (by rule: {dict(v.unexpected.most_common())})" if v.unexpected else ""),
        ),
        info(
            NAME,
            "late series (watchdog_polls_late_total)",
            "n/a (not exported)" if late is None else f"{late:g}",
        ),
        Figure(
            NAME,
            "stalls over 2 s in the API request log (outside the restart)",
            f"{len(stalls)}" + (f" (longest {max(stalls):.1f} s)" if stalls else ""),
            "0",
            not stalls,
        ),
        Figure(
            NAME,
            "delivery lag p99 / max",
            f"{percentile(v.lags, 99):.1f} / {max(v.lags, default=float('nan')):.1f} s",
            "max <= 60 s",
            max(v.lags, default=0) <= 60,
        ),
        info(
            NAME,
            "RSS: first sample, last before kill; after restart first, last",
            f"{rss_first[0][1]:.1f}, {rss_first[-1][1]:.1f}; "
            f"{rss_last[0][1]:.1f}, {rss_last[-1][1]:.1f} MiB",
        ),
        info(NAME, "RSS of each life: at 60 s, 300 s, 600 s, end", rss_points),
        *_flat_memory(lives[0].rss),
        info(NAME, "RSS slope per life, after its first minute", f"{slopes} MiB/h"),
        info(NAME, "open fds: min / max", f"{min(fds, default=0)} / {max(fds, default=0)}"),
        info(
            NAME,
            "CPU, both lives",
            f"{cpu:.0f} s = {100 * cpu / (soak.seconds + DRAIN_SECONDS):.1f} % of a core",
        ),
        Figure(NAME, "tracebacks in the daemon's output", f"{tracebacks}", "0", tracebacks == 0),
    ]
