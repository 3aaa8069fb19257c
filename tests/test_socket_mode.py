"""Reading Socket Mode envelopes: which button or command a person used (pure)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from watchdog.notify.socket_mode import Command, Request, parse_request

URL = "https://hooks.slack.com/actions/T0/1/abc"


def press(*actions: dict[str, Any], user: str = "U0ALICE") -> dict[str, Any]:
    return {
        "type": "block_actions",
        "user": {"id": user},
        "response_url": URL,
        "actions": list(actions),
    }


@pytest.mark.parametrize(
    ("kind", "payload", "expected"),
    [
        pytest.param(
            "interactive",
            press({"action_id": "ack", "block_id": "alert:a1", "value": "a1"}),
            Request(Command.ACK, "U0ALICE", URL, alert_id="a1"),
            id="acknowledge button",
        ),
        pytest.param(
            "interactive",
            press(
                {
                    "action_id": "silence",
                    "block_id": "alert:a1",
                    "selected_option": {"value": "4h"},
                }
            ),
            Request(Command.SILENCE, "U0ALICE", URL, alert_id="a1", duration=timedelta(hours=4)),
            id="silence select",
        ),
        pytest.param(
            "interactive",
            press({"action_id": "silence", "block_id": "alert:a1", "value": "24h"}),
            Request(Command.SILENCE, "U0ALICE", URL, alert_id="a1", duration=timedelta(hours=24)),
            id="silence button",
        ),
        pytest.param(
            "interactive",
            press({"action_id": "silence", "block_id": "alert:a1", "value": "soon"}),
            None,
            id="silence without a duration",
        ),
        pytest.param(
            "interactive",
            press({"action_id": "silence", "block_id": "other", "value": "1h"}),
            None,
            id="silence without an alert",
        ),
        pytest.param(
            "interactive",
            press({"action_id": "something-else", "value": "x"}),
            None,
            id="another app's control",
        ),
        pytest.param(
            "slash_commands",
            {"command": "/watchdog", "text": " Status ", "user_id": "U0BOB", "response_url": URL},
            Request(Command.STATUS, "U0BOB", URL),
            id="/watchdog status",
        ),
        pytest.param(
            "slash_commands",
            {"command": "/watchdog", "text": "silences", "user_id": "U0BOB", "response_url": URL},
            Request(Command.SILENCES, "U0BOB", URL),
            id="/watchdog silences",
        ),
        pytest.param(
            "slash_commands",
            {"command": "/watchdog", "text": "help", "user_id": "U0BOB", "response_url": URL},
            Request(Command.USAGE, "U0BOB", URL),
            id="anything else: usage",
        ),
        pytest.param(
            "events_api", {"event": {"type": "app_mention"}}, None, id="events are not ours"
        ),
    ],
)
def test_parse_request(kind: str, payload: dict[str, Any], expected: Request | None) -> None:
    """Each envelope reads as the request it carries, or as none."""
    assert parse_request(kind, payload) == expected


def test_only_button_presses_need_a_responder() -> None:
    """Acknowledge and Silence change alerts; the slash commands only read."""
    assert [c for c in Command if Request(c, "U0").is_press] == [Command.ACK, Command.SILENCE]


def test_a_response_url_that_is_not_http_is_ignored() -> None:
    """Only an http(s) URL is ever answered to."""
    request = parse_request("slash_commands", {"text": "status", "response_url": "file:///x"})
    assert request is not None
    assert request.response_url is None
