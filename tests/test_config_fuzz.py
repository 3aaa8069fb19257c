"""Config fuzzing: whatever the rules file holds, `check` answers; `run` never starts on a no.

Documents are generated structurally ([watchdog], [slack], [[agents]], [[rules]] with
known and random keys, values of every TOML type, unicode everywhere), serialised by the
small TOML writer below, and also as raw text and raw bytes. `watchdog check` runs
in-process (`watchdog.cli.main`) for speed: it must return an exit code and print a
message, never raise. A sample of rejected documents is handed to a real `watchdog run`,
which must exit non-zero at once without starting.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from collections.abc import Mapping
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, reject, settings
from hypothesis import strategies as st

from tests.harness import API_KEY, ROOT, SLACK_TOKEN, base_env
from watchdog.cli import main

# -- a small TOML writer -------------------------------------------------------------------

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else toml_string(key)


def toml_value(value: Any) -> str:
    """An inline TOML value (tables inline, arrays of anything)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"not a TOML value: {value!r}")


def _is_table_array(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def toml_document(doc: Mapping[str, Any]) -> str:
    """Top-level values first, then [tables] and [[arrays of tables]], as a person writes them."""
    lines = [
        f"{toml_key(k)} = {toml_value(v)}"
        for k, v in doc.items()
        if not isinstance(v, dict) and not _is_table_array(v)
    ]
    for key, value in doc.items():
        if isinstance(value, dict):
            lines += ["", f"[{toml_key(key)}]"]
            lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()]
        elif _is_table_array(value):
            for table in value:
                lines += ["", f"[[{toml_key(key)}]]"]
                lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


# -- strategies ----------------------------------------------------------------------------

unicode_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=24)
names = (
    st.sampled_from(
        ["busy", "workspace", "*", "no-data", "support", "a.b:c-d_1", "", " ", "Ünïcødé", "名前"]
    )
    | st.sampled_from(["acme", "acme/*", "acme/workspace", "acme/support", "beta/x", "/", "a/"])
    | unicode_text
)
durations = st.sampled_from(
    ["15s", "500ms", "0s", "1d", "2m", "99ms", "100ms", "1.5h", "367d", "-1s", "15", "1e3s", "٣s"]
) | st.from_regex(r"\A[0-9]{1,30}(\.[0-9]{1,20})?(ms|s|m|h|d)\Z")
counts = st.sampled_from([0, 1, 3, 25, 1_000_000, 1_000_001, -1]) | st.integers()
scalars = st.one_of(
    unicode_text,
    st.integers(),
    st.floats(),
    st.booleans(),
    st.datetimes(),
    st.datetimes(timezones=st.timezones()),
    st.dates(),
    st.times(),
    names,
    durations,
    counts,
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(unicode_text, inner, max_size=3),
    max_leaves=6,
)


def section(known: Mapping[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """A table whose keys are mostly known ones (with plausible or random values)."""
    key = st.sampled_from(sorted(known)) | unicode_text
    return st.dictionaries(key, values, max_size=2).flatmap(
        lambda extra: st.fixed_dictionaries(
            {}, optional={k: v | values for k, v in known.items()}
        ).map(lambda doc: {**extra, **doc})
    )


WATCHDOG_KEYS = {
    "poll_interval": durations,
    "stale_after": durations,
    "repeat": durations,
    "retention": durations,
    "timeout": durations,
    "concurrency": counts,
    "no_data_severity": st.sampled_from(["info", "warning", "critical", "CRITICAL", "fatal"]),
}
NO_DATA_KEYS = {
    "stale_after": durations,
    "severity": st.sampled_from(["info", "warning", "critical", "critcal"]),
    "channel": names,
    "mention": unicode_text,
    "runbook": unicode_text,
}
ACTIVE = st.fixed_dictionaries(
    {},
    optional={
        "days": st.sampled_from(["mon-fri", "sat,sun", "fri-mon", "mon", "", "monday"])
        | unicode_text,
        "hours": st.sampled_from(
            ["09:00-18:00", "22:00-06:00", "00:00-24:00", "9-5", "25:00-26:00"]
        )
        | unicode_text,
        "tz": st.sampled_from(["UTC", "Europe/Berlin", "Mars/Olympus", "", "../../etc/passwd"])
        | unicode_text,
    },
)
RULE_KEYS = {
    "name": names,
    "kind": st.sampled_from(["threshold", "change", "Threshold", "rate"]),
    "scope": names | st.lists(names, max_size=3),
    "above": counts,
    "below": counts,
    "recover_below": counts,
    "recover_above": counts,
    "for": durations,
    "severity": st.sampled_from(["info", "warning", "critical", "page"]),
    "channel": names,
    "mention": unicode_text,
    "runbook": unicode_text,
    "repeat": durations,
    "active": ACTIVE,
    "window": durations,
    "drop": counts,
    "rise": counts,
    "drop_pct": st.floats() | counts,
    "rise_pct": st.floats() | counts,
    "min_base": counts,
    "workspaces": st.lists(names, max_size=2),
}
AGENT_KEYS = {"name": names, "id": names}
WORKSPACE_KEYS = {
    "name": names,
    "api_key_env": st.sampled_from(["ACME_ELEVENLABS_API_KEY", "1X", "A B", ""]) | unicode_text,
    "base_url": st.sampled_from(["https://api.eu.residency.elevenlabs.io/", "ftp://x", "http://"])
    | unicode_text,
    "channel": names,
    "plan": section({"concurrency_limit": counts, "burst": st.booleans()}) | values,
    "agents": st.lists(section(AGENT_KEYS), max_size=2) | values,
}

documents = st.fixed_dictionaries(
    {},
    optional={
        "watchdog": section(WATCHDOG_KEYS) | values,
        "no_data": section(NO_DATA_KEYS) | values,
        "slack": section({"channel": names}) | values,
        "agents": st.lists(section(AGENT_KEYS), max_size=3) | values,
        "rules": st.lists(section(RULE_KEYS), max_size=4) | values,
        "workspaces": st.lists(section(WORKSPACE_KEYS), max_size=2) | values,
    },
).flatmap(
    lambda doc: st.dictionaries(unicode_text, values, max_size=2).map(
        lambda extra: {**extra, **doc}
    )
)
OVERRIDES = st.dictionaries(
    st.sampled_from(
        [
            "WATCHDOG_POLL_INTERVAL",
            "WATCHDOG_STALE_AFTER",
            "WATCHDOG_CONCURRENCY",
            "WATCHDOG_NO_DATA_SEVERITY",
        ]
    ),
    durations | st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\0")),
    max_size=2,
)

# -- checking one document -----------------------------------------------------------------

_ENV = (
    "ELEVENLABS_API_KEY",
    "ELEVENLABS_BASE_URL",
    "SLACK_BOT_TOKEN",
    "SLACK_WEBHOOK_URL",
    "SLACK_API_URL",
    "CREDENTIALS_DIRECTORY",
    "STATE_DIRECTORY",
    "WATCHDOG_CONFIG",
    "WATCHDOG_LOG_LEVEL",
    "WATCHDOG_METRICS_ADDR",
    "WATCHDOG_POLL_INTERVAL",
    "WATCHDOG_STALE_AFTER",
    "WATCHDOG_REPEAT",
    "WATCHDOG_RETENTION",
    "WATCHDOG_TIMEOUT",
    "WATCHDOG_CONCURRENCY",
    "WATCHDOG_NO_DATA_SEVERITY",
)


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean environment with a state directory; yields the rules file path to write."""
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WATCHDOG_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "rules.toml"


def check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run `watchdog check --config path` in-process; the exit code, stdout and stderr."""
    capsys.readouterr()
    code = main(["check", "--config", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


def assert_answers(path: Path, code: int, out: str, err: str) -> None:
    """An exit code and a message: `ok` on stdout, or problem lines naming where on stderr."""
    assert isinstance(code, int)
    assert code in (0, 1)
    assert "Traceback" not in out + err
    if code == 0:
        assert out.startswith(f"{path}: ok: ")
        assert err == ""
    else:
        assert err.strip()
        first = err.splitlines()[0]
        assert first.startswith((f"{path}:", "environment:")), first


FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(doc=documents, bot=st.booleans(), overrides=OVERRIDES)
@example(doc={}, bot=False, overrides={})
@example(doc={"rules": [{"name": "x", "kind": "threshold", "above": 1}]}, bot=True, overrides={})
@example(doc={"watchdog": 3}, bot=False, overrides={"WATCHDOG_POLL_INTERVAL": "1s"})
@example(
    doc={
        "workspaces": [
            {
                "name": "acme",
                "plan": {"concurrency_limit": 10},
                "agents": [{"name": "support", "id": "agent_s"}],
            },
            {"name": "beta", "channel": "#beta"},
        ],
        "rules": [
            {"name": "x", "kind": "threshold", "above": "80%", "scope": "acme/*"},
            {"name": "y", "kind": "threshold", "above": 1, "workspaces": ["beta"]},
        ],
    },
    bot=True,
    overrides={},
)
def test_check_answers_any_structured_document(
    workspace: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    doc: dict[str, Any],
    bot: bool,
    overrides: dict[str, str],
) -> None:
    """Any TOML document of any types and unicode names: `check` exits 0 or 1 with a
    message, never a traceback (bot mode and WATCHDOG_* overrides included)."""
    workspace.write_text(toml_document(doc), encoding="utf-8")
    with monkeypatch.context() as env:
        if bot:
            env.setenv("SLACK_BOT_TOKEN", SLACK_TOKEN)
        for name, value in overrides.items():
            env.setenv(name, value)
        code, out, err = check(workspace, capsys)
    assert_answers(workspace, code, out, err)
    assert SLACK_TOKEN not in out + err


@FUZZ
@given(text=st.text(max_size=400) | st.sampled_from(["[[rules]]\n", "rules = [", "\ufeff"]))
def test_check_answers_any_text(
    workspace: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    """Raw random text as the rules file (surrogates included): an answer, not a traceback."""
    workspace.write_bytes(text.encode("utf-8", "surrogatepass"))
    assert_answers(workspace, *check(workspace, capsys))


@settings(FUZZ, max_examples=100)
@given(data=st.binary(max_size=200))
def test_check_answers_any_bytes(
    workspace: Path, capsys: pytest.CaptureFixture[str], data: bytes
) -> None:
    """Raw bytes (mostly not UTF-8) as the rules file: an answer, not a traceback."""
    workspace.write_bytes(data)
    assert_answers(workspace, *check(workspace, capsys))


@pytest.mark.slow
@settings(FUZZ, max_examples=6)
@given(doc=documents)
def test_run_never_starts_on_a_rejected_document(
    workspace: Path, capsys: pytest.CaptureFixture[str], doc: dict[str, Any]
) -> None:
    """A document `check` rejects makes a real `watchdog run` exit non-zero at once,
    without starting the daemon, without a traceback and without printing the key."""
    workspace.write_text(toml_document(doc), encoding="utf-8")
    code, _, _ = check(workspace, capsys)
    if code == 0:
        reject()
    env = base_env(
        workspace.parent / "state",
        ELEVENLABS_API_KEY=API_KEY,
        ELEVENLABS_BASE_URL="http://127.0.0.1:9",
    )
    done = subprocess.run(
        [sys.executable, "-m", "watchdog", "run", "--config", str(workspace)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert done.returncode == 1
    assert "daemon.started" not in done.stdout
    assert "Traceback" not in done.stderr
    assert done.stderr.strip()
    assert API_KEY not in done.stdout + done.stderr


# -- what the fuzzer found (fixed since; kept as regressions) --------------------------------


@pytest.mark.parametrize("tz", ["Europe", "America/Argentina", "x" * 300])
def test_time_zone_that_is_no_file_is_a_problem_line(
    workspace: Path, capsys: pytest.CaptureFixture[str], tz: str
) -> None:
    """`active.tz` naming a tzdata directory or an over-long path is one problem line, exit 1
    (found by this fuzzer: it used to escape as IsADirectoryError / ENAMETOOLONG)."""
    workspace.write_text(
        toml_document(
            {"rules": [{"name": "r", "kind": "threshold", "above": 3, "active": {"tz": tz}}]}
        ),
        encoding="utf-8",
    )
    code, _, err = check(workspace, capsys)
    assert code == 1
    assert err.startswith(f"{workspace}: rules[0] (r).active.tz: ")


@pytest.mark.parametrize("item", [1, True, 2.5, ["workspace"], {"a": 1}])
def test_non_string_scope_item_is_a_problem_line(
    workspace: Path, capsys: pytest.CaptureFixture[str], item: object
) -> None:
    """A scope list with a non-string item is one problem line naming the rule, exit 1
    (found by this fuzzer: the location `...scope.list[str][1]` used to crash `_loc`)."""
    rule = {"name": "r", "kind": "threshold", "above": 3, "scope": ["workspace", item]}
    workspace.write_text(toml_document({"rules": [rule]}), encoding="utf-8")
    code, _, err = check(workspace, capsys)
    assert code == 1
    assert err.startswith(f"{workspace}: rules[0] (r).scope")
