"""The fire drill (`watchdog notify-test`): a clearly marked test card down the real path.

The card is a `Notification` like any alert's, rendered by `watchdog.notify.render` and
sent by the notifier `watchdog run` builds from the same settings, to the channel a rule
without a channel of its own is routed to (or the one asked for). It never enters the
store, so the drill works whether or not the daemon runs and leaves the daemon's alerts,
outbox and state as they were.

What each sender does with it:
- bot: posts the card (chat.postMessage), then resolves it as a real alert is resolved:
  the card edited in place (chat.update) and a reply in its thread.
- webhook: posts the card; an incoming webhook can neither edit a message nor say where
  it went.
- console: prints the card.
- PagerDuty (`--pagerduty`): triggers a critical test incident whose summary says it is a
  test, then resolves it under the same dedup_key.

A failure is a `DrillFailed` naming the step and Slack's error; `advice` says what to do.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from watchdog.errors import NotifyError
from watchdog.model import MessageRef, Notification, Severity, TransitionKind
from watchdog.notify import Notifier, SlackBotNotifier, SlackWebhookNotifier

__all__ = [
    "TEST_RULE",
    "DrillFailed",
    "DrillResult",
    "advice",
    "drill_card",
    "failure_lines",
    "result_lines",
    "run_drill",
    "run_pagerduty_drill",
]

TEST_RULE = "🧪 TEST: watchdog notify-test"
"""The rule name the card shows in its header and preview: nobody mistakes it for an alert."""
_REJECTED_TOKEN = frozenset({"invalid_auth", "not_authed", "token_revoked", "account_inactive"})


@dataclass(frozen=True, slots=True)
class DrillResult:
    """Where the test card went; `posted` is None for senders that cannot say (webhook, console)."""

    sender: str
    channel: str
    posted: MessageRef | None


class DrillFailed(Exception):
    """A step of the drill failed; `posted` is set when the card was posted before it."""

    def __init__(
        self, step: str, error: NotifyError, channel: str, posted: MessageRef | None = None
    ) -> None:
        self.step = step
        self.error = error
        self.channel = channel
        self.posted = posted
        super().__init__(f"{step}: {error.reason}")


def drill_card(channel: str, at: datetime, host: str) -> Notification:
    """The firing test card: informational, mentions nobody, says it is a test and from where."""
    return Notification(
        alert_id=secrets.token_hex(6),
        kind=TransitionKind.FIRING,
        rule=TEST_RULE,
        series="fire drill",
        severity=Severity.INFO,
        at=at,
        since=at,
        count=0,
        condition="a test card, not an alert",
        channel=channel,
        reason=(
            f"Sent by `watchdog notify-test` on {host} to check that alerts reach this"
            " channel. Nothing is wrong; no action needed."
        ),
    )


def run_drill(
    notifier: Notifier, channel: str, *, now: Callable[[], datetime], host: str
) -> DrillResult:
    """Send the test card and, where the sender can, resolve it as a real alert resolves.

    Raises `DrillFailed` for the first step that failed; the drill never retries.
    """
    firing = drill_card(channel, now(), host)
    try:
        posted = notifier.deliver(firing, None)
    except NotifyError as exc:
        raise DrillFailed("posting the test card", exc, channel) from None
    if posted is None:
        return DrillResult(notifier.name, channel, None)
    resolved = replace(
        firing,
        kind=TransitionKind.RESOLVED,
        at=now(),
        reason="fire drill over: resolved as a real alert would be",
    )
    try:
        notifier.deliver(resolved, posted)
    except NotifyError as exc:
        raise DrillFailed("resolving the test card", exc, channel, posted) from None
    return DrillResult(notifier.name, channel, posted)


def run_pagerduty_drill(sender: Notifier, *, now: Callable[[], datetime], host: str) -> list[str]:
    """Trigger a clearly marked test incident, then resolve it; the lines to print.

    Critical, so that it goes where real pages go. Raises `DrillFailed` for the first
    step that failed; the drill never retries.
    """
    trigger = replace(drill_card("pagerduty", now(), host), severity=Severity.CRITICAL)
    trigger = replace(trigger, alert_id=f"notify-test-{trigger.alert_id}")
    resolve = replace(trigger, kind=TransitionKind.RESOLVED, at=now())
    for step, note in (("triggering", trigger), ("resolving", resolve)):
        try:
            sender.deliver(note, None)
        except NotifyError as exc:
            raise DrillFailed(f"{step} the test incident", exc, "pagerduty") from None
    return [
        "test incident triggered in PagerDuty and resolved",
        f"dedup_key: {trigger.alert_id}",
    ]


def result_lines(result: DrillResult) -> list[str]:
    """What `notify-test` prints after a drill went through: what happened, channel, ts."""
    if result.posted is not None:
        return [
            f"test card posted to {result.channel} and edited to resolved",
            f"channel: {result.posted.channel}",
            f"ts: {result.posted.ts}",
        ]
    if result.sender == SlackWebhookNotifier.name:
        return [
            "test card posted through the incoming webhook; a webhook cannot edit it to"
            " resolved nor return its ts",
            "channel: the webhook's own",
            "ts: none",
        ]
    return [
        "test card printed above: no SLACK_BOT_TOKEN or SLACK_WEBHOOK_URL is set",
        f"channel: {result.channel}",
        "ts: none",
    ]


def failure_lines(failed: DrillFailed, notifier: Notifier) -> list[str]:
    """What `notify-test` prints when a step failed: the card if posted, the error, advice."""
    lines = []
    if failed.posted is not None:
        lines.append(
            f"notify-test: the test card was posted (channel {failed.posted.channel},"
            f" ts {failed.posted.ts}) but {failed.step} failed"
        )
    lines.append(f"notify-test: {failed.step} failed: {failed.error.reason}")
    hint = advice(failed.error, failed.channel, notifier)
    if hint:
        lines.append(f"what to do: {hint}")
    return lines


def advice(error: NotifyError, channel: str, notifier: Notifier) -> str | None:
    """What to do about a failed drill, for the Slack errors a setup typically hits."""
    code = error.slack_error
    if code == "not_in_channel":
        bot = notifier.bot_name() if isinstance(notifier, SlackBotNotifier) else None
        return (
            f"the bot is not a member of {channel}: invite it by sending"
            f" `/invite @{bot or '<your bot>'}` in {channel}, then run notify-test again"
        )
    if code == "channel_not_found":
        return (
            f"Slack knows no channel {channel} that the bot can see: check the name"
            " ([slack] channel or --channel, e.g. #voice-oncall or an id like C0123456789);"
            " a private channel needs the bot invited first (/invite @<your bot>)"
        )
    if code in _REJECTED_TOKEN:
        return (
            "Slack rejected the bot token: set SLACK_BOT_TOKEN (or the slack_bot_token"
            " credential) to the app's current Bot User OAuth Token (xoxb-...); after a"
            " revocation, reinstall the app to get a new one"
        )
    if code == "missing_scope":
        scope = error.needed_scope or "chat:write"
        return (
            f"the bot token lacks the {scope} scope: add it under OAuth & Permissions in"
            " the Slack app's settings, reinstall the app, and use the new bot token"
        )
    return None
