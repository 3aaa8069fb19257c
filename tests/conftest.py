"""Fixtures shared across the test suite."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.elevenlabs import FakeElevenLabs
from tests.fakes.slack import FakeSlack
from tests.harness import API_KEY, SLACK_TOKEN, Site, daemon_env, write_rules
from tests.postgres import PostgresServer, postgres_bindir
from watchdog.store import Store


@pytest.fixture
def fake_elevenlabs() -> Iterator[FakeElevenLabs]:
    """A started loopback ElevenLabs fake (key "test-key", workspace count 0), stopped after."""
    with FakeElevenLabs() as fake:
        yield fake


@pytest.fixture
def api() -> Iterator[FakeElevenLabs]:
    """The loopback ElevenLabs of the process tests: the harness's key, workspace count 1."""
    with FakeElevenLabs(api_key=API_KEY, count=1) as fake:
        yield fake


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    """The loopback Slack of the process tests, taking the harness's bot token."""
    with FakeSlack(token=SLACK_TOKEN) as fake:
        yield fake


@pytest.fixture
def site(tmp_path: Path, api: FakeElevenLabs, slack: FakeSlack) -> Callable[..., Site]:
    """Make a test's rules file, state directory and daemon environment against the fakes
    (a module may override `slack` with a fake of its own; `with_slack=False` is console)."""

    def make(body: str, *, with_slack: bool = True, **options: Any) -> Site:
        config = write_rules(tmp_path / "rules.toml", body, **options)
        state = tmp_path / "state"
        env = daemon_env(
            state, api_url=api.url, slack_api_url=slack.api_url if with_slack else None
        )
        return Site(config, state, env, options)

    return make


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL cluster for the whole session, started on first use and
    removed at the end. Without PostgreSQL installed this skips on a workstation and fails in
    CI (`CI=true`, set by `.ci/run`, which installs Debian's `postgresql`)."""
    bindir = postgres_bindir()
    if bindir is None:
        message = "PostgreSQL is not installed (Debian: apt-get install postgresql)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    server = PostgresServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a fresh, empty database on the session's PostgreSQL server."""
    return postgres_server.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Store]:
    """Opens a store on this test's own database, once with each backend: a SQLite file in
    the state directory, or a fresh PostgreSQL database. Every call opens another
    connection to the same database (a restart, or another process)."""
    if request.param == "sqlite":
        path = Store.default_path(tmp_path / "state")
        return lambda: Store.open(path)
    url: str = request.getfixturevalue("postgres_url")
    return lambda: Store.connect(url)
