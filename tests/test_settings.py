"""Settings: environment variables, systemd credentials, precedence and error lines."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from watchdog.errors import ConfigError
from watchdog.settings import (
    DEFAULT_BASE_URL,
    Settings,
    credentials_for_check,
    load_settings,
    unknown_variables,
)

_PREFIXES = ("ELEVENLABS_", "SLACK_", "WATCHDOG_")
_SYSTEMD = ("CREDENTIALS_DIRECTORY", "STATE_DIRECTORY", "XDG_STATE_HOME")

ONE_LINE = (
    "must be one line of printable ASCII without spaces "
    "(a pasted key often carries a stray character)"
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing of the developer's or CI's environment leaks into a settings test."""
    for name in list(os.environ):
        if name.upper().startswith(_PREFIXES) or name.upper() in _SYSTEMD:
            monkeypatch.delenv(name)


def problems(monkeypatch: pytest.MonkeyPatch, **env: str) -> list[str]:
    """The problem lines load_settings reports for `env` (fails if it loads)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    return caught.value.problems


def credentials(directory: Path, **files: str | bytes) -> Path:
    """A systemd-style credentials directory with one file per credential."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        data = content if isinstance(content, bytes) else content.encode()
        (directory / name).write_bytes(data)
    return directory


# -- defaults and normalisation ------------------------------------------------------


def test_defaults_without_any_environment() -> None:
    """With nothing set: the public API, info logging, console alerts, no secrets."""
    settings = load_settings()
    assert settings.elevenlabs_base_url == DEFAULT_BASE_URL == "https://api.elevenlabs.io"
    assert settings.watchdog_log_level == "info"
    assert settings.slack_mode == "console"
    assert settings.elevenlabs_api_key is None
    assert settings.watchdog_config is None
    assert settings.overrides() == {}
    assert settings.secrets() == []


def test_log_level_is_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    """WATCHDOG_LOG_LEVEL=DEBUG is accepted and normalised to lower case."""
    monkeypatch.setenv("WATCHDOG_LOG_LEVEL", "DEBUG")
    assert load_settings().watchdog_log_level == "debug"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://api.elevenlabs.io/", "https://api.elevenlabs.io"),
        ("http://127.0.0.1:8080//", "http://127.0.0.1:8080"),
        ("https://eu.residency.elevenlabs.io", "https://eu.residency.elevenlabs.io"),
    ],
)
def test_base_url_loses_trailing_slashes(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: str
) -> None:
    """ELEVENLABS_BASE_URL accepts http(s) URLs and drops trailing slashes."""
    monkeypatch.setenv("ELEVENLABS_BASE_URL", value)
    assert load_settings().elevenlabs_base_url == expected


@pytest.mark.parametrize(
    ("env", "mode"),
    [
        ({}, "console"),
        ({"SLACK_BOT_TOKEN": "xoxb-1-2-abc"}, "bot"),
        ({"SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/x"}, "webhook"),
    ],
)
def test_slack_mode_follows_the_secret_given(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], mode: str
) -> None:
    """A bot token means bot mode, a webhook URL webhook mode, neither the console."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert load_settings().slack_mode == mode


def test_config_path_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """WATCHDOG_CONFIG becomes the rules file path."""
    monkeypatch.setenv("WATCHDOG_CONFIG", "/etc/watchdog/rules.toml")
    assert load_settings().watchdog_config == Path("/etc/watchdog/rules.toml")


# -- bad values ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"ELEVENLABS_BASE_URL": "ftp://x"},
            "environment: ELEVENLABS_BASE_URL: must start with https:// "
            "(or http:// for a local test server)",
        ),
        (
            {"SLACK_API_URL": "slack.com/api"},
            "environment: SLACK_API_URL: must start with https:// "
            "(or http:// for a local test server)",
        ),
        (
            {"WATCHDOG_LOG_LEVEL": "loud"},
            "environment: WATCHDOG_LOG_LEVEL: Input should be 'debug', 'info', 'warning' "
            "or 'error'",
        ),
        (
            {"WATCHDOG_LOG_LEVEL": "warnign"},
            "environment: WATCHDOG_LOG_LEVEL: Input should be 'debug', 'info', 'warning' "
            "or 'error': did you mean 'warning'?",
        ),
        (
            {"SLACK_WEBHOOK_URL": "hooks.slack.com/services/T/B/x"},
            "environment: SLACK_WEBHOOK_URL: must be an https:// incoming-webhook URL",
        ),
        (
            {"SLACK_BOT_TOKEN": "xoxb-a", "SLACK_WEBHOOK_URL": "https://hooks.slack.com/x"},
            "environment: SLACK_BOT_TOKEN and SLACK_WEBHOOK_URL are both set: keep one",
        ),
        (
            {"ELEVENLABS_API_KEY": ""},
            f"environment: ELEVENLABS_API_KEY: {ONE_LINE}",
        ),
        (
            {"ELEVENLABS_API_KEY": "sk_first\nsk_second"},
            f"environment: ELEVENLABS_API_KEY: {ONE_LINE}",
        ),
        (
            {"SLACK_BOT_TOKEN": "xoxb-a\nxoxb-b"},
            f"environment: SLACK_BOT_TOKEN: {ONE_LINE}",
        ),
    ],
    ids=[
        "ftp-base-url",
        "slack-api-url-no-scheme",
        "log-level",
        "log-level-near-miss",
        "webhook-no-scheme",
        "bot-and-webhook",
        "empty-key",
        "two-line-key",
        "two-line-token",
    ],
)
def test_bad_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    """Each bad environment value is one `environment: VARIABLE: message` line."""
    assert problems(monkeypatch, **env) == [expected]


def test_every_bad_value_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two bad variables give two lines, so an operator fixes both in one pass."""
    found = problems(monkeypatch, ELEVENLABS_BASE_URL="ftp://x", WATCHDOG_LOG_LEVEL="loud")
    assert [line.split(":")[1].strip() for line in found] == [
        "ELEVENLABS_BASE_URL",
        "WATCHDOG_LOG_LEVEL",
    ]


@pytest.mark.parametrize(
    "name", ["ELEVENLABS_API_KEY", "SLACK_BOT_TOKEN", "SLACK_WEBHOOK_URL"], ids=str.lower
)
def test_bad_secrets_are_not_echoed(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """A rejected secret's value never appears in the problem lines."""
    secret = "not-a-url-SECRET-4f2a\nsecond-line-SECRET-4f2a"
    found = problems(monkeypatch, **{name: secret})
    assert found
    assert all("SECRET-4f2a" not in line for line in found)


def test_settings_repr_hides_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Secrets are SecretStr: printing the settings object shows no secret value."""
    monkeypatch.setenv("ELEVENLABS_API_KEY", "sk_live_SECRET_1")
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-SECRET-2")
    settings = load_settings()
    assert "SECRET" not in repr(settings)
    assert "SECRET" not in str(settings.model_dump())
    assert settings.secrets() == ["sk_live_SECRET_1", "xoxb-SECRET-2"]


@pytest.mark.parametrize("value", ["http://", "http://[::1"])
def test_base_url_must_be_a_usable_url(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """An ELEVENLABS_BASE_URL without a usable host is rejected, naming the variable."""
    found = problems(monkeypatch, ELEVENLABS_BASE_URL=value)
    assert len(found) == 1
    assert found[0].startswith("environment: ELEVENLABS_BASE_URL: ")


# -- overrides of the rules file -----------------------------------------------------


def test_overrides_hold_only_the_watchdog_variables_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """WATCHDOG_<KEY> values are handed to the rules file's [watchdog] section as strings."""
    monkeypatch.setenv("WATCHDOG_POLL_INTERVAL", "5s")
    monkeypatch.setenv("WATCHDOG_CONCURRENCY", "3")
    monkeypatch.setenv("WATCHDOG_NO_DATA_SEVERITY", "warning")
    monkeypatch.setenv("WATCHDOG_LOG_LEVEL", "error")  # a setting, not an override
    assert load_settings().overrides() == {
        "poll_interval": "5s",
        "concurrency": "3",
        "no_data_severity": "warning",
    }


# -- the state directory ------------------------------------------------------------


def test_state_dir_prefers_watchdog_state_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """WATCHDOG_STATE_DIR wins over systemd's STATE_DIRECTORY and XDG_STATE_HOME."""
    monkeypatch.setenv("WATCHDOG_STATE_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "systemd"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert load_settings().state_dir == tmp_path / "mine"


def test_state_dir_from_systemd_takes_the_first_entry(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With StateDirectory= listing several, the first of STATE_DIRECTORY is used."""
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path / 'one'}:{tmp_path / 'two'}")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert load_settings().state_dir == tmp_path / "one"


def test_state_dir_falls_back_to_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without explicit settings the state lives in $XDG_STATE_HOME/watchdog."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert load_settings().state_dir == tmp_path / "xdg" / "watchdog"


def test_state_dir_default_is_under_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With nothing set the state lives in ~/.local/state/watchdog."""
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load_settings().state_dir == tmp_path / ".local" / "state" / "watchdog"


# -- systemd credentials ------------------------------------------------------------


def test_credentials_directory_supplies_the_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """$CREDENTIALS_DIRECTORY/elevenlabs_api_key is read, without its trailing newline."""
    directory = credentials(tmp_path / "creds", elevenlabs_api_key="sk_from_file\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(directory))
    key = load_settings().elevenlabs_api_key
    assert key is not None
    assert key.get_secret_value() == "sk_from_file"


def test_environment_wins_over_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An environment variable beats the credential file of the same name."""
    directory = credentials(tmp_path / "creds", elevenlabs_api_key="sk_from_file\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(directory))
    monkeypatch.setenv("ELEVENLABS_API_KEY", "sk_from_env")
    key = load_settings().elevenlabs_api_key
    assert key is not None
    assert key.get_secret_value() == "sk_from_env"


@pytest.mark.parametrize(
    ("name", "value", "mode"),
    [
        ("slack_bot_token", "xoxb-from-file\n", "bot"),
        ("slack_webhook_url", "https://hooks.slack.com/services/T/B/x\n", "webhook"),
    ],
)
def test_credentials_directory_supplies_slack_secrets(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, value: str, mode: str
) -> None:
    """Slack's bot token or webhook URL can come from the credentials directory too."""
    directory = credentials(tmp_path / "creds", **{name: value})
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(directory))
    settings = load_settings()
    assert settings.slack_mode == mode
    assert settings.secrets() == [value.strip()]


def test_empty_credential_file_is_rejected(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An empty elevenlabs_api_key credential is a problem line, not an empty key."""
    directory = credentials(tmp_path / "creds", elevenlabs_api_key="")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(directory))
    assert problems(monkeypatch) == [f"environment: ELEVENLABS_API_KEY: {ONE_LINE}"]


def test_missing_credentials_directory_is_ignored(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A CREDENTIALS_DIRECTORY that does not exist is not an error: no secrets from it."""
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "absent"))
    assert load_settings().elevenlabs_api_key is None


def test_binary_credential_file_is_a_problem_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A credential file that is not UTF-8 text is reported as a ConfigError naming it."""
    directory = credentials(tmp_path / "creds", elevenlabs_api_key=b"\xff\xfe\x00Whxf\x81")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(directory))
    found = problems(monkeypatch)
    assert any("ELEVENLABS_API_KEY" in line or "elevenlabs_api_key" in line for line in found)


def test_explicit_credentials_dir_wins_over_credentials_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """load_settings(credentials_dir=...) reads that directory instead of the service's."""
    service = credentials(tmp_path / "service", elevenlabs_api_key="sk_service\n")
    given = credentials(tmp_path / "given", elevenlabs_api_key="sk_given\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(service))
    key = load_settings(credentials_dir=given).elevenlabs_api_key
    assert key is not None
    assert key.get_secret_value() == "sk_given"


# -- which credentials `check` reads ----------------------------------------------------


def test_check_reads_the_given_credentials_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """--credentials-dir is read even when the service's directory exists."""
    monkeypatch.setenv("WATCHDOG_CREDENTIALS_DIR", str(credentials(tmp_path / "service")))
    given = credentials(tmp_path / "given")
    assert credentials_for_check(given).directory == given


def test_check_refuses_a_given_credentials_dir_that_is_missing(tmp_path: Path) -> None:
    """A --credentials-dir that is not a directory is a problem line naming it."""
    with pytest.raises(ConfigError) as caught:
        credentials_for_check(tmp_path / "absent")
    assert caught.value.problems == [f"--credentials-dir: {tmp_path / 'absent'}: not a directory"]


def test_check_reads_the_service_credentials_when_they_exist(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without a flag, the service's directory is read when it exists, else none."""
    service = tmp_path / "service"
    monkeypatch.setenv("WATCHDOG_CREDENTIALS_DIR", str(service))
    assert credentials_for_check(None).directory is None
    credentials(service)
    assert credentials_for_check(None).directory == service


def test_check_inside_the_service_reads_its_credentials_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With $CREDENTIALS_DIRECTORY set (as systemd does), that directory is the one read."""
    monkeypatch.setenv("WATCHDOG_CREDENTIALS_DIR", str(credentials(tmp_path / "service")))
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials(tmp_path / "systemd")))
    assert credentials_for_check(None).directory is None


# -- unknown WATCHDOG_* variables -------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        (
            {"WATCHDOG_POLL_INTERVALL": "5s"},
            [
                "environment: WATCHDOG_POLL_INTERVALL: unknown variable, ignored: "
                "did you mean WATCHDOG_POLL_INTERVAL?"
            ],
        ),
        (
            {"WATCHDOG_STATEDIR": "/x", "WATCHDOG_COLOUR": "blue"},
            [
                "environment: WATCHDOG_COLOUR: unknown variable, ignored",
                "environment: WATCHDOG_STATEDIR: unknown variable, ignored: "
                "did you mean WATCHDOG_STATE_DIR?",
            ],
        ),
        (
            {"watchdog_log_levle": "debug"},
            [
                "environment: watchdog_log_levle: unknown variable, ignored: "
                "did you mean WATCHDOG_LOG_LEVEL?"
            ],
        ),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1", "OTHER_VAR": "x"}, []),
    ],
    ids=["typo", "two-sorted", "lower-case", "systemd-and-others"],
)
def test_unknown_watchdog_variables_are_named(environ: dict[str, str], expected: list[str]) -> None:
    """A WATCHDOG_* variable nothing reads is named, with the closest real one if near."""
    assert [str(u) for u in unknown_variables(environ)] == expected


def test_every_setting_variable_is_known() -> None:
    """No variable the watchdog reads is ever reported as unknown."""
    ours = {name.upper(): "x" for name in Settings.model_fields if name.startswith("watchdog_")}
    ours["WATCHDOG_CREDENTIALS_DIR"] = "/x"
    assert len(ours) > 10
    assert unknown_variables(ours) == []


# -- Socket Mode (SLACK_APP_TOKEN) ---------------------------------------------------


def test_app_token_from_the_credentials_directory_turns_buttons_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`slack_app_token` (a credential file, like the others) turns Socket Mode on; a secret."""
    directory = credentials(
        tmp_path / "creds", slack_bot_token="xoxb-from-file\n", slack_app_token="xapp-1-A1-SECRET\n"
    )
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(directory))
    settings = load_settings()
    assert settings.buttons
    assert "SECRET" not in repr(settings)
    assert "xapp-1-A1-SECRET" in settings.secrets()


def test_no_app_token_means_no_buttons(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without SLACK_APP_TOKEN everything stays as it was: no Socket Mode."""
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1")
    assert not load_settings().buttons


def test_app_token_needs_the_bot_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """The buttons edit the bot's cards: an app token alone is a problem, named."""
    found = problems(monkeypatch, SLACK_APP_TOKEN="xapp-1-A1-SECRET-4f2a")
    assert found == [
        "environment: SLACK_APP_TOKEN needs SLACK_BOT_TOKEN: the buttons edit the bot's cards"
        " (set both, or unset SLACK_APP_TOKEN)"
    ]


def test_app_token_must_be_an_app_level_token_and_is_not_echoed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bot token pasted as SLACK_APP_TOKEN is refused without quoting it."""
    found = problems(
        monkeypatch, SLACK_BOT_TOKEN="xoxb-1", SLACK_APP_TOKEN="xoxb-SECRET-4f2a-pasted"
    )
    assert len(found) == 1
    assert found[0].startswith("environment: SLACK_APP_TOKEN: must be an app-level token (xapp-")
    assert "SECRET-4f2a" not in found[0]
