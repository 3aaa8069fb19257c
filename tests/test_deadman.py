"""The dead-man's switch: pings after healthy cycles, /fail otherwise, never in the way."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from tests.fakes.elevenlabs import FakeElevenLabs
from tests.fakes.heartbeat import FakeHeartbeat, Ping
from tests.fakes.slack import FakeSlack
from tests.harness import Site, rule
from tests.test_liveness import queued_card, seed_outbox
from watchdog.deadman import DeadMansSwitch, ping_url
from watchdog.rules import parse_config

CHECK = "5f0c9a4e-77b1-4c55-9d2e-3a1b2c3d4e5f"
"""The ping URL's secret part, as in a healthchecks.io URL."""
OTHER_CHECK = "0a9b8c7d-6e5f-4a3b-2c1d-0e9f8a7b6c5d"


@pytest.fixture
def endpoint() -> Iterator[FakeHeartbeat]:
    with FakeHeartbeat() as fake:
        yield fake


def _to(check: str, *, fail: bool = False) -> Callable[[list[Ping]], bool]:
    path = f"/ping/{check}" + ("/fail" if fail else "")
    return lambda pings: any(p.path == path for p in pings)


def _assert_secret_kept(check: str, *outputs: str) -> None:
    for output in outputs:
        assert check not in output
        assert "Traceback" not in output


# -- the URL --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "healthy", "expected"),
    [
        ("https://hc-ping.com/abc", True, "https://hc-ping.com/abc"),
        ("https://hc-ping.com/abc", False, "https://hc-ping.com/abc/fail"),
        ("https://hc-ping.com/abc/", False, "https://hc-ping.com/abc/fail"),
        (
            "https://kuma.example/api/push/K?status=up",
            False,
            "https://kuma.example/api/push/K/fail?status=up",
        ),
    ],
    ids=["success", "fail", "trailing-slash", "query-kept"],
)
def test_a_failed_cycle_pings_the_fail_url(url: str, healthy: bool, expected: str) -> None:
    """Healthy cycles request the URL itself; others `<url>/fail`, the query kept."""
    assert ping_url(url, healthy=healthy) == expected


# -- the sender, in process -------------------------------------------------------------


def test_verdicts_reach_the_endpoint_as_success_or_fail(endpoint: FakeHeartbeat) -> None:
    """A healthy verdict requests the URL, one with problems requests `/fail`."""
    url = SecretStr(endpoint.url_for(CHECK))

    async def scenario() -> None:
        switch = DeadMansSwitch()
        task = asyncio.create_task(switch.run())
        switch.report(url, [])
        await asyncio.to_thread(endpoint.wait_for, _to(CHECK))
        switch.report(url, ["workspace: no good poll this cycle"])
        await asyncio.to_thread(endpoint.wait_for, _to(CHECK, fail=True))
        task.cancel()

    asyncio.run(scenario())
    assert endpoint.paths() == [f"/ping/{CHECK}", f"/ping/{CHECK}/fail"]


def test_a_hanging_endpoint_holds_one_request_and_is_logged_without_its_path(
    endpoint: FakeHeartbeat,
) -> None:
    """While the endpoint hangs, verdicts collapse (one request in flight), `report` never
    waits, and the timeout is logged as `heartbeat.failed` with the host only."""
    endpoint.hang()
    url = SecretStr(endpoint.url_for(CHECK))

    async def scenario() -> None:
        switch = DeadMansSwitch(timeout=0.5)
        task = asyncio.create_task(switch.run())
        for _ in range(20):  # a cycle every 50 ms, ten times faster than the timeout
            switch.report(url, [])
            await asyncio.sleep(0.05)
        await asyncio.to_thread(endpoint.wait_for, lambda pings: len(pings) >= 2)
        task.cancel()

    with capture_logs() as logs:
        asyncio.run(scenario())
    assert endpoint.max_in_flight == 1
    assert len(endpoint.pings) <= 4  # 1 s of verdicts through 0.5 s timeouts, not 20
    failed = [e for e in logs if e["event"] == "heartbeat.failed"]
    assert failed, logs
    assert failed[0]["log_level"] == "warning"
    assert failed[0]["error"] == "timed out"
    assert failed[0]["host"] == endpoint.url_for("").split("/")[2]
    _assert_secret_kept(CHECK, json.dumps(logs, default=str))


def test_an_error_answer_is_logged_and_the_next_verdict_still_goes(
    endpoint: FakeHeartbeat,
) -> None:
    """HTTP 500 from the endpoint is `heartbeat.failed` (`HTTP 500`); pinging goes on."""
    endpoint.answer(500)
    url = SecretStr(endpoint.url_for(CHECK))

    async def scenario() -> None:
        switch = DeadMansSwitch()
        task = asyncio.create_task(switch.run())
        switch.report(url, [])
        await asyncio.to_thread(endpoint.wait_for, lambda pings: len(pings) == 1)
        while not any(e["event"] == "heartbeat.failed" for e in logs):
            await asyncio.sleep(0.01)
        switch.report(url, [])
        await asyncio.to_thread(endpoint.wait_for, lambda pings: len(pings) == 2)
        task.cancel()

    with capture_logs() as logs:
        asyncio.run(scenario())
    assert next(e["error"] for e in logs if e["event"] == "heartbeat.failed") == "HTTP 500"


def test_no_url_no_ping(endpoint: FakeHeartbeat) -> None:
    """Without a URL (or after a reload removed it) a verdict is dropped, not sent."""
    url = SecretStr(endpoint.url_for(CHECK))

    async def scenario() -> None:
        switch = DeadMansSwitch()
        task = asyncio.create_task(switch.run())
        switch.report(url, [])
        switch.report(None, [])  # the latest word: no URL any more
        switch.report(SecretStr(endpoint.url_for(OTHER_CHECK)), ["stalled"])
        await asyncio.to_thread(endpoint.wait_for, _to(OTHER_CHECK, fail=True))
        task.cancel()

    asyncio.run(scenario())
    assert endpoint.paths() == [f"/ping/{OTHER_CHECK}/fail"]


# -- the real daemon -------------------------------------------------------------------


def test_run_pings_after_healthy_cycles_and_fail_while_the_api_fails(
    site: Callable[..., Site], api: FakeElevenLabs, endpoint: FakeHeartbeat
) -> None:
    """`watchdog run` with WATCHDOG_HEARTBEAT_URL pings after good cycles, pings `/fail`
    while the API answers 500 (and 401), success again once it recovers; the URL's path is
    in no output."""
    s = site("")
    s.env["WATCHDOG_HEARTBEAT_URL"] = endpoint.url_for(CHECK)
    with s.run() as daemon:
        endpoint.wait_for(_to(CHECK))
        for failure in (500, 401):
            api.set_behaviour(failure)
            endpoint.wait_for(_to(CHECK, fail=True))
            api.set_behaviour("normal")
            seen = len(endpoint.pings)
            endpoint.wait_for(lambda pings, seen=seen: _to(CHECK)(pings[seen:]))
        daemon.wait_for("heartbeat.sent", signal="fail")
        assert daemon.stop() == 0
    _assert_secret_kept(CHECK, daemon.output(), "".join(daemon.stdout_lines))
    assert set(endpoint.paths()) == {f"/ping/{CHECK}", f"/ping/{CHECK}/fail"}


def test_an_outbox_slack_refuses_pings_fail_though_the_api_is_fine(
    site: Callable[..., Site], slack: FakeSlack, endpoint: FakeHeartbeat
) -> None:
    """The pipeline's health counts, not only the poll: a card undelivered for an hour
    (Slack down, `/healthz` 503) makes every cycle ping `/fail`; once it is delivered,
    success again."""
    s = site("")
    s.env["WATCHDOG_HEARTBEAT_URL"] = endpoint.url_for(CHECK)
    hour_ago = int((datetime.now(UTC) - timedelta(hours=1)).timestamp() * 1000)
    seed_outbox(s.state, queued_card("fedcba987654"), f"UPDATE outbox SET created_at = {hour_ago}")
    slack.outage(True)
    with s.run() as daemon:
        endpoint.wait_for(lambda pings: sum(p.path.endswith("/fail") for p in pings) >= 3)
        assert not _to(CHECK)(endpoint.pings)
        said = daemon.wait_for("heartbeat.sent", signal="fail")
        assert any(p.startswith("outbox: ") for p in said["problems"])
        daemon.wait_for("poll.ok")  # the API itself was fine all along
        slack.outage(False)
        daemon.wait_for("notify.sent", alert_id="fedcba987654", timeout=30)
        endpoint.wait_for(_to(CHECK))
        assert daemon.stop() == 0


def test_a_hanging_endpoint_delays_neither_polls_nor_alerts(
    site: Callable[..., Site], slack: FakeSlack, endpoint: FakeHeartbeat
) -> None:
    """Against a ping endpoint that never answers, polls keep their 200 ms pace and a
    firing alert reaches Slack; the hang is logged as `heartbeat.failed` (no traceback,
    no secret path), with one request in flight at a time."""
    endpoint.hang()
    s = site(rule("any-traffic", above=0))
    s.env["WATCHDOG_HEARTBEAT_URL"] = endpoint.url_for(CHECK)
    with s.run() as daemon:
        endpoint.wait_for(lambda pings: len(pings) >= 1)
        slack.wait_for(lambda calls: any(c.method == "chat.postMessage" for c in calls))
        failed = daemon.wait_for("heartbeat.failed", timeout=20)
        polls = daemon.find("poll.ok")
        assert daemon.stop() == 0
    assert failed["level"] == "warning"
    assert failed["error"] == "timed out"
    assert failed["host"] == endpoint.url_for("").split("/")[2]
    # The ping timed out after 5 s; polls every 200 ms went on meanwhile (~25 of them).
    assert len(polls) >= 15, len(polls)
    assert endpoint.max_in_flight == 1
    _assert_secret_kept(CHECK, daemon.output(), "".join(daemon.stdout_lines))
    assert "".join(daemon.stderr_lines) == ""


def test_reload_picks_up_a_rotated_heartbeat_credential(
    site: Callable[..., Site], endpoint: FakeHeartbeat, tmp_path: Path
) -> None:
    """The `heartbeat_url` credential file is read at start and again on SIGHUP: after a
    reload the new URL is pinged and the old one no more."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "heartbeat_url").write_text(endpoint.url_for(CHECK))
    s = site("")
    s.env["CREDENTIALS_DIRECTORY"] = str(credentials)
    with s.run() as daemon:
        endpoint.wait_for(_to(CHECK))
        (credentials / "heartbeat_url").write_text(endpoint.url_for(OTHER_CHECK))
        daemon.send(signal.SIGHUP)
        daemon.wait_for("config.loaded", reload=True)
        endpoint.wait_for(_to(OTHER_CHECK))
        seen = len(endpoint.pings)
        endpoint.wait_for(lambda pings: len(pings) >= seen + 3)
        assert daemon.stop() == 0
    assert all(p.path == f"/ping/{OTHER_CHECK}" for p in endpoint.pings[seen:])
    _assert_secret_kept(CHECK, daemon.output())
    _assert_secret_kept(OTHER_CHECK, daemon.output())


def test_the_rules_file_heartbeat_url_is_used_and_check_shows_only_its_host(
    site: Callable[..., Site], endpoint: FakeHeartbeat
) -> None:
    """`[watchdog] heartbeat_url` works too; `watchdog check` names the host, not the path."""
    s = site("")
    text = s.config.read_text().replace(
        "[watchdog]\n", f'[watchdog]\nheartbeat_url = "{endpoint.url_for(CHECK)}"\n', 1
    )
    s.config.write_text(text)
    check = s.cli("check", "--config", str(s.config))
    assert check.returncode == 0, check.stderr
    host = endpoint.url_for("").split("/")[2]
    assert f"heartbeat: pings {host} after every poll cycle" in check.stdout
    _assert_secret_kept(CHECK, check.stdout, check.stderr)
    with s.run() as daemon:
        endpoint.wait_for(_to(CHECK))
        assert daemon.stop() == 0
    _assert_secret_kept(CHECK, daemon.output())


@pytest.mark.parametrize("where", ["environment", "rules file"])
def test_an_unusable_heartbeat_url_is_refused_without_quoting_it(
    site: Callable[..., Site], where: str
) -> None:
    """A heartbeat URL that is not http(s) is a config error naming the key, not the value."""
    secret = "ftp://hc-ping.com/" + CHECK
    s = site("")
    if where == "environment":
        s.env["WATCHDOG_HEARTBEAT_URL"] = secret
        expected = "WATCHDOG_HEARTBEAT_URL: must be an http(s) URL"
    else:
        text = s.config.read_text().replace(
            "[watchdog]\n", f'[watchdog]\nheartbeat_url = "{secret}"\n', 1
        )
        s.config.write_text(text)
        expected = "watchdog.heartbeat_url: must be an http(s) URL"
    check = s.cli("check", "--config", str(s.config))
    assert check.returncode == 1
    assert expected in check.stderr
    _assert_secret_kept(CHECK, check.stdout, check.stderr)


def test_the_environment_or_credential_wins_over_the_rules_file() -> None:
    """`WATCHDOG_HEARTBEAT_URL` (or the credential file) overrides `[watchdog] heartbeat_url`."""
    text = '[watchdog]\nheartbeat_url = "https://hc-ping.com/from-the-file"\n'
    assert parse_config(text).watchdog.heartbeat_url == SecretStr(
        "https://hc-ping.com/from-the-file"
    )
    config = parse_config(text, overrides={"heartbeat_url": "https://hc-ping.com/from-env"})
    assert config.watchdog.heartbeat_url == SecretStr("https://hc-ping.com/from-env")
