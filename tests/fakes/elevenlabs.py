"""A loopback fake of the ElevenLabs live-count endpoint: a real HTTP server on 127.0.0.1.

It exists so that the real `LiveCountSource` over a real `httpx.AsyncClient` (and the
daemon running as a separate process) can be exercised against every way the API can
answer, without mocks and without the internet. It runs in a background thread of the
test process, on an ephemeral port:

    with FakeElevenLabs() as fake:
        fake.set_count(7)                                 # the workspace
        fake.set_count(2, agent_id="agent_a")             # also makes agent_a known
        fake.set_behaviour(503, times=2)                  # next two workspace polls fail
        fake.set_behaviour(429, agent_id="agent_a", retry_after=30)
        fake.set_behaviour(raw_body({"count": -3}))
        ... point the daemon at fake.url ...
        fake.wait_for_requests(3, timeout=5)              # await instead of sleeping

Behaviours: "normal", an HTTP status code (any int; 429 may carry `retry_after`),
"hang" (no answer until well past any client timeout, or until `stop()`), "reset" (the
connection is aborted with an RST, no HTTP response), "non_json", "empty_body",
"wrong_content_type" (valid JSON served as text/html), `raw_body(...)` for any 200 body,
and `status(...)` for any status with a chosen body. Requests without `agent_id` are the
workspace; `agent_id=ALL` targets every request that has no behaviour of its own.

A behaviour other than "normal" wins over everything else, as load balancer and network
failures would; "normal" checks the `xi-api-key` (401), then the agent id (422 for
unknown agents), then serves the count.

Run standalone for manual demos (serves until killed):

    python -m tests.fakes.elevenlabs --port 0 --count 3 --agent agent_a=1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, Final, NamedTuple, Self, TypeAlias
from urllib.parse import parse_qs, urlsplit

LIVE_COUNT_PATH: Final = "/v1/convai/analytics/live-count"

ALL: Final = "*"
"""Pass as `agent_id` to `set_behaviour` to target every request without its own behaviour."""

NAMED_BEHAVIOURS: Final = frozenset(
    {"normal", "hang", "reset", "non_json", "empty_body", "wrong_content_type"}
)


@dataclass(frozen=True, slots=True)
class Status:
    """Answer with this status code; 429 answers may carry a `Retry-After` header."""

    code: int
    retry_after: str | None = None
    body: bytes | None = None
    content_type: str = "application/json"


@dataclass(frozen=True, slots=True)
class RawBody:
    """Answer 200 with exactly these bytes (for malformed or implausible bodies)."""

    body: bytes
    content_type: str = "application/json"


Behaviour: TypeAlias = str | int | Status | RawBody
"""What `set_behaviour` accepts: a name, a status code, `status(...)` or `raw_body(...)`."""


def raw_body(body: bytes | str | object, content_type: str = "application/json") -> RawBody:
    """A 200 answer with `body`: bytes and str are served as-is, anything else as JSON."""
    if isinstance(body, bytes):
        data = body
    elif isinstance(body, str):
        data = body.encode()
    else:
        data = json.dumps(body).encode()
    return RawBody(data, content_type)


def status(
    code: int,
    *,
    retry_after: str | float | None = None,
    body: bytes | str | None = None,
    content_type: str = "application/json",
) -> Status:
    """An answer with status `code`, an optional `Retry-After` and an optional body."""
    data = body.encode() if isinstance(body, str) else body
    wait = None if retry_after is None else _header_value(retry_after)
    return Status(code, wait, data, content_type)


class RecordedRequest(NamedTuple):
    """One request as it arrived (headers with lower-case names, query with first values)."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]
    at: float  # time.monotonic() on arrival


class RecordedResponse(NamedTuple):
    """One answer as it left; `count` is None when the answer carried no good count."""

    agent_id: str | None
    count: int | None  # type: ignore[assignment]  # shadows tuple.count, on purpose
    sent_at: float  # time.monotonic() once the response was flushed


class _Lifecycle(Enum):
    UNOPENED = "unopened"
    OPENED = "opened"
    CLOSED = "closed"


@dataclass(slots=True)
class _Rule:
    behaviour: Status | RawBody | str
    remaining: int | None


class FakeElevenLabs:
    """The fake server; thread-safe, so tests may reconfigure it while a client polls.

    `hang_seconds` bounds how long a "hang" lasts (it always ends early on `stop()`).
    """

    def __init__(
        self,
        api_key: str = "test-key",
        latency: float = 0.0,
        *,
        count: int = 0,
        known_agents: Iterable[str] = (),
        port: int = 0,
        hang_seconds: float = 30.0,
        quiet: bool = True,
    ) -> None:
        self.api_key = api_key
        self.hang_seconds = hang_seconds
        self.quiet = quiet
        self._port = port
        self._latency = latency
        self._lock = threading.Lock()
        self._served_changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._counts: dict[str | None, int] = {None: count}
        for agent_id in known_agents:
            self._counts[agent_id] = 0
        self._rules: dict[str | None, _Rule] = {}
        self._requests: list[RecordedRequest] = []
        self._responses: list[RecordedResponse] = []
        self._served = 0
        self._in_flight = 0
        self._max_in_flight = 0
        self._connections: set[socket.socket] = set()
        self._lifecycle = _Lifecycle.UNOPENED
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> Self:
        """Bind 127.0.0.1 on the chosen (default: ephemeral) port and serve in a thread."""
        if self._lifecycle is not _Lifecycle.UNOPENED:
            raise RuntimeError(f"cannot start a fake that is {self._lifecycle.value}")
        server = _Server(("127.0.0.1", self._port), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.01},
            name="fake-elevenlabs",
            daemon=True,
        )
        self._thread.start()
        self._lifecycle = _Lifecycle.OPENED
        return self

    def stop(self) -> None:
        """Stop serving: ends hangs and latency waits, drops open connections. Idempotent."""
        if self._lifecycle is not _Lifecycle.OPENED:
            self._lifecycle = _Lifecycle.CLOSED
            return
        self._lifecycle = _Lifecycle.CLOSED
        self._stopping.set()
        assert self._server is not None
        assert self._thread is not None
        self._server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL such as `http://127.0.0.1:54321` (no trailing slash)."""
        if self._server is None:
            raise RuntimeError("the fake is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- configuration ---------------------------------------------------------------

    @property
    def latency(self) -> float:
        """Seconds every answer is delayed by (settable at any time)."""
        with self._lock:
            return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        with self._lock:
            self._latency = seconds

    def set_count(self, count: int, agent_id: str | None = None) -> float:
        """Serve `count` for the workspace (None) or an agent, from the next request on.

        Setting an agent's count makes that agent known. Returns the `time.monotonic()`
        at which the change took effect, so benchmarks can measure detection latency.
        """
        with self._lock:
            self._counts[agent_id] = count
            return time.monotonic()

    def add_agent(self, agent_id: str, count: int = 0) -> None:
        """Make `agent_id` known (answered with `count`) instead of 422."""
        self.set_count(count, agent_id)

    def set_behaviour(
        self,
        behaviour: Behaviour,
        agent_id: str | None = None,
        times: int | None = None,
        *,
        retry_after: str | float | None = None,
    ) -> None:
        """Answer the workspace (None), an agent or `ALL` this way.

        `times=N` applies it to the next N matching requests, then reverts to normal;
        `retry_after` adds a `Retry-After` header to a status-code behaviour.
        """
        rule = _Rule(_normalise(behaviour, retry_after), times)
        if times is not None and times < 1:
            raise ValueError(f"times must be >= 1 or None, got {times}")
        with self._lock:
            if rule.behaviour == "normal":
                self._rules.pop(agent_id, None)
            else:
                self._rules[agent_id] = rule

    # -- recording -------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def responses(self) -> list[RecordedResponse]:
        """A snapshot of every answer sent so far (resets and hangs are not answers)."""
        with self._lock:
            return list(self._responses)

    @property
    def max_in_flight(self) -> int:
        """The most requests that were being handled at the same moment."""
        with self._lock:
            return self._max_in_flight

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    @property
    def served(self) -> int:
        """How many requests are finished (answered, reset, or hung up)."""
        with self._lock:
            return self._served

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until `n` requests in total have been served; raise TimeoutError if not.

        Returns the snapshot of recorded requests at that moment.
        """
        with self._served_changed:
            if not self._served_changed.wait_for(lambda: self._served >= n, timeout):
                raise TimeoutError(
                    f"only {self._served} of {n} requests were served within {timeout}s"
                )
            return list(self._requests)

    # -- serving (called from handler threads) ----------------------------------------

    def _begin(self, request: RecordedRequest, connection: socket.socket) -> None:
        with self._lock:
            self._requests.append(request)
            self._connections.add(connection)
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def _end(self) -> None:
        with self._served_changed:
            self._in_flight -= 1
            self._served += 1
            self._served_changed.notify_all()

    def _forget(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.discard(connection)

    def _take_behaviour(self, agent_id: str | None) -> Status | RawBody | str:
        with self._lock:
            key: str | None = agent_id if agent_id in self._rules else ALL
            rule = self._rules.get(key)
            if rule is None:
                return "normal"
            if rule.remaining is not None:
                rule.remaining -= 1
                if rule.remaining <= 0:
                    del self._rules[key]
            return rule.behaviour

    def _count_for(self, agent_id: str | None) -> int | None:
        with self._lock:
            return self._counts.get(agent_id)

    def _sent(self, agent_id: str | None, count: int | None) -> None:
        with self._lock:
            self._responses.append(RecordedResponse(agent_id, count, time.monotonic()))


def _header_value(value: str | float) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _normalise(behaviour: Behaviour, retry_after: str | float | None) -> Status | RawBody | str:
    if isinstance(behaviour, bool):
        raise TypeError("a behaviour is a name, a status code, status(...) or raw_body(...)")
    if isinstance(behaviour, int):
        if behaviour == 200:
            return "normal"
        return status(behaviour, retry_after=retry_after)
    if retry_after is not None:
        raise ValueError("retry_after only goes with a status-code behaviour")
    if isinstance(behaviour, Status | RawBody):
        return behaviour
    if behaviour not in NAMED_BEHAVIOURS:
        raise ValueError(
            f"unknown behaviour {behaviour!r}; expected one of {sorted(NAMED_BEHAVIOURS)}"
        )
    return behaviour


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog of 5 drops SYNs when a client opens a dozen
    # connections at once, and each dropped one costs the client a 1 s retransmit.
    request_queue_size = 128
    fake: FakeElevenLabs

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout, cancelled poll) is normal here, not an error.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeElevenLabs/1.0"
    timeout = 30  # an idle keep-alive connection is closed after this long
    # Headers and body go out in two sends: without this, Nagle holds the body for the
    # client's delayed ACK and every keep-alive answer gains ~40 ms.
    disable_nagle_algorithm = True
    server: _Server

    @property
    def fake(self) -> FakeElevenLabs:
        return self.server.fake

    def log_message(self, format: str, *args: object) -> None:
        if not self.fake.quiet:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        split = urlsplit(self.path)
        query = {name: values[0] for name, values in parse_qs(split.query).items()}
        headers = {name.lower(): value for name, value in self.headers.items()}
        fake = self.fake
        fake._begin(RecordedRequest(split.path, query, headers, time.monotonic()), self.connection)
        try:
            self._answer(split.path, query.get("agent_id") or None, headers)
        finally:
            fake._end()

    def do_POST(self) -> None:
        self.close_connection = True  # the request body, if any, is never read
        self._send_json(405, {"detail": "Method Not Allowed"}, agent_id=None)

    do_PUT = do_DELETE = do_PATCH = do_POST

    def _answer(self, path: str, agent_id: str | None, headers: dict[str, str]) -> None:
        fake = self.fake
        if fake._stopping.wait(fake.latency):
            self._drop(abort=False)
            return
        if path != LIVE_COUNT_PATH:
            self._send_json(404, {"detail": "Not Found"}, agent_id=agent_id)
            return
        behaviour = fake._take_behaviour(agent_id)
        if behaviour != "normal":
            self._misbehave(behaviour, agent_id)
            return
        if headers.get("xi-api-key") != fake.api_key:
            invalid = {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}}
            self._send_json(401, invalid, agent_id=agent_id)
            return
        count = fake._count_for(agent_id)
        if count is None:
            problem = {"loc": ["query", "agent_id"], "msg": f"Agent {agent_id} not found"}
            self._send_json(
                422, {"detail": [{**problem, "type": "value_error"}]}, agent_id=agent_id
            )
            return
        self._send_json(200, {"count": count}, agent_id=agent_id, count=count)

    def _misbehave(self, behaviour: Status | RawBody | str, agent_id: str | None) -> None:
        fake = self.fake
        if isinstance(behaviour, Status):
            extra = {"Retry-After": behaviour.retry_after} if behaviour.retry_after else {}
            body = behaviour.body
            if body is None:
                body = json.dumps({"detail": f"fake error {behaviour.code}"}).encode()
            self._send(behaviour.code, body, behaviour.content_type, agent_id, extra)
        elif isinstance(behaviour, RawBody):
            self._send(200, behaviour.body, behaviour.content_type, agent_id)
        elif behaviour == "hang":
            fake._stopping.wait(fake.hang_seconds)
            self._drop(abort=False)
        elif behaviour == "reset":
            self._drop(abort=True)
        elif behaviour == "non_json":
            self._send(200, b"<html><body>not json</body></html>", "application/json", agent_id)
        elif behaviour == "empty_body":
            self._send(200, b"", "application/json", agent_id)
        elif behaviour == "wrong_content_type":
            body = json.dumps({"count": fake._count_for(agent_id) or 0}).encode()
            self._send(200, body, "text/html; charset=utf-8", agent_id)
        else:
            raise AssertionError(f"unhandled behaviour {behaviour!r}")

    def _send_json(
        self, code: int, body: object, *, agent_id: str | None, count: int | None = None
    ) -> None:
        self._send(code, json.dumps(body).encode(), "application/json", agent_id, count=count)

    def _send(
        self,
        code: int,
        body: bytes,
        content_type: str,
        agent_id: str | None,
        extra_headers: dict[str, str] | None = None,
        *,
        count: int | None = None,
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self.fake._sent(agent_id, count)

    def _drop(self, *, abort: bool) -> None:
        """Close without an answer; `abort` sends an RST (SO_LINGER 0) instead of a FIN."""
        self.close_connection = True
        if abort:
            linger = struct.pack("ii", 1, 0)
            with contextlib.suppress(OSError):
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                self.connection.close()  # the fd closes (RST) once rfile/wfile close in finish()

    def finish(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            super().finish()
        self.fake._forget(self.connection)


def _parse_agent(text: str) -> tuple[str, int]:
    agent_id, sep, count = text.partition("=")
    if not sep or not agent_id:
        raise argparse.ArgumentTypeError(f"expected AGENT_ID=COUNT, got {text!r}")
    return agent_id, int(count)


def main(argv: list[str] | None = None) -> int:
    """Serve a fake on 127.0.0.1 until SIGINT/SIGTERM; print its URL first."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.elevenlabs",
        description="Serve a fake ElevenLabs live-count API on 127.0.0.1.",
    )
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--count", type=int, default=0, help="workspace live count")
    parser.add_argument("--api-key", default="test-key")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per answer")
    parser.add_argument(
        "--agent", type=_parse_agent, action="append", default=[], metavar="ID=COUNT"
    )
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    fake = FakeElevenLabs(
        args.api_key, args.latency, count=args.count, port=args.port, quiet=not args.verbose
    )
    for agent_id, count in args.agent:
        fake.set_count(count, agent_id)
    with fake:
        print(fake.url, flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
