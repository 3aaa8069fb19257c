"""Turn a `Notification` into what a human reads: Slack Block Kit plus a plain-text fallback.

Pure functions only, so every wording decision can be tested without a network, and the
bot, webhook and console deliveries all say the same thing. Slack limits (header 150
characters, section text 3000, field 2000) are respected here, because a message Slack
rejects as `invalid_blocks` is an alert nobody sees.

Which rendering goes where:

- `render(note)`: the message for the kind as it lands in the alert's thread: the firing
  card for FIRING, a short reply for REPEAT and RESOLVED.
- `render_resolved_original(note)`: the firing card edited in place to show it resolved.
- `render_card_update(note)`: the card edited in place for every kind that edits it:
  ESCALATED and DEESCALATED (new severity, emoji and reason), FLAPPING, a FIRING that
  left flapping, RESOLVED. `render(note)` of those kinds is the threaded reply; that of
  ESCALATED carries the mention.
- `render_top_level(note)`: a self-contained message for when there is no thread to reply
  in (webhooks, or a lost original): the full card for every kind.
- A "fired and resolved" notification (one that stands for a whole episode whose firing
  card was never sent, see `watchdog.notify.coalesce`) has no thread: `render` and
  `render_top_level` both give its own card, `render_fired_and_resolved`.
- An ANNOTATION is the firing card again, edited in place with the alert's current
  values and its annotations (`acknowledged_line`, ...): `render` and `render_top_level`
  both give that card.

Every card shows the alert's annotations as context lines, so an edit (annotation or
resolution) keeps saying who acknowledged it. With `buttons` (Socket Mode is on) a firing
card carries the controls whose `action_id`s are a contract with the Socket Mode handler
(`ACK_ACTION`, `SILENCE_ACTION`); the alert id travels in the Acknowledge button's value
and in the actions block's `block_id` (`ALERT_BLOCK_PREFIX` + id).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from watchdog.durations import format_duration
from watchdog.model import Notification, Severity, TransitionKind, workspace_of

__all__ = [
    "ACK_ACTION",
    "ALERT_BLOCK_PREFIX",
    "SILENCE_ACTION",
    "SILENCE_CHOICES",
    "SPARK_GLYPHS",
    "RenderedMessage",
    "acknowledged_line",
    "escape",
    "format_count",
    "render",
    "render_card_update",
    "render_fired_and_resolved",
    "render_reply",
    "render_resolved_original",
    "render_status",
    "render_top_level",
    "severity_emoji",
    "sparkline",
    "who",
]

ACK_ACTION = "ack"
"""`action_id` of the Acknowledge button (a contract with the Socket Mode handler)."""
SILENCE_ACTION = "silence"
"""`action_id` of the Silence select; its option values are durations (`SILENCE_CHOICES`)."""
SILENCE_CHOICES = ("1h", "4h", "24h")
ALERT_BLOCK_PREFIX = "alert:"
"""The actions block's `block_id` is this plus the alert id (the select's value is not)."""

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
_ESCALATED_EMOJI = "⏫"
_DEESCALATED_EMOJI = "⏬"
_FLAPPING_EMOJI = "🔀"
_ACK_EMOJI = "👀"
_SILENCED_EMOJI = "🔕"
_SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,}$")
_STATUS_FIRING_LIMIT = 20
"""At most this many firing alerts are listed in `/watchdog status` (the rest counted)."""


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


def who(by: str) -> str:
    """A Slack user id as a mention (`<@U…>`); any other name (`watchdog ack --by`) as text."""
    return f"<@{by}>" if _SLACK_USER.match(by) else escape(_clip(by, _NAME_LIMIT))


def silenced_line(length: timedelta, by: str, ends: datetime) -> str:
    """The card's annotation for a silence on the alert: for how long, by whom, until when."""
    return (
        f"{_SILENCED_EMOJI} Silenced for {format_duration(length)} by {who(by)}, "
        f"until {_slack_date(ends)}"
    )


def acknowledged_line(by: str, at: datetime) -> str:
    """The card's annotation for an acknowledgement: who, and when (in the reader's zone)."""
    return f"{_ACK_EMOJI} Acknowledged by {who(by)} {_slack_date(at)}"


def render(note: Notification, *, buttons: bool = False) -> RenderedMessage:
    """The message for `note` as delivered into the alert's conversation (see module doc)."""
    if note.fired_and_resolved:
        return render_fired_and_resolved(note)
    if note.kind in (TransitionKind.FIRING, TransitionKind.ANNOTATION):
        return _card(note, verb="FIRING", buttons=buttons)
    if note.kind is TransitionKind.REPEAT:
        return _repeat_reply(note)
    if note.kind is TransitionKind.RESOLVED:
        return _resolved_reply(note)
    if note.kind.edits_card:
        return _change_reply(note)
    raise ValueError(f"transition kind {note.kind.value!r} is never notified")


def render_reply(note: Notification) -> RenderedMessage:
    """The threaded reply of a notification whose card already exists (FIRING too)."""
    if note.kind is TransitionKind.FIRING:
        return _change_reply(note)
    return render(note)


def render_card_update(note: Notification, *, buttons: bool = False) -> RenderedMessage:
    """The alert's card as it reads after `note`, edited in place (see the module doc).

    A card still firing keeps its Acknowledge and Silence controls (`buttons`).
    """
    if note.kind is TransitionKind.RESOLVED:
        return render_resolved_original(note)
    quiet = dataclasses.replace(note, mention=None)
    if note.kind is TransitionKind.FLAPPING:
        return _card(quiet, verb="FLAPPING", buttons=buttons)
    return _card(quiet, verb="FIRING", buttons=buttons)


def render_top_level(note: Notification, *, buttons: bool = False) -> RenderedMessage:
    """A message that makes sense on its own, for deliveries that cannot thread."""
    if note.kind in (TransitionKind.FIRING, TransitionKind.ANNOTATION):
        return _card(note, verb="FIRING", buttons=buttons)
    if note.kind is TransitionKind.REPEAT:
        return _card(note, verb="STILL FIRING")
    if note.fired_and_resolved:
        return render_fired_and_resolved(note)
    if note.kind is TransitionKind.RESOLVED:
        return render_resolved_original(note)
    if note.kind.edits_card:
        return _card(note, verb=note.kind.value.upper())
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
        _header(f"{_RESOLVED_EMOJI} FIRED AND RESOLVED: {_title(note)}"),
        _fields(fields),
    ]
    blocks.extend(_trend_blocks(note.recent))
    if note.runbook:
        blocks.append(_section(f"*Runbook*: {_link(note.runbook, 'open the runbook')}"))
    blocks.extend(_annotation_blocks(note))
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
        _header(f"{_RESOLVED_EMOJI} RESOLVED: {_title(note)}"),
        _fields(fields),
    ]
    blocks.extend(_trend_blocks(note.recent))
    blocks.extend(_annotation_blocks(note))
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


def _card(note: Notification, *, verb: str, buttons: bool = False) -> RenderedMessage:
    rule, series, condition = _names(note)
    held = _held(note)
    reason = _reason(note)
    emoji = severity_emoji(note.severity)
    blocks = [
        _header(f"{emoji} {verb}: {_title(note)}"),
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
    blocks.extend(_annotation_blocks(note))
    if buttons:
        blocks.append(_controls(note))
    blocks.append(_context(f"since {_slack_date(note.since)} · alert `{escape(note.alert_id)}`"))
    because = f" — {reason}" if reason else ""
    paging = f" {note.mention}" if note.mention else ""
    count = _count_phrase(note.count, note.limit)
    text = (
        f"{emoji} {verb} [{_label(note)}] {rule} on {series}: {count} "
        f"({condition}) for {held}{because}{paging}"
    )
    return RenderedMessage(text=_clip(text, _SECTION_LIMIT), blocks=blocks)


def _annotation_blocks(note: Notification) -> list[dict[str, Any]]:
    return [_context(line) for line in note.annotations]


def _controls(note: Notification) -> dict[str, Any]:
    """The Acknowledge button (until someone acknowledged) and the Silence select."""
    elements: list[dict[str, Any]] = []
    if note.acked_by is None:
        elements.append(
            {
                "type": "button",
                "action_id": ACK_ACTION,
                "text": {"type": "plain_text", "text": "Acknowledge", "emoji": True},
                "style": "primary",
                "value": note.alert_id,
            }
        )
    elements.append(
        {
            "type": "static_select",
            "action_id": SILENCE_ACTION,
            "placeholder": {"type": "plain_text", "text": "Silence for…"},
            "options": [
                {"text": {"type": "plain_text", "text": choice}, "value": choice}
                for choice in SILENCE_CHOICES
            ],
        }
    )
    return {"type": "actions", "block_id": ALERT_BLOCK_PREFIX + note.alert_id, "elements": elements}


def render_status(counts: Sequence[tuple[str, int | None]], firing: Sequence[Notification]) -> str:
    """`/watchdog status`: each series' last count, then the firing alerts (mrkdwn).

    `firing` are the alerts as their cards would show them now (count, since, annotations).
    """
    shown = " · ".join(f"{escape(name)} *{format_count(count)}*" for name, count in counts)
    lines = [f"*Last counts*: {shown or 'no series'}"]
    if not firing:
        lines.append("*Firing*: nothing")
    else:
        lines.append(f"*Firing* ({len(firing)}):")
    for note in firing[:_STATUS_FIRING_LIMIT]:
        rule, series, condition = _names(note)
        line = (
            f"{severity_emoji(note.severity)} *{rule}* on {series}: "
            f"{_count_phrase(note.count, note.limit)} ({condition}) since {_slack_date(note.since)}"
            f" · alert `{escape(note.alert_id)}`"
        )
        lines.append("• " + " · ".join([line, *note.annotations]))
    if len(firing) > _STATUS_FIRING_LIMIT:
        lines.append(f"… and {len(firing) - _STATUS_FIRING_LIMIT} more")
    return _clip("\n".join(lines), _SECTION_LIMIT)


def _repeat_reply(note: Notification) -> RenderedMessage:
    rule, series, condition = _names(note)
    held = _held(note)
    reason = _reason(note)
    now = _count_phrase(note.count, note.limit, "count now", bold=True)
    lines = [f"{_REPEAT_EMOJI} Still firing for *{held}*, {now}"]
    if reason:
        lines.append(f"_{reason}_")
    if note.mention:  # a silence that ended: the reply pages again
        lines.append(f"Paging {note.mention}")
    blocks = [_section("\n".join(lines)), *_trend_blocks(note.recent, as_context=True)]
    paging = f" {note.mention}" if note.mention else ""
    text = (
        f"{severity_emoji(note.severity)} [{_label(note)}] {rule} on {series} still firing "
        f"for {held}, {_count_phrase(note.count, note.limit, 'count now')} ({condition}){paging}"
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


def _change_reply(note: Notification) -> RenderedMessage:
    """A threaded reply saying what changed on the card: escalation, flapping, firing again."""
    rule, series, _condition = _names(note)
    reason = _reason(note)
    now = _count_phrase(note.count, note.limit, "count now", bold=True)
    label = _label(note)
    if note.kind is TransitionKind.ESCALATED:
        lead = f"{_ESCALATED_EMOJI} Escalated to *{label}*, {now}"
    elif note.kind is TransitionKind.DEESCALATED:
        lead = f"{_DEESCALATED_EMOJI} Back to *{label}*, still firing, {now}"
    elif note.kind is TransitionKind.FLAPPING:
        lead = f"{_FLAPPING_EMOJI} Flapping: held as one alert until it is steady, {now}"
    else:
        lead = f"{severity_emoji(note.severity)} Firing steadily, {now}"
    lines = [lead]
    if reason:
        lines.append(f"_{reason}_")
    if note.mention:
        lines.append(f"Paging {note.mention}")
    blocks = [_section("\n".join(lines)), *_trend_blocks(note.recent, as_context=True)]
    paging = f" {note.mention}" if note.mention else ""
    because = f" ({reason})" if reason else ""
    text = (
        f"{severity_emoji(note.severity)} {note.kind.value.upper()} [{label}] {rule} on "
        f"{series}, {_count_phrase(note.count, note.limit, 'count now')}{because}{paging}"
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


def _title(note: Notification) -> str:
    """A card's header after the verb: the rule, and the workspace of a `[[workspaces]]`
    series in words (`high-load · workspace acme`), so a channel shared by several
    workspaces tells them apart at a glance (the Series field says `acme/support`)."""
    workspace = workspace_of(note.series)
    rule = _clip(note.rule, _NAME_LIMIT)
    return f"{rule} · workspace {workspace}" if workspace else rule


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
