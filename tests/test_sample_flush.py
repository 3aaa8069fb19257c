"""A poll cycle's samples are written off the event loop, and none is lost on the way.

The store is the real SQLite store with one hook: its samples-only write can be held
(a `threading.Event`), as a cold, week-old database holds it for 100 ms and more. While
it is held, the event loop must keep running; when the write fails, the samples wait for
the next one; a reload waits for the write in flight so that it reads the whole history.
"""

from __future__ import annotations

import asyncio
import io
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from watchdog.clock import SystemClock
from watchdog.daemon import Daemon
from watchdog.model import AlertRecord, Notification, Sample
from watchdog.notify import ConsoleNotifier
from watchdog.rules import load_config
from watchdog.simulated import SimulatedSource
from watchdog.store import StateError, Store

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class HeldStore(Store):
    """The real store; a samples-only write waits for `release` (or fails, if told)."""

    entered: threading.Event
    release: threading.Event
    fail_next: bool

    def apply(
        self,
        *,
        samples: Sequence[Sample] = (),
        alerts: Sequence[AlertRecord] = (),
        notifications: Sequence[Notification] = (),
    ) -> list[int]:
        if samples and not alerts and not notifications:
            self.entered.set()
            assert self.release.wait(10), "the test never released the write"
            if self.fail_next:
                self.fail_next = False
                raise StateError("disk full (injected)")
        return super().apply(samples=samples, alerts=alerts, notifications=notifications)


def _open(tmp_path: Path) -> HeldStore:
    store = HeldStore.open(tmp_path / "state.db")
    assert isinstance(store, HeldStore)
    store.entered, store.release, store.fail_next = threading.Event(), threading.Event(), False
    return store


def _daemon(tmp_path: Path, store: Store) -> Daemon:
    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[[rules]]\nname = "drop"\nkind = "change"\ndrop = 5\nwindow = "5m"\n', encoding="utf-8"
    )
    clock = SystemClock()
    return Daemon(
        config=load_config(rules),
        source=SimulatedSource(clock, midnight=T0, agents=()),
        store=store,
        notifier=ConsoleNotifier(io.StringIO()),
        clock=clock,
    )


def _samples(n: int, start: int = 0) -> list[Sample]:
    at = [T0 + timedelta(seconds=start + i) for i in range(n)]
    return [Sample("workspace", t, 10 + start + i) for i, t in enumerate(at)]


def test_a_held_sample_write_leaves_the_event_loop_running(tmp_path: Path) -> None:
    asyncio.run(_a_held_sample_write_leaves_the_event_loop_running(tmp_path))


async def _a_held_sample_write_leaves_the_event_loop_running(tmp_path: Path) -> None:
    with _open(tmp_path) as store:
        daemon = _daemon(tmp_path, store)
        daemon._unsaved.samples.extend(_samples(3))
        flush = asyncio.create_task(daemon.flush_samples())
        await asyncio.to_thread(store.entered.wait, 5)
        # The write is held in its thread, and yet the loop runs this test's code: a
        # write on the loop would hold it here until the store gave up waiting.
        await asyncio.sleep(0.05)
        assert not flush.done()
        store.release.set()
        await asyncio.wait_for(flush, 5)
        assert [s.count for s in store.load_samples(since=T0)] == [10, 11, 12]
        assert not daemon._unsaved


def test_samples_of_a_failed_write_go_with_the_next_one(tmp_path: Path) -> None:
    asyncio.run(_samples_of_a_failed_write_go_with_the_next_one(tmp_path))


async def _samples_of_a_failed_write_go_with_the_next_one(tmp_path: Path) -> None:
    with _open(tmp_path) as store:
        daemon = _daemon(tmp_path, store)
        store.fail_next = True
        store.release.set()
        daemon._unsaved.samples.extend(_samples(2))
        await daemon.flush_samples()
        assert store.load_samples(since=T0) == []
        assert [s.count for s in daemon._unsaved.samples] == [10, 11]
        daemon._unsaved.samples.extend(_samples(1, start=2))
        await daemon.flush_samples()
        assert [s.count for s in store.load_samples(since=T0)] == [10, 11, 12]
        assert not daemon._unsaved


def test_a_reload_reads_the_history_after_the_write_in_flight(tmp_path: Path) -> None:
    asyncio.run(_a_reload_reads_the_history_after_the_write_in_flight(tmp_path))


async def _a_reload_reads_the_history_after_the_write_in_flight(tmp_path: Path) -> None:
    """The reloader takes the samples lock: it runs only once the held write is in."""
    with _open(tmp_path) as store:
        daemon = _daemon(tmp_path, store)
        daemon._unsaved.samples.extend(_samples(3))
        flush = asyncio.create_task(daemon.flush_samples())
        await asyncio.to_thread(store.entered.wait, 5)
        read: list[int] = []

        async def reloader() -> None:
            async with daemon._samples_lock:
                read.extend(s.count for s in store.load_samples(since=T0))

        reading = asyncio.create_task(reloader())
        await asyncio.sleep(0.05)
        assert not reading.done()  # it waits for the write
        store.release.set()
        await asyncio.wait_for(asyncio.gather(flush, reading), 5)
        assert read == [10, 11, 12]


class RacingStore(Store):
    """After its first commit, a write lingers (up to 0.5 s) while a second write runs:
    the moment where a series id committed but not yet cached could be inserted twice."""

    committed: threading.Event
    second_done: threading.Event

    @contextmanager
    def _writing(self, what: str) -> Iterator[sqlite3.Connection]:
        second = self.committed.is_set()
        try:
            with super()._writing(what) as conn:
                yield conn
        finally:
            if second:
                self.second_done.set()
        if not second:
            self.committed.set()
            self.second_done.wait(0.5)


def test_a_new_series_written_from_two_threads_gets_one_id(tmp_path: Path) -> None:
    """The series-id cache changes with the commit, under the store's lock, so a flush in
    its thread and a commit on the loop never both insert the same new series."""
    store = RacingStore.open(tmp_path / "state.db")
    assert isinstance(store, RacingStore)
    store.committed, store.second_done = threading.Event(), threading.Event()
    with store:
        errors: list[BaseException] = []

        def write(at: datetime) -> None:
            try:
                store.apply(samples=[Sample("agent_new", at, 1)])
            except StateError as exc:
                errors.append(exc)

        first = threading.Thread(target=write, args=(T0,))
        first.start()
        assert store.committed.wait(5)
        write(T0 + timedelta(seconds=1))
        first.join()
        assert errors == []
        assert store.sample_series() == ["agent_new"]
        assert len(store.load_samples(since=T0)) == 2
