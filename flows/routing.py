"""Routing: which levels a request needs, and who may decide each one.

Two moments matter. At submission :func:`plan_route` picks the levels whose condition holds
(``over`` is strict) and checks that each can find its approvers at all; a request that
cannot be routed is refused then, with the reason. When a level starts,
:func:`settle_assignees` removes everyone separation of duties excludes (the requester and
whoever decided an earlier level) and, where nobody is left, walks up the directory from
the level's first listed approver until someone eligible is found.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from flows.errors import Unroutable
from flows.money import format_money
from flows.policy import Level, Policy


@dataclass(frozen=True, slots=True)
class PlannedLevel:
    """A level a request needs, with the approvers its policy names for this requester."""

    name: str
    reason: str
    listed: tuple[str, ...]  # the requester's manager, or the level's list


@dataclass(frozen=True, slots=True)
class Settled:
    """Who decides a level, and how separation of duties got there."""

    assignees: tuple[str, ...]
    notes: tuple[str, ...]  # each exclusion and substitution, in words


def level_applies(level: Level, base_amount: Decimal) -> bool:
    return level.over is None or base_amount > level.over


def _reason(level: Level, base_amount: Decimal, currency: str) -> str:
    if level.over is None:
        return "applies to every request"
    return (f"{format_money(base_amount, currency)} is over "
            f"{format_money(level.over, currency)}")


def plan_route(policy: Policy, *, requester: str, base_amount: Decimal,
               needs_a_human: bool = False) -> tuple[PlannedLevel, ...]:
    """The levels a request of ``base_amount`` (base currency) by ``requester`` needs.

    ``needs_a_human`` (the advisor raised a flag): when no level's condition holds, the
    first level decides all the same, since only a clean request may pass unseen.
    """
    planned: list[PlannedLevel] = []
    fallback = needs_a_human and not any(level_applies(lv, base_amount) for lv in policy.levels)
    for index, level in enumerate(policy.levels):
        forced = fallback and index == 0
        if not level_applies(level, base_amount) and not forced:
            continue
        if level.uses_manager:
            manager = policy.manager_of(requester)
            if manager is None:
                raise Unroutable(
                    f"level {level.name} needs the requester's manager, but {requester} has "
                    "no manager in the policy's directory")
            listed: tuple[str, ...] = (manager,)
        else:
            assert not isinstance(level.approvers, str)
            listed = tuple(dict.fromkeys(level.approvers))
        reason = ("no level applies to this amount, but the advisor raised a flag: a person "
                  "decides" if forced else _reason(level, base_amount, policy.currency))
        planned.append(PlannedLevel(level.name, reason, listed))
    return tuple(planned)


def settle_assignees(policy: Policy, planned: PlannedLevel, *, requester: str,
                     earlier_deciders: Iterable[str]) -> Settled:
    """Who decides ``planned`` now that earlier levels are decided.

    Raises :class:`Unroutable` when nobody eligible can be found.
    """
    excluded = {requester, *earlier_deciders}
    notes: list[str] = []
    for user in planned.listed:
        if user == requester:
            notes.append(f"{user} is the requester and cannot approve their own request")
        elif user in excluded:
            notes.append(f"{user} already decided an earlier level of this request")
    eligible = tuple(u for u in planned.listed if u not in excluded)
    if eligible:
        return Settled(eligible, tuple(notes))
    substitute = first_eligible_above(policy, planned.listed[0], excluded=excluded)
    if substitute is None:
        raise Unroutable(
            f"nobody may decide level {planned.name}: {'; '.join(notes)}, and nobody above "
            f"{planned.listed[0]} in the directory is eligible")
    notes.append(f"{substitute} takes the level, as the nearest eligible manager above "
                 f"{planned.listed[0]}")
    return Settled((substitute,), tuple(notes))


def first_eligible_above(policy: Policy, user: str, *, excluded: set[str]) -> str | None:
    """The nearest manager above ``user`` who is not excluded (the directory has no loops)."""
    boss = policy.manager_of(user)
    while boss is not None:
        if boss not in excluded:
            return boss
        boss = policy.manager_of(boss)
    return None
