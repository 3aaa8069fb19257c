"""Optional Prometheus metrics and a `/healthz` probe on one small HTTP listener.

`Metrics` keeps its own `CollectorRegistry` (never the process-global one), so every
instance, and every test, starts empty. Label cardinality stays bounded at 1,000 agents:
per-series labels only on the live count and the poll counter, none on the histogram.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import urlsplit

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from watchdog.errors import ConfigError, PollFailure, SourceError
from watchdog.model import Sample
from watchdog.notify.coalesce import Reason

__all__ = [
    "DEFAULT_HOST",
    "Metrics",
    "MetricsServer",
    "NotificationOutcome",
    "parse_listen_addr",
    "serve",
]

DEFAULT_HOST = "127.0.0.1"
"""Where the listener binds unless told otherwise: metrics are not for the internet."""

NotificationOutcome = Literal["sent", "retry", "failed"]

_NOTIFICATION_OUTCOMES: tuple[NotificationOutcome, ...] = ("sent", "retry", "failed")
_POLL_OUTCOMES = ("ok", *(failure.name.lower() for failure in PollFailure))
_POLL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_LAG_BUCKETS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)
"""Delivery lag: seconds are normal at Slack's pace, a minute is the promise, more is an outage."""
_COALESCE_REASONS = (
    Reason.FIRED_AND_RESOLVED,
    Reason.ANNOTATED,
    Reason.SUPERSEDED_REPEAT,
    Reason.SUPERSEDED_ANNOTATION,
    Reason.NEVER_ANNOUNCED,
    Reason.SUPERSEDED_GROUP_CARD,
)


def _poll_outcome(failure: PollFailure | None) -> str:
    """The `outcome` label of a poll: "ok", or the failure as a name ("rate_limited")."""
    return "ok" if failure is None else failure.name.lower()


class Metrics:
    """The watchdog's metrics; the daemon updates them, `serve` exposes them."""

    def __init__(self) -> None:
        # `_created` series would double the poll counter's 1,000s of series for nothing.
        # (A process-wide switch, harmless here: this is the only registry we export.)
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        self.live_conversations = Gauge(
            "watchdog_live_conversations",
            "Live conversations at the last good poll of the series.",
            ["series"],
            registry=self.registry,
        )
        self.polls = Counter(
            "watchdog_polls",
            "Polls of the ElevenLabs API by series and outcome (ok or the failure reason).",
            ["series", "outcome"],
            registry=self.registry,
        )
        self.poll_duration = Histogram(
            "watchdog_poll_duration_seconds",
            "Time taken by one poll of one series, good or failed.",
            buckets=_POLL_BUCKETS,
            registry=self.registry,
        )
        self.polls_late = Counter(
            "watchdog_polls_late",
            "Polls skipped because the series' previous poll was still running (not failures).",
            registry=self.registry,
        )
        self.alerts_firing = Gauge(
            "watchdog_alerts_firing",
            "Alert instances currently firing, by rule.",
            ["rule"],
            registry=self.registry,
        )
        self.outbox_depth = Gauge(
            "watchdog_outbox_depth",
            "Notifications waiting in the outbox for delivery.",
            registry=self.registry,
        )
        self.notifications = Counter(
            "watchdog_notifications",
            "Slack delivery attempts by outcome (sent, retry, failed).",
            ["outcome"],
            registry=self.registry,
        )
        self.outbox_oldest_age = Gauge(
            "watchdog_outbox_oldest_age_seconds",
            "Age of the oldest undelivered notification (0 when the outbox is empty).",
            registry=self.registry,
        )
        self.delivery_lag = Histogram(
            "watchdog_delivery_lag_seconds",
            "Time from queueing a notification to the start of the attempt Slack accepted.",
            buckets=_LAG_BUCKETS,
            registry=self.registry,
        )
        self.notifications_coalesced = Counter(
            "watchdog_notifications_coalesced",
            "Queued notifications folded or dropped before sending, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.leader = Gauge(
            "watchdog_leader",
            "1 while this daemon leads (polls, evaluates, delivers), 0 while it stands by.",
            registry=self.registry,
        )
        self.last_cycle = Gauge(
            "watchdog_last_cycle_timestamp_seconds",
            "Unix time at which the last poll cycle completed.",
            registry=self.registry,
        )
        for outcome in _NOTIFICATION_OUTCOMES:
            self.notifications.labels(outcome)  # exported as 0 before the first delivery
        for reason in _COALESCE_REASONS:
            self.notifications_coalesced.labels(reason.value)
        self._rules: set[str] = set()

    def poll_ok(self, sample: Sample, duration: float) -> None:
        """A good poll of `sample.series` that took `duration` seconds."""
        self.live_conversations.labels(sample.series).set(sample.count)
        self.polls.labels(sample.series, "ok").inc()
        self.poll_duration.observe(duration)

    def poll_failed(self, error: SourceError, duration: float) -> None:
        """A failed poll; the live count keeps its last good value."""
        self.polls.labels(error.series, _poll_outcome(error.failure)).inc()
        self.poll_duration.observe(duration)

    def poll_late(self) -> None:
        """A series was due while its previous poll still ran, and was skipped."""
        self.polls_late.inc()

    def forget_series(self, series: Iterable[str]) -> None:
        """Drop the label sets of series no longer watched (after a reload)."""
        for name in series:
            for collector, labelsets in (
                (self.live_conversations, [(name,)]),
                (self.polls, [(name, outcome) for outcome in _POLL_OUTCOMES]),
            ):
                for labels in labelsets:
                    with contextlib.suppress(KeyError):
                        collector.remove(*labels)

    def set_alerts_firing(self, by_rule: Mapping[str, int]) -> None:
        """The number of firing instances per rule; rules left out are dropped."""
        for rule in self._rules - by_rule.keys():
            self.alerts_firing.remove(rule)
        for rule, count in by_rule.items():
            self.alerts_firing.labels(rule).set(count)
        self._rules = set(by_rule)

    def set_outbox_depth(self, depth: int) -> None:
        self.outbox_depth.set(depth)

    def track_outbox_age(self, seconds: Callable[[], float]) -> None:
        """Read the oldest undelivered notification's age from `seconds()` at each scrape."""
        self.outbox_oldest_age.set_function(seconds)

    def notification(self, outcome: NotificationOutcome) -> None:
        """Count one delivery attempt."""
        if outcome not in _NOTIFICATION_OUTCOMES:
            raise ValueError(f"unknown notification outcome {outcome!r}")
        self.notifications.labels(outcome).inc()

    def delivered_after(self, seconds: float) -> None:
        """One notification was sent `seconds` after it was queued."""
        self.delivery_lag.observe(seconds)

    def coalesced(self, reason: Reason) -> None:
        """One queued notification was folded or dropped for `reason`."""
        self.notifications_coalesced.labels(reason.value).inc()

    def set_leader(self, leading: bool) -> None:
        self.leader.set(1 if leading else 0)

    def cycle_completed(self, at_unix: float) -> None:
        """A poll cycle completed at `at_unix` (the tick's wall-clock time)."""
        self.last_cycle.set(at_unix)


_PORT = re.compile(r"[0-9]{1,5}")


def parse_listen_addr(text: str) -> tuple[str, int]:
    """Parse `9108`, `:9108`, `127.0.0.1:9108`, `[::1]:9108` or `0.0.0.0:9108`.

    The host defaults to loopback; it must be an IP address (or `localhost`).
    """
    value = text.strip()
    if value.startswith("["):
        bracketed = re.fullmatch(r"\[([^\]]*)\]:([^:]*)", value)
        if bracketed is None:
            raise ValueError(
                f"invalid listen address {text!r}: expected [IPV6]:PORT, e.g. [::1]:9108"
            )
        host, port = bracketed.groups()
        if ":" not in host:
            raise ValueError(f"invalid listen address {text!r}: brackets are for IPv6 only")
    else:
        host, _, port = value.rpartition(":")
        if ":" in host:
            raise ValueError(
                f"invalid listen address {text!r}: put an IPv6 address in brackets, e.g. [::1]:9108"
            )
    if not _PORT.fullmatch(port) or not 1 <= int(port) <= 65535:
        raise ValueError(
            f"invalid listen address {text!r}: expected [HOST:]PORT with a port from 1 to 65535,"
            " e.g. 9108 or 127.0.0.1:9108"
        )
    if host in ("", "localhost"):
        return DEFAULT_HOST, int(port)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"invalid listen address {text!r}: {host!r} is not an IP address"
        ) from None
    return str(address), int(port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsServer:
    """A running listener; `close()` stops it and joins its thread."""

    def __init__(self, server: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked for)."""
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def serve(
    addr: tuple[str, int],
    problems: Callable[[], Sequence[str]],
    *,
    registry: CollectorRegistry,
    role: Callable[[], str | None] | None = None,
) -> MetricsServer:
    """Serve `/metrics` from `registry` and `/healthz`.

    `/healthz` answers 200 "ok" while `problems()` is empty (`ok: <role>` when `role()`
    names one, such as "standby, leader: watchdog db2 pid 812"), else 503 with one line
    per problem, so whoever is paged reads why.

    Raises ConfigError when the address cannot be bound (in use, not local, ...).
    """
    host, port = addr

    class Handler(BaseHTTPRequestHandler):
        timeout = 10  # a stalled client must not pin a thread forever
        server_version = "watchdog"
        sys_version = ""

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if path == "/metrics":
                self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                try:
                    found = list(problems())
                except Exception as exc:  # a broken probe means unhealthy, not a dead listener
                    found = [f"health probe failed: {type(exc).__name__}"]
                if not found:
                    named = role() if role is not None else None
                    self._reply(200, f"ok: {named}\n".encode() if named else b"ok\n")
                else:
                    lines = "".join(f"unhealthy: {problem}\n" for problem in found)
                    self._reply(503, lines.encode())
            else:
                self._reply(404, b"not found\n")

        def _reply(
            self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8"
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Silence per-request lines on stderr; scrapes are not audit events."""

    server_class = _Server6 if ":" in host else _Server
    try:
        server = server_class((host, port), Handler)
    except OSError as exc:
        raise ConfigError([f"metrics listener {host}:{port}: {exc.strerror or exc}"]) from exc
    thread = threading.Thread(
        target=server.serve_forever, args=(0.1,), name="watchdog-metrics", daemon=True
    )
    thread.start()
    return MetricsServer(server, thread)
