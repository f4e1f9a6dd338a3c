"""A local OpenAI-compatible chat completions server over real HTTP, for the LLM advisor.

Each call to ``POST /v1/chat/completions`` takes the next scripted behaviour -- a reply
with some content, an HTTP error, or an answer held back until the test releases it --
and records the request body. It counts how many calls are in flight at once, so tests can
check the advisor's concurrency bound. Nothing sleeps: a held answer waits on an event.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Reply:
    """Answer 200 with ``content`` as the assistant message (valid or not)."""

    content: str
    hold: asyncio.Event | None = None  # answer only once this is set


@dataclass
class Fail:
    status: int = 500
    message: str = "The server had an error while processing your request."


Behaviour = Reply | Fail


def answer(*, recommendation: str = "review", risk: str = "medium",
           commentary: str = "Check the quote against last quarter's prices.",
           flags: list[dict[str, Any]] | None = None) -> str:
    """A structured answer as the advisor's schema asks for it, as JSON text."""
    return json.dumps({"recommendation": recommendation, "risk": risk,
                       "commentary": commentary, "flags": flags or []})


@dataclass
class FakeOpenAI:
    default: Behaviour = field(default_factory=lambda: Reply(answer()))
    script: deque[Behaviour] = field(default_factory=deque)
    requests: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    _runner: web.AppRunner | None = None
    _site: web.TCPSite | None = None
    _port: int = 0
    _held: list[asyncio.Event] = field(default_factory=list)
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    def then(self, *behaviours: Behaviour) -> None:
        self.script.extend(behaviours)

    async def received(self, count: int) -> None:
        """Wait until ``count`` calls have arrived."""
        async with self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= count)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/v1"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await self._site.start()
        server = self._site._server
        assert server is not None
        self._port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def close(self) -> None:
        for event in self._held:
            event.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        async with self._arrived:
            self._arrived.notify_all()
        behaviour = self.script.popleft() if self.script else self.default
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if isinstance(behaviour, Fail):
                return web.json_response({"error": {"message": behaviour.message,
                                                    "type": "server_error", "code": None}},
                                         status=behaviour.status)
            if behaviour.hold is not None:
                self._held.append(behaviour.hold)
                await behaviour.hold.wait()
            return web.json_response({
                "id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion",
                "created": 1764061200, "model": body.get("model", "fake"),
                "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                             "message": {"role": "assistant", "content": behaviour.content,
                                         "refusal": None}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
        finally:
            self.in_flight -= 1
