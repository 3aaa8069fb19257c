"""Deliver notifications to Slack through the bot API or an incoming webhook.

Each `deliver` call is exactly one delivery attempt: the SDK's own retry handlers are
switched off because the outbox owns the retry policy (one retry policy per remote), and
a hidden SDK retry would double the wait and blur the attempt count.

Every failure leaves as a `NotifyError` whose `recoverable` flag decides retry versus dead
letter. The SDK's exceptions are never chained onto it: their frames hold the token (in
the Authorization header) or the webhook URL (which *is* the secret), and a traceback
renderer that shows locals would print them. Reasons quote Slack's error string and are
scrubbed of the secret anyway.
"""

from __future__ import annotations

import http.client
import logging
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from pydantic import SecretStr
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web import SlackResponse
from slack_sdk.webhook import WebhookClient

from watchdog.errors import NotifyError
from watchdog.model import MessageRef, Notification, TransitionKind
from watchdog.notify.render import (
    RenderedMessage,
    render,
    render_resolved_original,
    render_top_level,
)

__all__ = ["SlackBotNotifier", "SlackWebhookNotifier"]

_SDK_LOGGER = logging.getLogger("watchdog.notify.slack_sdk")
"""Handed to the SDK clients and silenced: their debug lines include the webhook URL."""
_SDK_LOGGER.setLevel(logging.CRITICAL + 1)
_SDK_LOGGER.propagate = False
_SDK_LOGGER.addHandler(logging.NullHandler())

_RATE_LIMITED = frozenset({"ratelimited", "rate_limited"})
_TRANSIENT = frozenset({"fatal_error", "internal_error", "service_unavailable", "request_timeout"})
_MESSAGE_GONE = frozenset({"message_not_found", "cant_update_message"})
_RECOVERABLE_STATUS = frozenset({408, 429})
_REDACTED = "**********"


class _Failure(Exception):
    """One failed API call, with Slack's error code kept for callers that can work around it."""

    def __init__(self, error: NotifyError, slack_error: str | None = None) -> None:
        super().__init__(error.reason)
        self.error = error
        self.slack_error = slack_error


class SlackBotNotifier:
    """Posts with a bot token; threads repeats and resolutions under the firing message.

    A resolution edits the original message (idempotent, so a retry after a failed thread
    reply is harmless) and then replies in its thread. If the original is gone, it posts
    a new self-contained resolved message instead of failing forever.
    """

    name: str = "slack-bot"
    DEFAULT_API_URL: ClassVar[str] = WebClient.BASE_URL

    def __init__(
        self, token: SecretStr, *, api_url: str | None = None, timeout: float = 10.0
    ) -> None:
        self._token = token
        self._api_url = api_url or self.DEFAULT_API_URL
        self._client = WebClient(
            token=token.get_secret_value(),
            base_url=self._api_url,
            timeout=timeout,  # type: ignore[arg-type]  # urllib takes float seconds
            logger=_SDK_LOGGER,
            retry_handlers=[],
        )

    def __repr__(self) -> str:
        return f"SlackBotNotifier(api_url={self._api_url!r}, token={_REDACTED!r})"

    def deliver(self, note: Notification, original: MessageRef | None) -> MessageRef | None:
        """Deliver one notification; return where the alert's message now lives.

        FIRING returns the new message. REPEAT and RESOLVED return `original`, or the new
        top-level message when there was no original (or it could no longer be edited).
        """
        _require_notified(note)
        failure: _Failure
        try:
            return self._deliver(note, original)
        except _Failure as exc:
            failure = exc
        raise failure.error

    def _deliver(self, note: Notification, original: MessageRef | None) -> MessageRef:
        if note.kind is TransitionKind.FIRING:
            return self._post(note.channel, render(note))
        if original is None:
            return self._post(note.channel, render_top_level(note))
        if note.kind is TransitionKind.RESOLVED:
            try:
                self._update(original, render_resolved_original(note))
            except _Failure as exc:
                if exc.slack_error not in _MESSAGE_GONE:
                    raise
                return self._post(original.channel, render_top_level(note))
        self._post(original.channel, render(note), thread_ts=original.ts)
        return original

    def _post(
        self, channel: str, message: RenderedMessage, *, thread_ts: str | None = None
    ) -> MessageRef:
        where = f"chat.postMessage to {channel}"
        data = self._call(
            where,
            lambda: self._client.chat_postMessage(
                channel=channel, text=message.text, blocks=message.blocks, thread_ts=thread_ts
            ),
        )
        return _message_ref(data, where)

    def _update(self, original: MessageRef, message: RenderedMessage) -> None:
        self._call(
            f"chat.update of {original.channel}/{original.ts}",
            lambda: self._client.chat_update(
                channel=original.channel, ts=original.ts, text=message.text, blocks=message.blocks
            ),
        )

    def _call(self, where: str, call: Callable[[], SlackResponse]) -> Mapping[str, Any]:
        """Make one API call; every failure becomes a `_Failure` raised outside the `except`."""
        failure: _Failure
        try:
            response = call()
        except SlackApiError as exc:
            failure = self._from_api_error(where, exc)
        except (OSError, http.client.HTTPException) as exc:
            failure = _Failure(_unreachable(where, exc, self._token.get_secret_value()))
        except (SlackClientError, ValueError) as exc:
            reason = f"{where}: cannot send ({type(exc).__name__}), check the API URL"
            failure = _Failure(NotifyError(reason, recoverable=False))
        else:
            if isinstance(response.data, Mapping):
                return response.data
            failure = _Failure(NotifyError(f"{where}: response is not JSON", recoverable=True))
        raise failure

    def _from_api_error(self, where: str, exc: SlackApiError) -> _Failure:
        response: object = exc.response
        status = getattr(response, "status_code", None)
        status = status if isinstance(status, int) else 0
        data = getattr(response, "data", None)
        error = str(data.get("error") or "") if isinstance(data, Mapping) else ""
        error = _scrub(error or f"HTTP {status}", self._token.get_secret_value())
        retry_after = _retry_after(getattr(response, "headers", None))
        if status == 429 or error in _RATE_LIMITED:
            notify = NotifyError(
                f"{where}: rate limited ({error})", recoverable=True, retry_after=retry_after
            )
        elif status >= 500 or status in _RECOVERABLE_STATUS or error in _TRANSIENT:
            notify = NotifyError(
                f"{where}: Slack failed (HTTP {status}): {error}",
                recoverable=True,
                retry_after=retry_after,
            )
        else:
            notify = NotifyError(f"{where}: {error}", recoverable=False)
        return _Failure(notify, slack_error=error)


class SlackWebhookNotifier:
    """Posts through an incoming webhook: no threads, no edits, so every kind is a new message.

    Webhooks cannot return a message reference, so `deliver` always returns None.
    """

    name: str = "slack-webhook"

    def __init__(self, url: SecretStr, *, timeout: float = 10.0) -> None:
        self._url = url
        self._client = WebhookClient(
            url=url.get_secret_value(),
            timeout=timeout,  # type: ignore[arg-type]  # urllib takes float seconds
            logger=_SDK_LOGGER,
            retry_handlers=[],
        )

    def __repr__(self) -> str:
        return f"SlackWebhookNotifier(url={_REDACTED!r})"

    def deliver(self, note: Notification, original: MessageRef | None) -> MessageRef | None:
        """Post one self-contained message; `original` is ignored (webhooks cannot thread)."""
        del original
        _require_notified(note)
        error = self._send(render_top_level(note))
        if error is not None:
            raise error
        return None

    def _send(self, message: RenderedMessage) -> NotifyError | None:
        """Send once; return the error for `deliver` to raise outside this `except`."""
        secret = self._url.get_secret_value()
        try:
            response = self._client.send(text=message.text, blocks=message.blocks)
        except (OSError, http.client.HTTPException) as exc:
            return _unreachable("webhook", exc, secret)
        except (SlackClientError, ValueError) as exc:
            reason = f"webhook: cannot send ({type(exc).__name__}), check the webhook URL"
            return NotifyError(reason, recoverable=False)
        status = response.status_code
        if 200 <= status < 300:
            return None
        body = _scrub(" ".join(str(response.body or "").split())[:100], secret)
        reason = f"webhook: HTTP {status}: {body or 'no body'}"
        if status in _RECOVERABLE_STATUS or status >= 500:
            return NotifyError(reason, recoverable=True, retry_after=_retry_after(response.headers))
        return NotifyError(reason, recoverable=False)


def _require_notified(note: Notification) -> None:
    if not note.kind.notifies:
        raise NotifyError(f"{note.kind.value} transitions are never notified", recoverable=False)


def _message_ref(data: Mapping[str, Any], where: str) -> MessageRef:
    channel, ts = data.get("channel"), data.get("ts")
    if not isinstance(channel, str) or not isinstance(ts, str) or not channel or not ts:
        raise _Failure(
            NotifyError(f"{where}: Slack answered ok without channel and ts", recoverable=False)
        )
    return MessageRef(channel=channel, ts=ts)


def _unreachable(where: str, exc: BaseException, secret: str) -> NotifyError:
    """Connection refused, reset, timed out: the request may never have reached Slack."""
    cause: object = getattr(exc, "reason", None) or exc
    detail = str(cause) or type(cause).__name__
    if isinstance(cause, TimeoutError) or "timed out" in detail:
        detail = "timed out"
    return NotifyError(f"{where}: unreachable: {_scrub(detail, secret)[:120]}", recoverable=True)


def _retry_after(headers: object) -> float | None:
    """Seconds from a `Retry-After` header given in seconds; None when absent or a date."""
    if not isinstance(headers, Mapping):
        return None
    for key, value in headers.items():
        if str(key).lower() != "retry-after":
            continue
        raw = value[0] if isinstance(value, list | tuple) and value else value
        try:
            seconds = float(str(raw).strip())
        except ValueError:
            return None
        return max(seconds, 0.0)
    return None


def _scrub(text: str, secret: str) -> str:
    """Belt and braces: no reason ever quotes the token or webhook URL."""
    return text.replace(secret, _REDACTED) if secret else text
