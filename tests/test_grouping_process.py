"""Grouping end to end: a real `watchdog run` against the loopback fakes.

Every wait is on an audit event, never a sleep.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.fakes.elevenlabs import FakeElevenLabs
from tests.fakes.slack import FakeSlack
from tests.harness import Site, rule

pytestmark = pytest.mark.slow

AGENTS = [(f"agent-{n:02}", f"agent_{n:02}") for n in range(21)]
DROPPED = rule("dropped", below=1, scope="*", group_wait="2s")


def test_twenty_agents_collapsing_at_once_post_one_grouped_card(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """Twenty agents of a `scope = "*"` rule with `group_wait` collapse at once: one card
    lists them all; a late member joins it (edit + threaded reply), each resolution edits
    it and the last one resolves it. The audit log still has every alert instance."""
    *twenty, late = AGENTS
    for _, agent_id in AGENTS:
        api.add_agent(agent_id, 5)
    s = site(DROPPED, agents=AGENTS)
    with s.run() as daemon:
        for name, _ in AGENTS:
            daemon.wait_for("poll.ok", series=name)
        for _, agent_id in twenty:
            api.set_count(0, agent_id)
        daemon.wait_for("alert.firing", rule="dropped", count=20, timeout=30)
        daemon.wait_for("notify.sent", kind="group", timeout=30)
        (card,) = slack.top_level()
        for name, _ in twenty:
            assert name in json.dumps(card.blocks)
        assert "20 firing" in card.text

        api.set_count(0, late[1])
        daemon.wait_for("alert.firing", series=late[0])
        daemon.wait_until(lambda: bool(slack.replies(card.ts)), timeout=30)
        (reply,) = slack.replies(card.ts)
        assert f"{late[0]} joined" in reply.text
        assert "21 firing" in slack.updates(card.ts)[-1].text

        api.set_count(5, twenty[0][1])
        daemon.wait_for("alert.resolved", series=twenty[0][0])
        daemon.wait_until(lambda: "20 firing" in slack.updates(card.ts)[-1].text, timeout=30)
        assert f"{twenty[0][0]}: 5 (resolved)" in json.dumps(slack.updates(card.ts)[-1].blocks)

        for _, agent_id in AGENTS:
            api.set_count(5, agent_id)
        daemon.wait_for("alert.resolved", rule="dropped", count=21, timeout=30)
        daemon.wait_until(lambda: "resolved" in slack.updates(card.ts)[-1].text, timeout=60)
        assert len(daemon.find("alert.firing", rule="dropped")) == 21
    assert slack.top_level() == [card]


def test_a_rule_without_group_wait_still_posts_a_card_per_alert(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """Beside a grouped rule, a rule without `group_wait` posts one card per alert, as before."""
    three = AGENTS[:3]
    for _, agent_id in three:
        api.add_agent(agent_id, 5)
    s = site(DROPPED + rule("each", below=2, scope="*"), agents=three)
    with s.run() as daemon:
        for name, _ in three:
            daemon.wait_for("poll.ok", series=name)
        for _, agent_id in three:
            api.set_count(0, agent_id)
        daemon.wait_for("notify.sent", rule="each", kind="firing", count=3, timeout=30)
        daemon.wait_for("notify.sent", rule="dropped", kind="group", timeout=30)
        cards = slack.top_level()
        assert len(cards) == 4
        assert sum("each" in card.text for card in cards) == 3
