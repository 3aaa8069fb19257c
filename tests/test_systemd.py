"""sd_notify over a real datagram socket, and the liveness-gated watchdog ping."""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from watchdog.audit import configure_logging, reset_logging
from watchdog.systemd import LivenessPinger, SdNotifier


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound AF_UNIX datagram socket standing in for systemd's, and its $NOTIFY_SOCKET."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2.0)
    yield sock, str(path)
    sock.close()


def received(sock: socket.socket) -> bytes:
    return sock.recv(4096)


def nothing_pending(sock: socket.socket) -> bool:
    """Whether no datagram is queued; sends are synchronous, so there is nothing to wait for."""
    sock.setblocking(False)
    try:
        sock.recv(4096)
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(2.0)
    return False


def test_messages_are_the_exact_datagrams(notify_socket: tuple[socket.socket, str]) -> None:
    """ready, status, reloading, stopping and watchdog send systemd's exact KEY=value text."""
    sock, path = notify_socket
    notifier = SdNotifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "60000000"})
    assert notifier.enabled

    notifier.ready()
    assert received(sock) == b"READY=1"
    notifier.status("polling 3 series\nall quiet\r\n  ")
    assert received(sock) == b"STATUS=polling 3 series all quiet"
    notifier.reloading(123456789)
    assert received(sock) == b"RELOADING=1\nMONOTONIC_USEC=123456789"
    notifier.watchdog()
    assert received(sock) == b"WATCHDOG=1"
    notifier.stopping()
    assert received(sock) == b"STOPPING=1"
    notifier.close()
    assert nothing_pending(sock)


def test_reloading_defaults_to_clock_monotonic(notify_socket: tuple[socket.socket, str]) -> None:
    """reloading() without an argument sends CLOCK_MONOTONIC now, in microseconds."""
    sock, path = notify_socket
    notifier = SdNotifier.from_env({"NOTIFY_SOCKET": path})
    low = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    high = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = received(sock).split(b"\n")
    assert first == b"RELOADING=1"
    key, _, value = second.partition(b"=")
    assert key == b"MONOTONIC_USEC"
    assert low <= int(value) <= high


def test_abstract_socket_address() -> None:
    """A NOTIFY_SOCKET starting with @ names an abstract socket (leading NUL byte)."""
    name = f"watchdog-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2.0)
    try:
        notifier = SdNotifier.from_env({"NOTIFY_SOCKET": f"@{name}"})
        notifier.ready()
        assert received(sock) == b"READY=1"
    finally:
        sock.close()


def open_descriptors() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_noop_without_notify_socket() -> None:
    """Without NOTIFY_SOCKET no call opens a socket or logs a word, and no watchdog is reported."""
    notifier = SdNotifier.from_env({"WATCHDOG_USEC": "60000000"})
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    before = open_descriptors()
    with capture_logs() as logs:
        notifier.ready()
        notifier.status("x")
        notifier.reloading()
        notifier.watchdog()
        notifier.stopping()
    assert logs == []
    assert open_descriptors() <= before


def test_watchdog_interval_is_half_of_watchdog_usec(
    notify_socket: tuple[socket.socket, str],
) -> None:
    """WATCHDOG_USEC=60s gives a 30 s ping interval when WATCHDOG_PID is ours or unset."""
    _, path = notify_socket
    ours = SdNotifier.from_env(
        {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}
    )
    unset = SdNotifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "60000000"})
    assert ours.watchdog_interval == 30.0
    assert unset.watchdog_interval == 30.0


@pytest.mark.parametrize("usec", ["", "0", "-5", "soon"])
def test_watchdog_off_without_a_valid_watchdog_usec(
    notify_socket: tuple[socket.socket, str], usec: str
) -> None:
    """A missing, zero, negative or garbled WATCHDOG_USEC means no watchdog and no pings."""
    sock, path = notify_socket
    notifier = SdNotifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": usec})
    assert notifier.watchdog_interval is None
    notifier.watchdog()
    assert nothing_pending(sock)


def test_watchdog_pid_mismatch_disables_pings(notify_socket: tuple[socket.socket, str]) -> None:
    """A WATCHDOG_PID naming another process disables the watchdog but not other messages."""
    sock, path = notify_socket
    notifier = SdNotifier.from_env(
        {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    )
    assert notifier.watchdog_interval is None
    notifier.watchdog()
    assert nothing_pending(sock)
    notifier.ready()
    assert received(sock) == b"READY=1"


def test_vanished_socket_is_swallowed(tmp_path: Path) -> None:
    """Sending to a socket that no longer exists neither raises nor stops later sends."""
    path = tmp_path / "gone"
    notifier = SdNotifier.from_env({"NOTIFY_SOCKET": str(path)})
    notifier.ready()
    notifier.status("still alive")

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2.0)
    try:
        notifier.status("back")
        assert received(sock) == b"STATUS=back"
    finally:
        sock.close()


class ManualTime:
    """A monotonic clock and a sleep that only return when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.naps: list[float] = []
        self._permits: asyncio.Queue[None] = asyncio.Queue()
        self._asleep = asyncio.Event()

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.naps.append(seconds)
        self._asleep.set()
        await self._permits.get()
        self.now += seconds

    async def advance(self) -> None:
        """End the pinger's current nap and wait until it starts the next one."""
        await asyncio.wait_for(self._asleep.wait(), 2)
        self._asleep.clear()
        self._permits.put_nowait(None)
        await asyncio.wait_for(self._asleep.wait(), 2)


class Stalls:
    """A switchable `stalled()` probe for the pinger: the reasons it reports."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def __call__(self) -> list[str]:
        return self.reasons


def test_pinger_pings_on_time_while_alive_and_withholds_while_stalled(
    notify_socket: tuple[socket.socket, str],
) -> None:
    """Pings every half WATCHDOG_USEC while alive (no progress needed), none while stalled."""
    sock, path = notify_socket
    notifier = SdNotifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000000"})

    async def scenario() -> list[float]:
        clock = ManualTime()
        stalls = Stalls()
        pinger = LivenessPinger(
            notifier, stalled=stalls, monotonic=clock.monotonic, sleep=clock.sleep
        )
        stop = asyncio.Event()
        task = asyncio.create_task(pinger.run(stop))

        for _ in range(3):  # alive: a ping per interval, whatever the polls do
            await clock.advance()
            assert received(sock) == b"WATCHDOG=1"

        stalls.reasons = ["ticker: no tick for 12s"]
        for _ in range(3):  # stalled: no ping
            await clock.advance()
            assert nothing_pending(sock)

        stalls.reasons = []  # recovered before systemd gave up
        await clock.advance()
        assert received(sock) == b"WATCHDOG=1"

        stop.set()
        await asyncio.wait_for(task, 2)
        return clock.naps

    assert asyncio.run(scenario()) == [10.0] * 8
    assert nothing_pending(sock)


def test_pinger_returns_without_watchdog() -> None:
    """Outside systemd (no watchdog) run() returns at once instead of sleeping forever."""

    async def scenario() -> list[float]:
        clock = ManualTime()
        pinger = LivenessPinger(
            SdNotifier.from_env({}), stalled=Stalls(), monotonic=clock.monotonic, sleep=clock.sleep
        )
        await asyncio.wait_for(pinger.run(asyncio.Event()), 2)
        return clock.naps

    assert asyncio.run(scenario()) == []


def test_pinger_stops_mid_nap(notify_socket: tuple[socket.socket, str]) -> None:
    """Setting stop ends run() promptly, without waiting out the nap or pinging."""
    sock, path = notify_socket
    notifier = SdNotifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000000"})

    async def scenario() -> None:
        clock = ManualTime()
        pinger = LivenessPinger(
            notifier, stalled=Stalls(), monotonic=clock.monotonic, sleep=clock.sleep
        )
        stop = asyncio.Event()
        task = asyncio.create_task(pinger.run(stop))
        await asyncio.sleep(0)
        stop.set()
        await asyncio.wait_for(task, 2)

    asyncio.run(scenario())
    assert nothing_pending(sock)


def test_send_failure_is_logged_once(tmp_path: Path) -> None:
    """A vanished socket is logged on the first failure only, and again after a recovery."""
    out = io.StringIO()
    configure_logging(stream=out)
    try:
        path = tmp_path / "gone"
        notifier = SdNotifier.from_env({"NOTIFY_SOCKET": str(path)})
        notifier.ready()
        notifier.status("one")
        notifier.status("two")
        events = [json.loads(line) for line in out.getvalue().splitlines()]
        assert [e["event"] for e in events] == ["systemd.notify_failed"]
        assert events[0]["message"] == "READY"

        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(path))
        notifier.status("back")
        sock.close()
        path.unlink()
        notifier.stopping()
        events = [json.loads(line) for line in out.getvalue().splitlines()]
        assert [e["message"] for e in events] == ["READY", "STOPPING"]
    finally:
        reset_logging()


def test_withheld_ping_is_logged_once(notify_socket: tuple[socket.socket, str]) -> None:
    """The first withheld ping logs daemon.stalled with the reasons; the next stay quiet."""
    _, path = notify_socket
    notifier = SdNotifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000000"})
    out = io.StringIO()
    configure_logging(stream=out)

    async def scenario() -> None:
        clock = ManualTime()
        stalls = Stalls()
        pinger = LivenessPinger(
            notifier, stalled=stalls, monotonic=clock.monotonic, sleep=clock.sleep
        )
        stop = asyncio.Event()
        task = asyncio.create_task(pinger.run(stop))
        stalls.reasons = ["poll loop: no poll finished for 2m"]
        for _ in range(3):
            await clock.advance()
        stalls.reasons = []
        await clock.advance()
        stalls.reasons = ["ticker: no tick for 11s"]
        await clock.advance()
        stop.set()
        await asyncio.wait_for(task, 2)

    try:
        asyncio.run(scenario())
        events = [json.loads(line) for line in out.getvalue().splitlines()]
    finally:
        reset_logging()
    assert [(e["event"], e["level"]) for e in events] == [("daemon.stalled", "error")] * 2
    assert [e["reasons"] for e in events] == [
        ["poll loop: no poll finished for 2m"],
        ["ticker: no tick for 11s"],
    ]
