"""The ElevenLabs poller: turns one HTTP request into one good `Sample` or one `SourceError`.

This is the only place that talks to ElevenLabs. Everything the network or the API can do
wrong (refused keys, unknown agents, rate limits, outages, timeouts, resets, malformed
bodies, implausible counts) is translated here, at the boundary, into a `SourceError` with
a `PollFailure` reason, so the daemon and the engine never see an httpx exception or a
count they cannot trust. The source knows nothing about rules: it only measures.

The HTTP client is injected (see `build_http_client`) so tests and benchmarks can point a
real client at a loopback fake server, and so one connection pool serves every series.
"""

from __future__ import annotations

import asyncio
import functools
import math
import ssl
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Final, Protocol

import httpx
import pydantic

from watchdog.durations import format_duration
from watchdog.errors import PollFailure, SourceError
from watchdog.model import Sample

LIVE_COUNT_PATH: Final = "/v1/convai/analytics/live-count"
"""Path of the endpoint, appended to the configured base URL."""

MAX_PLAUSIBLE_COUNT: Final = 1_000_000
"""Counts above this are treated as a broken response, not as a traffic spike."""

_DETAIL_EXCERPT_CHARS: Final = 200


def _user_agent() -> str:
    try:
        return f"convai-watchdog/{version('convai-watchdog')}"
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "convai-watchdog/unknown"


USER_AGENT: Final = _user_agent()


class Source(Protocol):
    """Anything that can measure the live count of one series (real API or simulation).

    `poll` either returns a `Sample` for `series` or raises exactly one `SourceError`;
    it never raises anything else on purpose (cancellation still propagates).
    """

    async def poll(self, series: str, agent_id: str | None) -> Sample: ...


class _LiveCount(pydantic.BaseModel):
    """The 200 body. Strict: `true`, `"3"` and `3.0` are not counts."""

    model_config = pydantic.ConfigDict(strict=True, frozen=True)

    count: int = pydantic.Field(ge=0, le=MAX_PLAUSIBLE_COUNT)


def build_http_client(*, timeout: float = 10.0, max_connections: int = 16) -> httpx.AsyncClient:
    """Build the client `LiveCountSource` expects: bounded in time and in connections.

    Every phase (connect, read, write, waiting for a pooled connection) has the same
    explicit limit, so no poll can wait forever. No base URL is set: the source owns it.
    """
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
    if max_connections < 1:
        raise ValueError(f"max_connections must be >= 1, got {max_connections}")
    return httpx.AsyncClient(
        timeout=httpx.Timeout(connect=timeout, read=timeout, write=timeout, pool=timeout),
        limits=httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=30.0,
        ),
        headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
        follow_redirects=False,
        verify=_tls_context(),
    )


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """Loading the CA bundle costs ~70 ms; every client (e.g. one per reload) shares one."""
    return httpx.create_ssl_context()


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """Seconds to wait according to a `Retry-After` header, or None if absent or unparsable.

    Accepts delta-seconds ("30") and an HTTP-date ("Wed, 21 Oct 2015 07:28:00 GMT"),
    measured from `now` (naive datetimes are taken as UTC). A date in the past gives 0.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


class LiveCountSource:
    """Polls `GET {base_url}/v1/convai/analytics/live-count` for one series at a time.

    Guarantees: the API key travels only in the `xi-api-key` header and never appears in
    an error; at most `max_concurrency` requests are in flight however many series are
    polled at once; each poll yields one `Sample` stamped with `now()` when the answer
    arrived, or raises one `SourceError` (chained to the underlying exception, if any).
    The client is borrowed, not owned: closing it is the caller's job.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        api_key: pydantic.SecretStr,
        base_url: str,
        *,
        now: Callable[[], datetime],
        max_concurrency: int = 8,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self._client = client
        self._api_key = api_key
        self._url = _live_count_url(base_url)
        self._now = now
        self._slots = asyncio.Semaphore(max_concurrency)

    def reconfigure(
        self, *, api_key: pydantic.SecretStr, base_url: str, timeout: float, concurrency: int
    ) -> None:
        """Apply reloaded settings from the next poll on; polls in flight finish as they were.

        The client's pool must allow `concurrency` connections (see `build_http_client`);
        the source's own limit is what caps requests in flight.
        """
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self._url = _live_count_url(base_url)
        self._api_key = api_key
        self._client.timeout = httpx.Timeout(timeout)
        self._slots = asyncio.Semaphore(concurrency)

    def __repr__(self) -> str:
        return f"LiveCountSource(url={str(self._url)!r})"

    async def poll(self, series: str, agent_id: str | None) -> Sample:
        """Measure `series` (the workspace when `agent_id` is None, else that agent)."""
        params = {"agent_id": agent_id} if agent_id is not None else None
        async with self._slots:
            try:
                response = await self._client.get(
                    self._url,
                    params=params,
                    headers={"xi-api-key": self._api_key.get_secret_value()},
                )
            except httpx.TimeoutException as exc:
                raise SourceError(
                    series, PollFailure.UNREACHABLE, self._timeout_detail(exc)
                ) from exc
            except httpx.TransportError as exc:
                raise SourceError(
                    series, PollFailure.UNREACHABLE, self._transport_detail(exc)
                ) from exc
            except httpx.DecodingError as exc:
                raise SourceError(
                    series, PollFailure.BAD_RESPONSE, "body could not be decoded"
                ) from exc
            except httpx.HTTPError as exc:  # e.g. TooManyRedirects: nothing a retry fixes
                raise SourceError(
                    series, PollFailure.BAD_RESPONSE, f"request failed: {type(exc).__name__}"
                ) from exc
        at = self._now()
        if response.is_success:
            return Sample(series=series, at=at, count=self._count(series, response))
        raise self._status_error(series, agent_id, response, at)

    def _count(self, series: str, response: httpx.Response) -> int:
        status = response.status_code
        media_type = _media_type(response)
        if media_type != "application/json":
            shown = self._redact(media_type or "none")[:60]
            raise SourceError(
                series,
                PollFailure.BAD_RESPONSE,
                f"expected application/json, got content type {shown}",
                status=status,
            )
        if not response.content.strip():
            raise SourceError(series, PollFailure.BAD_RESPONSE, "empty body", status=status)
        try:
            return _LiveCount.model_validate_json(response.content).count
        except pydantic.ValidationError as exc:
            # Not chained: the validation error quotes the body, and the detail says enough.
            raise SourceError(
                series, PollFailure.BAD_RESPONSE, _describe(exc), status=status
            ) from None

    def _status_error(
        self, series: str, agent_id: str | None, response: httpx.Response, at: datetime
    ) -> SourceError:
        status = response.status_code
        detail = f"HTTP {status}"
        excerpt = _excerpt(response, redact=self._redact)
        if excerpt:
            detail = f"{detail}: {excerpt}"
        if status in (401, 403):
            return SourceError(series, PollFailure.REJECTED_KEY, detail, status=status)
        if status in (404, 422) and agent_id is not None:
            return SourceError(series, PollFailure.UNKNOWN_AGENT, detail, status=status)
        if status == 429:
            wait = retry_after_seconds(response.headers.get("retry-after"), at)
            if wait is not None:
                detail = f"HTTP 429, retry after {format_duration(timedelta(seconds=wait))}"
            return SourceError(
                series, PollFailure.RATE_LIMITED, detail, status=status, retry_after=wait
            )
        if 500 <= status <= 599:
            return SourceError(series, PollFailure.SERVER_ERROR, detail, status=status)
        return SourceError(series, PollFailure.BAD_RESPONSE, detail, status=status)

    def _timeout_detail(self, exc: httpx.TimeoutException) -> str:
        limits = self._client.timeout
        phase, seconds = {
            httpx.ConnectTimeout: ("connect timed out", limits.connect),
            httpx.WriteTimeout: ("write timed out", limits.write),
            httpx.PoolTimeout: ("no free connection", limits.pool),
        }.get(type(exc), ("timed out", limits.read))
        if seconds is None:
            return phase
        return f"{phase} after {format_duration(timedelta(seconds=seconds))}"

    def _transport_detail(self, exc: httpx.TransportError) -> str:
        kind = {
            httpx.ConnectError: "connection failed",
            httpx.ReadError: "connection lost while reading",
            httpx.WriteError: "connection lost while writing",
            httpx.RemoteProtocolError: "protocol error",
            httpx.ProxyError: "proxy error",
        }.get(type(exc), "transport error")
        reason = self._redact(" ".join(str(exc).split()))[:_DETAIL_EXCERPT_CHARS]
        return f"{kind}: {reason}" if reason else kind

    def _redact(self, text: str) -> str:
        """Belt and braces: no text we did not write ourselves may carry the key."""
        secret = self._api_key.get_secret_value()
        return text.replace(secret, "**********") if secret else text


def _live_count_url(base_url: str) -> httpx.URL:
    url = httpx.URL(base_url.rstrip("/") + LIVE_COUNT_PATH)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
    return url


def _describe(exc: pydantic.ValidationError) -> str:
    """One short line for the first problem with a 200 body, e.g. 'count must be >= 0'."""
    error = exc.errors(include_url=False)[0]
    kind = error["type"]
    ctx = error.get("ctx") or {}
    found = type(error.get("input")).__name__
    if kind == "json_invalid":
        return "body is not valid JSON"
    if kind == "model_type":
        return f"expected a JSON object, got {_json_type(found)}"
    if kind == "missing":
        return "missing 'count'"
    if kind == "int_type":
        return f"count must be an integer, got {_json_type(found)}"
    if kind == "greater_than_equal":
        return f"count must be >= {ctx.get('ge')}"
    if kind == "less_than_equal":
        return f"count must be <= {ctx.get('le')}"
    return f"unexpected body ({kind})"


def _json_type(python_type: str) -> str:
    return {
        "list": "array",
        "dict": "object",
        "str": "string",
        "bool": "boolean",
        "float": "number",
        "int": "integer",
        "NoneType": "null",
    }.get(python_type, python_type)


def _excerpt(response: httpx.Response, *, redact: Callable[[str], str]) -> str:
    """A short human hint from an error body: FastAPI's `detail`, or plain text, else ''.

    HTML error pages from proxies are skipped: their first 200 characters say nothing.
    """
    media_type = _media_type(response)
    text = ""
    if media_type == "application/json":
        try:
            text = _detail_message(response.json())
        except ValueError:  # includes JSONDecodeError and undecodable bytes
            text = ""
    elif media_type == "text/plain":
        text = response.text
    # Redact before cutting: a key straddling the cut would no longer match whole.
    text = " ".join(redact(text).split())
    if len(text) > _DETAIL_EXCERPT_CHARS:
        text = text[: _DETAIL_EXCERPT_CHARS - 1] + "…"
    return text


def _media_type(response: httpx.Response) -> str:
    """'application/json' from 'Application/JSON; charset=utf-8'; '' when absent."""
    content_type: str = response.headers.get("content-type", "")
    return content_type.partition(";")[0].strip().lower()


def _detail_message(body: object) -> str:
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, str):
        return detail
    if isinstance(detail, dict):
        for key in ("message", "msg", "status"):
            if isinstance(detail.get(key), str):
                return str(detail[key])
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        message = detail[0].get("msg")
        if isinstance(message, str):
            return message
    return ""
