"""Print notifications to a terminal or log stream: for `watchdog demo` and Slack-less runs.

The wording reuses the Slack renderer's pieces (`format_count`, `sparkline`,
`severity_emoji`), so what an operator sees locally is what on-call would see in Slack.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import TextIO

from watchdog.durations import format_duration
from watchdog.errors import NotifyError
from watchdog.model import MessageRef, Notification, Severity, TransitionKind
from watchdog.notify.render import format_count, severity_emoji, sparkline
from watchdog.notify.report_card import prerendered

__all__ = ["ConsoleNotifier", "format_console"]

_RESET = "\033[0m"
_COLOURS = {
    Severity.CRITICAL: "\033[1;31m",
    Severity.WARNING: "\033[1;33m",
    Severity.INFO: "\033[1;34m",
}
_RESOLVED_COLOUR = "\033[1;32m"
_INDENT = "   "


class ConsoleNotifier:
    """Writes one compact block per notification; colour only when the stream is a TTY."""

    name: str = "console"

    def __init__(self, stream: TextIO, *, colour: bool | None = None) -> None:
        self._stream = stream
        self._colour = _wants_colour(stream) if colour is None else colour

    def __repr__(self) -> str:
        return f"ConsoleNotifier(stream={getattr(self._stream, 'name', '?')!r})"

    def deliver(
        self,
        note: Notification,
        original: MessageRef | None,
        *,
        in_doubt_since: datetime | None = None,
    ) -> MessageRef | None:
        """Print `note`; there is nothing to thread on a console, so it returns None."""
        del original, in_doubt_since
        if not note.kind.notifies:
            raise NotifyError(
                f"{note.kind.value} transitions are never notified", recoverable=False
            )
        block = format_console(note, colour=self._colour)
        try:
            self._stream.write(block)
        except UnicodeEncodeError:
            # A stream without UTF-8 (LANG=C pipes) still gets a readable block.
            encoding = getattr(self._stream, "encoding", None) or "ascii"
            self._stream.write(block.encode(encoding, "replace").decode(encoding))
        self._stream.flush()
        return None


def format_console(note: Notification, *, colour: bool = False) -> str:
    """The printed block for `note`, ending in a blank line so blocks stay apart."""
    if note.kind is TransitionKind.GROUP:
        title, *lines = prerendered(note)[1] or [note.rule]
        return f"{title}\n" + "".join(f"{_INDENT}{line}\n" for line in lines) + "\n"
    if note.kind is TransitionKind.REPORT:
        title, *lines = prerendered(note)[1] or ["Daily report"]
        return f"📊 {title}\n" + "".join(f"{_INDENT}{line}\n" for line in lines) + "\n"
    held = format_duration(note.at - note.since)
    count = format_count(note.count, note.limit)
    if note.fired_and_resolved:
        title = f"✅ FIRED AND RESOLVED  {note.rule} · {note.series}  ({note.severity.value})"
        detail = (
            f"fired with count {format_count(note.fired_count, note.limit)}, count now {count}"
            f" after {held}   was {note.condition}"
        )
        start = _RESOLVED_COLOUR
    elif note.kind is TransitionKind.RESOLVED:
        title = f"✅ RESOLVED  {note.rule} · {note.series}  ({note.severity.value})"
        detail = f"count now {count} after {held}   was {note.condition}"
        start = _RESOLVED_COLOUR
    else:
        verb = {
            TransitionKind.REPEAT: "STILL FIRING",
            TransitionKind.ANNOTATION: "FIRING, ANNOTATED",
        }.get(note.kind, note.kind.value.upper())
        title = f"{severity_emoji(note.severity)} {verb}  {note.rule} · {note.series}"
        title += f"  ({note.severity.value})"
        detail = f"count {count}   {note.condition}   holding {held}"
        start = _COLOURS[note.severity]
    lines = [f"{start}{title}{_RESET}" if colour else title, detail]
    if note.recent:
        low, high = format_count(min(note.recent)), format_count(max(note.recent))
        lines.append(f"recent {sparkline(note.recent)}  min {low} · max {high}")
    if note.reason.strip():
        lines.append(f"reason {note.reason.strip()}")
    if note.runbook and note.kind is not TransitionKind.RESOLVED:
        lines.append(f"runbook {note.runbook}")
    if note.fired_at is not None:
        lines.append(f"fired at {_utc(note.fired_at)}")
    if note.acked_by is not None:
        lines.append(f"acknowledged by {note.acked_by}")
    if note.silenced_by:
        lines.append(f"silenced by {', '.join(note.silenced_by)}")
    lines.append(f"at {_utc(note.at)} · alert {note.alert_id}")
    return lines[0] + "\n" + "".join(f"{_INDENT}{line}\n" for line in lines[1:]) + "\n"


def _utc(at: datetime) -> str:
    utc = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return utc.strftime("%Y-%m-%d %H:%M:%S UTC")


def _wants_colour(stream: TextIO) -> bool:
    """ANSI only for a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(callable(isatty) and isatty())
