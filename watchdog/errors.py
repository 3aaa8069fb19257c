"""The watchdog's exception tree; errors from libraries are translated at the boundary.

WatchdogError
├── ConfigError        bad settings or rules file; carries every problem found
├── StateError         the state directory or database cannot be used
├── SourceError        one failed poll of one series (reason + whether the key was rejected)
├── NotifyError        one failed delivery; `recoverable` decides retry versus dead letter
└── DaemonCrashed      a long-lived task of the daemon failed unexpectedly (exit 70)
"""

from __future__ import annotations

from enum import StrEnum


class WatchdogError(Exception):
    """Base of every error the watchdog raises on purpose."""


class ConfigError(WatchdogError):
    """The configuration is invalid; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class StateError(WatchdogError):
    """The state directory or database is unusable; the message names the path."""


class PollFailure(StrEnum):
    """Why a poll gave no sample; the no-data alert quotes it."""

    REJECTED_KEY = "rejected key"  # 401/403
    UNKNOWN_AGENT = "unknown agent"  # 422 / 404 for an agent query
    RATE_LIMITED = "rate limited"  # 429
    SERVER_ERROR = "server error"  # 5xx
    UNREACHABLE = "unreachable"  # connect errors, timeouts, resets
    BAD_RESPONSE = "bad response"  # non-JSON, wrong shape, wrong content type, bad count

    @property
    def immediate(self) -> bool:
        """Failures no retry can fix: no-data fires at once instead of after `stale_after`."""
        return self in (PollFailure.REJECTED_KEY, PollFailure.UNKNOWN_AGENT)


class SourceError(WatchdogError):
    """One poll of one series failed; never turned into a sample."""

    def __init__(
        self,
        series: str,
        failure: PollFailure,
        detail: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.series = series
        self.failure = failure
        self.detail = detail
        self.status = status
        self.retry_after = retry_after
        super().__init__(f"{series}: {failure.value}: {detail}")


class NotifyError(WatchdogError):
    """One delivery attempt failed; `recoverable` errors are retried, the rest dead-lettered.

    `in_doubt` says Slack may have accepted the post although no answer said so (the
    answer was lost, or the attempt ended before an earlier doubt could be cleared): the
    next attempt must look for the post before posting again.

    `slack_error` is Slack's own error code when Slack answered with one
    (`not_in_channel`, ...), and `needed_scope` the scope it named for `missing_scope`:
    `watchdog notify-test` turns them into what to do.
    """

    def __init__(
        self,
        reason: str,
        *,
        recoverable: bool,
        retry_after: float | None = None,
        in_doubt: bool = False,
        slack_error: str | None = None,
        needed_scope: str | None = None,
    ) -> None:
        self.reason = reason
        self.recoverable = recoverable
        self.retry_after = retry_after
        self.in_doubt = in_doubt
        self.slack_error = slack_error
        self.needed_scope = needed_scope
        super().__init__(reason)


class InputError(WatchdogError):
    """A file given on the command line (such as a replay CSV) is unusable."""


class DaemonCrashed(WatchdogError):
    """A long-lived task of the daemon failed unexpectedly; it was logged as `daemon.crashed`.

    The original exception is kept as `error` but never chained: its frames' locals may
    hold secrets, and the audit event already carries its type and message.
    """

    def __init__(self, task: str, error: Exception) -> None:
        self.task = task
        self.error = error
        super().__init__(f"task {task!r} crashed: {type(error).__name__}: {error}")


class SteppedDown(WatchdogError):
    """The leader lost its PostgreSQL lock (`leader.lost`) and stopped posting at once.

    The process exits with its own code so that systemd's `Restart=` starts it again, as a
    standby (see `watchdog.leadership`).
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"stepped down: {reason}")
