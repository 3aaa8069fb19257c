"""The `watchdog` command: argument parsing and wiring the real objects together.

Every failure an operator can cause (bad settings, bad rules, an unusable state
directory, an unreadable CSV) ends as a message and a non-zero exit, never a traceback.
Exit codes: 0 ok, 1 a problem was found (invalid config, failed poll, ...), 2 usage,
70 (EX_SOFTWARE) `run` stopped because one of its tasks crashed (`daemon.crashed`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

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
    WatchdogError,
)
from watchdog.liveness import MIN_WATCHDOG_SEC, watchdog_sec_problems
from watchdog.model import WORKSPACE, AlertState, Notification
from watchdog.rules import Config, load_config
from watchdog.settings import Settings, credentials_for_check, load_settings, unknown_variables
from watchdog.store import Store, Unreadable, writer_lock

if TYPE_CHECKING:
    from watchdog.daemon import Reloaded
    from watchdog.notify import Notifier
    from watchdog.source import LiveCountSource

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2
EXIT_CRASHED = 70
"""EX_SOFTWARE: a task of `run` failed unexpectedly; systemd's Restart= starts it again."""

RESTART_ONLY = (
    "watchdog_config",
    "watchdog_state_dir",
    "state_directory",
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
    sub = command("status", _cmd_status, "show series, alerts and the outbox from the state")
    sub.add_argument("--json", action="store_true", help="one JSON document")
    sub = command("ack", _cmd_ack, "acknowledge a firing alert (its repeats stop)")
    sub.add_argument("alert_id", metavar="ALERT_ID", help="as in the card and `watchdog status`")
    sub.add_argument(
        "--by", metavar="NAME", help="who is on it (default: your login name)", default=None
    )
    sub = command("demo", _cmd_demo, "a simulated day against the example rules (no account)")
    sub.add_argument("--speed", type=float, default=None, help=argparse.SUPPRESS)
    return parser


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
    rules = [rule.name for rule in config.rules if not rule.channel]
    missing += [f"rules {', '.join(rules)}"] if rules else []
    if missing:
        raise ConfigError(
            [
                f"{config.source}: slack.channel: required with SLACK_BOT_TOKEN "
                f"({' and '.join(missing)} have no channel of their own)"
            ]
        )


def _require_key(settings: Settings) -> None:
    if settings.elevenlabs_api_key is None:
        raise ConfigError(
            [
                "environment: ELEVENLABS_API_KEY is not set "
                "(or put it in $CREDENTIALS_DIRECTORY/elevenlabs_api_key)"
            ]
        )


def _open_store(settings: Settings) -> Store:
    return Store.open(Store.default_path(settings.state_dir))


# -- commands -----------------------------------------------------------------------


def _cmd_check(args: argparse.Namespace) -> int:
    from watchdog.checkreport import Environment, report
    from watchdog.metrics import parse_listen_addr

    for unknown in unknown_variables():
        print(f"warning: {unknown}", file=sys.stderr)
    credentials = credentials_for_check(args.credentials_dir)
    settings, config = _load(args, load_settings(credentials.directory))
    if settings.watchdog_metrics_addr:
        try:
            parse_listen_addr(settings.watchdog_metrics_addr)
        except ValueError as exc:
            raise ConfigError([f"environment: WATCHDOG_METRICS_ADDR: {exc}"]) from None
    watchdog_sec = _watchdog_sec_line()
    store = _open_store(settings)
    store.close()
    environment = Environment(
        slack_mode=settings.slack_mode,
        buttons=settings.buttons,
        api_key_set=settings.elevenlabs_api_key is not None,
        state_dir=settings.state_dir,
        credentials=credentials.directory,
        credentials_note=credentials.note,
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
    _require_key(settings)
    configure_logging(level=settings.watchdog_log_level, secrets=settings.secrets())
    log = get_logger()
    for unknown in unknown_variables():
        log.warning(
            Event.CONFIG_UNKNOWN_VARIABLE, variable=unknown.name, suggestion=unknown.suggestion
        )
    with writer_lock(settings.state_dir):
        store = _open_store(settings)
        log.info(
            Event.CONFIG_LOADED,
            source=config.source,
            rules=len(config.rules),
            agents=len(config.agents),
            state=str(store.path),
        )
        try:
            asyncio.run(_run(settings, config, store, args))
        except DaemonCrashed as exc:
            # Already in the audit log as daemon.crashed; one line for the terminal too.
            print(f"watchdog: {exc}", file=sys.stderr)
            return EXIT_CRASHED
        finally:
            store.close()
    return EXIT_OK


async def _run(settings: Settings, config: Config, store: Store, args: argparse.Namespace) -> None:
    from watchdog.daemon import Daemon
    from watchdog.metrics import Metrics, parse_listen_addr, serve
    from watchdog.systemd import SdNotifier

    assert settings.elevenlabs_api_key is not None
    log = get_logger()
    clock = SystemClock()
    notifier, fixed_channel = _notifier(settings)
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
    _require_key(settings)
    assert settings.elevenlabs_api_key is not None
    for secret in settings.secrets():
        add_secret(secret)
    changed = [name for name in RESTART_ONLY if getattr(settings, name) != getattr(running, name)]
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
        needs_restart=tuple(name.upper() for name in changed),
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


def _live_count_source(settings: Settings, config: Config, clock: SystemClock) -> LiveCountSource:
    """The real source; each request bounded by `timeout` and by what the schedule allows."""
    from watchdog.source import LiveCountSource, request_timeout

    assert settings.elevenlabs_api_key is not None
    return LiveCountSource(
        settings.elevenlabs_api_key,
        settings.elevenlabs_base_url,
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
    _require_key(settings)
    configure_logging(level="error", stream=sys.stderr, secrets=settings.secrets())
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

    assert settings.elevenlabs_api_key is not None
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
        store = _open_store(settings)
        try:
            samples = store.load_samples(since=datetime.now(UTC) - since)
        finally:
            store.close()
        if not samples:
            raise InputError(f"{store.path}: no sample history in the last {args.since}")
    else:
        samples = read_csv(args.csv, config)
    shown = 0
    for t in replay(config, samples):
        shown += 1
        if args.json:
            print(json.dumps(as_json(t)))
        else:
            state = "FIRING  " if t.kind.value == "firing" else "RESOLVED"
            extra = t.condition if t.kind.value == "firing" else t.reason
            print(f"{t.at.isoformat()}  {state} {t.rule} [{t.series}] count={t.count}  {extra}")
    if not args.json:
        first, last = samples[0].at, samples[-1].at
        print(
            f"{len(samples)} samples from {first.isoformat()} to {last.isoformat()}: "
            f"{shown} transitions",
            file=sys.stderr,
        )
    return EXIT_OK


def _cmd_status(args: argparse.Namespace) -> int:
    settings = load_settings()
    path = Store.default_path(settings.state_dir)
    if not path.exists():
        raise StateError(f"{path}: no state database yet (has `watchdog run` been started?)")
    now = datetime.now(UTC)
    store = Store.open(path)
    try:
        report = _status_report(store, now)
    finally:
        store.close()
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    print(f"state: {path}")
    print("series:")
    for item in report["series"]:
        age = format_duration(now - datetime.fromisoformat(item["at"]))
        print(f"  {item['series']:<24} {item['count']:>6}   {age} ago")
    print("alerts:")
    if not report["alerts"]:
        print("  none pending or firing")
    for alert in report["alerts"]:
        age = format_duration(now - datetime.fromisoformat(alert["since"]))
        print(
            f"  {alert['state'].upper():<8} {alert['rule']} [{alert['series']}] for {age}"
            f"  count={alert['last_count']}  id={alert['alert_id']}"
            + (f"  acknowledged by {alert['acked_by']}" if alert["acked_by"] else "")
        )
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
    return EXIT_OK


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


def _status_report(store: Store, now: datetime) -> dict[str, Any]:
    last = store.last_samples()
    series = [
        {"series": s.series, "count": s.count, "at": s.at.isoformat()}
        for s in sorted(last.values(), key=lambda s: (s.series != WORKSPACE, s.series))
    ]
    alerts = [
        {
            "alert_id": a.alert_id,
            "rule": a.rule,
            "series": a.series,
            "state": a.state.value,
            "since": a.since.isoformat(),
            "last_count": a.last_count,
            "condition": a.condition,
            "acked_by": a.acked_by,
        }
        for a in store.load_alerts()
        if a.state in (AlertState.PENDING, AlertState.FIRING)
    ]
    oldest = store.oldest_pending()
    dead = store.dead_letters()
    lag = DeliveryLag.from_json(store.get_meta(LAG_META_KEY))

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


def _cmd_ack(args: argparse.Namespace) -> int:
    """Queue an acknowledgement for the running daemon (applied within a second).

    The daemon owns the alert (its engine, its card), so this only checks that the alert
    fires and writes the request to the state database; a daemon that is not running
    applies it when it starts.
    """
    import getpass

    settings = load_settings()
    path = Store.default_path(settings.state_dir)
    if not path.exists():
        raise StateError(f"{path}: no state database yet (has `watchdog run` been started?)")
    try:
        by = args.by or getpass.getuser()
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        by = f"uid {os.getuid()}"
    if not by.strip():
        raise InputError("watchdog ack: --by: give a name")
    store = Store.open(path)
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
