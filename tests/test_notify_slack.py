"""The real Slack notifiers over real HTTP against the loopback FakeSlack."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from tests.fakes.slack import Fail, FakeSlack, channel_id
from watchdog.delivery import OutboxWorker
from watchdog.errors import NotifyError
from watchdog.model import MessageRef, Notification, Severity, TransitionKind
from watchdog.notify import ConsoleNotifier, Notifier, SlackBotNotifier, SlackWebhookNotifier
from watchdog.notify.slack import EVENT_TYPE, LOOKUP_MARGIN
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


# bot: exactly once when an answer is lost

LOST_ANSWERS = [Fail.reset(accept=True), Fail.hang(5, accept=True)]


def fresh_bot(slack: FakeSlack) -> SlackBotNotifier:
    """A notifier that has learned nothing yet, as after a restart."""
    return SlackBotNotifier(SecretStr(slack.token), api_url=slack.api_url, timeout=0.3)


def read_methods(slack: FakeSlack) -> list[str]:
    return [read.method for read in slack.reads]


def test_every_post_carries_metadata_naming_its_notification(
    slack: FakeSlack, bot: SlackBotNotifier, hook: SlackWebhookNotifier
) -> None:
    """Cards, thread replies and webhook posts carry metadata with alert id, transition, time."""
    later = AT + timedelta(hours=1)
    ref = bot.deliver(note(), None)
    assert ref is not None
    bot.deliver(dataclasses.replace(REPEAT, at=later), ref)
    bot.deliver(RESOLVED, ref)
    bot.deliver(REPEAT, None)
    hook.deliver(note(alert_id="al-2"), None)
    posts = [m for m in slack.messages if m.method != "chat.update"]
    assert [(m.metadata or {}).get("event_type") for m in posts] == [EVENT_TYPE] * 5
    assert [
        {k: (m.metadata or {})["event_payload"][k] for k in ("alert_id", "transition", "at")}
        for m in posts
    ] == [
        {"alert_id": "al-1", "transition": "firing", "at": AT.isoformat()},
        {"alert_id": "al-1", "transition": "repeat", "at": later.isoformat()},
        {"alert_id": "al-1", "transition": "resolved", "at": AT.isoformat()},
        {"alert_id": "al-1", "transition": "repeat", "at": AT.isoformat()},
        {"alert_id": "al-2", "transition": "firing", "at": AT.isoformat()},
    ]


@pytest.mark.parametrize("lost", LOST_ANSWERS, ids=["reset", "timeout"])
def test_a_card_whose_answer_was_lost_is_found_not_posted_again(
    slack: FakeSlack, bot: SlackBotNotifier, lost: Fail
) -> None:
    """Slack keeps the card but the answer is lost: the failure is in doubt, and the next
    attempt (after a restart: the channel name is resolved again) adopts the card."""
    started = datetime.now(UTC)
    slack.fail_next([lost])
    error = failure(bot, note())
    assert (error.recoverable, error.in_doubt) == (True, True)
    with capture_logs() as logs:
        ref = fresh_bot(slack).deliver(note(), None, in_doubt_since=started)
    [card] = slack.top_level(CHANNEL)
    assert ref == MessageRef(card.channel, card.ts)
    assert read_methods(slack) == ["conversations.list", "conversations.history"]
    assert [(e["event"], e["ts"]) for e in logs] == [("notify.found", card.ts)]


def test_a_lost_repeat_is_found_in_the_thread(slack: FakeSlack, bot: SlackBotNotifier) -> None:
    """A thread reply whose answer was lost is looked for among the thread's replies."""
    ref = bot.deliver(note(), None)
    assert ref is not None
    started = datetime.now(UTC)
    slack.fail_next([Fail.reset(accept=True)])
    assert failure(bot, REPEAT, ref).in_doubt
    assert bot.deliver(REPEAT, ref, in_doubt_since=started) == ref
    assert len(slack.replies(ref.ts)) == 1
    assert read_methods(slack) == ["conversations.replies"]


def test_a_lost_resolution_reply_is_found_and_not_repeated(
    slack: FakeSlack, bot: SlackBotNotifier
) -> None:
    """RESOLVED: the card was edited and the reply kept, its answer lost: nothing is posted
    again on the next attempt."""
    ref = bot.deliver(note(), None)
    assert ref is not None
    started = datetime.now(UTC)
    slack.fail_next([Fail.reset(accept=True, method="chat.postMessage")])
    assert failure(bot, RESOLVED, ref).in_doubt
    assert bot.deliver(RESOLVED, ref, in_doubt_since=started) == ref
    assert len(slack.replies(ref.ts)) == 1
    assert len(slack.updates(ref.ts)) == 1


def test_another_repeat_of_the_same_alert_is_not_adopted(
    slack: FakeSlack, bot: SlackBotNotifier
) -> None:
    """Repeats of one alert differ by time: an earlier repeat is not taken for a lost one."""
    started = datetime.now(UTC)
    ref = bot.deliver(note(), None)
    assert ref is not None
    bot.deliver(REPEAT, ref)
    later = dataclasses.replace(REPEAT, at=AT + timedelta(hours=1))
    assert bot.deliver(later, ref, in_doubt_since=started) == ref
    assert len(slack.replies(ref.ts)) == 2


def test_a_post_that_never_arrived_is_posted_after_the_lookup(
    slack: FakeSlack, bot: SlackBotNotifier
) -> None:
    """A reset before Slack kept anything is in doubt too; the lookup finds nothing, so the
    card is posted, once."""
    started = datetime.now(UTC)
    slack.fail_next([Fail.reset()])
    assert failure(bot, note()).in_doubt
    ref = bot.deliver(note(), None, in_doubt_since=started)
    [card] = slack.top_level(CHANNEL)
    assert ref == MessageRef(card.channel, card.ts)


@pytest.mark.parametrize(
    ("spec", "in_doubt"),
    [
        (Fail.reset(), True),
        (Fail.hang(5), True),
        (Fail.status(500), True),
        (Fail.status(502, body="<html>bad gateway</html>"), True),
        (Fail.status(504), True),
        (Fail.error("fatal_error"), True),
        (Fail.error("internal_error"), True),
        (Fail.status(503), False),
        (Fail.error("service_unavailable"), False),
        (Fail.status(408), False),
        (Fail.error("request_timeout"), False),
        (Fail.status(429), False),
        (Fail.error("ratelimited"), False),
        (Fail.error("channel_not_found"), False),
        (Fail.error("invalid_blocks"), False),
    ],
    ids=lambda v: v if isinstance(v, bool) else f"{v.action}-{v.code}-{v.slack_error}",
)
def test_which_failed_posts_are_in_doubt(
    slack: FakeSlack, bot: SlackBotNotifier, spec: Fail, in_doubt: bool
) -> None:
    """A lost answer, 5xx but 503 and Slack's 'maybe partly done' errors leave the post in
    doubt; 503, 408, 429 and other errors say it was not made."""
    slack.fail_next([spec])
    assert failure(bot, note()).in_doubt is in_doubt


def test_refused_connections_and_failed_edits_are_not_in_doubt(
    slack: FakeSlack, bot: SlackBotNotifier
) -> None:
    """Nothing listening or no such host: the post certainly never left. A failed edit
    posts nothing."""
    for url in (f"http://127.0.0.1:{closed_port()}/api/", "http://no-such-host.invalid/api/"):
        unreachable = SlackBotNotifier(SecretStr("xoxb-x"), api_url=url, timeout=0.3)
        error = failure(unreachable, note())
        assert (error.recoverable, error.in_doubt) == (True, False)
    ref = bot.deliver(note(), None)
    slack.fail_next([Fail.status(500)])
    assert not failure(bot, RESOLVED, ref).in_doubt


def test_the_lookup_starts_a_little_before_the_first_attempt(
    slack: FakeSlack, bot: SlackBotNotifier
) -> None:
    """The history is searched from LOOKUP_MARGIN before the first attempt, not earlier."""
    posted = datetime.now(UTC)
    slack.fail_next([Fail.reset(accept=True)])
    failure(bot, note())
    too_late = posted + LOOKUP_MARGIN + timedelta(seconds=30)
    in_time = posted + LOOKUP_MARGIN - timedelta(seconds=30)
    assert bot.deliver(note(), None, in_doubt_since=in_time) == MessageRef(
        channel_id(CHANNEL), slack.top_level()[0].ts
    )
    assert len(slack.top_level(CHANNEL)) == 1
    bot.deliver(note(), None, in_doubt_since=too_late)
    assert len(slack.top_level(CHANNEL)) == 2


def test_the_lookup_pages_through_the_history(slack: FakeSlack, bot: SlackBotNotifier) -> None:
    """With Slack answering two messages a page, a card behind five newer ones is found."""
    started = datetime.now(UTC)
    slack.fail_next([Fail.reset(accept=True)])
    failure(bot, note())
    for number in range(5):
        bot.deliver(note(alert_id=f"other-{number}"), None)
    slack.cap_pages(2)
    ref = bot.deliver(note(), None, in_doubt_since=started)
    assert ref == MessageRef(channel_id(CHANNEL), slack.top_level(CHANNEL)[0].ts)
    assert len(slack.top_level(CHANNEL)) == 6
    assert read_methods(slack) == ["conversations.history"] * 3


def test_a_search_past_its_page_limit_gives_up_and_says_so(
    slack: FakeSlack, bot: SlackBotNotifier
) -> None:
    """Fifty pages without the post: the search stops, posts again and reports it."""
    started = datetime.now(UTC)
    slack.fail_next([Fail.reset(accept=True)])
    failure(bot, note())
    for number in range(50):
        bot.deliver(note(alert_id=f"other-{number}"), None)
    slack.cap_pages(1)
    with capture_logs() as logs:
        assert bot.deliver(note(), None, in_doubt_since=started) is not None
    assert read_methods(slack) == ["conversations.history"] * 50
    assert len([m for m in slack.top_level(CHANNEL) if "al-1" in json.dumps(m.metadata)]) == 2
    [said] = logs
    assert "more than 50 pages" in said["reason"]


def test_channel_names_resolve_through_every_page_of_the_list(slack: FakeSlack) -> None:
    """After a restart the name is looked up in conversations.list, page by page; a channel
    named by id needs no list."""
    for number in range(5):
        slack.add_channel(f"#other-{number}")
    started = datetime.now(UTC)
    slack.fail_next([Fail.reset(accept=True)])
    failure(fresh_bot(slack), note())
    slack.cap_pages(2)
    assert fresh_bot(slack).deliver(note(), None, in_doubt_since=started) is not None
    assert len(slack.top_level(CHANNEL)) == 1
    assert read_methods(slack).count("conversations.list") == 3

    by_id = note(alert_id="al-2", channel=channel_id("#by-id"))
    slack.fail_next([Fail.reset(accept=True)])
    failure(fresh_bot(slack), by_id)
    before = len(slack.reads)
    assert fresh_bot(slack).deliver(by_id, None, in_doubt_since=started) is not None
    assert read_methods(slack)[before:] == ["conversations.history"]
    assert len(slack.top_level("#by-id")) == 1


@pytest.mark.parametrize("code", [503, 429])
def test_a_failed_lookup_posts_nothing_and_stays_in_doubt(
    slack: FakeSlack, bot: SlackBotNotifier, code: int
) -> None:
    """If the history cannot be read just now (503, 429), nothing is posted: retried, in
    doubt."""
    started = datetime.now(UTC)
    slack.fail_next([Fail.reset(accept=True), Fail.status(code, method="conversations.history")])
    failure(bot, note())
    error = failure_in_doubt(bot, note(), started)
    assert (error.recoverable, error.in_doubt) == (True, True)
    assert "looking for an earlier post" in error.reason
    assert len(slack.top_level(CHANNEL)) == 1


def failure_in_doubt(
    notifier: SlackBotNotifier, notification: Notification, since: datetime
) -> NotifyError:
    with pytest.raises(NotifyError) as info:
        notifier.deliver(notification, None, in_doubt_since=since)
    return info.value


def test_a_lookup_refused_for_good_posts_again_and_says_why(
    slack: FakeSlack, bot: SlackBotNotifier
) -> None:
    """not_in_channel on the lookup (the bot posts with chat:write.public but is not a
    member): posted again, at least once, said with the reason."""
    started = datetime.now(UTC)
    slack.fail_next(
        [Fail.reset(accept=True), Fail.error("not_in_channel", method="conversations.history")]
    )
    failure(bot, note())
    with capture_logs() as logs:
        assert bot.deliver(note(), None, in_doubt_since=started) is not None
    assert len(slack.top_level(CHANNEL)) == 2
    [said] = logs
    assert (said["event"], said["guarantee"]) == ("notify.guarantee", "at-least-once")
    assert "not_in_channel" in said["reason"]


def test_without_the_history_scope_it_posts_again_and_says_so_once(
    slack: FakeSlack, bot: SlackBotNotifier
) -> None:
    """missing_scope on the lookup: the post is made again (at least once) and
    notify.guarantee says so once, however many lookups fail."""
    slack.set_scopes(["chat:write", "channels:read", "groups:read"])
    started = datetime.now(UTC)
    with capture_logs() as logs:
        for alert_id in ("al-1", "al-2"):
            slack.fail_next([Fail.reset(accept=True)])
            failure(bot, note(alert_id=alert_id))
            assert bot.deliver(note(alert_id=alert_id), None, in_doubt_since=started)
    assert len(slack.top_level(CHANNEL)) == 4
    [said] = [e for e in logs if e["event"] == "notify.guarantee"]
    assert said["guarantee"] == "at-least-once"
    assert "missing_scope" in said["reason"]


def test_the_guarantee_follows_the_token_scopes(slack: FakeSlack, bot: SlackBotNotifier) -> None:
    """auth.test's x-oauth-scopes decide: all history scopes → exactly once; without them
    at least once, naming what is missing (private channels only when only those lack)."""
    assert bot.guarantee().exactly_once is True
    slack.set_scopes(["chat:write", "channels:read"])
    public = bot.guarantee()
    assert public.exactly_once is False
    assert "channels:history" in public.reason
    assert "groups:history" in public.reason
    assert "private" not in public.reason
    slack.set_scopes(["chat:write", "channels:read", "channels:history"])
    private = bot.guarantee()
    assert private.exactly_once is False
    assert "in private channels" in private.reason
    assert read_methods(slack) == ["auth.test"] * 3


def test_the_guarantee_is_unknown_when_slack_cannot_be_asked() -> None:
    """Slack unreachable: the guarantee is unknown, not claimed."""
    bot = SlackBotNotifier(
        SecretStr("xoxb-x"), api_url=f"http://127.0.0.1:{closed_port()}/api/", timeout=0.3
    )
    guarantee = bot.guarantee()
    assert (guarantee.exactly_once, guarantee.name) == (None, "unknown")
    assert "unreachable" in guarantee.reason


def test_announcing_a_missing_scope_at_start_is_not_repeated_by_lookups(
    slack: FakeSlack, bot: SlackBotNotifier
) -> None:
    """Said once at start; a lookup failing for the same missing scope says nothing more."""
    slack.set_scopes(["chat:write", "channels:read"])
    started = datetime.now(UTC)
    with capture_logs() as logs:
        assert bot.announce_guarantee().exactly_once is False
        slack.fail_next([Fail.reset(accept=True)])
        failure(bot, note())
        bot.deliver(note(), None, in_doubt_since=started)
    assert [e["event"] for e in logs] == ["notify.guarantee"]
    assert logs[0]["log_level"] == "warning"


def test_webhooks_are_at_least_once(hook: SlackWebhookNotifier) -> None:
    """A webhook cannot read history, so it never claims exactly once."""
    assert hook.guarantee().exactly_once is False


# annotations: the card edited in place (acknowledged, ...)

ANNOTATION = note(
    kind=TransitionKind.ANNOTATION, annotations=("Acknowledged by <@U0ALICE>",), acked_by="U0ALICE"
)


def test_bot_with_buttons_posts_the_controls_and_annotation_edits_the_card(
    slack: FakeSlack,
) -> None:
    """With buttons the card has the controls; an annotation edits it, posting nothing."""
    bot = SlackBotNotifier(SecretStr(slack.token), api_url=slack.api_url, buttons=True)
    ref = bot.deliver(note(), None)
    assert ref is not None
    (card,) = slack.messages
    assert any(block["type"] == "actions" for block in card.blocks)

    assert bot.deliver(ANNOTATION, ref) == ref
    (edit,) = slack.updates(ref.ts)
    assert "Acknowledged by <@U0ALICE>" in json.dumps(edit.blocks)
    assert len(slack.top_level()) == 1
    assert slack.replies(ref.ts) == []


def test_annotation_without_a_card_sends_nothing(slack: FakeSlack, bot: SlackBotNotifier) -> None:
    """A card never posted, or deleted since, has nothing to annotate: done, no new message."""
    assert bot.deliver(ANNOTATION, None) is None
    gone = MessageRef(channel=channel_id(CHANNEL), ts="1700000000.000001")
    assert bot.deliver(ANNOTATION, gone) == gone
    assert slack.messages == []


def test_webhook_cannot_edit_so_an_annotation_posts_nothing(
    slack: FakeSlack, hook: SlackWebhookNotifier
) -> None:
    """Webhook posts cannot be edited: an annotation is delivered as nothing at all."""
    assert hook.deliver(ANNOTATION, None) is None
    assert slack.messages == []


def test_a_fenced_bot_posts_and_edits_nothing(slack: FakeSlack) -> None:
    """A bot whose fence is closed (the daemon lost its leadership) refuses each post and
    edit before the request leaves: recoverable, in doubt, and Slack saw no call."""
    bot = SlackBotNotifier(SecretStr(slack.token), api_url=slack.api_url)
    bot.fence_with(lambda: "not the leader")
    original = MessageRef(channel_id(CHANNEL), "1.000100")
    for kind, ref in ((TransitionKind.FIRING, None), (TransitionKind.RESOLVED, original)):
        with pytest.raises(NotifyError) as caught:
            bot.deliver(note(kind=kind), ref)
        assert caught.value.recoverable
        assert caught.value.in_doubt
        assert "not the leader" in caught.value.reason
    assert slack.attempts == []
