"""The rule engine: samples, poll failures and clock ticks in; transitions out.

Pure by design: no clock reads, no logging, no I/O. Time arrives as the `at` of a sample
or the `now` of a tick, so the daemon, `watchdog replay` and the tests run the very same
code, and a restored engine (from `AlertRecord`s and stored samples) continues where the
previous process stopped without announcing anything twice.

Semantics, per alert instance (rule x series):
- threshold: INACTIVE -> PENDING when the condition holds at a sample; PENDING -> FIRING
  at the first sample where it has held for `for` (at every sample since); PENDING ->
  INACTIVE (cancelled) at a sample where it does not hold; FIRING -> INACTIVE (resolved)
  at a sample where `recovered` (hysteresis) is true.
- change: compares the sample with its base, the latest sample at least `window` old on
  that series, and fires at once when the condition holds. A base older than twice the
  window does not fit (after a poll gap of hours, comparing with the count from before
  the gap would report a collapse or surge that nobody saw happen): until a fitting base
  exists, `window` after the gap, the rule does not fire. No base yet: it does not fire.
  A firing change alert remembers what it fired against (`FiredChange`: the base and the
  count) and resolves by the rule's `resolve`:
  - "recovery" (the default): at the first sample where the condition no longer holds
    against that remembered base, whatever the window holds by then (`drop_pct = 50`
    fired at 20 -> 0 resolves once the count is above 10; `rise = 15` fired at 10 -> 25
    once it is below 25). The window no longer matters, so neither a missing nor a stale
    base holds the decision back. The reason says so: "recovered to 12, fired at 20 → 0".
  - "window": at the first sample where the sliding comparison (with the current base)
    no longer holds; without a fitting base it keeps firing.
  An alert restored from a state file without a remembered base resolves by "window".
- active hours: outside its window a rule is off; a firing alert resolves, a pending one
  is cancelled (at a sample or a tick).
- no-data (built in, per series): pages only when the API is to blame. It fires when a
  series' own polls failed: at least one failed poll and no good one for `stale_after`
  (counted from the later of its last good poll and the engine's start), or at once on a
  failure no retry can fix (rejected key, unknown agent); resolves at the next good
  sample. A series the watchdog did not poll in time (skipped as late while its previous
  request runs, or started late because the poll loop was starved) has no failure and
  does not page by itself: the watchdog's own backlog is `watchdog-behind`, below. While the
  workspace series itself is failing, agent series do not raise their own no-data alert,
  and once it recovers they get a fresh `stale_after` to recover too: one message for one
  outage instead of one per agent. A rejected key (401/403) is the workspace's: an agent
  whose key is refused before its workspace's poll answers waits for that poll, which
  pages once for the key (an agent refused while its workspace answers well pages at
  the next tick). With `[[workspaces]]` this holds per workspace: one
  workspace's series (`acme/workspace`) covers only its own agents (`acme/...`). This
  is the built-in instance of inhibition (`watchdog.inhibition`), kept here because it
  goes further than a rule's `inhibited_by`: the agents' alerts do not even start.
- watchdog-behind (built in, one self-alert on the pseudo series `watchdog`): the daemon
  reports, once per poll cycle, how many series were not polled on time and why
  (`poll_schedule`). When more than BEHIND_SHARE of the series were late at every report
  for `stale_after`, it fires once, saying the share and the cause; it resolves at the
  first report at or below the share. Routed and ranked like no-data (`[no_data]`).
- plan (`burst`, `at-capacity`): threshold rules like any other, built in by `[plan]`
  (`rules.plan_rules`), so the daemon, replay and restored state judge them alike.
- repeat: a firing alert re-notifies every `repeat` (0 = never), decided at ticks.
- acknowledgement (`acknowledge`, a human saying "I'm on it"): marks the firing episode
  acknowledged, once, by whom and when; it is not a transition. An acknowledged alert
  repeats no more; its resolution comes as usual and carries who acknowledged. A new
  episode starts unacknowledged. Pending or inactive alerts cannot be acknowledged.
- redefinition (`reconfigure`, i.e. a reload): an alert whose rule is removed, or whose
  series left the rule's scope, resolves. A rule whose kind changed (threshold <-> change)
  resolves its alerts with a note and starts afresh. A rule whose condition changed
  (threshold, hysteresis, `for`, window, amounts) keeps its pending or firing alert, and
  the next sample judges it under the new definition as if it had just started: a
  firing alert whose new condition does not hold resolves, one that holds stays firing
  (hysteresis applies from then on); a change alert resolving on recovery is judged by
  the new condition against the base it fired against. A new severity is the alert's
  severity at once, and every later notification of it (repeat, resolution, the card's
  edit) shows it. No alert is ever evaluated against a definition the config no longer
  has.
- escalation (threshold rules, `escalate`): stages raise a firing alert's severity in
  place: one instance, one alert id, one card. A level stage is in force while the count
  is beyond its level: it comes into force at a sample where the count is beyond it and
  is left at one where its own hysteresis says so (`recover_below` / `recover_above`,
  else back at or within the level). A time stage (`after`) comes into force at the tick
  at which the alert has held (since `since`, the card's "holding for") that long and
  nobody acknowledged it (`acknowledge`); it stays until the alert resolves. The severity
  is the most severe of the rule's and of the stages in force. A sample or tick that puts
  a stage in force emits ESCALATED (carrying the stages' mentions); one that only leaves
  level stages emits DEESCALATED; neither resolves anything. An alert that fires with
  level stages already reached fires with them (severity and mentions on the firing
  card). Pending and flapping alerts do not escalate. A reload that changes `escalate`
  starts the alert's escalation afresh at the next sample or tick.
- flapping (every alert, `[watchdog] flap`, on unless `flap = false`): every rule x
  series counts its firings and its resolutions by the condition over the last `window`
  (inclusive). A resolution that would be the `changes`-th within `window` does not
  happen: the alert enters FLAPPING instead (one transition, same alert id, its card
  stays) and the count starts afresh. While flapping, the rule is evaluated as usual
  into a hidden real state, firing or resolved, and nothing is emitted: no firing,
  resolved, repeat or escalation. The real state fires and resolves as the alert would:
  a threshold by `for` and hysteresis; a change alert fires against the window's base
  and remembers it, and resolves by its `resolve` (against that base, or the window's);
  no-data and watchdog-behind by their failed polls and late reports (and the
  workspace's no-data covers the agents, and gives them a fresh `stale_after`, by its
  real state). At the first sample or tick at which the real state has not changed for
  `window` (since entering, or since its last change), the alert leaves flapping with
  one transition to that state: FIRING (same alert id; it goes on as a firing alert,
  a change alert against the base it really fired at) or RESOLVED. Leaving active hours
  or a reload that removes the rule resolve a flapping alert as any other; with
  `flap = false` it leaves at the next sample or tick. The built-in alerts flap too:
  no-data firing and resolving every few minutes against a flaky API, or the watchdog
  falling behind and catching up, is the noise flapping exists to hold back, and the
  [plan] rules are threshold rules like any other.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from watchdog.durations import format_duration
from watchdog.model import (
    NO_DATA_RULE,
    WATCHDOG_BEHIND_RULE,
    WATCHDOG_SERIES,
    AlertRecord,
    AlertState,
    FiredChange,
    Flapping,
    Sample,
    Severity,
    Transition,
    TransitionKind,
    workspace_series,
)
from watchdog.rules import ChangeRule, Config, EscalationStage, FlapSettings, ThresholdRule

SPARKLINE_LENGTH = 24
"""How many recent counts per series travel with a transition (for the sparkline)."""

MAX_BASE_AGE = 2
"""A change rule's base may be at most this many windows old (see the module docstring)."""

BEHIND_SHARE = 0.10
"""The watchdog is behind while more than this share of series is not polled on time.

A tenth: one slow answer among a few series is noise the per-series scheduler absorbs,
while a tenth of all series silently unpolled for `stale_after` hides real outages."""

_Rule = ThresholdRule | ChangeRule


def alert_id(rule: str, series: str, since: datetime) -> str:
    """A stable id for one episode, the same in the daemon, in replay and after restarts."""
    key = f"{rule}\0{series}\0{since.isoformat()}".encode()
    return hashlib.blake2b(key, digest_size=6).hexdigest()


@dataclass(slots=True)
class _Instance:
    rule: str
    series: str
    state: AlertState
    alert_id: str
    since: datetime
    last_count: int | None
    last_notified: datetime | None
    condition: str
    severity: Severity
    redefined: bool = False  # the rule's condition changed: see _threshold and _change
    escalation: int = 0  # the `escalate` stages in force, as a bit set
    acked_at: datetime | None = None
    acked_by: str | None = None
    flapping: Flapping | None = None
    fired_change: FiredChange | None = None  # what a change alert fired against

    def record(self, changes: tuple[datetime, ...] = ()) -> AlertRecord:
        return AlertRecord(
            rule=self.rule,
            series=self.series,
            alert_id=self.alert_id,
            state=self.state,
            since=self.since,
            last_count=self.last_count,
            last_notified=self.last_notified,
            condition=self.condition,
            severity=self.severity,
            escalation=self.escalation,
            acked_at=self.acked_at,
            acked_by=self.acked_by,
            flapping=self.flapping,
            changes=changes,
            fired_change=self.fired_change,
        )


@dataclass(slots=True)
class _Window:
    """Samples of one series kept just long enough to answer one change window.

    The front is the latest sample at least `span` older than the newest one; everything
    before it is dropped, so the cost per sample is amortised O(1) whatever the window.
    A front older than `MAX_BASE_AGE` windows (a poll gap) is not a base.
    """

    span: timedelta
    samples: deque[tuple[datetime, int]] = field(default_factory=deque)

    def push(self, at: datetime, count: int) -> int | None:
        """Add a sample; return the base: the latest sample at least `span` old, if it fits."""
        samples = self.samples
        cutoff = at - self.span
        while len(samples) >= 2 and samples[1][0] <= cutoff:
            samples.popleft()
        base = None
        if samples and at - MAX_BASE_AGE * self.span <= samples[0][0] <= cutoff:
            base = samples[0][1]
        samples.append((at, count))
        return base


@dataclass(slots=True)
class _Series:
    name: str
    last_good: datetime | None = None
    failure: str = ""
    immediate_failure: bool = False
    key_rejected_at: datetime | None = None  # see _awaiting_workspace
    recent: deque[int] = field(default_factory=lambda: deque(maxlen=SPARKLINE_LENGTH))
    windows: dict[timedelta, _Window] = field(default_factory=dict)
    rules: list[_Rule] = field(default_factory=list)


@dataclass(slots=True)
class _Behind:
    """The watchdog's own backlog: late at every report since `since`, as last reported."""

    since: datetime
    share: float
    cause: str


class Engine:
    """Evaluates one `Config` over time. Feed it in time order; it never reads a clock."""

    def __init__(self, config: Config, *, started_at: datetime) -> None:
        self._config = config
        self._started_at = started_at
        self._instances: dict[tuple[str, str], _Instance] = {}
        self._series: dict[str, _Series] = {}
        self._workspace_back: dict[str, datetime] = {}  # by workspace series: _check_no_data
        self._behind: _Behind | None = None  # see poll_schedule
        self._changes: dict[tuple[str, str], deque[datetime]] = {}  # see _note_change
        self._build_series()

    # -- set-up ---------------------------------------------------------------------

    @property
    def config(self) -> Config:
        return self._config

    def _build_series(self) -> dict[str, list[_Window]]:
        """(Re)index rules per series; returns the change windows created afresh."""
        fresh: dict[str, list[_Window]] = {}
        old = self._series
        self._series = {}
        for name, _agent in self._config.series:
            series = old.get(name) or _Series(name)
            series.rules = []
            self._series[name] = series
        for rule in self._config.rules:
            for name in self._config.scopes.get(rule.name, ()):
                on = self._config.rule_on(rule.name, name)
                assert on is not None
                self._series[name].rules.append(on)
        for series in self._series.values():
            spans = {r.window for r in series.rules if isinstance(r, ChangeRule)}
            windows: dict[timedelta, _Window] = {}
            for span in sorted(spans):
                kept = series.windows.get(span)
                if kept is None:
                    kept = _Window(span)
                    fresh.setdefault(series.name, []).append(kept)
                windows[span] = kept
            series.windows = windows
        return fresh

    def restore(
        self,
        alerts: Iterable[AlertRecord],
        samples: Iterable[Sample],
        changes: Mapping[tuple[str, str], Iterable[datetime]] | None = None,
    ) -> list[Transition]:
        """Resume from persisted state: alert instances as they were, history warmed.

        Samples only fill change windows, sparklines and last-good times; they are not
        evaluated, so nothing is announced again. `changes` are the recent firings and
        resolutions per (rule, series), counted for flapping. Alerts of rules (or series)
        the config no longer has resolve at once (at the engine's start): the returned
        transitions.
        """
        for key, moments in (changes or {}).items():
            self._changes[key] = deque(sorted(moments))
        for sample in samples:
            series = self._series.get(sample.series)
            if series is None:
                continue
            series.recent.append(sample.count)
            if series.last_good is None or sample.at > series.last_good:
                series.last_good = sample.at
            for window in series.windows.values():
                window.push(sample.at, sample.count)
        for record in alerts:
            if record.state is AlertState.INACTIVE:
                continue
            self._instances[(record.rule, record.series)] = _Instance(
                rule=record.rule,
                series=record.series,
                state=record.state,
                alert_id=record.alert_id,
                since=record.since,
                last_count=record.last_count,
                last_notified=record.last_notified,
                condition=record.condition,
                severity=record.severity,
                escalation=record.escalation,
                acked_at=record.acked_at,
                acked_by=record.acked_by,
                flapping=record.flapping,
                fired_change=record.fired_change,
            )
        return self.reconfigure(self._config, self._started_at)

    def reconfigure(
        self, config: Config, now: datetime, history: Iterable[Sample] = ()
    ) -> list[Transition]:
        """Swap in new rules: resolve, restart or redefine their alerts (see the docstring).

        `history` (recent samples, oldest first, from the store) fills change windows that
        are new or changed, which the engine alone could not answer for up to a window's
        length.
        """
        out: list[Transition] = []
        series_names = {name for name, _ in config.series}
        for key, inst in list(self._instances.items()):
            rule_name, series = key
            if rule_name == WATCHDOG_BEHIND_RULE:
                inst.severity = config.no_data.severity
                continue
            if rule_name == NO_DATA_RULE:
                if series not in series_names:
                    out.append(self._end(inst, now, None, "series removed from config"))
                else:
                    inst.severity = config.no_data.severity
                continue
            old, new = self._config.rule_on(rule_name, series), config.rule_on(rule_name, series)
            if new is None:
                out.append(self._end(inst, now, inst.last_count, "rule removed from config"))
            elif series not in config.scopes.get(rule_name, ()):
                out.append(self._end(inst, now, inst.last_count, "series no longer in scope"))
            elif old is not None and old.kind != new.kind:
                reason = f"rule changed from {old.kind} to {new.kind}: starting afresh"
                out.append(self._end(inst, now, inst.last_count, reason))
            else:
                _redefine(inst, old, new)
        self._config = config
        fresh = self._build_series()
        known: dict[str, dict[datetime, int]] = {}
        for sample in history:
            known.setdefault(sample.series, {})[sample.at] = sample.count
        for name, windows in fresh.items():
            seen = known.get(name, {})
            for kept in self._series[name].windows.values():
                if all(kept is not window for window in windows):
                    for at, count in kept.samples:
                        seen.setdefault(at, count)
            for at in sorted(seen):
                for window in windows:
                    window.push(at, seen[at])
        return out

    # -- inputs ---------------------------------------------------------------------

    def observe(self, sample: Sample) -> list[Transition]:
        """Evaluate every rule of the sample's series at the sample's time."""
        series = self._series.get(sample.series)
        if series is None:
            return []
        at, count = sample.at, sample.count
        series.recent.append(count)
        series.last_good = at
        series.failure = ""
        series.immediate_failure = False
        series.key_rejected_at = None
        out: list[Transition] = []
        no_data = self._instances.get((NO_DATA_RULE, series.name))
        if no_data is not None:
            if series.name == workspace_series(series.name) and not _hidden_resolved(no_data):
                self._workspace_back[series.name] = at
            if no_data.flapping is None:
                self._resolve(no_data, at, count, "good poll received", out)
            else:
                no_data.last_count = count
                _follow(no_data, at, firing=False)
                self._leave_flapping(no_data, at, out)
        bases = {span: w.push(at, count) for span, w in series.windows.items()}
        instances = self._instances
        for rule in series.rules:
            key = (rule.name, series.name)
            inst = instances.get(key)
            if rule.active is not None and not rule.active.contains(at):
                if inst is not None:
                    out.append(self._end(inst, at, count, "outside active hours"))
                continue
            if isinstance(rule, ThresholdRule):
                self._threshold(rule, series, inst, at, count, out)
            else:
                self._change(rule, series, inst, at, bases[rule.window], count, out)
        return out

    def poll_failed(
        self,
        series_name: str,
        at: datetime,
        reason: str,
        *,
        immediate: bool,
        key_rejected: bool = False,
    ) -> list[Transition]:
        """Record a failed poll; failures no retry can fix raise no-data at once.

        `key_rejected`: the API refused the key, which is the whole workspace's (see
        `_awaiting_workspace`)."""
        series = self._series.get(series_name)
        if series is None:
            return []
        series.failure = reason
        series.immediate_failure = immediate
        if key_rejected and series.key_rejected_at is None:
            series.key_rejected_at = at
        if immediate:
            return self._check_no_data(series, at, force=True)
        return []

    def poll_schedule(
        self, now: datetime, *, late: int, total: int, cause: str
    ) -> list[Transition]:
        """One poll cycle's report: `late` of `total` series were not polled on time, for
        `cause`. Raises or resolves `watchdog-behind` (see the module docstring)."""
        if total <= 0:
            return []
        share = late / total
        inst = self._instances.get((WATCHDOG_BEHIND_RULE, WATCHDOG_SERIES))
        if share <= BEHIND_SHARE:
            self._behind = None
            out: list[Transition] = []
            if inst is None:
                return out
            if inst.flapping is None:
                self._resolve(inst, now, None, f"{_percent(share)} of series late", out)
            else:
                _follow(inst, now, firing=False)
                self._leave_flapping(inst, now, out)
            return out
        if self._behind is None:
            self._behind = _Behind(now, share, cause)
        else:
            self._behind.share, self._behind.cause = share, cause
        return self._check_behind(now)

    def tick(self, now: datetime) -> list[Transition]:
        """Time passing: no-data, the watchdog's own backlog, leaving active hours, repeats."""
        out: list[Transition] = self._check_behind(now)
        for series in self._series.values():
            out.extend(self._check_no_data(series, now, force=series.immediate_failure))
        for key, inst in list(self._instances.items()):
            rule = self._config.rule_on(*key)
            rule_name = key[0]
            if rule is not None and rule.active is not None and not rule.active.contains(now):
                out.append(self._end(inst, now, inst.last_count, "outside active hours"))
                continue
            if inst.flapping is not None:
                self._leave_flapping(inst, now, out)
                continue
            if inst.state is AlertState.FIRING:
                repeat = self._config.repeat_for(rule_name)
                last = inst.last_notified or inst.since
                if inst.acked_by is None and repeat > timedelta(0) and now - last >= repeat:
                    inst.last_notified = now
                    out.append(self._transition(inst, TransitionKind.REPEAT, now, inst.last_count))
                if isinstance(rule, ThresholdRule) and inst.acked_at is None:
                    due = _time_stages_due(rule, now - inst.since)
                    self._escalate_to(rule, inst, inst.escalation | due, now, out)
        return out

    def acknowledge(self, rule: str, series: str, *, by: str, at: datetime) -> bool:
        """Mark the firing instance of `rule` on `series` acknowledged by `by` at `at`.

        True when it was marked now; False when there is no firing instance or it was
        already acknowledged (the first acknowledgement stands). Not a transition: it
        only stops the repeats and the time-based escalation stages (module docstring).
        """
        inst = self._instances.get((rule, series))
        if inst is None or inst.state is not AlertState.FIRING or inst.acked_by is not None:
            return False
        inst.acked_by, inst.acked_at = by, at
        return True

    # -- queries --------------------------------------------------------------------

    def record(self, rule: str, series: str) -> AlertRecord | None:
        inst = self._instances.get((rule, series))
        return inst.record(self.changes(rule, series)) if inst is not None else None

    def records(self) -> list[AlertRecord]:
        return [inst.record(self.changes(*key)) for key, inst in self._instances.items()]

    def changes(self, rule: str, series: str) -> tuple[datetime, ...]:
        """The firings and resolutions of `rule` on `series` counted for flapping."""
        return tuple(self._changes.get((rule, series), ()))

    def recent(self, series: str) -> tuple[int, ...]:
        found = self._series.get(series)
        return tuple(found.recent) if found is not None else ()

    # -- evaluation -----------------------------------------------------------------

    def _threshold(
        self,
        rule: ThresholdRule,
        series: _Series,
        inst: _Instance | None,
        at: datetime,
        count: int,
        out: list[Transition],
    ) -> None:
        if inst is not None and inst.flapping is not None:
            self._flapping_threshold(rule, inst, at, count, out)
            return
        if inst is None:
            if not rule.holds(count):
                return
            condition = rule.describe()
            inst = self._start(rule.name, series.name, at, count, condition)
            if not rule.for_:
                self._fire_threshold(rule, inst, at, out)
            else:
                out.append(self._transition(inst, TransitionKind.PENDING, at, count))
            return
        inst.last_count = count
        redefined, inst.redefined = inst.redefined, False
        if inst.state is AlertState.PENDING:
            if not rule.holds(count):
                out.append(self._end(inst, at, count, f"count {count} no longer matches"))
            elif at - inst.since >= rule.for_:
                self._fire_threshold(rule, inst, at, out)
        elif redefined and not rule.holds(count):
            reason = f"count {count}: does not match the redefined rule ({rule.describe()})"
            self._resolve(inst, at, count, reason, out)
        elif rule.recovered(count):
            self._resolve(inst, at, count, f"count {count}: {_recovery(rule)}", out)
        else:
            self._escalate_to(rule, inst, _level_stages(rule, inst.escalation, count), at, out)

    # -- escalation (see the module docstring) -------------------------------------------

    def _fire_threshold(
        self, rule: ThresholdRule, inst: _Instance, at: datetime, out: list[Transition]
    ) -> None:
        """Fire with the level stages already reached."""
        assert inst.last_count is not None
        inst.escalation = _level_stages(rule, 0, inst.last_count)
        inst.severity = rule.escalated_severity(inst.escalation)
        self._fire(inst, at, out, mention=_mentions(rule, inst.escalation))

    def _escalate_to(
        self,
        rule: ThresholdRule,
        inst: _Instance,
        stages: int,
        at: datetime,
        out: list[Transition],
    ) -> None:
        """Put the stages of the bit set `stages` in force: ESCALATED or DEESCALATED, or nothing."""
        added, left = stages & ~inst.escalation, inst.escalation & ~stages
        if not added and not left:
            return
        inst.escalation = stages
        inst.severity = rule.escalated_severity(stages)
        if added:
            reason = f"escalated: {_stage_names(rule, added)}"
            kind, mention = TransitionKind.ESCALATED, _mentions(rule, added)
        else:
            reason = f"count {inst.last_count}: no longer {_stage_names(rule, left)}"
            kind, mention = TransitionKind.DEESCALATED, None
        out.append(self._transition(inst, kind, at, inst.last_count, reason, mention=mention))

    # -- flapping (see the module docstring) ---------------------------------------------

    def _note_change(self, key: tuple[str, str], at: datetime) -> int:
        """Count a firing or resolution of `key`; return how many lie within the window."""
        flap = self._config.watchdog.flap
        if flap is None:
            self._changes.pop(key, None)
            return 0
        changes = self._changes.setdefault(key, deque())
        changes.append(at)
        while changes[0] < at - flap.window:
            changes.popleft()
        return len(changes)

    def _resolve(
        self, inst: _Instance, at: datetime, count: int | None, reason: str, out: list[Transition]
    ) -> None:
        """A firing alert's condition ended: it resolves, or starts flapping."""
        flap = self._config.watchdog.flap
        if flap is None or self._note_change((inst.rule, inst.series), at) < flap.changes:
            out.append(self._end(inst, at, count, reason))
            return
        self._changes.pop((inst.rule, inst.series), None)
        inst.last_count = count
        inst.flapping = Flapping(since=at, stable_since=at, firing=False)
        reason = f"{flap.changes} firings and resolutions within {_window(flap)}"
        out.append(self._transition(inst, TransitionKind.FLAPPING, at, count, reason))

    def _flapping_threshold(
        self,
        rule: ThresholdRule,
        inst: _Instance,
        at: datetime,
        count: int,
        out: list[Transition],
    ) -> None:
        """Follow the real state of a flapping alert silently; leave once it is steady."""
        assert inst.flapping is not None
        inst.last_count = count
        inst.redefined = False
        state = inst.flapping
        if state.firing:
            if rule.recovered(count):
                state = Flapping(state.since, stable_since=at, firing=False)
        elif not rule.holds(count):
            state = dataclasses.replace(state, pending_since=None)
        else:
            holding = state.pending_since or at
            if at - holding >= rule.for_:
                state = Flapping(state.since, stable_since=at, firing=True)
            else:
                state = dataclasses.replace(state, pending_since=holding)
        inst.flapping = state
        self._leave_flapping(inst, at, out)

    def _leave_flapping(self, inst: _Instance, at: datetime, out: list[Transition]) -> None:
        """Leave flapping for the real state once it has not changed for the window."""
        assert inst.flapping is not None
        state, flap = inst.flapping, self._config.watchdog.flap
        if flap is not None and at - state.stable_since < flap.window:
            return
        inst.flapping = None
        reason = f"steady for {format_duration(at - state.stable_since)}: no longer flapping"
        if state.firing:
            inst.last_notified = at
            out.append(self._transition(inst, TransitionKind.FIRING, at, inst.last_count, reason))
        else:
            out.append(self._end(inst, at, inst.last_count, reason))

    def _change(
        self,
        rule: ChangeRule,
        series: _Series,
        inst: _Instance | None,
        at: datetime,
        base: int | None,
        count: int,
        out: list[Transition],
    ) -> None:
        """`base` is the window's (None when no sample fits); see the module docstring."""
        if inst is None:
            if base is not None and rule.holds(base, count):
                condition = f"{rule.describe()}: {base} -> {count}"
                inst = self._start(rule.name, series.name, at, count, condition)
                inst.fired_change = FiredChange(base, count)
                self._fire(inst, at, out)
            return
        inst.last_count = count
        if inst.flapping is not None:
            self._flapping_change(rule, inst, at, base, count, out)
        elif rule.resolve == "recovery" and inst.fired_change is not None:
            self._change_recovery(rule, inst, inst.fired_change, at, count, out)
        elif base is not None:
            self._change_window(rule, inst, at, base, count, out)

    def _flapping_change(
        self,
        rule: ChangeRule,
        inst: _Instance,
        at: datetime,
        base: int | None,
        count: int,
        out: list[Transition],
    ) -> None:
        """Follow a flapping change alert's real state: it fires and resolves as it would."""
        assert inst.flapping is not None
        inst.redefined = False
        fired = inst.fired_change
        if not inst.flapping.firing:
            if base is not None and rule.holds(base, count):
                inst.condition = f"{rule.describe()}: {base} -> {count}"
                inst.fired_change = FiredChange(base, count)
                _follow(inst, at, firing=True)
        else:
            against = fired.base if rule.resolve == "recovery" and fired is not None else base
            if against is not None and not rule.holds(against, count):
                _follow(inst, at, firing=False)
        self._leave_flapping(inst, at, out)

    def _change_recovery(
        self,
        rule: ChangeRule,
        inst: _Instance,
        fired: FiredChange,
        at: datetime,
        count: int,
        out: list[Transition],
    ) -> None:
        """Resolve once the condition no longer holds against the base the alert fired at."""
        redefined, inst.redefined = inst.redefined, False
        if rule.holds(fired.base, count):
            if redefined:
                inst.condition = f"{rule.describe()}: {fired.base} -> {fired.count}"
            return
        reason = f"recovered to {count}, fired at {fired.base} → {fired.count}"
        if redefined:
            reason += f" (judged by the redefined rule: {rule.describe()})"
        self._resolve(inst, at, count, reason, out)

    def _change_window(
        self,
        rule: ChangeRule,
        inst: _Instance,
        at: datetime,
        base: int,
        count: int,
        out: list[Transition],
    ) -> None:
        """Resolve once the sliding comparison with the window's base no longer holds."""
        if not rule.holds(base, count):
            self._resolve(inst, at, count, f"{base} -> {count} no longer matches", out)
            return
        if inst.redefined:  # as if it had just fired: this is now what it fired against
            inst.condition = f"{rule.describe()}: {base} -> {count}"
            inst.fired_change = FiredChange(base, count)
        inst.redefined = False

    def _check_no_data(self, series: _Series, now: datetime, *, force: bool) -> list[Transition]:
        existing = self._instances.get((NO_DATA_RULE, series.name))
        if existing is not None and not _hidden_resolved(existing):
            return []
        reference = max(series.last_good or self._started_at, self._started_at)
        own_workspace = workspace_series(series.name)
        back = self._workspace_back.get(own_workspace)
        if series.name != own_workspace and back is not None:
            # After a workspace-wide outage the agents get a fresh `stale_after` to come
            # back, instead of one no-data message each for the outage just resolved.
            reference = max(reference, back)
        stale_after = self._config.no_data.stale_after
        if not force and (not series.failure or now - reference < stale_after):
            return []  # no failed poll: not polled is the watchdog's backlog, not the API's
        if series.name != own_workspace and self._workspace_outage(series):
            return []  # a workspace-wide outage: the workspace's no-data alert covers it
        if series.name != own_workspace and self._awaiting_workspace(series):
            return []  # the workspace's own poll judges its key: one page for one key
        if force:
            condition = f"no data: {series.failure}"
        else:
            condition = f"no good poll for {format_duration(now - reference)}"
            if series.failure:
                condition += f" (last error: {series.failure})"
        if existing is not None:  # flapping, really resolved until now
            existing.condition = condition
            _follow(existing, now, firing=True)
            return []
        since = series.last_good if series.last_good and not force else now
        inst = self._start(NO_DATA_RULE, series.name, since, None, condition)
        out: list[Transition] = []
        self._fire(inst, now, out)
        return out

    def _check_behind(self, now: datetime) -> list[Transition]:
        behind = self._behind
        existing = self._instances.get((WATCHDOG_BEHIND_RULE, WATCHDOG_SERIES))
        if behind is None or (existing is not None and not _hidden_resolved(existing)):
            return []
        lasted = now - behind.since
        if lasted < self._config.no_data.stale_after:
            return []
        condition = (
            f"{_percent(behind.share)} of series late for {format_duration(lasted)}: {behind.cause}"
        )
        if existing is not None:  # flapping, really resolved until now
            existing.condition = condition
            _follow(existing, now, firing=True)
            return []
        inst = self._start(WATCHDOG_BEHIND_RULE, WATCHDOG_SERIES, behind.since, None, condition)
        out: list[Transition] = []
        self._fire(inst, now, out)
        return out

    def _workspace_outage(self, series: _Series) -> bool:
        """Whether `series` went quiet as part of an outage of its whole workspace.

        True while its workspace's no-data fires, or while its workspace is failing too
        and stopped answering no earlier than this series (within a poll interval). An
        agent dead for hours is not hidden by one failed workspace poll. Another
        workspace's outage hides nothing here (each has its own key and host).
        """
        own_workspace = workspace_series(series.name)
        workspace_alert = self._instances.get((NO_DATA_RULE, own_workspace))
        if workspace_alert is not None and not _hidden_resolved(workspace_alert):
            return True
        workspace = self._series.get(own_workspace)
        if workspace is None or not workspace.failure:
            return False
        if workspace.last_good is None:
            return True
        if series.last_good is None:
            return False
        return workspace.last_good <= series.last_good + self._config.watchdog.poll_interval

    def _awaiting_workspace(self, series: _Series) -> bool:
        """Whether an agent's rejected key waits for its workspace's own poll to judge it.

        A key belongs to the whole workspace: when an agent's answer (401/403) arrives
        before the workspace's in the same cycle, the workspace's no-data is the one
        page, and the agent's alert is hidden by it. Only once the workspace answers
        well after the rejection (the key is good for the workspace, so the refusal is
        the agent's own) does the agent's no-data fire, at the next tick.
        """
        if series.key_rejected_at is None:
            return False
        workspace = self._series.get(workspace_series(series.name))
        if workspace is None:
            return False
        return workspace.last_good is None or workspace.last_good < series.key_rejected_at

    def shift(self, delta: timedelta) -> None:
        """The wall clock was set by `delta`: move every remembered instant with it.

        Durations (`for`, `stale_after`, change windows, repeats) then keep their
        length across the jump instead of collapsing or stretching by `delta`.
        """
        self._started_at += delta
        self._workspace_back = {name: at + delta for name, at in self._workspace_back.items()}
        if self._behind is not None:
            self._behind.since += delta
        for series in self._series.values():
            if series.last_good is not None:
                series.last_good += delta
            if series.key_rejected_at is not None:
                series.key_rejected_at += delta
            for window in series.windows.values():
                window.samples = deque((at + delta, count) for at, count in window.samples)
        for inst in self._instances.values():
            inst.since += delta
            if inst.last_notified is not None:
                inst.last_notified += delta
            if inst.acked_at is not None:
                inst.acked_at += delta
            if inst.flapping is not None:
                inst.flapping = _shifted(inst.flapping, delta)
        self._changes = {
            key: deque(at + delta for at in moments) for key, moments in self._changes.items()
        }

    # -- instance lifecycle ---------------------------------------------------------

    def _start(
        self, rule: str, series: str, at: datetime, count: int | None, condition: str
    ) -> _Instance:
        inst = _Instance(
            rule=rule,
            series=series,
            state=AlertState.PENDING,
            alert_id=alert_id(rule, series, at),
            since=at,
            last_count=count,
            last_notified=None,
            condition=condition,
            severity=self._severity(rule),
        )
        self._instances[(rule, series)] = inst
        return inst

    def _fire(
        self, inst: _Instance, at: datetime, out: list[Transition], mention: str | None = None
    ) -> None:
        """Fire, and count the firing for flapping."""
        self._note_change((inst.rule, inst.series), at)
        inst.state = AlertState.FIRING
        inst.last_notified = at
        out.append(
            self._transition(inst, TransitionKind.FIRING, at, inst.last_count, mention=mention)
        )

    def _end(self, inst: _Instance, at: datetime, count: int | None, reason: str) -> Transition:
        del self._instances[(inst.rule, inst.series)]
        kind = (
            TransitionKind.RESOLVED if inst.state is AlertState.FIRING else TransitionKind.CANCELLED
        )
        inst.state = AlertState.INACTIVE
        inst.last_count = count
        return self._transition(inst, kind, at, count, reason)

    def _transition(
        self,
        inst: _Instance,
        kind: TransitionKind,
        at: datetime,
        count: int | None,
        reason: str = "",
        *,
        mention: str | None = None,
    ) -> Transition:
        return Transition(
            alert_id=inst.alert_id,
            kind=kind,
            rule=inst.rule,
            series=inst.series,
            severity=inst.severity,
            at=at,
            since=inst.since,
            count=count,
            condition=inst.condition,
            reason=reason,
            recent=self.recent(inst.series) if inst.rule != WATCHDOG_BEHIND_RULE else (),
            mention=mention,
            acked_by=inst.acked_by,
            acked_at=inst.acked_at,
        )

    def _severity(self, rule_name: str) -> Severity:
        rule = self._config.rule(rule_name)
        return rule.severity if rule is not None else self._config.no_data.severity


def _redefine(inst: _Instance, old: _Rule | None, new: _Rule) -> None:
    """Carry an alert over to its rule's new definition (same name, same kind)."""
    inst.severity = new.severity
    if isinstance(new, ThresholdRule):
        _carry_escalation(inst, old, new)
    if old is not None and old.describe() != new.describe():
        inst.redefined = True
        if isinstance(new, ThresholdRule):
            inst.condition = new.describe()


def _carry_escalation(inst: _Instance, old: _Rule | None, new: ThresholdRule) -> None:
    """Keep the stages in force if `escalate` is unchanged; else start afresh."""
    if isinstance(old, ThresholdRule) and old.escalate == new.escalate:
        inst.severity = new.escalated_severity(inst.escalation)
    else:
        inst.escalation = 0


def _level_stages(rule: ThresholdRule, stages: int, count: int) -> int:
    """The bit set `stages` with the level stages entered or left at `count`."""
    for i, stage in enumerate(rule.escalate):
        bit = 1 << i
        if stage.after is not None:
            continue
        if stages & bit and stage.left(count):
            stages &= ~bit
        elif not stages & bit and stage.reached(count):
            stages |= bit
    return stages


def _time_stages_due(rule: ThresholdRule, held: timedelta) -> int:
    """The bit set of time stages due for an alert that has held for `held`."""
    due = 0
    for i, stage in enumerate(rule.escalate):
        if stage.after is not None and held >= stage.after:
            due |= 1 << i
    return due


def _stages(rule: ThresholdRule, stages: int) -> list[EscalationStage]:
    return [stage for i, stage in enumerate(rule.escalate) if stages >> i & 1]


def _stage_names(rule: ThresholdRule, stages: int) -> str:
    return ", ".join(stage.describe() for stage in _stages(rule, stages))


def _mentions(rule: ThresholdRule, stages: int) -> str | None:
    mentions = [stage.mention for stage in _stages(rule, stages) if stage.mention]
    return " ".join(dict.fromkeys(mentions)) or None


def _hidden_resolved(inst: _Instance) -> bool:
    """Whether the alert is flapping and its real state is resolved."""
    return inst.flapping is not None and not inst.flapping.firing


def _follow(inst: _Instance, at: datetime, *, firing: bool) -> None:
    """Set a flapping alert's hidden real state; a change of it restarts the steady time."""
    state = inst.flapping
    assert state is not None
    if state.firing != firing:
        inst.flapping = Flapping(state.since, stable_since=at, firing=firing)


def _window(flap: FlapSettings) -> str:
    return format_duration(flap.window)


def _shifted(state: Flapping, delta: timedelta) -> Flapping:
    pending = state.pending_since
    return Flapping(
        state.since + delta,
        state.stable_since + delta,
        state.firing,
        None if pending is None else pending + delta,
    )


def _percent(share: float) -> str:
    return f"{round(share * 100)} %"


def _recovery(rule: ThresholdRule) -> str:
    if rule.above is not None:
        if rule.recover_below is not None:
            return f"below {rule.recover_below}"
        return f"at or below {rule.above}"
    if rule.recover_above is not None:
        return f"above {rule.recover_above}"
    return f"at or above {rule.below}"
