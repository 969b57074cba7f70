"""The labels of a report in English and Simplified Chinese, kept as data beside the code that renders them
(``audit/report_labels.yaml``, ``customer/inspect_labels.yaml``): one entry a label, ``{en: ..., zh: ...}``."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

from ..core.language import LANGS

__all__ = ["load_labels"]


@lru_cache(maxsize=None)
def _table(path: str) -> dict[str, dict[str, str]]:
    raw: object = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of labels")
    out: dict[str, dict[str, str]] = {lang: {} for lang in LANGS}
    for key, texts in raw.items():
        if not isinstance(texts, dict) or any(not isinstance(texts.get(lang), str) for lang in LANGS):
            raise ValueError(f"{path}: label {key!r} needs an en and a zh text")
        for lang in LANGS:
            out[lang][str(key)] = texts[lang]
    return out


def load_labels(path: Path, lang: str) -> dict[str, str]:
    """The labels of the file ``path`` in ``lang`` (``zh``; anything else is English), read once."""
    return _table(str(path))["zh" if lang == "zh" else "en"]
