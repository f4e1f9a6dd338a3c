"""`approvals serve` as a real process: real HTTP in, the Slack stand-in's Web API out."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from bot.standin import signing
from bot.standin.web_api import FakeSlack
from tests.conftest import EXAMPLE_POLICY

SECRET = "process-test-signing-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def eventually(check: Callable[[], bool], *, within: float = 10.0) -> None:
    """Wait for a real process to do something (polls; never a fixed sleep)."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("the server did not get there in time")
        await asyncio.sleep(0.05)


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


@pytest.fixture
async def server(slack: FakeSlack, tmp_path: Path) -> AsyncIterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLACK_", "OPENAI_", "DATABASE_URL", "APPROVALS_"))}
    env.update(SLACK_BOT_TOKEN=slack.token, SLACK_SIGNING_SECRET=SECRET,
               SLACK_API_URL=slack.base_url,
               DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'approvals.db'}")
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--policy", str(EXAMPLE_POLICY)], cwd=tmp_path, env=env, stdout=log,
        stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as http:
            async def healthy() -> bool:
                try:
                    return (await http.get(f"{base}/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            deadline = time.monotonic() + 20
            while not await healthy():
                assert process.poll() is None, (tmp_path / "server.log").read_text()
                assert time.monotonic() < deadline, "approvals serve did not start"
                await asyncio.sleep(0.05)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


async def test_serve_acks_creates_and_delivers_the_card(server: str, slack: FakeSlack) -> None:
    async with httpx.AsyncClient(base_url=server) as http:
        health = await http.get("/healthz")
        assert health.json() == {"status": "ok"}

        url = slack.response_url()
        command = signing.slash_command(SECRET, text="$25,000 USD Desks for the new office",
                                        user_id="U_ALICE", response_url=url)
        started = time.monotonic()
        response = await http.post("/slack/events", content=command.body,
                                   headers=command.headers)
        assert time.monotonic() - started < 3
        assert response.status_code == 200
        assert "PR-1" in response.text, (response.headers, response.text)

        # the background worker delivers the first card without any prompting
        await eventually(lambda: bool(slack.messages_to("U_BOB")))
        card = slack.messages_to("U_BOB")[0]
        assert "PR-1" in json.dumps(card["blocks"])

        forged = signing.slash_command(SECRET, text="$5 USD Pens", user_id="U_ALICE",
                                       response_url=url, bad_signature=True)
        refused = await http.post("/slack/events", content=forged.body, headers=forged.headers)
        assert refused.status_code == 401
        stale = signing.slash_command(SECRET, text="$5 USD Pens", user_id="U_ALICE",
                                      response_url=url, stale=True)
        assert (await http.post("/slack/events", content=stale.body,
                                headers=stale.headers)).status_code == 401
        assert len(slack.messages_to("U_ALICE")) == 0  # nothing was created by either


def test_serve_refuses_bad_configuration_with_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLACK_", "OPENAI_", "DATABASE_URL", "APPROVALS_"))}
    cases = [
        ({}, "SLACK_BOT_TOKEN"),
        ({"SLACK_BOT_TOKEN": "xoxb-1"}, "SLACK_SIGNING_SECRET"),
        ({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s"}, "policy.yml"),
        ({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s",
          "SLACK_API_URL": "ftp://nowhere"}, "SLACK_API_URL"),
        ({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s",
          "DATABASE_URL": "mysql://x/y"}, "DATABASE_URL"),
    ]
    for extra, named in cases:
        result = subprocess.run([sys.executable, "-m", "bot", "serve"], cwd=tmp_path,
                                env={**env, **extra}, capture_output=True, text=True,
                                timeout=60, check=False)
        assert result.returncode == 2, (extra, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and named in lines[0], (extra, result.stderr)
