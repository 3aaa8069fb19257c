"""The `watchdog` command: argument parsing and wiring the real objects together.

Every failure an operator can cause (bad settings, bad rules, an unusable state
directory, an unreadable CSV) ends as a message and a non-zero exit, never a traceback.
Exit codes: 0 ok, 1 a problem was found (invalid config, failed poll, ...), 2 usage,
70 (EX_SOFTWARE) `run` stopped because one of its tasks crashed (`daemon.crashed`), 75
(EX_TEMPFAIL) `run` led on PostgreSQL and lost its lock (`leader.lost`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from pydantic import SecretStr

from watchdog import __version__
from watchdog.audit import Event, add_secret, configure_logging, get_logger
from watchdog.clock import SystemClock
from watchdog.delivery_lag import META_KEY as LAG_META_KEY
from watchdog.delivery_lag import DeliveryLag
from watchdog.durations import format_duration, parse_duration
from watchdog.errors import (
    ConfigError,
    DaemonCrashed,
    InputError,
    SourceError,
    StateError,
    SteppedDown,
    WatchdogError,
)
from watchdog.liveness import MIN_WATCHDOG_SEC, watchdog_sec_problems
from watchdog.model import (
    EVERY_SERIES,
    WATCHDOG_SERIES,
    AlertRecord,
    AlertState,
    Notification,
    cover_scope_words,
    workspace_of,
    workspace_series,
)
from watchdog.rules import Config, ThresholdRule, WorkspaceSection, load_config
from watchdog.settings import (
    Settings,
    credentials_for_check,
    key_is_well_formed,
    load_settings,
    unknown_variables,
)
from watchdog.silences import ALL_RULES, Silence
from watchdog.store import Store, Unreadable, writer_lock
from watchdog.suggest import did_you_mean

if TYPE_CHECKING:
    from watchdog.daemon import Reloaded
    from watchdog.leadership import Leadership
    from watchdog.notify import Notifier
    from watchdog.source import Endpoint, WorkspaceSources

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2
EXIT_CRASHED = 70
"""EX_SOFTWARE: a task of `run` failed unexpectedly; systemd's Restart= starts it again."""
EXIT_STEPPED_DOWN = 75
"""EX_TEMPFAIL: the leader lost its PostgreSQL lock; Restart= starts it again, as a standby."""

RESTART_ONLY = (
    "watchdog_config",
    "watchdog_state_dir",
    "state_directory",
    "watchdog_database_url",
    "watchdog_metrics_addr",
    "watchdog_log_level",
    "slack_api_url",
    "slack_app_token",
)
"""Settings a SIGHUP cannot apply: the files and listener in use, Slack's API URL.

A rotated Slack token or webhook URL applies live; switching between bot, webhook and
console (one of them set or unset), and a new Socket Mode app token, need a restart."""
_SLACK_SECRETS = ("slack_bot_token", "slack_webhook_url")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        code = handler(args)
        sys.stdout.flush()  # a closed pipe shows up here, inside the handler below
        return code
    except (ConfigError, StateError, InputError) as exc:
        _problems(str(exc))
        return EXIT_PROBLEM
    except WatchdogError as exc:
        _problems(f"error: {exc}")
        return EXIT_PROBLEM
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `watchdog status | head`: the reader left; that is not an error of ours.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _problems(text: str) -> None:
    for line in text.splitlines():
        print(line, file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="watchdog",
        description="Watch live ElevenLabs Conversational AI conversations; alert Slack.",
    )
    parser.add_argument("--version", action="version", version=f"watchdog {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable[[argparse.Namespace], int], text: str) -> Any:
        sub = commands.add_parser(name, help=text, description=text)
        sub.set_defaults(handler=handler)
        sub.add_argument("--config", type=Path, metavar="FILE", help="rules file (TOML)")
        return sub

    command("run", _cmd_run, "run the daemon (SIGHUP reloads rules, SIGTERM stops)")
    sub = command("check", _cmd_check, "validate settings, rules and the state directory")
    sub.add_argument(
        "--credentials-dir",
        type=Path,
        metavar="DIR",
        help="read secrets from DIR, as the service gets them from LoadCredential= "
        "(default: /etc/watchdog/credentials when it exists)",
    )
    sub = command("poll", _cmd_poll, "poll every series once and print the counts")
    sub.add_argument("--json", action="store_true", help="one JSON object per line")
    sub = command("replay", _cmd_replay, "run the rules over recorded counts, offline")
    sub.add_argument("csv", nargs="?", type=Path, help="CSV of timestamp,count[,scope]")
    sub.add_argument("--history", action="store_true", help="use the state database's history")
    sub.add_argument("--since", default="24h", help="with --history: how far back (24h)")
    sub.add_argument("--json", action="store_true", help="one JSON object per line")
    sub = command("report", _cmd_report, "peaks, percentiles and alerts per series, for a span")
    sub.add_argument("csv", nargs="?", type=Path, help="CSV of timestamp,count[,scope]")
    sub.add_argument("--since", default=None, help="from the state database: how far back (24h)")
    sub.add_argument("--json", action="store_true", help="one JSON object per line")
    sub = command("status", _cmd_status, "show series, alerts and the outbox from the state")
    sub.add_argument("--json", action="store_true", help="one JSON document")
    sub = command(
        "notify-test",
        _cmd_notify_test,
        "a fire drill: send a test card the way alerts go, then resolve it",
    )
    sub.add_argument(
        "--channel",
        metavar="C",
        help="send to C (a #name or channel id) instead of the default channel",
    )
    sub.add_argument(
        "--pagerduty",
        action="store_true",
        help="trigger and resolve a test incident in PagerDuty instead (needs [pagerduty])",
    )
    sub = command("ack", _cmd_ack, "acknowledge a firing alert (its repeats stop)")
    sub.add_argument("alert_id", metavar="ALERT_ID", help="as in the card and `watchdog status`")
    sub.add_argument(
        "--by", metavar="NAME", help="who is on it (default: your login name)", default=None
    )
    sub = command("demo", _cmd_demo, "a simulated day against the example rules (no account)")
    sub.add_argument("--speed", type=float, default=None, help=argparse.SUPPRESS)
    _silence_parser(commands)
    return parser


def _silence_parser(commands: Any) -> None:
    """`watchdog silence add|list|expire`: works while the daemon runs (same state)."""
    text = "hold back notifications for a while (the rules keep running)"
    silence = commands.add_parser("silence", help=text, description=text)
    silence.add_argument("--config", type=Path, metavar="FILE", help="rules file (TOML)")
    actions = silence.add_subparsers(title="actions", required=True, metavar="ACTION")

    def action(name: str, handler: Callable[[argparse.Namespace], int], text: str) -> Any:
        sub = actions.add_parser(name, help=text, description=text)
        sub.set_defaults(handler=handler)
        # Before or after the action; SUPPRESS keeps a value given before it.
        sub.add_argument(
            "--config", type=Path, metavar="FILE", default=argparse.SUPPRESS, help="rules file"
        )
        return sub

    add = action("add", _cmd_silence_add, "silence a rule (or all) on a series (or all)")
    add.add_argument("--rule", required=True, metavar='NAME|"*"', help='a rule name, "*" = all')
    add.add_argument(
        "--scope",
        metavar="SERIES",
        help='a series, "<workspace>/*" = all of one workspace, "*" = all (the default)',
    )
    until = add.add_mutually_exclusive_group(required=True)
    until.add_argument("--for", dest="duration", metavar="DURATION", help="e.g. 2h, 30m")
    until.add_argument(
        "--until", metavar="ISO-8601", help="end time (local time unless it has an offset)"
    )
    add.add_argument("--comment", required=True, help="why (shown in status and Slack)")
    listing = action("list", _cmd_silence_list, "the silences in force or still to come")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    expire = action("expire", _cmd_silence_expire, "end a silence now")
    expire.add_argument("id", type=int, metavar="ID", help="the silence's id")


# -- shared wiring ------------------------------------------------------------------


def _config_path(args: argparse.Namespace, settings: Settings) -> Path:
    path: Path | None = args.config or settings.watchdog_config
    if path is None:
        raise ConfigError(
            ["no rules file: pass --config FILE or set WATCHDOG_CONFIG (see rules.example.toml)"]
        )
    return path


def _load(args: argparse.Namespace, settings: Settings | None = None) -> tuple[Settings, Config]:
    if settings is None:
        settings = load_settings()
    config = load_config(_config_path(args, settings), overrides=settings.overrides())
    _check_slack(settings, config)
    return settings, config


def _check_slack(settings: Settings, config: Config) -> None:
    if settings.slack_mode != "bot" or config.slack.channel:
        return
    missing = ["the no-data alert"] if not config.no_data.channel else []
    every_workspace_routes = bool(config.workspaces) and all(w.channel for w in config.workspaces)
    rules = [rule.name for rule in config.rules if not rule.channel and not every_workspace_routes]
    missing += [f"rules {', '.join(rules)}"] if rules else []
    missing += ["[report]"] if config.report is not None and not config.report.channel else []
    if missing:
        raise ConfigError(
            [
                f"{config.source}: slack.channel: required with SLACK_BOT_TOKEN "
                f"({' and '.join(missing)} have no channel of their own)"
            ]
        )


def _destinations(settings: Settings, config: Config) -> dict[str, Notifier]:
    """The senders of `[pagerduty]` and `[[webhooks]]`, by outbox channel.

    Raises ConfigError (never quoting a secret) for a missing or malformed routing key,
    or a webhook without a URL.
    """
    from watchdog.notify.destinations import PAGERDUTY, webhook
    from watchdog.notify.pagerduty import PagerDutyNotifier, routing_key_problem
    from watchdog.notify.webhook import WebhookNotifier

    senders: dict[str, Notifier] = {}
    problems: list[str] = []
    if config.pagerduty is not None:
        key = settings.pagerduty_routing_key
        if key is None:
            problems.append(
                "environment: PAGERDUTY_ROUTING_KEY is not set (needed by [pagerduty]; or put"
                " it in $CREDENTIALS_DIRECTORY/pagerduty_routing_key)"
            )
        elif (problem := routing_key_problem(key)) is not None:
            problems.append(f"environment: PAGERDUTY_ROUTING_KEY: {problem}")
        else:
            senders[PAGERDUTY] = PagerDutyNotifier(key, events_url=config.pagerduty.events_url)
    for hook in config.webhooks:
        url = hook.url or settings.named_secret(hook.url_env, f"webhook_url_{hook.name}")
        if url is None:
            source = f"${hook.url_env} or " if hook.url_env else ""
            problems.append(
                f"{config.source}: webhooks ({hook.name}): no URL: set url, or"
                f" {source}the credential file webhook_url_{hook.name}"
            )
            continue
        secret = settings.named_secret(hook.secret_env, f"webhook_secret_{hook.name}")
        if hook.secret_env and secret is None:
            problems.append(
                f"environment: {hook.secret_env}: not set (the secret of webhook {hook.name})"
            )
            continue
        senders[webhook(hook.name)] = WebhookNotifier(
            hook.name, url, secret=secret, headers=hook.headers
        )
    if problems:
        raise ConfigError(problems)
    return senders


def _destination_secrets(settings: Settings, config: Config) -> list[str]:
    """The webhooks' URLs and signing secrets, for the log redaction."""
    found = []
    for hook in config.webhooks:
        found += [
            hook.url or settings.named_secret(hook.url_env, f"webhook_url_{hook.name}"),
            settings.named_secret(hook.secret_env, f"webhook_secret_{hook.name}"),
        ]
    return [s.get_secret_value() for s in found if s is not None and s.get_secret_value()]


def _require_key(settings: Settings) -> None:
    if settings.elevenlabs_api_key is None:
        raise ConfigError(
            [
                "environment: ELEVENLABS_API_KEY is not set "
                "(or put it in $CREDENTIALS_DIRECTORY/elevenlabs_api_key)"
            ]
        )


def open_store(settings: Settings, *, existing: bool = False) -> Store:
    """The state database the settings name: PostgreSQL (`WATCHDOG_DATABASE_URL`), else
    the SQLite file in the state directory, which reading commands (`existing`) never
    create. StateError (without the password) when it cannot be used."""
    if settings.watchdog_database_url is not None:
        return Store.connect(settings.watchdog_database_url.get_secret_value())
    path = Store.default_path(settings.state_dir)
    if existing and not path.exists():
        raise StateError(f"{path}: no state database yet (has `watchdog run` been started?)")
    return Store.open(path)


def _writer_lock(settings: Settings) -> contextlib.AbstractContextManager[None]:
    """One daemon per SQLite state directory. A PostgreSQL database may be shared by
    several daemons (leadership decides which one works), so it takes no file lock."""
    if settings.watchdog_database_url is not None:
        return contextlib.nullcontext()
    return writer_lock(settings.state_dir)


@dataclass(frozen=True)
class _WorkspaceKey:
    """A `[[workspaces]]` entry's API key as found (or not), and where it was looked for."""

    workspace: WorkspaceSection
    key: SecretStr | None
    origin: str
    """`$VARIABLE` or `credential NAME` when found, else where it was looked for."""


def _workspace_keys(settings: Settings, config: Config) -> list[_WorkspaceKey]:
    return [
        _WorkspaceKey(ws, *settings.named_secret_from(ws.api_key_env, ws.credential))
        for ws in config.workspaces
    ]


def _endpoints(settings: Settings, config: Config) -> dict[str, Endpoint]:
    """How to reach each workspace: `ELEVENLABS_API_KEY` and `ELEVENLABS_BASE_URL` for a
    file without `[[workspaces]]`, else each one's key and host (default:
    `ELEVENLABS_BASE_URL`). A missing or malformed key is a ConfigError naming the
    workspace and where the key was looked for, never the key."""
    from watchdog.source import Endpoint

    if not config.workspaces:
        _require_key(settings)
        assert settings.elevenlabs_api_key is not None
        return {"": Endpoint(settings.elevenlabs_api_key, settings.elevenlabs_base_url)}
    endpoints: dict[str, Endpoint] = {}
    problems: list[str] = []
    for found in _workspace_keys(settings, config):
        ws = found.workspace
        if found.key is None:
            problems.append(
                f"{config.source}: workspaces ({ws.name}): no API key: set {found.origin}"
                " (needed by run and poll)"
            )
        elif not key_is_well_formed(found.key):
            problems.append(
                f"{config.source}: workspaces ({ws.name}): the API key in {found.origin}: must"
                " be one line of printable ASCII without spaces"
            )
        else:
            endpoints[ws.name] = Endpoint(found.key, ws.base_url or settings.elevenlabs_base_url)
    if problems:
        raise ConfigError(problems)
    return endpoints


# -- commands -----------------------------------------------------------------------


def _cmd_check(args: argparse.Namespace) -> int:
    from watchdog.checkreport import Environment, WorkspaceKey, report
    from watchdog.metrics import parse_listen_addr

    for unknown in unknown_variables():
        print(f"warning: {unknown}", file=sys.stderr)
    credentials = credentials_for_check(args.credentials_dir)
    settings, config = _load(args, load_settings(credentials.directory))
    destinations = _destinations(settings, config)
    if settings.watchdog_metrics_addr:
        try:
            parse_listen_addr(settings.watchdog_metrics_addr)
        except ValueError as exc:
            raise ConfigError([f"environment: WATCHDOG_METRICS_ADDR: {exc}"]) from None
    watchdog_sec = _watchdog_sec_line()
    open_store(settings).close()
    environment = Environment(
        slack_mode=settings.slack_mode,
        buttons=settings.buttons,
        api_key_set=settings.elevenlabs_api_key is not None,
        state=settings.state_location,
        credentials=credentials.directory,
        credentials_note=credentials.note,
        signed_webhooks=tuple(
            name.removeprefix("webhook:")
            for name, sender in destinations.items()
            if getattr(sender, "signed", False)
        ),
        workspace_keys=tuple(
            WorkspaceKey(found.workspace.name, found.key is not None, found.origin)
            for found in _workspace_keys(settings, config)
        ),
    )
    for line in report(config, environment):
        print(line)
    if watchdog_sec:
        print(f"  {watchdog_sec}")
    _print_guarantee(settings)
    return EXIT_OK


def _watchdog_sec_line() -> str | None:
    """What `$WATCHDOG_USEC` (systemd's `WatchdogSec=`) means for this daemon, if set.

    Raises ConfigError when it cannot work, saying what to change.
    """
    raw = os.environ.get("WATCHDOG_USEC")
    if raw is None:
        return None
    problems = watchdog_sec_problems(raw)
    if problems:
        raise ConfigError([f"environment: {problem}" for problem in problems])
    seconds = int(raw) / 1_000_000
    return (
        f"systemd watchdog: WatchdogSec={seconds:g}s (at least {MIN_WATCHDOG_SEC:g}s): ping"
        f" every {seconds / 2:g}s while polls, ticker and outbox worker are alive,"
        " whatever poll_interval and timeout are"
    )


def _print_guarantee(settings: Settings) -> None:
    """Say whether Slack posts are exactly once; in bot mode this asks Slack (`auth.test`)."""
    from watchdog.notify import SlackBotNotifier, SlackWebhookNotifier

    notifier, _ = _notifier(settings)
    if isinstance(notifier, SlackBotNotifier | SlackWebhookNotifier):
        guarantee = notifier.guarantee()
        print(f"  delivery: {guarantee.name}: {guarantee.reason}")


def _cmd_run(args: argparse.Namespace) -> int:
    settings, config = _load(args)
    _endpoints(settings, config)  # a missing workspace key stops us here
    _destinations(settings, config)  # a missing routing key or webhook URL stops us here
    configure_logging(level=settings.watchdog_log_level, secrets=_secrets(settings, config))
    log = get_logger()
    for unknown in unknown_variables():
        log.warning(
            Event.CONFIG_UNKNOWN_VARIABLE, variable=unknown.name, suggestion=unknown.suggestion
        )
    with _writer_lock(settings):
        store = open_store(settings)
        log.info(
            Event.CONFIG_LOADED,
            source=config.source,
            rules=len(config.rules),
            agents=len(config.agents),
            state=store.where,
        )
        try:
            asyncio.run(_run(settings, config, store, args))
        except DaemonCrashed as exc:
            # Already in the audit log as daemon.crashed; one line for the terminal too.
            print(f"watchdog: {exc}", file=sys.stderr)
            return EXIT_CRASHED
        except SteppedDown as exc:
            print(f"watchdog: {exc}", file=sys.stderr)
            return EXIT_STEPPED_DOWN
        finally:
            store.close()
    return EXIT_OK


async def _run(settings: Settings, config: Config, store: Store, args: argparse.Namespace) -> None:
    from watchdog.daemon import Daemon
    from watchdog.metrics import Metrics, parse_listen_addr, serve
    from watchdog.systemd import SdNotifier

    log = get_logger()
    clock = SystemClock()
    notifier, fixed_channel = _notifier(settings)
    destinations = _destinations(settings, config)
    if settings.slack_mode == "console":
        log.warning("notify.console", reason="no SLACK_BOT_TOKEN or SLACK_WEBHOOK_URL set")
    _announce_guarantee(notifier)
    sd = SdNotifier.from_env()
    if "WATCHDOG_USEC" in os.environ:
        for problem in watchdog_sec_problems(os.environ["WATCHDOG_USEC"]):
            log.warning(Event.SYSTEMD_WATCHDOG_UNWORKABLE, problem=problem)
    metrics = Metrics() if settings.watchdog_metrics_addr else None
    path = _config_path(args, settings)

    def reload() -> Reloaded:
        return _reload(settings, path)

    socket_mode = None
    if settings.slack_app_token is not None:
        from watchdog.notify.socket_mode import SocketMode

        socket_mode = SocketMode(settings.slack_app_token, api_url=settings.slack_api_url)
    with _live_count_source(settings, config, clock) as source:
        daemon = Daemon(
            leadership=_leadership(settings, config),
            config=config,
            source=source,
            store=store,
            notifier=notifier,
            clock=clock,
            load=reload,
            fixed_channel=fixed_channel,
            sd=sd,
            metrics=metrics,
            socket_mode=socket_mode,
            destinations=destinations,
        )
        server = None
        if metrics is not None and settings.watchdog_metrics_addr:
            try:
                host, port = parse_listen_addr(settings.watchdog_metrics_addr)
            except ValueError as exc:
                raise ConfigError([f"environment: WATCHDOG_METRICS_ADDR: {exc}"]) from None
            server = serve(
                (host, port),
                lambda: daemon.health().problems,
                registry=metrics.registry,
                role=daemon.role,
            )
            log.info("metrics.listening", host=server.host, port=server.port)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, daemon.request_stop)
        loop.add_signal_handler(signal.SIGINT, daemon.request_stop)
        loop.add_signal_handler(signal.SIGHUP, daemon.request_reload)
        try:
            await daemon.run()
        finally:
            if server is not None:
                server.close()


def _leadership(settings: Settings, config: Config) -> Leadership | None:
    """With PostgreSQL, daemons sharing the database elect one leader; with SQLite none."""
    if settings.watchdog_database_url is None:
        return None
    from watchdog.leadership import Leadership, Timing
    from watchdog.notify.slack import SLACK_TIMEOUT

    return Leadership(
        settings.watchdog_database_url.get_secret_value(),
        timing=Timing.of(config.watchdog.poll_interval, timeout=SLACK_TIMEOUT),
    )


def _reload(running: Settings, path: Path) -> Reloaded:
    """SIGHUP: settings (with `$CREDENTIALS_DIRECTORY`'s files) and rules, read afresh.

    The process environment cannot change under a running process; credential files can,
    so a rotated API key, Slack token or webhook URL is picked up here. Restart-only
    settings that changed are named.
    """
    from watchdog.daemon import Reloaded

    settings = load_settings()
    config = load_config(path, overrides=settings.overrides())
    _check_slack(running, config)
    endpoints = _endpoints(settings, config)
    for secret in _secrets(settings, config):
        add_secret(secret)
    changed = [name for name in RESTART_ONLY if getattr(settings, name) != getattr(running, name)]
    destinations = _destinations(settings, config)
    notifier = None
    slack_changed = [
        name for name in _SLACK_SECRETS if getattr(settings, name) != getattr(running, name)
    ]
    if slack_changed and settings.slack_mode != running.slack_mode:
        changed += slack_changed
    elif slack_changed:
        notifier, _ = _notifier(settings)
    return Reloaded(
        config=config,
        api_key=settings.elevenlabs_api_key,
        base_url=settings.elevenlabs_base_url,
        notifier=notifier,
        destinations=destinations,
        needs_restart=tuple(name.upper() for name in changed),
        workspace_endpoints=endpoints if config.workspaces else {},
    )


def _announce_guarantee(notifier: Notifier) -> None:
    """Log once at start whether posts are exactly once (`notify.guarantee`).

    The bot asks Slack in a background thread, so an unreachable Slack never delays start.
    """
    from watchdog.notify import SlackBotNotifier, SlackWebhookNotifier

    if isinstance(notifier, SlackBotNotifier):
        threading.Thread(
            target=notifier.announce_guarantee, name="slack-guarantee", daemon=True
        ).start()
    elif isinstance(notifier, SlackWebhookNotifier):
        guarantee = notifier.guarantee()
        get_logger().warning(
            Event.NOTIFY_GUARANTEE, guarantee=guarantee.name, reason=guarantee.reason
        )


def _live_count_source(settings: Settings, config: Config, clock: SystemClock) -> WorkspaceSources:
    """The real source, a client per workspace; each request bounded by `timeout` and by
    what the schedule allows."""
    from watchdog.source import WorkspaceSources, request_timeout

    return WorkspaceSources(
        _endpoints(settings, config),
        now=clock.now,
        timeout=request_timeout(config.watchdog.timeout, config.watchdog.poll_interval),
        max_concurrency=config.watchdog.concurrency,
    )


def _notifier(settings: Settings, stream: TextIO | None = None) -> tuple[Notifier, str | None]:
    from watchdog.notify import ConsoleNotifier, SlackBotNotifier, SlackWebhookNotifier

    if settings.slack_bot_token is not None:
        bot = SlackBotNotifier(
            settings.slack_bot_token, api_url=settings.slack_api_url, buttons=settings.buttons
        )
        return bot, None
    if settings.slack_webhook_url is not None:
        return SlackWebhookNotifier(settings.slack_webhook_url), "webhook"
    # stderr: stdout carries the JSON audit log, which must stay parseable line by line.
    return ConsoleNotifier(stream or sys.stderr), "console"


def _cmd_poll(args: argparse.Namespace) -> int:
    settings, config = _load(args)
    _endpoints(settings, config)
    configure_logging(level="error", stream=sys.stderr, secrets=_secrets(settings, config))
    results = asyncio.run(_poll_all(settings, config))
    failed = 0
    for name, result in results:
        if isinstance(result, SourceError):
            failed += 1
            if args.json:
                print(
                    json.dumps(
                        {"series": name, "error": result.failure.value, "detail": result.detail}
                    )
                )
            else:
                print(f"{name:<24} error: {result.failure.value}: {result.detail}")
        elif args.json:
            print(json.dumps({"series": name, "count": result, "at": _now_iso()}))
        else:
            print(f"{name:<24} {result}")
    return EXIT_PROBLEM if failed else EXIT_OK


async def _poll_all(settings: Settings, config: Config) -> list[tuple[str, int | SourceError]]:

    clock = SystemClock()
    with _live_count_source(settings, config, clock) as source:

        async def one(name: str, agent_id: str | None) -> tuple[str, int | SourceError]:
            try:
                return name, (await source.poll(name, agent_id)).count
            except SourceError as exc:
                return name, exc

        return list(await asyncio.gather(*(one(n, a) for n, a in config.series)))


def _cmd_replay(args: argparse.Namespace) -> int:
    from watchdog.replay import as_json, read_csv, replay

    settings, config = _load(args)
    if args.history == (args.csv is not None):
        print("watchdog replay: give either a CSV file or --history", file=sys.stderr)
        return EXIT_USAGE
    if args.history:
        try:
            since = parse_duration(args.since)
        except ValueError as exc:
            print(f"watchdog replay: --since: {exc}", file=sys.stderr)
            return EXIT_USAGE
        store = open_store(settings)
        try:
            samples = store.load_samples(since=datetime.now(UTC) - since)
        finally:
            store.close()
        if not samples:
            raise InputError(f"{store.where}: no sample history in the last {args.since}")
    else:
        samples = read_csv(args.csv, config)
    shown = 0
    for t in replay(config, samples):
        shown += 1
        if args.json:
            print(json.dumps(as_json(t)))
        else:
            state = t.kind.value.upper().ljust(8)
            extra = t.condition if t.kind.value == "firing" and not t.reason else t.reason
            print(f"{t.at.isoformat()}  {state} {t.rule} [{t.series}] count={t.count}  {extra}")
    if not args.json:
        first, last = samples[0].at, samples[-1].at
        print(
            f"{len(samples)} samples from {first.isoformat()} to {last.isoformat()}: "
            f"{shown} transitions",
            file=sys.stderr,
        )
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from watchdog.notify.report_card import report_lines
    from watchdog.replay import read_csv
    from watchdog.report import report_of

    settings, config = _load(args)
    if args.csv is not None and args.since is not None:
        print("watchdog report: give either a CSV file or --since", file=sys.stderr)
        return EXIT_USAGE
    if args.csv is not None:
        samples = read_csv(args.csv, config)
        start, end = samples[0].at, samples[-1].at + config.watchdog.poll_interval
    else:
        try:
            span = parse_duration(args.since or "24h")
        except ValueError as exc:
            print(f"watchdog report: --since: {exc}", file=sys.stderr)
            return EXIT_USAGE
        end = datetime.now(UTC)
        start = end - span
        store = open_store(settings, existing=True)
        try:
            samples = store.load_samples(since=start)
        finally:
            store.close()
        if not samples:
            raise InputError(f"{store.where}: no sample history in the last {args.since or '24h'}")
    report = report_of(config, samples, start=start, end=end)
    if args.json:
        for figures in report.series:
            print(json.dumps(figures.to_json()))
        for rule in report.rules:
            print(json.dumps(rule.to_json()))
    else:
        print("\n".join(report_lines(report)))
    return EXIT_OK


def _cmd_status(args: argparse.Namespace) -> int:
    settings = load_settings()
    now = datetime.now(UTC)
    config = _status_config(args, settings)
    store = open_store(settings, existing=True)
    path = store.where
    try:
        report = _status_report(store, now, config)
    finally:
        store.close()
    if settings.watchdog_database_url is not None:
        report["leader"] = _leader(settings.watchdog_database_url.get_secret_value())
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    print(f"state: {path}")
    if "leader" in report:
        print(f"leader: {report['leader'] or 'none (no daemon holds the lock)'}")
    print("series:")
    workspace = ""
    for item in report["series"]:
        if item.get("workspace", "") != workspace:
            workspace = item["workspace"]
            print(f"  workspace {workspace}:")
        age = format_duration(now - datetime.fromisoformat(item["at"]))
        indent = "    " if workspace else "  "
        print(f"{indent}{item['series']:<24} {item['count']:>6}   {age} ago")
    print("alerts:")
    if not report["alerts"]:
        print("  none pending or firing")
    for alert in report["alerts"]:
        print(_alert_line(alert, now))
    outbox = report["outbox"]
    line = f"outbox: {outbox['depth']} undelivered"
    if outbox["oldest"]:
        oldest = outbox["oldest"]
        line += (
            f"; oldest {oldest['kind']} {oldest['rule'] or '?'} since {oldest['created_at']}"
            f" ({oldest['attempts']} attempts, last error: {oldest['last_error']})"
        )
    print(line)
    print(_delivery_lag_line(report["delivery_lag"], now))
    print(f"dead letters: {len(report['dead_letters'])}")
    for dead in report["dead_letters"]:
        print(f"  {dead['failed_at']} {dead['kind']} {dead['rule'] or '?'} -> {dead['reason']}")
    _print_silences(report, now)
    return EXIT_OK


def _leader(url: str) -> str | None:
    """Who leads the daemons sharing the database (`watchdog <host> pid <pid>`), or None."""
    import psycopg

    from watchdog.leadership import leader_of

    try:
        return leader_of(url)
    except psycopg.Error as exc:
        raise StateError(f"cannot tell who leads: {type(exc).__name__}") from None


def _series_order(series: str) -> tuple[str, bool, str]:
    """Workspace by workspace (the unnamed one first), its own series before its agents."""
    return (workspace_of(series), series != workspace_series(series), series)


def _status_config(args: argparse.Namespace, settings: Settings) -> Config | None:
    """The rules, when a rules file is known: they name the escalation stages in force.

    Status reads the state, not the rules: an unreadable rules file is a warning (stages
    are then shown by number), never a reason to show nothing.
    """
    path: Path | None = args.config or settings.watchdog_config
    if path is None:
        return None
    try:
        return load_config(path, overrides=settings.overrides())
    except ConfigError as exc:
        print(f"warning: escalation stages shown by number: {exc.problems[0]}", file=sys.stderr)
        return None


def _alert_line(alert: dict[str, Any], now: datetime) -> str:
    """One alert of `watchdog status`: state, severity, age, stages, flapping, who is on it."""

    def ago(moment: str) -> str:
        return format_duration(now - datetime.fromisoformat(moment))

    flapping = alert["flapping"]
    state = "flapping" if flapping else alert["state"]
    line = (
        f"  {state.upper():<8} {alert['rule']} [{alert['series']}] [{alert['severity']}]"
        f" for {ago(alert['since'])}  count={alert['last_count']}  id={alert['alert_id']}"
    )
    if alert["escalation"]:
        line += f"  escalated: {'; '.join(alert['escalation'])}"
    if flapping:
        line += (
            f"  flapping for {ago(flapping['since'])}, really {flapping['real_state']}"
            f" for {ago(flapping['steady_since'])}"
        )
    if alert["acked_by"]:
        line += f"  acknowledged by {alert['acked_by']} {ago(alert['acked_at'])} ago"
    return line


def _print_silences(report: dict[str, Any], now: datetime) -> None:
    """The silences in force and the firing alerts each covers; nothing when there are none."""
    if report["silences"]:
        print("silences:")
    for item in report["silences"]:
        silence = Silence(
            id=item["id"],
            rule=item["rule"],
            scope=item["scope"],
            starts=datetime.fromisoformat(item["starts"]),
            ends=datetime.fromisoformat(item["ends"]),
            by=item["by"],
            comment=item["comment"],
        )
        print(f"  {silence.describe(now)}")
        for alert in item["covers"]:
            print(f"    covers FIRING {alert['rule']} [{alert['series']}] id={alert['alert_id']}")


def _alert_json(alert: AlertRecord, config: Config | None) -> dict[str, Any]:
    """An alert as `status --json` shows it: with its severity now, the `escalate` stages
    in force, its flapping state and who acknowledged it."""
    flapping = alert.flapping
    return {
        "alert_id": alert.alert_id,
        "rule": alert.rule,
        "series": alert.series,
        "state": alert.state.value,
        "since": alert.since.isoformat(),
        "last_count": alert.last_count,
        "condition": alert.condition,
        "severity": alert.severity.value,
        "escalation": _stages_in_force(alert, config),
        "flapping": None
        if flapping is None
        else {
            "since": flapping.since.isoformat(),
            "real_state": "firing" if flapping.firing else "resolved",
            "steady_since": flapping.stable_since.isoformat(),
        },
        "acked_by": alert.acked_by,
        "acked_at": None if alert.acked_at is None else alert.acked_at.isoformat(),
    }


def _stages_in_force(alert: AlertRecord, config: Config | None) -> list[str]:
    """The `escalate` stages in force, described by the rules when they have the alert's
    rule (else by number, 1 = the first stage)."""
    rule = config.rule(alert.rule) if config is not None else None
    stages = rule.escalate if isinstance(rule, ThresholdRule) else ()
    described = []
    for i in range(alert.escalation.bit_length()):
        if alert.escalation >> i & 1:
            described.append(stages[i].explain() if i < len(stages) else f"stage {i + 1}")
    return described


def _delivery_lag_line(lag: dict[str, Any], now: datetime) -> str:
    """How far behind delivery ran: the last send, the worst of the hour, the wait now."""

    def seconds(value: float) -> str:
        return format_duration(timedelta(seconds=value))

    if lag["last_seconds"] is None:
        parts = ["nothing sent yet"]
    else:
        sent_ago = seconds((now - datetime.fromisoformat(lag["last_sent_at"])).total_seconds())
        parts = [f"last {seconds(lag['last_seconds'])} (sent {sent_ago} ago)"]
        worst = lag["worst_last_hour_seconds"]
        parts.append(
            "none sent in the last hour"
            if worst is None
            else f"worst {seconds(worst)} in the last hour"
        )
    if lag["waiting_seconds"] is not None:
        parts.append(f"the oldest queued has waited {seconds(lag['waiting_seconds'])}")
    return "delivery lag: " + ", ".join(parts)


def _status_report(store: Store, now: datetime, config: Config | None = None) -> dict[str, Any]:
    last = store.last_samples()
    series = [
        {
            "series": s.series,
            **({"workspace": workspace_of(s.series)} if workspace_of(s.series) else {}),
            "count": s.count,
            "at": s.at.isoformat(),
        }
        for s in sorted(last.values(), key=lambda s: _series_order(s.series))
    ]
    alerts = [
        _alert_json(a, config)
        for a in store.load_alerts()
        if a.state in (AlertState.PENDING, AlertState.FIRING)
    ]
    oldest = store.oldest_pending()
    dead = store.dead_letters()
    lag = DeliveryLag.from_json(store.get_meta(LAG_META_KEY))
    firing = [a for a in alerts if a["state"] == AlertState.FIRING.value]
    silences = [
        {
            **_silence_json(s),
            "covers": [
                {"alert_id": a["alert_id"], "rule": a["rule"], "series": a["series"]}
                for a in firing
                if s.covers(str(a["rule"]), str(a["series"]), now)
            ],
        }
        for s in store.silences(now)
    ]

    def described(note: Notification | Unreadable) -> dict[str, Any]:
        if isinstance(note, Unreadable):
            return {"kind": note.kind, "rule": None, "alert_id": note.alert_id}
        return {"kind": note.kind.value, "rule": note.rule, "alert_id": note.alert_id}

    return {
        "series": series,
        "alerts": alerts,
        "outbox": {
            "depth": store.outbox_depth(),
            "oldest": None
            if oldest is None
            else {
                "id": oldest.id,
                "channel": oldest.channel,
                **described(oldest.notification),
                "created_at": oldest.created_at.isoformat(),
                "attempts": oldest.attempts,
                "last_error": oldest.last_error,
            },
        },
        "delivery_lag": {
            "last_seconds": lag.last,
            "last_sent_at": None if lag.last_at is None else lag.last_at.isoformat(),
            "worst_last_hour_seconds": lag.worst(now),
            "waiting_seconds": None
            if oldest is None
            else max(0.0, (now - oldest.created_at).total_seconds()),
        },
        "silences": silences,
        "dead_letters": [
            {
                **described(d.notification),
                "channel": d.channel,
                "failed_at": d.failed_at.isoformat(),
                "attempts": d.attempts,
                "reason": d.reason,
            }
            for d in dead
        ],
    }


def _cmd_silence_add(args: argparse.Namespace) -> int:
    settings, config = _load(args)
    now = datetime.now(UTC)
    try:
        rule, scope = _silence_target(config, args.rule, args.scope)
        ends = _silence_end(args.duration, args.until, now)
        comment = args.comment.strip()
        if not comment:
            raise ValueError("--comment: say why (it is shown in status and the audit log)")
    except ValueError as exc:
        print(f"watchdog silence add: {exc}", file=sys.stderr)
        return EXIT_USAGE
    store = open_store(settings)
    try:
        silence_id = store.add_silence(rule, scope, now, ends, f"cli:{_login_name()}", comment)
    finally:
        store.close()
    print(silence_id)
    return EXIT_OK


def _silence_target(config: Config, rule: str, scope: str | None) -> tuple[str, str | None]:
    """The rule ("*" or one of the config's) and scope (None: every series) a silence is
    for; the scope takes what a `[[mute]]`'s takes (`cover_scope_words`)."""
    rules = config.rule_names
    if rule != ALL_RULES and rule not in rules:
        hint = did_you_mean(rule, rules) or f': use "*" or one of {", ".join(rules)}'
        raise ValueError(f"--rule: unknown rule {rule!r}{hint}")
    if scope is None or scope == EVERY_SERIES:
        return rule, None
    words = cover_scope_words([*(name for name, _ in config.series), WATCHDOG_SERIES])
    if scope not in words:
        raise ValueError(f"--scope: {_unknown_scope(config, scope, words)}")
    return rule, scope


def _unknown_scope(config: Config, scope: str, words: list[str]) -> str:
    """Why `scope` names nothing: its workspace is not in the file (saying which are), or
    the series is not (saying the closest word, else every word there is)."""
    workspace = workspace_of(scope)
    names = [ws.name for ws in config.workspaces]
    if workspace and workspace not in names:
        known = f": use one of {', '.join(names)}" if names else ": the file has no [[workspaces]]"
        hint = did_you_mean(workspace, names) or known
        return f"unknown workspace {workspace!r} in {scope!r}{hint}"
    hint = did_you_mean(scope, words) or f": use one of {', '.join(words)}"
    return f"unknown series {scope!r}{hint}"


def _silence_end(duration: str | None, until: str | None, now: datetime) -> datetime:
    """When a silence given `--for DURATION` or `--until TIME` from `now` ends."""
    if duration is not None:
        try:
            length = parse_duration(duration)
        except ValueError as exc:
            raise ValueError(f"--for: {exc}") from None
        if length <= timedelta(0):
            raise ValueError("--for: a silence must last more than 0s")
        return now + length
    assert until is not None
    try:
        ends = datetime.fromisoformat(until)
    except ValueError:
        raise ValueError(
            f"--until: invalid time {until!r}: use ISO 8601, e.g. 2026-12-01T18:00+01:00"
        ) from None
    ends = ends.astimezone(UTC)  # a naive time is the machine's local time
    if ends <= now:
        raise ValueError(f"--until: {ends.isoformat()} is in the past")
    return ends


def _login_name() -> str:
    """Who runs the CLI: the user behind `sudo` if any, else the login name."""
    try:
        return os.environ.get("SUDO_USER") or getpass.getuser()
    except (OSError, KeyError):  # no such variable and no passwd entry for the uid
        return f"uid {os.getuid()}"


def _cmd_silence_list(args: argparse.Namespace) -> int:
    settings = load_settings()
    now = datetime.now(UTC)
    store = open_store(settings, existing=True)
    try:
        silences = store.silences(now=now)
    finally:
        store.close()
    for s in silences:
        print(json.dumps(_silence_json(s)) if args.json else s.describe(now))
    if not silences and not args.json:
        print("no silences in force or to come")
    return EXIT_OK


def _silence_json(s: Silence) -> dict[str, Any]:
    return {
        "id": s.id,
        "rule": s.rule,
        "scope": s.scope,
        "starts": s.starts.isoformat(),
        "ends": s.ends.isoformat(),
        "by": s.by,
        "comment": s.comment,
    }


def _cmd_silence_expire(args: argparse.Namespace) -> int:
    settings = load_settings()
    store = open_store(settings, existing=True)
    try:
        expired = store.expire_silence(args.id, datetime.now(UTC))
    finally:
        store.close()
    if not expired:
        print(
            f"watchdog silence expire: no silence {args.id} in force or to come "
            "(see `watchdog silence list`)",
            file=sys.stderr,
        )
        return EXIT_PROBLEM
    print(f"silence {args.id} expired")
    return EXIT_OK


def _cmd_notify_test(args: argparse.Namespace) -> int:
    """The fire drill (see `watchdog.notify.drill`); it never opens the state database."""
    import socket

    from watchdog.checkreport import WEBHOOK_IGNORES_CHANNEL
    from watchdog.notify.drill import (
        TEST_RULE,
        DrillFailed,
        failure_lines,
        result_lines,
        run_drill,
    )

    settings, config = _load(args)
    configure_logging(level="error", stream=sys.stderr, secrets=_secrets(settings, config))
    if args.pagerduty:
        return _pagerduty_drill(settings, config)
    notifier, fixed_channel = _notifier(settings, stream=sys.stdout)
    if fixed_channel == "webhook" and args.channel:
        print(f"notify-test: --channel ignored: {WEBHOOK_IGNORES_CHANNEL}", file=sys.stderr)
    # The routing of `Daemon._notification` for a rule without a channel of its own.
    channel = fixed_channel or args.channel or config.route_for(TEST_RULE).channel
    if not channel:
        raise ConfigError(
            [f"{config.source}: slack.channel: not set: pass --channel to name a channel"]
        )
    try:
        result = run_drill(
            notifier, channel, now=lambda: datetime.now(UTC), host=socket.gethostname()
        )
    except DrillFailed as exc:
        _problems("\n".join(failure_lines(exc, notifier)))
        return EXIT_PROBLEM
    for line in result_lines(result):
        print(line)
    return EXIT_OK


def _pagerduty_drill(settings: Settings, config: Config) -> int:
    """`notify-test --pagerduty`: a test incident triggered and resolved."""
    import socket

    from watchdog.notify.destinations import PAGERDUTY
    from watchdog.notify.drill import DrillFailed, run_pagerduty_drill

    if config.pagerduty is None:
        raise ConfigError([f"{config.source}: pagerduty: no [pagerduty] section"])
    sender = _destinations(settings, config)[PAGERDUTY]
    try:
        lines = run_pagerduty_drill(
            sender, now=lambda: datetime.now(UTC), host=socket.gethostname()
        )
    except DrillFailed as exc:
        _problems(f"notify-test: {exc.step} failed: {exc.error.reason}")
        return EXIT_PROBLEM
    for line in lines:
        print(line)
    return EXIT_OK


def _secrets(settings: Settings, config: Config) -> list[str]:
    """Every secret for the log redaction, the rules file's `heartbeat_url` included."""
    url = config.watchdog.heartbeat_url
    keys = [found.key for found in _workspace_keys(settings, config)]
    return [
        *settings.secrets(),
        *([url.get_secret_value()] if url is not None else []),
        *_destination_secrets(settings, config),
        *(key.get_secret_value() for key in keys if key is not None and key.get_secret_value()),
    ]


def _cmd_ack(args: argparse.Namespace) -> int:
    """Queue an acknowledgement for the running daemon (applied within a second).

    The daemon owns the alert (its engine, its card), so this only checks that the alert
    fires and writes the request to the state database; a daemon that is not running
    applies it when it starts.
    """
    import getpass

    settings = load_settings()
    try:
        by = args.by or getpass.getuser()
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        by = f"uid {os.getuid()}"
    if not by.strip():
        raise InputError("watchdog ack: --by: give a name")
    store = open_store(settings, existing=True)
    try:
        found = next((a for a in store.load_alerts() if a.alert_id == args.alert_id), None)
        if found is None or found.state is not AlertState.FIRING:
            state = "unknown" if found is None else f"{found.state.value}, not firing"
            raise InputError(
                f"watchdog ack: alert {args.alert_id!r}: {state}; "
                "`watchdog status` lists the firing alerts and their ids"
            )
        if found.acked_by is not None:
            print(
                f"alert {found.alert_id} ({found.rule} on {found.series}) was already "
                f"acknowledged by {found.acked_by}"
            )
            return EXIT_OK
        store.request_ack(found.alert_id, by=by, at=datetime.now(UTC))
    finally:
        store.close()
    print(
        f"acknowledging alert {found.alert_id} ({found.rule} on {found.series}) as {by}: "
        "the running watchdog applies it within a second"
    )
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from watchdog.demo import run_demo

    return run_demo(sys.stdout, config_path=args.config, speed=args.speed)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()
