"""The real LiveCountSource over a real httpx client against the loopback ElevenLabs fake."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from tests.fakes.elevenlabs import Behaviour, FakeElevenLabs, raw_body, status
from watchdog.errors import PollFailure, SourceError
from watchdog.model import WORKSPACE, Sample
from watchdog.source import (
    LIVE_COUNT_PATH,
    USER_AGENT,
    LiveCountSource,
    Source,
    retry_after_seconds,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SECRET = "sk_live_0123456789abcdef-do-not-leak"


def poll(
    fake: FakeElevenLabs,
    agent_id: str | None = None,
    *,
    series: str | None = None,
    api_key: str | None = None,
    timeout: float = 2.0,
) -> Sample:
    """Poll once with a fresh client, as the daemon would."""

    async def run() -> Sample:
        with LiveCountSource(
            SecretStr(api_key or fake.api_key), fake.url, now=lambda: NOW, timeout=timeout
        ) as source:
            return await source.poll(series or agent_id or WORKSPACE, agent_id)

    return asyncio.run(run())


def poll_error(fake: FakeElevenLabs, agent_id: str | None = None, **kwargs: object) -> SourceError:
    with pytest.raises(SourceError) as info:
        poll(fake, agent_id, **kwargs)  # type: ignore[arg-type]
    return info.value


def test_good_count_is_a_sample_stamped_with_now(fake_elevenlabs: FakeElevenLabs) -> None:
    """A 200 {"count": n} becomes Sample(series, now(), n)."""
    fake_elevenlabs.set_count(7)
    assert poll(fake_elevenlabs) == Sample(WORKSPACE, NOW, 7)


def test_request_carries_key_header_and_user_agent(fake_elevenlabs: FakeElevenLabs) -> None:
    """The key travels in xi-api-key, with our User-Agent, on the live-count path."""
    poll(fake_elevenlabs)
    (request,) = fake_elevenlabs.requests
    assert request.path == LIVE_COUNT_PATH
    assert request.headers["xi-api-key"] == "test-key"
    assert request.headers["user-agent"] == USER_AGENT
    assert USER_AGENT.startswith("convai-watchdog/")


@pytest.mark.parametrize(
    ("agent_id", "expected_query", "expected_count"),
    [(None, {}, 5), ("agent_a", {"agent_id": "agent_a"}, 2)],
    ids=["workspace", "agent"],
)
def test_workspace_and_agent_queries(
    fake_elevenlabs: FakeElevenLabs,
    agent_id: str | None,
    expected_query: dict[str, str],
    expected_count: int,
) -> None:
    """The workspace is polled without agent_id; an agent series sends agent_id."""
    fake_elevenlabs.set_count(5)
    fake_elevenlabs.set_count(2, agent_id="agent_a")
    sample = poll(fake_elevenlabs, agent_id, series="s")
    assert sample == Sample("s", NOW, expected_count)
    assert fake_elevenlabs.requests[0].query == expected_query


@pytest.mark.parametrize(
    "body", [{"count": 0}, {"count": 1_000_000}, {"count": 4, "extra": "ignored"}]
)
def test_boundary_and_extra_fields_are_accepted(
    fake_elevenlabs: FakeElevenLabs, body: dict[str, object]
) -> None:
    """0 and 1_000_000 are plausible counts; unknown fields are ignored."""
    fake_elevenlabs.set_behaviour(raw_body(body))
    assert poll(fake_elevenlabs).count == body["count"]


@pytest.mark.parametrize(
    ("behaviour", "agent_id", "failure"),
    [
        (401, None, PollFailure.REJECTED_KEY),
        (403, None, PollFailure.REJECTED_KEY),
        (422, "agent_a", PollFailure.UNKNOWN_AGENT),
        (404, "agent_a", PollFailure.UNKNOWN_AGENT),
        (422, None, PollFailure.BAD_RESPONSE),
        (404, None, PollFailure.BAD_RESPONSE),
        (400, None, PollFailure.BAD_RESPONSE),
        (301, None, PollFailure.BAD_RESPONSE),
        (500, None, PollFailure.SERVER_ERROR),
        (502, None, PollFailure.SERVER_ERROR),
        (503, "agent_a", PollFailure.SERVER_ERROR),
    ],
)
def test_status_codes_map_to_failures(
    fake_elevenlabs: FakeElevenLabs, behaviour: int, agent_id: str | None, failure: PollFailure
) -> None:
    """Each non-2xx status maps to one PollFailure, keeping the status and 'HTTP n' detail."""
    fake_elevenlabs.add_agent("agent_a")
    fake_elevenlabs.set_behaviour(behaviour, agent_id=agent_id)
    error = poll_error(fake_elevenlabs, agent_id)
    assert error.failure is failure
    assert error.status == behaviour
    assert error.detail.startswith(f"HTTP {behaviour}")
    assert error.retry_after is None


def test_wrong_key_is_rejected_key(fake_elevenlabs: FakeElevenLabs) -> None:
    """The API's 401 for a wrong key is REJECTED_KEY, quoting its short message."""
    error = poll_error(fake_elevenlabs, api_key="wrong")
    assert error.failure is PollFailure.REJECTED_KEY
    assert error.detail == "HTTP 401: Invalid API key"


def test_unknown_agent_is_unknown_agent(fake_elevenlabs: FakeElevenLabs) -> None:
    """The API's 422 for an agent it does not know is UNKNOWN_AGENT, quoting FastAPI's msg."""
    error = poll_error(fake_elevenlabs, "agent_nope")
    assert error.failure is PollFailure.UNKNOWN_AGENT
    assert error.series == "agent_nope"
    assert error.detail == "HTTP 422: Agent agent_nope not found"


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        (None, None),
        ("30", 30.0),
        (format_datetime(NOW + timedelta(seconds=90), usegmt=True), 90.0),
        ("soon", None),
    ],
    ids=["absent", "seconds", "http-date", "unparsable"],
)
def test_rate_limited_reports_retry_after(
    fake_elevenlabs: FakeElevenLabs, retry_after: str | None, expected: float | None
) -> None:
    """429 is RATE_LIMITED with Retry-After as seconds from now(), or None."""
    fake_elevenlabs.set_behaviour(429, retry_after=retry_after)
    error = poll_error(fake_elevenlabs)
    assert error.failure is PollFailure.RATE_LIMITED
    assert error.status == 429
    assert error.retry_after == expected


def test_hang_past_client_timeout_is_unreachable(fake_elevenlabs: FakeElevenLabs) -> None:
    """A server that never answers is UNREACHABLE, saying how long we waited."""
    fake_elevenlabs.set_behaviour("hang")
    error = poll_error(fake_elevenlabs, timeout=0.3)
    assert error.failure is PollFailure.UNREACHABLE
    assert error.detail == "timed out after 300ms"
    assert isinstance(error.__cause__, httpx.ReadTimeout)


def test_connection_reset_is_unreachable(fake_elevenlabs: FakeElevenLabs) -> None:
    """A connection aborted without a response is UNREACHABLE."""
    fake_elevenlabs.set_behaviour("reset")
    error = poll_error(fake_elevenlabs)
    assert error.failure is PollFailure.UNREACHABLE
    assert error.status is None
    assert isinstance(error.__cause__, httpx.TransportError)


def test_nothing_listening_is_unreachable() -> None:
    """A refused connection is UNREACHABLE."""
    with FakeElevenLabs() as fake:
        pass
    error = poll_error(fake)
    assert error.failure is PollFailure.UNREACHABLE
    assert error.detail.startswith("connection failed")


def test_recovers_after_transient_behaviour(fake_elevenlabs: FakeElevenLabs) -> None:
    """One failed poll does not poison the next: the source keeps no state per series."""
    fake_elevenlabs.set_count(3)
    fake_elevenlabs.set_behaviour(503, times=1)
    assert poll_error(fake_elevenlabs).failure is PollFailure.SERVER_ERROR
    assert poll(fake_elevenlabs).count == 3


@pytest.mark.parametrize(
    ("behaviour", "detail"),
    [
        ("non_json", "body is not valid JSON"),
        ("empty_body", "empty body"),
        ("wrong_content_type", "expected application/json, got content type text/html"),
        (raw_body(b'{"count": "x"}'), "count must be an integer, got string"),
        (raw_body({"count": -3}), "count must be >= 0"),
        (raw_body({"count": 10**12}), "count must be <= 1000000"),
        (raw_body({"count": True}), "count must be an integer, got boolean"),
        (raw_body({"count": 3.0}), "count must be an integer, got number"),
        (raw_body({"count": None}), "count must be an integer, got null"),
        (raw_body({"counts": 1}), "missing 'count'"),
        (raw_body([1, 2]), "expected a JSON object, got array"),
        (raw_body(b"{}", content_type=""), "expected application/json, got content type none"),
    ],
    ids=[
        "non-json",
        "empty",
        "text-html",
        "string",
        "negative",
        "absurd",
        "bool",
        "float",
        "null",
        "missing",
        "list",
        "no-content-type",
    ],
)
def test_bad_bodies_are_bad_response(
    fake_elevenlabs: FakeElevenLabs, behaviour: Behaviour, detail: str
) -> None:
    """A 200 whose body is not a plausible {"count": int} is BAD_RESPONSE with a short reason."""
    fake_elevenlabs.set_count(3)
    fake_elevenlabs.set_behaviour(behaviour)
    error = poll_error(fake_elevenlabs)
    assert error.failure is PollFailure.BAD_RESPONSE
    assert error.status == 200
    assert error.detail == detail


@pytest.mark.parametrize(
    "behaviour",
    [
        status(500, body="x " * 5000, content_type="text/plain"),
        status(500, body='{"detail": "' + "y" * 5000 + '"}'),
    ],
    ids=["text", "json-detail"],
)
def test_long_error_bodies_are_truncated(
    fake_elevenlabs: FakeElevenLabs, behaviour: Behaviour
) -> None:
    """Error details quote at most 200 characters of the body."""
    fake_elevenlabs.set_behaviour(behaviour)
    error = poll_error(fake_elevenlabs)
    assert error.failure is PollFailure.SERVER_ERROR
    assert error.detail.startswith("HTTP 500: ")
    assert len(error.detail) == len("HTTP 500: ") + 200


def test_html_error_pages_are_not_quoted(fake_elevenlabs: FakeElevenLabs) -> None:
    """A proxy's HTML error page adds nothing to the detail but noise."""
    fake_elevenlabs.set_behaviour(
        status(502, body="<html><h1>502 Bad Gateway</h1></html>", content_type="text/html")
    )
    assert poll_error(fake_elevenlabs).detail == "HTTP 502"


def test_concurrency_cap_is_respected() -> None:
    """No more than max_concurrency requests are in flight, however many polls run at once."""

    async def run(fake: FakeElevenLabs) -> list[Sample]:
        with LiveCountSource(
            SecretStr(fake.api_key), fake.url, now=lambda: NOW, max_concurrency=3
        ) as source:
            return await asyncio.gather(*(source.poll(f"s{i}", None) for i in range(20)))

    with FakeElevenLabs(latency=0.03, count=1) as fake:
        samples = asyncio.run(run(fake))
    assert [sample.count for sample in samples] == [1] * 20
    assert 2 <= fake.max_in_flight <= 3


@pytest.mark.parametrize(
    "behaviour",
    [
        401,
        403,
        422,
        429,
        503,
        "hang",
        "reset",
        "non_json",
        raw_body({"count": -3}),
        status(400, body=f'{{"detail": "key {SECRET} is not allowed here"}}'),
        status(500, body=f"key={SECRET}".encode()),
    ],
)
def test_api_key_never_appears_in_errors(behaviour: Behaviour) -> None:
    """Whatever goes wrong, even when the server echoes the key, errors never contain it."""
    with FakeElevenLabs(api_key=SECRET) as fake:
        fake.set_behaviour(behaviour)
        with pytest.raises(SourceError) as info:
            poll(fake, timeout=0.3)
        assert fake.requests[0].headers["xi-api-key"] == SECRET
    error = info.value
    for text in (str(error), repr(error), error.detail, *map(str, error.args)):
        assert SECRET not in text


def test_api_key_never_appears_in_source_repr() -> None:
    """The source's repr names the endpoint, never the key."""
    with LiveCountSource(SecretStr(SECRET), "https://api.example", now=lambda: NOW) as source:
        assert SECRET not in repr(source)
        assert "api.example" in repr(source)


def test_live_count_source_is_a_source() -> None:
    """LiveCountSource satisfies the Source protocol the daemon depends on."""
    with LiveCountSource(SecretStr("k"), "http://x", now=lambda: NOW) as real:
        source: Source = real
        assert callable(source.poll)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base_url": "ftp://example.com"},
        {"base_url": "not a url"},
        {"max_concurrency": 0},
        {"timeout": 0.0},
    ],
)
def test_invalid_construction_is_refused(kwargs: dict[str, object]) -> None:
    """A base URL that is not http(s), a zero concurrency cap or timeout fails at construction."""
    arguments: dict[str, object] = {"base_url": "https://api.elevenlabs.io", **kwargs}
    with pytest.raises((ValueError, httpx.InvalidURL)):
        LiveCountSource(SecretStr("k"), now=lambda: NOW, **arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "now", "expected"),
    [
        (None, NOW, None),
        ("", NOW, None),
        ("30", NOW, 30.0),
        (" 7 ", NOW, 7.0),
        ("1.5", NOW, 1.5),
        ("0", NOW, 0.0),
        ("-1", NOW, None),
        ("inf", NOW, None),
        ("nan", NOW, None),
        ("later", NOW, None),
        ("Sun, 01 Mar 2026 12:01:00 GMT", NOW, 60.0),
        ("Sun, 01 Mar 2026 11:00:00 GMT", NOW, 0.0),
        ("Sun, 01 Mar 2026 12:00:30 GMT", NOW.replace(tzinfo=None), 30.0),
    ],
    ids=[
        "absent",
        "blank",
        "seconds",
        "padded",
        "fractional",
        "zero",
        "negative",
        "inf",
        "nan",
        "word",
        "date-future",
        "date-past",
        "naive-now",
    ],
)
def test_retry_after_seconds(value: str | None, now: datetime, expected: float | None) -> None:
    """Retry-After parses delta-seconds and HTTP-dates; anything else is None."""
    assert retry_after_seconds(value, now) == expected


@given(st.text())
def test_retry_after_seconds_never_raises(value: str) -> None:
    """Any header text gives a non-negative number of seconds or None, never an exception."""
    result = retry_after_seconds(value, NOW)
    assert result is None or result >= 0


@given(st.integers(min_value=0, max_value=10**9))
def test_retry_after_delta_seconds_round_trip(seconds: int) -> None:
    """Every delta-seconds value is returned as that many seconds."""
    assert retry_after_seconds(str(seconds), NOW) == float(seconds)


def test_reconfigure_applies_to_the_next_poll() -> None:
    """After reconfigure, polls go to the new URL with the new key, timeout and cap."""

    async def run(old: FakeElevenLabs, new: FakeElevenLabs) -> tuple[Sample, SourceError]:
        with LiveCountSource(SecretStr(old.api_key), old.url, now=lambda: NOW) as source:
            await source.poll(WORKSPACE, None)
            source.reconfigure(
                api_key=SecretStr(new.api_key), base_url=new.url, timeout=0.3, concurrency=2
            )
            sample = await source.poll(WORKSPACE, None)
            new.set_behaviour("hang", times=1)
            with pytest.raises(SourceError) as info:
                await source.poll(WORKSPACE, None)
            return sample, info.value

    with (
        FakeElevenLabs(api_key="old-key", count=1) as old,
        FakeElevenLabs(api_key="new-key", count=2) as new,
    ):
        sample, error = asyncio.run(run(old, new))
        assert len(old.requests) == 1
        assert [r.headers["xi-api-key"] for r in new.requests] == ["new-key", "new-key"]
    assert sample.count == 2
    assert error.detail == "timed out after 300ms"


def test_reconfigure_refuses_invalid_values_and_keeps_polling() -> None:
    """An invalid reconfigure raises ValueError and the old settings stay in force."""

    async def run(fake: FakeElevenLabs) -> Sample:
        with LiveCountSource(SecretStr(fake.api_key), fake.url, now=lambda: NOW) as source:
            with pytest.raises(ValueError, match="concurrency"):
                source.reconfigure(
                    api_key=SecretStr("k"), base_url=fake.url, timeout=1.0, concurrency=0
                )
            return await source.poll(WORKSPACE, None)

    with FakeElevenLabs(count=4) as fake:
        assert asyncio.run(run(fake)).count == 4
