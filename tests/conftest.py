"""Shared fixtures: databases (a SQLite file, and PostgreSQL where a server answers)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from flows.policy import Policy, load_policy
from storage.db import Database
from storage.migrate import upgrade
from storage.store import Store

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_POLICY = ROOT / "docs" / "policy.example.yml"
PG_ADMIN_URL = os.environ.get("APPROVALS_TEST_PG",
                              "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


async def _pg_answers() -> str | None:
    """None when PostgreSQL answers, else why not."""
    import asyncpg

    dsn = PG_ADMIN_URL.replace("postgresql+asyncpg", "postgresql")
    try:
        conn = await asyncio.wait_for(asyncpg.connect(dsn), timeout=3)
    except Exception as exc:
        return f"no PostgreSQL server answers at {dsn} ({type(exc).__name__}: {exc})"
    await conn.close()
    return None


_pg_reason: str | bool | None = False


def pg_unavailable() -> str | None:
    global _pg_reason
    if _pg_reason is False:
        _pg_reason = asyncio.run(_pg_answers())
    assert _pg_reason is not True
    return _pg_reason


def _pg_exec(sql: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL.replace("postgresql+asyncpg", "postgresql"))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'approvals.db'}"
        return
    reason = pg_unavailable()
    if reason:
        pytest.skip(reason)
    name = f"approvals_t_{uuid.uuid4().hex[:12]}"
    _pg_exec(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        _pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def database(db_url: str) -> AsyncIterator[Database]:
    db = Database(db_url)
    await upgrade(db.engine)
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture
def policy() -> Policy:
    return load_policy(EXAMPLE_POLICY)


@pytest.fixture
async def store(database: Database, policy: Policy) -> Store:
    st = Store(database)
    await st.register_policy(policy, source=EXAMPLE_POLICY.read_text(), at=T0)
    return st
