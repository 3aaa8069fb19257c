"""Escalated, de-escalated and flapping notifications: the card edited in place, a threaded
reply, never a new card (rendering, the Slack bot against the loopback fake, coalescing)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from tests.fakes.slack import Fail, FakeSlack, channel_id
from watchdog.errors import NotifyError
from watchdog.model import MessageRef, Notification, Severity, TransitionKind
from watchdog.notify.coalesce import Action, Queued, Reason, plan_head
from watchdog.notify.console import format_console
from watchdog.notify.render import render_top_level
from watchdog.notify.slack import SlackBotNotifier, SlackWebhookNotifier

AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
CHANNEL = "#voice-oncall"


def note(**changes: Any) -> Notification:
    base = Notification(
        alert_id="al-1",
        kind=TransitionKind.FIRING,
        rule="high-load",
        series="workspace",
        severity=Severity.WARNING,
        at=AT,
        since=AT - timedelta(minutes=5),
        count=25,
        condition="count > 20",
        channel=CHANNEL,
        recent=(3, 9, 25),
    )
    return dataclasses.replace(base, **changes)


ESCALATED = note(
    kind=TransitionKind.ESCALATED,
    severity=Severity.CRITICAL,
    count=31,
    at=AT + timedelta(minutes=1),
    reason="escalated: count > 30",
    mention="<!subteam^S0123>",
)
DEESCALATED = note(
    kind=TransitionKind.DEESCALATED,
    count=26,
    at=AT + timedelta(minutes=2),
    reason="count 26: no longer count > 30",
)
FLAPPING = note(
    kind=TransitionKind.FLAPPING,
    count=12,
    at=AT + timedelta(minutes=3),
    reason="6 firings and resolutions within 1h",
)
STEADY = note(at=AT + timedelta(hours=2), reason="steady for 1h: no longer flapping")


def texts(blocks: Any) -> str:
    """Every text of a message's blocks, one per line."""
    if isinstance(blocks, dict):
        return "\n".join(texts(v) if not isinstance(v, str) else v for v in blocks.values())
    if isinstance(blocks, list | tuple):
        return "\n".join(texts(b) for b in blocks)
    return ""


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


@pytest.fixture
def bot(slack: FakeSlack) -> SlackBotNotifier:
    return SlackBotNotifier(SecretStr(slack.token), api_url=slack.api_url, timeout=0.3)


def test_escalation_edits_the_card_and_pages_in_its_thread(
    slack: FakeSlack, bot: SlackBotNotifier
) -> None:
    """ESCALATED rewrites the card (severity, emoji, level) and mentions in a reply."""
    ref = bot.deliver(note(), None)
    assert ref is not None
    assert bot.deliver(ESCALATED, ref) == ref
    [update] = slack.updates(ref.ts)
    assert update.blocks[0]["text"]["text"] == "🔴 FIRING: high-load"
    assert "*Severity*\ncritical" in texts(update.blocks)
    assert "escalated: count &gt; 30" in texts(update.blocks)
    [reply] = slack.replies(ref.ts)
    assert "Escalated to *CRITICAL*" in reply.blocks[0]["text"]["text"]
    assert "<!subteam^S0123>" in reply.text
    assert len(slack.top_level()) == 1


def test_deescalation_edits_the_card_back_without_paging(
    slack: FakeSlack, bot: SlackBotNotifier
) -> None:
    """DEESCALATED shows the lower severity on the card, and a reply that pages nobody."""
    ref = bot.deliver(note(), None)
    assert ref is not None
    bot.deliver(ESCALATED, ref)
    bot.deliver(DEESCALATED, ref)
    last_update = slack.updates(ref.ts)[-1]
    assert last_update.blocks[0]["text"]["text"] == "🟠 FIRING: high-load"
    reply = slack.replies(ref.ts)[-1]
    assert "Back to *WARNING*" in reply.blocks[0]["text"]["text"]
    assert "subteam" not in reply.text
    assert len(slack.top_level()) == 1


def test_flapping_edits_the_card_and_replies_once(slack: FakeSlack, bot: SlackBotNotifier) -> None:
    """FLAPPING marks the card as flapping and says so once in its thread."""
    ref = bot.deliver(note(), None)
    assert ref is not None
    bot.deliver(FLAPPING, ref)
    [update] = slack.updates(ref.ts)
    assert update.blocks[0]["text"]["text"] == "🟠 FLAPPING: high-load"
    [reply] = slack.replies(ref.ts)
    assert "Flapping" in reply.blocks[0]["text"]["text"]
    assert len(slack.top_level()) == 1


def test_firing_after_flapping_edits_the_existing_card(
    slack: FakeSlack, bot: SlackBotNotifier
) -> None:
    """A FIRING whose card exists (the alert left flapping) edits it; no second card."""
    ref = bot.deliver(note(), None)
    assert ref is not None
    bot.deliver(FLAPPING, ref)
    assert bot.deliver(STEADY, ref) == ref
    assert slack.updates(ref.ts)[-1].blocks[0]["text"]["text"] == "🟠 FIRING: high-load"
    assert "Firing steadily" in slack.replies(ref.ts)[-1].blocks[0]["text"]["text"]
    assert len(slack.top_level()) == 1


def test_escalation_whose_card_is_gone_posts_a_self_contained_card(
    slack: FakeSlack, bot: SlackBotNotifier
) -> None:
    """Without a card to edit (deleted in Slack), the escalation still reaches the channel."""
    gone = MessageRef(channel=channel_id(CHANNEL), ts="1600000000.000100")
    ref = bot.deliver(ESCALATED, gone)
    [message] = slack.messages
    assert ref == MessageRef(message.channel, message.ts)
    assert message.thread_ts is None
    assert message.blocks[0]["text"]["text"] == "🔴 ESCALATED: high-load"
    assert "<!subteam^S0123>" in message.text


def test_webhook_posts_escalation_as_a_card_with_the_mention(slack: FakeSlack) -> None:
    """A webhook cannot edit: the escalation is a self-contained card that pages."""
    hook = SlackWebhookNotifier(SecretStr(slack.webhook_url), timeout=0.3)
    assert hook.deliver(ESCALATED, None) is None
    [message] = slack.top_level()
    assert "ESCALATED" in message.text
    assert "<!subteam^S0123>" in message.text


def test_top_level_cards_name_the_change() -> None:
    """Self-contained renderings of each new kind say what happened."""
    for kind_note, verb in ((ESCALATED, "ESCALATED"), (DEESCALATED, "DEESCALATED")):
        assert render_top_level(kind_note).blocks[0]["text"]["text"].endswith(f"{verb}: high-load")
    assert render_top_level(FLAPPING).blocks[0]["text"]["text"] == "🟠 FLAPPING: high-load"


def test_console_names_escalation_and_flapping() -> None:
    """The console block of each new kind names it, with its reason."""
    assert format_console(ESCALATED).startswith("🔴 ESCALATED  high-load")
    assert "reason escalated: count > 30" in format_console(ESCALATED)
    assert format_console(FLAPPING).startswith("🟠 FLAPPING  high-load")


# coalescing


def queue(*notes: Notification) -> list[Queued]:
    return [Queued(i + 1, n) for i, n in enumerate(notes)]


def test_escalations_between_firing_and_resolved_fold_away() -> None:
    """A queued FIRING, its escalations and its RESOLVED become one fired-and-resolved card."""
    resolved = note(kind=TransitionKind.RESOLVED, at=AT + timedelta(minutes=4), count=3)
    plan = plan_head(queue(note(), ESCALATED, FLAPPING, resolved))
    assert (plan.action, plan.consumed) == (Action.FOLD, (2, 3, 4))
    assert plan.note.mention is None


def test_a_firing_whose_card_exists_is_never_folded() -> None:
    """The FIRING that leaves flapping edits a card in Slack: folding it would post anew."""
    resolved = note(kind=TransitionKind.RESOLVED, at=AT + timedelta(hours=3), count=3)
    plan = plan_head(queue(STEADY, resolved), announced={"al-1"})
    assert (plan.action, plan.reason) == (Action.SEND, Reason.UP_TO_DATE)


@pytest.mark.parametrize("change", [ESCALATED, DEESCALATED, FLAPPING])
def test_a_change_to_a_card_never_sent_is_dropped(change: Notification) -> None:
    """An edit of a card given up on its first attempt would become a new card: dropped."""
    plan = plan_head(queue(change), never_announced={"al-1"})
    assert (plan.action, plan.reason) == (Action.DROP, Reason.NEVER_ANNOUNCED)


# a post whose answer was lost


def test_a_lost_escalation_reply_is_found_and_pages_once(
    slack: FakeSlack, bot: SlackBotNotifier
) -> None:
    """The card was edited and the paging reply kept, its answer lost: the next attempt
    finds the reply in the thread and pages nobody twice."""
    ref = bot.deliver(note(), None)
    assert ref is not None
    started = datetime.now(UTC)
    slack.fail_next([Fail.reset(accept=True, method="chat.postMessage")])
    with pytest.raises(NotifyError) as lost:
        bot.deliver(ESCALATED, ref)
    assert lost.value.in_doubt
    assert bot.deliver(ESCALATED, ref, in_doubt_since=started) == ref
    assert len(slack.replies(ref.ts)) == 1
    assert len(slack.top_level()) == 1


def test_a_lost_escalation_card_in_place_of_a_gone_one_is_found(
    slack: FakeSlack, bot: SlackBotNotifier
) -> None:
    """With the card gone, the escalation became a card of its own whose answer was lost:
    the next attempt finds it in the channel instead of posting a second one."""
    gone = MessageRef(channel=channel_id(CHANNEL), ts="1600000000.000100")
    started = datetime.now(UTC)
    slack.fail_next([Fail.reset(accept=True, method="chat.postMessage")])
    with pytest.raises(NotifyError) as lost:
        bot.deliver(ESCALATED, gone)
    assert lost.value.in_doubt
    ref = bot.deliver(ESCALATED, gone, in_doubt_since=started)
    [card] = slack.top_level(CHANNEL)
    assert ref == MessageRef(card.channel, card.ts)
