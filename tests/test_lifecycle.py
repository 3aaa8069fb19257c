"""Nothing lost, nothing doubled: crashes, restarts, Slack outages and reloads of a real daemon.

Each test runs `python -m watchdog run` as a child process (killed with SIGKILL where a
crash is the point) against the loopback fakes, and judges by what Slack received and by
the audit log, awaiting events instead of sleeping.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.elevenlabs import FakeElevenLabs
from tests.fakes.slack import Fail, FakeSlack, channel_id
from tests.harness import (
    SLACK_TOKEN,
    DaemonProcess,
    Site,
    alert_of,
    at,
    daemon_env,
    rule,
    write_rules,
)

pytestmark = pytest.mark.slow

_SQLITE_MAGIC = b"SQLite format 3\x00"
HIGH = rule("high", above=5, severity="critical")


class ArrivingSlack(FakeSlack):
    """A FakeSlack that also counts posting calls as they arrive, before any scripted delay
    (reads such as the start-up `auth.test` are not counted)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arrived = 0

    def _handle(self, handler: Any) -> None:
        if "/api/chat." in handler.path or "/services/" in handler.path:
            with self._cond:
                self.arrived += 1
                self._cond.notify_all()
        super()._handle(handler)

    def wait_for_arrivals(self, n: int, timeout: float = 5.0) -> None:
        """Block until `n` posting calls have reached the server (answered or not)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.arrived >= n, timeout):
                raise TimeoutError(f"only {self.arrived} of {n} Slack calls within {timeout}s")


@pytest.fixture
def slack() -> Iterator[ArrivingSlack]:
    fake = ArrivingSlack(token=SLACK_TOKEN)
    with fake:
        yield fake


def more_polls(daemon: DaemonProcess, n: int = 3) -> None:
    """Wait for `n` more good polls than seen so far."""
    daemon.wait_for("poll.ok", count=len(daemon.find("poll.ok")) + n)


# -- crashes and restarts -------------------------------------------------------------


def test_kill9_while_firing_then_restart_resolves_the_original_message(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """After kill -9 while firing, a restart sends no second card and resolves the first."""
    here = site(HIGH)
    with here.run() as first:
        first.wait_for("poll.ok")
        api.set_count(9)
        firing = first.wait_for("alert.firing", rule="high")
        first.wait_for("notify.sent", kind="firing")
        first.kill()
    (post,) = slack.messages

    with here.run() as second:
        restored = second.wait_for("state.restored")
        assert restored["firing"] == 1
        more_polls(second)
        assert not second.find("alert.firing")
        api.set_count(1)
        resolved = second.wait_for("alert.resolved", rule="high")
        assert resolved["alert_id"] == firing["alert_id"]
        second.wait_for("notify.sent", kind="resolved")
        assert second.stop() == 0

    assert slack.top_level() == [post]
    assert [m.ts for m in slack.updates(post.ts)] == [post.ts]
    (reply,) = slack.replies(post.ts)
    assert "RESOLVED" in reply.text


def test_slack_outage_and_kill9_still_deliver_exactly_one_card(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """A card queued during a Slack outage survives kill -9 and arrives exactly once."""
    here = site(HIGH)
    slack.outage(True)
    with here.run() as first:
        first.wait_for("poll.ok")
        api.set_count(9)
        first.wait_for("alert.firing", rule="high")
        first.wait_for("notify.retry", attempt=1)
        first.kill()
    assert not slack.messages
    slack.outage(False)

    with here.run() as second:
        sent = second.wait_for("notify.sent", kind="firing")
        assert sent["attempt"] >= 2  # the failed attempts were remembered across the crash
        more_polls(second)
        assert not second.find("alert.firing")
        assert here.status()["outbox"]["depth"] == 0
        assert second.stop() == 0

    assert len(slack.messages) == 1
    outcomes = [a.outcome for a in slack.attempts]
    assert outcomes[-1] == "ok"
    assert set(outcomes[:-1]) == {"status 503"}


def test_sigterm_mid_delivery_records_the_message_so_restart_does_not_resend(
    site: Callable[..., Site], api: FakeElevenLabs, slack: ArrivingSlack
) -> None:
    """SIGTERM while Slack is slowly accepting a card lets it finish and records it: no resend."""
    here = site(HIGH)
    slack.fail_next([Fail.delay(1.5)])
    with here.run() as first:
        first.wait_for("poll.ok")
        api.set_count(9)
        first.wait_for("alert.firing", rule="high")
        slack.wait_for_arrivals(1)
        first.send(signal.SIGTERM)
        assert first.wait(timeout=5) == 0
        events = list(first.events)
        (sent,) = first.find("notify.sent", kind="firing")
        assert events.index(sent) < events.index(first.find("daemon.stopping")[0])
    assert len(slack.messages) == 1

    with here.run() as second:
        more_polls(second)
        assert not second.find("notify.sent")
        assert here.status()["outbox"]["depth"] == 0
        assert second.stop() == 0
    assert len(slack.messages) == 1


def test_rule_removed_while_down_resolves_at_restart(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """An alert whose rule was deleted while the watchdog was down resolves at restart."""
    calm = rule("calm", above=100)
    here = site(HIGH + calm)
    with here.run() as first:
        first.wait_for("poll.ok")
        api.set_count(9)
        firing = first.wait_for("alert.firing", rule="high")
        first.wait_for("notify.sent", kind="firing")
        first.kill()
    here.rewrite(calm)

    with here.run() as second:
        resolved = second.wait_for("alert.resolved", rule="high")
        assert resolved["alert_id"] == firing["alert_id"]
        assert resolved["reason"] == "rule removed from config"
        second.wait_for("notify.sent", kind="resolved")
        assert second.stop() == 0
    (post,) = slack.top_level()
    assert len(slack.updates(post.ts)) == 1
    (reply,) = slack.replies(post.ts)
    assert "rule removed from config" in reply.text


def test_restart_keeps_sample_history_for_change_windows(
    site: Callable[..., Site], api: FakeElevenLabs
) -> None:
    """A change window spanning the restart evaluates on the first post-restart sample."""
    # The window is longer than a restart takes on a loaded machine (a new process
    # imports everything and polls), so it spans the restart.
    here = site(rule("drop", kind="change", window="4s", drop=5))
    api.set_count(10)
    with here.run() as first:
        start = first.wait_for("poll.ok")
        first.wait_until(
            lambda: at(first.find("poll.ok")[-1]) - at(start) >= timedelta(seconds=4.2)
        )
        first.kill()
    last_before = first.find("poll.ok")[-1]
    assert not first.find("alert.firing")
    api.set_count(2)

    with here.run() as second:
        firing = second.wait_for("alert.firing", rule="drop")
        events = list(second.events)
        polls = [i for i, e in enumerate(events) if e["event"] == "poll.ok"]
        assert polls[0] < events.index(firing)
        assert polls[1:] == [] or events.index(firing) < polls[1]  # on the very first sample
        assert "10 -> 2" in firing["condition"]
        downtime = at(events[polls[0]]) - at(last_before)
        assert downtime < timedelta(seconds=4)  # the window is longer than the downtime


def test_restart_resumes_a_collapse_against_the_base_it_fired_at(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """A collapse fired at 20 -> 0 stays firing across kill -9 however long the count stays
    at 0 (the window slides past the drop), and resolves only once the count is above 10."""
    here = site(rule("collapse", kind="change", window="1s", drop_pct=50, min_base=5))
    api.set_count(20)
    with here.run() as first:
        start = first.wait_for("poll.ok")
        first.wait_until(
            lambda: at(first.find("poll.ok")[-1]) - at(start) >= timedelta(seconds=1.2)
        )
        api.set_count(0)
        firing = first.wait_for("alert.firing", rule="collapse")
        assert firing["condition"].endswith(": 20 -> 0")
        first.wait_for("notify.sent", kind="firing")
        first.kill()

    with here.run() as second:
        restored = second.wait_for("state.restored")
        assert restored["firing"] == 1
        back = second.wait_for("poll.ok")
        second.wait_until(  # three windows of zeros: the sliding comparison no longer holds
            lambda: at(second.find("poll.ok")[-1]) - at(back) >= timedelta(seconds=3)
        )
        api.set_count(10)  # against 20, still a 50 % drop
        more_polls(second)
        assert not second.find("alert.resolved")
        api.set_count(12)
        resolved = second.wait_for("alert.resolved", rule="collapse")
        assert resolved["alert_id"] == firing["alert_id"]
        assert resolved["reason"] == "recovered to 12, fired at 20 → 0"
        second.wait_for("notify.sent", kind="resolved")
        assert second.stop() == 0
    (post,) = slack.top_level()
    (reply,) = slack.replies(post.ts)
    assert "recovered to 12, fired at 20 → 0" in reply.text


# -- Slack failures -------------------------------------------------------------------


def test_slack_429_500_503_then_one_message(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """Slack 429 (Retry-After 1), 500, 503: notify.retry attempts 1-3, then one message sent."""
    slack.fail_next([Fail.status(429, retry_after=1), Fail.status(500), Fail.status(503)])
    with site(HIGH).run() as daemon:
        daemon.wait_for("poll.ok")
        api.set_count(9)
        firing = daemon.wait_for("alert.firing", rule="high")
        sent = daemon.wait_for("notify.sent", kind="firing", timeout=20)
        retries = daemon.find("notify.retry")
        assert [r["attempt"] for r in retries] == [1, 2, 3]
        assert sent["attempt"] == 4
        assert {r["outbox_id"] for r in retries} == {sent["outbox_id"]}
        assert {r["alert_id"] for r in retries} == {firing["alert_id"]}
        assert "rate limited" in retries[0]["error"]
        assert retries[0]["retry_in"] >= 1.0
        assert "500" in retries[1]["error"]
        assert "503" in retries[2]["error"]
        events = list(daemon.events)
        assert max(events.index(r) for r in retries) < events.index(sent)

    attempts = slack.attempts
    assert [a.outcome for a in attempts] == ["status 429", "status 500", "status 503", "ok"]
    assert attempts[1].received_at - attempts[0].received_at >= 0.95  # Retry-After honoured
    assert len(slack.messages) == 1


def test_permanent_slack_error_is_dead_lettered_and_later_alerts_deliver(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """channel_not_found: notify.failed, a dead letter in status, and later alerts deliver."""
    here = site(rule("lost", above=5, channel="#gone") + rule("high", above=7))
    slack.missing_channel("#gone")
    with here.run() as daemon:
        daemon.wait_for("poll.ok")
        api.set_count(6)
        firing = daemon.wait_for("alert.firing", rule="lost")
        failed = daemon.wait_for("notify.failed", rule="lost")
        assert failed["alert_id"] == firing["alert_id"]
        assert failed["attempt"] == 1
        assert "channel_not_found" in failed["error"]
        assert not daemon.find("notify.retry")

        report = here.status()
        (dead,) = report["dead_letters"]
        assert (dead["rule"], dead["channel"], dead["kind"]) == ("lost", "#gone", "firing")
        assert dead["alert_id"] == firing["alert_id"]
        assert "channel_not_found" in dead["reason"]
        assert report["outbox"]["depth"] == 0

        api.set_count(9)
        daemon.wait_for("notify.sent", rule="high", kind="firing")
        assert daemon.stop() == 0
    (post,) = slack.messages
    assert post.channel == channel_id("#oncall")


def test_order_per_channel_survives_an_outage(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """Transitions queued during an outage reach Slack in audit-log order, at most ~1 message/s.

    rule_b's first episode fires and resolves behind rule_a's card while Slack is down:
    it goes out as one fired-and-resolved card, in its firing's place (and so does rule_a's
    first episode: Slack refused its attempts outright, so its card was never posted).
    """
    slack.outage(True)
    with site(rule("rule_a", above=3) + rule("rule_b", above=5)).run() as daemon:
        daemon.wait_for("poll.ok")
        steps = [
            (4, "alert.firing", "rule_a"),
            (6, "alert.firing", "rule_b"),
            (4, "alert.resolved", "rule_b"),
            (1, "alert.resolved", "rule_a"),
            (9, "alert.firing", "rule_b"),  # both fire again, a first
        ]
        for count, event, name in steps:
            api.set_count(count)
            daemon.wait_for(event, rule=name, count=len(daemon.find(event, rule=name)) + 1)
        assert not slack.messages
        slack.outage(False)
        last = daemon.find("alert.firing", rule="rule_b")[-1]["alert_id"]
        daemon.wait_for("notify.sent", alert_id=last, timeout=30)

    transitions = [
        (e["event"], e["alert_id"])
        for e in daemon.events
        if e["event"] in ("alert.firing", "alert.resolved")
    ]
    assert len(transitions) == 6
    folded = {e["alert_id"] for e in daemon.events if e["event"] == "notify.folded"}
    assert daemon.find("alert.firing", rule="rule_b")[0]["alert_id"] in folded
    expected = [
        ("fired and resolved" if alert in folded else event, alert)
        for event, alert in transitions
        if not (alert in folded and event == "alert.resolved")
    ]
    delivered = []
    for call in slack.messages:
        if call.method == "chat.update":
            delivered.append(("alert.resolved", alert_of(call)))
        elif "FIRED AND RESOLVED" in call.text:
            delivered.append(("fired and resolved", alert_of(call)))
        elif call.thread_ts is None:
            delivered.append(("alert.firing", alert_of(call)))
        else:
            assert call.thread_ts in {m.ts for m in slack.top_level()}
    assert delivered == expected
    spacing = slack.min_spacing("#oncall")
    assert spacing is not None
    assert spacing >= 0.9


# -- unusable state -------------------------------------------------------------------


@pytest.mark.parametrize("command", ["run", "check"])
@pytest.mark.parametrize(
    "content",
    [b"\x00\xffthis is not a database\n" * 512, _SQLITE_MAGIC + b"\xa5" * 8192],
    ids=["garbage", "sqlite-header-then-garbage"],
)
def test_corrupt_database_is_refused_without_traceback(
    site: Callable[..., Site], command: str, content: bytes
) -> None:
    """A corrupt state database makes run and check exit non-zero naming the file, no traceback."""
    here = site(HIGH)
    here.state.mkdir()
    db = here.state / "watchdog.db"
    db.write_bytes(content)
    result = here.cli(command, "--config", str(here.config))
    assert result.returncode != 0
    assert str(db) in result.stderr
    assert "Traceback" not in result.stderr
    assert db.read_bytes() == content  # the operator's file is left alone


@pytest.mark.parametrize("command", ["run", "check"])
def test_state_directory_under_a_file_is_refused_without_traceback(
    tmp_path: Path, api: FakeElevenLabs, command: str
) -> None:
    """A state directory that cannot be created makes run and check exit non-zero naming it."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file\n", encoding="utf-8")
    state = blocker / "state"
    config = write_rules(tmp_path / "rules.toml", HIGH)
    env = daemon_env(state, api_url=api.url)
    result = Site(config, state, env, {}).cli(command, "--config", str(config))
    assert result.returncode != 0
    assert str(state) in result.stderr
    assert "Traceback" not in result.stderr


# -- reload ---------------------------------------------------------------------------


def test_sighup_keeps_alerts_of_unchanged_rules(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """Reloading changed rules keeps the alerts of unchanged rules (same alert_id)."""
    kept = rule("high", above=5) + rule("slow", above=5, for_="30s")
    here = site(kept)
    with here.run() as daemon:
        daemon.wait_for("poll.ok")
        api.set_count(9)
        firing = daemon.wait_for("alert.firing", rule="high")
        pending = daemon.wait_for("alert.pending", rule="slow")
        daemon.wait_for("notify.sent", kind="firing")

        here.rewrite(kept + rule("extra", above=100, severity="info"))
        daemon.send(signal.SIGHUP)
        loaded = daemon.wait_for("config.loaded", reload=True)
        assert (loaded["rules"], loaded["resolved"]) == (3, 0)
        more_polls(daemon)
        assert daemon.find("alert.firing", rule="high") == [firing]
        assert daemon.find("alert.pending", rule="slow") == [pending]

        api.set_count(1)
        resolved = daemon.wait_for("alert.resolved", rule="high")
        cancelled = daemon.wait_for("alert.cancelled", rule="slow")
        assert (resolved["alert_id"], resolved["since"]) == (firing["alert_id"], firing["since"])
        assert (cancelled["alert_id"], cancelled["since"]) == (
            pending["alert_id"],
            pending["since"],
        )
        daemon.wait_for("notify.sent", kind="resolved")
        assert daemon.stop() == 0

    (post,) = slack.top_level()
    assert alert_of(post) == firing["alert_id"]
    assert len(slack.updates(post.ts)) == 1


def test_second_daemon_on_the_same_state_is_refused(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """A second `run` on a state directory in use exits 1 naming the running pid."""
    here = site(HIGH)
    with here.run() as first:
        first.wait_for("poll.ok")
        second = here.cli("run", "--config", str(here.config))
        assert second.returncode == 1
        assert first.proc is not None
        assert f"another watchdog (pid {first.proc.pid})" in second.stderr
        assert "Traceback" not in second.stderr
        assert first.proc.poll() is None
        first.kill()
    # The kernel drops the lock with the killed process: a new daemon starts at once.
    with here.run() as third:
        third.wait_for("poll.ok")
        assert third.stop() == 0
