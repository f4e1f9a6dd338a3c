"""Running `approvals serve` as a real process against the Slack stand-in."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from bot.standin import signing
from bot.standin.web_api import FakeSlack

SECRET = "process-test-signing-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("SLACK_", "OPENAI_", "DATABASE_URL", "APPROVALS_"))}


async def eventually(check: Callable[[], bool], *, within: float = 10.0,
                     what: str = "the server to get there") -> None:
    """Wait for a real process to do something (polls; never a fixed sleep)."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class Server:
    """One `approvals serve` process; start, kill -9, start again on the same database."""

    def __init__(self, *, slack: FakeSlack, workdir: Path, policy: Path,
                 database_url: str | None = None, extra_env: dict[str, str] | None = None
                 ) -> None:
        self.slack = slack
        self.workdir = workdir
        self.policy = policy
        self.database_url = database_url or f"sqlite+aiosqlite:///{workdir / 'approvals.db'}"
        self.extra_env = extra_env or {}
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.starts += 1
        env = clean_env()
        env.update(SLACK_BOT_TOKEN=self.slack.token, SLACK_SIGNING_SECRET=SECRET,
                   SLACK_API_URL=self.slack.base_url, DATABASE_URL=self.database_url,
                   **self.extra_env)
        log = (self.workdir / f"server-{self.starts}.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1", "--port",
             str(self.port), "--policy", str(self.policy)],
            cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        async with httpx.AsyncClient() as http:
            deadline = time.monotonic() + 20
            while True:
                assert self.process.poll() is None, self.log()
                try:
                    if (await http.get(f"{self.base}/healthz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "approvals serve did not start"
                await asyncio.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no cleanup, whatever it was doing."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace")
                         for p in sorted(self.workdir.glob("server-*.log")))

    async def post(self, request: signing.SignedRequest) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.base, timeout=10) as http:
            return await http.post("/slack/events", content=request.body,
                                   headers=request.headers)

    async def command(self, user: str, text: str) -> httpx.Response:
        return await self.post(signing.slash_command(
            SECRET, text=text, user_id=user, response_url=self.slack.response_url()))

    async def click(self, user: str, message: dict[str, object], action: str,
                    value: str) -> httpx.Response:
        return await self.post(signing.block_actions(
            SECRET, user_id=user, action_id=action, value=value, message=message,
            response_url=self.slack.response_url()))
