"""The daily report as a message: Block Kit within Slack's limits, and how each sender posts it."""

from __future__ import annotations

import io
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from tests.fakes.slack import Fail, FakeSlack
from watchdog.errors import NotifyError
from watchdog.model import Sample, TransitionKind
from watchdog.notify import ConsoleNotifier, SlackBotNotifier, SlackWebhookNotifier
from watchdog.notify.report_card import render_report, report_notification
from watchdog.report import Report, report_of
from watchdog.rules import parse_config
from watchdog.silences import Silence, decide
from watchdog.store import Store

AT = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
DAY = date(2026, 12, 1)
START = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)
CHANNEL = "#voice-ops"


def report(agents: int = 1) -> Report:
    names = [f"agent{i}" for i in range(agents)]
    config = parse_config(
        "[watchdog]\npoll_interval = '1m'\n"
        + "".join(f"[[agents]]\nname = '{n}'\nid = 'id_{n}'\n" for n in names)
        + "[[rules]]\nname = 'high'\nkind = 'threshold'\nabove = 5\nscope = '*'\n"
    )
    samples = [
        Sample(series, START + timedelta(minutes=m), count)
        for series in ["workspace", *names]
        for m, count in ((60, 2), (61, 9), (62, 4))
    ]
    return report_of(config, samples, start=START, end=START + timedelta(days=1))


def test_a_report_of_many_series_stays_within_slacks_limits() -> None:
    """Slack rejects more than 50 blocks or a section over 3000 characters: a report of 80
    series shows the first 40 and says how many more there are."""
    message = render_report(report(agents=79), title=f"Daily report: {DAY}")
    assert len(message.blocks) <= 50
    assert all(len(b["text"]["text"]) <= 3000 for b in message.blocks if b["type"] == "section")
    assert message.blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Daily report: 2026-12-01", "emoji": True},
    }
    notes = [b["elements"][0]["text"] for b in message.blocks if b["type"] == "context"]
    assert "40 more series: see `watchdog report`" in notes


def test_the_bot_posts_the_report_as_a_top_level_message() -> None:
    """A REPORT is its own top-level message with the report's blocks, found (not posted
    again) when the answer of its first attempt was lost."""
    note = report_notification(report(), day=DAY, channel=CHANNEL, at=AT)
    with FakeSlack() as slack:
        bot = SlackBotNotifier(SecretStr(slack.token), api_url=slack.api_url, timeout=0.3)
        started = datetime.now(UTC)
        slack.fail_next([Fail.reset(accept=True)])
        with pytest.raises(NotifyError) as lost:
            bot.deliver(note, None)
        assert lost.value.in_doubt
        bot.deliver(note, None, in_doubt_since=started)
        [message] = slack.top_level(CHANNEL)
    assert message.text == "Daily report: 2026-12-01"
    assert list(message.blocks) == json.loads(note.message or "")["blocks"]
    assert "*workspace*" in message.blocks[1]["text"]["text"]


def test_the_webhook_and_the_console_show_the_report() -> None:
    """The incoming webhook posts the queued blocks; the console prints the plain lines."""
    note = report_notification(report(), day=DAY, channel=CHANNEL, at=AT)
    with FakeSlack() as slack:
        SlackWebhookNotifier(SecretStr(slack.webhook_url)).deliver(note, None)
        [message] = slack.top_level()
    assert message.blocks[0]["text"]["text"] == "Daily report: 2026-12-01"
    out = io.StringIO()
    ConsoleNotifier(out, colour=False).deliver(note, None)
    assert out.getvalue().startswith("📊 Daily report: 2026-12-01\n")
    assert "peak 9 at 2026-12-01T00:01:00+00:00" in out.getvalue()


def test_no_silence_holds_the_report() -> None:
    """A silence of every rule on every series is about alerts: the report is still sent."""
    note = report_notification(report(), day=DAY, channel=CHANNEL, at=AT)
    everything = Silence(1, "*", None, AT - timedelta(hours=1), AT + timedelta(hours=1), "x", "")
    decision = decide(note, AT, silences=[everything], mutes=[], held=None)
    assert decision.send
    assert note.kind is TransitionKind.REPORT


def test_the_report_survives_the_outbox_round_trip(tmp_path: Path) -> None:
    """Queued and read back, the report's notification is the same, message and all."""
    note = report_notification(report(), day=DAY, channel=CHANNEL, at=AT)
    with Store.open(tmp_path / "state.db") as store:
        store.enqueue_with_meta(note, key="report.last_day", value=str(DAY))
        [head] = store.outbox_heads()
        assert head.notification == note
        assert store.get_meta("report.last_day") == "2026-12-01"
