"""Text that reaches an approver's terminal, and the documents it comes from.

A requester writes the playbook and the inventory; their values are printed in the review an engineer
signs (``plan show``, ``approve``). A control character (ESC and the rest of C0 and C1) can erase or rewrite
what the terminal shows, a bidi override can reorder it: the engineer would sign a command they never saw.
``refuse_control`` rejects such characters at load (exit 2, naming the file and the key); ``shown`` escapes
every non-printable character of a line to print (``\\x1b``, ``\\u202e``), so nothing a plan carries can hide.
"""

from __future__ import annotations

from .errors import InputError

__all__ = ["shown", "refuse_control", "bad_char"]

#: bidi embeddings, overrides and isolates (they reorder what a terminal shows); not C0/C1 but as dangerous
_BIDI = frozenset(chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C))


def bad_char(text: str) -> str | None:
    """The first C0/C1 control character (tab excepted) or bidi control in ``text``, or None."""
    for ch in text:
        code = ord(ch)
        if (code < 0x20 and ch != "\t") or 0x7F <= code <= 0x9F or ch in _BIDI:
            return ch
    return None


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def shown(text: str) -> str:
    """``text`` with every non-printable character escaped (printable text, Chinese included, unchanged)."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


def refuse_control(data: object, *, path: str, what: str, key: str = "") -> None:
    """InputError (exit 2) naming the file and the key of the first key or value that holds a control or bidi
    character; walks mappings and lists."""
    if isinstance(data, dict):
        for k, v in data.items():
            name = f"{key}.{k}" if key else str(k)
            if isinstance(k, str) and bad_char(k) is not None:
                raise _refusal(k, path, what, shown(name))
            refuse_control(v, path=path, what=what, key=name)
    elif isinstance(data, list):
        for i, v in enumerate(data):
            refuse_control(v, path=path, what=what, key=f"{key}[{i}]")
    elif isinstance(data, str) and bad_char(data) is not None:
        raise _refusal(data, path, what, shown(key))


def _refusal(text: str, path: str, what: str, key: str) -> InputError:
    ch = bad_char(text) or ""
    return InputError(f"{what} value holds the control character {_escape(ch)} ({shown(text)[:120]}): control and "
                      "bidi characters could hide what runs from the engineer who approves it",
                      path=path, key=key or None,
                      hint="remove the control character (write the text as it should be shown)")
