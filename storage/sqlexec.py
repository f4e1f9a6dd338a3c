"""Fixed SQL for the hot paths, without SQLAlchemy's per-statement work.

Every new request, click and card runs a dozen small statements. Through SQLAlchemy's
async session each costs about 100 µs of Python (building the statement and its cache key,
an execution context, bind and result processing, a greenlet switch); on SQLite, whose
statements take a few µs, that was most of the bot's CPU. :class:`Sql` runs fixed SQL
text (``?`` placeholders) in the transaction its session already opened:

* on SQLite, directly on the session's ``sqlite3`` connection (the event loop's thread:
  see :mod:`storage.sqlite_inline`), counted in ``database_time`` like the rest;
* on PostgreSQL, through SQLAlchemy's ``text()`` on the same session: the same
  transaction, row locks and error handling as every other statement.

Values go in as Python values (aware datetimes included) and datetimes come back as aware
UTC (:meth:`Sql.time`), stored exactly as :class:`storage.coltypes.UTCDateTime` stores
them, so rows written here and through the ORM read the same either way.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

from sqlalchemy import TextClause, text
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.ext.asyncio import AsyncSession

from storage import sqlite_inline

Params = Sequence[Any]
_PLACEHOLDER = re.compile(r"\?")


def _naive(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("naive datetime given to the database; use an aware UTC time")
    return value.astimezone(UTC).replace(tzinfo=None)


_STORED: dict[datetime, str] = {}  # recent datetimes as SQLite stores them


def _stored(value: datetime) -> str:
    """``value`` as SQLite's DATETIME column stores it (what SQLAlchemy writes):
    ``2026-11-25 09:00:00.000000``, naive UTC. A request's rows repeat a few times many
    times over: those are formatted once."""
    text = _STORED.get(value)
    if text is None:
        if len(_STORED) >= 4096:
            _STORED.clear()
        text = _STORED[value] = _naive(value).isoformat(" ", "microseconds")
    return text


# sqlite3 converts a datetime parameter with this, in C, when it binds it: the statements'
# parameters go in as they are, without a Python pass over each row's values. (SQLAlchemy
# converts its own datetimes to text before they reach sqlite3, so this changes nothing
# for it; a naive datetime raises ValueError here as it does there.)
sqlite3.register_adapter(datetime, _stored)


class Sql(Protocol):
    """Statements inside one open transaction (see the module's docstring)."""

    sqlite: bool

    async def rows(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        """Every row ``sql`` selects (or returns)."""
        ...

    async def run(self, sql: str, params: Params = ()) -> int:
        """Run one statement; the number of rows it changed."""
        ...

    async def many(self, sql: str, rows: Sequence[Params]) -> None:
        """Run ``sql`` once per row of parameters."""
        ...

    async def insert_ids(self, sql: str, rows: Sequence[Params]) -> list[int]:
        """Run an ``INSERT`` once per row; the new rows' ids, in order."""
        ...

    def time(self, value: Any) -> datetime:
        """A datetime column's value as an aware UTC datetime."""
        ...


def translated(exc: sqlite3.Error, sql: str, params: Any) -> StatementError:
    """``exc`` as SQLAlchemy raises it (``OperationalError``, ``IntegrityError``...), so a
    statement run here fails the way one run through a session does."""
    return DBAPIError.instance(sql, params, exc, sqlite3.Error)


class SqliteSql:
    """:class:`Sql` on a ``sqlite3`` connection whose transaction is already open."""

    sqlite = True

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._conn = connection

    async def rows(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        started = time.perf_counter()
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise translated(exc, sql, params) from exc
        finally:
            sqlite_inline.database_time.seconds += time.perf_counter() - started

    async def run(self, sql: str, params: Params = ()) -> int:
        started = time.perf_counter()
        try:
            return self._conn.execute(sql, params).rowcount
        except sqlite3.Error as exc:
            raise translated(exc, sql, params) from exc
        finally:
            sqlite_inline.database_time.seconds += time.perf_counter() - started

    async def many(self, sql: str, rows: Sequence[Params]) -> None:
        if not rows:
            return
        started = time.perf_counter()
        try:
            self._conn.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise translated(exc, sql, rows) from exc
        finally:
            sqlite_inline.database_time.seconds += time.perf_counter() - started

    async def insert_ids(self, sql: str, rows: Sequence[Params]) -> list[int]:
        started = time.perf_counter()
        try:
            ids = []
            for one in rows:
                cursor = self._conn.execute(sql, one)
                ids.append(int(cursor.lastrowid or 0))
            return ids
        except sqlite3.Error as exc:
            raise translated(exc, sql, rows) from exc
        finally:
            sqlite_inline.database_time.seconds += time.perf_counter() - started

    def time(self, value: Any) -> datetime:
        if isinstance(value, datetime):
            return value.replace(tzinfo=UTC)
        return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


class AlchemySql:
    """:class:`Sql` through SQLAlchemy's ``text()`` on a session (PostgreSQL)."""

    sqlite = False
    _texts: ClassVar[dict[str, tuple[TextClause, int]]] = {}  # SQL with ? -> text()

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    @classmethod
    def _text(cls, sql: str) -> tuple[TextClause, int]:
        known = cls._texts.get(sql)
        if known is None:
            counter = iter(range(10_000))
            bound = _PLACEHOLDER.sub(lambda _: f":p{next(counter)}", sql)
            known = cls._texts[sql] = (text(bound), next(counter))
        return known

    @staticmethod
    def _bind(params: Params) -> dict[str, Any]:
        return {f"p{i}": _naive(v) if isinstance(v, datetime) else v
                for i, v in enumerate(params)}

    async def rows(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        statement, _ = self._text(sql)
        result = await self._session.execute(statement, self._bind(params))
        return [tuple(row) for row in result.all()]

    async def run(self, sql: str, params: Params = ()) -> int:
        statement, _ = self._text(sql)
        result = await self._session.execute(statement, self._bind(params))
        return int(getattr(result, "rowcount", 0))

    async def many(self, sql: str, rows: Sequence[Params]) -> None:
        if not rows:
            return
        statement, _ = self._text(sql)
        await self._session.execute(statement, [self._bind(r) for r in rows])

    async def insert_ids(self, sql: str, rows: Sequence[Params]) -> list[int]:
        statement, _ = self._text(f"{sql} RETURNING id")
        ids = []
        for one in rows:
            result = await self._session.execute(statement, self._bind(one))
            ids.append(int(result.scalar_one()))
        return ids

    def time(self, value: Any) -> datetime:
        if isinstance(value, datetime):
            return value.replace(tzinfo=UTC)
        return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


async def sql_of(session: AsyncSession, *, sqlite: bool) -> Sql:
    """The :class:`Sql` of ``session``'s transaction (made once per session)."""
    known = session.info.get("sql")
    if known is not None:
        return known  # type: ignore[no-any-return]
    made: Sql
    if sqlite:
        connection = await session.connection()
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection
        assert isinstance(driver, sqlite_inline.Connection), driver
        made = SqliteSql(driver.sqlite)
    else:
        made = AlchemySql(session)
    session.info["sql"] = made
    return made
