"""PagerDuty and webhooks end to end: a real `watchdog run` against loopback fakes of
ElevenLabs, Slack, the PagerDuty Events API and a webhook receiver that verifies the
signature. Every wait is on an audit event or a fake's condition, never a sleep."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from dataclasses import asdict

import pytest

from tests.fakes.elevenlabs import FakeElevenLabs
from tests.fakes.pagerduty import FakePagerDuty, FakeWebhookReceiver
from tests.fakes.slack import FakeSlack
from tests.harness import Site, alert_of, rule

pytestmark = pytest.mark.slow

KEY = "R0UT1NGKEY0123456789abcdefABCDEF"
HOOK_SECRET = "whsec-sekret-7f3a91"
HIGH = rule("high", above=5, severity="critical")
BUSY = rule("busy", above=5, severity="warning")


@pytest.fixture
def pagerduty() -> Iterator[FakePagerDuty]:
    with FakePagerDuty() as fake:
        yield fake


def paging_site(
    site: Callable[..., Site],
    pagerduty: FakePagerDuty,
    rules: str,
    *,
    hook: FakeWebhookReceiver | None = None,
    hook_secret: str = HOOK_SECRET,
) -> Site:
    """A site whose rules page through the fake PagerDuty (and post to `hook`)."""
    head = f'[pagerduty]\nevents_url = "{pagerduty.events_url}"\n\n'
    if hook is not None:
        head += '[[webhooks]]\nname = "ops"\nurl_env = "OPS_HOOK_URL"\n'
        head += 'secret_env = "OPS_HOOK_SECRET"\n\n'
    s = site(head + rules)
    s.env["PAGERDUTY_ROUTING_KEY"] = KEY
    if hook is not None:
        s.env["OPS_HOOK_URL"] = hook.url
        s.env["OPS_HOOK_SECRET"] = hook_secret
    return s


def test_one_incident_per_episode_trigger_acknowledge_resolve(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack, pagerduty: FakePagerDuty
) -> None:
    """A critical alert triggers, `watchdog ack` acknowledges and the resolution resolves one
    incident under the alert id; the signed webhook gets each transition, verified; the
    routing key, webhook URL and secret are in no log line, Slack message or the state."""
    with FakeWebhookReceiver(HOOK_SECRET) as hook:
        s = paging_site(site, pagerduty, HIGH, hook=hook)
        with s.run() as daemon:
            api.set_count(9)
            firing = daemon.wait_for("alert.firing", rule="high")
            alert_id = firing["alert_id"]
            pagerduty.wait_for(1)
            assert s.cli("ack", alert_id, "--by", "alice").returncode == 0
            pagerduty.wait_for(2)
            api.set_count(1)
            daemon.wait_for("alert.resolved", rule="high")
            pagerduty.wait_for(3)
            hook.wait_for(3)
            slack.wait_for(2)
            daemon.stop()
        assert pagerduty.actions() == [
            ("trigger", alert_id),
            ("acknowledge", alert_id),
            ("resolve", alert_id),
        ]
        sent = daemon.find("notify.sent", channel="pagerduty")
        assert {e["notifier"] for e in sent} == {"pagerduty"}
        trigger = pagerduty.events[0]["payload"]
        assert (trigger["severity"], trigger["component"]) == ("critical", "high")
        assert [r.body["event"] for r in hook.accepted] == ["firing", "annotation", "resolved"]
        assert [r.body["state"] for r in hook.accepted] == ["firing", "firing", "resolved"]
        assert hook.accepted[1].body["acked_by"] == "alice"
        assert {r.body["alert_id"] for r in hook.accepted} == {alert_id}
        assert len({r.headers["idempotency-key"] for r in hook.accepted}) == 3
        assert hook.rejected == []
        assert alert_of(slack.top_level("#oncall")[0]) == alert_id
        secrets = (KEY, HOOK_SECRET, hook.url)
        state = b"".join(p.read_bytes() for p in s.state.iterdir() if p.is_file())
        said = daemon.output() + json.dumps([asdict(m) for m in slack.messages], default=str)
        for secret in secrets:
            assert secret not in said
            assert secret.encode() not in state


def test_outage_and_kill_9_still_one_trigger_and_one_resolve(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack, pagerduty: FakePagerDuty
) -> None:
    """PagerDuty down while the alert fires, the watchdog killed with SIGKILL, the alert
    resolved meanwhile: after the restart and PagerDuty's recovery, exactly one trigger and
    one resolve arrive, in order, under one dedup_key."""
    s = paging_site(site, pagerduty, HIGH)
    pagerduty.outage()
    with s.run() as daemon:
        api.set_count(9)
        alert_id = daemon.wait_for("alert.firing", rule="high")["alert_id"]
        daemon.wait_for("notify.retry", channel="pagerduty", count=2)
        daemon.send(signal.SIGKILL)
        daemon.wait()
    api.set_count(1)
    with s.run() as daemon:
        daemon.wait_for("alert.resolved", rule="high")
        daemon.wait_for("notify.retry", channel="pagerduty")
        pagerduty.outage(False)
        daemon.wait_for("notify.sent", channel="pagerduty", kind="resolved")
        daemon.stop()
    assert pagerduty.actions() == [("trigger", alert_id), ("resolve", alert_id)]


def test_warning_alerts_do_not_page(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack, pagerduty: FakePagerDuty
) -> None:
    """A warning alert fires and resolves in Slack; PagerDuty hears nothing of it."""
    s = paging_site(site, pagerduty, BUSY)
    with s.run() as daemon:
        api.set_count(9)
        daemon.wait_for("alert.firing", rule="busy")
        api.set_count(1)
        daemon.wait_for("alert.resolved", rule="busy")
        daemon.wait_for("notify.sent", kind="resolved")
        daemon.stop()
    assert pagerduty.requests == []
    assert daemon.find("notify.sent", channel="pagerduty") == []


def test_a_rejected_event_is_dead_lettered_and_shown_in_status(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack, pagerduty: FakePagerDuty
) -> None:
    """PagerDuty answering 400 dead-letters the event after one attempt with PagerDuty's
    message, which `watchdog status` shows; the Slack card goes out regardless."""
    s = paging_site(site, pagerduty, HIGH)
    pagerduty.fail_next([400])
    with s.run() as daemon:
        api.set_count(9)
        daemon.wait_for("notify.failed", channel="pagerduty")
        slack.wait_for(1)
        daemon.stop()
    (dead,) = s.status()["dead_letters"]
    assert dead["channel"] == "pagerduty"
    assert dead["attempts"] == 1
    assert "Event object is invalid" in dead["reason"]
    text = s.cli("status").stdout
    assert "Event object is invalid" in text


def test_a_wrong_signing_secret_is_caught_by_the_receiver(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack, pagerduty: FakePagerDuty
) -> None:
    """A watchdog signing with another secret than the receiver's: the receiver rejects the
    request (401), which the watchdog dead-letters instead of retrying for ever."""
    with FakeWebhookReceiver(HOOK_SECRET) as hook:
        s = paging_site(site, pagerduty, BUSY, hook=hook, hook_secret="a-stale-secret")
        with s.run() as daemon:
            api.set_count(9)
            daemon.wait_for("notify.failed", channel="webhook:ops")
            daemon.stop()
        assert hook.accepted == []
        assert len(hook.rejected) == 1


def test_check_lists_the_paging_rules_and_rejects_a_malformed_key(
    site: Callable[..., Site], pagerduty: FakePagerDuty
) -> None:
    """`watchdog check` names the rules that page and the webhooks; a routing key of the
    wrong shape is an error that does not quote it."""
    with FakeWebhookReceiver(HOOK_SECRET) as hook:
        s = paging_site(site, pagerduty, HIGH + BUSY, hook=hook)
        ok = s.cli("check", "--config", str(s.config))
        assert ok.returncode == 0, ok.stderr
        assert (
            "pages on critical (a rule's page overrides): high, no-data, watchdog-behind ->"
            in ok.stdout
        )
        assert "webhook ops: every rule at every severity; signed" in ok.stdout
        s.env["PAGERDUTY_ROUTING_KEY"] = "too-short-key"
        bad = s.cli("check", "--config", str(s.config))
        assert bad.returncode != 0
        assert "PAGERDUTY_ROUTING_KEY: must be the 32-character integration key" in bad.stderr
        assert "too-short-key" not in bad.stdout + bad.stderr


def test_notify_test_pagerduty_triggers_and_resolves_a_test_incident(
    site: Callable[..., Site], pagerduty: FakePagerDuty
) -> None:
    """`watchdog notify-test --pagerduty` triggers a test incident and resolves it."""
    s = paging_site(site, pagerduty, HIGH)
    result = s.cli("notify-test", "--config", str(s.config), "--pagerduty")
    assert result.returncode == 0, result.stderr
    ((trigger, key), (resolve, same)) = pagerduty.actions()
    assert (trigger, resolve, key) == ("trigger", "resolve", same)
    assert "TEST" in pagerduty.events[0]["payload"]["summary"]
    assert f"dedup_key: {key}" in result.stdout


def test_a_silence_holds_back_a_page_waiting_in_the_outbox_and_its_end_pages(
    site: Callable[..., Site], api: FakeElevenLabs, slack: FakeSlack, pagerduty: FakePagerDuty
) -> None:
    """A trigger waiting out a PagerDuty outage is held back once a silence covers the alert
    (the card went out before); expiring the silence while it still fires pages then."""
    s = paging_site(site, pagerduty, HIGH)
    pagerduty.outage()
    with s.run() as daemon:
        api.set_count(9)
        alert_id = daemon.wait_for("alert.firing", rule="high")["alert_id"]
        slack.wait_for(1)
        daemon.wait_for("notify.retry", channel="pagerduty")
        added = s.cli(
            "silence",
            "add",
            "--config",
            str(s.config),
            "--rule",
            "high",
            "--for",
            "1h",
            "--comment",
            "maintenance",
        )
        assert added.returncode == 0, added.stderr
        # Judged when the trigger's next retry comes (the backoff is capped at 20 s).
        daemon.wait_for("notify.suppressed", alert_id=alert_id, stage="delivery", timeout=45)
        pagerduty.outage(False)
        assert pagerduty.events == []
        expired = s.cli("silence", "expire", "--config", str(s.config), added.stdout.strip())
        assert expired.returncode == 0, expired.stderr
        daemon.wait_for("notify.released", alert_id=alert_id)
        pagerduty.wait_for(1)
        daemon.stop()
    assert pagerduty.actions() == [("trigger", alert_id)]
