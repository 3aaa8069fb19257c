"""The store: schema, atomic ticks, outbox bookkeeping, and clear errors on bad files.

Tests taking `store` or `open_store` run against both backends (SQLite and PostgreSQL); the
ones about SQLite's file (`db_path`) or PostgreSQL's server are about that backend only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness import without_file_privileges
from tests.postgres import CommitCutter, PostgresServer
from watchdog.errors import StateError
from watchdog.model import (
    AlertRecord,
    AlertState,
    FiredChange,
    Flapping,
    MessageRef,
    Notification,
    Sample,
    Severity,
    TransitionKind,
)
from watchdog.silences import Cover, Held
from watchdog.store import _MIGRATIONS, SCHEMA_VERSION, Store
from watchdog.store_pg import SCHEMA_VERSION as PG_SCHEMA_VERSION

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def note(
    alert_id: str = "a1",
    *,
    channel: str = "#alerts",
    kind: TransitionKind = TransitionKind.FIRING,
    at: datetime = T0,
) -> Notification:
    return Notification(
        alert_id=alert_id,
        kind=kind,
        rule="too-many",
        series="workspace",
        severity=Severity.CRITICAL,
        at=at,
        since=at - timedelta(minutes=2),
        count=42,
        condition="count > 40",
        channel=channel,
        recent=(1, 5, 42),
    )


def alert(
    rule: str = "too-many",
    series: str = "workspace",
    *,
    alert_id: str = "a1",
    state: AlertState = AlertState.FIRING,
) -> AlertRecord:
    return AlertRecord(
        rule=rule,
        series=series,
        alert_id=alert_id,
        state=state,
        since=T0,
        last_count=42,
        last_notified=T0 + timedelta(seconds=1),
        condition="count > 40",
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "watchdog.db"


@pytest.fixture
def store(open_store: Callable[[], Store]) -> Iterator[Store]:
    with open_store() as opened:
        yield opened


def table_counts(store: Store) -> dict[str, int]:
    """Rows per table, read through the store's own connection (either backend)."""
    return {
        table: store._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        for table in ("samples", "series", "alerts", "outbox", "messages", "dead_letters")
    }


# --- opening and schema -------------------------------------------------------------


def test_open_creates_directory_and_migrates_from_empty(db_path: Path) -> None:
    """A fresh state directory gets a WAL database at the current schema version."""
    with Store.open(db_path) as store:
        assert store.path == db_path
    assert db_path.is_file()
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    finally:
        conn.close()
    assert {"alerts", "series", "samples", "outbox", "dead_letters", "messages", "meta"} <= tables


def test_default_path_is_inside_the_state_directory(tmp_path: Path) -> None:
    """The database file is watchdog.db in the state directory."""
    assert Store.default_path(tmp_path) == tmp_path / "watchdog.db"


def test_reopening_keeps_everything(open_store: Callable[[], Store]) -> None:
    """Alerts, samples, outbox, message refs and meta survive close and reopen."""
    with open_store() as store:
        ids = store.apply(
            samples=[Sample("workspace", T0, 3), Sample("agent_1", T0, 1)],
            alerts=[alert()],
            notifications=[note("a1"), note("a2")],
        )
        store.mark_delivered(ids[0], alert_id="a1", ref=MessageRef("C1", "111.1"))
        store.set_meta("config", "abc123")
    with open_store() as store:
        assert store.load_alerts() == [alert()]
        assert store.last_samples() == {
            "workspace": Sample("workspace", T0, 3),
            "agent_1": Sample("agent_1", T0, 1),
        }
        assert store.message_ref("a1") == MessageRef("C1", "111.1")
        assert [e.notification for e in store.outbox_heads(T0)] == [note("a2")]
        assert store.get_meta("config") == "abc123"
        # The series cache is rebuilt from disk: a known series is not duplicated.
        store.apply(samples=[Sample("workspace", T0 + timedelta(seconds=15), 4)])
        assert table_counts(store)["series"] == 2


def test_stores_sharing_a_database_add_a_new_series_once(open_store: Callable[[], Store]) -> None:
    """A series another store (another daemon, before a fail-over) added after this one was
    opened is found, not added twice (which the schema refuses)."""
    with open_store() as before, open_store() as other:
        other.apply(samples=[Sample("agent_new", T0, 1)])
        before.apply(samples=[Sample("agent_new", T0 + timedelta(seconds=15), 2)])
        assert before.load_samples(since=T0, series="agent_new") == [
            Sample("agent_new", T0, 1),
            Sample("agent_new", T0 + timedelta(seconds=15), 2),
        ]


def test_times_are_stored_as_utc_milliseconds(store: Store) -> None:
    """Any aware time comes back as UTC, floored to the millisecond; naive times are refused."""
    plus_two = timezone(timedelta(hours=2))
    store.apply(samples=[Sample("workspace", datetime(2025, 3, 1, 14, 0, 0, 123_987, plus_two), 1)])
    (sample,) = store.load_samples(since=T0 - timedelta(days=1))
    assert sample.at == datetime(2025, 3, 1, 12, 0, 0, 123_000, tzinfo=UTC)
    assert sample.at.tzinfo is UTC
    with pytest.raises(ValueError, match="naive"):
        store.apply(samples=[Sample("workspace", datetime(2025, 3, 1), 1)])


# --- the atomic step ----------------------------------------------------------------


def test_inactive_alert_record_deletes_the_instance(store: Store) -> None:
    """Only pending and firing instances are kept; INACTIVE removes the row."""
    store.apply(alerts=[alert(), alert(series="agent_1", alert_id="a2", state=AlertState.PENDING)])
    store.apply(alerts=[alert(state=AlertState.INACTIVE)])
    assert [a.alert_id for a in store.load_alerts()] == ["a2"]


def test_upsert_replaces_the_instance_of_the_same_rule_and_series(store: Store) -> None:
    """A new episode of the same (rule, series) replaces the old record."""
    store.apply(alerts=[alert(alert_id="a1", state=AlertState.PENDING)])
    store.apply(alerts=[alert(alert_id="a1")])
    store.apply(alerts=[alert(alert_id="a9")])
    assert [(a.alert_id, a.state) for a in store.load_alerts()] == [("a9", AlertState.FIRING)]


def test_apply_returns_outbox_ids_in_order(store: Store) -> None:
    """The ids of the queued notifications come back in the order given."""
    ids = store.apply(notifications=[note("a1"), note("a2", channel="#other")])
    assert len(ids) == 2
    assert ids[0] < ids[1]
    assert store.apply() == []


def test_apply_is_all_or_nothing_when_a_notification_cannot_be_serialised(store: Store) -> None:
    """A failure in the last step of apply leaves no sample, series or alert behind."""
    store.apply(samples=[Sample("workspace", T0, 1)])
    bad = Notification(**{**_fields(note("bad")), "recent": (object(),)})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.apply(
            samples=[Sample("workspace", T0 + timedelta(seconds=15), 2), Sample("new", T0, 7)],
            alerts=[alert()],
            notifications=[note("good"), bad],
        )
    assert table_counts(store) == {
        "samples": 1,
        "series": 1,
        "alerts": 0,
        "outbox": 0,
        "messages": 0,
        "dead_letters": 0,
    }
    # The rolled-back series id is forgotten: the same new series can be stored afterwards.
    store.apply(samples=[Sample("new", T0, 7)])
    assert store.last_samples()["new"] == Sample("new", T0, 7)


def test_apply_is_all_or_nothing_on_a_constraint_violation(store: Store) -> None:
    """A sample the schema refuses (negative count) aborts the whole tick with StateError."""
    with pytest.raises(StateError, match=re.escape(store.where)):
        store.apply(
            samples=[Sample("workspace", T0, 1), Sample("workspace", T0 + timedelta(1), -1)],
            alerts=[alert()],
            notifications=[note()],
        )
    assert set(table_counts(store).values()) == {0}
    assert store.apply(notifications=[note()])  # the store is still usable


def test_apply_can_run_from_another_thread(store: Store) -> None:
    """The daemon may move a write off the event loop; calls are serialised by the store."""
    errors: list[BaseException] = []

    def write(offset: int) -> None:
        try:
            for i in range(20):
                store.apply(samples=[Sample("workspace", T0 + timedelta(seconds=offset + i), i)])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n * 100,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(store.load_samples(since=T0)) == 60


def _fields(value: Notification) -> dict[str, object]:
    return {name: getattr(value, name) for name in Notification.__dataclass_fields__}


# --- samples ------------------------------------------------------------------------


def test_samples_load_by_series_and_time_and_prune(store: Store) -> None:
    """Samples come back ordered by (series, at), filtered by `since`, and prune by age."""
    store.apply(
        samples=[
            Sample(series, T0 + timedelta(seconds=15 * i), i)
            for i in range(4)
            for series in ("workspace", "agent_b", "agent_a")
        ]
    )
    later = T0 + timedelta(seconds=30)
    got = store.load_samples(since=later)
    assert [(s.series, s.count) for s in got] == [
        ("agent_a", 2),
        ("agent_a", 3),
        ("agent_b", 2),
        ("agent_b", 3),
        ("workspace", 2),
        ("workspace", 3),
    ]
    assert store.load_samples(since=later, series="agent_b") == [
        Sample("agent_b", later, 2),
        Sample("agent_b", later + timedelta(seconds=15), 3),
    ]
    assert store.load_samples(since=T0, series="unknown") == []
    assert store.last_samples()["agent_a"] == Sample("agent_a", T0 + timedelta(seconds=45), 3)
    assert store.prune_samples(later) == 6
    assert len(store.load_samples(since=T0)) == 6
    assert store.prune_samples(later) == 0


def test_a_repeated_sample_time_replaces_the_count(store: Store) -> None:
    """Storing the same (series, at) twice keeps the later count instead of failing."""
    store.apply(samples=[Sample("workspace", T0, 1)])
    store.apply(samples=[Sample("workspace", T0, 2)])
    assert store.load_samples(since=T0) == [Sample("workspace", T0, 2)]


# --- outbox ---------------------------------------------------------------------------


def test_outbox_offers_only_each_channels_oldest_entry_once_due(store: Store) -> None:
    """Heads are per channel, in queue order, and held back until next_attempt_at."""
    a1, b1, a2 = store.apply(
        notifications=[note("a1", channel="#a"), note("b1", channel="#b"), note("a2", channel="#a")]
    )
    assert [e.id for e in store.outbox_heads(T0)] == [a1, b1]
    assert store.outbox_heads(T0 - timedelta(milliseconds=1)) == []

    store.mark_retry(a1, attempts=1, next_attempt_at=T0 + timedelta(seconds=10), error="503")
    assert [e.id for e in store.outbox_heads(T0)] == [b1]  # a2 waits behind a1
    assert store.next_due() == T0
    (retrying, _) = store.outbox_heads()
    assert (retrying.id, retrying.attempts, retrying.last_error) == (a1, 1, "503")
    assert retrying.next_attempt_at == T0 + timedelta(seconds=10)

    store.mark_delivered(b1, alert_id="b1", ref=None)
    assert store.next_due() == T0 + timedelta(seconds=10)
    assert [e.id for e in store.outbox_heads(T0 + timedelta(seconds=10))] == [a1]
    store.mark_delivered(a1, alert_id="a1", ref=None)
    assert [e.id for e in store.outbox_heads(T0)] == [a2]
    store.mark_delivered(a2, alert_id="a2", ref=None)
    assert store.next_due() is None


def test_an_attempt_puts_the_entry_in_doubt_until_an_answer_clears_it(store: Store) -> None:
    """begin_attempts marks entries in doubt and keeps the first attempt's start; a retry
    keeps or clears the doubt as told."""
    a1, b1 = store.apply(notifications=[note("a1", channel="#a"), note("b1", channel="#b")])
    assert [(e.in_doubt, e.first_attempt_at) for e in store.outbox_heads()] == [(False, None)] * 2

    store.begin_attempts([a1], at=T0 + timedelta(seconds=1))
    store.begin_attempts([a1, b1], at=T0 + timedelta(seconds=9))
    heads = {e.id: e for e in store.outbox_heads()}
    assert (heads[a1].in_doubt, heads[a1].first_attempt_at) == (True, T0 + timedelta(seconds=1))
    assert (heads[b1].in_doubt, heads[b1].first_attempt_at) == (True, T0 + timedelta(seconds=9))

    store.mark_retry(a1, attempts=1, next_attempt_at=T0, error="timed out", in_doubt=True)
    store.mark_retry(b1, attempts=1, next_attempt_at=T0, error="429")
    heads = {e.id: e for e in store.outbox_heads()}
    assert (heads[a1].in_doubt, heads[b1].in_doubt) == (True, False)
    assert heads[b1].first_attempt_at == T0 + timedelta(seconds=9)


def test_entries_queued_by_an_older_watchdog_start_in_doubt(db_path: Path) -> None:
    """Migrating a schema-1 database puts its queued entries in doubt since they were queued:
    the old watchdog may have been stopped mid-call."""
    db_path.parent.mkdir(parents=True)
    conn = sqlite3.connect(db_path)
    _MIGRATIONS[0](conn)
    created = int(T0.timestamp() * 1000)
    conn.execute(
        """INSERT INTO outbox (channel, alert_id, kind, payload, created_at, next_attempt_at)
           VALUES (?, ?, ?, ?, ?, ?)""",
        ("#a", "a1", "firing", json.dumps(note("a1", channel="#a").to_json()), created, created),
    )
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with Store.open(db_path) as store:
        (entry,) = store.outbox_heads()
    assert (entry.in_doubt, entry.first_attempt_at) == (True, T0)


def test_a_change_alert_keeps_what_it_fired_against_across_reopening(
    open_store: Callable[[], Store],
) -> None:
    """The base and count a change alert fired at are stored with it, and cleared with it."""
    collapse = dataclasses.replace(
        alert("collapse", alert_id="c1"), fired_change=FiredChange(base=20, count=0)
    )
    with open_store() as store:
        store.apply(alerts=[collapse, alert()])
    with open_store() as store:
        assert store.load_alerts() == [collapse, alert()]
        store.apply(alerts=[dataclasses.replace(collapse, fired_change=None)])
        assert store.load_alerts()[0].fired_change is None


def test_alerts_stored_by_an_older_watchdog_have_no_base(db_path: Path) -> None:
    """Migrating a schema-2 database keeps its alerts, without a remembered base."""
    db_path.parent.mkdir(parents=True)
    conn = sqlite3.connect(db_path)
    _MIGRATIONS[0](conn)
    _MIGRATIONS[1](conn)
    conn.execute(
        """INSERT INTO alerts (rule, series, alert_id, state, since, last_count,
                               last_notified, condition, severity)
           VALUES ('collapse', 'workspace', 'c1', 'firing', ?, 0, NULL, '20 -> 0', 'critical')""",
        (int(T0.timestamp() * 1000),),
    )
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    with Store.open(db_path) as store:
        (record,) = store.load_alerts()
    assert (record.alert_id, record.condition, record.fired_change) == ("c1", "20 -> 0", None)


def test_outbox_depth_and_oldest_pending(store: Store) -> None:
    """Depth counts every queued entry; the oldest is the earliest created."""
    assert store.outbox_depth() == 0
    assert store.oldest_pending() is None
    store.apply(notifications=[note("late", at=T0 + timedelta(seconds=5), channel="#a")])
    store.apply(notifications=[note("early", at=T0, channel="#b")])
    assert store.outbox_depth() == 2
    oldest = store.oldest_pending()
    assert oldest is not None
    assert (oldest.notification.alert_id, oldest.created_at, oldest.attempts) == ("early", T0, 0)


def test_mark_delivered_keeps_the_standing_ref_until_resolved(store: Store) -> None:
    """The latest ref stands for the alert (None keeps it) and is dropped on resolution."""
    firing, repeat, resolved = store.apply(
        notifications=[
            note("a1"),
            note("a1", kind=TransitionKind.REPEAT),
            note("a1", kind=TransitionKind.RESOLVED),
        ]
    )
    store.mark_delivered(firing, alert_id="a1", ref=MessageRef("C1", "100.1"))
    assert store.message_ref("a1") == MessageRef("C1", "100.1")
    store.mark_delivered(repeat, alert_id="a1", ref=MessageRef("C1", "200.2"))
    assert store.message_ref("a1") == MessageRef("C1", "200.2")
    (another_repeat,) = store.apply(notifications=[note("a1", kind=TransitionKind.REPEAT)])
    store.mark_delivered(another_repeat, alert_id="a1", ref=None)
    assert store.message_ref("a1") == MessageRef("C1", "200.2")
    store.mark_delivered(resolved, alert_id="a1", ref=MessageRef("C1", "100.1"))
    assert store.message_ref("a1") is None
    assert store.outbox_depth() == 0
    store.mark_delivered(resolved, alert_id="a1", ref=None)  # unknown id: no-op


def test_dead_letter_moves_the_entry_with_its_reason(store: Store) -> None:
    """A dead letter leaves the outbox, keeps the notification, and unblocks the channel."""
    first, second = store.apply(notifications=[note("a1"), note("a2")])
    store.mark_retry(first, attempts=2, next_attempt_at=T0, error="503")
    store.dead_letter(first, reason="channel_not_found", attempts=3, at=T0 + timedelta(seconds=9))
    (letter,) = store.dead_letters()
    assert (letter.id, letter.channel, letter.attempts, letter.reason) == (
        first,
        "#alerts",
        3,
        "channel_not_found",
    )
    assert letter.notification == note("a1")
    assert letter.failed_at == T0 + timedelta(seconds=9)
    assert [e.id for e in store.outbox_heads(T0)] == [second]
    assert table_counts(store)["outbox"] == 1


def test_dead_lettered_resolution_drops_the_message_ref(store: Store) -> None:
    """When the resolution can never be delivered, the episode's ref is not kept forever."""
    firing, resolved = store.apply(
        notifications=[note("a1"), note("a1", kind=TransitionKind.RESOLVED)]
    )
    store.mark_delivered(firing, alert_id="a1", ref=MessageRef("C1", "1.1"))
    store.dead_letter(resolved, reason="message_not_found", attempts=1, at=T0)
    assert store.message_ref("a1") is None


def test_outbox_queue_is_the_head_and_its_alerts_entries(store: Store) -> None:
    """For planning: the channel's head, then the given alert's entries in that channel."""
    ids = store.apply(
        notifications=[
            note("a1"),
            note("a2"),
            note("a2", channel="#other"),
            note("a2", kind=TransitionKind.RESOLVED),
            note("a1", kind=TransitionKind.RESOLVED),
        ]
    )
    assert [e.id for e in store.outbox_queue("#alerts", "a2")] == [ids[0], ids[1], ids[3]]
    assert [e.id for e in store.outbox_queue("#alerts", "a1")] == [ids[0], ids[4]]
    assert store.outbox_queue("#nowhere", "a1") == []


def test_fold_replaces_the_head_and_deletes_what_it_consumed(store: Store) -> None:
    """The folded entry keeps its place and age; delivered, it ends the episode (no ref)."""
    firing, other, resolved = store.apply(
        notifications=[note("a1"), note("a2"), note("a1", kind=TransitionKind.RESOLVED)]
    )
    folded = dataclasses.replace(
        note("a1", kind=TransitionKind.RESOLVED), fired_at=T0, fired_count=42
    )
    store.fold_outbox(firing, into=folded, consumed=[resolved])
    (head,) = store.outbox_heads()
    assert (head.id, head.notification, head.created_at) == (firing, folded, T0)
    assert [e.id for e in store.outbox_queue("#alerts", "a2")] == [firing, other]
    store.mark_delivered(firing, alert_id="a1", ref=MessageRef("C1", "1.1"))
    assert store.message_ref("a1") is None


def test_discard_removes_one_entry(store: Store) -> None:
    """A dropped notification leaves the outbox without a dead letter; unknown ids are fine."""
    first, second = store.apply(notifications=[note("a1"), note("a2")])
    store.discard(first)
    store.discard(first)
    assert [e.id for e in store.outbox_heads()] == [second]
    assert store.dead_letters() == []


@pytest.mark.parametrize(
    ("kind", "attempts", "never_sent"),
    [
        (TransitionKind.FIRING, 1, True),
        (TransitionKind.FIRING, 2, False),  # an earlier attempt may have been accepted
        (TransitionKind.REPEAT, 1, False),
    ],
)
def test_firing_never_sent_means_rejected_on_its_only_attempt(
    store: Store, kind: TransitionKind, attempts: int, never_sent: bool
) -> None:
    """Only a firing dead-lettered on its first attempt surely never reached Slack."""
    (entry_id,) = store.apply(notifications=[note("a1", kind=kind)])
    assert not store.firing_never_sent("a1")
    store.dead_letter(entry_id, reason="invalid_blocks", attempts=attempts, at=T0)
    assert store.firing_never_sent("a1") is never_sent
    assert not store.firing_never_sent("a2")


def test_meta_values_are_replaced(store: Store) -> None:
    """Meta is a small key-value map; setting a key again replaces its value."""
    assert store.get_meta("config") is None
    store.set_meta("config", "one")
    store.set_meta("config", "two")
    assert store.get_meta("config") == "two"


_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
_column_text = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=30
)
"""For what is also a column (channel, alert id): PostgreSQL's text cannot hold NUL, and the
rules file's names and channels never do; the JSON payload takes anything."""
_times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    value=st.builds(
        Notification,
        alert_id=_column_text,
        kind=st.sampled_from(TransitionKind),
        rule=_text,
        series=_text,
        severity=st.sampled_from(Severity),
        at=_times,
        since=_times,
        count=st.none() | st.integers(min_value=0, max_value=10**9),
        condition=_text,
        channel=_column_text,
        reason=_text,
        recent=st.lists(st.integers(min_value=0, max_value=10**6), max_size=20).map(tuple),
        runbook=st.none() | _text,
        mention=st.none() | _text,
        fired_at=st.none() | _times,
        fired_count=st.none() | st.integers(min_value=0, max_value=10**9),
        limit=st.none() | st.integers(min_value=1, max_value=10**5),
    )
)
def test_notifications_round_trip_through_the_outbox(store: Store, value: Notification) -> None:
    """Whatever is queued comes back out of the outbox and the dead letters unchanged."""
    (entry_id,) = store.apply(notifications=[value])
    (entry,) = store.outbox_heads(value.at)
    assert (entry.id, entry.channel, entry.notification) == (entry_id, value.channel, value)
    assert entry.created_at == entry.next_attempt_at <= value.at
    store.dead_letter(entry_id, reason="x", attempts=1, at=value.at)
    (letter,) = [d for d in store.dead_letters(limit=10**6) if d.id == entry_id]
    assert letter.notification == value


# --- unusable files -----------------------------------------------------------------


def _open_fails(path: Path) -> str:
    """Open must fail with a StateError (and nothing else) whose message names the path."""
    with pytest.raises(StateError) as info:
        Store.open(path)
    message = str(info.value)
    assert str(path) in message or str(path.parent) in message
    assert "Traceback" not in message
    return message


def test_garbage_file_is_refused_naming_the_path(db_path: Path) -> None:
    """A file that is not a SQLite database gives a clear StateError."""
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(os.urandom(8192))
    assert "not a SQLite database" in _open_fails(db_path)


def test_corrupt_pages_are_detected_at_open(db_path: Path) -> None:
    """A database with a valid header but damaged pages fails the integrity check at open."""
    with Store.open(db_path) as store:
        store.apply(
            samples=[Sample(f"s{i % 50}", T0 + timedelta(seconds=i), i) for i in range(20_000)]
        )
    data = bytearray(db_path.read_bytes())
    page = 4096
    assert len(data) > 20 * page
    for offset in range(5 * page, len(data) - page, 3 * page):
        data[offset : offset + 512] = os.urandom(512)
    db_path.write_bytes(bytes(data))
    _open_fails(db_path)


def test_a_directory_where_the_file_should_be_is_refused(db_path: Path) -> None:
    """An unreadable database path (here: a directory) gives a clear StateError."""
    db_path.mkdir(parents=True)
    assert "not a regular file" in _open_fails(db_path)


_OPEN = """
import sys
from pathlib import Path
from watchdog.errors import StateError
from watchdog.store import Store
try:
    Store.open(Path(sys.argv[1])).close()
except StateError as exc:
    print(exc)
    sys.exit(1)
"""


def _open_fails_bound_by_file_modes(path: Path) -> str:
    """Like `_open_fails`, in a child that file modes bind even when the tests run as root."""
    done = subprocess.run(
        without_file_privileges([sys.executable, "-c", _OPEN, str(path)]),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr) == (1, ""), (done.returncode, done.stdout, done.stderr)
    message = done.stdout.strip()
    assert str(path) in message or str(path.parent) in message
    return message


def test_unreadable_file_is_refused(db_path: Path) -> None:
    """A database file without read permission gives a clear StateError."""
    Store.open(db_path).close()
    db_path.chmod(0)
    message = _open_fails_bound_by_file_modes(db_path)
    assert message == f"{db_path}: cannot read the database file: Permission denied"


def test_state_directory_under_a_file_is_refused(tmp_path: Path) -> None:
    """A state directory that cannot be created gives a clear StateError naming it."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    assert "cannot create the state directory" in _open_fails(blocker / "state" / "watchdog.db")
    assert "not a directory" in _open_fails(blocker / "watchdog.db")


def test_read_only_state_directory_is_refused(db_path: Path) -> None:
    """A state directory without write permission gives a clear StateError."""
    db_path.parent.mkdir(parents=True)
    db_path.parent.chmod(0o500)
    try:
        message = _open_fails_bound_by_file_modes(db_path)
    finally:
        db_path.parent.chmod(0o700)
    assert message == (f"{db_path.parent}: the state directory is not writable: Permission denied")


def test_database_from_a_newer_watchdog_is_refused(db_path: Path) -> None:
    """A schema version above ours is not touched and is reported."""
    Store.open(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    assert "newer watchdog" in _open_fails(db_path)
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    conn.close()


def test_a_closed_store_raises_state_error(open_store: Callable[[], Store]) -> None:
    """Using the store after close is a StateError, not a driver's exception."""
    store = open_store()
    store.close()
    store.close()
    with pytest.raises(StateError, match="closed"):
        store.load_alerts()


# --- crash safety -------------------------------------------------------------------

_SAMPLES_PER_TICK = 5

_WRITER = f"""
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from watchdog.model import AlertRecord, AlertState, Notification, Sample, Severity, TransitionKind
from watchdog.store import Store

store = Store.open(Path(sys.argv[1]))
seq = max((int(a.rule[1:]) for a in store.load_alerts()), default=0) + 1
print("ready", flush=True)
base = datetime(2025, 1, 1, tzinfo=UTC)
while True:
    at = base + timedelta(seconds=seq)
    tag = f"a{{seq}}"
    store.apply(
        samples=[Sample(f"s{{i}}", at, seq) for i in range({_SAMPLES_PER_TICK})],
        alerts=[AlertRecord(f"r{{seq}}", "kill", tag, AlertState.FIRING, at, seq, None, "c")],
        notifications=[Notification(tag, TransitionKind.FIRING, f"r{{seq}}", "kill",
                                    Severity.INFO, at, at, seq, "c", "#kill")],
    )
    seq += 1
"""


@pytest.mark.slow
def test_killed_writer_leaves_whole_transactions_only(db_path: Path) -> None:
    """SIGKILL at random moments: the database opens cleanly and each tick is all or nothing."""
    rng = random.Random()
    for _ in range(20):
        child = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(db_path)],
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert child.stdout is not None
            line = child.stdout.readline()
            assert line == b"ready\n", child.stderr.read() if child.stderr else line
            threading.Event().wait(rng.uniform(0.0, 0.12))
            child.send_signal(signal.SIGKILL)
        finally:
            child.wait(timeout=10)
            for stream in (child.stdout, child.stderr):
                if stream is not None:
                    stream.close()
        assert child.returncode == -signal.SIGKILL

    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        samples: dict[int, int] = dict(
            conn.execute("SELECT count, COUNT(*) FROM samples GROUP BY count").fetchall()
        )
        alerts = {int(rule[1:]) for (rule,) in conn.execute("SELECT rule FROM alerts")}
        outbox = {int(a[1:]) for (a,) in conn.execute("SELECT alert_id FROM outbox")}
    finally:
        conn.close()
    assert len(alerts) > 20  # the writer got well into its loop
    assert set(samples) == alerts == outbox
    assert set(samples.values()) == {_SAMPLES_PER_TICK}
    assert alerts == set(range(1, max(alerts) + 1))
    with Store.open(db_path) as store:
        assert len(store.load_alerts()) == len(alerts)


# --- size ---------------------------------------------------------------------------


def test_sample_rows_stay_compact(tmp_path: Path) -> None:
    """Polls of 1,000 series, stored as in production, cost under 20 bytes per row on disk."""
    path = tmp_path / "size.db"
    rng = random.Random(7)
    ticks, series = 60, 1000
    with Store.open(path) as store:
        for tick in range(ticks):
            at = T0 + timedelta(seconds=15 * tick)
            store.apply(
                samples=[
                    Sample(f"agent_{i:04d}", at + timedelta(milliseconds=rng.randrange(2000)), c)
                    for i in range(series)
                    for c in [rng.choice((0, 0, 0, 1, 2, 3, 5, 12))]
                ]
            )
    per_row = path.stat().st_size / (ticks * series)
    print(f"bytes per sample row: {per_row:.1f}")
    assert per_row < 20


def test_thin_samples_keeps_one_per_bucket_and_leaves_recent_history(store: Store) -> None:
    """Thinning keeps the first sample of each minute in range and nothing outside changes."""
    t0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    samples = [
        Sample("workspace", t0 + timedelta(seconds=15 * i), i) for i in range(40)
    ]  # 10 minutes
    store.apply(samples=samples)
    removed = store.thin_samples(
        after=t0, before=t0 + timedelta(minutes=5), resolution=timedelta(minutes=1)
    )
    kept = store.load_samples(since=t0 - timedelta(hours=1))
    assert removed == 15  # 20 samples in the first 5 minutes -> 5 kept
    first_five = [s for s in kept if s.at < t0 + timedelta(minutes=5)]
    assert [s.count for s in first_five] == [0, 4, 8, 12, 16]
    assert [s.count for s in kept if s.at >= t0 + timedelta(minutes=5)] == list(range(20, 40))


def test_prune_and_thin_can_work_on_a_few_series_at_a_time(store: Store) -> None:
    """With `series=`, pruning and thinning touch only those series (and skip unknown names)."""
    t0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    names = ("workspace", "agent_a", "agent_b")
    samples = [Sample(name, t0 + timedelta(seconds=15 * i), i) for i in range(8) for name in names]
    store.apply(samples=samples)
    assert store.sample_series() == list(names)
    minute = timedelta(minutes=1)
    thinned = store.thin_samples(
        after=t0, before=t0 + 2 * minute, resolution=minute, series=["agent_a", "nobody"]
    )
    expired = store.prune_samples(t0 + minute, series=["agent_b"])
    left = {name: len(store.load_samples(since=t0, series=name)) for name in names}
    assert (thinned, expired) == (6, 4)
    assert left == {"workspace": 8, "agent_a": 2, "agent_b": 4}


# -- silences and held news ---------------------------------------------------------------


def test_silences_round_trip_and_are_listed_by_when_they_are_in_force(store: Store) -> None:
    """`silences(at)` gives those in force at `at`; without `at`, all not yet ended."""
    hour = timedelta(hours=1)
    first = store.add_silence("too-many", None, T0, T0 + hour, "cli:alice", "deploy")
    later = store.add_silence("*", "support", T0 + hour, T0 + 2 * hour, "U123", "migration")
    assert later > first
    (found,) = store.silences(T0)
    assert (found.id, found.rule, found.scope, found.by, found.comment) == (
        first,
        "too-many",
        None,
        "cli:alice",
        "deploy",
    )
    assert (found.starts, found.ends) == (T0, T0 + hour)
    assert found.ends.tzinfo is not None
    assert [s.id for s in store.silences(T0 + hour)] == [later]  # the first ended
    assert [s.id for s in store.silences(now=T0)] == [first, later]
    assert [s.id for s in store.silences(now=T0 + hour)] == [later]
    assert store.silences(now=T0 + 2 * hour) == []


def test_a_silence_must_end_after_it_starts(store: Store) -> None:
    """An empty or reversed silence is refused before it reaches the file."""
    with pytest.raises(ValueError, match="end after it starts"):
        store.add_silence("too-many", None, T0, T0, "cli:alice", "oops")


def test_expire_silence_ends_it_then_and_reports_unknown_ids(store: Store) -> None:
    """Expiring ends a silence at the given time; an unknown or ended one gives False."""
    silence_id = store.add_silence("too-many", None, T0, T0 + timedelta(hours=2), "a", "b")
    future = store.add_silence(
        "too-many", None, T0 + timedelta(hours=5), T0 + timedelta(hours=6), "a", "c"
    )
    assert store.expire_silence(silence_id, T0 + timedelta(minutes=10))
    assert store.silences(T0 + timedelta(minutes=10)) == []
    assert store.silences(T0 + timedelta(minutes=9))[0].ends == T0 + timedelta(minutes=10)
    assert not store.expire_silence(silence_id, T0 + timedelta(minutes=20))  # already ended
    assert not store.expire_silence(999, T0)
    assert store.expire_silence(future, T0)  # one still to come is called off
    assert store.silences(now=T0 + timedelta(minutes=10)) == []


def test_silence_news_is_taken_once(store: Store) -> None:
    """Each silence's creation and end are handed out once, to be audited once."""
    silence_id = store.add_silence("too-many", None, T0, T0 + timedelta(hours=1), "a", "b")
    news = store.take_silence_news(T0)
    assert [s.id for s in news.created] == [silence_id]
    assert news.expired == ()
    assert store.take_silence_news(T0) == type(news)()
    ended = store.take_silence_news(T0 + timedelta(hours=1))
    assert ended.created == ()
    assert [s.id for s in ended.expired] == [silence_id]
    assert store.take_silence_news(T0 + timedelta(hours=3)) == type(news)()


def test_changed_elsewhere_sees_commits_of_other_connections_only(
    open_store: Callable[[], Store],
) -> None:
    """`changed_elsewhere` is true once after another process committed, never for our own."""
    with open_store() as daemon, open_store() as cli:
        assert not daemon.changed_elsewhere()
        daemon.add_silence("too-many", None, T0, T0 + timedelta(hours=1), "a", "own")
        assert not daemon.changed_elsewhere()
        cli.add_silence("too-many", None, T0, T0 + timedelta(hours=1), "a", "other")
        assert daemon.changed_elsewhere()
        assert not daemon.changed_elsewhere()  # consumed by the call
        assert cli.expire_silence(1, T0)
        assert daemon.changed_elsewhere()
        cli.request_ack("a1", by="alice", at=T0)
        daemon.apply(samples=[Sample("workspace", T0, 1)])  # our write after theirs
        assert daemon.changed_elsewhere()
        assert not daemon.changed_elsewhere()


def test_held_news_is_written_with_the_tick_and_taken_out_of_the_outbox(store: Store) -> None:
    """Held news goes in with `apply`, and `hold_back` removes an entry and sets the news
    in one transaction."""
    news = Held("a1", "too-many", "workspace", card=False, cover=Cover(silence=3))
    store.apply(alerts=[alert()], held=[news])
    assert store.held() == {"a1": news}
    (entry_id,) = store.apply(notifications=[note("a2")])
    muted = Held("a2", "too-many", "workspace", card=True, cover=Cover(mute="deploys"))
    store.hold_back(entry_id, alert_id="a2", held=muted)
    assert store.outbox_depth() == 0
    assert store.held() == {"a1": news, "a2": muted}
    store.apply(released=["a1"])
    (entry_id,) = store.apply(notifications=[note("a2", kind=TransitionKind.RESOLVED)])
    store.hold_back(entry_id, alert_id="a2", held=None)
    assert store.held() == {}
    assert store.outbox_depth() == 0


def test_news_held_by_an_inhibition_keeps_its_inhibitor(store: Store) -> None:
    """Held news names the inhibiting rule across a read back (a restart), so its release
    still says which alert resolved."""
    news = Held("a1", "agent-low", "sales", card=False, cover=Cover(inhibitor="collapsed"))
    store.apply(alerts=[alert()], held=[news])
    assert store.held() == {"a1": news}


# --- escalation and flapping ----------------------------------------------------------


def test_escalation_acknowledgement_and_flapping_survive_reopening(
    open_store: Callable[[], Store],
) -> None:
    """What a restarted engine needs of an escalated or flapping alert is kept with it."""
    flapping = Flapping(
        since=T0, stable_since=T0 + timedelta(minutes=5), firing=True, pending_since=None
    )
    escalated = dataclasses.replace(
        alert(),
        escalation=0b101,
        acked_at=T0 + timedelta(minutes=2),
        acked_by="U123",
        flapping=flapping,
        changes=(T0, T0 + timedelta(minutes=1)),
    )
    with open_store() as store:
        store.apply(alerts=[escalated])
    with open_store() as store:
        assert store.load_alerts() == [escalated]
        assert store.load_changes() == {("too-many", "workspace"): escalated.changes}


def test_flap_changes_outlive_the_episode_and_go_when_empty(store: Store) -> None:
    """A resolved alert's recent changes stay for the next episode; an empty list is removed."""
    changes = (T0, T0 + timedelta(minutes=1))
    store.apply(alerts=[dataclasses.replace(alert(state=AlertState.INACTIVE), changes=changes)])
    assert store.load_alerts() == []
    assert store.load_changes() == {("too-many", "workspace"): changes}
    store.apply(alerts=[alert(state=AlertState.INACTIVE)])
    assert store.load_changes() == {}


def test_alerts_of_an_older_watchdog_start_unescalated(db_path: Path) -> None:
    """Migrating a schema-2 database keeps its alerts: no stage in force, not flapping."""
    db_path.parent.mkdir(parents=True)
    conn = sqlite3.connect(db_path)
    _MIGRATIONS[0](conn)
    _MIGRATIONS[1](conn)
    conn.execute(
        """INSERT INTO alerts (rule, series, alert_id, state, since, condition, severity)
           VALUES ('r', 'workspace', 'a1', 'firing', ?, 'count > 1', 'critical')""",
        (int(T0.timestamp() * 1000),),
    )
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    with Store.open(db_path) as store:
        (record,) = store.load_alerts()
    assert (record.escalation, record.acked_at, record.flapping, record.changes) == (
        0,
        None,
        None,
        (),
    )


# --- acknowledgements -------------------------------------------------------------------


def test_acknowledgement_round_trips_with_the_alert(store: Store) -> None:
    """Who acknowledged a firing alert, and when, is kept and read back."""
    acked = dataclasses.replace(alert(), acked_by="U0ALICE", acked_at=T0 + timedelta(minutes=1))
    store.apply(alerts=[acked])
    assert store.load_alerts() == [acked]


def test_ack_requests_queue_until_dropped(store: Store) -> None:
    """`watchdog ack` requests are read back oldest first and gone once dropped."""
    first = store.request_ack("a1", by="alice", at=T0)
    store.request_ack("b2", by="U0BOB", at=T0 + timedelta(seconds=1))
    assert [(r.alert_id, r.by, r.requested_at) for r in store.ack_requests()] == [
        ("a1", "alice", T0),
        ("b2", "U0BOB", T0 + timedelta(seconds=1)),
    ]
    store.drop_ack_request(first)
    assert [r.alert_id for r in store.ack_requests()] == ["b2"]


# --- PostgreSQL ---------------------------------------------------------------------


def test_both_backends_reach_the_same_schema_version() -> None:
    """A migration appended to SQLite's list needs its PostgreSQL counterpart too."""
    assert PG_SCHEMA_VERSION == SCHEMA_VERSION


def _pg_open_fails(url: str) -> str:
    with pytest.raises(StateError) as info:
        Store.connect(url)
    return str(info.value)


def test_postgres_database_from_a_newer_watchdog_is_refused(postgres_url: str) -> None:
    """A schema version above ours is not touched and is reported."""
    Store.connect(postgres_url).close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION + 1,))
    message = _pg_open_fails(postgres_url)
    assert "newer watchdog" in message
    assert message.startswith(postgres_url.replace("watchdog@", ""))


def test_stores_starting_together_on_an_empty_database_create_the_schema_once(
    postgres_url: str,
) -> None:
    """Daemons started at once on a new database all open it (the schema is made under a
    lock, not raced)."""
    opened: list[Store] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def connect() -> None:
        start.wait()
        try:
            opened.append(Store.connect(postgres_url))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=connect) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in opened:
        store.close()
    assert errors == []
    assert len(opened) == 4


def test_a_broken_connection_fails_one_call_and_the_next_reconnects(postgres_url: str) -> None:
    """`pg_terminate_backend` (or a server restart): the call in progress raises StateError,
    nothing of it is half-kept, the next call connects again and the state is all there."""
    with Store.connect(postgres_url) as store:
        (first,) = store.apply(samples=[Sample("workspace", T0, 1)], notifications=[note("a1")])
        (pid,) = store._db.execute("SELECT pg_backend_pid()").fetchone()
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(StateError, match=re.escape(store.where)):
            store.apply(samples=[Sample("workspace", T0 + timedelta(1), 2)], alerts=[alert()])
        assert [e.id for e in store.outbox_heads()] == [first]
        assert store.load_alerts() == []
        assert store.changed_elsewhere()  # what happened while disconnected is unknown
        store.apply(samples=[Sample("workspace", T0 + timedelta(1), 2)], alerts=[alert()])
        assert store.load_alerts() == [alert()]


def test_an_unreachable_server_is_one_clear_line(postgres_server: PostgresServer) -> None:
    """Nothing listening: StateError naming host, port and database, on one line."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    message = _pg_open_fails(f"postgresql://watchdog:sesame@127.0.0.1:{port}/watchdog")
    assert message.startswith(f"postgresql://127.0.0.1:{port}/watchdog: cannot use the database")
    assert "\n" not in message
    assert "sesame" not in message


def test_a_wrong_password_is_refused_without_showing_it(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    """A role that needs a password: the right one opens the store, a wrong one is one
    line naming the database, and neither password is in the message."""
    url = postgres_server.role_with_password("s3cret-right", postgres_url)
    with Store.connect(url) as store:
        store.set_meta("k", "v")
    message = _pg_open_fails(url.replace("s3cret-right", "s3cret-wrong"))
    assert "password authentication failed" in message
    assert "s3cret" not in message
    assert "\n" not in message


@pytest.mark.slow
def test_a_write_waits_for_another_writer_at_most_five_seconds(postgres_url: str) -> None:
    """As SQLite's busy timeout: a writer that holds its transaction open (a stopped
    process) makes our write fail with StateError after 5 s instead of hanging the daemon."""
    with Store.connect(postgres_url) as store, Store.connect(postgres_url) as stuck:
        with stuck._writing("holding the writers' lock"):
            began = time.monotonic()
            with pytest.raises(StateError, match="lock timeout"):
                store.set_meta("k", "v")
            waited = time.monotonic() - began
        assert 4.5 < waited < 10
        store.set_meta("k", "v")  # the writer is gone: writes go through again
        assert store.get_meta("k") == "v"


def test_a_commit_whose_answer_was_lost_counts_as_done(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    """The connection drops after the COMMIT went out: the server committed, so the write
    succeeds (reported as failed, the daemon would queue its notifications twice)."""
    cutter = CommitCutter(postgres_server.port)
    try:
        with Store.connect(cutter.url(postgres_url)) as store:
            cutter.arm()
            ids = store.apply(samples=[Sample("workspace", T0, 1)], notifications=[note("a1")])
            assert cutter.cuts == 1
            assert [e.id for e in store.outbox_heads()] == ids
            assert store.last_samples() == {"workspace": Sample("workspace", T0, 1)}
    finally:
        cutter.close()
