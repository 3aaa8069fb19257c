"""Outgoing webhooks: one signed JSON document per notified transition (`[[webhooks]]`).

The document's schema is versioned (`SCHEMA_VERSION`; a field is only ever added within
a version) and documented in the README. With a secret, each request carries
`X-Watchdog-Timestamp` (Unix seconds) and `X-Watchdog-Signature: sha256=<hex>`, the
HMAC-SHA256 of the body under the secret, so a receiver can verify it and reject stale
replays. `Idempotency-Key` is the notification's id (the alert id, kind and time), the
same on every retry, so a receiver can drop the rare duplicate: delivery is at least once.

Failures: 429, 5xx, timeouts and connection errors are recoverable (retried by the
outbox); any other 4xx is permanent (dead-lettered). The URL (it often embeds a token)
and the secret are `SecretStr`s and never appear in a message or log.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import httpx
from pydantic import SecretStr

from watchdog.errors import NotifyError
from watchdog.model import MessageRef, Notification, TransitionKind, workspace_of

__all__ = ["SCHEMA_VERSION", "WEBHOOK_TIMEOUT", "WebhookNotifier", "document", "signature"]

SCHEMA_VERSION = 1
WEBHOOK_TIMEOUT = 10.0


def notification_id(note: Notification) -> str:
    """A notification's stable id: the same for every attempt, distinct per transition."""
    return f"{note.alert_id}:{note.kind.value}:{int(note.at.timestamp() * 1000)}"


def document(note: Notification) -> dict[str, Any]:
    """The JSON document for `note` (pure); see the README for the schema."""
    resolved = note.kind is TransitionKind.RESOLVED
    return {
        "version": SCHEMA_VERSION,
        "id": notification_id(note),
        "event": note.kind.value,
        "alert_id": note.alert_id,
        "rule": note.rule,
        "series": note.series,
        "workspace": workspace_of(note.series) or None,
        "state": "resolved" if resolved else "firing",
        "severity": note.severity.value,
        "count": note.count,
        "condition": note.condition,
        "since": note.since.isoformat(),
        "at": note.at.isoformat(),
        "runbook": note.runbook,
        "recent": list(note.recent),
        "acked_by": note.acked_by,
        "silenced_by": list(note.silenced_by),
        "annotations": list(note.annotations),
        "reason": note.reason,
    }


def signature(secret: str, body: bytes) -> str:
    """The `X-Watchdog-Signature` value of `body`: `sha256=` and the hex HMAC-SHA256."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookNotifier:
    """POSTs each notification's document to one webhook; see the module docstring."""

    def __init__(
        self,
        name: str,
        url: SecretStr,
        *,
        secret: SecretStr | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = WEBHOOK_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = f"webhook:{name}"
        self._url = url
        self._secret = secret
        self._headers = dict(headers or {})
        self._timeout = timeout
        self._clock = clock

    @property
    def signed(self) -> bool:
        """Whether requests carry `X-Watchdog-Signature` (a secret is set)."""
        return self._secret is not None

    def __repr__(self) -> str:
        return f"WebhookNotifier(name={self.name!r}, url='**********')"

    def deliver(
        self,
        note: Notification,
        original: MessageRef | None,
        *,
        in_doubt_since: datetime | None = None,
    ) -> MessageRef | None:
        """POST `note`'s document once; a webhook cannot thread, so no ref comes back."""
        del original, in_doubt_since
        body = json.dumps(document(note), separators=(",", ":")).encode()
        headers = {
            **self._headers,
            "Content-Type": "application/json",
            "User-Agent": "watchdog",
            "Idempotency-Key": notification_id(note),
        }
        if self._secret is not None:
            timestamp = str(int(self._clock()))
            headers["X-Watchdog-Timestamp"] = timestamp
            headers["X-Watchdog-Signature"] = signature(self._secret.get_secret_value(), body)
        where = self.name
        try:
            response = httpx.post(
                self._url.get_secret_value(), content=body, headers=headers, timeout=self._timeout
            )
        except httpx.TimeoutException:
            raise NotifyError(f"{where}: timed out", recoverable=True, in_doubt=True) from None
        except httpx.HTTPError as exc:
            raise NotifyError(
                f"{where}: unreachable: {type(exc).__name__}", recoverable=True
            ) from None
        status = response.status_code
        if 200 <= status < 300:
            return None
        reason = f"{where}: HTTP {status}: {' '.join(response.text.split())[:200] or 'no body'}"
        for secret in (self._url, self._secret):
            if secret is not None and secret.get_secret_value():
                reason = reason.replace(secret.get_secret_value(), "**********")
        if status == 429 or status >= 500:
            raise NotifyError(reason, recoverable=True)
        raise NotifyError(reason, recoverable=False)
