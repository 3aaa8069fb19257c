"""Deliver notifications to Slack through the bot API or an incoming webhook.

Each `deliver` call is exactly one delivery attempt: the SDK's own retry handlers are
switched off because the outbox owns the retry policy (one retry policy per remote), and
a hidden SDK retry would double the wait and blur the attempt count.

Exactly once in bot mode. Every post carries message metadata (`event_type`
`watchdog_notification`, with the alert id, the transition and its time) that names the
notification it delivers. When an earlier attempt may have been accepted without the
answer arriving (`in_doubt_since` given), the bot first looks for that post in the
channel history (or the alert's thread) from a little before the first attempt, and
adopts it instead of posting again. That needs the `channels:history` scope
(`groups:history` in private channels) and `channels:read` (`groups:read`) to turn a
`#name` into the channel id the history takes. Without them the post is made again:
at least once, reported once per cause as `notify.guarantee`. Webhooks cannot read
history: webhook delivery is at least once.

Which failures leave a post in doubt (`NotifyError.in_doubt`): a timeout or a connection
closed or reset after the request was sent, an answer that is not JSON, HTTP 5xx other
than 503 (a proxy's 502/504 says nothing about Slack behind it), and `ok: false` with
`fatal_error` or `internal_error` (Slack documents that part of such a call may have
succeeded). A refused connection, a failed name lookup, 503 and `service_unavailable`,
408 and `request_timeout`, 429 and every other Slack error say the post was not made.

Every failure leaves as a `NotifyError` whose `recoverable` flag decides retry versus dead
letter. The SDK's exceptions are never chained onto it: their frames hold the token (in
the Authorization header) or the webhook URL (which *is* the secret), and a traceback
renderer that shows locals would print them. Reasons quote Slack's error string and are
scrubbed of the secret anyway.
"""

from __future__ import annotations

import functools
import http.client
import logging
import re
import socket
import threading
import urllib.error
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

import structlog
from pydantic import SecretStr
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web import SlackResponse
from slack_sdk.webhook import WebhookClient

from watchdog.audit import Event, get_logger
from watchdog.errors import NotifyError
from watchdog.model import MessageRef, Notification, TransitionKind
from watchdog.notify.grouping import reply_of
from watchdog.notify.render import (
    RenderedMessage,
    render,
    render_card_update,
    render_reply,
    render_top_level,
)
from watchdog.notify.report_card import prerendered

__all__ = [
    "EVENT_TYPE",
    "LOOKUP_MARGIN",
    "SLACK_TIMEOUT",
    "Guarantee",
    "SlackBotNotifier",
    "SlackWebhookNotifier",
    "metadata",
]

_SDK_LOGGER = logging.getLogger("watchdog.notify.slack_sdk")
"""Handed to the SDK clients and silenced: their debug lines include the webhook URL."""
_SDK_LOGGER.setLevel(logging.CRITICAL + 1)
_SDK_LOGGER.propagate = False
_SDK_LOGGER.addHandler(logging.NullHandler())

SLACK_TIMEOUT = 10.0
"""Seconds one Slack call may take before it is abandoned (and, for a post, in doubt)."""
EVENT_TYPE = "watchdog_notification"
"""The metadata `event_type` of every post; the lookup recognises our posts by it."""
LOOKUP_MARGIN = timedelta(minutes=2)
"""The lookup starts this long before the first attempt: room for clock skew to Slack."""
LOOKUP_SCOPES = ("channels:history", "channels:read", "groups:history", "groups:read")
"""Scopes the lookup needs: history to find a post, read to resolve `#name` to an id."""

_LOOKUP_PAGE = 200
_LOOKUP_MAX_PAGES = 50
"""Beyond this many pages the search gives up: posted again, and reported."""
_RATE_LIMITED = frozenset({"ratelimited", "rate_limited"})
_TRANSIENT = frozenset({"fatal_error", "internal_error", "service_unavailable", "request_timeout"})
_MAYBE_DONE = frozenset({"fatal_error", "internal_error"})
"""Slack documents that part of a call failing with these may have succeeded."""
_NOT_PROCESSED_STATUS = frozenset({408, 429, 503})
"""Refused before the request was processed: timeout reading it, rate limit, unavailable."""
_MESSAGE_GONE = frozenset({"message_not_found", "cant_update_message"})
_RECOVERABLE_STATUS = frozenset({408, 429})
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{8,}$")
_REDACTED = "**********"


@dataclass(frozen=True, slots=True)
class Guarantee:
    """What a notifier promises about duplicate posts, and why.

    `exactly_once` is None when it could not be determined (Slack unreachable, or its
    answer did not list the token's scopes); a missing scope then shows at the first
    lookup.
    """

    exactly_once: bool | None
    reason: str

    @property
    def name(self) -> str:
        return {True: "exactly-once", False: "at-least-once", None: "unknown"}[self.exactly_once]


def metadata(note: Notification) -> dict[str, Any]:
    """The message metadata naming the notification a post delivers.

    Alert id, transition and its time identify one notification (an alert fires and
    resolves once per episode; its repeats differ by time); rule and series are for
    people reading the metadata.
    """
    return {
        "event_type": EVENT_TYPE,
        "event_payload": {
            **_identity(note),
            "rule": note.rule,
            "series": note.series,
        },
    }


def _identity(note: Notification) -> dict[str, str]:
    return {"alert_id": note.alert_id, "transition": note.kind.value, "at": note.at.isoformat()}


class _Failure(Exception):
    """One failed API call, with Slack's error code kept for callers that can work around it."""

    def __init__(self, error: NotifyError, slack_error: str | None = None) -> None:
        super().__init__(error.reason)
        self.error = error
        self.slack_error = slack_error


class _LookupUnavailable(Exception):
    """The history cannot be searched (a missing scope, say): post again, at least once."""

    def __init__(self, cause: str, reason: str) -> None:
        super().__init__(reason)
        self.cause = cause
        self.reason = reason


@dataclass(frozen=True, slots=True)
class _Answer:
    data: Mapping[str, Any]
    headers: Mapping[str, Any]


class SlackBotNotifier:
    """Posts with a bot token; threads repeats and resolutions under the firing message.

    A resolution, an escalation, a de-escalation, flapping and a firing after flapping
    (a FIRING whose card exists) edit the original message (idempotent, so a retry after
    a failed thread reply is harmless) and then reply in its thread; none posts a new
    card. If the original is gone, it posts a new self-contained message instead of
    failing forever. An annotation (`Acknowledged by ...`) only edits the original;
    without one (never posted, or gone) there is nothing to annotate and it is done.
    Posts are exactly once where the token may read the channel's history (see the
    module docstring).

    With `buttons` (Socket Mode is on) firing cards carry the Acknowledge and Silence
    controls (`watchdog.notify.render`).
    """

    name: str = "slack-bot"
    DEFAULT_API_URL: ClassVar[str] = WebClient.BASE_URL

    def __init__(
        self,
        token: SecretStr,
        *,
        api_url: str | None = None,
        timeout: float = SLACK_TIMEOUT,
        logger: structlog.typing.FilteringBoundLogger | None = None,
        buttons: bool = False,
    ) -> None:
        self._token = token
        self._buttons = buttons
        self._api_url = api_url or self.DEFAULT_API_URL
        self._client = WebClient(
            token=token.get_secret_value(),
            base_url=self._api_url,
            timeout=timeout,  # type: ignore[arg-type]  # urllib takes float seconds
            logger=_SDK_LOGGER,
            retry_handlers=[],
        )
        self._log = get_logger() if logger is None else logger
        self._channel_ids: dict[str, str] = {}
        """`#name` (normalised) -> channel id, learned from Slack's answers."""
        self._reported: set[str] = set()
        self._report_lock = threading.Lock()
        self._fence: Callable[[], str | None] = lambda: None

    def fence_with(self, closed: Callable[[], str | None]) -> None:
        """Ask `closed()` before every post or edit; a reason stops it (not the leader).

        Checked per request, not per delivery: a delivery that first searches the history
        for an earlier post may take many requests, and each post must start while this
        daemon may post (see `watchdog.leadership`). The refusal is recoverable and keeps
        the entry in doubt (an earlier request of the delivery may have posted).
        """
        self._fence = closed

    def __repr__(self) -> str:
        return f"SlackBotNotifier(api_url={self._api_url!r}, token={_REDACTED!r})"

    # --- the guarantee ---

    def guarantee(self) -> Guarantee:
        """Ask Slack (`auth.test`) which scopes the token has, and say what that allows.

        Slack lists a token's scopes in the `x-oauth-scopes` header of every answer.
        """
        try:
            answer = self._call("auth.test", self._client.auth_test)
        except _Failure as exc:
            return Guarantee(None, f"cannot tell: {exc.error.reason}")
        raw = _header(answer.headers, "x-oauth-scopes")
        if raw is None:
            return Guarantee(None, "cannot tell: Slack did not list the token's scopes")
        granted = {scope.strip() for scope in raw.split(",")}
        missing = [scope for scope in LOOKUP_SCOPES if scope not in granted]
        if not missing:
            return Guarantee(True, "the bot token may read channel history (" + raw + ")")
        where = "" if any(s.startswith("channels:") for s in missing) else " in private channels"
        return Guarantee(
            False,
            f"the bot token lacks {', '.join(missing)}: a post whose answer was lost may be "
            f"repeated{where} (add the scopes and reinstall the Slack app)",
        )

    def bot_name(self) -> str | None:
        """The bot user's name (`auth.test`), for telling people whom to invite; None if unknown."""
        try:
            answer = self._call("auth.test", self._client.auth_test)
        except _Failure:
            return None
        name = answer.data.get("user")
        return name if isinstance(name, str) and name else None

    def announce_guarantee(self) -> Guarantee:
        """Determine the guarantee and log it once as `notify.guarantee` (for start-up)."""
        guarantee = self.guarantee()
        if guarantee.exactly_once is False:
            with self._report_lock:
                self._reported.add("missing_scope")
        log = self._log.info if guarantee.exactly_once else self._log.warning
        log(Event.NOTIFY_GUARANTEE, guarantee=guarantee.name, reason=guarantee.reason)
        return guarantee

    def _fall_back(self, unavailable: _LookupUnavailable) -> None:
        """Say once per cause that posts go out at least once because the lookup failed."""
        with self._report_lock:
            if unavailable.cause in self._reported:
                return
            self._reported.add(unavailable.cause)
        self._log.warning(
            Event.NOTIFY_GUARANTEE, guarantee="at-least-once", reason=unavailable.reason
        )

    # --- delivering ---

    def deliver(
        self,
        note: Notification,
        original: MessageRef | None,
        *,
        in_doubt_since: datetime | None = None,
    ) -> MessageRef | None:
        """Deliver one notification; return where the alert's message now lives.

        FIRING returns the new message. REPEAT and RESOLVED return `original`, or the new
        top-level message when there was no original (or it could no longer be edited).
        With `in_doubt_since` (when the first attempt started, one of which may have been
        accepted unseen), the post is first looked for and adopted if found.
        """
        _require_notified(note)
        failure: _Failure
        try:
            edit = note.kind is TransitionKind.REPORT and original is not None
            if (
                in_doubt_since is not None
                and note.kind is not TransitionKind.ANNOTATION
                and not edit
            ):
                found = self._find_earlier_post(note, original, in_doubt_since)
                if found is not None:
                    return found
            return self._deliver(note, original)
        except _Failure as exc:
            failure = exc
        raise failure.error

    def _deliver(self, note: Notification, original: MessageRef | None) -> MessageRef | None:
        if note.kind is TransitionKind.REPORT:
            if original is not None:  # a storm's summary card, edited in place
                self._update(original, prerendered(note)[0])
                return original
            return self._post(note, note.channel, prerendered(note)[0])
        if note.kind is TransitionKind.GROUP:
            return self._group(note, original)
        if note.kind is TransitionKind.FIRING and original is None:
            return self._post(note, note.channel, render(note, buttons=self._buttons))
        if note.kind is TransitionKind.ANNOTATION:
            return self._annotate(note, original)
        if original is None:
            return self._post(note, note.channel, render_top_level(note))
        if note.kind is not TransitionKind.REPEAT:
            try:
                self._update(original, render_card_update(note, buttons=self._buttons))
            except _Failure as exc:
                if exc.slack_error not in _MESSAGE_GONE:
                    raise
                return self._post(note, original.channel, render_top_level(note))
        self._post(note, original.channel, render_reply(note), thread_ts=original.ts)
        return original

    def _group(self, note: Notification, original: MessageRef | None) -> MessageRef:
        """Post a group's card, or edit it in place and reply in its thread (who joined)."""
        card = prerendered(note)[0]
        if original is None:
            return self._post(note, note.channel, card)
        try:
            self._update(original, card)
        except _Failure as exc:
            if exc.slack_error not in _MESSAGE_GONE:
                raise
            return self._post(note, original.channel, card)
        reply = reply_of(note)
        if reply is not None:
            block = {"type": "section", "text": {"type": "plain_text", "text": reply}}
            message = RenderedMessage(text=reply, blocks=[block])
            self._post(note, original.channel, message, thread_ts=original.ts)
        return original

    def _annotate(self, note: Notification, original: MessageRef | None) -> MessageRef | None:
        """Edit the card in place; a card never posted, or gone, has nothing to annotate."""
        if original is None:
            return None
        try:
            self._update(original, render(note, buttons=self._buttons))
        except _Failure as exc:
            if exc.slack_error not in _MESSAGE_GONE:
                raise
        return original

    def _post(
        self,
        note: Notification,
        channel: str,
        message: RenderedMessage,
        *,
        thread_ts: str | None = None,
    ) -> MessageRef:
        where = f"chat.postMessage to {channel}"
        self._check_fence(where)
        answer = self._call(
            where,
            lambda: self._client.chat_postMessage(
                channel=channel,
                text=message.text,
                blocks=message.blocks,
                thread_ts=thread_ts,
                metadata=metadata(note),
            ),
            posting=True,
        )
        ref = _message_ref(answer.data, where)
        if not _CHANNEL_ID.match(channel):
            self._channel_ids[_channel_key(channel)] = ref.channel
        return ref

    def _update(self, original: MessageRef, message: RenderedMessage) -> None:
        where = f"chat.update of {original.channel}/{original.ts}"
        self._check_fence(where)
        self._call(
            where,
            lambda: self._client.chat_update(
                channel=original.channel, ts=original.ts, text=message.text, blocks=message.blocks
            ),
        )

    def _check_fence(self, where: str) -> None:
        closed = self._fence()
        if closed is not None:
            raise _Failure(
                NotifyError(f"{where}: not sent: {closed}", recoverable=True, in_doubt=True)
            )

    # --- finding a post whose answer was lost ---

    def _find_earlier_post(
        self, note: Notification, original: MessageRef | None, since: datetime
    ) -> MessageRef | None:
        """The message an earlier attempt of `note` posted, as `_deliver` would return it.

        None when there is none (or the history cannot be searched: then reported once,
        and the caller posts again). A failure to search raises, still in doubt.
        """
        oldest = _slack_ts(since - LOOKUP_MARGIN)
        try:
            if original is not None:
                if self._in_thread(note, original, oldest):
                    self._found(note, original)
                    return original
                if note.kind is TransitionKind.REPEAT:
                    return None
                channel: str | None = original.channel  # the fallback when the card was gone
            else:
                channel = self._channel_id(note.channel)
            found = None if channel is None else self._search_history(note, channel, oldest)
        except _LookupUnavailable as unavailable:
            self._fall_back(unavailable)
            return None
        if found is not None:
            self._found(note, found)
        return found

    def _found(self, note: Notification, ref: MessageRef) -> None:
        self._log.info(
            Event.NOTIFY_FOUND,
            alert_id=note.alert_id,
            kind=note.kind.value,
            channel=ref.channel,
            ts=ref.ts,
        )

    def _search_history(self, note: Notification, channel: str, oldest: str) -> MessageRef | None:
        where = f"conversations.history of {channel}"
        for message in self._pages(
            where,
            "messages",
            lambda cursor: self._client.conversations_history(
                channel=channel,
                oldest=oldest,
                include_all_metadata=True,
                limit=_LOOKUP_PAGE,
                cursor=cursor,
            ),
        ):
            if _is_post_of(message, note):
                return MessageRef(channel=channel, ts=str(message["ts"]))
        return None

    def _in_thread(self, note: Notification, original: MessageRef, oldest: str) -> bool:
        where = f"conversations.replies of {original.channel}/{original.ts}"
        try:
            for message in self._pages(
                where,
                "messages",
                lambda cursor: self._client.conversations_replies(
                    channel=original.channel,
                    ts=original.ts,
                    oldest=oldest,
                    include_all_metadata=True,
                    limit=_LOOKUP_PAGE,
                    cursor=cursor,
                ),
            ):
                if _is_post_of(message, note):
                    return True
        except _LookupUnavailable as unavailable:
            if unavailable.cause != "thread_not_found":
                raise
        return False  # also when there is no thread (the card is gone): nothing replied there

    def _channel_id(self, channel: str) -> str | None:
        """The id of `channel` (an id, or a `#name` resolved with `conversations.list`).

        None when no channel of that name is visible to the bot: no post can be there.
        """
        if _CHANNEL_ID.match(channel):
            return channel
        key = _channel_key(channel)
        if key not in self._channel_ids:
            self._channel_ids.update(self._list_channels())
        return self._channel_ids.get(key)

    def _list_channels(self) -> dict[str, str]:
        """Every channel the bot sees, by name; public only if private ones are not allowed."""
        try:
            return self._channels_of("public_channel,private_channel")
        except _LookupUnavailable as unavailable:
            if unavailable.cause != "missing_scope":
                raise
        return self._channels_of("public_channel")

    def _channels_of(self, types: str) -> dict[str, str]:
        return {
            _channel_key(str(c.get("name") or "")): str(c["id"])
            for c in self._pages(
                "conversations.list",
                "channels",
                lambda cursor: self._client.conversations_list(
                    types=types, exclude_archived=True, limit=1000, cursor=cursor
                ),
            )
            if c.get("id")
        }

    def _pages(
        self, where: str, key: str, call: Callable[[str | None], SlackResponse]
    ) -> Iterator[Mapping[str, Any]]:
        """The items under `key` of every page of a cursor-paged lookup call."""
        cursor: str | None = None
        for _ in range(_LOOKUP_MAX_PAGES):
            data = self._lookup_call(where, functools.partial(call, cursor)).data
            items = data.get(key)
            if isinstance(items, list):
                yield from (item for item in items if isinstance(item, Mapping))
            meta = data.get("response_metadata")
            cursor = meta.get("next_cursor") if isinstance(meta, Mapping) else None
            if not cursor:
                return
        reason = f"{where}: more than {_LOOKUP_MAX_PAGES} pages since the first attempt"
        raise _LookupUnavailable("too_many_pages", reason)

    def _lookup_call(self, where: str, call: Callable[[], SlackResponse]) -> _Answer:
        """A lookup call: transient failures keep the post in doubt, others end the search."""
        try:
            return self._call(where, call)
        except _Failure as exc:
            error = exc.error
            if not error.recoverable:
                cause = exc.slack_error or "unusable"
                raise _LookupUnavailable(cause, error.reason) from None
            failure = _Failure(
                NotifyError(
                    f"looking for an earlier post: {error.reason}",
                    recoverable=True,
                    retry_after=error.retry_after,
                    in_doubt=True,
                ),
                exc.slack_error,
            )
        raise failure

    # --- one call ---

    def _call(
        self, where: str, call: Callable[[], SlackResponse], *, posting: bool = False
    ) -> _Answer:
        """Make one API call; every failure becomes a `_Failure` raised outside the `except`.

        With `posting`, a failure that leaves it unknown whether Slack accepted the post
        carries `in_doubt`.
        """
        failure: _Failure
        try:
            response = call()
        except SlackApiError as exc:
            failure = self._from_api_error(where, exc, posting=posting)
        except (OSError, http.client.HTTPException) as exc:
            doubt = posting and _maybe_sent(exc)
            failure = _Failure(
                _unreachable(where, exc, self._token.get_secret_value(), in_doubt=doubt)
            )
        except (SlackClientError, ValueError) as exc:
            reason = f"{where}: cannot send ({type(exc).__name__}), check the API URL"
            failure = _Failure(NotifyError(reason, recoverable=False))
        else:
            if isinstance(response.data, Mapping):
                return _Answer(response.data, response.headers)
            failure = _Failure(
                NotifyError(f"{where}: response is not JSON", recoverable=True, in_doubt=posting)
            )
        raise failure

    def _from_api_error(self, where: str, exc: SlackApiError, *, posting: bool) -> _Failure:
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
                in_doubt=posting and _maybe_done(status, error),
            )
        else:
            needed = data.get("needed") if isinstance(data, Mapping) else None
            needed = needed if error == "missing_scope" and isinstance(needed, str) else None
            notify = NotifyError(
                f"{where}: {error}" + (f" (needs {needed})" if needed else ""),
                recoverable=False,
                slack_error=error,
                needed_scope=needed,
            )
        return _Failure(notify, slack_error=error)


class SlackWebhookNotifier:
    """Posts through an incoming webhook: no threads, no edits, so every kind is a new message.

    Webhooks cannot return a message reference, so `deliver` always returns None. Nor can
    they read history, so a post whose answer was lost is posted again: at least once.
    """

    name: str = "slack-webhook"

    def __init__(self, url: SecretStr, *, timeout: float = SLACK_TIMEOUT) -> None:
        self._url = url
        self._client = WebhookClient(
            url=url.get_secret_value(),
            timeout=timeout,  # type: ignore[arg-type]  # urllib takes float seconds
            logger=_SDK_LOGGER,
            retry_handlers=[],
        )

    def __repr__(self) -> str:
        return f"SlackWebhookNotifier(url={_REDACTED!r})"

    def guarantee(self) -> Guarantee:
        """Always at least once: a webhook cannot look for a post whose answer was lost."""
        return Guarantee(False, "an incoming webhook cannot look for a post whose answer was lost")

    def deliver(
        self,
        note: Notification,
        original: MessageRef | None,
        *,
        in_doubt_since: datetime | None = None,
    ) -> MessageRef | None:
        """Post one self-contained message; `original` and `in_doubt_since` are ignored.

        An annotation is an edit of the card, which a webhook cannot make: nothing is sent.
        """
        del original, in_doubt_since
        _require_notified(note)
        if note.kind is TransitionKind.ANNOTATION:
            return None
        if note.kind in (TransitionKind.REPORT, TransitionKind.GROUP):
            message = prerendered(note)[0]
        else:
            message = render_top_level(note)
        error = self._send(note, message)
        if error is not None:
            raise error
        return None

    def _send(self, note: Notification, message: RenderedMessage) -> NotifyError | None:
        """Send once; return the error for `deliver` to raise outside this `except`."""
        secret = self._url.get_secret_value()
        try:
            response = self._client.send(
                text=message.text, blocks=message.blocks, metadata=metadata(note)
            )
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


def _is_post_of(message: Mapping[str, Any], note: Notification) -> bool:
    """Whether a message from the history carries the metadata of `note`."""
    meta = message.get("metadata")
    if not isinstance(meta, Mapping) or meta.get("event_type") != EVENT_TYPE:
        return False
    payload = meta.get("event_payload")
    if not isinstance(payload, Mapping) or not isinstance(message.get("ts"), str):
        return False
    return all(payload.get(key) == value for key, value in _identity(note).items())


def _channel_key(channel: str) -> str:
    return channel.strip().lstrip("#").lower()


def _slack_ts(at: datetime) -> str:
    """A Slack message timestamp (`seconds.micros`) for an aware datetime."""
    return f"{at.timestamp():.6f}"


def _header(headers: Mapping[str, Any], name: str) -> str | None:
    for key, value in headers.items():
        if str(key).lower() == name:
            raw = value[0] if isinstance(value, list | tuple) and value else value
            return str(raw)
    return None


def _maybe_done(status: int, error: str) -> bool:
    """Whether a failed answer leaves it open that Slack kept the post."""
    if error in _MAYBE_DONE:
        return True
    return status >= 500 and status not in _NOT_PROCESSED_STATUS


def _maybe_sent(exc: BaseException) -> bool:
    """False only when the request certainly never reached Slack (refused, no address)."""
    cause: object = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    return not isinstance(cause, ConnectionRefusedError | socket.gaierror)


def _unreachable(
    where: str, exc: BaseException, secret: str, *, in_doubt: bool = False
) -> NotifyError:
    """Connection refused, reset, timed out: the request may never have reached Slack."""
    cause: object = getattr(exc, "reason", None) or exc
    detail = str(cause) or type(cause).__name__
    if isinstance(cause, TimeoutError) or "timed out" in detail:
        detail = "timed out"
    return NotifyError(
        f"{where}: unreachable: {_scrub(detail, secret)[:120]}",
        recoverable=True,
        in_doubt=in_doubt,
    )


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
