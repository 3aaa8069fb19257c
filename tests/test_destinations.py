"""PagerDuty and outgoing webhooks as outbox destinations: the fan-out stage, the senders
against loopback fakes, and the outbox keeping the Slack card's state the card's own."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from tests.fakes.pagerduty import FakePagerDuty, FakeWebhookReceiver
from tests.test_delivery import FakeClock, ScriptedNotifier, drain, note
from watchdog.delivery import OutboxWorker
from watchdog.errors import ConfigError, NotifyError
from watchdog.model import Notification, Severity, TransitionKind
from watchdog.notify.destinations import PAGERDUTY, Router, fan_out, pagerduty_action
from watchdog.notify.pagerduty import PagerDutyNotifier, event
from watchdog.notify.webhook import WebhookNotifier, document
from watchdog.rules import Config, parse_config
from watchdog.store import Store

KEY = "R0UT1NGKEY0123456789abcdefABCDEF"
HOOK_SECRET = "whsec-test-5b1e0c"

RULES = """
[pagerduty]
[[webhooks]]
name = "ops"
url = "https://hooks.example.com/x"
[[webhooks]]
name = "crit"
url = "https://hooks.example.com/y"
severities = ["critical"]
rules = ["high"]
[[rules]]
name = "high"
kind = "threshold"
above = 5
severity = "critical"
[[rules]]
name = "busy"
kind = "threshold"
above = 3
[[rules]]
name = "quiet-critical"
kind = "threshold"
above = 9
severity = "critical"
page = false
[[rules]]
name = "paging-warning"
kind = "threshold"
above = 2
page = true
[[rules]]
name = "climbing"
kind = "threshold"
above = 3
escalate = { above = 8, severity = "critical" }
"""


@pytest.fixture(scope="module")
def config() -> Config:
    return parse_config(RULES)


def alert(rule: str, kind: TransitionKind, severity: Severity, **fields: object) -> Notification:
    return dataclasses.replace(note("a1", kind=kind), rule=rule, severity=severity, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("rule", "kind", "severity", "action"),
    [
        ("high", TransitionKind.FIRING, Severity.CRITICAL, "trigger"),
        ("high", TransitionKind.REPEAT, Severity.CRITICAL, None),
        ("high", TransitionKind.RESOLVED, Severity.CRITICAL, "resolve"),
        ("busy", TransitionKind.FIRING, Severity.WARNING, None),
        ("busy", TransitionKind.RESOLVED, Severity.WARNING, None),
        ("quiet-critical", TransitionKind.FIRING, Severity.CRITICAL, None),
        ("paging-warning", TransitionKind.FIRING, Severity.WARNING, "trigger"),
        ("climbing", TransitionKind.FIRING, Severity.WARNING, None),
        ("climbing", TransitionKind.ESCALATED, Severity.CRITICAL, "trigger"),
        ("climbing", TransitionKind.DEESCALATED, Severity.WARNING, None),
        ("climbing", TransitionKind.RESOLVED, Severity.WARNING, "resolve"),
    ],
)
def test_which_notifications_page(
    config: Config, rule: str, kind: TransitionKind, severity: Severity, action: str | None
) -> None:
    """Firing and escalation page at a paging severity (a rule's `page` overrides); a
    repeat never pages; an alert of a rule that can page resolves its incident."""
    assert pagerduty_action(alert(rule, kind, severity), config) == action


def test_an_acknowledgement_acknowledges_the_incident(config: Config) -> None:
    """The card edit an acknowledgement makes (an ANNOTATION with acked_by) acknowledges."""
    acked = alert("high", TransitionKind.ANNOTATION, Severity.CRITICAL, acked_by="U012AB3CD")
    assert pagerduty_action(acked, config) == "acknowledge"
    silenced = alert("high", TransitionKind.ANNOTATION, Severity.CRITICAL)
    assert pagerduty_action(silenced, config) is None


def test_fan_out_copies_a_notification_per_destination(config: Config) -> None:
    """A critical firing goes to PagerDuty and both webhooks; a warning only to the webhook
    that takes everything, and a notification of another rule skips `rules = ["high"]`."""
    critical = alert("high", TransitionKind.FIRING, Severity.CRITICAL)
    assert [n.channel for n in fan_out(critical, config)] == [
        "pagerduty",
        "webhook:ops",
        "webhook:crit",
    ]
    assert all(
        dataclasses.replace(n, channel="#alerts") == critical for n in fan_out(critical, config)
    )
    warning = alert("busy", TransitionKind.FIRING, Severity.WARNING)
    assert [n.channel for n in fan_out(warning, config)] == ["webhook:ops"]
    assert fan_out(warning, parse_config("")) == ()


def test_the_trigger_event_carries_the_alert() -> None:
    """dedup_key is the alert id; the payload has summary (clipped to 1024), source,
    mapped severity, timestamp, component, custom details, runbook link, client."""
    firing = dataclasses.replace(
        note("a1b2c3d4e5f6"),
        rule="r" * 64,
        series="support-agent",
        severity=Severity.CRITICAL,
        recent=(3, 9, 12),
        runbook="https://wiki.example.com/runbook",
        reason="x" * 2000,
    )
    body = event(firing, KEY)
    assert body["routing_key"] == KEY
    assert (body["event_action"], body["dedup_key"], body["client"]) == (
        "trigger",
        "a1b2c3d4e5f6",
        "watchdog",
    )
    payload = body["payload"]
    assert 0 < len(payload["summary"]) <= 1024
    assert payload["severity"] == "critical"
    assert payload["source"] == "watchdog: support-agent"
    assert payload["component"] == "r" * 64
    assert payload["timestamp"] == firing.at.isoformat()
    assert payload["custom_details"]["recent"] == [3, 9, 12]
    assert payload["custom_details"]["runbook"] == firing.runbook
    assert payload["custom_details"]["count"] == 12
    assert body["links"] == [{"href": firing.runbook, "text": "Runbook"}]
    resolved = event(dataclasses.replace(firing, kind=TransitionKind.RESOLVED), KEY)
    assert resolved == {
        "routing_key": KEY,
        "event_action": "resolve",
        "dedup_key": "a1b2c3d4e5f6",
        "client": "watchdog",
    }


@pytest.fixture
def pagerduty() -> Iterator[FakePagerDuty]:
    with FakePagerDuty() as fake:
        yield fake


def test_pagerduty_sender_retries_throttling_and_outages_and_gives_up_on_400(
    pagerduty: FakePagerDuty,
) -> None:
    """429 and 5xx are recoverable; 400 is permanent and says what PagerDuty said; the
    routing key appears in no error."""
    sender = PagerDutyNotifier(SecretStr(KEY), events_url=pagerduty.events_url)
    firing = dataclasses.replace(note("a1"), severity=Severity.CRITICAL, channel=PAGERDUTY)
    pagerduty.fail_next([429, 500, 400])
    errors = []
    for _ in range(3):
        with pytest.raises(NotifyError) as caught:
            sender.deliver(firing, None)
        errors.append(caught.value)
    assert [e.recoverable for e in errors] == [True, True, False]
    assert "Event object is invalid" in errors[2].reason
    assert all(KEY not in e.reason for e in errors)
    assert KEY not in repr(sender)
    sender.deliver(firing, None)
    assert pagerduty.actions() == [("trigger", "a1")]


@pytest.mark.parametrize(("series", "workspace"), [("acme/support", "acme"), ("support", None)])
def test_pagerduty_and_webhooks_name_the_workspace(
    pagerduty: FakePagerDuty, series: str, workspace: str | None
) -> None:
    """An alert of a `[[workspaces]]` workspace names it: the webhook document's
    `workspace`, PagerDuty's `group` and `custom_details.workspace`; the unnamed workspace
    of a file without [[workspaces]] is `workspace: null` and no PagerDuty group."""
    firing = dataclasses.replace(note("a1"), series=series, severity=Severity.CRITICAL)
    PagerDutyNotifier(SecretStr(KEY), events_url=pagerduty.events_url).deliver(firing, None)
    with FakeWebhookReceiver(None) as receiver:
        WebhookNotifier("ops", SecretStr(receiver.url)).deliver(firing, None)
        (received,) = receiver.accepted
    assert (received.body["series"], received.body["workspace"]) == (series, workspace)
    (sent,) = pagerduty.events
    assert sent["payload"]["source"] == f"watchdog: {series}"
    assert sent["payload"].get("group") == workspace
    assert sent["payload"]["custom_details"].get("workspace") == workspace


def test_webhook_signs_the_body_and_gives_up_on_4xx() -> None:
    """With a secret the receiver verifies the signature; the Idempotency-Key is the same on
    a retry; 5xx is retried, a 4xx (the receiver rejecting a bad signature) dead-letters."""
    firing = dataclasses.replace(note("a1"), channel="webhook:ops")
    with FakeWebhookReceiver(HOOK_SECRET) as receiver:
        good = WebhookNotifier("ops", SecretStr(receiver.url), secret=SecretStr(HOOK_SECRET))
        receiver.fail_next([503])
        with pytest.raises(NotifyError) as caught:
            good.deliver(firing, None)
        assert caught.value.recoverable
        good.deliver(firing, None)
        (received,) = receiver.accepted
        assert received.body == json.loads(json.dumps(document(firing)))
        assert received.body["version"] == 1
        assert (
            received.headers["idempotency-key"] == receiver.requests[0].headers["idempotency-key"]
        )
        assert received.headers["x-watchdog-timestamp"].isdigit()

        wrong = WebhookNotifier("ops", SecretStr(receiver.url), secret=SecretStr("not-the-secret"))
        with pytest.raises(NotifyError) as caught:
            wrong.deliver(firing, None)
        assert not caught.value.recoverable
        assert "401" in caught.value.reason
        assert len(receiver.rejected) == 1
        assert receiver.url not in caught.value.reason


def routed(
    store: Store, clock: FakeClock, card: ScriptedNotifier, paging: ScriptedNotifier | None = None
) -> OutboxWorker:
    senders = {} if paging is None else {PAGERDUTY: paging}
    return OutboxWorker(
        store, Router(card, senders), now=clock, sleep=clock.sleep, random=lambda: 0.5
    )


def test_other_destinations_leave_the_slack_cards_state_alone(tmp_path: Path) -> None:
    """A PagerDuty resolve delivered first does not drop the card's message ref (the card's
    resolution still edits it), and a PagerDuty trigger dead-lettered on its first attempt
    does not make the card's catch-up drop the card's resolution as never announced."""
    clock = FakeClock()
    card = ScriptedNotifier(clock)
    paging = ScriptedNotifier(clock, name="pagerduty")
    with Store.open(tmp_path / "watchdog.db") as store:
        firing = note("a1")
        store.apply(notifications=[firing])
        asyncio.run(drain(routed(store, clock, card, paging), clock))
        ref = store.message_ref("a1")
        assert ref is not None
        paging.script["a1"] = [NotifyError("pagerduty: HTTP 400: invalid", recoverable=False)]
        resolved = note("a1", kind=TransitionKind.RESOLVED)
        store.apply(
            notifications=[
                dataclasses.replace(firing, channel=PAGERDUTY),
                dataclasses.replace(resolved, channel=PAGERDUTY),
            ]
        )
        asyncio.run(drain(routed(store, clock, card, paging), clock))
        assert store.message_ref("a1") == ref
        store.apply(notifications=[resolved])
        asyncio.run(drain(routed(store, clock, card, paging), clock))
    assert [(c.note.kind, c.original) for c in card.calls] == [
        (TransitionKind.FIRING, None),
        (TransitionKind.RESOLVED, ref),
    ]
    assert [(c.note.kind, c.ok) for c in paging.calls] == [
        (TransitionKind.FIRING, False),
        (TransitionKind.RESOLVED, True),
    ]


def test_a_destination_without_a_sender_is_dead_lettered(tmp_path: Path) -> None:
    """An entry for a webhook removed from the config is dead-lettered, not retried forever."""
    clock = FakeClock()
    card = ScriptedNotifier(clock)
    with Store.open(tmp_path / "watchdog.db") as store:
        store.apply(notifications=[note("a1", channel="webhook:gone")])
        asyncio.run(drain(routed(store, clock, card), clock))
        (dead,) = store.dead_letters()
    assert "webhook:gone: not configured" in dead.reason
    assert card.calls == []


def test_the_readmes_verifier_accepts_a_signed_request_and_rejects_a_tampered_one() -> None:
    """The five-line verifier in the README, run as written, against a real request."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    snippet = readme.split("A receiver verifies it like this:\n\n```python\n", 1)[1]
    namespace: dict[str, Any] = {}
    exec(snippet.split("```", 1)[0], namespace)
    verified = namespace["verified"]
    with FakeWebhookReceiver(None) as receiver:
        sender = WebhookNotifier("ops", SecretStr(receiver.url), secret=SecretStr(HOOK_SECRET))
        sender.deliver(dataclasses.replace(note("a1"), channel="webhook:ops"), None)
    (received,) = receiver.accepted
    headers = {"X-Watchdog-Signature": received.headers["x-watchdog-signature"]}
    assert verified(HOOK_SECRET.encode(), received.raw, headers)
    assert not verified(HOOK_SECRET.encode(), received.raw.replace(b"a1", b"a2"), headers)
    assert not verified(b"another secret", received.raw, headers)


def test_an_alert_released_from_a_silence_pages_then(config: Config) -> None:
    """An alert announced when its silence ended pages, even as a reply to a card already
    out (a REPEAT): its page was held back; a plain repeat never pages."""
    repeat = alert("high", TransitionKind.REPEAT, Severity.CRITICAL)
    assert [n.channel for n in fan_out(repeat, config)] == ["webhook:ops", "webhook:crit"]
    released = fan_out(repeat, config, released=True)
    assert [(n.channel, n.kind) for n in released] == [
        ("pagerduty", TransitionKind.FIRING),
        ("webhook:ops", TransitionKind.REPEAT),
        ("webhook:crit", TransitionKind.REPEAT),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[[webhooks]]\nname = "a"\nurl = "https://x.example/1"\nrules = ["nope"]\n',
            "<rules>: webhooks[0] (a).rules: 'nope' is not a rule of this file",
        ),
        (
            '[[webhooks]]\nname = "a"\nurl = "https://x.example/1"\n'
            '[[webhooks]]\nname = "a"\nurl = "https://x.example/2"\n',
            "<rules>: webhooks[1] (a).name: duplicate webhook name",
        ),
        (
            '[[webhooks]]\nname = "a"\nurl = "hooks.example/s3cr3t-token"\n',
            "<rules>: webhooks[0].url: must be an http(s):// URL",
        ),
        (
            '[pagerduty]\nseverities = ["urgent"]\n',
            "<rules>: pagerduty.severities[0]: ",
        ),
        (
            '[[rules]]\nname = "r"\nkind = "threshold"\nabove = 1\npage = "yes"\n',
            "<rules>: rules[0] (r).page: ",
        ),
    ],
)
def test_bad_destination_config_is_one_clear_line(text: str, message: str) -> None:
    """Config problems of [pagerduty], [[webhooks]] and `page` name the key, never a URL."""
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    (problem,) = caught.value.problems
    assert problem.startswith(message)
    assert "s3cr3t" not in problem
