"""Humans in the loop, end to end: `watchdog run` with Socket Mode against the loopback fakes.

The fake Slack is also a Slack app here: its `apps.connections.open` hands out a local
WebSocket endpoint (`tests.fakes.socket_mode`), which presses the card's buttons and
sends `/watchdog` as Slack would. `watchdog ack` runs as a second process against the
running daemon's state directory.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.elevenlabs import FakeElevenLabs
from tests.fakes.slack import Fail, FakeSlack, SlackCall
from tests.harness import SLACK_TOKEN, DaemonProcess, Site, alert_of, at, rule
from watchdog.store import Store

pytestmark = pytest.mark.slow

APP_TOKEN = "xapp-1-A0FAKE000-1234567890-SocketModeAppTokenValue42"
HIGH = rule("high", above=5, severity="critical")
RESPONDERS_ONLY_ALICE = 'responders = ["U0ALICE"]\n\n'


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    """The loopback Slack, also a Slack app with Socket Mode."""
    with FakeSlack(token=SLACK_TOKEN, app_token=APP_TOKEN) as fake:
        yield fake


def with_buttons(site: Site) -> Site:
    site.env["SLACK_APP_TOKEN"] = APP_TOKEN
    return site


def firing_card(daemon: DaemonProcess, slack: FakeSlack, api: FakeElevenLabs) -> SlackCall:
    """Make `high` fire; its card, once posted."""
    daemon.wait_for("poll.ok")
    api.set_count(9)
    firing = daemon.wait_for("alert.firing", rule="high")
    daemon.wait_for("notify.sent", kind="firing")
    (card,) = [m for m in slack.top_level() if alert_of(m) == firing["alert_id"]]
    return card


def controls(message: SlackCall) -> list[str]:
    return [
        element["action_id"]
        for block in message.blocks
        if block.get("type") == "actions"
        for element in block["elements"]
    ]


def more_polls(daemon: DaemonProcess, n: int) -> None:
    seen = len(daemon.find("poll.ok"))
    daemon.wait_for("poll.ok", count=seen + n)


def edit_saying(slack: FakeSlack, card: SlackCall, *words: str) -> SlackCall:
    """Wait for an edit of `card` whose blocks say all of `words`."""

    def says(message: SlackCall) -> bool:
        return all(word in str(message.blocks) for word in words)

    slack.wait_for(lambda _: any(says(m) for m in slack.updates(card.ts)), timeout=10)
    return next(m for m in slack.updates(card.ts) if says(m))


def test_acknowledge_button_edits_card_stops_repeats_and_resolution_keeps_it(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """Acknowledge: envelope acked, card edited in place, alert.acked, no repeat, resolved."""
    with with_buttons(site(HIGH, repeat="1s")).run() as daemon:
        daemon.wait_for("socket.connected")
        card = firing_card(daemon, slack, api)
        assert controls(card) == ["ack", "silence"]
        daemon.wait_for("alert.repeat", rule="high")  # repeats run before anyone acknowledges

        envelope = slack.socket_mode.press(card, "ack", user="U0ALICE")
        assert slack.socket_mode.wait_for_ack(envelope) == {"envelope_id": envelope}
        acked = daemon.wait_for("alert.acked", by="U0ALICE")
        assert acked["alert_id"] == alert_of(card)
        edited = edit_saying(slack, card, "Acknowledged by <@U0ALICE>")
        assert controls(edited) == ["silence"]  # nobody acknowledges twice
        assert len(slack.top_level()) == 1  # edited in place, no new message

        more_polls(daemon, 15)  # 3 s: three repeat intervals, three ticks
        repeats = daemon.find("alert.repeat", rule="high")
        assert all(at(r) < at(acked) for r in repeats)

        api.set_count(1)
        daemon.wait_for("alert.resolved", rule="high")
        resolved = edit_saying(slack, card, "RESOLVED", "Acknowledged by <@U0ALICE>")
        assert controls(resolved) == []


def test_press_by_someone_not_a_responder_is_refused(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """`[slack] responders`: others get an ephemeral refusal and `action.refused`."""
    with with_buttons(site(RESPONDERS_ONLY_ALICE + HIGH)).run() as daemon:
        daemon.wait_for("socket.connected")
        card = firing_card(daemon, slack, api)

        envelope = slack.socket_mode.press(card, "ack", user="U0MALLORY")
        slack.socket_mode.wait_for_ack(envelope)
        (answer,) = slack.wait_for_responses(1)
        assert answer["response_type"] == "ephemeral"
        assert "responders" in answer["text"]
        daemon.wait_for("action.refused", user="U0MALLORY", command="ack")
        assert not daemon.find("alert.acked")

        slack.socket_mode.press(card, "ack", user="U0ALICE")
        daemon.wait_for("alert.acked", by="U0ALICE")
        assert not daemon.find("action.refused", user="U0ALICE")


def test_slash_commands_answer_only_the_caller(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """`/watchdog status`: an ephemeral answer with the last counts and the firing alerts;
    `/watchdog silences` and a bare `/watchdog` answer the caller too."""
    with with_buttons(site(HIGH)).run() as daemon:
        daemon.wait_for("socket.connected")
        card = firing_card(daemon, slack, api)

        envelope = slack.socket_mode.slash("status", user="U0BOB")
        slack.socket_mode.wait_for_ack(envelope)
        (answer,) = slack.wait_for_responses(1)
        assert answer["response_type"] == "ephemeral"
        assert answer["replace_original"] is False
        assert "workspace *9*" in answer["text"]
        assert "*high* on workspace" in answer["text"]
        assert str(alert_of(card)) in answer["text"]

        slack.socket_mode.slash("silences", user="U0BOB")  # one at a time: answers may race
        assert slack.wait_for_responses(2)[1]["text"] == "No active silences."
        slack.socket_mode.slash("", user="U0BOB")
        usage = slack.wait_for_responses(3)[2]["text"]
        assert usage == "Usage: `/watchdog status` or `/watchdog silences`."
        assert len(slack.messages) == 1  # nothing posted to the channel


def test_silence_control_silences_the_alert_and_says_so_on_the_card(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """Silence 4h: a silence of that rule and series by the presser (`silence.created`),
    the card edited in place to say so, no repeat while it holds, and `/watchdog silences`
    lists it."""
    with with_buttons(site(HIGH, repeat="1s")).run() as daemon:
        daemon.wait_for("socket.connected")
        card = firing_card(daemon, slack, api)

        envelope = slack.socket_mode.press(card, "silence", user="U0BOB", option="4h")
        slack.socket_mode.wait_for_ack(envelope)
        created = daemon.wait_for("silence.created", by="U0BOB")
        assert (created["rule"], created["scope"]) == ("high", "workspace")
        edited = edit_saying(slack, card, "Silenced for 4h by <@U0BOB>")
        assert controls(edited) == ["ack", "silence"]
        assert len(slack.top_level()) == 1  # edited in place, no new message

        more_polls(daemon, 10)  # 2 s: two repeat intervals
        assert not [m for m in slack.messages if m.thread_ts == card.ts]  # no repeat reply
        slack.socket_mode.slash("silences", user="U0BOB")
        (answer,) = slack.wait_for_responses(1)
        assert "high" in answer["text"]
        assert "U0BOB" in answer["text"]


@pytest.mark.parametrize("abrupt", [False, True], ids=["close-frame", "abrupt"])
def test_socket_mode_reconnects_after_the_socket_drops(
    site: Callable[..., Site], slack: FakeSlack, abrupt: bool
) -> None:
    """The fake closes the socket (cleanly, or just the TCP connection): the client opens a
    new connection and is served again."""
    with with_buttons(site(HIGH)).run() as daemon:
        slack.socket_mode.wait_for_connections(1)
        daemon.wait_for("socket.connected")
        slack.socket_mode.drop(abrupt=abrupt)
        daemon.wait_for("socket.disconnected")
        # Within two ping intervals: a dead socket is noticed, not left to the stale check.
        slack.socket_mode.wait_for_connections(2, timeout=12)
        assert slack.connections_opened >= 2  # a fresh URL from apps.connections.open
        daemon.wait_for("socket.connected", count=2, timeout=15)

        envelope = slack.socket_mode.slash("status", user="U0BOB")
        slack.socket_mode.wait_for_ack(envelope)
        assert slack.wait_for_responses(1)[0]["response_type"] == "ephemeral"


def test_a_rejected_app_token_is_logged_and_alerts_still_go_out(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """`apps.connections.open` refusing the token: `socket.failed`, retried; cards still post."""
    wrong = "xapp-1-A0FAKE000-1234567890-RevokedTokenValue99"
    place = site(HIGH)
    place.env["SLACK_APP_TOKEN"] = wrong
    with place.run() as daemon:
        failed = daemon.wait_for("socket.failed")
        assert (failed["error"], failed["level"]) == ("invalid_auth", "error")
        firing_card(daemon, slack, api)
        assert daemon.proc is not None
        assert daemon.proc.poll() is None
        assert wrong not in daemon.output()


def test_sigterm_while_apps_connections_open_hangs_exits_within_5s(
    site: Callable[..., Site], slack: FakeSlack
) -> None:
    """A Socket Mode connection attempt that hangs does not hold up a stopping watchdog."""
    slack.fail_next([Fail.hang(30, method="apps.connections.open")])
    with with_buttons(site(HIGH)).run() as daemon:
        slack.wait_for_reads(lambda reads: any(r.method == "apps.connections.open" for r in reads))
        stopping = time.monotonic()
        assert daemon.stop(timeout=10) == 0
        assert time.monotonic() - stopping < 5


def test_watchdog_ack_cli_is_honoured_by_the_running_daemon_within_a_second(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """`watchdog ack ID` against a running daemon: acked within 1 s, the card edited."""
    place = site(HIGH, repeat="1s")
    with place.run() as daemon:
        card = firing_card(daemon, slack, api)
        assert controls(card) == []  # no app token: no buttons

        result = place.cli("ack", str(alert_of(card)), "--by", "alice")
        done = time.time()
        assert result.returncode == 0, result.stderr
        assert alert_of(card) in result.stdout
        acked = daemon.wait_for("alert.acked", by="alice", timeout=5)
        # The ticker looks every second; the rest is margin for a loaded machine.
        assert at(acked).timestamp() - done < 2.0
        edit_saying(slack, card, "Acknowledged by alice")
        status = place.status()
        assert [a["alert_id"] for a in status["alerts"]] == [alert_of(card)]

        again = place.cli("ack", str(alert_of(card)), "--by", "bob")
        assert again.returncode == 0
        assert "already acknowledged by alice" in again.stdout


def test_watchdog_ack_while_stopped_is_applied_at_the_next_start(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """An acknowledgement queued while no daemon runs is applied when one starts."""
    place = site(HIGH)
    with place.run() as daemon:
        card = firing_card(daemon, slack, api)
        assert daemon.stop() == 0
    result = place.cli("ack", str(alert_of(card)), "--by", "alice")
    assert result.returncode == 0, result.stderr
    with place.run() as daemon:
        acked = daemon.wait_for("alert.acked", by="alice")
        assert acked["alert_id"] == alert_of(card)
        edit_saying(slack, card, "Acknowledged by alice")
    assert [a["acked_by"] for a in place.status()["alerts"]] == ["alice"]


def test_acknowledged_before_its_card_went_out_the_card_goes_out_annotated(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """Slack down while the alert fires and is acknowledged: one card, already annotated."""
    place = site(HIGH)
    with place.run() as daemon:
        daemon.wait_for("poll.ok")
        slack.outage()
        api.set_count(9)
        firing = daemon.wait_for("alert.firing", rule="high")
        daemon.wait_for("notify.retry", kind="firing")
        result = place.cli("ack", firing["alert_id"], "--by", "alice")
        assert result.returncode == 0, result.stderr
        daemon.wait_for("alert.acked", by="alice")
        slack.outage(False)
        daemon.wait_for("notify.folded", reason="annotated", timeout=30)
        daemon.wait_for("notify.sent", kind="firing", timeout=30)
        (card,) = slack.messages
        assert card.method == "chat.postMessage"
        assert "Acknowledged by alice" in str(card.blocks)


def test_acknowledgements_the_daemon_cannot_apply_are_audited_as_ignored(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """Requests for an alert no longer firing, or already acknowledged: `alert.ack_ignored`."""
    place = site(HIGH)
    with place.run() as daemon:
        card = firing_card(daemon, slack, api)
        alert_id = str(alert_of(card))
        with Store.open(place.state / "watchdog.db") as store:  # as a racing CLI would
            store.request_ack(alert_id, by="alice", at=datetime.now(UTC))
            store.request_ack(alert_id, by="bob", at=datetime.now(UTC))
            store.request_ack("0123456789ab", by="carol", at=datetime.now(UTC))
        daemon.wait_for("alert.acked", by="alice")
        daemon.wait_for("alert.ack_ignored", by="bob", outcome="already_acknowledged")
        daemon.wait_for("alert.ack_ignored", by="carol", outcome="not_firing")
        assert len(daemon.find("alert.acked")) == 1


def test_watchdog_ack_of_an_unknown_alert_fails_clearly(
    site: Callable[..., Site], api: FakeElevenLabs
) -> None:
    """An id that is not firing: a message naming it, exit 1, no traceback."""
    place = site(HIGH)
    with place.run() as daemon:
        daemon.wait_for("poll.ok")
        result = place.cli("ack", "0123456789ab")
    assert result.returncode == 1
    assert "'0123456789ab': unknown" in result.stderr
    assert "Traceback" not in result.stderr


def test_app_token_is_never_printed_nor_stored(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack, tmp_path: Path
) -> None:
    """The xapp token appears in no output (run, check, ack) and not in the state DB."""
    place = with_buttons(site(HIGH))
    with place.run() as daemon:
        daemon.wait_for("socket.connected")
        card = firing_card(daemon, slack, api)
        slack.socket_mode.press(card, "ack", user="U0ALICE")
        daemon.wait_for("alert.acked")
        check = place.cli("check", "--config", str(place.config))
        ack = place.cli("ack", str(alert_of(card)))
        stopping = time.monotonic()
        assert daemon.stop() == 0
        assert time.monotonic() - stopping < 5  # the Socket Mode threads do not hold it up
    assert check.returncode == 0, check.stderr
    assert "buttons on: Socket Mode with SLACK_APP_TOKEN" in check.stdout
    outputs: list[Any] = [daemon.output(), check.stdout, check.stderr, ack.stdout, ack.stderr]
    assert not [text for text in outputs if APP_TOKEN in text]
    for path in place.state.iterdir():
        assert APP_TOKEN.encode() not in path.read_bytes(), path
    conn = sqlite3.connect(place.state / "watchdog.db")
    dump = "\n".join(conn.iterdump())
    conn.close()
    assert APP_TOKEN not in dump


def test_check_says_buttons_are_off_without_an_app_token(site: Callable[..., Site]) -> None:
    """Without SLACK_APP_TOKEN, `watchdog check` says the buttons are off."""
    place = site(HIGH)
    check = place.cli("check", "--config", str(place.config))
    assert check.returncode == 0, check.stderr
    assert "buttons off: no SLACK_APP_TOKEN" in check.stdout
