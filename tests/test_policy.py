"""The policy file: the example loads, and each kind of broken file is refused precisely."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from flows.errors import PolicyError
from flows.policy import load_policy, parse_policy

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "policy.example.yml"

# A small valid policy; each broken case below changes one thing in it. Line numbers:
GOOD = """\
version: 1
currency: USD
rates: {EUR: 1.08}
directory:
  U_ALICE: {manager: U_BOB}
  U_BOB: {manager: U_CAROL}
levels:
  - name: Manager
    approvers: manager
  - name: Finance
    over: 10000
    approvers: [U_FIN1, U_FIN2]
auto_approve:
  under: 500
reminders:
  after: 4h
  every: 24h
escalation:
  after: 48h
  to: manager
"""


def _broken(old: str, new: str) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new, 1)


def test_example_policy_loads() -> None:
    policy = load_policy(EXAMPLE)
    assert policy.currency == "USD"
    assert policy.rates == {"EUR": Decimal("1.08"), "GBP": Decimal("1.27")}
    assert [level.name for level in policy.levels] == ["Manager", "Finance", "Director"]
    assert policy.levels[0].uses_manager
    assert policy.levels[1].over == Decimal("10000")
    assert policy.levels[1].approvers == ["U_FIN1", "U_FIN2"]
    assert policy.auto_approve is not None and policy.auto_approve.under == Decimal("500")
    assert policy.reminders is not None
    assert policy.reminders.after == timedelta(hours=4)
    assert policy.reminders.every == timedelta(hours=24)
    assert policy.escalation is not None and policy.escalation.after == timedelta(hours=48)
    assert policy.manager_of("U_ALICE") == "U_BOB"
    assert policy.manager_of("U_CAROL") is None
    assert policy.budgets["ENG-001"].period == "quarter"
    assert len(policy.version_hash) == 64


def test_the_small_policy_of_these_tests_is_valid() -> None:
    parse_policy(GOOD)


# (case id, policy text, line, field, words the message must contain)
BROKEN: list[tuple[str, str, int, str, str]] = [
    ("unknown top-level field", GOOD + "colour: red\n", 21, "colour", "unknown field"),
    ("unknown field in a level",
     _broken("    over: 10000\n", "    over: 10000\n    colour: red\n"),
     12, "levels[1].colour", "unknown field"),
    ("unknown field in the directory",
     _broken("{manager: U_BOB}", "{manager: U_BOB, boss: U_X}"),
     5, "directory.U_ALICE.boss", "unknown field"),
    ("unknown field in reminders", _broken("  every: 24h\n", "  every: 24h\n  often: 1h\n"),
     18, "reminders.often", "unknown field"),
    ("negative threshold", _broken("over: 10000", "over: -5"),
     11, "levels[1].over", "must be zero or more, got -5"),
    ("non-numeric threshold", _broken("over: 10000", "over: lots"),
     11, "levels[1].over", "must be a number, got 'lots'"),
    ("boolean threshold", _broken("over: 10000", "over: true"),
     11, "levels[1].over", "must be a number, got True"),
    ("infinite threshold", _broken("over: 10000", "over: .inf"),
     11, "levels[1].over", "must be a number, got '.inf'"),
    ("negative auto-approval limit", _broken("under: 500", "under: -1"),
     14, "auto_approve.under", "must be zero or more"),
    ("unknown base currency", _broken("currency: USD", "currency: XYZ"),
     2, "currency", "unknown currency 'XYZ'"),
    ("unknown currency in rates", _broken("{EUR: 1.08}", "{EUR: 1.08, XYZ: 2}"),
     3, "rates.XYZ", "unknown currency 'XYZ'"),
    ("zero rate", _broken("{EUR: 1.08}", "{EUR: 0}"),
     3, "rates.EUR", "must be more than zero"),
    ("rate for the base currency", _broken("{EUR: 1.08}", "{EUR: 1.08, USD: 1}"),
     3, "rates.USD", "is the base currency"),
    ("duration in weeks", _broken("after: 4h", "after: 4w"),
     16, "reminders.after", "'4w' is not a duration"),
    ("zero duration", _broken("after: 4h", "after: 0h"),
     16, "reminders.after", "'0h' must be longer than zero"),
    ("duration that is a word", _broken("every: 24h", "every: abc"),
     17, "reminders.every", "'abc' is not a duration"),
    ("duration without a unit", _broken("after: 48h", "after: 48"),
     19, "escalation.after", "'48' is not a duration"),
    ("empty approver list", _broken("[U_FIN1, U_FIN2]", "[]"),
     12, "levels[1].approvers", "must not be empty"),
    ("approvers neither manager nor a list", _broken("[U_FIN1, U_FIN2]", "finance"),
     12, "levels[1].approvers", "must be 'manager' or a list of Slack user IDs"),
    ("approver that is not a user ID", _broken("[U_FIN1, U_FIN2]", "[U_FIN1, 42]"),
     12, "levels[1].approvers[1]", "must be a Slack user ID"),
    ("manager approvers with no directory",
     _broken("directory:\n  U_ALICE: {manager: U_BOB}\n  U_BOB: {manager: U_CAROL}\n", ""),
     6, "levels[0].approvers", "uses the requester's manager, but the policy has no directory"),
    ("directory entry without manager", _broken("{manager: U_BOB}", "{}"),
     5, "directory.U_ALICE.manager", "is required"),
    ("management loop", _broken("U_BOB: {manager: U_CAROL}", "U_BOB: {manager: U_ALICE}"),
     5, "directory.U_ALICE.manager", "loops back to U_ALICE"),
    ("manager of themself", _broken("{manager: U_BOB}", "{manager: U_ALICE}"),
     5, "directory.U_ALICE.manager", "U_ALICE cannot manage themself"),
    ("duplicate level name", _broken("name: Finance", "name: Manager"),
     10, "levels[1].name", "level name 'Manager' is used twice"),
    ("level without approvers", _broken("    approvers: [U_FIN1, U_FIN2]\n", ""),
     10, "levels[1].approvers", "is required"),
    ("no levels", _broken("levels:\n", "levels: []\nold_levels:\n"),
     7, "levels", "must not be empty"),
    ("wrong version", _broken("version: 1", "version: 2"), 1, "version", "must be 1"),
    ("bad budget period", GOOD + "budgets:\n  ENG-001: {amount: 5, period: week}\n",
     22, "budgets.ENG-001.period", "'month', 'quarter' or 'year'"),
]


@pytest.mark.parametrize(("text", "line", "field", "words"),
                         [case[1:] for case in BROKEN], ids=[case[0] for case in BROKEN])
def test_broken_policy_is_refused_with_line_and_field(
        text: str, line: int, field: str, words: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, source="policy.yml")
    error = caught.value
    assert (error.file, error.line, error.field) == ("policy.yml", line, field)
    assert words in error.message
    assert str(error) == f"policy.yml:{line}: {field}: {error.message}"
    assert "\n" not in str(error)


# YAML-level problems have no field: the message says what is wrong where.
NOT_A_POLICY: list[tuple[str, str, int, str]] = [
    ("duplicate top-level key", GOOD + "currency: EUR\n", 21,
     "duplicate key 'currency' (first on line 2)"),
    ("duplicate key in a level", _broken("    over: 10000\n", "    over: 10000\n    over: 5\n"),
     12, "duplicate key 'over' (first on line 11)"),
    ("not YAML at all", "levels: [\n  - name: x\n : : :", 2, "not valid YAML"),
    ("a tab for indentation", "version: 1\n\tcurrency: USD\n", 2, "not valid YAML"),
    ("a plain sentence", "this is not a policy", 1, "must be a mapping"),
    ("a list", "- version: 1\n", 1, "must be a mapping"),
    ("an empty file", "", 1, "must be a mapping"),
]


@pytest.mark.parametrize(("text", "line", "words"), [case[1:] for case in NOT_A_POLICY],
                         ids=[case[0] for case in NOT_A_POLICY])
def test_file_that_is_not_a_policy_is_refused_with_its_line(
        text: str, line: int, words: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, source="policy.yml")
    assert caught.value.line == line
    assert words in caught.value.message
    assert str(caught.value).startswith(f"policy.yml:{line}: ")
    assert "\n" not in str(caught.value)


def test_missing_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yml"
    with pytest.raises(PolicyError) as caught:
        load_policy(missing)
    assert str(caught.value) == f"{missing}: file not found"


def test_load_policy_names_the_file_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "policy.yml"
    path.write_text(_broken("over: 10000", "over: -5"), encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert str(caught.value).startswith(f"{path}:11: levels[1].over: ")


# --------------------------------------------------------------------------- version hash

REFORMATTED = """\
# the same policy, written differently
version: 1
currency: 'USD'
rates:
  EUR: 1.08            # a comment changes nothing
directory: {U_BOB: {manager: U_CAROL}, U_ALICE: {manager: U_BOB}}
levels:
- {name: Manager, approvers: manager}
- name: "Finance"
  approvers:
    - U_FIN1
    - U_FIN2
  over: 10_000
escalation: {to: manager, after: 2d}
reminders: {every: 1d, after: 240m}
auto_approve: {under: 500}
"""


def test_version_hash_ignores_comments_and_formatting() -> None:
    assert parse_policy(REFORMATTED).version_hash == parse_policy(GOOD).version_hash


@pytest.mark.parametrize(("old", "new"), [
    ("over: 10000", "over: 10001"),
    ("{EUR: 1.08}", "{EUR: 1.09}"),
    ("[U_FIN1, U_FIN2]", "[U_FIN2, U_FIN1]"),
    ("after: 4h", "after: 5h"),
    ("name: Finance", "name: Finances"),
    ("U_BOB: {manager: U_CAROL}", "U_BOB: {manager: U_DAVE}"),
])
def test_version_hash_changes_when_a_value_changes(old: str, new: str) -> None:
    assert parse_policy(_broken(old, new)).version_hash != parse_policy(GOOD).version_hash
