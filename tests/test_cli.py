"""The `watchdog` command as an operator runs it: exit codes, output, and never a traceback."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fakes.elevenlabs import FakeElevenLabs
from tests.harness import (
    API_KEY,
    ROOT,
    SLACK_TOKEN,
    base_env,
    daemon_env,
    without_file_privileges,
    write_rules,
)
from watchdog import __version__
from watchdog.cli import main
from watchdog.delivery_lag import META_KEY as LAG_META_KEY
from watchdog.delivery_lag import DeliveryLag
from watchdog.model import (
    AlertRecord,
    AlertState,
    Flapping,
    Notification,
    Sample,
    Severity,
    TransitionKind,
)
from watchdog.store import Store

EXAMPLE = ROOT / "rules.example.toml"
COMMANDS = (
    "run",
    "check",
    "poll",
    "replay",
    "report",
    "status",
    "notify-test",
    "ack",
    "demo",
    "silence",
)
AGENTS = [("support", "agent_support"), ("sales", "agent_sales")]

NO_DATA = (  # the `check` line of the built-in alerts
    "no-data: built in, after 2m of failed polls per series, an agent's inhibited by the"
    " workspace's (built in); watchdog-behind: over 10% of series late for as long"
)
FLAP_DEFAULT = (  # the `check` line of the default `[watchdog] flap`
    "flapping: 6 firings and resolutions within 1h make any alert (built-in ones too)"
    " one flapping alert until steady for 1h"
)


def cli(
    *args: str, env: dict[str, str], timeout: float = 30, bound_by_file_modes: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run `python -m watchdog ARGS` in a clean environment and capture its output.

    `bound_by_file_modes` runs it without root's licence to ignore file modes.
    """
    command = [sys.executable, "-m", "watchdog", *args]
    return subprocess.run(
        without_file_privileges(command) if bound_by_file_modes else command,
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def problem(done: subprocess.CompletedProcess[str]) -> list[str]:
    """stderr lines of a run that must have failed with exit 1 and no traceback."""
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    return done.stderr.splitlines()


def rule(body: str, name: str = "r", kind: str = "threshold") -> str:
    return f'[[rules]]\nname = "{name}"\nkind = "{kind}"\n{body}\n'


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """A state directory that does not exist yet (the watchdog creates it)."""
    return tmp_path / "state"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, state: Path) -> None:
    """For in-process calls: no inherited secrets or overrides, state in a temp dir."""
    for name in list(os.environ):
        upper = name.upper()
        if upper.startswith(("ELEVENLABS_", "SLACK_", "WATCHDOG_")) or upper in (
            "CREDENTIALS_DIRECTORY",
            "STATE_DIRECTORY",
        ):
            monkeypatch.delenv(name)
    monkeypatch.setenv("WATCHDOG_STATE_DIR", str(state))


# -- the parser ---------------------------------------------------------------------


def test_version(state: Path) -> None:
    """`watchdog --version` prints the package version and exits 0."""
    done = cli("--version", env=base_env(state))
    assert (done.returncode, done.stdout) == (0, f"watchdog {__version__}\n")


def test_python_m_watchdog_help_lists_the_commands(state: Path) -> None:
    """`python -m watchdog --help` works and lists every command."""
    done = cli("--help", env=base_env(state))
    assert done.returncode == 0
    assert done.stdout.startswith("usage: watchdog ")
    listed = re.findall(r"^    ([\w-]+)\s", done.stdout, flags=re.MULTILINE)
    assert listed == list(COMMANDS)


@pytest.mark.parametrize("args", [(), ("frobnicate",), ("check", "--colour")], ids=str)
def test_usage_errors_exit_2(state: Path, args: tuple[str, ...]) -> None:
    """No command, an unknown command or an unknown option is a usage error (exit 2)."""
    done = cli(*args, env=base_env(state))
    assert done.returncode == 2
    assert done.stderr.startswith("usage: watchdog")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_takes_config(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Every command documents `--config FILE`."""
    with pytest.raises(SystemExit) as caught:
        main([command, "--help"])
    assert caught.value.code == 0
    assert "--config FILE" in capsys.readouterr().out


# -- check: good files and settings -------------------------------------------------


def test_check_example_prints_one_line_per_rule(state: Path) -> None:
    """check on rules.example.toml exits 0: a header, one line per rule, no-data, routing."""
    done = cli("check", "--config", str(EXAMPLE), env=base_env(state))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert lines[0] == (f"{EXAMPLE}: ok: 6 rules, 3 series (workspace + 2 agents), poll every 15s")
    assert lines[1:8] == [
        "  plan: concurrency limit 30, burst: billed at the burst rate above 30, "
        "new calls rejected from 90",
        "  near-concurrency-limit: threshold count > 25 (resolves below 20) for 1m on "
        "workspace [critical] escalates (unacknowledged for 15m: mentions <!subteam^S0123>) "
        "-> #voice-critical",
        "  no-conversations-in-business-hours: threshold count < 1 (resolves above 2) for 5m "
        "on workspace [critical] active mon-fri 09:00-18:00 Europe/Berlin inhibited by "
        "conversations-collapsed (same series or workspace) -> #voice-oncall",
        "  conversations-collapsed: change dropped >= 50% within 5m (base >= 5) on workspace "
        "[critical] -> #voice-oncall",
        "  agent-surge: change rose by >= 15 within 10m on support, sales [warning] "
        "-> #voice-oncall",
        "  burst: built in by [plan]: count > 30, the plan's limit: calls are billed at the "
        "burst rate on workspace [warning] -> #voice-oncall",
        "  at-capacity: built in by [plan]: count >= 90, the burst cap: new calls are rejected "
        "on workspace [critical] -> #voice-oncall",
    ]
    assert lines[8:] == [
        f"  {NO_DATA} [critical] -> #voice-critical",
        f"  {FLAP_DEFAULT}",
        "  alerts go to the console (no Slack configured); API key NOT SET (needed by run "
        f"and poll); state in {state}",
    ]


def test_check_shows_the_plan_and_the_levels_derived_from_it(state: Path, tmp_path: Path) -> None:
    """With [plan], check says the limit, the burst cap, each percentage's count and the
    built-in rules; a change rule resolving by window says so."""
    body = (
        "[plan]\nconcurrency_limit = 30\nburst = true\n\n"
        + rule('above = "80%"\nrecover_below = "70%"', name="near")
        + rule('window = "5m"\ndrop = 5\nresolve = "window"', name="drop", kind="change")
    )
    path = write_rules(tmp_path / "rules.toml", body)
    done = cli("check", "--config", str(path), env=base_env(state))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:6] == [
        f"{path}: ok: 4 rules, 1 series (workspace + 0 agents), poll every 200ms",
        "  plan: concurrency limit 30, burst: billed at the burst rate above 30, "
        "new calls rejected from 90",
        "  near: threshold count > 24 (resolves below 21) on workspace [warning] "
        "(above 80% of 30 = 24, recover_below 70% of 30 = 21) -> #oncall",
        "  drop: change dropped by >= 5 within 5m on workspace [warning] resolves by window "
        "-> #oncall",
        "  burst: built in by [plan]: count > 30, the plan's limit: calls are billed at the "
        "burst rate on workspace [warning] -> #oncall",
        "  at-capacity: built in by [plan]: count >= 90, the burst cap: new calls are rejected "
        "on workspace [critical] -> #oncall",
    ]


def test_check_uses_watchdog_config_and_config_wins(state: Path, tmp_path: Path) -> None:
    """WATCHDOG_CONFIG names the rules file when --config is absent; --config wins."""
    other = write_rules(tmp_path / "other.toml", rule("above = 3"))
    env = base_env(state, WATCHDOG_CONFIG=str(EXAMPLE))
    from_env = cli("check", env=env)
    assert from_env.returncode == 0
    assert from_env.stdout.startswith(f"{EXAMPLE}: ok: 6 rules")
    from_flag = cli("check", "--config", str(other), env=env)
    assert from_flag.returncode == 0
    assert from_flag.stdout.startswith(f"{other}: ok: 1 rules")


def test_check_env_override_beats_the_file(state: Path) -> None:
    """WATCHDOG_POLL_INTERVAL overrides [watchdog] poll_interval, as check's summary shows."""
    done = cli("check", "--config", str(EXAMPLE), env=base_env(state, WATCHDOG_POLL_INTERVAL="5s"))
    assert done.returncode == 0
    assert done.stdout.splitlines()[0].endswith("poll every 5s")


def test_check_reports_slack_mode_and_key_without_printing_secrets(state: Path) -> None:
    """With a key and a bot token, check says so but prints neither secret; a Slack it
    cannot ask leaves the delivery guarantee unknown."""
    unreachable = "http://127.0.0.1:9/api/"  # the discard port: nothing listens
    env = base_env(
        state, ELEVENLABS_API_KEY=API_KEY, SLACK_BOT_TOKEN=SLACK_TOKEN, SLACK_API_URL=unreachable
    )
    done = cli("check", "--config", str(EXAMPLE), env=env)
    assert done.returncode == 0
    assert done.stdout.splitlines()[-2:] == [
        f"  alerts go to Slack (bot token; buttons off: no SLACK_APP_TOKEN); API key set; state"
        f" in {state}",
        "  delivery: unknown: cannot tell: auth.test: unreachable: [Errno 111] Connection refused",
    ]
    assert API_KEY not in done.stdout + done.stderr
    assert SLACK_TOKEN not in done.stdout + done.stderr


def test_check_bot_token_needs_a_channel(state: Path, tmp_path: Path) -> None:
    """In bot mode a rule without a channel (and no [slack] channel) is a problem."""
    path = tmp_path / "rules.toml"
    path.write_text(rule("above = 5"), encoding="utf-8")
    done = cli("check", "--config", str(path), env=base_env(state, SLACK_BOT_TOKEN=SLACK_TOKEN))
    assert problem(done) == [
        f"{path}: slack.channel: required with SLACK_BOT_TOKEN (the no-data alert and rules "
        "r have no channel of their own)"
    ]


def test_check_credentials_directory_supplies_the_key(state: Path, tmp_path: Path) -> None:
    """check sees the key in $CREDENTIALS_DIRECTORY/elevenlabs_api_key, and never prints it."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "elevenlabs_api_key").write_text(API_KEY + "\n", encoding="utf-8")
    env = base_env(state, CREDENTIALS_DIRECTORY=str(creds))
    done = cli("check", "--config", str(EXAMPLE), env=env)
    assert done.returncode == 0
    assert "; API key set;" in done.stdout
    assert API_KEY not in done.stdout


def test_check_in_webhook_mode_says_channels_are_unused(state: Path) -> None:
    """With a webhook, check names each rule's channel as unused instead of routing to it."""
    webhook = "https://hooks.slack.com/services/T000/B000/XXXXXXXX"
    done = cli("check", "--config", str(EXAMPLE), env=base_env(state, SLACK_WEBHOOK_URL=webhook))
    assert done.returncode == 0, done.stderr
    unused = "unused: an incoming webhook posts to the channel it was created for"
    lines = done.stdout.splitlines()
    assert lines[2] == (
        "  near-concurrency-limit: threshold count > 25 (resolves below 20) for 1m on "
        "workspace [critical] escalates (unacknowledged for 15m: mentions <!subteam^S0123>) "
        f"(channel #voice-critical {unused})"
    )
    assert lines[5] == "  agent-surge: change rose by >= 15 within 10m on support, sales [warning]"
    assert lines[8] == (f"  {NO_DATA} [critical] (channel #voice-critical {unused})")
    assert lines[10] == f"  slack.channel #voice-oncall {unused}"
    assert "->" not in done.stdout
    assert webhook not in done.stdout


def test_check_bot_mode_needs_no_slack_channel_when_everything_has_its_own(
    state: Path, tmp_path: Path
) -> None:
    """A [no_data] channel and a channel per rule make [slack] channel unnecessary."""
    path = tmp_path / "rules.toml"
    path.write_text(
        '[no_data]\nchannel = "#nd"\n' + rule('above = 5\nchannel = "#r"'), encoding="utf-8"
    )
    done = cli("check", "--config", str(path), env=base_env(state, SLACK_BOT_TOKEN=SLACK_TOKEN))
    assert done.returncode == 0, done.stderr
    assert f"  {NO_DATA} [critical] -> #nd" in done.stdout.splitlines()


def test_check_bot_mode_names_only_what_lacks_a_channel(state: Path, tmp_path: Path) -> None:
    """With a [no_data] channel, only the rules without one are named as needing it."""
    path = tmp_path / "rules.toml"
    path.write_text('[no_data]\nchannel = "#nd"\n' + rule("above = 5"), encoding="utf-8")
    done = cli("check", "--config", str(path), env=base_env(state, SLACK_BOT_TOKEN=SLACK_TOKEN))
    assert problem(done) == [
        f"{path}: slack.channel: required with SLACK_BOT_TOKEN (rules r have no channel of "
        "their own)"
    ]


def _service_credentials(directory: Path) -> Path:
    """A directory like /etc/watchdog/credentials with an API key and a bot token."""
    directory.mkdir(mode=0o700)
    (directory / "elevenlabs_api_key").write_text(API_KEY, encoding="utf-8")
    (directory / "slack_bot_token").write_text(SLACK_TOKEN, encoding="utf-8")
    return directory


def test_check_credentials_dir_sees_what_the_service_will_see(state: Path, tmp_path: Path) -> None:
    """check --credentials-dir reads the key and token the unit hands over, never prints them."""
    creds = _service_credentials(tmp_path / "creds")
    done = cli(
        "check", "--config", str(EXAMPLE), "--credentials-dir", str(creds), env=base_env(state)
    )
    assert done.returncode == 0, done.stderr
    assert (
        f"  alerts go to Slack (bot token; buttons off: no SLACK_APP_TOKEN); API key set;"
        f" credentials from {creds}; state in {state}"
    ) in done.stdout.splitlines()
    assert API_KEY not in done.stdout + done.stderr
    assert SLACK_TOKEN not in done.stdout + done.stderr


def test_check_reads_the_service_credentials_by_default(state: Path, tmp_path: Path) -> None:
    """Without the flag, check reads the service's directory (here through
    WATCHDOG_CREDENTIALS_DIR, else /etc/watchdog/credentials) when it exists."""
    creds = tmp_path / "etc-watchdog-credentials"
    env = base_env(state, WATCHDOG_CREDENTIALS_DIR=str(creds))
    before = cli("check", "--config", str(EXAMPLE), env=env)
    assert before.returncode == 0, before.stderr
    assert "API key NOT SET (needed by run and poll); state in" in before.stdout
    _service_credentials(creds)
    after = cli("check", "--config", str(EXAMPLE), env=env)
    assert after.returncode == 0, after.stderr
    assert (
        f"  alerts go to Slack (bot token; buttons off: no SLACK_APP_TOKEN); API key set;"
        f" credentials from {creds}; state in {state}"
    ) in after.stdout.splitlines()


def test_check_environment_still_wins_over_the_credentials_dir(state: Path, tmp_path: Path) -> None:
    """As in the service, an environment variable beats the credential file of that name:
    with SLACK_WEBHOOK_URL set, the directory's bot token makes two Slack modes."""
    creds = _service_credentials(tmp_path / "creds")
    webhook = "https://hooks.slack.com/services/T000/B000/XXXXXXXX"
    env = base_env(state, SLACK_WEBHOOK_URL=webhook)
    done = cli("check", "--config", str(EXAMPLE), "--credentials-dir", str(creds), env=env)
    assert problem(done) == [
        "environment: SLACK_BOT_TOKEN and SLACK_WEBHOOK_URL are both set: keep one"
    ]


def _unprivileged_check(base: Path, creds: Path, state: Path) -> list[str]:
    """`watchdog check` as a user who cannot read `creds`, as an operator without sudo is.

    As root: the system Python (the venv's may live under /root, which `nobody` cannot
    read) as `nobody` via setpriv, with this checkout and the venv's packages on its path.
    Otherwise the directory is made unreadable to the current user.
    """
    env = base_env(state, WATCHDOG_CREDENTIALS_DIR=str(creds))
    command = [sys.executable, "-m", "watchdog"]
    if os.geteuid() == 0:
        system = Path("/usr/bin/python3")
        probe = subprocess.run(
            [str(system), "-c", "import sys; print(sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.stdout.strip() != str(sys.version_info[:2]) or not shutil.which("setpriv"):
            pytest.skip("needs setpriv and a system Python of the venv's version")
        nobody = pwd.getpwnam("nobody")
        state.mkdir()
        os.chown(state, nobody.pw_uid, nobody.pw_gid)
        env["HOME"] = str(base)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), sysconfig.get_paths()["purelib"]])
        command = [
            "setpriv",
            f"--reuid={nobody.pw_uid}",
            f"--regid={nobody.pw_gid}",
            "--clear-groups",
            str(system),
            "-m",
            "watchdog",
        ]
    else:
        creds.chmod(0)
    done = subprocess.run(
        [*command, "check", "--config", str(EXAMPLE)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_check_without_sudo_says_why_it_cannot_see_the_credentials() -> None:
    """Run by a user who cannot read the service's credentials, check says so instead of
    only "API key NOT SET", and still checks the rest."""
    base = Path(tempfile.mkdtemp(prefix="watchdog-check-"))  # not under root's 0700 tmp
    try:
        base.chmod(0o755)
        creds = _service_credentials(base / "creds")
        state = base / "state"
        lines = _unprivileged_check(base, creds, state)
        assert lines[-1] == (
            "  alerts go to the console (no Slack configured); API key NOT SET (needed by run "
            f"and poll); {creds} is not readable by this user: run check with sudo to see it; "
            f"state in {state}"
        )
    finally:
        with contextlib.suppress(OSError):
            (base / "creds").chmod(0o700)
        shutil.rmtree(base, ignore_errors=True)


def test_check_credentials_dir_must_exist(state: Path, tmp_path: Path) -> None:
    """A --credentials-dir that does not exist is a problem line, not a silent fallback."""
    missing = tmp_path / "nope"
    done = cli(
        "check", "--config", str(EXAMPLE), "--credentials-dir", str(missing), env=base_env(state)
    )
    assert problem(done) == [f"--credentials-dir: {missing}: not a directory"]


def test_check_warns_about_an_unknown_watchdog_variable(state: Path) -> None:
    """A WATCHDOG_* typo is a warning naming the closest variable; check still passes."""
    env = base_env(state, WATCHDOG_POLL_INTERVALL="5s")
    done = cli("check", "--config", str(EXAMPLE), env=env)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        "warning: environment: WATCHDOG_POLL_INTERVALL: unknown variable, ignored: "
        "did you mean WATCHDOG_POLL_INTERVAL?"
    ]
    assert done.stdout.splitlines()[0].endswith("poll every 15s")


# -- check: bad files ---------------------------------------------------------------

BAD_RULES = [
    ("unknown-key", rule('above = 5\ncolour = "red"'), ["rules[0] (r).colour: unknown key"]),
    (
        "wrong-type",
        rule('above = "five"'),
        [
            "rules[0] (r).above: expected a count or a percentage of the plan's limit like "
            "'80%', got 'five'"
        ],
    ),
    (
        "unknown-kind",
        rule("above = 5", kind="ratio"),
        ["rules[0] (r): unknown kind 'ratio': use 'threshold' or 'change'"],
    ),
    (
        "duplicate-names",
        rule("above = 5") + rule("above = 6"),
        ["rules[1] (r).name: duplicate rule name"],
    ),
    (
        "neither-above-below",
        rule(""),
        ["rules[0] (r).above: set exactly one of 'above' or 'below'"],
    ),
    (
        "both-above-below",
        rule("above = 5\nbelow = 2"),
        ["rules[0] (r).above: set exactly one of 'above' or 'below'"],
    ),
    (
        "hysteresis-above-wrong-side",
        rule("above = 5\nrecover_below = 9"),
        [
            "rules[0] (r).recover_below: must be <= above (5): it resolves when count < "
            "recover_below"
        ],
    ),
    (
        "hysteresis-below-wrong-side",
        rule("below = 5\nrecover_above = 2"),
        [
            "rules[0] (r).recover_above: must be >= below (5): it resolves when count > "
            "recover_above"
        ],
    ),
    (
        "hysteresis-wrong-key",
        rule("above = 5\nrecover_above = 3"),
        ["rules[0] (r).recover_above: an 'above' rule uses 'recover_below'"],
    ),
    (
        "bad-duration",
        rule('above = 5\nfor = "5 minutes"'),
        [
            "rules[0] (r).for: invalid duration '5 minutes': use a number and ms, s, m, h or d,"
            " e.g. '15s'"
        ],
    ),
    (
        "bad-time-zone",
        rule('above = 5\nactive = { tz = "Mars/Olympus" }'),
        [
            "rules[0] (r).active.tz: unknown time zone 'Mars/Olympus': "
            "use an IANA name such as 'Europe/Berlin'"
        ],
    ),
    (
        "unknown-scope",
        rule('above = 5\nscope = "billing"'),
        ["rules[0] (r).scope: unknown series 'billing': not an agent name"],
    ),
    (
        "near-miss-scope",
        rule('above = 5\nscope = "suport"'),
        ["rules[0] (r).scope: unknown series 'suport': did you mean 'support'?"],
    ),
    (
        "near-miss-key",
        rule("above = 5\nrecover_bellow = 3"),
        ["rules[0] (r).recover_bellow: unknown key: did you mean 'recover_below'?"],
    ),
    (
        "long-name",
        rule("above = 5", name="n" * 65),
        [f"rules[0] ({'n' * 65}).name: is 65 characters long: at most 64"],
    ),
    (
        "every-type-problem",
        rule('above = 5\ncolour = "x"', name="a")
        + rule('window = "soon"\ndrop = 3', name="b", kind="change"),
        [
            "rules[0] (a).colour: unknown key",
            "rules[1] (b).window: invalid duration 'soon': use a number and ms, s, m, h or d, "
            "e.g. '15s'",
        ],
    ),
    (
        "every-semantic-problem",
        rule('above = 5\nscope = ["support", "billing"]', name="a") + rule("below = 0", name="a"),
        [
            "rules[0] (a).scope: unknown series 'billing': not an agent name",
            "rules[1] (a).name: duplicate rule name",
            "rules[1] (a).below: count < 0 can never hold: use below = 1",
        ],
    ),
]


@pytest.mark.parametrize(
    ("body", "expected"), [c[1:] for c in BAD_RULES], ids=[c[0] for c in BAD_RULES]
)
def test_check_bad_rules_file(state: Path, tmp_path: Path, body: str, expected: list[str]) -> None:
    """A bad rules file is exit 1 with exact `FILE: location: message` lines on stderr."""
    path = write_rules(tmp_path / "rules.toml", body, agents=AGENTS)
    done = cli("check", "--config", str(path), env=base_env(state))
    assert problem(done) == [f"{path}: {line}" for line in expected]
    assert done.stdout == ""


def test_check_toml_syntax_error_names_the_line(state: Path, tmp_path: Path) -> None:
    """A TOML syntax error is one problem line giving the line number of the mistake."""
    path = write_rules(tmp_path / "rules.toml", 'name = "r"\nkind = threshold\n')
    line = path.read_text(encoding="utf-8").splitlines().index("kind = threshold") + 1
    (only,) = problem(cli("check", "--config", str(path), env=base_env(state)))
    assert re.fullmatch(
        rf"{re.escape(str(path))}: TOML syntax error: .* \(at line {line}, column \d+\)", only
    ), only


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            rule('above = 5\nactive = { tz = "America" }'),
            id="tz-names-a-directory",
        ),
        pytest.param(
            rule(f'above = 5\nactive = {{ tz = "{"A" * 300}" }}'),
            id="tz-too-long",
        ),
        pytest.param(
            "x = " + "[" * 600 + "]" * 600 + "\n",
            id="deeply-nested",
        ),
        pytest.param(
            rule('above = 5\nactive = { tz = "../../etc/passwd" }'), id="tz-path-traversal"
        ),
    ],
)
def test_check_odd_rules_never_traceback(state: Path, tmp_path: Path, body: str) -> None:
    """Odd but parseable input still ends as problem lines naming the file."""
    path = write_rules(tmp_path / "rules.toml", body)
    lines = problem(cli("check", "--config", str(path), env=base_env(state)))
    assert lines
    assert all(line.startswith(f"{path}: ") for line in lines)


def test_check_problem_with_newline_in_a_key_stays_one_line(state: Path, tmp_path: Path) -> None:
    """Each problem is exactly one stderr line, even when a key contains a newline."""
    path = tmp_path / "rules.toml"
    path.write_text('"a\\nb" = 1\n', encoding="utf-8")
    lines = problem(cli("check", "--config", str(path), env=base_env(state)))
    assert len(lines) == 1
    assert lines[0].startswith(f"{path}: ")


def test_check_without_a_rules_file(state: Path) -> None:
    """Neither --config nor WATCHDOG_CONFIG: a message saying how to give one."""
    assert problem(cli("check", env=base_env(state))) == [
        "no rules file: pass --config FILE or set WATCHDOG_CONFIG (see rules.example.toml)"
    ]


@pytest.mark.parametrize("kind", ["missing", "directory", "not-utf8", "unreadable"])
def test_check_unusable_rules_file(state: Path, tmp_path: Path, kind: str) -> None:
    """A rules file that cannot be read or decoded is one line naming it and why."""
    path = tmp_path / "rules.toml"
    expected = {
        "missing": f"{path}: cannot read: No such file or directory",
        "directory": f"{path}: cannot read: Is a directory",
        "not-utf8": f"{path}: not UTF-8 text (byte 3)",
        "unreadable": f"{path}: cannot read: Permission denied",
    }[kind]
    if kind == "directory":
        path.mkdir()
    elif kind == "not-utf8":
        path.write_bytes(b"# r\xe9gles\n[watchdog]\n")
    elif kind == "unreadable":
        path.write_text("[watchdog]\n", encoding="utf-8")
        path.chmod(0)
    done = cli("check", "--config", str(path), env=base_env(state), bound_by_file_modes=True)
    assert problem(done) == [expected]


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"ELEVENLABS_BASE_URL": "ftp://x"}, "ELEVENLABS_BASE_URL"),
        ({"WATCHDOG_LOG_LEVEL": "loud"}, "WATCHDOG_LOG_LEVEL"),
        (
            {"SLACK_BOT_TOKEN": SLACK_TOKEN, "SLACK_WEBHOOK_URL": "https://hooks.x/y"},
            "SLACK_BOT_TOKEN and SLACK_WEBHOOK_URL",
        ),
        ({"SLACK_WEBHOOK_URL": "not-a-url"}, "SLACK_WEBHOOK_URL"),
        ({"ELEVENLABS_API_KEY": ""}, "ELEVENLABS_API_KEY"),
    ],
    ids=["base-url", "log-level", "bot-and-webhook", "webhook", "empty-key"],
)
def test_check_bad_environment_names_the_variable(
    state: Path, env: dict[str, str], variable: str
) -> None:
    """A bad environment value is exit 1 with a line `environment: VARIABLE...`."""
    lines = problem(cli("check", "--config", str(EXAMPLE), env=base_env(state, **env)))
    assert len(lines) == 1
    assert lines[0].startswith(f"environment: {variable}")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("WATCHDOG_POLL_INTERVAL", "abc"),
        ("WATCHDOG_CONCURRENCY", "many"),
        ("WATCHDOG_NO_DATA_SEVERITY", "loud"),
    ],
)
def test_check_bad_override_is_rejected(state: Path, variable: str, value: str) -> None:
    """A bad WATCHDOG_* override of the [watchdog] section is exit 1 without a traceback."""
    env = base_env(state, **{variable: value})
    lines = problem(cli("check", "--config", str(EXAMPLE), env=env))
    key = variable.removeprefix("WATCHDOG_").lower()
    assert len(lines) == 1
    assert f"watchdog.{key}: " in lines[0] or variable in lines[0]


def test_check_bad_override_names_the_variable(state: Path) -> None:
    """WATCHDOG_POLL_INTERVAL=abc is reported naming WATCHDOG_POLL_INTERVAL."""
    env = base_env(state, WATCHDOG_POLL_INTERVAL="abc")
    (line,) = problem(cli("check", "--config", str(EXAMPLE), env=env))
    assert "WATCHDOG_POLL_INTERVAL" in line


def test_check_superscript_concurrency_is_a_problem_line(state: Path) -> None:
    """WATCHDOG_CONCURRENCY=² is rejected as an invalid integer, not a traceback."""
    env = base_env(state, WATCHDOG_CONCURRENCY="²")
    (line,) = problem(cli("check", "--config", str(EXAMPLE), env=env))
    assert "concurrency" in line.lower()


def test_check_validates_the_metrics_address(state: Path) -> None:
    """A bad WATCHDOG_METRICS_ADDR fails check, naming the variable."""
    env = base_env(state, WATCHDOG_METRICS_ADDR="garbage")
    (line,) = problem(cli("check", "--config", str(EXAMPLE), env=env))
    assert line.startswith("environment: WATCHDOG_METRICS_ADDR: ")


# -- check: the state directory -----------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"hello, not a database\n", "not a SQLite database (corrupt or foreign file)"),
        (
            b"SQLite format 3\x00" + b"\x01" * 4000,
            "cannot use the database: file is not a database",
        ),
    ],
    ids=["foreign-file", "corrupt-sqlite"],
)
def test_check_reports_a_corrupt_database(state: Path, content: bytes, expected: str) -> None:
    """An unusable watchdog.db is exit 1 with a line naming the file."""
    state.mkdir()
    db = state / "watchdog.db"
    db.write_bytes(content)
    assert problem(cli("check", "--config", str(EXAMPLE), env=base_env(state))) == [
        f"{db}: {expected}"
    ]


def test_check_reports_a_state_dir_that_is_a_file(tmp_path: Path) -> None:
    """A state directory path that is a regular file is named in the problem line."""
    path = tmp_path / "state"
    path.write_text("", encoding="utf-8")
    assert problem(cli("check", "--config", str(EXAMPLE), env=base_env(path))) == [
        f"{path}: the state directory path exists but is not a directory"
    ]


def _unwritable_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "readonly"
    directory.mkdir()
    directory.chmod(0o555)
    try:
        (directory / "probe").touch()
    except OSError:
        yield directory
    else:  # root ignores the mode; /sys/kernel refuses new files even to root
        (directory / "probe").unlink()
        sys_dir = Path("/sys/kernel")
        if not sys_dir.is_dir() or _creatable(sys_dir):
            pytest.skip("no directory here refuses new files to this user")
        yield sys_dir
    finally:
        directory.chmod(0o755)


def _creatable(directory: Path) -> bool:
    try:
        (directory / ".watchdog-probe").touch()
    except OSError:
        return False
    (directory / ".watchdog-probe").unlink()
    return True


@pytest.fixture
def unwritable_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory in which no new file can be created by this process."""
    yield from _unwritable_dir(tmp_path)


def test_check_reports_an_unwritable_state_dir(unwritable_dir: Path) -> None:
    """A state directory that refuses new files is exit 1 naming the directory."""
    lines = problem(cli("check", "--config", str(EXAMPLE), env=base_env(unwritable_dir)))
    assert len(lines) == 1
    assert lines[0].startswith(f"{unwritable_dir}: the state directory is not writable: ")


# -- poll and run -------------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeElevenLabs]:
    """The loopback ElevenLabs fake with the harness key: workspace 7, support 3, sales 2."""
    with FakeElevenLabs(api_key=API_KEY) as server:
        server.set_count(7)
        server.set_count(3, agent_id="agent_support")
        server.set_count(2, agent_id="agent_sales")
        yield server


@pytest.fixture
def poll_rules(tmp_path: Path) -> Path:
    return write_rules(tmp_path / "rules.toml", rule("above = 50"), agents=AGENTS)


def test_poll_prints_every_series(state: Path, fake: FakeElevenLabs, poll_rules: Path) -> None:
    """poll prints the workspace and each agent with its count, exit 0."""
    done = cli("poll", "--config", str(poll_rules), env=daemon_env(state, api_url=fake.url))
    assert done.returncode == 0, done.stderr
    assert [line.split() for line in done.stdout.splitlines()] == [
        ["workspace", "7"],
        ["support", "3"],
        ["sales", "2"],
    ]
    assert {r.query.get("agent_id") for r in fake.requests} == {
        None,
        "agent_support",
        "agent_sales",
    }


def test_poll_json_gives_one_object_per_series(
    state: Path, fake: FakeElevenLabs, poll_rules: Path
) -> None:
    """poll --json prints {series, count, at} per series with an aware ISO timestamp."""
    before = datetime.now(UTC)
    done = cli(
        "poll", "--json", "--config", str(poll_rules), env=daemon_env(state, api_url=fake.url)
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["series"], r["count"]) for r in rows] == [
        ("workspace", 7),
        ("support", 3),
        ("sales", 2),
    ]
    for row in rows:
        assert set(row) == {"series", "count", "at"}
        assert before <= datetime.fromisoformat(row["at"]) <= datetime.now(UTC)


def test_poll_with_a_failing_agent_exits_1(
    state: Path, fake: FakeElevenLabs, poll_rules: Path
) -> None:
    """One failing series: the others are still printed, an error line, exit 1."""
    fake.set_behaviour(503, agent_id="agent_sales")
    env = daemon_env(state, api_url=fake.url)
    done = cli("poll", "--config", str(poll_rules), env=env)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stdout.splitlines()
    assert [line.split() for line in lines[:2]] == [["workspace", "7"], ["support", "3"]]
    assert re.fullmatch(r"sales\s+error: server error: HTTP 503\b.*", lines[2]), lines[2]

    fake.set_behaviour(503, agent_id="agent_sales")
    done = cli("poll", "--json", "--config", str(poll_rules), env=env)
    assert done.returncode == 1
    last = json.loads(done.stdout.splitlines()[-1])
    assert (last["series"], last["error"]) == ("sales", "server error")
    assert "count" not in last


def test_poll_with_a_rejected_key_never_prints_it(
    state: Path, fake: FakeElevenLabs, poll_rules: Path
) -> None:
    """A key the API rejects gives 'rejected key' per series, exit 1, and the key unprinted."""
    wrong = "sk_wrong_0123456789abcdef"
    env = base_env(state, ELEVENLABS_BASE_URL=fake.url, ELEVENLABS_API_KEY=wrong)
    done = cli("poll", "--config", str(poll_rules), env=env)
    assert done.returncode == 1
    assert all("error: rejected key" in line for line in done.stdout.splitlines())
    assert wrong not in done.stdout + done.stderr


def test_poll_key_from_credentials_and_env_wins(
    state: Path, tmp_path: Path, fake: FakeElevenLabs, poll_rules: Path
) -> None:
    """The credentials directory supplies the key; an environment key is used over it."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "elevenlabs_api_key").write_text(API_KEY + "\n", encoding="utf-8")
    env = base_env(state, ELEVENLABS_BASE_URL=fake.url, CREDENTIALS_DIRECTORY=str(creds))
    assert cli("poll", "--config", str(poll_rules), env=env).returncode == 0
    assert {r.headers.get("xi-api-key") for r in fake.requests} == {API_KEY}

    (creds / "elevenlabs_api_key").write_text("sk_stale_key_in_file\n", encoding="utf-8")
    env["ELEVENLABS_API_KEY"] = API_KEY
    assert cli("poll", "--config", str(poll_rules), env=env).returncode == 0
    assert "sk_stale_key_in_file" not in {r.headers.get("xi-api-key") for r in fake.requests}


@pytest.mark.parametrize("command", ["run", "poll"])
def test_run_and_poll_need_an_api_key(state: Path, command: str) -> None:
    """Without an API key, run and poll stop at once with a message saying where to put it."""
    assert problem(cli(command, "--config", str(EXAMPLE), env=base_env(state))) == [
        "environment: ELEVENLABS_API_KEY is not set "
        "(or put it in $CREDENTIALS_DIRECTORY/elevenlabs_api_key)"
    ]


def test_poll_non_ascii_key_is_a_problem_line(
    state: Path, poll_rules: Path, fake: FakeElevenLabs
) -> None:
    """A key with a non-ASCII character is one line naming the variable, and nothing is polled."""
    env = base_env(state, ELEVENLABS_BASE_URL=fake.url, ELEVENLABS_API_KEY="sk\xa0x")
    done = cli("poll", "--config", str(poll_rules), env=env)
    assert problem(done) == [
        "environment: ELEVENLABS_API_KEY: must be one line of printable ASCII without spaces "
        "(a pasted key often carries a stray character)"
    ]
    assert done.stdout == ""
    assert fake.requests == []


def test_poll_malformed_base_url_is_a_problem_line(state: Path, poll_rules: Path) -> None:
    """A malformed base URL is exit 1 naming ELEVENLABS_BASE_URL, not a traceback."""
    env = base_env(state, ELEVENLABS_BASE_URL="http://[::1", ELEVENLABS_API_KEY=API_KEY)
    lines = problem(cli("poll", "--config", str(poll_rules), env=env))
    assert any("ELEVENLABS_BASE_URL" in line for line in lines)


# -- replay --history ---------------------------------------------------------------


def _history_rules(path: Path, above: int) -> Path:
    path.write_text(
        '[watchdog]\npoll_interval = "1m"\nstale_after = "5m"\n\n'
        + rule(f"above = {above}", name="high"),
        encoding="utf-8",
    )
    return path


@pytest.fixture
def history(state: Path) -> datetime:
    """A state db with 5 recent workspace samples and an old spike 3 days back."""
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    old = base - timedelta(days=3)
    counts = [5, 15, 25, 5, 5]
    samples = [Sample("workspace", old, 50), Sample("workspace", old + timedelta(minutes=1), 5)]
    samples += [Sample("workspace", base + timedelta(minutes=i), c) for i, c in enumerate(counts)]
    with Store.open(Store.default_path(state)) as store:
        store.apply(samples=samples)
    return base


def _transition(
    at: datetime, state: str, count: int | None, rule: str = "high"
) -> dict[str, object]:
    return {
        "at": at.isoformat(),
        "rule": rule,
        "scope": "workspace",
        "state": state,
        "count": count,
    }


def test_replay_history_backtests_the_stored_samples(
    state: Path, tmp_path: Path, history: datetime
) -> None:
    """replay --history runs the rules over the last 24h of stored samples."""
    rules = _history_rules(tmp_path / "a.toml", above=10)
    done = cli("replay", "--history", "--json", "--config", str(rules), env=base_env(state))
    assert done.returncode == 0, done.stderr
    assert [json.loads(line) for line in done.stdout.splitlines()] == [
        _transition(history + timedelta(minutes=1), "firing", 15),
        _transition(history + timedelta(minutes=3), "resolved", 5),
    ]


def test_replay_history_with_new_rules(state: Path, tmp_path: Path, history: datetime) -> None:
    """--config NEW_RULES backtests a different rule set against the same history."""
    rules = _history_rules(tmp_path / "b.toml", above=20)
    done = cli("replay", "--history", "--json", "--config", str(rules), env=base_env(state))
    assert done.returncode == 0, done.stderr
    assert [json.loads(line) for line in done.stdout.splitlines()] == [
        _transition(history + timedelta(minutes=2), "firing", 25),
        _transition(history + timedelta(minutes=3), "resolved", 5),
    ]


def test_replay_history_since_reaches_further_back(
    state: Path, tmp_path: Path, history: datetime
) -> None:
    """--since 7d includes the old spike; the 3-day gap raises no-data at stale_after (5m)."""
    rules = _history_rules(tmp_path / "a.toml", above=10)
    args = ("replay", "--history", "--since", "7d", "--json", "--config", str(rules))
    done = cli(*args, env=base_env(state))
    assert done.returncode == 0, done.stderr
    old = history - timedelta(days=3)
    assert [json.loads(line) for line in done.stdout.splitlines()] == [
        _transition(old, "firing", 50),
        _transition(old + timedelta(minutes=1), "resolved", 5),
        _transition(old + timedelta(minutes=6), "firing", None, rule="no-data"),
        _transition(history, "resolved", 5, rule="no-data"),
        _transition(history + timedelta(minutes=1), "firing", 15),
        _transition(history + timedelta(minutes=3), "resolved", 5),
    ]


def test_replay_history_since_too_short(state: Path, tmp_path: Path, history: datetime) -> None:
    """With no samples in the --since window: exit 1 and a message naming the database."""
    rules = _history_rules(tmp_path / "a.toml", above=10)
    done = cli("replay", "--history", "--since", "10m", "--config", str(rules), env=base_env(state))
    assert problem(done) == [f"{state / 'watchdog.db'}: no sample history in the last 10m"]


def test_replay_history_bad_since_is_usage(state: Path, tmp_path: Path) -> None:
    """An unparseable --since is a usage error (exit 2) quoting the duration syntax."""
    rules = _history_rules(tmp_path / "a.toml", above=10)
    args = ("replay", "--history", "--since", "yesterday", "--config", str(rules))
    done = cli(*args, env=base_env(state))
    assert done.returncode == 2
    assert done.stderr.startswith("watchdog replay: --since: invalid duration 'yesterday'")


# -- status -------------------------------------------------------------------------


def _note(
    kind: TransitionKind, rule: str, alert_id: str, at: datetime, channel: str
) -> Notification:
    return Notification(
        alert_id=alert_id,
        kind=kind,
        rule=rule,
        series="workspace",
        severity=Severity.CRITICAL,
        at=at,
        since=at,
        count=30,
        condition="count > 25",
        channel=channel,
    )


@pytest.fixture
def populated(state: Path) -> datetime:
    """A state db: two series, a firing and a pending alert, 2 queued notes, 1 dead letter."""
    now = datetime.now(UTC).replace(microsecond=0)

    def ago(minutes: int) -> datetime:
        return now - timedelta(minutes=minutes)

    firing = AlertRecord("near", "workspace", "a1", AlertState.FIRING, ago(10), 30, ago(10), "c")
    pending = AlertRecord("low", "support", "a2", AlertState.PENDING, ago(3), 0, None, "count < 1")
    with Store.open(Store.default_path(state)) as store:
        store.apply(
            samples=[Sample("support", ago(1), 4), Sample("workspace", ago(2), 30)],
            alerts=[firing, pending],
            notifications=[
                _note(TransitionKind.FIRING, "near", "a1", ago(10), "#oncall"),
                _note(TransitionKind.FIRING, "gone", "a3", ago(20), "#dead"),
                _note(TransitionKind.REPEAT, "near", "a1", ago(5), "#oncall"),
            ],
        )
        heads = {entry.channel: entry for entry in store.outbox_heads()}
        store.mark_retry(heads["#oncall"].id, attempts=2, next_attempt_at=now, error="slack 503")
        store.dead_letter(heads["#dead"].id, reason="channel_not_found", attempts=1, at=ago(1))
        lag = DeliveryLag().observe(95.0, ago(20)).observe(3.0, ago(2))
        store.set_meta(LAG_META_KEY, lag.to_json())
    return now


def test_status_text_shows_series_alerts_outbox_and_dead_letters(
    state: Path, populated: datetime
) -> None:
    """status prints each series, live alerts with their age, the outbox and dead letters."""
    done = cli("status", env=base_env(state))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    created = (populated - timedelta(minutes=10)).isoformat()
    failed = (populated - timedelta(minutes=1)).isoformat()
    patterns = [
        re.escape(f"state: {state / 'watchdog.db'}"),
        "series:",
        r"  workspace\s+30   2m( \d+s)? ago",
        r"  support\s+4   1m( \d+s)? ago",
        "alerts:",
        r"  PENDING  low \[support\] \[warning\] for 3m( \d+s)?  count=0  id=a2",
        r"  FIRING   near \[workspace\] \[warning\] for 10m( \d+s)?  count=30  id=a1",
        re.escape(
            f"outbox: 2 undelivered; oldest firing near since {created} (2 attempts, "
            "last error: slack 503)"
        ),
        r"delivery lag: last 3s \(sent 2m( \d+s)? ago\), worst 1m 35s in the last hour,"
        r" the oldest queued has waited 10m( \d+s)?",
        "dead letters: 1",
        re.escape(f"  {failed} firing gone -> channel_not_found"),
    ]
    assert len(lines) == len(patterns), done.stdout
    for line, pattern in zip(lines, patterns, strict=True):
        assert re.fullmatch(pattern, line), (line, pattern)


def test_status_json_is_one_document(state: Path, populated: datetime) -> None:
    """status --json gives series, alerts, outbox (depth, oldest) and dead letters."""
    done = cli("status", "--json", env=base_env(state))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)

    def ago(minutes: int) -> str:
        return (populated - timedelta(minutes=minutes)).isoformat()

    assert report["series"] == [
        {"series": "workspace", "count": 30, "at": ago(2)},
        {"series": "support", "count": 4, "at": ago(1)},
    ]
    assert [(a["rule"], a["series"], a["state"], a["since"]) for a in report["alerts"]] == [
        ("low", "support", "pending", ago(3)),
        ("near", "workspace", "firing", ago(10)),
    ]
    assert report["outbox"]["depth"] == 2
    oldest = report["outbox"]["oldest"]
    assert {k: oldest[k] for k in ("channel", "kind", "rule", "alert_id", "attempts")} == {
        "channel": "#oncall",
        "kind": "firing",
        "rule": "near",
        "alert_id": "a1",
        "attempts": 2,
    }
    assert (oldest["created_at"], oldest["last_error"]) == (ago(10), "slack 503")
    lag = report["delivery_lag"]
    assert (lag["last_seconds"], lag["last_sent_at"], lag["worst_last_hour_seconds"]) == (
        3.0,
        ago(2),
        95.0,
    )
    assert 600 <= lag["waiting_seconds"] < 660
    assert report["dead_letters"] == [
        {
            "alert_id": "a3",
            "kind": "firing",
            "rule": "gone",
            "channel": "#dead",
            "failed_at": ago(1),
            "attempts": 1,
            "reason": "channel_not_found",
        }
    ]


ESCALATING = rule(
    'above = 20\nescalate = [{ above = 30, severity = "critical", mention = "<!subteam^S1>" },'
    ' { after = "15m", mention = "<@lead>" }]',
    name="near",
)


def test_check_lists_escalation_stages_and_the_flap_settings(state: Path, tmp_path: Path) -> None:
    """check names each rule's escalate stages (what each does) and the flap settings."""
    path = write_rules(tmp_path / "rules.toml", ESCALATING)
    text = path.read_text(encoding="utf-8")
    path.write_text(
        text.replace("[watchdog]\n", '[watchdog]\nflap = { changes = 4, window = "10m" }\n')
    )
    done = cli("check", "--config", str(path), env=base_env(state))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1] == (
        "  near: threshold count > 20 on workspace [warning] escalates (count > 30: critical,"
        " mentions <!subteam^S1>; unacknowledged for 15m: mentions <@lead>) -> #oncall"
    )
    assert lines[3] == (
        "  flapping: 4 firings and resolutions within 10m make any alert (built-in ones too)"
        " one flapping alert until steady for 10m"
    )
    path.write_text(text.replace("[watchdog]\n", "[watchdog]\nflap = false\n"))
    done = cli("check", "--config", str(path), env=base_env(state))
    assert done.stdout.splitlines()[3] == "  flapping: off (flap = false)"


def test_check_shows_what_a_stage_percentage_resolved_to(state: Path, tmp_path: Path) -> None:
    """An escalate level written as a percentage of the plan's limit: check says its count."""
    body = "[plan]\nconcurrency_limit = 30\n\n" + rule(
        'above = "80%"\nescalate = { above = "90%", severity = "critical" }', name="near"
    )
    path = write_rules(tmp_path / "rules.toml", body)
    done = cli("check", "--config", str(path), env=base_env(state))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[2] == (
        "  near: threshold count > 24 on workspace [warning] (above 80% of 30 = 24,"
        " escalate[0].above 90% of 30 = 27) escalates (count > 27: critical) -> #oncall"
    )


@pytest.fixture
def escalated(state: Path) -> datetime:
    """A state db with one firing alert: both stages in force, flapping, acknowledged."""
    now = datetime.now(UTC).replace(microsecond=0)
    alert = AlertRecord(
        rule="near",
        series="workspace",
        alert_id="a1",
        state=AlertState.FIRING,
        since=now - timedelta(minutes=30),
        last_count=33,
        last_notified=now - timedelta(minutes=30),
        condition="count > 20",
        severity=Severity.CRITICAL,
        escalation=0b11,
        acked_at=now - timedelta(minutes=5),
        acked_by="ann",
        flapping=Flapping(
            since=now - timedelta(minutes=20), stable_since=now - timedelta(minutes=4), firing=True
        ),
    )
    with Store.open(Store.default_path(state)) as store:
        store.apply(samples=[Sample("workspace", now, 33)], alerts=[alert], notifications=[])
    return now


def test_status_shows_severity_stages_flapping_and_acknowledgement(
    state: Path, tmp_path: Path, escalated: datetime
) -> None:
    """status (text and --json) gives each alert's severity now, the escalate stages in
    force (named by the rules file), whether it flaps and its real state, and who acked."""
    path = write_rules(tmp_path / "rules.toml", ESCALATING)
    done = cli("status", "--config", str(path), env=base_env(state))
    assert done.returncode == 0, done.stderr
    (line,) = [line for line in done.stdout.splitlines() if "id=a1" in line]
    assert re.fullmatch(
        r"  FLAPPING near \[workspace\] \[critical\] for 30m( \d+s)?  count=33  id=a1"
        r"  escalated: count > 30: critical, mentions <!subteam\^S1>;"
        r" unacknowledged for 15m: mentions <@lead>"
        r"  flapping for 20m( \d+s)?, really firing for 4m( \d+s)?"
        r"  acknowledged by ann 5m( \d+s)? ago",
        line,
    ), line
    done = cli("status", "--json", "--config", str(path), env=base_env(state))
    (alert,) = json.loads(done.stdout)["alerts"]

    def ago(minutes: int) -> str:
        return (escalated - timedelta(minutes=minutes)).isoformat()

    assert {k: alert[k] for k in ("state", "severity", "escalation", "flapping", "acked_by")} == {
        "state": "firing",
        "severity": "critical",
        "escalation": [
            "count > 30: critical, mentions <!subteam^S1>",
            "unacknowledged for 15m: mentions <@lead>",
        ],
        "flapping": {"since": ago(20), "real_state": "firing", "steady_since": ago(4)},
        "acked_by": "ann",
    }
    assert alert["acked_at"] == ago(5)


def test_status_without_rules_numbers_the_stages(state: Path, escalated: datetime) -> None:
    """Without a rules file (or with one that does not load) the stages go by number."""
    done = cli("status", "--json", env=base_env(state))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["alerts"][0]["escalation"] == ["stage 1", "stage 2"]
    broken = write_rules(state.parent / "broken.toml", "[[rules]]\n")
    done = cli("status", "--json", "--config", str(broken), env=base_env(state))
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("warning: escalation stages shown by number: ")
    assert json.loads(done.stdout)["alerts"][0]["escalation"] == ["stage 1", "stage 2"]


def test_status_of_an_empty_database(state: Path) -> None:
    """A fresh database: no series, no alerts, an empty outbox, no dead letters."""
    Store.open(Store.default_path(state)).close()
    done = cli("status", "--json", env=base_env(state))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "series": [],
        "alerts": [],
        "outbox": {"depth": 0, "oldest": None},
        "delivery_lag": {
            "last_seconds": None,
            "last_sent_at": None,
            "worst_last_hour_seconds": None,
            "waiting_seconds": None,
        },
        "silences": [],
        "dead_letters": [],
    }
    text = cli("status", env=base_env(state)).stdout.splitlines()
    assert text[-5:] == [
        "alerts:",
        "  none pending or firing",
        "outbox: 0 undelivered",
        "delivery lag: nothing sent yet",
        "dead letters: 0",
    ]


def test_status_says_when_nothing_was_sent_in_the_last_hour(state: Path) -> None:
    """An old record is shown as such: the last lag, and no worst for the past hour."""
    with Store.open(Store.default_path(state)) as store:
        sent = datetime.now(UTC) - timedelta(hours=2)
        store.set_meta(LAG_META_KEY, DeliveryLag().observe(3.0, sent).to_json())
    lines = cli("status", env=base_env(state)).stdout.splitlines()
    assert any(
        re.fullmatch(
            r"delivery lag: last 3s \(sent 2h( \d+s)? ago\), none sent in the last hour", x
        )
        for x in lines
    ), lines


@pytest.mark.parametrize("json_flag", [(), ("--json",)], ids=["text", "json"])
def test_status_without_a_database(state: Path, json_flag: tuple[str, ...]) -> None:
    """No state database yet: exit 1 with a message naming the path; nothing is created."""
    db = state / "watchdog.db"
    assert problem(cli("status", *json_flag, env=base_env(state))) == [
        f"{db}: no state database yet (has `watchdog run` been started?)"
    ]
    assert not db.exists()


def test_status_of_a_corrupt_database(state: Path) -> None:
    """A foreign file where the database should be is exit 1 naming it."""
    state.mkdir()
    db = state / "watchdog.db"
    db.write_text("not sqlite", encoding="utf-8")
    assert problem(cli("status", env=base_env(state))) == [
        f"{db}: not a SQLite database (corrupt or foreign file)"
    ]


# -- demo ---------------------------------------------------------------------------


@pytest.mark.slow
def test_demo_plays_a_day_in_under_30_seconds(state: Path) -> None:
    """demo runs the real loop over a simulated day: alerts fire and resolve on the console."""
    started = time.monotonic()
    done = cli("demo", env=base_env(state), timeout=60)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-2000:]
    assert elapsed < 30
    assert "Traceback" not in done.stdout + done.stderr
    for name in ("near-concurrency-limit", "burst", "conversations-collapsed", "no-data"):
        for state_word in ("FIRING", "RESOLVED"):
            assert re.search(rf"{state_word}\s+{re.escape(name)} ", done.stdout), (name, state_word)
    assert re.search(r"Day over: \d+ alerts fired, \d+ resolved", done.stdout)
    # The collapse resolves when the count is back, not at 0 when the window slid past it.
    (collapse,) = re.findall(r"RESOLVED  conversations-collapsed .*?\n\n", done.stdout, re.S)
    assert re.search(r"count now (\d+) / 30 \(\d+ %\)", collapse)
    assert "count now 0 " not in collapse
    recovered = re.search(r"reason recovered to (\d+), fired at (\d+) → 0", collapse)
    assert recovered is not None, collapse
    assert int(recovered[1]) * 2 > int(recovered[2])  # drop_pct = 50 no longer holds


# -- fuzzing check ------------------------------------------------------------------

_KEYS = [
    "name", "kind", "above", "below", "recover_below", "recover_above", "for", "window",
    "drop", "drop_pct", "rise", "min_base", "scope", "severity", "channel", "active", "id",
    "poll_interval", "stale_after", "concurrency", "timeout", "repeat", "bogus",
    "concurrency_limit", "burst", "resolve",
]  # fmt: skip
_VALUES = [
    '"r"', '"threshold"', '"change"', "5", "0", "-1", "1.5", "true", "inf", "nan", "[]",
    '"15s"', '"abc"', '"0s"', '"workspace"', '"support"', '"*"', '["workspace", "x"]',
    '"warning"', "1979-05-27", "{}", '{ tz = "UTC" }', '{ tz = "Mars/Olympus" }',
    '{ days = "mon-fri", hours = "09:00-18:00", tz = "Europe/Berlin" }',
    '{ hours = "22:00-06:00" }', '{ hours = "9-5" }', '"80%"', '"150.5%"', '"window"',
]  # fmt: skip
_HEADERS = ["[watchdog]", "[slack]", "[plan]", "[[agents]]", "[[rules]]", "[rules]", ""]

toml_like = st.lists(
    st.one_of(
        st.sampled_from(_HEADERS),
        st.builds(lambda k, v: f"{k} = {v}", st.sampled_from(_KEYS), st.sampled_from(_VALUES)),
    ),
    max_size=25,
).map(lambda lines: "\n".join(lines).encode())

config_bytes = st.one_of(
    st.binary(max_size=400),
    st.text(max_size=400).map(lambda s: s.encode("utf-8", "surrogatepass")),
    toml_like,
)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(content=config_bytes)
def test_check_any_config_bytes_never_raise(
    clean_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    """Whatever bytes the rules file holds, check returns 0 or 1 with a message, never raises."""
    path = tmp_path / "fuzz.toml"
    path.write_bytes(content)
    code = main(["check", "--config", str(path)])
    out, err = capsys.readouterr()
    assert isinstance(code, int)
    assert code in (0, 1)
    if code == 0:
        assert out.startswith(f"{path}: ok: ")
    else:
        assert err.startswith(f"{path}: ")


@pytest.mark.parametrize(
    "content",
    [
        b"\x00\x01\x02\xff\xfe",
        '☃ = "snow"\n[rules]\n'.encode(),
        b"[[rules]]\nname = 5\nkind = []\n[[rules]]\n",
        b"[watchdog]\npoll_interval = 1e400\nconcurrency = 99999999999999999999999\n",
    ],
    ids=["binary", "unicode", "types", "huge-numbers"],
)
def test_check_odd_bytes_in_a_subprocess(state: Path, tmp_path: Path, content: bytes) -> None:
    """As a real process, odd rules files end as problem lines, exit 1, no traceback."""
    path = tmp_path / "rules.toml"
    path.write_bytes(content)
    lines = problem(cli("check", "--config", str(path), env=base_env(state)))
    assert lines
    assert all(line.startswith(f"{path}: ") for line in lines)


def test_embedded_example_rules_match_the_documented_file() -> None:
    """The demo's embedded rules are byte for byte the rules.example.toml at the root."""
    embedded = ROOT / "watchdog" / "data" / "rules.example.toml"
    assert embedded.read_bytes() == (ROOT / "rules.example.toml").read_bytes()


def test_output_into_a_closed_pipe_is_not_a_traceback(state: Path) -> None:
    """`watchdog check | head -1` ends quietly when the reader goes away."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "watchdog", "check", "--config", str(ROOT / "rules.example.toml")],
        env=base_env(state),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    proc.stdout.close()  # the reader leaves before anything is read
    err = proc.stderr.read().decode()
    proc.wait(timeout=30)
    assert "Traceback" not in err
