"""The policy file: its YAML format, validation with exact locations, and its version hash.

A policy is loaded from YAML into frozen pydantic models. Numbers never pass through
``float``: the YAML loader hands decimals over as :class:`~decimal.Decimal`. A bad file is
refused with a :class:`~flows.errors.PolicyError` naming the file, the line, the field and
what is wrong. Each distinct policy has a version: the SHA-256 of its canonical JSON form,
so comments and formatting do not make new versions but any change of meaning does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from flows.durations import format_duration, parse_duration
from flows.errors import PolicyError
from flows.money import is_currency

# --------------------------------------------------------------------------- field types


def _decimal(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise PydanticCustomError("number", "must be a number, got {value}",
                                  {"value": repr(value)})
    try:
        number = Decimal(str(value).replace("_", ""))
    except InvalidOperation:
        raise PydanticCustomError("number", "must be a number, got {value}",
                                  {"value": repr(value)}) from None
    if not number.is_finite():
        raise PydanticCustomError("number", "must be a finite number, got {value}",
                                  {"value": repr(value)})
    return number


def _non_negative(value: Decimal) -> Decimal:
    if value < 0:
        raise PydanticCustomError("negative", "must be zero or more, got {value}",
                                  {"value": str(value)})
    return value


def _positive(value: Decimal) -> Decimal:
    if value <= 0:
        raise PydanticCustomError("not_positive", "must be more than zero, got {value}",
                                  {"value": str(value)})
    return value


def _currency(value: object) -> str:
    if not isinstance(value, str) or not is_currency(value):
        raise PydanticCustomError(
            "currency", "unknown currency {value}: use an ISO 4217 code such as USD or EUR",
            {"value": repr(value)})
    return value


def _duration(value: object) -> timedelta:
    if isinstance(value, timedelta):
        return value
    try:
        return parse_duration(str(value))
    except ValueError as exc:
        raise PydanticCustomError("duration", str(exc)) from None


def _user_id(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PydanticCustomError("user_id", "must be a Slack user ID, got {value}",
                                  {"value": repr(value)})
    return value.strip()


Amount = Annotated[Decimal, BeforeValidator(_decimal), AfterValidator(_non_negative),
                   PlainSerializer(str, return_type=str)]
Rate = Annotated[Decimal, BeforeValidator(_decimal), AfterValidator(_positive),
                 PlainSerializer(str, return_type=str)]
PositiveAmount = Annotated[Decimal, BeforeValidator(_decimal), AfterValidator(_positive),
                           PlainSerializer(str, return_type=str)]
Currency = Annotated[str, BeforeValidator(_currency)]
Duration = Annotated[timedelta, BeforeValidator(_duration),
                     PlainSerializer(format_duration, return_type=str)]
UserId = Annotated[str, BeforeValidator(_user_id)]
ApproverList = Annotated[list[UserId], Field(min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- the models


class DirectoryEntry(_Strict):
    manager: UserId


class Level(_Strict):
    name: Annotated[str, Field(min_length=1)]
    over: Amount | None = None
    approvers: Literal["manager"] | ApproverList

    @property
    def uses_manager(self) -> bool:
        return self.approvers == "manager"


class AutoApprove(_Strict):
    under: Amount


class Reminders(_Strict):
    after: Duration
    every: Duration


class Escalation(_Strict):
    after: Duration
    to: Literal["manager"] | ApproverList = "manager"


class Budget(_Strict):
    amount: PositiveAmount
    period: Literal["month", "quarter", "year"]


class Policy(_Strict):
    version: Literal[1]
    currency: Currency
    rates: dict[Currency, Rate] = Field(default_factory=dict)
    directory: dict[UserId, DirectoryEntry] = Field(default_factory=dict)
    levels: Annotated[list[Level], Field(min_length=1)]
    auto_approve: AutoApprove | None = None
    reminders: Reminders | None = None
    escalation: Escalation | None = None
    budgets: dict[str, Budget] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _coherent(self) -> Policy:
        names = [level.name for level in self.levels]
        for index, name in enumerate(names):
            if name in names[:index]:
                raise _located(("levels", index, "name"), f"level name {name!r} is used twice")
        needs_manager = [i for i, level in enumerate(self.levels) if level.uses_manager]
        if needs_manager and not self.directory:
            raise _located(("levels", needs_manager[0], "approvers"),
                           "uses the requester's manager, but the policy has no directory")
        if self.escalation and self.escalation.to == "manager" and not self.directory:
            raise _located(("escalation", "to"),
                           "escalates to the manager, but the policy has no directory")
        for user, entry in self.directory.items():
            if entry.manager == user:
                raise _located(("directory", user, "manager"), f"{user} cannot manage themself")
            seen = {user}
            boss: str | None = entry.manager
            while boss is not None:
                if boss in seen:
                    raise _located(("directory", user, "manager"),
                                   f"the management chain from {user} loops back to {boss}")
                seen.add(boss)
                nxt = self.directory.get(boss)
                boss = nxt.manager if nxt else None
        if self.currency in self.rates:
            raise _located(("rates", self.currency),
                           f"{self.currency} is the base currency; it needs no rate")
        return self

    # -- helpers used by routing and explain -------------------------------------------

    def manager_of(self, user: str) -> str | None:
        entry = self.directory.get(user)
        return entry.manager if entry else None

    @property
    def accepted_currencies(self) -> tuple[str, ...]:
        return (self.currency, *sorted(self.rates))

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True,
                          separators=(",", ":"), ensure_ascii=False)

    @property
    def version_hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()


class _LocatedError(ValueError):
    """A cross-field problem that knows which field it belongs to."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


def _located(loc: tuple[str | int, ...], message: str) -> _LocatedError:
    return _LocatedError(loc, message)


# --------------------------------------------------------------------------- loading


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps decimals exact and refuses duplicate keys."""


def _construct_decimal(loader: yaml.SafeLoader, node: yaml.Node) -> Decimal | str:
    text = str(loader.construct_scalar(node)).replace("_", "")  # type: ignore[arg-type]
    try:
        return Decimal(text)
    except InvalidOperation:
        # .inf / .nan: keep the text so validation says what is wrong with it
        return text


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})",
                key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node)


_Loader.add_constructor("tag:yaml.org,2002:float", _construct_decimal)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _field_name(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _line_of(root: yaml.Node | None, loc: Sequence[str | int]) -> int | None:
    """1-based line of the YAML node at ``loc`` (or of its deepest existing parent)."""
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if str(key_node.value) == str(part):
                    line = key_node.start_mark.line + 1
                    node = value_node
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _clean_loc(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """Drop pydantic's union and validator markers from a location."""
    skip = {"literal['manager']", "list[str]", "function-after", "function-before",
            "[key]", "json-or-python[json=function-plain[int_serializer()],python=int]"}
    out: list[str | int] = []
    for part in loc:
        if isinstance(part, str) and (part in skip or part.startswith(("function-", "literal[",
                                                                        "list["))):
            continue
        out.append(part)
    return tuple(out)


def _message(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "is required"
    if kind == "literal_error" and error["loc"] and error["loc"][0] == "version":
        return "must be 1"
    if kind == "too_short":
        return "must not be empty"
    msg = str(error["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return msg


def parse_policy(text: str, *, source: str = "policy.yml") -> Policy:
    """Parse and validate policy YAML; raise :class:`PolicyError` on the first problem."""
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or str(exc)
        raise PolicyError(f"not valid YAML: {problem}", file=source, line=line) from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"not valid YAML: {exc}", file=source) from None
    if not isinstance(data, dict):
        raise PolicyError("must be a mapping with version, currency and levels",
                          file=source, line=1)
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        # pydantic reports each alternative of a union; keep the most specific one
        first = min(errors, key=lambda e: (_union_rank(e), 0))
        located = first.get("ctx", {}).get("error")
        if isinstance(located, _LocatedError):
            loc: tuple[str | int, ...] = located.loc
            message = located.message
        else:
            loc = _clean_loc(tuple(first["loc"]))
            message = _message(first)
            if first["type"] in {"literal_error", "list_type"} and loc and loc[-1] in {
                    "approvers", "to"}:
                message = "must be 'manager' or a list of Slack user IDs"
        raise PolicyError(message, file=source, line=_line_of(root, loc),
                          field=_field_name(loc)) from None


def _union_rank(error: Mapping[str, Any]) -> int:
    """Prefer errors inside a list of approvers over 'is not the literal manager'."""
    if error["type"] == "literal_error" and any(str(p).startswith("list[") for p in error["loc"]):
        return 2
    if error["type"] == "literal_error" and any(str(p).startswith("literal[")
                                                for p in error["loc"]):
        return 1
    return 0


def load_policy(path: str | Path) -> Policy:
    """Read and validate the policy file at ``path``."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError("file not found", file=str(file)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"cannot be read: {exc}", file=str(file)) from None
    return parse_policy(text, source=str(file))
