"""The watchdog, end to end: `watchdog run` as a real process against the loopback fakes.

Every test starts `python -m watchdog run` with a fast rules file (200 ms polls), drives
the fake ElevenLabs and Slack servers from here, and awaits the daemon's audit events
(or the fakes' own conditions) instead of sleeping.
"""

from __future__ import annotations

import itertools
import json
import signal
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.elevenlabs import FakeElevenLabs, status
from tests.fakes.slack import Fail, FakeSlack, SlackCall, channel_id
from tests.harness import (
    API_KEY,
    SLACK_TOKEN,
    DaemonProcess,
    Site,
    alert_of,
    at,
    rule,
)

pytestmark = pytest.mark.slow

HIGH = rule("high", above=5, severity="critical")


def card(slack: FakeSlack, alert_id: str) -> SlackCall:
    """The one top-level message posted for `alert_id`."""
    (found,) = [m for m in slack.top_level() if alert_of(m) == alert_id]
    return found


def more_polls(daemon: DaemonProcess, n: int = 3, **match: Any) -> None:
    """Wait for `n` more good polls than seen so far."""
    seen = len(daemon.find("poll.ok", **match))
    daemon.wait_for("poll.ok", count=seen + n, **match)


def stored_sample_times(db: Path, series: str = "workspace") -> list[datetime]:
    """Every sample time the state database holds for `series`, read-only."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            """SELECT samples.at FROM samples JOIN series ON series.id = samples.series_id
               WHERE series.name = ? ORDER BY samples.at""",
            (series,),
        ).fetchall()
    finally:
        conn.close()
    return [datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms) for (ms,) in rows]


# -- signals --------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_exits_cleanly(site: Callable[..., Site], sig: signal.Signals) -> None:
    """SIGTERM and SIGINT each stop `watchdog run` (exit 0, < 5 s), logging daemon.stopping."""
    with site(HIGH).run() as daemon:
        daemon.wait_for("poll.ok")
        daemon.send(sig)
        sent = time.monotonic()
        assert daemon.wait(timeout=5) == 0
        assert time.monotonic() - sent < 5
        assert daemon.find("daemon.stopping")
        assert "Traceback" not in "".join(daemon.stderr_lines)


def test_sigterm_while_a_slack_call_hangs_exits_within_5s(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """SIGTERM while a Slack call hangs still ends the process within 5 s."""
    slack.fail_next([Fail.hang(30)])
    with site(HIGH).run() as daemon:
        daemon.wait_for("poll.ok")
        api.set_count(9)
        daemon.wait_for("alert.firing", rule="high")
        slack.wait_for_attempts(1)  # a hang is recorded as it begins
        daemon.send(signal.SIGTERM)
        assert daemon.wait(timeout=5) == 0


# -- alerting -------------------------------------------------------------------------


def test_breach_fires_once_and_resolution_edits_and_replies(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """A breach posts one card naming rule, series, count; resolution edits it and replies."""
    with site(HIGH).run() as daemon:
        daemon.wait_for("poll.ok")
        api.set_count(9)
        firing = daemon.wait_for("alert.firing", rule="high")
        daemon.wait_for("notify.sent", kind="firing")
        (post,) = slack.messages
        assert post.method == "chat.postMessage"
        assert post.channel == channel_id("#oncall")
        assert post.thread_ts is None
        assert post.blocks
        assert "high" in post.text
        assert "workspace" in post.text
        assert "count 9" in post.text
        assert alert_of(post) == firing["alert_id"]

        more_polls(daemon)
        assert len(daemon.find("alert.firing")) == 1
        api.set_count(1)
        resolved = daemon.wait_for("alert.resolved", rule="high")
        daemon.wait_for("notify.sent", kind="resolved")
        assert resolved["alert_id"] == firing["alert_id"]
        assert daemon.stop() == 0

    post_, update, reply = slack.messages
    assert post_ == post
    assert (update.method, update.channel, update.ts) == ("chat.update", post.channel, post.ts)
    assert "RESOLVED" in update.text
    assert alert_of(update) == firing["alert_id"]
    assert (reply.method, reply.thread_ts) == ("chat.postMessage", post.ts)
    assert "RESOLVED" in reply.text


def test_for_delays_firing_behind_pending(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """With `for`, a breach is first alert.pending and only fires once it has held that long."""
    with site(rule("slow", above=5, for_="600ms")).run() as daemon:
        daemon.wait_for("poll.ok")
        api.set_count(9)
        firing = daemon.wait_for("alert.firing", rule="slow")
        daemon.wait_for("notify.sent", kind="firing")
        (pending,) = daemon.find("alert.pending", rule="slow")
        events = list(daemon.events)
        assert events.index(pending) < events.index(firing)
        assert pending["alert_id"] == firing["alert_id"]
        assert pending["since"] == firing["since"]
        assert at(firing) - datetime.fromisoformat(firing["since"]) >= timedelta(milliseconds=600)
    assert len(slack.top_level()) == 1


def test_repeat_replies_in_the_alerts_thread(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """With repeat = 1s a firing alert re-notifies as a reply in its card's thread."""
    with site(HIGH, repeat="1s").run() as daemon:
        daemon.wait_for("poll.ok")
        api.set_count(9)
        firing = daemon.wait_for("alert.firing", rule="high")
        daemon.wait_for("notify.sent", kind="firing")
        repeat = daemon.wait_for("alert.repeat", rule="high")
        daemon.wait_for("notify.sent", kind="repeat")
        assert repeat["alert_id"] == firing["alert_id"]
        assert at(repeat) - datetime.fromisoformat(firing["since"]) >= timedelta(seconds=1)

    post = card(slack, firing["alert_id"])
    assert len(slack.top_level()) == 1
    reply = slack.replies(post.ts)[0]
    assert reply.method == "chat.postMessage"
    assert reply.thread_ts == post.ts
    assert "still firing" in reply.text


# -- reload ---------------------------------------------------------------------------


def test_sighup_reload_resolves_removed_rule_and_keeps_the_rest(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """SIGHUP: a removed rule's alert resolves, an unchanged firing rule keeps its state."""
    here = site(rule("high", above=5) + rule("also", above=3))
    with here.run() as daemon:
        daemon.wait_for("poll.ok")
        api.set_count(9)
        high = daemon.wait_for("alert.firing", rule="high")
        also = daemon.wait_for("alert.firing", rule="also")
        daemon.wait_for("notify.sent", kind="firing", count=2)

        here.rewrite(rule("high", above=5) + rule("calm", above=100))
        daemon.send(signal.SIGHUP)
        loaded = daemon.wait_for("config.loaded", reload=True)
        assert loaded["rules"] == 2
        assert loaded["resolved"] == 1
        resolved = daemon.wait_for("alert.resolved", rule="also")
        assert resolved["alert_id"] == also["alert_id"]
        assert resolved["reason"] == "rule removed from config"
        daemon.wait_for("notify.sent", kind="resolved", rule="also")
        more_polls(daemon)

        assert daemon.find("alert.firing", rule="high") == [high]
        assert not daemon.find("alert.resolved", rule="high")
        assert not daemon.find("alert.firing", rule="calm")

    also_card = card(slack, also["alert_id"])
    card(slack, high["alert_id"])  # exactly one card for the unchanged rule
    assert len(slack.top_level()) == 2
    assert len(slack.updates(also_card.ts)) == 1
    (reply,) = slack.replies(also_card.ts)
    assert "rule removed from config" in reply.text


def test_sighup_with_invalid_file_keeps_the_old_rules(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """SIGHUP with an invalid file logs config.rejected; the old rules keep running."""
    here = site(HIGH)
    with here.run() as daemon:
        daemon.wait_for("poll.ok")
        here.rewrite(rule("high", above="lots"))
        daemon.send(signal.SIGHUP)
        rejected = daemon.wait_for("config.rejected")
        assert rejected["level"] == "error"
        assert any("rules[0] (high).above" in problem for problem in rejected["problems"])
        assert rejected["kept"] == str(here.config)
        assert not daemon.find("config.loaded", reload=True)

        api.set_count(9)
        daemon.wait_for("alert.firing", rule="high")
        daemon.wait_for("notify.sent", kind="firing")
        assert daemon.stop() == 0
    assert len(slack.top_level()) == 1


def test_sighup_with_a_near_miss_suggests_the_fix(
    site: Callable[..., Site], api: FakeElevenLabs
) -> None:
    """A typo reloaded with SIGHUP is rejected with the closest valid key in the problem."""
    here = site(HIGH, with_slack=False)
    with here.run() as daemon:
        daemon.wait_for("poll.ok")
        here.rewrite(rule("high", above=5, recover_bellow=3))
        daemon.send(signal.SIGHUP)
        rejected = daemon.wait_for("config.rejected")
        assert f"{here.config}: rules[0] (high).recover_bellow: unknown key: did you mean " in (
            "\n".join(rejected["problems"])
        )
        assert "'recover_below'?" in "\n".join(rejected["problems"])
        assert daemon.stop() == 0


def test_unknown_watchdog_variable_is_warned_about_at_start(
    site: Callable[..., Site], api: FakeElevenLabs
) -> None:
    """A WATCHDOG_* typo in the service's environment is a config.unknown_variable warning."""
    here = site(HIGH, with_slack=False)
    here.env["WATCHDOG_POLL_INTERVALL"] = "5s"
    with here.run() as daemon:
        warned = daemon.wait_for("config.unknown_variable")
        assert (warned["level"], warned["variable"], warned["suggestion"]) == (
            "warning",
            "WATCHDOG_POLL_INTERVALL",
            "WATCHDOG_POLL_INTERVAL",
        )
        assert len(daemon.find("config.unknown_variable")) == 1
        assert daemon.stop() == 0


def test_sighup_storm_leaves_the_daemon_answering(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """A burst of 20 SIGHUPs leaves the daemon running, polling and alerting."""
    with site(HIGH).run() as daemon:
        daemon.wait_for("poll.ok")
        for _ in range(20):
            daemon.send(signal.SIGHUP)
        daemon.wait_for("config.loaded", reload=True)
        more_polls(daemon)
        api.set_count(9)
        daemon.wait_for("alert.firing", rule="high")
        daemon.wait_for("notify.sent", kind="firing")
        assert daemon.proc is not None
        assert daemon.proc.poll() is None
        assert not daemon.find("config.rejected")
        assert 1 <= len(daemon.find("config.loaded", reload=True)) <= 20
        assert daemon.stop() == 0
        assert "Traceback" not in "".join(daemon.stderr_lines)
    assert len(slack.top_level()) == 1


# -- polling failures -----------------------------------------------------------------


def test_rejected_key_fires_no_data_at_once_and_a_good_poll_resolves_it(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """A 401 fires no-data at once ("rejected key"); the next good poll resolves it."""
    with site(HIGH).run() as daemon:
        daemon.wait_for("poll.ok")
        api.api_key = "sk_rotated_by_someone_else_000000"
        firing = daemon.wait_for("alert.firing", rule="no-data", series="workspace")
        events = list(daemon.events)
        first_failure = next(e for e in events if e["event"] == "poll.failed")
        assert (first_failure["reason"], first_failure["status"]) == ("rejected key", 401)
        between = events[events.index(first_failure) + 1 : events.index(firing)]
        assert not [e for e in between if e["event"].startswith("poll.")]
        assert "rejected key" in firing["condition"]
        daemon.wait_for("notify.sent", kind="firing", rule="no-data")
        (post,) = slack.top_level()
        assert "rejected key" in post.text

        failed = len(daemon.find("poll.failed"))
        daemon.wait_for("poll.failed", count=failed + 3)
        assert len(daemon.find("alert.firing")) == 1

        api.api_key = API_KEY
        resolved = daemon.wait_for("alert.resolved", rule="no-data")
        events = list(daemon.events)
        good = [e for e in events[events.index(firing) :] if e["event"] == "poll.ok"]
        assert events.index(good[0]) < events.index(resolved)
        assert not [
            e
            for e in events[events.index(good[0]) + 1 : events.index(resolved)]
            if e["event"].startswith("poll.")
        ]
        assert resolved["alert_id"] == firing["alert_id"]
        daemon.wait_for("notify.sent", kind="resolved", rule="no-data")
        assert daemon.stop() == 0
    assert len(slack.updates(post.ts)) == 1
    assert len(slack.replies(post.ts)) == 1


def test_unknown_agent_fires_no_data_for_that_agent_only(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """A 422 for an agent the API does not know fires no-data for that series alone."""
    api.add_agent("agent_known", 2)
    agents = [("known", "agent_known"), ("ghost", "agent_ghost")]
    with site(HIGH, agents=agents).run() as daemon:
        firing = daemon.wait_for("alert.firing", rule="no-data")
        assert firing["series"] == "ghost"
        assert "unknown agent" in firing["condition"]
        daemon.wait_for("notify.sent", kind="firing")
        more_polls(daemon, series="known")
        more_polls(daemon, series="workspace")
        assert daemon.find("alert.firing") == [firing]
        assert {e["series"] for e in daemon.find("poll.failed")} == {"ghost"}
        assert {e["status"] for e in daemon.find("poll.failed")} == {422}
    (post,) = slack.top_level()
    assert "ghost" in post.text
    assert "unknown agent" in post.text


def test_plan_limit_shows_on_workspace_cards_and_at_capacity_fires(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """With [plan], a workspace card shows `27 / 30 (90 %)` (an agent's count stays plain),
    "80%" fires above 24, and the built-in at-capacity fires at the limit without burst."""
    api.add_agent("agent_support", 27)
    body = "[plan]\nconcurrency_limit = 30\n\n" + rule(
        "near", above="80%", scope=["workspace", "support"]
    )
    with site(body, agents=[("support", "agent_support")]).run() as daemon:
        api.set_count(27)
        near = {
            daemon.wait_for("alert.firing", rule="near", series=s)["alert_id"]: s
            for s in ("workspace", "support")
        }
        api.set_count(30)
        capacity = daemon.wait_for("alert.firing", rule="at-capacity", series="workspace")
        daemon.wait_for("notify.sent", kind="firing", count=3)
        assert daemon.stop() == 0
    cards = {near.get(alert_of(m), alert_of(m)): m.text for m in slack.top_level()}
    assert "count 27 / 30 (90 %) (count &gt; 24)" in cards["workspace"]
    assert "count 27 (count &gt; 24)" in cards["support"]
    assert "count 30 / 30 (100 %)" in cards[capacity["alert_id"]]
    assert "new calls are rejected" in cards[capacity["alert_id"]]


NO_DATA_ROUTE = """
[no_data]
severity = "warning"
channel = "#api-down"
mention = "<!subteam^S42>"
runbook = "https://wiki.example.com/no-data"

"""


def test_no_data_table_routes_the_no_data_card(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """[no_data] sends the no-data card to its channel with its severity, mention and
    runbook; a rule's card still goes to the [slack] channel without them."""
    api.add_agent("agent_known", 2)
    agents = [("known", "agent_known"), ("ghost", "agent_ghost")]
    with site(NO_DATA_ROUTE + HIGH, agents=agents).run() as daemon:
        firing = daemon.wait_for("alert.firing", rule="no-data", series="ghost")
        assert firing["severity"] == "warning"
        daemon.wait_for("notify.sent", kind="firing", rule="no-data")
        api.set_count(9)
        daemon.wait_for("notify.sent", kind="firing", rule="high")
        assert daemon.stop() == 0
    (no_data,) = slack.top_level("#api-down")
    assert alert_of(no_data) == firing["alert_id"]
    texts = [field["text"] for block in no_data.blocks for field in block.get("fields", [])]
    texts += [block["text"]["text"] for block in no_data.blocks if "text" in block]
    assert no_data.text.endswith(" <!subteam^S42>")
    assert "*Severity*\nwarning" in texts
    assert "Paging <!subteam^S42>" in texts
    assert any("https://wiki.example.com/no-data" in text for text in texts)
    (high,) = slack.top_level("#oncall")
    assert "subteam" not in high.text + json.dumps(high.blocks)
    assert "wiki.example.com" not in json.dumps(high.blocks)


def test_server_errors_fire_no_data_after_stale_after_and_record_no_samples(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """500s: poll.failed each time, no samples, no-data after stale_after, resolved on recovery."""
    here = site(HIGH, stale_after="1s")
    with here.run() as daemon:
        daemon.wait_for("poll.ok", count=2)
        api.set_behaviour(500)
        firing = daemon.wait_for("alert.firing", rule="no-data")
        # stale_after counts from the last good sample, which is the no-data alert's `since`.
        assert at(firing) - datetime.fromisoformat(firing["since"]) >= timedelta(seconds=1)
        assert at(daemon.find("poll.ok")[-1]) >= datetime.fromisoformat(firing["since"])
        assert len(daemon.find("poll.failed")) >= 3
        assert "server error" in firing["condition"]
        daemon.wait_for("notify.sent", kind="firing")
        api.set_behaviour("normal")
        resolved = daemon.wait_for("alert.resolved", rule="no-data")
        assert resolved["alert_id"] == firing["alert_id"]
        daemon.wait_for("notify.sent", kind="resolved")
        assert daemon.stop() == 0

    failed = daemon.find("poll.failed")
    assert {(e["reason"], e["status"]) for e in failed} == {("server error", 500)}
    assert len(failed) == len([r for r in api.responses if r.count is None])
    samples = stored_sample_times(here.state / "watchdog.db")
    assert len(samples) == len(daemon.find("poll.ok"))
    window = (at(failed[0]), at(failed[-1]))
    assert not [s for s in samples if window[0] <= s <= window[1]]
    post = card(slack, firing["alert_id"])
    assert "server error" in post.text
    assert len(slack.updates(post.ts)) == 1


def test_rate_limited_series_is_not_polled_before_retry_after(
    site: Callable[..., Site], api: FakeElevenLabs
) -> None:
    """After a 429 with Retry-After: 2 the series is not polled again for 2 s."""
    with site(HIGH, stale_after="10s").run() as daemon:
        daemon.wait_for("poll.ok", count=2)
        api.set_behaviour(429, times=1, retry_after=2)
        failed = daemon.wait_for("poll.failed", reason="rate limited")
        assert failed["retry_after"] == 2.0
        more_polls(daemon, 2)
        assert daemon.find("poll.skipped", series="workspace")

    (limited,) = [r for r in api.responses if r.count is None]
    later = [r.at for r in api.requests if r.at > limited.sent_at]
    assert later[0] - limited.sent_at >= 2.0
    earlier = [r.at for r in api.requests if r.at < limited.sent_at]
    assert max(b - a for a, b in itertools.pairwise(earlier)) < 1.0  # ~200 ms apart before


# -- without Slack --------------------------------------------------------------------


def test_without_slack_alerts_print_to_the_console(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """With no Slack configured a warning is logged and alerts print to stderr (stdout is JSON)."""
    with site(HIGH, with_slack=False).run() as daemon:
        (warning,) = daemon.find("notify.console")
        assert warning["level"] == "warning"
        events = list(daemon.events)
        assert events.index(warning) < events.index(daemon.find("daemon.started")[0])
        api.set_count(9)
        sent = daemon.wait_for("notify.sent", kind="firing")
        assert (sent["notifier"], sent["channel"]) == ("console", "console")
        api.set_count(1)
        daemon.wait_for("notify.sent", kind="resolved")
        assert daemon.stop() == 0
    assert all(line.startswith("{") for line in daemon.stdout_lines)  # jq-able audit log
    printed = daemon.stderr_lines
    assert any("FIRING" in line and "high · workspace" in line for line in printed)
    assert any("RESOLVED" in line and "high · workspace" in line for line in printed)
    assert not slack.attempts


# -- secrets --------------------------------------------------------------------------


def leaks(daemon: DaemonProcess, state: Path, slack: FakeSlack) -> list[str]:
    """Which secret shows up where: the daemon's output, its state files, Slack's messages."""
    places = {
        "stdout": "".join(daemon.stdout_lines).encode(),
        "stderr": "".join(daemon.stderr_lines).encode(),
    }
    for path in sorted(state.iterdir()):
        places[path.name] = path.read_bytes()
    for call in slack.messages:
        places[f"slack {call.ts}"] = (call.text + json.dumps(call.blocks)).encode()
    return [
        f"{name} in {where}"
        for where, data in places.items()
        for name, secret in (("API key", API_KEY), ("Slack token", SLACK_TOKEN))
        if secret.encode() in data
    ]


def test_secrets_never_reach_output_or_state_files(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """At debug level no secret reaches stdout, stderr, Slack or a state file, failures included."""
    here = site(HIGH)
    echo_key = json.dumps({"detail": f"upstream refused xi-api-key: {API_KEY}"})
    echo_token = f"bad gateway for Authorization: Bearer {SLACK_TOKEN}"
    with here.run() as daemon:
        daemon.wait_for("poll.ok")
        api.set_behaviour(status(500, body=echo_key), times=2)
        daemon.wait_for("poll.failed", count=2, status=500)

        slack.fail_next([Fail.status(503, body=echo_token), Fail.error("fatal_error")])
        api.set_behaviour(status(401, body=echo_key))
        daemon.wait_for("alert.firing", rule="no-data")
        daemon.wait_for("notify.retry", attempt=2)
        daemon.wait_for("notify.sent", kind="firing")
        api.set_behaviour("normal")
        daemon.wait_for("notify.sent", kind="resolved")
        assert {p.name for p in here.state.iterdir()} >= {
            "watchdog.db",
            "watchdog.db-wal",
            "watchdog.db-shm",
        }
        assert leaks(daemon, here.state, slack) == []
        assert daemon.stop() == 0
    assert leaks(daemon, here.state, slack) == []
    assert any("upstream refused" in e["detail"] for e in daemon.find("poll.failed"))


def test_a_key_cut_by_the_error_excerpt_limit_leaks_no_prefix(
    site: Callable[..., Site], api: FakeElevenLabs
) -> None:
    """A key echoed across the 200-character excerpt limit leaves no prefix in log or state."""
    pad = "x" * (199 - 24)  # the excerpt keeps 199 characters: the pad and 24 of the key
    api.set_behaviour(status(401, body=json.dumps({"detail": pad + API_KEY})))
    here = site(HIGH)
    with here.run() as daemon:
        daemon.wait_for("notify.sent", kind="firing", rule="no-data")
        assert daemon.stop() == 0
    places = {"stdout": "".join(daemon.stdout_lines).encode()}
    places.update({path.name: path.read_bytes() for path in here.state.iterdir()})
    prefix = API_KEY[:16].encode()
    assert [where for where, data in places.items() if prefix in data] == []
