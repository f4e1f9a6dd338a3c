"""The fast path for ``/purchase <amount> <purpose>`` (:mod:`bot.fastpath`).

It must answer exactly what the Bolt listener answers, store exactly what it stores, and
step aside for everything else -- above all for a request whose signature is missing,
wrong or old, which Bolt refuses with a 401.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import parse_qs, quote_plus

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.app import build_app
from bot.fastpath import InlinePurchase, form_fields
from bot.runtime import Runtime
from bot.server import build_web
from bot.settings import Settings
from bot.standin import signing
from bot.standin.web_api import FakeSlack
from bot.standin.workspace import serve_locally
from flows.policy import parse_policy
from storage.db import Database
from storage.migrate import upgrade
from tests.slack_support import POLICY

SECRET = "fast-path-secret"

COMMANDS = [
    "$1,200 USD Laptops for the new hires",  # accepted, waits for a manager
    "€25,000 Desks for the new office",  # two levels
    "$20 Printer paper for the office",  # approved at once
    "$1,200 JPY Laptops",  # a currency the policy does not take
    "1,2,3 Laptops",  # not an amount
    "help",
    "status PR-1",
    "list",
    "",  # the form
]


@asynccontextmanager
async def served(folder: Path, *, fast_path: bool
                 ) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime, FakeSlack]]:
    """The real app on a database of its own in ``folder``, no background work."""
    folder.mkdir(exist_ok=True)  # noqa: ASYNC240 (a test's own temporary folder)
    async with FakeSlack() as slack:
        settings = Settings(SLACK_BOT_TOKEN=slack.token, SLACK_SIGNING_SECRET=SECRET,
                            SLACK_API_URL=slack.base_url,
                            DATABASE_URL=f"sqlite+aiosqlite:///{folder}/approvals.db",
                            APPROVALS_INTAKE_BACKLOG=0, _env_file=None)
        db = Database(settings.database_url)
        await upgrade(db.engine)
        runtime = Runtime(settings=settings, policy=parse_policy(POLICY), policy_source=POLICY,
                          db=db)
        await runtime.prepare()
        web_app = build_web(runtime, build_app(runtime, process_before_response=True),
                            fast_path=fast_path)
        try:
            async with serve_locally(web_app) as http:
                yield http, runtime, slack
        finally:
            await runtime.close()


async def answers(folder: Path, *, fast_path: bool) -> list[tuple[int, str, bytes]]:
    """Status, content type and body of each of COMMANDS, then how many wait to be
    created."""
    out = []
    async with served(folder, fast_path=fast_path) as (http, runtime, _):
        for text in COMMANDS:
            request = signing.slash_command(SECRET, text=text, user_id="U_ALICE",
                                            response_url="http://127.0.0.1:9/none",
                                            trigger=signing.trigger_id("U_ALICE"))
            response = await http.post("/slack/events", content=request.body,
                                       headers=request.headers)
            out.append((response.status_code, response.headers.get("content-type", ""),
                        response.content))
        waiting = await runtime.store.intake_waiting()
        out.append((waiting, "intake", b""))
    return out


async def test_the_fast_path_answers_and_stores_what_bolt_does(tmp_path: Path) -> None:
    fast = await answers(tmp_path / "fast", fast_path=True)
    bolt = await answers(tmp_path / "bolt", fast_path=False)
    assert fast == bolt
    assert fast[0][0] == 200 and b"Submitted *PR-1*" in fast[0][2]
    assert fast[-1] == (2, "intake", b""), "the two that wait for people are in the intake"


async def test_it_steps_aside_for_anything_but_a_signed_inline_purchase(
        tmp_path: Path) -> None:
    async with served(tmp_path, fast_path=True) as (http, runtime, _):
        fast = InlinePurchase(runtime, signing_secret=SECRET)
        good = signing.slash_command(SECRET, text="$1,200 Laptops for the new hires",
                                     user_id="U_ALICE", response_url="http://x/r")
        assert await fast(good.body, good.headers) is not None
        assert await runtime.store.intake_waiting() == 1

        wrong = signing.slash_command(SECRET, text="$1,200 Laptops", user_id="U_ALICE",
                                      response_url="http://x/r", bad_signature=True)
        old = signing.slash_command(SECRET, text="$1,200 Laptops", user_id="U_ALICE",
                                    response_url="http://x/r", stale=True)
        unsigned = {k: v for k, v in good.headers.items() if k != "X-Slack-Signature"}
        help_ = signing.slash_command(SECRET, text="help", user_id="U_ALICE",
                                      response_url="http://x/r")
        click = signing.block_actions(SECRET, user_id="U_BOB", action_id="approve",
                                      value='{"r":1,"s":0}', channel_id="D_U_BOB",
                                      message_ts="1.000001", response_url="http://x/r")
        for body, headers in [(wrong.body, wrong.headers), (old.body, old.headers),
                              (good.body, unsigned), (help_.body, help_.headers),
                              (click.body, click.headers),
                              (good.body + b"&command=%2Fother", good.headers)]:
            assert await fast(body, headers) is None
        assert await runtime.store.intake_waiting() == 1, "nothing stored by any of them"

        # and through the server: Bolt refuses the bad signatures with a 401
        for request in (wrong, old):
            response = await http.post("/slack/events", content=request.body,
                                       headers=request.headers)
            assert response.status_code == 401
        assert await runtime.store.intake_waiting() == 1


@pytest.mark.parametrize("text", ["$1,200 Laptops <!channel> &lt;", "¥5,000 Laptops"])
async def test_odd_text_gets_the_same_answer_either_way(tmp_path: Path, text: str) -> None:
    got = []
    for name, fast_path in (("fast", True), ("bolt", False)):
        async with served(tmp_path / name, fast_path=fast_path) as (http, _, _):
            request = signing.slash_command(SECRET, text=text, user_id="U_ALICE",
                                            response_url="http://x/r")
            response = await http.post("/slack/events", content=request.body,
                                       headers=request.headers)
            got.append((response.status_code, response.text))
    assert got[0] == got[1]


@given(st.lists(st.tuples(st.sampled_from(["command", "text", "user_id", "ssl_check", "token",
                                            "comm%61nd", "te+xt", "", "a=b", "response_url"]),
                          st.text(max_size=20)), max_size=8),
       st.booleans())
def test_the_form_reads_its_fields_as_parse_qs_does(
        pairs: list[tuple[str, str]], raw: bool) -> None:
    body = "&".join(f"{k}={v if raw else quote_plus(v)}" for k, v in pairs)
    try:
        expected: dict[str, list[str]] | None = {
            k: v for k, v in parse_qs(body, keep_blank_values=True, strict_parsing=True).items()
            if k in ("command", "text", "user_id", "ssl_check")}
    except ValueError:
        expected = None
    try:
        got: dict[str, list[str]] | None = form_fields(body)
    except ValueError:
        got = None
    assert got == expected


@pytest.mark.parametrize("fast_path", [True, False])
async def test_a_queued_submission_wakes_only_the_worker_that_creates_requests(
        tmp_path: Path, fast_path: bool) -> None:
    """Waiting in the intake, it is work for the "work" half alone (the delivery half is
    woken by that half once there are cards); one approved at once is followed up
    everywhere."""
    async with served(tmp_path, fast_path=fast_path) as (http, runtime, _):
        woken: list[str] = []
        runtime.notify = woken.append
        for text in ("$1,200 Laptops for the new hires", "$20 Printer paper for the office"):
            request = signing.slash_command(SECRET, text=text, user_id="U_ALICE",
                                            response_url="http://127.0.0.1:9/none")
            response = await http.post("/slack/events", content=request.body,
                                       headers=request.headers)
            assert response.status_code == 200
            woken.append("|")
        queued, at_once = "".join(f"{w} " for w in woken).split("| ")[:2]
        assert set(queued.split()) == {"work"}
        assert "all" in at_once.split()
