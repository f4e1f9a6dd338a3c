"""The ``approvals`` command line.

Exit codes: 0 when all is well; 1 when input is refused or invalid, or a check fails; 2 for
usage errors (click's own) and configuration that stops a command from starting
(:class:`ConfigError`). Every error a person can cause -- any
:class:`~flows.errors.ApprovalsError`, or a :class:`ConfigError` -- is turned into one line
on stderr in one place, :meth:`ApprovalsGroup.invoke`; commands just raise.
"""

from __future__ import annotations

from typing import Any

import click

from bot import output
from bot.explain import Explanation, LevelRoute, explain
from flows.errors import ApprovalsError, RequestInvalid, Unroutable
from flows.money import SYMBOLS, parse_amount
from flows.policy import load_policy

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_CONFIG = 2


class ConfigError(Exception):
    """Configuration that stops a command before it starts (exit code 2).

    ``str()`` is the line to show: it names the variable, or the file, line and field.
    """


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
