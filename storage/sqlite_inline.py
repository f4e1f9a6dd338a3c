"""SQLite on the event loop's own thread, behind SQLAlchemy's ``aiosqlite`` dialect.

aiosqlite runs every call -- ``cursor()``, ``execute``, ``fetchall``, ``close`` -- in a
worker thread and hands the result back through the event loop: two thread switches and a
GIL hand-over per call, about a dozen calls per statement. On a busy two-core machine that
hopping, not SQLite, was most of a command's time (a submission is about a dozen
statements). A local SQLite statement takes microseconds, so this adapter runs it
directly with :mod:`sqlite3` and returns.

The one thing that may wait is a lock held by another connection (another process, or a
second engine in this one). SQLite's own busy handler would sleep *on the loop*, stalling
every request; so connections get ``busy_timeout = 0`` and a statement that finds the
database busy is retried here after an ``asyncio.sleep``, up to :data:`BUSY_TIMEOUT`.

It implements the part of aiosqlite's interface that SQLAlchemy's adapter uses, and is
passed to it as ``async_creator`` (see :func:`storage.db.make_engine`).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

BUSY_TIMEOUT = 30.0  # seconds a statement waits for another connection's lock
# longest pause between tries: the server and its worker hand the lock back and forth
MAX_PAUSE = 0.001


class _Clock:
    """Seconds spent inside SQLite by this process (benchmarks read it)."""

    seconds = 0.0


database_time = _Clock()
_BUSY_MESSAGES = ("database is locked", "database table is locked", "database is busy")


def busy(exc: sqlite3.OperationalError) -> bool:
    """Whether ``exc`` says another connection holds a lock (try again later)."""
    return str(exc).lower().startswith(_BUSY_MESSAGES)


async def patiently(call: Callable[[], Any]) -> Any:
    """``call()``, again after short async sleeps while another connection holds a lock."""
    deadline: float | None = None
    pause = 0.001
    while True:
        started = time.perf_counter()
        try:
            return call()
        except sqlite3.OperationalError as exc:
            if not busy(exc):
                raise
            now = time.monotonic()
            deadline = deadline if deadline is not None else now + BUSY_TIMEOUT
            if now >= deadline:
                raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, MAX_PAUSE)
        finally:
            database_time.seconds += time.perf_counter() - started


class Cursor:
    """aiosqlite's cursor interface over a :class:`sqlite3.Cursor`, without a thread."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    async def __aenter__(self) -> Cursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> Cursor:
        if parameters is None:
            await patiently(lambda: self._cursor.execute(sql))
        else:
            await patiently(lambda: self._cursor.execute(sql, parameters))
        return self

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> Cursor:
        rows = list(parameters)
        await patiently(lambda: self._cursor.executemany(sql, rows))
        return self

    async def fetchone(self) -> Any:
        started = time.perf_counter()
        try:
            return self._cursor.fetchone()
        finally:
            database_time.seconds += time.perf_counter() - started

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        started = time.perf_counter()
        try:
            return self._cursor.fetchmany(size if size is not None else self._cursor.arraysize)
        finally:
            database_time.seconds += time.perf_counter() - started

    async def fetchall(self) -> list[Any]:
        started = time.perf_counter()
        try:
            return self._cursor.fetchall()
        finally:
            database_time.seconds += time.perf_counter() - started

    async def close(self) -> None:
        self._cursor.close()

    async def nextset(self) -> None:
        return None

    async def setinputsizes(self, *sizes: Any) -> None:
        return None

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value


class _Immediate:
    """Stands in for aiosqlite's work queue, which SQLAlchemy uses to set the isolation
    level on the connection's thread: here that thread is the caller's, so run it now."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def put_nowait(self, item: tuple[asyncio.Future[Any], Callable[[], Any]]) -> None:
        future, function = item
        try:
            future.set_result(function())
        except Exception as exc:
            future.set_exception(exc)


class Connection:
    """aiosqlite's connection interface over a :class:`sqlite3.Connection`."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._conn = connection
        self._connection: sqlite3.Connection | None = connection
        self._tx = _Immediate(connection)

    def cursor(self) -> Cursor:
        return Cursor(self._conn.cursor())

    @property
    def sqlite(self) -> sqlite3.Connection:
        """The ``sqlite3`` connection itself (for :mod:`storage.sqlexec`)."""
        return self._conn

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> Cursor:
        return await self.cursor().execute(sql, parameters)

    async def commit(self) -> None:
        await patiently(self._conn.commit)

    async def rollback(self) -> None:
        self._conn.rollback()

    async def close(self) -> None:
        if self._connection is not None:
            self._connection = None
            self._conn.close()

    def stop(self) -> None:
        if self._connection is not None:
            self._connection = None
            self._conn.close()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        self._conn.isolation_level = value  # type: ignore[assignment]


def creator(database: str) -> Callable[[], Any]:
    """An ``async_creator`` for :func:`sqlalchemy.ext.asyncio.create_async_engine`."""

    async def connect() -> Connection:
        connection = sqlite3.connect(database, timeout=0, isolation_level=None,
                                     check_same_thread=False)
        return Connection(connection)

    return connect
