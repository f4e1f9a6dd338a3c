"""`approvals serve` as a real process: real HTTP in, the Slack stand-in's Web API out."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from bot.standin import signing
from bot.standin.web_api import FakeSlack
from tests.conftest import EXAMPLE_POLICY
from tests.process_support import SECRET, Server, clean_env, eventually


@pytest.fixture
async def server(slack: FakeSlack, tmp_path: Path) -> AsyncIterator[str]:
    process = Server(slack=slack, workdir=tmp_path, policy=EXAMPLE_POLICY)
    await process.start()
    try:
        yield process.base
    finally:
        process.stop()


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
    env = clean_env()
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
    # the worker, run by hand, needs the bot token and a readable policy too
    for extra, named in [*cases[:1], ({"SLACK_BOT_TOKEN": "xoxb-1"}, "policy.yml")]:
        result = subprocess.run([sys.executable, "-m", "bot", "worker"], cwd=tmp_path,
                                env={**env, **extra}, capture_output=True, text=True,
                                timeout=60, check=False, stdin=subprocess.DEVNULL)
        assert result.returncode == 2, (extra, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and named in lines[0], (extra, result.stderr)


def test_serve_refuses_a_taken_port_with_one_line(tmp_path: Path) -> None:
    """Another server listens there: exit 2 naming the port, before anything starts (no
    worker, no database file)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**clean_env(), "SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s",
               "SLACK_API_URL": "http://127.0.0.1:9/api/",
               "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'approvals.db'}"}
        result = subprocess.run(
            [sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--policy", str(EXAMPLE_POLICY)],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"--port {port}" in lines[0] and "in use" in lines[0], \
        result.stderr
    assert not (tmp_path / "approvals.db").exists()
