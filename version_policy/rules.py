"""The free-upgrade rules and ``decide``: may this upgrade run as a free maintenance upgrade?

``decide`` evaluates every rule, in a fixed order, and never stops at the first failure, so
a refusal lists all its reasons. Each rule reports ``pass``, ``fail`` or ``skip`` (not checked
here) with a plain-words reason, even when it passes. The upgrade is allowed when no rule
failed. This module does not verify approvals or signatures (the ``approval`` rule is always
``skip``: it is checked when a run starts), reads no clock (``today`` is passed in) and does
no I/O.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from .policy import Policy
from .ranges import VersionRange
from .versions import Version, compare

__all__ = ["UpgradeRequest", "RuleResult", "Decision", "decide", "RULE_IDS"]

Status = Literal["pass", "fail", "skip"]
_LEVEL_NAMES = {1: "major", 2: "minor", 3: "maintenance", 4: "maintenance"}
_CHANGE_NAMES = {"external_interface": "external interfaces",
                 "config_format": "the configuration format", "monitoring": "monitoring"}


@dataclass(frozen=True)
class UpgradeRequest:
    """What is asked: move ``product`` from ``current`` to ``target`` with this package."""

    product: str
    target_product: str
    current: Version
    target: Version
    kind: Literal["full", "patch"] = "full"
    declared_changes: tuple[str, ...] = ()
    requires: VersionRange | None = None
    maintenance_until: datetime.date | None = None
    today: datetime.date | None = None
    #: the host asked about (its name), when there is one: the policy's ``rules.contracts`` may name it
    host: str | None = None
    #: where ``product`` (the installed product) came from, for the review: the host's ledger, root's statement or
    #: the product's files on the host, or the inventory's word when the host does not tell; None: not said
    product_from: str | None = None
    #: the product the inventory names for the host, when it is not the one the host reports
    claimed: str | None = None


@dataclass(frozen=True)
class RuleResult:
    """One rule's verdict; ``rule`` is a stable id, ``reason`` is always filled."""

    rule: str
    status: Status
    reason: str


@dataclass(frozen=True)
class Decision:
    """All rule results, in order; ``allowed`` is True when none failed."""

    allowed: bool
    results: tuple[RuleResult, ...]
    subject: str = ""

    def refusals(self) -> tuple[RuleResult, ...]:
        return tuple(r for r in self.results if r.status == "fail")

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: ``{"allowed": bool, "rules": [{"rule", "status", "reason"}, ...]}``."""
        return {"allowed": self.allowed,
                "rules": [{"rule": r.rule, "status": r.status, "reason": r.reason}
                          for r in self.results]}

    def summary(self) -> str:
        """One line: ``allowed: 7.0.4.1 -> 7.0.4.2 (full)`` or ``refused: <first reason>``."""
        refusals = self.refusals()
        return f"refused: {refusals[0].reason}" if refusals else f"allowed: {self.subject}"


def _listing(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _prefix(version: Version, count: int) -> str:
    return ".".join(str(level) for level in version.levels[:count])


def _same_product(req: UpgradeRequest, policy: Policy) -> tuple[Status, str]:
    where = f" ({req.product_from})" if req.product_from else ""
    if req.product == req.target_product:
        return "pass", f"the package is for {req.product}, the installed product{where}"
    claimed = f"; the inventory says {req.claimed!r}" if req.claimed and req.claimed != req.product else ""
    return "fail", (f"the package is for {req.target_product!r} but the installed product is "
                    f"{req.product!r}{where}{claimed}")


def _newer(req: UpgradeRequest, policy: Policy) -> tuple[Status, str]:
    comparison = compare(req.target, req.current)
    if comparison.order == 1:
        return "pass", comparison.reason
    if comparison.order == 0:
        spelled = "" if req.current.text == req.target.text else f" ({req.target} is the same)"
        return "fail", f"already at {req.current}{spelled}"
    if comparison.order == -1:
        return "fail", f"{comparison.reason}: a downgrade is not a free upgrade"
    reason = compare(req.current, req.target).reason  # names current first
    if req.current.line != req.target.line and policy.allow_line_change:
        return "skip", f"not checked: {reason}, and the policy allows line changes"
    return "fail", reason


def _same_line(req: UpgradeRequest, policy: Policy) -> tuple[Status, str]:
    cur, tgt = req.current, req.target
    if cur.line == tgt.line:
        where = f"line {cur.line}" if cur.line else "the numbered line (level 3 is a number)"
        return "pass", f"both versions are on {where}"
    moves = (f"{cur} -> {tgt} moves between product lines ({cur.levels[2]} vs "
             f"{tgt.levels[2]})")
    if policy.allow_line_change:
        return "pass", f"{moves}; the policy allows line changes"
    return "fail", f"{moves}; the policy does not allow line changes"


def _free_levels(req: UpgradeRequest, policy: Policy) -> tuple[Status, str]:
    cur, tgt, free = req.current, req.target, policy.free_levels
    changed = [i + 1 for i in range(4) if cur.levels[i] != tgt.levels[i]]
    free_words = (f"level {free[0]} is" if len(free) == 1
                  else f"levels {_listing([str(f) for f in free])} are")
    if not changed:
        what = "only the build tag changes" if cur.tag != tgt.tag else "no level changes"
        return "pass", f"levels 1-4 equal ({cur.base}); {what}"
    first = changed[0]
    if first not in free:
        return "fail", (f"{_prefix(cur, first)} -> {_prefix(tgt, first)} changes level "
                        f"{first} ({_LEVEL_NAMES[first]}); only {free_words} free")
    kept = "" if first == 1 else (
        f"level 1 equal ({_prefix(cur, 1)}); " if first == 2
        else f"levels 1-{first - 1} equal ({_prefix(cur, first - 1)}); ")
    span = "level 4 changes" if first == 4 else f"only levels {first}-4 change"
    return "pass", f"{kept}{span}; {free_words} free"


def _declared_changes(req: UpgradeRequest, policy: Policy) -> tuple[Status, str]:
    declared = ((req.declared_changes,) if isinstance(req.declared_changes, str)
                else req.declared_changes)
    names = [str(c).strip().lower() for c in declared]
    refused = [n for n in dict.fromkeys(names) if n in policy.refused_changes]
    if refused:
        words = _listing([_CHANGE_NAMES.get(n, repr(n)) for n in refused])
        plural = "changes" if len(refused) > 1 else "a change"
        return "fail", (f"the package declares {plural} to {words}; such upgrades are never "
                         "free")
    if names:
        return "pass", (f"the package declares {_listing(names)}, which the policy does not "
                        "refuse")
    return "pass", "the package declares no changes the policy refuses"


def _maintenance_contract(req: UpgradeRequest, policy: Policy) -> tuple[Status, str]:
    """The contract end date is the earlier of the inventory's ``maintenance_until`` and the policy's
    ``rules.contracts`` entry for the host: the inventory can shorten a contract, never lengthen one the
    operator's policy states. When the policy lists contracts, a host no entry names fails (deny unless matched:
    a host's name is the requester's label); a host with neither date fails when the policy requires a contract."""
    if not policy.require_maintenance_contract:
        return "skip", "not checked: the policy does not require a maintenance contract"
    until, source = req.maintenance_until, "the inventory's maintenance_until"
    listed = policy.contract_until(req.host) if req.host is not None else None
    if listed is None and req.host is not None and policy.lists_contracts:
        # a host name is a label the requester picks: renaming a host must not dodge the operator's dates
        return "fail", (f"the policy's rules.contracts names no entry matching host {req.host}: when the policy lists "
                        "contracts, a host it does not name has no contract (whatever the inventory says); the "
                        "operator adds the host, a pattern (app-*) or '*' to rules.contracts")
    if listed is not None and (until is None or listed[0] < until):
        until, source = listed[0], f"the policy's rules.contracts entry {listed[1]!r}"
    if until is None:
        if req.host is None:
            return "skip", "not checked: no host given"
        return "fail", (f"no maintenance contract date for host {req.host}: the policy requires a contract; give "
                        "maintenance_until in the inventory or the host in the policy's rules.contracts")
    if req.today is None:
        return "skip", "not checked: no date for today given"
    if req.today <= until:
        return "pass", f"contract valid until {until} (today {req.today}; from {source})"
    return "fail", f"contract ended {until} (today {req.today}; from {source})"


def _patch_requires(req: UpgradeRequest, policy: Policy) -> tuple[Status, str]:
    if req.kind == "full":
        return "skip", "full package: no requires range"
    if req.kind != "patch":
        return "fail", f"unknown package kind {req.kind!r}; expected full or patch"
    if req.requires is None:
        return "fail", "a patch must declare the versions it applies to"
    containment = req.requires.contains(req.current)
    return ("pass" if containment.result else "fail"), containment.reason


def _approval(req: UpgradeRequest, policy: Policy) -> tuple[Status, str]:
    return "skip", "checked when the run starts: an engineer's signed approval of this exact plan"


_RULES: tuple[tuple[str, Callable[[UpgradeRequest, Policy], tuple[Status, str]]], ...] = (
    ("same_product", _same_product), ("newer", _newer), ("same_line", _same_line),
    ("free_levels", _free_levels), ("declared_changes", _declared_changes),
    ("maintenance_contract", _maintenance_contract), ("patch_requires", _patch_requires),
    ("approval", _approval),
)
RULE_IDS: tuple[str, ...] = tuple(rule for rule, _ in _RULES)


def decide(request: UpgradeRequest, policy: Policy) -> Decision:
    """Evaluate every rule in order; allowed when none failed."""
    results = tuple(RuleResult(rule, *check(request, policy)) for rule, check in _RULES)
    subject = f"{request.current} -> {request.target} ({request.kind})"
    return Decision(all(r.status != "fail" for r in results), results, subject)
