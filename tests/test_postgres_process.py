"""`WATCHDOG_DATABASE_URL`: the real `watchdog` processes with their state in PostgreSQL.

The daemon, `watchdog ack`, `silence` and `status` are real processes sharing one database
on the session's throwaway server, as a password-protected role; the loopback fakes stand in
for ElevenLabs and Slack. Every wait is on an audit event or a fake's condition.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import psycopg
import pytest

from tests.fakes.elevenlabs import FakeElevenLabs
from tests.fakes.slack import FakeSlack
from tests.harness import ROOT, Site, alert_of, base_env, rule
from tests.postgres import PostgresServer
from watchdog.settings import load_settings

PASSWORD = "pg-Secret-7f3a9c"
HIGH = rule("high", above=5, severity="critical")


@pytest.fixture
def database_url(postgres_server: PostgresServer, postgres_url: str) -> str:
    """This test's database, as a role that must give its password."""
    return postgres_server.role_with_password(PASSWORD, postgres_url)


def _location(url: str) -> str:
    """What the watchdog may show of the URL: scheme, host, port, database."""
    return "postgresql://" + url.rpartition("@")[2]


@pytest.mark.slow
def test_state_in_postgres_survives_kill_9_and_takes_cli_requests(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack, database_url: str
) -> None:
    """A card is posted; `watchdog ack` and `silence add` from other processes reach the
    running daemon through the database; after kill -9 the restarted daemon restores the
    alert from PostgreSQL and its resolution edits the same card; `report` reads the
    history from there. No SQLite file is made, and the password is in no output."""
    s = site(HIGH)
    s.env["WATCHDOG_DATABASE_URL"] = database_url
    said: list[str] = []
    with s.run() as daemon:
        api.set_count(9)
        firing = daemon.wait_for("alert.firing", rule="high")
        alert_id = firing["alert_id"]
        daemon.wait_for("notify.sent", kind="firing")
        ack = s.cli("ack", alert_id, "--by", "alice")
        assert ack.returncode == 0, ack.stderr
        daemon.wait_for("alert.acked", alert_id=alert_id, by="alice")
        silence = s.cli(
            "silence", "add", "--config", str(s.config), "--rule", "no-data", "--for", "1h",
            "--comment", "maintenance",
        )  # fmt: skip
        assert silence.returncode == 0, silence.stderr
        daemon.wait_for("silence.created", silence=int(silence.stdout))
        status = s.cli("status")
        assert status.returncode == 0, status.stderr
        assert f"state: {_location(database_url)}\n" in status.stdout
        assert f"id={alert_id}" in status.stdout
        said += [ack.stdout, ack.stderr, silence.stdout, silence.stderr, status.stdout]
        daemon.kill()
        said.append(daemon.output())
    with s.run() as restarted:
        api.set_count(1)
        restarted.wait_for("alert.resolved", alert_id=alert_id)
        restarted.wait_for("notify.sent", kind="resolved")
        assert restarted.stop() == 0
        said.append(restarted.output())
    report = s.cli("report", "--config", str(s.config), "--since", "1h", "--json")
    assert report.returncode == 0, report.stderr
    workspace = json.loads(report.stdout.splitlines()[0])
    assert (workspace["series"], workspace["max"]) == ("workspace", 9)  # the history is there
    (card,) = slack.top_level()
    assert alert_of(card) == alert_id
    edits = [m for m in slack.messages if m.method == "chat.update" and "RESOLVED" in m.text]
    assert [(m.channel, m.ts) for m in edits] == [(card.channel, card.ts)]
    assert not Path(s.state, "watchdog.db").exists()
    said.append(json.dumps([asdict(m) for m in slack.messages], default=str))
    assert PASSWORD not in "".join(said)


def _watchdog(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "watchdog", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_wrong_password_is_one_line_without_the_password(
    tmp_path: Path, database_url: str
) -> None:
    """`status` and `ack` with a refused login: exit 1, one line naming the database, no
    traceback, no password."""
    wrong = database_url.replace(PASSWORD, "not-the-" + PASSWORD)
    env = base_env(tmp_path / "state", WATCHDOG_DATABASE_URL=wrong)
    for args in (("status",), ("ack", "0123456789ab")):
        done = _watchdog(env, *args)
        assert done.returncode == 1
        (line,) = done.stderr.splitlines()
        assert line.startswith(f"{_location(database_url)}: cannot use the database: ")
        assert "password authentication failed" in line
        assert PASSWORD not in done.stdout + done.stderr


def test_check_names_the_database_without_the_password(tmp_path: Path, database_url: str) -> None:
    """`watchdog check` connects (a refused login fails it) and shows where the state is
    without user or password."""
    config = tmp_path / "rules.toml"
    config.write_text(HIGH, encoding="utf-8")
    env = base_env(tmp_path / "state", WATCHDOG_DATABASE_URL=database_url)
    done = _watchdog(env, "check", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert f"state in {_location(database_url)}" in done.stdout
    assert PASSWORD not in done.stdout + done.stderr
    env["WATCHDOG_DATABASE_URL"] = database_url.replace(PASSWORD, "wrong")
    refused = _watchdog(env, "check", "--config", str(config))
    assert refused.returncode == 1
    assert "password authentication failed" in refused.stderr


def test_only_postgresql_urls_are_taken(tmp_path: Path) -> None:
    """Another scheme is a clear settings error that does not quote the URL."""
    env = base_env(tmp_path / "state", WATCHDOG_DATABASE_URL="mysql://u:hunter2@db/watchdog")
    done = _watchdog(env, "status")
    assert done.returncode == 1
    assert done.stderr == (
        "environment: WATCHDOG_DATABASE_URL: must be a postgresql:// URL such as "
        "postgresql://watchdog@db.example/watchdog\n"
    )


_WITHOUT_PSYCOPG = """
import sys
sys.modules["psycopg"] = None  # as if the postgresql extra were not installed
from watchdog.cli import main
sys.exit(main(["status"]))
"""


def test_without_psycopg_the_error_names_the_extra(tmp_path: Path, database_url: str) -> None:
    """A plain install (no `postgresql` extra) says what to install, in one line."""
    env = base_env(tmp_path / "state", WATCHDOG_DATABASE_URL=database_url)
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_PSYCOPG],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr == (
        "WATCHDOG_DATABASE_URL: PostgreSQL needs psycopg: "
        "pip install 'convai-watchdog[postgresql]'\n"
    )


def test_the_url_may_come_from_the_credential_file_and_its_password_is_redacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`database_url` in the credentials directory sets it; the password (also alone, as
    a driver message could quote it) is among the values the log redacts."""
    monkeypatch.delenv("WATCHDOG_DATABASE_URL", raising=False)
    (tmp_path / "database_url").write_text("postgresql://app:p%40ss@db:5433/wd\n")
    settings = load_settings(tmp_path)
    assert settings.watchdog_database_url is not None
    assert settings.state_location == "postgresql://db:5433/wd"
    assert {"p%40ss", "p@ss"} <= set(settings.secrets())


def _terminate_backends(url: str) -> int:
    """`pg_terminate_backend` every other connection to the database of `url` but the
    daemon's leadership lock session (losing that one makes it step down, see
    tests/test_ha_process.py); how many."""
    with psycopg.connect(url, autocommit=True) as admin:
        row = admin.execute(
            """SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
               WHERE datname = current_database() AND pid <> pg_backend_pid()
               AND application_name NOT LIKE 'watchdog % pid %'"""
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.slow
def test_a_killed_database_connection_does_not_stop_the_daemon(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack, postgres_url: str
) -> None:
    """`pg_terminate_backend` on the running daemon's connection, again and again: the
    calls it breaks fail as a database error does, the next ones connect again, and the
    alert still fires, posts one card and resolves it."""
    s = site(HIGH)
    s.env["WATCHDOG_DATABASE_URL"] = postgres_url
    with s.run() as daemon:
        for round_ in range(1, 4):
            daemon.wait_for("poll.ok", count=round_ * 3)
            assert _terminate_backends(postgres_url) == 1
        api.set_count(9)
        firing = daemon.wait_for("alert.firing", rule="high")
        daemon.wait_for("notify.sent", kind="firing")
        assert _terminate_backends(postgres_url) == 1
        api.set_count(1)
        daemon.wait_for("alert.resolved", alert_id=firing["alert_id"])
        daemon.wait_for("notify.sent", kind="resolved")
        assert daemon.stop() == 0
        assert daemon.find("state.error")  # the kills did break calls
    (card,) = slack.top_level()
    assert alert_of(card) == firing["alert_id"]
