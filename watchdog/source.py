"""The ElevenLabs poller: turns one HTTP request into one good `Sample` or one `SourceError`.

This is the only place that talks to ElevenLabs. Everything the network or the API can do
wrong (refused keys, unknown agents, rate limits, outages, timeouts, resets, malformed
bodies, implausible counts) is translated here, at the boundary, into a `SourceError` with
a `PollFailure` reason, so the daemon and the engine never see an httpx exception or a
count they cannot trust. The source knows nothing about rules: it only measures.

Requests go through httpx's sync transport in a few worker threads (`watchdog.workers`
says why); `poll` is still a coroutine, so the daemon, tests and benchmarks drive any
`Source` the same way, and point the real one at a loopback fake by its base URL.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Final, Protocol, Self

import httpx
import pydantic

from watchdog.durations import format_duration
from watchdog.errors import PollFailure, SourceError
from watchdog.model import Sample, workspace_of
from watchdog.workers import RequestWorkers

LIVE_COUNT_PATH: Final = "/v1/convai/analytics/live-count"
"""Path of the endpoint, appended to the configured base URL."""

MAX_PLAUSIBLE_COUNT: Final = 1_000_000
"""Counts above this are treated as a broken response, not as a traffic spike."""

REQUEST_SHARE_OF_INTERVAL: Final = 0.5
"""A request may take at most this share of the poll interval (see `request_timeout`)."""

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


def request_timeout(timeout: timedelta, poll_interval: timedelta) -> float:
    """Seconds one request may take: the configured `timeout`, at most half the interval.

    A series is polled once per interval. With this bound a request that hangs frees its
    worker (and its share of the concurrency cap) within half an interval, so even when
    as many requests hang as the cap allows, the other series still get the other half
    of every interval, and a hanging series is late for at most one cycle before its
    poll fails as unreachable. (httpx applies the limit to each phase: connecting,
    writing, waiting for each chunk of the answer.)
    """
    return min(timeout, poll_interval * REQUEST_SHARE_OF_INTERVAL).total_seconds()


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


@dataclass(frozen=True, eq=False)
class _Target:
    """One generation of settings and the workers that poll with them (see `reconfigure`)."""

    url: httpx.URL
    api_key: pydantic.SecretStr
    timeout: float
    headers: httpx.Headers
    workers: RequestWorkers
    requests: dict[str | None, httpx.Request] = field(default_factory=dict)

    def redact(self, text: str) -> str:
        """Belt and braces: no text we did not write ourselves may carry the key."""
        secret = self.api_key.get_secret_value()
        return text.replace(secret, "**********") if secret else text

    def request_for(self, agent_id: str | None) -> httpx.Request:
        """The request of a series, built once and sent again each poll.

        Building one costs a quarter of the event loop's work per poll; a GET without a
        body is never changed by sending it, so one object serves every poll.
        """
        request = self.requests.get(agent_id)
        if request is None:
            request = httpx.Request(
                "GET",
                self.url,
                params=None if agent_id is None else {"agent_id": agent_id},
                headers=self.headers,
                extensions={"timeout": httpx.Timeout(self.timeout).as_dict()},
            )
            self.requests[agent_id] = request
        return request


class LiveCountSource:
    """Polls `GET {base_url}/v1/convai/analytics/live-count` for one series at a time.

    Guarantees: the API key travels only in the `xi-api-key` header and never appears in
    an error; at most `max_concurrency` requests are in flight however many series are
    polled at once; each poll yields one `Sample` stamped with `now()` when the answer
    arrived, or raises one `SourceError` (chained to the underlying exception, if any);
    no request takes longer than `timeout` seconds per phase.

    Requests are sent by `max_concurrency` worker threads (see `watchdog.workers` for
    why); the event loop only awaits the answer. `close()` (or leaving the `with`
    block) lets the workers go.
    """

    def __init__(
        self,
        api_key: pydantic.SecretStr,
        base_url: str,
        *,
        now: Callable[[], datetime],
        timeout: float = 10.0,
        max_concurrency: int = 8,
    ) -> None:
        self._now = now
        self._closed = False
        self._target = self._new_target(api_key, base_url, timeout, max_concurrency)

    def __repr__(self) -> str:
        return f"LiveCountSource(url={str(self._target.url)!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def reconfigure(
        self, *, api_key: pydantic.SecretStr, base_url: str, timeout: float, concurrency: int
    ) -> None:
        """Poll with these settings from the next poll on (SIGHUP reload).

        Invalid values raise ValueError and change nothing. Requests already in flight
        finish under the old settings, then the old workers and connections go away.
        """
        old, self._target = self._target, self._new_target(api_key, base_url, timeout, concurrency)
        self._retire(old)

    def close(self) -> None:
        """Stop taking polls and close idle connections; a request in flight ends by itself."""
        self._closed = True
        self._retire(self._target)

    async def poll(self, series: str, agent_id: str | None) -> Sample:
        """Measure `series` (the workspace when `agent_id` is None, else that agent)."""
        target = self._target
        if self._closed:
            raise RuntimeError("poll() on a closed LiveCountSource")
        request = target.request_for(agent_id)
        try:
            response = await target.workers.send(request)
        except httpx.TimeoutException as exc:
            raise SourceError(
                series, PollFailure.UNREACHABLE, _timeout_detail(exc, target.timeout)
            ) from exc
        except httpx.TransportError as exc:
            raise SourceError(
                series, PollFailure.UNREACHABLE, _transport_detail(exc, target.redact)
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
            return Sample(series=series, at=at, count=_count(series, response, target.redact))
        raise _status_error(series, agent_id, response, at, target.redact)

    def _new_target(
        self, api_key: pydantic.SecretStr, base_url: str, timeout: float, concurrency: int
    ) -> _Target:
        if concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {concurrency}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        url = httpx.URL(base_url.rstrip("/") + LIVE_COUNT_PATH)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        headers = httpx.Headers(
            {
                "User-Agent": USER_AGENT,
                "Accept": "application/json",
                "xi-api-key": api_key.get_secret_value(),
            }
        )
        return _Target(url, api_key, timeout, headers, RequestWorkers(concurrency))

    def _retire(self, target: _Target) -> None:
        target.workers.stop()


@dataclass(frozen=True)
class Endpoint:
    """How to reach one workspace: its API key and its (data-residency) host."""

    api_key: pydantic.SecretStr
    base_url: str


class WorkspaceSources:
    """One `LiveCountSource` per workspace, each with its own key, host and HTTP client;
    a series is polled by the source of its workspace (`watchdog.model.workspace_of`).

    Without `[[workspaces]]` there is one, for the unnamed workspace `""`. Each source
    keeps the guarantees of `LiveCountSource`, so one workspace's rejected key or dead
    host fails only that workspace's polls.
    """

    def __init__(
        self,
        endpoints: Mapping[str, Endpoint],
        *,
        now: Callable[[], datetime],
        timeout: float = 10.0,
        max_concurrency: int = 8,
    ) -> None:
        self._now = now
        self._sources = self._new_sources(endpoints, timeout, max_concurrency)

    def __repr__(self) -> str:
        return f"WorkspaceSources({self._sources!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def poll(self, series: str, agent_id: str | None) -> Sample:
        """Measure `series` with its workspace's source."""
        source = self._sources.get(workspace_of(series))
        if source is None:
            raise SourceError(series, PollFailure.BAD_RESPONSE, "no such workspace configured")
        return await source.poll(series, agent_id)

    def reconfigure(
        self, *, endpoints: Mapping[str, Endpoint], timeout: float, concurrency: int
    ) -> None:
        """Poll with these workspaces and settings from the next poll on (SIGHUP reload).

        Invalid values raise ValueError and change nothing; the sources replaced finish
        their requests in flight, then go away.
        """
        new = self._new_sources(endpoints, timeout, concurrency)
        old, self._sources = self._sources, new
        for source in old.values():
            source.close()

    def close(self) -> None:
        for source in self._sources.values():
            source.close()

    def _new_sources(
        self, endpoints: Mapping[str, Endpoint], timeout: float, concurrency: int
    ) -> dict[str, LiveCountSource]:
        sources: dict[str, LiveCountSource] = {}
        try:
            for name, endpoint in endpoints.items():
                sources[name] = LiveCountSource(
                    endpoint.api_key,
                    endpoint.base_url,
                    now=self._now,
                    timeout=timeout,
                    max_concurrency=concurrency,
                )
        except ValueError:
            for source in sources.values():
                source.close()
            raise
        return sources


def _count(series: str, response: httpx.Response, redact: Callable[[str], str]) -> int:
    status = response.status_code
    media_type = _media_type(response)
    if media_type != "application/json":
        shown = redact(media_type or "none")[:60]
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
        raise SourceError(series, PollFailure.BAD_RESPONSE, _describe(exc), status=status) from None


def _status_error(
    series: str,
    agent_id: str | None,
    response: httpx.Response,
    at: datetime,
    redact: Callable[[str], str],
) -> SourceError:
    status = response.status_code
    detail = f"HTTP {status}"
    excerpt = _excerpt(response, redact=redact)
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


def _transport_detail(exc: httpx.TransportError, redact: Callable[[str], str]) -> str:
    kind = {
        httpx.ConnectError: "connection failed",
        httpx.ReadError: "connection lost while reading",
        httpx.WriteError: "connection lost while writing",
        httpx.RemoteProtocolError: "protocol error",
        httpx.ProxyError: "proxy error",
    }.get(type(exc), "transport error")
    reason = redact(" ".join(str(exc).split()))[:_DETAIL_EXCERPT_CHARS]
    return f"{kind}: {reason}" if reason else kind


def _timeout_detail(exc: httpx.TimeoutException, seconds: float) -> str:
    phase = {
        httpx.ConnectTimeout: "connect timed out",
        httpx.WriteTimeout: "write timed out",
        httpx.PoolTimeout: "no free connection",
    }.get(type(exc), "timed out")
    return f"{phase} after {format_duration(timedelta(seconds=seconds))}"


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
