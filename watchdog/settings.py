"""Settings from the environment and systemd credentials; secrets only as `SecretStr`.

Secrets come from environment variables or from files in `$CREDENTIALS_DIRECTORY`
(systemd's `LoadCredential=`), never from the rules file, so the rules file can be
committed and shared. `WATCHDOG_<KEY>` variables override the rules file's `[watchdog]`
section (the environment wins), which `overrides()` hands to `rules.load_config`.
A `WATCHDOG_*` variable that is none of ours is a typo until proven otherwise:
`unknown_variables()` names it and the closest real one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from watchdog.errors import ConfigError
from watchdog.suggest import closest, expected_choice
from watchdog.urls import (
    DATABASE_URL_PROBLEM,
    HEARTBEAT_URL_PROBLEM,
    check_database_url,
    check_http_url,
    database_location,
    database_passwords,
)

DEFAULT_BASE_URL = "https://api.elevenlabs.io"
SERVICE_CREDENTIALS_DIR = Path("/etc/watchdog/credentials")
"""Where the README's systemd install keeps the files the unit hands over with
`LoadCredential=`; `watchdog check` reads them from here so that it sees what the service
will see. `WATCHDOG_CREDENTIALS_DIR` points it elsewhere."""
_OVERRIDABLE = (
    "poll_interval",
    "stale_after",
    "repeat",
    "retention",
    "timeout",
    "concurrency",
    "no_data_severity",
)

SlackMode = Literal["bot", "webhook", "console"]
_TOKEN = re.compile(r"[\x21-\x7e]+")


def key_is_well_formed(key: SecretStr) -> bool:
    """One line of printable ASCII without spaces: a pasted key often carries a stray
    character, which the API would reject as a wrong key."""
    return _TOKEN.fullmatch(key.get_secret_value()) is not None


class Settings(BaseSettings):
    """Everything that is not a rule: where things are, and the secrets to reach them."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    elevenlabs_api_key: SecretStr | None = None
    slack_bot_token: SecretStr | None = None
    slack_webhook_url: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    elevenlabs_base_url: str = DEFAULT_BASE_URL
    slack_api_url: str | None = None
    watchdog_config: Path | None = None
    watchdog_state_dir: Path | None = None
    watchdog_log_level: Literal["debug", "info", "warning", "error"] = "info"
    watchdog_metrics_addr: str | None = None

    watchdog_poll_interval: str | None = None
    watchdog_stale_after: str | None = None
    watchdog_repeat: str | None = None
    watchdog_retention: str | None = None
    watchdog_timeout: str | None = None
    watchdog_concurrency: str | None = None
    watchdog_no_data_severity: str | None = None
    watchdog_heartbeat_url: SecretStr | None = Field(
        default=None,
        # The credential file is `heartbeat_url`, as the issue and README name it.
        validation_alias=AliasChoices("watchdog_heartbeat_url", "heartbeat_url"),
    )

    watchdog_database_url: SecretStr | None = Field(
        default=None,
        # The credential file is `database_url` (the URL may carry the password).
        validation_alias=AliasChoices("watchdog_database_url", "database_url"),
    )
    """PostgreSQL for the state instead of the SQLite file in the state directory."""

    pagerduty_routing_key: SecretStr | None = None
    credentials_directory: str | None = Field(default=None, exclude=True)
    """Where the credential files were read (for the webhooks' secrets, named by config)."""

    state_directory: str | None = Field(default=None, exclude=True)

    @field_validator("watchdog_log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("elevenlabs_base_url", "slack_api_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        check_http_url(value)
        return value.rstrip("/")

    @field_validator("slack_webhook_url")
    @classmethod
    def _webhook(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                check_http_url(value.get_secret_value())
            except ValueError:
                # The message must not quote the value: it is a secret.
                raise ValueError("must be an https:// incoming-webhook URL") from None
        return value

    @field_validator("watchdog_heartbeat_url")
    @classmethod
    def _heartbeat(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                check_http_url(value.get_secret_value())
            except ValueError:
                # The message must not quote the value: its path is the check's secret.
                raise ValueError(HEARTBEAT_URL_PROBLEM) from None
        return value

    @field_validator("watchdog_database_url")
    @classmethod
    def _database(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                check_database_url(value.get_secret_value())
            except ValueError:
                # The message must not quote the value: it may hold the password.
                raise ValueError(DATABASE_URL_PROBLEM) from None
        return value

    @property
    def state_location(self) -> str:
        """Where the state is kept, safe to print: the database URL without user and
        password, else the state directory."""
        if self.watchdog_database_url is not None:
            return database_location(self.watchdog_database_url.get_secret_value())
        return str(self.state_dir)

    @property
    def slack_mode(self) -> SlackMode:
        if self.slack_bot_token is not None:
            return "bot"
        if self.slack_webhook_url is not None:
            return "webhook"
        return "console"

    @property
    def buttons(self) -> bool:
        """Socket Mode is on (`SLACK_APP_TOKEN`): cards carry Acknowledge and Silence."""
        return self.slack_app_token is not None

    @property
    def state_dir(self) -> Path:
        """`WATCHDOG_STATE_DIR`, else systemd's `$STATE_DIRECTORY`, else the XDG state dir."""
        if self.watchdog_state_dir is not None:
            return self.watchdog_state_dir
        if self.state_directory:
            return Path(self.state_directory.split(":")[0])
        xdg = os.environ.get("XDG_STATE_HOME")
        base = Path(xdg) if xdg else Path.home() / ".local" / "state"
        return base / "watchdog"

    def overrides(self) -> dict[str, str]:
        """`WATCHDOG_*` values (and the `heartbeat_url` credential) for `[watchdog]`."""
        out: dict[str, str] = {}
        for key in _OVERRIDABLE:
            value = getattr(self, f"watchdog_{key}")
            if value is not None:
                out[key] = value
        if self.watchdog_heartbeat_url is not None:
            out["heartbeat_url"] = self.watchdog_heartbeat_url.get_secret_value()
        return out

    def named_secret(self, variable: str | None, credential: str) -> SecretStr | None:
        """A secret the rules file names: the variable `variable`, else the credential file
        `credential` (for `[[webhooks]]` and `[[workspaces]]`, whose names only the rules
        file knows)."""
        return self.named_secret_from(variable, credential)[0]

    def named_secret_from(
        self, variable: str | None, credential: str
    ) -> tuple[SecretStr | None, str]:
        """`named_secret`, and where it was found (`$VARIABLE` or `credential NAME`), or
        where it was looked for when it was not; never the secret itself."""
        if variable and os.environ.get(variable):
            return SecretStr(os.environ[variable]), f"${variable}"
        looked = f"${variable} or " * bool(variable) + f"the credential {credential}"
        if not self.credentials_directory:
            return None, looked
        path = Path(self.credentials_directory) / credential
        try:
            text = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            return None, looked
        return (SecretStr(text), f"credential {credential}") if text else (None, looked)

    def secrets(self) -> list[str]:
        """The secret values, for the log redaction processor."""
        values = (
            self.elevenlabs_api_key,
            self.slack_bot_token,
            self.slack_webhook_url,
            self.watchdog_heartbeat_url,
            self.slack_app_token,
            self.pagerduty_routing_key,
            self.watchdog_database_url,
        )
        found = [v.get_secret_value() for v in values if v is not None and v.get_secret_value()]
        if self.watchdog_database_url is not None:
            found += database_passwords(self.watchdog_database_url.get_secret_value())
        return found


_PREFIX = "WATCHDOG_"
CREDENTIALS_DIR_VARIABLE = "WATCHDOG_CREDENTIALS_DIR"
# Read outside `Settings`: systemd sets the first two for the service (sd_watchdog_enabled);
# the third is read before `Settings` exists, since it says where its secrets are.
_OTHER_VARIABLES = ("WATCHDOG_USEC", "WATCHDOG_PID", CREDENTIALS_DIR_VARIABLE)


def known_variables() -> tuple[str, ...]:
    """Every `WATCHDOG_*` variable the watchdog reads."""
    ours = (name.upper() for name in Settings.model_fields if name.startswith("watchdog_"))
    return (*ours, *_OTHER_VARIABLES)


@dataclass(frozen=True)
class UnknownVariable:
    """A `WATCHDOG_*` variable that nothing reads, and the known one it most resembles."""

    name: str
    suggestion: str | None

    def __str__(self) -> str:
        hint = f": did you mean {self.suggestion}?" if self.suggestion else ""
        return f"environment: {self.name}: unknown variable, ignored{hint}"


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[UnknownVariable]:
    """The `WATCHDOG_*` variables in `environ` (default: this process's) that are not ours."""
    known = known_variables()
    env = os.environ if environ is None else environ
    return [
        UnknownVariable(name, _closest_variable(name.upper(), known))
        for name in sorted(env)
        if name.upper().startswith(_PREFIX) and name.upper() not in known
    ]


def _closest_variable(name: str, known: tuple[str, ...]) -> str | None:
    """Compared without the shared prefix, which would make every name look close."""
    found = closest(name.removeprefix(_PREFIX), [k.removeprefix(_PREFIX) for k in known])
    return None if found is None else _PREFIX + found


@dataclass(frozen=True)
class CheckCredentials:
    """Which credentials directory `watchdog check` reads, and why not the service's."""

    directory: Path | None
    """Read instead of `$CREDENTIALS_DIRECTORY`; None: that variable (set in the service)."""
    note: str | None = None
    """Set when the service's directory exists but this user cannot read it."""


def credentials_for_check(given: Path | None) -> CheckCredentials:
    """The credentials `watchdog check` reads, so that it sees what the service will see.

    `given` (`--credentials-dir`) first; inside the service, `$CREDENTIALS_DIRECTORY`;
    else the service's directory when it exists (`WATCHDOG_CREDENTIALS_DIR`, by default
    `/etc/watchdog/credentials`). A given directory must be usable; the default is
    skipped with a note when this user cannot read it (check without sudo).
    """
    if given is not None:
        if not given.is_dir():
            raise ConfigError([f"--credentials-dir: {given}: not a directory"])
        return CheckCredentials(given)
    if os.environ.get("CREDENTIALS_DIRECTORY"):
        return CheckCredentials(None)
    service = Path(os.environ.get(CREDENTIALS_DIR_VARIABLE) or SERVICE_CREDENTIALS_DIR)
    if not service.is_dir():
        return CheckCredentials(None)
    if not _readable(service):
        return CheckCredentials(
            None, f"{service} is not readable by this user: run check with sudo to see it"
        )
    return CheckCredentials(service)


def _readable(directory: Path) -> bool:
    return os.access(directory, os.R_OK | os.X_OK)


def load_settings(credentials_dir: Path | None = None) -> Settings:
    """Read settings; every problem becomes one `ConfigError` line, never a traceback.

    Secret files come from `credentials_dir` if given, else `$CREDENTIALS_DIRECTORY`.
    """
    credentials = (
        str(credentials_dir) if credentials_dir else os.environ.get("CREDENTIALS_DIRECTORY")
    )
    secrets_dir = Path(credentials) if credentials and Path(credentials).is_dir() else None
    if secrets_dir is not None and not _readable(secrets_dir):
        raise ConfigError([f"credentials: {secrets_dir}: not readable by this user"])
    try:
        settings = Settings(
            _secrets_dir=secrets_dir,
            credentials_directory=None if secrets_dir is None else str(secrets_dir),
        )
    except SettingsError as exc:
        # Raised for credential files that cannot be read as text; never quote them.
        cause = exc.__cause__ or exc
        field = re.search(r'field "(\w+)"', str(exc))
        name = f"/{field.group(1)}" if field else ""
        raise ConfigError(
            [
                f"credentials: {credentials}{name}: cannot read it as text "
                f"({type(cause).__name__}); is it an encrypted credential?"
            ]
        ) from None
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = str(error["loc"][0]).upper() if error["loc"] else "settings"
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(f"environment: {name}: {message}{expected_choice(error)}")
        raise ConfigError(problems) from None
    if settings.slack_bot_token is not None and settings.slack_webhook_url is not None:
        raise ConfigError(
            ["environment: SLACK_BOT_TOKEN and SLACK_WEBHOOK_URL are both set: keep one"]
        )
    if settings.slack_app_token is not None:
        if settings.slack_bot_token is None:
            raise ConfigError(
                [
                    "environment: SLACK_APP_TOKEN needs SLACK_BOT_TOKEN: the buttons edit the"
                    " bot's cards (set both, or unset SLACK_APP_TOKEN)"
                ]
            )
        if not settings.slack_app_token.get_secret_value().startswith("xapp-"):
            raise ConfigError(
                [
                    "environment: SLACK_APP_TOKEN: must be an app-level token (xapp-…, from"
                    " the app's Basic Information, with the connections:write scope)"
                ]
            )
    for name in (
        "elevenlabs_api_key",
        "slack_bot_token",
        "slack_app_token",
        "pagerduty_routing_key",
    ):
        value: SecretStr | None = getattr(settings, name)
        if value is not None and not key_is_well_formed(value):
            raise ConfigError(
                [
                    f"environment: {name.upper()}: must be one line of printable ASCII "
                    "without spaces (a pasted key often carries a stray character)"
                ]
            )
    return settings
