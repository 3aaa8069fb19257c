"""Near-miss suggestions for problem messages: `unknown key 'recover_bellow': did you mean ...`.

A typo in a key, kind, scope, severity, time zone or environment variable is the most
common mistake in a configuration, and the fix is usually the closest valid word. One
place decides what counts as close, so every message suggests in the same way.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Any

CUTOFF = 0.6
"""difflib's default similarity: 'suport' finds 'support', 'colour' finds nothing."""


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate most like `word` (ignoring case), or None if none is close enough."""
    by_folded: dict[str, str] = {}
    for candidate in candidates:
        by_folded.setdefault(candidate.casefold(), candidate)
    found = difflib.get_close_matches(word.casefold(), by_folded, n=1, cutoff=CUTOFF)
    return by_folded[found[0]] if found else None


def did_you_mean(word: str, candidates: Iterable[str], *, quote: bool = True) -> str:
    """`: did you mean 'x'?` to append to a message, or "" when nothing is close."""
    found = closest(word, candidates)
    if found is None or found == word:
        return ""
    return f": did you mean {found!r}?" if quote else f": did you mean {found}?"


def expected_choice(error: Mapping[str, Any]) -> str:
    """For a pydantic enum or literal error ("Input should be 'info', 'warning' or ..."),
    the suggestion among the expected words; "" for any other error."""
    given = error.get("input")
    expected = error.get("ctx", {}).get("expected")
    if error.get("type") not in ("enum", "literal_error") or not isinstance(given, str):
        return ""
    if not isinstance(expected, str):
        return ""
    return did_you_mean(given, re.findall(r"'([^']*)'", expected))
