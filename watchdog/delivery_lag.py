"""How long sent notifications waited in the outbox: the last one and the worst of the hour.

The delivery lag of a notification is the time from when it was queued (its transition)
to when Slack accepted it. The outbox worker records each one here and keeps the record
in the store, so `watchdog status`, a separate process, can say how far behind delivery
has been without asking the daemon. Per-minute maxima keep the record small (at most 60
numbers) however many notifications go out.

Pure values: the caller passes the time in.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

__all__ = ["META_KEY", "WINDOW", "DeliveryLag"]

META_KEY: Final = "delivery_lag"
"""Where the record lives in the store's meta table."""

WINDOW: Final = timedelta(hours=1)
"""How far back `DeliveryLag.worst` looks."""

_MINUTE: Final = 60


@dataclass(frozen=True, slots=True)
class DeliveryLag:
    """The last lag (seconds, and when that notification was sent) and per-minute maxima."""

    last: float | None = None
    last_at: datetime | None = None
    minutes: tuple[tuple[int, float], ...] = field(default=())
    """(minute number since the epoch, the largest lag sent in that minute), oldest first."""

    def observe(self, lag: float, at: datetime) -> DeliveryLag:
        """The record after a notification that waited `lag` seconds was sent at `at`."""
        lag = max(0.0, lag)
        minute = int(at.timestamp()) // _MINUTE
        oldest_kept = minute - int(WINDOW.total_seconds()) // _MINUTE
        kept = {m: v for m, v in self.minutes if m > oldest_kept}
        kept[minute] = max(lag, kept.get(minute, 0.0))
        return DeliveryLag(last=lag, last_at=at, minutes=tuple(sorted(kept.items())))

    def worst(self, now: datetime) -> float | None:
        """The largest lag sent within `WINDOW` before `now` (to the minute); None if none."""
        first = (int(now.timestamp()) - int(WINDOW.total_seconds())) // _MINUTE
        recent = [lag for minute, lag in self.minutes if minute > first]
        return max(recent) if recent else None

    def to_json(self) -> str:
        return json.dumps(
            {
                "last": self.last,
                "last_at": None if self.last_at is None else self.last_at.isoformat(),
                "minutes": [list(item) for item in self.minutes],
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | None) -> DeliveryLag:
        """The stored record; an absent or unreadable one is an empty record.

        It is a statistic, not state: a damaged value must not stop delivery or `status`.
        """
        if not text:
            return cls()
        try:
            data = json.loads(text)
            last = None if data["last"] is None else float(data["last"])
            last_at = None if data["last_at"] is None else datetime.fromisoformat(data["last_at"])
            minutes = tuple((int(m), float(v)) for m, v in data["minutes"])
        except (TypeError, ValueError, KeyError):
            return cls()
        if last is not None and not math.isfinite(last):
            return cls()
        if last_at is not None and last_at.tzinfo is None:
            last_at = last_at.replace(tzinfo=UTC)
        return cls(last=last, last_at=last_at, minutes=minutes)
