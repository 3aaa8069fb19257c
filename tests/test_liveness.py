"""No silent death, and systemd never kills a healthy watchdog: a real `watchdog run`.

Each process test starts `python -m watchdog run` against the loopback fakes. Where
systemd matters, a real AF_UNIX datagram socket stands in for systemd's notify socket
(`$NOTIFY_SOCKET`) and the test reads what the daemon sends to it; `/metrics` and
`/healthz` are scraped over HTTP from the running process.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.fakes.elevenlabs import ALL, FakeElevenLabs
from tests.fakes.slack import Fail, FakeSlack
from tests.harness import API_KEY, DaemonProcess, Site, daemon_env, rule, write_rules
from watchdog.audit import configure_logging, reset_logging
from watchdog.clock import SystemClock
from watchdog.daemon import Daemon
from watchdog.liveness import READY_WITHIN_SECONDS, WORKER_ROUND_LIMIT, watchdog_sec_problems
from watchdog.model import MessageRef, Notification, Sample, Severity, TransitionKind
from watchdog.rules import load_config
from watchdog.store import Store
from watchdog.systemd import SdNotifier

HIGH = rule("high", above=5, severity="critical")


class NotifySocket:
    """A bound AF_UNIX datagram socket in systemd's place, recording every message."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[tuple[float, str]] = []  # (time.monotonic() on receipt, text)
        self._cond = threading.Condition()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.2)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._cond:
                self.messages.append((time.monotonic(), data.decode()))
                self._cond.notify_all()

    def kinds(self) -> list[str]:
        """Each message's first key (READY, RELOADING, WATCHDOG, STATUS, STOPPING)."""
        with self._cond:
            return [text.partition("=")[0] for _, text in self.messages]

    def times_of(self, kind: str) -> list[float]:
        with self._cond:
            return [t for t, text in self.messages if text.partition("=")[0] == kind]

    def wait_for(self, kind: str, count: int = 1, timeout: float = 30.0) -> float:
        """Block until `count` messages of `kind` arrived; return the last one's receipt time."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.times_of(kind)) >= count, timeout):
                raise AssertionError(f"no {count} x {kind} within {timeout}s: {self.kinds()}")
            return self.times_of(kind)[count - 1]

    def close(self) -> None:
        self._closed.set()
        self._sock.close()
        self._thread.join(timeout=5)


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    listener = NotifySocket(tmp_path / "notify.sock")
    yield listener
    listener.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode()


def metric(body: str, name: str) -> float:
    (value,) = [line.split()[1] for line in body.splitlines() if line.startswith(name + " ")]
    return float(value)


def queued_card(alert_id: str, channel: str = "#oncall") -> Notification:
    at = datetime.now(UTC)
    return Notification(
        alert_id=alert_id,
        kind=TransitionKind.FIRING,
        rule="high",
        series="workspace",
        severity=Severity.CRITICAL,
        at=at,
        since=at,
        count=9,
        condition="count > 5",
        channel=channel,
    )


def seed_outbox(state: Path, note: Notification, sql: str) -> None:
    """Queue `note` in a fresh state database, then change its row with `sql`."""
    path = Store.default_path(state)
    with Store.open(path) as store:
        store.apply(notifications=[note])
    with sqlite3.connect(path) as conn:
        conn.execute(sql)
    conn.close()


# -- supervision ----------------------------------------------------------------------


@pytest.mark.slow
def test_an_outbox_worker_crash_exits_70_and_logs_daemon_crashed(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """The state DB corrupted under the worker: daemon.crashed once, exit 70, no locals."""
    here = site(HIGH)
    slack.outage(True)
    with here.run() as daemon:
        daemon.wait_for("poll.ok")
        api.set_count(9)
        daemon.wait_for("notify.retry", attempt=1)
        # A schedule past datetime's range: reading it back raises OverflowError, an
        # exception nobody anticipates, in the worker's next round.
        with sqlite3.connect(Store.default_path(here.state), timeout=10) as conn:
            conn.execute("UPDATE outbox SET next_attempt_at = 100000000000000000")
        conn.close()
        assert daemon.wait(timeout=30) == 70
    (crashed,) = daemon.find("daemon.crashed")
    assert crashed["task"] == "outbox"
    assert crashed["error_type"] == "OverflowError"
    assert crashed["level"] == "critical"
    assert '"locals"' not in json.dumps(crashed)
    assert daemon.find("daemon.stopping")
    assert "Traceback" not in "".join(daemon.stderr_lines)
    assert "crashed" in "".join(daemon.stderr_lines)


@pytest.mark.slow
def test_a_poison_outbox_entry_is_dead_lettered_and_the_next_message_goes_out(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack
) -> None:
    """An unreadable payload and a card Slack calls invalid_blocks are dead-lettered once;
    the rejected card's resolution is not sent (there is no card to resolve)."""
    here = site(HIGH)
    # Written by a newer watchdog: a kind this one does not know.
    seed_outbox(
        here.state,
        queued_card("0123456789ab"),
        "UPDATE outbox SET payload = json_set(payload, '$.kind', 'teleported')",
    )
    slack.fail_next([Fail.error("invalid_blocks")])
    with here.run() as daemon:
        poison = daemon.wait_for("notify.failed", alert_id="0123456789ab")
        assert poison["error"].startswith("unreadable payload: ValueError")
        daemon.wait_for("poll.ok")
        api.set_count(9)
        rejected = daemon.wait_for("notify.failed", kind="firing", rule="high")
        assert rejected["attempt"] == 1
        assert rejected["error"].endswith("invalid_blocks")
        api.set_count(1)
        dropped = daemon.wait_for("notify.dropped", kind="resolved", rule="high")
        assert (dropped["alert_id"], dropped["reason"]) == (rejected["alert_id"], "never_announced")
        assert not daemon.find("notify.retry")
        assert daemon.stop() == 0
    assert slack.messages == []
    dead = here.status()["dead_letters"]
    assert {d["alert_id"] for d in dead} == {"0123456789ab", rejected["alert_id"]}


# -- systemd ----------------------------------------------------------------------------


@pytest.mark.slow
def test_pings_keep_coming_with_watchdog_usec_shorter_than_the_poll_interval(
    site: Callable[..., Site], notify: NotifySocket
) -> None:
    """WatchdogSec=3s, polls every 6s: WATCHDOG=1 every 1.5s between polls, and a warning."""
    here = site(HIGH, poll_interval="6s", stale_after="30s")
    here.env.update(NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="3000000")
    with here.run() as daemon:
        daemon.wait_for("poll.ok")
        first = time.monotonic()
        daemon.wait_for("poll.ok", count=2, timeout=20)
        second = time.monotonic()
        pings = [t for t in notify.times_of("WATCHDOG") if first <= t <= second]
        assert len(pings) >= 2, notify.kinds()  # today: at most one ping per poll
        (warning,) = daemon.find("systemd.watchdog_unworkable")
        assert "WatchdogSec=15s or more" in warning["problem"]
        assert not daemon.find("daemon.stalled")
        assert daemon.stop() == 0


@pytest.mark.slow
def test_ready_within_the_bound_against_an_api_that_never_answers(
    tmp_path: Path, slack: FakeSlack, notify: NotifySocket
) -> None:
    """50 agents, a black-holed API: READY in 10s, then SIGHUP gives RELOADING and READY."""
    agents = [(f"agent{i:02d}", f"id{i:02d}") for i in range(50)]
    with FakeElevenLabs(api_key=API_KEY, hang_seconds=120) as api:
        api.set_behaviour("hang", ALL)
        # A request may take half the interval: at 60s, the hung first cycle lasts 30s.
        config = write_rules(
            tmp_path / "rules.toml", HIGH, agents=agents, stale_after="2m", poll_interval="60s"
        )
        text = config.read_text().replace('timeout = "1s"', 'timeout = "30s"')
        config.write_text(text)
        env = daemon_env(tmp_path / "state", api_url=api.url, slack_api_url=slack.api_url)
        env["NOTIFY_SOCKET"] = str(notify.path)
        with DaemonProcess(["run", "--config", str(config)], env).start() as daemon:
            started = time.monotonic()
            ready = notify.wait_for("READY", timeout=READY_WITHIN_SECONDS + 10)
            assert ready - started <= READY_WITHIN_SECONDS + 5
            assert daemon.wait_for("daemon.ready")["first_cycle"] == "pending"
            assert not daemon.find("poll.ok")
            assert not daemon.find("poll.failed")

            daemon.send(signal.SIGHUP)
            notify.wait_for("READY", count=2)
            order = [k for k in notify.kinds() if k in ("READY", "RELOADING")]
            assert order == ["READY", "RELOADING", "READY"]

            assert daemon.stop(timeout=10) == 0
            assert "STOPPING" in notify.kinds()


@pytest.mark.slow
def test_metrics_and_healthz_of_a_real_run_say_why_the_outbox_is_old(
    site: Callable[..., Site], slack: FakeSlack, notify: NotifySocket
) -> None:
    """A card undelivered for an hour: age metric, /healthz 503 with the reason, pings go on."""
    here = site(HIGH)
    port = free_port()
    here.env.update(
        WATCHDOG_METRICS_ADDR=f"127.0.0.1:{port}",
        NOTIFY_SOCKET=str(notify.path),
        WATCHDOG_USEC="2000000",
    )
    hour_ago = int((datetime.now(UTC) - timedelta(hours=1)).timestamp() * 1000)
    seed_outbox(
        here.state, queued_card("fedcba987654"), f"UPDATE outbox SET created_at = {hour_ago}"
    )
    slack.outage(True)
    with here.run() as daemon:
        daemon.wait_for("notify.retry", alert_id="fedcba987654")
        status, body = get(port, "/metrics")
        assert status == 200
        assert metric(body, "watchdog_outbox_oldest_age_seconds") >= 3600
        status, body = get(port, "/healthz")
        assert status == 503
        assert "unhealthy: outbox: the oldest undelivered notification was queued 1h" in body
        assert "last delivery error: chat.postMessage to #oncall: Slack failed (HTTP 503)" in body
        pinged = len(notify.times_of("WATCHDOG"))
        notify.wait_for("WATCHDOG", count=pinged + 2)  # a restart would not help: keep pinging

        slack.outage(False)
        daemon.wait_for("notify.sent", alert_id="fedcba987654", timeout=30)
        assert get(port, "/healthz") == (200, "ok\n")
        assert metric(get(port, "/metrics")[1], "watchdog_outbox_oldest_age_seconds") == 0
        assert daemon.stop() == 0


# -- WATCHDOG_USEC checks ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("usec", "says"),
    [
        ("3000000", "set WatchdogSec=15s or more"),
        ("soon", "not a positive number of microseconds"),
        ("0", "not a positive number of microseconds"),
    ],
)
def test_unworkable_watchdog_usec_is_named_with_the_fix(usec: str, says: str) -> None:
    """A WATCHDOG_USEC too short or not a number is a problem that says what to change."""
    (problem,) = watchdog_sec_problems(usec)
    assert says in problem


def test_a_long_watchdog_usec_works_whatever_the_poll_interval() -> None:
    """WatchdogSec=20s is fine even with a 60s poll interval: pings follow health."""
    assert watchdog_sec_problems("20000000") == []


def test_check_reads_watchdog_usec(site: Callable[..., Site]) -> None:
    """`watchdog check` refuses a too-short WATCHDOG_USEC and explains a workable one."""
    here = site(HIGH, poll_interval="60s", stale_after="2m")
    here.env["WATCHDOG_USEC"] = "3000000"
    short = here.cli("check", "--config", str(here.config))
    assert short.returncode == 1
    assert "environment: WATCHDOG_USEC=3000000 (WatchdogSec=3s)" in short.stderr
    assert "set WatchdogSec=15s or more" in short.stderr
    here.env["WATCHDOG_USEC"] = "20000000"
    fine = here.cli("check", "--config", str(here.config))
    assert fine.returncode == 0, fine.stderr
    assert "systemd watchdog: WatchdogSec=20s" in fine.stdout
    assert "ping every 10s while polls, ticker and outbox worker are alive" in fine.stdout


# -- a hung delivery round ------------------------------------------------------------------


class SkippingClock(SystemClock):
    """The real clocks, with monotonic time that a test can move ahead at once."""

    def __init__(self) -> None:
        self.skipped = 0.0

    def monotonic(self) -> float:
        return super().monotonic() + self.skipped


class HangingNotifier:
    """A notifier whose call never returns until released (a Slack call stuck in DNS)."""

    name = "hanging"

    def __init__(self) -> None:
        self.called = threading.Event()
        self.release = threading.Event()

    def deliver(
        self,
        note: Notification,
        original: MessageRef | None,
        *,
        in_doubt_since: datetime | None = None,
    ) -> MessageRef | None:
        self.called.set()
        self.release.wait(60)
        return None


class FixedSource:
    """Every poll answers 9 at once."""

    async def poll(self, series: str, agent_id: str | None) -> Sample:
        return Sample(series=series, at=datetime.now(UTC), count=9)


def test_a_hung_delivery_round_withholds_the_ping_until_it_ends(
    tmp_path: Path, notify: NotifySocket
) -> None:
    """A delivery round older than WORKER_ROUND_LIMIT stalls the daemon: no WATCHDOG=1."""
    config = load_config(write_rules(tmp_path / "rules.toml", HIGH, stale_after="10m"))
    notifier = HangingNotifier()
    clock = SkippingClock()
    sd = SdNotifier.from_env({"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"})
    audit = (tmp_path / "audit.log").open("w", encoding="utf-8")
    configure_logging(stream=audit)

    async def scenario(store: Store) -> tuple[str, ...]:
        daemon = Daemon(
            config=config, source=FixedSource(), store=store, notifier=notifier, clock=clock, sd=sd
        )
        task = asyncio.create_task(daemon.run())
        await asyncio.to_thread(notifier.called.wait, 10)
        await asyncio.to_thread(notify.wait_for, "WATCHDOG", len(notify.times_of("WATCHDOG")) + 1)
        clock.skipped += WORKER_ROUND_LIMIT + 1
        # Polls and ticks beat again within a second; the round stays as old as it is.
        deadline = time.monotonic() + 10
        while len(stalled := daemon.health().stalled) != 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        quiet_from = time.monotonic() + 0.2  # a ping already on its way may still land
        await asyncio.sleep(1.0)
        assert not [t for t in notify.times_of("WATCHDOG") if t > quiet_from]
        notifier.release.set()
        await asyncio.to_thread(notify.wait_for, "WATCHDOG", len(notify.times_of("WATCHDOG")) + 1)
        daemon.request_stop()
        await asyncio.wait_for(task, 10)
        return stalled

    try:
        with Store.open(Store.default_path(tmp_path / "state")) as store:
            (reason,) = asyncio.run(scenario(store))
    finally:
        notifier.release.set()
        reset_logging()
        audit.close()
    assert reason.startswith("outbox worker: one delivery round running for 2m")
