"""The background worker: new requests, clicks, timers and delivery, in processes of their
own.

``approvals serve`` (HTTP mode) starts ``approvals worker`` as a child process
(``APPROVALS_WORKER=process``, the default) or, with ``split``, two, each doing half of the
work -- ``--part work`` creates the requests (advisor, audit trail, timers) and fires
timers; ``--part delivery`` decides clicks and sends the outbox to Slack -- so each half
has a core.
The server then only answers Slack: it records a submission in the intake, or a decision,
and acknowledges.

Wakes: the server writes a byte to a worker's stdin after each commit that gives it work
(a new submission the "work" half, a click the "delivery" half, anything else both), so
nothing waits for the next tick. A worker that committed something the other half should
see (new cards; a round delivered, so there is room for more) prints a ``w`` line, which
the server passes on to the other one. When the server goes away, for any reason, each
worker reads the end of its stdin and stops; if a worker dies, the server starts a new one.
Work is never lost in between: it is all in the database (intake, clicks, timers, outbox),
claimed in transactions.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from bot.runtime import Part, Runtime

log = logging.getLogger("approvals.worker")

RESTART_AFTER = 1.0  # seconds before a worker that died is started again
STOP_WITHIN = 5.0  # seconds a worker has to finish its step when the server stops
READY_WITHIN = 30.0  # seconds a new worker has to report that it is ready
READY = b"ready"
WAKE = b"w\n"  # a worker's line to the server: wake the other worker
NICENESS = 5  # the worker yields the CPU to the server that answers Slack


class WorkerProcess:
    """The server's handle on its worker: start, wake, restart when it dies, stop."""

    def __init__(self, *, policy_path: Path, part: Part = "all") -> None:
        """``part``: what the process runs (:data:`bot.runtime.Part`)."""
        self.policy_path = policy_path
        self.part = part
        # called when the worker says it committed something another process should see
        self.on_wake: Callable[[], None] | None = None
        self.process: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._stopping = False
        self._woken = False

    @property
    def argv(self) -> list[str]:
        return [sys.executable, "-m", "bot", "worker", "--policy", str(self.policy_path),
                "--part", self.part, "--schema-ready"]  # serve_http has just checked it

    async def start(self) -> None:
        await self._spawn()
        self._supervisor = asyncio.create_task(self._supervise(), name="worker-supervisor")

    async def _spawn(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env=os.environ.copy(), start_new_session=True)  # Ctrl-C reaches it through us
        # Wait until it works (imports, schema check, policy): a server that takes
        # requests before then would leave them waiting for cards meanwhile.
        assert self.process.stdout is not None
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), READY_WITHIN)
        except TimeoutError:
            line = b""
        if line.strip() == READY:
            log.info("worker (%s) started (pid %s)", self.part, self.process.pid)
        else:
            log.error("the worker (pid %s) did not report ready within %s s", self.process.pid,
                      READY_WITHIN)
        self._reader = asyncio.create_task(self._pass_on(self.process.stdout))
        self.wake()  # whatever is waiting already

    async def _pass_on(self, stdout: asyncio.StreamReader) -> None:
        """A wake (the worker committed something: :attr:`on_wake`); anything else the
        worker prints goes to the log (and never fills the pipe)."""
        while line := await stdout.readline():
            if line == WAKE:
                if self.on_wake is not None:
                    self.on_wake()
            else:
                log.info("worker: %s", line.decode(errors="replace").rstrip())

    async def _supervise(self) -> None:
        while not self._stopping:
            assert self.process is not None
            code = await self.process.wait()
            if self._stopping:
                return
            log.error("the worker stopped (exit code %s); starting a new one", code)
            await asyncio.sleep(RESTART_AFTER)
            if not self._stopping:
                await self._spawn()

    def wake(self) -> None:
        """Ask the worker to look for work now; calls within one loop turn coalesce."""
        if self._woken or self.process is None or self.process.stdin is None:
            return
        self._woken = True
        # if it is being restarted, the new one looks at everything when it starts
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, RuntimeError):
            self.process.stdin.write(b"w")
        asyncio.get_running_loop().call_soon(self._rearm)

    def _rearm(self) -> None:
        self._woken = False

    async def stop(self) -> None:
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        process = self.process
        if process is None or process.returncode is not None:
            return
        if self._reader is not None:
            self._reader.cancel()
        if process.stdin is not None:
            process.stdin.close()  # end of input: finish the step under way and stop
        try:
            await asyncio.wait_for(process.wait(), STOP_WITHIN)
        except TimeoutError:
            log.warning("the worker did not stop within %s s; killing it", STOP_WITHIN)
            process.kill()
            await process.wait()


class Workers:
    """The server's worker processes: one doing all of the work, or (``split``) the two
    halves of it ("work": new requests, timers; "delivery": clicks, the outbox), each woken
    by the other through the server."""

    def __init__(self, *, policy_path: Path, split: bool = False) -> None:
        # called when the worker that creates requests committed something: submissions
        # held back while the intake is behind may be let in (Store.intake_moved)
        self.on_work: Callable[[], None] | None = None
        if split:
            work = WorkerProcess(policy_path=policy_path, part="work")
            delivery = WorkerProcess(policy_path=policy_path, part="delivery")

            def worked() -> None:
                delivery.wake()
                self._worked()

            work.on_wake, delivery.on_wake = worked, work.wake
            self.processes = [work, delivery]
        else:
            single = WorkerProcess(policy_path=policy_path)
            single.on_wake = self._worked
            self.processes = [single]

    def _worked(self) -> None:
        if self.on_work is not None:
            self.on_work()

    async def start(self) -> None:
        await asyncio.gather(*(p.start() for p in self.processes))

    def wake(self, part: Part = "all") -> None:
        """Wake the worker(s) doing ``part`` of the work ("all": every one)."""
        for process in self.processes:
            if part == "all" or process.part in (part, "all"):
                process.wake()

    async def stop(self) -> None:
        await asyncio.gather(*(p.stop() for p in self.processes))


class _Announcer:
    """Writes a wake line to the server, at most one per turn of the event loop."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self._woken = False

    def wake(self, part: Part = "all") -> None:
        """``part`` is ignored: the server passes every wake on to the other worker."""
        if self._woken:
            return
        self._woken = True
        with contextlib.suppress(BrokenPipeError, ValueError):
            self.out.write(WAKE)
            self.out.flush()
        asyncio.get_running_loop().call_soon(self._rearm)

    def _rearm(self) -> None:
        self._woken = False


# Allocations of container objects between two young-generation collections (Python's
# default: 700). A request allocates a few hundred; at 700 the collector ran every few
# requests and traversed every request in flight, then again as it aged: 3-6 % of each
# process's CPU under a burst. Only garbage in reference cycles waits for it; the rest is
# freed as it is dropped, whatever this is.
GC_YOUNG = 20_000


def settle_memory() -> None:
    """Move what start-up allocated out of the garbage collector's way (a full collection
    then scans only what requests allocate, a pause of a few ms instead of tens), and
    collect the young generation less often (:data:`GC_YOUNG`)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG, older, oldest)


async def run_worker(runtime: Runtime) -> None:
    """Work until stdin ends (the server is gone) or SIGTERM/SIGINT; each byte wakes us."""
    with contextlib.suppress(OSError):
        os.nice(NICENESS)  # people waiting for an answer go first; this work can lag a bit
    await runtime.prepare()
    settle_memory()  # start-up's objects are never garbage: keep collections short
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def read_wakes() -> None:
        while await reader.read(4096):
            runtime.wake_here()
        stop.set()

    if runtime.part != "all":  # tell the other half, through the server, of what we did
        runtime.notify = _Announcer(sys.stdout.buffer).wake

    await runtime.start_background()
    sys.stdout.buffer.write(READY + b"\n")  # the server starts taking requests now
    sys.stdout.buffer.flush()
    reading = asyncio.create_task(read_wakes(), name="worker-wakes")
    try:
        await stop.wait()
    finally:
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
        transport.close()
        await runtime.close()
