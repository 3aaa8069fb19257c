"""The PagerDuty sender: one Events API v2 event per outbox entry of the `pagerduty` queue.

One incident per alert episode: the `dedup_key` is the alert id, so a retry, or a
notification sent again after a crash, lands on the same incident (at least once,
deduplicated by PagerDuty through the dedup_key). FIRING and ESCALATED trigger (an
escalation with its new severity), an acknowledgement acknowledges, RESOLVED resolves;
which notifications reach this queue is decided by `watchdog.notify.destinations`.

Failures: 429, 5xx, timeouts and connection errors are recoverable (retried by the outbox);
any other answer (400: an invalid event or routing key) is permanent and carries
PagerDuty's message, so the dead letter says what was wrong. The routing key is a
`SecretStr`: it is only ever in the request body, never in a message, log or repr.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import httpx
from pydantic import SecretStr

from watchdog.errors import NotifyError
from watchdog.model import MessageRef, Notification, Severity, TransitionKind, workspace_of
from watchdog.notify.render import render_top_level

__all__ = ["PAGERDUTY_TIMEOUT", "PagerDutyNotifier", "event", "routing_key_problem"]

PAGERDUTY_TIMEOUT = 10.0
"""Seconds one event may take before it is abandoned (and retried)."""
SUMMARY_LIMIT = 1024
"""PagerDuty rejects an event whose `payload.summary` is longer."""
_ROUTING_KEY = re.compile(r"[A-Za-z0-9]{32}")
_SEVERITY = {Severity.CRITICAL: "critical", Severity.WARNING: "warning", Severity.INFO: "info"}
_ACTION = {
    TransitionKind.FIRING: "trigger",
    TransitionKind.ESCALATED: "trigger",
    TransitionKind.ANNOTATION: "acknowledge",
    TransitionKind.RESOLVED: "resolve",
}


def routing_key_problem(key: SecretStr) -> str | None:
    """Why `key` cannot be an integration (routing) key, or None: 32 letters and digits."""
    if _ROUTING_KEY.fullmatch(key.get_secret_value()):
        return None
    return "must be the 32-character integration key of an Events API v2 integration"


def event(note: Notification, routing_key: str) -> dict[str, Any]:
    """The Events API v2 body for `note` (pure); a trigger carries the alert's payload,
    and the workspace of a named one as `group` and in `custom_details`."""
    action = _ACTION.get(note.kind)
    if action is None:
        raise NotifyError(
            f"{note.kind.value} notifications never go to PagerDuty", recoverable=False
        )
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": note.alert_id,
        "client": "watchdog",
    }
    if action != "trigger":
        return body
    summary = render_top_level(note).text.splitlines()[0]
    details: dict[str, Any] = {
        "count": note.count,
        "condition": note.condition,
        "recent": list(note.recent),
        "since": note.since.isoformat(),
    }
    if note.runbook:
        details["runbook"] = note.runbook
        body["links"] = [{"href": note.runbook, "text": "Runbook"}]
    payload: dict[str, Any] = {
        "summary": summary[:SUMMARY_LIMIT],
        "source": f"watchdog: {note.series}",
        "severity": _SEVERITY[note.severity],
        "timestamp": note.at.isoformat(),
        "component": note.rule,
        "custom_details": details,
    }
    if workspace := workspace_of(note.series):
        # PagerDuty's `group` is the "logical grouping of components": the client's workspace.
        payload["group"] = details["workspace"] = workspace
    body["payload"] = payload
    return body


class PagerDutyNotifier:
    """Sends events to the Events API v2 (`events_url`); see the module docstring."""

    name: str = "pagerduty"

    def __init__(
        self, routing_key: SecretStr, *, events_url: str, timeout: float = PAGERDUTY_TIMEOUT
    ) -> None:
        self._key = routing_key
        self._url = events_url
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"PagerDutyNotifier(events_url={self._url!r})"

    def deliver(
        self,
        note: Notification,
        original: MessageRef | None,
        *,
        in_doubt_since: datetime | None = None,
    ) -> MessageRef | None:
        """Send `note`'s event once; PagerDuty threads by dedup_key, so no ref comes back."""
        del original, in_doubt_since
        body = json.dumps(event(note, self._key.get_secret_value())).encode()
        try:
            response = httpx.post(
                self._url,
                content=body,
                headers={"Content-Type": "application/json"},
                timeout=self._timeout,
            )
        except httpx.TimeoutException:
            raise NotifyError("pagerduty: timed out", recoverable=True, in_doubt=True) from None
        except httpx.HTTPError as exc:
            detail = type(exc).__name__
            raise NotifyError(f"pagerduty: unreachable: {detail}", recoverable=True) from None
        _check(response, self._key.get_secret_value())
        return None


def _check(response: httpx.Response, secret: str) -> None:
    """Raise the NotifyError an answer means; return for an accepted event (2xx)."""
    status = response.status_code
    if 200 <= status < 300:
        return
    reason = f"pagerduty: HTTP {status}: {_message(response)}".replace(secret, "**********")
    if status == 429 or status >= 500:
        raise NotifyError(reason, recoverable=True, retry_after=_retry_after(response))
    raise NotifyError(reason, recoverable=False)


def _message(response: httpx.Response) -> str:
    """PagerDuty's own words: `message` and `errors` of its JSON answer, else the body."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        parts = [str(data.get("message") or data.get("status") or "")]
        errors = data.get("errors")
        if isinstance(errors, list):
            parts += [str(e) for e in errors]
        text = "; ".join(p for p in parts if p)
    else:
        text = response.text
    return " ".join(text.split())[:300] or "no body"


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers.get("retry-after", ""))
    except ValueError:
        return None
