"""The load generator: pre-signed requests from N keep-alive connections, on raw asyncio.

On the two-core bench machine every microsecond the load generator spends is taken from
the server it measures, so it is as cheap as it can be: each request's bytes are encoded
once before the clock starts, and each connection is an :class:`asyncio.Protocol` that
writes its next request from the callback that completes the previous response: no task,
future or timer per request. On the bench machine that is 0.04-0.07 ms of CPU per request
(0.19-0.24 ms for the aiohttp client it replaces), depending on how busy the machine is.

What it measures, per request: when it was sent (wall clock), the latency from just
before the write to the last byte of the response, the HTTP status and the response text.
A connection that fails, or a response that takes over :data:`TIMEOUT` seconds, counts as
status 599 and the connection is opened again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from bench.http11 import Message, Parser, ProtocolError
from bot.standin import signing

TIMEOUT = 30.0  # seconds a request may take before it counts as failed (599)
FAILED = 599

Result = tuple[float, float, int, str]  # sent at (epoch s), latency (s), status, text


def percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


@dataclass
class Load:
    """What one burst measured: per request (sent at, latency, status, answer text)."""

    started: float
    ended: float
    results: list[Result]

    @property
    def ok(self) -> list[Result]:
        return [r for r in self.results if 200 <= r[2] < 300]

    @property
    def non_2xx(self) -> int:
        return len(self.results) - len(self.ok)

    @property
    def rate(self) -> float:
        return len(self.results) / (self.ended - self.started)

    def latency_ms(self, p: float) -> float:
        return percentile([r[1] * 1000 for r in self.results], p)


class Encoded:
    """Signed requests as they go on the wire, encoded once: for each, everything after
    the request line and ``Host`` (the signed request's headers, ``Content-Type`` and
    Slack's signature among them, ``Content-Length``, the body). Encode before the clock
    (and the CPU meter) starts, and send them to as many servers as needed."""

    def __init__(self, requests: Sequence[signing.SignedRequest], *,
                 path: str = "/slack/events") -> None:
        self.path = path
        self.tails = [self._tail(r) for r in requests]

    @staticmethod
    def _tail(request: signing.SignedRequest) -> bytes:
        lines = [f"{name}: {value}" for name, value in request.headers.items()
                 if name.lower() not in {"host", "content-length"}]
        lines.append(f"Content-Length: {len(request.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + request.body


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request in flight at a time."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.parser = Parser(response=True)
        self.transport: asyncio.Transport | None = None
        self.sent = 0.0  # perf_counter() just before the write of the request in flight
        self.at = 0.0  # time.time() then
        self.busy = False  # a request is in flight
        self.retired = False  # this connection is done with (closed, timed out, replaced)
        self.answered: asyncio.Future[Message] | None = None  # the warm-up's response

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.parser.feed(data)
        except ProtocolError as exc:
            self._fail(exc)
            return
        for message in messages:
            if message.start[1][:1] == b"1":  # 100 Continue and the like: not the answer
                continue
            self._answered(message)
            if self.retired:
                return

    def eof_received(self) -> bool | None:
        message = self.parser.eof()
        if message is not None:  # framed by the end of the connection
            self._answered(message, last=True)
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.retired:
            self._fail(exc or ConnectionResetError("the server closed the connection"))

    # the request cycle

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.busy = True
        self.at = time.time()
        self.sent = time.perf_counter()
        self.transport.write(data)

    def _answered(self, message: Message, *, last: bool = False) -> None:
        if self.answered is not None:  # the warm-up
            self.busy = False
            if not message.keep_alive or last:
                self.retire()
            if not self.answered.done():
                self.answered.set_result(message)
            return
        if not self.busy:
            self._fail(ProtocolError("a response to no request"))
            return
        self.busy = False
        self.run.results.append((self.at, time.perf_counter() - self.sent,
                                 int(message.start[1]),
                                 message.body.decode("utf-8", "replace")))
        if message.keep_alive and not last:
            self.run.next(self)
        else:
            self.retire()
            self.run.replace(self)

    def _fail(self, exc: BaseException) -> None:
        """The connection broke: the request in flight (if any) failed; open another."""
        if self.retired:
            return
        if self.answered is not None:
            if not self.answered.done():
                self.answered.set_exception(exc)
            self.retire()
            return
        if self.busy:
            self.busy = False
            self.run.results.append((self.at, time.perf_counter() - self.sent, FAILED,
                                     repr(exc)))
        self.retire()
        self.run.replace(self)

    def timed_out(self, now: float) -> bool:
        if not self.busy or now - self.sent < TIMEOUT:
            return False
        self._fail(TimeoutError(f"no response within {TIMEOUT:g} s"))
        return True

    def retire(self) -> None:
        self.retired = True
        if self.transport is not None:
            self.transport.abort()


class _Run:
    """One burst: the requests, where the connections are in them, and the results."""

    def __init__(self, host: str, port: int, head: bytes, tails: list[bytes], warm: bytes, *,
                 seconds: float, concurrency: int, once: bool) -> None:
        self.loop = asyncio.get_running_loop()
        self.host, self.port = host, port
        self.head = head  # request line and Host
        self.requests = tails
        self.warm = warm
        self.seconds = seconds
        self.concurrency = concurrency
        self.once = once
        self.position = 0
        self.deadline = 0.0
        self.results: list[Result] = []
        self.connections: set[_Connection] = set()
        self.running = 0  # connections still sending
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.reopening: set[asyncio.Task[None]] = set()

    async def connect(self, *, warm: bool) -> _Connection:
        """A new connection; ``warm``: once it has answered a ``GET /healthz`` (not
        counted), so that connection set-up is not in the first requests' latency."""
        transport, conn = await asyncio.wait_for(self.loop.create_connection(
            lambda: _Connection(self), self.host, self.port), TIMEOUT)
        if not warm:
            return conn
        conn.answered = self.loop.create_future()
        conn.send(self.warm)
        try:
            await asyncio.wait_for(conn.answered, TIMEOUT)
        except BaseException:
            transport.abort()
            raise
        conn.answered = None
        return conn  # maybe retired already, if the server closed it after answering

    async def measure(self) -> tuple[float, float]:
        opened = await asyncio.gather(*(self.connect(warm=True)
                                        for _ in range(self.concurrency)))
        started = time.time()
        self.deadline = time.monotonic() + self.seconds
        watchdog = self.loop.create_task(self._watch())
        self.running = len(opened)
        for conn in opened:
            self.connections.add(conn)
            if conn.retired:  # closed by the server since its warm-up
                self.replace(conn)
            else:
                self.next(conn)
        try:
            await self.done
        finally:
            ended = time.time()
            watchdog.cancel()
            for conn in list(self.connections):
                conn.retire()
            for task in list(self.reopening):
                task.cancel()
        return started, ended

    def take(self) -> bytes | None:
        """The next request to send, or None when the burst is over for this connection."""
        if time.monotonic() >= self.deadline:
            return None
        if self.position >= len(self.requests):
            if self.once:
                return None
            self.position = 0
        data = self.head + self.requests[self.position]
        self.position += 1
        return data

    def next(self, conn: _Connection) -> None:
        data = self.take()
        if data is None:
            self._stop(conn)
        else:
            conn.send(data)

    def _stop(self, conn: _Connection | None) -> None:
        if conn is not None:
            conn.retire()
            self.connections.discard(conn)
        self.running -= 1
        if self.running == 0 and not self.done.done():
            self.done.set_result(None)

    def replace(self, conn: _Connection) -> None:
        """``conn`` is gone: go on from a new connection (once per connection: a
        connection that was never part of the burst has nothing to go on with)."""
        if conn not in self.connections:
            return
        self.connections.discard(conn)
        task = self.loop.create_task(self._reopen())
        self.reopening.add(task)
        task.add_done_callback(self.reopening.discard)

    async def _reopen(self) -> None:
        while True:
            data = self.take()
            if data is None:
                self._stop(None)
                return
            at, sent = time.time(), time.perf_counter()
            try:
                conn = await self.connect(warm=False)
                if conn.retired:
                    raise ConnectionResetError("the server closed the connection")
            except (OSError, TimeoutError, ProtocolError) as exc:
                # the request this connection would have carried fails, as a client's would
                self.results.append((at, time.perf_counter() - sent, FAILED, repr(exc)))
                continue
            self.connections.add(conn)
            conn.send(data)
            return

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.perf_counter()
            for conn in list(self.connections):
                conn.timed_out(now)


async def burst(url: str, bodies: Sequence[signing.SignedRequest] | Encoded, *,
                seconds: float, concurrency: int = 32, once: bool = False) -> Load:
    """Send ``bodies`` (to ``url`` + ``/slack/events`` unless :class:`Encoded` says
    another path) from ``concurrency`` connections for ``seconds``, cycling through them
    unless ``once``. Each connection is opened and answers a ``GET /healthz`` before the
    clock starts, then sends its next request as soon as its previous response is
    complete."""
    encoded = bodies if isinstance(bodies, Encoded) else Encoded(bodies)
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    authority = f"{host}:{port}"
    prefix = parts.path.rstrip("/")
    head = f"POST {prefix}{encoded.path} HTTP/1.1\r\nHost: {authority}\r\n".encode("latin-1")
    warm = f"GET {prefix}/healthz HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode("latin-1")
    run = _Run(host, port, head, encoded.tails, warm, seconds=seconds,
               concurrency=concurrency, once=once)
    started, ended = await run.measure()
    return Load(started, ended, run.results)
