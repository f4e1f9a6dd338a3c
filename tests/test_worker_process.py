"""``approvals serve`` and its worker process(es): the server acknowledges, the worker
creates requests and delivers (``APPROVALS_WORKER=split``: one worker creates requests,
decides clicks and fires timers, another delivers). A worker is restarted when it dies, and
stops when the server goes away, even by ``kill -9``; a submission acknowledged while no
worker ran is created by the next one.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from bot.standin.web_api import FakeSlack
from tests.process_support import Server, eventually
from tests.slack_support import ack_text
from tests.test_crash import POLICY, cards_to


def make_server(slack: FakeSlack, tmp_path: Path, mode: str) -> Server:
    """A server with one worker process (``process``, the default), or two (``split``)."""
    policy = tmp_path / "policy.yml"
    policy.write_text(POLICY)
    return Server(slack=slack, workdir=tmp_path, policy=policy,
                  extra_env={"APPROVALS_WORKER": mode})


@pytest.fixture(params=["process", "split"])
def server(slack: FakeSlack, tmp_path: Path, request: pytest.FixtureRequest) -> Server:
    return make_server(slack, tmp_path, request.param)


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def worker_of(server: Server, part: str) -> int:
    """The server's worker process doing ``part`` of the work ("all", or with
    ``APPROVALS_WORKER=split`` "work" or "delivery")."""
    assert server.process is not None
    found = [c for c in children(server.process.pid) if _part(c) == part]
    assert len(found) == 1, found
    return found[0]


def _part(pid: int) -> str | None:
    """The ``--part`` of worker process ``pid``."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except FileNotFoundError:
        return None
    if "worker" not in argv or "--part" not in argv:
        return None
    return argv[argv.index("--part") + 1]


def parts(server: Server) -> list[str]:
    """What its workers do: ``["all"]``, or ``["delivery", "work"]`` when split."""
    return ["delivery", "work"] if server.extra_env.get("APPROVALS_WORKER") == "split" \
        else ["all"]


def workers_started(server: Server) -> bool:
    assert server.process is not None
    return sorted(filter(None, map(_part, children(server.process.pid)))) == parts(server)


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize(("mode", "part"), [("process", "all"), ("split", "work"),
                                           ("split", "delivery")])
async def test_the_worker_is_restarted_and_nothing_acknowledged_is_lost(
        slack: FakeSlack, tmp_path: Path, mode: str, part: str) -> None:
    """The worker, or when split either half of it (creating requests, or delivering)."""
    server = make_server(slack, tmp_path, mode)
    await server.start()
    try:
        await eventually(lambda: workers_started(server), what="the workers to start")
        answer = ack_text(await server.command("U_ALICE", "$25,000 Desks for the office"))
        assert "PR-1" in answer
        await eventually(lambda: len(cards_to(slack, "U_BOB")) == 1, what="the first card")

        first = worker_of(server, part)
        os.kill(first, signal.SIGKILL)  # the worker dies, whatever it was doing ...
        # ... and while no worker runs, a submission is still acknowledged and numbered
        answer = ack_text(await server.command("U_ALICE", "$26,000 Chairs for the office"))
        assert "PR-2" in answer

        def replaced() -> bool:
            try:
                return worker_of(server, part) != first
            except AssertionError:
                return False

        await eventually(replaced, within=15, what="a new worker")
        await eventually(lambda: len(cards_to(slack, "U_BOB")) == 2, what="PR-2's card")
        assert "starting a new one" in server.log()
        texts = [str(c.get("text", "")) for c in cards_to(slack, "U_BOB")]
        assert sum("PR-2" in t for t in texts) == 1
    finally:
        server.stop()


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
async def test_the_worker_stops_when_the_server_is_killed(server: Server) -> None:
    await server.start()
    await eventually(lambda: workers_started(server), what="the workers to start")
    workers = [worker_of(server, part) for part in parts(server)]

    server.kill()

    await eventually(lambda: not any(map(alive, workers)), within=15,
                     what="the workers to stop")


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
async def test_a_stopped_server_stops_its_worker_cleanly(server: Server) -> None:
    await server.start()
    await eventually(lambda: workers_started(server), what="the workers to start")
    workers = [worker_of(server, part) for part in parts(server)]

    server.stop()

    assert not any(map(alive, workers))
    assert "Traceback" not in server.log()


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
async def test_inline_mode_runs_everything_in_one_process(slack: FakeSlack,
                                                          tmp_path: Path) -> None:
    policy = tmp_path / "policy.yml"
    policy.write_text(POLICY)
    server = Server(slack=slack, workdir=tmp_path, policy=policy,
                    extra_env={"APPROVALS_WORKER": "inline"})
    await server.start()
    try:
        assert "PR-1" in ack_text(await server.command("U_ALICE", "$25,000 Desks"))
        await eventually(lambda: len(cards_to(slack, "U_BOB")) == 1, what="the card")
        assert children(server.process.pid) == []  # type: ignore[union-attr]
    finally:
        server.stop()


async def test_a_workers_wake_line_wakes_the_other_and_anything_else_is_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Split, each half tells the server (a ``w`` line) that the other has something to do;
    the server passes it on, and a line from the half that creates requests also lets
    submissions held back while the intake was full look again. Coalesced: many wakes in
    one turn of the loop are one line."""
    import asyncio
    import io
    import logging

    from bot.worker import WAKE, Workers, _Announcer

    out = io.BytesIO()
    announcer = _Announcer(out)
    for _ in range(5):
        announcer.wake()
    await asyncio.sleep(0)
    announcer.wake()
    assert out.getvalue() == WAKE * 2

    workers = Workers(policy_path=tmp_path / "policy.yml", split=True)
    work, delivery = workers.processes
    assert (work.part, delivery.part) == ("work", "delivery")
    assert delivery.on_wake == work.wake
    woken: list[str] = []
    monkeypatch.setattr(delivery, "wake", lambda: woken.append("delivery"))
    workers.on_work = lambda: woken.append("held submissions")  # Store.intake_moved
    stream = asyncio.StreamReader()
    stream.feed_data(WAKE + b"something to say\n" + WAKE)
    stream.feed_eof()
    with caplog.at_level(logging.INFO, logger="approvals.worker"):
        await work._pass_on(stream)
    assert woken == ["delivery", "held submissions"] * 2
    assert "worker: something to say" in caplog.text

    single = Workers(policy_path=tmp_path / "policy.yml")
    single.on_work = lambda: woken.append("held submissions")
    woken.clear()
    assert single.processes[0].on_wake is not None
    single.processes[0].on_wake()
    assert woken == ["held submissions"]


def test_a_wake_reaches_the_worker_doing_that_part_of_the_work(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A new submission is work for the "work" half, a click for the "delivery" half:
    the other is not woken for it (each wake costs it a look at the database). A single
    worker does both parts and is woken for either."""
    from bot.worker import Workers

    def woken_by(workers: Workers, part: str) -> list[str]:
        woken: list[str] = []
        for process in workers.processes:
            monkeypatch.setattr(process, "wake", lambda p=process.part: woken.append(p))
        workers.wake(part)  # type: ignore[arg-type]
        return woken

    split = Workers(policy_path=Path("policy.yml"), split=True)
    assert woken_by(split, "work") == ["work"]
    assert woken_by(split, "delivery") == ["delivery"]
    assert woken_by(split, "all") == ["work", "delivery"]
    single = Workers(policy_path=Path("policy.yml"))
    assert woken_by(single, "work") == woken_by(single, "delivery") == ["all"]
