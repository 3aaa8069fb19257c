"""Inhibition end to end: a real `watchdog run` against the loopback fakes.

Every wait is on an audit event, never a sleep.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.fakes.elevenlabs import FakeElevenLabs
from tests.fakes.slack import FakeSlack
from tests.harness import Site, alert_of, at, rule

pytestmark = pytest.mark.slow

COLLAPSED = rule("collapsed", below=1, severity="critical")
AGENT_LOW = rule("agent-low", below=1, scope="sales", inhibited_by=["collapsed"])


def test_a_workspace_collapse_inhibits_an_agent_rule_until_it_resolves(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """While the workspace collapse fires, the agent's alert fires, is audited as
    inhibited and posts nothing; once the collapse resolves while the agent's alert still
    fires, the agent's card goes out then, saying why."""
    api.set_count(5)
    api.add_agent("agent_sales", 5)
    s = site(COLLAPSED + AGENT_LOW, agents=[("sales", "agent_sales")])
    with s.run() as daemon:
        daemon.wait_for("poll.ok", series="sales")
        api.set_count(0)
        collapse = daemon.wait_for("alert.firing", rule="collapsed")
        daemon.wait_for("notify.sent", alert_id=collapse["alert_id"], kind="firing")
        api.set_count(0, "agent_sales")
        agent = daemon.wait_for("alert.firing", rule="agent-low", series="sales")
        inhibited = daemon.wait_for("alert.inhibited", alert_id=agent["alert_id"])
        assert (inhibited["inhibited_by"], inhibited["reason"]) == ("collapsed", "inhibited")
        seen = len(daemon.find("poll.ok", series="sales"))
        daemon.wait_for("poll.ok", series="sales", count=seen + 3)
        assert [alert_of(card) for card in slack.top_level()] == [collapse["alert_id"]]
        assert not daemon.find("notify.sent", alert_id=agent["alert_id"])

        api.set_count(5)
        resolved = daemon.wait_for("alert.resolved", alert_id=collapse["alert_id"])
        released = daemon.wait_for(
            "notify.released", alert_id=agent["alert_id"], kind="firing", inhibited_by="collapsed"
        )
        daemon.wait_for("notify.sent", alert_id=agent["alert_id"], kind="firing")
        assert at(released) >= at(resolved)
        assert not daemon.find("alert.resolved", alert_id=agent["alert_id"])
    first, card = slack.top_level()
    assert (alert_of(first), alert_of(card)) == (collapse["alert_id"], agent["alert_id"])
    assert "collapsed resolved; still firing" in json.dumps(card.blocks)
