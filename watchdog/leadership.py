"""Who leads among daemons sharing one PostgreSQL database, and when the leader may act.

Exactly one daemon leads: the one holding a session-level PostgreSQL advisory lock
(`pg_try_advisory_lock(LOCK_KEY)`) on a connection of its own, opened in autocommit mode
and named `watchdog <host> pid <pid>` (`application_name`), so that anyone can read who
leads from `pg_locks` joined with `pg_stat_activity` (`leader_of`). The server frees the
lock the moment that session ends: the leader's process exits or is killed (the kernel
closes its socket), or someone runs `pg_terminate_backend` on it. A standby tries the
lock every `Timing.retry` seconds (a quarter poll interval, at most 1 s).

When the leader's host vanishes without closing its sockets (power cut, network
partition) the server only learns it from TCP keepalives: the lock session asks the server
for short ones (`SERVER_KEEPALIVE`), so the lock is freed within about 15 s then.

Fencing. The leader confirms its lock every `Timing.confirm` seconds (one query; an error
or no answer for `LOST_AFTER` seconds ends the leadership for good). A confirmation counts
from when it was sent, which is before the server saw the lock held, and keeps the
leader `fresh` for `Timing.fresh` seconds, up to the next confirmation's answer. Only a
fresh leader writes to the store, and only a fresh leader whose take-over grace is over
starts a post (`closed`). A new leader waits `Timing.fresh` after winning the lock before
it restores the state, and `Timing.grace` = `fresh` + `timeout` (the longest one post
may take) + `GRACE_MARGIN` before its first post. So every post of the old leader started
before (its last confirmation sent) + `fresh`, and ended `timeout` later; the lock was
lost after that confirmation was sent and won by the new leader later still, which then
waits longer than `fresh` + `timeout`: two leaders never post at the same time. Both
daemons must run with the same `poll_interval` (the same rules file): the new leader
derives the old leader's `fresh` from its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import psycopg

__all__ = [
    "LOCK_KEY",
    "Leadership",
    "Timing",
    "holder_name",
    "leader_of",
]

LOCK_KEY = 0x5741544348444F47
"""The advisory lock's key ("WATCHDOG" in ASCII); per database, so deployments on
different databases never contend."""
LOST_AFTER = 10.0
"""A confirmation (or an attempt to win the lock) unanswered this long has failed."""
GRACE_MARGIN = 1.0
"""Added to the take-over grace: the old leader's threads may be scheduled late."""
SERVER_KEEPALIVE = "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3"
"""The lock session's keepalives on the server's side: a vanished leader host frees the
lock after about 5 + 2 x 3 s instead of the operating system's two hours."""
_NAME_LIMIT = 63
"""PostgreSQL keeps `application_name` to 63 bytes (NAMEDATALEN - 1)."""
_TRY = "SELECT pg_try_advisory_lock(%(key)s)"
_HOLDER = """SELECT a.application_name, l.pid = pg_backend_pid()
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
    AND l.classid = (%(key)s >> 32) AND l.objid = (%(key)s & 4294967295)
    AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"""
"""Who holds the lock (its session's name), and whether that is the asking session."""


def holder_name(host: str | None = None, pid: int | None = None) -> str:
    """The `application_name` of a daemon's lock session: `watchdog <host> pid <pid>`."""
    host = host or socket.gethostname()
    pid = pid or os.getpid()
    suffix = f" pid {pid}"
    return ("watchdog " + host)[: _NAME_LIMIT - len(suffix)] + suffix


@dataclass(frozen=True, slots=True)
class Timing:
    """The leadership's periods in seconds, derived from the poll interval (see above)."""

    retry: float
    confirm: float
    fresh: float
    grace: float

    @classmethod
    def of(cls, poll_interval: timedelta, *, timeout: float) -> Timing:
        """`timeout`: the longest one post (one Slack request) may take."""
        quarter = min(1.0, poll_interval.total_seconds() / 4)
        fresh = 3 * quarter  # the next confirmation is sent `quarter` after an answer
        grace = fresh + timeout + GRACE_MARGIN
        return cls(retry=quarter, confirm=quarter, fresh=fresh, grace=grace)


def leader_of(url: str) -> str | None:
    """Who holds the lock on the database at `url` (its `application_name`); None if nobody.

    Raises `psycopg.Error` when the database cannot be asked.
    """
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(_HOLDER, {"key": LOCK_KEY}).fetchone()
    return None if row is None else str(row[0])


class Leadership:
    """This daemon's claim to lead: the lock session, its confirmations and the fence.

    The coroutines run on the daemon's loop; `closed` may be called from any thread (the
    Slack delivery threads): it reads values the loop replaces whole.
    """

    def __init__(
        self,
        url: str,
        *,
        timing: Timing,
        name: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self.name = name or holder_name()
        self.timing = timing
        self._monotonic = monotonic
        self._conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        self._won_at: float | None = None  # when the lock was won (the answer came)
        self._confirmed_at: float | None = None  # when the last good confirmation was sent
        self._lost = False
        self.leader_seen: str | None = None
        """The other holder named by the last failed attempt (None: nobody, or unknown)."""
        self.unreachable: str | None = None
        """Why the last attempt could not ask the database (None: it could)."""

    @property
    def leading(self) -> bool:
        return self._won_at is not None and not self._lost

    async def try_acquire(self) -> bool:
        """Try once to win the lock; True when this daemon now leads.

        An unreachable database is a failed attempt (the session is opened afresh next
        time, `unreachable` says why); `leader_seen` then keeps its last value.
        """
        if self.leading:
            return True
        sent = self._monotonic()
        try:
            async with asyncio.timeout(LOST_AFTER):
                conn = await self._connection()
                won = await _fetch(conn, _TRY)
                holder = None if won is None or won[0] else await _fetch(conn, _HOLDER)
        except (psycopg.Error, OSError, TimeoutError) as exc:
            self.unreachable = f"{type(exc).__name__}: {_first_line(exc)}"
            await self._drop_connection()
            return False
        self.unreachable = None
        if won is None or not won[0]:
            self.leader_seen = None if holder is None else str(holder[0])
            return False
        self.leader_seen = self.name
        self._won_at, self._confirmed_at, self._lost = self._monotonic(), sent, False
        return True

    async def confirm(self) -> bool:
        """Check that the lock is still held; on False this daemon no longer leads.

        A failure, a timeout or an answer that the lock is gone all end the leadership
        for good: the fence closes at once and stays closed.
        """
        if not self.leading or self._conn is None:
            return False
        sent = self._monotonic()
        try:
            async with asyncio.timeout(LOST_AFTER):
                row = await _fetch(self._conn, _HOLDER)
        except (psycopg.Error, OSError, TimeoutError):
            row = None
        if row is None or row[1] is not True:
            self._lost = True
            self.leader_seen = None
            await self._drop_connection()
            return False
        self._confirmed_at = sent
        return True

    def fresh(self) -> bool:
        """Whether this daemon leads with a fresh confirmation: it may write to the store."""
        return (
            self.leading
            and self._confirmed_at is not None
            and self._monotonic() - self._confirmed_at <= self.timing.fresh
        )

    def closed(self) -> str | None:
        """Why a post must not start now; None when this daemon may post.

        Closed unless it leads, its take-over grace is over and its last confirmation is
        fresh (see the module docstring).
        """
        if not self.leading or self._won_at is None or self._confirmed_at is None:
            return "not the leader"
        now = self._monotonic()
        if now < self._won_at + self.timing.grace:
            return "leader for less than the take-over grace: the previous one may still post"
        if not self.fresh():
            return f"leadership not confirmed for {now - self._confirmed_at:.1f}s"
        return None

    async def close(self) -> None:
        """End the lock session: the lock is free for a standby at once."""
        self._lost = self._won_at is not None
        await self._drop_connection()

    async def _connection(self) -> psycopg.AsyncConnection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self._url,
                autocommit=True,
                application_name=self.name,
                connect_timeout=int(LOST_AFTER),
                keepalives=1,
                keepalives_idle=5,
                keepalives_interval=2,
                keepalives_count=3,
                options=SERVER_KEEPALIVE,
            )
        return self._conn

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.close()


async def _fetch(
    conn: psycopg.AsyncConnection[tuple[object, ...]], query: str
) -> tuple[object, ...] | None:
    """The first row of `query` (with the lock's key), or None."""
    cursor = await conn.execute(query, {"key": LOCK_KEY})
    return await cursor.fetchone()


def _first_line(exc: BaseException) -> str:
    """An error's first line: psycopg's messages name host and port, never the password."""
    return (str(exc).strip().splitlines() or [""])[0][:200]
