"""Fault injection: ElevenLabs, Slack, the wall clock, the disk and the operator misbehave.

Two ways of running the daemon are used, and each scenario says which:

* In-process: the real `Daemon` loop with the real `LiveCountSource` (over a real
  `httpx.AsyncClient`), the real `SlackBotNotifier` and the real `Store`, against the
  loopback fakes. Its clock is injected: a `ScaledClock` (time runs `speed` times faster,
  so "Slack is down for ten minutes" takes three seconds) or a clock whose wall time jumps.
  Audit events are captured with `configure_logging(stream=AuditStream)` and awaited.
* As a child process (`tests.harness.DaemonProcess`), for a representative subset: the
  real CLI wiring, real signals, real exit codes, resource limits.

Why a scaled clock for "Slack is down for minutes": the outbox's backoff is capped at
300 s, so an outage only proves that retries survive the cap if it lasts well over 300 s.
A real process would need that long in real time; in-process, the outbox worker reads
`now` and sleeps only through the injected clock, so the same code runs the same schedule
200 times faster. The real-process Slack scenario below uses a short outage instead.

Every scenario also checks that neither secret reaches the audit log, stderr, the state
directory or a Slack message (debug logging is on throughout).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import re
import resource
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from tests.fakes.elevenlabs import Behaviour, FakeElevenLabs, Status, raw_body, status
from tests.fakes.slack import Attempt, Fail, FakeSlack, SlackCall, channel_id
from tests.harness import (
    API_KEY,
    ROOT,
    SLACK_TOKEN,
    DaemonProcess,
    daemon_env,
    write_rules,
)
from watchdog.audit import configure_logging, reset_logging
from watchdog.clock import Clock, ScaledClock
from watchdog.daemon import Daemon
from watchdog.model import NO_DATA_RULE
from watchdog.notify import SlackBotNotifier
from watchdog.rules import Config, load_config
from watchdog.source import LiveCountSource
from watchdog.store import Store

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SECRET_MARKERS = (API_KEY, SLACK_TOKEN, API_KEY[-16:], SLACK_TOKEN[-16:])
NOTIFIED = {"alert.firing": "firing", "alert.repeat": "repeat", "alert.resolved": "resolved"}
BACKOFF_CAP = 20.0  # watchdog.delivery.Backoff().cap

TWO_RULES = """
[[rules]]
name = "busy"
kind = "threshold"
above = 10
channel = "#busy"

[[rules]]
name = "quiet"
kind = "threshold"
below = 3
channel = "#quiet"
"""
ONE_RULE = """
[[rules]]
name = "busy"
kind = "threshold"
above = 10
channel = "#busy"
"""


@pytest.fixture(autouse=True)
def _default_logging() -> Iterator[None]:
    """In-process scenarios configure the global logger; leave it as we found it."""
    yield
    reset_logging()


# -- the audit log of an in-process daemon ------------------------------------------------


class AuditStream:
    """A text stream for `configure_logging`: keeps every JSON event and wakes waiters.

    Each event gets `_t`, the daemon clock's monotonic time when it was written, so
    scenarios can measure intervals in the daemon's own (possibly scaled) seconds.
    """

    def __init__(self, clock: Clock) -> None:
        self.lines: list[str] = []
        self.events: list[dict[str, Any]] = []
        self._clock = clock
        self._buffer = ""
        self._lock = threading.Lock()
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()

    def write(self, text: str) -> int:
        with self._lock:
            self._buffer += text
            *complete, self._buffer = self._buffer.split("\n")
            for line in complete:
                self.lines.append(line)
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    event["_t"] = self._clock.monotonic()
                    self.events.append(event)
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._changed.set()
        else:
            self._loop.call_soon_threadsafe(self._changed.set)
        return len(text)

    def flush(self) -> None:
        """Nothing is buffered beyond an unfinished line."""

    @property
    def text(self) -> str:
        with self._lock:
            return "\n".join(self.lines) + self._buffer

    def find(self, event: str, **match: Any) -> list[dict[str, Any]]:
        with self._lock:
            return [
                e
                for e in self.events
                if e.get("event") == event and all(e.get(k) == v for k, v in match.items())
            ]

    async def wait_until(
        self, predicate: Callable[[], bool], *, timeout: float = 15.0, what: str = "condition"
    ) -> None:
        """Await `predicate()` becoming true; it is re-checked whenever a line is written."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            self._changed.clear()
            left = deadline - loop.time()
            if left <= 0:
                tail = "\n".join(self.lines[-40:])
                raise AssertionError(f"{what} not met within {timeout}s:\n{tail}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def wait_for(
        self, event: str, *, nth: int = 1, timeout: float = 15.0, **match: Any
    ) -> dict[str, Any]:
        """Await the `nth` event named `event` with the given fields (`count=` is a field)."""
        await self.wait_until(
            lambda: len(self.find(event, **match)) >= nth,
            timeout=timeout,
            what=f"{event} {match} (x{nth})",
        )
        return self.find(event, **match)[nth - 1]


# -- an in-process daemon over the loopback fakes ------------------------------------------


@dataclass
class Rig:
    """One in-process daemon and everything it talks to."""

    config: Config
    elevenlabs: FakeElevenLabs
    slack: FakeSlack
    store: Store
    clock: Clock
    audit: AuditStream
    daemon: Daemon
    task: asyncio.Task[None]
    state_dir: Path

    def channel_of(self, rule: str) -> str:
        return self.config.channel_for(rule) or "console"

    def assert_running(self) -> None:
        assert not self.task.done(), "the daemon's loop ended"


@contextlib.asynccontextmanager
async def running_daemon(
    tmp_path: Path,
    body: str,
    *,
    clock: Clock,
    count: int = 5,
    poll_interval: str = "1s",
    stale_after: str = "10m",
    http_timeout: float = 1.0,
    slack_timeout: float = 2.0,
    database_url: str | None = None,
) -> AsyncIterator[Rig]:
    """Run the real daemon loop in this event loop until the block ends, then stop it.

    The state is a SQLite file in the state directory, or the PostgreSQL database at
    `database_url`."""
    state_dir = tmp_path / "state"
    config = load_config(
        write_rules(
            tmp_path / "rules.toml", body, poll_interval=poll_interval, stale_after=stale_after
        )
    )
    audit = AuditStream(clock)
    configure_logging(level="debug", stream=audit, secrets=[API_KEY, SLACK_TOKEN])
    with (
        FakeElevenLabs(api_key=API_KEY, count=count, hang_seconds=10) as elevenlabs,
        FakeSlack(token=SLACK_TOKEN) as slack,
        (
            Store.connect(database_url)
            if database_url is not None
            else Store.open(Store.default_path(state_dir))
        ) as store,
        LiveCountSource(
            SecretStr(API_KEY),
            elevenlabs.url,
            now=clock.now,
            timeout=http_timeout,
            max_concurrency=4,
        ) as source,
    ):
        notifier = SlackBotNotifier(
            SecretStr(SLACK_TOKEN), api_url=slack.api_url, timeout=slack_timeout
        )
        daemon = Daemon(config=config, source=source, store=store, notifier=notifier, clock=clock)
        task = asyncio.create_task(daemon.run(), name="daemon")
        rig = Rig(config, elevenlabs, slack, store, clock, audit, daemon, task, state_dir)
        try:
            await audit.wait_for("daemon.started")
            yield rig
        finally:
            daemon.request_stop()
            await asyncio.wait_for(task, 15)


# -- what Slack received, attributed to alerts ---------------------------------------------

_ALERT_ID = re.compile(r"alert `([0-9a-f]{12})`")


@dataclass(frozen=True)
class Posted:
    """One accepted Slack call: which alert it is about and what it says.

    `kind` is "firing", "repeat", "resolved" or "fired_and_resolved" (a firing folded with
    its resolution before it was sent) for new messages (top-level or in the alert's
    thread) and "edit" for the `chat.update` of a card on resolution.
    """

    alert_id: str
    kind: str
    call: SlackCall


def attribute(messages: Iterable[SlackCall]) -> list[Posted]:
    """Name the alert and kind of each call: cards carry the alert id, replies their thread's."""
    cards: dict[tuple[str, str], str] = {}
    posted: list[Posted] = []
    for call in messages:
        blob = call.text + json.dumps(call.blocks, ensure_ascii=False)
        if call.method == "chat.update":
            found = _ALERT_ID.search(blob)
            assert found is not None, call
            posted.append(Posted(found.group(1), "edit", call))
        elif call.thread_ts is None:
            found = _ALERT_ID.search(blob)
            assert found is not None, call
            header = str(call.blocks[0]["text"]["text"]) if call.blocks else call.text
            kind = (
                "fired_and_resolved"
                if "FIRED AND RESOLVED" in header
                else "resolved"
                if "RESOLVED" in header
                else "repeat"
                if "STILL FIRING" in header
                else "firing"
            )
            cards[(call.channel, call.ts)] = found.group(1)
            posted.append(Posted(found.group(1), kind, call))
        else:
            alert = cards[(call.channel, call.thread_ts)]
            kind = "resolved" if call.text.startswith("✅") else "repeat"
            posted.append(Posted(alert, kind, call))
    return posted


def notified(events: Iterable[Mapping[str, Any]]) -> list[tuple[str, str, str]]:
    """(rule, alert_id, kind) of every transition the engine decided to notify, in order."""
    return [
        (e["rule"], e["alert_id"], NOTIFIED[e["event"]]) for e in events if e["event"] in NOTIFIED
    ]


def deliveries(events: Iterable[Mapping[str, Any]]) -> list[tuple[str, str, str]]:
    """(rule, alert_id, kind) of what should reach Slack: the notified transitions as the
    outbox brought them up to date (`notify.folded`: the firing goes out as one
    "fired_and_resolved" card with its repeats and resolution; `notify.dropped`: not sent)."""
    events = list(events)
    folded = {e["alert_id"] for e in events if e["event"] == "notify.folded"}
    dropped = Counter((e["alert_id"], e["kind"]) for e in events if e["event"] == "notify.dropped")
    expected = []
    for rule, alert, kind in notified(events):
        if alert in folded:
            if kind == "firing":
                expected.append((rule, alert, "fired_and_resolved"))
        elif dropped[(alert, kind)]:
            dropped[(alert, kind)] -= 1
        else:
            expected.append((rule, alert, kind))
    return expected


def _logged_kind(kind: str) -> str:
    """The `kind` a delivery's audit events carry: a folded card is the resolution."""
    return "resolved" if kind == "fired_and_resolved" else kind


def all_settled(events: Iterable[Mapping[str, Any]]) -> bool:
    """Every delivery due so far was sent or dead-lettered (`notify.sent`, `notify.failed`)."""
    events = list(events)
    done = [e for e in events if e["event"] in ("notify.sent", "notify.failed")]
    return len(done) >= len(deliveries(events))


def assert_delivered_exactly_once_in_order(
    events: list[dict[str, Any]],
    slack: FakeSlack,
    channel_of: Mapping[str, str] | Callable[[str], str],
    *,
    dead_lettered: Iterable[tuple[str, str]] = (),
    edits_may_repeat: bool = False,
) -> None:
    """Each notified transition reached Slack exactly once, in audit order per channel,
    as the outbox brought it up to date (see `deliveries`).

    A resolution whose card was posted edits that card after posting it and no later than
    its thread reply; the edit is idempotent, so it is repeated only when a delivery failed
    after it (`edits_may_repeat`). `dead_lettered` (alert_id, kind) are excused.
    """
    excused = set(dead_lettered)
    lookup = channel_of.__getitem__ if isinstance(channel_of, Mapping) else channel_of
    expected: dict[str, list[tuple[str, str]]] = defaultdict(list)
    due = deliveries(events)
    for rule, alert, kind in due:
        if (alert, _logged_kind(kind)) not in excused:
            expected[channel_id(lookup(rule))].append((alert, kind))
    posted = attribute(slack.messages)
    actual: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for p in posted:
        if p.kind != "edit":
            actual[p.call.channel].append((p.alert_id, p.kind))
    assert dict(actual) == dict(expected)

    cards = {p.alert_id: p.call for p in posted if p.kind == "firing" and p.call.thread_ts is None}
    replies = {
        p.alert_id: p.call for p in posted if p.kind == "resolved" and p.call.thread_ts is not None
    }
    edits = Counter(p.alert_id for p in posted if p.kind == "edit")
    assert set(edits) == set(replies)
    for alert, reply in replies.items():
        assert edits[alert] == 1 or (edits_may_repeat and edits[alert] > 1)
        for edit in (p.call for p in posted if p.kind == "edit" and p.alert_id == alert):
            assert cards[alert].received_at <= edit.received_at <= reply.received_at
            assert edit.ts == reply.thread_ts == cards[alert].ts

    sent = Counter((e["alert_id"], e["kind"]) for e in events if e["event"] == "notify.sent")
    assert all(n == 1 for n in sent.values()), sent
    assert set(sent) == {(a, _logged_kind(k)) for _, a, k in due} - excused


def assert_no_secrets(
    *texts: str, state_dir: Path | None = None, slack: FakeSlack | None = None
) -> None:
    """Neither secret (nor a recognisable piece of one) is in any text, state file or message."""
    haystacks = list(texts)
    if slack is not None:
        haystacks += [m.text + json.dumps(m.blocks) for m in slack.messages]
    for text in haystacks:
        for secret in SECRET_MARKERS:
            assert secret not in text
    if state_dir is not None and state_dir.is_dir():
        for path in state_dir.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                for secret in SECRET_MARKERS:
                    assert secret.encode() not in data, path


def assert_retries_were_not_early(
    events: list[dict[str, Any]], slack: FakeSlack, *, speed: float = 1.0
) -> None:
    """No channel was tried again sooner than the `retry_in` its failure was given.

    Measured where it matters, at Slack: the n-th failed call in a channel is the n-th
    notify.retry of that channel (one entry per channel is in flight at a time), and the
    channel's next call must come `retry_in` daemon-seconds later (50 ms real slack).
    A channel's calls include the reads that look for a post whose answer was lost; a
    failed `conversations.list` names no channel, so its retry is not measured here.
    """
    waits: dict[str, list[float]] = defaultdict(list)
    for e in events:
        if e["event"] == "notify.retry" and "conversations.list" not in e["error"]:
            waits[channel_id(e["channel"])].append(e["retry_in"])
    calls: dict[str | None, list[Attempt]] = defaultdict(list)
    for attempt in sorted(slack.attempts + slack.reads, key=lambda a: a.received_at):
        calls[attempt.channel].append(attempt)
    for channel, retry_ins in waits.items():
        tries = calls[channel]
        failed = [i for i, a in enumerate(tries) if not a.ok]
        assert len(failed) == len(retry_ins), (channel, tries, retry_ins)
        for index, retry_in in zip(failed, retry_ins, strict=True):
            if index + 1 < len(tries):
                gap = (tries[index + 1].received_at - tries[index].received_at) * speed
                assert gap >= retry_in - 0.05 * speed, (channel, index, gap, retry_in)


def stored_samples(state_dir: Path) -> list[tuple[str, int]]:
    """Every (series, count) in the samples table, read after the daemon stopped."""
    with Store.open(Store.default_path(state_dir)) as store:
        return [(s.series, s.count) for s in store.load_samples(since=EPOCH)]


def assert_no_fake_samples(state_dir: Path, fake: FakeElevenLabs) -> None:
    """Each stored count is one the fake really served as a good answer, no more often."""
    served = Counter(r.count for r in fake.responses if r.count is not None)
    stored = Counter(count for _, count in stored_samples(state_dir))
    assert stored, "no sample stored at all"
    for count, times in stored.items():
        assert times <= served[count], (count, times, served)


# -- ElevenLabs misbehaves -----------------------------------------------------------------

GOOD_BEFORE, SENTINEL, GOOD_AFTER = 7, 13, 9
"""Counts served before, during (only a broken answer could carry it) and after a fault."""

ELEVENLABS_FAULTS = [
    pytest.param(500, "server error", "HTTP 500", id="500"),
    pytest.param(502, "server error", "HTTP 502", id="502"),
    pytest.param(429, "rate limited", "HTTP 429", id="429"),
    pytest.param(
        status(429, retry_after=2), "rate limited", "HTTP 429, retry after 2s", id="429-retry-after"
    ),
    pytest.param("hang", "unreachable", "timed out after 300ms", id="hang"),
    pytest.param("reset", "unreachable", "", id="reset"),
    pytest.param("non_json", "bad response", "body is not valid JSON", id="non-json"),
    pytest.param(
        raw_body(b'{"count": "x"}'),
        "bad response",
        "count must be an integer, got string",
        id="count-string",
    ),
    pytest.param(raw_body({"count": -3}), "bad response", "count must be >= 0", id="negative"),
    pytest.param(
        raw_body({"count": 10**12}), "bad response", "count must be <= 1000000", id="absurd"
    ),
    pytest.param("empty_body", "bad response", "empty body", id="empty-body"),
    pytest.param(
        "wrong_content_type",
        "bad response",
        "expected application/json, got content type text/html",
        id="wrong-content-type",
    ),
]


@pytest.mark.parametrize(("behaviour", "reason", "detail"), ELEVENLABS_FAULTS)
def test_elevenlabs_fault_in_process(
    tmp_path: Path, behaviour: Behaviour, reason: str, detail: str
) -> None:
    """A failing API never yields a sample: poll.failed says why, no-data fires after
    stale_after and resolves on the next good answer, and the loop keeps running."""
    speed, stale_after = 10.0, 6.0

    async def scenario() -> Rig:
        clock = ScaledClock(datetime.now(UTC), speed)
        async with running_daemon(
            tmp_path,
            "",
            clock=clock,
            count=GOOD_BEFORE,
            poll_interval="1s",
            stale_after="6s",
            http_timeout=0.3,
        ) as rig:
            audit, fake = rig.audit, rig.elevenlabs
            await audit.wait_for("poll.ok", count=GOOD_BEFORE)
            fake.set_count(SENTINEL)
            fake.set_behaviour(behaviour)
            fault_set = time.monotonic()
            await audit.wait_for("poll.failed", nth=2, reason=reason)
            firing = await audit.wait_for("alert.firing", rule=NO_DATA_RULE)
            rig.assert_running()
            fake.set_count(GOOD_AFTER)
            fake.set_behaviour("normal")
            fault_cleared = time.monotonic()
            await audit.wait_for("alert.resolved", rule=NO_DATA_RULE)
            await audit.wait_for("poll.ok", count=GOOD_AFTER)
            await audit.wait_for("notify.sent", kind="resolved", rule=NO_DATA_RULE)
            rig.assert_running()

            good = [e for e in audit.find("poll.ok") if e["_t"] < firing["_t"]]
            waited = firing["_t"] - good[-1]["_t"]
            assert stale_after - 0.1 <= waited <= stale_after + 10
            failures = audit.find("poll.failed")
            assert {(e["reason"], e["series"]) for e in failures} == {(reason, "workspace")}
            assert all(detail in e["detail"] for e in failures)
            assert reason in firing["condition"]
            if isinstance(behaviour, Status) and behaviour.retry_after:
                assert all(e["retry_after"] == 2.0 for e in failures)
                during = [r.at for r in fake.requests if fault_set <= r.at <= fault_cleared]
                gaps = [b - a for a, b in itertools.pairwise(during)]
                assert gaps
                assert min(gaps) >= 2.0 / speed * 0.9
            return rig

    rig = asyncio.run(scenario())
    assert_delivered_exactly_once_in_order(rig.audit.events, rig.slack, rig.channel_of)
    assert_no_fake_samples(rig.state_dir, rig.elevenlabs)
    assert {count for _, count in stored_samples(rig.state_dir)} == {GOOD_BEFORE, GOOD_AFTER}
    assert_no_secrets(rig.audit.text, state_dir=rig.state_dir, slack=rig.slack)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        pytest.param("hang", "unreachable", id="hang"),
        pytest.param("reset", "unreachable", id="reset"),
        pytest.param(raw_body({"count": 10**12}), "bad response", id="absurd"),
        pytest.param("wrong_content_type", "bad response", id="wrong-content-type"),
        pytest.param("empty_body", "bad response", id="empty-body"),
    ],
)
def test_elevenlabs_fault_in_a_real_process(
    tmp_path: Path, behaviour: Behaviour, reason: str
) -> None:
    """`watchdog run` survives a broken API: poll.failed, no-data after stale_after, resolved
    on recovery, no fake sample stored, and secrets nowhere."""
    state = tmp_path / "state"
    rules = write_rules(tmp_path / "rules.toml", "", poll_interval="100ms", stale_after="600ms")
    with (
        FakeElevenLabs(api_key=API_KEY, count=GOOD_BEFORE, hang_seconds=10) as fake,
        FakeSlack(token=SLACK_TOKEN) as slack,
    ):
        env = daemon_env(state, api_url=fake.url, slack_api_url=slack.api_url)
        with DaemonProcess(["run", "--config", str(rules)], env).start() as daemon:
            daemon.wait_for("poll.ok")
            fake.set_count(SENTINEL)
            fake.set_behaviour(behaviour)
            daemon.wait_for("poll.failed", reason=reason)
            daemon.wait_for("alert.firing", rule=NO_DATA_RULE)
            fake.set_count(GOOD_AFTER)
            fake.set_behaviour("normal")
            daemon.wait_for("alert.resolved", rule=NO_DATA_RULE)
            daemon.wait_for("notify.sent", kind="resolved", rule=NO_DATA_RULE)
            assert daemon.stop() == 0
        assert {e["reason"] for e in daemon.find("poll.failed")} == {reason}
        assert_delivered_exactly_once_in_order(daemon.events, slack, {NO_DATA_RULE: "#oncall"})
        assert_no_fake_samples(state, fake)
        assert SENTINEL not in {count for _, count in stored_samples(state)}
        stderr = "".join(daemon.stderr_lines)
        assert "Traceback" not in stderr
        assert_no_secrets("".join(daemon.stdout_lines), stderr, state_dir=state, slack=slack)


# -- Slack misbehaves ------------------------------------------------------------------------


async def flip_through_two_alerts(rig: Rig) -> None:
    """busy fires and resolves in #busy while quiet fires and resolves in #quiet."""
    audit, fake = rig.audit, rig.elevenlabs
    fake.set_count(20)
    await audit.wait_for("alert.firing", rule="busy")
    fake.set_count(1)
    await audit.wait_for("alert.resolved", rule="busy")
    await audit.wait_for("alert.firing", rule="quiet")
    fake.set_count(5)
    await audit.wait_for("alert.resolved", rule="quiet")


TRANSIENT_SLACK_FAULTS = [
    pytest.param(Fail.status(429, retry_after=30), id="429-retry-after"),
    pytest.param(Fail.status(429), id="429"),
    pytest.param(Fail.status(500), id="500"),
    pytest.param(Fail.status(502, body="<html>bad gateway</html>"), id="502-html"),
    pytest.param(Fail.status(503), id="503"),
    pytest.param(Fail.error("ratelimited"), id="ok-false-ratelimited"),
    pytest.param(Fail.error("internal_error"), id="ok-false-internal-error"),
    pytest.param(Fail.hang(2.0), id="hang"),
    pytest.param(Fail.reset(), id="reset"),
]


@pytest.mark.parametrize("fault", TRANSIENT_SLACK_FAULTS)
def test_transient_slack_faults_lose_and_double_nothing(tmp_path: Path, fault: Fail) -> None:
    """Slack failing recoverably three times in a row: every notification still arrives
    once, in order per channel, and no retry comes sooner than its Retry-After/backoff."""
    check_transient_slack_fault(tmp_path, fault)


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(Fail.status(503), id="503"),
        pytest.param(Fail.hang(2.0), id="hang"),
        pytest.param(Fail.reset(), id="reset"),
    ],
)
def test_transient_slack_faults_on_postgresql_lose_and_double_nothing(
    tmp_path: Path, postgres_url: str, fault: Fail
) -> None:
    """The same with the state in PostgreSQL: every notification arrives once, in order,
    with no early retry (the outbox's attempts and backoff are the database's)."""
    check_transient_slack_fault(tmp_path, fault, database_url=postgres_url)


def check_transient_slack_fault(
    tmp_path: Path, fault: Fail, *, database_url: str | None = None
) -> None:
    """Three of `fault` in a row while two alerts fire and resolve; nothing lost or doubled."""

    async def scenario() -> Rig:
        clock = ScaledClock(datetime.now(UTC), 50.0)
        async with running_daemon(
            tmp_path,
            TWO_RULES,
            clock=clock,
            poll_interval="5s",
            slack_timeout=0.5,
            database_url=database_url,
        ) as rig:
            rig.slack.fail_next([fault] * 3)
            await flip_through_two_alerts(rig)
            await rig.audit.wait_until(
                lambda: all_settled(rig.audit.events), timeout=30, what="all delivered"
            )
            assert rig.store.outbox_depth() == 0
            assert rig.store.dead_letters() == []
            return rig

    rig = asyncio.run(scenario())
    events = rig.audit.events
    assert_delivered_exactly_once_in_order(events, rig.slack, rig.channel_of, edits_may_repeat=True)
    retries = [e for e in events if e["event"] == "notify.retry"]
    assert len(retries) == 3
    assert not [e for e in events if e["event"] == "notify.failed"]
    if fault.retry_after:
        assert all(e["retry_in"] >= fault.retry_after for e in retries)
    assert_retries_were_not_early(events, rig.slack, speed=50.0)
    assert_no_secrets(rig.audit.text, state_dir=rig.state_dir, slack=rig.slack)


PERMANENT_SLACK_ERRORS = [
    "channel_not_found",
    "not_in_channel",
    "is_archived",
    "invalid_auth",
    "account_inactive",
    "token_revoked",
    "missing_scope",
    "invalid_blocks",
    "msg_too_long",
    "restricted_action",
]


@pytest.mark.parametrize("error", PERMANENT_SLACK_ERRORS)
def test_permanent_slack_error_is_dead_lettered_once_and_nothing_else_is_lost(
    tmp_path: Path, error: str
) -> None:
    """`ok: false` with a permanent error dead-letters that one message after one attempt,
    with the reason. A firing card rejected so never reached Slack: its resolution is
    dropped (`never_announced`) rather than resolving a card nobody saw."""

    async def scenario() -> Rig:
        clock = ScaledClock(datetime.now(UTC), 50.0)
        async with running_daemon(tmp_path, TWO_RULES, clock=clock, poll_interval="5s") as rig:
            rig.slack.fail_next([Fail.error(error)])
            await flip_through_two_alerts(rig)
            await rig.audit.wait_until(
                lambda: all_settled(rig.audit.events), timeout=30, what="all delivered"
            )
            assert rig.store.outbox_depth() == 0
            (dead,) = rig.store.dead_letters()
            assert error in dead.reason
            assert dead.attempts == 1
            return rig

    rig = asyncio.run(scenario())
    events = rig.audit.events
    (failed,) = [e for e in events if e["event"] == "notify.failed"]
    assert error in failed["error"]
    assert failed["attempt"] == 1
    assert not [e for e in events if e["event"] == "notify.retry"]
    assert [a.outcome for a in rig.slack.attempts].count(f"error {error}") == 1
    dead = {(failed["alert_id"], failed["kind"])}
    never_announced = [
        e["alert_id"]
        for e in events
        if e["event"] == "notify.dropped" and e["reason"] == "never_announced"
    ]
    assert never_announced == ([failed["alert_id"]] if failed["kind"] == "firing" else [])
    assert_delivered_exactly_once_in_order(events, rig.slack, rig.channel_of, dead_lettered=dead)
    assert_no_secrets(rig.audit.text, state_dir=rig.state_dir, slack=rig.slack)


OUTAGE = 600.0


def test_slack_down_for_ten_minutes_delivers_everything_in_order_once(tmp_path: Path) -> None:
    """A 10-minute Slack outage (on a 200x clock) loses and doubles nothing: queued alerts
    of two channels arrive in order, brought up to date, within one capped retry of
    Slack's return."""
    check_ten_minute_outage(tmp_path)


def test_slack_down_for_ten_minutes_on_postgresql_delivers_everything_in_order_once(
    tmp_path: Path, postgres_url: str
) -> None:
    """The same with the state in PostgreSQL: the queue waits in the database and
    arrives in order, once, brought up to date."""
    check_ten_minute_outage(tmp_path, database_url=postgres_url)


def check_ten_minute_outage(tmp_path: Path, *, database_url: str | None = None) -> None:
    """Slack down for `OUTAGE` daemon-seconds while alerts of two channels come and go."""
    speed = 200.0

    async def scenario() -> tuple[Rig, float, float]:
        clock = ScaledClock(datetime.now(UTC), speed)
        async with running_daemon(
            tmp_path, TWO_RULES, clock=clock, poll_interval="15s", database_url=database_url
        ) as rig:
            rig.slack.outage(True)
            down = clock.monotonic()
            await flip_through_two_alerts(rig)
            rig.elevenlabs.set_count(20)
            await rig.audit.wait_for("alert.firing", rule="busy", nth=2)
            # The outage lasts until some retry has been pushed up to the backoff cap.
            await rig.audit.wait_until(
                lambda: any(
                    e["retry_in"] >= 0.8 * BACKOFF_CAP for e in rig.audit.find("notify.retry")
                ),
                timeout=30,
                what="a retry at the backoff cap",
            )
            await clock.sleep(OUTAGE - (clock.monotonic() - down))
            rig.slack.outage(False)
            up = clock.monotonic()
            await rig.audit.wait_until(
                lambda: all_settled(rig.audit.events), timeout=30, what="all delivered"
            )
            assert rig.store.outbox_depth() == 0
            return rig, up - down, rig.audit.find("notify.sent")[0]["_t"] - up

    rig, outage, recovery = asyncio.run(scenario())
    events = rig.audit.events
    assert outage >= OUTAGE
    assert recovery <= BACKOFF_CAP + 60  # 0.3 s of real scheduling slack
    retries = [e for e in events if e["event"] == "notify.retry"]
    assert max(e["retry_in"] for e in retries) <= BACKOFF_CAP
    assert max(e["attempt"] for e in retries) >= 8
    assert not [e for e in events if e["event"] == "notify.failed"]
    assert_delivered_exactly_once_in_order(events, rig.slack, rig.channel_of)
    assert_retries_were_not_early(events, rig.slack, speed=speed)
    assert_no_secrets(rig.audit.text, state_dir=rig.state_dir, slack=rig.slack)


@pytest.mark.slow
def test_slack_outage_reset_and_429_in_a_real_process(tmp_path: Path) -> None:
    """`watchdog run` rides out a Slack that resets, rate-limits and is down for seconds:
    every alert arrives once, in order, and secrets stay out of every output."""
    state = tmp_path / "state"
    rules = write_rules(tmp_path / "rules.toml", TWO_RULES, poll_interval="100ms")
    with (
        FakeElevenLabs(api_key=API_KEY, count=5) as fake,
        FakeSlack(token=SLACK_TOKEN) as slack,
    ):
        env = daemon_env(state, api_url=fake.url, slack_api_url=slack.api_url)
        with DaemonProcess(["run", "--config", str(rules)], env).start() as daemon:
            daemon.wait_for("poll.ok")
            slack.fail_next([Fail.reset(), Fail.status(429, retry_after=0.5)])
            slack.outage(True)  # behind the scripted failures: 503 for everything else
            fake.set_count(20)
            daemon.wait_for("alert.firing", rule="busy")
            fake.set_count(1)
            daemon.wait_for("alert.resolved", rule="busy")
            daemon.wait_for("alert.firing", rule="quiet")
            fake.set_count(5)
            daemon.wait_for("alert.resolved", rule="quiet")
            daemon.wait_for("notify.retry", count=3)
            slack.outage(False)
            daemon.wait_until(lambda: all_settled(daemon.events), timeout=30)
            assert daemon.stop() == 0
        channels = {"busy": "#busy", "quiet": "#quiet"}
        assert_delivered_exactly_once_in_order(
            daemon.events, slack, channels, edits_may_repeat=True
        )
        assert_retries_were_not_early(daemon.events, slack)
        stderr = "".join(daemon.stderr_lines)
        assert "Traceback" not in stderr
        assert_no_secrets("".join(daemon.stdout_lines), stderr, state_dir=state, slack=slack)


# -- the wall clock jumps ----------------------------------------------------------------------


class JumpingClock:
    """Real monotonic time and sleeps, and a wall clock that is set ahead or back at will."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def jump(self, delta: timedelta) -> None:
        self.offset += delta


def card_time(call: SlackCall) -> float:
    """The epoch seconds a card's context shows ("since <!date^EPOCH^...>")."""
    found = re.search(r"<!date\^(\d+)\^", json.dumps(call.blocks))
    assert found is not None, call
    return float(found.group(1))


def test_wall_clock_jumps_keep_polls_evenly_paced(tmp_path: Path) -> None:
    """With the wall clock set 1 h ahead, 1 h back and right again, polls keep their
    monotonic pace (no burst, no stall) and samples carry the wall time as it was."""
    interval = 0.25
    hour = timedelta(hours=1)

    async def scenario() -> tuple[Rig, float, float]:
        clock = JumpingClock()
        async with running_daemon(
            tmp_path, ONE_RULE, clock=clock, poll_interval="250ms", stale_after="2h"
        ) as rig:
            began = time.monotonic()
            polls = 3
            for delta in (hour, -2 * hour, hour, timedelta(0)):
                await rig.audit.wait_for("poll.ok", nth=polls)
                clock.jump(delta)
                polls += 3
            await rig.audit.wait_for("poll.ok", nth=polls)
            return rig, began, time.monotonic()

    rig, began, ended = asyncio.run(scenario())
    arrivals = [r.at for r in rig.elevenlabs.requests]
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert min(gaps) >= 0.5 * interval
    assert max(gaps) <= 3 * interval
    assert abs(len(arrivals) - (ended - began) / interval) <= 4
    with Store.open(Store.default_path(rig.state_dir)) as store:
        stamps = [s.at for s in store.load_samples(since=EPOCH)]
    real = datetime.now(UTC)
    assert any(at > real + timedelta(minutes=50) for at in stamps)
    assert any(at < real - timedelta(minutes=50) for at in stamps)
    assert_no_secrets(rig.audit.text, state_dir=rig.state_dir)


def test_messages_carry_the_jumped_wall_time(tmp_path: Path) -> None:
    """An alert fired after the clock was set 1 h ahead says so in Slack, and one fired
    after it was set back says that: messages show the wall clock, not a guess."""

    async def scenario() -> tuple[Rig, float, float]:
        clock = JumpingClock()
        async with running_daemon(
            tmp_path, TWO_RULES, clock=clock, poll_interval="200ms", stale_after="2h"
        ) as rig:
            await rig.audit.wait_for("poll.ok")
            clock.jump(timedelta(hours=1))
            rig.elevenlabs.set_count(20)
            await rig.audit.wait_for("notify.sent", rule="busy", kind="firing")
            ahead = time.time() + 3600
            clock.jump(timedelta(hours=-2))
            rig.elevenlabs.set_count(1)
            await rig.audit.wait_for("notify.sent", rule="quiet", kind="firing")
            behind = time.time() - 3600
            return rig, ahead, behind

    rig, ahead, behind = asyncio.run(scenario())
    (busy,) = rig.slack.top_level("#busy")
    (quiet,) = rig.slack.top_level("#quiet")
    assert abs(card_time(busy) - ahead) < 10
    assert abs(card_time(quiet) - behind) < 10
    firing = {e["rule"]: datetime.fromisoformat(e["since"]) for e in rig.audit.find("alert.firing")}
    assert abs(firing["busy"].timestamp() - ahead) < 10
    assert abs(firing["quiet"].timestamp() - behind) < 10
    assert_no_secrets(rig.audit.text, state_dir=rig.state_dir, slack=rig.slack)


def test_wall_clock_set_back_does_not_hold_back_delivery(tmp_path: Path) -> None:
    """A resolution queued after the wall clock was set back 1 h is delivered at once."""

    async def scenario() -> None:
        clock = JumpingClock()
        async with running_daemon(tmp_path, ONE_RULE, clock=clock, poll_interval="200ms") as rig:
            rig.elevenlabs.set_count(20)
            await rig.audit.wait_for("notify.sent", rule="busy", kind="firing")
            clock.jump(timedelta(hours=-1))
            rig.elevenlabs.set_count(5)
            await rig.audit.wait_for("alert.resolved", rule="busy")
            await rig.audit.wait_for("notify.sent", rule="busy", kind="resolved", timeout=3)

    asyncio.run(scenario())


def test_wall_clock_set_ahead_raises_no_false_no_data(tmp_path: Path) -> None:
    """Setting the wall clock 1 h ahead while every poll succeeds raises no no-data alert."""

    async def scenario() -> Rig:
        clock = JumpingClock()
        async with running_daemon(
            tmp_path, "", clock=clock, poll_interval="1500ms", stale_after="30s"
        ) as rig:
            await rig.audit.wait_for("poll.ok")
            clock.jump(timedelta(hours=1))
            await rig.audit.wait_for("poll.ok", nth=3)  # at least one 1 s tick in between
            return rig

    rig = asyncio.run(scenario())
    assert rig.audit.find("alert.firing") == []
    assert rig.slack.messages == []


# -- the disk is full, or the state directory is unusable ---------------------------------------


class LimitedDaemonProcess(DaemonProcess):
    """A `DaemonProcess` whose regular files cannot grow past `max_file_bytes`.

    RLIMIT_FSIZE makes every write beyond the limit fail with EFBIG (SIGXFSZ ignored):
    for SQLite that is a full disk that the rest of the system does not share.
    """

    def __init__(self, args: list[str], env: Mapping[str, str], *, max_file_bytes: int) -> None:
        super().__init__(args, env)
        self.max_file_bytes = max_file_bytes

    def start(self) -> LimitedDaemonProcess:
        limit = self.max_file_bytes

        def limit_file_size() -> None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "watchdog", *self.args],
            env=self.env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=limit_file_size,  # noqa: PLW1509 - only setrlimit and SIG_IGN run there
        )
        for stream, sink in (
            (self.proc.stdout, self.stdout_lines),
            (self.proc.stderr, self.stderr_lines),
        ):
            thread = threading.Thread(target=self._read, args=(stream, sink), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self


def integrity(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [row[0] for row in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()


def output_of(*daemons: DaemonProcess) -> tuple[str, str]:
    return (
        "".join(line for d in daemons for line in d.stdout_lines),
        "".join(line for d in daemons for line in d.stderr_lines),
    )


@pytest.mark.slow
def test_full_disk_is_reported_polling_goes_on_and_the_database_stays_whole(
    tmp_path: Path,
) -> None:
    """With the database unable to grow: state.error names the file, polling goes on; after
    a restart with room again the database passes integrity_check and holds whole ticks."""
    state = tmp_path / "state"
    db = Store.default_path(state)
    rules = write_rules(tmp_path / "rules.toml", ONE_RULE, poll_interval="100ms")
    with (
        FakeElevenLabs(api_key=API_KEY, count=5) as fake,
        FakeSlack(token=SLACK_TOKEN) as slack,
    ):
        env = daemon_env(state, api_url=fake.url, slack_api_url=slack.api_url)
        args = ["run", "--config", str(rules)]
        with DaemonProcess(args, env).start() as first:  # creates and migrates the database
            first.wait_for("poll.ok", count=3)
            assert first.stop() == 0
        limit = max(db.stat().st_size, 32 * 1024) + 2 * 4096
        with LimitedDaemonProcess(args, env, max_file_bytes=limit).start() as full:
            error = full.wait_for("state.error")
            assert str(db) in error["error"]
            polls = len(full.find("poll.ok"))
            full.wait_for("poll.ok", count=polls + 3)
            fake.set_count(20)
            lost = full.wait_for("alert.firing", rule="busy")
            full.wait_for("state.error", unsaved_notifications=1)
            full.wait_for("poll.ok", count=len(full.find("poll.ok")) + 3)
            assert full.proc is not None
            assert full.proc.poll() is None
            assert full.stop() == 0
        assert integrity(db) == ["ok"]
        with Store.open(db) as store:  # the decided-but-unsaved alert is wholly absent
            assert [a.alert_id for a in store.load_alerts()] == []
            assert store.outbox_depth() == 0
        with DaemonProcess(args, env).start() as again:
            firing = again.wait_for("alert.firing", rule="busy")
            again.wait_for("notify.sent", rule="busy", kind="firing")
            again.wait_for("poll.ok", count=3)
            assert again.stop() == 0
        assert integrity(db) == ["ok"]
        with Store.open(db) as store:
            (alert,) = store.load_alerts()
            assert alert.alert_id == firing["alert_id"] != lost["alert_id"]
            assert store.message_ref(alert.alert_id) is not None
            assert store.outbox_depth() == 0
        assert_no_fake_samples(state, fake)
        assert len(slack.top_level("#busy")) == 1
        stdout, stderr = output_of(first, full, again)
        assert "Traceback" not in stderr
        assert_no_secrets(stdout, stderr, state_dir=state, slack=slack)


@pytest.mark.slow
def test_delivery_resumes_after_the_disk_has_room_again(tmp_path: Path) -> None:
    """A disk-full spell while recording a delivery does not stop delivery for good: once the
    disk has room the resolution is delivered (or the daemon exits so it can be restarted)."""
    state = tmp_path / "state"
    rules = write_rules(tmp_path / "rules.toml", ONE_RULE, poll_interval="100ms")
    with (
        FakeElevenLabs(api_key=API_KEY, count=5) as fake,
        FakeSlack(token=SLACK_TOKEN) as slack,
    ):
        env = daemon_env(state, api_url=fake.url, slack_api_url=slack.api_url)
        with DaemonProcess(["run", "--config", str(rules)], env).start() as daemon:
            assert daemon.proc is not None
            pid = daemon.proc.pid
            daemon.wait_for("poll.ok")
            slack.outage(True)
            fake.set_count(20)
            daemon.wait_for("notify.retry", rule="busy")
            wal = state / "watchdog.db-wal"
            resource.prlimit(
                pid, resource.RLIMIT_FSIZE, (wal.stat().st_size, resource.RLIM_INFINITY)
            )
            daemon.wait_for("state.error")
            slack.outage(False)  # Slack is back, but attempts cannot be recorded: none is made
            daemon.wait_for("poll.ok", count=len(daemon.find("poll.ok")) + 5)
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
            fake.set_count(5)
            daemon.wait_for("alert.resolved", rule="busy")
            proc = daemon.proc
            daemon.wait_until(
                lambda: (
                    proc.poll() is not None
                    # The firing never reached Slack (the outage refused it): it may go
                    # out folded with its resolution, after a retry of up to BACKOFF_CAP.
                    or any(
                        p.kind in ("resolved", "fired_and_resolved")
                        for p in attribute(slack.messages)
                    )
                ),
                timeout=BACKOFF_CAP + 10,
            )
            if proc.poll() is not None:
                assert proc.returncode != 0


READ_ONLY_STATES = ["database-is-a-directory", "wal-is-a-directory"]


@pytest.mark.parametrize("how", READ_ONLY_STATES)
def test_unusable_state_refuses_to_start_with_a_clear_error(tmp_path: Path, how: str) -> None:
    """A database the daemon cannot write (root ignores modes, so the file is replaced by a
    directory) stops `run` at once: exit 1, one line naming the path, state untouched."""
    state = tmp_path / "state"
    db = Store.default_path(state)
    if how == "database-is-a-directory":
        db.mkdir(parents=True)
        (db / "keep").write_text("x")
        named = db
    else:
        Store.open(db).close()
        (state / "watchdog.db-wal").mkdir()
        named = db
    before = _snapshot(state)
    rules = write_rules(tmp_path / "rules.toml", ONE_RULE)
    env = daemon_env(state, api_url="http://127.0.0.1:9", slack_api_url="http://127.0.0.1:9")
    began = time.monotonic()
    with DaemonProcess(["run", "--config", str(rules)], env).start() as daemon:
        code = daemon.wait(timeout=20)
    assert time.monotonic() - began < 10
    assert code == 1
    stdout, stderr = output_of(daemon)
    assert "Traceback" not in stdout + stderr
    assert not daemon.find("daemon.started")
    (line,) = stderr.splitlines()
    assert line.startswith(f"{named}: ")
    assert _snapshot(state) == before
    assert_no_secrets(stdout, stderr)


def _snapshot(state: Path) -> list[tuple[Path, bool, str]]:
    """Every path under the state directory with its content hash, but the daemon's lock
    file (its pid, rewritten by every start; see `watchdog.store.writer_lock`)."""
    return sorted(
        (
            path.relative_to(state),
            path.is_dir(),
            hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "",
        )
        for path in state.rglob("*")
        if path.name != "watchdog.lock"
    )


# -- the operator: SIGHUP storms ----------------------------------------------------------------

EXTRA_RULE = """
[[rules]]
name = "very-busy"
kind = "threshold"
above = 1000
channel = "#busy"
"""


@pytest.mark.slow
def test_sighup_storm_of_changing_rules_ends_on_the_newest(tmp_path: Path) -> None:
    """50 SIGHUPs within a second while the rules file flips between two versions: the
    daemon survives, coalesces reloads, ends on the last version, never re-announces a
    firing alert and still stops cleanly."""
    state = tmp_path / "state"
    rules = tmp_path / "rules.toml"
    versions = [
        write_rules(tmp_path / "a.toml", ONE_RULE, poll_interval="100ms").read_text(),
        write_rules(tmp_path / "b.toml", ONE_RULE + EXTRA_RULE, poll_interval="100ms").read_text(),
    ]
    rules.write_text(versions[0])
    with (
        FakeElevenLabs(api_key=API_KEY, count=20) as fake,
        FakeSlack(token=SLACK_TOKEN) as slack,
    ):
        env = daemon_env(state, api_url=fake.url, slack_api_url=slack.api_url)
        with DaemonProcess(["run", "--config", str(rules)], env).start() as daemon:
            daemon.wait_for("notify.sent", rule="busy", kind="firing")
            began = time.monotonic()
            for i in range(50):
                staged = tmp_path / "staged.toml"
                staged.write_text(versions[i % 2])  # ends on b
                os.replace(staged, rules)
                daemon.send(signal.SIGHUP)
                time.sleep(0.018)  # the storm's shape: 50 signals spread over ~1 s
            storm = time.monotonic() - began
            daemon.wait_until(
                lambda: (daemon.find("config.loaded", reload=True) or [{}])[-1].get("rules") == 2
            )
            daemon.wait_for("poll.ok", count=len(daemon.find("poll.ok")) + 5)
            assert daemon.proc is not None
            assert daemon.proc.poll() is None
            began = time.monotonic()
            assert daemon.stop() == 0
            assert time.monotonic() - began < 5
        assert storm < 1.5
        reloads = daemon.find("config.loaded", reload=True)
        assert 1 <= len(reloads) <= 50
        assert reloads[-1]["rules"] == 2
        assert not daemon.find("config.rejected")
        assert len(daemon.find("alert.firing")) == 1
        assert not daemon.find("alert.resolved")
        assert len(slack.messages) == 1
        stdout, stderr = output_of(daemon)
        assert "Traceback" not in stderr
        assert_no_secrets(stdout, stderr, state_dir=state, slack=slack)
