"""The real Slack notifiers over real HTTP against the loopback FakeSlack."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from tests.fakes.slack import Fail, FakeSlack, channel_id
from watchdog.delivery import OutboxWorker
from watchdog.errors import NotifyError
from watchdog.model import MessageRef, Notification, Severity, TransitionKind
from watchdog.notify import ConsoleNotifier, Notifier, SlackBotNotifier, SlackWebhookNotifier
from watchdog.store import Store

AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
CHANNEL = "#voice-oncall"


def note(**changes: Any) -> Notification:
    base = Notification(
        alert_id="al-1",
        kind=TransitionKind.FIRING,
        rule="high-load",
        series="workspace",
        severity=Severity.CRITICAL,
        at=AT,
        since=AT - timedelta(minutes=5),
        count=31,
        condition="count > 25",
        channel=CHANNEL,
        recent=(3, 9, 31),
        mention="<!subteam^S0123>",
    )
    return dataclasses.replace(base, **changes)


REPEAT = note(kind=TransitionKind.REPEAT)
RESOLVED = note(kind=TransitionKind.RESOLVED, count=18, reason="count 18 < 20")


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    """A started FakeSlack with the default token."""
    with FakeSlack() as fake:
        yield fake


@pytest.fixture
def bot(slack: FakeSlack) -> SlackBotNotifier:
    """A bot notifier with a short timeout so hang tests stay fast."""
    return SlackBotNotifier(SecretStr(slack.token), api_url=slack.api_url, timeout=0.3)


@pytest.fixture
def hook(slack: FakeSlack) -> SlackWebhookNotifier:
    """A webhook notifier with a short timeout."""
    return SlackWebhookNotifier(SecretStr(slack.webhook_url), timeout=0.3)


def failure(
    notifier: Notifier, notification: Notification, original: MessageRef | None = None
) -> NotifyError:
    with pytest.raises(NotifyError) as info:
        notifier.deliver(notification, original)
    return info.value


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# bot: the happy paths


def test_firing_posts_and_returns_message_ref(slack: FakeSlack, bot: SlackBotNotifier) -> None:
    """FIRING posts one top-level message and returns its channel id and ts."""
    ref = bot.deliver(note(), None)
    [message] = slack.top_level(CHANNEL)
    assert ref == MessageRef(channel=channel_id(CHANNEL), ts=message.ts)
    assert message.method == "chat.postMessage"
    assert "FIRING" in message.text
    assert "<!subteam^S0123>" in message.text
    assert message.blocks[0]["type"] == "header"


def test_repeat_replies_in_the_thread(slack: FakeSlack, bot: SlackBotNotifier) -> None:
    """REPEAT is a thread reply under the original and returns the original."""
    ref = bot.deliver(note(), None)
    assert ref is not None
    assert bot.deliver(REPEAT, ref) == ref
    [reply] = slack.replies(ref.ts)
    assert reply.channel == ref.channel
    assert "still firing for 5m, count now 31" in reply.text
    assert len(slack.top_level()) == 1


def test_repeat_without_original_posts_a_new_card(slack: FakeSlack, bot: SlackBotNotifier) -> None:
    """With no original to thread under, a repeat is a new self-contained message."""
    ref = bot.deliver(REPEAT, None)
    [message] = slack.top_level(CHANNEL)
    assert ref == MessageRef(message.channel, message.ts)
    assert message.blocks[0]["text"]["text"] == "🔴 STILL FIRING: high-load"


def test_resolved_edits_original_and_replies(slack: FakeSlack, bot: SlackBotNotifier) -> None:
    """RESOLVED rewrites the firing message as resolved, then replies in its thread."""
    ref = bot.deliver(note(), None)
    assert ref is not None
    assert bot.deliver(RESOLVED, ref) == ref
    [update] = slack.updates(ref.ts)
    assert update.blocks[0]["text"]["text"] == "✅ RESOLVED: high-load"
    assert "subteam" not in update.text
    [reply] = slack.replies(ref.ts)
    assert "Resolved after" in reply.blocks[0]["text"]["text"]
    assert [m.method for m in slack.messages] == [
        "chat.postMessage",
        "chat.update",
        "chat.postMessage",
    ]


def test_resolved_retry_after_failed_reply_is_harmless(
    slack: FakeSlack, bot: SlackBotNotifier
) -> None:
    """A reply failing after the edit: the retried delivery edits again and replies once."""
    ref = bot.deliver(note(), None)
    assert ref is not None
    slack.fail_next([Fail.delay(0), Fail.status(503)])
    assert failure(bot, RESOLVED, ref).recoverable
    assert len(slack.updates(ref.ts)) == 1
    assert slack.replies(ref.ts) == []
    bot.deliver(RESOLVED, ref)
    assert len(slack.updates(ref.ts)) == 2
    assert len(slack.replies(ref.ts)) == 1


def test_resolved_without_original_posts_one_message(
    slack: FakeSlack, bot: SlackBotNotifier
) -> None:
    """With no original, the resolution is one new resolved card."""
    ref = bot.deliver(RESOLVED, None)
    [message] = slack.messages
    assert message.thread_ts is None
    assert ref == MessageRef(message.channel, message.ts)
    assert message.blocks[0]["text"]["text"] == "✅ RESOLVED: high-load"


def test_update_of_missing_message_falls_back(slack: FakeSlack, bot: SlackBotNotifier) -> None:
    """An original that no longer exists gets a new resolved message instead of an error."""
    gone = MessageRef(channel=channel_id(CHANNEL), ts="1600000000.000100")
    ref = bot.deliver(RESOLVED, gone)
    [message] = slack.messages
    assert ref == MessageRef(message.channel, message.ts)
    assert message.method == "chat.postMessage"
    assert message.thread_ts is None
    assert "RESOLVED" in message.text
    assert [a.outcome for a in slack.attempts] == ["error message_not_found", "ok"]


def test_cant_update_message_falls_back(slack: FakeSlack, bot: SlackBotNotifier) -> None:
    """`cant_update_message` (e.g. too old to edit) also falls back to a new message."""
    ref = bot.deliver(note(), None)
    assert ref is not None
    slack.fail_next([Fail.error("cant_update_message")])
    new = bot.deliver(RESOLVED, ref)
    assert new is not None
    assert new.ts != ref.ts
    assert slack.replies(ref.ts) == []


def test_channel_ids_are_accepted(slack: FakeSlack, bot: SlackBotNotifier) -> None:
    """A channel configured by id is posted to as is."""
    ref = bot.deliver(note(channel="C0123456789"), None)
    assert ref is not None
    assert ref.channel == "C0123456789"


def test_deliver_from_a_worker_thread(slack: FakeSlack, bot: SlackBotNotifier) -> None:
    """The daemon delivers from a worker thread; the fake lets the test await it."""
    worker = threading.Thread(target=bot.deliver, args=(note(), None))
    worker.start()
    [message] = slack.wait_for(1, timeout=5)
    worker.join(timeout=5)
    assert message.channel == channel_id(CHANNEL)


# bot: failures


def test_429_is_recoverable_with_retry_after(slack: FakeSlack, bot: SlackBotNotifier) -> None:
    """HTTP 429 is retried later, after Slack's Retry-After."""
    slack.fail_next([Fail.status(429, retry_after=7)])
    error = failure(bot, note())
    assert error.recoverable
    assert error.retry_after == 7.0
    assert "ratelimited" in error.reason


def test_ratelimited_error_body_is_recoverable(slack: FakeSlack, bot: SlackBotNotifier) -> None:
    """`ok: false, error: ratelimited` on a 200 is treated like a 429."""
    slack.fail_next([Fail.error("ratelimited")])
    error = failure(bot, note())
    assert error.recoverable
    assert error.retry_after is None


@pytest.mark.parametrize(
    "spec",
    [
        Fail.status(500),
        Fail.status(502),
        Fail.status(503),
        Fail.status(503, body="<html><body>Service Unavailable</body></html>"),
        Fail.error("internal_error"),
        Fail.error("fatal_error"),
        Fail.error("service_unavailable"),
        Fail.error("request_timeout"),
    ],
    ids=lambda spec: f"{spec.action}-{spec.code}-{spec.slack_error}-{bool(spec.body)}",
)
def test_server_errors_are_recoverable(slack: FakeSlack, bot: SlackBotNotifier, spec: Fail) -> None:
    """5xx and Slack's transient errors are retried."""
    slack.fail_next([spec])
    error = failure(bot, note())
    assert error.recoverable
    assert error.retry_after is None


def test_outage_is_recoverable_until_it_ends(slack: FakeSlack, bot: SlackBotNotifier) -> None:
    """During an outage every call is a recoverable failure; afterwards delivery works."""
    slack.outage(True)
    assert failure(bot, note()).recoverable
    slack.outage(False)
    assert bot.deliver(note(), None) is not None


def test_connection_reset_is_recoverable(slack: FakeSlack, bot: SlackBotNotifier) -> None:
    """An aborted connection is 'unreachable' and retried."""
    slack.fail_next([Fail.reset()])
    error = failure(bot, note())
    assert error.recoverable
    assert "unreachable" in error.reason


def test_hang_times_out_recoverably(slack: FakeSlack, bot: SlackBotNotifier) -> None:
    """A Slack that never answers hits the client timeout and is retried."""
    slack.fail_next([Fail.hang(5)])
    error = failure(bot, note())
    assert error.recoverable
    assert "unreachable: timed out" in error.reason


def test_connection_refused_is_recoverable() -> None:
    """Nothing listening is 'unreachable' and retried."""
    bot = SlackBotNotifier(
        SecretStr("xoxb-x"), api_url=f"http://127.0.0.1:{closed_port()}/api/", timeout=0.3
    )
    error = failure(bot, note())
    assert error.recoverable
    assert "unreachable" in error.reason


def test_missing_channel_is_permanent(slack: FakeSlack, bot: SlackBotNotifier) -> None:
    """channel_not_found cannot be fixed by retrying; the reason names channel and error."""
    slack.missing_channel(CHANNEL)
    error = failure(bot, note())
    assert not error.recoverable
    assert "channel_not_found" in error.reason
    assert CHANNEL in error.reason


def test_invalid_auth_is_permanent(slack: FakeSlack) -> None:
    """A rejected token is not retried."""
    bot = SlackBotNotifier(SecretStr("xoxb-wrong"), api_url=slack.api_url)
    error = failure(bot, note())
    assert not error.recoverable
    assert "invalid_auth" in error.reason


@pytest.mark.parametrize(
    "slack_error",
    [
        "not_in_channel",
        "is_archived",
        "account_inactive",
        "token_revoked",
        "msg_too_long",
        "invalid_blocks",
    ],
)
def test_other_slack_errors_are_permanent(
    slack: FakeSlack, bot: SlackBotNotifier, slack_error: str
) -> None:
    """Every other `ok: false` error is dead-lettered with Slack's error string."""
    slack.fail_next([Fail.error(slack_error)])
    error = failure(bot, note())
    assert not error.recoverable
    assert slack_error in error.reason


def test_update_failure_other_than_missing_is_raised(
    slack: FakeSlack, bot: SlackBotNotifier
) -> None:
    """Only a vanished original falls back; other update errors surface as they are."""
    ref = bot.deliver(note(), None)
    slack.fail_next([Fail.error("is_archived")])
    error = failure(bot, RESOLVED, ref)
    assert not error.recoverable
    assert "chat.update" in error.reason
    assert len(slack.messages) == 1


@pytest.mark.parametrize(
    "spec",
    [
        Fail.status(429, retry_after=0),
        Fail.status(503),
        Fail.reset(),
        Fail.hang(5),
        Fail.error("ratelimited"),
    ],
    ids=["429", "503", "reset", "hang", "ratelimited"],
)
def test_sdk_does_not_retry(slack: FakeSlack, bot: SlackBotNotifier, spec: Fail) -> None:
    """Exactly one attempt per deliver call: the outbox, not the SDK, retries."""
    slack.fail_next([spec])
    failure(bot, note())
    assert len(slack.attempts) == 1


# secrets


def test_token_never_in_errors_or_repr(slack: FakeSlack, caplog: pytest.LogCaptureFixture) -> None:
    """The bot token appears in no NotifyError, no repr and no log record."""
    caplog.set_level(logging.DEBUG)
    token = "xoxb-super-secret-token"
    bot = SlackBotNotifier(SecretStr(token), api_url=slack.api_url, timeout=0.3)
    slack.fail_next([Fail.status(429, retry_after=1), Fail.status(500), Fail.reset(), Fail.hang(5)])
    errors = [failure(bot, note()) for _ in range(5)]  # the fifth is invalid_auth
    assert "invalid_auth" in errors[-1].reason
    for error in errors:
        assert token not in f"{error} {error!r} {error.reason}"
        assert error.__cause__ is None
        assert error.__context__ is None
    assert token not in repr(bot)
    assert token not in caplog.text


def test_webhook_url_never_in_errors_or_repr(
    slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    """The webhook URL (the secret) appears in no NotifyError, no repr and no log record."""
    caplog.set_level(logging.DEBUG)
    secret = slack.webhook_url.rsplit("/", 1)[1]
    hook = SlackWebhookNotifier(SecretStr(slack.webhook_url), timeout=0.3)
    slack.fail_next(
        [
            Fail.status(429, retry_after=1),
            Fail.status(500),
            Fail.reset(),
            Fail.hang(5),
            Fail.error("no_service"),
        ]
    )
    errors = [failure(hook, note()) for _ in range(5)]
    bad_url = SlackWebhookNotifier(SecretStr(f"not-a-url/{secret}"))
    errors.append(failure(bad_url, note()))
    for error in errors:
        assert secret not in f"{error} {error!r} {error.reason}"
        assert error.__cause__ is None
        assert error.__context__ is None
    assert secret not in repr(hook)
    assert secret not in caplog.text


# webhook


@pytest.mark.parametrize(
    ("notification", "header"),
    [
        (note(), "🔴 FIRING: high-load"),
        (REPEAT, "🔴 STILL FIRING: high-load"),
        (RESOLVED, "✅ RESOLVED: high-load"),
    ],
    ids=["firing", "repeat", "resolved"],
)
def test_webhook_posts_every_kind_as_a_new_message(
    slack: FakeSlack, hook: SlackWebhookNotifier, notification: Notification, header: str
) -> None:
    """Webhooks cannot thread or edit: each notification is a new self-contained card."""
    original = MessageRef(channel=channel_id(CHANNEL), ts="1700000000.000100")
    assert hook.deliver(notification, original) is None
    [message] = slack.top_level(CHANNEL)
    assert message.method == "webhook"
    assert message.blocks[0]["text"]["text"] == header


def test_webhook_429_is_recoverable_with_retry_after(
    slack: FakeSlack, hook: SlackWebhookNotifier
) -> None:
    """A rate-limited webhook is retried after Retry-After."""
    slack.fail_next([Fail.status(429, retry_after=3)])
    error = failure(hook, note())
    assert error.recoverable
    assert error.retry_after == 3.0


@pytest.mark.parametrize("spec", [Fail.status(500), Fail.status(503), Fail.reset(), Fail.hang(5)])
def test_webhook_transient_failures_are_recoverable(
    slack: FakeSlack, hook: SlackWebhookNotifier, spec: Fail
) -> None:
    """5xx, resets and timeouts on a webhook are retried, with one attempt each."""
    slack.fail_next([spec])
    assert failure(hook, note()).recoverable
    assert len(slack.attempts) == 1


@pytest.mark.parametrize(
    "slack_error", ["invalid_token", "channel_not_found", "no_service", "channel_is_archived"]
)
def test_webhook_client_errors_are_permanent(
    slack: FakeSlack, hook: SlackWebhookNotifier, slack_error: str
) -> None:
    """Webhook 4xx answers are dead-lettered with Slack's error text."""
    slack.fail_next([Fail.error(slack_error)])
    error = failure(hook, note())
    assert not error.recoverable
    assert slack_error in error.reason


def test_webhook_with_wrong_secret_is_permanent(slack: FakeSlack) -> None:
    """A revoked or mistyped webhook URL is invalid_token, not retried."""
    hook = SlackWebhookNotifier(SecretStr(slack.webhook_url + "x"))
    error = failure(hook, note())
    assert not error.recoverable
    assert "invalid_token" in error.reason


# the fake and the protocol


def test_bot_through_the_outbox_keeps_slacks_pace_per_channel(
    slack: FakeSlack, bot: SlackBotNotifier, tmp_path: Path
) -> None:
    """Slack receives one channel's posts at least `pace` apart; another channel is not held."""
    pace = 0.5
    with Store.open(tmp_path / "watchdog.db") as store:
        store.apply(
            notifications=[
                note(alert_id="a1"),
                note(alert_id="a2"),
                note(alert_id="b1", channel="#other"),
            ]
        )
        worker = OutboxWorker(
            store, bot, now=lambda: datetime.now(UTC), sleep=asyncio.sleep, pace=pace
        )

        async def deliver_all() -> None:
            stop, wake = asyncio.Event(), asyncio.Event()
            task = asyncio.create_task(worker.run(stop, wake))
            await asyncio.to_thread(slack.wait_for, 3, 10.0)
            stop.set()
            await asyncio.wait_for(task, timeout=5)

        asyncio.run(deliver_all())
    first, second = slack.post_times(CHANNEL)
    [other] = slack.post_times("#other")
    # Arrival times also carry each request's own latency: allow 0.1 s of it.
    assert second - first >= pace - 0.1
    assert other < second


def test_fake_wait_for_times_out_with_what_it_saw(slack: FakeSlack) -> None:
    """wait_for fails loudly instead of hanging when the expected message never comes."""
    with pytest.raises(TimeoutError, match="messages not as expected"):
        slack.wait_for(1, timeout=0.05)


def test_notifiers_satisfy_the_protocol(slack: FakeSlack) -> None:
    """Every sender has its stable name and matches `Notifier`."""
    notifiers: list[Notifier] = [
        SlackBotNotifier(SecretStr("xoxb-x"), api_url=slack.api_url),
        SlackWebhookNotifier(SecretStr(slack.webhook_url)),
        ConsoleNotifier(__import__("io").StringIO()),
    ]
    assert [n.name for n in notifiers] == ["slack-bot", "slack-webhook", "console"]


@pytest.mark.parametrize("kind", [TransitionKind.PENDING, TransitionKind.CANCELLED])
def test_unnotified_kinds_are_dead_lettered(
    slack: FakeSlack, bot: SlackBotNotifier, kind: TransitionKind
) -> None:
    """Handing a sender an audit-only transition is a permanent error, and sends nothing."""
    assert not failure(bot, note(kind=kind)).recoverable
    assert slack.attempts == []
