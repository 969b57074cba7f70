"""Version ranges such as a patch's ``requires: ">=7.0.4.1, <7.0.4.3"``.

A range is a conjunction of constraints ``OP VERSION`` with OP one of ``>= > <= < == !=``.
Because versions are only partially ordered, ``contains`` answers True, False, or None
("cannot tell": some bound cannot be ordered against the version, e.g. another product line)
and always says why. A bare version without an operator is refused rather than guessed to
mean ``==``. This module does no I/O and knows nothing of policy.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from .errors import VersionError, quote
from .versions import Version, compare, parse_version

__all__ = ["Constraint", "Containment", "VersionRange", "parse_range", "parse_range_list"]

Operator = Literal[">=", ">", "<=", "<", "==", "!="]
_OPERATORS: tuple[Operator, ...] = (">=", "<=", "==", "!=", ">", "<")
_EXPECTED = "expected constraints like '>=7.0.4.1, <7.0.4.3' (operators >=, >, <=, <, ==, !=)"
_MAX_RANGE_LENGTH = 1024
_CONSTRAINT = re.compile(r"\s*(>=|<=|==|!=|>|<)\s*([^\s<>=!]\S*)\s*", re.ASCII)
# Which comparison orders satisfy each ordering operator.
_SATISFIED_BY: dict[str, frozenset[int]] = {
    ">=": frozenset({0, 1}), ">": frozenset({1}), "<=": frozenset({-1, 0}), "<": frozenset({-1}),
}


@dataclass(frozen=True)
class Constraint:
    """One ``OP VERSION`` term of a range."""

    op: Operator
    version: Version

    def __str__(self) -> str:
        return f"{self.op}{self.version}"


@dataclass(frozen=True)
class Containment:
    """Result of ``VersionRange.contains``: ``result`` is None when it cannot be told."""

    result: bool | None
    reason: str


@dataclass(frozen=True)
class VersionRange:
    """All constraints must hold; ``str()`` gives text that ``parse_range`` reads back."""

    constraints: tuple[Constraint, ...]

    def __str__(self) -> str:
        return ", ".join(str(c) for c in self.constraints)

    def contains(self, version: Version) -> Containment:
        """True if every constraint holds, False if one fails, else None (cannot tell)."""
        unknown: list[str] = []
        for constraint in self.constraints:
            holds, why = _check(constraint, version)
            if holds is False:
                return Containment(False, f"{version} is outside {self}: {why}")
            if holds is None:
                unknown.append(why)
        if unknown:
            return Containment(None, f"cannot tell whether {version} is within {self}: "
                                     + "; ".join(unknown))
        return Containment(True, f"{version} is within {self}")


def _check(constraint: Constraint, version: Version) -> tuple[bool | None, str]:
    bound, op = constraint.version, constraint.op
    if op in ("==", "!="):
        equal = version == bound
        holds = equal if op == "==" else not equal
        return holds, f"{version} {'==' if equal else '!='} {bound}"
    comparison = compare(version, bound)
    if comparison.order is None:
        return None, f"{op}{bound}: {comparison.reason}"
    holds = comparison.order in _SATISFIED_BY[op]
    return holds, f"{'' if holds else 'not '}{op}{bound} ({comparison.reason})"


def _fail(text: object, problem: str) -> VersionError:
    return VersionError(f"invalid version range {quote(text)}: {problem}; {_EXPECTED}",
                        text=text, problem=problem)


def _parse_constraint(whole: str, piece: str) -> Constraint:
    match = _CONSTRAINT.fullmatch(piece)
    if match is None:
        stripped = piece.strip()
        if not stripped:
            problem = "it has an empty constraint (a stray comma)"
        elif stripped[0] not in "<>=!":
            problem = f"constraint {quote(stripped)} has no operator in front of the version"
        elif stripped in _OPERATORS:
            problem = f"constraint {quote(stripped)} has no version after the operator"
        else:
            problem = f"constraint {quote(stripped)} is not OP VERSION"
        raise _fail(whole, problem)
    op = next(o for o in _OPERATORS if o == match.group(1))
    try:
        version = parse_version(match.group(2))
    except VersionError as error:
        raise _fail(whole, f"constraint {quote(piece.strip())}: {error.problem}") from None
    return Constraint(op, version)


def parse_range(text: str) -> VersionRange:
    """Parse ``">=7.0.4.1, <7.0.4.3"``; raise ``VersionError`` naming the bad constraint."""
    if not isinstance(text, str):
        raise _fail(text, f"expected text, got {type(text).__name__}")
    if len(text) > _MAX_RANGE_LENGTH:
        raise _fail(text, f"it is longer than {_MAX_RANGE_LENGTH} characters")
    if not text.strip():
        raise _fail(text, "it is empty")
    return VersionRange(tuple(_parse_constraint(text, piece) for piece in text.split(",")))


def parse_range_list(items: Sequence[str]) -> VersionRange:
    """Parse a YAML list of constraint strings (each may hold several, comma-separated)."""
    if isinstance(items, str) or not isinstance(items, Sequence):
        raise _fail(items, f"expected a list of constraint strings, got {type(items).__name__}")
    if not items:
        raise _fail(items, "the list is empty")
    constraints: list[Constraint] = []
    for item in items:
        if not isinstance(item, str):
            raise _fail(items, f"item {quote(item)} is {type(item).__name__}, not text")
        constraints.extend(parse_range(item).constraints)
    return VersionRange(tuple(constraints))
