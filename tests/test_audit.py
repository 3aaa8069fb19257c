"""JSON-lines audit log: format, levels, journald priorities, tracebacks and redaction."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from watchdog.audit import (
    REDACTED,
    Event,
    add_secret,
    configure_logging,
    get_logger,
    reset_logging,
)

ELEVENLABS_KEY = "sk_" + "0123456789abcdef" * 3
SLACK_TOKEN = "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOp"
WEBHOOK = "https://hooks.slack.com/services/T0000000/B0000000/XXXXXXXXXXXXXXXXXXXXXXXX"


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    yield
    reset_logging()


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def configured(**kwargs: Any) -> io.StringIO:
    out = io.StringIO()
    configure_logging(stream=out, **kwargs)
    return out


def strings(value: object) -> Iterator[str]:
    """Every string in a decoded JSON value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def test_one_json_object_per_line() -> None:
    """Each event is one JSON line with a UTC ISO timestamp, level, event and the fields."""
    out = configured()
    before = datetime.now(UTC)
    get_logger().warning(Event.ALERT_FIRING, rule="too-many", series="workspace", count=42)
    get_logger().info(Event.POLL_OK, series="agent_1", count=3)

    first, second = lines(out)
    assert list(first)[:3] == ["timestamp", "level", "event"]
    assert first["level"] == "warning"
    assert first["event"] == "alert.firing"
    assert first["rule"] == "too-many"
    assert first["count"] == 42
    stamp = datetime.fromisoformat(first["timestamp"])
    assert stamp.utcoffset() == timedelta(0)
    assert first["timestamp"].endswith("Z")
    assert abs(stamp - before) < timedelta(seconds=5)
    assert second["event"] == "poll.ok"


def test_default_stream_is_stdout_at_call_time(capsys: pytest.CaptureFixture[str]) -> None:
    """Without a stream, lines go to whatever sys.stdout is when configure_logging runs."""
    configure_logging()
    get_logger().info(Event.DAEMON_STARTED)
    assert json.loads(capsys.readouterr().out)["event"] == "daemon.started"


def test_debug_is_filtered_at_info() -> None:
    """At level info, debug events are dropped and info and above are kept."""
    out = configured(level="info")
    log = get_logger()
    log.debug("noise")
    log.info(Event.DAEMON_STARTED)
    log.error(Event.STATE_ERROR, path="/var/lib/watchdog/state.db")
    assert [line["event"] for line in lines(out)] == ["daemon.started", "state.error"]


def test_reconfigure_changes_level() -> None:
    """Calling configure_logging again (a reload) changes the level of existing loggers."""
    out = configured(level="warning")
    log = get_logger()
    log.info("hidden")
    configure_logging(stream=out, level="DEBUG")
    log.debug("shown")
    assert [line["event"] for line in lines(out)] == ["shown"]


def test_unknown_level_is_rejected() -> None:
    """An unknown level name raises ValueError naming the valid ones."""
    with pytest.raises(ValueError, match=r"unknown log level 'verbose'.*debug, info, warning"):
        configure_logging(stream=io.StringIO(), level="verbose")


@pytest.mark.parametrize(
    ("method", "priority"),
    [("debug", 7), ("info", 6), ("warning", 4), ("error", 3), ("critical", 2)],
)
def test_journald_priority_prefix(method: str, priority: int) -> None:
    """With journald, each line starts with its syslog priority and the rest is pure JSON."""
    out = configured(level="debug", journald=True)
    getattr(get_logger(), method)(Event.DAEMON_STARTED)
    line = out.getvalue()
    assert line.startswith(f"<{priority}>{{")
    assert json.loads(line[len(f"<{priority}>") :])["level"] == method


def test_no_prefix_without_journald() -> None:
    """Without journald (a StringIO has no file descriptor) lines start with the JSON brace."""
    out = configured(env={"JOURNAL_STREAM": "1:2"})
    get_logger().info(Event.DAEMON_STARTED)
    assert out.getvalue().startswith("{")


def test_journald_detected_from_journal_stream(tmp_path: Path) -> None:
    """journald=None prefixes only when $JOURNAL_STREAM names the stream's device and inode."""
    with (tmp_path / "log").open("w+") as stream:
        stat = os.fstat(stream.fileno())
        configure_logging(stream=stream, env={"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"})
        get_logger().info(Event.DAEMON_STARTED)
        configure_logging(stream=stream, env={"JOURNAL_STREAM": f"{stat.st_dev}:0"})
        get_logger().info(Event.DAEMON_STOPPING)
        configure_logging(stream=stream, env={})
        get_logger().info(Event.DAEMON_RELOADED)
        stream.seek(0)
        first, second, third = stream.read().splitlines()
    assert first.startswith("<6>{")
    assert second.startswith("{")
    assert third.startswith("{")


def test_exception_rendered_without_locals() -> None:
    """exc_info renders a structured traceback but never frame locals (a secret lives there)."""
    out = configured()

    def fail() -> None:
        api_key = "local-secret-value-123"  # a local variable that must not be rendered
        raise RuntimeError(f"boom after {len(api_key)} chars")

    try:
        fail()
    except RuntimeError:
        get_logger().exception(Event.POLL_FAILED, series="workspace")

    (line,) = lines(out)
    assert "local-secret-value-123" not in out.getvalue()
    assert line["level"] == "error"
    (exc,) = line["exception"]
    assert exc["exc_type"] == "RuntimeError"
    assert exc["exc_value"] == "boom after 22 chars"
    assert [frame["name"] for frame in exc["frames"]][-1] == "fail"
    assert all("locals" not in frame for frame in exc["frames"])


def test_registered_secrets_redacted_everywhere() -> None:
    """Registered secrets vanish from the event, nested dicts, lists, tuples and keys."""
    out = configured(secrets=["hunter2-secret"])
    add_secret("later-learned-secret")
    add_secret("short")  # too short to redact: would shred ordinary words
    get_logger().info(
        "login with hunter2-secret",
        detail={"nested": ["x hunter2-secret y", ("later-learned-secret",)]},
        pair=("a", "prefix-later-learned-secret-suffix"),
        keyed={"hunter2-secret": 1},
        word="short",
    )
    (line,) = lines(out)
    text = out.getvalue()
    assert "hunter2-secret" not in text
    assert "later-learned-secret" not in text
    assert line["event"] == f"login with {REDACTED}"
    assert line["detail"] == {"nested": [f"x {REDACTED} y", [REDACTED]]}
    assert line["pair"] == ["a", f"prefix-{REDACTED}-suffix"]
    assert line["keyed"] == {REDACTED: 1}
    assert line["word"] == "short"


def test_secrets_replaced_on_reconfigure() -> None:
    """A new configuration starts from its own secrets, not those of an earlier one."""
    out = configured(secrets=["first-secret"])
    configure_logging(stream=out, secrets=["second-secret"])
    get_logger().info("first-secret second-secret")
    assert lines(out)[0]["event"] == f"first-secret {REDACTED}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"key={ELEVENLABS_KEY}!", f"key={REDACTED}!"),
        (f"token {SLACK_TOKEN} used", f"token {REDACTED} used"),
        ("xoxp-abc-DEF-123", REDACTED),
        (f"posting to {WEBHOOK} failed", f"posting to {REDACTED} failed"),
        ("xi-api-key: abc123def", f"xi-api-key: {REDACTED}"),
        ('{"xi-api-key": "abc123def"}', f'{{"xi-api-key": "{REDACTED}"}}'),
        ("Authorization: Bearer abc.def", f"Authorization: Bearer {REDACTED}"),
        ("authorization=Basic dXNlcjpwYXNz", f"authorization=Basic {REDACTED}"),
        ("sk_short", "sk_short"),  # too short to be an ElevenLabs key
        ("nothing to see", "nothing to see"),
    ],
)
def test_pattern_secrets_redacted(text: str, expected: str) -> None:
    """Secret-shaped text is redacted even when nobody registered it."""
    out = configured()
    get_logger().info(Event.NOTIFY_FAILED, reason=text, nested={"list": [text]})
    (line,) = lines(out)
    assert line["reason"] == expected
    assert line["nested"] == {"list": [expected]}


def test_secret_header_keys_redacted() -> None:
    """Values under secret-bearing keys (header dicts, settings) are redacted whatever they are."""
    out = configured()
    get_logger().info(
        Event.POLL_FAILED,
        headers={"XI-API-KEY": "opaque", "Authorization": "opaque too", "accept": "json"},
        slack_bot_token="opaque",
    )
    (line,) = lines(out)
    assert line["headers"] == {"XI-API-KEY": REDACTED, "Authorization": REDACTED, "accept": "json"}
    assert line["slack_bot_token"] == REDACTED


def test_secrets_redacted_in_exceptions() -> None:
    """Secrets in an exception message, its notes and its cause are redacted."""
    out = configured(secrets=["registered-secret"])
    try:
        try:
            raise ConnectionError(f"POST {WEBHOOK} refused")
        except ConnectionError as inner:
            outer = RuntimeError("delivery failed with registered-secret")
            outer.add_note(f"token was {SLACK_TOKEN}")
            raise outer from inner
    except RuntimeError:
        get_logger().exception(Event.NOTIFY_FAILED)

    text = out.getvalue()
    for secret in (WEBHOOK, "registered-secret", SLACK_TOKEN):
        assert secret not in text
    exceptions = lines(out)[0]["exception"]
    assert {exc["exc_type"] for exc in exceptions} == {"RuntimeError", "ConnectionError"}
    assert any(REDACTED in exc["exc_value"] for exc in exceptions)


def test_unserialisable_values_are_redacted() -> None:
    """Objects JSON cannot carry are stringified, and their repr is redacted too."""

    class Client:
        def __repr__(self) -> str:
            return f"Client(key={ELEVENLABS_KEY})"

    out = configured()
    at = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    get_logger().info(Event.CONFIG_LOADED, client=Client(), at=at, path=Path("/etc/watchdog"))
    (line,) = lines(out)
    assert line["client"] == f"Client(key={REDACTED})"
    assert line["at"] == "2025-01-02T03:04:05+00:00"
    assert line["path"] == "/etc/watchdog"


def test_stdlib_logging_is_bridged_and_redacted() -> None:
    """Warnings from stdlib loggers (httpx, asyncio) become redacted JSON lines; info does not."""
    out = configured(level="debug")
    logger = logging.getLogger("httpx")
    logger.info("HTTP Request: POST %s", WEBHOOK)
    logger.warning("HTTP Request: POST %s failed", WEBHOOK)
    (line,) = lines(out)
    assert line["level"] == "warning"
    assert line["logger"] == "httpx"
    assert line["event"] == f"HTTP Request: POST {REDACTED} failed"


def test_reset_removes_the_stdlib_bridge() -> None:
    """After reset_logging, stdlib records no longer reach the old stream."""
    out = configured()
    reset_logging()
    logging.getLogger("httpx").warning("after reset")
    assert out.getvalue() == ""


_FIELDS = ("event", "flat", "nested", "listed", "exception")


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    secret=st.text(min_size=6, max_size=40),
    prefix=st.text(max_size=20),
    suffix=st.text(max_size=20),
    field=st.sampled_from(_FIELDS),
)
def test_registered_secret_never_appears(secret: str, prefix: str, suffix: str, field: str) -> None:
    """Any registered secret (length >= 6) embedded in any text in any field never comes out."""
    assume(secret not in REDACTED)
    out = configured(secrets=[secret])
    text = prefix + secret + suffix
    log = get_logger()
    fields: dict[str, Any] = {"flat": "x", "nested": {"k": "x"}, "listed": ["x"]}
    event = "evt"
    if field == "event":
        event = text
    elif field == "flat":
        fields["flat"] = text
    elif field == "nested":
        fields["nested"] = {"k": {"deeper": (1, text)}}
    elif field == "listed":
        fields["listed"] = ["a", text]

    if field == "exception":
        try:
            raise ValueError(text)
        except ValueError:
            log.exception(event, **fields)
    else:
        log.info(event, **fields)

    (line,) = lines(out)
    values: list[object] = [line["event"], line["flat"], line["nested"], line["listed"]]
    if field == "exception":
        values.append(line["exception"][0]["exc_value"])
    for found in strings(values):
        assert secret not in found
