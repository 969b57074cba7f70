"""The language a person reads upgrader's words in: ``en`` or ``zh``.

One rule for every reader (the guide, the audit and inspection reports): an explicit choice wins,
else the locale. This module only decides; it holds no texts and does no I/O.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["LANGS", "resolve_lang"]

LANGS = ("en", "zh")


def resolve_lang(lang: str | None, environ: Mapping[str, str] | None = None) -> str:
    """``en`` or ``zh``: as given (``--lang``), else the first set of LC_ALL, LC_MESSAGES, LANG (the order POSIX
    gives them); a value starting with ``zh`` means Chinese."""
    if lang:
        return "zh" if lang.lower().startswith("zh") else "en"
    env = os.environ if environ is None else environ
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(name)
        if value:
            return "zh" if value.lower().startswith("zh") else "en"
    return "en"
