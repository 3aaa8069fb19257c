"""Run the real `watchdog` as a child process and await what it logs.

Tests about processes (signals, kill -9, restarts, systemd) use this: the daemon's audit
log is JSON lines on stdout, read by a thread into `events`; tests wait for an event with
`wait_for` (a Condition, no sleep loops).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

API_KEY = "sk_test_9f8e7d6c5b4a39281706f5e4d3c2b1a0"
SLACK_TOKEN = "xoxb-1234567890-0987654321-TestTokenValue42"
ROOT = Path(__file__).resolve().parent.parent


def write_rules(
    path: Path,
    body: str,
    *,
    poll_interval: str = "200ms",
    stale_after: str = "2s",
    repeat: str = "0s",
    channel: str = "#oncall",
    agents: Iterable[tuple[str, str]] = (),
) -> Path:
    """A rules file with a fast [watchdog] section and the given rules."""
    lines = [
        "[watchdog]",
        f'poll_interval = "{poll_interval}"',
        f'stale_after = "{stale_after}"',
        f'repeat = "{repeat}"',
        'timeout = "1s"',
        "",
        "[slack]",
        f'channel = "{channel}"',
        "",
    ]
    for name, agent_id in agents:
        lines += ["[[agents]]", f'name = "{name}"', f'id = "{agent_id}"', ""]
    path.write_text("\n".join(lines) + "\n" + body, encoding="utf-8")
    return path


class DaemonProcess:
    """One `python -m watchdog ...` child with its stdout parsed as audit events."""

    def __init__(self, args: list[str], env: Mapping[str, str]) -> None:
        self.args = args
        self.env = dict(env)
        self.events: list[dict[str, Any]] = []
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self._cond = threading.Condition()
        self.proc: subprocess.Popen[str] | None = None
        self._threads: list[threading.Thread] = []

    def start(self) -> DaemonProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "watchdog", *self.args],
            env=self.env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for stream, sink in (
            (self.proc.stdout, self.stdout_lines),
            (self.proc.stderr, self.stderr_lines),
        ):
            thread = threading.Thread(target=self._read, args=(stream, sink), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _read(self, stream: Any, sink: list[str]) -> None:
        for line in stream:
            with self._cond:
                sink.append(line)
                if sink is self.stdout_lines:
                    try:
                        event = json.loads(line)
                    except ValueError:
                        event = None
                    if isinstance(event, dict):
                        self.events.append(event)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def find(self, event: str, **match: Any) -> list[dict[str, Any]]:
        with self._cond:
            return [
                e
                for e in self.events
                if e.get("event") == event and all(e.get(k) == v for k, v in match.items())
            ]

    def wait_for(
        self, event: str, timeout: float = 15.0, count: int = 1, **match: Any
    ) -> dict[str, Any]:
        """Block until `count` events named `event` (with matching fields) were logged."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [
                    e
                    for e in self.events
                    if e.get("event") == event and all(e.get(k) == v for k, v in match.items())
                ]
                if len(found) >= count:
                    return found[count - 1]
                if (
                    self.proc is not None
                    and self.proc.poll() is not None
                    and not any(t.is_alive() for t in self._threads)
                ):
                    raise AssertionError(
                        f"watchdog exited ({self.proc.returncode}) before {event} {match}:\n"
                        + self.output()
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {event} {match} within {timeout}s:\n" + self.output())
                self._cond.wait(left)

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("condition not met in time:\n" + self.output())
                self._cond.wait(min(left, 0.05))

    def send(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, like a power cut for the process."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)
        self._join()

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self._join()
        return code

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout=timeout)
        self._join()
        return code

    def _join(self) -> None:
        for thread in self._threads:
            thread.join(timeout=5)

    def output(self) -> str:
        with self._cond:
            return (
                "".join(self.stdout_lines[-60:])
                + "--- stderr ---\n"
                + "".join(self.stderr_lines[-60:])
            )

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *_: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._join()


def base_env(state_dir: Path, **extra: str) -> dict[str, str]:
    """A clean environment for the child: no inherited secrets or systemd variables."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(state_dir.parent),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "WATCHDOG_STATE_DIR": str(state_dir),
        "WATCHDOG_LOG_LEVEL": "debug",
    }
    env.update(extra)
    return env


def daemon_env(
    state_dir: Path, *, api_url: str, slack_api_url: str | None = None, **extra: str
) -> dict[str, str]:
    """Environment for `watchdog run` against the loopback fakes (bot mode if Slack given)."""
    env = base_env(state_dir, ELEVENLABS_API_KEY=API_KEY, ELEVENLABS_BASE_URL=api_url, **extra)
    if slack_api_url is not None:
        env["SLACK_BOT_TOKEN"] = SLACK_TOKEN
        env["SLACK_API_URL"] = slack_api_url
    return env


# -- shared by the process-level tests ----------------------------------------------

_ALERT_ID = re.compile(r"alert `([0-9a-f]{12})`")


def rule(name: str, kind: str = "threshold", **fields: object) -> str:
    """One `[[rules]]` table; a trailing underscore is dropped from keys (`for_` -> `for`)."""
    lines = ["[[rules]]", f"name = {json.dumps(name)}", f"kind = {json.dumps(kind)}"]
    lines += [f"{key.rstrip('_')} = {json.dumps(value)}" for key, value in fields.items()]
    return "\n".join(lines) + "\n\n"


@dataclass(frozen=True)
class Site:
    """One test's rules file, state directory and daemon environment, shared by restarts."""

    config: Path
    state: Path
    env: dict[str, str]
    options: dict[str, Any]

    @contextmanager
    def run(self) -> Iterator[DaemonProcess]:
        """`watchdog run`, awaited until its loop started; killed on the way out if alive."""
        with DaemonProcess(["run", "--config", str(self.config)], self.env).start() as daemon:
            daemon.wait_for("daemon.started")
            yield daemon

    def rewrite(self, body: str) -> None:
        """Replace the rules (same `[watchdog]` options), e.g. before a SIGHUP."""
        write_rules(self.config, body, **self.options)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run another `watchdog` command against the same settings and state."""
        return subprocess.run(
            [sys.executable, "-m", "watchdog", *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def status(self) -> dict[str, Any]:
        """`watchdog status --json`, parsed."""
        result = self.cli("status", "--json")
        assert result.returncode == 0, result.stderr
        report: dict[str, Any] = json.loads(result.stdout)
        return report


def at(event: dict[str, Any]) -> datetime:
    """When the daemon logged `event`."""
    return datetime.fromisoformat(event["timestamp"])


def alert_of(call: Any) -> str | None:
    """The alert id a firing card (or its resolved edit) names in its context block."""
    match = _ALERT_ID.search(json.dumps(call.blocks, ensure_ascii=False))
    return match.group(1) if match else None


def without_file_privileges(argv: list[str]) -> list[str]:
    """`argv` run so that file modes bind it, as they bind the service's own user.

    Root reads and writes whatever a file's mode says (CAP_DAC_OVERRIDE), and CI runs as
    root: there the child keeps uid 0 but starts without that capability (`setpriv` from
    util-linux), so a mode-0 file or a 0500 directory is refused to it as to anyone else.
    Not a switch to `nobody`: the child must still read the checkout and the virtualenv,
    wherever they are. For any other user the modes already apply and `argv` is returned.
    """
    if os.geteuid() != 0:
        return argv
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *argv]
