"""The outbox worker: retries, dead letters, per-channel order and pace, restarts.

Time is a fake clock whose sleep advances it, so nothing here really waits. The worker's
store is SQLite's and PostgreSQL's in turn (`open_store`): the outbox behaves the same.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import threading
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr
from structlog.testing import capture_logs

from tests.fakes.slack import FakeSlack, SlackCall
from watchdog.delivery import Backoff, OutboxWorker
from watchdog.delivery_lag import META_KEY as LAG_META_KEY
from watchdog.delivery_lag import DeliveryLag
from watchdog.errors import NotifyError
from watchdog.model import (
    AlertRecord,
    AlertState,
    MessageRef,
    Notification,
    Severity,
    TransitionKind,
)
from watchdog.notify import SlackBotNotifier
from watchdog.notify.storm import StormPolicy
from watchdog.store import OutboxEntry, Store, Unreadable

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    """`now` and `sleep` for the worker; sleeping moves the clock instead of waiting."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += timedelta(seconds=seconds)
        await asyncio.sleep(0)


@dataclass
class Call:
    note: Notification
    original: MessageRef | None
    at: datetime
    ok: bool
    in_doubt_since: datetime | None = None


@dataclass
class ScriptedNotifier:
    """Raises the scripted errors for an alert id in turn, then succeeds.

    Like the Slack bot it returns the original message when it has one (a thread reply),
    else a new message.
    """

    clock: FakeClock
    script: dict[str, list[Exception]] = field(default_factory=dict)
    name: str = "scripted"
    calls: list[Call] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def deliver(
        self,
        note: Notification,
        original: MessageRef | None,
        *,
        in_doubt_since: datetime | None = None,
    ) -> MessageRef | None:
        with self._lock:
            failures = self.script.get(note.alert_id)
            error = failures.pop(0) if failures else None
            self.calls.append(
                Call(note, original, self.clock(), ok=error is None, in_doubt_since=in_doubt_since)
            )
            if error is not None:
                raise error
            return original or MessageRef(channel=f"C{note.channel}", ts=f"{len(self.calls)}.0001")

    def delivered(self, channel: str | None = None) -> list[str]:
        return [
            c.note.alert_id
            for c in self.calls
            if c.ok and (channel is None or c.note.channel == channel)
        ]


def note(
    alert_id: str,
    *,
    channel: str = "#alerts",
    kind: TransitionKind = TransitionKind.FIRING,
) -> Notification:
    return Notification(
        alert_id=alert_id,
        kind=kind,
        rule="too-many",
        series="workspace",
        severity=Severity.WARNING,
        at=T0,
        since=T0,
        count=12,
        condition="count > 10",
        channel=channel,
    )


@pytest.fixture
def store(open_store: Callable[[], Store]) -> Iterator[Store]:
    with open_store() as opened:
        yield opened


def worker(store: Store, notifier: ScriptedNotifier, **kwargs: Any) -> OutboxWorker:
    kwargs.setdefault("random", lambda: 0.5)  # no jitter unless a test asks for it
    return OutboxWorker(store, notifier, now=notifier.clock, sleep=notifier.clock.sleep, **kwargs)


async def drain(subject: OutboxWorker, clock: FakeClock, rounds: int = 100) -> None:
    """Run rounds, sleeping on the fake clock in between, until the outbox is empty."""
    for _ in range(rounds):
        wait = await subject.run_once()
        if wait is None:
            return
        await clock.sleep(wait)
    raise AssertionError("outbox not drained")


def events(logs: list[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


def test_success_removes_the_entry_and_stores_the_ref(store: Store) -> None:
    """A delivered notification leaves the outbox, its ref is kept, notify.sent is logged."""
    clock = FakeClock()
    notifier = ScriptedNotifier(clock)
    (entry_id,) = store.apply(notifications=[note("a1")])
    with capture_logs() as logs:
        assert asyncio.run(worker(store, notifier).run_once()) is None
    assert [(c.note, c.original) for c in notifier.calls] == [(note("a1"), None)]
    assert store.outbox_depth() == 0
    assert store.message_ref("a1") == MessageRef("C#alerts", "1.0001")
    (sent,) = events(logs, "notify.sent")
    assert sent == {
        "event": "notify.sent",
        "log_level": "info",
        "alert_id": "a1",
        "rule": "too-many",
        "series": "workspace",
        "kind": "firing",
        "channel": "#alerts",
        "outbox_id": entry_id,
        "attempt": 1,
        "notifier": "scripted",
    }


def test_recoverable_errors_are_retried_until_one_success(store: Store) -> None:
    """429 (Retry-After honoured), 500 and 503 are retried; exactly one delivery succeeds."""
    clock = FakeClock()
    notifier = ScriptedNotifier(
        clock,
        {
            "a1": [
                NotifyError("ratelimited", recoverable=True, retry_after=30),
                NotifyError("http 500", recoverable=True),
                NotifyError("http 503", recoverable=True),
            ]
        },
    )
    store.apply(notifications=[note("a1")])
    with capture_logs() as logs:
        asyncio.run(drain(worker(store, notifier), clock))
    assert [c.ok for c in notifier.calls] == [False, False, False, True]
    assert notifier.delivered() == ["a1"]
    assert notifier.calls[1].at - notifier.calls[0].at >= timedelta(seconds=30)
    # Backoff with no jitter: 2 s after attempt 2, 4 s after attempt 3.
    assert notifier.calls[2].at - notifier.calls[1].at == timedelta(seconds=2)
    assert notifier.calls[3].at - notifier.calls[2].at == timedelta(seconds=4)
    retries = events(logs, "notify.retry")
    assert [(r["attempt"], r["error"], r["retry_in"]) for r in retries] == [
        (1, "ratelimited", 30.0),
        (2, "http 500", 2.0),
        (3, "http 503", 4.0),
    ]
    assert {r["alert_id"] for r in retries} == {"a1"}
    assert [s["attempt"] for s in events(logs, "notify.sent")] == [4]
    assert store.outbox_depth() == 0


@dataclass
class SlowNotifier(ScriptedNotifier):
    """A ScriptedNotifier whose every call takes `takes` on the clock before it answers."""

    takes: timedelta = timedelta(0)

    def deliver(
        self,
        note: Notification,
        original: MessageRef | None,
        *,
        in_doubt_since: datetime | None = None,
    ) -> MessageRef | None:
        try:
            return super().deliver(note, original, in_doubt_since=in_doubt_since)
        finally:
            self.clock.now += self.takes


def test_a_retry_waits_its_retry_in_from_the_failed_answer_not_from_the_call(
    store: Store,
) -> None:
    """A 429 (Retry-After 30 s) answered after a 20 s call: the next call comes 30 s after
    that answer, not 10 s (the wait counted from when the call began)."""
    clock = FakeClock()
    takes = timedelta(seconds=20)
    retry_after = NotifyError("ratelimited", recoverable=True, retry_after=30)
    notifier = SlowNotifier(clock, {"a1": [retry_after]}, takes=takes)
    store.apply(notifications=[note("a1")])
    asyncio.run(drain(worker(store, notifier), clock))
    first, second = notifier.calls
    assert (first.ok, second.ok) == (False, True)
    assert second.at - (first.at + takes) >= timedelta(seconds=30)


def test_permanent_error_dead_letters_and_logs_failure(store: Store) -> None:
    """A permanent error is not retried: the entry becomes a dead letter and notify.failed."""
    clock = FakeClock()
    notifier = ScriptedNotifier(
        clock, {"a1": [NotifyError("channel_not_found", recoverable=False)]}
    )
    store.apply(notifications=[note("a1"), note("a2")])
    with capture_logs() as logs:
        asyncio.run(drain(worker(store, notifier), clock))
    (letter,) = store.dead_letters()
    assert (letter.notification.alert_id, letter.reason, letter.attempts) == (
        "a1",
        "channel_not_found",
        1,
    )
    (failed,) = events(logs, "notify.failed")
    assert (failed["alert_id"], failed["attempt"], failed["error"]) == (
        "a1",
        1,
        "channel_not_found",
    )
    assert failed["log_level"] == "error"
    assert notifier.delivered() == ["a2"]  # the channel moves on
    assert store.outbox_depth() == 0


def test_channel_order_is_kept_while_another_channel_proceeds(store: Store) -> None:
    """A retrying message holds back its channel's later messages but not other channels."""
    clock = FakeClock()
    down = NotifyError("http 503", recoverable=True)
    notifier = ScriptedNotifier(clock, {"a1": [down, down, down]})
    store.apply(
        notifications=[
            note("a1", channel="#a"),
            note("b1", channel="#b"),
            note("a2", channel="#a"),
            note("b2", channel="#b"),
        ]
    )
    asyncio.run(drain(worker(store, notifier), clock))
    assert notifier.delivered("#a") == ["a1", "a2"]
    assert notifier.delivered("#b") == ["b1", "b2"]
    attempted = [c.note.alert_id for c in notifier.calls]
    a1_success = next(i for i, c in enumerate(notifier.calls) if c.ok and c.note.alert_id == "a1")
    assert attempted.index("b2") < a1_success < attempted.index("a2")


def test_same_channel_sends_respect_the_pace(store: Store) -> None:
    """Two messages to one channel go out at least `pace` seconds apart, by the clock."""
    clock = FakeClock()
    notifier = ScriptedNotifier(clock)
    store.apply(notifications=[note("a1"), note("a2"), note("a3"), note("b1", channel="#b")])
    subject = worker(store, notifier, pace=1.5)

    async def scenario() -> None:
        assert await subject.run_once() == 1.5
        assert sorted(notifier.delivered()) == ["a1", "b1"]
        clock.now += timedelta(seconds=1)
        assert await subject.run_once() == pytest.approx(0.5)
        assert len(notifier.calls) == 2  # too soon for a2
        await drain(subject, clock)

    asyncio.run(scenario())
    sends = [c.at for c in notifier.calls if c.note.channel == "#alerts"]
    assert len(sends) == 3
    assert all(b - a >= timedelta(seconds=1.5) for a, b in itertools.pairwise(sends))


def test_repeat_and_resolution_get_the_original_message(store: Store) -> None:
    """Repeats and resolutions are handed the firing message's ref; resolution drops it."""
    clock = FakeClock()
    notifier = ScriptedNotifier(clock)
    subject = worker(store, notifier)
    for kind in (TransitionKind.FIRING, TransitionKind.REPEAT, TransitionKind.RESOLVED):
        # One at a time: queued together, the repeat and the firing would be overtaken.
        store.apply(notifications=[note("a1", kind=kind)])
        asyncio.run(drain(subject, clock))
    firing = MessageRef("C#alerts", "1.0001")
    assert [(c.note.kind, c.original) for c in notifier.calls] == [
        (TransitionKind.FIRING, None),
        (TransitionKind.REPEAT, firing),
        (TransitionKind.RESOLVED, firing),
    ]
    assert store.message_ref("a1") is None


def test_delivery_survives_a_restart(open_store: Callable[[], Store]) -> None:
    """A message that failed before a restart is delivered exactly once by the next worker."""
    clock = FakeClock()
    first = ScriptedNotifier(clock, {"a1": [NotifyError("connection reset", recoverable=True)]})
    with open_store() as store:
        store.apply(notifications=[note("a1")])
        wait = asyncio.run(worker(store, first).run_once())
    assert wait == 1.0
    assert first.delivered() == []

    second = ScriptedNotifier(clock)
    with open_store() as store, capture_logs() as logs:
        restarted = worker(store, second)
        assert asyncio.run(restarted.run_once()) == 1.0  # not due yet: the schedule persisted
        assert second.calls == []
        clock.now += timedelta(seconds=1)
        asyncio.run(drain(restarted, clock))
        assert store.outbox_depth() == 0
    assert second.delivered() == ["a1"]
    assert [s["attempt"] for s in events(logs, "notify.sent")] == [2]


def test_a_notification_the_notifier_cannot_render_is_dead_lettered(store: Store) -> None:
    """An exception other than NotifyError is permanent: one attempt, then the next goes."""
    clock = FakeClock()
    notifier = ScriptedNotifier(clock, {"a1": [KeyError("severity")]})
    store.apply(notifications=[note("a1"), note("a2")])
    with capture_logs() as logs:
        asyncio.run(drain(worker(store, notifier), clock))
    (failed,) = events(logs, "notify.failed")
    assert failed["error"] == "cannot deliver: unexpected KeyError: 'severity'"
    assert failed["attempt"] == 1
    assert "exc_info" not in failed
    assert not events(logs, "notify.retry")
    assert notifier.delivered() == ["a2"]
    (dead,) = store.dead_letters()
    assert dead.reason == failed["error"]


def test_an_unreadable_payload_is_dead_lettered_without_a_call(store: Store) -> None:
    """A stored payload that cannot be parsed is dead-lettered; the channel moves on."""
    clock = FakeClock()
    notifier = ScriptedNotifier(clock)
    store.apply(notifications=[note("a1"), note("a2")])
    teleported = json.dumps({**note("a1").to_json(), "kind": "teleported"})
    store._db.execute("UPDATE outbox SET payload = ? WHERE alert_id = 'a1'", (teleported,))
    with capture_logs() as logs:
        asyncio.run(drain(worker(store, notifier), clock))
    (failed,) = events(logs, "notify.failed")
    assert failed["alert_id"] == "a1"
    assert failed["error"].startswith("unreadable payload: ValueError: 'teleported'")
    assert notifier.delivered() == ["a2"]
    assert [c.note.alert_id for c in notifier.calls] == ["a2"]
    (dead,) = store.dead_letters()
    assert isinstance(dead.notification, Unreadable)
    assert dead.notification.alert_id == "a1"


def test_after_a_lost_answer_the_next_attempt_is_told_when_the_first_began(
    store: Store,
) -> None:
    """An in-doubt failure hands the first attempt's start to the next attempt (to look
    for the post); a failure that says nothing was posted clears the doubt again."""
    clock = FakeClock()
    notifier = ScriptedNotifier(
        clock,
        {
            "a1": [
                NotifyError("timed out", recoverable=True, in_doubt=True),
                NotifyError("ratelimited", recoverable=True),
            ]
        },
    )
    store.apply(notifications=[note("a1")])
    asyncio.run(drain(worker(store, notifier), clock))
    assert [c.in_doubt_since for c in notifier.calls] == [None, T0, None]
    assert notifier.delivered() == ["a1"]


def test_an_attempt_abandoned_mid_call_is_in_doubt_at_the_next_start(
    open_store: Callable[[], Store],
) -> None:
    """A call still running when the worker is abandoned (a stop past its grace, or a kill)
    leaves the entry in doubt: the next worker passes when the first attempt began."""
    clock = FakeClock()
    release = threading.Event()

    class Hanging(ScriptedNotifier):
        def deliver(
            self,
            note: Notification,
            original: MessageRef | None,
            *,
            in_doubt_since: datetime | None = None,
        ) -> MessageRef | None:
            release.wait(10)
            raise NotifyError("never answered", recoverable=True)

    async def abandon(subject: OutboxWorker) -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(subject.run_once(), 0.2)

    with open_store() as store:
        store.apply(notifications=[note("a1")])
        asyncio.run(abandon(worker(store, Hanging(clock))))
    release.set()

    clock.now += timedelta(minutes=5)
    second = ScriptedNotifier(clock)
    with open_store() as store:
        asyncio.run(drain(worker(store, second), clock))
    assert [c.in_doubt_since for c in second.calls] == [T0]
    assert second.delivered() == ["a1"]


def test_run_wakes_for_new_entries_and_stops_promptly(store: Store) -> None:
    """run() sleeps until woken, delivers, and returns as soon as stop is set."""
    clock = FakeClock()
    notifier = ScriptedNotifier(clock, {"a2": [NotifyError("http 503", recoverable=True)]})

    async def forever(_seconds: float) -> None:
        await asyncio.Event().wait()

    subject = OutboxWorker(store, notifier, now=clock, sleep=forever, random=lambda: 0.5)

    async def scenario() -> None:
        stop, wake = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(subject.run(stop, wake))
        await asyncio.sleep(0.01)
        assert notifier.calls == []
        store.apply(notifications=[note("a1")])
        wake.set()
        for _ in range(500):
            if notifier.delivered():
                break
            await asyncio.sleep(0.01)
        assert notifier.delivered() == ["a1"]
        # A retrying entry with a long wait ahead must not delay stopping. (Another
        # channel: this clock never moves, so #alerts stays paced after a1.)
        store.apply(notifications=[note("a2", channel="#other")])
        wake.set()
        for _ in range(500):
            if notifier.calls[-1].note.alert_id == "a2":
                break
            await asyncio.sleep(0.01)
        assert [(c.note.alert_id, c.ok) for c in notifier.calls] == [("a1", True), ("a2", False)]
        stop.set()
        await asyncio.wait_for(task, timeout=2)

    asyncio.run(scenario())
    [retrying] = store.outbox_heads()
    assert (retrying.notification.alert_id, retrying.attempts) == ("a2", 1)


def test_run_once_on_an_empty_outbox_returns_none(store: Store) -> None:
    """Nothing queued: no call to the notifier and nothing to wait for."""
    clock = FakeClock()
    notifier = ScriptedNotifier(clock)
    assert asyncio.run(worker(store, notifier).run_once()) is None
    assert notifier.calls == []


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    """Without jitter the delays are base * factor**(n-1), capped."""
    policy = Backoff(base=1.0, factor=2.0, cap=300.0, jitter=0.2)
    assert [policy.delay(n, 0.5) for n in (1, 2, 3, 9, 10, 50)] == [1, 2, 4, 256, 300, 300]
    assert policy.delay(1, 0.0) == pytest.approx(0.8)
    assert policy.delay(3, 0.999999) == pytest.approx(4.8, rel=1e-5)


@given(attempt=st.integers(min_value=1, max_value=10**7), r=st.floats(0, 1, exclude_max=True))
def test_backoff_stays_within_jitter_and_cap(attempt: int, r: float) -> None:
    """Any attempt number (retries go on forever) gives a delay in [0.8 x raw, cap]."""
    policy = Backoff()
    raw = min(policy.cap, policy.base * 2.0 ** min(attempt - 1, 20))
    assert raw * 0.8 - 1e-9 <= policy.delay(attempt, r) <= min(raw * 1.2, policy.cap) + 1e-9


def test_backoff_rejects_nonsense() -> None:
    """A policy that could retry in a tight loop or never is refused at construction."""
    with pytest.raises(ValueError, match="base"):
        Backoff(base=0)
    with pytest.raises(ValueError, match="jitter"):
        Backoff(jitter=1.0)


# --- bringing the queue up to date before sending ---


def later(kind: TransitionKind, alert_id: str = "a1", *, minutes: int, count: int) -> Notification:
    """A notification of `alert_id` queued `minutes` after T0 with `count`."""
    return dataclasses.replace(
        note(alert_id, kind=kind), at=T0 + timedelta(minutes=minutes), count=count
    )


def test_a_queued_firing_and_its_resolution_go_out_as_one_card(store: Store) -> None:
    """Firing, repeat and resolution still queued: one fired-and-resolved delivery."""
    clock = FakeClock()
    notifier = ScriptedNotifier(clock)
    firing, _, resolved = store.apply(
        notifications=[
            later(TransitionKind.FIRING, minutes=0, count=31),
            later(TransitionKind.REPEAT, minutes=1, count=29),
            later(TransitionKind.RESOLVED, minutes=2, count=4),
        ]
    )
    with capture_logs() as logs:
        asyncio.run(drain(worker(store, notifier), clock))
    (call,) = notifier.calls
    assert (call.note.kind, call.note.count, call.original) == (TransitionKind.RESOLVED, 4, None)
    assert (call.note.fired_at, call.note.fired_count) == (T0, 31)
    assert store.message_ref("a1") is None  # the episode is over: nothing left to edit
    (folded,) = events(logs, "notify.folded")
    assert (folded["reason"], folded["outbox_id"], folded["folded"]) == (
        "fired_and_resolved",
        firing,
        [firing + 1, resolved],
    )
    (sent,) = events(logs, "notify.sent")
    assert (sent["outbox_id"], sent["kind"]) == (firing, "resolved")


def test_overtaken_repeats_are_dropped_without_a_slack_call(store: Store) -> None:
    """Of three queued repeats only the newest is sent; the others are audited as dropped."""
    clock = FakeClock()
    notifier = ScriptedNotifier(clock)
    subject = worker(store, notifier)
    store.apply(notifications=[note("a1")])
    asyncio.run(drain(subject, clock))
    first, second, _ = store.apply(
        notifications=[
            later(TransitionKind.REPEAT, minutes=n, count=c)
            for n, c in ((5, 20), (10, 25), (15, 30))
        ]
    )
    with capture_logs() as logs:
        asyncio.run(drain(subject, clock))
    assert [(c.note.kind, c.note.count) for c in notifier.calls] == [
        (TransitionKind.FIRING, 12),
        (TransitionKind.REPEAT, 30),
    ]
    dropped = events(logs, "notify.dropped")
    assert [(d["outbox_id"], d["reason"], d["kind"]) for d in dropped] == [
        (first, "superseded_repeat", "repeat"),
        (second, "superseded_repeat", "repeat"),
    ]


def test_dropping_a_failing_head_keeps_the_channels_backoff(store: Store) -> None:
    """A retrying repeat overtaken by its resolution is dropped; the resolution waits out
    the repeat's backoff instead of hitting the failing Slack at once."""
    clock = FakeClock()
    notifier = ScriptedNotifier(clock)
    subject = worker(store, notifier, backoff=Backoff(base=20.0, cap=20.0))
    store.apply(notifications=[note("a1")])
    asyncio.run(drain(subject, clock))
    notifier.script["a1"] = [NotifyError("HTTP 503", recoverable=True)]
    store.apply(notifications=[later(TransitionKind.REPEAT, minutes=5, count=20)])
    asyncio.run(clock.sleep(asyncio.run(subject.run_once()) or 0.0))  # the channel's pace
    asyncio.run(subject.run_once())
    failing = notifier.calls[-1]
    assert (failing.note.kind, failing.ok) == (TransitionKind.REPEAT, False)
    failed_at = failing.at
    store.apply(notifications=[later(TransitionKind.RESOLVED, minutes=5, count=3)])
    with capture_logs() as logs:
        asyncio.run(drain(subject, clock))
    assert [d["reason"] for d in events(logs, "notify.dropped")] == ["superseded_repeat"]
    resolved = notifier.calls[-1]
    assert (resolved.note.kind, resolved.ok) == (TransitionKind.RESOLVED, True)
    assert resolved.at - failed_at >= timedelta(seconds=20)


def test_a_resolution_whose_firing_card_was_never_sent_is_dropped(store: Store) -> None:
    """The firing was rejected on its only attempt: its resolution is not sent either."""
    clock = FakeClock()
    notifier = ScriptedNotifier(clock, {"a1": [NotifyError("invalid_blocks", recoverable=False)]})
    subject = worker(store, notifier)
    store.apply(notifications=[note("a1")])
    asyncio.run(drain(subject, clock))
    (resolution,) = store.apply(notifications=[note("a1", kind=TransitionKind.RESOLVED)])
    with capture_logs() as logs:
        asyncio.run(drain(subject, clock))
    assert [c.note.kind for c in notifier.calls] == [TransitionKind.FIRING]
    (dropped,) = events(logs, "notify.dropped")
    assert (dropped["outbox_id"], dropped["reason"]) == (resolution, "never_announced")


def test_a_firing_that_may_be_in_slack_keeps_its_resolution(store: Store) -> None:
    """A firing whose attempt failed may have been posted: never folded, resolution follows."""
    clock = FakeClock()
    lost = NotifyError("chat.postMessage: unreachable: timed out", recoverable=True, in_doubt=True)
    notifier = ScriptedNotifier(clock, {"a1": [lost]})
    subject = worker(store, notifier)
    store.apply(notifications=[note("a1")])
    asyncio.run(subject.run_once())
    store.apply(notifications=[note("a1", kind=TransitionKind.RESOLVED)])
    with capture_logs() as logs:
        asyncio.run(drain(subject, clock))
    assert [(c.note.kind, c.ok) for c in notifier.calls] == [
        (TransitionKind.FIRING, False),
        (TransitionKind.FIRING, True),
        (TransitionKind.RESOLVED, True),
    ]
    assert notifier.calls[2].original == MessageRef("C#alerts", "2.0001")
    assert not events(logs, "notify.folded")
    assert not events(logs, "notify.dropped")


def test_a_firing_given_up_after_a_lost_answer_keeps_its_resolution(store: Store) -> None:
    """Dead-lettered after an earlier failed attempt, the card may be in Slack: resolve it."""
    clock = FakeClock()
    notifier = ScriptedNotifier(
        clock,
        {
            "a1": [
                NotifyError("HTTP 500", recoverable=True, in_doubt=True),
                NotifyError("channel_not_found", recoverable=False),
            ]
        },
    )
    subject = worker(store, notifier)
    store.apply(notifications=[note("a1")])
    asyncio.run(drain(subject, clock))
    store.apply(notifications=[note("a1", kind=TransitionKind.RESOLVED)])
    asyncio.run(drain(subject, clock))
    assert [c.note.kind for c in notifier.calls] == [
        TransitionKind.FIRING,
        TransitionKind.FIRING,
        TransitionKind.RESOLVED,
    ]


def test_the_delivery_lag_is_reported_and_kept_across_restarts(
    open_store: Callable[[], Store],
) -> None:
    """Each send reports how long it waited; the record (last, worst) survives a restart."""
    clock = FakeClock()
    lags: list[float] = []
    with open_store() as store:
        store.apply(notifications=[note("a1")])
        clock.now += timedelta(seconds=42)
        asyncio.run(worker(store, ScriptedNotifier(clock), on_lag=lags.append).run_once())
    clock.now += timedelta(minutes=5)
    with open_store() as store:
        store.apply(notifications=[dataclasses.replace(note("a2"), at=clock.now)])
        clock.now += timedelta(seconds=3)
        asyncio.run(worker(store, ScriptedNotifier(clock), on_lag=lags.append).run_once())
        record = DeliveryLag.from_json(store.get_meta(LAG_META_KEY))
    assert lags == [42.0, 3.0]
    assert (record.last, record.last_at, record.worst(clock.now)) == (3.0, clock.now, 42.0)


# --- catching up after a Slack outage, against the loopback Slack ---

Scheduled = tuple[timedelta, Notification]


def episode(
    rule: str, *, fired: int, repeats: tuple[int, ...] = (), resolved: int | None = None
) -> list[Scheduled]:
    """One alert's notifications, each queued `seconds` after T0 (its `at`)."""

    def at(kind: TransitionKind, seconds: int, count: int) -> Scheduled:
        offset = timedelta(seconds=seconds)
        queued = dataclasses.replace(
            note(f"id-{rule}", kind=kind), rule=rule, at=T0 + offset, count=count
        )
        return offset, queued

    items = [at(TransitionKind.FIRING, fired, 20)]
    items += [at(TransitionKind.REPEAT, s, 21 + n) for n, s in enumerate(repeats)]
    if resolved is not None:
        items.append(at(TransitionKind.RESOLVED, resolved, 3))
    return items


async def run_with_slack(
    store: Store,
    slack: FakeSlack,
    schedule: list[Scheduled],
    *,
    outage_ends: timedelta,
) -> list[tuple[timedelta, SlackCall]]:
    """Queue `schedule` on a fake clock while Slack is down until `outage_ends`; drain.

    Returns every message the fake Slack accepted, with the fake-clock time (since T0)
    of the delivery round that sent it.
    """
    clock = FakeClock()
    bot = SlackBotNotifier(SecretStr(slack.token), api_url=slack.api_url, timeout=5)
    subject = OutboxWorker(store, bot, now=clock, sleep=clock.sleep, random=lambda: 0.5)
    pending = sorted(schedule, key=lambda item: item[0])
    arrivals: list[tuple[timedelta, SlackCall]] = []
    slack.outage(True)
    while True:
        elapsed = clock.now - T0
        slack.outage(elapsed < outage_ends)
        due = [n for offset, n in pending if offset <= elapsed]
        pending = pending[len(due) :]
        store.apply(notifications=due)
        seen = len(slack.messages)
        wait = await subject.run_once()
        arrivals += [(elapsed, message) for message in slack.messages[seen:]]
        if wait is None and not pending and elapsed >= outage_ends:
            return arrivals
        steps = [(outage_ends - elapsed).total_seconds()] if elapsed < outage_ends else []
        steps += [] if wait is None else [wait]
        steps += [(pending[0][0] - elapsed).total_seconds()] if pending else []
        await clock.sleep(max(0.0, min(steps)))


def test_an_alert_that_fired_and_resolved_during_an_outage_is_one_card(store: Store) -> None:
    """Slack down while an alert fires and resolves: afterwards one fired-and-resolved card."""
    schedule = [
        *episode("head", fired=0),  # attempted during the outage: may be in Slack, sent as is
        *episode("flap", fired=5, repeats=(20,), resolved=40),
    ]
    with FakeSlack() as slack:
        arrivals = asyncio.run(
            run_with_slack(store, slack, schedule, outage_ends=timedelta(seconds=60))
        )
    texts = [message.text for _, message in arrivals]
    assert [message.thread_ts for _, message in arrivals] == [None, None]
    assert [message.method for _, message in arrivals] == ["chat.postMessage"] * 2
    assert texts[0].startswith("🟠 FIRING [WARNING] head on workspace")
    assert texts[1].startswith("✅ FIRED AND RESOLVED [WARNING] flap on workspace: fired with")


def test_a_backlog_after_an_outage_is_sent_within_a_minute(store: Store) -> None:
    """After a 10-minute outage with 25 alerts churning, every card is out within 60 s.

    Twenty alerts fired, repeated and resolved while Slack was down (one card each), five
    are still firing with three repeats (their card and the newest repeat). Sent one by
    one, the 81 queued notifications would take minutes.
    """
    outage = timedelta(minutes=10)
    schedule = [*episode("head", fired=0)]
    for n in range(20):
        schedule += episode(
            f"flap-{n}", fired=10 + 10 * n, repeats=(100 + 10 * n,), resolved=300 + 10 * n
        )
    for n in range(5):
        schedule += episode(f"busy-{n}", fired=15 + 10 * n, repeats=(200, 320, 440 + n))
    with FakeSlack() as slack:
        arrivals = asyncio.run(run_with_slack(store, slack, schedule, outage_ends=outage))
    assert arrivals
    latest = max(at for at, _ in arrivals)
    assert latest - outage <= timedelta(seconds=60), (
        f"last card {latest - outage} after Slack was back"
    )
    cards = [m for _, m in arrivals if m.thread_ts is None]
    replies = [m for _, m in arrivals if m.thread_ts is not None]
    assert len(cards) == 1 + 20 + 5
    assert sum(m.text.startswith("✅ FIRED AND RESOLVED") for m in cards) == 20
    assert len(replies) == 5
    assert all("count now *23*" in str(m.blocks) for m in replies)  # the newest repeat only
    assert store.outbox_depth() == 0


# --- storm control (watchdog.notify.storm) ---


def firing_alert(alert_id: str) -> AlertRecord:
    return AlertRecord("too-many", alert_id, alert_id, AlertState.FIRING, T0, 12, T0, "c")


def test_a_storm_is_one_summary_card_edited_then_a_closing_one(store: Store) -> None:
    """12 cards due at once with max 10: one summary card (edited), held cards audited,
    then a closing summary and a card of its own for each alert still firing."""
    clock = FakeClock()
    notifier = ScriptedNotifier(clock)
    store.apply(
        alerts=[firing_alert("a0"), firing_alert("a1")],
        notifications=[note(f"a{i}") for i in range(12)],
    )
    policy = StormPolicy(max=10, window=timedelta(minutes=1))
    subject = worker(store, notifier, storm=policy)
    with capture_logs() as logs:
        asyncio.run(subject.run_once())
        store.apply(notifications=[note("late")])  # joins the storm: the summary is edited
        asyncio.run(drain(subject, clock))
    first, second = notifier.calls[:2]
    assert first.note.kind is TransitionKind.REPORT
    assert first.original is None
    assert "12 alerts firing" in (first.note.message or "")
    assert second.note.alert_id == first.note.alert_id
    assert second.original is not None
    assert "13 alerts firing" in (second.note.message or "")
    closing, *released = notifier.calls[2:]
    assert "Storm over: 13 alerts held, 2 still firing" in (closing.note.message or "")
    assert closing.original is None
    assert sorted(c.note.alert_id for c in released) == ["a0", "a1"]
    assert all(c.note.kind is TransitionKind.FIRING for c in released)
    held = {e["alert_id"] for e in events(logs, "notify.held")}
    assert held == {f"a{i}" for i in range(12)} | {"late"}
    assert len(events(logs, "storm.started")) == len(events(logs, "storm.ended")) == 1


def test_a_channel_below_the_storm_limit_gets_every_card(store: Store) -> None:
    """Ten cards with max 10: each goes out as itself, no summary."""
    clock = FakeClock()
    notifier = ScriptedNotifier(clock)
    store.apply(notifications=[note(f"a{i}") for i in range(10)])
    subject = worker(store, notifier, storm=StormPolicy(max=10, window=timedelta(minutes=1)))
    asyncio.run(drain(subject, clock))
    assert notifier.delivered() == [f"a{i}" for i in range(10)]


def test_a_silenced_card_does_not_join_the_storm(store: Store) -> None:
    """The suppression stage judges every held card: a silenced one is not in the summary."""
    clock = FakeClock()
    notifier = ScriptedNotifier(clock)
    store.apply(notifications=[note(f"a{i}") for i in range(12)])

    def silenced(entry: OutboxEntry, held: Notification) -> bool:
        if held.alert_id != "a5":
            return False
        store.discard(entry.id)
        return True

    policy = StormPolicy(max=10, window=timedelta(minutes=1))
    subject = worker(store, notifier, storm=policy, hold=silenced)
    with capture_logs() as logs:
        asyncio.run(drain(subject, clock))
    assert "11 alerts firing" in (notifier.calls[0].note.message or "")
    assert {e["alert_id"] for e in events(logs, "notify.held")} == {
        f"a{i}" for i in range(12) if i != 5
    }


def test_a_card_posted_before_a_storm_gets_its_resolution_after_it(store: Store) -> None:
    """A card already in Slack whose alert resolved during the storm is edited afterwards."""
    clock = FakeClock()
    notifier = ScriptedNotifier(clock)
    subject = worker(store, notifier, storm=StormPolicy(max=10, window=timedelta(minutes=1)))
    store.apply(notifications=[note("old")])
    asyncio.run(drain(subject, clock))
    resolved = note("old", kind=TransitionKind.RESOLVED)
    store.apply(notifications=[*(note(f"a{i}") for i in range(12)), resolved])
    asyncio.run(drain(subject, clock))
    (resolution,) = [c for c in notifier.calls if c.note.alert_id == "old"][1:]
    assert resolution.note.kind is TransitionKind.RESOLVED
    assert resolution.original is not None


def test_a_closed_fence_starts_no_attempt_until_it_opens(store: Store) -> None:
    """While the fence says this daemon may not post (a new leader's grace), the worker
    makes no call and counts no attempt; once it opens the entry goes out once."""
    clock = FakeClock()
    notifier = ScriptedNotifier(clock)
    store.apply(notifications=[note("a1")])
    closed: list[str | None] = ["leader for less than the take-over grace"]
    subject = worker(store, notifier, fence=lambda: closed[0])
    wait = asyncio.run(subject.run_once())
    assert wait is not None
    assert wait > 0
    assert notifier.calls == []
    assert store.oldest_pending() is not None
    assert store.oldest_pending().attempts == 0  # type: ignore[union-attr]
    closed[0] = None
    asyncio.run(drain(subject, clock))
    assert [c.note for c in notifier.calls] == [note("a1")]


def test_a_fence_closing_just_before_the_call_stops_it_and_keeps_the_entry(
    store: Store,
) -> None:
    """The fence is asked again in the delivery thread right before the call: closed by
    then (the lock was lost meanwhile), nothing is sent and the entry waits for a retry."""
    clock = FakeClock()
    notifier = ScriptedNotifier(clock)
    store.apply(notifications=[note("a1")])
    answers = iter([None])
    subject = worker(store, notifier, fence=lambda: next(answers, "not the leader"))
    with capture_logs() as logs:
        asyncio.run(subject.run_once())
    assert notifier.calls == []
    (retry,) = events(logs, "notify.retry")
    assert "not the leader" in retry["error"]
    assert store.outbox_depth() == 1
