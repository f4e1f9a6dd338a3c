"""Shared fixtures: databases (a SQLite file, and PostgreSQL where a server answers).

``make test`` runs everything on SQLite, and the ``db_url`` tests (storage, migrations)
and the PostgreSQL-only ones (replicas) on PostgreSQL too. ``make test-pg``
(``APPROVALS_TEST_DATABASE=postgresql``) runs the rest of what touches a database on
PostgreSQL: every test that drives a :class:`~bot.standin.workspace.Workspace`, each
Workspace on a database of its own (copied from a template migrated once per run, dropped
afterwards). What ``make test`` already ran on PostgreSQL, and tests that touch no
database, are left out. Without a server, the tests are skipped, saying why.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.standin.web_api import FakeSlack
from bot.standin.workspace import Workspace
from flows.policy import Policy, load_policy
from storage.db import Database
from storage.migrate import upgrade
from storage.store import Store

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_POLICY = ROOT / "docs" / "policy.example.yml"
PG_ADMIN_URL = os.environ.get("APPROVALS_TEST_PG",
                              "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
# which database the Workspace tests run on: sqlite (make test) or postgresql (make test-pg)
TEST_DATABASE = os.environ.get("APPROVALS_TEST_DATABASE", "sqlite")


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


async def _pg_run(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL.replace("postgresql+asyncpg", "postgresql"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _pg_exec(sql: str) -> None:
    asyncio.run(_pg_run(sql))


def pg_database_url(name: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def _fresh_name() -> str:
    return f"approvals_t_{uuid.uuid4().hex[:12]}"


def _fresh_pg_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test, dropped after it (or a skip)."""
    reason = pg_unavailable()
    if reason:
        pytest.skip(reason)
    name = _fresh_name()
    _pg_exec(f'CREATE DATABASE "{name}"')
    try:
        yield pg_database_url(name)
    finally:
        _pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    """The Slack stand-in on a real local port (a test module may override it)."""
    async with FakeSlack() as fake:
        yield fake


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database (for tests of PostgreSQL alone: replicas)."""
    yield from _fresh_pg_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'approvals.db'}"
        return
    yield from _fresh_pg_database()


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


# --------------------------------------------------------------------------- make test-pg


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``APPROVALS_TEST_DATABASE=postgresql``, keep the Workspace tests."""
    if TEST_DATABASE == "sqlite":
        return
    if TEST_DATABASE != "postgresql":
        raise pytest.UsageError(f"APPROVALS_TEST_DATABASE={TEST_DATABASE!r}: use sqlite or "
                                "postgresql")
    keep = [item for item in items if _on_postgresql(item)]
    dropped = [item for item in items if item not in keep]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
    reason = pg_unavailable()
    if reason:
        for item in keep:
            item.add_marker(pytest.mark.skip(reason=f"APPROVALS_TEST_DATABASE=postgresql, but "
                                                    f"{reason}"))


def _on_postgresql(item: pytest.Item) -> bool:
    if "db_url" in getattr(item, "fixturenames", ()):
        return False  # make test runs it on both databases already
    return _drives_workspaces(getattr(item, "module", None))


def _drives_workspaces(module: object) -> bool:
    """The module uses the Workspace: itself, or through helpers of a tests/ module."""
    for value in vars(module).values() if module is not None else ():
        if value is Workspace:
            return True
        home = sys.modules.get(getattr(value, "__module__", "") or "")
        if (home is not None and home.__name__.startswith("tests.")
                and getattr(home, "Workspace", None) is Workspace):
            return True
    return False


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A database migrated to the latest schema once per run; Workspaces copy it."""
    name = f"approvals_tpl_{uuid.uuid4().hex[:12]}"
    _pg_exec(f'CREATE DATABASE "{name}"')

    async def migrate() -> None:
        db = Database(pg_database_url(name))
        try:
            await upgrade(db.engine)
        finally:
            await db.close()

    try:
        asyncio.run(migrate())
        yield name
    finally:
        for leftover in [*_COPIES, name]:  # a Workspace that failed before it was entered
            _pg_exec(f'DROP DATABASE IF EXISTS "{leftover}" WITH (FORCE)')


_COPIES: set[str] = set()  # copies of the template not dropped yet


@asynccontextmanager
async def _copy_of(template: str) -> AsyncIterator[str]:
    name = _fresh_name()
    await _pg_run(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    _COPIES.add(name)
    try:
        yield pg_database_url(name)
    finally:
        await _pg_run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        _COPIES.discard(name)


@pytest.fixture(autouse=True)
def _workspaces_on_postgresql(request: pytest.FixtureRequest,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    """``make test-pg``: every Workspace without a database of its own gets a fresh
    PostgreSQL database, copied from :func:`pg_template`."""
    if TEST_DATABASE != "postgresql":
        return
    template = request.getfixturevalue("pg_template")
    monkeypatch.setattr(Workspace, "scratch_database", functools.partial(_copy_of, template))
