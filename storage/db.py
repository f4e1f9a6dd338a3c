"""Engines and transactions: SQLite (aiosqlite, WAL) by default, PostgreSQL (asyncpg).

Every state change runs in a *write* transaction. On SQLite that is ``BEGIN IMMEDIATE`` so
two writers never both read and then collide on upgrade to a write lock; readers use plain
``BEGIN`` and see a consistent WAL snapshot. On PostgreSQL, writers lock the rows they read
(``FOR UPDATE``) and compare the request's version on update, so a lost race is retried
and re-decided on fresh state rather than recorded twice. A deadlock or serialisation
failure that PostgreSQL reports is the same kind of lost race: :meth:`Database.write`
raises :class:`Conflict` for it, and the store runs the command again.

Several replicas may share one PostgreSQL database. Its engine gives up connecting after
:data:`CONNECT_TIMEOUT` seconds and checks a pooled connection before using it, so while
the server is down a request fails fast (and is answered "try again in a moment"), and
once it is back the next request or tick simply works, without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import StaticPool

from storage import sqlite_inline
from storage.sqlexec import Sql, SqliteSql, sql_of, translated

DEFAULT_URL = "sqlite+aiosqlite:///./approvals.db"
# A health check must answer even when the database accepts connections but says nothing
# (asyncpg alone would wait 60 s): slower than this counts as not answering.
PING_TIMEOUT = 2.0
# PostgreSQL: a Slack request must be answered within 3 s even while the server is
# unreachable, so connecting gives up well before that; a statement that hangs longer
# than STATEMENT_TIMEOUT (a server that stopped answering mid-query) is abandoned.
CONNECT_TIMEOUT = 1.5
STATEMENT_TIMEOUT = 60.0
POOL_TIMEOUT = 5.0  # waiting for a free pooled connection
# SQLSTATEs of a transaction that lost a race and may simply be run again
_RETRYABLE = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected
_READONLY = "approvals_readonly"
# SQLite: WAL pages (4 KB each) after which a commit copies the log into the database file
# itself, stalling for milliseconds: normally the background work's checkpoint (every
# second, outside any request's commit: Database.checkpoint) has done it long before.
CHECKPOINT_PAGES = 10_000


class Conflict(Exception):
    """The transaction lost a race (a changed version, a deadlock); run the command again."""


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def make_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An engine for ``url`` with the pragmas and pool settings this product relies on."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        memory = parsed.database in (None, "", ":memory:")
        # statements run on the loop's thread (see storage.sqlite_inline), not aiosqlite's
        options: dict[str, Any] = {
            "async_creator": sqlite_inline.creator(":memory:" if memory
                                                   else str(parsed.database))}
        if memory:
            options["poolclass"] = StaticPool
        engine = create_async_engine(url, **options, **kwargs)
        _sqlite_setup(engine, wal=not memory)
        return engine
    pg_options: dict[str, Any] = {
        "connect_args": {"timeout": CONNECT_TIMEOUT, "command_timeout": STATEMENT_TIMEOUT},
        "pool_pre_ping": True, "pool_size": 10, "max_overflow": 10,
        "pool_timeout": POOL_TIMEOUT}
    return create_async_engine(url, **{**pg_options, **kwargs})


def _sqlite_setup(engine: AsyncEngine, *, wal: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself, so writers can ask for IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if wal:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # 0: a lock held elsewhere is waited for by sqlite_inline, off the loop's back
        cursor.execute("PRAGMA busy_timeout=0")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        readonly = conn.get_execution_options().get(_READONLY, False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


class WriteGate:
    """A lock with two queues, served in turn while both have waiters.

    An urgent waiter does not wait behind a long queue of ordinary ones (nor they behind
    it): after an ordinary holder the lock goes to the next urgent waiter, and the other
    way round. Each queue is first come, first served, and the lock is handed straight to
    the next waiter on release, so a newcomer never overtakes a queue.
    """

    def __init__(self) -> None:
        self._held = False
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._ordinary: deque[asyncio.Future[None]] = deque()
        self._urgent_turn = True

    async def acquire(self, *, urgent: bool = False) -> None:
        if not self._held and not self._urgent and not self._ordinary:
            self._held = True
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        (self._urgent if urgent else self._ordinary).append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed the lock just as we were cancelled: pass it on
            raise

    def release(self) -> None:
        queues = ((self._urgent, self._ordinary) if self._urgent_turn
                  else (self._ordinary, self._urgent))
        for queue in queues:
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)  # the lock stays held, by the waiter now
                    self._urgent_turn = queue is not self._urgent
                    return
        self._held = False


class Database:
    """The engine and its two kinds of transaction."""

    def __init__(self, url: str = DEFAULT_URL, *, engine: AsyncEngine | None = None,
                 ping_timeout: float = PING_TIMEOUT) -> None:
        self.url = url
        self.ping_timeout = ping_timeout
        self.engine = engine or make_engine(url)
        self.sqlite = is_sqlite(url)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False,
                                            autoflush=False)
        # SQLite has one writer at a time. Writers of this process queue here instead of
        # in SQLite's busy handler, which polls with sleeps: under load that sleeping, not
        # the work, was most of a command's latency. Other connections (the CLI, a second
        # engine) are waited for by storage.sqlite_inline.
        self._write_gate = WriteGate() if self.sqlite else None
        # SQLite: whether this process's commits also checkpoint the WAL into the database
        # file. A checkpoint runs inside the committing call, on the event loop's thread;
        # a process that must answer quickly leaves them to another (bot.worker).
        self.checkpoints = True
        if self.sqlite:
            event.listen(self.engine.sync_engine, "connect", self._on_connect)
        # SQLite: connections of their own for the hot paths' transactions (read_sql,
        # write_sql): a session's costs about 0.3 ms of Python before its first statement
        path = make_url(url).database if self.sqlite else None
        self._reader_path = path if path not in (None, "", ":memory:") else None
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = asyncio.Lock()
        self._writer: sqlite3.Connection | None = None
        # SQLite: the background tick's checkpoints, on a connection of their own, in a
        # thread (see checkpoint); one at a time
        self._checkpointer: sqlite3.Connection | None = None
        self._checkpoint_lock = asyncio.Lock()

    def _on_connect(self, dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_PAGES if self.checkpoints else 0}")
        cursor.close()

    async def leave_checkpoints_to_others(self) -> None:
        """Stop checkpointing the WAL from this process (SQLite; see ``checkpoints``)."""
        if self.sqlite and self.checkpoints:
            self.checkpoints = False
            await self.engine.dispose()  # pooled connections reconnect with the setting
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            async with self._checkpoint_lock:
                self._close_checkpointer()

    @asynccontextmanager
    async def write(self, *, urgent: bool = False) -> AsyncIterator[AsyncSession]:
        """One transaction that may change state; commits on success, rolls back on error.

        ``urgent``: on SQLite, queue apart from ordinary writers and take turns with them
        (the outbox's short bookkeeping, so messages keep flowing behind a queue of
        commands, and commands behind a busy outbox).
        Raises :class:`Conflict` when PostgreSQL aborted it as a deadlock victim or for a
        serialisation failure: nothing was written, and the caller may run it again.
        """
        try:
            async with contextlib.AsyncExitStack() as stack:
                if self._write_gate is not None:
                    await self._write_gate.acquire(urgent=urgent)
                    stack.callback(self._write_gate.release)
                session = await stack.enter_async_context(self._sessions())
                await stack.enter_async_context(session.begin())
                yield session
        except DBAPIError as exc:
            if _sqlstate(exc) in _RETRYABLE:
                raise Conflict(str(exc.orig)) from exc
            raise

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A read-only snapshot."""
        async with self._sessions() as session:
            await session.connection(execution_options={_READONLY: True})
            try:
                yield session
            finally:
                session.expunge_all()  # keep what was loaded readable after the snapshot ends
                await session.rollback()

    @asynccontextmanager
    async def read_sql(self) -> AsyncIterator[Sql]:
        """A read-only snapshot for fixed SQL (:mod:`storage.sqlexec`): on a SQLite file,
        on a connection kept for these reads, with no session; otherwise in a :meth:`read`
        session."""
        if self._reader_path is None:
            async with self.read() as session:
                yield await sql_of(session, sqlite=self.sqlite)
            return
        async with self._reader_lock:  # one snapshot at a time on the one connection
            if self._reader is None:
                self._reader = sqlite3.connect(self._reader_path, timeout=0,
                                               isolation_level=None, check_same_thread=False)
                self._reader.execute("PRAGMA query_only = ON")
            reader = self._reader
            await _sqlite_call(lambda: reader.execute("BEGIN").close(), "BEGIN")
            try:
                yield SqliteSql(reader)
            finally:
                reader.rollback()

    @asynccontextmanager
    async def write_sql(self, *, urgent: bool = False) -> AsyncIterator[Sql]:
        """A transaction that may change state, for fixed SQL (:mod:`storage.sqlexec`):
        on a SQLite file, ``BEGIN IMMEDIATE`` on a connection kept for these, in turn with
        every other writer of this process (:class:`WriteGate`), with no session;
        otherwise a :meth:`write` session's. Commits on success, rolls back on error."""
        if self._reader_path is None:
            async with self.write(urgent=urgent) as session:
                yield await sql_of(session, sqlite=self.sqlite)
            return
        assert self._write_gate is not None
        await self._write_gate.acquire(urgent=urgent)
        try:
            writer = self._writer or self._connect_writer(self._reader_path)
            await _sqlite_call(lambda: writer.execute("BEGIN IMMEDIATE").close(),
                               "BEGIN IMMEDIATE")
            try:
                yield SqliteSql(writer)
                await _sqlite_call(writer.commit, "COMMIT")
            except BaseException:
                if writer.in_transaction:
                    writer.rollback()
                raise
        finally:
            self._write_gate.release()

    def _connect_writer(self, path: str) -> sqlite3.Connection:
        writer = sqlite3.connect(path, timeout=0, isolation_level=None,
                                 check_same_thread=False)
        # as the engine's connections are set up (_sqlite_setup, _on_connect)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON",
                       "busy_timeout=0",
                       f"wal_autocheckpoint={CHECKPOINT_PAGES if self.checkpoints else 0}"):
            writer.execute(f"PRAGMA {pragma}").close()
        self._writer = writer
        return writer

    async def checkpoint(self) -> tuple[int, int] | None:
        """SQLite: copy the write-ahead log into the database file as far as no reader
        still needs it (``PASSIVE``: nobody waits), unless this process leaves that to
        others. Run from the background work's tick, so that no request's commit pays
        for it (``CHECKPOINT_PAGES``), on a connection of its own in a thread, so that
        this process's work goes on meanwhile: copying a second's log under load (7,000-
        9,000 pages, 40-50 ms) on the event loop held up the delivery half's round, and
        behind it the creation of requests and their acknowledgements. Returns the pages
        in the log and those copied (``-1`` each when another process was checkpointing)."""
        path = self._reader_path
        if path is None or not self.checkpoints:
            return None
        statement = "PRAGMA wal_checkpoint(PASSIVE)"

        def run() -> tuple[int, int]:
            if self._checkpointer is None:
                self._checkpointer = sqlite3.connect(path, timeout=0, isolation_level=None,
                                                     check_same_thread=False)
            _, logged, copied = self._checkpointer.execute(statement).fetchone()
            return int(logged), int(copied)

        async with self._checkpoint_lock:
            started = time.perf_counter()
            try:
                return await asyncio.to_thread(run)
            except sqlite3.OperationalError as exc:
                if sqlite_inline.busy(exc):
                    return -1, -1  # as when another checkpoint is under way: next tick
                raise translated(exc, statement, ()) from exc
            except sqlite3.Error as exc:
                raise translated(exc, statement, ()) from exc
            finally:
                sqlite_inline.database_time.seconds += time.perf_counter() - started

    def _close_checkpointer(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None

    async def ping(self) -> bool:
        """True when the database answers a trivial query within ``ping_timeout`` seconds."""
        from sqlalchemy import text

        try:
            async with asyncio.timeout(self.ping_timeout), self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

    async def close(self) -> None:
        for connection in (self._reader, self._writer):
            if connection is not None:
                connection.close()
        self._reader = self._writer = None
        async with self._checkpoint_lock:  # (not while a checkpoint's thread uses it)
            self._close_checkpointer()
        await self.engine.dispose()



async def _sqlite_call(call: Callable[[], Any], statement: str) -> Any:
    """``call`` on a raw SQLite connection, waiting out another connection's lock, its
    errors as SQLAlchemy raises them."""
    try:
        return await sqlite_inline.patiently(call)
    except sqlite3.Error as exc:
        raise translated(exc, statement, ()) from exc


def _sqlstate(exc: DBAPIError) -> str | None:
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return str(code) if code else None
