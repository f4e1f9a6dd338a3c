"""The acknowledgement benchmark's baseline: the least a Bolt app can do per ``/purchase``.

A minimal :class:`slack_bolt.async_app.AsyncApp` on uvicorn whose ``/purchase`` handler
inserts one row with aiosqlite (WAL, like the product) and acknowledges with its id.
Run: ``python -m bench.baseline_app PORT DB_PATH`` with ``SLACK_SIGNING_SECRET``,
``SLACK_BOT_TOKEN`` and ``SLACK_API_URL`` set.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiosqlite
import uvicorn
from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def build(db_path: str) -> Starlette:
    # Same as the product: a bot token whose auth.test goes to the Slack stand-in.
    client = AsyncWebClient(token=os.environ["SLACK_BOT_TOKEN"],
                            base_url=os.environ["SLACK_API_URL"])
    app = AsyncApp(signing_secret=os.environ["SLACK_SIGNING_SECRET"], client=client)
    state: dict[str, aiosqlite.Connection] = {}

    @app.command("/purchase")
    async def purchase(ack: AsyncAck, command: dict[str, Any]) -> None:
        db = state["db"]
        cursor = await db.execute(
            "INSERT INTO requests (requester, text, created_at) VALUES (?, ?, ?)",
            (command["user_id"], command.get("text") or "", time.time()))
        await db.commit()
        await ack(text=f"Submitted PR-{cursor.lastrowid}.")

    handler = AsyncSlackRequestHandler(app)

    async def events(request: Request) -> Response:
        return await handler.handle(request)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        db = await aiosqlite.connect(db_path)
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.execute("CREATE TABLE IF NOT EXISTS requests (id INTEGER PRIMARY KEY, "
                         "requester TEXT, text TEXT, created_at REAL)")
        await db.commit()
        state["db"] = db
        try:
            yield
        finally:
            await db.close()

    return Starlette(routes=[Route("/slack/events", events, methods=["POST"]),
                             Route("/healthz", healthz, methods=["GET"])],
                     lifespan=lifespan)


if __name__ == "__main__":
    port, db_path = int(sys.argv[1]), sys.argv[2]
    uvicorn.run(build(db_path), host="127.0.0.1", port=port, log_level="warning",
                access_log=False)
