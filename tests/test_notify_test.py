"""`watchdog notify-test`: the fire drill, against the loopback Slack, as a real process."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fakes.slack import Fail, FakeSlack, channel_id
from tests.harness import SLACK_TOKEN, Site, rule

Advice = tuple[str, ...]


def _fingerprint(directory: Path) -> dict[str, tuple[str, int]]:
    """Every file under `directory`: its content hash and modification time."""
    return {
        str(path.relative_to(directory)): (
            hashlib.sha256(path.read_bytes()).hexdigest(),
            path.stat().st_mtime_ns,
        )
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def _assert_clean(*outputs: str) -> None:
    for output in outputs:
        assert SLACK_TOKEN not in output
        assert "Traceback" not in output


def test_the_test_card_is_posted_then_edited_to_resolved(
    site: Callable[..., Site], slack: FakeSlack
) -> None:
    """Bot mode: a marked test card lands in the default channel, is edited to resolved
    in place, and the command prints the channel and the card's ts (exit 0)."""
    s = site("")
    result = s.cli("notify-test", "--config", str(s.config))
    assert result.returncode == 0, result.stderr
    posts = slack.top_level("#oncall")
    assert len(posts) == 1
    card = posts[0]
    assert "TEST" in card.text
    assert "TEST" in json.dumps(card.blocks[0], ensure_ascii=False)  # the header
    assert "FIRING" in card.text
    edits = slack.updates(card.ts)
    assert len(edits) == 1
    assert "RESOLVED" in edits[0].text
    assert "TEST" in edits[0].text
    assert f"channel: {channel_id('#oncall')}" in result.stdout.splitlines()
    assert f"ts: {card.ts}" in result.stdout.splitlines()
    _assert_clean(result.stdout, result.stderr)


def test_channel_flag_sends_elsewhere(site: Callable[..., Site], slack: FakeSlack) -> None:
    """`--channel` overrides the configured default channel."""
    s = site("")
    result = s.cli("notify-test", "--config", str(s.config), "--channel", "#drill")
    assert result.returncode == 0, result.stderr
    assert slack.top_level("#oncall") == []
    assert len(slack.top_level("#drill")) == 1
    assert f"channel: {channel_id('#drill')}" in result.stdout.splitlines()


def test_the_drill_leaves_the_daemons_state_untouched(
    site: Callable[..., Site], slack: FakeSlack
) -> None:
    """With the daemon running it works and adds nothing to the outbox or alerts; with it
    stopped, not one byte of the state directory changes."""
    s = site("")
    with s.run() as daemon:
        daemon.wait_for("poll.ok")
        result = s.cli("notify-test", "--config", str(s.config))
        assert result.returncode == 0, result.stderr
        status = s.status()
        assert daemon.stop() == 0
    assert status["alerts"] == []
    assert status["outbox"]["depth"] == 0
    assert not daemon.find("notify.sent")  # the daemon delivered nothing for the drill
    before = _fingerprint(s.state)
    assert before
    again = s.cli("notify-test", "--config", str(s.config))
    assert again.returncode == 0, again.stderr
    assert _fingerprint(s.state) == before
    assert len(slack.top_level("#oncall")) == 2


def test_the_drill_never_creates_a_state_directory(
    site: Callable[..., Site], slack: FakeSlack
) -> None:
    """Before the daemon ever ran, the drill works and leaves no state behind."""
    s = site("")
    result = s.cli("notify-test", "--config", str(s.config))
    assert result.returncode == 0, result.stderr
    assert not s.state.exists()


@pytest.mark.parametrize(
    ("setup", "error", "advice"),
    [
        (
            lambda slack: slack.fail_next([Fail.error("not_in_channel")]),
            "not_in_channel",
            ("invite it", "/invite @watchdog", "#oncall"),
        ),
        (
            lambda slack: slack.missing_channel("#oncall"),
            "channel_not_found",
            ("no channel #oncall", "check the name"),
        ),
        (
            lambda slack: slack.set_scopes(["channels:history", "channels:read"]),
            "missing_scope",
            ("lacks the chat:write scope", "reinstall the app"),
        ),
    ],
    ids=["not_in_channel", "channel_not_found", "missing_scope"],
)
def test_a_slack_refusal_says_what_to_do(
    site: Callable[..., Site],
    slack: FakeSlack,
    setup: Callable[[FakeSlack], None],
    error: str,
    advice: Advice,
) -> None:
    """Slack's error and what to do about it, exit 1, no traceback, no token."""
    setup(slack)
    s = site("")
    result = s.cli("notify-test", "--config", str(s.config))
    assert result.returncode == 1
    assert error in result.stderr
    what_to_do = next(line for line in result.stderr.splitlines() if line.startswith("what to do"))
    for words in advice:
        assert words in what_to_do
    assert slack.messages == []
    _assert_clean(result.stdout, result.stderr)


def test_a_rejected_token_says_what_to_do(site: Callable[..., Site], slack: FakeSlack) -> None:
    """`invalid_auth`: names the bot-token setting to fix; the token itself is not shown."""
    s = site("")
    s.env["SLACK_BOT_TOKEN"] = "xoxb-1111111111-2222222222-RevokedTokenValue"
    result = s.cli("notify-test", "--config", str(s.config))
    assert result.returncode == 1
    assert "invalid_auth" in result.stderr
    assert "what to do: Slack rejected the bot token: set SLACK_BOT_TOKEN" in result.stderr
    assert "RevokedTokenValue" not in result.stdout + result.stderr
    _assert_clean(result.stdout, result.stderr)


def test_a_failed_edit_still_reports_the_posted_card(
    site: Callable[..., Site], slack: FakeSlack
) -> None:
    """When the post succeeds but the edit fails, exit 1 names the posted card's ts."""
    slack.fail_next([Fail.error("restricted_action", method="chat.update")])
    s = site("")
    result = s.cli("notify-test", "--config", str(s.config))
    assert result.returncode == 1
    card = slack.top_level("#oncall")[0]
    assert f"ts {card.ts}" in result.stderr
    assert "restricted_action" in result.stderr
    _assert_clean(result.stdout, result.stderr)


def test_webhook_mode_posts_the_card_and_says_it_cannot_edit(
    site: Callable[..., Site], slack: FakeSlack
) -> None:
    """A webhook posts the card, cannot edit it nor return a ts, and says so (exit 0)."""
    s = site("")
    del s.env["SLACK_BOT_TOKEN"]
    s.env["SLACK_WEBHOOK_URL"] = slack.webhook_url
    result = s.cli("notify-test", "--config", str(s.config), "--channel", "#drill")
    assert result.returncode == 0, result.stderr
    assert "--channel ignored: an incoming webhook posts to the channel" in result.stderr
    (card,) = slack.messages
    assert card.method == "webhook"
    assert "TEST" in card.text
    assert "cannot edit" in result.stdout
    assert slack.webhook_url.rsplit("/", 1)[1] not in result.stdout + result.stderr


def test_console_mode_prints_the_card(site: Callable[..., Site], slack: FakeSlack) -> None:
    """Without Slack the card is printed, marked as a test."""
    s = site("", with_slack=False)
    result = s.cli("notify-test", "--config", str(s.config))
    assert result.returncode == 0, result.stderr
    assert "FIRING  🧪 TEST: watchdog notify-test" in result.stdout
    assert "channel: console" in result.stdout
    assert slack.messages == []


def test_a_rule_channel_is_not_the_default(site: Callable[..., Site], slack: FakeSlack) -> None:
    """The drill goes where a rule without its own channel would: `[slack] channel`."""
    s = site(rule("busy", above=100, channel="#elsewhere"))
    result = s.cli("notify-test", "--config", str(s.config))
    assert result.returncode == 0, result.stderr
    assert len(slack.top_level("#oncall")) == 1
    assert slack.top_level("#elsewhere") == []


def test_without_a_default_channel_it_asks_for_one(
    site: Callable[..., Site], slack: FakeSlack
) -> None:
    """No `[slack] channel` (every alert has its own): exit 1 asking for `--channel`."""
    own = rule("busy", above=100, channel="#elsewhere") + '[no_data]\nchannel = "#elsewhere"\n'
    s = site(own, channel="")
    result = s.cli("notify-test", "--config", str(s.config))
    assert result.returncode == 1
    assert "slack.channel: not set: pass --channel" in result.stderr
    _assert_clean(result.stdout, result.stderr)
    assert slack.messages == []
    given = s.cli("notify-test", "--config", str(s.config), "--channel", "#elsewhere")
    assert given.returncode == 0, given.stderr
    assert len(slack.top_level("#elsewhere")) == 1
