"""The delivery-lag record (the last lag and the worst of the hour), and a real run reporting it."""

from __future__ import annotations

import dataclasses
import re
import socket
import sqlite3
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fakes.elevenlabs import FakeElevenLabs
from tests.fakes.slack import FakeSlack
from tests.harness import API_KEY, SLACK_TOKEN, Site, daemon_env, rule, write_rules
from watchdog.delivery_lag import DeliveryLag
from watchdog.model import Notification, Severity, TransitionKind
from watchdog.store import Store

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def test_last_and_worst_of_the_hour() -> None:
    """`last` is the newest send; `worst` the largest within the past hour, to the minute."""
    lag = DeliveryLag()
    for minutes, seconds in ((0, 90.0), (10, 4.0), (30, 12.0), (31, 2.0)):
        lag = lag.observe(seconds, T0 + timedelta(minutes=minutes))
    assert (lag.last, lag.last_at) == (2.0, T0 + timedelta(minutes=31))
    assert lag.worst(T0 + timedelta(minutes=40)) == 90.0
    assert lag.worst(T0 + timedelta(minutes=61)) == 12.0  # the 90 s send is over an hour old
    assert lag.worst(T0 + timedelta(hours=3)) is None


def test_the_record_stays_small() -> None:
    """A day of sends keeps at most one maximum per minute of the last hour."""
    lag = DeliveryLag()
    for second in range(0, 24 * 3600, 7):
        lag = lag.observe(1.0, T0 + timedelta(seconds=second))
    assert len(lag.minutes) <= 60


@given(
    st.lists(
        st.tuples(st.integers(0, 10_000), st.floats(0, 1e6, allow_nan=False)),
        min_size=1,
        max_size=30,
    )
)
def test_json_round_trip(sends: list[tuple[int, float]]) -> None:
    """What the worker stores is what `status` reads back."""
    lag = DeliveryLag()
    for second, seconds in sorted(sends):
        lag = lag.observe(seconds, T0 + timedelta(seconds=second))
    assert DeliveryLag.from_json(lag.to_json()) == lag


@pytest.mark.parametrize(
    "stored", [None, "", "not json", "[]", "5", '{"last": 1}', '{"last":"x","last_at":null}']
)
def test_an_absent_or_damaged_record_reads_as_empty(stored: str | None) -> None:
    """A statistic must never stop delivery or `status`: damage reads as no record."""
    assert DeliveryLag.from_json(stored) == DeliveryLag()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _metric(body: str, name: str) -> float:
    (value,) = [line.split()[1] for line in body.splitlines() if line.startswith(name + " ")]
    return float(value)


@pytest.mark.slow
def test_a_real_run_folds_a_stale_episode_and_reports_the_lag(tmp_path: Path) -> None:
    """An hour-old firing and its resolution: one card, the metrics and `status` say how late."""
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    firing = Notification(
        alert_id="0123456789ab",
        kind=TransitionKind.FIRING,
        rule="high",
        series="workspace",
        severity=Severity.CRITICAL,
        at=hour_ago,
        since=hour_ago,
        count=9,
        condition="count > 5",
        channel="#oncall",
    )
    resolved = dataclasses.replace(firing, kind=TransitionKind.RESOLVED, count=2)
    state = tmp_path / "state"
    path = Store.default_path(state)
    with Store.open(path) as store:
        store.apply(notifications=[firing, resolved])
    with sqlite3.connect(path) as conn:  # both queued an hour ago, during an outage
        conn.execute(f"UPDATE outbox SET created_at = {int(hour_ago.timestamp() * 1000)}")
    conn.close()
    port = _free_port()
    with FakeElevenLabs(api_key=API_KEY, count=1) as api, FakeSlack(token=SLACK_TOKEN) as slack:
        env = daemon_env(state, api_url=api.url, slack_api_url=slack.api_url)
        env["WATCHDOG_METRICS_ADDR"] = f"127.0.0.1:{port}"
        site = Site(write_rules(tmp_path / "rules.toml", rule("high", above=5)), state, env, {})
        with site.run() as daemon:
            folded = daemon.wait_for("notify.folded", alert_id=firing.alert_id)
            daemon.wait_for("notify.sent", alert_id=firing.alert_id)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
                body = answer.read().decode()
            assert daemon.stop() == 0
        (card,) = slack.messages
        status = site.cli("status").stdout
    assert folded["reason"] == "fired_and_resolved"
    assert card.text.startswith("✅ FIRED AND RESOLVED [CRITICAL] high on workspace")
    assert _metric(body, 'watchdog_notifications_coalesced_total{reason="fired_and_resolved"}') == 1
    assert _metric(body, "watchdog_delivery_lag_seconds_count") == 1
    assert _metric(body, 'watchdog_delivery_lag_seconds_bucket{le="3600.0"}') == 0
    assert re.search(r"^delivery lag: last 1h( \d+s)? \(sent \d+m?s ago\), worst 1h", status, re.M)
