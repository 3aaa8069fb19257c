"""What `watchdog check` prints about a valid configuration: one line per rule and where
alerts will go, as the running service would route them.

Pure: it reads a `Config` and a few facts about the settings and returns lines; parsing
and validating the rules file is `rules`' job, printing is the `cli`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from watchdog.durations import format_duration
from watchdog.engine import BEHIND_SHARE
from watchdog.rules import (
    ChangeRule,
    Config,
    FlapSettings,
    MuteWindow,
    PlanLimitRule,
    PlanSection,
    ThresholdRule,
    WebhookSection,
    WorkspaceSection,
)
from watchdog.settings import SlackMode
from watchdog.urls import url_host

WEBHOOK_IGNORES_CHANNEL = "an incoming webhook posts to the channel it was created for"


@dataclass(frozen=True)
class Environment:
    """The facts about the settings that the report states (never a secret)."""

    slack_mode: SlackMode
    api_key_set: bool
    state: str
    """Where the state is kept: the state directory, or the database URL without password."""
    credentials: Path | None = None
    credentials_note: str | None = None
    buttons: bool = False
    signed_webhooks: tuple[str, ...] = ()
    workspace_keys: tuple[WorkspaceKey, ...] = ()
    """Each `[[workspaces]]`'s API key: found or not, and where (never the key)."""


@dataclass(frozen=True)
class WorkspaceKey:
    """Whether a workspace's API key was found, and where (or where it was looked for)."""

    workspace: str
    found: bool
    origin: str


def report(config: Config, env: Environment) -> list[str]:
    """The lines of a successful `watchdog check`."""
    agents = len(config.series) - max(1, len(config.workspaces))
    what = (
        f"{len(config.workspaces)} workspaces + {agents} agents"
        if config.workspaces
        else f"workspace + {agents} agents"
    )
    lines = [
        f"{config.source}: ok: {len(config.rules)} rules, {len(config.series)} series "
        f"({what}), poll every {format_duration(config.watchdog.poll_interval)}"
    ]
    if config.plan is not None:
        lines.append(f"  {_plan_line(config.plan)}")
    keys = {key.workspace: key for key in env.workspace_keys}
    lines += [f"  {_workspace_line(config, ws, keys.get(ws.name))}" for ws in config.workspaces]
    lines += [f"  {line}" for rule in config.rules for line in _rule_lines(config, rule, env)]
    lines.append(f"  {_no_data_line(config, env.slack_mode)}")
    lines.append(f"  {_flap_line(config.watchdog.flap)}")
    lines += [f"  {_mute_line(mute)}" for mute in config.mutes]
    if env.slack_mode == "webhook" and config.slack.channel:
        lines.append(f"  slack.channel {config.slack.channel} unused: {WEBHOOK_IGNORES_CHANNEL}")
    if config.pagerduty is not None:
        lines.append(f"  {_pagerduty_line(config)}")
    lines += [f"  {_webhook_line(hook, env)}" for hook in config.webhooks]
    if config.watchdog.heartbeat_url is not None:
        lines.append(f"  {_heartbeat_line(config.watchdog.heartbeat_url.get_secret_value())}")
    lines.append(f"  {_delivery_line(env)}")
    return lines


def _pagerduty_line(config: Config) -> str:
    """Which rules page, and where the events go (the routing key's shape was checked)."""
    assert config.pagerduty is not None
    paging = [name for name in config.rule_names if config.may_page(name)]
    severities = ", ".join(config.pagerduty.severities) or "none"
    return (
        f"pagerduty: routing key ok; pages on {severities} (a rule's page overrides):"
        f" {', '.join(paging) or 'no rule pages'} -> {url_host(config.pagerduty.events_url)}"
    )


def _webhook_line(hook: WebhookSection, env: Environment) -> str:
    """What a webhook receives and whether its requests are signed (never its URL)."""
    severities = ", ".join(hook.severities) or "every severity"
    rules = ", ".join(hook.rules) or "every rule"
    signed = "signed" if hook.name in env.signed_webhooks else "NOT signed (no secret)"
    return f"webhook {hook.name}: {rules} at {severities}; {signed}"


def _heartbeat_line(url: str) -> str:
    """The dead-man's switch, by host only: the URL's path is the check's secret."""
    return (
        f"heartbeat: pings {url_host(url)} after every poll cycle (the URL's path is secret),"
        " or its /fail when the workspace poll failed or the pipeline is unhealthy"
    )


def _rule_lines(config: Config, rule: ThresholdRule | ChangeRule, env: Environment) -> list[str]:
    """A rule's lines: one, or one per workspace plan its levels resolve differently
    under (a percentage of each workspace's own plan; `[plan]`'s built-in rules), each
    on the series it applies to there."""
    groups: list[tuple[ThresholdRule | ChangeRule, int | None, list[str]]] = []
    for series in config.scopes.get(rule.name, ()):
        applied = config.rule_on(rule.name, series) or rule
        plan = config.plan_for(series)
        limit = plan.concurrency_limit if plan is not None and _has_percentages(applied) else None
        same = next((g for g in groups if g[0] == applied and g[1] == limit), None)
        if same is None:
            groups.append((applied, limit, [series]))
        else:
            same[2].append(series)
    if not groups:
        return [summarize(config, rule, env.slack_mode, (), None)]
    return [
        summarize(config, applied, env.slack_mode, series, limit)
        for applied, limit, series in groups
    ]


def _has_percentages(rule: ThresholdRule | ChangeRule) -> bool:
    return isinstance(rule, ThresholdRule) and bool(
        rule.percentages or any(stage.percentages for stage in rule.escalate)
    )


def summarize(
    config: Config,
    rule: ThresholdRule | ChangeRule,
    slack_mode: SlackMode,
    series: Sequence[str],
    limit: int | None,
) -> str:
    """One line for a rule on `series`: what it watches, how severe, what its percentages
    of the plan's `limit` resolved to, and where its alerts go."""
    scope = ", ".join(series) or "(no series)"
    kind = "built in by [plan]:" if isinstance(rule, PlanLimitRule) else rule.kind
    parts = [f"{rule.name}: {kind} {rule.describe()} on {scope}", f"[{rule.severity}]"]
    if isinstance(rule, ThresholdRule) and limit is not None:
        parts += _levels(rule, limit)
    if isinstance(rule, ThresholdRule) and rule.escalate:
        parts.append(f"escalates ({'; '.join(stage.explain() for stage in rule.escalate)})")
    if isinstance(rule, ChangeRule) and rule.resolve == "window":
        parts.append("resolves by window")
    if rule.active is not None:
        parts.append(f"active {rule.active.describe()}")
    if rule.inhibited_by:
        parts.append(f"inhibited by {', '.join(rule.inhibited_by)} (same series or workspace)")
    parts += _destination(config, rule.channel, slack_mode, series)
    return " ".join(parts)


def _plan_line(plan: PlanSection) -> str:
    """The plan and the levels derived from it, as the built-in rules use them."""
    limit, cap = plan.concurrency_limit, plan.hard_cap
    if plan.burst:
        return (
            f"plan: concurrency limit {limit}, burst: billed at the burst rate above {limit}, "
            f"new calls rejected from {cap}"
        )
    return f"plan: concurrency limit {limit}, no burst: new calls rejected from {limit}"


def _levels(rule: ThresholdRule, limit: int) -> list[str]:
    """`(above 80% of 30 = 24, escalate[0].above 90% of 30 = 27)`: what each percentage of
    the limit resolved to; nothing when none is written so."""
    derived = [
        f"{key} {written} of {limit} = {getattr(rule, key)}"
        for key, written in rule.percentages.items()
    ]
    derived += [
        f"escalate[{i}].{key} {written} of {limit} = {getattr(stage, key)}"
        for i, stage in enumerate(rule.escalate)
        for key, written in stage.percentages.items()
    ]
    return [f"({', '.join(derived)})"] if derived else []


def _workspace_line(config: Config, ws: WorkspaceSection, key: WorkspaceKey | None) -> str:
    """`workspace acme: key from $ACME_KEY, host api.eu.residency.elevenlabs.io, ...`."""
    if key is not None and key.found:
        key_part = f"API key from {key.origin}"
    else:
        where = f": set {key.origin}" if key is not None else ""
        key_part = f"API key NOT SET{where} (needed by run and poll)"
    host = url_host(ws.base_url) if ws.base_url else "ELEVENLABS_BASE_URL's host"
    agents = ", ".join(f"{ws.name}/{a.name}" for a in ws.agents) or "no agents"
    parts = [f"workspace {ws.name}: {key_part}", f"host {host}", f"series {ws.name}/workspace"]
    parts.append(agents)
    if ws.channel:
        parts.append(f"alerts to {ws.channel} unless a rule routes them")
    if ws.plan is not None:
        parts.append(_plan_line(ws.plan))
    return "; ".join(parts)


def _no_data_line(config: Config, slack_mode: SlackMode) -> str:
    no_data = config.no_data
    parts = [
        f"no-data: built in, after {format_duration(no_data.stale_after)} of failed polls per"
        f" series, an agent's inhibited by the workspace's (built in);"
        f" watchdog-behind: over {BEHIND_SHARE:.0%} of series late for as long",
        f"[{no_data.severity}]",
        *_destination(config, no_data.channel, slack_mode, [name for name, _ in config.series]),
    ]
    return " ".join(parts)


def _flap_line(flap: FlapSettings | None) -> str:
    """When an alert turns flapping, and that every alert can (the built-in ones too)."""
    if flap is None:
        return "flapping: off (flap = false)"
    window = format_duration(flap.window)
    return (
        f"flapping: {flap.changes} firings and resolutions within {window} make any alert"
        f" (built-in ones too) one flapping alert until steady for {window}"
    )


def _mute_line(mute: MuteWindow) -> str:
    """When a mute window is open, and whose notifications it holds back then."""
    rules = ", ".join(mute.rules) if mute.rules is not None else "every rule"
    scope = [mute.scope] if isinstance(mute.scope, str) else mute.scope
    series = ", ".join(scope) if scope is not None else "every series"
    return f"mute {mute.name}: {mute.describe()}: holds back {rules} on {series}"


def _destination(
    config: Config, own: str | None, slack_mode: SlackMode, series: Sequence[str] = ()
) -> Sequence[str]:
    """`-> #channel` (each channel its `series` go to, when workspaces have their own),
    or in webhook mode why a rule's own channel is not used."""
    if slack_mode == "webhook":
        return [f"(channel {own} unused: {WEBHOOK_IGNORES_CHANNEL})"] if own else []
    if own:
        return [f"-> {own}"]
    channels = {config.default_channel(name) for name in series} or {config.slack.channel}
    shown = sorted(channel for channel in channels if channel)
    return [f"-> {', '.join(shown)}"] if shown else []


def _delivery_line(env: Environment) -> str:
    buttons = (
        "buttons on: Socket Mode with SLACK_APP_TOKEN"
        if env.buttons
        else "buttons off: no SLACK_APP_TOKEN"
    )
    where = {
        "bot": f"Slack (bot token; {buttons})",
        "webhook": "Slack (incoming webhook)",
        "console": "the console (no Slack configured)",
    }[env.slack_mode]
    parts = [f"alerts go to {where}"]
    if not env.workspace_keys:
        parts.append("API key " + ("set" if env.api_key_set else "NOT SET"))
        if not env.api_key_set:
            parts[-1] += " (needed by run and poll)"
    if env.credentials is not None:
        parts.append(f"credentials from {env.credentials}")
    if env.credentials_note:
        parts.append(env.credentials_note)
    parts.append(f"state in {env.state}")
    return "; ".join(parts)
