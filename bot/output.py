"""Command-line output: readable tables on a terminal, plain aligned lines in a pipe.

On a terminal a table is drawn by ``rich``. Anywhere else (a pipe, a file, a test) it is
plain text that ``grep``, ``cut`` and ``awk`` can read: a header line, then one line per
row, columns separated by at least two spaces, no box drawing and no colour codes.
Errors are one line on stderr; the CLI's error handler is their only caller.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import TextIO

import click
from rich.console import Console
from rich.table import Table

GAP = "  "


def is_terminal(file: TextIO | None = None) -> bool:
    stream = file if file is not None else sys.stdout
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _cell(value: object) -> str:
    """One line per row, whatever a cell holds."""
    return " ".join(str(value).split()) if value is not None else ""


def plain_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """The lines of an aligned plain-text table: the last column is never padded."""
    table = [[_cell(h) for h in headers], *([_cell(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in table if i < len(row)) for i in range(len(headers))]
    lines = []
    for row in table:
        padded = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])] + row[-1:]
        lines.append(GAP.join(padded).rstrip())
    return lines


def print_table(headers: Sequence[str], rows: Iterable[Sequence[object]], *,
                title: str | None = None, file: TextIO | None = None,
                terminal: bool | None = None) -> None:
    """Print a table: ``rich`` on a terminal, :func:`plain_table` otherwise.

    ``terminal`` overrides the detection (tests use it to see both forms).
    """
    stream = file if file is not None else sys.stdout
    rows = list(rows)
    if terminal if terminal is not None else is_terminal(stream):
        table = Table(*headers, title=title, title_justify="left", highlight=False)
        for row in rows:
            table.add_row(*(_cell(c) for c in row))
        Console(file=stream, force_terminal=terminal, highlight=False).print(table)
        return
    if title:
        click.echo(title, file=stream)
    for line in plain_table(headers, rows):
        click.echo(line, file=stream)


def echo(text: str = "", *, file: TextIO | None = None) -> None:
    """A line of plain text on stdout (``click.echo``: strips colour codes in a pipe)."""
    click.echo(text, file=file)


def error(message: str) -> None:
    """``message`` as exactly one line on stderr."""
    click.echo(" ".join(message.splitlines()).strip() or "error", err=True)
