"""The one duration syntax of the watchdog: "500ms", "15s", "2m", "1h", "1d" (and "0s")."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


def parse_duration(text: str) -> timedelta:
    """Parse a duration; raise ValueError with a message fit for an operator."""
    if not isinstance(text, str):
        raise ValueError(f"expected a duration string like '15s', got {type(text).__name__}")
    match = _PATTERN.match(text)
    if match is None:
        raise ValueError(
            f"invalid duration {text!r}: use a number and ms, s, m, h or d, e.g. '15s'"
        )
    value = float(match.group(1)) * _UNITS[match.group(2)]
    if value > 366 * 86400:
        raise ValueError(f"duration {text!r} is longer than a year")
    return timedelta(seconds=value)


def format_duration(delta: timedelta) -> str:
    """Render a duration for humans, coarsest units first: '1h 5m', '45s', '250ms'."""
    total_ms = round(delta.total_seconds() * 1000)
    total_ms = max(total_ms, 0)
    if total_ms < 1000:
        return f"{total_ms}ms" if total_ms else "0s"
    seconds = total_ms // 1000
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return " ".join(parts[:2])
