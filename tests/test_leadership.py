"""Leadership (watchdog.leadership) against a real PostgreSQL server: one lock, one leader."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any, TypeVar

import psycopg
import pytest

from watchdog.leadership import Leadership, Timing, holder_name, leader_of

_T = TypeVar("_T")
IMMEDIATE = Timing(retry=0.1, confirm=0.1, fresh=3.0, grace=0.0)
"""Posting allowed at once after winning: these tests are about the lock, not the grace."""


def run(coro: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    return asyncio.run(coro())


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def terminate(url: str, name: str) -> int:
    """`pg_terminate_backend` on every session named `name`; returns how many ended."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (name,),
        ).fetchall()
    return len(rows)


def test_first_contender_leads_and_a_second_is_refused(postgres_url: str) -> None:
    """The first daemon wins the lock; a second one is refused and learns who leads."""

    async def scenario() -> tuple[bool, bool, str | None, str | None]:
        first = Leadership(postgres_url, timing=IMMEDIATE, name="watchdog a pid 1")
        second = Leadership(postgres_url, timing=IMMEDIATE, name="watchdog b pid 2")
        try:
            won = await first.try_acquire()
            refused = not await second.try_acquire()
            leader = await asyncio.to_thread(leader_of, postgres_url)
            return won, refused, second.leader_seen, leader
        finally:
            await first.close()
            await second.close()

    won, refused, seen, leader = run(scenario)
    assert won
    assert refused
    assert seen == "watchdog a pid 1"
    assert leader == "watchdog a pid 1"


def test_closing_the_leader_frees_the_lock_for_the_other(postgres_url: str) -> None:
    """When the leader's session ends, the next attempt of the other daemon wins."""

    async def scenario() -> tuple[bool, bool]:
        first = Leadership(postgres_url, timing=IMMEDIATE, name="watchdog a pid 1")
        second = Leadership(postgres_url, timing=IMMEDIATE, name="watchdog b pid 2")
        try:
            await first.try_acquire()
            before = await second.try_acquire()
            await first.close()
            return before, await second.try_acquire()
        finally:
            await first.close()
            await second.close()

    before, after = run(scenario)
    assert not before
    assert after
    assert leader_of(postgres_url) is None  # both closed: nobody leads


def test_terminated_session_is_noticed_and_the_fence_closes(postgres_url: str) -> None:
    """pg_terminate_backend on the lock session: the next confirmation fails, the fence
    closes for good, and another daemon wins the lock."""
    name = holder_name("host-a", 4242)

    async def scenario() -> tuple[bool, str | None, bool, str | None, bool, bool]:
        leader = Leadership(postgres_url, timing=IMMEDIATE, name=name)
        other = Leadership(postgres_url, timing=IMMEDIATE, name="watchdog b pid 2")
        try:
            await leader.try_acquire()
            confirmed = await leader.confirm()
            open_before = leader.closed()
            assert await asyncio.to_thread(terminate, postgres_url, name) == 1
            still = await leader.confirm()
            return (
                confirmed,
                open_before,
                still,
                leader.closed(),
                leader.leading,
                await other.try_acquire(),
            )
        finally:
            await leader.close()
            await other.close()

    confirmed, open_before, still, closed_after, leading, other_won = run(scenario)
    assert confirmed
    assert open_before is None
    assert not still
    assert closed_after == "not the leader"
    assert not leading
    assert other_won


def test_fence_waits_out_the_grace_and_closes_without_fresh_confirmation(
    postgres_url: str,
) -> None:
    """A new leader may post only after its grace, and only while a confirmation is fresh."""
    clock = FakeMonotonic()

    async def scenario() -> list[str | None]:
        leadership = Leadership(
            postgres_url,
            timing=Timing(retry=0.1, confirm=1.0, fresh=3.0, grace=10.0),
            monotonic=clock,
        )
        try:
            seen = [leadership.closed()]
            await leadership.try_acquire()
            seen.append(leadership.closed())  # within the grace
            clock.now += 10.0
            await leadership.confirm()
            seen.append(leadership.closed())  # grace over, just confirmed
            clock.now += 3.5
            seen.append(leadership.closed())  # confirmation stale
            await leadership.confirm()
            seen.append(leadership.closed())
            return seen
        finally:
            await leadership.close()

    seen = run(scenario)
    assert seen[0] == "not the leader"
    assert "grace" in str(seen[1])
    assert seen[2] is None
    assert "not confirmed" in str(seen[3])
    assert seen[4] is None


def test_unreachable_database_is_a_failed_attempt(postgres_url: str) -> None:
    """No server at the URL: the attempt fails (no exception), nobody leads."""
    dead = postgres_url.rsplit(":", 1)[0] + ":1/none"

    async def scenario() -> bool:
        leadership = Leadership(dead, timing=IMMEDIATE)
        try:
            return await leadership.try_acquire()
        finally:
            await leadership.close()

    assert run(scenario) is False


@pytest.mark.parametrize(
    ("host", "pid", "expected"),
    [("db1", 7, "watchdog db1 pid 7"), ("h" * 80, 123456, "watchdog " + "h" * 43 + " pid 123456")],
)
def test_holder_name_fits_application_name(host: str, pid: int, expected: str) -> None:
    """The session name says host and pid, within PostgreSQL's 63 bytes."""
    assert holder_name(host, pid) == expected
    assert len(holder_name(host, pid).encode()) <= 63


@pytest.mark.parametrize(("poll", "period"), [(1.0, 0.25), (15.0, 1.0), (0.2, 0.05)])
def test_timing_replaces_a_dead_leader_within_two_poll_intervals(
    poll: float, period: float
) -> None:
    """A standby's retry plus the new leader's wait before restoring stays well under two
    poll intervals, confirmations come at most a second apart, and the grace before the
    first post exceeds the old leader's fresh period plus one post's timeout."""
    timing = Timing.of(timedelta(seconds=poll), timeout=10.0)
    assert timing.retry == timing.confirm == period
    assert timing.retry + timing.fresh < 2 * poll
    assert timing.grace > timing.fresh + 10.0
