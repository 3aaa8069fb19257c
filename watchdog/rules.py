"""The rules file: TOML in, validated `Config` out, or every problem at once.

Problems are reported as `FILE: rules[N] (name).key: what is wrong` (`mute[N] (name)` for
a `[[mute]]` window) so an operator can fix a whole file in one pass; a message names the
limit that was broken, and a near miss (an unknown key, kind, scope, severity, day or
time zone) suggests the closest valid word. This module knows what a rule means but never
reads the environment or secrets: overrides from `WATCHDOG_*` variables are passed in by
`settings`. What `watchdog check` prints about a valid file lives in `checkreport`.
"""

from __future__ import annotations

import contextlib
import math
import re
import tomllib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from fractions import Fraction
from functools import cache, cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SecretStr,
    StrictBool,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from watchdog.durations import format_duration, parse_duration
from watchdog.errors import ConfigError
from watchdog.model import (
    AT_CAPACITY_RULE,
    BURST_RULE,
    NO_DATA_RULE,
    WATCHDOG_BEHIND_RULE,
    WORKSPACE,
    Severity,
    cover_scope_words,
    covers_series,
    series_name,
    workspace_of,
)
from watchdog.suggest import did_you_mean, expected_choice
from watchdog.urls import HEARTBEAT_URL_PROBLEM, check_http_url

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")
_NAME_CHAR = re.compile(r"[A-Za-z0-9_.:-]")
_SLACK_USER = re.compile(r"[UW][A-Z0-9]{2,}")
"""A Slack user id, as `[slack] responders` lists them."""
NAME_MAX = 64
"""Longest rule or agent name: it is a label in /metrics and a word in every Slack card."""
KINDS = ("threshold", "change")
_Model = TypeVar("_Model", bound=BaseModel)


MAX_CONCURRENCY = 256
"""The most polls `[watchdog] concurrency` may allow in flight (the HTTP pool's size)."""


def _duration(value: object) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a duration string like '15s', got {type(value).__name__}")
    return parse_duration(value)


Duration = Annotated[timedelta, BeforeValidator(_duration)]
Count = Annotated[StrictInt, Field(ge=0, le=1_000_000)]


def _parse_days(text: str) -> frozenset[int]:
    days: set[int] = set()
    for part in text.lower().replace(" ", "").split(","):
        if "-" in part:
            first, _, last = part.partition("-")
            if first not in _DAYS or last not in _DAYS:
                wrong = last if first in _DAYS else first
                hint = did_you_mean(wrong, _DAYS) or ": use e.g. 'mon-fri'"
                raise ValueError(f"invalid day range {part!r}{hint}")
            start, end = _DAYS.index(first), _DAYS.index(last)
            span = range(start, end + 1) if start <= end else [*range(start, 7), *range(end + 1)]
            days.update(span)
        elif part in _DAYS:
            days.add(_DAYS.index(part))
        else:
            hint = did_you_mean(part, _DAYS) or ": use mon, tue, wed, thu, fri, sat, sun"
            raise ValueError(f"invalid day {part!r}{hint}")
    return frozenset(days)


def _parse_hours(text: str) -> tuple[time, time | None]:
    match = _HOURS.match(text.strip())
    if match is None:
        raise ValueError(f"invalid hours {text!r}: use 'HH:MM-HH:MM', e.g. '09:00-18:00'")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or m1 > 59 or h2 > 24 or m2 > 59 or (h2 == 24 and m2 != 0):
        raise ValueError(f"invalid hours {text!r}: times must be 00:00 to 24:00")
    start = time(h1, m1)
    end = None if h2 == 24 else time(h2, m2)
    if end == start:
        raise ValueError(f"invalid hours {text!r}: start and end are equal")
    return start, end


@cache
def _zones() -> frozenset[str]:
    """Every IANA zone name (read once, and only when a zone was not found)."""
    return frozenset(available_timezones())


def _known_zone(value: str) -> str:
    """`value` if it names an IANA time zone, else a ValueError saying what would."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # OSError: keys such as "America" name a tzdata directory, not a zone.
        hint = did_you_mean(value, _zones()) or ": use an IANA name such as 'Europe/Berlin'"
        raise ValueError(f"unknown time zone {value!r}{hint}") from None
    return value


class ActiveWindow(BaseModel):
    """When a rule is on: some days, some hours, in a time zone (DST-aware via zoneinfo)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    days: StrictStr = "mon-sun"
    hours: StrictStr = "00:00-24:00"
    tz: StrictStr = "UTC"

    _zone: ZoneInfo = PrivateAttr()
    _days: frozenset[int] = PrivateAttr()
    _span: tuple[time, time | None] = PrivateAttr()

    @field_validator("tz")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return _known_zone(value)

    @field_validator("days")
    @classmethod
    def _valid_days(cls, value: str) -> str:
        _parse_days(value)
        return value

    @field_validator("hours")
    @classmethod
    def _valid_hours(cls, value: str) -> str:
        _parse_hours(value)
        return value

    def model_post_init(self, context: Any, /) -> None:
        self._zone = ZoneInfo(self.tz)
        self._days = _parse_days(self.days)
        self._span = _parse_hours(self.hours)

    def contains(self, at: datetime) -> bool:
        """Whether the aware instant `at` falls inside the window, in the window's zone."""
        local = at.astimezone(self._zone)
        start, end = self._span
        now = local.time()
        days = self._days
        if end is None:  # until midnight
            return local.weekday() in days and now >= start
        if start < end:
            return local.weekday() in days and start <= now < end
        # Overnight window such as 22:00-06:00 belongs to the day it starts on.
        if now >= start:
            return local.weekday() in days
        return (local.weekday() - 1) % 7 in days and now < end

    def describe(self) -> str:
        return f"{self.days} {self.hours} {self.tz}"


class MuteWindow(ActiveWindow):
    """`[[mute]]`: a recurring maintenance window in which notifications are not sent.

    The window is an `ActiveWindow` (days, hours, zone; an overnight span such as
    "22:00-06:00" belongs to the day it starts on, and follows the zone's DST). It covers
    the rules named in `rules` (default: every rule, the built-in ones too) on the series
    named in `scope` (default: every series; `watchdog.model.covers_series`, as a silence
    does). Rules are still evaluated while it covers
    them; only their notifications are held back (see `watchdog.silences`).
    """

    name: StrictStr
    days: StrictStr
    hours: StrictStr
    tz: StrictStr
    rules: list[StrictStr] | None = None
    scope: StrictStr | list[StrictStr] | None = None

    def active(self, at: datetime) -> bool:
        """Whether the window is open at the aware instant `at`."""
        return self.contains(at)

    def covers(self, rule: str, series: str, at: datetime) -> bool:
        """Whether the window holds back the notifications of `rule` on `series` at `at`."""
        if self.rules is not None and rule not in self.rules:
            return False
        if self.scope is not None:
            scope = [self.scope] if isinstance(self.scope, str) else self.scope
            if not covers_series(scope, series):
                return False
        return self.active(at)


class _RuleBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: StrictStr
    scope: StrictStr | list[StrictStr] = WORKSPACE
    severity: Severity = Severity.WARNING
    channel: StrictStr | None = None
    mention: StrictStr | None = None
    runbook: StrictStr | None = None
    repeat: Duration | None = None
    active: ActiveWindow | None = None
    page: StrictBool | None = None
    """Pages through `[pagerduty]` (True) or never (False); None: as its severity says."""
    group_wait: Duration = timedelta(0)
    """Collect the alerts that start firing within this wait into one Slack card
    (`watchdog.notify.grouping`); zero: a card per alert."""
    inhibited_by: tuple[StrictStr, ...] = ()
    """Rules whose firing on the same series, or on the workspace, keeps this rule's
    alerts out of Slack (see `watchdog.inhibition`)."""
    workspaces: tuple[StrictStr, ...] | None = None
    """Limits the rule to these `[[workspaces]]` (default: every workspace)."""

    def severities(self) -> frozenset[Severity]:
        """Every severity an alert of this rule can have: its own and its stages'."""
        return frozenset({self.severity})


_SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


def more_severe(a: Severity, b: Severity) -> Severity:
    """The more severe of two severities."""
    return a if _SEVERITY_RANK[a] >= _SEVERITY_RANK[b] else b


_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")
_LEVEL_KEYS = ("above", "below", "recover_below", "recover_above")
# Rounded so the comparison means the same as with the exact share: `count > 25.5` is
# `count > 25`, and `count < 22.5` is `count < 23`.
_ROUNDED_DOWN = frozenset({"above", "recover_above"})


class _PercentLevels(BaseModel):
    """The level keys (`above`, `below`, `recover_below`, `recover_above`) of a rule or an
    `escalate` stage may be written as a percentage of `[plan] concurrency_limit` ("80%"):
    resolved to a count when the file is read; `percentages` keeps what was written."""

    _percentages: dict[str, str] = PrivateAttr(default_factory=dict)

    @field_validator(*_LEVEL_KEYS, mode="before", check_fields=False)
    @classmethod
    def _resolve_percentage(cls, value: object, info: ValidationInfo) -> object:
        return _level(value, info)

    @model_validator(mode="wrap")
    @classmethod
    def _remember_percentages(cls, data: object, handler: ModelWrapValidatorHandler[Self]) -> Self:
        levels = handler(data)
        levels._percentages = _written_percentages(data)
        return levels

    @property
    def percentages(self) -> Mapping[str, str]:
        """The levels written as a percentage of the plan's limit, as written ("80%")."""
        return self._percentages


class EscalationStage(_PercentLevels):
    """One `escalate` stage: a level beyond the threshold, or a time without acknowledgement.

    A level stage (`above`, or `below` for below-rules) is in force while the count is
    beyond it, with its own hysteresis (`recover_below` / `recover_above`); a time stage
    (`after`) from when the alert has held that long unacknowledged until it resolves.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    above: Count | None = None
    below: Count | None = None
    recover_below: Count | None = None
    recover_above: Count | None = None
    after: Duration | None = None
    severity: Severity | None = None
    mention: StrictStr | None = None

    def reached(self, count: int) -> bool:
        """Whether a level stage comes into force at `count`."""
        if self.above is not None:
            return count > self.above
        return self.below is not None and count < self.below

    def left(self, count: int) -> bool:
        """Whether a level stage in force is left at `count` (hysteresis applies here)."""
        if self.above is not None:
            bound = self.recover_below
            return count < bound if bound is not None else count <= self.above
        if self.below is not None:
            bound = self.recover_above
            return count > bound if bound is not None else count >= self.below
        return False

    def describe(self) -> str:
        if self.above is not None:
            return f"count > {self.above}"
        if self.below is not None:
            return f"count < {self.below}"
        assert self.after is not None
        return f"unacknowledged for {format_duration(self.after)}"

    def explain(self) -> str:
        """The stage with what it does: `count > 30: critical, mentions <!subteam^S1>`."""
        effects = [f"{self.severity}"] if self.severity is not None else []
        effects += [f"mentions {self.mention}"] if self.mention else []
        return f"{self.describe()}: {', '.join(effects)}" if effects else self.describe()


def _one_or_many(value: object) -> object:
    """`escalate = { ... }` is a list of one stage."""
    return [value] if isinstance(value, dict) else value


MAX_CONCURRENCY_LIMIT = 100_000
"""The largest `[plan] concurrency_limit` accepted: far above any plan, and every
percentage of it (up to MAX_PERCENT) is still a valid count."""

MAX_PERCENT = 1000
"""The largest percentage of the limit a threshold may name (ten times the limit)."""


class PlanSection(BaseModel):
    """`[plan]`: the workspace's concurrency limit, and whether burst is enabled.

    With burst, calls above the limit are still served (billed at the burst rate) up to
    three times the limit, at most 300 (never less than the limit itself); without it the
    limit is the hard cap. Calls beyond the hard cap are rejected.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    concurrency_limit: Annotated[StrictInt, Field(ge=1, le=MAX_CONCURRENCY_LIMIT)]
    burst: StrictBool = False

    @property
    def hard_cap(self) -> int:
        """The count at which new calls are rejected."""
        if not self.burst:
            return self.concurrency_limit
        return max(self.concurrency_limit, min(3 * self.concurrency_limit, 300))


_PLAN_CONTEXT = "plan"
"""Key of the validation context holding the `[plan]` (or a reason it cannot be used)."""


def _percent_of_limit(key: str, text: str, context: object) -> int:
    """The count a threshold written as "80%" stands for, with `[plan]` from the context."""
    match = _PERCENT.match(text)
    if match is None:
        raise ValueError(
            f"expected a count or a percentage of the plan's limit like '80%', got {text!r}"
        )
    percent = Fraction(match.group(1))
    if percent > MAX_PERCENT:
        raise ValueError(f"{text.strip()!r} is more than {MAX_PERCENT}% of the plan's limit")
    plan = context.get(_PLAN_CONTEXT) if isinstance(context, dict) else None
    if isinstance(plan, str):
        raise ValueError(f"{text.strip()!r} cannot be resolved: {plan}")
    if not isinstance(plan, PlanSection):
        raise ValueError(
            f"{text.strip()!r} needs the plan's concurrency limit: set [plan] concurrency_limit"
        )
    exact = percent * plan.concurrency_limit / 100
    return math.floor(exact) if key in _ROUNDED_DOWN else math.ceil(exact)


def _written_percentages(data: object) -> dict[str, str]:
    """The level keys of a rule or stage as written, where written as a percentage."""
    if not isinstance(data, Mapping):
        return {}
    return {key: data[key].strip() for key in _LEVEL_KEYS if isinstance(data.get(key), str)}


def _level(value: object, info: ValidationInfo) -> object:
    """A level key's value: a count as written, or what a percentage of the limit is."""
    if not isinstance(value, str):
        return value
    assert info.field_name is not None
    return _percent_of_limit(info.field_name, value, info.context)


class ThresholdRule(_RuleBase, _PercentLevels):
    """Fires while the count is above (or below) a bound, optionally for a while first.

    A bound may be written as a percentage of `[plan] concurrency_limit` ("80%"); it is
    resolved to a count when the file is read, and `percentages` keeps what was written.
    """

    kind: Literal["threshold"]
    above: Count | None = None
    below: Count | None = None
    recover_below: Count | None = None
    recover_above: Count | None = None
    for_: Duration = Field(default=timedelta(0), alias="for")
    escalate: Annotated[list[EscalationStage], BeforeValidator(_one_or_many)] = []

    def severities(self) -> frozenset[Severity]:
        """Every severity an alert of this rule can have: its own and its stages'."""
        stages = {stage.severity for stage in self.escalate if stage.severity is not None}
        return frozenset({self.severity, *stages})

    def escalated_severity(self, stages: int) -> Severity:
        """The alert's severity with the stages of the bit set `stages` in force."""
        severity = self.severity
        for i, stage in enumerate(self.escalate):
            if stages >> i & 1 and stage.severity is not None:
                severity = more_severe(stage.severity, severity)
        return severity

    def holds(self, count: int) -> bool:
        if self.above is not None:
            return count > self.above
        return self.below is not None and count < self.below

    def recovered(self, count: int) -> bool:
        """Whether a firing alert resolves at `count` (hysteresis applies here only)."""
        if self.above is not None:
            if self.recover_below is not None:
                return count < self.recover_below
            return count <= self.above
        assert self.below is not None
        if self.recover_above is not None:
            return count > self.recover_above
        return count >= self.below

    def describe(self) -> str:
        if self.above is not None:
            text = f"count > {self.above}"
            if self.recover_below is not None:
                text += f" (resolves below {self.recover_below})"
        else:
            text = f"count < {self.below}"
            if self.recover_above is not None:
                text += f" (resolves above {self.recover_above})"
        if self.for_:
            text += f" for {format_duration(self.for_)}"
        return text


class ChangeRule(_RuleBase):
    """Fires when the count moved too much against the latest sample at least `window` old.

    It resolves when the count recovers against the base it fired at (`resolve =
    "recovery"`), or when the sliding comparison no longer holds (`"window"`).
    """

    kind: Literal["change"]
    window: Duration
    drop: Count | None = None
    rise: Count | None = None
    drop_pct: Annotated[float, Field(gt=0, le=100_000, strict=True)] | None = None
    rise_pct: Annotated[float, Field(gt=0, le=100_000, strict=True)] | None = None
    min_base: Count = 1
    resolve: Literal["recovery", "window"] = "recovery"

    def holds(self, old: int, new: int) -> bool:
        if self.drop is not None:
            return old - new >= self.drop
        if self.rise is not None:
            return new - old >= self.rise
        if old < self.min_base or old == 0:
            return False
        if self.drop_pct is not None:
            return (old - new) * 100.0 >= self.drop_pct * old
        assert self.rise_pct is not None
        return (new - old) * 100.0 >= self.rise_pct * old

    def describe(self) -> str:
        window = format_duration(self.window)
        if self.drop is not None:
            return f"dropped by >= {self.drop} within {window}"
        if self.rise is not None:
            return f"rose by >= {self.rise} within {window}"
        if self.drop_pct is not None:
            return f"dropped >= {self.drop_pct:g}% within {window} (base >= {self.min_base})"
        return f"rose >= {self.rise_pct:g}% within {window} (base >= {self.min_base})"


Rule = Annotated[ThresholdRule | ChangeRule, Field(discriminator="kind")]


class PlanLimitRule(ThresholdRule):
    """A rule that `[plan]` builds in on the workspace (`burst`, `at-capacity`).

    A rule of the same name in the file replaces it, like any rule (its own bounds,
    severity, channel, `for`). Its condition says what the count means for the calls.
    """

    summary: str

    def describe(self) -> str:
        return self.summary


def plan_rules(plan: PlanSection) -> tuple[PlanLimitRule, ...]:
    """The built-in rules of `[plan]`: `burst` (with burst only) and `at-capacity`."""
    limit, cap = plan.concurrency_limit, plan.hard_cap
    rules = []
    if plan.burst:
        rules.append(
            PlanLimitRule(
                name=BURST_RULE,
                kind="threshold",
                above=limit,
                severity=Severity.WARNING,
                summary=f"count > {limit}, the plan's limit: calls are billed at the burst rate",
            )
        )
    cap_is = "the burst cap" if plan.burst else "the plan's limit (no burst)"
    rules.append(
        PlanLimitRule(
            name=AT_CAPACITY_RULE,
            kind="threshold",
            above=cap - 1,
            severity=Severity.CRITICAL,
            summary=f"count >= {cap}, {cap_is}: new calls are rejected",
        )
    )
    return tuple(rules)


class Agent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: StrictStr
    id: StrictStr


_WORKSPACE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")


class WorkspaceSection(BaseModel):
    """One `[[workspaces]]` entry: an ElevenLabs workspace, its key, host, plan and agents.

    Its series are named `<name>/workspace` and `<name>/<agent>`. The API key is a secret,
    never in this file: the variable named by `api_key_env`, else the credential file
    `elevenlabs_api_key_<name>`. `base_url` is its data-residency host (default:
    `ELEVENLABS_BASE_URL`), `channel` where its alerts go unless a rule routes them,
    `plan` its concurrency limit (default: the top-level `[plan]`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: StrictStr
    api_key_env: StrictStr | None = None
    base_url: StrictStr | None = None
    channel: StrictStr | None = None
    plan: PlanSection | None = None
    agents: list[Agent] = []

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not _WORKSPACE_NAME.fullmatch(value):
            raise ValueError(
                "must be 1-40 of a-z, 0-9, _ and -, starting with a letter or digit"
                " (it names series and a credential file)"
            )
        return value

    @field_validator("api_key_env")
    @classmethod
    def _variable(cls, value: str | None) -> str | None:
        if value is not None and not _VARIABLE.fullmatch(value):
            raise ValueError(
                f"{value!r} is not an environment variable name (letters, digits and _)"
            )
        return value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        check_http_url(value)
        return value.rstrip("/")

    @property
    def credential(self) -> str:
        """The credential file holding the key when `api_key_env` is not set (or empty)."""
        return f"elevenlabs_api_key_{self.name}"


_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


class FlapSettings(BaseModel):
    """`[watchdog] flap`: how many firings and resolutions within `window` are flapping."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    changes: Annotated[StrictInt, Field(ge=2, le=1000)] = 6
    window: Duration = timedelta(hours=1)


def _flap_switch(value: object) -> object:
    """`flap = false` turns flapping detection off, `flap = true` keeps the defaults."""
    if value is False:
        return None
    if value is True:
        return FlapSettings()
    if value is None or isinstance(value, dict | FlapSettings):
        return value
    raise ValueError('expected a table like { changes = 6, window = "1h" } or false')


class WatchdogSection(BaseModel):
    """`[watchdog]`: timing and limits of the loop.

    `stale_after` and `no_data_severity` are the old spelling of `[no_data]` keys; they
    keep working, and `Config.no_data` holds the values in force.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    poll_interval: Duration = timedelta(seconds=15)
    stale_after: Duration | None = None
    repeat: Duration = timedelta(hours=1)
    retention: Duration = timedelta(days=7)
    timeout: Duration = timedelta(seconds=10)
    concurrency: Annotated[StrictInt, Field(ge=1, le=MAX_CONCURRENCY)] = 8
    no_data_severity: Severity | None = None
    flap: Annotated[FlapSettings | None, BeforeValidator(_flap_switch)] = FlapSettings()
    heartbeat_url: SecretStr | None = None
    """The dead-man's switch's ping URL (see `watchdog.deadman`); its path is a secret."""

    @field_validator("heartbeat_url")
    @classmethod
    def _heartbeat_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                check_http_url(value.get_secret_value())
            except ValueError:
                # Never quote the value: the path is the check's secret.
                raise ValueError(HEARTBEAT_URL_PROBLEM) from None
        return value


class NoDataSection(BaseModel):
    """`[no_data]`: when the built-in no-data alert fires, how severe it is, where it goes.

    It is the alert that pages for a revoked key, an unknown agent or an API outage, so it
    is routed like a rule: its own channel, mention and runbook.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    stale_after: Duration = timedelta(minutes=2)
    severity: Severity = Severity.CRITICAL
    channel: StrictStr | None = None
    mention: StrictStr | None = None
    runbook: StrictStr | None = None


class SlackSection(BaseModel):
    """`[slack]`: the default channel, and who may press the card's buttons.

    `responders` (Slack user ids) limits the Acknowledge and Silence buttons to those
    people; empty (the default) lets anyone who can see the card press them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    channel: StrictStr | None = None
    responders: tuple[StrictStr, ...] = ()

    @field_validator("responders")
    @classmethod
    def _user_ids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for user in value:
            if not _SLACK_USER.fullmatch(user):
                raise ValueError(
                    f"{user!r} is not a Slack user id (like U012AB3CD: a member's profile,"
                    " ⋮ More, Copy member ID)"
                )
        return value


DEFAULT_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"


class PagerDutySection(BaseModel):
    """`[pagerduty]`: which alerts page (by severity; a rule's `page` overrides), and where.

    The routing key is a secret: `PAGERDUTY_ROUTING_KEY` or the credential file
    `pagerduty_routing_key`, never this file.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    severities: tuple[Severity, ...] = (Severity.CRITICAL,)
    events_url: StrictStr = DEFAULT_EVENTS_URL

    @field_validator("events_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        check_http_url(value)
        return value


_WEBHOOK_NAME = re.compile(r"[a-z0-9_-]{1,40}")


class WebhookSection(BaseModel):
    """One `[[webhooks]]` destination: a JSON document per notified transition.

    The URL often embeds a token, so it is a secret: `url` here, else the variable named by
    `url_env`, else the credential file `webhook_url_<name>`. `secret_env` names the
    variable holding the signing secret (else the credential file `webhook_secret_<name>`).
    `severities` and `rules` narrow what it receives (empty: everything).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: StrictStr
    url: SecretStr | None = None
    url_env: StrictStr | None = None
    secret_env: StrictStr | None = None
    severities: tuple[Severity, ...] = ()
    rules: tuple[StrictStr, ...] = ()
    headers: dict[StrictStr, StrictStr] = {}

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _WEBHOOK_NAME.fullmatch(value):
            raise ValueError("must be 1-40 of a-z, 0-9, _ and - (it names a credential file)")
        return value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                check_http_url(value.get_secret_value())
            except ValueError:
                raise ValueError("must be an http(s):// URL") from None  # never quote it
        return value

    def receives(self, rule: str, severity: Severity) -> bool:
        """Whether a notification of `rule` at `severity` goes to this webhook."""
        return (not self.severities or severity in self.severities) and (
            not self.rules or rule in self.rules
        )


_CLOCK_TIME = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")


class ReportSection(BaseModel):
    """`[report]`: post the previous day's report daily at `at` (HH:MM in `tz`) to `channel`.

    Without `channel`, `[slack] channel` is used. The day is the calendar day in `tz`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    at: StrictStr = "09:00"
    tz: StrictStr = "UTC"
    channel: StrictStr | None = None

    @field_validator("at")
    @classmethod
    def _clock_time(cls, value: str) -> str:
        if not _CLOCK_TIME.match(value):
            raise ValueError(f"expected a time of day as HH:MM like '09:00', got {value!r}")
        return value

    @field_validator("tz")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return _known_zone(value)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    @property
    def time_of_day(self) -> time:
        return time.fromisoformat(self.at)


class StormSection(BaseModel):
    """`[storm]`: more than `max` cards within `window` in one channel is a storm; 0 is off."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max: Annotated[StrictInt, Field(ge=0)] = 10
    window: Duration = timedelta(minutes=1)

    @field_validator("window")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be longer than 0s")
        return value


class _ConfigFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    pagerduty: PagerDutySection | None = None
    webhooks: list[WebhookSection] = []

    watchdog: WatchdogSection = WatchdogSection()
    no_data: NoDataSection = NoDataSection()
    plan: PlanSection | None = None
    slack: SlackSection = SlackSection()
    agents: list[Agent] = []
    workspaces: list[WorkspaceSection] = []
    rules: list[Rule] = []
    mute: list[MuteWindow] = []
    report: ReportSection | None = None
    storm: StormSection = StormSection()


@dataclass(frozen=True)
class Route:
    """Where an alert's messages go and whom a firing one pages."""

    channel: str | None
    mention: str | None
    runbook: str | None


@dataclass(frozen=True)
class Config:
    """A validated rules file: `[watchdog]`, `[no_data]` (values in force), `[slack]`, ...

    `rules` holds the file's rules and the built-in rules of `[plan]` it did not replace.
    """

    source: str
    watchdog: WatchdogSection
    slack: SlackSection
    agents: tuple[Agent, ...]
    """The top-level `[[agents]]`, or every workspace's (their series: `series`)."""
    rules: tuple[ThresholdRule | ChangeRule, ...]
    scopes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    no_data: NoDataSection = field(default_factory=NoDataSection)
    mutes: tuple[MuteWindow, ...] = ()
    pagerduty: PagerDutySection | None = None
    webhooks: tuple[WebhookSection, ...] = ()

    def pages(self, rule: str, severity: Severity) -> bool:
        """Whether an alert of `rule` at `severity` pages (`[pagerduty]`, the rule's `page`)."""
        if self.pagerduty is None:
            return False
        found = self.rule(rule)
        if found is not None and found.page is not None:
            return found.page
        return severity in self.pagerduty.severities

    def may_page(self, rule: str) -> bool:
        """Whether an alert of `rule` can page at any severity it can reach."""
        found = self.rule(rule)
        if found is None:
            severities = {self.no_data.severity} if rule in self.rule_names else set()
            return any(self.pages(rule, s) for s in severities)
        return any(self.pages(rule, s) for s in found.severities())

    @property
    def rule_names(self) -> tuple[str, ...]:
        """Every rule an alert can come from: the file's rules, then the built-in ones."""
        return (*(rule.name for rule in self.rules), NO_DATA_RULE, WATCHDOG_BEHIND_RULE)

    plan: PlanSection | None = None
    report: ReportSection | None = None
    storm: StormSection = field(default_factory=StormSection)
    workspaces: tuple[WorkspaceSection, ...] = ()
    """`[[workspaces]]`; empty: the file's one unnamed workspace (`agents`, `[plan]`)."""
    variants: Mapping[tuple[str, str], ThresholdRule | ChangeRule] = field(default_factory=dict)
    """(rule, series) -> the rule as it applies there, where that differs from `rule(name)`:
    a percentage of a workspace's own `[workspaces.plan]`, or that plan's built-in rules."""

    @cached_property
    def series(self) -> tuple[tuple[str, str | None], ...]:
        """Every polled series as (name, agent_id): each workspace's own series first,
        then its agents; workspace by workspace with `[[workspaces]]`."""
        if not self.workspaces:
            return ((WORKSPACE, None), *((a.name, a.id) for a in self.agents))
        return tuple(
            (series_name(ws.name, name), agent_id)
            for ws in self.workspaces
            for name, agent_id in ((WORKSPACE, None), *((a.name, a.id) for a in ws.agents))
        )

    def workspace(self, series: str) -> WorkspaceSection | None:
        """The `[[workspaces]]` entry `series` belongs to (None without `[[workspaces]]`)."""
        name = workspace_of(series)
        return next((ws for ws in self.workspaces if ws.name == name), None)

    def plan_for(self, series: str) -> PlanSection | None:
        """The plan in force for the workspace of `series`: its own, else `[plan]`."""
        found = self.workspace(series)
        return found.plan if found is not None and found.plan is not None else self.plan

    @cached_property
    def _by_name(self) -> dict[str, ThresholdRule | ChangeRule]:
        return {rule.name: rule for rule in self.rules}

    def rule(self, name: str) -> ThresholdRule | ChangeRule | None:
        return self._by_name.get(name)

    def rule_on(self, name: str, series: str) -> ThresholdRule | ChangeRule | None:
        """The rule `name` as it applies on `series` (see `variants`)."""
        return self.variants.get((name, series)) or self._by_name.get(name)

    @cached_property
    def inhibited_by(self) -> dict[str, tuple[str, ...]]:
        """Each rule's `inhibited_by`, for the rules that have one."""
        return {rule.name: rule.inhibited_by for rule in self.rules if rule.inhibited_by}

    def route_for(self, rule: str, series: str | None = None) -> Route:
        """The rule's own channel (else the workspace's of `series`, else `[slack]
        channel`), mention and runbook.

        The built-in no-data and watchdog-behind alerts are routed by the `[no_data]` table.
        """
        found: ThresholdRule | ChangeRule | NoDataSection | None = (
            self.no_data if rule in (NO_DATA_RULE, WATCHDOG_BEHIND_RULE) else self.rule(rule)
        )
        default = self.default_channel(series)
        if found is None:
            return Route(default, None, None)
        return Route(found.channel or default, found.mention, found.runbook)

    def default_channel(self, series: str | None) -> str | None:
        """Where alerts on `series` go unless their rule routes them: its workspace's
        `channel`, else `[slack] channel`."""
        workspace = self.workspace(series) if series is not None else None
        return (workspace.channel if workspace is not None else None) or self.slack.channel

    def channel_for(self, rule: str, series: str | None = None) -> str | None:
        return self.route_for(rule, series).channel

    def repeat_for(self, rule: str) -> timedelta:
        found = self.rule(rule)
        if found is not None and found.repeat is not None:
            return found.repeat
        return self.watchdog.repeat


def _loc(data: Mapping[str, Any], loc: tuple[int | str, ...]) -> str:
    """Render a pydantic error location as `rules[N] (name).key`.

    Pydantic adds tags of its own to locations (the union member, such as `threshold`,
    `list[str]` or `str`); they tell an operator nothing and are left out.
    """
    out = ""
    parent: str | int | None = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            if parent in _NAMED_LISTS and out.count("[") == 1:
                out = _with_name(data, str(parent), out, part)
            parent = part
            continue
        if part in KINDS or "[" in part or part in _TYPE_TAGS:
            continue
        out += ("." if out else "") + _printable(part.replace("for_", "for"))
        parent = part
    return out or "(top level)"


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "function-after"})
_NAMED_LISTS = ("rules", "mute", "workspaces")
"""Top-level arrays of tables whose items are named in locations: `mute[0] (deploys)`."""


def _with_name(data: Mapping[str, Any], key: str, where: str, index: int) -> str:
    items = data.get(key)
    if isinstance(items, list) and index < len(items) and isinstance(items[index], dict):
        name = items[index].get("name")
        if isinstance(name, str):
            return f"{where} ({_printable(name)})"
    return where


def _printable(text: str) -> str:
    """Keep one problem on one line whatever a key or name contains."""
    return text if text.isprintable() else repr(text)


# The table each key path names, to suggest the closest key of the same table.
_TABLES: dict[tuple[str, ...], type[BaseModel]] = {
    (): _ConfigFile,
    ("watchdog",): WatchdogSection,
    ("no_data",): NoDataSection,
    ("plan",): PlanSection,
    ("slack",): SlackSection,
    ("pagerduty",): PagerDutySection,
    ("webhooks",): WebhookSection,
    ("agents",): Agent,
    ("workspaces",): WorkspaceSection,
    ("workspaces", "plan"): PlanSection,
    ("workspaces", "agents"): Agent,
    ("rules", "threshold"): ThresholdRule,
    ("rules", "change"): ChangeRule,
    ("rules", "threshold", "active"): ActiveWindow,
    ("rules", "change", "active"): ActiveWindow,
    ("mute",): MuteWindow,
    ("rules", "threshold", "escalate"): EscalationStage,
    ("watchdog", "flap"): FlapSettings,
}
# Keys people reach for whose spelling no string distance finds.
_SYNONYMS = {"timezone": "tz", "time_zone": "tz", "zone": "tz"}


def _keys_of(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _unknown_key(loc: Sequence[int | str]) -> str:
    """`unknown key`, with the closest key of the same table when one is near."""
    *parents, key = (str(part) for part in loc if not isinstance(part, int))
    table = tuple(parents)
    model = _TABLES.get(table)
    if model is None:
        return "unknown key"
    if key in _SYNONYMS and _SYNONYMS[key] in _keys_of(model):
        return f"unknown key: did you mean {_SYNONYMS[key]!r}?"
    hint = did_you_mean(key, _keys_of(model))
    if not hint and len(table) == 2 and table[0] == "rules":
        other, other_kind = (
            (ChangeRule, "change") if model is ThresholdRule else (ThresholdRule, "threshold")
        )
        if key in _keys_of(other):
            return f"unknown key: {key!r} belongs to {other_kind} rules"
    return "unknown key" + hint


def _message(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return _unknown_key(error["loc"])
    if kind == "missing":
        return "required key is missing"
    if kind == "union_tag_invalid":
        given = error["input"].get("kind")
        hint = did_you_mean(given, KINDS) if isinstance(given, str) else ""
        return f"unknown kind {given!r}" + (hint or ": use 'threshold' or 'change'")
    if kind == "union_tag_not_found":
        return "required key 'kind' is missing: use 'threshold' or 'change'"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind not in ("value_error",) and "input" in error:
        shown = repr(error["input"])
        if len(shown) <= 60:
            message += f" (got {shown})"
    return message + expected_choice(error)


def _name_problem(name: str) -> str | None:
    """Why `name` cannot name a rule or an agent, naming the limit broken; None if it can."""
    if not name:
        return "must not be empty"
    if len(name) > NAME_MAX:
        return f"is {len(name)} characters long: at most {NAME_MAX}"
    first = name[0]
    if not (first.isascii() and first.isalnum()):
        return f"must start with a letter or digit, not {first!r}"
    bad = next((c for c in name if not _NAME_CHAR.fullmatch(c)), None)
    if bad is not None:
        return f"{bad!r} is not allowed: use letters, digits, '_', '-', '.' or ':'"
    return None


# The old `[watchdog]` spelling of `[no_data]` keys, and the new one.
_OLD_NO_DATA_KEYS = (("stale_after", "stale_after"), ("no_data_severity", "severity"))


def _no_data_in_force(
    watchdog: WatchdogSection, no_data: NoDataSection, from_env: Collection[str]
) -> NoDataSection:
    """`[no_data]` with the old `[watchdog]` keys applied: the environment wins, then
    `[no_data]`, then the old spelling, then the defaults."""
    update: dict[str, Any] = {}
    for old, new in _OLD_NO_DATA_KEYS:
        value = getattr(watchdog, old)
        if value is not None and (old in from_env or new not in no_data.model_fields_set):
            update[new] = value
    return no_data.model_copy(update=update)


def _stale_after_origin(
    watchdog: WatchdogSection, no_data: NoDataSection, from_env: Collection[str]
) -> str:
    """Where the `stale_after` in force was set, to report a problem with it there."""
    if "stale_after" in from_env:
        return "environment: WATCHDOG_STALE_AFTER"
    if watchdog.stale_after is not None and "stale_after" not in no_data.model_fields_set:
        return "watchdog.stale_after"
    return "no_data.stale_after"


def _spelling_problems(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A no-data key set in both spellings: which one is meant would be a guess."""
    old, new = data.get("watchdog"), data.get("no_data")
    if not isinstance(old, dict) or not isinstance(new, dict):
        return []
    return [
        (f"watchdog.{old_key}", f"also set as no_data.{new_key}: keep only no_data.{new_key}")
        for old_key, new_key in _OLD_NO_DATA_KEYS
        if old_key in old and new_key in new
    ]


@dataclass(frozen=True)
class _Layout:
    """The series a file names: the top-level agents, or each `[[workspaces]]`'s agents.

    Scopes are words over it. Without `[[workspaces]]`: `workspace`, `*` (every agent)
    and agent names. With them: `workspace` (each workspace's own series), `*` (every
    agent of every workspace), `<workspace>/*` (every agent of one) and series names
    (`acme/workspace`, `acme/support`), within the rule's `workspaces` if it has any.
    """

    agents: tuple[str, ...] = ()
    workspaces: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def limited(self, names: Sequence[str] | None) -> list[str]:
        """The workspaces a rule with `workspaces = names` (None: every one) applies to."""
        return [ws for ws in self.workspaces if names is None or ws in names]

    def words(self, limit: Sequence[str] | None = None) -> list[str]:
        """Every valid scope word (within the workspaces `limit`)."""
        if not self.workspaces:
            return [WORKSPACE, "*", *sorted(self.agents)]
        words = [WORKSPACE, "*"]
        for ws in self.limited(limit):
            words.append(series_name(ws, "*"))
            words += [series_name(ws, name) for name in (WORKSPACE, *self.workspaces[ws])]
        return words

    def expand(self, word: str, limit: Sequence[str] | None = None) -> list[str]:
        """The series one scope word stands for (see the class docstring)."""
        if not self.workspaces:
            return list(self.agents) if word == "*" else [word]
        chosen = self.limited(limit)
        if word == WORKSPACE:
            return [series_name(ws, WORKSPACE) for ws in chosen]
        if word == "*":
            return [series_name(ws, a) for ws in chosen for a in self.workspaces[ws]]
        ws, _, name = word.partition("/")
        if name == "*":
            return [series_name(ws, a) for a in self.workspaces.get(ws, ())]
        return [word]

    def series(self) -> list[str]:
        """Every series of the file: each workspace's own series, then its agents'."""
        if not self.workspaces:
            return [WORKSPACE, *self.agents]
        return [
            series_name(ws, name)
            for ws, agents in self.workspaces.items()
            for name in (WORKSPACE, *agents)
        ]

    def scope(self, rule: _RuleBase) -> tuple[str, ...]:
        """Every series a rule watches, in order, once."""
        words = [rule.scope] if isinstance(rule.scope, str) else rule.scope
        series: list[str] = []
        for word in words:
            for one in self.expand(word, rule.workspaces):
                if one not in series:
                    series.append(one)
        return tuple(series)


def _raw_layout(data: Mapping[str, Any]) -> _Layout:
    """The layout of a raw document, whether or not its items are valid."""
    raw = data.get("workspaces")
    workspaces = {
        item["name"]: _ordered_names(item.get("agents"))
        for item in (raw if isinstance(raw, list) else [])
        if isinstance(item, dict) and isinstance(item.get("name"), str)
    }
    return _Layout(_ordered_names(data.get("agents")), workspaces)


def _ordered_names(items: object) -> tuple[str, ...]:
    """The `name`s of a raw array of tables in the file's order, each once."""
    names = (
        item["name"]
        for item in (items if isinstance(items, list) else [])
        if isinstance(item, dict) and isinstance(item.get("name"), str)
    )
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class _Parts:
    """The sections and items of a file that are valid on their own."""

    watchdog: WatchdogSection | None
    no_data: NoDataSection | None
    agents: Sequence[tuple[int, Agent]]
    rules: Sequence[tuple[int, ThresholdRule | ChangeRule]]
    mutes: Sequence[tuple[int, MuteWindow]] = ()
    workspaces: Sequence[tuple[int, WorkspaceSection]] = ()


def _semantic_problems(
    parts: _Parts, layout: _Layout, from_env: Collection[str], known_rules: set[str]
) -> list[tuple[str, str]]:
    """Checks across fields and sections, as (location, message) pairs.

    Runs on whatever parts of the file passed the type checks, so a file with a type
    problem still gets its other problems reported in the same pass.
    """
    problems = _agent_problems(parts.agents)
    problems += _workspace_problems(parts.workspaces, layout)
    problems += _timing_problems(parts.watchdog, parts.no_data, from_env)
    seen: set[str] = set()
    for i, rule in parts.rules:
        where = f"rules[{i}] ({_printable(rule.name)})"
        if rule.name in seen:
            problems.append((f"{where}.name", "duplicate rule name"))
        if rule.name in (NO_DATA_RULE, WATCHDOG_BEHIND_RULE):
            problems.append((f"{where}.name", f"{rule.name!r} is the built-in rule's name"))
        elif (wrong := _name_problem(rule.name)) is not None:
            problems.append((f"{where}.name", wrong))
        seen.add(rule.name)
        problems.extend(_scope_problems(where, rule, layout))
        problems.extend(_inhibition_problems(where, rule, known_rules))
        if isinstance(rule, ThresholdRule):
            problems.extend(_threshold_problems(where, rule))
        else:
            problems.extend(_change_problems(where, rule))
    problems += _mute_problems(parts.mutes, known_rules, layout)
    return problems


_PLAN_RULES = (BURST_RULE, AT_CAPACITY_RULE)


def _webhook_problems(
    webhooks: Sequence[WebhookSection], known_rules: set[str]
) -> list[tuple[str, str]]:
    """Duplicate webhook names, and `rules` naming no rule of the file."""
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()
    for i, hook in enumerate(webhooks):
        where = f"webhooks[{i}] ({hook.name})"
        if hook.name in seen:
            problems.append((f"{where}.name", "duplicate webhook name"))
        seen.add(hook.name)
        for rule in hook.rules:
            if rule not in known_rules | {NO_DATA_RULE, WATCHDOG_BEHIND_RULE, *_PLAN_RULES}:
                problems.append((f"{where}.rules", f"{rule!r} is not a rule of this file"))
    return problems


def _mute_problems(
    mutes: Sequence[tuple[int, MuteWindow]], known_rules: set[str], layout: _Layout
) -> list[tuple[str, str]]:
    """Names unique and well formed; `rules` and `scope` name what exists."""
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()
    rules = sorted(known_rules | {NO_DATA_RULE, WATCHDOG_BEHIND_RULE})
    series = cover_scope_words(layout.series())
    for i, mute in mutes:
        where = f"mute[{i}] ({_printable(mute.name)})"
        if mute.name in seen:
            problems.append((f"{where}.name", "duplicate mute name"))
        elif (wrong := _name_problem(mute.name)) is not None:
            problems.append((f"{where}.name", wrong))
        seen.add(mute.name)
        if mute.rules is not None and not mute.rules:
            problems.append(
                (f"{where}.rules", "must name at least one rule (leave it out for all)")
            )
        for name in mute.rules or ():
            if name not in rules:
                hint = did_you_mean(name, rules) or ": not a rule name"
                problems.append((f"{where}.rules", f"unknown rule {name!r}{hint}"))
        scope = [mute.scope] if isinstance(mute.scope, str) else mute.scope
        if scope is not None and not scope:
            problems.append(
                (f"{where}.scope", "must name at least one series (leave it out for all)")
            )
        for name in scope or ():
            if name not in series:
                hint = did_you_mean(name, series) or ": not an agent name"
                problems.append((f"{where}.scope", f"unknown series {name!r}{hint}"))
    return problems


def _workspace_problems(
    workspaces: Sequence[tuple[int, WorkspaceSection]], layout: _Layout
) -> list[tuple[str, str]]:
    """Unique names, agents valid within each; no top-level `[[agents]]` beside them."""
    problems: list[tuple[str, str]] = []
    if layout.workspaces and layout.agents:
        problems.append(
            (
                "agents",
                "top-level [[agents]] and [[workspaces]] cannot be mixed: move each agent into"
                " its workspace's [[workspaces.agents]]",
            )
        )
    seen: set[str] = set()
    for i, ws in workspaces:
        where = f"workspaces[{i}] ({ws.name})"
        if ws.name in seen:
            problems.append((f"{where}.name", "duplicate workspace name"))
        seen.add(ws.name)
        problems += _agent_problems(list(enumerate(ws.agents)), f"{where}.")
    return problems


def _agent_problems(agents: Sequence[tuple[int, Agent]], within: str = "") -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    agent_names: set[str] = set()
    for i, agent in agents:
        where = f"{within}agents[{i}] ({_printable(agent.name)})"
        if agent.name in agent_names:
            problems.append((f"{where}.name", "duplicate agent name"))
        if agent.name in (WORKSPACE, "*"):
            problems.append((f"{where}.name", f"{agent.name!r} is reserved"))
        elif (wrong := _name_problem(agent.name)) is not None:
            problems.append((f"{where}.name", wrong))
        if not agent.id.strip():
            problems.append((f"{where}.id", "must not be empty"))
        agent_names.add(agent.name)
    return problems


def _timing_problems(
    watchdog: WatchdogSection | None, no_data: NoDataSection | None, from_env: Collection[str]
) -> list[tuple[str, str]]:
    if watchdog is None:
        return []
    problems: list[tuple[str, str]] = []
    if watchdog.poll_interval < timedelta(milliseconds=100):
        problems.append(("watchdog.poll_interval", "must be at least 100ms"))
    if no_data is not None:
        stale_after = _no_data_in_force(watchdog, no_data, from_env).stale_after
        if stale_after < watchdog.poll_interval:
            problems.append(
                (
                    _stale_after_origin(watchdog, no_data, from_env),
                    f"must be at least poll_interval ({format_duration(watchdog.poll_interval)})",
                )
            )
    if watchdog.timeout <= timedelta(0):
        problems.append(("watchdog.timeout", "must be more than 0s"))
    if watchdog.flap is not None and watchdog.flap.window <= timedelta(0):
        problems.append(("watchdog.flap.window", "must be more than 0s"))
    return problems


def _scope_problems(
    where: str, rule: ThresholdRule | ChangeRule, layout: _Layout
) -> list[tuple[str, str]]:
    scope = [rule.scope] if isinstance(rule.scope, str) else rule.scope
    if not scope:
        return [(f"{where}.scope", "must name at least one series")]
    problems = _rule_workspaces_problems(where, rule, layout)
    valid = layout.words(rule.workspaces)
    outside = set(layout.words()) - set(valid)
    for name in scope:
        if name in outside:
            problems.append(
                (f"{where}.scope", f"{name!r} is not in the rule's workspaces: {rule.workspaces}")
            )
        elif name not in valid:
            hint = did_you_mean(name, valid) or ": not an agent name"
            problems.append((f"{where}.scope", f"unknown series {name!r}{hint}"))
    return problems


def _rule_workspaces_problems(
    where: str, rule: ThresholdRule | ChangeRule, layout: _Layout
) -> list[tuple[str, str]]:
    """`workspaces = [...]` names workspaces of the file, and only a file that has them."""
    if rule.workspaces is None:
        return []
    if not layout.workspaces:
        return [(f"{where}.workspaces", "this file has no [[workspaces]]")]
    if not rule.workspaces:
        return [(f"{where}.workspaces", "must name at least one workspace (leave it out for all)")]
    problems: list[tuple[str, str]] = []
    for name in rule.workspaces:
        if name not in layout.workspaces:
            hint = did_you_mean(name, list(layout.workspaces)) or ": not a workspace name"
            problems.append((f"{where}.workspaces", f"unknown workspace {name!r}{hint}"))
    return problems


def _inhibition_problems(
    where: str, rule: ThresholdRule | ChangeRule, known_rules: set[str]
) -> list[tuple[str, str]]:
    """`inhibited_by` names rules that exist (the built-in ones too), never the rule itself."""
    rules = sorted(known_rules | {NO_DATA_RULE, WATCHDOG_BEHIND_RULE, *_PLAN_RULES})
    problems: list[tuple[str, str]] = []
    for name in rule.inhibited_by:
        if name == rule.name:
            problems.append((f"{where}.inhibited_by", "a rule cannot inhibit itself"))
        elif name not in rules:
            hint = did_you_mean(name, rules) or ": not a rule name"
            problems.append((f"{where}.inhibited_by", f"unknown rule {name!r}{hint}"))
    return problems


def _threshold_problems(where: str, rule: ThresholdRule) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if (rule.above is None) == (rule.below is None):
        problems.append((f"{where}.above", "set exactly one of 'above' or 'below'"))
        return problems
    if rule.above is not None:
        if rule.recover_above is not None:
            problems.append((f"{where}.recover_above", "an 'above' rule uses 'recover_below'"))
        if rule.recover_below is not None and rule.recover_below > rule.above + 1:
            problems.append(
                (
                    f"{where}.recover_below",
                    f"must be <= above ({rule.above}): it resolves when count < recover_below",
                )
            )
    if rule.below is not None:
        if rule.recover_below is not None:
            problems.append((f"{where}.recover_below", "a 'below' rule uses 'recover_above'"))
        if rule.recover_above is not None and rule.recover_above < rule.below - 1:
            problems.append(
                (
                    f"{where}.recover_above",
                    f"must be >= below ({rule.below}): it resolves when count > recover_above",
                )
            )
        if rule.below == 0:
            problems.append((f"{where}.below", "count < 0 can never hold: use below = 1"))
    for i, stage in enumerate(rule.escalate):
        problems.extend(_escalation_problems(f"{where}.escalate[{i}]", rule, stage))
    return problems


def _escalation_problems(
    where: str, rule: ThresholdRule, stage: EscalationStage
) -> list[tuple[str, str]]:
    """An escalation stage lies beyond the rule's threshold and changes something."""
    problems: list[tuple[str, str]] = []
    given = [k for k in ("above", "below", "after") if getattr(stage, k) is not None]
    if len(given) != 1:
        problems.append((f"{where}.above", "set exactly one of 'above', 'below' or 'after'"))
    side = "above" if rule.above is not None else "below"
    other = "below" if side == "above" else "above"
    if getattr(stage, other) is not None:
        problems.append((f"{where}.{other}", f"an '{side}' rule escalates with '{side}'"))
    if rule.above is not None and stage.above is not None and stage.above <= rule.above:
        problems.append(
            (
                f"{where}.above",
                f"must be more than the rule's above ({rule.above}): an escalation lies beyond it",
            )
        )
    if rule.below is not None and stage.below is not None and stage.below >= rule.below:
        problems.append(
            (
                f"{where}.below",
                f"must be less than the rule's below ({rule.below}): an escalation lies beyond it",
            )
        )
    if stage.recover_below is not None:
        if stage.above is None:
            problems.append((f"{where}.recover_below", "only a stage with 'above' has it"))
        elif stage.recover_below > stage.above + 1:
            problems.append((f"{where}.recover_below", f"must be <= above ({stage.above})"))
    if stage.recover_above is not None:
        if stage.below is None:
            problems.append((f"{where}.recover_above", "only a stage with 'below' has it"))
        elif stage.recover_above < stage.below - 1:
            problems.append((f"{where}.recover_above", f"must be >= below ({stage.below})"))
    if stage.after is not None and stage.after <= timedelta(0):
        problems.append((f"{where}.after", "must be more than 0s"))
    if stage.severity is None and stage.mention is None:
        problems.append((f"{where}", "set 'severity' or 'mention': a stage must change something"))
    elif stage.severity is not None and more_severe(rule.severity, stage.severity) is rule.severity:
        problems.append(
            (
                f"{where}.severity",
                f"must be more severe than the rule's severity ({rule.severity.value})",
            )
        )
    return problems


def _change_problems(where: str, rule: ChangeRule) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    given = [k for k in ("drop", "rise", "drop_pct", "rise_pct") if getattr(rule, k) is not None]
    if len(given) != 1:
        problems.append(
            (f"{where}.drop", "set exactly one of 'drop', 'rise', 'drop_pct' or 'rise_pct'")
        )
    if rule.window <= timedelta(0):
        problems.append((f"{where}.window", "must be more than 0s"))
    if (rule.drop is not None and rule.drop == 0) or (rule.rise is not None and rule.rise == 0):
        problems.append((f"{where}.{given[0]}", "must be more than 0"))
    if rule.drop_pct is not None and rule.drop_pct > 100:
        problems.append((f"{where}.drop_pct", "a count cannot drop by more than 100%"))
    return problems


def parse_config(
    text: str, *, source: str = "<rules>", overrides: Mapping[str, str] | None = None
) -> Config:
    """Validate a rules document; raise ConfigError listing every problem found."""
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{source}: TOML syntax error: {exc}"]) from None
    except RecursionError:
        raise ConfigError([f"{source}: TOML nested too deeply"]) from None
    spelling = _spelling_problems(data)  # of the file itself, before the environment
    from_env = tuple(overrides or ())
    if overrides:
        section = data.setdefault("watchdog", {})
        if not isinstance(section, dict):
            raise ConfigError([f"{source}: watchdog: must be a table"])
        for key, value in overrides.items():
            numeric = key == "concurrency" and value.isascii() and value.isdigit()
            section[key] = int(value) if numeric else value
    layout = _raw_layout(data)
    known_rules = _raw_names(data.get("rules"))

    def where(location: str) -> str:
        return location if location.startswith("environment: ") else f"{source}: {location}"

    problems: list[str] = []
    context = _plan_context(data)
    try:
        parsed = _ConfigFile.model_validate(data, context=context)
    except ValidationError as exc:
        for error in exc.errors():
            loc = tuple(error["loc"])
            if overrides and len(loc) == 2 and loc[0] == "watchdog" and loc[1] in overrides:
                # The environment's value is at fault, not the file's.
                problems.append(f"environment: WATCHDOG_{str(loc[1]).upper()}: {_message(error)}")
                continue
            problems.append(f"{source}: {_loc(data, loc)}: {_message(error)}")
        parts = _valid_parts(data, context)
        for location, message in _semantic_problems(parts, layout, from_env, known_rules):
            problems.append(f"{where(location)}: {message}")
        problems += [f"{where(location)}: {message}" for location, message in spelling]
        raise ConfigError(problems) from None
    agents, rules = list(enumerate(parsed.agents)), list(enumerate(parsed.rules))
    parts = _Parts(
        parsed.watchdog,
        parsed.no_data,
        agents,
        rules,
        list(enumerate(parsed.mute)),
        list(enumerate(parsed.workspaces)),
    )
    semantic = _semantic_problems(parts, layout, from_env, known_rules)
    semantic += _webhook_problems(parsed.webhooks, known_rules)
    scopes = {rule.name: layout.scope(rule) for rule in parsed.rules}
    variants, percent_problems = _workspace_variants(data, parsed, scopes, context)
    for location, message in [*semantic, *percent_problems, *spelling]:
        problems.append(f"{where(location)}: {message}")
    if problems:
        raise ConfigError(problems)
    own = {rule.name for rule in parsed.rules}
    built_in, built_in_scopes, built_in_variants = _built_in_plan_rules(parsed, own)
    return Config(
        source=source,
        watchdog=parsed.watchdog,
        slack=parsed.slack,
        agents=tuple(parsed.agents) or tuple(a for ws in parsed.workspaces for a in ws.agents),
        rules=(*parsed.rules, *built_in),
        scopes={**scopes, **built_in_scopes},
        workspaces=tuple(parsed.workspaces),
        variants={**variants, **built_in_variants},
        no_data=_no_data_in_force(parsed.watchdog, parsed.no_data, from_env),
        mutes=tuple(parsed.mute),
        plan=parsed.plan,
        report=parsed.report,
        storm=parsed.storm,
        pagerduty=parsed.pagerduty,
        webhooks=tuple(parsed.webhooks),
    )


_Variants = dict[tuple[str, str], "ThresholdRule | ChangeRule"]


def _built_in_plan_rules(
    parsed: _ConfigFile, own: set[str]
) -> tuple[list[PlanLimitRule], dict[str, tuple[str, ...]], _Variants]:
    """The `[plan]` rules on each workspace series whose plan is in force (its own
    `[workspaces.plan]`, else `[plan]`), unless the file has a rule of that name.

    One rule per name; a workspace whose plan differs has its own variant of it.
    """
    plans: list[tuple[str, PlanSection]] = []
    if not parsed.workspaces:
        plans = [(WORKSPACE, parsed.plan)] if parsed.plan is not None else []
    for ws in parsed.workspaces:
        plan = ws.plan or parsed.plan
        if plan is not None:
            plans.append((series_name(ws.name, WORKSPACE), plan))
    rules: dict[str, PlanLimitRule] = {}
    scopes: dict[str, tuple[str, ...]] = {}
    variants: _Variants = {}
    for series, plan in plans:
        for rule in plan_rules(plan):
            if rule.name in own:
                continue
            base = rules.setdefault(rule.name, rule)
            scopes[rule.name] = (*scopes.get(rule.name, ()), series)
            if rule != base:
                variants[(rule.name, series)] = rule
    return list(rules.values()), scopes, variants


def _uses_percentages(rule: ThresholdRule | ChangeRule) -> bool:
    if not isinstance(rule, ThresholdRule):
        return False
    return bool(rule.percentages) or any(stage.percentages for stage in rule.escalate)


def _workspace_variants(
    data: Mapping[str, Any],
    parsed: _ConfigFile,
    scopes: Mapping[str, tuple[str, ...]],
    context: Mapping[str, object],
) -> tuple[_Variants, list[tuple[str, str]]]:
    """Rules written as percentages, resolved against each workspace's own plan.

    A percentage means a share of the plan of the workspace a series belongs to; where
    that is not the plan the file was validated against, the rule has a variant there.
    A workspace without any plan cannot resolve one: a problem naming it.
    """
    if not parsed.workspaces:
        return {}, []
    plans = {ws.name: ws.plan or parsed.plan for ws in parsed.workspaces}
    raw_rules: list[Any] = data.get("rules") or []
    variants: _Variants = {}
    problems: list[tuple[str, str]] = []
    for i, rule in enumerate(parsed.rules):
        if not _uses_percentages(rule):
            continue
        where = f"rules[{i}] ({_printable(rule.name)})"
        for series in scopes.get(rule.name, ()):
            workspace = workspace_of(series)
            plan = plans.get(workspace)
            if plan is None:
                problems.append(
                    (
                        f"{where}.scope",
                        f"a percentage needs the plan of workspace {workspace!r}: set"
                        " [plan] or that workspace's [workspaces.plan]",
                    )
                )
            elif plan != context.get(_PLAN_CONTEXT):
                variants[(rule.name, series)] = _RULE.validate_python(
                    raw_rules[i], context={_PLAN_CONTEXT: plan}
                )
    return variants, problems


def _raw_names(items: object) -> set[str]:
    """The `name`s of a raw array of tables, whether or not its items are valid."""
    return {
        item["name"]
        for item in (items if isinstance(items, list) else [])
        if isinstance(item, dict) and isinstance(item.get("name"), str)
    }


def _plan_context(data: Mapping[str, Any]) -> dict[str, object]:
    """The validation context that resolves percentages: the `[plan]`, or why it cannot.

    `[plan]` is read first so that the rules of the same file can be checked against it;
    its own problems are reported where the file is validated as a whole.
    """
    raw, name = data.get("plan"), "[plan]"
    if raw is None:  # else the first workspace's own plan (see `_workspace_variants`)
        raw_workspaces = data.get("workspaces")
        for item in raw_workspaces if isinstance(raw_workspaces, list) else []:
            if isinstance(item, dict) and item.get("plan") is not None:
                raw, name = item["plan"], "[workspaces.plan]"
                break
    if raw is None:
        return {}
    try:
        return {_PLAN_CONTEXT: PlanSection.model_validate(raw)}
    except ValidationError:
        return {_PLAN_CONTEXT: f"{name} is not valid"}


_RULE: TypeAdapter[ThresholdRule | ChangeRule] = TypeAdapter(Rule)


def _valid_parts(data: Mapping[str, Any], context: dict[str, object]) -> _Parts:
    """The sections and items of a file that failed validation which are valid alone."""
    agents: list[tuple[int, Agent]] = []
    rules: list[tuple[int, ThresholdRule | ChangeRule]] = []
    mutes: list[tuple[int, MuteWindow]] = []
    raw_agents, raw_rules, raw_mutes = data.get("agents"), data.get("rules"), data.get("mute")
    for i, raw in enumerate(raw_agents if isinstance(raw_agents, list) else []):
        with contextlib.suppress(ValidationError):
            agents.append((i, Agent.model_validate(raw)))
    for i, raw in enumerate(raw_rules if isinstance(raw_rules, list) else []):
        with contextlib.suppress(ValidationError):
            rules.append((i, _RULE.validate_python(raw, context=context)))
    for i, raw in enumerate(raw_mutes if isinstance(raw_mutes, list) else []):
        with contextlib.suppress(ValidationError):
            mutes.append((i, MuteWindow.model_validate(raw)))
    workspaces: list[tuple[int, WorkspaceSection]] = []
    raw_workspaces = data.get("workspaces")
    for i, raw in enumerate(raw_workspaces if isinstance(raw_workspaces, list) else []):
        with contextlib.suppress(ValidationError):
            workspaces.append((i, WorkspaceSection.model_validate(raw)))
    watchdog = _valid_or_none(WatchdogSection, data.get("watchdog", {}))
    no_data = _valid_or_none(NoDataSection, data.get("no_data", {}))
    return _Parts(watchdog, no_data, agents, rules, mutes, workspaces)


def _valid_or_none(model: type[_Model], raw: object) -> _Model | None:
    try:
        return model.model_validate(raw)
    except ValidationError:
        return None


def load_config(path: Path, *, overrides: Mapping[str, str] | None = None) -> Config:
    """Read and validate a rules file; unreadable files are a ConfigError too."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text (byte {exc.start})"]) from None
    return parse_config(text, source=str(path), overrides=overrides)
