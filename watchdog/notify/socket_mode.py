"""Listen to Slack: the card's buttons and `/watchdog`, over Socket Mode.

Socket Mode (an app-level `xapp-…` token) needs no inbound port: slack-sdk's built-in
`SocketModeClient` asks `apps.connections.open` for a WebSocket URL, connects out, and
reconnects by itself when the socket drops or Slack asks it to. Its threads receive the
envelopes; this module acknowledges every envelope at once (Slack wants that within
three seconds), hands the work to the daemon's event loop (`run_coroutine_threadsafe`,
so nothing here blocks the loop and the daemon's state is touched only from its own
thread), and answers the person who asked through the request's `response_url`,
ephemerally, from the SDK's thread.

What a request does (`parse_request` is pure):
- the Acknowledge button (`action_id` `ack`, value: the alert id) acknowledges the alert;
- the Silence select (`action_id` `silence`, value: a duration; the alert id in the
  block's id) silences it for that long;
- `/watchdog status` and `/watchdog silences` answer only to the caller.
Presses by anyone not in `[slack] responders` (when it is set) are refused, ephemerally,
and audited as `action.refused`.

Supervision: `SocketMode.run` is one of the daemon's long-lived tasks. A failing
`apps.connections.open` (a revoked token, Slack down) is logged and tried again with
backoff, never a crash: alerts still go out without buttons. A thread of the SDK's that
ends unexpectedly is a crash (`daemon.crashed`), so the loss of the buttons is never
silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any, Protocol

import structlog
from pydantic import SecretStr
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.socket_mode import SocketModeClient
from slack_sdk.socket_mode.client import BaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.webhook import WebhookClient

from watchdog.audit import Event, get_logger
from watchdog.durations import parse_duration
from watchdog.model import AckOutcome
from watchdog.notify.render import ACK_ACTION, ALERT_BLOCK_PREFIX, SILENCE_ACTION

__all__ = ["Command", "Controls", "Request", "SocketMode", "parse_request"]

_SDK_LOGGER = logging.getLogger("watchdog.notify.socket_mode_sdk")
"""Handed to the SDK and silenced: its debug lines quote whole envelopes."""
_SDK_LOGGER.setLevel(logging.CRITICAL + 1)
_SDK_LOGGER.propagate = False
_SDK_LOGGER.addHandler(logging.NullHandler())

ANSWER_WITHIN = 10.0
"""Seconds a request may wait for the daemon's loop before its asker is told nothing."""
WATCH_EVERY = 1.0
"""How often the connection and the SDK's threads are looked at."""
PING_INTERVAL = 5.0
"""The SDK's ping interval; a socket without pongs for four of them is dropped."""
RECONNECT_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
"""Waits between failed `apps.connections.open` calls (the last one repeats)."""

REFUSED = "Sorry, only the watchdog's responders may do that (`[slack] responders`)."
USAGE = "Usage: `/watchdog status` or `/watchdog silences`."


class Command(StrEnum):
    ACK = "ack"
    SILENCE = "silence"
    STATUS = "status"
    SILENCES = "silences"
    USAGE = "usage"


@dataclass(frozen=True, slots=True)
class Request:
    """One thing a person asked for, from a button press or a slash command."""

    command: Command
    user: str
    response_url: str | None = None
    alert_id: str | None = None
    duration: timedelta | None = None

    @property
    def is_press(self) -> bool:
        """Buttons change alerts; only responders may press them."""
        return self.command in (Command.ACK, Command.SILENCE)


class Controls(Protocol):
    """What the Socket Mode handler needs from the daemon; called on the daemon's loop."""

    def acknowledge(self, alert_id: str, by: str) -> AckOutcome: ...

    def silence_from_card(self, alert_id: str, duration: timedelta, by: str) -> str | None:
        """Silence the alert's rule and series; returns what to tell the asker, if anything."""
        ...

    def status_text(self) -> str: ...

    def silences_text(self) -> str: ...

    def may_respond(self, user: str) -> bool:
        """Whether `user` may press the card's buttons (`[slack] responders`)."""
        ...


def parse_request(kind: str, payload: Mapping[str, Any]) -> Request | None:
    """The request in one envelope, or None when it asks for nothing we offer."""
    if kind == "interactive" and payload.get("type") == "block_actions":
        return _press(payload)
    if kind == "slash_commands":
        word = str(payload.get("text") or "").strip().lower()
        command = {"status": Command.STATUS, "silences": Command.SILENCES}.get(word)
        return Request(
            command or Command.USAGE,
            user=str(payload.get("user_id") or ""),
            response_url=_url(payload.get("response_url")),
        )
    return None


def _press(payload: Mapping[str, Any]) -> Request | None:
    user = payload.get("user")
    user_id = str(user.get("id") or "") if isinstance(user, Mapping) else ""
    response_url = _url(payload.get("response_url"))
    actions = payload.get("actions")
    for action in actions if isinstance(actions, list) else []:
        if not isinstance(action, Mapping):
            continue
        if action.get("action_id") == ACK_ACTION and action.get("value"):
            return Request(Command.ACK, user_id, response_url, alert_id=str(action["value"]))
        if action.get("action_id") == SILENCE_ACTION:
            block = str(action.get("block_id") or "")
            selected = action.get("selected_option")
            value = selected.get("value") if isinstance(selected, Mapping) else action.get("value")
            try:
                duration = parse_duration(str(value))
            except ValueError:
                continue
            if block.startswith(ALERT_BLOCK_PREFIX) and duration > timedelta(0):
                alert_id = block.removeprefix(ALERT_BLOCK_PREFIX)
                return Request(
                    Command.SILENCE, user_id, response_url, alert_id=alert_id, duration=duration
                )
    return None


def _url(value: object) -> str | None:
    return (
        str(value) if isinstance(value, str) and value.startswith(("https://", "http://")) else None
    )


def answer(request: Request, controls: Controls) -> str | None:
    """Do what `request` asks (on the daemon's loop); the asker's ephemeral answer, if any."""
    if request.command is Command.ACK:
        assert request.alert_id is not None
        outcome = controls.acknowledge(request.alert_id, request.user)
        if outcome is AckOutcome.NOT_FIRING:
            return f"Alert `{request.alert_id}` is not firing (any more): nothing to acknowledge."
        if outcome is AckOutcome.ALREADY_ACKNOWLEDGED:
            return f"Alert `{request.alert_id}` was already acknowledged."
        return None
    if request.command is Command.SILENCE:
        assert request.alert_id is not None
        assert request.duration is not None
        return controls.silence_from_card(request.alert_id, request.duration, request.user)
    if request.command is Command.STATUS:
        return controls.status_text()
    if request.command is Command.SILENCES:
        return controls.silences_text()
    return USAGE


class SocketMode:
    """The Socket Mode connection of one daemon; see the module docstring."""

    def __init__(
        self,
        app_token: SecretStr,
        *,
        api_url: str | None = None,
        logger: structlog.typing.FilteringBoundLogger | None = None,
        ping_interval: float = PING_INTERVAL,
        timeout: float = 10.0,
    ) -> None:
        self._app_token = app_token
        self._api_url = api_url or WebClient.BASE_URL
        self._log = get_logger() if logger is None else logger
        self._ping_interval = ping_interval
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"SocketMode(api_url={self._api_url!r}, app_token='**********')"

    async def run(self, controls: Controls, stop: asyncio.Event) -> None:
        """Connect, serve requests until `stop`, then close (in the background)."""
        loop = asyncio.get_running_loop()
        client = SocketModeClient(
            app_token=self._app_token.get_secret_value(),
            logger=_SDK_LOGGER,
            web_client=WebClient(
                base_url=self._api_url,
                timeout=int(self._timeout),
                logger=_SDK_LOGGER,
            ),
            ping_interval=self._ping_interval,
            concurrency=4,
        )
        client.socket_mode_request_listeners.append(self._listener(controls, loop))
        try:
            if await self._connect(client, stop):
                await self._watch(client, stop)
        finally:
            # Closing waits for the receiving thread's socket timeout: not on the loop.
            threading.Thread(target=client.close, name="socket-mode-close", daemon=True).start()

    async def _connect(self, client: SocketModeClient, stop: asyncio.Event) -> bool:
        """The first connection; once made, the SDK reconnects by itself. False if stopped."""
        attempt = 0
        while not stop.is_set():
            failure: str
            try:
                await _in_daemon_thread(client.connect)
                return True
            except SlackApiError as exc:
                data = getattr(exc.response, "data", None)
                failure = str(data.get("error")) if isinstance(data, Mapping) else "error"
            except (OSError, SlackClientError, ValueError) as exc:
                failure = f"{type(exc).__name__}: {exc}"
            wait = RECONNECT_BACKOFF[min(attempt, len(RECONNECT_BACKOFF) - 1)]
            attempt += 1
            self._log.error(
                Event.SOCKET_FAILED,
                error=_scrub(failure, self._app_token),
                retry_in=wait,
                attempt=attempt,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
        return False

    async def _watch(self, client: SocketModeClient, stop: asyncio.Event) -> None:
        """Report the connection's ups and downs; an SDK thread that died is a crash.

        A socket the other end closed without a close frame (a reset proxy, a dropped
        NAT mapping) makes the SDK's receiver spin on empty reads, burning a core until its
        ping check calls the socket stale (four ping intervals). Seen here within a second,
        it is closed; the SDK's monitor connects anew at its next check (a ping interval).
        """
        connected: bool | None = None
        while not stop.is_set():
            session = client.current_session
            if session is not None and session.sock is not None and _peer_gone(session.sock):
                await _in_daemon_thread(session.disconnect)
            now = client.is_connected()
            if now != connected:
                connected = now
                event = Event.SOCKET_CONNECTED if now else Event.SOCKET_DISCONNECTED
                (self._log.info if now else self._log.warning)(event)
            for name, runner in (
                ("receiver", client.current_session_runner),
                ("message processor", client.message_processor),
            ):
                if not runner.is_alive():
                    raise RuntimeError(f"Socket Mode: the SDK's {name} thread ended")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), WATCH_EVERY)

    def _listener(
        self, controls: Controls, loop: asyncio.AbstractEventLoop
    ) -> Callable[[BaseSocketModeClient, SocketModeRequest], None]:
        def on_request(client: BaseSocketModeClient, envelope: SocketModeRequest) -> None:
            # In an SDK thread. Acknowledge first: Slack retries envelopes not acked in 3 s.
            client.send_socket_mode_response(SocketModeResponse(envelope_id=envelope.envelope_id))
            request = parse_request(envelope.type, envelope.payload)
            self._log.info(
                Event.SOCKET_REQUEST,
                type=envelope.type,
                envelope_id=envelope.envelope_id,
                command=None if request is None else request.command.value,
                user=None if request is None else request.user,
            )
            if request is None:
                return
            future = asyncio.run_coroutine_threadsafe(self._on_loop(request, controls), loop)
            try:
                reply = future.result(timeout=ANSWER_WITHIN)
            except Exception as exc:  # the daemon's failure must not kill the SDK's worker
                future.cancel()
                self._log.error(
                    Event.SOCKET_REPLY_FAILED,
                    command=request.command.value,
                    error=f"{type(exc).__name__}: {exc}",
                )
                return
            if reply is not None:
                self._reply(request, reply)

        return on_request

    async def _on_loop(self, request: Request, controls: Controls) -> str | None:
        if request.is_press and not controls.may_respond(request.user):
            self._log.warning(
                Event.ACTION_REFUSED,
                user=request.user,
                command=request.command.value,
                alert_id=request.alert_id,
            )
            return REFUSED
        return answer(request, controls)

    def _reply(self, request: Request, text: str) -> None:
        """Tell only the asker (an ephemeral message through the request's response_url)."""
        if request.response_url is None:
            self._log.warning(
                Event.SOCKET_REPLY_FAILED, command=request.command.value, error="no response_url"
            )
            return
        error: str | None = None
        try:
            response = WebhookClient(
                request.response_url, timeout=int(self._timeout), logger=_SDK_LOGGER
            ).send(text=text, response_type="ephemeral", replace_original=False)
            if not 200 <= response.status_code < 300:
                error = f"HTTP {response.status_code}"
        except (OSError, SlackClientError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        if error is not None:
            self._log.warning(Event.SOCKET_REPLY_FAILED, command=request.command.value, error=error)


async def _in_daemon_thread(call: Callable[[], None]) -> None:
    """Run a blocking SDK call off the loop, in a daemon thread.

    Not `asyncio.to_thread`: the default executor is joined at exit, so a connection
    attempt hanging until its timeout would hold a stopping watchdog past systemd's
    patience (the same reason as the outbox worker's Slack calls).
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if done.done():
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def work() -> None:
        error: BaseException | None = None
        try:
            call()
        except BaseException as exc:  # handed to the awaiting coroutine
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop may be closed by now
            loop.call_soon_threadsafe(settle, error)

    threading.Thread(target=work, name="socket-mode-call", daemon=True).start()
    await done


def _peer_gone(sock: socket.socket) -> bool:
    """Whether the other end closed `sock`: an end of file is waiting; nothing is consumed."""
    try:
        with socket.socket(fileno=os.dup(sock.fileno())) as probe:
            return probe.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


def _scrub(text: str, secret: SecretStr) -> str:
    value = secret.get_secret_value()
    return text.replace(value, "**********") if value else text
