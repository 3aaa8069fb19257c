"""Silences and mute windows: which notifications are held back, and when their news is due.

A **silence** is made by a person (`watchdog silence add`, or the Slack card's Silence
button): one rule (or "*" for all) on one series, one workspace's or all, from `starts`
until `ends`.
A **mute** is a recurring window in the rules file (`[[mute]]`, `watchdog.rules.MuteWindow`).
Either one *covers* an alert while it is in force for the alert's rule and series, and
so does an *inhibition* (`watchdog.inhibition`): a rule named in the alert's rule's
`inhibited_by` firing on its series or the workspace. All three are held and released
alike.

What covering means (pure decisions, made by `decide` and `reconcile`; the daemon applies
them and logs each as `notify.suppressed` or `notify.released`):

* Rules are still evaluated and every transition is stored and audited; only Slack is
  kept quiet. A covered FIRING or "still firing" REPEAT is not sent. The alert's news is
  then *held* (`Held`): it remembers whether a card of the alert is already in Slack.
* When the cover ends (a silence runs out or is expired, a mute window closes) and the
  alert still fires, the news is *released*: a new card if none was ever posted, or a
  threaded reply with the mention when the card existed before the silence. So a silence
  never hides an alert that outlived it. An alert firing with its card out when a silence
  starts to cover it is held too, so that its end is announced.
* An alert that fired and resolved inside the cover posts nothing: its resolution is not
  sent either, since no card announced it (`never_announced`).
* The resolution of an alert whose card *is* in Slack is sent even while covered: it
  edits that card to resolved and pages nobody, and a card left saying FIRING for the
  length of a silence would mislead more than it quiets.
* A REPEAT of an alert whose news is held but no longer covered is not sent either
  (`release_pending`): the release, due within a second, says it, with the mention.

Time is an argument everywhere: nothing here reads the clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from watchdog.durations import format_duration
from watchdog.inhibition import NO_INHIBITIONS, Inhibitions
from watchdog.model import (
    AlertRecord,
    AlertState,
    Notification,
    TransitionKind,
    covers_series,
)

__all__ = [
    "ALL_RULES",
    "Cover",
    "Decision",
    "Held",
    "Mute",
    "Reason",
    "Reconciled",
    "Silence",
    "cover",
    "decide",
    "reconcile",
]

ALL_RULES = "*"
"""A silence's `rule` that covers every rule (the built-in ones too)."""


@dataclass(frozen=True, slots=True)
class Silence:
    """Quiet for `rule` ("*": all) on `scope` (None: every series) in [starts, ends).

    `scope` is one word as a `[[mute]]`'s scope takes it (`watchdog.model.covers_series`):
    a series, `<workspace>/*` (every series of that workspace) or `*`.

    `starts` and `ends` are aware UTC; `by` says who made it (`cli:alice`, a Slack user).
    """

    id: int
    rule: str
    scope: str | None
    starts: datetime
    ends: datetime
    by: str
    comment: str

    def active(self, at: datetime) -> bool:
        """In force at `at`: started, not yet ended."""
        return self.starts <= at < self.ends

    def describe(self, now: datetime) -> str:
        """One line for people: what, until when (and how long from `now`), who, why."""
        rule = "every rule" if self.rule == ALL_RULES else self.rule
        when = f"until {self.ends:%Y-%m-%d %H:%M:%S} UTC ({format_duration(self.ends - now)} left)"
        if self.starts > now:
            when = f"from {self.starts:%Y-%m-%d %H:%M:%S} UTC {when}"
        scope = self.scope or "every series"
        return f"#{self.id} {rule} on {scope} {when}, by {self.by}: {self.comment}"

    def covers(self, rule: str, series: str, at: datetime) -> bool:
        """Whether this silence holds back `rule`'s notifications on `series` at `at`."""
        return (
            self.rule in (ALL_RULES, rule)
            and (self.scope is None or covers_series([self.scope], series))
            and self.active(at)
        )


class Mute(Protocol):
    """A recurring window that covers some rules and series (`watchdog.rules.MuteWindow`)."""

    @property
    def name(self) -> str: ...

    def covers(self, rule: str, series: str, at: datetime) -> bool: ...


@dataclass(frozen=True, slots=True)
class Cover:
    """What holds an alert's notifications back: one silence, one mute or one inhibitor
    (the firing rule that inhibits it)."""

    silence: int | None = None
    mute: str | None = None
    inhibitor: str | None = None

    def __str__(self) -> str:
        if self.inhibitor is not None:
            return f"inhibition by {self.inhibitor}"
        return f"silence {self.silence}" if self.silence is not None else f"mute {self.mute}"

    def ended(self) -> str:
        """Why the news is released: `silence 3 ended`, `no-data resolved`."""
        if self.inhibitor is not None:
            return f"{self.inhibitor} resolved"
        return f"{self} ended"

    def fields(self) -> dict[str, int | str]:
        """The audit fields naming it: `silence` (the id), `mute` or `inhibited_by`."""
        if self.inhibitor is not None:
            return {"inhibited_by": self.inhibitor}
        return {"silence": self.silence} if self.silence is not None else {"mute": str(self.mute)}


def cover(
    rule: str,
    series: str,
    at: datetime,
    silences: Iterable[Silence],
    mutes: Iterable[Mute],
    inhibitions: Inhibitions = NO_INHIBITIONS,
) -> Cover | None:
    """The inhibitor, else the silence (the oldest first), else the mute covering `rule`
    on `series` at `at`."""
    if (inhibitor := inhibitions.inhibitor(rule, series)) is not None:
        return Cover(inhibitor=inhibitor)
    for silence in sorted(silences, key=lambda s: s.id):
        if silence.covers(rule, series, at):
            return Cover(silence=silence.id)
    for mute in mutes:
        if mute.covers(rule, series, at):
            return Cover(mute=mute.name)
    return None


@dataclass(frozen=True, slots=True)
class Held:
    """An alert whose news was held back by `cover`.

    `card` says whether a card of the alert is in Slack (or on its way): its release is
    then a threaded reply, else a new card.
    """

    alert_id: str
    rule: str
    series: str
    card: bool
    cover: Cover


class Reason(StrEnum):
    """Why a notification is sent or not; stable names, logged with the decision."""

    NOT_COVERED = "not_covered"
    SILENCED = "silenced"
    MUTED = "muted"
    INHIBITED = "inhibited"
    RESOLVES_CARD = "resolves_card"  # a resolution edits a card in Slack, covered or not
    NEVER_ANNOUNCED = "never_announced"  # a resolution of an alert no card announced
    RELEASE_PENDING = "release_pending"  # the release of its held news will say it
    EDITS_CARD = "edits_card"  # an annotation (acknowledged, silenced) edits a card in Slack
    NOT_AN_ALERT = "not_an_alert"  # the daily report: no silence or mute is about it


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether to send one notification, why, and what the held news becomes.

    `held` is the alert's held news after this decision (None: nothing held any more).
    """

    send: bool
    reason: Reason
    held: Held | None
    cover: Cover | None = None


def decide(
    note: Notification,
    at: datetime,
    *,
    silences: Sequence[Silence],
    mutes: Sequence[Mute],
    held: Held | None,
    inhibitions: Inhibitions = NO_INHIBITIONS,
) -> Decision:
    """Should `note` be sent at `at`? `held` is its alert's held news, if any.

    See the module docstring for the semantics.
    """
    if note.kind in (TransitionKind.REPORT, TransitionKind.GROUP):
        return Decision(True, Reason.NOT_AN_ALERT, None)
    if note.kind is TransitionKind.ANNOTATION:  # pages nobody: a silence does not hold it
        if held is not None and not held.card:
            return Decision(False, Reason.NEVER_ANNOUNCED, held, held.cover)
        return Decision(True, Reason.EDITS_CARD, held)
    found = cover(note.rule, note.series, at, silences, mutes, inhibitions)
    if note.kind is TransitionKind.RESOLVED:
        if held is not None and not held.card:
            return Decision(False, Reason.NEVER_ANNOUNCED, None, held.cover)
        if note.fired_and_resolved and found is not None:
            # Its firing card never went out: all of it happened out of sight.
            return Decision(False, _covered(found), None, found)
        reason = Reason.RESOLVES_CARD if found is not None else Reason.NOT_COVERED
        return Decision(True, reason, None)
    if found is None:
        if held is not None:
            return Decision(False, Reason.RELEASE_PENDING, held, held.cover)
        return Decision(True, Reason.NOT_COVERED, None)
    # Anything but a firing (a repeat, an escalation, flapping) speaks of a card in Slack.
    card = note.kind is not TransitionKind.FIRING and (held is None or held.card)
    return Decision(
        False, _covered(found), _held(note.alert_id, note.rule, note.series, card, found), found
    )


@dataclass(frozen=True, slots=True)
class Reconciled:
    """What one tick changes in the held news.

    `hold`: alerts now held (firing with their card out when a cover began, or held by
    another cover now). `release`: held alerts no longer covered that still fire, with
    their firing record; announce each. `forget`: held alerts that fire no more.
    """

    hold: tuple[Held, ...] = ()
    release: tuple[tuple[Held, AlertRecord], ...] = ()
    forget: tuple[str, ...] = field(default=())

    def __bool__(self) -> bool:
        return bool(self.hold or self.release or self.forget)


def reconcile(
    held: Mapping[str, Held],
    records: Iterable[AlertRecord],
    at: datetime,
    *,
    silences: Sequence[Silence],
    mutes: Sequence[Mute],
    inhibitions: Inhibitions = NO_INHIBITIONS,
) -> Reconciled:
    """Bring the held news up to date with the covers in force at `at`.

    `records` are the engine's alert instances; only firing ones matter.
    """
    firing = {r.alert_id: r for r in records if r.state is AlertState.FIRING}
    hold: list[Held] = []
    release: list[tuple[Held, AlertRecord]] = []
    forget = [alert_id for alert_id in held if alert_id not in firing]
    for alert_id, record in firing.items():
        found = cover(record.rule, record.series, at, silences, mutes, inhibitions)
        news = held.get(alert_id)
        if found is None:
            if news is not None:
                release.append((news, record))
            continue
        if news is None or news.cover != found:
            card = True if news is None else news.card
            hold.append(_held(alert_id, record.rule, record.series, card, found))
    return Reconciled(tuple(hold), tuple(release), tuple(forget))


def _held(alert_id: str, rule: str, series: str, card: bool, found: Cover) -> Held:
    return Held(alert_id=alert_id, rule=rule, series=series, card=card, cover=found)


def _covered(found: Cover) -> Reason:
    if found.inhibitor is not None:
        return Reason.INHIBITED
    return Reason.SILENCED if found.silence is not None else Reason.MUTED
