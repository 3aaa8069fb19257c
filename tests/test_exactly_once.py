"""Exactly once in Slack, also when the answer is lost: a real `watchdog run` in bot mode.

Slack keeps a post but its answer never arrives (the connection drops, the process is
stopped or killed mid-call): the post must not be made twice. Judged by what the fake
Slack holds, not by what the daemon says it did. Without the history scope delivery falls
back to at least once, and says so once at start and in `watchdog check`.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fakes.elevenlabs import FakeElevenLabs
from tests.fakes.slack import Fail, FakeSlack
from tests.harness import (
    DaemonProcess,
    Site,
    alert_of,
    base_env,
    rule,
)

pytestmark = pytest.mark.slow

HIGH = rule("high", above=5, severity="critical")
NO_HISTORY = ["chat:write", "channels:read", "groups:read"]


def fire(daemon: DaemonProcess, api: FakeElevenLabs) -> str:
    """Raise the count over the rule; return the alert id."""
    daemon.wait_for("poll.ok")
    api.set_count(9)
    alert_id: str = daemon.wait_for("alert.firing", rule="high")["alert_id"]
    return alert_id


def test_a_post_accepted_then_dropped_is_in_slack_once(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """Slack keeps the card and the resolution reply but drops the connection before
    answering: one card, edited once, with one reply in its thread."""
    slack.fail_next([Fail.reset(accept=True)])
    with site(HIGH).run() as daemon:
        alert_id = fire(daemon, api)
        daemon.wait_for("notify.sent", kind="firing", timeout=30)
        (card,) = slack.top_level("#oncall")
        slack.fail_next([Fail.reset(accept=True, method="chat.postMessage")])
        api.set_count(1)
        daemon.wait_for("notify.sent", kind="resolved", timeout=30)
        assert daemon.stop() == 0

    assert slack.top_level("#oncall") == [card]
    assert alert_of(card) == alert_id
    assert len(slack.updates(card.ts)) == 1
    assert len(slack.replies(card.ts)) == 1
    found = {e["kind"]: e["ts"] for e in daemon.find("notify.found")}
    assert found == {"firing": card.ts, "resolved": card.ts}
    assert [a.outcome for a in slack.attempts].count("accepted, then reset") == 2
    assert "Traceback" not in "".join(daemon.stderr_lines)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_stopped_mid_call_the_next_start_finds_the_card(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack, sig: signal.Signals
) -> None:
    """Stopped (past the grace) or killed while Slack holds the card but has not answered:
    the next start finds the card instead of posting a second one."""
    here = site(HIGH)
    slack.fail_next([Fail.hang(60, accept=True)])
    with here.run() as first:
        alert_id = fire(first, api)
        slack.wait_for(1)  # Slack has the card; its answer never comes
        first.send(sig)
        code = first.wait(timeout=10)
    assert code == (0 if sig is signal.SIGTERM else -signal.SIGKILL)
    assert not first.find("notify.sent")

    with here.run() as second:
        second.wait_for("notify.sent", kind="firing", timeout=30)
        assert second.stop() == 0
    (card,) = slack.top_level("#oncall")
    (found,) = second.find("notify.found", kind="firing")
    assert (alert_of(card), found["ts"]) == (alert_id, card.ts)


def test_without_the_history_scope_it_is_at_least_once_and_says_so_once(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """A token without channels:history: said once at start (and not again when a lookup
    fails), a lost answer means a second card, and delivery keeps working."""
    slack.set_scopes(NO_HISTORY)
    slack.fail_next([Fail.reset(accept=True)])
    with site(HIGH).run() as daemon:
        said = daemon.wait_for("notify.guarantee", timeout=30)
        fire(daemon, api)
        daemon.wait_for("notify.sent", kind="firing", timeout=30)
        api.set_count(1)
        daemon.wait_for("notify.sent", kind="resolved")
        assert daemon.stop() == 0
    assert (said["guarantee"], said["level"]) == ("at-least-once", "warning")
    assert "channels:history" in said["reason"]
    assert len(daemon.find("notify.guarantee")) == 1
    assert len(slack.top_level("#oncall")) == 2  # the price of at least once
    assert [r.outcome for r in slack.reads if r.method == "conversations.history"] == [
        "error missing_scope"
    ]


def test_with_the_history_scope_start_up_says_exactly_once(
    site: Callable[..., Site], slack: FakeSlack
) -> None:
    """With every history scope the start-up report says exactly once."""
    with site(HIGH).run() as daemon:
        said = daemon.wait_for("notify.guarantee", timeout=30)
        assert daemon.stop() == 0
    assert (said["guarantee"], said["level"]) == ("exactly-once", "info")


def test_check_reports_the_delivery_guarantee(
    site: Callable[..., Site], slack: FakeSlack, tmp_path: Path
) -> None:
    """`watchdog check` asks Slack for the token's scopes and says which guarantee holds;
    in webhook mode it is at least once."""
    here = site(HIGH)
    config = str(here.config)
    result = here.cli("check", "--config", config)
    assert result.returncode == 0, result.stderr
    assert "  delivery: exactly-once: the bot token may read channel history" in result.stdout

    slack.set_scopes(NO_HISTORY)
    result = here.cli("check", "--config", config)
    assert result.returncode == 0, result.stderr
    assert (
        "  delivery: at-least-once: the bot token lacks channels:history, groups:history"
        in result.stdout
    )

    webhook = Site(
        here.config,
        here.state,
        base_env(here.state, SLACK_WEBHOOK_URL=slack.webhook_url),
        here.options,
    )
    result = webhook.cli("check", "--config", config)
    assert result.returncode == 0, result.stderr
    assert "  delivery: at-least-once: an incoming webhook cannot look" in result.stdout
    assert [r.method for r in slack.reads] == ["auth.test", "auth.test"]
