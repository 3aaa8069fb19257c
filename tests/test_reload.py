"""Reloads and gaps: what SIGHUP applies to a running daemon, and numbers after a poll gap.

Process-level tests run `watchdog run` against the loopback fakes and send real SIGHUPs;
the poll-gap test runs the real daemon loop in this process on a clock the test steps,
because a four-hour gap cannot be waited out in real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import signal
import socket
import threading
import urllib.request
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from tests.fakes.elevenlabs import FakeElevenLabs
from tests.fakes.slack import FakeSlack
from tests.harness import API_KEY, SLACK_TOKEN, DaemonProcess, Site, alert_of, daemon_env, rule
from tests.harness import write_rules as write_fast_rules
from tests.test_faults import AuditStream
from watchdog.audit import configure_logging, reset_logging
from watchdog.daemon import Daemon, Reloaded
from watchdog.notify import ConsoleNotifier
from watchdog.rules import load_config
from watchdog.source import LiveCountSource
from watchdog.store import Store

NEW_KEY = "sk_rotated0123456789abcdefghijklmnopq"
NEW_SLACK_TOKEN = "xoxb-2222222222-3333333333-RotatedTokenValue7"
HIGH = rule("high", above=5, recover_below=2)


@pytest.fixture
def site(tmp_path: Path, api: FakeElevenLabs, slack: FakeSlack) -> Callable[..., Site]:
    def make(body: str, **options: Any) -> Site:
        config = write_fast_rules(tmp_path / "rules.toml", body, **options)
        env = daemon_env(tmp_path / "state", api_url=api.url, slack_api_url=slack.api_url)
        return Site(config, tmp_path / "state", env, options)

    return make


def reload(site: Site, daemon: DaemonProcess, body: str) -> dict[str, Any]:
    """Rewrite the rules, SIGHUP, and return the reload's `config.loaded` event."""
    site.rewrite(body)
    seen = len(daemon.find("config.loaded", reload=True))
    daemon.send(signal.SIGHUP)
    return daemon.wait_for("config.loaded", reload=True, count=seen + 1)


def after(daemon: DaemonProcess, mark: dict[str, Any], event: str) -> list[dict[str, Any]]:
    """Events named `event` logged after `mark`."""
    events = list(daemon.events)
    return [e for e in events[events.index(mark) + 1 :] if e["event"] == event]


# -- credentials ----------------------------------------------------------------------


@pytest.mark.slow
def test_key_rotated_in_the_credentials_directory_applies_on_sighup(
    tmp_path: Path, api: FakeElevenLabs
) -> None:
    """A new key file plus SIGHUP: polls succeed with the new key, same process."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "elevenlabs_api_key").write_text(API_KEY + "\n", encoding="utf-8")
    config = write_fast_rules(tmp_path / "rules.toml", HIGH)
    env = daemon_env(tmp_path / "state", api_url=api.url, CREDENTIALS_DIRECTORY=str(credentials))
    del env["ELEVENLABS_API_KEY"]  # the environment would win over the credential file
    with DaemonProcess(["run", "--config", str(config)], env).start() as daemon:
        daemon.wait_for("poll.ok")
        assert daemon.proc is not None
        pid = daemon.proc.pid

        (credentials / "elevenlabs_api_key").write_text(NEW_KEY + "\n", encoding="utf-8")
        api.api_key = NEW_KEY  # the old key is revoked
        daemon.wait_for("poll.failed", reason="rejected key")
        daemon.send(signal.SIGHUP)
        loaded = daemon.wait_for("config.loaded", reload=True)
        assert loaded["needs_restart"] == []
        ok = len(daemon.find("poll.ok"))
        daemon.wait_for("poll.ok", count=ok + 3)
        daemon.wait_for("alert.resolved", rule="no-data")

        assert daemon.proc.pid == pid
        assert daemon.proc.poll() is None
        keys = [r.headers.get("xi-api-key") for r in api.requests]
        assert keys[-1] == NEW_KEY
        assert API_KEY not in keys[keys.index(NEW_KEY) :]
        assert daemon.stop() == 0
    output = "".join(daemon.stdout_lines + daemon.stderr_lines)
    assert NEW_KEY not in output
    assert API_KEY not in output


@pytest.mark.slow
def test_slack_token_rotated_in_the_credentials_directory_applies_on_sighup(
    tmp_path: Path, api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """A new bot token file plus SIGHUP: the next alert is posted with the new token."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "slack_bot_token").write_text(SLACK_TOKEN, encoding="utf-8")
    config = write_fast_rules(tmp_path / "rules.toml", HIGH)
    env = daemon_env(tmp_path / "state", api_url=api.url, CREDENTIALS_DIRECTORY=str(credentials))
    env["SLACK_API_URL"] = slack.api_url
    with DaemonProcess(["run", "--config", str(config)], env).start() as daemon:
        daemon.wait_for("poll.ok")
        (credentials / "slack_bot_token").write_text(NEW_SLACK_TOKEN, encoding="utf-8")
        slack.token = NEW_SLACK_TOKEN  # the old token is revoked
        daemon.send(signal.SIGHUP)
        loaded = daemon.wait_for("config.loaded", reload=True)
        assert loaded["needs_restart"] == []
        api.set_count(9)
        daemon.wait_for("notify.sent", kind="firing")
        assert not daemon.find("notify.failed")
        assert daemon.stop() == 0
    (card,) = slack.top_level()
    assert "high" in card.text
    assert "RotatedToken" not in "".join(daemon.stdout_lines + daemon.stderr_lines)


@pytest.mark.slow
def test_switching_slack_from_bot_to_webhook_is_named_as_needing_a_restart(
    tmp_path: Path, api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """Replacing the bot token by a webhook URL is listed in needs_restart, not applied."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "slack_bot_token").write_text(SLACK_TOKEN, encoding="utf-8")
    config = write_fast_rules(tmp_path / "rules.toml", HIGH)
    env = daemon_env(tmp_path / "state", api_url=api.url, CREDENTIALS_DIRECTORY=str(credentials))
    env["SLACK_API_URL"] = slack.api_url
    with DaemonProcess(["run", "--config", str(config)], env).start() as daemon:
        daemon.wait_for("poll.ok")
        (credentials / "slack_bot_token").unlink()
        (credentials / "slack_webhook_url").write_text(slack.webhook_url, encoding="utf-8")
        daemon.send(signal.SIGHUP)
        loaded = daemon.wait_for("config.loaded", reload=True)
        assert loaded["needs_restart"] == ["SLACK_BOT_TOKEN", "SLACK_WEBHOOK_URL"]
        api.set_count(9)
        daemon.wait_for("notify.sent", kind="firing", notifier="slack-bot")
        assert daemon.stop() == 0
    assert len(slack.top_level()) == 1


# -- [watchdog] keys ------------------------------------------------------------------


def _rules_with(path: Path, *, timeout: str, concurrency: int, agents: int) -> None:
    lines = [
        "[watchdog]",
        'poll_interval = "1s"',  # a request may take half of it
        'stale_after = "30s"',
        'repeat = "0s"',
        f'timeout = "{timeout}"',
        f"concurrency = {concurrency}",
        "",
        "[slack]",
        'channel = "#oncall"',
        "",
    ]
    for i in range(agents):
        lines += ["[[agents]]", f'name = "a{i}"', f'id = "agent_{i}"', ""]
    path.write_text("\n".join(lines) + "\n" + HIGH, encoding="utf-8")


@pytest.mark.slow
def test_timeout_and_concurrency_changed_by_sighup_take_effect(
    tmp_path: Path, api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """SIGHUP applies a new concurrency (more requests in flight) and timeout (polls time out)."""
    for i in range(5):
        api.add_agent(f"agent_{i}", 1)
    api.latency = 0.1
    config = tmp_path / "rules.toml"
    _rules_with(config, timeout="2s", concurrency=1, agents=5)
    env = daemon_env(tmp_path / "state", api_url=api.url, slack_api_url=slack.api_url)
    with DaemonProcess(["run", "--config", str(config)], env).start() as daemon:
        daemon.wait_for("poll.ok", count=12)
        assert api.max_in_flight == 1

        _rules_with(config, timeout="2s", concurrency=6, agents=5)
        daemon.send(signal.SIGHUP)
        daemon.wait_for("config.loaded", reload=True)
        daemon.wait_until(lambda: api.max_in_flight >= 4)
        assert not daemon.find("poll.failed")

        _rules_with(config, timeout="50ms", concurrency=6, agents=5)
        daemon.send(signal.SIGHUP)
        daemon.wait_for("config.loaded", reload=True, count=2)
        failed = daemon.wait_for("poll.failed", reason="unreachable")
        assert failed["detail"].endswith("timed out after 50ms"), failed
        assert daemon.stop() == 0


# -- rules redefined ------------------------------------------------------------------


@pytest.mark.slow
def test_rule_kind_change_resolves_with_a_note(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """A rule turned from threshold into change resolves its alert with a note."""
    here = site(rule("r", above=5))
    with here.run() as daemon:
        daemon.wait_for("poll.ok")
        api.set_count(9)
        firing = daemon.wait_for("alert.firing", rule="r")
        daemon.wait_for("notify.sent", kind="firing")
        loaded = reload(here, daemon, rule("r", "change", window="1s", drop=5))
        assert loaded["resolved"] == 1
        resolved = daemon.wait_for("alert.resolved", rule="r")
        assert resolved["alert_id"] == firing["alert_id"]
        assert resolved["reason"] == "rule changed from threshold to change: starting afresh"
        daemon.wait_for("notify.sent", kind="resolved")
        assert daemon.stop() == 0
    (card,) = slack.top_level()
    (reply,) = slack.replies(card.ts)
    assert "rule changed from threshold to change" in reply.text


@pytest.mark.slow
def test_threshold_change_on_a_firing_alert_is_judged_at_the_next_sample(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """A firing alert whose raised threshold no longer holds resolves at the next poll."""
    here = site(HIGH)
    with here.run() as daemon:
        daemon.wait_for("poll.ok")
        api.set_count(9)
        firing = daemon.wait_for("alert.firing", rule="high")
        daemon.wait_for("notify.sent", kind="firing")
        loaded = reload(here, daemon, rule("high", above=20, recover_below=2))
        assert loaded["resolved"] == 0
        resolved = daemon.wait_for("alert.resolved", rule="high")
        assert resolved["alert_id"] == firing["alert_id"]
        assert "redefined rule (count > 20" in resolved["reason"]
        (first, *_) = after(daemon, loaded, "poll.ok")
        assert at_or_before(first, resolved, daemon)
        assert daemon.stop() == 0


def at_or_before(first: dict[str, Any], later: dict[str, Any], daemon: DaemonProcess) -> bool:
    """Whether `later` was logged right after the poll `first` (no other poll between)."""
    events = list(daemon.events)
    between = events[events.index(first) + 1 : events.index(later)]
    return not [e for e in between if e["event"] == "poll.ok"]


@pytest.mark.slow
def test_severity_change_shows_on_the_card(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """A severity raised on reload is what the firing alert's card shows when it resolves."""
    here = site(HIGH)
    with here.run() as daemon:
        daemon.wait_for("poll.ok")
        api.set_count(9)
        firing = daemon.wait_for("alert.firing", rule="high")
        daemon.wait_for("notify.sent", kind="firing")
        reload(here, daemon, rule("high", above=5, recover_below=2, severity="critical"))
        api.set_count(1)
        resolved = daemon.wait_for("alert.resolved", rule="high")
        assert resolved["severity"] == "critical"
        daemon.wait_for("notify.sent", kind="resolved")
        assert daemon.stop() == 0
    (card,) = slack.top_level()
    assert alert_of(card) == firing["alert_id"]
    assert "[WARNING]" in card.text
    (edit,) = slack.updates(card.ts)
    assert "[CRITICAL]" in edit.text
    assert "critical" in str(edit.blocks)


# -- /metrics -------------------------------------------------------------------------


def free_port() -> int:
    """A port nothing listens on right now (the daemon binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


@pytest.mark.slow
def test_removed_agents_disappear_from_metrics(
    tmp_path: Path, api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """After a reload that removes an agent, /metrics has no series of it left."""
    api.add_agent("agent_kept", 2)
    api.add_agent("agent_gone", 3)
    both = [("kept", "agent_kept"), ("gone", "agent_gone")]
    config = write_fast_rules(tmp_path / "rules.toml", HIGH, agents=both)
    env = daemon_env(
        tmp_path / "state",
        api_url=api.url,
        slack_api_url=slack.api_url,
        WATCHDOG_METRICS_ADDR=f"127.0.0.1:{free_port()}",
    )
    with DaemonProcess(["run", "--config", str(config)], env).start() as daemon:
        port = daemon.wait_for("metrics.listening")["port"]
        daemon.wait_for("poll.ok", series="gone")
        daemon.wait_for("poll.ok", series="kept")
        assert 'series="gone"' in scrape(port)

        write_fast_rules(config, HIGH, agents=both[:1])
        daemon.send(signal.SIGHUP)
        loaded = daemon.wait_for("config.loaded", reload=True)
        assert loaded["agents"] == 1
        body = scrape(port)
        assert 'series="gone"' not in body
        assert 'watchdog_live_conversations{series="kept"} 2.0' in body
        assert daemon.stop() == 0


@pytest.mark.slow
def test_a_poll_running_through_the_reload_does_not_bring_its_series_back(
    tmp_path: Path, api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """A removed agent's poll still hanging at the SIGHUP is dropped: it neither fails
    afterwards nor puts the series back into /metrics."""
    api.add_agent("agent_kept", 2)
    api.set_behaviour("hang", "agent_gone")
    both = [("kept", "agent_kept"), ("gone", "agent_gone")]
    # A hung request gives up after the 1s timeout, well before the next cycle (2s).
    options = {"poll_interval": "2s", "agents": both}
    config = write_fast_rules(tmp_path / "rules.toml", HIGH, **options)
    env = daemon_env(
        tmp_path / "state",
        api_url=api.url,
        slack_api_url=slack.api_url,
        WATCHDOG_METRICS_ADDR=f"127.0.0.1:{free_port()}",
    )

    def polls_of(agent_id: str) -> int:
        return sum(r.query.get("agent_id") == agent_id for r in api.requests)

    with DaemonProcess(["run", "--config", str(config)], env).start() as daemon:
        port = daemon.wait_for("metrics.listening")["port"]
        daemon.wait_for("poll.failed", series="gone")
        daemon.wait_until(lambda: polls_of("agent_gone") == 2)  # the second one hangs

        write_fast_rules(config, HIGH, agents=both[:1], poll_interval="2s")
        daemon.send(signal.SIGHUP)
        loaded = daemon.wait_for("config.loaded", reload=True)
        daemon.wait_for("poll.ok", series="kept", count=3)  # past that poll's timeout
        assert not [e for e in after(daemon, loaded, "poll.failed") if e["series"] == "gone"]
        assert 'series="gone"' not in scrape(port)
        assert daemon.stop() == 0


# -- a poll gap -----------------------------------------------------------------------


class SteppedClock:
    """Wall and monotonic time that move together, only when the test steps them."""

    def __init__(self, start: datetime) -> None:
        self._start = start
        self._elapsed = 0.0
        self._moved = asyncio.Condition()

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self._elapsed)

    def monotonic(self) -> float:
        return self._elapsed

    def sleep(self, seconds: float) -> Coroutine[None, None, None]:
        """Counted from the call, as a real sleep is (not from when it is first awaited)."""
        return self._until(self._elapsed + max(0.0, seconds))

    async def _until(self, elapsed: float) -> None:
        async with self._moved:
            await self._moved.wait_for(lambda: self._elapsed >= elapsed)

    async def advance(self, seconds: float) -> None:
        async with self._moved:
            self._elapsed += seconds
            self._moved.notify_all()


COLLAPSE = """
[watchdog]
poll_interval = "15s"
stale_after = "10m"

[[rules]]
name = "collapse"
kind = "change"
window = "5m"
drop_pct = 50
min_base = 5
"""


class HeldStore(Store):
    """A store whose pruning waits (in whatever thread runs it) until the test lets it go."""

    entered = threading.Event()
    released = threading.Event()
    starved = False

    def prune_samples(self, before: datetime, *, series: Iterable[str] | None = None) -> int:
        type(self).entered.set()
        if not type(self).released.wait(timeout=5):
            type(self).starved = True  # nobody could release it: the event loop was held up
        return super().prune_samples(before, series=series)


@contextlib.asynccontextmanager
async def stepped_daemon(
    tmp_path: Path, api: FakeElevenLabs, store_class: type[Store] = Store
) -> AsyncIterator[tuple[SteppedClock, AuditStream]]:
    """The real daemon loop and source over the fake API, on a clock the test steps."""
    path = tmp_path / "rules.toml"
    path.write_text(COLLAPSE, encoding="utf-8")
    clock = SteppedClock(datetime(2026, 1, 5, 9, 0, tzinfo=UTC))
    audit = AuditStream(clock)
    configure_logging(level="debug", stream=audit, secrets=[API_KEY])
    try:
        with (
            store_class.open(Store.default_path(tmp_path / "state")) as store,
            LiveCountSource(SecretStr(API_KEY), api.url, now=clock.now, timeout=5.0) as source,
        ):
            daemon = Daemon(
                config=load_config(path),
                source=source,
                store=store,
                notifier=ConsoleNotifier(io.StringIO()),
                clock=clock,
            )
            task = asyncio.create_task(daemon.run())
            try:
                yield clock, audit
            finally:
                daemon.request_stop()
                await asyncio.wait_for(task, 15)
    finally:
        reset_logging()


async def _poll_after(clock: SteppedClock, audit: AuditStream, seconds: float) -> None:
    polls = len(audit.find("poll.ok"))
    await clock.advance(seconds)
    await audit.wait_for("poll.ok", nth=polls + 1)


def test_four_hour_poll_gap_before_a_collapse_raises_no_false_alert(
    tmp_path: Path, api: FakeElevenLabs
) -> None:
    """After 4 hours without polls, a lower count is not a collapse against the old count."""

    async def scenario() -> None:
        api.set_count(20)
        async with stepped_daemon(tmp_path, api) as (clock, audit):
            await audit.wait_for("poll.ok")
            await _poll_after(clock, audit, 15)
            api.set_count(6)  # 70 % below the count from before the gap
            await _poll_after(clock, audit, 4 * 3600)
            for _ in range(24):  # six minutes: a fitting base (6) exists again
                await _poll_after(clock, audit, 15)
            assert audit.find("alert.firing", rule="collapse") == []
            api.set_count(2)  # a real collapse against that base still fires
            await _poll_after(clock, audit, 15)
            await audit.wait_for("alert.firing", rule="collapse")

    asyncio.run(scenario())


def test_hourly_housekeeping_never_holds_up_polling(tmp_path: Path, api: FakeElevenLabs) -> None:
    """While the hourly prune is stuck in the database, the daemon still polls on time."""

    async def scenario() -> None:
        async with stepped_daemon(tmp_path, api, HeldStore) as (clock, audit):
            await audit.wait_for("poll.ok")
            await _poll_after(clock, audit, 3600)  # this cycle starts the hourly housekeeping
            loop = asyncio.get_running_loop()
            assert await loop.run_in_executor(None, HeldStore.entered.wait, 10)
            await _poll_after(clock, audit, 15)  # polled while the prune waits
            HeldStore.released.set()
            await audit.wait_for("state.pruned")
        assert not HeldStore.starved

    asyncio.run(scenario())


def test_settings_the_source_refuses_reject_the_whole_reload(
    tmp_path: Path, api: FakeElevenLabs
) -> None:
    """A reload whose settings the source refuses changes nothing: old rules, old API access."""
    path = tmp_path / "rules.toml"
    path.write_text(COLLAPSE, encoding="utf-8")
    old = load_config(path)
    path.write_text(COLLAPSE.replace('window = "5m"', 'window = "10m"'), encoding="utf-8")
    new = load_config(path)

    async def scenario() -> None:
        clock = SteppedClock(datetime(2026, 1, 5, 9, 0, tzinfo=UTC))
        audit = AuditStream(clock)
        configure_logging(level="debug", stream=audit, secrets=[API_KEY])
        with (
            Store.open(Store.default_path(tmp_path / "state")) as store,
            LiveCountSource(SecretStr(API_KEY), api.url, now=clock.now, timeout=5.0) as source,
        ):
            daemon = Daemon(
                config=old,
                source=source,
                store=store,
                notifier=ConsoleNotifier(io.StringIO()),
                clock=clock,
                load=lambda: Reloaded(new, SecretStr(NEW_KEY), "ftp://nowhere.example"),
            )
            assert daemon.reload() is False
            assert daemon.config is old
            (rejected,) = audit.find("config.rejected")
            assert "base_url must be an http(s) URL" in rejected["problems"][0]
            assert (await source.poll("workspace", None)).count == 1  # old key, old URL

    try:
        asyncio.run(scenario())
    finally:
        reset_logging()
