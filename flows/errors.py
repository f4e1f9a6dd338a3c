"""The error tree of the core, turned into user text in exactly one place per shell.

::

    ApprovalsError              anything the product reports to a person
    ├── PolicyError             a policy file that cannot be used (file, line, field, what)
    ├── RequestInvalid          a purchase request whose input is wrong (field, what)
    └── Unroutable              a request no level can be routed for (the reason)

Refusals of a click or a command (not an assignee, step already decided, ...) are not
exceptions: transitions return them as :class:`flows.machine.Refusal` values, because they
are ordinary outcomes that must be audited, not failures.
"""

from __future__ import annotations


class ApprovalsError(Exception):
    """Base of every error a person may see; ``str()`` is the text to show."""


class PolicyError(ApprovalsError):
    """A policy file is unreadable or invalid."""

    def __init__(self, message: str, *, file: str = "", line: int | None = None,
                 field: str = "") -> None:
        self.file = file
        self.line = line
        self.field = field
        self.message = message
        where = file
        if line is not None:
            where = f"{where}:{line}" if where else f"line {line}"
        parts = [p for p in (where, field) if p]
        super().__init__(": ".join([*parts, message]))


class RequestInvalid(ApprovalsError):
    """A request's input is wrong; ``field`` names the input (``amount``, ``currency``...)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class Unroutable(ApprovalsError):
    """No approver can be found for a level the request needs."""
