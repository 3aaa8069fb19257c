"""Loopback receivers for the watchdog's other destinations: PagerDuty and webhooks.

`FakePagerDuty` speaks just enough of the Events API v2 (`POST /v2/enqueue`): a valid
event is answered 202 with `{"status": "success", "dedup_key": ...}` and kept in
`events`; an invalid one 400 with PagerDuty's message; `fail_next` scripts answers
(429, 500, 400) and `outage` refuses everything with 503 until lifted.

`FakeWebhookReceiver` is a receiver that verifies `X-Watchdog-Signature` with the secret
it was given, as the README's verifier does: a request with a bad or missing signature
is answered 401 and kept in `rejected`, a good one 200 and kept in `accepted`.

Both wait on a condition variable (`wait_for`), never by sleeping.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = ["FakePagerDuty", "FakeWebhookReceiver", "Received"]

_ROUTING_KEY = re.compile(r"^[A-Za-z0-9]{32}$")
_ACTIONS = ("trigger", "acknowledge", "resolve")


@dataclass(frozen=True)
class Received:
    """One request as it arrived: the parsed body, the headers and the raw bytes."""

    body: dict[str, Any]
    headers: dict[str, str]
    raw: bytes


class _Fake:
    """A threaded loopback HTTP server whose `answer` decides each POST's reply."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.requests: list[Received] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received = Received(
                    _json(raw), {k.lower(): v for k, v in self.headers.items()}, raw
                )
                status, answer = fake._answer(received)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Any:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def _answer(self, received: Received) -> tuple[int, dict[str, Any]]:
        with self._cond:
            self.requests.append(received)
            status, answer = self.answer(received)
            self._cond.notify_all()
        return status, answer

    def answer(self, received: Received) -> tuple[int, dict[str, Any]]:
        raise NotImplementedError

    def wait_until(self, done: Callable[[], bool], timeout: float = 20.0) -> None:
        with self._cond:
            if not self._cond.wait_for(done, timeout):
                raise AssertionError(f"{type(self).__name__}: condition not met in {timeout}s")


class FakePagerDuty(_Fake):
    """The Events API v2 on loopback; see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, Any]] = []
        self._script: deque[int] = deque()
        self._outage = False

    @property
    def events_url(self) -> str:
        return f"{self.base_url}/v2/enqueue"

    def fail_next(self, statuses: Iterable[int]) -> None:
        with self._cond:
            self._script.extend(statuses)

    def outage(self, on: bool = True) -> None:
        with self._cond:
            self._outage = on

    def actions(self) -> list[tuple[str, str]]:
        """(event_action, dedup_key) of every accepted event, in order."""
        with self._cond:
            return [(e["event_action"], e["dedup_key"]) for e in self.events]

    def wait_for(self, count: int, timeout: float = 20.0) -> None:
        """Until `count` events were accepted."""
        self.wait_until(lambda: len(self.events) >= count, timeout)

    def answer(self, received: Received) -> tuple[int, dict[str, Any]]:
        if self._outage:
            return 503, {"status": "unavailable"}
        if self._script:
            status = self._script.popleft()
            if status == 400:
                return 400, {
                    "status": "invalid event",
                    "message": "Event object is invalid",
                    "errors": ["'payload.summary' is missing or blank"],
                }
            return status, {"status": "throttled" if status == 429 else "error"}
        body = received.body
        problems = []
        if not _ROUTING_KEY.match(str(body.get("routing_key", ""))):
            problems.append("Invalid routing key")
        if body.get("event_action") not in _ACTIONS:
            problems.append("'event_action' is invalid")
        if body.get("event_action") == "trigger":
            payload = body.get("payload") or {}
            for key in ("summary", "source", "severity"):
                if not payload.get(key):
                    problems.append(f"'payload.{key}' is missing or blank")
            if len(str(payload.get("summary", ""))) > 1024:
                problems.append("'payload.summary' is too long")
        if problems:
            return 400, {
                "status": "invalid event",
                "message": "Event object is invalid",
                "errors": problems,
            }
        self.events.append(body)
        return 202, {
            "status": "success",
            "message": "Event processed",
            "dedup_key": body["dedup_key"],
        }


class FakeWebhookReceiver(_Fake):
    """A webhook receiver verifying the signature with `secret`; see the module docstring."""

    def __init__(self, secret: str | None) -> None:
        super().__init__()
        self.secret = secret
        self.accepted: list[Received] = []
        self.rejected: list[Received] = []
        self._script: deque[int] = deque()

    @property
    def url(self) -> str:
        return f"{self.base_url}/hooks/watchdog"

    def fail_next(self, statuses: Iterable[int]) -> None:
        with self._cond:
            self._script.extend(statuses)

    def verified(self, received: Received) -> bool:
        """The README's verifier: HMAC-SHA256 of the raw body under the secret."""
        if self.secret is None:
            return True
        expected = (
            "sha256=" + hmac.new(self.secret.encode(), received.raw, hashlib.sha256).hexdigest()
        )
        return hmac.compare_digest(expected, received.headers.get("x-watchdog-signature", ""))

    def answer(self, received: Received) -> tuple[int, dict[str, Any]]:
        if self._script:
            return self._script.popleft(), {}
        if not self.verified(received):
            self.rejected.append(received)
            return 401, {"error": "bad signature"}
        self.accepted.append(received)
        return 200, {}

    def wait_for(self, count: int, timeout: float = 20.0) -> None:
        self.wait_until(lambda: len(self.accepted) >= count, timeout)


def _json(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
