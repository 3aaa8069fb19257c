"""The store's seam to a database: the SQL is written once, in SQLite's dialect.

`Store` (watchdog/store.py) talks to a `Database`: SQLite's file (`SQLiteDatabase`, here)
or a PostgreSQL server (`PostgresDatabase`, in watchdog/store_pg.py). Both take the same
statements with `?` placeholders and `ON CONFLICT` upserts, and guarantee the same things:

* `transaction()` is one write transaction, committed when its block returns and rolled
  back when it raises, and serialised with the writes of every other connection to the
  same database (SQLite's `BEGIN IMMEDIATE`; PostgreSQL's transaction-scoped advisory lock),
  so a read-then-write inside it sees no other writer's commit in between.
* `insert()` returns the new row's id (`lastrowid`; `RETURNING id`).
* `changed_elsewhere()` says whether another connection committed since the last call.
* Failures are the exceptions in `errors`; `Store` turns them into `StateError` whose
  message is `describe(exc)`: one line, without secrets.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from enum import Enum
from typing import Any, Protocol

__all__ = ["Database", "Dialect", "Rows", "SQLiteDatabase", "one_line"]


class Dialect(Enum):
    """Which server the SQL goes to, for the few statements that cannot be shared."""

    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"


class Rows(Protocol):
    """The result of one statement: a DB-API cursor, as both drivers return it."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Database(Protocol):
    """One connection to the state database (see the module docstring for the guarantees)."""

    dialect: Dialect
    where: str
    """How messages name the database: the file's path, or the URL without its password."""
    errors: tuple[type[Exception], ...]

    def describe(self, exc: BaseException) -> str: ...

    def execute(self, sql: str, params: Sequence[object] = ()) -> Rows: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None: ...

    def insert(self, sql: str, params: Sequence[object]) -> int: ...

    def transaction(self) -> AbstractContextManager[None]: ...

    def changed_elsewhere(self) -> bool: ...

    def close(self) -> None: ...


def one_line(exc: BaseException) -> str:
    """A driver's message on one line (PostgreSQL's span several)."""
    return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())


class SQLiteDatabase:
    """A prepared `sqlite3` connection (autocommit: `isolation_level=None`)."""

    dialect = Dialect.SQLITE
    errors: tuple[type[Exception], ...] = (sqlite3.Error,)

    def __init__(self, conn: sqlite3.Connection, where: str) -> None:
        self._conn = conn
        self.where = where
        self._data_version = self._version()

    def describe(self, exc: BaseException) -> str:
        return one_line(exc)

    def execute(self, sql: str, params: Sequence[object] = ()) -> Rows:
        return self._conn.execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        self._conn.executemany(sql, rows)

    def insert(self, sql: str, params: Sequence[object]) -> int:
        row_id = self._conn.execute(sql, params).lastrowid
        assert row_id is not None
        return row_id

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.rollback()
            raise

    def changed_elsewhere(self) -> bool:
        """SQLite's `PRAGMA data_version` changes with every commit made through another
        connection, never with this one's own."""
        version = self._version()
        changed = version != self._data_version
        self._data_version = version
        return changed

    def _version(self) -> int:
        (version,) = self._conn.execute("PRAGMA data_version").fetchone()
        return int(version)

    def close(self) -> None:
        self._conn.close()
