"""The exceptions that leave version_policy, and how they quote bad input.

Only two errors ever leave the package: ``VersionError`` (a version or version range is
malformed) and ``PolicyError`` (a policy file is unreadable or invalid). Both are
``ValueError``\\s and both share the base ``VersionPolicyError`` so a caller can catch the
package's errors in one place. This module does not translate them into upgrader's own error
tree or exit codes; the caller does that where it calls into this package.
"""

from __future__ import annotations

__all__ = [
    "VersionPolicyError",
    "VersionError",
    "PolicyError",
    "quote",
    "VERSION_EXAMPLES",
]

#: Closing words of every version error: what a valid version looks like.
VERSION_EXAMPLES = "expected a version like 7.0.4.9, V7.0.4.9, 7.0.4.9_M3 or 7.0.C.6"

_QUOTE_LIMIT = 40


def quote(value: object, limit: int = _QUOTE_LIMIT) -> str:
    """Quote untrusted input for a message: at most ``limit`` characters, ASCII-escaped.

    Escaping makes newlines, terminal control codes and look-alike unicode digits visible
    (``'\\uff17'`` instead of a full-width 7); truncation bounds the message length.
    """
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return ascii(text)
    return f"{ascii(text[:limit])}... ({len(text)} characters)"


class VersionPolicyError(Exception):
    """Base of the errors raised by version_policy."""


class VersionError(VersionPolicyError, ValueError):
    """A version or version range is malformed.

    ``text`` is the offending input (possibly long; never print it unquoted) and ``problem``
    the plain-words description of what is wrong with it, without the input or examples.
    """

    def __init__(self, message: str, *, text: object = None, problem: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.text = text
        self.problem = problem or message


class PolicyError(VersionPolicyError, ValueError):
    """A policy file is unreadable or invalid.

    The message reads ``<file>: <key path>: <what is wrong>; <what to do>``; ``path`` and
    ``key`` are also kept separately (``key`` is None for whole-file problems).
    """

    def __init__(self, message: str, *, path: str | None = None,
                 key: str | None = None) -> None:
        where = ": ".join(p for p in (path, key) if p)
        full = f"{where}: {message}" if where else message
        super().__init__(full)
        self.message = full
        self.path = path
        self.key = key
