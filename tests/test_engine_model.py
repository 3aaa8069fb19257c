"""The engine against a plain reference model of the rule semantics, over random series.

The reference below is written from the product spec, not from the engine: it keeps the
full sample history and every poll outcome of every series and answers each question with
a straightforward loop (the base of a change window is found by scanning every sample so
far, an active window is a list of local wall-clock intervals, percentages are exact
fractions, staleness and workspace outages are read off the list of poll outcomes,
escalation stages in force are recomputed as a set, flapping counts a plain list of every
firing and resolution, a firing change alert keeps the base it fired against).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from watchdog.engine import Engine
from watchdog.model import NO_DATA_RULE, WORKSPACE, Sample, TransitionKind
from watchdog.rules import parse_config

AGENT = "a"
SERIES = (WORKSPACE, AGENT)
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
COMPARED = {
    TransitionKind.PENDING,
    TransitionKind.FIRING,
    TransitionKind.RESOLVED,
    TransitionKind.CANCELLED,
    TransitionKind.ESCALATED,
    TransitionKind.DEESCALATED,
    TransitionKind.FLAPPING,
}
DEFAULT_FLAP = (6, 3600)
"""The documented default of `[watchdog] flap`: 6 firings and resolutions within an hour."""

# Moments where local clocks jump, with the zone that jumps there.
DST_CHANGES = [
    (datetime(2026, 3, 29, 1, 0, tzinfo=UTC), "Europe/Berlin"),
    (datetime(2026, 10, 25, 1, 0, tzinfo=UTC), "Europe/Berlin"),
    (datetime(2026, 3, 8, 7, 0, tzinfo=UTC), "America/New_York"),
    (datetime(2026, 11, 1, 6, 0, tzinfo=UTC), "America/New_York"),
]
ZONES = ("Europe/Berlin", "America/New_York", "UTC")


# -- the reference model ----------------------------------------------------------------


@dataclass(frozen=True)
class Active:
    days: frozenset[int]  # 0 = Monday
    start: int  # minutes after local midnight
    end: int  # minutes after local midnight, 1440 = midnight; end < start = overnight
    tz: str

    def contains(self, at: datetime) -> bool:
        """Whether `at` is inside one of the window's local wall-clock intervals.

        Each listed day d contributes the interval [d start, d end) of wall-clock time,
        ending on the next day when the window is overnight. Local times that do not
        exist (spring forward) are never reached; repeated ones (fall back) count twice.
        """
        local = at.astimezone(ZoneInfo(self.tz)).replace(tzinfo=None)
        for back in (0, 1):
            day = local.date() - timedelta(days=back)
            if day.weekday() not in self.days:
                continue
            midnight = datetime(day.year, day.month, day.day)
            opens = midnight + timedelta(minutes=self.start)
            closes = midnight + timedelta(minutes=self.end)
            if self.end < self.start:
                closes += timedelta(days=1)
            if opens <= local < closes:
                return True
        return False


@dataclass(frozen=True)
class Stage:
    """One `escalate` stage: a level (`above`/`below` as the rule's side) or `after`."""

    level: int | None
    recover: int | None
    after_seconds: int | None
    critical: bool  # severity = "critical" (the rules are "warning")
    mention: str | None

    def reached(self, rule: Threshold, count: int) -> bool:
        assert self.level is not None
        return count > self.level if rule.above is not None else count < self.level

    def left(self, rule: Threshold, count: int) -> bool:
        assert self.level is not None
        if rule.above is not None:
            return count < self.recover if self.recover is not None else count <= self.level
        return count > self.recover if self.recover is not None else count >= self.level


@dataclass(frozen=True)
class Threshold:
    name: str
    scope: tuple[str, ...]
    above: int | None
    below: int | None
    recover: int | None  # recover_below for above, recover_above for below
    for_seconds: int
    active: Active | None
    escalate: tuple[Stage, ...] = ()

    def holds(self, count: int) -> bool:
        if self.above is not None:
            return count > self.above
        assert self.below is not None
        return count < self.below

    def recovered(self, count: int) -> bool:
        if self.above is not None:
            return count < self.recover if self.recover is not None else count <= self.above
        assert self.below is not None
        return count > self.recover if self.recover is not None else count >= self.below


@dataclass(frozen=True)
class Change:
    name: str
    scope: tuple[str, ...]
    window_seconds: int
    condition: str  # drop | rise | drop_pct | rise_pct
    amount: str  # as written in the file, e.g. "5" or "12.5"
    min_base: int | None
    active: Active | None
    resolve: str | None = None  # "recovery" | "window"; None = not written (recovery)

    def holds(self, old: int, new: int) -> bool:
        amount = Fraction(self.amount)
        if self.condition == "drop":
            return old - new >= amount
        if self.condition == "rise":
            return new - old >= amount
        min_base = 1 if self.min_base is None else self.min_base
        if old < min_base or old == 0:
            return False
        moved = old - new if self.condition == "drop_pct" else new - old
        return Fraction(moved * 100, old) >= amount


Rule = Threshold | Change


@dataclass(frozen=True)
class Scenario:
    start: datetime
    stale_after: int
    rules: tuple[Rule, ...]
    # ("sample", seconds, series, count) | ("tick", seconds) | ("fail", seconds, series, how)
    # | ("ack", seconds, rule, series); `how`: False (retryable), True (immediate), "key"
    events: tuple[tuple[object, ...], ...]
    flap: tuple[int, int] | str | None = "default"  # (changes, window seconds), off, default


@dataclass
class Flap:
    """A flapping alert's hidden real state."""

    stable_since: datetime
    firing: bool = False
    holding_since: datetime | None = None


@dataclass
class Alert:
    phase: str  # pending | firing
    since: datetime
    stages: frozenset[int] = frozenset()
    acked: bool = False
    flap: Flap | None = None
    severity: str = "warning"


Seen = tuple[str, str, str, datetime, str]
"""(kind, rule, series, at, severity) of one transition."""


def expand(scope: tuple[str, ...]) -> list[str]:
    names: list[str] = []
    for name in scope:
        for one in [AGENT] if name == "*" else [name]:
            if one not in names:
                names.append(one)
    return names


def reference(scenario: Scenario) -> list[Seen]:
    """Every transition the spec calls for (but repeats), in a plain loop.

    No-data follows the README ("fires when a series' own polls failed: at least one
    failed poll and no good one for `stale_after`, or at once when the key is rejected
    ...; a series the watchdog did not poll does not page by itself; while the workspace
    series itself is failing, agents don't add one alert each; it resolves on the next
    good poll") and the engine's module docstring (after the workspace recovers, agents
    get a fresh `stale_after`: one message for one outage). Every answer is recomputed
    from the full list of poll outcomes.

    Where the spec is silent, this model reads it so (and the engine agrees, over
    thousands of random scenarios):
    - "Agents don't add one alert each": once the workspace's no-data alert fires, no agent
      raises its own; that alert already says no agent's data can be had.
    - Before it fires, "the workspace is failing" means its latest poll failed, and that
      holds back only the agents that went quiet *with* it: those that last answered no
      earlier than the workspace did (polls at most one poll interval apart count as one
      moment, since a cycle spreads its polls over the interval), or any agent while the
      workspace has never answered. An agent quiet since before the workspace last
      answered, or never heard from while the workspace was, is a problem of its own: one
      failed workspace poll does not hide it.
    - "A fresh `stale_after`" counts from the moment the workspace's no-data resolved.
    - A rejected key (a "key" failure) is the workspace's: an agent whose key was refused
      raises no no-data of its own until the workspace has answered well after that
      refusal (the key is then good for the workspace, the refusal the agent's own), so
      a key refused on every series pages once, whichever series heard it first.

    Escalation and flapping follow the engine's module docstring: the stages in force
    are the set of level stages the count is beyond (with their hysteresis) plus the
    time stages due while unacknowledged; flapping counts every firing and resolution by
    the condition at most `window` old since the alert last entered flapping, of every
    alert (threshold, change and no-data). While flapping, the real state fires and
    resolves as the alert would: a change alert against the base it (really) last fired
    at, or the window's; no-data by the failed polls and at a good one. The workspace's
    no-data covers the agents, and its recovery gives them a fresh `stale_after`, by its
    real state.

    Change alerts follow the README: one that resolves on recovery (the default) is judged
    at every sample of its series against the base it fired against, whether or not the
    window has a fitting base by then; with `resolve = "window"` it is judged against the
    window's base, and not at all while there is none.
    """
    history: dict[str, list[tuple[datetime, int]]] = {s: [] for s in SERIES}
    polls: dict[str, list[tuple[datetime, str]]] = {s: [] for s in SERIES}  # good|failed|rejected
    state: dict[tuple[str, str], Alert] = {}
    fired_against: dict[tuple[str, str], int] = {}  # a firing change alert's base
    by_name = {rule.name: rule for rule in scenario.rules}
    out: list[Seen] = []
    stale_after = timedelta(seconds=scenario.stale_after)
    one_moment = timedelta(seconds=1)  # the poll_interval of the generated config
    flap = DEFAULT_FLAP if scenario.flap == "default" else scenario.flap
    assert not isinstance(flap, str)
    changes: dict[tuple[str, str], list[datetime]] = {}  # every counted firing and resolution
    afresh: dict[tuple[str, str], datetime] = {}  # when each rule x series last started flapping
    workspace_recoveries: list[datetime] = []  # when the workspace's no-data really resolved
    key_refused: dict[str, datetime] = {}  # an agent's first refused key since it answered

    def emit(kind: str, key: tuple[str, str], at: datetime) -> None:
        out.append((kind, key[0], key[1], at, state[key].severity))

    def end(key: tuple[str, str], at: datetime) -> None:
        emit("resolved" if state[key].phase == "firing" else "cancelled", key, at)
        del state[key]

    def really_firing(key: tuple[str, str]) -> bool:
        """Whether the alert is firing, flapping or not: a flapping one by its real state."""
        alert = state.get(key)
        return alert is not None and (alert.flap is None or alert.flap.firing)

    def set_real_state(key: tuple[str, str], at: datetime, firing: bool) -> None:
        flapping = state[key].flap
        assert flapping is not None
        if flapping.firing != firing:
            flapping.firing, flapping.stable_since = firing, at

    def severity(rule: Threshold, stages: frozenset[int]) -> str:
        return "critical" if any(rule.escalate[i].critical for i in stages) else "warning"

    def put_in_force(
        rule: Threshold, key: tuple[str, str], at: datetime, stages: frozenset[int]
    ) -> None:
        alert = state[key]
        before, alert.stages = alert.stages, stages
        alert.severity = severity(rule, stages)
        if stages - before:
            emit("escalated", key, at)
        elif before - stages:
            emit("deescalated", key, at)

    def levels_in_force(rule: Threshold, before: frozenset[int], count: int) -> frozenset[int]:
        kept = {i for i in before if rule.escalate[i].after_seconds is not None}
        for i, stage in enumerate(rule.escalate):
            if stage.level is None:
                continue
            if (i in before and not stage.left(rule, count)) or (
                i not in before and stage.reached(rule, count)
            ):
                kept.add(i)
        return frozenset(kept)

    def fire(
        rule: Threshold, key: tuple[str, str], at: datetime, since: datetime, count: int
    ) -> None:
        stages = levels_in_force(rule, frozenset(), count)
        state[key] = Alert("firing", since, stages, severity=severity(rule, stages))
        changes.setdefault(key, []).append(at)
        emit("firing", key, at)

    def counted(key: tuple[str, str], at: datetime) -> int:
        assert flap is not None
        window = timedelta(seconds=flap[1])
        started = afresh.get(key)
        return sum(
            1 for c in changes.get(key, []) if c >= at - window and (started is None or c > started)
        )

    def resolve(key: tuple[str, str], at: datetime) -> None:
        changes.setdefault(key, []).append(at)
        if flap is not None and counted(key, at) >= flap[0]:
            afresh[key] = at
            state[key].flap = Flap(stable_since=at)
            emit("flapping", key, at)
        else:
            end(key, at)

    def leave_flapping_if_steady(key: tuple[str, str], at: datetime) -> None:
        flapping = state[key].flap
        assert flapping is not None
        if flap is not None and at - flapping.stable_since < timedelta(seconds=flap[1]):
            return
        state[key].flap = None
        if flapping.firing:
            emit("firing", key, at)
        else:
            end(key, at)

    def follow_flapping(rule: Threshold, key: tuple[str, str], at: datetime, count: int) -> None:
        flapping = state[key].flap
        assert flapping is not None
        if flapping.firing and rule.recovered(count):
            flapping.firing, flapping.stable_since = False, at
        elif not flapping.firing:
            if not rule.holds(count):
                flapping.holding_since = None
            else:
                flapping.holding_since = flapping.holding_since or at
                if at - flapping.holding_since >= timedelta(seconds=rule.for_seconds):
                    flapping.firing, flapping.stable_since = True, at
                    flapping.holding_since = None
        leave_flapping_if_steady(key, at)

    def latest_poll(series: str) -> str | None:
        return polls[series][-1][1] if polls[series] else None

    def last_answer(series: str) -> datetime | None:
        answers = [at for at, outcome in polls[series] if outcome == "good"]
        return answers[-1] if answers else None

    def quiet_since(series: str) -> datetime:
        """Where `stale_after` counts from: the last good poll, the start, a recovery."""
        moments = [scenario.start]
        answered = last_answer(series)
        if answered is not None:
            moments.append(answered)
        if series != WORKSPACE:
            moments += workspace_recoveries
        return max(moments)

    def in_workspace_outage(agent: str) -> bool:
        if really_firing((NO_DATA_RULE, WORKSPACE)):
            return True
        if latest_poll(WORKSPACE) not in ("failed", "rejected"):
            return False
        workspace_answered, agent_answered = last_answer(WORKSPACE), last_answer(agent)
        if workspace_answered is None:
            return True
        return agent_answered is not None and agent_answered >= workspace_answered - one_moment

    def failed_since_answer(series: str) -> bool:
        """Whether a poll of `series` failed after its last good one (the API's fault)."""
        return latest_poll(series) in ("failed", "rejected")

    def no_data(series: str, at: datetime) -> None:
        key = (NO_DATA_RULE, series)
        if key in state and really_firing(key):
            return
        rejected = latest_poll(series) == "rejected"
        if not rejected and (
            not failed_since_answer(series) or at - quiet_since(series) < stale_after
        ):
            return
        if series != WORKSPACE and in_workspace_outage(series):
            return
        refused = key_refused.get(series)
        answered = last_answer(WORKSPACE)
        if series != WORKSPACE and refused is not None and (answered is None or answered < refused):
            return
        if key in state:  # flapping, and really resolved until now
            set_real_state(key, at, True)
            return
        state[key] = Alert("firing", at, severity="critical")
        changes.setdefault(key, []).append(at)
        emit("firing", key, at)

    for event in scenario.events:
        at = scenario.start + timedelta(seconds=event[1])  # type: ignore[arg-type]
        if event[0] == "tick":
            for series in SERIES:
                no_data(series, at)
            for key in list(state):
                rule = by_name.get(key[0])
                if rule is not None and rule.active is not None and not rule.active.contains(at):
                    end(key, at)
                elif state[key].flap is not None:
                    leave_flapping_if_steady(key, at)
                elif isinstance(rule, Threshold) and state[key].phase == "firing":
                    if state[key].acked:
                        continue
                    held = at - state[key].since
                    due = {
                        i
                        for i, stage in enumerate(rule.escalate)
                        if stage.after_seconds is not None
                        and held >= timedelta(seconds=stage.after_seconds)
                    }
                    put_in_force(rule, key, at, state[key].stages | due)
            continue
        if event[0] == "ack":
            key = (str(event[2]), str(event[3]))
            if key in state and state[key].phase == "firing":
                state[key].acked = True
            continue
        if event[0] == "fail":
            series, is_immediate = event[2], event[3]
            assert isinstance(series, str)
            polls[series].append((at, "rejected" if is_immediate else "failed"))
            if is_immediate == "key":
                key_refused.setdefault(series, at)
            if is_immediate:
                no_data(series, at)
            continue
        series, count = event[2], event[3]
        assert isinstance(series, str)
        assert isinstance(count, int)
        history[series].append((at, count))
        polls[series].append((at, "good"))
        key_refused.pop(series, None)
        no_data_key = (NO_DATA_RULE, series)
        if series == WORKSPACE and really_firing(no_data_key):
            workspace_recoveries.append(at)
        if no_data_key in state and state[no_data_key].flap is not None:
            set_real_state(no_data_key, at, False)
            leave_flapping_if_steady(no_data_key, at)
        elif no_data_key in state:
            resolve(no_data_key, at)
        for rule in scenario.rules:
            if series not in expand(rule.scope):
                continue
            key = (rule.name, series)
            if rule.active is not None and not rule.active.contains(at):
                if key in state:
                    end(key, at)
                continue
            if isinstance(rule, Threshold):
                if key not in state:
                    if rule.holds(count) and rule.for_seconds == 0:
                        fire(rule, key, at, at, count)
                    elif rule.holds(count):
                        state[key] = Alert("pending", at)
                        emit("pending", key, at)
                elif state[key].flap is not None:
                    follow_flapping(rule, key, at, count)
                elif state[key].phase == "pending":
                    since = state[key].since
                    if not rule.holds(count):
                        end(key, at)
                    elif at - since >= timedelta(seconds=rule.for_seconds):
                        fire(rule, key, at, since, count)
                elif rule.recovered(count):
                    resolve(key, at)
                else:
                    put_in_force(rule, key, at, levels_in_force(rule, state[key].stages, count))
                continue
            base, base_at = None, at
            window = timedelta(seconds=rule.window_seconds)
            for seen, old in history[series]:
                if seen <= at - window:
                    base, base_at = old, seen  # in time order: the last one is the latest
            if at - base_at > 2 * window:  # a base from before a gap
                base = None
            by_recovery = rule.resolve != "window"
            flapping = state[key].flap if key in state else None
            if flapping is not None:
                if not flapping.firing:
                    if base is not None and rule.holds(base, count):
                        set_real_state(key, at, True)
                        fired_against[key] = base
                else:
                    against = fired_against[key] if by_recovery else base
                    if against is not None and not rule.holds(against, count):
                        set_real_state(key, at, False)
                leave_flapping_if_steady(key, at)
            elif key in state and by_recovery:
                if not rule.holds(fired_against[key], count):
                    resolve(key, at)
            elif base is None:
                continue
            elif key not in state and rule.holds(base, count):
                state[key] = Alert("firing", at)
                changes.setdefault(key, []).append(at)
                emit("firing", key, at)
                fired_against[key] = base
            elif key in state and not rule.holds(base, count):
                resolve(key, at)
    return out


# -- running the engine ---------------------------------------------------------------------


def clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def active_toml(active: Active) -> str:
    days = ",".join(DAY_NAMES[d] for d in sorted(active.days))
    hours = f"{clock(active.start)}-{clock(active.end)}"
    return f'active = {{ days = "{days}", hours = "{hours}", tz = "{active.tz}" }}\n'


def scope_toml(scope: tuple[str, ...], workspaces: tuple[str, ...] = ()) -> str:
    """`workspace` and `*` mean the same words with `[[workspaces]]` (each workspace's);
    the agent is named in every workspace."""
    words = [f"{ws}/{name}" for name in scope for ws in workspaces if name == AGENT] + [
        name for name in scope if not workspaces or name != AGENT
    ]
    return "scope = [" + ", ".join(f'"{s}"' for s in words) + "]\n"


def rules_toml(scenario: Scenario, workspaces: tuple[str, ...] = ()) -> str:
    """The scenario's rules file; with `workspaces`, each of them has the agent."""
    text = (
        f'[watchdog]\npoll_interval = "1s"\nstale_after = "{scenario.stale_after}s"\n'
        f'repeat = "0s"\n{flap_toml(scenario.flap)}\n'
    )
    if not workspaces:
        text += f'[[agents]]\nname = "{AGENT}"\nid = "agent_a"\n'
    for ws in workspaces:
        text += f'[[workspaces]]\nname = "{ws}"\n'
        text += f'[[workspaces.agents]]\nname = "{AGENT}"\nid = "agent_{ws}"\n'
    for rule in scenario.rules:
        text += f'\n[[rules]]\nname = "{rule.name}"\n' + scope_toml(rule.scope, workspaces)
        if isinstance(rule, Threshold):
            text += 'kind = "threshold"\n'
            if rule.above is not None:
                text += f"above = {rule.above}\n"
                if rule.recover is not None:
                    text += f"recover_below = {rule.recover}\n"
            else:
                text += f"below = {rule.below}\n"
                if rule.recover is not None:
                    text += f"recover_above = {rule.recover}\n"
            text += f'for = "{rule.for_seconds}s"\n'
            if rule.escalate:
                side = "above" if rule.above is not None else "below"
                text += f"escalate = [{', '.join(stage_toml(side, s) for s in rule.escalate)}]\n"
        else:
            text += f'kind = "change"\nwindow = "{rule.window_seconds}s"\n'
            text += f"{rule.condition} = {rule.amount}\n"
            if rule.min_base is not None:
                text += f"min_base = {rule.min_base}\n"
            if rule.resolve is not None:
                text += f'resolve = "{rule.resolve}"\n'
        if rule.active is not None:
            text += active_toml(rule.active)
    return text


def flap_toml(flap: tuple[int, int] | str | None) -> str:
    if flap == "default":
        return ""
    if flap is None:
        return "flap = false\n"
    assert not isinstance(flap, str)
    return f'flap = {{ changes = {flap[0]}, window = "{flap[1]}s" }}\n'


def stage_toml(side: str, stage: Stage) -> str:
    keys = []
    if stage.level is not None:
        keys.append(f"{side} = {stage.level}")
        if stage.recover is not None:
            keys.append(f"recover_{'below' if side == 'above' else 'above'} = {stage.recover}")
    else:
        keys.append(f'after = "{stage.after_seconds}s"')
    if stage.critical:
        keys.append('severity = "critical"')
    if stage.mention is not None:
        keys.append(f'mention = "{stage.mention}"')
    return "{ " + ", ".join(keys) + " }"


def engine_transitions(scenario: Scenario, workspaces: tuple[str, ...] = ()) -> list[Seen]:
    config = parse_config(rules_toml(scenario, workspaces), source="model.toml")
    engine = Engine(config, started_at=scenario.start)
    out = []
    for event in scenario.events:
        at = scenario.start + timedelta(seconds=event[1])  # type: ignore[arg-type]
        if event[0] == "tick":
            out += engine.tick(at)
        elif event[0] == "ack":
            engine.acknowledge(str(event[2]), str(event[3]), by="model", at=at)
        elif event[0] == "fail":
            reason = "rejected key" if event[3] else "server error"
            out += engine.poll_failed(
                event[2],  # type: ignore[arg-type]
                at,
                reason,
                immediate=bool(event[3]),
                key_rejected=event[3] == "key",
            )
        else:
            out += engine.observe(Sample(event[2], at, event[3]))  # type: ignore[arg-type]
    return [
        (t.kind.value, t.rule, t.series, t.at, t.severity.value) for t in out if t.kind in COMPARED
    ]


# -- random scenarios --------------------------------------------------------------------------

scopes = st.sampled_from([(WORKSPACE,), (AGENT,), ("*",), (WORKSPACE, "*"), (AGENT, AGENT)])
failures = st.sampled_from([False, True, "key"])
"""A failed poll: one a retry may fix, one it cannot (an unknown agent), a refused key."""
# Local hours around the DST jumps (01:00-04:00) are the interesting ones.
minutes = st.one_of(
    st.integers(0, 5 * 4).map(lambda q: q * 15),
    st.integers(0, 96).map(lambda q: q * 15),
)


@st.composite
def actives(draw: st.DrawFn, zone: str) -> Active | None:
    if draw(st.booleans()):
        return None
    start = draw(minutes.filter(lambda m: m < 1440))
    end = draw(minutes.filter(lambda m: m != start))
    days = draw(
        st.sampled_from(
            [frozenset(range(7)), frozenset({6}), frozenset({5, 6}), frozenset({4, 5, 6, 0})]
        )
        | st.frozensets(st.integers(0, 6), min_size=1)
    )
    tz = draw(st.sampled_from([zone, zone, *ZONES]))
    return Active(days=days, start=start, end=end, tz=tz)


@st.composite
def stages(draw: st.DrawFn, above: bool, bound: int, i: int) -> Stage:
    critical = draw(st.booleans())
    mention = None if critical and draw(st.booleans()) else f"<@m{i}>"
    if draw(st.integers(0, 3)) == 0:
        after = draw(st.sampled_from([30, 60, 300]) | st.integers(1, 900))
        return Stage(None, None, after, critical, mention)
    if above:
        level = bound + draw(st.integers(1, 15))
        recover = draw(st.none() | st.integers(max(0, level - 10), level + 1))
    else:
        level = draw(st.integers(0, bound - 1))
        recover = draw(st.none() | st.integers(max(0, level - 1), level + 10))
    return Stage(level, recover, None, critical, mention)


@st.composite
def thresholds(draw: st.DrawFn, name: str, zone: str) -> Threshold:
    bound = draw(st.integers(0, 60))
    recover = draw(st.none() | st.integers(0, 70))
    for_seconds = draw(st.sampled_from([0, 0, 15, 60, 90, 300]) | st.integers(0, 300))
    above = draw(st.booleans())
    if not above:
        bound = max(bound, 1)
    escalate = tuple(draw(stages(above, bound, i)) for i in range(draw(st.integers(0, 3))))
    if above:
        if recover is not None:
            recover = min(recover, bound)
        return Threshold(
            name, draw(scopes), bound, None, recover, for_seconds, draw(actives(zone)), escalate
        )
    if recover is not None:
        recover = max(recover, bound)
    return Threshold(
        name, draw(scopes), None, bound, recover, for_seconds, draw(actives(zone)), escalate
    )


@st.composite
def changes(draw: st.DrawFn, name: str, zone: str) -> Change:
    condition = draw(st.sampled_from(["drop", "rise", "drop_pct", "rise_pct"]))
    if condition in ("drop", "rise"):
        amount = str(draw(st.integers(1, 30)))
    else:
        top = 1000 if condition == "drop_pct" else 3000
        tenths = draw(st.integers(1, top) | st.sampled_from([250, 500, 1000, 125]))
        amount = str(Fraction(tenths, 10)) if tenths % 10 == 0 else f"{tenths / 10:.1f}"
    min_base = draw(st.none() | st.integers(0, 20))
    window = draw(st.integers(1, 30).map(lambda m: m * 60) | st.integers(60, 1800))
    resolve = draw(st.sampled_from([None, "recovery", "window"]))
    active = draw(actives(zone))
    return Change(name, draw(scopes), window, condition, amount, min_base, active, resolve)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    moment, zone = draw(st.sampled_from(DST_CHANGES))
    start = moment + timedelta(seconds=draw(st.integers(-3 * 3600, 3600)))
    rules: list[Rule] = []
    for i in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from([thresholds, changes]))
        rules.append(draw(kind(f"rule{i}", zone)))
    events: list[tuple[object, ...]] = []
    seconds = draw(st.integers(0, 60))
    counts = dict.fromkeys(SERIES, draw(st.integers(0, 60)))
    for _ in range(draw(st.integers(1, 150))):
        occasional_outage = draw(st.integers(0, 19)) == 0
        gap = draw(st.integers(300, 2400) if occasional_outage else st.integers(1, 120))
        if gap >= 2 and draw(st.integers(0, 3)) == 0:
            events.append(("tick", seconds + draw(st.integers(1, gap - 1))))
        seconds += gap
        series = draw(st.sampled_from([WORKSPACE, WORKSPACE, AGENT]))
        if draw(st.integers(0, 24)) == 0:
            acked = draw(st.sampled_from(rules))
            events.append(("ack", seconds, acked.name, series))
        roll = draw(st.integers(0, 19))
        if roll == 0:
            events.append(("fail", seconds, series, draw(failures)))
            continue
        if roll < 3:
            counts[series] = draw(st.integers(0, 60))
        else:
            counts[series] = min(60, max(0, counts[series] + draw(st.integers(-6, 6))))
        events.append(("sample", seconds, series, counts[series]))
    events.append(("tick", seconds + 1))
    stale_after = draw(st.sampled_from([60, 120, 600]) | st.integers(30, 1800))
    flap = draw(
        st.sampled_from(["default", None])
        | st.tuples(st.integers(2, 6), st.sampled_from([60, 300, 1800]) | st.integers(1, 3600))
    )
    return Scenario(start, stale_after, tuple(rules), tuple(events), flap)


def ordered(transitions: list[Seen]) -> list[tuple[str, str, str, datetime]]:
    """Order within one instant is not part of the semantics; order across instants is.

    Severities are left out: see `test_engine_matches_reference_model` for those."""
    return sorted((t[:4] for t in transitions), key=lambda t: (t[3], t[1], t[2], t[0]))


def with_severity(transitions: list[Seen]) -> list[Seen]:
    return sorted(transitions, key=lambda t: (t[3], t[1], t[2], t[0]))


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenarios())
def test_engine_matches_reference_model(scenario: Scenario) -> None:
    """Over random series, rules, DST-crossing active windows, escalation stages, acks and
    flapping settings, engine == reference, severities included."""
    expected = with_severity(reference(scenario))
    assert with_severity(engine_transitions(scenario)) == expected, rules_toml(scenario)


@st.composite
def bouncing_scenarios(draw: st.DrawFn) -> Scenario:
    """Counts hovering around a threshold, and polls failing now and then: many firings
    and resolutions of threshold, change and no-data alerts, so flapping and escalation
    levels are crossed often (the general scenarios rarely flap)."""
    rules = tuple(
        draw(
            st.sampled_from([thresholds, thresholds, changes]).flatmap(
                lambda kind, i=i: kind(f"rule{i}", "UTC").filter(lambda r: r.active is None)
            )
        )
        for i in range(draw(st.integers(1, 2)))
    )
    middle = draw(st.integers(1, 40))
    events: list[tuple[object, ...]] = []
    seconds = 0
    for _ in range(draw(st.integers(1, 120))):
        seconds += draw(st.integers(1, 300))
        series = draw(st.sampled_from([WORKSPACE, AGENT]))
        roll = draw(st.integers(0, 9))
        if roll == 0:
            events.append(("tick", seconds))
        elif roll == 1:
            events.append(("ack", seconds, draw(st.sampled_from(rules)).name, series))
        elif roll == 2:
            events.append(("fail", seconds, series, draw(failures)))
        else:
            count = max(0, middle + draw(st.integers(-20, 20)))
            events.append(("sample", seconds, series, count))
    events.append(("tick", seconds + draw(st.integers(1, 4000))))
    flap = draw(
        st.tuples(st.integers(2, 6), st.sampled_from([300, 1800]) | st.integers(1, 3600))
        | st.sampled_from(["default", None])
    )
    start = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    stale_after = draw(st.sampled_from([60, 300, 600]))
    return Scenario(start, stale_after, rules, tuple(events), flap)


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(bouncing_scenarios())
def test_engine_matches_reference_model_around_a_threshold(scenario: Scenario) -> None:
    """Counts hovering at a threshold, failing polls (flapping of every alert kind,
    escalation, acks): engine == reference."""
    expected = with_severity(reference(scenario))
    assert with_severity(engine_transitions(scenario)) == expected, rules_toml(scenario)


def test_reference_active_window_agrees_on_known_instants() -> None:
    """The reference's wall-clock windows give the documented answers around DST."""
    berlin = Active(frozenset({6}), 2 * 60, 3 * 60, "Europe/Berlin")
    assert not berlin.contains(datetime(2026, 3, 29, 0, 59, tzinfo=UTC))  # 01:59 CET
    assert not berlin.contains(datetime(2026, 3, 29, 1, 0, tzinfo=UTC))  # 03:00 CEST
    assert berlin.contains(datetime(2026, 10, 25, 0, 30, tzinfo=UTC))  # 02:30 CEST
    assert berlin.contains(datetime(2026, 10, 25, 1, 30, tzinfo=UTC))  # 02:30 CET
    overnight = Active(frozenset({5}), 22 * 60, 6 * 60, "UTC")
    assert overnight.contains(datetime(2026, 1, 11, 5, 59, tzinfo=UTC))  # Sunday morning
    assert not overnight.contains(datetime(2026, 1, 10, 5, 59, tzinfo=UTC))  # Saturday morning
    midnight = Active(frozenset(range(7)), 0, 1440, "UTC")
    assert midnight.contains(datetime.combine(date(2026, 1, 5), datetime.min.time(), UTC))


def test_reference_matches_engine_on_a_hand_written_scenario() -> None:
    """A fixed scenario with every rule kind gives the same transitions in both."""
    rules = (
        Threshold("high", (WORKSPACE,), 10, None, 5, 30, None),
        Change("drop", ("*",), 60, "drop_pct", "50", 4, None, "window"),
    )
    events = (
        ("sample", 0, WORKSPACE, 11),
        ("sample", 0, AGENT, 8),
        ("sample", 30, WORKSPACE, 12),
        ("sample", 60, AGENT, 4),
        ("sample", 90, WORKSPACE, 4),
        ("sample", 350, WORKSPACE, 4),
        ("fail", 380, AGENT, False),
        ("tick", 400),
        ("sample", 500, AGENT, 4),  # its base (60 s) is older than two windows: not judged
        ("sample", 560, AGENT, 4),
    )
    scenario = Scenario(datetime(2026, 3, 29, 0, 30, tzinfo=UTC), 300, rules, events)
    start = scenario.start
    expected = [
        ("pending", "high", WORKSPACE, start),
        ("firing", "high", WORKSPACE, start + timedelta(seconds=30)),
        ("firing", "drop", AGENT, start + timedelta(seconds=60)),
        ("resolved", "high", WORKSPACE, start + timedelta(seconds=90)),
        ("firing", NO_DATA_RULE, AGENT, start + timedelta(seconds=400)),
        ("resolved", NO_DATA_RULE, AGENT, start + timedelta(seconds=500)),
        ("resolved", "drop", AGENT, start + timedelta(seconds=560)),
    ]
    assert ordered(reference(scenario)) == ordered(expected)
    assert ordered(engine_transitions(scenario)) == ordered(expected)


def test_change_alerts_resolve_on_recovery_against_the_base_they_fired_at() -> None:
    """drop_pct 50 fired at 20 -> 0 resolves above 10; rise 15 fired at 10 -> 25 below 25.

    Neither the window's later base (0, or 25) nor a poll gap that leaves no fitting base
    moves the decision: the remembered base does.
    """
    rules = (
        Change("collapse", (WORKSPACE,), 300, "drop_pct", "50", 5, None),
        Change("surge", (AGENT,), 600, "rise", "15", None, None, "recovery"),
    )
    events = (
        ("sample", 0, WORKSPACE, 20),
        ("sample", 0, AGENT, 10),
        ("sample", 300, WORKSPACE, 0),  # 20 -> 0: fires
        ("sample", 600, AGENT, 25),  # 10 -> 25: fires
        ("sample", 900, WORKSPACE, 10),  # window base 0 now; against 20, still a 50 % drop
        ("sample", 1200, AGENT, 25),  # window base 25 now; against 10, still a rise of 15
        ("sample", 1260, AGENT, 24),  # below 25: recovered
        ("sample", 4800, WORKSPACE, 11),  # after an hour's gap: no fitting base, still judged
    )
    scenario = Scenario(datetime(2026, 1, 5, 12, 0, tzinfo=UTC), 86400, rules, events)
    start = scenario.start
    expected = [
        ("firing", "collapse", WORKSPACE, start + timedelta(seconds=300)),
        ("firing", "surge", AGENT, start + timedelta(seconds=600)),
        ("resolved", "surge", AGENT, start + timedelta(seconds=1260)),
        ("resolved", "collapse", WORKSPACE, start + timedelta(seconds=4800)),
    ]
    assert ordered(reference(scenario)) == ordered(expected)
    assert ordered(engine_transitions(scenario)) == ordered(expected)


def test_workspace_outage_readings_on_hand_written_scenarios() -> None:
    """A workspace outage is one alert, agents get a fresh stale_after; a dead agent its own."""
    start = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    outage = (
        ("sample", 0, WORKSPACE, 5),
        ("sample", 1, AGENT, 5),
        ("fail", 30, WORKSPACE, False),
        ("fail", 31, AGENT, False),
        ("tick", 300),
        ("sample", 400, WORKSPACE, 5),
        ("sample", 650, WORKSPACE, 5),
        ("tick", 699),
        ("tick", 700),
    )
    dead_agent = (
        ("sample", 0, AGENT, 5),
        ("fail", 100, AGENT, False),
        ("sample", 200, WORKSPACE, 5),
        ("fail", 250, WORKSPACE, False),
        ("tick", 300),
    )
    same_cycle = (  # the agent answered one poll interval before the workspace last did
        ("sample", 99, AGENT, 5),
        ("sample", 100, WORKSPACE, 5),
        ("fail", 110, WORKSPACE, False),
        ("fail", 110, AGENT, False),
        ("tick", 399),
        ("tick", 400),
    )
    never_answered = (("fail", 10, WORKSPACE, False), ("fail", 20, AGENT, True), ("tick", 30))
    not_polled = (  # the watchdog fell behind: no failed poll, so no page
        ("sample", 0, WORKSPACE, 5),
        ("sample", 0, AGENT, 5),
        ("tick", 300),
        ("tick", 3000),
    )
    cases = [
        (same_cycle, [("firing", NO_DATA_RULE, WORKSPACE, start + timedelta(seconds=400))]),
        (never_answered, []),
        (not_polled, []),
        (
            outage,
            [
                ("firing", NO_DATA_RULE, WORKSPACE, start + timedelta(seconds=300)),
                ("resolved", NO_DATA_RULE, WORKSPACE, start + timedelta(seconds=400)),
                ("firing", NO_DATA_RULE, AGENT, start + timedelta(seconds=700)),
            ],
        ),
        (dead_agent, [("firing", NO_DATA_RULE, AGENT, start + timedelta(seconds=300))]),
    ]
    for events, expected in cases:
        scenario = Scenario(start, 300, (), events)
        assert ordered(reference(scenario)) == expected
        assert ordered(engine_transitions(scenario)) == expected


# -- several workspaces ------------------------------------------------------------------------

WORKSPACES = ("acme", "beta")


def _in(workspace: str, event: tuple[object, ...]) -> tuple[object, ...]:
    """`event` of the one-workspace model as an event of `workspace` (series qualified)."""
    if event[0] in ("sample", "fail"):
        return (event[0], event[1], f"{workspace}/{event[2]}", *event[3:])
    if event[0] == "ack":
        return (event[0], event[1], event[2], f"{workspace}/{event[3]}")
    return event


def _of(workspace: str, event: tuple[object, ...]) -> tuple[object, ...] | None:
    """The one-workspace model's view of a merged event: its own, and every tick."""
    if event[0] == "tick":
        return event
    series = str(event[3] if event[0] == "ack" else event[2])
    if not series.startswith(f"{workspace}/"):
        return None
    if event[0] == "ack":
        return (*event[:3], series.split("/", 1)[1])
    return (event[0], event[1], series.split("/", 1)[1], *event[3:])


@st.composite
def two_workspaces(draw: st.DrawFn) -> Scenario:
    """One scenario's rules over two workspaces, each with its own events (the second's
    drawn like the first's), merged in time order."""
    first = draw(st.one_of(scenarios(), bouncing_scenarios()))
    second = draw(st.one_of(scenarios(), bouncing_scenarios()))
    merged = sorted(
        [*(_in("acme", e) for e in first.events), *(_in("beta", e) for e in second.events)],
        key=lambda e: int(e[1]),  # type: ignore[call-overload]
    )
    return Scenario(first.start, first.stale_after, first.rules, tuple(merged), first.flap)


def reference_of_workspaces(scenario: Scenario) -> list[Seen]:
    """Workspaces are independent (their own key, polls, no-data and inhibition): each
    one's transitions are the one-workspace reference of its own events and every tick."""
    out: list[Seen] = []
    for ws in WORKSPACES:
        own = tuple(e for e in (_of(ws, e) for e in scenario.events) if e is not None)
        one = Scenario(scenario.start, scenario.stale_after, scenario.rules, own, scenario.flap)
        out += [
            (kind, rule, f"{ws}/{series}", at, sev)
            for kind, rule, series, at, sev in reference(one)
        ]
    return out


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(two_workspaces())
def test_engine_matches_reference_model_per_workspace(scenario: Scenario) -> None:
    """Two [[workspaces]] with the same rules and their own polls: engine == the
    one-workspace reference of each, severities included."""
    expected = with_severity(reference_of_workspaces(scenario))
    got = with_severity(engine_transitions(scenario, WORKSPACES))
    assert got == expected, rules_toml(scenario, WORKSPACES)
