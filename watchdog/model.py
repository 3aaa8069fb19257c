"""Frozen values shared by every layer: samples, alert states, transitions, notifications.

Nothing here imports anything else of ours, so the pure core (rules, engine) and the
edges (source, notify, store, daemon) can all speak the same vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

WORKSPACE = "workspace"
"""Name of the series that carries the workspace-wide count."""

WORKSPACE_SEPARATOR = "/"
"""Between a workspace's name and its series' (`acme/support`) when the rules file names
`[[workspaces]]`. No rule, agent or workspace name may contain it."""


def series_name(workspace: str, name: str) -> str:
    """The series `name` (an agent, or `workspace`) of `workspace`; `name` itself in a file
    without `[[workspaces]]` (the unnamed workspace `""`)."""
    return f"{workspace}{WORKSPACE_SEPARATOR}{name}" if workspace else name


def workspace_of(series: str) -> str:
    """The workspace a series belongs to: `acme` for `acme/support`, `""` (the unnamed
    workspace of a file without `[[workspaces]]`) for `support`."""
    workspace, separator, _ = series.partition(WORKSPACE_SEPARATOR)
    return workspace if separator else ""


def workspace_series(series: str) -> str:
    """The workspace-wide series of the workspace `series` belongs to."""
    return series_name(workspace_of(series), WORKSPACE)


EVERY_SERIES = "*"
"""In the scope of a silence or a `[[mute]]`: every series (and `<workspace>/*`: every
series of that workspace, its own series too)."""


def covers_series(scope: Iterable[str], series: str) -> bool:
    """Whether the scope of a silence or a `[[mute]]` (its words) names `series`: `*`,
    `<workspace>/*` of the workspace `series` belongs to, or the series' own name.

    The one matching of silences and mutes, so that `watchdog silence add --scope` and a
    `[[mute]]`'s `scope` mean the same thing (`cover_scope_words` lists what they take).
    """
    every_of_its_workspace = series_name(workspace_of(series), EVERY_SERIES)
    return any(word in (EVERY_SERIES, every_of_its_workspace, series) for word in scope)


def cover_scope_words(series: Iterable[str]) -> list[str]:
    """Every word a silence's or a `[[mute]]`'s scope may use over `series`: `*`, then
    `<workspace>/*` of each named workspace, then the series' names (in their order)."""
    names = list(dict.fromkeys(series))
    workspaces = dict.fromkeys(workspace_of(name) for name in names if workspace_of(name))
    return [EVERY_SERIES, *(series_name(ws, EVERY_SERIES) for ws in workspaces), *names]


NO_DATA_RULE = "no-data"
"""Name of the built-in rule that fires when a series' polls keep failing."""

WATCHDOG_BEHIND_RULE = "watchdog-behind"
"""Name of the built-in self-alert that fires when the watchdog does not poll on time."""

BURST_RULE = "burst"
"""Name of the `[plan]` built-in rule: the workspace is above the limit, billed at burst rate."""

AT_CAPACITY_RULE = "at-capacity"
"""Name of the `[plan]` built-in rule: the workspace is at its hard cap, calls are rejected."""

WATCHDOG_SERIES = "watchdog"
"""The pseudo series the watchdog's own alerts (`watchdog-behind`) are raised on."""


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class AlertState(StrEnum):
    """Where one alert instance (rule x series) stands."""

    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"


class TransitionKind(StrEnum):
    """What happened to an alert instance; only some kinds are notified."""

    PENDING = "pending"  # condition started holding, waiting out `for`
    FIRING = "firing"  # notified: a new message
    REPEAT = "repeat"  # notified: still firing, the repeat interval elapsed
    RESOLVED = "resolved"  # notified: firing -> inactive
    CANCELLED = "cancelled"  # pending -> inactive without ever firing; audit only
    ESCALATED = "escalated"  # notified: the firing card's severity rose (an `escalate` stage)
    DEESCALATED = "deescalated"  # notified: a level stage was left, still firing
    FLAPPING = "flapping"  # notified: fired and resolved too often, now held as flapping
    ANNOTATION = "annotation"  # notified: not the engine's; a human's note, edited onto the card
    REPORT = "report"  # notified: not the engine's nor an alert's; the daily report
    GROUP = "group"  # notified: a group's card (`watchdog.notify.grouping`), posted or edited

    @property
    def notifies(self) -> bool:
        return self not in (TransitionKind.PENDING, TransitionKind.CANCELLED)

    @property
    def edits_card(self) -> bool:
        """Whether the kind changes what the alert's existing card says, never a new card."""
        return self in (
            TransitionKind.ESCALATED,
            TransitionKind.DEESCALATED,
            TransitionKind.FLAPPING,
        )


class AckOutcome(StrEnum):
    """What asking to acknowledge an alert did."""

    ACKNOWLEDGED = "acknowledged"
    ALREADY_ACKNOWLEDGED = "already_acknowledged"
    NOT_FIRING = "not_firing"  # unknown id, pending, or resolved since


@dataclass(frozen=True, slots=True)
class Sample:
    """One good poll: `count` live conversations on `series` at `at` (aware, UTC)."""

    series: str
    at: datetime
    count: int


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of one alert instance, decided by the engine.

    `alert_id` names one episode (from pending/firing to resolved) of one rule on one
    series, so that the audit log and Slack message of that episode can be followed.
    """

    alert_id: str
    kind: TransitionKind
    rule: str
    series: str
    severity: Severity
    at: datetime
    since: datetime
    count: int | None
    condition: str
    reason: str = ""
    recent: tuple[int, ...] = field(default=())
    mention: str | None = None
    """Whom an escalation pages (the stages reached), on ESCALATED and FIRING only."""
    acked_by: str | None = None
    acked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Notification:
    """What one Slack delivery says: a notified transition plus the rule's presentation.

    Stored in the outbox as JSON (see `to_json`/`from_json`), so it must stay plain data.
    A RESOLVED notification with `fired_at` set stands for a whole episode whose firing
    card was never sent ("fired and resolved", see `watchdog.notify.coalesce`):
    `fired_at` and `fired_count` are the firing transition's time and count. `limit` is
    the plan's concurrency limit when the count is the workspace's (`[plan]`), so the
    message can show the count against it.

    `annotations` are lines people added to the alert's card (`Acknowledged by <@U…>`),
    already rendered (`watchdog.notify.render`); each notification carries all of them,
    so the card's latest edit shows every one. An ANNOTATION notification is such an
    edit of the firing card in place, with the alert's current values. `acked_by` says
    who acknowledged the alert, if anyone (the card then offers no Acknowledge button).

    A REPORT notification is no alert's: the daily report (`watchdog.report`), whose
    `alert_id` names the day, posted as a top-level message of its own. `message` holds
    it already rendered (JSON of `text`, Block Kit `blocks` and `plain` lines), so what
    is posted is what was queued, whatever the config says by then.
    """

    alert_id: str
    kind: TransitionKind
    rule: str
    series: str
    severity: Severity
    at: datetime
    since: datetime
    count: int | None
    condition: str
    channel: str
    reason: str = ""
    recent: tuple[int, ...] = ()
    runbook: str | None = None
    mention: str | None = None
    fired_at: datetime | None = None
    fired_count: int | None = None
    annotations: tuple[str, ...] = ()
    acked_by: str | None = None
    limit: int | None = None
    silenced_by: tuple[str, ...] = ()
    message: str | None = None

    @property
    def fired_and_resolved(self) -> bool:
        """True when this one notification reports both the firing and the resolution."""
        return self.kind is TransitionKind.RESOLVED and self.fired_at is not None

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "alert_id": self.alert_id,
            "kind": self.kind.value,
            "rule": self.rule,
            "series": self.series,
            "severity": self.severity.value,
            "at": self.at.isoformat(),
            "since": self.since.isoformat(),
            "count": self.count,
            "condition": self.condition,
            "channel": self.channel,
            "reason": self.reason,
            "recent": list(self.recent),
            "runbook": self.runbook,
            "mention": self.mention,
        }
        # Only when set, so the payloads of plain notifications stay as they were.
        if self.fired_at is not None:
            data["fired_at"] = self.fired_at.isoformat()
        if self.fired_count is not None:
            data["fired_count"] = self.fired_count
        if self.annotations:
            data["annotations"] = list(self.annotations)
        if self.acked_by is not None:
            data["acked_by"] = self.acked_by
        if self.limit is not None:
            data["limit"] = self.limit
        if self.silenced_by:
            data["silenced_by"] = list(self.silenced_by)
        if self.message is not None:
            data["message"] = self.message
        return data

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Notification:
        count = data["count"]
        recent = data.get("recent") or []
        runbook = data.get("runbook")
        mention = data.get("mention")
        fired_at = data.get("fired_at")
        fired_count = data.get("fired_count")
        annotations = data.get("annotations") or []
        acked_by = data.get("acked_by")
        limit = data.get("limit")
        silenced_by = data.get("silenced_by") or []
        message = data.get("message")
        assert isinstance(recent, list)
        assert isinstance(annotations, list)
        assert isinstance(silenced_by, list)
        return cls(
            alert_id=str(data["alert_id"]),
            kind=TransitionKind(str(data["kind"])),
            rule=str(data["rule"]),
            series=str(data["series"]),
            severity=Severity(str(data["severity"])),
            at=datetime.fromisoformat(str(data["at"])),
            since=datetime.fromisoformat(str(data["since"])),
            count=None if count is None else int(str(count)),
            condition=str(data["condition"]),
            channel=str(data["channel"]),
            reason=str(data.get("reason") or ""),
            recent=tuple(int(x) for x in recent),
            runbook=None if runbook is None else str(runbook),
            mention=None if mention is None else str(mention),
            fired_at=None if fired_at is None else datetime.fromisoformat(str(fired_at)),
            fired_count=None if fired_count is None else int(str(fired_count)),
            annotations=tuple(str(line) for line in annotations),
            acked_by=None if acked_by is None else str(acked_by),
            limit=None if limit is None else int(str(limit)),
            silenced_by=tuple(str(by) for by in silenced_by),
            message=None if message is None else str(message),
        )


@dataclass(frozen=True, slots=True)
class MessageRef:
    """Where a firing message landed in Slack, so resolutions and repeats can find it."""

    channel: str
    ts: str


@dataclass(frozen=True, slots=True)
class FiredChange:
    """What a change alert fired against: its base, and the count that had moved from it.

    A change alert that resolves on recovery is judged against this base, not against
    the sliding window, until it resolves; so it is persisted with the alert.
    """

    base: int
    count: int


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """The persistable state of one alert instance (rule x series).

    The engine produces these; the store keeps them so a restart resumes where it stopped
    (a firing alert stays firing and is not announced again). `acked_by` (a Slack user
    id, or a name given to `watchdog ack`) and `acked_at` are set once someone
    acknowledged the firing episode.
    """

    rule: str
    series: str
    alert_id: str
    state: AlertState
    since: datetime
    last_count: int | None
    last_notified: datetime | None
    condition: str
    severity: Severity = Severity.WARNING
    escalation: int = 0
    """The `escalate` stages in force, as a bit set (bit i: stage i of the rule)."""
    acked_at: datetime | None = None
    acked_by: str | None = None
    flapping: Flapping | None = None
    changes: tuple[datetime, ...] = ()
    """Recent firings and resolutions of this rule x series, counted for flapping."""
    fired_change: FiredChange | None = None


@dataclass(frozen=True, slots=True)
class Flapping:
    """A flapping alert's hidden state: its real condition and since when it is steady.

    `pending_since` is when the real condition of a rule with `for` started holding.
    """

    since: datetime
    stable_since: datetime
    firing: bool
    pending_since: datetime | None = None
