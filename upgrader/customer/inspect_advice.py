"""Advice for the inspection's warnings: the setting, the file and the reason, in English and Chinese, from data.

The tables are ``advice/common.yaml`` (the platform: kernel parameters, limits, disk, memory, the network, OS
patches) and ``advice/PRODUCT.yaml`` (the product's own files: Tomcat's ``bin/setenv.sh`` and ``conf/server.xml``,
TongWeb's ``bin/external.vmoptions`` and ``conf/tongweb.xml``), the product's entry winning. ``{value}``,
``{threshold}``, ``{ram_gib}`` and ``{xmx_suggest}`` are filled in from the inspection.

API::

    table(product) -> dict[check, {"en": {...}, "zh": {...}}]     (validated; a broken table raises ValueError)
    advise(report) -> report      each warning gets "advice": {"en": {setting, file, reason}, "zh": {...}}
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import yaml

__all__ = ["table", "advise", "ADVICE_DIR"]

ADVICE_DIR = Path(__file__).with_name("advice")
_FIELDS = ("setting", "file", "reason")


@functools.lru_cache(maxsize=None)
def _load(name: str) -> dict[str, Any]:
    path = ADVICE_DIR / f"{name}.yaml"
    if not re.fullmatch(r"[a-z0-9-]+", name) or not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    for check, entry in data.items():
        for lang in ("en", "zh"):
            fields = (entry or {}).get(lang) or {}
            if sorted(fields) != sorted(_FIELDS) or not all(isinstance(v, str) and v for v in fields.values()):
                raise ValueError(f"{path}: {check}.{lang} needs setting, file and reason")
    return dict(data)


def table(product: str) -> dict[str, Any]:
    return {**_load("common"), **_load(product)}


class _Fill(dict):  # type: ignore[type-arg]
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def advise(report: dict[str, Any]) -> dict[str, Any]:
    entries = table(str(report.get("product") or ""))
    facts = report.get("facts") or {}
    ram = (facts.get("memory") or {}).get("total")
    xmx = ((facts.get("perf") or {}).get("jvm") or {}).get("heap_max", {}).get("value")
    suggest = None
    if ram:
        ceiling = int(ram * 0.75) >> 20
        want = min(ceiling, int((xmx or 0) * 1.5) >> 20) if xmx else ceiling // 2
        suggest = f"{max(want, 64)}m"
    for w in report.get("warnings") or []:
        entry = entries.get(w["check"])
        if not entry:
            continue
        fill = _Fill(value=_shown(w.get("value")), threshold=_shown(w.get("threshold")),
                     ram_gib=f"{ram / (1 << 30):.1f}" if ram else "?", xmx_suggest=suggest or "?")
        w["advice"] = {lang: {k: entry[lang][k].format_map(fill) for k in _FIELDS} for lang in ("en", "zh")}
    return report
