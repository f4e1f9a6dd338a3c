"""``approvals policy check`` and ``approvals policy explain``, and the CLI's output rules."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from bot.cli import ApprovalsGroup, ConfigError, cli
from bot.output import plain_table, print_table
from flows.errors import RequestInvalid
from flows.policy import load_policy

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "policy.example.yml"
VERSION = load_policy(EXAMPLE).version_hash[:12]
BOX = set("─│┃━┏┓┗┛┌┐└┘├┤┬┴┼╭╮╯╰")


def _run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def _explain(*args: str, policy: Path = EXAMPLE) -> Result:
    return _run("policy", "explain", str(policy), *args)


def _one_error_line(result: Result) -> str:
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yml"
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- policy check


def test_check_valid_policy() -> None:
    result = _run("policy", "check", str(EXAMPLE))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{EXAMPLE}: valid (3 levels, version {VERSION})\n"
    assert result.stderr == ""


def test_check_counts_a_single_level(tmp_path: Path) -> None:
    path = _write(tmp_path, "version: 1\ncurrency: USD\nlevels: [{name: F, approvers: [U]}]\n")
    result = _run("policy", "check", str(path))
    assert result.exit_code == 0
    assert "(1 level, version " in result.stdout


def test_check_broken_policy_prints_file_line_field_and_message(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8").replace("over: 10000", "over: -5")
    path = _write(tmp_path, text)
    result = _run("policy", "check", str(path))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert _one_error_line(result) == f"{path}:11: levels[1].over: must be zero or more, got -5"


def test_check_not_yaml(tmp_path: Path) -> None:
    path = _write(tmp_path, "levels: [\n  - name: x\n : : :")
    result = _run("policy", "check", str(path))
    assert result.exit_code == 1
    assert _one_error_line(result).startswith(f"{path}:2: not valid YAML: ")


def test_check_missing_file_exits_1() -> None:
    result = _run("policy", "check", "no/such/policy.yml")
    assert result.exit_code == 1
    assert _one_error_line(result) == "no/such/policy.yml: file not found"


def test_check_directory_exits_1(tmp_path: Path) -> None:
    result = _run("policy", "check", str(tmp_path))
    assert result.exit_code == 1
    assert _one_error_line(result).startswith(f"{tmp_path}: cannot be read")


def test_usage_errors_exit_2() -> None:
    assert _run("policy", "check").exit_code == 2
    assert _run("policy", "nonsense").exit_code == 2
    assert _explain("--amount", "5").exit_code == 2  # no --requester


def test_configuration_errors_exit_2_with_one_line() -> None:
    @click.group(cls=ApprovalsGroup)
    def group() -> None:
        pass

    @group.command()
    def serve() -> None:
        raise ConfigError("SLACK_BOT_TOKEN is not set: put the bot token (xoxb-…) in it")

    @group.command()
    def refuse() -> None:
        raise RequestInvalid("amount", "the amount must be more than zero")

    result = CliRunner().invoke(group, ["serve"])
    assert result.exit_code == 2
    assert _one_error_line(result) == (
        "SLACK_BOT_TOKEN is not set: put the bot token (xoxb-…) in it")
    result = CliRunner().invoke(group, ["refuse"])
    assert result.exit_code == 1
    assert _one_error_line(result) == "amount: the amount must be more than zero"


# --------------------------------------------------------------------------- policy explain


def _table(result: Result) -> dict[str, list[str]]:
    """The levels table of plain output: level name -> its columns."""
    lines = result.stdout.splitlines()
    start = lines.index("Levels:") + 2
    rows: dict[str, list[str]] = {}
    for line in lines[start:]:
        if not line.strip():
            break
        cells = [c.strip() for c in line.split("  ") if c.strip()]
        rows[cells[1]] = cells
    return rows


@pytest.mark.parametrize(("amount", "levels"), [
    ("9000", ["Manager"]),
    ("25000", ["Manager", "Finance"]),
    ("$120,000", ["Manager", "Finance", "Director"]),
    ("10000", ["Manager"]),
    ("10000.01", ["Manager", "Finance"]),
    ("100000", ["Manager", "Finance"]),
])
def test_explain_lists_the_levels_that_apply(amount: str, levels: list[str]) -> None:
    result = _explain("--amount", amount, "--requester", "U_ALICE")
    assert result.exit_code == 0, result.output
    assert list(_table(result)) == levels


def test_explain_the_seed_case_in_full() -> None:
    result = _explain("--amount", "25000", "--requester", "U_ALICE")
    assert result.exit_code == 0
    out = result.stdout
    assert out.startswith("Request: $25,000.00, by U_ALICE\n"
                          f"Policy: {EXAMPLE}, version {VERSION}\n")
    assert "Auto-approval: no auto-approval: $25,000.00 is not under $500.00" in out
    table = _table(result)
    assert table["Manager"] == ["1", "Manager", "applies to every request",
                                "U_BOB (manager of U_ALICE)", "U_CAROL"]
    assert table["Finance"] == ["2", "Finance", "$25,000.00 is over $10,000.00",
                                "U_FIN1 or U_FIN2", "nobody eligible"]
    assert "- Director: $25,000.00 is not over $100,000.00" in out
    assert ("Reminders: first after 4h of waiting, then every 1d, to every approver "
            "still waiting") in out
    assert "Escalation: once per level, after 2d of waiting, to the manager of each " in out
    assert result.stderr == ""


def test_explain_converts_the_currency() -> None:
    result = _explain("--amount", "25000", "--currency", "EUR", "--requester", "U_ALICE")
    assert result.exit_code == 0
    assert "Request: €25,000.00 at 1.08 = $27,000.00, by U_ALICE" in result.stdout
    assert _table(result)["Finance"][2] == "$27,000.00 is over $10,000.00"


def test_explain_rounds_converted_amounts_to_the_cent_before_comparing() -> None:
    result = _explain("--amount", "€9,259.26", "--requester", "U_ALICE")
    assert result.exit_code == 0
    assert "€9,259.26 at 1.08 = $10,000.00" in result.stdout
    assert list(_table(result)) == ["Manager"]
    assert "- Finance: $10,000.00 is not over $10,000.00" in result.stdout


def test_explain_takes_the_currency_in_any_case_and_from_the_symbol() -> None:
    lower = _explain("--amount", "100", "--currency", "gbp", "--requester", "U_ALICE")
    assert "£100.00 at 1.27 = $127.00" in lower.stdout
    symbol = _explain("--amount", "£100", "--requester", "U_ALICE")
    assert symbol.stdout == lower.stdout


def test_explain_auto_approval() -> None:
    result = _explain("--amount", "499.99", "--requester", "U_ALICE")
    assert result.exit_code == 0
    assert ("Auto-approval: $499.99 is under $500.00: auto-approved if the advisor raises "
            "no flag; otherwise it takes the route below") in result.stdout
    at_limit = _explain("--amount", "500", "--requester", "U_ALICE")
    assert "no auto-approval: $500.00 is not under $500.00" in at_limit.stdout


SOD = """\
version: 1
currency: USD
directory:
  U_ALICE: {manager: U_BOB}
  U_BOB: {manager: U_CAROL}
  U_FIN1: {manager: U_CFO}
  U_DIR: {manager: U_BOB}
levels:
  - {name: Manager, approvers: manager}
  - {name: Finance, over: 10000, approvers: [U_FIN1, U_FIN2]}
  - {name: Audit, over: 50000, approvers: [U_FIN1]}
  - {name: Director, over: 100000, approvers: [U_DIR, U_BOB]}
escalation: {after: 48h, to: [U_CEO, U_BOB]}
"""


def test_explain_separation_of_duties(tmp_path: Path) -> None:
    policy = _write(tmp_path, SOD)
    result = _explain("--amount", "120000", "--requester", "U_DIR", policy=policy)
    assert result.exit_code == 0, result.output
    table = _table(result)
    assert table["Director"][3] == "U_CAROL"
    assert table["Manager"][4] == "U_CEO"  # U_BOB decides Manager: not an escalation target
    assert "Reminders: none: the policy sets no reminders" in result.stdout
    notes = result.stdout.split("Separation of duties:\n")[1].split("\n\n")[0].splitlines()
    assert notes == [
        "- Finance: whoever decides Finance is left out of later levels",
        "- Audit: if U_FIN1 decides Finance, U_FIN1 is left out here and U_CFO takes the level",
        "- Director: U_DIR is the requester and cannot approve their own request",
        "- Director: U_BOB already decided an earlier level of this request",
        "- Director: U_CAROL takes the level, as the nearest eligible manager above U_DIR",
    ]


def test_explain_requester_listed_with_others(tmp_path: Path) -> None:
    policy = _write(tmp_path, SOD)
    result = _explain("--amount", "20000", "--requester", "U_FIN1", policy=policy)
    assert result.exit_code == 0
    assert _table(result)["Finance"][3] == "U_FIN2"
    assert "- Finance: U_FIN1 is the requester and cannot approve their own request" in (
        result.stdout)


def test_explain_level_nobody_can_decide_exits_1(tmp_path: Path) -> None:
    policy = _write(tmp_path, SOD)
    result = _explain("--amount", "60000", "--requester", "U_FIN1", policy=policy)
    assert result.exit_code == 1
    assert _table(result)["Audit"][3:] == ["nobody eligible", "-"]
    assert _one_error_line(result) == (
        "the request would end rejected as unroutable: nobody may decide level Audit: U_FIN1 "
        "is the requester and cannot approve their own request, and nobody above U_FIN1 in "
        "the directory is eligible")


def test_explain_when_an_undecided_overlap_could_leave_nobody(tmp_path: Path) -> None:
    policy = _write(tmp_path, "version: 1\ncurrency: USD\nlevels:\n"
                              "  - {name: Finance, approvers: [U_F1, U_F2]}\n"
                              "  - {name: Audit, approvers: [U_F1]}\n")
    result = _explain("--amount", "100", "--requester", "U_ALICE", policy=policy)
    assert result.exit_code == 0
    assert ("- Audit: if U_F1 decides Finance, U_F1 is left out here and nobody eligible is "
            "left: the request would end as unroutable") in result.stdout
    assert "Auto-approval: the policy has no auto-approval" in result.stdout
    assert "escalates to" in result.stdout and "Escalation: none" in result.stdout


def test_explain_when_no_level_applies(tmp_path: Path) -> None:
    policy = _write(tmp_path, "version: 1\ncurrency: USD\nlevels:\n"
                              "  - {name: Finance, over: 1000, approvers: [U_F1]}\n")
    result = _explain("--amount", "1000", "--requester", "U_ALICE", policy=policy)
    assert result.exit_code == 0
    assert ("Auto-approval: no level applies to this amount: approved with no human "
            "decision") in result.stdout
    assert "Levels: none applies" in result.stdout
    assert "- Finance: $1,000.00 is not over $1,000.00" in result.stdout


@pytest.mark.parametrize(("args", "error"), [
    (["--amount", "42000", "--requester", "U123"],
     "level Manager needs the requester's manager, but U123 has no manager in the policy's "
     "directory"),
    (["--amount", "1e5", "--requester", "U_ALICE"], "amount: '1e5' is not an amount"),
    (["--amount", "0", "--requester", "U_ALICE"], "amount: the amount must be more than zero"),
    (["--amount", "12,34,5", "--requester", "U_ALICE"], "amount: '12,34,5' is not an amount"),
    (["--amount", "100", "--currency", "CHF", "--requester", "U_ALICE"],
     "currency: CHF is not accepted here (accepted: EUR, GBP, USD)"),
    (["--amount", "100", "--currency", "euro", "--requester", "U_ALICE"],
     "currency: 'euro' is not a currency code such as EUR"),
    (["--amount", "€100", "--currency", "USD", "--requester", "U_ALICE"],
     "currency: the amount is in EUR but --currency says USD"),
])
def test_explain_refusals_exit_1_with_one_line(args: list[str], error: str) -> None:
    result = _explain(*args)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert _one_error_line(result).startswith(error)


def test_explain_with_a_broken_policy_exits_1(tmp_path: Path) -> None:
    policy = _write(tmp_path, "version: 1\ncurrency: USD\nlevels: []\n")
    result = _explain("--amount", "5", "--requester", "U_ALICE", policy=policy)
    assert result.exit_code == 1
    assert _one_error_line(result) == f"{policy}:3: levels: must not be empty"


def test_explain_has_no_side_effects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = _write(tmp_path, EXAMPLE.read_text(encoding="utf-8"))
    before = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    monkeypatch.chdir(tmp_path)
    result = _explain("--amount", "120000", "--requester", "U_ALICE", policy=policy)
    assert result.exit_code == 0
    assert {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before


def test_output_in_a_pipe_has_no_box_drawing_or_colour() -> None:
    result = _explain("--amount", "120000", "--requester", "U_ALICE")
    assert not BOX & set(result.stdout)
    assert "\x1b" not in result.stdout


# --------------------------------------------------------------------------- output helpers


def test_plain_table_aligns_columns_without_padding_the_last() -> None:
    lines = plain_table(["time", "event", "details"],
                        [("09:00", "submitted", "$25,000.00 for laptops"),
                         ("09:05", "approved", "by U_BOB\nmultiline")])
    assert lines == [
        "time   event      details",
        "09:00  submitted  $25,000.00 for laptops",
        "09:05  approved   by U_BOB multiline",
    ]


def test_print_table_plain_and_rich() -> None:
    plain = io.StringIO()
    print_table(["a", "b"], [("1", "2")], title="T", file=plain, terminal=False)
    assert plain.getvalue() == "T\na  b\n1  2\n"
    rich = io.StringIO()
    print_table(["a", "b"], [("1", "2")], file=rich, terminal=True)
    assert BOX & set(rich.getvalue())


# --------------------------------------------------------------------------- the real command


def _approvals() -> str:
    found = Path(sys.executable).parent / "approvals"
    if found.exists():
        return str(found)
    which = shutil.which("approvals")
    if which is None:
        pytest.skip("the approvals console script is not installed")
    return which


@pytest.mark.parametrize(("args", "code"), [
    (["policy", "check", str(EXAMPLE)], 0),
    (["policy", "check", "missing.yml"], 1),
    (["policy", "check", "BROKEN"], 1),
    (["policy", "check"], 2),
    (["policy", "explain", str(EXAMPLE), "--amount", "NaN", "--requester", "U_ALICE"], 1),
])
def test_console_script_exit_codes_and_no_traceback(tmp_path: Path, args: list[str],
                                                    code: int) -> None:
    broken = _write(tmp_path, "version: 1\ncurrency: XYZ\nlevels: [{name: A, approvers: [U]}]\n")
    is_broken = "BROKEN" in args
    args = [str(broken) if a == "BROKEN" else a for a in args]
    env = {**os.environ, "NO_COLOR": "1"}
    done = subprocess.run([_approvals(), *args], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path, env=env, check=False)
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
    if code == 0:
        assert done.stdout == f"{EXAMPLE}: valid (3 levels, version {VERSION})\n"
        assert done.stderr == ""
    elif code == 1:
        assert len(done.stderr.splitlines()) == 1
        if is_broken:
            assert done.stderr == (f"{broken}:2: currency: unknown currency 'XYZ': use an ISO "
                                   "4217 code such as USD or EUR\n")
