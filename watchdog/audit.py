"""The audit trail: structlog configuration, secret redaction and the stable event names.

Every line is one JSON object with `timestamp` (UTC, ISO 8601), `level` and `event`
(one of `Event`) followed by flat key/value pairs, e.g.
`{"timestamp": "...", "level": "warning", "event": "alert.firing", "rule": "...", ...}`.

Redaction is the second line of defence: secrets are kept out of log calls on purpose,
and whatever slips through anyway (an exception quoting a URL, a header dict) is replaced
with `[REDACTED]` before it is rendered. Frame locals are never rendered.

Records from the standard library's `logging` (httpx, asyncio, ...) go through the same
redaction and JSON rendering, at warning level and above.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from enum import Enum, StrEnum
from pathlib import PurePath
from typing import TextIO, cast

import structlog
from structlog.processors import ExceptionRenderer
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

__all__ = [
    "REDACTED",
    "Event",
    "add_secret",
    "configure_logging",
    "get_logger",
    "reset_logging",
]

REDACTED = "[REDACTED]"
"""What a secret is replaced with."""

MIN_SECRET_LENGTH = 6
"""Shorter registered values are ignored: redacting them would shred ordinary words."""


class Event(StrEnum):
    """The stable names of audit events; dashboards and alerts on the log depend on them."""

    POLL_OK = "poll.ok"
    POLL_FAILED = "poll.failed"
    POLL_LATE = "poll.late"  # due while its previous poll still runs: skipped, not failed
    POLL_SKIPPED = "poll.skipped"  # not due yet by the API's Retry-After
    ALERT_PENDING = "alert.pending"
    ALERT_FIRING = "alert.firing"
    ALERT_REPEAT = "alert.repeat"
    ALERT_RESOLVED = "alert.resolved"
    ALERT_CANCELLED = "alert.cancelled"
    ALERT_ESCALATED = "alert.escalated"  # an `escalate` stage came into force, in place
    ALERT_DEESCALATED = "alert.deescalated"  # a level stage was left, still firing
    ALERT_FLAPPING = "alert.flapping"  # fired and resolved too often: held as flapping
    ALERT_ACKED = "alert.acked"  # someone acknowledged a firing alert (by: user id or name)
    ALERT_INHIBITED = "alert.inhibited"  # not notified: a rule in its `inhibited_by` fires
    ALERT_ACK_IGNORED = "alert.ack_ignored"  # `watchdog ack` of one no longer firing, or acked
    ACTION_REFUSED = "action.refused"  # a Slack user not in [slack] responders pressed
    SOCKET_CONNECTED = "socket.connected"  # Socket Mode is connected (buttons work)
    SOCKET_DISCONNECTED = "socket.disconnected"  # lost; the client reconnects by itself
    SOCKET_FAILED = "socket.failed"  # apps.connections.open failed; tried again later
    SOCKET_REQUEST = "socket.request"  # an envelope (button, command) received and acked
    SOCKET_REPLY_FAILED = "socket.reply_failed"  # an ephemeral answer could not be sent
    NOTIFY_SENT = "notify.sent"
    NOTIFY_RETRY = "notify.retry"
    NOTIFY_FAILED = "notify.failed"
    NOTIFY_FOUND = "notify.found"  # a post whose answer was lost was found and adopted
    NOTIFY_GUARANTEE = "notify.guarantee"  # exactly-once or at-least-once, and why
    NOTIFY_FOLDED = "notify.folded"  # a queued firing + its resolution: one card (with reason)
    NOTIFY_DROPPED = "notify.dropped"  # a queued notification overtaken by the queue (reason)
    NOTIFY_HELD = "notify.held"  # storm control holds the card: folded into the storm summary
    STORM_STARTED = "storm.started"  # more than [storm] max cards within window in a channel
    STORM_ENDED = "storm.ended"  # nothing held for a window: closing summary, cards released
    NOTIFY_SUPPRESSED = "notify.suppressed"  # held back by a silence or mute (reason, which)
    NOTIFY_GROUPED = "notify.grouped"  # a group's card is queued: the rule's alerts in one card
    NOTIFY_RELEASED = "notify.released"  # its cover ended while the alert still fires: announced
    REPORT_QUEUED = "report.queued"  # the daily report of `day` is in the outbox
    REPORT_FAILED = "report.failed"  # building the report failed: no report that day, alerts go on
    SILENCE_CREATED = "silence.created"  # with who made it (`by`)
    SILENCE_EXPIRED = "silence.expired"  # it ran out, or was expired early
    CONFIG_LOADED = "config.loaded"
    CONFIG_REJECTED = "config.rejected"
    CONFIG_UNKNOWN_VARIABLE = "config.unknown_variable"  # a WATCHDOG_* typo, ignored
    DAEMON_STARTED = "daemon.started"
    DAEMON_STOPPING = "daemon.stopping"
    DAEMON_RELOADED = "daemon.reloaded"
    DAEMON_STALLED = "daemon.stalled"  # a part of the pipeline stopped: the ping is withheld
    DAEMON_CRASHED = "daemon.crashed"  # a long-lived task failed: the process exits with 70
    DAEMON_READY = "daemon.ready"  # READY=1 sent (after the first cycle or the start-up bound)
    LEADER_ACQUIRED = "leader.acquired"  # won the PostgreSQL lock: restores, polls, delivers
    LEADER_LOST = "leader.lost"  # the lock session failed: posts stop, the process exits 75
    LEADER_STANDBY = "leader.standby"  # another daemon leads: this one waits for the lock
    STATE_ERROR = "state.error"
    STATE_PRUNED = "state.pruned"
    SYSTEMD_NOTIFY_FAILED = "systemd.notify_failed"
    SYSTEMD_WATCHDOG_UNWORKABLE = "systemd.watchdog_unworkable"  # WatchdogSec= cannot work
    HEARTBEAT_SENT = "heartbeat.sent"  # the dead-man's switch was pinged (success or /fail)
    HEARTBEAT_FAILED = "heartbeat.failed"  # its endpoint was slow, unreachable or refused


_LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

# syslog priorities, read by journald from a "<N>" line prefix (SyslogLevelPrefix=yes).
_PRIORITIES: dict[str, int] = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}

# Secrets recognisable by their shape, whether or not they were registered.
_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"sk_[A-Za-z0-9]{20,}"), REDACTED),  # ElevenLabs API key
    (re.compile(r"xox[abposr]-[A-Za-z0-9-]+"), REDACTED),  # Slack bot/user/... token
    (re.compile(r"xapp-[A-Za-z0-9-]+"), REDACTED),  # Slack app-level token
    (
        re.compile(r"https?://hooks\.slack\.com/(?:services|workflows|triggers)/[^\s\"'<>]+", re.I),
        REDACTED,
    ),
    (
        re.compile(r"""(xi-api-key["']?\s*[:=]\s*["']?)[^\s"',;}]+""", re.I),
        rf"\g<1>{REDACTED}",
    ),
    (
        re.compile(
            r"""((?:proxy-)?authorization["']?\s*[:=]\s*["']?(?:(?:bearer|basic|token)\s+)?)"""
            r"""[^\s"',;}]+""",
            re.I,
        ),
        rf"\g<1>{REDACTED}",
    ),
)

# Mapping keys whose values are secrets whatever they look like (header dicts, settings).
_SECRET_KEYS = frozenset(
    {
        "xi_api_key",
        "authorization",
        "proxy_authorization",
        "api_key",
        "elevenlabs_api_key",
        "slack_bot_token",
        "slack_webhook_url",
        "slack_app_token",
        "app_token",
        "webhook_url",
        "bot_token",
        "heartbeat_url",
        "watchdog_heartbeat_url",
    }
)

# Replacing one secret can in theory splice a new occurrence out of its neighbours;
# after this many passes a string that still matches is replaced as a whole.
_MAX_PASSES = 4

_STDLIB_HANDLER_NAME = "watchdog.audit"


class _Redactor:
    """Replaces registered secret values and secret-shaped text in every string."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        candidates = {secret, secret.strip()}
        # A substring of the marker itself could never be redacted away; no real secret is.
        new = {
            s for s in candidates if len(s) >= MIN_SECRET_LENGTH and s not in REDACTED
        } - self._secrets
        if not new:
            return
        self._secrets |= new
        # Longest first, so a secret containing another is replaced whole.
        ordered = sorted(self._secrets, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(s) for s in ordered))

    def text(self, value: str) -> str:
        for _ in range(_MAX_PASSES):
            redacted = self._one_pass(value)
            if redacted == value:
                return value
            value = redacted
        return REDACTED if self._one_pass(value) != value else value

    def _one_pass(self, value: str) -> str:
        if self._pattern is not None:
            value = self._pattern.sub(REDACTED, value)
        for pattern, replacement in _SECRET_PATTERNS:
            value = pattern.sub(replacement, value)
        return value

    def value(self, value: object) -> object:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {
                self.text(k) if isinstance(k, str) else k: (
                    REDACTED if _is_secret_key(k) and v is not None else self.value(v)
                )
                for k, v in value.items()
            }
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value(item) for item in value]
        return value

    def __call__(self, _: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        return {
            key: REDACTED if _is_secret_key(key) and value is not None else self.value(value)
            for key, value in event_dict.items()
        }


def _is_secret_key(key: object) -> bool:
    return isinstance(key, str) and key.lower().replace("-", "_") in _SECRET_KEYS


class _JsonLines:
    """Renders one JSON object per line, `timestamp`, `level`, `event` first.

    With `journald`, the line starts with the syslog priority (`<6>{...}`): journald
    strips it into PRIORITY=, so `journalctl -o cat` still shows pure JSON.
    """

    def __init__(self, redactor: _Redactor, *, journald: bool) -> None:
        self._redactor = redactor
        self._journald = journald

    def __call__(self, _: WrappedLogger, __: str, event_dict: EventDict) -> str:
        ordered = {k: event_dict.pop(k) for k in ("timestamp", "level", "event") if k in event_dict}
        ordered.update(event_dict)
        line = json.dumps(ordered, default=self._fallback)
        if self._journald:
            priority = _PRIORITIES.get(str(ordered.get("level", "info")), 6)
            return f"<{priority}>{line}"
        return line

    def _fallback(self, value: object) -> object:
        """Stringify what JSON cannot carry, and redact the result: a repr can hold a secret."""
        if isinstance(value, datetime | date):
            text = value.isoformat()
        elif isinstance(value, Enum):
            return self._redactor.value(value.value)
        elif isinstance(value, PurePath):
            text = str(value)
        else:
            text = repr(value)
        return self._redactor.text(text)


_redactor = _Redactor()


def configure_logging(
    *,
    level: str = "info",
    stream: TextIO | None = None,
    secrets: Iterable[str] = (),
    journald: bool | None = None,
    env: Mapping[str, str] = os.environ,
) -> None:
    """Configure structlog (and the stdlib `logging` bridge) to write JSON lines to `stream`.

    `stream` defaults to `sys.stdout` as it is at the time of the call. Safe to call
    again, e.g. on reload with a new level; the secrets passed here replace those of an
    earlier call (`add_secret` adds to them). `journald=None` detects whether `stream` is
    the journal's stdout stream from `$JOURNAL_STREAM` in `env`.
    """
    threshold = _parse_level(level)
    if stream is None:
        stream = sys.stdout
    if journald is None:
        journald = _is_journal_stream(stream, env)

    global _redactor  # noqa: PLW0603 - one redactor per configuration, shared with add_secret
    _redactor = redactor = _Redactor(secrets)

    exceptions = ExceptionRenderer(ExceptionDictTransformer(show_locals=False))
    renderer = _JsonLines(redactor, journald=journald)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            exceptions,
            redactor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    _install_stdlib_bridge(
        stream,
        max(threshold, logging.WARNING),
        foreign_pre_chain=[
            structlog.stdlib.add_logger_name,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            exceptions,
            redactor,
            renderer,
        ],
    )


def add_secret(value: str) -> None:
    """Register a secret learned after `configure_logging` (values shorter than 6 are ignored)."""
    _redactor.add(value)


def get_logger() -> FilteringBoundLogger:
    """The watchdog's logger; it follows the latest `configure_logging`."""
    return cast("FilteringBoundLogger", structlog.get_logger("watchdog"))


def reset_logging() -> None:
    """Undo `configure_logging` (structlog defaults, no stdlib bridge); for tests and shutdown."""
    global _redactor  # noqa: PLW0603 - see configure_logging
    _redactor = _Redactor()
    structlog.reset_defaults()
    _remove_stdlib_bridge()


def _parse_level(level: str) -> int:
    try:
        return _LEVELS[level.strip().lower()]
    except KeyError:
        names = ", ".join(_LEVELS)
        raise ValueError(f"unknown log level {level!r}: use one of {names}") from None


def _is_journal_stream(stream: TextIO, env: Mapping[str, str]) -> bool:
    """Whether `stream` is the socket `$JOURNAL_STREAM` ("device:inode") names."""
    device, sep, inode = env.get("JOURNAL_STREAM", "").partition(":")
    if not sep:
        return False
    try:
        stat = os.fstat(stream.fileno())
        return (stat.st_dev, stat.st_ino) == (int(device), int(inode))
    except (OSError, ValueError):  # no file descriptor (StringIO), closed, or malformed
        return False


def _install_stdlib_bridge(
    stream: TextIO,
    level: int,
    *,
    foreign_pre_chain: list[Processor],
    processors: list[Processor],
) -> None:
    _remove_stdlib_bridge()
    handler = logging.StreamHandler(stream)
    handler.set_name(_STDLIB_HANDLER_NAME)
    handler.setLevel(level)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=foreign_pre_chain, processors=processors
        )
    )
    logging.getLogger().addHandler(handler)


def _remove_stdlib_bridge() -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _STDLIB_HANDLER_NAME:
            root.removeHandler(handler)
            handler.close()
