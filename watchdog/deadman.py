"""The dead-man's switch: an outside service hears from the watchdog after every poll cycle.

If the host dies, the watchdog cannot say so; a service that expects a ping every period
and alerts when one is missing (healthchecks.io; Uptime Kuma, Cronitor and Better Stack
accept the same in some form) can. After each poll cycle the daemon gives its verdict:
healthy (the workspace series polled fine and the pipeline is healthy, see
`Daemon.health`) requests `heartbeat_url`, anything else `<heartbeat_url>/fail`
(healthchecks.io's convention). So the outside service alerts on a dead host, a dead
process, and a watchdog that is alive but blind or cannot deliver.

Guarantees:
- the heartbeat never delays polls or alerts: the poll loop only records its verdict (no
  I/O, no await); one long-lived task sends, so at most one request is in flight, and
  verdicts given meanwhile collapse into the latest (the outside service only needs the
  latest word).
- each request ends within `HEARTBEAT_TIMEOUT` seconds, whatever the endpoint does; a
  slow, unreachable or refusing endpoint is logged as `heartbeat.failed` (warning) and the
  next verdict is sent as usual.
- the URL's path is a secret (a healthchecks.io ping URL is the check's only credential):
  events name the host, never the URL.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx
import structlog
from pydantic import SecretStr

from watchdog.audit import Event, get_logger
from watchdog.urls import url_host
from watchdog.workers import tls_context

__all__ = ["HEARTBEAT_TIMEOUT", "DeadMansSwitch", "Verdict", "ping_url"]

HEARTBEAT_TIMEOUT = 5.0
"""Seconds one ping may take in all: a ping service answers in well under one."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """One poll cycle's word to the outside: healthy while `problems` is empty."""

    url: SecretStr
    problems: tuple[str, ...] = ()

    @property
    def healthy(self) -> bool:
        return not self.problems


def ping_url(url: str, *, healthy: bool) -> str:
    """`url` for a healthy cycle, `url/fail` (healthchecks.io's convention) otherwise."""
    if healthy:
        return url
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/fail"))


class DeadMansSwitch:
    """Sends the latest verdict to the ping URL from its own task; see the module docstring."""

    def __init__(
        self,
        *,
        timeout: float = HEARTBEAT_TIMEOUT,
        monotonic: Callable[[], float] = time.monotonic,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self._timeout = timeout
        self._monotonic = monotonic
        self._log = get_logger() if logger is None else logger
        self._pending: Verdict | None = None
        self._ready = asyncio.Event()

    def report(self, url: SecretStr | None, problems: Sequence[str] = ()) -> None:
        """The verdict of the cycle that just ended (from the event loop; never waits).

        `url` is read per cycle, so a reload that changes or removes it applies at once.
        """
        if url is None:
            self._pending = None
            return
        self._pending = Verdict(url, tuple(problems))
        self._ready.set()

    async def run(self) -> None:
        """Send verdicts as they come, one at a time, until cancelled."""
        async with httpx.AsyncClient(timeout=self._timeout, verify=tls_context()) as client:
            while True:
                await self._ready.wait()
                self._ready.clear()
                verdict, self._pending = self._pending, None
                if verdict is not None:
                    await self._send(client, verdict)

    async def _send(self, client: httpx.AsyncClient, verdict: Verdict) -> None:
        url = verdict.url.get_secret_value()
        fields = {"host": url_host(url), "signal": "success" if verdict.healthy else "fail"}
        began = self._monotonic()
        error: str
        try:
            async with asyncio.timeout(self._timeout):  # httpx bounds each phase, not the sum
                response = await client.get(ping_url(url, healthy=verdict.healthy))
        except (TimeoutError, httpx.TimeoutException):
            error = "timed out"
        except httpx.HTTPError as exc:  # its message may quote the URL: the type says enough
            error = f"unreachable ({type(exc).__name__})"
        else:
            if response.is_success:
                self._log.debug(
                    Event.HEARTBEAT_SENT,
                    **fields,
                    problems=list(verdict.problems),
                    took=round(self._monotonic() - began, 3),
                )
                return
            error = f"HTTP {response.status_code}"
        self._log.warning(
            Event.HEARTBEAT_FAILED,
            **fields,
            error=error,
            took=round(self._monotonic() - began, 3),
        )
