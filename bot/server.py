"""HTTP mode (``POST /slack/events``, ``GET /healthz``) on aiohttp.web, and Socket Mode.

:func:`build_web` is the web application, the same one in production and in the tests
(:class:`bot.standin.workspace.Workspace` starts it on a local port); :func:`running` is
what runs beside it (the worker processes, or the background work in this process), and
:func:`serve_http` puts the two on a port until SIGTERM or SIGINT.

aiohttp.web rather than an ASGI server: every millisecond of CPU the server spends on a
request is taken from the worker beside it, and a Bolt app on aiohttp (Bolt's own adapter)
costs about half the CPU per request of one on uvicorn and Starlette (0.24 against 0.46 ms
for an app that only acknowledges).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import socket
from collections.abc import AsyncIterator, Iterator

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_bolt.response import BoltResponse

from bot.app import build_app
from bot.fastpath import InlinePurchase
from bot.ids import EVENTS_PATH
from bot.runtime import Runtime
from bot.settings import ConfigError
from bot.worker import Workers, settle_memory

log = logging.getLogger("approvals.server")

BACKLOG = 2048  # connections waiting to be accepted (a burst from Slack)
# Seconds a stopping server gives the requests under way: Slack waits 3 s for an answer.
STOP_WITHIN = 5.0
UNAVAILABLE = {"status": "unavailable", "reason": "the database is not answering"}


def build_web(runtime: Runtime, app: AsyncApp, *, fast_path: bool = True) -> web.Application:
    """Slack's endpoint, through Bolt's aiohttp adapter (an inline ``/purchase`` through
    :mod:`bot.fastpath` first, unless not ``fast_path``), and the health check."""
    secret = runtime.settings.slack_signing_secret
    fast = InlinePurchase(runtime, signing_secret=secret) if secret and fast_path else None

    async def events(request: web.Request) -> web.Response:
        if fast is not None:
            answer = await fast(await request.read(), request.headers)
            if answer is not None:  # sent as Bolt sends an ack(text=...)
                return await to_aiohttp_response(BoltResponse(status=200, body=answer))
        return await to_aiohttp_response(await app.async_dispatch(
            await to_bolt_request(request)))

    async def healthz(_: web.Request) -> web.Response:
        if await runtime.db.ping():
            return web.json_response({"status": "ok"})
        return web.json_response(UNAVAILABLE, status=503)

    web_app = web.Application()
    web_app.router.add_post(EVENTS_PATH, events)
    web_app.router.add_get("/healthz", healthz)
    return web_app


def runner_for(web_app: web.Application) -> web.AppRunner:
    """A runner without an access log (a line per request costs more than the request)."""
    return web.AppRunner(web_app, access_log=None, shutdown_timeout=STOP_WITHIN)


@contextlib.asynccontextmanager
async def running(runtime: Runtime, *, workers: Workers | None = None,
                  background: bool = True) -> AsyncIterator[None]:
    """The runtime, prepared, with its background work: in the processes of ``workers``
    when given (started, and ready, on entry), else in this one when ``background``, else
    not at all (tests drive it). On exit the workers stop and the runtime closes."""
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


def bind(host: str, port: int) -> list[socket.socket]:
    """Sockets bound to ``host``:``port`` (every address the host has), not yet listening:
    the port is ours before anything starts, and connections are refused, not left waiting,
    until the server takes requests. A port that is taken is a :class:`ConfigError`."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host}: not an address of this machine ({exc.strerror})"
                          ) from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restarts: TIME_WAIT
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.setblocking(False)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"--port {port}: {host}:{port} is already in use (another "
                              "server listens there; choose another port)") from None
        raise ConfigError(f"--host {host} --port {port}: cannot listen there "
                          f"({exc.strerror or exc})") from None
    return sockets


async def serve_http(runtime: Runtime, *, host: str, port: int) -> None:
    """Answer Slack on ``host``:``port`` until SIGTERM or SIGINT, then stop gracefully:
    the requests under way are answered, the workers stop, the runtime closes."""
    sockets = bind(host, port)
    try:
        with _stop_signals() as stop:
            await runtime.prepare()  # a schema or database problem stops start-up, one line
            workers = None
            if runtime.settings.worker != "inline" and runtime.policy_path is not None:
                workers = Workers(policy_path=runtime.policy_path,
                                  split=runtime.settings.worker == "split")
                workers.on_work = runtime.store.intake_moved
                # Homes are published by several processes: each publish checks it was last
                runtime.deliverer.only_publisher = False
                await runtime.db.leave_checkpoints_to_others()  # the workers checkpoint WAL
            # Listeners answer within moments (work waits in the database for the worker),
            # so the response goes out when the listener returns: no polling for the ack.
            runner = runner_for(build_web(runtime, build_app(runtime,
                                                             process_before_response=True)))
            async with running(runtime, workers=workers):
                await runner.setup()
                try:
                    settle_memory()
                    for sock in sockets:  # requests are taken from here on
                        await web.SockSite(runner, sock, backlog=BACKLOG).start()
                    log.info("answering Slack on http://%s:%s%s", host, port, EVENTS_PATH)
                    await stop.wait()
                    log.info("stopping: answering the requests under way first")
                finally:
                    await runner.cleanup()
    finally:
        for sock in sockets:
            sock.close()


@contextlib.contextmanager
def _stop_signals() -> Iterator[asyncio.Event]:
    """An event set by SIGTERM or SIGINT (one during start-up stops the server once up)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


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
