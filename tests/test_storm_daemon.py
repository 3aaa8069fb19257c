"""Storm control end to end: `watchdog run` against the loopback fakes, many rules at once."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.fakes.elevenlabs import FakeElevenLabs
from tests.fakes.slack import FakeSlack
from tests.harness import Site, alert_of, rule

pytestmark = pytest.mark.slow

STORM = '[storm]\nmax = 3\nwindow = "3s"\n\n'
STAYS = [f"stays-{i}" for i in range(3)]
PASSES = [f"passes-{i}" for i in range(3)]
RULES = "".join(rule(name, above=5) for name in STAYS) + "".join(
    rule(name, above=8) for name in PASSES
)


def test_a_storm_across_rules_is_one_summary_card_and_nothing_is_lost(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """Six cards due at once with max 3: one summary card, edited as alerts resolve; then a
    closing summary and a card of its own for each alert still firing; all in the audit."""
    here = site(STORM + RULES)
    with here.run() as daemon:
        daemon.wait_for("poll.ok")
        api.set_count(9)
        daemon.wait_for("alert.firing", count=6)
        started = daemon.wait_for("storm.started")
        daemon.wait_for("notify.sent", kind="report")
        shown = {a["rule"] for a in here.status()["alerts"] if a["state"] == "firing"}
        assert shown == {*STAYS, *PASSES}  # held cards, but `watchdog status` has every alert
        api.set_count(7)  # the `passes` alerts resolve during the storm
        daemon.wait_for("alert.resolved", count=3)
        ended = daemon.wait_for("storm.ended", timeout=20)
        daemon.wait_for("notify.sent", kind="firing", count=3, timeout=20)
        firing = {e["alert_id"]: e["rule"] for e in daemon.find("alert.firing")}
        held = {e["alert_id"] for e in daemon.find("notify.held")}
        assert daemon.stop() == 0

    assert ended["storm"] == started["storm"]
    assert held == set(firing)  # every firing card was held, and every one is audited
    summary, closing, *own = slack.top_level()
    assert summary.text.startswith("6 alerts firing")
    edits = slack.updates(summary.ts)
    assert edits
    assert edits[-1].text.startswith("3 alerts firing")
    assert closing.text.startswith("Storm over: 6 alerts held, 3 still firing")
    assert sorted(firing[alert_of(card) or ""] for card in own) == STAYS


def test_a_channel_below_the_storm_limit_gets_its_cards(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """Three cards with max 3: three cards, no summary, as without storm control."""
    with site(STORM + "".join(rule(name, above=5) for name in STAYS)).run() as daemon:
        daemon.wait_for("poll.ok")
        api.set_count(9)
        daemon.wait_for("notify.sent", kind="firing", count=3)
        assert daemon.stop() == 0
    assert not daemon.find("storm.started")
    assert len(slack.top_level()) == 3
