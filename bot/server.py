"""HTTP mode (``POST /slack/events``, ``GET /healthz``) under uvicorn, and Socket Mode."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncApp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.app import build_app
from bot.ids import EVENTS_PATH
from bot.runtime import Runtime
from bot.worker import Workers

log = logging.getLogger("approvals.server")


def build_asgi(runtime: Runtime, app: AsyncApp, *, background: bool = True,
               workers: Workers | None = None) -> Starlette:
    """The ASGI app: Slack's endpoint and the health check, with the runtime's lifespan.

    The background work (new requests, timers, delivery) runs in the processes of
    ``workers`` when given, else in this one when ``background``, else not at all (tests
    drive it).
    """
    handler = AsyncSlackRequestHandler(app)

    async def events(request: Request) -> Response:
        return await handler.handle(request)

    async def healthz(_: Request) -> Response:
        if await runtime.db.ping():
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "unavailable", "reason": "the database is not answering"},
                            status_code=503)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await runtime.prepare()  # idempotent: serve_http has usually done it already
        if workers is not None:
            await workers.start()
            runtime.notify = workers.wake
        elif background:
            await runtime.start_background()
        try:
            yield
        finally:
            runtime.notify = None
            if workers is not None:
                await workers.stop()
            await runtime.close()

    return Starlette(routes=[Route(EVENTS_PATH, events, methods=["POST"]),
                             Route("/healthz", healthz, methods=["GET"])],
                     lifespan=lifespan)


def settle_memory() -> None:
    """Move what start-up allocated out of the garbage collector's way: a full collection
    then scans only what requests allocate, a pause of a few ms instead of tens."""
    gc.collect()
    gc.freeze()


async def serve_http(runtime: Runtime, *, host: str, port: int) -> None:
    import uvicorn

    await runtime.prepare()  # a schema or database problem stops start-up with one line
    workers = None
    if runtime.settings.worker != "inline" and runtime.policy_path is not None:
        workers = Workers(policy_path=runtime.policy_path,
                          split=runtime.settings.worker == "split")
        # Homes are published by several processes: each publish checks it was the latest
        runtime.deliverer.only_publisher = False
        await runtime.db.leave_checkpoints_to_others()  # the workers checkpoint the WAL
    settle_memory()
    # Listeners answer within moments (work waits in the database for the worker), so the
    # response goes out when the listener returns: no polling for the acknowledgement.
    asgi = build_asgi(runtime, build_app(runtime, process_before_response=True),
                      workers=workers)
    config = uvicorn.Config(asgi, host=host, port=port, log_level="info", access_log=False,
                            lifespan="on")
    await uvicorn.Server(config).serve()


async def serve_socket(runtime: Runtime) -> None:
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    app = build_app(runtime)
    await runtime.prepare()
    await runtime.start_background()
    try:
        handler = AsyncSocketModeHandler(app, runtime.settings.slack_app_token)
        await handler.start_async()  # type: ignore[no-untyped-call]
    finally:
        await runtime.close()
