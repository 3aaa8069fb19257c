"""Escalation in place end to end: `watchdog run` against the loopback ElevenLabs and Slack.

The card is edited in place (severity, emoji, level) and the mention goes to a threaded
reply; no second card, also across a restart.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.fakes.elevenlabs import FakeElevenLabs
from tests.fakes.slack import FakeSlack
from tests.harness import DaemonProcess, Site, alert_of

pytestmark = pytest.mark.slow

ESCALATING = """[[rules]]
name = "high"
kind = "threshold"
above = 5
escalate = { above = 10, severity = "critical", mention = "<!subteam^S0123>" }

"""


def sent(daemon: DaemonProcess, kind: str) -> None:
    """Wait for one more delivered notification of `kind`."""
    daemon.wait_for("notify.sent", kind=kind, count=len(daemon.find("notify.sent", kind=kind)) + 1)


def test_escalation_edits_the_card_and_mentions_in_its_thread(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """Crossing the level edits the one card to critical and pages in its thread; leaving
    it edits the card back; a restart neither escalates again nor posts a card."""
    here = site(ESCALATING)
    with here.run() as daemon:
        daemon.wait_for("poll.ok")
        api.set_count(7)
        firing = daemon.wait_for("alert.firing", rule="high")
        sent(daemon, "firing")
        api.set_count(12)
        escalated = daemon.wait_for("alert.escalated", rule="high")
        sent(daemon, "escalated")
        assert escalated["alert_id"] == firing["alert_id"]
        assert escalated["severity"] == "critical"
        assert escalated["level"] == "warning"  # it pages, like a firing
        assert daemon.stop() == 0

    (card,) = slack.top_level()
    assert alert_of(card) == firing["alert_id"]
    assert card.text.startswith("🟠 FIRING [WARNING]")
    (update,) = slack.updates(card.ts)
    assert update.text.startswith("🔴 FIRING [CRITICAL]")
    assert update.blocks[0]["text"]["text"] == "🔴 FIRING: high"
    (reply,) = slack.replies(card.ts)
    assert "<!subteam^S0123>" in reply.text
    assert "Escalated to *CRITICAL*" in reply.blocks[0]["text"]["text"]

    with here.run() as daemon:
        daemon.wait_for("poll.ok", count=3)
        api.set_count(7)
        deescalated = daemon.wait_for("alert.deescalated", rule="high")
        sent(daemon, "deescalated")
        assert deescalated["alert_id"] == firing["alert_id"]
        assert deescalated["severity"] == "warning"
        assert deescalated["level"] == "info"
        assert daemon.find("alert.escalated") == []
        assert daemon.find("alert.firing") == []
        assert daemon.stop() == 0

    assert slack.top_level() == [card]
    assert slack.updates(card.ts)[-1].text.startswith("🟠 FIRING [WARNING]")
    last = slack.replies(card.ts)[-1]
    assert "Back to *WARNING*" in last.blocks[0]["text"]["text"]
    assert "subteam" not in last.text
