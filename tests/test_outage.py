"""PostgreSQL stopped and started again under a running `approvals serve`.

The test runs a PostgreSQL instance of its own (``initdb`` into a temporary directory, its
own port, as the ``postgres`` OS user when run as root), so it can stop and start the
server without touching anyone else's. While the database is down, ``/healthz`` says 503
and Slack gets a "try again in a moment" answer within 3 s; nothing acknowledged before is
lost; once the database is back the same process recovers by itself: health, new
requests, the messages queued before, and timers that fell due meanwhile.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.standin.web_api import FakeSlack
from tests.process_support import Server, clean_env, eventually, free_port

log = logging.getLogger(__name__)

POLICY = """\
version: 1
currency: USD
directory:
  U_ALICE: {manager: U_BOB}
  U_BOB: {manager: U_CAROL}
levels:
  - {name: Manager, approvers: manager}
reminders: {after: 3s, every: 1h}
"""
SLACK_DEADLINE = 3.0  # seconds Slack waits for an acknowledgement
TRY_AGAIN = "try again in a moment"
_REF = re.compile(r"PR-(\d+)")


def _binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@dataclass
class OwnPostgres:
    """A throw-away PostgreSQL server: its data directory, its port, its log."""

    bin: Path
    root: Path
    port: int
    as_postgres: list[str]

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def _command(self, tool: str, *args: str) -> list[str]:
        return [*self.as_postgres, str(self.bin / tool), *args]

    def initdb(self) -> None:
        subprocess.run(self._command("initdb", "-D", str(self.data), "-U", "postgres",
                                     "--auth=trust", "-E", "UTF8", "--no-sync"),
                       check=True, capture_output=True, env=_pg_env(), timeout=120)

    async def start(self) -> None:
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off")
        await self._ctl("start", "-w", "-t", "60", "-l", str(self.root / "server.log"),
                        "-o", options)

    async def stop(self, mode: str = "fast") -> None:
        await self._ctl("stop", "-w", "-t", "60", "-m", mode)

    async def _ctl(self, *args: str) -> None:
        process = await asyncio.create_subprocess_exec(
            *self._command("pg_ctl", "-D", str(self.data), *args), env=_pg_env(),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await process.communicate()
        assert process.returncode == 0, f"pg_ctl {args[0]}: {out.decode()}\n{self.log()}"

    def stop_now(self) -> None:
        """Whatever state it is in: stopped (for clean-up, never raises)."""
        subprocess.run(self._command("pg_ctl", "-D", str(self.data), "stop", "-m",
                                     "immediate"), capture_output=True, env=_pg_env(),
                       timeout=60, check=False)

    def log(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def _pg_env() -> dict[str, str]:
    return {**clean_env(), "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    binaries = _binaries()
    if binaries is None or not (binaries / "pg_ctl").exists():
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        runuser = shutil.which("runuser")
        if runuser is None:
            pytest.skip("running as root, and runuser is missing to run PostgreSQL as postgres")
        try:
            import pwd

            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root, and there is no postgres user to run PostgreSQL as")
        as_postgres = [runuser, "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="approvals-pg-"))  # /tmp: reachable by postgres
    if as_postgres:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    instance = OwnPostgres(bin=binaries, root=root, port=free_port(), as_postgres=as_postgres)
    try:
        instance.initdb()
        yield instance
    finally:
        instance.stop_now()
        shutil.rmtree(root, ignore_errors=True)


async def _create_database(instance: OwnPostgres, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(host="127.0.0.1", port=instance.port, user="postgres",
                                 database="postgres")
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def _approvals(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", *args], capture_output=True,
                          text=True, timeout=60, check=False,
                          env={**clean_env(), "DATABASE_URL": database_url})


async def _timed(work: Any) -> tuple[float, Any]:
    started = time.monotonic()
    result = await work
    return time.monotonic() - started, result


async def _health(server: Server) -> int:
    async with httpx.AsyncClient(timeout=10) as http:
        return (await http.get(f"{server.base}/healthz")).status_code


def cards_to(slack: FakeSlack, user: str, ref: str) -> list[dict[str, Any]]:
    return [m for m in slack.messages_to(user)
            if (m.get("metadata") or {}).get("event_type") == "approval_card"
            and m.get("thread_ts", m["ts"]) == m["ts"]
            and ((m.get("metadata") or {}).get("event_payload") or {}).get("request")
            == int(ref.removeprefix("PR-"))]


def replies_to(slack: FakeSlack, user: str) -> list[dict[str, Any]]:
    return [m for m in slack.messages_to(user) if m.get("thread_ts", m["ts"]) != m["ts"]]


async def test_the_bot_rides_out_a_database_restart(own_postgres: OwnPostgres,
                                                    slack: FakeSlack, tmp_path: Path) -> None:
    pg = own_postgres
    await pg.start()
    await _create_database(pg, "approvals")
    url = pg.url("approvals")
    upgraded = _approvals("db", "upgrade", database_url=url)
    assert upgraded.returncode == 0, upgraded.stderr
    policy = tmp_path / "policy.yml"
    policy.write_text(POLICY)
    server = Server(slack=slack, workdir=tmp_path, policy=policy, database_url=url,
                    extra_env={"APPROVALS_OUTBOX_LEASE_SECONDS": "2"})
    await server.start()
    try:
        await _ride_out(pg, server, slack, url)
    finally:
        server.stop()


async def _ride_out(pg: OwnPostgres, server: Server, slack: FakeSlack, url: str) -> None:
    acked: list[str] = []
    refused: list[float] = []

    async def purchase(text: str) -> tuple[float, str]:
        elapsed, answer = await _timed(server.command("U_ALICE", text))
        assert answer.status_code == 200, answer.text
        found = _REF.search(answer.text)
        if found:
            acked.append(found.group(0))
        else:
            assert TRY_AGAIN in answer.text, answer.text
            refused.append(elapsed)
        assert elapsed < SLACK_DEADLINE, f"answered after {elapsed:.2f}s: {answer.text}"
        return elapsed, answer.text

    await purchase("$120 USD Cables for the meeting room")
    await eventually(lambda: len(cards_to(slack, "U_BOB", "PR-1")) == 1, what="PR-1's card")
    # Slack stops answering for a while: PR-2's card stays queued in the outbox
    slack.fail("chat.postMessage", status=500, rate=1.0)
    await purchase("$340 USD Headsets for support")
    assert "PR-2" in acked

    # requests keep arriving while the database goes down (fast shutdown)
    steady = asyncio.Event()

    async def keep_asking() -> None:
        n = 0
        while not steady.is_set():
            n += 1
            await purchase(f"${100 + n} USD Printer paper batch {n}")
            await asyncio.sleep(0.05)

    before = len(acked)
    traffic = asyncio.create_task(keep_asking())
    await eventually(lambda: len(acked) >= before + 2, what="traffic before the outage")
    stop_took, _ = await _timed(pg.stop("fast"))
    down_at = time.monotonic()
    health_took, health = await _timed(_health(server))
    assert health == 503
    log.info("pg_ctl stop -m fast: %.2fs; the next /healthz: 503 in %.3fs", stop_took,
             health_took)
    elapsed, answer = await purchase("$99 USD Whiteboard markers")
    assert TRY_AGAIN in answer
    log.info("a /purchase while down answered in %.2fs: %s", elapsed, answer)
    slack.heal()  # Slack is fine again; the database is still down for a few seconds
    await eventually(lambda: time.monotonic() - down_at > 3.5, what="PR-2's reminder to be due")
    steady.set()
    await traffic
    assert refused, "no request met the outage"
    log.info("%d requests acknowledged, %d answered 'try again' (slowest %.2fs)", len(acked),
             len(refused), max(refused))

    # the database comes back; the same process recovers by itself
    await pg.start()
    back_at = time.monotonic()
    await _until_healthy(server)
    log.info("/healthz 200 %.2fs after PostgreSQL was back", time.monotonic() - back_at)
    await purchase("$150 USD Chairs for the new hires")
    newest = acked[-1]
    await eventually(lambda: len(cards_to(slack, "U_BOB", newest)) == 1, within=10,
                     what="the new request's card")
    # what was queued before the outage goes out, and the timer that fell due fires
    await eventually(lambda: len(cards_to(slack, "U_BOB", "PR-2")) == 1, within=15,
                     what="PR-2's card, queued before the outage")
    await eventually(lambda: any("PR-2" in str(m.get("text")) for m in replies_to(
        slack, "U_BOB")), within=10, what="PR-2's reminder, due during the outage")
    log.info("queued card and overdue reminder delivered %.2fs after the restart",
             time.monotonic() - back_at)
    # nothing acknowledged was lost, every card went out once
    for ref in acked:
        await eventually(lambda ref=ref: len(cards_to(slack, "U_BOB", ref)) >= 1, within=15,
                         what=f"{ref}'s card")
        assert len(cards_to(slack, "U_BOB", ref)) == 1, f"{ref}'s card twice"

    # a harder stop (as if the server crashed), and back again
    await pg.stop("immediate")
    assert await _health(server) == 503
    _, answer = await purchase("$77 USD Sticky notes")
    assert TRY_AGAIN in answer
    await pg.start()
    await _until_healthy(server)
    _, answer = await purchase("$88 USD Staplers")
    assert _REF.search(answer), answer
    verified = _approvals("audit", "verify", database_url=url)
    assert verified.returncode == 0, verified.stdout + verified.stderr


async def _until_healthy(server: Server, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while await _health(server) != 200:
        assert time.monotonic() < deadline, f"/healthz stayed 503:\n{server.log()[-3000:]}"
        await asyncio.sleep(0.05)
