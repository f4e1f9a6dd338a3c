"""The ``approvals`` command line.

Exit codes: 0 when all is well; 1 when input is refused or invalid, or a check fails; 2 for
usage errors (click's own) and configuration that stops a command from starting
(:class:`ConfigError`). Every error a person can cause -- any
:class:`~flows.errors.ApprovalsError`, or a :class:`ConfigError` -- is turned into one line
on stderr in one place, :meth:`ApprovalsGroup.invoke`; commands just raise.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar, cast

import click
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from bot import output
from bot.explain import Explanation, LevelRoute, explain
from bot.settings import ConfigError, Settings, load_settings
from flows.audit import Break
from flows.errors import ApprovalsError, RequestInvalid, Unroutable
from flows.model import parse_ref
from flows.money import SYMBOLS, parse_amount
from flows.policy import load_policy
from storage.db import Database
from storage.store import Store

if TYPE_CHECKING:
    from bot.runtime import Part

T = TypeVar("T")

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_CONFIG = 2


class _Refused(click.ClickException):
    """An error already worded for people: shown as is, on one line."""

    exit_code = EXIT_REFUSED

    def show(self, file: Any = None) -> None:
        output.error(self.format_message())


class _Misconfigured(_Refused):
    exit_code = EXIT_CONFIG


class ApprovalsGroup(click.Group):
    """The one place where errors become a line on stderr and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            raise _Misconfigured(str(exc)) from None
        except ApprovalsError as exc:
            raise _Refused(str(exc)) from None


@click.group(cls=ApprovalsGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Multi-level purchase approvals in Slack, with an audit trail finance can trust."""


def main() -> None:
    """Entry point of the ``approvals`` console script."""
    cli.main(prog_name="approvals")


# --------------------------------------------------------------------------- policy


@cli.group()
def policy() -> None:
    """Check a policy file, and see the route a request would take under it."""


@policy.command("check")
@click.argument("file")
def policy_check(file: str) -> None:
    """Validate the policy FILE: exit 0, or 1 with the file, line and field at fault."""
    loaded = load_policy(file)
    count = len(loaded.levels)
    output.echo(f"{file}: valid ({count} level{'' if count == 1 else 's'}, "
                f"version {loaded.version_hash[:12]})")


@policy.command("explain")
@click.argument("file")
@click.option("--amount", required=True, metavar="AMOUNT",
              help="As people type it: 42000, 1,200.50, €25,000.")
@click.option("--currency", metavar="CODE",
              help="ISO code such as EUR. Default: the amount's symbol, else the policy's "
                   "base currency.")
@click.option("--requester", required=True, metavar="USER_ID",
              help="Slack user ID of the person asking, e.g. U024BE7LH.")
def policy_explain(file: str, amount: str, currency: str | None, requester: str) -> None:
    """Print the route a request would take under the policy FILE. Changes nothing."""
    loaded = load_policy(file)
    value = parse_amount(amount)
    code = _currency(amount, currency) or loaded.currency
    explanation = explain(loaded, amount=value, currency=code, requester=requester.strip())
    _print_explanation(explanation, source=file, version=loaded.version_hash[:12])
    if explanation.unroutable:
        raise Unroutable(f"the request would end rejected as unroutable: "
                         f"{explanation.unroutable}")


def _currency(amount: str, option: str | None) -> str | None:
    """The currency named by ``--currency`` or by the amount's symbol; they must agree."""
    symbol = SYMBOLS.get(amount.strip()[:1])
    code = option.strip().upper() if option is not None else None
    if code is not None and not (len(code) == 3 and code.isalpha()):
        raise RequestInvalid("currency", f"'{option}' is not a currency code such as EUR")
    if symbol and code and symbol != code:
        raise RequestInvalid("currency", f"the amount is in {symbol} but --currency says "
                                         f"{code}")
    return code or symbol


def _print_explanation(e: Explanation, *, source: str, version: str) -> None:
    output.echo(f"Request: {e.amount_text}, by {e.requester}")
    output.echo(f"Policy: {source}, version {version}")
    output.echo(f"Auto-approval: {e.auto_reason}")
    output.echo()
    if e.levels:
        output.print_table(
            ["#", "level", "why it applies", "decided by", "escalates to"],
            [(i, level.name, level.reason,
              _deciders(level),
              _escalates(e, level)) for i, level in enumerate(e.levels, 1)],
            title="Levels:")
    else:
        output.echo("Levels: none applies")
    notes = [(level.name, note) for level in e.levels for note in level.notes]
    notes += [(level.name, f"unroutable: {level.unroutable}") for level in e.levels
              if level.unroutable]
    if notes:
        output.echo()
        output.echo("Separation of duties:")
        for name, note in notes:
            output.echo(f"- {name}: {note}")
    if e.skipped:
        output.echo()
        output.echo("Levels that do not apply:")
        for name, why in e.skipped:
            output.echo(f"- {name}: {why}")
    output.echo()
    output.echo(f"Reminders: {e.reminders}")
    output.echo(f"Escalation: {e.escalation}")


def _deciders(level: LevelRoute) -> str:
    if not level.assignees:
        return "nobody eligible"
    text = " or ".join(level.assignees)
    if level.manager_of and level.assignees == level.listed:
        text += f" (manager of {level.manager_of})"
    return text


def _escalates(e: Explanation, level: LevelRoute) -> str:
    if e.escalation.startswith("none") or level.unroutable:
        return "-"
    return ", ".join(level.escalates_to) or "nobody eligible"


# --------------------------------------------------------------------------- database


def _settings(**overrides: object) -> Settings:
    return load_settings(**overrides)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro``; a database that does not answer is a configuration problem (exit 2)."""
    try:
        return asyncio.run(coro)
    except (OSError, DBAPIError) as exc:
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]
        raise ConfigError(f"DATABASE_URL: the database does not answer ({reason})") from None


def _existing(url: str) -> str:
    """``url``, once it is sure a SQLite file is there (reading never creates one)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:") \
            and not Path(parsed.database).exists():
        raise ConfigError(f"DATABASE_URL: there is no database at {parsed.database}")
    return url


async def _with_store(url: str, work: Callable[[Store], Awaitable[T]]) -> T:
    db = Database(url)
    try:
        await upgrade_if_embedded(db)
        return await work(Store(db))
    finally:
        await db.close()


async def upgrade_if_embedded(db: Database) -> None:
    """The embedded SQLite default keeps its own schema current; PostgreSQL is upgraded
    explicitly by an operator (``approvals db upgrade``)."""
    if db.sqlite:
        from storage.migrate import upgrade

        await upgrade(db.engine)


@cli.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply every schema migration to DATABASE_URL (safe to run again)."""
    settings = _settings()

    async def work() -> str | None:
        from storage.migrate import current_revision, upgrade

        database = Database(settings.database_url)
        try:
            await upgrade(database.engine)
            return await current_revision(database.engine)
        finally:
            await database.close()

    revision = _run(work())
    output.echo(f"database is at revision {revision} (latest)")


# --------------------------------------------------------------------------- audit


class AuditGroup(click.Group):
    """``approvals audit PR-42`` shows one trail; ``export`` and ``verify`` are subcommands."""

    def resolve_command(self, ctx: click.Context,
                        args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] not in self.commands and parse_ref(args[0]) is not None:
            return "show", self.commands["show"], args
        return super().resolve_command(ctx, args)


@cli.group(cls=AuditGroup)
def audit() -> None:
    """The audit trail: `approvals audit PR-42`, `audit export`, `audit verify`."""


@audit.command("show", hidden=True)
@click.argument("ref")
def audit_show(ref: str) -> None:
    """One request's whole trail, one line per entry."""
    request_id = parse_ref(ref)
    if request_id is None:
        raise RequestInvalid("request", f"'{ref}' is not a request ID such as PR-42")
    settings = _settings()
    entries = _run(_with_store(_existing(settings.database_url),
                               lambda st: st.audit_for(request_id)))
    if not entries:
        raise ApprovalsError(f"PR-{request_id} has no audit trail here")
    output.print_table(["time", "event", "actor", "details"],
                       [(e.at, e.event, e.actor, _details(e.data)) for e in entries])


def _details(data: dict[str, Any]) -> str:
    parts = []
    for key, value in data.items():
        if value is None or value == [] or value == {}:
            continue
        shown = value if isinstance(value, str | int | float) else json.dumps(
            value, ensure_ascii=False, separators=(",", ":"))
        parts.append(f"{key}={shown}")
    return " ".join(parts)


@audit.command("export")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), required=True)
@click.option("--output", "out", type=click.Path(dir_okay=False, writable=True),
              help="Write to this file instead of stdout.")
def audit_export(fmt: str, out: str | None) -> None:
    """Every entry, in order: CSV (request,event,actor,at,data) or JSON lines."""
    settings = _settings()
    with contextlib.ExitStack() as stack:
        stream: TextIO = (stack.enter_context(open(out, "w", encoding="utf-8", newline=""))
                          if out else sys.stdout)
        count = _run(_with_store(_existing(settings.database_url),
                                 lambda store: _export(store, fmt, stream)))
    if out:
        output.echo(f"wrote {count} entries to {out}")


async def _export(store: Store, fmt: str, stream: TextIO) -> int:
    writer = csv.writer(stream) if fmt == "csv" else None
    if writer is not None:
        writer.writerow(["request", "event", "actor", "at", "data"])
    count = 0
    async for entry in store.audit_entries():
        if writer is not None:
            writer.writerow([entry.request or "", entry.event, entry.actor, entry.at,
                             json.dumps(entry.data, ensure_ascii=False, sort_keys=True)])
        else:
            stream.write(json.dumps({
                "seq": entry.seq, "request": entry.request, "event": entry.event,
                "actor": entry.actor, "at": entry.at, "data": entry.data,
                "prev_hash": entry.prev_hash, "hash": entry.hash},
                ensure_ascii=False, sort_keys=True) + "\n")
        count += 1
    return count


@audit.command("verify")
def audit_verify() -> None:
    """Check the whole trail's hash chain; exit 1 naming the first bad entry."""
    settings = _settings()

    async def work(store: Store) -> tuple[Break | None, int]:
        broken = await store.verify_audit()
        total = await store.audit_count()
        return broken, total

    broken, total = _run(_with_store(_existing(settings.database_url), work))
    if broken is not None:
        raise ApprovalsError(f"audit trail is NOT intact: {broken}")
    output.echo(f"audit trail intact: {total} entries verified")


# --------------------------------------------------------------------------- serve and demo


@cli.command()
@click.option("--port", type=click.IntRange(1, 65535), default=3000, show_default=True)
@click.option("--host", default="0.0.0.0", show_default=True)  # noqa: S104 - a server
@click.option("--policy", "policy_file", type=click.Path(dir_okay=False),
              help="Policy file (default: APPROVALS_POLICY, else ./policy.yml).")
@click.option("--socket", is_flag=True, help="Socket Mode: no public URL needed.")
def serve(port: int, host: str, policy_file: str | None, socket: bool) -> None:
    """Run the Slack bot (HTTP mode, or Socket Mode with --socket)."""
    from bot.runtime import Runtime
    from bot.server import serve_http, serve_socket
    from flows.errors import PolicyError

    settings = _settings()
    settings.require_slack(socket=socket)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # one line a second otherwise
    try:
        runtime = Runtime.from_settings(
            settings, policy_path=Path(policy_file) if policy_file else None)
    except PolicyError as exc:
        raise ConfigError(f"APPROVALS_POLICY: {exc}") from None
    if socket:
        _run(serve_socket(runtime))
    else:
        _run(serve_http(runtime, host=host, port=port))


@cli.command()
@click.option("--policy", "policy_file", type=click.Path(dir_okay=False),
              help="Policy file (default: APPROVALS_POLICY, else ./policy.yml).")
@click.option("--part", type=click.Choice(["all", "work", "delivery"]), default="all",
              show_default=True,
              help="All of it, or one half: new requests and timers (work), or clicks "
                   "and delivery to Slack (delivery).")
@click.option("--schema-ready", is_flag=True, hidden=True,
              help="The server that starts this worker has just checked the schema.")
def worker(policy_file: str | None, part: str, schema_ready: bool) -> None:
    """Run the background work only (new requests, clicks, timers, delivery); `serve`
    starts it by itself (with APPROVALS_WORKER=split, its two halves). Stops at the end
    of its standard input."""
    from bot.runtime import Runtime
    from bot.worker import run_worker
    from flows.errors import PolicyError

    settings = _settings()
    if not settings.slack_bot_token:
        raise ConfigError("SLACK_BOT_TOKEN is not set: give the bot token (xoxb-...)")
    logging.basicConfig(level=logging.INFO,
                        format=f"%(asctime)s %(levelname)s %(name)s[worker {part}]: %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    try:
        runtime = Runtime.from_settings(
            settings, policy_path=Path(policy_file) if policy_file else None)
    except PolicyError as exc:
        raise ConfigError(f"APPROVALS_POLICY: {exc}") from None
    runtime.deliverer.only_publisher = False  # the server publishes App Homes too
    runtime.part = cast("Part", part)
    runtime.schema_ready = schema_ready
    _run(run_worker(runtime))


@cli.command()
def demo() -> None:
    """Play the whole flow offline: a local Slack stand-in, a temporary database."""
    from bot.demo import run_demo

    _run(run_demo())
