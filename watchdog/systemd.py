"""Talking to systemd: the sd_notify datagram protocol, and a liveness-gated watchdog ping.

The protocol is small enough to speak directly (one `AF_UNIX`/`SOCK_DGRAM` datagram of
`KEY=value` lines to `$NOTIFY_SOCKET`), so there is no compiled dependency. Outside
systemd (`$NOTIFY_SOCKET` unset) every call is a no-op, and a failed send is logged and
swallowed: losing the notify socket must never take the daemon down.

`LivenessPinger` sends `WATCHDOG=1` on time while the whole pipeline is alive (see
`watchdog.liveness`), so a stuck daemon stops the pings and systemd's `WatchdogSec=`
kills and restarts it, while a healthy one is never killed, whatever its poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol

from watchdog.audit import Event, get_logger

__all__ = ["LivenessPinger", "SdNotifier", "WatchdogPing"]

_SEND_TIMEOUT = 1.0  # seconds; a datagram to PID 1 is instant unless PID 1 is stuck


def _monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class SdNotifier:
    """Sends sd_notify messages to `address`; a no-op when `address` is None.

    `address` is the socket path as bytes, with a leading NUL byte for an abstract
    socket. `watchdog_usec` is systemd's `WatchdogSec=` in microseconds, None when the
    watchdog is off or meant for another process.
    """

    def __init__(self, address: bytes | None, *, watchdog_usec: int | None = None) -> None:
        self._address = address
        self._watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self._socket: socket.socket | None = None
        self._failing = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> SdNotifier:
        """Build from `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID`."""
        return cls(_parse_address(env.get("NOTIFY_SOCKET", "")), watchdog_usec=_watchdog_usec(env))

    @property
    def enabled(self) -> bool:
        """Whether there is a notify socket to talk to."""
        return self._address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings (half of `WatchdogSec=`), None without a watchdog."""
        if self._address is None or self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def ready(self) -> None:
        """Startup (or a reload) finished; systemd now counts the service as running."""
        self._send("READY=1")

    def reloading(self, monotonic_usec: int | None = None) -> None:
        """A reload started; send `ready()` when it is done.

        `MONOTONIC_USEC` (CLOCK_MONOTONIC in microseconds, now by default) lets newer
        systemd match the notification to the reload request; older versions ignore it.
        """
        usec = _monotonic_usec() if monotonic_usec is None else monotonic_usec
        self._send(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        """Shutdown started."""
        self._send("STOPPING=1")

    def status(self, text: str) -> None:
        """One line for `systemctl status`; line breaks are squashed into spaces."""
        line = re.sub(r"\s*[\r\n]+\s*", " ", text.replace("\0", "")).strip()
        self._send(f"STATUS={line}")

    def watchdog(self) -> None:
        """Keep-alive ping; sent only when the watchdog is meant for this process."""
        if self.watchdog_interval is not None:
            self._send("WATCHDOG=1")

    def close(self) -> None:
        """Close the socket; a later message opens a new one."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _send(self, message: str) -> None:
        if self._address is None:
            return
        try:
            if self._socket is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                sock.settimeout(_SEND_TIMEOUT)
                self._socket = sock
            self._socket.sendto(message.encode(), self._address)
        except OSError as exc:
            self.close()
            if not self._failing:
                self._failing = True
                get_logger().warning(
                    Event.SYSTEMD_NOTIFY_FAILED,
                    message=message.partition("=")[0],
                    error=str(exc),
                    note="further failures are not logged until a send succeeds",
                )
        else:
            self._failing = False


def _parse_address(value: str) -> bytes | None:
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return os.fsencode(value)
    return None  # unset, or a kind this systemd-252-era client does not speak (vsock:)


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    pid = env.get("WATCHDOG_PID", "").strip()
    if pid and pid != str(os.getpid()):
        return None  # the watchdog belongs to another process (e.g. our parent)
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec if usec > 0 else None


class WatchdogPing(Protocol):
    """What the pinger needs from `SdNotifier`."""

    @property
    def watchdog_interval(self) -> float | None: ...

    def watchdog(self) -> None: ...


class LivenessPinger:
    """Pings systemd's watchdog every `watchdog_interval` seconds while the pipeline is alive.

    `stalled()` returns why the daemon is stuck (one line per reason), empty while it is
    alive; see `watchdog.liveness` for what counts. The pinger holds no judgement of
    its own: it pings on time whatever the poll interval, and withholds the ping (logging
    `daemon.stalled` once per stall) while `stalled()` gives a reason, so systemd's
    `WatchdogSec=` restarts a stuck daemon and only a stuck one.
    """

    def __init__(
        self,
        notifier: WatchdogPing,
        *,
        stalled: Callable[[], Sequence[str]],
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._notifier = notifier
        self._stalled = stalled
        self._monotonic = monotonic
        self._sleep = sleep

    async def run(self, stop: asyncio.Event) -> None:
        """Ping until `stop` is set; returns at once when systemd set no watchdog."""
        interval = self._notifier.watchdog_interval
        if interval is None:
            return
        next_ping = self._monotonic() + interval
        withheld = False
        while not stop.is_set():
            if not await self._nap(max(0.0, next_ping - self._monotonic()), stop):
                return
            now = self._monotonic()
            next_ping += interval
            if next_ping <= now:  # woke up late (blocked event loop): skip, do not burst
                next_ping = now + interval
            reasons = self._stalled()
            if not reasons:
                withheld = False
                self._notifier.watchdog()
            elif not withheld:
                withheld = True
                get_logger().error(
                    Event.DAEMON_STALLED,
                    reasons=list(reasons),
                    note="watchdog ping withheld: systemd restarts the daemon after WatchdogSec",
                )

    async def _nap(self, seconds: float, stop: asyncio.Event) -> bool:
        """Sleep `seconds` unless `stop` is set first; True when the nap ran out."""
        nap = asyncio.ensure_future(self._sleep(seconds))
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({nap, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (nap, stopped):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return not stop.is_set()
