"""Fail-over: a high-availability pair on PostgreSQL, its leader killed round after round.

Two real `watchdog run` daemons (own state directories, as on two hosts) share a
throwaway PostgreSQL cluster (`tests.postgres.PostgresServer`, fsync on), the loopback
ElevenLabs and the loopback Slack. Each daemon life gets a Slack token of its own, so the
fake Slack tells who sent each request. Every round fires and resolves one alert (one
series, count 9 above a threshold of 5, then back to 1) and takes the leader down once:

* `kill`: `kill -9` at a random moment 0 to 2 poll intervals after the count rose (before
  or after the firing was seen, persisted or posted);
* `kill queued`: `kill -9` while the alert fires and its resolution waits in the outbox
  behind a Slack outage (the leader has logged `notify.retry` for it); Slack comes back
  0 to 3 s after the kill;
* `terminate`: the leader's lock session ended with `pg_terminate_backend` (the daemon
  lives on, must stop posting and exits 75), at a random moment as in `kill`.

The killed (or exited) daemon is started again at once and comes back as the standby.
The round ends when Slack holds the resolved card of the round's alert.

The oracle is the fake Slack, never the daemon's log (the log gives only `leader.acquired`
times). Per round: take-over = kill to the standby's `leader.acquired`; first post =
kill to the first posting request (post or edit) of the new leader; lost = the round's
alert has no card, or its card never shows resolved; duplicates = a second top-level card
for the round, or a thread reply repeated for one alert and transition; two posters = a
posting or reading request from one daemon life after another life's first request had
arrived (the request log's tokens must form one run per life, in order).
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

import psycopg

from benchmarks.common import (
    ChildProcess,
    Figure,
    at_most,
    info,
    median,
    progress,
    state_dir,
    watchdog_process,
)
from tests.fakes.elevenlabs import FakeElevenLabs
from tests.fakes.slack import Attempt, FakeSlack, SlackCall
from tests.harness import API_KEY, SLACK_TOKEN, at, daemon_env, rule, write_rules
from tests.postgres import PostgresServer, postgres_bindir

NAME = "failover"
HIGH, LOW = 9, 1
KINDS = ("kill", "kill queued", "terminate")
ROUNDS, QUICK_ROUNDS = 10, 3
POLLS = (1.0, 15.0)
"""The poll intervals measured: the tests' 1 s and the production default (15 s)."""
QUICK_POLLS = (1.0,)
SETTINGS: dict[str, object] = {}
"""Set by `--failover-rounds N` / `--failover-polls S,S`."""


@dataclass
class Life:
    """One daemon process of the pair and its own Slack token."""

    label: str  # "a1", "b2": slot and life number
    token: str
    proc: ChildProcess


@dataclass
class Round:
    """What one round did and what it observed."""

    number: int
    kind: str
    started: float  # monotonic
    killed: Life
    leader: Life | None = None  # the one that took over
    kill_wall: datetime | None = None
    kill_mono: float = 0.0
    takeover: float | None = None  # seconds from the kill to leader.acquired
    first_post: float | None = None  # seconds from the kill to its first posting request
    ended: float = 0.0
    exit_code: int | None = None
    cards: int = 0
    card_by: str = "?"  # the life that posted the round's card
    lost: list[str] | None = None
    duplicates: int = 0


class Pair:
    """The two slots, the fakes and the database; starts and restarts daemon lives."""

    def __init__(self, root: Path, poll: float, url: str) -> None:
        self.poll = poll
        self.url = url
        self.root = root
        self.api = FakeElevenLabs(API_KEY, count=LOW)
        self.slack = FakeSlack(SLACK_TOKEN)
        self.config = root / "rules.toml"
        self.lives: list[Life] = []
        self._born: Counter[str] = Counter()

    def write_rules(self) -> None:
        write_rules(
            self.config,
            rule("high", above=5, severity="critical", for_="0s"),
            poll_interval=f"{self.poll:g}s",
            stale_after=f"{max(10.0, 3 * self.poll):g}s",
        )
        # Every round fires and resolves the same series: not flapping, for this purpose.
        text = self.config.read_text(encoding="utf-8")
        self.config.write_text(text.replace("[watchdog]\n", "[watchdog]\nflap = false\n", 1))

    def start(self, slot: str) -> Life:
        self._born[slot] += 1
        label = f"{slot}{self._born[slot]}"
        token = f"xoxb-bench-failover-{label}"
        self.slack.add_token(token)
        env = daemon_env(
            self.root / slot,
            api_url=self.api.url,
            slack_api_url=self.slack.api_url,
            WATCHDOG_DATABASE_URL=self.url,
            WATCHDOG_LOG_LEVEL="info",
        )
        env["SLACK_BOT_TOKEN"] = token
        proc = watchdog_process(["run", "--config", str(self.config)], env, name=f"{NAME}-{label}")
        proc.start()
        life = Life(label, token, proc)
        self.lives.append(life)
        return life

    def label_of(self, token: str) -> str:
        return next((life.label for life in self.lives if life.token == token), "?")


def _slot(life: Life) -> str:
    return life.label[0]


def _terminate(url: str, name: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (name,),
        ).fetchall()
    return len(rows)


def _payload(call: SlackCall) -> dict[str, object]:
    payload = (call.metadata or {}).get("event_payload")
    return payload if isinstance(payload, dict) else {}


def _resolved(call: SlackCall) -> bool:
    return _payload(call).get("transition") == "resolved" or (
        "resolved" in (call.text + json.dumps(call.blocks)).lower()
    )


def _round_card(slack: FakeSlack, since: float) -> SlackCall | None:
    tops = [m for m in slack.top_level() if m.received_at >= since]
    return tops[0] if tops else None


def _card_resolved(slack: FakeSlack, since: float) -> bool:
    card = _round_card(slack, since)
    if card is None:
        return False
    return any(_resolved(u) for u in slack.updates(card.ts)) or _resolved(card)


def _await(slack: FakeSlack, predicate: Callable[[], bool], timeout: float) -> None:
    """Block until `predicate` holds, re-checked whenever Slack receives a call."""
    slack.wait_for(lambda _messages: predicate(), timeout=timeout)


class Bench:
    """One poll interval's run: the pair, the rounds and the judgement."""

    def __init__(self, pair: Pair, rounds: int, seed: int = 12) -> None:
        self.pair = pair
        self.rng = random.Random(seed)
        self.rounds: list[Round] = []
        self.count = rounds
        self.slow = max(60.0, 8 * pair.poll) + 30.0  # one step's generous timeout

    def run(self) -> None:
        pair = self.pair
        leader = pair.start("a")
        leader.proc.wait_for("leader.acquired", timeout=60)
        standby = pair.start("b")
        standby.proc.wait_for("leader.standby", timeout=60)
        for number in range(1, self.count + 1):
            kind = KINDS[(number - 1) % len(KINDS)]
            progress(f"{NAME} {pair.poll:g}s: round {number} ({kind}), leader {leader.label}")
            done = self.round(number, kind, leader, standby)
            leader, standby = done.leader or standby, pair.start(_slot(leader))
            standby.proc.wait_for("leader.standby", timeout=60)
            self.rounds.append(done)

    def round(self, number: int, kind: str, leader: Life, standby: Life) -> Round:
        pair, rng, poll = self.pair, self.rng, self.pair.poll
        r = Round(number, kind, time.monotonic(), killed=leader)
        pair.api.set_count(HIGH)
        if kind == "kill queued":
            _await(pair.slack, lambda: _round_card(pair.slack, r.started) is not None, self.slow)
            pair.slack.outage(True)
            pair.api.set_count(LOW)
            leader.proc.wait_for("notify.retry", timeout=self.slow, kind="resolved")
            time.sleep(rng.uniform(0, 1.0))
        else:
            time.sleep(rng.uniform(0, 2 * poll))
        r.kill_wall, r.kill_mono = datetime.now(UTC), time.monotonic()
        if kind == "terminate":
            holder = str(leader.proc.wait_for("leader.acquired")["holder"])
            if _terminate(pair.url, holder) != 1:
                raise RuntimeError(f"{NAME}: no lock session named {holder!r}")
            r.exit_code = leader.proc.wait(timeout=self.slow)
        else:
            leader.proc.kill()
        if kind == "kill queued":
            time.sleep(rng.uniform(0, 3.0))
            pair.slack.outage(False)
        acquired = standby.proc.wait_for("leader.acquired", timeout=self.slow)
        r.leader = standby
        r.takeover = (at(acquired) - r.kill_wall).total_seconds()
        if kind != "kill queued":
            _await(pair.slack, lambda: _round_card(pair.slack, r.started) is not None, self.slow)
            pair.api.set_count(LOW)
        _await(pair.slack, lambda: _card_resolved(pair.slack, r.started), 2 * self.slow)
        r.ended = time.monotonic()
        firsts = [a.received_at for a in pair.slack.attempts if a.token == standby.token]
        r.first_post = min(firsts) - r.kill_mono if firsts else None
        return r

    def judge(self) -> None:
        """Lost and duplicated notifications per round, from what Slack holds at the end."""
        slack = self.pair.slack
        bounds = [r.started for r in self.rounds] + [float("inf")]
        for r, until in zip(self.rounds, bounds[1:], strict=True):
            tops = [m for m in slack.top_level() if r.started <= m.received_at < until]
            r.cards = len(tops)
            r.card_by = self._poster(tops[0]) if tops else "-"
            r.lost = []
            if not tops:
                r.lost.append("firing")
            elif not any(_resolved(u) for u in slack.updates(tops[0].ts)):
                r.lost.append("resolution")
            replies = Counter(
                (str(_payload(m).get("alert_id")), str(_payload(m).get("transition")))
                for top in tops
                for m in slack.replies(top.ts)
            )
            r.duplicates = max(0, len(tops) - 1) + sum(n - 1 for n in replies.values() if n > 1)

    def _poster(self, call: SlackCall) -> str:
        """The life whose accepted request made `call` (by its arrival time)."""
        return next(
            (
                self.pair.label_of(a.token)
                for a in self.pair.slack.attempts
                if a.method == call.method and a.received_at == call.received_at
            ),
            "?",
        )

    def two_posters(self) -> tuple[int, float | None]:
        """Requests from a life after a later life had begun, and the shortest gap between
        one life's last request and the next life's first. Counted: posts and edits (failed
        ones too) and the history reads of delivery; not `auth.test`, which every daemon
        sends once at start, standby or not, to learn its token's scopes."""
        slack = self.pair.slack
        calls: list[Attempt] = sorted(
            slack.attempts + [r for r in slack.reads if r.method != "auth.test"],
            key=lambda a: a.received_at,
        )
        seen: list[str] = []
        returns = 0
        for call in calls:
            if not seen or seen[-1] != call.token:
                if call.token in seen:
                    returns += 1
                    progress(
                        f"{NAME}: {call.method} ({call.outcome}) from "
                        f"{self.pair.label_of(call.token)} after {self.pair.label_of(seen[-1])}"
                    )
                seen.append(call.token)
        gaps = [b.received_at - a.received_at for a, b in pairwise(calls) if a.token != b.token]
        return returns, min(gaps) if gaps else None

    def figures(self) -> list[Figure]:
        poll = self.pair.poll
        tag = f"{poll:g} s polls"
        out: list[Figure] = []
        for r in self.rounds:
            out.append(
                info(
                    NAME,
                    f"{tag}: round {r.number} ({r.kind}, {r.killed.label} -> "
                    f"{r.leader.label if r.leader else '?'})",
                    f"take-over {_s(r.takeover)}, first post {_s(r.first_post)}, "
                    f"cards {r.cards} (by {r.card_by}), lost {', '.join(r.lost or []) or 'none'}, "
                    f"duplicates {r.duplicates}"
                    + (f", exit {r.exit_code}" if r.exit_code is not None else ""),
                )
            )
        takeovers = [r.takeover for r in self.rounds if r.takeover is not None]
        posts = [r.first_post for r in self.rounds if r.first_post is not None]
        lost = sum(len(r.lost or []) for r in self.rounds)
        duplicates = sum(r.duplicates for r in self.rounds)
        returns, gap = self.two_posters()
        if takeovers:
            out.append(
                at_most(NAME, f"{tag}: take-over, worst", max(takeovers), 2 * poll, "s", ".2f")
            )
            out.append(info(NAME, f"{tag}: take-over, median", f"{median(takeovers):.2f} s"))
        if posts:
            out.append(
                info(
                    NAME,
                    f"{tag}: kill to first post, median / worst",
                    f"{median(posts):.1f} / {max(posts):.1f} s",
                )
            )
        expected = 2 * len(self.rounds)
        out.append(at_most(NAME, f"{tag}: lost of {expected} transitions", lost, 0, "", "d"))
        out.append(at_most(NAME, f"{tag}: duplicate cards or replies", duplicates, 0, "", "d"))
        out.append(
            at_most(NAME, f"{tag}: requests after a newer life's first", returns, 0, "", "d")
        )
        out.append(info(NAME, f"{tag}: shortest hand-over gap between lives", _s(gap)))
        return out


def _s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def measure(server: PostgresServer, poll: float, rounds: int) -> list[Figure]:
    url = server.new_database()
    with state_dir(f"{NAME}-{poll:g}") as state:
        pair = Pair(state.parent, poll, url)
        pair.write_rules()
        with pair.api, pair.slack:
            bench = Bench(pair, rounds)
            try:
                bench.run()
            finally:
                for life in pair.lives:
                    life.proc.__exit__(None, None, None)
            bench.judge()
            return bench.figures()


def run(quick: bool) -> list[Figure]:
    bindir = postgres_bindir()
    if bindir is None:
        return [info(NAME, "PostgreSQL", "not installed: skipped")]
    rounds = int(str(SETTINGS.get("rounds", QUICK_ROUNDS if quick else ROUNDS)))
    polls = SETTINGS.get("polls", QUICK_POLLS if quick else POLLS)
    assert isinstance(polls, tuple)
    server = PostgresServer(bindir, durable=True)
    figures: list[Figure] = []
    try:
        server.start()
        for poll in polls:
            figures += measure(server, float(poll), rounds)
    finally:
        server.stop()
    return figures
