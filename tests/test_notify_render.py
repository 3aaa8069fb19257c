"""Rendering notifications (Block Kit, text fallback, console): pure, so tables and properties."""

from __future__ import annotations

import dataclasses
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from watchdog.model import Notification, Severity, TransitionKind
from watchdog.notify import ConsoleNotifier
from watchdog.notify.render import (
    SPARK_GLYPHS,
    acknowledged_line,
    escape,
    format_count,
    render,
    render_fired_and_resolved,
    render_resolved_original,
    render_status,
    render_top_level,
    sparkline,
    who,
)

AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
NOTIFIED = [TransitionKind.FIRING, TransitionKind.REPEAT, TransitionKind.RESOLVED]


def note(**changes: Any) -> Notification:
    base = Notification(
        alert_id="al-1",
        kind=TransitionKind.FIRING,
        rule="high-load",
        series="workspace",
        severity=Severity.CRITICAL,
        at=AT,
        since=AT - timedelta(minutes=65),
        count=31,
        condition="count > 25",
        channel="#voice-oncall",
        recent=(3, 5, 9, 20, 31),
    )
    return dataclasses.replace(base, **changes)


def block_text(blocks: list[dict[str, Any]]) -> str:
    """All text in the blocks, as Slack would have to display it."""
    return json.dumps(blocks, ensure_ascii=False)


def mrkdwn_texts(blocks: list[dict[str, Any]]) -> list[str]:
    texts: list[str] = []
    for block in blocks:
        if "text" in block:
            texts.append(block["text"]["text"])
        texts.extend(f["text"] for f in block.get("fields", []))
        texts.extend(e["text"] for e in block.get("elements", []))
    return texts


@pytest.mark.parametrize("severity", list(Severity))
@pytest.mark.parametrize("kind", NOTIFIED)
def test_text_fallback_is_useful_alone(kind: TransitionKind, severity: Severity) -> None:
    """Every notified kind's text names severity, rule, series, count and condition."""
    notification = note(kind=kind, severity=severity)
    for message in (render(notification), render_top_level(notification)):
        text = message.text
        assert severity.value.upper() in text
        assert "high-load" in text
        assert "workspace" in text
        assert "31" in text
        assert "count &gt; 25" in text
        assert message.blocks


@pytest.mark.parametrize(
    ("severity", "emoji"),
    [(Severity.CRITICAL, "🔴"), (Severity.WARNING, "🟠"), (Severity.INFO, "🔵")],
)
def test_firing_card_header_has_emoji_verb_and_rule(severity: Severity, emoji: str) -> None:
    """The firing header reads '<emoji> FIRING: <rule>' so the preview says what broke."""
    message = render(note(severity=severity))
    header = message.blocks[0]
    assert header["type"] == "header"
    assert header["text"]["text"] == f"{emoji} FIRING: high-load"
    assert message.text.startswith(f"{emoji} FIRING [{severity.value.upper()}]")


@pytest.mark.parametrize(
    ("series", "title"),
    [("acme/support", "high-load · workspace acme"), ("support", "high-load")],
)
def test_card_headers_name_the_workspace_in_words(series: str, title: str) -> None:
    """The firing, resolved and fired-and-resolved cards of a `[[workspaces]]` series name
    its workspace in the header; a file without [[workspaces]] keeps the rule alone."""
    firing = note(series=series)
    resolved = note(series=series, kind=TransitionKind.RESOLVED)
    headers = [
        message.blocks[0]["text"]["text"]
        for message in (
            render(firing),
            render_resolved_original(resolved),
            render_fired_and_resolved(dataclasses.replace(resolved, fired_at=AT, fired_count=30)),
        )
    ]
    assert headers == [
        f"🔴 FIRING: {title}",
        f"✅ RESOLVED: {title}",
        f"✅ FIRED AND RESOLVED: {title}",
    ]


def test_firing_card_fields() -> None:
    """The firing card shows series, count, condition, how long it held and severity."""
    fields = mrkdwn_texts([render(note()).blocks[1]])
    assert fields == [
        "*Series*\nworkspace",
        "*Count now*\n31",
        "*Condition*\ncount &gt; 25",
        "*Holding for*\n1h 5m",
        "*Severity*\ncritical",
    ]


def test_firing_card_shows_sparkline_with_min_and_max() -> None:
    """The recent counts appear as a sparkline with their absolute min and max."""
    assert "`▁▂▃▅█`  min 3 · max 31" in block_text(render(note()).blocks)


def test_no_recent_counts_means_no_trend() -> None:
    """Without recent counts there is no empty sparkline section."""
    assert "Recent" not in block_text(render(note(recent=())).blocks)


def test_repeat_reply_says_still_firing_with_duration_and_count() -> None:
    """A repeat is a short thread reply: how long it has been firing and the count now."""
    message = render(note(kind=TransitionKind.REPEAT))
    assert message.blocks[0]["text"]["text"] == "🔁 Still firing for *1h 5m*, count now *31*"
    assert "▁▂▃▅█" in block_text(message.blocks)
    assert "still firing for 1h 5m, count now 31" in message.text


def test_resolved_reply_and_original_carry_reason_and_duration() -> None:
    """Resolution: the reply and the edited original both say why and after how long."""
    resolved = note(kind=TransitionKind.RESOLVED, count=18, reason="count 18 < 20")
    reply = render(resolved)
    original = render_resolved_original(resolved)
    assert "✅ Resolved after *1h 5m*, count now *18*" in reply.blocks[0]["text"]["text"]
    assert "count 18 &lt; 20" in reply.text
    assert original.blocks[0]["text"]["text"] == "✅ RESOLVED: high-load"
    fields = mrkdwn_texts([original.blocks[1]])
    assert "*Fired for*\n1h 5m" in fields
    assert "*Count now*\n18" in fields
    assert "*Resolved because*\ncount 18 &lt; 20" in fields
    assert "RESOLVED [CRITICAL] high-load on workspace after 1h 5m" in original.text


@pytest.mark.parametrize("reason", ["outside active hours", "rule removed from config"])
def test_resolved_reason_is_quoted(reason: str) -> None:
    """Reasons other than recovery (active hours, removed rule) are shown verbatim."""
    resolved = note(kind=TransitionKind.RESOLVED, reason=reason)
    assert reason in render(resolved).text
    assert reason in block_text(render_resolved_original(resolved).blocks)


def test_resolved_original_does_not_page() -> None:
    """Editing the original to resolved drops the mention: a resolution pages nobody."""
    resolved = note(kind=TransitionKind.RESOLVED, mention="<!subteam^S0123>")
    message = render_resolved_original(resolved)
    assert "subteam" not in message.text
    assert "subteam" not in block_text(message.blocks)


def test_top_level_repeat_is_a_full_card() -> None:
    """Without a thread, a repeat is a self-contained 'STILL FIRING' card."""
    message = render_top_level(note(kind=TransitionKind.REPEAT))
    assert message.blocks[0]["text"]["text"] == "🔴 STILL FIRING: high-load"


def fired_and_resolved_note(**changes: Any) -> Notification:
    """An episode folded before its firing card went out: fired 1h 5m ago with 31, now 4."""
    return note(
        kind=TransitionKind.RESOLVED,
        count=4,
        reason="count 4 <= 25",
        fired_at=AT - timedelta(minutes=60),
        fired_count=31,
        runbook="https://wiki/rb",
        **changes,
    )


def test_fired_and_resolved_is_one_self_contained_card() -> None:
    """Both ends of the episode on one card: counts, duration, reason, both times, runbook."""
    message = render_fired_and_resolved(fired_and_resolved_note())
    assert message.blocks[0]["text"]["text"] == "✅ FIRED AND RESOLVED: high-load"
    fields = mrkdwn_texts([message.blocks[1]])
    assert "*Count at firing*\n31" in fields
    assert "*Count now*\n4" in fields
    assert "*Lasted*\n1h 5m" in fields
    assert "*Resolved because*\ncount 4 &lt;= 25" in fields
    context = mrkdwn_texts([message.blocks[-1]])[0]
    assert context.startswith("fired <!date^1714561200^")
    assert "· resolved <!date^1714564800^" in context
    assert "<https://wiki/rb|open the runbook>" in block_text(message.blocks)
    assert message.text == (
        "✅ FIRED AND RESOLVED [CRITICAL] high-load on workspace: fired with count 31"
        " (count &gt; 25), resolved after 1h 5m with count 4 — count 4 &lt;= 25"
    )


def test_fired_and_resolved_goes_out_as_its_own_card_everywhere() -> None:
    """Bot (no thread to reply in) and webhook deliveries both show the one card."""
    folded = fired_and_resolved_note()
    assert render(folded) == render_fired_and_resolved(folded)
    assert render_top_level(folded) == render_fired_and_resolved(folded)


def test_fired_and_resolved_pages_nobody() -> None:
    """The alert is over: even a mention left on the notification is not shown."""
    message = render_fired_and_resolved(fired_and_resolved_note(mention="<!subteam^S0123>"))
    assert "subteam" not in message.text + block_text(message.blocks)


def test_console_fired_and_resolved() -> None:
    """The console labels the folded episode and shows when it fired."""
    stream = io.StringIO()
    ConsoleNotifier(stream).deliver(fired_and_resolved_note(), None)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "✅ FIRED AND RESOLVED  high-load · workspace  (critical)"
    assert lines[1] == "   fired with count 31, count now 4 after 1h 5m   was count > 25"
    assert "   fired at 2024-05-01 11:00:00 UTC" in lines


def test_no_data_renders_as_no_data_with_reason() -> None:
    """A missing count reads 'no data', and the poll failure reason is shown."""
    missing = note(
        rule="no-data", count=None, condition="no good poll for 2m", reason="API key rejected"
    )
    message = render(missing)
    assert "no data" in message.text
    assert "API key rejected" in message.text
    assert "*Count now*\nno data" in mrkdwn_texts(message.blocks)
    assert "*Reason*\nAPI key rejected" in mrkdwn_texts(message.blocks)
    assert "None" not in message.text + block_text(message.blocks)
    repeat = render(dataclasses.replace(missing, kind=TransitionKind.REPEAT))
    assert "count now *no data*" not in block_text(repeat.blocks)
    assert "*no data*" in block_text(repeat.blocks)


@pytest.mark.parametrize(
    ("count", "shown"), [(None, "no data"), (0, "0"), (31, "31"), (12345, "12,345")]
)
def test_format_count(count: int | None, shown: str) -> None:
    """Counts get thousands separators; None is 'no data'."""
    assert format_count(count) == shown


def test_mention_appears_unescaped_in_text_and_a_section() -> None:
    """The mention is a Slack control sequence: passed through so it actually pages."""
    message = render(note(mention="<!subteam^S0123>"))
    assert "<!subteam^S0123>" in message.text
    assert "Paging <!subteam^S0123>" in mrkdwn_texts(message.blocks)


def test_no_mention_no_paging_section() -> None:
    """Without a mention nothing pages."""
    message = render(note())
    assert "Paging" not in block_text(message.blocks)
    assert "<!" not in message.text


def test_runbook_is_a_link() -> None:
    """The runbook is a clickable link with its ampersands escaped the Slack way."""
    message = render(note(runbook="https://wiki.example/runbook?a=1&b=2"))
    assert "*Runbook*: <https://wiki.example/runbook?a=1&amp;b=2|open the runbook>" in mrkdwn_texts(
        message.blocks
    )


def test_user_strings_are_escaped() -> None:
    """Rule, series, condition and reason cannot inject links or mentions."""
    hostile = note(
        rule="a<b>&c",
        series="<!channel>",
        condition="count > 25 & rising",
        reason="<https://evil|click>",
        alert_id="<@U1>",
    )
    for message in (render(hostile), render_resolved_original(hostile)):
        everything = message.text + block_text(message.blocks)
        assert "a&lt;b&gt;&amp;c" in everything
        assert "&lt;!channel&gt;" in everything
        assert "count &gt; 25 &amp; rising" in everything
        assert "<!channel>" not in everything
        assert "<https://evil" not in everything
        assert "<@U1>" not in everything


def test_header_is_plain_text_and_not_escaped() -> None:
    """Headers are plain_text, which Slack does not parse, so they show the raw name."""
    assert render(note(rule="a<b")).blocks[0]["text"]["text"] == "🔴 FIRING: a<b"


def test_escape_handles_ampersand_first() -> None:
    """Escaping never double-escapes the entities it produces."""
    assert escape("<&>") == "&lt;&amp;&gt;"


def test_long_strings_respect_slack_limits() -> None:
    """Huge names and reasons are clipped so Slack does not reject the message."""
    huge = note(rule="r" * 5000, series="s" * 5000, condition="c" * 5000, reason="x" * 10000)
    for kind in NOTIFIED:
        for message in (render(dataclasses.replace(huge, kind=kind)), render_top_level(huge)):
            assert len(message.text) <= 3000
            for block in message.blocks:
                if block["type"] == "header":
                    assert len(block["text"]["text"]) <= 150
                for field in block.get("fields", []):
                    assert len(field["text"]) <= 2000
                assert len(block.get("fields", [])) <= 10
            assert all(len(t) <= 3000 for t in mrkdwn_texts(message.blocks))


def test_times_are_truthful_utc() -> None:
    """The firing card's time is `since` in UTC, also as the fallback of a <!date>."""
    context = render(note()).blocks[-1]["elements"][0]["text"]
    assert f"<!date^{int((AT - timedelta(minutes=65)).timestamp())}^" in context
    assert "|2024-05-01 10:55:00 UTC>" in context


@pytest.mark.parametrize("kind", [TransitionKind.PENDING, TransitionKind.CANCELLED])
def test_unnotified_kinds_are_refused(kind: TransitionKind) -> None:
    """Pending and cancelled transitions are audit-only and cannot be rendered."""
    with pytest.raises(ValueError, match="never notified"):
        render(note(kind=kind))


counts_lists = st.lists(st.integers(min_value=0, max_value=1_000_000), max_size=60)


@given(counts_lists)
def test_sparkline_one_known_glyph_per_count(counts: list[int]) -> None:
    """The sparkline has one bar per count and uses only the eight bar glyphs."""
    line = sparkline(counts)
    assert len(line) == len(counts)
    assert set(line) <= set(SPARK_GLYPHS)


@given(counts_lists.filter(lambda c: len(set(c)) > 1))
def test_sparkline_spans_the_full_scale(counts: list[int]) -> None:
    """The max count is drawn █ and the min ▁ whenever the series varies."""
    line = sparkline(counts)
    assert line[counts.index(max(counts))] == "█"
    assert line[counts.index(min(counts))] == "▁"


@given(counts_lists)
def test_sparkline_is_monotone(counts: list[int]) -> None:
    """A larger count never gets a lower bar than a smaller one."""
    line = sparkline(counts)
    for i, a in enumerate(counts):
        for j, b in enumerate(counts):
            if a > b:
                assert SPARK_GLYPHS.index(line[i]) >= SPARK_GLYPHS.index(line[j])


@given(st.integers(min_value=0, max_value=1000), st.integers(min_value=1, max_value=50))
def test_sparkline_flat_series_is_mid_height(value: int, length: int) -> None:
    """A series without variation is drawn consistently as mid-height bars."""
    assert sparkline([value] * length) == "▄" * length


def test_sparkline_empty() -> None:
    """No counts, no sparkline."""
    assert sparkline([]) == ""


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_console_block_is_compact_and_readable() -> None:
    """The console shows verb, rule, series, count, condition, sparkline and reason."""
    stream = io.StringIO()
    missing = note(count=None, reason="API key rejected", runbook="https://wiki/rb")
    assert ConsoleNotifier(stream).deliver(missing, None) is None
    lines = stream.getvalue().splitlines()
    assert lines[0] == "🔴 FIRING  high-load · workspace  (critical)"
    assert lines[1] == "   count no data   count > 25   holding 1h 5m"
    assert "   recent ▁▂▃▅█  min 3 · max 31" in lines
    assert "   reason API key rejected" in lines
    assert "   runbook https://wiki/rb" in lines
    assert lines[-1] == ""


def test_console_resolved_and_repeat() -> None:
    """Repeats and resolutions are labelled as such on the console."""
    stream = io.StringIO()
    console = ConsoleNotifier(stream)
    console.deliver(note(kind=TransitionKind.REPEAT), None)
    console.deliver(note(kind=TransitionKind.RESOLVED, count=18, reason="count 18 < 20"), None)
    text = stream.getvalue()
    assert "🔴 STILL FIRING  high-load · workspace" in text
    assert "✅ RESOLVED  high-load · workspace  (critical)" in text
    assert "count now 18 after 1h 5m" in text


def test_console_colour_only_on_a_tty(monkeypatch: pytest.MonkeyPatch) -> None:
    """ANSI escapes go to terminals only, and never when NO_COLOR is set."""
    monkeypatch.delenv("NO_COLOR", raising=False)
    plain, terminal = io.StringIO(), _Terminal()
    ConsoleNotifier(plain).deliver(note(), None)
    ConsoleNotifier(terminal).deliver(note(), None)
    assert "\033[" not in plain.getvalue()
    assert "\033[1;31m" in terminal.getvalue()
    monkeypatch.setenv("NO_COLOR", "1")
    quiet = _Terminal()
    ConsoleNotifier(quiet).deliver(note(), None)
    assert "\033[" not in quiet.getvalue()


def test_console_survives_a_non_utf8_stream() -> None:
    """A stream that cannot encode emoji still gets the block, with replacements."""
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="ascii")
    ConsoleNotifier(stream).deliver(note(), None)
    assert b"? FIRING  high-load" in raw.getvalue()


# -- the card's controls and annotations (Socket Mode) ------------------------------------


def actions(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [block for block in blocks if block["type"] == "actions"]


def test_firing_card_with_buttons_carries_acknowledge_and_silence() -> None:
    """With buttons: an `ack` button valued with the alert id and a `silence` select."""
    (block,) = actions(render(note(), buttons=True).blocks)
    assert block["block_id"] == "alert:al-1"
    ack, silence = block["elements"]
    assert (ack["type"], ack["action_id"], ack["value"]) == ("button", "ack", "al-1")
    assert (silence["type"], silence["action_id"]) == ("static_select", "silence")
    assert [option["value"] for option in silence["options"]] == ["1h", "4h", "24h"]


def test_cards_without_buttons_are_as_before() -> None:
    """Without Socket Mode (the default) no card has controls."""
    for kind in NOTIFIED:
        assert not actions(render(note(kind=kind)).blocks)
        assert not actions(render_top_level(note(kind=kind)).blocks)


def test_only_the_firing_card_carries_buttons() -> None:
    """Repeats, resolutions and fired-and-resolved cards never offer the controls."""
    for message in (
        render(note(kind=TransitionKind.REPEAT), buttons=True),
        render(note(kind=TransitionKind.RESOLVED), buttons=True),
        render_resolved_original(note(kind=TransitionKind.RESOLVED)),
        render(note(kind=TransitionKind.RESOLVED, fired_at=AT, fired_count=30), buttons=True),
    ):
        assert not actions(message.blocks)


def test_acknowledged_card_shows_who_and_drops_the_acknowledge_button() -> None:
    """The annotation edit: same card, `Acknowledged by <@U…>` and when; Silence remains."""
    line = acknowledged_line("U0ALICE", AT)
    annotated = note(kind=TransitionKind.ANNOTATION, annotations=(line,), acked_by="U0ALICE")
    message = render(annotated, buttons=True)
    assert message.blocks[0] == render(note()).blocks[0]  # the same FIRING header
    assert "Acknowledged by <@U0ALICE> <!date^1714564800^" in block_text(message.blocks)
    (block,) = actions(message.blocks)
    assert [e["action_id"] for e in block["elements"]] == ["silence"]


def test_resolution_edit_keeps_the_annotations() -> None:
    """The resolved card (edit, top level, fired-and-resolved) still says who acknowledged."""
    line = acknowledged_line("U0ALICE", AT)
    resolved = note(kind=TransitionKind.RESOLVED, annotations=(line,), acked_by="U0ALICE")
    for message in (
        render_resolved_original(resolved),
        render_top_level(resolved),
        render_fired_and_resolved(dataclasses.replace(resolved, fired_at=AT, fired_count=30)),
    ):
        assert line in block_text(message.blocks)


def test_who_mentions_slack_users_and_escapes_other_names() -> None:
    """A Slack user id becomes a mention; a CLI name is plain, escaped text."""
    assert who("U0ALICE") == "<@U0ALICE>"
    assert who("W0ENTERPRISE") == "<@W0ENTERPRISE>"
    assert who("alice") == "alice"
    assert who("<!channel>") == "&lt;!channel&gt;"


def test_status_lists_last_counts_and_firing_alerts() -> None:
    """`/watchdog status`: counts per series (no data shown as such), then firing alerts."""
    line = acknowledged_line("U0ALICE", AT)
    text = render_status(
        [("workspace", 31), ("support", None)], [note(annotations=(line,), acked_by="U0ALICE")]
    )
    assert "workspace *31* · support *no data*" in text
    assert "*high-load* on workspace: count 31 (count &gt; 25)" in text
    assert "`al-1`" in text
    assert line in text
    assert "*Firing*: nothing" in render_status([("workspace", 0)], [])


# -- the count against the plan's limit ------------------------------------------------


@pytest.mark.parametrize(
    ("count", "limit", "shown"),
    [
        (27, 30, "27 / 30 (90 %)"),
        (0, 30, "0 / 30 (0 %)"),
        (45, 30, "45 / 30 (150 %)"),
        (1, 8, "1 / 8 (13 %)"),  # 12.5 % rounds half up
        (1234, 2000, "1,234 / 2,000 (62 %)"),
        (None, 30, "no data"),
    ],
)
def test_a_count_is_shown_against_the_limit(count: int | None, limit: int, shown: str) -> None:
    """`27 / 30 (90 %)`: the one formatting of a count against the plan's limit."""
    assert format_count(count, limit) == shown


@pytest.mark.parametrize("kind", NOTIFIED)
def test_every_message_of_a_limited_count_shows_it_against_the_limit(
    kind: TransitionKind,
) -> None:
    """Cards, replies, top-level messages and their text all say `27 / 30 (90 %)`."""
    limited = note(kind=kind, count=27, limit=30)
    for message in (render(limited), render_top_level(limited)):
        assert "27 / 30 (90 %)" in message.text
        assert "27 / 30 (90 %)" in block_text(message.blocks)
    resolved = render_resolved_original(limited)
    assert "*Count now*\n27 / 30 (90 %)" in mrkdwn_texts(resolved.blocks)


def test_fired_and_resolved_shows_both_counts_against_the_limit() -> None:
    """The folded card's firing and closing counts are both shown against the limit."""
    message = render_fired_and_resolved(fired_and_resolved_note(limit=30))
    fields = mrkdwn_texts([message.blocks[1]])
    assert "*Count at firing*\n31 / 30 (103 %)" in fields
    assert "*Count now*\n4 / 30 (13 %)" in fields


def test_console_shows_the_count_against_the_limit() -> None:
    """The console block reads the same as Slack: `count 27 / 30 (90 %)`."""
    stream = io.StringIO()
    ConsoleNotifier(stream).deliver(note(count=27, limit=30), None)
    assert stream.getvalue().splitlines()[1].startswith("   count 27 / 30 (90 %)   count > 25")
