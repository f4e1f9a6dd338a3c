"""The Slack stand-in (:class:`bot.standin.web_api.FakeSlack`) in a process of its own.

The benchmarks run it apart from the load generator so neither slows the other's event
loop. Besides the Web API it answers ``GET /bench/cards`` on a second port: every approval
card posted so far (request, step, user, channel, ts, approve button value, arrival time),
and ``GET /bench/counts``: calls per method. Prints ``<api base url> <stats url>`` on its
first line of stdout, then serves until killed. ``POST /v1/chat/completions`` on the
second port is a slow OpenAI-compatible model (``python -m bench.slack_proc DELAY``).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from typing import Any

from aiohttp import web

from bot.standin.web_api import FakeSlack


def _approve_value(blocks: Any) -> str | None:
    for block in blocks or []:
        for element in block.get("elements") or []:
            if isinstance(element, dict) and element.get("action_id") == "approve":
                return str(element.get("value"))
    return None


async def main(llm_delay: float) -> None:
    slack = await FakeSlack().start()

    async def completions(request: web.Request) -> web.Response:
        """A slow OpenAI-compatible model: answers after ``llm_delay`` seconds."""
        body = await request.json()
        await asyncio.sleep(llm_delay)
        content = json.dumps({"recommendation": "review", "risk": "medium",
                              "commentary": "Compare with last quarter's quotes.",
                              "flags": []})
        return web.json_response({
            "id": "chatcmpl-bench", "object": "chat.completion", "created": 1764061200,
            "model": body.get("model", "bench"),
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": content,
                                     "refusal": None}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

    async def cards(request: web.Request) -> web.Response:
        since = int(request.query.get("since", "0"))
        out = []
        calls = slack.calls("chat.postMessage")
        for position, call in enumerate(calls[since:], start=since):
            if call.error is not None or call.status != 200:
                continue
            metadata = call.params.get("metadata") or {}
            if metadata.get("event_type") != "approval_card":
                continue
            payload = metadata.get("event_payload") or {}
            blocks = call.params.get("blocks")
            user = str(call.params.get("channel"))
            out.append({"request": payload.get("request"), "step": payload.get("step"),
                        "outbox": payload.get("outbox_id"), "user": user,
                        "channel": slack.dm_channel(user), "at": call.at,
                        "value": _approve_value(blocks), "position": position})
        return web.json_response({"cards": out, "next": len(calls)})

    async def counts(_: web.Request) -> web.Response:
        return web.json_response(dict(Counter(c.method for c in slack.calls())))

    app = web.Application()
    app.router.add_get("/bench/cards", cards)
    app.router.add_get("/bench/counts", counts)
    app.router.add_post("/v1/chat/completions", completions)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])
    print(slack.base_url, f"http://127.0.0.1:{port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(main(float(sys.argv[1]) if len(sys.argv) > 1 else 2.0))
    except KeyboardInterrupt:
        sys.exit(0)
