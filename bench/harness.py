"""What every benchmark needs: processes (the Slack stand-in, ``approvals serve``, the
baseline), their CPU time, signed request bodies, and the bench policy.

The load generator itself (:func:`bench.loadgen.burst`) has a module of its own.
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bot.standin import signing

SECRET = "bench-signing-secret"
ROOT = Path(__file__).resolve().parent.parent
PR = re.compile(r"PR-(\d+)")

MANAGERS = [f"U_M{i:02d}" for i in range(20)]
REQUESTERS = [f"U_R{i:03d}" for i in range(200)]


def policy_yaml() -> str:
    """Two levels for every bench request (manager, then finance), reminders, escalation."""
    lines = ["version: 1", "currency: USD", "rates: {EUR: 1.08}", "directory:"]
    for i, user in enumerate(REQUESTERS):
        lines.append(f"  {user}: {{manager: {MANAGERS[i % len(MANAGERS)]}}}")
    for manager in MANAGERS:
        lines.append(f"  {manager}: {{manager: U_DIR}}")
    lines += ["levels:", "  - name: Manager", "    approvers: manager",
              "  - name: Finance", "    over: 10000", "    approvers: [U_FIN1, U_FIN2]",
              "auto_approve:", "  under: 100",
              "reminders:", "  after: 4h", "  every: 24h",
              "escalation:", "  after: 48h", "  to: manager", ""]
    return "\n".join(lines)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("SLACK_", "OPENAI_", "DATABASE_URL", "APPROVALS_"))}


# --------------------------------------------------------------------------- processes


class SlackProcess:
    """``bench.slack_proc``: the Slack stand-in and a slow LLM, in their own process."""

    def __init__(self, workdir: Path, *, llm_delay: float = 2.0) -> None:
        log = (workdir / "slack.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.slack_proc", str(llm_delay)], cwd=ROOT,
            env=clean_env(), stdout=subprocess.PIPE, stderr=log)
        log.close()
        assert self.process.stdout is not None
        first = self.process.stdout.readline().decode().split()
        self.api_url, self.stats_url = first[0], first[1]
        self.token = "xoxb-fake-bot-token"

    async def cards(self, http: aiohttp.ClientSession, since: int = 0
                    ) -> tuple[list[dict[str, Any]], int]:
        async with http.get(f"{self.stats_url}/bench/cards", params={"since": since}) as r:
            data = await r.json()
        return data["cards"], int(data["next"])

    async def counts(self, http: aiohttp.ClientSession) -> dict[str, int]:
        """Web API calls so far, per method."""
        async with http.get(f"{self.stats_url}/bench/counts") as r:
            data: dict[str, int] = await r.json()
        return data

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@dataclass
class ServerProcess:
    """A server under test: ``approvals serve`` or the baseline, until :meth:`stop`."""

    argv: list[str]
    env: dict[str, str]
    workdir: Path
    name: str
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        log = (self.workdir / f"{self.name}.log").open("wb")
        argv = [a.replace("{port}", str(self.port)) for a in self.argv]
        self.process = subprocess.Popen(argv, cwd=self.workdir, env=self.env, stdout=log,
                                        stderr=subprocess.STDOUT)
        log.close()
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 60
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited: "
                                       + (self.workdir / f"{self.name}.log").read_text())
                try:
                    async with http.get(f"{self.url}/healthz") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} did not start")
                await asyncio.sleep(0.1)

    def rss_mb(self) -> tuple[float, float]:
        """(current RSS, peak RSS) in MB, of the server and its worker process together."""
        assert self.process is not None
        pid = self.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children")
        pids = [pid] + [int(c) for c in children.read_text().split()] if children.exists() \
            else [pid]
        current = peak = 0.0
        for one in pids:
            status = Path(f"/proc/{one}/status").read_text()
            values = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines()
                      if line.startswith(("VmRSS", "VmHWM"))}
            current += values["VmRSS"] / 1024
            peak += values["VmHWM"] / 1024
        return current, peak

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def approvals_server(workdir: Path, slack: SlackProcess, *, database: Path, policy: Path,
                     extra_env: dict[str, str] | None = None) -> ServerProcess:
    env = clean_env()
    env.update(SLACK_BOT_TOKEN=slack.token, SLACK_SIGNING_SECRET=SECRET,
               SLACK_API_URL=slack.api_url, DATABASE_URL=f"sqlite+aiosqlite:///{database}",
               **(extra_env or {}))
    for name, value in os.environ.items():  # to measure another configuration
        if name.startswith("APPROVALS_") and name not in (extra_env or {}):
            env[name] = value
    return ServerProcess([sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1",
                          "--port", "{port}", "--policy", str(policy)], env, workdir,
                         "approvals")


def baseline_server(workdir: Path, slack: SlackProcess, *, database: Path) -> ServerProcess:
    env = clean_env()
    env.update(SLACK_SIGNING_SECRET=SECRET, SLACK_BOT_TOKEN=slack.token,
               SLACK_API_URL=slack.api_url, PYTHONPATH=str(ROOT))
    return ServerProcess([sys.executable, "-m", "bench.baseline_app", "{port}", str(database)],
                         env, workdir, "baseline")


# --------------------------------------------------------------------------- CPU time

_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float | None:
    """Seconds of CPU (user + system, every thread) that process ``pid`` has used, or
    None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def child_pids(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _child_name(pid: int) -> str:
    """``worker (all)``, ``worker (work)``...: a server's worker by its ``--part``."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return f"child {pid}"
    if "worker" in argv:
        part = argv[argv.index("--part") + 1] if "--part" in argv[:-1] else "all"
        return f"worker ({part})"
    return f"child {pid}"


class CpuMeter:
    """CPU time used by each process of a measurement, from :meth:`start` to :meth:`stop`:
    the server, each of its worker processes, the Slack stand-in, and this process (the
    load generator, with the bench's own polling)."""

    def __init__(self, server: ServerProcess, slack: SlackProcess) -> None:
        assert server.process is not None
        self.server_pid = server.process.pid
        self.slack_pid = slack.process.pid
        self.started = 0.0
        self._before: dict[int, float] = {}
        self._self_before = 0.0

    def _pids(self) -> dict[int, str]:
        pids = {self.server_pid: "server"}
        pids.update({child: _child_name(child) for child in child_pids(self.server_pid)})
        pids[self.slack_pid] = "slack stand-in"
        return pids

    @staticmethod
    def _self_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def start(self) -> CpuMeter:
        self._before = {pid: process_cpu(pid) or 0.0 for pid in self._pids()}
        self._self_before = self._self_cpu()
        self.started = time.monotonic()
        return self

    def stop(self, *, requests: int) -> dict[str, Any]:
        """Milliseconds of CPU per request of each process (and in all), over ``requests``
        requests. A worker started during the window counts from zero; one that ended in
        it is missing (``gone`` says how many)."""
        window = time.monotonic() - self.started
        used: dict[str, float] = {}
        gone = sum(1 for pid in self._before if process_cpu(pid) is None)
        for pid, name in self._pids().items():
            now = process_cpu(pid)
            if now is not None:
                used[name] = used.get(name, 0.0) + now - self._before.get(pid, 0.0)
        used["load generator"] = self._self_cpu() - self._self_before
        per = {name: seconds * 1000 / requests if requests else float("nan")
               for name, seconds in used.items()}
        return {"window_s": window, "requests": requests, "processes_gone": gone,
                "ms_per_request": per, "total_ms_per_request": sum(per.values())}


# --------------------------------------------------------------------------- load


def purchase_bodies(count: int, *, response_url: str, seed: int = 0
                    ) -> list[signing.SignedRequest]:
    """Signed inline ``/purchase`` commands (two-level amounts, several requesters)."""
    out = []
    for i in range(count):
        user = REQUESTERS[(i + seed) % len(REQUESTERS)]
        amount = 10_500 + (i * 37 + seed) % 9_000
        out.append(signing.slash_command(
            SECRET, text=f"${amount:,}.00 USD Laptops for the new hires of team {i % 50}",
            user_id=user, response_url=response_url))
    return out


def click_bodies(cards: Sequence[dict[str, Any]], *, response_url: str
                 ) -> list[signing.SignedRequest]:
    return [signing.block_actions(SECRET, user_id=c["user"], action_id="approve",
                                  value=c["value"], channel_id=c["channel"],
                                  message_ts="1700000000.000100", response_url=response_url)
            for c in cards]
