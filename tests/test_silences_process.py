"""Silences and mutes end to end: `watchdog silence ...` against a running `watchdog run`.

The daemon and the CLI are real processes sharing one state directory (the daemon holds
the SQLite file open in WAL mode); the loopback fakes stand in for ElevenLabs and Slack.
Every wait is on an audit event or a fake's condition, never a sleep.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import signal
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from tests.fakes.elevenlabs import FakeElevenLabs
from tests.fakes.slack import FakeSlack
from tests.harness import DaemonProcess, Site, alert_of, at, rule
from watchdog.store import Store

pytestmark = pytest.mark.slow

MENTION = "<!subteam^S0123>"
HIGH = rule("high", above=5, severity="critical", mention=MENTION)
ALWAYS = '[[mute]]\nname = "deploys"\ndays = "mon-sun"\nhours = "00:00-24:00"\ntz = "UTC"\n'
LOGIN = pwd.getpwuid(os.getuid()).pw_name


def silence_add(site: Site, *args: str) -> int:
    """`watchdog silence add ...` for the site's rules; returns the id it printed."""
    result = site.cli("silence", "add", "--config", str(site.config), *args)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.strip())


def more_polls(daemon: DaemonProcess, n: int = 3) -> None:
    seen = len(daemon.find("poll.ok"))
    daemon.wait_for("poll.ok", count=seen + n)


def test_no_card_while_silenced_and_a_card_once_the_silence_is_expired(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """An alert firing inside a CLI silence posts nothing; expiring the silence while it
    still fires posts its card then, with the mention; list and status show the silence."""
    s = site(HIGH)
    with s.run() as daemon:
        daemon.wait_for("poll.ok")
        silence_id = silence_add(s, "--rule", "high", "--for", "1h", "--comment", "deploy")
        created = daemon.wait_for("silence.created", silence=silence_id)
        assert (created["by"], created["rule"], created["comment"]) == (
            f"cli:{LOGIN}",
            "high",
            "deploy",
        )
        api.set_count(9)
        firing = daemon.wait_for("alert.firing", rule="high")
        daemon.wait_for(
            "notify.suppressed", alert_id=firing["alert_id"], reason="silenced", silence=silence_id
        )
        more_polls(daemon)
        assert slack.messages == []

        (line,) = s.cli("silence", "list", "--json").stdout.splitlines()
        listed = json.loads(line)
        assert {k: listed[k] for k in ("id", "rule", "scope", "by", "comment")} == {
            "id": silence_id,
            "rule": "high",
            "scope": None,
            "by": f"cli:{LOGIN}",
            "comment": "deploy",
        }
        assert datetime.fromisoformat(listed["ends"]) - datetime.fromisoformat(
            listed["starts"]
        ) == timedelta(hours=1)
        (shown,) = s.status()["silences"]
        assert [c["alert_id"] for c in shown["covers"]] == [firing["alert_id"]]
        text = s.cli("status").stdout
        assert f"#{silence_id} high on every series" in text
        assert f"covers FIRING high [workspace] id={firing['alert_id']}" in text

        expire = s.cli("silence", "expire", str(silence_id))
        expired_at = datetime.now(UTC)
        assert expire.returncode == 0, expire.stderr
        expired = daemon.wait_for("silence.expired", silence=silence_id)
        assert at(expired) - expired_at < timedelta(seconds=2)  # a tick is 1 s
        daemon.wait_for("notify.released", alert_id=firing["alert_id"], kind="firing")
        daemon.wait_for("notify.sent", alert_id=firing["alert_id"], kind="firing")
    (card,) = slack.top_level()
    assert alert_of(card) == firing["alert_id"]
    assert MENTION in card.text
    assert f"silence {silence_id} ended" in json.dumps(card.blocks)


def test_an_alert_that_fired_and_resolved_inside_a_silence_posts_nothing(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """Firing and resolution inside a silence are both held back; its end announces nothing."""
    s = site(HIGH)
    with s.run() as daemon:
        daemon.wait_for("poll.ok")
        silence_id = silence_add(
            s, "--rule", "*", "--scope", "workspace", "--for", "1h", "--comment", "maintenance"
        )
        daemon.wait_for("silence.created", silence=silence_id)
        api.set_count(9)
        firing = daemon.wait_for("alert.firing", rule="high")
        api.set_count(1)
        daemon.wait_for("alert.resolved", alert_id=firing["alert_id"])
        daemon.wait_for(
            "notify.suppressed",
            alert_id=firing["alert_id"],
            kind="resolved",
            reason="never_announced",
        )
        assert s.cli("silence", "expire", str(silence_id)).returncode == 0
        daemon.wait_for("silence.expired", silence=silence_id)
        more_polls(daemon)
        assert not daemon.find("notify.released")
        assert not daemon.find("notify.sent")
    assert slack.messages == []


def test_a_card_that_outlives_its_silence_gets_a_threaded_reply_with_the_mention(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """A silence on an alert whose card is out ends by itself while the alert still fires:
    the channel gets a reply in the card's thread that pages again."""
    s = site(HIGH)
    with s.run() as daemon:
        daemon.wait_for("poll.ok")
        api.set_count(9)
        firing = daemon.wait_for("alert.firing", rule="high")
        daemon.wait_for("notify.sent", kind="firing")
        silence_id = silence_add(s, "--rule", "high", "--for", "3s", "--comment", "on it")
        daemon.wait_for("silence.created", silence=silence_id)
        daemon.wait_for("silence.expired", silence=silence_id, timeout=20)
        daemon.wait_for("notify.released", alert_id=firing["alert_id"], kind="repeat")
        daemon.wait_for("notify.sent", kind="repeat")
    card, reply = slack.messages
    assert reply.thread_ts == card.ts
    assert MENTION in reply.text
    assert f"silence {silence_id} ended" in json.dumps(reply.blocks)


def test_repeats_inside_a_silence_are_not_sent(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """ "Still firing" repeats are decided and audited as usual, but none reaches Slack
    while a silence covers the alert."""
    s = site(HIGH, repeat="500ms")
    with s.run() as daemon:
        daemon.wait_for("poll.ok")
        api.set_count(9)
        firing = daemon.wait_for("alert.firing", rule="high")
        daemon.wait_for("notify.sent", kind="firing")
        silence_id = silence_add(s, "--rule", "high", "--for", "1h", "--comment", "on it")
        daemon.wait_for("silence.created", silence=silence_id)
        first = daemon.wait_for("notify.suppressed", alert_id=firing["alert_id"], kind="repeat")
        posted = len(slack.messages)
        repeats = len(daemon.find("alert.repeat"))
        daemon.wait_for("alert.repeat", count=repeats + 3)
        held = daemon.find("notify.suppressed", alert_id=firing["alert_id"], kind="repeat")
        assert len(held) >= 3
        assert {e["reason"] for e in held} == {"silenced"}
        assert first["silence"] == silence_id
        assert len(slack.messages) == posted


def test_the_resolution_of_a_posted_card_is_sent_inside_a_silence(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """A card that is out is still turned resolved while a silence covers its alert."""
    s = site(HIGH)
    with s.run() as daemon:
        daemon.wait_for("poll.ok")
        api.set_count(9)
        firing = daemon.wait_for("alert.firing", rule="high")
        daemon.wait_for("notify.sent", kind="firing")
        silence_id = silence_add(s, "--rule", "high", "--for", "1h", "--comment", "fixing")
        daemon.wait_for("silence.created", silence=silence_id)
        api.set_count(1)
        daemon.wait_for("notify.sent", alert_id=firing["alert_id"], kind="resolved")
        assert not daemon.find("notify.suppressed")
    card, *_ = slack.messages
    (update,) = slack.updates(card.ts)
    assert "RESOLVED" in update.text


def test_a_silence_holds_a_notification_already_waiting_in_the_outbox(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """A firing card queued behind a Slack outage is held back once a silence covers it,
    and posted when the silence is expired while the alert still fires."""
    slack.outage()
    s = site(HIGH)
    with s.run() as daemon:
        daemon.wait_for("poll.ok")
        api.set_count(9)
        firing = daemon.wait_for("alert.firing", rule="high")
        daemon.wait_for("notify.retry", alert_id=firing["alert_id"])
        silence_id = silence_add(s, "--rule", "high", "--for", "1h", "--comment", "outage")
        daemon.wait_for("silence.created", silence=silence_id)
        held = daemon.wait_for(
            "notify.suppressed", alert_id=firing["alert_id"], stage="delivery", timeout=30
        )
        assert held["silence"] == silence_id
        slack.outage(on=False)
        assert s.cli("silence", "expire", str(silence_id)).returncode == 0
        daemon.wait_for("notify.sent", alert_id=firing["alert_id"], kind="firing", timeout=30)
    (card,) = slack.top_level()
    assert f"silence {silence_id} ended" in json.dumps(card.blocks)


def test_a_mute_window_holds_back_and_its_removal_releases(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """An open `[[mute]]` keeps an alert's card back (`notify.suppressed` with its name);
    reloading without it posts the card, since the alert still fires."""
    s = site(HIGH + ALWAYS)
    with s.run() as daemon:
        daemon.wait_for("poll.ok")
        api.set_count(9)
        firing = daemon.wait_for("alert.firing", rule="high")
        daemon.wait_for("notify.suppressed", alert_id=firing["alert_id"], mute="deploys")
        more_polls(daemon)
        assert slack.messages == []
        s.rewrite(HIGH)
        daemon.send(signal.SIGHUP)
        daemon.wait_for("config.loaded", reload=True)
        daemon.wait_for("notify.released", alert_id=firing["alert_id"], mute="deploys")
        daemon.wait_for("notify.sent", alert_id=firing["alert_id"], kind="firing")
    (card,) = slack.top_level()
    assert "mute deploys ended" in json.dumps(card.blocks)


# -- CLI errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ["add", "--rule", "hihg", "--for", "1h", "--comment", "x"],
            2,
            "watchdog silence add: --rule: unknown rule 'hihg': did you mean 'high'?",
        ),
        (
            ["add", "--rule", "high", "--scope", "workspac", "--for", "1h", "--comment", "x"],
            2,
            "watchdog silence add: --scope: unknown series 'workspac': did you mean 'workspace'?",
        ),
        (
            ["add", "--rule", "high", "--for", "2 hours", "--comment", "x"],
            2,
            "watchdog silence add: --for: invalid duration '2 hours'",
        ),
        (
            ["add", "--rule", "high", "--until", "2020-01-01T00:00Z", "--comment", "x"],
            2,
            "watchdog silence add: --until: 2020-01-01T00:00:00+00:00 is in the past",
        ),
        (
            ["add", "--rule", "high", "--until", "tomorrow", "--comment", "x"],
            2,
            "watchdog silence add: --until: invalid time 'tomorrow'",
        ),
        (
            ["add", "--rule", "high", "--for", "1h", "--comment", " "],
            2,
            "watchdog silence add: --comment: say why",
        ),
        (["expire", "42"], 1, "watchdog silence expire: no silence 42 in force or to come"),
        (["expire", "x"], 2, "argument ID: invalid int value: 'x'"),
        (["add", "--rule", "high", "--comment", "x"], 2, "one of the arguments --for --until"),
    ],
    ids=[
        "unknown-rule",
        "unknown-series",
        "bad-duration",
        "end-in-the-past",
        "bad-time",
        "empty-comment",
        "unknown-id",
        "id-not-a-number",
        "no-end",
    ],
)
def test_silence_cli_errors_are_clear(
    site: Callable[..., Site], args: list[str], code: int, message: str
) -> None:
    """Bad input to `watchdog silence` is one clear line and exit 2 (usage) or 1, no traceback."""
    s = site(HIGH)
    Store.open(Store.default_path(s.state)).close()  # as `watchdog run` leaves it
    config = ["--config", str(s.config)] if args[0] == "add" else []
    result = s.cli("silence", *args[:1], *config, *args[1:])
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("args", [["list"], ["expire", "1"]], ids=["list", "expire"])
def test_silence_list_and_expire_need_the_state_database(
    site: Callable[..., Site], args: list[str]
) -> None:
    """Reading or expiring silences never creates a state database: no database, exit 1."""
    s = site(HIGH)
    result = s.cli("silence", *args)
    assert result.returncode == 1
    assert "no state database yet" in result.stderr
    assert not s.state.exists()


def test_check_lists_the_mute_windows(site: Callable[..., Site]) -> None:
    """`watchdog check` says when each mute window is open and what it holds back."""
    narrow = '[[mute]]\nname = "night"\ndays = "sat"\nhours = "22:00-06:00"\n'
    narrow += 'tz = "Europe/Berlin"\nrules = ["high"]\nscope = "workspace"\n'
    s = site(HIGH + ALWAYS + narrow)
    result = s.cli("check", "--config", str(s.config))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "  mute deploys: mon-sun 00:00-24:00 UTC: holds back every rule on every series" in lines
    assert "  mute night: sat 22:00-06:00 Europe/Berlin: holds back high on workspace" in lines


def test_silence_until_without_an_offset_is_local_time(site: Callable[..., Site]) -> None:
    """`--until 2030-01-01T09:00` means 09:00 in the machine's zone (here TZ=Asia/Tokyo)."""
    s = site(HIGH)
    tokyo = dataclasses.replace(s, env={**s.env, "TZ": "Asia/Tokyo"})
    silence_add(tokyo, "--rule", "high", "--until", "2030-01-01T09:00", "--comment", "x")
    (listed,) = [json.loads(x) for x in s.cli("silence", "list", "--json").stdout.splitlines()]
    assert datetime.fromisoformat(listed["ends"]) == datetime(2030, 1, 1, 0, 0, tzinfo=UTC)


def test_silence_add_until_an_iso_time_and_list_it(site: Callable[..., Site]) -> None:
    """`--until` takes an ISO 8601 time; `list` shows the silence in a line for people."""
    s = site(HIGH)
    ends = (datetime.now(UTC) + timedelta(hours=3)).replace(microsecond=0)
    silence_id = silence_add(
        s, "--rule", "high", "--until", ends.isoformat(), "--comment", "night deploy"
    )
    (listed,) = [json.loads(x) for x in s.cli("silence", "list", "--json").stdout.splitlines()]
    assert datetime.fromisoformat(listed["ends"]) == ends
    text = s.cli("silence", "list").stdout
    assert f"#{silence_id} high on every series until {ends:%Y-%m-%d %H:%M:%S} UTC" in text
    assert f"by cli:{LOGIN}: night deploy" in text
