"""Vendor version grammar and ordering: ``parse_version``, ``Version``, ``compare``.

A version is what middleware vendors print: an optional ``V`` prefix, one to four
dot-separated levels (level 3 may instead be one uppercase product-line letter, as in
``7.0.C.6``) and an optional build tag such as ``_M3`` or ``-P1``. Anything else is refused
with a ``VersionError``; nothing is ever guessed.

``compare`` is a *partial* order: versions on different product lines, or builds of one base
with tags of different letters, cannot be ordered without the vendor's catalog, and
``compare`` says so (``order=None``) with a reason. ``Version.sort_key`` is a total order
for display only. ``Version`` deliberately has no ``<``: callers must choose between the two.
This module does no I/O and knows nothing of policy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import VERSION_EXAMPLES, VersionError, quote

__all__ = ["Tag", "Version", "Comparison", "parse_version", "compare", "MAX_LENGTH"]

MAX_LENGTH = 64
_MAX_DIGITS = 9
_ALLOWED = frozenset("0123456789.-_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_NUMBER = re.compile(r"[0-9]{1,9}", re.ASCII)
# Last level with an optional tag; after a line letter the tag needs a separator ("C_M1").
_LAST_NUMBER = re.compile(r"([0-9]+)(?:[_-]?([A-Za-z]+)([0-9]+))?", re.ASCII)
_LAST_LETTER = re.compile(r"([A-Za-z])(?:[_-]([A-Za-z]+)([0-9]+))?", re.ASCII)

Level = int | str
Levels = tuple[Level, Level, Level, Level]


@dataclass(frozen=True)
class Tag:
    """A build tag: ``M3`` is ``Tag("M", 3)``. Letters are uppercase."""

    letter: str
    number: int

    def __str__(self) -> str:
        return f"{self.letter}{self.number}"


@dataclass(frozen=True)
class Version:
    """A parsed version; build one with ``parse_version``.

    Equal and hashed by meaning (``canonical``), not by spelling: ``7.0.4 == V7.0.4.0``.
    """

    text: str = field(compare=False)
    levels: Levels
    tag: Tag | None = None

    @property
    def line(self) -> str | None:
        """The level-3 product-line letter, or None on the numbered line."""
        third = self.levels[2]
        return third if isinstance(third, str) else None

    @property
    def base(self) -> str:
        """The four levels without the tag, e.g. ``7.0.4.9``."""
        return ".".join(str(level) for level in self.levels)

    @property
    def canonical(self) -> str:
        """Four levels, no prefix, ``_`` before the tag: ``7.0.4.9_M1``, ``7.0.C.6``."""
        return f"{self.base}_{self.tag}" if self.tag else self.base

    def sort_key(self) -> tuple[int, int, tuple[int, int, str], int, tuple[int, str, int]]:
        """A total order for display, consistent with ``compare`` wherever it gives one.

        Where ``compare`` cannot order, the numbered line sorts before letter lines, letter
        lines alphabetically, and tags of different letters alphabetically.
        """
        major, minor, third, fourth = self.levels
        line_key = (1, 0, third) if isinstance(third, str) else (0, third, "")
        tag_key = (1, self.tag.letter, self.tag.number) if self.tag else (0, "", 0)
        return (int(major), int(minor), line_key, int(fourth), tag_key)

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Comparison:
    """Result of ``compare(a, b)``: ``order`` is -1, 0, 1, or None when a and b cannot be
    ordered; ``reason`` says why in plain words."""

    order: int | None
    reason: str


def _fail(text: object, problem: str) -> VersionError:
    return VersionError(f"invalid version {quote(text)}: {problem}; {VERSION_EXAMPLES}",
                        text=text, problem=problem)


def _level(raw: str, position: int) -> Level:
    if _NUMBER.fullmatch(raw):
        return int(raw)
    if raw.isascii() and raw.isdigit():
        raise VersionError(f"level {position} has more than {_MAX_DIGITS} digits")
    if position == 3 and len(raw) == 1 and "A" <= raw <= "Z":
        return raw
    if position == 3 and len(raw) == 1 and "a" <= raw <= "z":
        raise VersionError(f"level 3 {raw!r} is lowercase; product-line letters are "
                           "uppercase, e.g. 7.0.C.6")
    if len(raw) == 1 and raw.isalpha():
        raise VersionError(f"level {position} {raw!r} is a letter; only level 3 may be a "
                           "product-line letter")
    raise VersionError(f"level {position} {quote(raw, 20)} is not a number")


def parse_version(text: str) -> Version:
    """Parse a vendor version; raise ``VersionError`` (quoting the input) if malformed."""
    if not isinstance(text, str):
        raise _fail(text, f"expected text, got {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise _fail(text, "it is empty")
    if len(stripped) > MAX_LENGTH:
        raise _fail(text, f"it is {len(stripped)} characters long; at most {MAX_LENGTH} "
                          "are allowed")
    for char in stripped:
        if char.isspace():
            raise _fail(text, "it contains whitespace")
        if not char.isascii():
            raise _fail(text, f"it contains the non-ASCII character {ascii(char)}")
        if char not in _ALLOWED:
            raise _fail(text, f"it contains {char!r}, which never appears in a version")
    body = stripped[1:] if stripped[0] in "Vv" else stripped
    if not body:
        raise _fail(text, "nothing follows the V prefix")
    parts = body.split(".")
    if len(parts) > 4:
        raise _fail(text, f"it has {len(parts)} levels; at most 4 are allowed")
    for position, part in enumerate(parts, start=1):
        if not part:
            raise _fail(text, f"level {position} is empty (a stray dot)")
    last = parts[-1]
    match = _LAST_NUMBER.fullmatch(last) or _LAST_LETTER.fullmatch(last)
    if match is None:
        if len(parts) == 3 and re.fullmatch(r"[A-Za-z][A-Za-z]+[0-9]+", last, re.ASCII):
            problem = (f"level 3 {quote(last, 20)} runs a product-line letter into a build "
                       "tag; separate them with _ or -, e.g. 7.0.C_M1")
        else:
            problem = (f"level {len(parts)} {quote(last, 20)} is not a number or a line "
                       "letter, optionally followed by a build tag like _M3")
        raise _fail(text, problem)
    raw_levels = [*parts[:-1], match.group(1)]
    try:
        levels = [_level(raw, position) for position, raw in enumerate(raw_levels, start=1)]
    except VersionError as error:
        raise _fail(text, error.problem) from None
    tag = None
    if match.group(2) is not None:
        if len(match.group(3)) > _MAX_DIGITS:
            raise _fail(text, f"the build tag number has more than {_MAX_DIGITS} digits")
        tag = Tag(match.group(2).upper(), int(match.group(3)))
    padded = (*levels, 0, 0, 0)
    return Version(stripped, (padded[0], padded[1], padded[2], padded[3]), tag)


def _sign(x: int, y: int) -> int:
    return (x > y) - (x < y)


def compare(a: Version, b: Version) -> Comparison:
    """Order ``a`` against ``b``: 1 if a is newer, -1 if older, 0 if equal, None if unknown.

    Levels compare left to right (numerically); a level-3 difference of kind or letter means
    different product lines (None). On one base an untagged build precedes its tagged ones
    and tags of one letter compare by number; tags of different letters give None.
    """
    for position, (x, y) in enumerate(zip(a.levels, b.levels), start=1):
        if x == y:
            continue
        if isinstance(x, str) or isinstance(y, str):
            return Comparison(None, f"{a} and {b} are on different product lines "
                                    f"({x} vs {y})")
        order = _sign(x, y)
        return Comparison(order, _ordered(a, b, order, f"level {position}: {x} vs {y}"))
    if a.tag == b.tag:
        spelled = "" if a.text == b.text else f" ({a.canonical})"
        return Comparison(0, f"{a} and {b} are the same version{spelled}")
    if a.tag is None or b.tag is None:
        order = -1 if a.tag is None else 1
        return Comparison(order, _ordered(a, b, order, "an untagged build precedes its "
                                                       "tagged builds"))
    if a.tag.letter != b.tag.letter:
        return Comparison(None, f"tags {a.tag} and {b.tag} have different letters and "
                                "cannot be ordered without the catalog")
    order = _sign(a.tag.number, b.tag.number)
    return Comparison(order, _ordered(a, b, order, f"tag {a.tag} vs {b.tag}"))


def _ordered(a: Version, b: Version, order: int, why: str) -> str:
    return f"{a} is {'newer' if order > 0 else 'older'} than {b} ({why})"
