"""The daily report: what each series did over a span, for capacity planning.

Pure: samples and the transitions replay decided over them go in, figures come out
(`build_report`); the CLI and the daemon read them from a CSV or the state database.

How each figure is defined, so a test can compute it by hand:

- A sample *holds* its count from its time until the next sample of its series, but
  never longer than two poll intervals (a longer gap is a gap in the data, as replay
  reads it: the sample then holds for one poll interval), nor past the span's end.
  Time of the span that no sample of the series holds is *without data*.
- `minutes_above[rule]`: how long the held count was beyond a threshold rule's level
  (`count > above`, or `count < below`), for each threshold rule scoped to the series
  (but `[plan]`'s built-in ones, which the next two figures are).
  With `[plan]`, `minutes_in_burst` (count above the concurrency limit, burst enabled)
  and `minutes_at_capacity` (count at or above the hard cap) are the same measure of
  the workspace's count.
- `min`, `max` and `mean` are over the samples' counts (each sample weighs the same);
  `peak_at` is the time of the first sample with the maximum.
- Percentiles use the nearest-rank method: of the n counts sorted ascending, the p-th
  percentile is the one at rank ceil(p/100 * n) (1-based). No interpolation, so the
  figure is always a count that was actually seen.
- `shape`: the span cut into `SHAPE_BUCKETS` equal buckets, each the largest count
  sampled in it (None when it has no sample): a day's sparkline, one bar per hour.
- Per rule, `fired` counts the FIRING transitions in the span and `firing_seconds`
  adds up how long those alerts fired until resolved or the span's end.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from watchdog.model import (
    NO_DATA_RULE,
    Sample,
    Transition,
    TransitionKind,
    workspace_series,
)
from watchdog.replay import replay
from watchdog.rules import Config, PlanLimitRule, ReportSection, ThresholdRule

SHAPE_BUCKETS = 24
"""Bars of the sparkline: one per hour of a day."""


@dataclass(frozen=True, slots=True)
class SeriesFigures:
    """What one series did over the span; see the module docstring for each figure."""

    series: str
    samples: int
    min: int
    max: int
    peak_at: datetime
    p50: int
    p95: int
    mean: float
    minutes_above: tuple[tuple[str, float], ...]
    minutes_without_data: float
    shape: tuple[int | None, ...]
    minutes_in_burst: float | None = None
    minutes_at_capacity: float | None = None

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "series": self.series,
            "samples": self.samples,
            "min": self.min,
            "max": self.max,
            "peak_at": self.peak_at.isoformat(),
            "p50": self.p50,
            "p95": self.p95,
            "mean": round(self.mean, 3),
            "minutes_above": {rule: round(m, 3) for rule, m in self.minutes_above},
            "minutes_without_data": round(self.minutes_without_data, 3),
        }
        if self.minutes_in_burst is not None:
            data["minutes_in_burst"] = round(self.minutes_in_burst, 3)
        if self.minutes_at_capacity is not None:
            data["minutes_at_capacity"] = round(self.minutes_at_capacity, 3)
        return data


@dataclass(frozen=True, slots=True)
class RuleFigures:
    """How often one rule fired over the span, and for how long in all."""

    rule: str
    fired: int
    firing_seconds: float

    def to_json(self) -> dict[str, object]:
        return {"rule": self.rule, "fired": self.fired, "firing_seconds": self.firing_seconds}


@dataclass(frozen=True, slots=True)
class Report:
    """The figures of every series with samples, and of every rule, over [start, end)."""

    start: datetime
    end: datetime
    series: tuple[SeriesFigures, ...]
    rules: tuple[RuleFigures, ...]


def build_report(
    config: Config,
    samples: Iterable[Sample],
    transitions: Iterable[Transition],
    *,
    start: datetime,
    end: datetime,
) -> Report:
    """The report of the samples and transitions within [start, end)."""
    by_series: dict[str, list[Sample]] = {}
    for sample in sorted(samples, key=lambda s: s.at):
        if start <= sample.at < end:
            by_series.setdefault(sample.series, []).append(sample)
    order = [name for name, _ in config.series]
    names = sorted(
        by_series, key=lambda n: (n not in order, order.index(n) if n in order else 0, n)
    )
    step = config.watchdog.poll_interval
    series = tuple(
        _series_figures(config, name, by_series[name], start, end, step) for name in names
    )
    return Report(start, end, series, _rule_figures(config, transitions, start, end))


def percentile(counts: Sequence[int], p: float) -> int:
    """The nearest-rank p-th percentile of `counts` (non-empty), see the module docstring."""
    ordered = sorted(counts)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def _held(samples: Sequence[Sample], end: datetime, step: timedelta) -> list[tuple[int, float]]:
    """Each sample's count with the seconds it holds (see the module docstring)."""
    out = []
    for sample, after in zip(samples, [*samples[1:], None], strict=True):
        until = end if after is None else after.at
        if until - sample.at > 2 * step:
            until = sample.at + step
        out.append((sample.count, (min(until, end) - sample.at).total_seconds()))
    return out


def _series_figures(
    config: Config,
    name: str,
    samples: Sequence[Sample],
    start: datetime,
    end: datetime,
    step: timedelta,
) -> SeriesFigures:
    counts = [s.count for s in samples]
    held = _held(samples, end, step)

    def minutes(beyond: Callable[[int], bool]) -> float:
        return sum(seconds for count, seconds in held if beyond(count)) / 60

    above = tuple(
        (rule.name, minutes(_beyond(on)))
        for rule in config.rules
        if isinstance(rule, ThresholdRule)
        and not isinstance(rule, PlanLimitRule)  # said as in burst / at capacity
        and name in config.scopes.get(rule.name, ())
        and isinstance(on := config.rule_on(rule.name, name), ThresholdRule)
    )
    peak = max(counts)
    plan = config.plan_for(name) if name == workspace_series(name) else None
    return SeriesFigures(
        series=name,
        samples=len(samples),
        min=min(counts),
        max=peak,
        peak_at=next(s.at for s in samples if s.count == peak),
        p50=percentile(counts, 50),
        p95=percentile(counts, 95),
        mean=sum(counts) / len(counts),
        minutes_above=above,
        minutes_without_data=((end - start).total_seconds() - sum(s for _, s in held)) / 60,
        shape=_shape(samples, start, end),
        minutes_in_burst=(
            None if plan is None else minutes(lambda c: plan.burst and c > plan.concurrency_limit)
        ),
        minutes_at_capacity=None if plan is None else minutes(lambda c: c >= plan.hard_cap),
    )


def _beyond(rule: ThresholdRule) -> Callable[[int], bool]:
    """Whether a count is beyond the rule's level (where its condition holds)."""
    above, below = rule.above, rule.below
    if above is not None:
        return lambda count: count > above
    assert below is not None  # a threshold rule has one of the two (rules validates it)
    return lambda count: count < below


def _shape(samples: Sequence[Sample], start: datetime, end: datetime) -> tuple[int | None, ...]:
    buckets: list[int | None] = [None] * SHAPE_BUCKETS
    span = (end - start).total_seconds()
    for sample in samples:
        index = min(
            SHAPE_BUCKETS - 1, int((sample.at - start).total_seconds() / span * SHAPE_BUCKETS)
        )
        current = buckets[index]
        buckets[index] = sample.count if current is None else max(current, sample.count)
    return tuple(buckets)


def _rule_figures(
    config: Config, transitions: Iterable[Transition], start: datetime, end: datetime
) -> tuple[RuleFigures, ...]:
    fired: dict[str, int] = {}
    seconds: dict[str, float] = {}
    firing_since: dict[str, tuple[str, datetime]] = {}
    for t in sorted(transitions, key=lambda t: t.at):
        if t.kind is TransitionKind.FIRING and start <= t.at < end:
            fired[t.rule] = fired.get(t.rule, 0) + 1
            firing_since[t.alert_id] = (t.rule, t.at)
        elif t.kind is TransitionKind.RESOLVED and t.alert_id in firing_since:
            rule, since = firing_since.pop(t.alert_id)
            seconds[rule] = seconds.get(rule, 0.0) + (min(t.at, end) - since).total_seconds()
    for rule, since in firing_since.values():
        seconds[rule] = seconds.get(rule, 0.0) + (end - since).total_seconds()
    names = [*(rule.name for rule in config.rules), NO_DATA_RULE]
    return tuple(RuleFigures(n, fired.get(n, 0), seconds.get(n, 0.0)) for n in names)


def report_of(
    config: Config,
    samples: Sequence[Sample],
    *,
    start: datetime,
    end: datetime,
    resolution: timedelta = timedelta(0),
) -> Report:
    """The report of recorded samples, with the alerts replay says the rules fired on them.

    `resolution`: the spacing of recorded samples when coarser than the poll interval
    (the state database keeps one sample a minute of history older than an hour), so
    that thinned history is read as held counts, not as gaps without data.
    """
    step = max(config.watchdog.poll_interval, resolution)
    if step != config.watchdog.poll_interval:
        watchdog = config.watchdog.model_copy(update={"poll_interval": step})
        config = dataclasses.replace(config, watchdog=watchdog)
    return build_report(config, samples, replay(config, samples), start=start, end=end)


def day_span(day: date, section: ReportSection) -> tuple[datetime, datetime]:
    """The calendar `day` in the report's time zone, as [start, end) (23 or 25 h on DST days)."""
    zone = section.zone
    start = datetime.combine(day, time(0), zone)
    return start.astimezone(UTC), datetime.combine(
        day + timedelta(days=1), time(0), zone
    ).astimezone(UTC)


def due_day(now: datetime, section: ReportSection, last_reported: date | None) -> date | None:
    """The day whose report is due at `now`, or None: that of yesterday once `at` has passed
    today (in `tz`), else that of the day before; None when it was reported already.

    Only the latest due day is ever reported: a daemon that was down over several report
    times sends one report (the latest it missed) when it comes back, not a backlog.
    """
    local = now.astimezone(section.zone)
    scheduled = datetime.combine(local.date(), section.time_of_day, section.zone)
    day = local.date() - timedelta(days=1 if local >= scheduled else 2)
    if last_reported is not None and last_reported >= day:
        return None
    return day
