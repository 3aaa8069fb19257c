"""Prometheus metrics and the /healthz probe over a real loopback listener."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from watchdog.errors import ConfigError, PollFailure, SourceError
from watchdog.metrics import Metrics, MetricsServer, parse_listen_addr, serve
from watchdog.model import Sample
from watchdog.notify.coalesce import Reason

AT = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


class Health:
    """A switchable health probe: the problems it reports (none while healthy)."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def __call__(self) -> list[str]:
        return self.problems


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def health() -> Health:
    return Health()


@pytest.fixture
def server(metrics: Metrics, health: Health) -> Iterator[MetricsServer]:
    with serve(("127.0.0.1", 0), health, registry=metrics.registry) as running:
        yield running


def get(server: MetricsServer, path: str) -> tuple[int, str, str]:
    url = f"http://127.0.0.1:{server.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers["Content-Type"], error.read().decode()


def test_metrics_show_names_and_labels(metrics: Metrics, server: MetricsServer) -> None:
    """After updates, /metrics carries every metric with its series, outcome and rule labels."""
    metrics.poll_ok(Sample(series="workspace", at=AT, count=17), 0.12)
    metrics.poll_ok(Sample(series="agent_abc", at=AT, count=2), 0.3)
    metrics.poll_failed(SourceError("agent_abc", PollFailure.RATE_LIMITED, "429"), 0.05)
    metrics.set_alerts_firing({"too-many": 1, "no-data": 2})
    metrics.set_outbox_depth(3)
    metrics.notification("sent")
    metrics.notification("retry")
    metrics.delivered_after(42.0)
    metrics.coalesced(Reason.FIRED_AND_RESOLVED)
    metrics.cycle_completed(1_750_000_000.0)

    status, content_type, body = get(server, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=")
    for line in (
        'watchdog_live_conversations{series="workspace"} 17.0',
        'watchdog_live_conversations{series="agent_abc"} 2.0',
        'watchdog_polls_total{outcome="ok",series="workspace"} 1.0',
        'watchdog_polls_total{outcome="rate_limited",series="agent_abc"} 1.0',
        "watchdog_poll_duration_seconds_count 3.0",
        'watchdog_poll_duration_seconds_bucket{le="0.1"} 1.0',
        'watchdog_alerts_firing{rule="too-many"} 1.0',
        'watchdog_alerts_firing{rule="no-data"} 2.0',
        "watchdog_outbox_depth 3.0",
        'watchdog_notifications_total{outcome="sent"} 1.0',
        'watchdog_notifications_total{outcome="retry"} 1.0',
        'watchdog_notifications_total{outcome="failed"} 0.0',
        'watchdog_delivery_lag_seconds_bucket{le="30.0"} 0.0',
        'watchdog_delivery_lag_seconds_bucket{le="60.0"} 1.0',
        'watchdog_notifications_coalesced_total{reason="fired_and_resolved"} 1.0',
        'watchdog_notifications_coalesced_total{reason="superseded_repeat"} 0.0',
        'watchdog_notifications_coalesced_total{reason="never_announced"} 0.0',
        "watchdog_last_cycle_timestamp_seconds 1.75e+09",
    ):
        assert line in body.splitlines(), line
    assert "_created" not in body


def test_metrics_registries_are_isolated() -> None:
    """Two Metrics instances do not share values (no process-global registry)."""
    first, second = Metrics(), Metrics()
    first.set_outbox_depth(5)
    assert first.registry.get_sample_value("watchdog_outbox_depth") == 5.0
    assert second.registry.get_sample_value("watchdog_outbox_depth") == 0.0


def test_dropped_rules_and_series_disappear(metrics: Metrics) -> None:
    """Rules no longer firing-counted and forgotten series leave no stale label sets."""
    metrics.set_alerts_firing({"a": 1, "b": 1})
    metrics.set_alerts_firing({"b": 0})
    metrics.poll_ok(Sample(series="agent_x", at=AT, count=1), 0.1)
    metrics.poll_failed(SourceError("agent_x", PollFailure.UNREACHABLE, "timeout"), 0.1)
    metrics.forget_series(["agent_x", "never-seen"])

    registry = metrics.registry
    assert registry.get_sample_value("watchdog_alerts_firing", {"rule": "a"}) is None
    assert registry.get_sample_value("watchdog_alerts_firing", {"rule": "b"}) == 0.0
    assert registry.get_sample_value("watchdog_live_conversations", {"series": "agent_x"}) is None
    labels = {"series": "agent_x", "outcome": "unreachable"}
    assert registry.get_sample_value("watchdog_polls_total", labels) is None


def test_unknown_notification_outcome_rejected(metrics: Metrics) -> None:
    """Only sent, retry and failed are notification outcomes."""
    with pytest.raises(ValueError, match="unknown notification outcome"):
        metrics.notification("lost")  # type: ignore[arg-type]


def test_healthz_follows_probe(server: MetricsServer, health: Health) -> None:
    """/healthz answers 200 "ok" without problems, else 503 with one line per problem."""
    assert get(server, "/healthz")[0::2] == (200, "ok\n")
    health.problems = ["ticker: no tick for 12s", "outbox: old"]
    status, _, body = get(server, "/healthz")
    assert status == 503
    assert body == "unhealthy: ticker: no tick for 12s\nunhealthy: outbox: old\n"
    health.problems = []
    assert get(server, "/healthz")[0] == 200


def test_healthz_unhealthy_when_probe_raises(metrics: Metrics) -> None:
    """A probe that raises reports 503 instead of breaking the listener."""

    def broken() -> list[str]:
        raise RuntimeError("probe bug")

    with serve(("127.0.0.1", 0), broken, registry=metrics.registry) as running:
        assert get(running, "/healthz")[0] == 503
        assert get(running, "/metrics")[0] == 200


@pytest.mark.parametrize("path", ["/", "/metricsx", "/healthz/extra", "/favicon.ico"])
def test_other_paths_are_404(server: MetricsServer, path: str) -> None:
    """Anything but /metrics and /healthz is 404."""
    assert get(server, path)[0] == 404


def test_ipv6_loopback_listener(metrics: Metrics, health: Health) -> None:
    """An IPv6 address binds an IPv6 listener."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6 support in this Python")
    try:
        running = serve(("::1", 0), health, registry=metrics.registry)
    except ConfigError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    with running:
        assert running.host == "::1"
        url = f"http://[::1]:{running.port}/healthz"
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200


def test_port_in_use_is_a_config_error(server: MetricsServer, metrics: Metrics) -> None:
    """Binding a port that is taken raises ConfigError naming the address."""
    with pytest.raises(ConfigError, match=rf"metrics listener 127\.0\.0\.1:{server.port}"):
        serve(("127.0.0.1", server.port), Health(), registry=metrics.registry)


def test_close_stops_listening(metrics: Metrics) -> None:
    """After close() the port refuses connections."""
    running = serve(("127.0.0.1", 0), Health(), registry=metrics.registry)
    port = running.port
    running.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("9108", ("127.0.0.1", 9108)),
        (":9108", ("127.0.0.1", 9108)),
        (" 9108 ", ("127.0.0.1", 9108)),
        ("127.0.0.1:9108", ("127.0.0.1", 9108)),
        ("0.0.0.0:9108", ("0.0.0.0", 9108)),
        ("[::1]:9108", ("::1", 9108)),
        ("[::]:9108", ("::", 9108)),
        ("localhost:9108", ("127.0.0.1", 9108)),
        ("10.1.2.3:65535", ("10.1.2.3", 65535)),
    ],
)
def test_parse_listen_addr(text: str, expected: tuple[str, int]) -> None:
    """Bare ports, :port, IPv4 and bracketed IPv6 addresses parse; the host defaults to loopback."""
    assert parse_listen_addr(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected \\[HOST:\\]PORT"),
        ("abc", "expected \\[HOST:\\]PORT"),
        ("127.0.0.1", "expected \\[HOST:\\]PORT"),
        ("127.0.0.1:", "expected \\[HOST:\\]PORT"),
        ("127.0.0.1:0", "port from 1 to 65535"),
        ("127.0.0.1:65536", "port from 1 to 65535"),
        ("127.0.0.1:-1", "port from 1 to 65535"),
        ("127.0.0.1:+80", "port from 1 to 65535"),
        ("127.0.0.1:９１０８", "port from 1 to 65535"),
        ("::1:9108", "IPv6 address in brackets"),
        ("[::1]", "expected \\[IPV6\\]:PORT"),
        ("[::1]:", "port from 1 to 65535"),
        ("[::1]9108", "expected \\[IPV6\\]:PORT"),
        ("[127.0.0.1]:9108", "brackets are for IPv6 only"),
        ("example.com:9108", "'example.com' is not an IP address"),
        ("256.1.1.1:9108", "not an IP address"),
    ],
)
def test_parse_listen_addr_rejects(text: str, message: str) -> None:
    """Malformed addresses raise ValueError quoting the input and saying what is expected."""
    with pytest.raises(ValueError, match=message):
        parse_listen_addr(text)
