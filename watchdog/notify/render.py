"""Turn a `Notification` into what a human reads: Slack Block Kit plus a plain-text fallback.

Pure functions only, so every wording decision can be tested without a network, and the
bot, webhook and console deliveries all say the same thing. Slack limits (header 150
characters, section text 3000, field 2000) are respected here, because a message Slack
rejects as `invalid_blocks` is an alert nobody sees.

Which rendering goes where:

- `render(note)`: the message for the kind as it lands in the alert's thread: the firing
  card for FIRING, a short reply for REPEAT and RESOLVED.
- `render_resolved_original(note)`: the firing card edited in place to show it resolved.
- `render_top_level(note)`: a self-contained message for when there is no thread to reply
  in (webhooks, or a lost original): the full card for every kind.
- A "fired and resolved" notification (one that stands for a whole episode whose firing
  card was never sent, see `watchdog.notify.coalesce`) has no thread: `render` and
  `render_top_level` both give its own card, `render_fired_and_resolved`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from watchdog.durations import format_duration
from watchdog.model import Notification, Severity, TransitionKind

__all__ = [
    "SPARK_GLYPHS",
    "RenderedMessage",
    "escape",
    "format_count",
    "render",
    "render_fired_and_resolved",
    "render_resolved_original",
    "render_top_level",
    "severity_emoji",
    "sparkline",
]

SPARK_GLYPHS = "▁▂▃▄▅▆▇█"
"""Sparkline bars, lowest first."""

_FLAT_GLYPH = SPARK_GLYPHS[3]
"""A series without variation is drawn mid-height: neither alarming nor empty."""

_HEADER_LIMIT = 150
_SECTION_LIMIT = 3000
_FIELD_LIMIT = 2000
_NAME_LIMIT = 200
_REASON_LIMIT = 500

_SEVERITY_EMOJI = {
    Severity.CRITICAL: "🔴",
    Severity.WARNING: "🟠",
    Severity.INFO: "🔵",
}
_RESOLVED_EMOJI = "✅"
_REPEAT_EMOJI = "🔁"


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    """One Slack message: `text` is what notifications and block-less clients show."""

    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)


def format_count(count: int | None, limit: int | None = None) -> str:
    """The one way a conversation count is shown to humans; None means the poll failed.

    With the plan's concurrency `limit` the count is shown against it, `27 / 30 (90 %)`,
    since how close the workspace is to its limit is what the reader needs to judge.
    """
    if count is None:
        return "no data"
    if limit is None:
        return f"{count:,}"
    percent = (200 * count + limit) // (2 * limit)  # rounded half up, in integers
    return f"{count:,} / {limit:,} ({percent} %)"


def severity_emoji(severity: Severity) -> str:
    """Colour-coded so the severity is visible in a notification preview."""
    return _SEVERITY_EMOJI[severity]


def sparkline(counts: Sequence[int]) -> str:
    """One bar per count, scaled from the series' min (▁) to its max (█).

    The scale is relative, so the shape shows the trend; the caller prints min and max
    next to it for the absolute values. A flat series is all mid-height bars.
    """
    if not counts:
        return ""
    low, high = min(counts), max(counts)
    if low == high:
        return _FLAT_GLYPH * len(counts)
    span = high - low
    top = len(SPARK_GLYPHS) - 1
    # Integer round-half-up keeps the mapping monotone and puts the max exactly on █.
    return "".join(SPARK_GLYPHS[((c - low) * top * 2 + span) // (2 * span)] for c in counts)


def escape(text: str) -> str:
    """Escape Slack's three control characters so user text cannot form links or mentions."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render(note: Notification) -> RenderedMessage:
    """The message for `note` as delivered into the alert's conversation (see module doc)."""
    if note.fired_and_resolved:
        return render_fired_and_resolved(note)
    if note.kind is TransitionKind.FIRING:
        return _card(note, verb="FIRING")
    if note.kind is TransitionKind.REPEAT:
        return _repeat_reply(note)
    if note.kind is TransitionKind.RESOLVED:
        return _resolved_reply(note)
    raise ValueError(f"transition kind {note.kind.value!r} is never notified")


def render_top_level(note: Notification) -> RenderedMessage:
    """A message that makes sense on its own, for deliveries that cannot thread."""
    if note.kind is TransitionKind.FIRING:
        return _card(note, verb="FIRING")
    if note.kind is TransitionKind.REPEAT:
        return _card(note, verb="STILL FIRING")
    if note.fired_and_resolved:
        return render_fired_and_resolved(note)
    if note.kind is TransitionKind.RESOLVED:
        return render_resolved_original(note)
    raise ValueError(f"transition kind {note.kind.value!r} is never notified")


def render_fired_and_resolved(note: Notification) -> RenderedMessage:
    """One card for an alert that fired and resolved before its firing card could go out.

    Both ends are shown (when and with what count it fired, when and why it resolved), so
    the channel learns of the episode without a stale "FIRING" card followed by its
    resolution. It carries no mention: nobody needs paging for an alert that is over.
    """
    if note.fired_at is None:
        raise ValueError("a fired-and-resolved card needs the firing time")
    rule, series, condition = _names(note)
    held = _held(note)
    reason = _reason(note)
    fields = [
        ("Series", series),
        ("Count at firing", format_count(note.fired_count, note.limit)),
        ("Count now", format_count(note.count, note.limit)),
        ("Lasted", held),
        ("Condition", condition),
        ("Severity", note.severity.value),
    ]
    if reason:
        fields.append(("Resolved because", reason))
    blocks = [
        _header(f"{_RESOLVED_EMOJI} FIRED AND RESOLVED: {_clip(note.rule, _NAME_LIMIT)}"),
        _fields(fields),
    ]
    blocks.extend(_trend_blocks(note.recent))
    if note.runbook:
        blocks.append(_section(f"*Runbook*: {_link(note.runbook, 'open the runbook')}"))
    blocks.append(
        _context(
            f"fired {_slack_date(note.fired_at)} · resolved {_slack_date(note.at)}"
            f" · sent after it resolved · alert `{escape(note.alert_id)}`"
        )
    )
    because = f" — {reason}" if reason else ""
    text = (
        f"{_RESOLVED_EMOJI} FIRED AND RESOLVED [{_label(note)}] {rule} on {series}: fired with "
        f"{_count_phrase(note.fired_count, note.limit)} ({condition}), resolved after {held} with "
        f"{_count_phrase(note.count, note.limit)}{because}"
    )
    return RenderedMessage(text=_clip(text, _SECTION_LIMIT), blocks=blocks)


def render_resolved_original(note: Notification) -> RenderedMessage:
    """The firing card rewritten as resolved, so the channel history reads as settled.

    It carries no mention: a resolution should not page anyone.
    """
    rule, series, condition = _names(note)
    held = _held(note)
    reason = _reason(note)
    fields = [
        ("Series", series),
        ("Count now", format_count(note.count, note.limit)),
        ("Fired for", held),
        ("Condition", condition),
        ("Severity", note.severity.value),
    ]
    if reason:
        fields.append(("Resolved because", reason))
    blocks = [
        _header(f"{_RESOLVED_EMOJI} RESOLVED: {_clip(note.rule, _NAME_LIMIT)}"),
        _fields(fields),
    ]
    blocks.extend(_trend_blocks(note.recent))
    blocks.append(
        _context(
            f"fired {_slack_date(note.since)} · resolved {_slack_date(note.at)}"
            f" · alert `{escape(note.alert_id)}`"
        )
    )
    because = f" — {reason}" if reason else ""
    text = (
        f"{_RESOLVED_EMOJI} RESOLVED [{_label(note)}] {rule} on {series} after {held}: "
        f"{_count_phrase(note.count, note.limit)}{because} (was {condition})"
    )
    return RenderedMessage(text=_clip(text, _SECTION_LIMIT), blocks=blocks)


def _card(note: Notification, *, verb: str) -> RenderedMessage:
    rule, series, condition = _names(note)
    held = _held(note)
    reason = _reason(note)
    emoji = severity_emoji(note.severity)
    blocks = [
        _header(f"{emoji} {verb}: {_clip(note.rule, _NAME_LIMIT)}"),
        _fields(
            [
                ("Series", series),
                ("Count now", format_count(note.count, note.limit)),
                ("Condition", condition),
                ("Holding for", held),
                ("Severity", note.severity.value),
            ]
        ),
    ]
    blocks.extend(_trend_blocks(note.recent))
    if reason:
        blocks.append(_section(f"*Reason*\n{reason}"))
    if note.runbook:
        blocks.append(_section(f"*Runbook*: {_link(note.runbook, 'open the runbook')}"))
    if note.mention:
        blocks.append(_section(f"Paging {note.mention}"))
    blocks.append(_context(f"since {_slack_date(note.since)} · alert `{escape(note.alert_id)}`"))
    because = f" — {reason}" if reason else ""
    paging = f" {note.mention}" if note.mention else ""
    count = _count_phrase(note.count, note.limit)
    text = (
        f"{emoji} {verb} [{_label(note)}] {rule} on {series}: {count} "
        f"({condition}) for {held}{because}{paging}"
    )
    return RenderedMessage(text=_clip(text, _SECTION_LIMIT), blocks=blocks)


def _repeat_reply(note: Notification) -> RenderedMessage:
    rule, series, condition = _names(note)
    held = _held(note)
    reason = _reason(note)
    now = _count_phrase(note.count, note.limit, "count now", bold=True)
    lines = [f"{_REPEAT_EMOJI} Still firing for *{held}*, {now}"]
    if reason:
        lines.append(f"_{reason}_")
    blocks = [_section("\n".join(lines)), *_trend_blocks(note.recent, as_context=True)]
    text = (
        f"{severity_emoji(note.severity)} [{_label(note)}] {rule} on {series} still firing "
        f"for {held}, {_count_phrase(note.count, note.limit, 'count now')} ({condition})"
    )
    return RenderedMessage(text=_clip(text, _SECTION_LIMIT), blocks=blocks)


def _resolved_reply(note: Notification) -> RenderedMessage:
    rule, series, condition = _names(note)
    held = _held(note)
    reason = _reason(note)
    now = _count_phrase(note.count, note.limit, "count now", bold=True)
    lines = [f"{_RESOLVED_EMOJI} Resolved after *{held}*, {now}"]
    if reason:
        lines.append(f"_{reason}_")
    blocks = [_section("\n".join(lines)), *_trend_blocks(note.recent, as_context=True)]
    because = f"{reason}; " if reason else ""
    text = (
        f"{_RESOLVED_EMOJI} RESOLVED [{_label(note)}] {rule} on {series} after {held}, "
        f"{_count_phrase(note.count, note.limit, 'count now')} ({because}was {condition})"
    )
    return RenderedMessage(text=_clip(text, _SECTION_LIMIT), blocks=blocks)


def _names(note: Notification) -> tuple[str, str, str]:
    """Rule, series and condition, clipped and escaped for mrkdwn."""
    return (
        escape(_clip(note.rule, _NAME_LIMIT)),
        escape(_clip(note.series, _NAME_LIMIT)),
        escape(_clip(note.condition, _NAME_LIMIT)),
    )


def _reason(note: Notification) -> str:
    return escape(_clip(note.reason.strip(), _REASON_LIMIT))


def _label(note: Notification) -> str:
    return note.severity.value.upper()


def _held(note: Notification) -> str:
    return format_duration(note.at - note.since)


def _count_phrase(
    count: int | None, limit: int | None, lead: str = "count", *, bold: bool = False
) -> str:
    """'count 31' (or 'count now *31*'), but plain 'no data' when the poll failed."""
    if count is None:
        return "*no data*" if bold else "no data"
    shown = format_count(count, limit)
    return f"{lead} *{shown}*" if bold else f"{lead} {shown}"


def _trend_blocks(recent: Sequence[int], *, as_context: bool = False) -> list[dict[str, Any]]:
    if not recent:
        return []
    trend = (
        f"`{sparkline(recent)}`  min {format_count(min(recent))} · max {format_count(max(recent))}"
    )
    if as_context:
        return [_context(trend)]
    return [_section(f"*Recent*  {trend}")]


def _link(url: str, label: str) -> str:
    # A `|` or `>` inside <url|label> would end the link early; percent-encoding keeps the URL.
    target = escape(url.strip()).replace("|", "%7C")
    return f"<{target}|{escape(label)}>"


def _slack_date(at: datetime) -> str:
    """A time every reader sees in their own zone, with UTC as the fallback text."""
    utc = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    fallback = utc.strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"<!date^{int(utc.timestamp())}^{{date_short_pretty}} {{time_secs}}|{fallback}>"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _header(text: str) -> dict[str, Any]:
    # plain_text is not parsed for markup, so it is not escaped.
    return {
        "type": "header",
        "text": {"type": "plain_text", "text": _clip(text, _HEADER_LIMIT), "emoji": True},
    }


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, _SECTION_LIMIT)}}


def _fields(pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    return {
        "type": "section",
        "fields": [
            {"type": "mrkdwn", "text": _clip(f"*{label}*\n{value or '—'}", _FIELD_LIMIT)}
            for label, value in pairs
        ],
    }


def _context(text: str) -> dict[str, Any]:
    return {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": _clip(text, _SECTION_LIMIT)}],
    }
