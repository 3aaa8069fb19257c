"""The state database: alerts, sample history, outbox, silences, migrations.

By default a SQLite file in the state directory (`Store.open`); with `WATCHDOG_DATABASE_URL`
a PostgreSQL database (`Store.connect`, see watchdog/store_pg.py). The SQL is written once
(see watchdog/store_sql.py) and everything below holds for both.

What is guaranteed:

* Every write method is one transaction. `apply` writes samples, alert records and the
  notifications they caused together, so after a crash (or power loss) either all of a
  tick's effects are on disk or none are. WAL mode with `synchronous=FULL` makes a
  committed transaction durable before the call returns.
* Opening never leaves a traceback for an operator: an unwritable state directory, an
  unreadable, foreign or corrupt file, an unreachable server or refused login, or a
  database written by a newer watchdog raises `StateError` whose message names the path
  (or the URL without its password). A failing call raises `StateError` too; after a
  PostgreSQL connection broke, the next call connects again.
* All datetimes going in must be timezone-aware; all coming out are aware UTC. They are
  stored as integer epoch milliseconds, so anything finer than a millisecond is dropped
  (floored) on the way in. Notifications are the exception: the outbox keeps their JSON,
  which round-trips them unchanged. A stored notification that cannot be read back
  (written by a newer watchdog, damaged) comes out as `Unreadable` with the reason, never
  as an exception, so one bad row cannot stop the reading of the others.
* The store decides nothing: what to write is the engine's and the daemon's business;
  when to retry is the delivery worker's.

Threads: one connection is the store's. A SQLite one is opened with
`check_same_thread=False`, and every public method holds one lock, so the store may be used
from the event-loop thread and, if the daemon prefers not to block the loop on `fsync`,
from a worker thread (`asyncio.to_thread(store.apply, ...)`); calls are serialised.
Other processes (a replay, an inspection CLI) may read the database concurrently (SQLite:
thanks to WAL), and `watchdog silence` writes silences into it while the daemon runs;
`changed_elsewhere` tells the daemon that another process committed. Writes of all
processes are serialised (see `Database.transaction`).
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Final, Self

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
from watchdog.silences import Cover, Held, Silence
from watchdog.store_sql import Database, Dialect, SQLiteDatabase

__all__ = [
    "AckRequest",
    "DeadLetter",
    "OutboxEntry",
    "SilenceNews",
    "Store",
    "Unreadable",
    "writer_lock",
]

DB_FILENAME: Final = "watchdog.db"
_SQLITE_MAGIC: Final = b"SQLite format 3\x00"
_BUSY_TIMEOUT_MS: Final = 5000
_WAL_SIZE_LIMIT: Final = 64 * 1024 * 1024
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)


# --- schema ---------------------------------------------------------------------------


def _migrate_v1(conn: sqlite3.Connection) -> None:
    """The first schema: alerts, series + samples, outbox, dead letters, message refs, meta.

    Samples are the bulk of the file, so their rows are kept small: an integer series id
    instead of the name, integer epoch milliseconds, and no rowid (the key is the row).
    """
    statements = (
        """CREATE TABLE meta (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE alerts (
            rule TEXT NOT NULL,
            series TEXT NOT NULL,
            alert_id TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('pending', 'firing')),
            since INTEGER NOT NULL,
            last_count INTEGER,
            last_notified INTEGER,
            condition TEXT NOT NULL,
            severity TEXT NOT NULL DEFAULT 'warning',
            PRIMARY KEY (rule, series)
        ) WITHOUT ROWID""",
        """CREATE TABLE series (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE
        )""",
        """CREATE TABLE samples (
            series_id INTEGER NOT NULL REFERENCES series (id),
            at INTEGER NOT NULL,
            count INTEGER NOT NULL CHECK (count >= 0),
            PRIMARY KEY (series_id, at)
        ) WITHOUT ROWID""",
        """CREATE TABLE outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            channel TEXT NOT NULL,
            alert_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            payload TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at INTEGER NOT NULL,
            last_error TEXT
        )""",
        "CREATE INDEX outbox_by_channel ON outbox (channel, id)",
        """CREATE TABLE dead_letters (
            id INTEGER PRIMARY KEY,
            channel TEXT NOT NULL,
            alert_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            payload TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            attempts INTEGER NOT NULL,
            failed_at INTEGER NOT NULL,
            reason TEXT NOT NULL
        )""",
        """CREATE TABLE messages (
            alert_id TEXT PRIMARY KEY,
            channel TEXT NOT NULL,
            ts TEXT NOT NULL
        ) WITHOUT ROWID""",
    )
    for statement in statements:
        conn.execute(statement)


def _migrate_v2(conn: sqlite3.Connection) -> None:
    """Outbox entries remember their first attempt and whether Slack may hold a post of them.

    `first_attempt_at` bounds the search for a post whose answer was lost; `in_doubt` is
    set before every attempt and cleared only by an answer saying the post was not made.
    Entries queued by an older watchdog may have been in flight when it stopped, so they
    start in doubt, searched for from when they were queued.
    """
    conn.execute("ALTER TABLE outbox ADD COLUMN first_attempt_at INTEGER")
    conn.execute("ALTER TABLE outbox ADD COLUMN in_doubt INTEGER NOT NULL DEFAULT 0")
    conn.execute("UPDATE outbox SET first_attempt_at = created_at, in_doubt = 1")


def _migrate_v3(conn: sqlite3.Connection) -> None:
    """Silences, and the news of alerts a silence or mute held back.

    A silence row is kept after it ends (`watchdog silence list` shows the ones in force);
    expiring one early sets its `ends` to that moment.
    `created_audited` and `expired_audited` let the daemon log `silence.created` and
    `silence.expired` once each, also for silences the CLI made while it was stopped.
    `held` has one row per alert whose notifications were held back (see
    `watchdog.silences.Held`): `silence_id` or `mute` names the cover, `card` whether a
    card of the alert is in Slack.
    """
    conn.execute(
        """CREATE TABLE silences (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            rule TEXT NOT NULL,
            scope TEXT,
            starts INTEGER NOT NULL,
            ends INTEGER NOT NULL,
            created_by TEXT NOT NULL,
            comment TEXT NOT NULL,
            created_audited INTEGER NOT NULL DEFAULT 0,
            expired_audited INTEGER NOT NULL DEFAULT 0,
            CHECK (ends > starts)
        )"""
    )
    conn.execute("CREATE INDEX silences_by_end ON silences (ends)")
    conn.execute(
        """CREATE TABLE held (
            alert_id TEXT PRIMARY KEY,
            rule TEXT NOT NULL,
            series TEXT NOT NULL,
            card INTEGER NOT NULL,
            silence_id INTEGER,
            mute TEXT
        ) WITHOUT ROWID"""
    )


def _migrate_v4(conn: sqlite3.Connection) -> None:
    """Alerts keep their escalation, acknowledgement and flapping; rules x series their
    recent firings and resolutions (counted for flapping, also between episodes).

    `escalation` is the bit set of `escalate` stages in force; `flapping` is JSON
    (`since`, `stable_since`, `firing`, `pending_since`) or NULL; `flap_changes.changes`
    a JSON list of epoch milliseconds.
    """
    conn.execute("ALTER TABLE alerts ADD COLUMN escalation INTEGER NOT NULL DEFAULT 0")
    conn.execute("ALTER TABLE alerts ADD COLUMN acked_at INTEGER")
    conn.execute("ALTER TABLE alerts ADD COLUMN acked_by TEXT")
    conn.execute("ALTER TABLE alerts ADD COLUMN flapping TEXT")
    conn.execute(
        """CREATE TABLE flap_changes (
            rule TEXT NOT NULL,
            series TEXT NOT NULL,
            changes TEXT NOT NULL,
            PRIMARY KEY (rule, series)
        ) WITHOUT ROWID"""
    )


def _migrate_v5(conn: sqlite3.Connection) -> None:
    """The requests of `watchdog ack` waiting for the running daemon (which applies and
    deletes them). Who acknowledged an alert, and when, are columns of `alerts` (v4)."""
    conn.execute(
        """CREATE TABLE ack_requests (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            alert_id TEXT NOT NULL,
            by TEXT NOT NULL,
            requested_at INTEGER NOT NULL
        )"""
    )


def _migrate_v6(conn: sqlite3.Connection) -> None:
    """Change alerts remember what they fired against: the base and the count at firing.

    A change alert resolves when the count recovers against that base, so a restart must
    resume with it. Both are set or both NULL; alerts stored by an older watchdog have
    none and resolve the old way (when the sliding comparison no longer holds).
    """
    conn.execute("ALTER TABLE alerts ADD COLUMN fired_base INTEGER")
    conn.execute("ALTER TABLE alerts ADD COLUMN fired_count INTEGER")


def _migrate_v7(conn: sqlite3.Connection) -> None:
    """Held news may be held by an inhibition: `inhibitor` names the firing rule.

    Set instead of `silence_id` and `mute` (see `watchdog.inhibition`); NULL for news a
    silence or mute holds, which is all an older watchdog stored.
    """
    conn.execute("ALTER TABLE held ADD COLUMN inhibitor TEXT")


_MIGRATIONS: Final[tuple[Callable[[sqlite3.Connection], None], ...]] = (
    _migrate_v1,
    _migrate_v2,
    _migrate_v3,
    _migrate_v4,
    _migrate_v5,
    _migrate_v6,
    _migrate_v7,
)
"""Schema version N is reached by applying the first N migrations, in order, each in its
own transaction together with the `user_version` bump. Append only; never edit one."""

SCHEMA_VERSION: Final = len(_MIGRATIONS)


# --- values ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A stored notification this watchdog cannot read back.

    Written by a newer watchdog (a kind or severity this one does not know) or damaged
    in the file. The delivery worker dead-letters it instead of stopping its channel.
    """

    alert_id: str
    kind: str
    reason: str


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One undelivered notification; `attempts` counts the failed deliveries so far.

    `first_attempt_at` is when its first attempt started (None before any); `in_doubt`
    says an earlier attempt may have been accepted by Slack without the answer being
    recorded (lost answer, or the process ended mid-call).
    """

    id: int
    channel: str
    notification: Notification | Unreadable
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    last_error: str | None
    first_attempt_at: datetime | None = None
    in_doubt: bool = False


@dataclass(frozen=True, slots=True)
class AckRequest:
    """`watchdog ack ALERT_ID`, waiting for the running daemon to apply it."""

    id: int
    alert_id: str
    by: str
    requested_at: datetime


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A notification given up on after a permanent error, kept for the operator."""

    id: int
    channel: str
    notification: Notification | Unreadable
    attempts: int
    created_at: datetime
    failed_at: datetime
    reason: str


@dataclass(frozen=True, slots=True)
class SilenceNews:
    """Silences whose creation, or end, has not been audited yet (see `take_silence_news`)."""

    created: tuple[Silence, ...] = ()
    expired: tuple[Silence, ...] = ()


class _Lifecycle(Enum):
    OPEN = "open"
    CLOSED = "closed"


# --- conversions ----------------------------------------------------------------------


def _to_ms(value: datetime) -> int:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()} given to the store; use UTC")
    return (value - _EPOCH) // _MS


def _from_ms(value: int) -> datetime:
    return _EPOCH + value * _MS


def _opt_to_ms(value: datetime | None) -> int | None:
    return None if value is None else _to_ms(value)


def _opt_from_ms(value: int | None) -> datetime | None:
    return None if value is None else _from_ms(value)


def _dump_flapping(state: Flapping | None) -> str | None:
    if state is None:
        return None
    return json.dumps(
        {
            "since": _to_ms(state.since),
            "stable_since": _to_ms(state.stable_since),
            "firing": state.firing,
            "pending_since": _opt_to_ms(state.pending_since),
        }
    )


def _load_flapping(text: str | None) -> Flapping | None:
    if text is None:
        return None
    data = json.loads(text)
    return Flapping(
        since=_from_ms(data["since"]),
        stable_since=_from_ms(data["stable_since"]),
        firing=bool(data["firing"]),
        pending_since=_opt_from_ms(data["pending_since"]),
    )


def _dump(note: Notification) -> str:
    return json.dumps(note.to_json(), separators=(",", ":"), allow_nan=False)


def _load(payload: str, *, alert_id: str, kind: str) -> Notification | Unreadable:
    """The stored notification, or why it cannot be read (never an exception: one bad
    payload must not stop the reading of the others)."""
    try:
        data = json.loads(payload)
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        return Notification.from_json(data)
    except Exception as exc:  # whatever the payload makes the parser raise
        return Unreadable(alert_id, kind, f"unreadable payload: {type(exc).__name__}: {exc}")


_ALL_HEADS: Final = """
    SELECT id, channel, alert_id, kind, payload, attempts, created_at, next_attempt_at,
           last_error, first_attempt_at, in_doubt
    FROM outbox WHERE id IN (SELECT MIN(id) FROM outbox GROUP BY channel)
    ORDER BY id
"""

_DUE_HEADS: Final = """
    SELECT id, channel, alert_id, kind, payload, attempts, created_at, next_attempt_at,
           last_error, first_attempt_at, in_doubt
    FROM outbox WHERE id IN (SELECT MIN(id) FROM outbox GROUP BY channel)
    AND next_attempt_at <= ? ORDER BY id
"""

_CHANNEL_QUEUE: Final = """
    SELECT id, channel, alert_id, kind, payload, attempts, created_at, next_attempt_at,
           last_error, first_attempt_at, in_doubt
    FROM outbox WHERE channel = ?
    AND (id = (SELECT MIN(id) FROM outbox WHERE channel = ?) OR alert_id = ?)
    ORDER BY id
"""

_WHOLE_CHANNEL: Final = """
    SELECT id, channel, alert_id, kind, payload, attempts, created_at, next_attempt_at,
           last_error, first_attempt_at, in_doubt
    FROM outbox WHERE channel = ? ORDER BY id
"""

_OLDEST: Final = """
    SELECT id, channel, alert_id, kind, payload, attempts, created_at, next_attempt_at,
           last_error, first_attempt_at, in_doubt
    FROM outbox ORDER BY created_at, id LIMIT 1
"""


def _entry(
    row: tuple[int, str, str, str, str, int, int, int, str | None, int | None, int],
) -> OutboxEntry:
    (
        entry_id,
        channel,
        alert_id,
        kind,
        payload,
        attempts,
        created_at,
        next_attempt_at,
        last_error,
        first_attempt_at,
        in_doubt,
    ) = row
    return OutboxEntry(
        id=entry_id,
        channel=channel,
        notification=_load(payload, alert_id=alert_id, kind=kind),
        attempts=attempts,
        created_at=_from_ms(created_at),
        next_attempt_at=_from_ms(next_attempt_at),
        last_error=last_error,
        first_attempt_at=_opt_from_ms(first_attempt_at),
        in_doubt=bool(in_doubt),
    )


_LAST_SAMPLES: Final = {
    # CROSS JOIN pins `series` as SQLite's outer loop: one index seek per series instead
    # of a scan of every sample (0.7 s -> 6 ms on 2M rows). PostgreSQL has no CROSS JOIN
    # ... ON; a LATERAL subquery is its way to say the same.
    Dialect.SQLITE: """
        SELECT s.name, x.at, x.count FROM series s CROSS JOIN samples x
        ON x.series_id = s.id AND x.at = (SELECT MAX(at) FROM samples WHERE series_id = s.id)
    """,
    Dialect.POSTGRESQL: """
        SELECT s.name, x.at, x.count FROM series s CROSS JOIN LATERAL (
            SELECT at, count FROM samples WHERE series_id = s.id ORDER BY at DESC LIMIT 1
        ) x
    """,
}

_SILENCES: Final = """
    SELECT id, rule, scope, starts, ends, created_by, comment FROM silences
"""


def _silence(row: tuple[int, str, str | None, int, int, str, str]) -> Silence:
    silence_id, rule, scope, starts, ends, by, comment = row
    return Silence(silence_id, rule, scope, _from_ms(starts), _from_ms(ends), by, comment)


def _cover_columns(cover: Cover) -> tuple[int | None, str | None, str | None]:
    """A cover as the held table's `silence_id`, `mute` and `inhibitor`."""
    return cover.silence, cover.mute, cover.inhibitor


def _write_held(conn: Database, held: Sequence[Held], released: Sequence[str]) -> None:
    conn.executemany("DELETE FROM held WHERE alert_id = ?", [(a,) for a in released])
    conn.executemany(
        """INSERT INTO held (alert_id, rule, series, card, silence_id, mute, inhibitor)
           VALUES (?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (alert_id) DO UPDATE SET card = excluded.card,
           silence_id = excluded.silence_id, mute = excluded.mute,
           inhibitor = excluded.inhibitor""",
        [(h.alert_id, h.rule, h.series, int(h.card), *_cover_columns(h.cover)) for h in held],
    )


# --- the store ------------------------------------------------------------------------


class Store:
    """The watchdog's durable state. Create with `Store.open` (SQLite) or `Store.connect`."""

    def __init__(self, db: Database, path: Path | None = None) -> None:
        """Wrap an already prepared database; use `Store.open` or `Store.connect` instead."""
        self.path = path
        """The SQLite file; None on PostgreSQL."""
        self.where = db.where
        """How messages name the database: the file's path, or the URL without password."""
        self._db = db
        self._lock = threading.RLock()
        self._lifecycle = _Lifecycle.OPEN
        self._series: dict[str, int] = dict(db.execute("SELECT name, id FROM series"))

    @staticmethod
    def default_path(state_dir: Path) -> Path:
        """Where the database lives inside the state directory."""
        return state_dir / DB_FILENAME

    @classmethod
    def open(cls, path: Path) -> Store:
        """Open (creating and migrating if needed) the database at `path`.

        Raises `StateError` naming the path if the directory cannot be created or written,
        the file cannot be read, is not a SQLite database or fails its integrity check,
        or carries a schema version newer than this watchdog knows.
        """
        path = Path(path)
        _check_directory(path.parent)
        _check_file(path)
        try:
            conn = sqlite3.connect(
                path,
                isolation_level=None,
                check_same_thread=False,
                timeout=_BUSY_TIMEOUT_MS / 1000,
            )
        except sqlite3.Error as exc:
            raise StateError(f"{path}: cannot open the database: {exc}") from exc
        try:
            _prepare(conn, path)
            return cls(SQLiteDatabase(conn, str(path)), path)
        except StateError:
            conn.close()
            raise
        except sqlite3.Error as exc:
            conn.close()
            raise StateError(f"{path}: cannot use the database: {exc}") from exc

    @classmethod
    def connect(cls, url: str) -> Store:
        """Connect to the PostgreSQL database at `url` (creating or migrating its schema).

        Raises `StateError` naming the database (never the password) if psycopg is not
        installed, the server cannot be reached or refuses the login, or the schema is
        newer than this watchdog knows.
        """
        try:
            from watchdog.store_pg import PostgresDatabase  # noqa: PLC0415 - an optional extra
        except ImportError:
            raise StateError(
                "WATCHDOG_DATABASE_URL: PostgreSQL needs psycopg: "
                "pip install 'convai-watchdog[postgresql]'"
            ) from None
        db = PostgresDatabase(url)
        try:
            return cls(db)
        except db.errors as exc:
            db.close()
            raise StateError(f"{db.where}: cannot use the database: {db.describe(exc)}") from None

    def close(self) -> None:
        """Close the connection; SQLite checkpoints the WAL into the main file. Idempotent."""
        with self._lock:
            if self._lifecycle is _Lifecycle.CLOSED:
                return
            self._lifecycle = _Lifecycle.CLOSED
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- plumbing ---

    @contextmanager
    def _reading(self, what: str) -> Iterator[Database]:
        """Hold the lock and translate database errors into `StateError` naming the database."""
        with self._lock:
            if self._lifecycle is _Lifecycle.CLOSED:
                raise StateError(f"{self.where}: {what}: the store is closed")
            try:
                yield self._db
            except self._db.errors as exc:
                raise StateError(f"{self.where}: {what} failed: {self._db.describe(exc)}") from exc

    @contextmanager
    def _writing(self, what: str) -> Iterator[Database]:
        """One write transaction: committed if the block returns, rolled back if it raises."""
        with self._reading(what) as conn, conn.transaction():
            yield conn

    # --- the atomic step ---

    def apply(
        self,
        *,
        samples: Sequence[Sample] = (),
        alerts: Sequence[AlertRecord] = (),
        notifications: Sequence[Notification] = (),
        held: Sequence[Held] = (),
        released: Sequence[str] = (),
    ) -> list[int]:
        """Persist one tick's effects in a single transaction; return the new outbox ids.

        Samples are stored (a second sample for the same series and millisecond replaces
        the first); an alert record is upserted by (rule, series), or deleted if INACTIVE;
        each notification is queued in its channel's outbox, due at once (at its `at`);
        `held` news is upserted by alert id, and the held news of the `released` alert
        ids deleted. If anything fails, nothing of this call is kept.
        """
        if not (samples or alerts or notifications or held or released):
            return []
        with self._lock:  # the series ids written and their cache change together
            new_series: dict[str, int] = {}
            outbox_ids = self._write_tick(
                samples, alerts, notifications, new_series, held=held, released=released
            )
            # Only after the commit: a rolled-back series id must not be remembered.
            self._series.update(new_series)
        return outbox_ids

    def _write_tick(
        self,
        samples: Sequence[Sample],
        alerts: Sequence[AlertRecord],
        notifications: Sequence[Notification],
        new_series: dict[str, int],
        *,
        held: Sequence[Held],
        released: Sequence[str],
    ) -> list[int]:
        outbox_ids: list[int] = []
        with self._writing("saving a tick") as conn:
            _write_held(conn, held, released)
            rows: list[tuple[int, int, int]] = []
            for sample in samples:
                series_id = self._series.get(sample.series, new_series.get(sample.series))
                if series_id is None:
                    series_id = new_series[sample.series] = _series_id(conn, sample.series)
                rows.append((series_id, _to_ms(sample.at), sample.count))
            conn.executemany(
                """INSERT INTO samples (series_id, at, count) VALUES (?, ?, ?)
                   ON CONFLICT (series_id, at) DO UPDATE SET count = excluded.count""",
                rows,
            )
            for alert in alerts:
                if alert.changes:
                    conn.execute(
                        """INSERT INTO flap_changes (rule, series, changes) VALUES (?, ?, ?)
                           ON CONFLICT (rule, series) DO UPDATE SET changes = excluded.changes""",
                        (
                            alert.rule,
                            alert.series,
                            json.dumps([_to_ms(at) for at in alert.changes]),
                        ),
                    )
                else:
                    conn.execute(
                        "DELETE FROM flap_changes WHERE rule = ? AND series = ?",
                        (alert.rule, alert.series),
                    )
                if alert.state is AlertState.INACTIVE:
                    conn.execute(
                        "DELETE FROM alerts WHERE rule = ? AND series = ?",
                        (alert.rule, alert.series),
                    )
                    continue
                fired = alert.fired_change
                conn.execute(
                    """INSERT INTO alerts (rule, series, alert_id, state, since, last_count,
                                           last_notified, condition, severity, escalation,
                                           acked_at, acked_by, flapping, fired_base, fired_count)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                       ON CONFLICT (rule, series) DO UPDATE SET
                           alert_id = excluded.alert_id, state = excluded.state,
                           since = excluded.since, last_count = excluded.last_count,
                           last_notified = excluded.last_notified,
                           condition = excluded.condition, severity = excluded.severity,
                           escalation = excluded.escalation, acked_at = excluded.acked_at,
                           acked_by = excluded.acked_by, flapping = excluded.flapping,
                           fired_base = excluded.fired_base,
                           fired_count = excluded.fired_count""",
                    (
                        alert.rule,
                        alert.series,
                        alert.alert_id,
                        alert.state.value,
                        _to_ms(alert.since),
                        alert.last_count,
                        _opt_to_ms(alert.last_notified),
                        alert.condition,
                        alert.severity.value,
                        alert.escalation,
                        _opt_to_ms(alert.acked_at),
                        alert.acked_by,
                        _dump_flapping(alert.flapping),
                        None if fired is None else fired.base,
                        None if fired is None else fired.count,
                    ),
                )
            for note in notifications:
                created = _to_ms(note.at)
                outbox_ids.append(
                    conn.insert(
                        """INSERT INTO outbox (channel, alert_id, kind, payload, created_at,
                                               attempts, next_attempt_at)
                           VALUES (?, ?, ?, ?, ?, 0, ?)""",
                        (
                            note.channel,
                            note.alert_id,
                            note.kind.value,
                            _dump(note),
                            created,
                            created,
                        ),
                    )
                )
        return outbox_ids

    # --- alerts ---

    def load_alerts(self) -> list[AlertRecord]:
        """Every pending or firing alert instance, ordered by (rule, series)."""
        with self._reading("loading alerts") as conn:
            rows = conn.execute(
                """SELECT rule, series, alert_id, state, since, last_count, last_notified,
                          condition, severity, escalation, acked_at, acked_by, flapping,
                          fired_base, fired_count
                   FROM alerts ORDER BY rule, series"""
            ).fetchall()
        changes = self.load_changes()
        return [
            AlertRecord(
                rule=rule,
                series=series,
                alert_id=alert_id,
                state=AlertState(state),
                since=_from_ms(since),
                last_count=last_count,
                last_notified=_opt_from_ms(last_notified),
                condition=condition,
                severity=Severity(severity),
                escalation=escalation,
                acked_at=_opt_from_ms(acked_at),
                acked_by=acked_by,
                flapping=_load_flapping(flapping),
                changes=changes.get((rule, series), ()),
                fired_change=(None if fired_base is None else FiredChange(fired_base, fired_count)),
            )
            for (
                rule,
                series,
                alert_id,
                state,
                since,
                last_count,
                last_notified,
                condition,
                severity,
                escalation,
                acked_at,
                acked_by,
                flapping,
                fired_base,
                fired_count,
            ) in rows
        ]

    def load_changes(self) -> dict[tuple[str, str], tuple[datetime, ...]]:
        """The recent firings and resolutions per (rule, series), counted for flapping."""
        with self._reading("loading flap changes") as conn:
            rows = conn.execute("SELECT rule, series, changes FROM flap_changes").fetchall()
        return {
            (rule, series): tuple(_from_ms(ms) for ms in json.loads(changes))
            for rule, series, changes in rows
        }

    # --- acknowledgement requests (`watchdog ack`) ---

    def request_ack(self, alert_id: str, *, by: str, at: datetime) -> int:
        """Queue an acknowledgement for the running daemon; returns the request's id."""
        with self._writing("queueing an acknowledgement") as conn:
            return conn.insert(
                'INSERT INTO ack_requests (alert_id, "by", requested_at) VALUES (?, ?, ?)',
                (alert_id, by, _to_ms(at)),
            )

    def ack_requests(self) -> list[AckRequest]:
        """The queued acknowledgements, oldest first."""
        with self._reading("reading acknowledgements") as conn:
            rows = conn.execute(
                'SELECT id, alert_id, "by", requested_at FROM ack_requests ORDER BY id'
            ).fetchall()
        return [AckRequest(i, alert_id, by, _from_ms(at)) for i, alert_id, by, at in rows]

    def drop_ack_request(self, request_id: int) -> None:
        """Forget a queued acknowledgement once the daemon applied it (no-op if unknown)."""
        with self._writing("dropping an acknowledgement") as conn:
            conn.execute("DELETE FROM ack_requests WHERE id = ?", (request_id,))

    def message_ref(self, alert_id: str) -> MessageRef | None:
        """The message standing for the alert (normally its firing message), if any."""
        with self._reading("reading a message ref") as conn:
            row = conn.execute(
                "SELECT channel, ts FROM messages WHERE alert_id = ?", (alert_id,)
            ).fetchone()
        return None if row is None else MessageRef(channel=row[0], ts=row[1])

    # --- samples ---

    def load_samples(self, *, since: datetime, series: str | None = None) -> list[Sample]:
        """Stored samples at or after `since` (of one series, or all), by (series, at)."""
        start = _to_ms(since)
        with self._reading("loading samples") as conn:
            if series is None:
                rows = conn.execute(
                    """SELECT s.name, x.at, x.count FROM samples x JOIN series s
                       ON s.id = x.series_id WHERE x.at >= ? ORDER BY s.name, x.at""",
                    (start,),
                ).fetchall()
            else:
                rows = conn.execute(
                    """SELECT s.name, x.at, x.count FROM samples x JOIN series s
                       ON s.id = x.series_id WHERE s.name = ? AND x.at >= ? ORDER BY x.at""",
                    (series, start),
                ).fetchall()
        return [Sample(series=name, at=_from_ms(at), count=count) for name, at, count in rows]

    def last_samples(self) -> dict[str, Sample]:
        """The newest stored sample of every series that has one."""
        with self._reading("loading the last samples") as conn:
            rows = conn.execute(_LAST_SAMPLES[conn.dialect]).fetchall()
        return {name: Sample(series=name, at=_from_ms(at), count=count) for name, at, count in rows}

    def sample_series(self) -> list[str]:
        """Every series the history has ever held (removed ones too), oldest first."""
        with self._reading("listing series") as conn:
            return [name for (name,) in conn.execute("SELECT name FROM series ORDER BY id")]

    def prune_samples(self, before: datetime, *, series: Iterable[str] | None = None) -> int:
        """Delete samples older than `before` (of `series`, else all); return how many went.

        Works series by series so each delete is a range scan of the primary key rather
        than a scan of the whole table. Passing a few series at a time keeps each
        transaction, and so each hold of the store's lock, short.
        """
        cutoff = _to_ms(before)
        removed = 0
        with self._writing("pruning samples") as conn:
            for series_id in _series_ids(conn, series):
                cursor = conn.execute(
                    "DELETE FROM samples WHERE series_id = ? AND at < ?", (series_id, cutoff)
                )
                removed += cursor.rowcount
        return removed

    def thin_samples(
        self,
        *,
        after: datetime,
        before: datetime,
        resolution: timedelta,
        series: Iterable[str] | None = None,
    ) -> int:
        """Keep one sample per series per `resolution` between `after` and `before`.

        Recent history stays at full resolution for change windows and sparklines; older
        history only needs to show the shape of the day for `replay --history`, so it is
        thinned to the first sample of each bucket. This keeps a week of 1,000 agents at
        15 s polls to a few hundred MB instead of most of a GB. `series` as for `prune_samples`.
        """
        low, high = _to_ms(after), _to_ms(before)
        bucket = max(1, int(resolution.total_seconds() * 1000))
        removed = 0
        with self._writing("thinning samples") as conn:
            for series_id in _series_ids(conn, series):
                cursor = conn.execute(
                    """DELETE FROM samples
                       WHERE series_id = ? AND at >= ? AND at < ?
                         AND at NOT IN (
                           SELECT MIN(at) FROM samples
                           WHERE series_id = ? AND at >= ? AND at < ?
                           GROUP BY at / ?)""",
                    (series_id, low, high, series_id, low, high, bucket),
                )
                removed += cursor.rowcount
        return removed

    # --- outbox ---

    def outbox_heads(self, now: datetime | None = None) -> list[OutboxEntry]:
        """Each channel's oldest undelivered entry, if due at `now` (all heads if None).

        Only heads are offered, so a channel's messages go out strictly in the order they
        were queued: a retrying entry holds back everything behind it in its channel.
        """
        with self._reading("reading the outbox") as conn:
            if now is None:
                rows = conn.execute(_ALL_HEADS).fetchall()
            else:
                rows = conn.execute(_DUE_HEADS, (_to_ms(now),)).fetchall()
        return [_entry(row) for row in rows]

    def next_due(self) -> datetime | None:
        """When the earliest channel head is due, or None if the outbox is empty."""
        with self._reading("reading the outbox") as conn:
            row = conn.execute(
                """SELECT MIN(next_attempt_at) FROM outbox
                   WHERE id IN (SELECT MIN(id) FROM outbox GROUP BY channel)"""
            ).fetchone()
        return _opt_from_ms(row[0])

    def mark_delivered(
        self, entry_id: int, *, alert_id: str, ref: MessageRef | None, card: bool = True
    ) -> None:
        """Slack accepted the entry: remove it and remember where the message landed.

        `ref` is the message now standing for the alert (see `watchdog.notify.Notifier`):
        it replaces any earlier ref, and a None ref keeps it. When the alert's RESOLVED
        notification is delivered, the episode is over and its ref is dropped. An entry
        that is not of the Slack card (`card=False`: PagerDuty, a webhook) is only
        removed. No-op for an unknown id.
        """
        with self._writing("marking a delivery") as conn:
            row = conn.execute("SELECT kind FROM outbox WHERE id = ?", (entry_id,)).fetchone()
            if row is None:
                return
            conn.execute("DELETE FROM outbox WHERE id = ?", (entry_id,))
            if not card:
                return
            if row[0] == TransitionKind.RESOLVED.value:
                conn.execute("DELETE FROM messages WHERE alert_id = ?", (alert_id,))
            elif ref is not None:
                conn.execute(
                    """INSERT INTO messages (alert_id, channel, ts) VALUES (?, ?, ?)
                       ON CONFLICT (alert_id) DO UPDATE SET
                       channel = excluded.channel, ts = excluded.ts""",
                    (alert_id, ref.channel, ref.ts),
                )

    def begin_attempts(self, entry_ids: Sequence[int], *, at: datetime) -> None:
        """Attempts of these entries start now: put them in doubt until an answer clears it.

        Committed before any request leaves, so a process that dies mid-call (SIGKILL, or
        a stop that abandons the call) leaves the entry in doubt for the next start. The
        first attempt's start is kept: a search for a lost post begins a little before it.
        """
        if not entry_ids:
            return
        with self._writing("recording a delivery attempt") as conn:
            conn.executemany(
                """UPDATE outbox SET in_doubt = 1,
                   first_attempt_at = COALESCE(first_attempt_at, ?) WHERE id = ?""",
                [(_to_ms(at), entry_id) for entry_id in entry_ids],
            )

    def mark_retry(
        self,
        entry_id: int,
        *,
        attempts: int,
        next_attempt_at: datetime,
        error: str,
        in_doubt: bool = False,
    ) -> None:
        """A delivery failed recoverably: record the attempt count, error and next try.

        `in_doubt` keeps the entry in doubt (Slack may hold its post); False clears it.
        """
        with self._writing("scheduling a retry") as conn:
            conn.execute(
                """UPDATE outbox SET attempts = ?, next_attempt_at = ?, last_error = ?,
                   in_doubt = ? WHERE id = ?""",
                (attempts, _to_ms(next_attempt_at), error, int(in_doubt), entry_id),
            )

    def dead_letter(
        self, entry_id: int, *, reason: str, attempts: int, at: datetime, card: bool = True
    ) -> None:
        """A delivery failed permanently: move the entry to the dead letters.

        `attempts` counts every attempt including the failing one; `at` is when it failed.
        A dead-lettered RESOLVED of the card ends the episode, so the alert's message ref is
        dropped (not one of another destination: `card=False`). No-op for an unknown id.
        """
        with self._writing("dead-lettering") as conn:
            row = conn.execute(
                "SELECT kind, alert_id FROM outbox WHERE id = ?", (entry_id,)
            ).fetchone()
            if row is None:
                return
            conn.execute(
                """INSERT INTO dead_letters (id, channel, alert_id, kind, payload, created_at,
                                            attempts, failed_at, reason)
                   SELECT id, channel, alert_id, kind, payload, created_at, ?, ?, ?
                   FROM outbox WHERE id = ?""",
                (attempts, _to_ms(at), reason, entry_id),
            )
            conn.execute("DELETE FROM outbox WHERE id = ?", (entry_id,))
            if card and row[0] == TransitionKind.RESOLVED.value:
                conn.execute("DELETE FROM messages WHERE alert_id = ?", (row[1],))

    # --- bringing the outbox up to date (see watchdog.notify.coalesce) ---

    def outbox_queue(self, channel: str, alert_id: str) -> list[OutboxEntry]:
        """`channel`'s head followed by the queued entries of `alert_id`, in queue order.

        What the coalescing planner needs to decide about the head: the entries of the
        head's own alert behind it (the head is included whatever its alert).
        """
        with self._reading("reading the outbox") as conn:
            rows = conn.execute(_CHANNEL_QUEUE, (channel, channel, alert_id)).fetchall()
        return [_entry(row) for row in rows]

    def outbox_channel(self, channel: str) -> list[OutboxEntry]:
        """Every entry queued for `channel`, in queue order (what storm control holds)."""
        with self._reading("reading the outbox") as conn:
            rows = conn.execute(_WHOLE_CHANNEL, (channel,)).fetchall()
        return [_entry(row) for row in rows]

    def fold_outbox(self, entry_id: int, *, into: Notification, consumed: Sequence[int]) -> None:
        """Replace entry `entry_id`'s notification with `into` and delete `consumed`.

        One transaction, so the entries made redundant go only together with the entry
        that now says what they said. The entry keeps its place, age and attempt count.
        """
        with self._writing("folding outbox entries") as conn:
            conn.execute(
                "UPDATE outbox SET kind = ?, payload = ? WHERE id = ?",
                (into.kind.value, _dump(into), entry_id),
            )
            conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in consumed])

    def discard(self, entry_id: int) -> None:
        """Delete an entry that need not be sent (its news is outdated); no-op if unknown."""
        with self._writing("discarding an outbox entry") as conn:
            conn.execute("DELETE FROM outbox WHERE id = ?", (entry_id,))

    def firing_never_sent(self, alert_id: str, *, channel: str | None = None) -> bool:
        """True when the alert's FIRING was dead-lettered on its first and only attempt.

        Such a card never reached Slack. One dead-lettered after earlier failed attempts
        might have (an answer can be lost), so it does not count. With `channel`, only
        that queue's dead letters count (another destination's say nothing of the card).
        """
        with self._reading("reading dead letters") as conn:
            row = conn.execute(
                """SELECT 1 FROM dead_letters
                   WHERE alert_id = ? AND kind = ? AND attempts <= 1
                   AND (CAST(? AS TEXT) IS NULL OR channel = ?) LIMIT 1""",
                (alert_id, TransitionKind.FIRING.value, channel, channel),
            ).fetchone()
        return row is not None

    def outbox_depth(self) -> int:
        """How many notifications await delivery, across all channels."""
        with self._reading("reading the outbox") as conn:
            (depth,) = conn.execute("SELECT COUNT(*) FROM outbox").fetchone()
        return int(depth)

    def oldest_pending(self) -> OutboxEntry | None:
        """The undelivered entry created longest ago (for health and metrics)."""
        with self._reading("reading the outbox") as conn:
            row = conn.execute(_OLDEST).fetchone()
        return None if row is None else _entry(row)

    def dead_letters(self, limit: int = 20) -> list[DeadLetter]:
        """The most recently dead-lettered notifications, newest first."""
        with self._reading("reading dead letters") as conn:
            rows = conn.execute(
                """SELECT id, channel, alert_id, kind, payload, attempts, created_at,
                          failed_at, reason
                   FROM dead_letters ORDER BY failed_at DESC, id DESC LIMIT ?""",
                (limit,),
            ).fetchall()
        return [
            DeadLetter(
                id=entry_id,
                channel=channel,
                notification=_load(payload, alert_id=alert_id, kind=kind),
                attempts=attempts,
                created_at=_from_ms(created_at),
                failed_at=_from_ms(failed_at),
                reason=reason,
            )
            for (
                entry_id,
                channel,
                alert_id,
                kind,
                payload,
                attempts,
                created_at,
                failed_at,
                reason,
            ) in rows
        ]

    # --- silences and held news (see watchdog.silences) ---

    def add_silence(
        self,
        rule: str,
        scope: str | None,
        starts: datetime,
        ends: datetime,
        by: str,
        comment: str,
    ) -> int:
        """Store a new silence; return its id (ids are never reused)."""
        if ends <= starts:
            raise ValueError("a silence must end after it starts")
        with self._writing("adding a silence") as conn:
            return conn.insert(
                """INSERT INTO silences (rule, scope, starts, ends, created_by, comment)
                   VALUES (?, ?, ?, ?, ?, ?)""",
                (rule, scope, _to_ms(starts), _to_ms(ends), by, comment),
            )

    def silences(self, at: datetime | None = None, *, now: datetime | None = None) -> list[Silence]:
        """The silences in force at `at`; with None, every one not yet ended (future ones too).

        Ordered by id. "Not yet ended" means ending after `now`, by default the wall clock
        (the daemon passes its own clock's time).
        """
        with self._reading("reading silences") as conn:
            if at is None:
                moment = _to_ms(datetime.now(UTC) if now is None else now)
                rows = conn.execute(f"{_SILENCES} WHERE ends > ? ORDER BY id", (moment,)).fetchall()
            else:
                moment = _to_ms(at)
                rows = conn.execute(
                    f"{_SILENCES} WHERE starts <= ? AND ends > ? ORDER BY id", (moment, moment)
                ).fetchall()
        return [_silence(row) for row in rows]

    def expire_silence(self, silence_id: int, at: datetime) -> bool:
        """End silence `silence_id` at `at`; False when it is unknown or already ended then.

        A silence that has not started yet is removed from the future the same way (its
        `starts` moves to `at` too, so it is an empty, ended silence).
        """
        moment = _to_ms(at)
        with self._writing("expiring a silence") as conn:
            cursor = conn.execute(
                """UPDATE silences SET ends = ?,
                   starts = CASE WHEN starts < ? THEN starts ELSE ? END
                   WHERE id = ? AND ends > ?""",
                (moment, moment - 1, moment - 1, silence_id, moment),
            )
            return cursor.rowcount == 1

    def take_silence_news(self, at: datetime) -> SilenceNews:
        """The silences whose creation, and those whose end by `at`, are not audited yet.

        Marked as audited in the same transaction: each is returned once, to be logged.
        """
        moment = _to_ms(at)
        with self._writing("auditing silences") as conn:
            created = conn.execute(f"{_SILENCES} WHERE created_audited = 0 ORDER BY id").fetchall()
            expired = conn.execute(
                f"{_SILENCES} WHERE expired_audited = 0 AND ends <= ? ORDER BY id", (moment,)
            ).fetchall()
            conn.execute("UPDATE silences SET created_audited = 1 WHERE created_audited = 0")
            conn.execute(
                "UPDATE silences SET expired_audited = 1 WHERE expired_audited = 0 AND ends <= ?",
                (moment,),
            )
        return SilenceNews(
            created=tuple(_silence(row) for row in created),
            expired=tuple(_silence(row) for row in expired),
        )

    def held(self) -> dict[str, Held]:
        """Every alert's held news, by alert id."""
        with self._reading("reading held news") as conn:
            rows = conn.execute(
                "SELECT alert_id, rule, series, card, silence_id, mute, inhibitor FROM held"
            ).fetchall()
        return {
            alert_id: Held(alert_id, rule, series, bool(card), Cover(silence_id, mute, inhibitor))
            for alert_id, rule, series, card, silence_id, mute, inhibitor in rows
        }

    def hold_back(self, entry_id: int, *, alert_id: str, held: Held | None) -> None:
        """Take outbox entry `entry_id` out of the queue unsent, a silence or mute covering it.

        In the same transaction the alert's held news becomes `held` (None: none).
        """
        with self._writing("holding back a notification") as conn:
            conn.execute("DELETE FROM outbox WHERE id = ?", (entry_id,))
            _write_held(conn, [] if held is None else [held], [] if held else [alert_id])

    def changed_elsewhere(self) -> bool:
        """True when another connection (another process) committed since the last call.

        One cheap query (see `Database.changed_elsewhere`). The daemon asks once a second,
        and re-reads what the CLI may change (silences, `watchdog ack` requests) when the
        answer is yes. The first call compares with the state when the store was opened.
        """
        with self._reading("checking for changes") as conn:
            return conn.changed_elsewhere()

    # --- meta ---

    def get_meta(self, key: str) -> str | None:
        """A small value the daemon keeps across restarts (e.g. a config fingerprint)."""
        with self._reading("reading meta") as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def enqueue_with_meta(self, note: Notification, *, key: str, value: str) -> int:
        """Queue `note` and store `value` under `key` in one transaction; the outbox id.

        For a notification that must be queued once only (the daily report): the record
        that it was queued cannot be lost without the queued notification, nor the reverse.
        """
        created = _to_ms(note.at)
        with self._writing("queueing a notification") as conn:
            entry_id = conn.insert(
                """INSERT INTO outbox (channel, alert_id, kind, payload, created_at,
                                       attempts, next_attempt_at)
                   VALUES (?, ?, ?, ?, ?, 0, ?)""",
                (note.channel, note.alert_id, note.kind.value, _dump(note), created, created),
            )
            conn.execute(
                """INSERT INTO meta (key, value) VALUES (?, ?)
                   ON CONFLICT (key) DO UPDATE SET value = excluded.value""",
                (key, value),
            )
        return entry_id

    def enqueue_all_with_meta(self, notes: Sequence[Notification], *, key: str, value: str) -> None:
        """Queue `notes` in order and store `value` under `key`, in one transaction.

        For storm control's end: the storm is forgotten only together with the closing
        summary and the cards it releases.
        """
        with self._writing("queueing notifications") as conn:
            for note in notes:
                created = _to_ms(note.at)
                conn.execute(
                    """INSERT INTO outbox (channel, alert_id, kind, payload, created_at,
                                           attempts, next_attempt_at)
                       VALUES (?, ?, ?, ?, ?, 0, ?)""",
                    (note.channel, note.alert_id, note.kind.value, _dump(note), created, created),
                )
            conn.execute(
                """INSERT INTO meta (key, value) VALUES (?, ?)
                   ON CONFLICT (key) DO UPDATE SET value = excluded.value""",
                (key, value),
            )

    def set_meta(self, key: str, value: str) -> None:
        """Store (or replace) a small value under `key`."""
        with self._writing("writing meta") as conn:
            conn.execute(
                """INSERT INTO meta (key, value) VALUES (?, ?)
                   ON CONFLICT (key) DO UPDATE SET value = excluded.value""",
                (key, value),
            )


# --- opening --------------------------------------------------------------------------


def _series_ids(conn: Database, names: Iterable[str] | None) -> list[int]:
    if names is None:
        return [series_id for (series_id,) in conn.execute("SELECT id FROM series")]
    found = (conn.execute("SELECT id FROM series WHERE name = ?", (n,)).fetchone() for n in names)
    return [row[0] for row in found if row is not None]


def _series_id(conn: Database, name: str) -> int:
    """The id of series `name`, added if new. Looked up first: another store on the same
    database (another daemon, before a fail-over) may have added it since we cached ids."""
    row = conn.execute("SELECT id FROM series WHERE name = ?", (name,)).fetchone()
    if row is not None:
        return int(row[0])
    return conn.insert("INSERT INTO series (name) VALUES (?)", (name,))


def _check_directory(directory: Path) -> None:
    """The state directory must exist (we create it) and accept new files (WAL needs them)."""
    if directory.exists() and not directory.is_dir():
        raise StateError(f"{directory}: the state directory path exists but is not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(
            f"{directory}: cannot create the state directory: {exc.strerror or exc}"
        ) from exc
    try:
        # A real write catches read-only mounts, which os.access misses for root.
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise StateError(
            f"{directory}: the state directory is not writable: {exc.strerror or exc}"
        ) from exc


def _check_file(path: Path) -> None:
    """An existing file must be a readable, writable SQLite database (a new one is fine)."""
    try:
        if not path.exists():
            return
        if not path.is_file():
            raise StateError(f"{path}: the database path exists but is not a regular file")
        with path.open("rb") as handle:
            header = handle.read(len(_SQLITE_MAGIC))
        if header and header != _SQLITE_MAGIC:
            raise StateError(f"{path}: not a SQLite database (corrupt or foreign file)")
        if not os.access(path, os.W_OK):
            raise StateError(f"{path}: the database file is not writable")
    except OSError as exc:
        raise StateError(f"{path}: cannot read the database file: {exc.strerror or exc}") from exc


def _prepare(conn: sqlite3.Connection, path: Path) -> None:
    """Set the pragmas, verify the file and bring the schema up to date."""
    conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
    (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
    if str(mode).lower() != "wal":
        raise StateError(f"{path}: cannot switch the database to WAL mode (got {mode!r})")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute(f"PRAGMA journal_size_limit = {_WAL_SIZE_LIMIT}")
    problems = [
        line
        for (text,) in conn.execute("PRAGMA quick_check(5)").fetchall()
        for line in str(text).splitlines()
    ]
    if problems != ["ok"]:
        raise StateError(f"{path}: the database is corrupt: {'; '.join(problems)}")
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise StateError(
            f"{path}: written by a newer watchdog (schema version {version}; this version "
            f"knows up to {SCHEMA_VERSION}); upgrade the watchdog or use another state directory"
        )
    for number in range(version + 1, SCHEMA_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            _MIGRATIONS[number - 1](conn)
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.rollback()
            raise


@contextmanager
def writer_lock(state_dir: Path) -> Iterator[None]:
    """Hold the state directory for one daemon: a second `run` on it would post twice.

    An advisory `flock` on `watchdog.lock`, released by the kernel when the process dies
    (even by SIGKILL), so a crash never leaves a stale lock behind.
    """
    path = state_dir / "watchdog.lock"
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        handle = path.open("a+", encoding="utf-8")
    except OSError as exc:
        raise StateError(f"{path}: cannot create the lock file: {exc.strerror or exc}") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise StateError(
                f"{state_dir}: another watchdog (pid {holder}) is running with this state "
                "directory; stop it first or give this one its own WATCHDOG_STATE_DIR"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
