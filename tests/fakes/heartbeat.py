"""A loopback ping endpoint in the manner of healthchecks.io, for the dead-man's switch.

A real HTTP server on 127.0.0.1 that records every request's path; the daemon (in this
process or a child) pings it over real sockets:

    with FakeHeartbeat() as endpoint:
        url = endpoint.url_for("0f1e2d3c")     # http://127.0.0.1:PORT/ping/0f1e2d3c
        endpoint.answer(500)                   # from now on, answer 500 (200 is the default)
        endpoint.hang()                        # hold each request unanswered until close()
        endpoint.wait_for(lambda pings: ...)   # a condition variable, no sleep polling

`max_in_flight` is the most requests it ever held at once (a request counts until it is
answered or its client gives up).
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = ["FakeHeartbeat", "Ping"]


@dataclass(frozen=True, slots=True)
class Ping:
    """One request as it arrived: its path (with the query) and monotonic arrival time."""

    method: str
    path: str
    at: float


class FakeHeartbeat:
    """The fake endpoint and every request it saw; all methods are thread-safe."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._closing = threading.Event()
        self._pings: list[Ping] = []
        self._status = 200
        self._hang = False
        self._in_flight = 0
        self._max_in_flight = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> FakeHeartbeat:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing.set()  # releases hanging handlers
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def url_for(self, check: str) -> str:
        """A ping URL whose last segment plays the check's secret uuid."""
        assert self._server is not None, "FakeHeartbeat is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/ping/{check}"

    def answer(self, status: int) -> None:
        """Answer every request from now on with `status`."""
        with self._cond:
            self._status = status

    def hang(self) -> None:
        """From now on, hold every request without an answer until the fake closes."""
        with self._cond:
            self._hang = True

    @property
    def pings(self) -> list[Ping]:
        with self._cond:
            return list(self._pings)

    @property
    def max_in_flight(self) -> int:
        with self._cond:
            return self._max_in_flight

    def paths(self) -> list[str]:
        return [ping.path for ping in self.pings]

    def wait_for(self, until: Callable[[list[Ping]], bool], timeout: float = 10.0) -> list[Ping]:
        """Block until `until(pings)` holds; return the pings."""
        with self._cond:
            if not self._cond.wait_for(lambda: until(self._pings), timeout=timeout):
                raise TimeoutError(
                    f"FakeHeartbeat: not as expected after {timeout}s: {self._pings}"
                )
            return list(self._pings)

    def _handle(self, handler: _Handler) -> None:
        with self._cond:
            self._pings.append(Ping(handler.command, handler.path, time.monotonic()))
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            status, hang = self._status, self._hang
            self._cond.notify_all()
        try:
            if hang:
                self._hold(handler)
                return
            body = b"OK" if status == 200 else b"error"
            handler.send_response(status)
            handler.send_header("Content-Type", "text/plain")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
        finally:
            with self._cond:
                self._in_flight -= 1
                self._cond.notify_all()

    def _hold(self, handler: _Handler) -> None:
        """Say nothing until the client gives up (closes) or the fake closes."""
        handler.close_connection = True
        connection = handler.connection
        while not self._closing.is_set():
            readable, _, _ = select.select([connection], [], [], 0.02)
            if readable and not connection.recv(1, socket.MSG_PEEK):
                return  # the client closed: it is no longer waiting for this request


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    fake: FakeHeartbeat

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (its own timeout) is what the hang tests are about."""


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self.server.fake._handle(self)

    def do_HEAD(self) -> None:
        self.server.fake._handle(self)

    def do_POST(self) -> None:
        self.server.fake._handle(self)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read `pings`."""
