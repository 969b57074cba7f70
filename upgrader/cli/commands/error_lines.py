"""An error in the operator's language, for the commands a customer's operator runs (``inspect``,
``access``, ``available``, ``diagnostics``, ``rollback``, ``resume``): the line in Chinese goes before the
``upgrader: error:`` line, which stays English for logs and scripts. The guide shows its own errors."""

from __future__ import annotations

import argparse

from ...core.errors import UpgraderError

__all__ = ["localized_error_lines"]

_COMMANDS = ("inspect:", "access:", "available:", "diagnostics:", "upgrade:cmd_rollback", "upgrade:cmd_resume")


def localized_error_lines(args: argparse.Namespace, e: UpgraderError) -> list[str]:
    """["错误：…", "  → …"] when the command is one of the operator's and the language is Chinese, else []."""
    from ...core.language import resolve_lang
    from ...core.reasons import UNTRANSLATED, translate

    func = str(getattr(args, "func", ""))
    if not func.startswith(_COMMANDS) or resolve_lang(getattr(args, "lang", None)) != "zh":
        return []
    lines = [f"错误：{translate(e.message, 'zh')}"]
    if e.hint:
        hint = translate(e.hint, "zh")
        lines.append(f"  → {hint if not hint.startswith(UNTRANSLATED) else '（原文）' + e.hint}")
    return lines
