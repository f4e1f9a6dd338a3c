"""A whole Slack workspace in one process: the stand-in Web API, the real app, people.

:class:`Workspace` starts :class:`~bot.standin.web_api.FakeSlack`, builds the real
:class:`~bot.runtime.Runtime` and Bolt app against it (``SLACK_API_URL`` pointing at the
stand-in), and lets code act as people: type ``/purchase``, click a card's buttons, submit
a modal, open the App Home. Every action is a *signed* HTTP request, exactly as Slack
would send it, to the production web application (:func:`bot.server.build_web`) served on
a local port. Time is a :class:`~bot.clock.FakeClock`; :meth:`settle` runs what the
background tick would (due timers, then the outbox).

Given no ``database_url``, a Workspace keeps its data in a temporary SQLite file, unless
:attr:`Workspace.scratch_database` hands out throw-away databases of another kind (the
test suite's PostgreSQL run sets it: ``APPROVALS_TEST_DATABASE=postgresql``).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from pathlib import Path
from typing import Any, ClassVar, Self

import httpx
from aiohttp import web

from bot.advisor_llm import LlmAdvisor
from bot.app import build_app
from bot.clock import FakeClock
from bot.ids import EVENTS_PATH, ActionId, CallbackId, StepValue
from bot.runtime import Runtime
from bot.server import build_web, runner_for, running
from bot.settings import Settings
from bot.standin import signing
from bot.standin.web_api import FakeSlack
from flows.policy import parse_policy


class Workspace:
    # A context manager yielding the URL of a fresh database at the latest schema, and
    # dropping the database on exit; ``None``: a temporary SQLite file.
    scratch_database: ClassVar[Callable[[], AbstractAsyncContextManager[str]] | None] = None

    def __init__(self, *, policy_text: str, database_url: str | None = None,
                 clock: FakeClock | None = None, slack: FakeSlack | None = None,
                 process_before_response: bool = True, llm: LlmAdvisor | None = None,
                 home_refresh: float = 0.0) -> None:
        """``home_refresh``: seconds an App Home refresh waits (0: on the next settle)."""
        self.policy_text = policy_text
        self.home_refresh = home_refresh
        self.llm = llm  # the LLM advisor; never the real one from OPENAI_API_KEY
        self.clock = clock or FakeClock()
        self.secret = secrets.token_hex(16)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._database_url = database_url
        self._own_slack = slack is None
        self.slack = slack or FakeSlack()
        self._pbr = process_before_response
        self.runtime: Runtime
        self.http: httpx.AsyncClient
        self.last_response_url: str | None = None  # of the latest command or click

    async def __aenter__(self) -> Self:
        if self._own_slack:
            await self.slack.start()
        self._exits = AsyncExitStack()
        if self._database_url is None and Workspace.scratch_database is not None:
            self._database_url = await self._exits.enter_async_context(
                Workspace.scratch_database())
        if self._database_url is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="approvals-")
            self._database_url = f"sqlite+aiosqlite:///{Path(self._tmp.name) / 'approvals.db'}"
        settings = Settings(SLACK_BOT_TOKEN=self.slack.token,
                            SLACK_SIGNING_SECRET=self.secret,
                            SLACK_API_URL=self.slack.base_url,
                            DATABASE_URL=self._database_url, OPENAI_API_KEY=None,
                            APPROVALS_HOME_REFRESH_SECONDS=self.home_refresh,
                            APPROVALS_INTAKE_BACKLOG=0,
                            _env_file=None)
        self.runtime = Runtime(settings=settings, policy=parse_policy(self.policy_text),
                               policy_source=self.policy_text, clock=self.clock, llm=self.llm)
        self.app = build_app(self.runtime, process_before_response=self._pbr)
        # the background work is not started: settle() does it when a test says so
        await self._exits.enter_async_context(running(self.runtime, background=False))
        self.http = await self._exits.enter_async_context(
            serve_locally(build_web(self.runtime, self.app)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._exits.aclose()
        if self._own_slack:
            await self.slack.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    # ------------------------------------------------------------------ raw requests

    async def send(self, request: signing.SignedRequest) -> httpx.Response:
        return await self.http.post(EVENTS_PATH, content=request.body, headers=request.headers)

    async def settle(self) -> None:
        """Fire due timers and deliver the outbox, as the background tick would."""
        await self.runtime.tick()

    # ------------------------------------------------------------------ people

    async def command(self, user: str, text: str = "") -> httpx.Response:
        """``user`` types ``/purchase <text>``; the response is the acknowledgement."""
        url = self.last_response_url = self.slack.response_url()
        response = await self.send(signing.slash_command(
            self.secret, text=text, user_id=user, response_url=url,
            trigger=signing.trigger_id(user)))
        await self.settle()
        return response

    async def click(self, user: str, message: dict[str, Any], action: ActionId | str
                    ) -> httpx.Response:
        """``user`` clicks the ``action`` button of ``message`` (as the stand-in stored it)."""
        value = button_value(message, str(action))
        url = self.slack.response_url(channel=message.get("channel"), ts=message.get("ts"))
        self.last_response_url = url
        response = await self.send(signing.block_actions(
            self.secret, user_id=user, action_id=str(action), value=value, message=message,
            response_url=url, trigger=signing.trigger_id(user)))
        await self.settle()
        return response

    async def click_value(self, user: str, action: ActionId | str, value: StepValue | str,
                          *, channel: str | None = None, ts: str | None = None
                          ) -> httpx.Response:
        """A click carrying ``value`` (for forged or out-of-date buttons)."""
        raw = value.encode() if isinstance(value, StepValue) else value
        channel = channel or self.slack.dm_channel(user)
        url = self.slack.response_url(channel=channel, ts=ts or "1.000000")
        self.last_response_url = url
        response = await self.send(signing.block_actions(
            self.secret, user_id=user, action_id=str(action), value=raw, channel_id=channel,
            message_ts=ts or "1.000000", response_url=url, trigger=signing.trigger_id(user)))
        await self.settle()
        return response

    async def submit(self, user: str, callback_id: CallbackId | str, *,
                     texts: dict[str, str | None] | None = None,
                     selects: dict[str, str | None] | None = None,
                     private_metadata: str = "") -> httpx.Response:
        response = await self.send(signing.view_submission(
            self.secret, user_id=user, callback_id=str(callback_id),
            values=signing.input_values(texts, selects), private_metadata=private_metadata))
        await self.settle()
        return response

    async def reject(self, user: str, message: dict[str, Any], reason: str) -> httpx.Response:
        """Click Reject on ``message``, then submit the reason in the modal that opens."""
        clicked = await self.click(user, message, ActionId.REJECT)
        modal = self.slack.last_view(user)
        if modal is None or modal.get("callback_id") != CallbackId.REJECT_REASON.value:
            return clicked
        return await self.submit(user, CallbackId.REJECT_REASON, texts={"reason": reason},
                                 private_metadata=str(modal.get("private_metadata", "")))

    async def open_home(self, user: str, *, event_id: str | None = None,
                        retry_num: int | None = None) -> httpx.Response:
        response = await self.send(signing.app_home_opened(
            self.secret, user_id=user, event_id=event_id, retry_num=retry_num))
        await self.settle()
        return response

    # ------------------------------------------------------------------ what people see

    def answers(self) -> list[str]:
        """What the app posted to the latest command's or click's ``response_url``."""
        if self.last_response_url is None:
            return []
        return [str(p.get("text", "")) for p in self.slack.responses(self.last_response_url)]

    def cards_of(self, user: str) -> list[dict[str, Any]]:
        """Approval cards in ``user``'s DM (messages with decision buttons or a PR card)."""
        return [m for m in self.slack.messages_to(user)
                if (m.get("metadata") or {}).get("event_type") == "approval_card"]

    def card(self, user: str, ref: str) -> dict[str, Any]:
        """``user``'s latest card for request ``ref`` (``PR-3``), as it is now."""
        for message in reversed(self.cards_of(user)):
            payload = (message.get("metadata") or {}).get("event_payload") or {}
            if f"PR-{payload.get('request')}" == ref:
                current = self.slack.message(str(message["channel"]), str(message["ts"]))
                return current or message
        raise LookupError(f"{user} has no card for {ref}")


@contextlib.asynccontextmanager
async def serve_locally(web_app: web.Application) -> AsyncIterator[httpx.AsyncClient]:
    """``web_app`` served on a free local port, as ``approvals serve`` serves it, and a
    client pointed at it."""
    runner = runner_for(web_app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        # trust_env=False: no proxy from the environment between the tests and the app
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False,
                                     timeout=30) as http:
            yield http
    finally:
        await runner.cleanup()


def button_value(message: dict[str, Any], action_id: str) -> str:
    """The ``value`` of the button ``action_id`` in ``message``'s blocks."""
    for block in message.get("blocks") or []:
        for element in block.get("elements") or []:
            if element.get("action_id") == action_id:
                return str(element.get("value", ""))
    raise LookupError(f"no {action_id!r} button in this message: "
                      f"{json.dumps(message.get('blocks'))[:300]}")


def has_buttons(message: dict[str, Any]) -> bool:
    return any(element.get("type") == "button" and element.get("action_id") in {
        ActionId.APPROVE.value, ActionId.REJECT.value}
        for block in message.get("blocks") or [] for element in block.get("elements") or [])
