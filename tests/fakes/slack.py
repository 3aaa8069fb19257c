"""A loopback Slack: a real HTTP server speaking just enough Web API and webhook.

Tests, benchmarks and daemon processes talk to it over real sockets, so the SDK, urllib,
timeouts and connection resets are exercised for real. State lives in the process that
started the server; a daemon started as a separate process is observed through what it
sent here.

    with FakeSlack() as slack:
        notifier = SlackBotNotifier(SecretStr(slack.token), api_url=slack.api_url)
        slack.fail_next([Fail.status(429, retry_after=1)])
        ...
        slack.wait_for(1)  # blocks on a condition variable, no sleep polling

Besides posting (chat.postMessage, chat.update, webhooks) it reads as Slack does:
auth.test (with the token's scopes in the `x-oauth-scopes` header of every answer),
conversations.history and conversations.replies (channel ids only, oldest/latest/inclusive,
cursor paging, metadata only with `include_all_metadata`) and conversations.list. A method
whose scope the token lacks answers `missing_scope` (see `set_scopes`).

With `app_token`, it is a Slack app too: `apps.connections.open` (with that token) hands
out the URL of a loopback Socket Mode endpoint (`socket_mode`, see
`tests.fakes.socket_mode`), and the `response_url`s of the envelopes it sends are served
here: what the app answers through them is in `responses`.

Run standalone with `python -m tests.fakes.slack --port 0`: it prints the API URL, then
the webhook URL, and serves until killed. `GET /_fake/messages` returns what it accepted.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import itertools
import json
import re
import secrets
import socket
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qs, urlsplit

from tests.fakes.socket_mode import FakeSocketMode

__all__ = ["ALL_SCOPES", "Attempt", "Fail", "FakeSlack", "SlackCall", "channel_id"]

_T = TypeVar("_T")

_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{8,}$")
ALL_SCOPES = ("chat:write", "channels:history", "groups:history", "channels:read", "groups:read")
"""The scopes a token has unless `set_scopes` says otherwise."""
_POSTING = frozenset({"chat.postMessage", "chat.update", "webhook"})
_READING = frozenset(
    {"auth.test", "conversations.history", "conversations.replies", "conversations.list"}
)
_MAX_LIMIT = 999
_WEBHOOK_ERROR_STATUS = {
    "invalid_payload": 400,
    "no_text": 400,
    "invalid_token": 403,
    "action_prohibited": 403,
    "posting_to_general_channel_denied": 403,
    "channel_not_found": 404,
    "no_service": 404,
    "channel_is_archived": 410,
    "rollup_error": 500,
}
_DEFAULT_STATUS_ERROR = {429: "ratelimited", 500: "fatal_error", 503: "service_unavailable"}


def channel_id(channel: str) -> str:
    """The stable fake id for a channel name (`#voice-oncall` or `voice-oncall`); ids pass."""
    if _CHANNEL_ID.match(channel):
        return channel
    name = channel.strip().lstrip("#").lower()
    return "C" + hashlib.sha1(name.encode()).hexdigest()[:10].upper()


@dataclass(frozen=True, slots=True)
class SlackCall:
    """One accepted call. `method` is "chat.postMessage", "chat.update" or "webhook"."""

    method: str
    channel: str
    ts: str
    thread_ts: str | None
    text: str
    blocks: tuple[dict[str, Any], ...]
    received_at: float
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    """Any call that reached the server, accepted or not.

    `channel` is the fake id (None when the call named none); `outcome` is "ok",
    "error <slack error>", "status <code>", "hang", "reset", or "accepted, then hang" /
    "accepted, then reset" when the post was kept but its answer never sent.
    """

    method: str
    channel: str | None
    outcome: str
    received_at: float
    token: str = ""
    """The token the call carried (which client sent it, with `add_token`)."""

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


@dataclass(frozen=True, slots=True)
class Fail:
    """A scripted answer for one upcoming call, consumed in order by `FakeSlack.fail_next`.

    Without `method` it applies to the next posting call (chat.postMessage, chat.update or
    a webhook); with one, to the next call of that method. With `accept`, a post is kept
    (it is in Slack) before the hang or reset: the answer is what gets lost.
    """

    action: Literal["status", "error", "hang", "reset", "delay"]
    code: int = 200
    slack_error: str | None = None
    retry_after: float | None = None
    seconds: float = 0.0
    body: str | None = None
    method: str | None = None
    accept: bool = False

    @classmethod
    def status(
        cls,
        code: int,
        *,
        retry_after: float | None = None,
        body: str | None = None,
        method: str | None = None,
    ) -> Fail:
        """Answer with HTTP `code`; the body is Slack-style JSON unless `body` is given."""
        return cls("status", code=code, retry_after=retry_after, body=body, method=method)

    @classmethod
    def error(cls, slack_error: str, *, method: str | None = None) -> Fail:
        """Answer 200 `{"ok": false, "error": ...}` (webhooks get Slack's status and text)."""
        return cls("error", slack_error=slack_error, method=method)

    @classmethod
    def hang(cls, seconds: float, *, accept: bool = False, method: str | None = None) -> Fail:
        """Read the request, say nothing for `seconds`, then close without an answer."""
        return cls("hang", seconds=seconds, accept=accept, method=method)

    @classmethod
    def reset(cls, *, accept: bool = False, method: str | None = None) -> Fail:
        """Read the request, then abort the TCP connection (RST) without an answer."""
        return cls("reset", accept=accept, method=method)

    @classmethod
    def delay(cls, seconds: float, *, method: str | None = None) -> Fail:
        """Wait `seconds`, then handle the call normally (a slow but working Slack)."""
        return cls("delay", seconds=seconds, method=method)

    def applies_to(self, method: str) -> bool:
        return method == self.method if self.method else method in _POSTING


class FakeSlack:
    """The fake server and everything it saw; all methods are thread-safe."""

    def __init__(
        self,
        token: str = "xoxb-test-token",
        *,
        webhook_channel: str = "#voice-oncall",
        host: str = "127.0.0.1",
        port: int = 0,
        app_token: str | None = None,
    ) -> None:
        self.token = token
        self.app_token = app_token
        self.socket_mode = FakeSocketMode(response_url=self._new_response_url)
        self._responses: list[dict[str, Any]] = []
        self._connections_opened = 0
        self.webhook_channel = channel_id(webhook_channel)
        self._webhook_path = f"/services/T000/B000/{secrets.token_hex(12)}"
        self._address = (host, port)
        self._cond = threading.Condition()
        self._closing = threading.Event()
        self._messages: list[SlackCall] = []
        self._attempts: list[Attempt] = []
        self._reads: list[Attempt] = []
        self._channels: dict[str, str] = {}
        self._scopes: tuple[str, ...] = ALL_SCOPES
        self._answer_delay = 0.0
        self._page_cap = _MAX_LIMIT
        self._by_ts: dict[tuple[str, str], SlackCall] = {}
        self._post_times: dict[str, list[float]] = {}
        self._script: deque[Fail] = deque()
        self._more_tokens: set[str] = set()  # accepted besides `token` (`add_token`)
        self._caller = threading.local()  # the token of the call a handler thread serves
        self._missing: set[str] = set()
        self._outage = False
        self._last_ts_micros = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> FakeSlack:
        server = _Server(self._address, _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        if self.app_token is not None:
            self.socket_mode.start()
        return self

    def close(self) -> None:
        """Stop serving; hanging handlers are released so shutdown is immediate."""
        self._closing.set()
        self.socket_mode.close()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # addresses

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeSlack is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def api_url(self) -> str:
        """What to pass as `WebClient(base_url=...)`."""
        return f"{self.base_url}/api/"

    @property
    def webhook_url(self) -> str:
        """An incoming-webhook URL posting to `webhook_channel`; its last segment is secret."""
        return f"{self.base_url}{self._webhook_path}"

    def _new_response_url(self) -> str:
        return f"{self.base_url}/_fake/respond/{secrets.token_hex(8)}"

    @property
    def responses(self) -> list[dict[str, Any]]:
        """What the app posted to `response_url`s (ephemeral answers), in order."""
        with self._cond:
            return list(self._responses)

    def wait_for_responses(
        self, until: int | Callable[[list[dict[str, Any]]], bool], timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        return self._wait(lambda: self._responses, until, timeout, "responses")

    @property
    def connections_opened(self) -> int:
        """Successful `apps.connections.open` calls."""
        with self._cond:
            return self._connections_opened

    # scripting

    def fail_next(self, failures: Iterable[Fail]) -> None:
        """Answer the next calls (any endpoint) with these failures, in order."""
        with self._cond:
            self._script.extend(failures)

    def add_token(self, token: str) -> None:
        """Accept this bot token too: clients given tokens of their own are told apart in
        `attempts` and `reads` (`Attempt.token`), e.g. two daemons of a pair."""
        with self._cond:
            self._more_tokens.add(token)

    def outage(self, on: bool = True) -> None:
        """While on, every call answers 503 (after any scripted failures are used up)."""
        with self._cond:
            self._outage = on

    def set_scopes(self, scopes: Iterable[str]) -> None:
        """The token's scopes from now on; methods needing another answer `missing_scope`."""
        with self._cond:
            self._scopes = tuple(scopes)

    def answer_late(self, seconds: float) -> None:
        """Keep every post at once but send its answer `seconds` later (0 turns it off)."""
        with self._cond:
            self._answer_delay = seconds

    def cap_pages(self, size: int) -> None:
        """Answer at most `size` items per page, whatever `limit` asks (as Slack may)."""
        with self._cond:
            self._page_cap = size

    def add_channel(self, name: str) -> str:
        """Make a channel exist (for conversations.list) before anything is posted; its id."""
        cid = channel_id(name)
        with self._cond:
            self._channels[cid] = _name_of(name)
        return cid

    def missing_channel(self, channel: str, missing: bool = True) -> None:
        """Make posts to `channel` (name or id) fail with `channel_not_found`."""
        with self._cond:
            if missing:
                self._missing.add(channel_id(channel))
            else:
                self._missing.discard(channel_id(channel))

    # observing

    @property
    def messages(self) -> list[SlackCall]:
        """Every accepted call, in order of arrival."""
        with self._cond:
            return list(self._messages)

    @property
    def attempts(self) -> list[Attempt]:
        """Every posting call that reached the server, including failed ones."""
        with self._cond:
            return list(self._attempts)

    @property
    def reads(self) -> list[Attempt]:
        """Every reading call (auth.test, conversations.*) that reached the server."""
        with self._cond:
            return list(self._reads)

    def top_level(self, channel: str | None = None) -> list[SlackCall]:
        """New messages outside threads (posts and webhooks), optionally in one channel."""
        wanted = None if channel is None else channel_id(channel)
        return [
            m
            for m in self.messages
            if m.method != "chat.update"
            and m.thread_ts is None
            and (wanted is None or m.channel == wanted)
        ]

    def replies(self, ts: str) -> list[SlackCall]:
        """Posts in the thread of message `ts`."""
        return [m for m in self.messages if m.method != "chat.update" and m.thread_ts == ts]

    def updates(self, ts: str) -> list[SlackCall]:
        """Edits of message `ts`."""
        return [m for m in self.messages if m.method == "chat.update" and m.ts == ts]

    def post_times(self, channel: str) -> list[float]:
        """Monotonic arrival times of new messages in `channel`, to check Slack's ~1/s pace."""
        with self._cond:
            return list(self._post_times.get(channel_id(channel), []))

    def min_spacing(self, channel: str) -> float | None:
        """Shortest gap between two new messages in `channel`; None with fewer than two."""
        times = self.post_times(channel)
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        return min(gaps) if gaps else None

    def wait_for(
        self, until: int | Callable[[list[SlackCall]], bool], timeout: float = 5.0
    ) -> list[SlackCall]:
        """Block until `until` messages were accepted (or the predicate holds); return them."""
        return self._wait(lambda: self._messages, until, timeout, "messages")

    def wait_for_attempts(
        self, until: int | Callable[[list[Attempt]], bool], timeout: float = 5.0
    ) -> list[Attempt]:
        """Like `wait_for`, over all posting attempts including failed ones."""
        return self._wait(lambda: self._attempts, until, timeout, "attempts")

    def wait_for_reads(
        self, until: int | Callable[[list[Attempt]], bool], timeout: float = 5.0
    ) -> list[Attempt]:
        """Like `wait_for`, over the reading calls."""
        return self._wait(lambda: self._reads, until, timeout, "reads")

    def _wait(
        self,
        items: Callable[[], list[_T]],
        until: int | Callable[[list[_T]], bool],
        timeout: float,
        what: str,
    ) -> list[_T]:
        def done() -> bool:
            current = list(items())
            return len(current) >= until if isinstance(until, int) else until(current)

        with self._cond:
            if not self._cond.wait_for(done, timeout=timeout):
                seen = "\n  ".join(repr(i) for i in items()) or "(none)"
                raise TimeoutError(f"FakeSlack: {what} not as expected after {timeout}s:\n  {seen}")
            return list(items())

    # request handling (called from handler threads)

    def _handle(self, handler: _Handler) -> None:
        url = urlsplit(handler.path)
        path = url.path
        self._caller.token = ""
        if handler.command == "GET" and path == "/_fake/messages":
            handler.reply(200, json.dumps([asdict(m) for m in self.messages]), "application/json")
            return
        if handler.command == "GET" and path.startswith("/api/"):
            params = {k: v[-1] for k, v in parse_qs(url.query).items()}
            self._handle_api(handler, path.removeprefix("/api/"), params)
            return
        if handler.command != "POST":
            handler.reply(405, "method_not_allowed")
            return
        body = handler.read_body()
        if path.startswith("/_fake/respond/"):
            with self._cond:
                self._responses.append({"url": path, **_parse_params("application/json", body)})
                self._cond.notify_all()
            handler.reply(200, "ok")
            return
        if path.startswith("/api/"):
            params = _parse_params(handler.headers.get("Content-Type", ""), body)
            params.update({k: v[-1] for k, v in parse_qs(url.query).items()})
            self._handle_api(handler, path.removeprefix("/api/"), params)
        elif path.startswith("/services/"):
            self._handle_webhook(handler, path, body)
        else:
            handler.reply(404, "not_found")

    def _handle_api(self, handler: _Handler, method: str, params: dict[str, Any]) -> None:
        channel = str(params.get("channel") or "") or None
        token = _bearer(handler.headers.get("Authorization", "")) or str(params.get("token") or "")
        self._caller.token = token
        after = self._scripted(handler, method, channel, webhook=False)
        if after is True:
            return
        if method == "apps.connections.open":
            self._open_connection(handler, token)
            return
        if method not in _POSTING and method not in _READING:
            self._answer_api(handler, method, channel, {"ok": False, "error": "unknown_method"})
            return
        if not token:
            self._answer_api(handler, method, channel, {"ok": False, "error": "not_authed"})
            return
        if token not in self._tokens_snapshot():
            self._answer_api(handler, method, channel, {"ok": False, "error": "invalid_auth"})
            return
        needed = self._needed_scope(method, params)
        if needed is not None:
            provided = ",".join(self._scopes_snapshot())
            refusal = {"ok": False, "error": "missing_scope", "needed": needed}
            self._answer_api(handler, method, channel, {**refusal, "provided": provided})
            return
        if method in _READING:
            self._handle_read(handler, method, channel, params)
            return
        if channel is None or channel_id(channel) in self._missing_snapshot():
            self._answer_api(handler, method, channel, {"ok": False, "error": "channel_not_found"})
            return
        text = str(params.get("text") or "")
        blocks = _blocks(params.get("blocks"))
        if not text and not blocks:
            self._answer_api(handler, method, channel, {"ok": False, "error": "no_text"})
            return
        cid = channel_id(channel)
        metadata = _metadata(params.get("metadata"))
        if method == "chat.update":
            ts = str(params.get("ts") or "")
            with self._cond:
                target = self._by_ts.get((cid, ts))
                if target is None:
                    answer: dict[str, Any] = {"ok": False, "error": "message_not_found"}
                else:
                    call = SlackCall(
                        "chat.update",
                        cid,
                        ts,
                        target.thread_ts,
                        text,
                        blocks,
                        time.monotonic(),
                        metadata or target.metadata,
                    )
                    self._by_ts[(cid, ts)] = call
                    self._accept(method, channel, call, after)
                    answer = {"ok": True, "channel": cid, "ts": ts, "text": text}
                    answer["message"] = _message_json(call)
            if not answer["ok"]:
                self._answer_api(handler, method, channel, answer)
            else:
                self._answer_accepted(handler, json.dumps(answer), "application/json", after)
            return
        thread_ts = str(params.get("thread_ts") or "") or None
        with self._cond:
            call = SlackCall(
                "chat.postMessage",
                cid,
                self._new_ts(),
                thread_ts,
                text,
                blocks,
                time.monotonic(),
                metadata,
            )
            self._by_ts[(cid, call.ts)] = call
            if not _CHANNEL_ID.match(channel):
                self._channels.setdefault(cid, _name_of(channel))
            self._accept(method, channel, call, after)
        answer = {"ok": True, "channel": cid, "ts": call.ts, "message": _message_json(call)}
        self._answer_accepted(handler, json.dumps(answer), "application/json", after)

    def _open_connection(self, handler: _Handler, token: str) -> None:
        """apps.connections.open: only the app-level token gets the Socket Mode URL."""
        if self.app_token is None or token != self.app_token:
            error = "not_allowed_token_type" if token == self.token else "invalid_auth"
            self._answer_api(handler, "apps.connections.open", None, {"ok": False, "error": error})
            return
        self._record("apps.connections.open", None, "ok")
        with self._cond:
            self._connections_opened += 1
        answer = {"ok": True, "url": self.socket_mode.url}
        handler.reply(200, json.dumps(answer), "application/json")

    def _answer_accepted(
        self, handler: _Handler, body: str, content_type: str, after: Fail | None
    ) -> None:
        """Answer a kept post, late if asked, or lose the answer as the script says."""
        with self._cond:
            delay = self._answer_delay
        if delay:
            self._closing.wait(delay)
        if after is None:
            handler.reply(200, body, content_type)
        elif after.action == "hang":
            self._closing.wait(after.seconds)
            handler.close_connection = True
        else:
            handler.abort()

    # reading

    def _needed_scope(self, method: str, params: Mapping[str, Any]) -> str | None:
        """The scope `method` needs that the token lacks, if any."""
        needs: list[str] = []
        if method in _POSTING:
            needs = ["chat:write"]
        elif method in ("conversations.history", "conversations.replies"):
            needs = ["channels:history"]
        elif method == "conversations.list":
            types = str(params.get("types") or "public_channel").split(",")
            needs = ["channels:read"] + (["groups:read"] if "private_channel" in types else [])
        granted = self._scopes_snapshot()
        return next((scope for scope in needs if scope not in granted), None)

    def _handle_read(
        self, handler: _Handler, method: str, channel: str | None, params: Mapping[str, Any]
    ) -> None:
        if method == "auth.test":
            answer: dict[str, Any] = {
                "ok": True,
                "url": "https://fake.slack.com/",
                "team": "Fake",
                "user": "watchdog",
                "team_id": "T0FAKE000",
                "user_id": "U0FAKE000",
                "bot_id": "B0FAKE000",
            }
        elif method == "conversations.list":
            with self._cond:
                channels = [{"id": cid, "name": name} for cid, name in self._channels.items()]
            answer = self._page(channels, params, "channels")
        elif channel is None or not _CHANNEL_ID.match(channel):
            answer = {"ok": False, "error": "channel_not_found"}  # Slack wants an id here
        elif method == "conversations.history":
            answer = self._page(self._history(channel, params), params, "messages")
        else:
            replies = self._replies(channel, str(params.get("ts") or ""), params)
            answer = (
                {"ok": False, "error": "thread_not_found"}
                if replies is None
                else self._page(replies, params, "messages")
            )
        if not answer["ok"]:
            self._answer_api(handler, method, channel, answer)
            return
        self._record(method, channel, "ok")
        handler.reply(200, json.dumps(answer), "application/json", self._scope_header())

    def _history(self, channel: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Top-level messages of `channel` in the asked window, newest first."""
        window = _Window.of(params)
        with self._cond:
            calls = [
                c
                for (cid, ts), c in self._by_ts.items()
                if cid == channel and c.thread_ts in (None, ts) and window.holds(ts)
            ]
        full = _truthy(params.get("include_all_metadata"))
        return [_message_json(c, metadata=full) for c in sorted(calls, key=_ts_key, reverse=True)]

    def _replies(
        self, channel: str, ts: str, params: Mapping[str, Any]
    ) -> list[dict[str, Any]] | None:
        """The parent, then its replies in the asked window, oldest first; None if no parent."""
        window = _Window.of(params)
        full = _truthy(params.get("include_all_metadata"))
        with self._cond:
            parent = self._by_ts.get((channel, ts))
            if parent is None:
                return None
            replies = [
                c
                for (cid, reply_ts), c in self._by_ts.items()
                if cid == channel
                and c.thread_ts == ts
                and reply_ts != ts
                and window.holds(reply_ts)
            ]
        ordered = [parent, *sorted(replies, key=_ts_key)]
        return [_message_json(c, metadata=full) for c in ordered]

    def _page(
        self, items: list[dict[str, Any]], params: Mapping[str, Any], key: str
    ) -> dict[str, Any]:
        """One page of `items` from `cursor`, `limit` long (Slack's default 100)."""
        try:
            limit = int(params.get("limit") or 100)
        except ValueError:
            return {"ok": False, "error": "invalid_limit"}
        with self._cond:
            limit = max(1, min(limit, _MAX_LIMIT, self._page_cap))
        start = _cursor_offset(str(params.get("cursor") or ""))
        if start is None:
            return {"ok": False, "error": "invalid_cursor"}
        page = items[start : start + limit]
        more = start + limit < len(items)
        next_cursor = _cursor(start + limit) if more else ""
        answer: dict[str, Any] = {"ok": True, key: page}
        if key == "messages":
            answer["has_more"] = more
        answer["response_metadata"] = {"next_cursor": next_cursor}
        return answer

    def _scope_header(self) -> dict[str, str]:
        return {"X-OAuth-Scopes": ",".join(self._scopes_snapshot())}

    def _scopes_snapshot(self) -> tuple[str, ...]:
        with self._cond:
            return self._scopes

    def _handle_webhook(self, handler: _Handler, path: str, body: bytes) -> None:
        after = self._scripted(handler, "webhook", self.webhook_channel, webhook=True)
        if after is True:
            return
        if path != self._webhook_path:
            self._answer_webhook(handler, "invalid_token")
            return
        if self.webhook_channel in self._missing_snapshot():
            self._answer_webhook(handler, "channel_not_found")
            return
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            self._answer_webhook(handler, "invalid_payload")
            return
        text = str(payload.get("text") or "")
        blocks = _blocks(payload.get("blocks"))
        if not text and not blocks:
            self._answer_webhook(handler, "no_text")
            return
        with self._cond:
            call = SlackCall(
                "webhook",
                self.webhook_channel,
                self._new_ts(),
                None,
                text,
                blocks,
                time.monotonic(),
                _metadata(payload.get("metadata")),
            )
            self._by_ts[(call.channel, call.ts)] = call
            self._accept("webhook", self.webhook_channel, call, after)
        self._answer_accepted(handler, "ok", "text/plain", after)

    def _scripted(
        self, handler: _Handler, method: str, channel: str | None, *, webhook: bool
    ) -> Literal[True] | Fail | None:
        """Apply the next scripted failure for `method`, or the outage.

        True when the call was answered; a `Fail` to apply once the post is kept; None
        to handle the call normally.
        """
        with self._cond:
            fail = next((f for f in self._script if f.applies_to(method)), None)
            if fail is not None:
                self._script.remove(fail)
            elif self._outage:
                fail = Fail.status(503)
        if fail is None:
            return None
        if fail.accept:
            return fail
        if fail.action == "delay":
            self._closing.wait(fail.seconds)
            return None
        if fail.action == "error":
            error = fail.slack_error or "fatal_error"
            if webhook:
                self._answer_webhook(handler, error)
            else:
                self._answer_api(handler, method, channel, {"ok": False, "error": error})
            return True
        if fail.action == "status":
            error = _DEFAULT_STATUS_ERROR.get(fail.code, f"http_{fail.code}")
            self._record(method, channel, f"status {fail.code}")
            headers = {} if fail.retry_after is None else {"Retry-After": f"{fail.retry_after:g}"}
            if fail.body is not None:
                handler.reply(fail.code, fail.body, "text/html", headers)
            elif webhook:
                handler.reply(fail.code, error, "text/plain", headers)
            else:
                body = json.dumps({"ok": False, "error": error})
                handler.reply(fail.code, body, "application/json", headers)
            return True
        if fail.action == "hang":
            self._record(method, channel, "hang")
            self._closing.wait(fail.seconds)
            handler.close_connection = True
            return True
        self._record(method, channel, "reset")
        handler.abort()
        return True

    def _answer_api(
        self, handler: _Handler, method: str, channel: str | None, answer: Mapping[str, Any]
    ) -> None:
        self._record(method, channel, f"error {answer['error']}")
        handler.reply(200, json.dumps(answer), "application/json", self._scope_header())

    def _answer_webhook(self, handler: _Handler, error: str) -> None:
        self._record("webhook", self.webhook_channel, f"error {error}")
        handler.reply(_WEBHOOK_ERROR_STATUS.get(error, 400), error)

    def _accept(
        self, method: str, channel: str | None, call: SlackCall, after: Fail | None = None
    ) -> None:
        """Record an accepted call; the caller holds the condition."""
        outcome = "ok" if after is None else f"accepted, then {after.action}"
        self._messages.append(call)
        self._attempts.append(
            Attempt(method, call.channel, outcome, call.received_at, self._caller_token())
        )
        if call.method != "chat.update":
            self._post_times.setdefault(call.channel, []).append(call.received_at)
        self._cond.notify_all()

    def _record(self, method: str, channel: str | None, outcome: str) -> None:
        with self._cond:
            cid = None if channel is None else channel_id(channel)
            calls = self._attempts if method in _POSTING else self._reads
            calls.append(Attempt(method, cid, outcome, time.monotonic(), self._caller_token()))
            self._cond.notify_all()

    def _caller_token(self) -> str:
        return str(getattr(self._caller, "token", ""))

    def _tokens_snapshot(self) -> set[str]:
        """The accepted bot tokens: `token` (a test may replace it: a revoked token) and
        those added."""
        with self._cond:
            return {self.token, *self._more_tokens}

    def _missing_snapshot(self) -> set[str]:
        with self._cond:
            return set(self._missing)

    def _new_ts(self) -> str:
        """Wall-clock time as Slack writes it, unique (the caller holds the condition)."""
        micros = max(time.time_ns() // 1000, self._last_ts_micros + 1)
        self._last_ts_micros = micros
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # close() must not wait for a client that never sends its body
    fake: FakeSlack

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client gone before its answer (killed, timed out) is part of the tests."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        self.server.fake._handle(self)

    def do_GET(self) -> None:
        self.server.fake._handle(self)

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def reply(
        self,
        status: int,
        body: str,
        content_type: str = "text/plain",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        data = body.encode()
        self.send_response(status, _phrase(status))
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def abort(self) -> None:
        """Close with RST instead of FIN, as a crashed proxy or load balancer would."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read `attempts`, not stderr."""


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _bearer(header: str) -> str:
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def _parse_params(content_type: str, body: bytes) -> dict[str, Any]:
    """Slack accepts JSON and form bodies; the SDK sends chat.* as JSON."""
    if content_type.startswith("application/json"):
        try:
            parsed = json.loads(body or b"{}")
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}


def _blocks(raw: object) -> tuple[dict[str, Any], ...]:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return ()
    if isinstance(raw, Sequence) and not isinstance(raw, str):
        return tuple(b for b in raw if isinstance(b, dict))
    return ()


def _message_json(call: SlackCall, *, metadata: bool = False) -> dict[str, Any]:
    """A message as Slack shows it; metadata only where asked for (`include_all_metadata`)."""
    message: dict[str, Any] = {
        "type": "message",
        "user": "U0FAKE000",
        "bot_id": "B0FAKE000",
        "text": call.text,
        "ts": call.ts,
        "blocks": list(call.blocks),
    }
    if call.thread_ts is not None:
        message["thread_ts"] = call.thread_ts
    if metadata and call.metadata is not None:
        message["metadata"] = call.metadata
    return message


def _metadata(raw: object) -> dict[str, Any] | None:
    """Slack keeps metadata with an `event_type` and an object `event_payload`."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return None
    if not isinstance(raw, dict) or not isinstance(raw.get("event_type"), str):
        return None
    payload = raw.get("event_payload")
    return {"event_type": raw["event_type"], "event_payload": payload if payload else {}}


@dataclass(frozen=True, slots=True)
class _Window:
    """`oldest`/`latest`/`inclusive` of a history call: exclusive bounds unless inclusive."""

    oldest: float
    latest: float
    inclusive: bool

    @classmethod
    def of(cls, params: Mapping[str, Any]) -> _Window:
        return cls(
            float(params.get("oldest") or 0),
            float(params.get("latest") or "inf"),
            _truthy(params.get("inclusive")),
        )

    def holds(self, ts: str) -> bool:
        at = float(ts)
        if self.inclusive:
            return self.oldest <= at <= self.latest
        return self.oldest < at < self.latest


def _ts_key(call: SlackCall) -> tuple[int, int]:
    seconds, _, micros = call.ts.partition(".")
    return int(seconds), int(micros or 0)


def _truthy(value: object) -> bool:
    return str(value).lower() in ("1", "true")


def _cursor(offset: int) -> str:
    return base64.b64encode(f"next_offset:{offset}".encode()).decode()


def _cursor_offset(cursor: str) -> int | None:
    if not cursor:
        return 0
    try:
        prefix, _, offset = base64.b64decode(cursor).decode().partition(":")
        return int(offset) if prefix == "next_offset" else None
    except ValueError:
        return None


def _name_of(channel: str) -> str:
    return channel.strip().lstrip("#").lower()


def main(argv: Sequence[str] | None = None) -> None:
    """Serve a FakeSlack until killed, printing the API URL and webhook URL first."""
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.slack", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default="xoxb-test-token")
    parser.add_argument("--webhook-channel", default="#voice-oncall")
    args = parser.parse_args(argv)
    fake = FakeSlack(
        args.token, webhook_channel=args.webhook_channel, host=args.host, port=args.port
    )
    with fake:
        print(fake.api_url, flush=True)
        print(fake.webhook_url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
