"""The loop: tick -> poll -> evaluate -> persist + enqueue (one transaction) -> deliver -> ping.

Everything it touches is handed in (config loader, source, store, notifier, clock,
systemd notifier, metrics), so `watchdog run`, `watchdog demo`, the tests and the
benchmarks drive this same loop. Time is read here, once per event, and passed down to
the pure engine.

Guarantees:
- a transition and the notification it causes are written in one transaction before
  anything is sent (the outbox worker sends), so a crash can neither lose nor double an
  alert; if the database refuses a write (disk full), the unsaved effects are kept in
  memory and written with the next successful commit.
- a failed poll is logged and fed to the engine as a failure, never as a sample.
- polls of many series are spread over the interval, the source caps concurrency, and a
  series answered with 429 is not polled again before its `Retry-After`.
- no part dies silently: the long-lived tasks (poll loop, outbox worker, ticker,
  reloader, systemd pinger) run under one `asyncio.TaskGroup`; an unexpected exception
  in any of them is logged once as `daemon.crashed` and ends the daemon with
  `DaemonCrashed`, so the process exits non-zero and systemd restarts it.
- systemd hears READY=1 after the first poll cycle or READY_WITHIN_SECONDS, whichever
  is first, and WATCHDOG=1 while the whole pipeline is alive (`health()`).
- no poll waits for another: each series is polled when it is due; one whose previous
  request is still running is skipped and counted late (`poll.late`, never a failure,
  never a sample), and a cycle stops waiting for stragglers when the next one is due.
- silences and mute windows keep Slack quiet, never the rules: every transition is stored
  and audited, and the suppression stage (`watchdog.silences.decide`) says which
  notifications are not sent (`notify.suppressed`). It runs twice: when a notification
  is queued, judged at the transition's own time, so that what happened inside a
  silence stays out of Slack however late the outbox reaches it (after a Slack outage,
  say); and when it is about to be sent, judged then, so that a silence created while it
  waits in the outbox holds it. The ticker re-reads the silences within a second of the
  CLI changing them, and releases held news whose cover ended (`notify.released`).
  An inhibition (`watchdog.inhibition`: a rule named in `inhibited_by` fires on the
  series or the workspace) is one more cover, judged among the alerts firing then and
  audited as `alert.inhibited`.
- after every poll cycle the dead-man's switch (`heartbeat_url`, see `watchdog.deadman`)
  is told whether the workspace series polled fine and the pipeline is healthy; it pings
  from a task of its own, so a slow ping endpoint never delays a poll or an alert.
- the watchdog's own backlog never pages per series: each cycle tells the engine how
  many series were not polled on time (skipped while their previous request runs, or
  started more than STARVED_SHARE of an interval after they were due) and why; the
  engine raises one `watchdog-behind` self-alert when that lasts (see `watchdog.engine`).
- an acknowledgement (a Slack button through Socket Mode, or `watchdog ack` through the
  store, noticed by the ticker within a second) is stored, audited (`alert.acked`) and
  edits the card in place (an ANNOTATION notification) in one transaction.
- with a `Leadership` (daemons sharing a PostgreSQL database, see `watchdog.leadership`)
  the daemon first stands by: it polls, evaluates and delivers nothing, opens no Socket
  Mode connection, pings no dead-man's switch and sends no report, yet is ready and
  healthy for systemd and `/healthz` ("standby"). Once it wins the lock (`leader.acquired`)
  it restores the state and runs as above; it writes to the store only while its lock is
  freshly confirmed, and posts only after the take-over grace. When the lock session
  fails it stops at once (`leader.lost`) and `run` raises `SteppedDown`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import SecretStr

from watchdog.audit import Event, get_logger
from watchdog.clock import Clock, sleep_or_stop
from watchdog.daily_report import DailyReport
from watchdog.deadman import DeadMansSwitch
from watchdog.delivery import OutboxWorker
from watchdog.durations import format_duration
from watchdog.engine import SPARKLINE_LENGTH, Engine
from watchdog.errors import (
    ConfigError,
    DaemonCrashed,
    InputError,
    PollFailure,
    SourceError,
    StateError,
    SteppedDown,
)
from watchdog.inhibition import NO_INHIBITIONS, Inhibitions, inhibitions
from watchdog.leadership import Leadership
from watchdog.liveness import (
    OUTBOX_AGE_LIMIT,
    READY_WITHIN_SECONDS,
    TICKER_SILENCE_LIMIT,
    WORKER_ROUND_LIMIT,
    Health,
    Heartbeat,
    poll_silence_limit,
)
from watchdog.metrics import Metrics
from watchdog.model import (
    NO_DATA_RULE,
    WORKSPACE,
    AckOutcome,
    AlertRecord,
    AlertState,
    Notification,
    Sample,
    Transition,
    TransitionKind,
    workspace_series,
)
from watchdog.notify import Notifier
from watchdog.notify.coalesce import Reason
from watchdog.notify.destinations import Router, fan_out, is_card
from watchdog.notify.grouping import Grouper
from watchdog.notify.render import acknowledged_line, render_status, silenced_line
from watchdog.notify.socket_mode import SocketMode
from watchdog.notify.storm import StormPolicy
from watchdog.rules import ChangeRule, Config, ReportSection
from watchdog.silences import Decision, Held, Silence, decide, reconcile
from watchdog.silences import Reason as Suppression
from watchdog.source import Endpoint, Source, WorkspaceSources, request_timeout
from watchdog.store import OutboxEntry, Store
from watchdog.systemd import LivenessPinger, SdNotifier

TICK_SECONDS = 1.0
PRUNE_EVERY_SECONDS = 3600.0
FULL_RESOLUTION_FOR = timedelta(hours=1)
"""Samples younger than this (or than the longest change window) are all kept."""
THINNED_RESOLUTION = timedelta(minutes=1)
"""Older samples are thinned to one per series per minute."""
HOUSEKEEPING_BATCH = 25
"""Series per pruning or thinning transaction: each holds the store for a few ms only."""
SPREAD_SHARE = 0.8
"""Polls of a cycle start within this share of the interval, leaving room for answers."""
STARVED_SHARE = 0.5
"""A group of polls started more than this share of the interval after it was due was
started late: the poll loop itself was starved (a blocked event loop, a cycle overrun)."""
IN_FLIGHT_CAUSE = "previous requests still in flight"
STARVED_CAUSE = "poll loop starved (polls started over half an interval late)"
CLOCK_JUMP = timedelta(seconds=5)
"""A disagreement between wall and monotonic time this large is a clock being set."""
STOP_GRACE_SECONDS = 3.0
"""On stop, how long an in-flight Slack call may take to finish and be recorded.

Shorter than the Slack timeout on purpose: a call still running then is abandoned. Its
entry was put in doubt before the call, so the next start looks for the post before
posting again (exactly once in bot mode with the history scopes; see `watchdog.delivery`).
"""
OUTBOX_TASK = "outbox"
POLL_LOOP_TASK = "poll-loop"

_TRANSITION_EVENTS = {
    TransitionKind.PENDING: Event.ALERT_PENDING,
    TransitionKind.FIRING: Event.ALERT_FIRING,
    TransitionKind.REPEAT: Event.ALERT_REPEAT,
    TransitionKind.RESOLVED: Event.ALERT_RESOLVED,
    TransitionKind.CANCELLED: Event.ALERT_CANCELLED,
    TransitionKind.ESCALATED: Event.ALERT_ESCALATED,
    TransitionKind.DEESCALATED: Event.ALERT_DEESCALATED,
    TransitionKind.FLAPPING: Event.ALERT_FLAPPING,
}


@dataclass(slots=True)
class _Late:
    """Series one cycle did not poll on time, by cause (see `Daemon._report_schedule`)."""

    in_flight: int = 0  # skipped: the previous request still runs
    starved: int = 0  # started over STARVED_SHARE of an interval after due


@dataclass
class _Unsaved:
    """Effects not yet in the database: written with the next successful commit."""

    samples: list[Sample] = field(default_factory=list)
    alerts: dict[tuple[str, str], AlertRecord] = field(default_factory=dict)
    notifications: list[Notification] = field(default_factory=list)
    held: dict[str, Held | None] = field(default_factory=dict)  # None: no longer held

    def __bool__(self) -> bool:
        return bool(self.samples or self.alerts or self.notifications or self.held)


@dataclass(frozen=True, slots=True)
class Reloaded:
    """What a reload (SIGHUP) read afresh: the rules, and how to reach the API now.

    `notifier` replaces the sender when a Slack credential changed. `needs_restart` names
    settings that changed but cannot change under a running process (they are logged with
    `config.loaded`, and keep their old values).
    """

    config: Config
    api_key: SecretStr | None
    base_url: str
    notifier: Notifier | None = None  # a new Slack sender (rotated token or webhook URL)
    destinations: Mapping[str, Notifier] | None = None  # PagerDuty and webhooks, afresh
    needs_restart: tuple[str, ...] = ()
    workspace_endpoints: Mapping[str, Endpoint] = field(default_factory=dict)
    """Each `[[workspaces]]`'s key and host; empty: the one unnamed workspace's above."""

    @property
    def endpoints(self) -> Mapping[str, Endpoint]:
        """How to reach each workspace (`""`: the unnamed one of a file without them)."""
        if self.workspace_endpoints or self.api_key is None:
            return self.workspace_endpoints
        return {"": Endpoint(self.api_key, self.base_url)}


@runtime_checkable
class FencedNotifier(Protocol):
    """A notifier that asks, before each post, whether this daemon may post (the bot does)."""

    def fence_with(self, closed: Callable[[], str | None]) -> None: ...


@runtime_checkable
class ReconfigurableSource(Protocol):
    """A source that takes reloaded settings (the real API poller does; a simulation not)."""

    def reconfigure(
        self, *, api_key: SecretStr, base_url: str, timeout: float, concurrency: int
    ) -> None: ...


class Daemon:
    """One watchdog process's loop over one store, one source and one notifier."""

    def __init__(
        self,
        *,
        config: Config,
        source: Source,
        store: Store,
        notifier: Notifier,
        clock: Clock,
        load: Callable[[], Reloaded] | None = None,
        fixed_channel: str | None = None,
        sd: SdNotifier | None = None,
        metrics: Metrics | None = None,
        socket_mode: SocketMode | None = None,
        destinations: Mapping[str, Notifier] | None = None,
        leadership: Leadership | None = None,
    ) -> None:
        self.config = config
        self._leadership = leadership
        self._standing_by = leadership is not None
        self._stepped_down: str | None = None  # why the lock was lost
        self._destinations = dict(destinations or {})
        """Senders of the destinations besides Slack, by outbox channel (`pagerduty`, ...)."""
        self._socket_mode = socket_mode
        self._source = source
        self._store = store
        self._notifier = notifier
        self._clock = clock
        self._load = load
        self._fixed_channel = fixed_channel
        self._sd = sd or SdNotifier.from_env({})
        self._metrics = metrics
        self._log = get_logger()
        self._poll_log = self._log.bind()
        self._engine = Engine(config, started_at=clock.now())
        self._unsaved = _Unsaved()
        self._blocked_until: dict[str, float] = {}
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._late = _Late()  # of the running cycle
        self._poll_crash: BaseException | None = None
        self._wake = asyncio.Event()
        self._groups = Grouper()
        self._reload = asyncio.Event()
        self._samples_lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._cycles = 0
        self._last_prune = clock.monotonic()
        self._housekeeping: asyncio.Task[tuple[int, int]] | None = None
        self._overruns = 0
        self._last_overrun_log = float("-inf")
        self._wall_at, self._mono_at = clock.now(), clock.monotonic()
        self._started_at = clock.monotonic()
        self._ready_sent = False
        self._polls = Heartbeat(clock.monotonic)
        self._ticks = Heartbeat(clock.monotonic)
        self._worker: OutboxWorker | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._crash: tuple[str, Exception] | None = None
        self._oldest_undelivered: tuple[datetime, str | None] | None = None
        self._silences: tuple[Silence, ...] = ()  # not yet ended; re-read on change
        self._held: dict[str, Held] = {}  # the store's held news, by alert id
        self._workspace_sampled = False  # in the running cycle
        self._dead_mans_switch = DeadMansSwitch(monotonic=clock.monotonic)
        self._pinger = LivenessPinger(
            self._sd,
            stalled=lambda: self.health().stalled,
            monotonic=clock.monotonic,
            sleep=clock.sleep,
        )
        self._daily_report = DailyReport(
            store,
            clock,
            config=lambda: self.config,
            channel=self._report_channel,
            resolution=THINNED_RESOLUTION,
            wake=self._wake.set,
        )
        if metrics is not None:
            metrics.track_outbox_age(self._outbox_age_seconds)
            metrics.set_leader(leadership is None)
        self._fence_notifier()

    # -- public ---------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def cycles(self) -> int:
        """Completed poll cycles (tests and benchmarks await progress on this)."""
        return self._cycles

    def request_reload(self) -> None:
        """Ask for a config reload (SIGHUP); bursts of requests coalesce into one."""
        self._reload.set()

    def request_stop(self) -> None:
        self._sd.stopping()
        self._stop.set()

    async def run(self, *, max_cycles: int | None = None) -> None:
        """Run until `request_stop()` (or `max_cycles` cycles): the daemon's whole life.

        Raises `DaemonCrashed` after a long-lived task failed unexpectedly (it was logged
        as `daemon.crashed`; the other tasks were stopped as on SIGTERM), and
        `SteppedDown` after the leader lost its lock (`leader.lost`).
        """
        try:
            if self._leadership is not None and not await self._take_the_lead(self._leadership):
                return
            await self._lead(max_cycles)
        finally:
            if self._leadership is not None:
                await self._leadership.close()  # the lock is free for a standby at once
        if self._crash is not None:
            task, exc = self._crash
            raise DaemonCrashed(task, exc)
        if self._stepped_down is not None:
            raise SteppedDown(self._stepped_down)

    async def _lead(self, max_cycles: int | None) -> None:
        """Everything a leading daemon does: restore, then the long-lived tasks."""
        self._restore()
        self._worker = OutboxWorker(
            self._store,
            Router(self._notifier, self._destinations),
            now=self._clock.now,
            sleep=self._clock.sleep,
            on_outcome=self._delivered,
            monotonic=self._clock.monotonic,
            on_coalesced=self._coalesced,
            on_lag=self._metrics.delivered_after if self._metrics is not None else None,
            hold=self._hold_at_delivery,
            storm=_storm_policy(self.config),
            fence=self._leadership.closed if self._leadership is not None else None,
        )
        self._refresh_outbox_age()
        self._log.info(
            Event.DAEMON_STARTED,
            series=len(self.config.series),
            rules=len(self.config.rules),
            notifier=self._notifier.name,
            source=self.config.source,
        )
        jobs: dict[str, Coroutine[Any, Any, None]] = {
            OUTBOX_TASK: self._worker.run(self._stop, self._wake),
            POLL_LOOP_TASK: self._poll_loop(max_cycles),
            "ticker": self._ticker(),
            "reloader": self._reloader(),
            "heartbeat": self._dead_mans_switch.run(),
        }
        if self._leadership is not None:
            jobs["leadership"] = self._keep_the_lead(self._leadership)
        if self._sd.watchdog_interval is not None:
            jobs["pinger"] = self._pinger.run(self._stop)
        if self._socket_mode is not None:
            jobs["socket-mode"] = self._socket_mode.run(self, self._stop)
        jobs["report"] = self._daily_report.run(self._stop)
        try:
            async with asyncio.TaskGroup() as group:
                self._tasks = {
                    name: group.create_task(self._supervised(name, job), name=name)
                    for name, job in jobs.items()
                }
                group.create_task(self._stop_when_asked(), name="stopper")
        finally:
            if self._housekeeping is not None:
                self._housekeeping.cancel()  # it stops between two of its batches
                await asyncio.gather(self._housekeeping, return_exceptions=True)
            # One last chance for what was decided but not yet written.
            with contextlib.suppress(StateError):
                self._flush()
            self._log.info(Event.DAEMON_STOPPING, cycles=self._cycles)

    def role(self) -> str | None:
        """What `/healthz` says this daemon is: None without leadership, else "leader", or
        "standby" and who leads (as far as the last attempt on the lock saw)."""
        if self._leadership is None:
            return None
        if not self._standing_by:
            return "leader"
        return f"standby, leader: {self._leadership.leader_seen or 'unknown'}"

    def health(self) -> Health:
        """The pipeline's liveness now (see `watchdog.liveness`).

        A standby is healthy: nothing of the pipeline runs, so nothing can stall.
        Safe to call from another thread (the `/healthz` listener): it reads only values
        the loop replaces whole.
        """
        if self._standing_by:
            unreachable = self._leadership.unreachable if self._leadership is not None else None
            if unreachable is None:
                return Health()
            return Health(degraded=(f"standby: cannot reach the database: {unreachable}",))
        stalled: list[str] = []
        polls, poll_limit = self._polls.silent_for(), self._poll_silence_limit()
        if polls > poll_limit:
            stalled.append(
                f"poll loop: no poll finished for {_seconds(polls)} (limit {_seconds(poll_limit)})"
            )
        ticks = self._ticks.silent_for()
        if ticks > TICKER_SILENCE_LIMIT:
            stalled.append(f"ticker: no tick for {_seconds(ticks)}")
        round_age = self._worker.round_age() if self._worker is not None else None
        if round_age is not None and round_age > WORKER_ROUND_LIMIT:
            stalled.append(f"outbox worker: one delivery round running for {_seconds(round_age)}")
        if not self._stop.is_set():
            stalled += [f"{name}: not running" for name, t in self._tasks.items() if t.done()]
        degraded: list[str] = []
        oldest = self._oldest_undelivered
        age = self._clock.now() - oldest[0] if oldest is not None else timedelta(0)
        if oldest is not None and age > OUTBOX_AGE_LIMIT:
            degraded.append(
                f"outbox: the oldest undelivered notification was queued"
                f" {format_duration(age)} ago (limit {format_duration(OUTBOX_AGE_LIMIT)});"
                f" last delivery error: {oldest[1] or 'none yet'}"
            )
        return Health(stalled=tuple(stalled), degraded=tuple(degraded))

    # -- people: acknowledgements and Slack's questions (Socket Mode) -----------------

    def acknowledge(self, alert_id: str, by: str) -> AckOutcome:
        """Someone (a Slack user id, or the name given to `watchdog ack`) is on it.

        Marks the firing alert acknowledged (its repeats stop), and in one transaction
        stores it and queues the edit of its card (`Acknowledged by ...`); then audits
        `alert.acked`. Call on the loop.
        """
        record = next(
            (
                r
                for r in self._engine.records()
                if r.alert_id == alert_id and r.state is AlertState.FIRING
            ),
            None,
        )
        if record is None:
            return AckOutcome.NOT_FIRING
        now = self._clock.now()
        if not self._engine.acknowledge(record.rule, record.series, by=by, at=now):
            return AckOutcome.ALREADY_ACKNOWLEDGED
        acked = self._engine.record(record.rule, record.series)
        assert acked is not None
        self._unsaved.alerts[(acked.rule, acked.series)] = acked
        self._enqueue(self._annotation(acked, now), self.config)
        self._flush()
        self._log.info(
            Event.ALERT_ACKED,
            alert_id=alert_id,
            rule=acked.rule,
            series=acked.series,
            by=by,
        )
        self._wake.set()
        self._refresh_outbox_age()
        return AckOutcome.ACKNOWLEDGED

    def _annotation(self, record: AlertRecord, now: datetime) -> Notification:
        """The edit of the alert's card showing its current values and annotations."""
        route = self.config.route_for(record.rule, record.series)
        return Notification(
            alert_id=record.alert_id,
            kind=TransitionKind.ANNOTATION,
            rule=record.rule,
            series=record.series,
            severity=record.severity,
            at=now,
            since=record.since,
            count=record.last_count,
            condition=record.condition,
            channel=self._fixed_channel or route.channel or "console",
            recent=self._engine.recent(record.series),
            runbook=route.runbook,
            mention=route.mention,
            **self._people(record.rule, record.series, record.acked_by, record.acked_at, now),
        )

    def _people(
        self, rule: str, series: str, acked_by: str | None, acked_at: datetime | None, at: datetime
    ) -> dict[str, Any]:
        """A notification's fields saying what people did about its alert at `at`: who
        acknowledged it, and the silences in force on it (the card's annotations)."""
        lines: list[str] = []
        if acked_by is not None and acked_at is not None:
            lines.append(acknowledged_line(acked_by, acked_at))
        covering = [s for s in self._silences if s.active(at) and s.covers(rule, series, at)]
        lines += [silenced_line(s.ends - s.starts, s.by, s.ends) for s in covering]
        fields: dict[str, Any] = {"annotations": tuple(lines)} if lines else {}
        if acked_by is not None:
            fields["acked_by"] = acked_by
        if covering:
            fields["silenced_by"] = tuple(s.by for s in covering)
        return fields

    def _apply_ack_requests(self) -> None:
        """Apply what `watchdog ack` queued in the store, then forget it."""
        try:
            requests = self._store.ack_requests()
        except StateError as exc:
            self._log.error(Event.STATE_ERROR, error=str(exc), during="reading acknowledgements")
            return
        for request in requests:
            outcome = self.acknowledge(request.alert_id, request.by)
            if outcome is not AckOutcome.ACKNOWLEDGED:
                self._log.info(
                    Event.ALERT_ACK_IGNORED,
                    alert_id=request.alert_id,
                    by=request.by,
                    outcome=outcome.value,
                )
            with contextlib.suppress(StateError):  # logged by the next write; re-applied: no-op
                self._store.drop_ack_request(request.id)

    def may_respond(self, user: str) -> bool:
        """Whether a Slack user may press the card's buttons (`[slack] responders`)."""
        responders = self.config.slack.responders
        return not responders or user in responders

    def status_text(self) -> str:
        """`/watchdog status`: each series' last count and the firing alerts (mrkdwn)."""
        counts = []
        for name, _ in self.config.series:
            recent = self._engine.recent(name)
            counts.append((name, recent[-1] if recent else None))
        now = self._clock.now()
        firing = [
            self._annotation(r, now) for r in self._engine.records() if r.state is AlertState.FIRING
        ]
        return render_status(counts, firing)

    def silence_from_card(self, alert_id: str, duration: timedelta, by: str) -> str | None:
        """The card's Silence control: silence the alert's rule and series for `duration`.

        The card is edited in place to say who silenced it for how long (an annotation,
        sent although the silence holds the alert's other news: it edits a card, pages
        nobody). Returns what to tell the asker when it could not be done.
        """
        try:
            self.silence_alert(alert_id, duration, by)
        except InputError as exc:
            return f"Cannot silence: {exc}."
        record = next((r for r in self._engine.records() if r.alert_id == alert_id), None)
        if record is not None and record.state is AlertState.FIRING:
            self._enqueue(self._annotation(record, self._clock.now()), self.config)
            self._flush()
            self._wake.set()
            self._refresh_outbox_age()
        return None

    # -- supervision ----------------------------------------------------------------

    async def _supervised(self, name: str, job: Coroutine[Any, Any, None]) -> None:
        """Run one long-lived task; when it ends, for whatever reason, the daemon stops.

        Only the poll loop may end by itself (after `max_cycles`); any other task that
        ends before stop was asked for, by an exception or not, crashed.
        """
        try:
            await job
        except Exception as exc:
            self._crashed(name, exc)
            return
        if self._stop.is_set():
            return
        if name == POLL_LOOP_TASK:
            self._stop.set()
        else:
            self._crashed(name, RuntimeError("ended before the daemon was asked to stop"))

    def _crashed(self, task: str, exc: Exception) -> None:
        """Log the first crash (type and message, a traceback without locals) and stop."""
        if self._crash is None:
            self._crash = (task, exc)
            self._log.critical(
                Event.DAEMON_CRASHED,
                task=task,
                error_type=type(exc).__name__,
                error=str(exc),
                exc_info=exc,
            )
        self.request_stop()

    async def _stop_when_asked(self) -> None:
        """On stop, end the tasks: at once, except the outbox worker's attempt in flight.

        The outbox worker returns by itself once an attempt in flight is recorded;
        cancelling it mid-call could make Slack's accepted message go out again. It gets
        STOP_GRACE_SECONDS for that, then it is cancelled too.
        """
        await self._stop.wait()
        for name, task in self._tasks.items():
            if name != OUTBOX_TASK:
                task.cancel()
        outbox = self._tasks[OUTBOX_TASK]
        await asyncio.wait({outbox}, timeout=STOP_GRACE_SECONDS)
        outbox.cancel()

    # -- leadership (daemons sharing PostgreSQL, see watchdog.leadership) -------------

    async def _take_the_lead(self, leadership: Leadership) -> bool:
        """Stand by until this daemon wins the lock (True) or is asked to stop (False).

        A standby is ready and healthy for systemd (READY=1, the watchdog pings) and does
        nothing else. Once the lock is won it waits `Timing.fresh`, so that the last
        writes of a leader cut off from its lock have landed before the state is restored.
        """
        self._refresh_role()
        pings = asyncio.Event()
        pinger = asyncio.create_task(self._pinger.run(pings), name="standby-pinger")
        announced = False
        try:
            while not await leadership.try_acquire():
                if not announced:
                    announced = True
                    self._stand_by(leadership)
                await self._sleep_or_stop(leadership.timing.retry)
                if self._stop.is_set():
                    return False
            self._log.info(
                Event.LEADER_ACQUIRED,
                holder=leadership.name,
                grace=round(leadership.timing.grace, 3),
            )
            await self._sleep_or_stop(leadership.timing.fresh)
            if self._stop.is_set():
                return False
            if not await leadership.confirm():
                self._step_down("the lock session failed before the state was restored")
                return False
        finally:
            pings.set()
            await pinger
        self._engine = Engine(self.config, started_at=self._clock.now())
        self._polls, self._ticks = (
            Heartbeat(self._clock.monotonic),
            Heartbeat(self._clock.monotonic),
        )
        self._started_at = self._clock.monotonic()
        self._standing_by = False
        self._refresh_role()
        return True

    def _stand_by(self, leadership: Leadership) -> None:
        """Tell systemd and the log that this daemon is a ready standby, and who leads."""
        leader = leadership.leader_seen or "unknown"
        self._log.info(Event.LEADER_STANDBY, holder=leadership.name, leader=leader)
        if not self._ready_sent:
            self._ready_sent = True
            self._sd.ready()
        self._sd.status(f"standby; leader: {leader}")

    async def _keep_the_lead(self, leadership: Leadership) -> None:
        """Confirm the lock every `Timing.confirm` seconds; step down when it fails."""
        while not self._stop.is_set():
            await self._sleep_or_stop(leadership.timing.confirm)
            if self._stop.is_set():
                return
            if not await leadership.confirm():
                self._step_down("the lock session failed or the lock is gone")
                return

    def _step_down(self, reason: str) -> None:
        """Stop at once: the fence is already closed, so nothing more is posted or written."""
        self._stepped_down = reason
        self._standing_by = True
        self._refresh_role()
        self._log.error(Event.LEADER_LOST, reason=reason)
        self.request_stop()

    def _refresh_role(self) -> None:
        if self._metrics is not None:
            self._metrics.set_leader(not self._standing_by)

    def _fence_notifier(self) -> None:
        """Let the Slack sender ask the leadership before every post (see `run`)."""
        if self._leadership is not None and isinstance(self._notifier, FencedNotifier):
            self._notifier.fence_with(self._leadership.closed)

    # -- start-up -------------------------------------------------------------------

    def _restore(self) -> None:
        now = self._clock.now()
        self._held = self._store.held()
        self._refresh_silences(now)
        keep = self._history_needed()
        alerts = self._store.load_alerts()
        samples = self._store.load_samples(since=now - keep - self.config.watchdog.poll_interval)
        changes = self._store.load_changes()
        # Alerts of rules removed while the watchdog was down resolve now.
        self._commit(self._engine.restore(alerts, samples, changes))
        self._store.changed_elsewhere()  # from here on, the ticker looks for CLI requests
        self._apply_ack_requests()  # queued while the watchdog was down
        if alerts:
            self._log.info(
                "state.restored",
                alerts=len(alerts),
                firing=sum(a.state is AlertState.FIRING for a in alerts),
                samples=len(samples),
            )

    # -- the poll loop --------------------------------------------------------------

    async def _poll_loop(self, max_cycles: int | None) -> None:
        first = True
        started = self._clock.monotonic()
        try:
            while not self._stop.is_set():
                interval = self.config.watchdog.poll_interval.total_seconds()
                complete = await self._cycle(spread=not first, started=started, interval=interval)
                if self._poll_crash is not None:
                    raise self._poll_crash
                await self.flush_samples()
                self._check_clock()
                if not self._stop.is_set():
                    self._report_schedule()
                self._commit(self._engine.tick(self._clock.now()))
                self._cycles += 1
                self._polls.beat()
                self._report_to_dead_mans_switch()
                took = self._clock.monotonic() - started
                # A cycle that stopped waiting for stragglers has reported them as late.
                if complete and took > interval:
                    self._cycle_overrun(took, interval)
                if self._metrics is not None:
                    self._metrics.cycle_completed(self._clock.now().timestamp())
                    self._metrics.set_outbox_depth(self._store.outbox_depth())
                if first:
                    first = False
                    self._announce_ready(first_cycle="complete" if complete else "pending")
                self._sd.status(self._status_line())
                self._start_housekeeping()
                if max_cycles is not None and self._cycles >= max_cycles:
                    return
                started = self._next_start(started, interval)
                await self._sleep_or_stop(started - self._clock.monotonic())
        finally:
            await self._cancel_polls()

    def _report_to_dead_mans_switch(self) -> None:
        """Healthy: a workspace series gave a sample this cycle (any one, with
        `[[workspaces]]`: one workspace's rejected key is its no-data alert's to page, not
        the dead-man's switch's) and nothing is stalled or degraded."""
        problems = list(self.health().problems)
        if not self._workspace_sampled:
            problems.insert(0, f"{WORKSPACE}: no good poll this cycle")
        self._dead_mans_switch.report(self.config.watchdog.heartbeat_url, problems)

    def _next_start(self, started: float, interval: float) -> float:
        """One interval after `started`, so the loop's own work does not make the schedule
        drift; now instead, if a whole interval was lost (a suspended process, say)."""
        due = started + interval
        now = self._clock.monotonic()
        return now if now - due > interval else due

    def _cycle_overrun(self, took: float, interval: float) -> None:
        self._overruns += 1
        if self._clock.monotonic() - self._last_overrun_log >= 60.0:
            self._last_overrun_log = self._clock.monotonic()
            self._log.warning(
                "poll.cycle_overrun",
                took=round(took, 3),
                interval=interval,
                overruns=self._overruns,
            )
            self._overruns = 0

    async def _cycle(self, *, spread: bool, started: float, interval: float) -> bool:
        """Start every series' poll when it is due; wait for them until the next cycle is due.

        Polls go out in groups of `concurrency` spread over SPREAD_SHARE of the interval:
        one wake-up per group instead of one per series, while the API sees an even load.
        No poll waits for another: a slow or hanging request delays only its own series,
        which is skipped and counted late (never failed) while that request runs on, so
        the cycle stops waiting for it when the next cycle is due. Returns whether every
        poll the cycle started had finished by then.
        """
        series = self.config.series
        size = self.config.watchdog.concurrency
        groups = [series[i : i + size] for i in range(0, len(series), size)]
        step = interval * SPREAD_SHARE / len(groups) if spread else 0.0
        # structlog's lazy proxy binds a new logger on every call: bind once per cycle.
        self._poll_log = self._log.bind()
        self._late = _Late()
        self._workspace_sampled = False
        started_polls: list[asyncio.Task[None]] = []
        for index, group in enumerate(groups):
            due = started + index * step
            await self._sleep_or_stop(due - self._clock.monotonic())
            if self._stop.is_set():
                return False
            starved = self._clock.monotonic() - due > interval * STARVED_SHARE
            started_polls += self._start_polls(group, starved=starved)
        running = [poll for poll in started_polls if not poll.done()]
        if running:
            waiting = asyncio.ensure_future(asyncio.wait(running))
            await self._sleep_or_stop(started + interval - self._clock.monotonic(), waiting)
            waiting.cancel()
        return all(poll.done() for poll in started_polls)

    def _start_polls(
        self, group: Sequence[tuple[str, str | None]], *, starved: bool
    ) -> list[asyncio.Task[None]]:
        started: list[asyncio.Task[None]] = []
        now = self._clock.monotonic()
        for name, agent_id in group:
            if name in self._in_flight:
                self._late.in_flight += 1
                self._poll_late(name, "previous poll still running")
                continue
            if self._blocked_until.get(name, 0.0) > now:
                self._poll_log.debug(
                    Event.POLL_SKIPPED, series=name, reason="rate limited (Retry-After)"
                )
                self._polls.beat()  # waiting out a Retry-After is progress too
                continue
            if starved:
                self._late.starved += 1
                self._poll_late(name, "poll loop starved")
            poll = asyncio.create_task(self._poll_one(name, agent_id), name=f"poll {name}")
            self._in_flight[name] = poll
            poll.add_done_callback(functools.partial(self._poll_done, name))
            started.append(poll)
        return started

    def _poll_late(self, name: str, reason: str) -> None:
        self._poll_log.debug(Event.POLL_LATE, series=name, reason=reason)
        if self._metrics is not None:
            self._metrics.poll_late()

    def _report_schedule(self) -> None:
        """Tell the engine how many series this cycle did not poll on time, and why."""
        late = self._late
        causes = [IN_FLIGHT_CAUSE] * bool(late.in_flight) + [STARVED_CAUSE] * bool(late.starved)
        transitions = self._engine.poll_schedule(
            self._clock.now(),
            late=late.in_flight + late.starved,
            total=len(self.config.series),
            cause="; ".join(causes),
        )
        if transitions:
            self._commit(transitions)

    def _poll_done(self, name: str, poll: asyncio.Task[None]) -> None:
        del self._in_flight[name]
        if not poll.cancelled() and poll.exception() is not None and self._poll_crash is None:
            self._poll_crash = poll.exception()  # re-raised by the poll loop: never silent

    async def _cancel_polls(self) -> None:
        polls = list(self._in_flight.values())
        for poll in polls:
            poll.cancel()
        await asyncio.gather(*polls, return_exceptions=True)

    async def _poll_one(self, name: str, agent_id: str | None) -> None:
        began = self._clock.monotonic()
        self._check_clock()
        try:
            sample = await self._source.poll(name, agent_id)
        except SourceError as exc:
            self._poll_failed(name, exc, self._clock.monotonic() - began)
            return
        except Exception as exc:  # a bug in a source must not stop polling
            wrapped = SourceError(name, PollFailure.BAD_RESPONSE, f"internal error: {exc!r}")
            self._poll_failed(name, wrapped, self._clock.monotonic() - began)
            return
        finally:
            # Every finished poll, good or failed, is progress: a cycle of 1,000 agents
            # against an unreachable API is slow but alive; only a hung loop stalls.
            self._polls.beat()
        took = self._clock.monotonic() - began
        # The sample is stamped on the wall clock as it is now: the engine must have
        # seen any jump before it sees the sample.
        self._check_clock()
        if self._metrics is not None:  # first: whoever reads poll.ok finds it in /metrics
            self._metrics.poll_ok(sample, took)
        self._poll_log.debug(Event.POLL_OK, series=name, count=sample.count, took=round(took, 4))
        self._unsaved.samples.append(sample)
        if name == workspace_series(name):
            self._workspace_sampled = True
        transitions = self._engine.observe(sample)
        if transitions:
            self._commit(transitions)

    def _poll_failed(self, name: str, exc: SourceError, took: float) -> None:
        # A rejected key stops all monitoring until someone acts: say so at error level.
        level = "error" if exc.failure is PollFailure.REJECTED_KEY else "warning"
        getattr(self._poll_log, level)(
            Event.POLL_FAILED,
            series=name,
            reason=exc.failure.value,
            detail=exc.detail,
            status=exc.status,
            retry_after=exc.retry_after,
        )
        if self._metrics is not None:
            self._metrics.poll_failed(exc, took)
        if exc.failure is PollFailure.RATE_LIMITED:
            pause = exc.retry_after or self.config.watchdog.poll_interval.total_seconds()
            self._blocked_until[name] = self._clock.monotonic() + pause
        reason = exc.failure.value if not exc.detail else f"{exc.failure.value}: {exc.detail}"
        self._check_clock()
        transitions = self._engine.poll_failed(
            name,
            self._clock.now(),
            reason,
            immediate=exc.failure.immediate,
            key_rejected=exc.failure is PollFailure.REJECTED_KEY,
        )
        if transitions:
            self._commit(transitions)

    async def _ticker(self) -> None:
        while not self._stop.is_set():
            await self._clock.sleep(TICK_SECONDS)
            self._ticks.beat()
            if self._clock.monotonic() - self._started_at >= READY_WITHIN_SECONDS:
                self._announce_ready(first_cycle="pending")
            self._check_clock()
            now = self._clock.now()
            self._follow_changes(now)
            self._release_held(now)
            self._send_group_cards(now)
            transitions = self._engine.tick(now)
            if transitions:
                self._commit(transitions)

    def _announce_ready(self, *, first_cycle: Literal["complete", "pending"]) -> None:
        """READY=1, once: after the first poll cycle, or before it when that takes too long.

        Against an API that black-holes requests the first cycle can outlast systemd's
        `TimeoutStartSec=`; being killed then would silence the no-data alert that
        this very outage should raise.
        """
        if self._ready_sent:
            return
        self._ready_sent = True
        self._sd.ready()
        if first_cycle == "pending":
            self._sd.status(f"first poll cycle of {len(self.config.series)} series still running")
        self._log.info(
            Event.DAEMON_READY,
            first_cycle=first_cycle,
            after=round(self._clock.monotonic() - self._started_at, 3),
        )

    def _check_clock(self) -> None:
        """Notice the wall clock being set (NTP step, operator) and tell the engine."""
        wall, mono = self._clock.now(), self._clock.monotonic()
        expected = self._wall_at + timedelta(seconds=mono - self._mono_at)
        self._wall_at, self._mono_at = wall, mono
        jump = wall - expected
        if abs(jump) >= CLOCK_JUMP:
            self._log.warning("clock.jumped", by_seconds=round(jump.total_seconds(), 3))
            self._engine.shift(jump)

    async def _sleep_or_stop(self, seconds: float, *also: asyncio.Future[Any]) -> None:
        """Wait `seconds` of the clock's time, or less if stopped or one of `also` is done."""
        await sleep_or_stop(self._clock, seconds, self._stop, *also)

    # -- reload ---------------------------------------------------------------------

    async def _reloader(self) -> None:
        while not self._stop.is_set():
            await self._reload.wait()
            self._reload.clear()
            async with self._samples_lock:  # the history it reads includes every sample
                self.reload()

    def reload(self) -> bool:
        """Apply new rules and settings now; an invalid config is rejected, the old one kept.

        Applied live: every rule and `[watchdog]` key (the source takes the new timeout,
        concurrency, API key and base URL from its next poll on), a new Slack sender (from
        the next delivery attempt on), and series removed from the config leave
        `/metrics` (a poll of theirs still running is cancelled: its answer would bring
        them back). Alerts follow the engine's redefinition rules.
        """
        if self._load is None:
            return False
        self._sd.reloading()
        try:
            reloaded = self._load()
        except ConfigError as exc:
            self._log.error(Event.CONFIG_REJECTED, problems=exc.problems, kept=self.config.source)
            self._sd.ready()
            return False
        old, new = self.config, reloaded.config
        try:  # first: a source refusing the settings leaves everything as it was
            self._reconfigure_source(reloaded)
        except ValueError as exc:
            self._log.error(Event.CONFIG_REJECTED, problems=[str(exc)], kept=old.source)
            self._sd.ready()
            return False
        now = self._clock.now()
        windows = [r.window for r in new.rules if isinstance(r, ChangeRule)]
        history: list[Sample] = []
        if windows:
            self._flush()  # the history must include the samples not yet written
            with contextlib.suppress(StateError):
                history = self._store.load_samples(
                    since=now - max(windows) - new.watchdog.poll_interval
                )
        if reloaded.notifier is not None:
            self._notifier = reloaded.notifier
            self._fence_notifier()
        if reloaded.destinations is not None:
            self._destinations = dict(reloaded.destinations)
        if self._worker is not None:
            self._worker.use(Router(self._notifier, self._destinations))
            self._worker.control_storms(_storm_policy(new))
        transitions = self._engine.reconfigure(new, now, history)
        # Alerts kept across the reload may carry a new severity or condition: save them.
        self._unsaved.alerts.update({(r.rule, r.series): r for r in self._engine.records()})
        self._commit(transitions, config=old)
        self.config = new
        kept = {name for name, _ in new.series}
        removed = [name for name, _ in old.series if name not in kept]
        for name in removed:
            if (poll := self._in_flight.get(name)) is not None:
                poll.cancel()  # its answer, arriving later, would bring the series back
        if self._metrics is not None:
            self._metrics.forget_series(removed)
            self._update_firing_metric()
        self._log.info(
            Event.CONFIG_LOADED,
            source=new.source,
            rules=len(new.rules),
            agents=len(new.agents),
            resolved=len(transitions),
            reload=True,
            needs_restart=list(reloaded.needs_restart),
        )
        self._sd.ready()
        self._sd.status(self._status_line())
        return True

    # -- persistence ----------------------------------------------------------------

    def _commit(self, transitions: Sequence[Transition], *, config: Config | None = None) -> None:
        """Write transitions, their notifications and pending samples in one transaction."""
        config = config or self.config
        unsaved = self._unsaved
        for t in transitions:
            record = self._engine.record(t.rule, t.series)
            if record is None or record.alert_id != t.alert_id:
                record = AlertRecord(
                    rule=t.rule,
                    series=t.series,
                    alert_id=t.alert_id,
                    state=AlertState.INACTIVE,
                    since=t.since,
                    last_count=t.count,
                    last_notified=None,
                    condition=t.condition,
                    severity=t.severity,
                    changes=self._engine.changes(t.rule, t.series),
                )
            unsaved.alerts[(t.rule, t.series)] = record
        suppressed: list[tuple[Notification, Decision]] = []
        inhibited = self._inhibitions(config)  # once: the engine's records are its input
        for t in transitions:
            if t.kind.notifies:
                note = self._notification(t, config)
                decision = self._suppression(note, t.at, config, inhibited)
                if decision.send:
                    self._enqueue(note, config)
                else:
                    suppressed.append((note, decision))
        self._flush()
        for t in transitions:
            self._log_transition(t)
        for note, decision in suppressed:
            self._log_suppressed(note, decision, stage="enqueue")
        if any(t.kind.notifies for t in transitions):
            self._wake.set()
            self._refresh_outbox_age()

    def _enqueue(self, note: Notification, config: Config, *, released: bool = False) -> None:
        """Queue `note` for its Slack card and every other destination it goes to
        (`watchdog.notify.destinations.fan_out`), written with the next commit."""
        cards = self._cards(note, config)
        self._unsaved.notifications += [*cards, *fan_out(note, config, released=released)]

    def _cards(self, note: Notification, config: Config) -> list[Notification]:
        """The Slack-card notifications for `note`: itself, or its group's (the grouping stage)."""
        rule = config.rule(note.rule)
        if rule is None or not rule.group_wait:
            return [note]
        return self._groups.admit(note, rule.group_wait)

    def _send_group_cards(self, now: datetime) -> None:
        """Queue the cards of groups whose `group_wait` is over."""
        cards = self._groups.due(now)
        if not cards:
            return
        self._unsaved.notifications += cards
        self._flush()
        for card in cards:
            self._log.info(Event.NOTIFY_GROUPED, group_id=card.alert_id, rule=card.rule)
        self._wake.set()
        self._refresh_outbox_age()

    def _may_write(self) -> bool:
        """Only a leader with a fresh lock writes (see `watchdog.leadership`); the effects
        wait in memory meanwhile."""
        return self._leadership is None or self._leadership.fresh()

    def _flush(self) -> None:
        unsaved = self._unsaved
        if not unsaved or not self._may_write():
            return
        try:
            self._store.apply(
                samples=unsaved.samples,
                alerts=list(unsaved.alerts.values()),
                notifications=unsaved.notifications,
                held=[news for news in unsaved.held.values() if news is not None],
                released=[alert_id for alert_id, news in unsaved.held.items() if news is None],
            )
        except StateError as exc:
            self._unsaved_kept(exc)
            return
        self._unsaved = _Unsaved()

    async def flush_samples(self) -> None:
        """Write a poll cycle's samples from a worker thread, so the loop never waits on it.

        A thousand samples into a cold, week-old database take 100 ms and more (the first
        flush after a start reads the index from disk); on the loop that would delay every
        poll and ping. Only samples go this way: they are history rows, independent of
        each other and of the order of writes. Alerts and notifications (a transition) are
        written on the loop, in order, by `_commit`. A reload waits for a flush in flight
        (`_samples_lock`) so that it reads the history whole.
        """
        unsaved = self._unsaved
        if unsaved.alerts or unsaved.notifications:
            self._flush()
            return
        if not unsaved.samples or not self._may_write():
            return
        async with self._samples_lock:
            samples, unsaved.samples = unsaved.samples, []
            try:
                await asyncio.to_thread(self._store.apply, samples=samples)
            except StateError as exc:
                self._unsaved.samples[:0] = samples
                self._unsaved_kept(exc)

    def _unsaved_kept(self, exc: StateError) -> None:
        """A write failed: keep what was not written for the next one, within a bound."""
        unsaved = self._unsaved
        self._log.error(
            Event.STATE_ERROR,
            error=str(exc),
            unsaved_notifications=len(unsaved.notifications),
            unsaved_samples=len(unsaved.samples),
        )
        if len(unsaved.samples) > 100_000:  # bound memory during a long disk-full spell
            del unsaved.samples[: len(unsaved.samples) - 100_000]

    def _start_housekeeping(self) -> None:
        """Hourly, in the background: the poll loop never waits for housekeeping."""
        if self._clock.monotonic() - self._last_prune < PRUNE_EVERY_SECONDS:
            return
        if self._housekeeping is not None and not self._housekeeping.done():
            return
        self._last_prune = self._clock.monotonic()
        self._housekeeping = asyncio.create_task(self.housekeep(), name="housekeeping")

    async def housekeep(self) -> tuple[int, int]:
        """Drop history past `retention`, thin what change windows no longer need.

        Returns (expired, thinned) rows. The SQL runs in a worker thread, a few series per
        transaction (HOUSEKEEPING_BATCH), so the event loop never waits on it, nor on the
        store's lock for longer than one batch: at 1,000 agents and a week of history the
        loop's longest block stays far below 100 ms (see `benchmarks/housekeeping.py`).
        """
        now = self._clock.now()
        full = max(self._history_needed(), FULL_RESOLUTION_FOR)
        retention = self.config.watchdog.retention
        expired = thinned = 0
        try:
            names = await asyncio.to_thread(self._store.sample_series)
            for start in range(0, len(names), HOUSEKEEPING_BATCH):
                batch = names[start : start + HOUSEKEEPING_BATCH]
                expired += await asyncio.to_thread(
                    self._store.prune_samples, now - retention, series=batch
                )
                thinned += await asyncio.to_thread(
                    functools.partial(
                        self._store.thin_samples,
                        after=now - full - 2 * timedelta(seconds=PRUNE_EVERY_SECONDS),
                        before=now - full,
                        resolution=THINNED_RESOLUTION,
                        series=batch,
                    )
                )
        except StateError as exc:
            self._log.error(Event.STATE_ERROR, error=str(exc))
            return expired, thinned
        self._log.debug(Event.STATE_PRUNED, expired=expired, thinned=thinned)
        return expired, thinned

    def _reconfigure_source(self, reloaded: Reloaded) -> None:
        """Hand the reloaded keys, hosts, timeout and concurrency to the source."""
        watchdog = reloaded.config.watchdog
        timeout = request_timeout(watchdog.timeout, watchdog.poll_interval)
        if isinstance(self._source, WorkspaceSources):
            self._source.reconfigure(
                endpoints=reloaded.endpoints, timeout=timeout, concurrency=watchdog.concurrency
            )
        elif isinstance(self._source, ReconfigurableSource) and reloaded.api_key is not None:
            self._source.reconfigure(
                api_key=reloaded.api_key,
                base_url=reloaded.base_url,
                timeout=timeout,
                concurrency=watchdog.concurrency,
            )

    def _history_needed(self) -> timedelta:
        """How far back full-resolution samples matter: change windows and the sparkline."""
        windows = [r.window for r in self.config.rules if isinstance(r, ChangeRule)]
        sparkline = self.config.watchdog.poll_interval * (SPARKLINE_LENGTH + 1)
        return max([*windows, sparkline])

    def _report_channel(self, section: ReportSection) -> str:
        """Where the daily report goes: `[report] channel`, else `[slack] channel`."""
        return self._fixed_channel or section.channel or self.config.slack.channel or "console"

    def _notification(self, t: Transition, config: Config) -> Notification:
        route = config.route_for(t.rule, t.series)
        channel = self._fixed_channel or route.channel or "console"
        return Notification(
            alert_id=t.alert_id,
            kind=t.kind,
            rule=t.rule,
            series=t.series,
            severity=t.severity,
            at=t.at,
            since=t.since,
            count=t.count,
            condition=t.condition,
            channel=channel,
            reason=t.reason,
            recent=t.recent,
            runbook=route.runbook,
            mention=_mention(t, route.mention),
            **self._people(t.rule, t.series, t.acked_by, t.acked_at, t.at),
            limit=_limit(config, t.series),
        )

    # -- silences and mutes (see watchdog.silences) ---------------------------------

    def silence_alert(self, alert_id: str, duration: timedelta, by: str) -> Silence:
        """Silence one alert's rule on its series for `duration` from now; audited with `by`.

        What the Slack card's Silence button does. Call it on the daemon's event loop.
        Raises InputError when no pending or firing alert has that id, or the duration
        is not positive.
        """
        record = next((r for r in self._engine.records() if r.alert_id == alert_id), None)
        if record is None:
            raise InputError(f"no pending or firing alert {alert_id!r}")
        if duration <= timedelta(0):
            raise InputError(f"a silence must last more than 0s, not {format_duration(duration)}")
        now = self._clock.now()
        silence_id = self._store.add_silence(
            record.rule, record.series, now, now + duration, by, f"silenced alert {alert_id}"
        )
        self._refresh_silences(now)  # logs silence.created
        self._release_held(now)  # a firing alert's news is held from now: its end is announced
        return next(s for s in self._silences if s.id == silence_id)

    def silences_text(self) -> str:
        """The silences in force and the mute windows open now, in a few plain lines."""
        now = self._clock.now()
        active = [s for s in self._silences if s.active(now)]
        muting = [m for m in self.config.mutes if m.active(now)]
        if not active and not muting:
            return "No active silences."
        lines = [f"Active silences: {len(active)}"]
        lines += [s.describe(now) for s in active]
        for mute in muting:
            lines.append(f"mute {mute.name} open now ({mute.describe()})")
        return "\n".join(lines)

    def _follow_changes(self, now: datetime) -> None:
        """Re-read what other processes (the CLI) change, and silences that just ended;
        apply the acknowledgements `watchdog ack` queued.

        `changed_elsewhere` is asked once per tick, here only: the answer is consumed.
        """
        try:
            changed = self._store.changed_elsewhere()
            if changed or any(s.ends <= now for s in self._silences):
                self._refresh_silences(now)
        except StateError as exc:
            self._log.error(Event.STATE_ERROR, error=str(exc), during="reading silences")
            return
        if changed:
            self._apply_ack_requests()

    def _refresh_silences(self, now: datetime) -> None:
        """Read the silences not yet ended; audit those made or ended since the last read."""
        news = self._store.take_silence_news(now)
        self._silences = tuple(self._store.silences(now=now))
        for s in news.created:
            self._log.info(
                Event.SILENCE_CREATED,
                silence=s.id,
                rule=s.rule,
                scope=s.scope,
                starts=s.starts.isoformat(),
                ends=s.ends.isoformat(),
                by=s.by,
                comment=s.comment,
            )
        for s in news.expired:
            self._log.info(
                Event.SILENCE_EXPIRED,
                silence=s.id,
                rule=s.rule,
                scope=s.scope,
                ends=s.ends.isoformat(),
                by=s.by,
            )

    def _suppression(
        self, note: Notification, at: datetime, config: Config, inhibited: Inhibitions
    ) -> Decision:
        """The suppression stage as a notification is queued, at its transition's time.

        Judged at the transition's time so that what happened inside a silence stays out
        of Slack however late the outbox gets to it; the held news it changes is written
        with the transition.
        """
        held = self._held.get(note.alert_id)
        decision = decide(
            note,
            at,
            silences=self._silences,
            mutes=config.mutes,
            held=held,
            inhibitions=inhibited,
        )
        if decision.held != held:
            self._set_held(note.alert_id, decision.held)
        return decision

    def _inhibitions(self, config: Config) -> Inhibitions:
        """The inhibitions in force among the alerts firing now (`watchdog.inhibition`)."""
        if not config.inhibited_by:
            return NO_INHIBITIONS
        return inhibitions(config.inhibited_by, self._engine.records())

    def _set_held(self, alert_id: str, news: Held | None) -> None:
        """Change an alert's held news, written with the next commit."""
        self._unsaved.held[alert_id] = news
        self._remember_held(alert_id, news)

    def _remember_held(self, alert_id: str, news: Held | None) -> None:
        if news is None:
            self._held.pop(alert_id, None)
        else:
            self._held[alert_id] = news

    def _hold_at_delivery(self, entry: OutboxEntry, note: Notification) -> bool:
        """The suppression stage for an outbox head about to be sent: True if held back.

        Judged now, so that a silence made while the notification waited (behind a Slack
        outage, or Slack's pace) holds it too. The entry leaves the outbox together with
        the change to its alert's held news.
        """
        now = self._clock.now()
        held = self._held.get(note.alert_id)
        decision = decide(
            note,
            now,
            silences=self._silences,
            mutes=self.config.mutes,
            held=held,
            inhibitions=self._inhibitions(self.config),
        )
        if decision.send:
            return False
        if not is_card(entry.channel):
            # The card's copy keeps the held news; this one is only taken out.
            self._store.discard(entry.id)
            self._log_suppressed(note, decision, stage="delivery", outbox_id=entry.id)
            return True
        self._store.hold_back(entry.id, alert_id=note.alert_id, held=decision.held)
        self._remember_held(note.alert_id, decision.held)
        self._log_suppressed(note, decision, stage="delivery", outbox_id=entry.id)
        return True

    def _release_held(self, now: datetime) -> None:
        """Announce the held news of alerts still firing whose cover ended.

        A new card when none was posted, else a threaded reply; both with the mention.
        Alerts firing with their card out when a cover began are held from then on.
        """
        config = self.config
        if not (self._held or self._silences or config.mutes or config.inhibited_by):
            return
        plan = reconcile(
            self._held,
            self._engine.records(),
            now,
            silences=self._silences,
            mutes=config.mutes,
            inhibitions=self._inhibitions(config),
        )
        if not plan:
            return
        for news in plan.hold:
            self._set_held(news.alert_id, news)
        for alert_id in plan.forget:
            self._set_held(alert_id, None)
        released: list[tuple[Held, Notification]] = []
        for news, record in plan.release:
            note = self._release_note(news, record, now)
            self._enqueue(note, self.config, released=True)
            self._set_held(news.alert_id, None)
            released.append((news, note))
        self._flush()
        for news, note in released:
            self._log.warning(
                Event.NOTIFY_RELEASED,
                alert_id=note.alert_id,
                rule=note.rule,
                series=note.series,
                kind=note.kind.value,
                **news.cover.fields(),
            )
        if released:
            self._wake.set()
            self._refresh_outbox_age()

    def _release_note(self, news: Held, record: AlertRecord, now: datetime) -> Notification:
        """The announcement of an alert that outlived its cover: a card, or a reply to it."""
        note = self._notification(
            Transition(
                alert_id=record.alert_id,
                kind=TransitionKind.REPEAT if news.card else TransitionKind.FIRING,
                rule=record.rule,
                series=record.series,
                severity=record.severity,
                at=now,
                since=record.since,
                count=record.last_count,
                condition=record.condition,
                reason=f"{news.cover.ended()}; still firing",
                recent=self._engine.recent(record.series),
            ),
            self.config,
        )
        route = self.config.route_for(record.rule, record.series)
        return dataclasses.replace(note, mention=route.mention)

    def _log_suppressed(
        self, note: Notification, decision: Decision, *, stage: str, outbox_id: int | None = None
    ) -> None:
        fields: dict[str, Any] = {
            "alert_id": note.alert_id,
            "rule": note.rule,
            "series": note.series,
            "kind": note.kind.value,
            "reason": decision.reason.value,
            "stage": stage,
        }
        if decision.cover is not None:
            fields.update(decision.cover.fields())
        if outbox_id is not None:
            fields["outbox_id"] = outbox_id
        inhibited = decision.reason is Suppression.INHIBITED
        self._log.info(Event.ALERT_INHIBITED if inhibited else Event.NOTIFY_SUPPRESSED, **fields)

    # -- reporting ------------------------------------------------------------------

    def _log_transition(self, t: Transition) -> None:
        fields: dict[str, Any] = {
            "alert_id": t.alert_id,
            "rule": t.rule,
            "series": t.series,
            "severity": t.severity.value,
            "count": t.count,
            "condition": t.condition,
            "since": t.since.isoformat(),
        }
        if t.reason:
            fields["reason"] = t.reason
        paging = t.kind in (TransitionKind.FIRING, TransitionKind.ESCALATED)
        level = "warning" if paging else "info"
        getattr(self._log, level)(_TRANSITION_EVENTS[t.kind], **fields)
        self._update_firing_metric()

    def _update_firing_metric(self) -> None:
        if self._metrics is None:
            return
        by_rule: dict[str, int] = {}
        for record in self._engine.records():
            if record.state is AlertState.FIRING:
                by_rule[record.rule] = by_rule.get(record.rule, 0) + 1
        self._metrics.set_alerts_firing(by_rule)

    def _delivered(self, outcome: Literal["sent", "retry", "failed"]) -> None:
        self._refresh_outbox_age()
        if self._metrics is not None:
            self._metrics.notification(outcome)
            self._metrics.set_outbox_depth(self._store.outbox_depth())

    def _coalesced(self, reason: Reason) -> None:
        self._refresh_outbox_age()
        if self._metrics is not None:
            self._metrics.coalesced(reason)
            self._metrics.set_outbox_depth(self._store.outbox_depth())

    def _refresh_outbox_age(self) -> None:
        """Remember when the oldest undelivered notification was queued, and why it waits.

        Read after every change to the outbox (enqueue, delivery outcome), so `/healthz`
        and the age metric never touch the store.
        """
        with contextlib.suppress(StateError):  # keep the last known value; logged elsewhere
            oldest = self._store.oldest_pending()
            self._oldest_undelivered = (
                None if oldest is None else (oldest.created_at, oldest.last_error)
            )

    def _outbox_age_seconds(self) -> float:
        """Age of the oldest undelivered notification, 0 when the outbox is empty."""
        oldest = self._oldest_undelivered
        if oldest is None:
            return 0.0
        return max(0.0, (self._clock.now() - oldest[0]).total_seconds())

    def _poll_silence_limit(self) -> float:
        watchdog = self.config.watchdog
        return poll_silence_limit(watchdog.poll_interval, watchdog.timeout)

    def _status_line(self) -> str:
        counts = self._last_counts(self.config.series[:4])
        firing = [r for r in self._engine.records() if r.state is AlertState.FIRING]
        no_data = sum(r.rule == NO_DATA_RULE for r in firing)
        more = len(self.config.series) - 4
        parts = [
            f"{len(self.config.series)} series",
            counts + (f" +{more} more" if more > 0 else ""),
        ]
        parts.append(f"{len(firing)} firing" + (f" ({no_data} no-data)" if no_data else ""))
        parts.append(f"outbox {self._store.outbox_depth()}")
        return "; ".join(parts)

    def _last_counts(self, series: Iterable[tuple[str, str | None]]) -> str:
        shown = []
        for name, _ in series:
            recent = self._engine.recent(name)
            shown.append(f"{name}={recent[-1] if recent else '?'}")
        return " ".join(shown)


def _seconds(value: float) -> str:
    return format_duration(timedelta(seconds=value))


def _limit(config: Config, series: str) -> int | None:
    """The plan's concurrency limit when `series` is a workspace's count (its own plan,
    else `[plan]`), so the message shows the count against it."""
    plan = config.plan_for(series)
    return (
        plan.concurrency_limit if plan is not None and series == workspace_series(series) else None
    )


def _mention(t: Transition, routed: str | None) -> str | None:
    """Whom a notification pages: the rule's mention when it fires, plus escalation's."""
    if t.kind is TransitionKind.FIRING:
        return " ".join(m for m in (routed, t.mention) if m) or None
    return t.mention if t.kind is TransitionKind.ESCALATED else None


def _storm_policy(config: Config) -> StormPolicy:
    """The `[storm]` section as the delivery worker's storm control policy."""
    return StormPolicy(max=config.storm.max, window=config.storm.window)
