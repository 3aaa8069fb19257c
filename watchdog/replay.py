"""Run rules over recorded counts, offline: the same engine as the daemon, no network.

Operators tune rules on real traffic (a CSV export or the state database's history)
before deploying them; what replay prints is what the daemon would have sent.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from watchdog.engine import Engine
from watchdog.errors import InputError
from watchdog.model import (
    NO_DATA_RULE,
    WORKSPACE,
    WORKSPACE_SEPARATOR,
    Sample,
    Transition,
    TransitionKind,
)
from watchdog.rules import Config
from watchdog.suggest import did_you_mean

_SHOWN = (
    TransitionKind.FIRING,
    TransitionKind.RESOLVED,
    TransitionKind.ESCALATED,
    TransitionKind.DEESCALATED,
    TransitionKind.FLAPPING,
)
_MAX_TICKS_PER_GAP = 10_000


def parse_timestamp(text: str) -> datetime:
    """ISO 8601 (naive means UTC) or epoch seconds, as an aware UTC datetime."""
    text = text.strip()
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except (ValueError, OverflowError, OSError):
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"invalid timestamp {text!r}: use ISO 8601 or epoch seconds") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def read_csv(path: Path, config: Config) -> list[Sample]:
    """Samples from `timestamp,count[,scope]` rows (a header row is optional), time-sorted."""
    known = {name for name, _ in config.series}
    samples: list[Sample] = []
    problems: list[str] = []
    try:
        # utf-8-sig: spreadsheet exports often start with a byte-order mark.
        with path.open(newline="", encoding="utf-8-sig") as handle:
            for line, row in enumerate(csv.reader(handle), start=1):
                if not row or all(not cell.strip() for cell in row) or row[0].startswith("#"):
                    continue
                if line == 1 and row[0].strip().lower() in ("timestamp", "time", "at"):
                    continue
                try:
                    samples.append(_row(row, known))
                except ValueError as exc:
                    problems.append(f"{path}:{line}: {exc}")
                    if len(problems) >= 20:
                        problems.append(f"{path}: (stopped after 20 problems)")
                        break
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except csv.Error as exc:
        raise InputError(f"{path}: not a CSV file: {exc}") from None
    if problems:
        raise InputError("\n".join(problems))
    if not samples:
        raise InputError(f"{path}: no samples (expected rows of timestamp,count[,scope])")
    samples.sort(key=lambda s: s.at)
    return samples


_NOT_A_SERIES = ": not 'workspace' or an agent of the config"


def _row(row: list[str], known: set[str]) -> Sample:
    if len(row) not in (2, 3):
        raise ValueError(f"expected timestamp,count[,scope], got {len(row)} columns")
    at = parse_timestamp(row[0])
    try:
        count = int(row[1].strip())
    except ValueError:
        raise ValueError(f"invalid count {row[1].strip()!r}: expected a whole number") from None
    if count < 0:
        raise ValueError(f"invalid count {count}: must be >= 0")
    series = row[2].strip() if len(row) == 3 and row[2].strip() else WORKSPACE
    if series not in known:
        hint = did_you_mean(series, sorted(known)) or _NOT_A_SERIES
        if WORKSPACE not in known and WORKSPACE_SEPARATOR not in series:
            example = next(iter(sorted(known)), "acme/workspace")
            hint = f": with [[workspaces]] name it as workspace/series, e.g. {example!r}"
        raise ValueError(f"unknown series {series!r}{hint}")
    return Sample(series=series, at=at, count=count)


def replay(config: Config, samples: Iterable[Sample]) -> Iterator[Transition]:
    """Yield the transitions the daemon would have announced: FIRING, RESOLVED, ESCALATED,
    DEESCALATED and FLAPPING (repeats are left out).

    Time advances as in the daemon: a tick every poll interval between samples (so
    no-data, leaving active hours and repeats happen when they would have), and at each
    sample. Series without any sample in the input are left out, so a CSV of one series
    does not raise no-data for every other series of the config.

    Recorded history holds good polls only, so a gap cannot tell a failing API from a
    watchdog that was not polling; replay reads a gap of a present series (two poll
    intervals without a sample) as failed polls, and shows the no-data page it may cost.
    """
    ordered = sorted(samples, key=lambda s: s.at)
    if not ordered:
        return
    present = {s.series for s in ordered}
    engine = Engine(config, started_at=ordered[0].at)
    step = max(config.watchdog.poll_interval, timedelta(seconds=1))
    last = ordered[0].at
    gaps = _Gaps(engine, step)
    for sample in ordered:
        ticks = []
        gap = sample.at - last
        if gap > step:
            stride = step * max(1, math.ceil(gap / step / _MAX_TICKS_PER_GAP))
            moment = last + stride
            while moment < sample.at:
                ticks.append(moment)
                moment += stride
        last = sample.at
        decided = [t for moment in ticks for t in gaps.failed(moment) + engine.tick(moment)]
        decided += gaps.failed(sample.at) + engine.tick(sample.at)
        decided += gaps.observe(sample)
        for transition in decided:
            if transition.kind not in _SHOWN:
                continue
            if transition.rule == NO_DATA_RULE and transition.series not in present:
                continue
            yield transition


class _Gaps:
    """Feeds the engine one failed poll per gap in a series' samples (see `replay`)."""

    def __init__(self, engine: Engine, step: timedelta) -> None:
        self._engine = engine
        self._missed_after = 2 * step
        self._last: dict[str, datetime] = {}
        self._in_gap: set[str] = set()

    def failed(self, moment: datetime) -> list[Transition]:
        out: list[Transition] = []
        for series, last in self._last.items():
            if series not in self._in_gap and moment - last >= self._missed_after:
                self._in_gap.add(series)
                out += self._engine.poll_failed(
                    series, moment, "no sample recorded", immediate=False
                )
        return out

    def observe(self, sample: Sample) -> list[Transition]:
        self._last[sample.series] = sample.at
        self._in_gap.discard(sample.series)
        return self._engine.observe(sample)


def as_json(t: Transition) -> dict[str, object]:
    """The `--json` line of one transition."""
    return {
        "at": t.at.isoformat(),
        "rule": t.rule,
        "scope": t.series,
        "state": t.kind.value,
        "count": t.count,
    }
