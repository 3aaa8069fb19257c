"""Inhibition: an alert kept out of Slack while an alert that explains it fires.

A rule with `inhibited_by = ["conversations-collapsed"]` is *inhibited* on a series while
one of the named rules fires on that series or on its workspace's series (`workspace`, or
`acme/workspace` for `acme/support`): when every agent drops
because the workspace collapsed, the workspace's card says it once. Inhibition is one
more cover of the suppression stage (`watchdog.silences.Cover.inhibitor`), so it keeps
the same promises as a silence: the inhibited alerts are evaluated, stored and audited
(`alert.inhibited`) but not sent; one still firing when its inhibitor resolves is
announced then (a new card, `notify.released`); one that fired and resolved while
inhibited posts nothing.

The built-in default instance lives in the engine: while the workspace series itself has
no data, the agents' no-data alerts do not fire at all (`watchdog.engine`), one message
for one outage.

Pure: the firing alerts arrive as an argument.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from watchdog.model import AlertRecord, AlertState, workspace_series

__all__ = ["NO_INHIBITIONS", "Inhibitions", "inhibitions"]


@dataclass(frozen=True, slots=True)
class Inhibitions:
    """Which rules each rule is inhibited by, and which (rule, series) fire now."""

    inhibited_by: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    firing: frozenset[tuple[str, str]] = frozenset()

    def inhibitor(self, rule: str, series: str) -> str | None:
        """The first rule of `rule`'s `inhibited_by` firing on `series` or its workspace."""
        workspace = workspace_series(series)
        for name in self.inhibited_by.get(rule, ()):
            if (name, series) in self.firing or (name, workspace) in self.firing:
                return name
        return None


NO_INHIBITIONS = Inhibitions()
"""No rule inhibits another."""


def inhibitions(
    inhibited_by: Mapping[str, tuple[str, ...]], records: Iterable[AlertRecord]
) -> Inhibitions:
    """The inhibitions in force among the engine's alert instances `records`."""
    if not inhibited_by:
        return NO_INHIBITIONS
    inhibiting = {name for names in inhibited_by.values() for name in names}
    firing = frozenset(
        (r.rule, r.series) for r in records if r.state is AlertState.FIRING and r.rule in inhibiting
    )
    return Inhibitions(inhibited_by, firing)
