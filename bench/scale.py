"""Benchmark 4: a million open requests.

The database is generated straight into the tables (one real submission is the template:
its document, assignment and timers are copied with new ids, requesters, approvers and
times), so it takes a minute, not a day. Then, on it and on a small database for contrast:

* timer ticks: 1,000 timers due at once, fired the way :meth:`bot.runtime.Runtime.tick`
  does (batches of 100); time spent inside SQLite per batch of 100 (and wall time);
* submissions: 1,000 ``Store.submit`` on each of the big, small and an empty database, one
  on each in turn (vendor and cost center set, so every advisor history query runs), after
  20 untimed each, the logs checkpointed each second as the running bot does; p50 and p99;
* "waiting for you" for an approver with 10,000 pending steps: the App Home's read
  (``waiting_for`` the rows it shows, and the count of all), p99 of 20;
* the server's memory: ``approvals serve`` on the big database under a short burst.

It runs in a process of its own (``python -m bench.scale WORKDIR COUNT``, as ``bench.run``
starts it), its memory settled as the worker's is before it ticks
(:func:`bot.worker.settle_memory`): in the process that had just run benchmarks 1-3, a
full garbage collection of their records (110,000 objects, ~65 ms) now and then landed
inside a timed batch of 100 timers, which no worker's tick carries.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.harness import (
    MANAGERS,
    REQUESTERS,
    ROOT,
    SlackProcess,
    approvals_server,
    policy_yaml,
    purchase_bodies,
)
from bench.loadgen import burst, percentile
from bot.cards import HOME_WAITING_MAX
from bot.runtime import TIMER_BATCH
from bot.worker import settle_memory
from flows.advisor import rules_advice
from flows.machine import Submit
from flows.policy import Policy, load_policy
from storage import sqlite_inline
from storage.db import Database
from storage.migrate import upgrade
from storage.store import Store

BIG_APPROVER = "U_BIG"
BIG_PENDING = 10_000
DUE = 1_000
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")


async def _template(path: Path, policy: Policy) -> dict[str, Any]:
    """One real submission: the rows a pending request has, to copy."""
    db = Database(f"sqlite+aiosqlite:///{path}")
    await upgrade(db.engine)
    store = Store(db, advisor=rules_advice)
    await store.register_policy(policy, source=policy_yaml(), at=EPOCH)
    await store.submit(Submit(requester=REQUESTERS[0], amount=Decimal("12000"),
                              currency="USD", purpose="Laptops for the new hires of team 1",
                              at=EPOCH), policy=policy, source=policy_yaml())
    await db.close()
    conn = sqlite3.connect(path)
    doc, policy_hash = conn.execute("SELECT doc, policy_hash FROM requests").fetchone()
    timers = conn.execute("SELECT step, kind, due_at FROM timers").fetchall()
    conn.close()
    return {"doc": doc, "policy_hash": policy_hash, "timers": timers}


def generate(path: Path, template: dict[str, Any], *, count: int) -> float:
    """Fill the (migrated, empty but for the template) database at ``path`` with ``count``
    open requests; returns seconds taken."""
    started = time.perf_counter()
    doc = template["doc"]
    stamp = json.loads(doc)["created_at"]
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    for table in ("outbox", "timers", "assignments", "audit", "cards", "requests"):
        conn.execute(f"DELETE FROM {table}")
    # drop the indexes while loading and build them once at the end (far faster)
    indexes = conn.execute("SELECT sql FROM sqlite_master WHERE type='index' AND sql IS NOT "
                           "NULL AND tbl_name IN ('requests','assignments','timers')"
                           ).fetchall()
    for (sql,) in indexes:
        name = sql.split()[2] if sql.split()[1].upper() == "INDEX" else sql.split()[3]
        conn.execute(f"DROP INDEX {name}")
    now = datetime.now(UTC)
    far = _ts(now + timedelta(days=365))
    due_at = _ts(now - timedelta(seconds=5))
    batch = 20_000
    for start in range(1, count + 1, batch):
        requests, assignments, timers = [], [], []
        for rid in range(start, min(start + batch, count + 1)):
            big = rid <= BIG_PENDING
            requester = REQUESTERS[rid % len(REQUESTERS)]
            manager = BIG_APPROVER if big else MANAGERS[(rid % len(REQUESTERS))
                                                        % len(MANAGERS)]
            created = EPOCH + timedelta(seconds=rid)
            iso = created.isoformat().replace("+00:00", "Z")
            body = (doc.replace('"id":1,', f'"id":{rid},', 1)
                    .replace(f'"{REQUESTERS[0]}"', f'"{requester}"')
                    .replace(f'"{MANAGERS[0]}"', f'"{manager}"').replace(stamp, iso))
            requests.append((rid, requester, "pending", None, None, None, "USD", 1_200_000,
                             template["policy_hash"], _ts(created), _ts(created), 0, body))
            assignments.append((manager, rid, 0, _ts(created), None))
            for step, kind, _ in template["timers"]:
                due = due_at if (kind == "remind" and count - rid < DUE) else far
                timers.append((rid, step, kind, due))
        conn.executemany("INSERT INTO requests (id, requester, status, vendor, vendor_key, "
                         "cost_center, currency, base_amount_cents, policy_hash, created_at, "
                         "updated_at, version, doc) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                         requests)
        conn.executemany("INSERT INTO assignments (user_id, request_id, step, since, "
                         "principal) VALUES (?,?,?,?,?)", assignments)
        conn.executemany("INSERT INTO timers (request_id, step, kind, due_at) "
                         "VALUES (?,?,?,?)", timers)
    for (sql,) in indexes:
        conn.execute(sql)
    # request numbers come from the intake's sequence: go on after the generated ones
    conn.execute("DELETE FROM sqlite_sequence WHERE name = 'intake'")
    conn.execute("INSERT INTO sqlite_sequence (name, seq) SELECT 'intake', MAX(id) FROM requests")
    conn.execute("COMMIT")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("ANALYZE")
    conn.close()
    return time.perf_counter() - started


async def _measure(path: Path) -> dict[str, Any]:
    settle_memory()  # as the worker process is before it ticks (the module's docstring)
    db = Database(f"sqlite+aiosqlite:///{path}")
    store = Store(db, advisor=rules_advice)
    out: dict[str, Any] = {}
    # timers: as Runtime.tick fires them, in batches of TIMER_BATCH
    per_batch, per_batch_db = [], []
    fired = 0
    while True:
        now = datetime.now(UTC)
        db0 = sqlite_inline.database_time.seconds
        t0 = time.perf_counter()
        due = await store.due_timers(now, limit=TIMER_BATCH)
        await store.fire_timers(due, now=now)
        if not due:
            break
        fired += len(due)
        per_batch.append((time.perf_counter() - t0) * 1000 * TIMER_BATCH / len(due))
        per_batch_db.append((sqlite_inline.database_time.seconds - db0) * 1000 * TIMER_BATCH
                            / len(due))
    out["timers_fired"] = fired
    out["tick_ms_per_100_mean"] = sum(per_batch) / len(per_batch) if per_batch else None
    out["tick_ms_per_100_max"] = max(per_batch) if per_batch else None
    out["tick_db_ms_per_100_mean"] = (sum(per_batch_db) / len(per_batch_db) if per_batch_db
                                      else None)
    out["tick_db_ms_per_100_max"] = max(per_batch_db) if per_batch_db else None
    # "waiting for you" of an approver with BIG_PENDING steps (the App Home's reads)
    reads = []
    for _ in range(20):
        t0 = time.perf_counter()
        waiting = await store.waiting_for(BIG_APPROVER, limit=HOME_WAITING_MAX)
        total = await store.count_waiting_for(BIG_APPROVER)
        reads.append((time.perf_counter() - t0) * 1000)
    out["waiting_for_rows"] = len(waiting)
    out["waiting_for_count"] = total
    out["waiting_for_p99_ms"] = percentile(reads, 99)
    await db.close()
    return out


async def _submissions(paths: dict[str, Path], policy: Policy, *, submits: int = 1000,
                       warm: int = 20) -> dict[str, dict[str, Any]]:
    """``Store.submit`` on each database in turn, one each per round, so that the machine's
    speed, which drifts over a minute on a virtual machine, weighs on all of them alike;
    ``warm`` untimed rounds first (the first statements of a connection, cold pages). The
    write-ahead logs are checkpointed once a second, outside the timings, as the runtime's
    tick does in production (``Runtime._timers``): without it, a commit in every ~300 here
    copied 10,000 pages itself, which no submission of a running bot does."""
    dbs = {name: Database(f"sqlite+aiosqlite:///{path}") for name, path in paths.items()}
    stores = {name: Store(db, advisor=rules_advice) for name, db in dbs.items()}
    source = policy_yaml()
    latencies: dict[str, list[float]] = {name: [] for name in paths}
    names = list(paths)
    checkpointed = time.monotonic()
    for i in range(-warm, submits):
        cmd = Submit(requester=REQUESTERS[i % len(REQUESTERS)],
                     amount=Decimal(10_500 + i * 37 % 9000), currency="USD",
                     vendor=["Dell Inc", "Lenovo GmbH", "Acme Ltd"][i % 3],
                     cost_center="ENG-001",
                     purpose="Laptops for the new hires of team 1", at=datetime.now(UTC))
        for name in names[i % len(names):] + names[:i % len(names)]:
            t0 = time.perf_counter()
            await stores[name].submit(cmd, policy=policy, source=source)
            if i >= 0:
                latencies[name].append((time.perf_counter() - t0) * 1000)
        if time.monotonic() - checkpointed >= 1.0:
            for db in dbs.values():
                await db.checkpoint()
            checkpointed = time.monotonic()
    for db in dbs.values():
        await db.close()
    return {name: {"submits": len(timed), "submit_p50_ms": percentile(timed, 50),
                   "submit_p99_ms": percentile(timed, 99)}
            for name, timed in latencies.items()}


async def run(workdir: Path, *, count: int = 1_000_000) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    policy_path = workdir / "policy.yml"
    policy_path.write_text(policy_yaml())
    policy = load_policy(policy_path)
    figures: dict[str, Any] = {"open_requests": count}
    for name, size in (("small", BIG_PENDING + DUE), ("big", count)):
        path = workdir / f"{name}.db"
        for stale in workdir.glob(f"{name}.db*"):
            stale.unlink()
        template = await _template(path, policy)
        figures[f"{name}_generate_s"] = generate(path, template, count=size)
        figures[name] = await _measure(path)
    empty = workdir / "empty.db"
    for stale in workdir.glob("empty.db*"):
        stale.unlink()
    db = Database(f"sqlite+aiosqlite:///{empty}")
    await upgrade(db.engine)
    await db.close()
    figures["empty"] = await _measure(empty)
    for name, timed in (await _submissions(
            {name: workdir / f"{name}.db" for name in ("small", "big", "empty")},
            policy)).items():
        figures[name].update(timed)
    # the server's memory on the big database, under a burst
    slack = SlackProcess(workdir, llm_delay=0.0)
    try:
        server = approvals_server(workdir, slack, database=workdir / "big.db",
                                  policy=policy_path)
        await server.start()
        try:
            response_url = f"{slack.api_url.removesuffix('/api/')}/response/bench"
            load = await burst(server.url, purchase_bodies(5_000, response_url=response_url),
                               seconds=5)
            await asyncio.sleep(3)  # let the outbox and a tick run
            figures["server_requests"] = len(load.results)
            figures["server_rss_mb"], figures["server_peak_rss_mb"] = server.rss_mb()
        finally:
            server.stop()
    finally:
        slack.stop()
    return figures


async def run_apart(workdir: Path, *, count: int = 1_000_000) -> dict[str, Any]:
    """:func:`run` in a process of its own (the module's docstring says why)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.scale", str(workdir), str(count),
        stdout=asyncio.subprocess.PIPE, cwd=ROOT)
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"benchmark 4 exited with {process.returncode}")
    figures: dict[str, Any] = json.loads(out)
    return figures


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(Path(sys.argv[1]), count=int(sys.argv[2])))))
