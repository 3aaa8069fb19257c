"""The outbox worker: delivers queued notifications to Slack, in order, at Slack's pace.

What is guaranteed:

* Per channel, messages go out in the order they were queued: only a channel's oldest
  entry is ever attempted, so a retrying message holds back the ones behind it while other
  channels proceed.
* No two attempts to the same channel start less than `pace` seconds apart (Slack allows
  about one message per second per channel). The pace is remembered in memory only, so
  the first send after a restart may come sooner.
* Recoverable failures (429, 5xx, connection errors) are retried for as long as it
  takes, with capped exponential backoff and jitter, never sooner than Slack's
  Retry-After. The schedule lives in the store, so retries continue across restarts.
* A poison message never holds its channel: a permanent failure (Slack rejects it as
  malformed: `invalid_blocks`, `msg_too_long`, `invalid_arguments`, ...), a notification
  the notifier cannot render (any exception other than `NotifyError` escaping it: the
  same input would fail the same way again) and a stored payload that cannot be read
  back are dead-lettered with their reason after one attempt, and the channel's next
  message goes out. Failures of the worker itself are not a message's fault: they
  propagate, and the daemon's supervision turns them into `daemon.crashed` and a restart.
* An entry is removed only after the notifier returned. Each attempt puts its entry "in
  doubt" in the store before the request leaves; only an answer saying the post was not
  made clears the doubt. An attempt that starts in doubt (an answer was lost: timeout,
  reset, 5xx, or the process stopped or died mid-call) hands the notifier the time of the
  first attempt, and the Slack bot looks for the post there before posting again. So a
  post reaches Slack exactly once in bot mode with the history scopes, and at least once
  otherwise (webhook, console, a token without those scopes). While the store refuses
  that write (a full disk), nothing is sent.
* Every attempt is audited: `notify.sent`, `notify.retry` or `notify.failed`, each with
  the alert's id and the attempt number.
* Before a channel's head is attempted, the queue behind it brings it up to date
  (`watchdog.notify.coalesce`): a firing card whose resolution is already queued goes out
  as one "fired and resolved" card, a "still firing" repeat overtaken by a later
  notification of its alert is dropped, and so is a resolution whose firing card was never
  sent. Each is audited (`notify.folded`, `notify.dropped`, with the reason) and costs no
  Slack call, so a backlog shrinks to what is still news. An entry that may already be in
  Slack (any earlier attempt) is never folded or dropped.
* A head that a silence or mute covers when it is about to be sent is taken out of the
  queue unsent by the `hold` stage the daemon passes in (`watchdog.silences`), before
  it is brought up to date; like folding, never an entry that may already be in Slack.
* PagerDuty and outgoing webhooks (`watchdog.notify.destinations`) are queues like
  channels, with the same order, retries and dead letters; the stages about the Slack
  card (bringing the queue up to date, the message ref, the lookup) leave them alone.
* Storm control (`watchdog.notify.storm`): when more than `storm.max` cards would go
  out in one channel within `storm.window`, the channel's queued cards are held (each
  audited `notify.held`) and folded into one summary card, edited in place at the
  channel's pace. Once nothing was held for a window, one closing summary is queued with
  a card of its own for each held alert still firing (`storm.ended`). The storm is kept
  in the store; PagerDuty and webhooks are not subject to it.
* The delivery lag of every sent notification (queued until the start of the attempt
  Slack accepted) is reported and kept in the store (`watchdog.delivery_lag`).

* With a `fence` (a daemon sharing PostgreSQL, see `watchdog.leadership`) no round
  starts while the fence is closed, and the fence is asked again in the delivery thread
  just before each call: a daemon that is not (or no longer) the leader sends nothing.

The worker reads the clock and sleeps only through the injected `now` and `sleep`, so
tests drive it with a fake clock instead of patching time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import random as random_module
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeVar

import structlog

from watchdog.audit import Event
from watchdog.delivery_lag import META_KEY as LAG_META_KEY
from watchdog.delivery_lag import DeliveryLag
from watchdog.errors import NotifyError, StateError
from watchdog.model import AlertState, MessageRef, Notification, TransitionKind
from watchdog.notify import Notifier
from watchdog.notify.coalesce import Action, Queued, Reason, plan_head
from watchdog.notify.destinations import Router, is_card
from watchdog.notify.storm import (
    Storm,
    StormPolicy,
    closing_summary,
    is_alert_card,
    plan_storm,
    release,
    summary,
)
from watchdog.store import OutboxEntry, Store, Unreadable

__all__ = ["Backoff", "OutboxWorker"]


STATE_RETRY_SECONDS = 5.0
"""After the store refused a write, wait this long before delivering again."""
MAX_RETRY_AFTER = 900.0
"""Slack's Retry-After is honoured up to 15 minutes."""
STORMS_META_KEY = "storms"
"""Meta key of the channels' storms (JSON: channel -> `Storm`), kept across restarts."""
FENCE_RECHECK_SECONDS = 0.25
"""While the fence is closed (a new leader's grace, say), look again this often."""
MIN_TIME = datetime.min.replace(tzinfo=UTC)
MAX_WAIT = timedelta(seconds=MAX_RETRY_AFTER + 60)
"""No entry ever waits longer; a longer wait means the wall clock was set back."""

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Backoff:
    """The delivery retry policy: capped exponential backoff with ±`jitter` (a fraction).

    Attempt 1 waits about `base` seconds, each further attempt `factor` times longer, up
    to `cap`. Jitter spreads retries so a recovered Slack is not hit by every channel at
    the same instant; the result never exceeds `cap`.

    The cap bounds how long a channel that is reachable again goes unnoticed, so it is
    part of the delivery-lag promise (nothing waits more than a minute once Slack is
    back): 20 s leaves the rest of the minute for the backlog. Slack's Retry-After still
    pushes a retry further out.
    """

    base: float = 1.0
    factor: float = 2.0
    cap: float = 20.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if not (self.base > 0 and self.factor >= 1 and self.cap >= self.base):
            raise ValueError("backoff needs base > 0, factor >= 1 and cap >= base")
        if not 0 <= self.jitter < 1:
            raise ValueError("backoff jitter must be in [0, 1)")

    def delay(self, attempt: int, random: float) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based); `random` in [0, 1)."""
        exponent = max(attempt - 1, 0)
        try:
            raw = self.base * self.factor**exponent
        except OverflowError:
            raw = math.inf
        raw = min(raw, self.cap)
        jittered = raw * (1 + self.jitter * (2 * random - 1))
        return max(0.0, min(jittered, self.cap))


class OutboxWorker:
    """Drains the store's outbox through one notifier; see the module docstring."""

    def __init__(
        self,
        store: Store,
        notifier: Notifier,
        *,
        now: Callable[[], datetime],
        sleep: Callable[[float], Awaitable[None]],
        pace: float = 1.0,
        backoff: Backoff | None = None,
        random: Callable[[], float] = random_module.random,
        logger: structlog.typing.FilteringBoundLogger | None = None,
        on_outcome: Callable[[Literal["sent", "retry", "failed"]], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        on_coalesced: Callable[[Reason], None] | None = None,
        on_lag: Callable[[float], None] | None = None,
        hold: Callable[[OutboxEntry, Notification], bool] | None = None,
        storm: StormPolicy | None = None,
        fence: Callable[[], str | None] | None = None,
    ) -> None:
        self._store = store
        self._notifier = notifier
        self._now = now
        self._sleep = sleep
        self._pace = timedelta(seconds=pace)
        self._backoff = Backoff() if backoff is None else backoff
        self._random = random
        self._log: structlog.typing.FilteringBoundLogger = (
            structlog.get_logger("watchdog") if logger is None else logger
        )
        self._last_send: dict[str, datetime] = {}
        self._retry_not_before: dict[str, datetime] = {}
        """Per channel: the retry time of a failing head that was dropped before it came."""
        self._on_outcome = on_outcome or (lambda _outcome: None)
        self._monotonic = monotonic
        self._round_started: float | None = None
        self._on_coalesced = on_coalesced or (lambda _reason: None)
        self._on_lag = on_lag or (lambda _seconds: None)
        self._lag: DeliveryLag | None = None
        self._hold = hold or (lambda _entry, _note: False)
        """The suppression stage: takes a head out of the queue unsent (True) or not."""
        self._storm_policy = StormPolicy(max=0) if storm is None else storm
        self._card_sends: dict[str, list[datetime]] = {}
        """Per channel: when alert cards were posted, within the storm window (memory only)."""
        self._released: dict[str, set[str]] = {}
        """Per channel: alerts an ended storm released, sent whatever the count (memory only)."""
        self._fence = fence or (lambda: None)
        """Why no delivery may start now (not the leader, see `watchdog.leadership`), or None."""

    def round_age(self) -> float | None:
        """Seconds the current delivery round has been running; None while waiting for work.

        The worker's heartbeat: a worker that waits is alive however long it waits, one
        stuck inside a round (a Slack call that never returns) is not.
        """
        if self._round_started is None:
            return None
        return self._monotonic() - self._round_started

    def control_storms(self, policy: StormPolicy) -> None:
        """Apply `policy` (a reload's `[storm]`) from the next round on."""
        self._storm_policy = policy

    def use(self, notifier: Notifier) -> None:
        """Deliver through `notifier` from the next attempt on (a reload's new Slack secret).

        An attempt already in flight finishes with the notifier it started with.
        """
        self._notifier = notifier

    async def run_once(self) -> float | None:
        """Attempt every channel head that is due and paced; return seconds until the next.

        Channels are attempted concurrently, one entry each. Returns None when the outbox
        is empty, else the wait until the earliest head is both due and clear of its
        channel's pace (0.0 if one already is).
        """
        self._round_started = self._monotonic()
        try:
            return await self._round()
        finally:
            self._round_started = None

    async def _round(self) -> float | None:
        now = self._now()
        self._end_storms(now)
        ready: list[tuple[OutboxEntry, Notification]] = []
        for head in self._up_to_date_heads(now):
            if isinstance(head.notification, Unreadable):
                self._dead_letter_unreadable(head, head.notification, now)
            elif self._ready_at(head, now) <= now:
                ready.append((head, head.notification))
        if ready and self._fence() is not None:
            return FENCE_RECHECK_SECONDS
        for entry, _ in ready:
            self._last_send[entry.channel] = now
        # On disk before any request leaves: a death mid-call leaves the entry in doubt.
        self._store.begin_attempts([entry.id for entry, _ in ready], at=now)
        originals = [self._original(note) for _, note in ready]
        outcomes = await asyncio.gather(
            *(
                self._attempt(entry, note, original)
                for (entry, note), original in zip(ready, originals, strict=True)
            )
        )
        for (entry, note), outcome in zip(ready, outcomes, strict=True):
            self._record(entry, note, outcome, now)
        # Read the clock again: the attempts above may have taken a while.
        return self._wait_from(self._now())

    async def run(self, stop: asyncio.Event, wake: asyncio.Event) -> None:
        """Deliver until `stop` is set; `wake` says new entries were queued.

        Between rounds it waits for the earliest of: the next due entry, `wake`, `stop`.
        An attempt already in flight is finished (and recorded) before stopping, so a
        message Slack accepted is not sent again after the restart. Neither notifier
        failures nor a store that refuses writes (a full disk) end the loop: the entry
        stays queued and is tried again.
        """
        while not stop.is_set():
            # Cleared before looking at the outbox: entries queued from here on set it again.
            wake.clear()
            try:
                delay = await self.run_once()
            except StateError as exc:
                # Disk full or similar: nothing is lost (the entry stays queued); try again.
                self._log.error(Event.STATE_ERROR, error=str(exc), during="delivery")
                delay = STATE_RETRY_SECONDS
            if stop.is_set():
                return
            await self._wait(delay, stop, wake)

    # --- one attempt ---

    def _sender_name(self, channel: str) -> str:
        notifier = self._notifier
        return notifier.name_for(channel) if isinstance(notifier, Router) else notifier.name

    def _original(self, note: Notification) -> MessageRef | None:
        return self._store.message_ref(note.alert_id) if is_card(note.channel) else None

    async def _attempt(
        self, entry: OutboxEntry, note: Notification, original: MessageRef | None
    ) -> MessageRef | NotifyError | None:
        """Call the notifier in a thread; its failures come back as a NotifyError value."""
        in_doubt_since = entry.first_attempt_at if entry.in_doubt else None
        return await _in_daemon_thread(
            functools.partial(
                _deliver_once, self._notifier, note, original, in_doubt_since, self._fence
            )
        )

    def _dead_letter_unreadable(self, entry: OutboxEntry, bad: Unreadable, now: datetime) -> None:
        attempt = entry.attempts + 1
        self._store.dead_letter(
            entry.id, reason=bad.reason, attempts=attempt, at=now, card=is_card(entry.channel)
        )
        self._log.error(
            Event.NOTIFY_FAILED,
            error=bad.reason,
            alert_id=bad.alert_id,
            kind=bad.kind,
            channel=entry.channel,
            outbox_id=entry.id,
            attempt=attempt,
            notifier=self._sender_name(entry.channel),
        )
        self._on_outcome("failed")

    def _record(
        self,
        entry: OutboxEntry,
        note: Notification,
        outcome: MessageRef | NotifyError | None,
        now: datetime,
    ) -> None:
        attempt = entry.attempts + 1
        fields = {
            "alert_id": note.alert_id,
            "rule": note.rule,
            "series": note.series,
            "kind": note.kind.value,
            "channel": entry.channel,
            "outbox_id": entry.id,
            "attempt": attempt,
            "notifier": self._sender_name(entry.channel),
        }
        if not isinstance(outcome, NotifyError):
            self._store.mark_delivered(
                entry.id, alert_id=note.alert_id, ref=outcome, card=is_card(entry.channel)
            )
            self._record_lag((now - entry.created_at).total_seconds(), now)
            if is_card(entry.channel) and is_alert_card(note):
                self._card_sends.setdefault(entry.channel, []).append(now)
                self._released.get(entry.channel, set()).discard(note.alert_id)
            self._log.info(Event.NOTIFY_SENT, **fields)
            self._on_outcome("sent")
            return
        if outcome.recoverable:
            retry_after = min(outcome.retry_after or 0.0, MAX_RETRY_AFTER)
            retry_in = max(retry_after, self._backoff.delay(attempt, self._random()))
            # Counted from the answer, not from the round's start: a slow call that ends in
            # a 429 is still given its whole Retry-After.
            self._store.mark_retry(
                entry.id,
                attempts=attempt,
                next_attempt_at=self._now() + timedelta(seconds=retry_in),
                error=outcome.reason,
                in_doubt=outcome.in_doubt,
            )
            self._log.warning(
                Event.NOTIFY_RETRY, error=outcome.reason, retry_in=round(retry_in, 3), **fields
            )
            self._on_outcome("retry")
            return
        self._store.dead_letter(
            entry.id, reason=outcome.reason, attempts=attempt, at=now, card=is_card(entry.channel)
        )
        self._log.error(Event.NOTIFY_FAILED, error=outcome.reason, **fields)
        self._on_outcome("failed")

    # --- bringing the queue up to date (watchdog.notify.coalesce) ---

    def _up_to_date_heads(self, now: datetime) -> list[OutboxEntry]:
        """Each channel's head, once folding, dropping and holding have nothing to change."""
        while True:
            heads = self._store.outbox_heads()
            changed = [
                self._held_back(head) or self._coalesce(head) or self._storm_hold(head, now)
                for head in heads
            ]
            if not any(changed):
                return heads

    def _held_back(self, head: OutboxEntry) -> bool:
        """True when a silence or mute took `head` out of the queue (the `hold` stage)."""
        note = head.notification
        if isinstance(note, Unreadable) or _possibly_sent(head):
            return False
        if not self._hold(head, note):
            return False
        self._keep_backoff(head)
        return True

    def _keep_backoff(self, head: OutboxEntry) -> None:
        """A head that Slack was failing leaves unsent: the next one waits out its backoff."""
        if head.attempts:
            held = self._retry_not_before.get(head.channel, head.next_attempt_at)
            self._retry_not_before[head.channel] = max(held, head.next_attempt_at)

    def _coalesce(self, head: OutboxEntry) -> bool:
        """Fold or drop `head` as its plan says; True when the outbox changed.

        Only the Slack card's queues are brought up to date: PagerDuty and webhooks get
        every transition (`watchdog.notify.destinations`).
        """
        note = head.notification
        if isinstance(note, Unreadable) or not is_card(head.channel):
            return False
        queue = [
            Queued(entry.id, entry.notification, possibly_sent=_possibly_sent(entry))
            for entry in self._store.outbox_queue(head.channel, note.alert_id)
            if not isinstance(entry.notification, Unreadable)
        ]
        changes_card = (
            note.kind in (TransitionKind.RESOLVED, TransitionKind.ANNOTATION)
            or note.kind.edits_card
        )
        never_announced = (
            {note.alert_id}
            if changes_card and self._store.firing_never_sent(note.alert_id, channel=head.channel)
            else set()
        )
        announced = (
            {note.alert_id}
            if note.kind is TransitionKind.FIRING and self._store.message_ref(note.alert_id)
            else set()
        )
        plan = plan_head(queue, never_announced=never_announced, announced=announced)
        if plan.action is Action.SEND:
            return False
        fields = {
            "reason": plan.reason.value,
            "alert_id": note.alert_id,
            "rule": note.rule,
            "series": note.series,
            "kind": note.kind.value,
            "channel": head.channel,
            "outbox_id": head.id,
        }
        if plan.action is Action.FOLD:
            self._store.fold_outbox(head.id, into=plan.note, consumed=plan.consumed)
            self._on_coalesced(plan.reason)
            self._log.info(Event.NOTIFY_FOLDED, folded=list(plan.consumed), **fields)
        else:
            self._keep_backoff(head)
            self._store.discard(head.id)
            self._on_coalesced(plan.reason)
            self._log.info(Event.NOTIFY_DROPPED, **fields)
        return True

    # --- storm control (watchdog.notify.storm) ---

    def _storms(self) -> dict[str, Storm]:
        text = self._store.get_meta(STORMS_META_KEY)
        stored: dict[str, str] = json.loads(text) if text else {}
        return {channel: Storm.from_json(value) for channel, value in stored.items()}

    @staticmethod
    def _storms_json(storms: dict[str, Storm]) -> str:
        return json.dumps({channel: storm.to_json() for channel, storm in storms.items()})

    def _storm_hold(self, head: OutboxEntry, now: datetime) -> bool:
        """Fold the channel's queued cards into its storm summary as the plan says.

        True when the outbox changed. The storm is stored before the outbox changes, so a
        death in between holds the same cards again, never loses one.
        """
        note = head.notification
        if isinstance(note, Unreadable) or not is_card(head.channel):
            return False
        channel = head.channel
        window = self._storm_policy.window
        sends = [at for at in self._card_sends.get(channel, []) if now - at < window]
        self._card_sends[channel] = sends
        released = self._released.get(channel, set())
        storms = self._storms()
        holdable = [
            (entry, entry.notification)
            for entry in self._store.outbox_channel(channel)
            if not isinstance(entry.notification, Unreadable)
            and is_alert_card(entry.notification)
            and not _possibly_sent(entry)
            and entry.notification.alert_id not in released
        ]
        plan = plan_storm(
            note,
            possibly_sent=_possibly_sent(head),
            released=note.alert_id in released,
            queued=len(holdable),
            recent_sends=sends,
            storm=storms.get(channel),
            now=now,
            policy=self._storm_policy,
        )
        if not plan.hold:
            return False
        # The suppression stage judges every card held, not only the head: a silenced
        # alert neither joins the summary nor gets a card of its own when the storm ends.
        holdable = [(entry, held) for entry, held in holdable if not self._held_back(entry)]
        if all(entry.id != head.id for entry, _ in holdable):
            return True
        storm = storms.get(channel) or Storm(
            id=f"storm-{channel}-{now.isoformat()}",
            channel=channel,
            started_at=now,
            last_held_at=now,
        )
        if channel not in storms:
            self._log.warning(
                Event.STORM_STARTED, channel=channel, storm=storm.id, queued=len(holdable)
            )
        storm = storm.holding([held for _, held in holdable], now)
        storms[channel] = storm
        self._store.set_meta(STORMS_META_KEY, self._storms_json(storms))
        consumed = [entry.id for entry, _ in holdable if entry.id != head.id]
        self._store.fold_outbox(head.id, into=summary(storm, now), consumed=consumed)
        for entry, held in holdable:
            self._log.info(
                Event.NOTIFY_HELD,
                reason=plan.reason.value,
                storm=storm.id,
                alert_id=held.alert_id,
                rule=held.rule,
                series=held.series,
                kind=held.kind.value,
                channel=channel,
                outbox_id=entry.id,
            )
        return True

    def _end_storms(self, now: datetime) -> None:
        """Close each storm that subsided: one closing summary, a card per alert still firing."""
        storms = self._storms()
        ended = [s for s in storms.values() if s.subsided(now, self._storm_policy)]
        if not ended:
            return
        firing = {r.alert_id for r in self._store.load_alerts() if r.state is AlertState.FIRING}
        for storm in ended:
            del storms[storm.channel]
            announced = {a for a in storm.held if self._store.message_ref(a) is not None}
            cards = release(storm, firing, announced)
            self._store.enqueue_all_with_meta(
                [closing_summary(storm, firing, now), *cards],
                key=STORMS_META_KEY,
                value=self._storms_json(storms),
            )
            self._released[storm.channel] = {card.alert_id for card in cards}
            self._log.warning(
                Event.STORM_ENDED,
                channel=storm.channel,
                storm=storm.id,
                held=len(storm.held),
                released=sorted(card.alert_id for card in cards),
            )

    def _record_lag(self, seconds: float, at: datetime) -> None:
        """Report one sent notification's lag and keep the record in the store."""
        if self._lag is None:
            self._lag = DeliveryLag.from_json(self._store.get_meta(LAG_META_KEY))
        self._lag = self._lag.observe(seconds, at)
        self._store.set_meta(LAG_META_KEY, self._lag.to_json())
        self._on_lag(seconds)

    # --- waiting ---

    def _ready_at(self, entry: OutboxEntry, now: datetime) -> datetime:
        """When `entry` may be attempted: due, and clear of its channel's pace.

        Both are wall-clock times (the schedule must survive restarts). If the wall
        clock was set back, a retry would seem due far in the future: no wait is ever
        longer than `MAX_WAIT`, so such an entry is due now, and so is the pace. A head
        dropped while it waited for a retry hands its retry time on to the next head, so
        dropping never shortens the backoff of a channel Slack is failing.
        """
        due = max(entry.next_attempt_at, self._retry_not_before.get(entry.channel, MIN_TIME))
        if due - now > MAX_WAIT:
            due = now
        last = self._last_send.get(entry.channel)
        if last is None:
            return due
        if last > now:  # set back: pace from the last send as if it had just happened
            last = self._last_send[entry.channel] = now
        return max(due, last + self._pace)

    def _wait_from(self, now: datetime) -> float | None:
        """Seconds until the earliest head is ready or a storm may have subsided."""
        window = self._storm_policy.window
        times = [self._ready_at(entry, now) for entry in self._store.outbox_heads()]
        times += [storm.last_held_at + window for storm in self._storms().values()]
        if not times:
            return None
        return max(0.0, (min(times) - now).total_seconds())

    async def _wait(self, delay: float | None, stop: asyncio.Event, wake: asyncio.Event) -> None:
        waiters = [asyncio.ensure_future(_set(stop)), asyncio.ensure_future(_set(wake))]
        if delay is not None:
            waiters.append(asyncio.ensure_future(self._sleep(delay)))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            for waiter in waiters:
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter


def _possibly_sent(entry: OutboxEntry) -> bool:
    """Whether an earlier attempt of `entry` may have reached Slack.

    Each attempt marks its entry in doubt before the request leaves, and only an answer
    that rules a post out clears the mark; so a post killed mid-call, or whose answer was
    lost, is possibly in Slack, while one refused outright (503, a refused connection) is
    not and may still be folded.
    """
    return entry.in_doubt


async def _set(event: asyncio.Event) -> None:
    await event.wait()


def _deliver_once(
    notifier: Notifier,
    note: Notification,
    original: MessageRef | None,
    in_doubt_since: datetime | None,
    fence: Callable[[], str | None],
) -> MessageRef | NotifyError | None:
    """One notifier call; whatever it raises comes back as a NotifyError value.

    Asks the fence first, in the delivery thread, just before the call: a daemon that
    stopped leading meanwhile sends nothing (retried, the entry's doubt kept as it was).

    The notifier turns every failure it knows into a NotifyError saying whether a retry
    can help. Any other exception comes from this notification (it cannot be rendered)
    or a notifier bug: retrying the same input fails the same way and would hold the
    channel for ever, so it is permanent. Only its type and message are kept (a
    traceback's locals could hold the token).
    """
    closed = fence()
    if closed is not None:
        return NotifyError(
            f"not sent: {closed}", recoverable=True, in_doubt=in_doubt_since is not None
        )
    try:
        return notifier.deliver(note, original, in_doubt_since=in_doubt_since)
    except NotifyError as exc:
        return exc
    except Exception as exc:
        reason = f"cannot deliver: unexpected {type(exc).__name__}: {exc}"
        return NotifyError(reason, recoverable=False)


async def _in_daemon_thread(call: Callable[[], _T]) -> _T:
    """Run a blocking Slack call in a daemon thread.

    Not `asyncio.to_thread`: the default executor is joined at exit, so a Slack call
    hanging until its timeout would hold a stopping watchdog past systemd's patience.
    A daemon thread is abandoned at exit instead (the entry stays in the outbox, in
    doubt, so the next start looks for the post before posting again).
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()

    def succeed(result: _T) -> None:
        if not future.done():
            future.set_result(result)

    def fail(error: BaseException) -> None:
        if not future.done():
            future.set_exception(error)

    def work() -> None:
        try:
            result = call()
        except BaseException as exc:  # handed to the awaiting coroutine
            with contextlib.suppress(RuntimeError):  # the loop may be closed by now
                loop.call_soon_threadsafe(fail, exc)
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(succeed, result)

    threading.Thread(target=work, name="slack-delivery", daemon=True).start()
    return await future
