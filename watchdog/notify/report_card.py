"""Turn a daily `Report` into what a human reads: plain lines and a Slack Block Kit message.

Pure, like `watchdog.notify.render`, and within the same Slack limits: a message has at
most 50 blocks, so a report of many series shows the first `_SERIES_SHOWN` and says how
many it left out (`watchdog report` prints them all).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, datetime, timedelta

from watchdog.durations import format_duration
from watchdog.model import WORKSPACE, Notification, Severity, TransitionKind
from watchdog.notify.render import (
    RenderedMessage,
    _context,
    _header,
    _section,
    _slack_date,
    escape,
    format_count,
    sparkline,
)
from watchdog.report import Report, RuleFigures, SeriesFigures

__all__ = [
    "REPORT_RULE",
    "prerendered",
    "render_report",
    "report_lines",
    "report_notification",
]

REPORT_RULE = "report"
"""The `rule` a report notification carries, for logs (it is no rule's alert)."""

_SERIES_SHOWN = 40
"""Series sections per message: with the header, rules and the note, within 50 blocks."""


def shape_line(shape: Sequence[int | None]) -> str:
    """The day's sparkline: one bar per bucket, a blank where nothing was sampled."""
    bars = iter(sparkline([count for count in shape if count is not None]))
    return "".join(" " if count is None else next(bars) for count in shape)


def _minutes(value: float) -> str:
    return format_duration(timedelta(minutes=value))


def series_summary(figures: SeriesFigures) -> str:
    """The figures of one series on one line, as `watchdog report` prints them."""
    return (
        f"peak {format_count(figures.max)} at {figures.peak_at.isoformat()}, "
        f"p50 {format_count(figures.p50)}, p95 {format_count(figures.p95)}, "
        f"mean {figures.mean:.1f}, min {format_count(figures.min)} "
        f"({figures.samples:,} samples)"
    )


def time_spent(figures: SeriesFigures) -> str:
    """Time beyond each threshold rule's level, in burst, at capacity, without data."""
    parts = [f"above {rule}'s level {_minutes(m)}" for rule, m in figures.minutes_above]
    if figures.minutes_in_burst is not None:
        parts.append(f"in burst {_minutes(figures.minutes_in_burst)}")
    if figures.minutes_at_capacity is not None:
        parts.append(f"at capacity {_minutes(figures.minutes_at_capacity)}")
    parts.append(f"without data {_minutes(figures.minutes_without_data)}")
    return "; ".join(parts)


def rule_summary(figures: RuleFigures) -> str:
    return (
        f"{figures.rule}: fired {figures.fired}, "
        f"firing {format_duration(timedelta(seconds=figures.firing_seconds))}"
    )


def report_lines(report: Report) -> list[str]:
    """The whole report as plain text lines (the CLI's output)."""
    lines = [f"Report from {report.start.isoformat()} to {report.end.isoformat()}"]
    for figures in report.series:
        lines.append(f"{figures.series}  {shape_line(figures.shape)}")
        lines.append(f"  {series_summary(figures)}")
        lines.append(f"  {time_spent(figures)}")
    lines.append("Alerts")
    lines += [f"  {rule_summary(rule)}" for rule in report.rules]
    return lines


def render_report(report: Report, *, title: str) -> RenderedMessage:
    """The report as one top-level Slack message (header, a section per series, alerts)."""
    blocks = [_header(title)]
    for figures in report.series[:_SERIES_SHOWN]:
        blocks.append(
            _section(
                f"*{escape(figures.series)}*  `{shape_line(figures.shape)}`\n"
                f"{escape(series_summary(figures))}\n{escape(time_spent(figures))}"
            )
        )
    left_out = len(report.series) - _SERIES_SHOWN
    if left_out > 0:
        blocks.append(_context(f"{left_out} more series: see `watchdog report`"))
    alerts = "\n".join(escape(rule_summary(rule)) for rule in report.rules)
    blocks.append(_section(f"*Alerts*\n{alerts or 'no rules'}"))
    blocks.append(_context(f"{_slack_date(report.start)} to {_slack_date(report.end)}"))
    return RenderedMessage(text=title, blocks=blocks)


def report_notification(report: Report, *, day: date, channel: str, at: datetime) -> Notification:
    """The daily report of `day` as a REPORT notification for `channel`'s outbox queue.

    Its alert id names the day, so the Slack bot's lookup of a post whose answer was
    lost finds this day's report and no other.
    """
    message = render_report(report, title=f"Daily report: {day.isoformat()}")
    body = {
        "text": message.text,
        "blocks": message.blocks,
        "plain": [message.text, *report_lines(report)[1:]],
    }
    return Notification(
        alert_id=f"report-{day.isoformat()}",
        kind=TransitionKind.REPORT,
        rule=REPORT_RULE,
        series=WORKSPACE,
        severity=Severity.INFO,
        at=at,
        since=report.start,
        count=None,
        condition="",
        channel=channel,
        message=json.dumps(body, ensure_ascii=False),
    )


def prerendered(note: Notification) -> tuple[RenderedMessage, list[str]]:
    """A REPORT notification's message as queued, and its plain-text lines (the console's)."""
    body = json.loads(note.message or "{}")
    message = RenderedMessage(text=str(body.get("text", "")), blocks=list(body.get("blocks", [])))
    return message, [str(line) for line in body.get("plain", [])]
