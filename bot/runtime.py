"""The running bot's parts, wired together: database, store, policy, clock, Slack client,
the outbox worker and the timer tick.

Nothing here decides anything. :meth:`Runtime.tick` is what APScheduler calls about once a
second: it fires the timers that are due (each claimed by deleting its row in the same
transaction as the state change it causes) and delivers the outbox. Listeners call
:meth:`Runtime.wake` after a commit so messages go out at once instead of on the next tick.
:meth:`Runtime.submitted` also queues the request for the LLM advisor (when
``OPENAI_API_KEY`` is set), asked by a few background tasks in turn: its opinion, or a note
when it fails, updates the cards later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal

import aiohttp
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.exc import InterfaceError, OperationalError

from bot.advisor_llm import FAILED, AdvisorUnavailable, LlmAdvisor
from bot.clock import Clock, SystemClock
from bot.delivery import BATCH, Deliverer
from bot.settings import ConfigError, Settings
from flows.advisor import Opinion, rules_advice
from flows.machine import Outcome
from flows.model import Request, RequestStatus
from flows.policy import Policy, load_policy
from flows.textchecks import read_request
from storage.db import Database
from storage.store import Received, Store

log = logging.getLogger("approvals.runtime")

TIMER_BATCH = 100
# New requests created ahead of delivery, at most (two rounds of cards): beyond it
# creation waits for the next round, so the intake fills and acknowledgements slow
# (storage.store.INTAKE_HOLD) instead of cards falling behind their acknowledgements.
AHEAD_MAX = 2 * BATCH
# The same bound when delivery runs in a process of its own (Part "work"): messages to
# people not yet sent, read from the database; each round the delivery process sends wakes
# this one (through the server), and it looks again after ROOM_POLL seconds regardless.
SPLIT_AHEAD = 4 * BATCH
ROOM_POLL = 0.05
LOCK_GAP = 0.002  # seconds between two write transactions of the work process (SQLite)
SLACK_TIMEOUT = 10  # seconds for one Slack Web API call
# An outage is logged as one line a second, not a traceback a second.
DATABASE_DOWN = (OperationalError, InterfaceError, OSError, TimeoutError)


# What a process runs: everything ("all": inline, or the single worker), or one of the two
# halves of the worker (bot.worker): new requests, timers and the LLM's second opinions
# ("work"), or clicks and the outbox ("delivery": a click's card updates and next cards go
# out from the process that decided it, as with one worker), each half on a core.
Part = Literal["all", "work", "delivery"]


def _one_line(exc: BaseException) -> str:
    return " ".join(str(getattr(exc, "orig", None) or exc).split())[:200] or type(exc).__name__


class Runtime:
    def __init__(self, *, settings: Settings, policy: Policy, policy_source: str,
                 clock: Clock | None = None, db: Database | None = None,
                 llm: LlmAdvisor | None = None) -> None:
        """``llm``: the LLM advisor; by default the one ``OPENAI_API_KEY`` enables, if any."""
        self.settings = settings
        self.policy = policy
        self.policy_path: Path | None = None  # where the policy was read from, if a file
        self.policy_source = policy_source
        self.clock: Clock = clock or SystemClock()
        self.db = db or Database(settings.database_url)
        self.store = Store(self.db, advisor=rules_advice,
                           home_delay=settings.home_refresh_seconds,
                           intake_limit=settings.intake_backlog)
        self.llm = llm if llm is not None else LlmAdvisor.from_settings(settings)
        # Requests waiting for the LLM's second opinion, by id (a burst of thousands costs
        # a few bytes each, not a task and a request each), and the tasks asking it: as
        # many as it takes calls at once.
        self._to_advise: asyncio.Queue[int] = asyncio.Queue()
        self._advising: list[asyncio.Task[None]] = []
        token = settings.slack_bot_token
        # slack_sdk formats a debug line of every call's parameters unless its logger has
        # a level of its own (it tests ``logger.level``, not the effective level): a third
        # of a card's cost. Ours has one; debug logging still works by lowering it.
        api_log = logging.getLogger("approvals.slack_api")
        if api_log.level == logging.NOTSET:
            api_log.setLevel(logging.INFO)
        # Listener calls (views.open, views.publish, ephemeral answers) retry what is safe.
        self.client = AsyncWebClient(token=token, base_url=settings.slack_api_url,
                                     timeout=SLACK_TIMEOUT, logger=api_log,
                                     retry_handlers=[
                                         AsyncConnectionErrorRetryHandler(max_retry_count=1),
                                         AsyncRateLimitErrorRetryHandler(max_retry_count=1),
                                         AsyncServerErrorRetryHandler(max_retry_count=1)])
        # The outbox retries by itself, with its own bookkeeping: no hidden retries there.
        self.outbox_client = AsyncWebClient(token=token, base_url=settings.slack_api_url,
                                            timeout=SLACK_TIMEOUT, logger=api_log,
                                            retry_handlers=[])
        self.deliverer = Deliverer(store=self.store, client=self.outbox_client,
                                   clock=self.clock,
                                   lease_seconds=settings.outbox_lease_seconds,
                                   homes_per_minute=settings.home_publishes_per_minute,
                                   # SQLite is for one process (docs/DEPLOYMENT.md)
                                   only_publisher=self.db.sqlite)
        self.deliverer.on_sent = self._sent
        self.part: Part = "all"
        # the schema was brought up to date, or checked, by the server that started this
        # worker process just before: prepare() need not do it again
        self.schema_ready = False
        self._wake = asyncio.Event()
        # set when background work runs in another process (bot.worker): wakes it, or
        # (given "work" or "delivery") the one doing that part when the work is split
        self.notify: Callable[[Part], None] | None = None
        self._scheduler: AsyncIOScheduler | None = None
        self._drainers: list[asyncio.Task[None]] = []
        self._deliver = asyncio.Event()  # the outbox may have something new
        self._busy = False  # clicks or new requests are being processed
        self._ahead = 0  # requests created since delivery last caught up (AHEAD_MAX)
        self._room = asyncio.Event()  # set when delivery has caught up a little, or on wake
        self._prepared = False
        self._http: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, policy_path: Path | None = None,
                      clock: Clock | None = None) -> Runtime:
        path = policy_path or settings.policy_path
        policy = load_policy(path)
        runtime = cls(settings=settings, policy=policy,
                      policy_source=Path(path).read_text(encoding="utf-8"), clock=clock)
        runtime.policy_path = Path(path)
        return runtime

    async def prepare(self) -> None:
        """Bring the schema up to date (SQLite) or check it (PostgreSQL); keep the policy."""
        if self._prepared:
            return
        if not self.schema_ready:
            await self._check_schema()
        await self.store.register_policy(self.policy, source=self.policy_source,
                                         at=self.clock.now())
        # the advisor's text checks work out their prefilters on first use (0.1-0.2 s):
        # now, rather than in the first request's time
        read_request("Laptops for the new hires")
        if self._http is None:
            # One connection pool for every Slack call: slack_sdk otherwise opens a new
            # session, and a new connection, per call.
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=SLACK_TIMEOUT))
            self.client.session = self.outbox_client.session = self._http
            self.deliverer.http = self._http
        self._prepared = True

    # ------------------------------------------------------------------ background work

    async def _check_schema(self) -> None:
        # Imported here: a worker started by the server (schema_ready) never loads Alembic
        # (about 10 MB a process).
        from storage.migrate import current_revision, head_revision, upgrade

        if self.db.sqlite:
            await upgrade(self.db.engine)
            return
        current = await current_revision(self.db.engine)
        if current != head_revision():
            raise ConfigError(f"DATABASE_URL: the schema is at revision {current or 'none'}"
                              f", not {head_revision()}: run `approvals db upgrade`")

    async def tick(self) -> None:
        """New requests, due timers, then the outbox, all of it. Safe to call at any time."""
        async def everything() -> None:
            while await self.store.process_clicks():
                pass
            await self.process_intake()
            await self._fire_due()
            await self.deliverer.drain()

        await self._logged(everything())

    async def _fire_due(self) -> None:
        await self.store.end_expired_delegations(self.clock.now())
        while True:
            now = self.clock.now()
            due = await self.store.due_timers(now, limit=TIMER_BATCH)
            await self.store.fire_timers(due, now=now)
            if len(due) < TIMER_BATCH:
                return

    @staticmethod
    async def _logged(work: Awaitable[object]) -> None:
        """Run ``work``; an outage is one line, anything else a logged traceback."""
        try:
            await work
        except DATABASE_DOWN as exc:
            log.warning("tick: the database is not answering (%s); trying again in a second",
                        _one_line(exc))
        except Exception:
            log.exception("tick failed; trying again on the next one")

    async def process_intake(self) -> int:
        """Create every request waiting in the intake; how many were created."""
        created = 0
        while True:
            outcomes = await self.store.process_intake(self.clock.now())
            for outcome in outcomes:
                self.submitted(outcome)
            created += len(outcomes)
            if not outcomes:
                return created
            await asyncio.sleep(0)  # acknowledgements waiting on this loop go first

    def received(self, received: Received) -> None:
        """A submission was accepted: create it now (queued) or follow up on it (created)."""
        if received.outcome is not None:
            self.submitted(received.outcome)
        else:
            self.wake("work")

    def submitted(self, outcome: Outcome) -> None:
        """A request was just created: deliver its messages now, and let slower work
        (such as an LLM's annotation) follow in the background without holding the ack."""
        self.wake()
        request = outcome.request
        # A second opinion is for people: requests approved automatically need none.
        if self.llm is not None and request.status is RequestStatus.PENDING:
            if not self._advising:
                self._advising = [asyncio.create_task(self._advise_next(self.llm),
                                                      name=f"advisor-{n}")
                                  for n in range(self.llm.concurrency)]
            self._to_advise.put_nowait(request.id)

    async def _advise_next(self, llm: LlmAdvisor) -> None:
        """Ask for the second opinions waiting, one at a time, oldest first."""
        while True:
            request_id = await self._to_advise.get()
            try:
                request = await self.store.get(request_id)
                if request is not None:
                    await self._second_opinion(llm, request)
            except DATABASE_DOWN as exc:  # the rules' annotation stands
                log.warning("AI advisor: could not read PR-%s (%s)", request_id,
                            _one_line(exc))
            except Exception:
                log.exception("AI advisor: could not read PR-%s", request_id)
            finally:
                self._to_advise.task_done()

    def second_opinions_waiting(self) -> int:
        """Requests whose second opinion has not been asked for yet."""
        return self._to_advise.qsize()

    async def _second_opinion(self, llm: LlmAdvisor, request: Request) -> None:
        """Ask the LLM, then record its opinion -- or a note saying why there is none."""
        opinion: Opinion | None = None
        note: str | None = None
        try:
            policy = await self.store.policy(request.policy_version)
            opinion = await llm.opinion(request, policy)
        except AdvisorUnavailable as exc:
            log.warning("AI advisor gave no opinion on %s: %s", request.ref, exc)
            note = exc.note
        except Exception:
            log.exception("AI advisor failed on %s", request.ref)
            note = FAILED
        try:
            await self.store.annotate(request.id, source=llm.source, at=self.clock.now(),
                                      opinion=opinion, note=note)
        except Exception:
            log.exception("could not record the AI advisor's annotation of %s", request.ref)
            return
        self.wake()

    async def advised(self) -> None:
        """Wait until every LLM annotation under way is recorded (tests, the demo)."""
        await self._to_advise.join()

    def wake(self, part: Part = "all") -> None:
        """Something was committed: look for work now, here and in the worker process(es);
        ``part``: what it is work for (new requests for "work", clicks for "delivery"),
        so that a worker doing only the other part is not woken for nothing."""
        self.wake_here()
        if self.notify is not None:
            self.notify(part)

    def wake_here(self) -> None:
        """Look for work now in this process (another one committed something)."""
        self._wake.set()
        self._deliver.set()
        self._room.set()  # a click may be waiting, even while new requests wait for delivery

    async def _may_create(self) -> bool:
        """Whether delivery is close enough behind for more requests to be created."""
        if self.part == "work":  # delivery is another process: the database knows
            return await self.store.people_waiting(limit=SPLIT_AHEAD) < SPLIT_AHEAD
        return self._ahead < AHEAD_MAX

    async def _work_loop(self) -> None:
        """Clicks and new requests (only new requests in the work half, only clicks in the
        delivery half), a batch of each in turn while either has work; then wait for
        :meth:`wake` (a commit here or in the server) or the next tick. Delivery runs beside
        it (:meth:`_delivery_loop`): while cards wait on Slack, this goes on."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                while True:
                    clicked = await self.store.process_clicks() if self.part != "work" else 0
                    outcomes: list[Outcome] = []
                    self._room.clear()  # (before looking: a wake meanwhile is not lost)
                    if self.part == "delivery":
                        pass  # new requests are the work half's
                    elif await self._may_create():
                        outcomes = await self.store.process_intake(self.clock.now())
                        self._ahead += len(outcomes)
                        for outcome in outcomes:
                            self.submitted(outcome)
                    elif not clicked:  # delivery is a round behind: new requests wait for
                        # it to catch up (or for a wake: a click)
                        if self.part == "work":
                            with contextlib.suppress(TimeoutError):
                                await asyncio.wait_for(self._room.wait(), ROOM_POLL)
                        else:
                            await self._room.wait()
                        continue
                    self._busy = bool(clicked or outcomes)
                    if not self._busy:
                        break
                    self._deliver.set()
                    # on SQLite, the delivery process and the server (which retries every
                    # millisecond) get their turn at the write lock between two of ours
                    await asyncio.sleep(LOCK_GAP if self.part == "work" and self.db.sqlite
                                        else 0)
            except DATABASE_DOWN as exc:
                log.warning("background: the database is not answering (%s)", _one_line(exc))
            except Exception:
                log.exception("background work failed; the next tick retries")
            finally:
                self._busy = False
            self._deliver.set()  # App Homes may go now

    def _sent(self, count: int) -> None:
        """``count`` messages to people went out (:attr:`Deliverer.on_sent`): room for
        more new requests, here or (wakes through the server) in the work process."""
        self._ahead = max(0, self._ahead - count)
        self._room.set()
        if self.part == "delivery" and self.notify is not None:
            self.notify("work")

    async def _delivery_loop(self) -> None:
        """Deliver the outbox, a round at a time, whenever there may be something new;
        App Homes wait while clicks and new requests are being processed: cards first."""
        while True:
            await self._deliver.wait()
            self._deliver.clear()
            try:
                # App Homes wait while new requests or clicks are processed here, or (the
                # delivery process, which cannot tell) until the cards have caught up
                homes = not self._busy and self.part != "delivery"
                while True:  # each round waits on Slack: the work loop goes on meanwhile
                    sent = await self.deliverer.drain(max_rounds=1, homes=homes)
                    if sent:
                        continue
                    if homes or self.part != "delivery":
                        break
                    homes = True
            except DATABASE_DOWN as exc:
                log.warning("delivery: the database is not answering (%s)", _one_line(exc))
            except Exception:
                log.exception("delivery failed; the next tick retries")
            finally:
                self._ahead = 0  # nothing to deliver now (or it failed): creation goes on
                self._room.set()

    async def _timers(self) -> None:
        """Once a second: end delegations that ran out, fire due timers, deliver, and (on
        SQLite) checkpoint the write-ahead log, outside any request's commit."""
        if self.part != "delivery":
            await self._logged(self._fire_due())
        self.wake()  # the work loop, delivery (retries, leases run out), here or elsewhere
        await self._logged(self.db.checkpoint())

    async def start_background(self) -> None:
        scheduler = AsyncIOScheduler(timezone="UTC")
        scheduler.add_job(self._timers, "interval", seconds=1, max_instances=1, coalesce=True,
                          misfire_grace_time=5, id="tick")
        scheduler.start()
        self._scheduler = scheduler
        self._drainers = [asyncio.create_task(self._work_loop(), name="clicks"
                                              if self.part == "delivery" else "intake")]
        if self.part != "work":
            self._drainers.append(asyncio.create_task(self._delivery_loop(),
                                                      name="outbox-drain"))
        self.wake_here()  # whatever an earlier process left behind

    async def close(self) -> None:
        for task in self._advising:
            task.cancel()
        await asyncio.gather(*self._advising, return_exceptions=True)
        self._advising = []
        if self.llm is not None:
            await self.llm.close()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        for task in self._drainers:
            task.cancel()
        await asyncio.gather(*self._drainers, return_exceptions=True)
        self._drainers = []
        if self._http is not None:
            await self._http.close()
        await self.db.close()
