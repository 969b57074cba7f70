"""``upgrader diagnostics RUN_ID``, and the bundle that ``run``, ``resume`` and ``rollback`` write when
a host did not end well: the bundle's path, the incident's severity level and the response-time
target go into the run's result (``diagnostics``) and its summary. A host the operator cancelled
(left unchanged, or rolled back to its healthy old version) is no incident and makes no bundle."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ...core.exit_codes import ExitCode
from ...customer.diagnostics import needs_bundle
from ._common import console, print_json

__all__ = ["cmd_diagnostics", "needs_bundle", "print_diagnostics"]


def cmd_diagnostics(args: argparse.Namespace) -> int:
    from ...customer.diagnostics import build_bundle, connect_plan_host

    info = build_bundle(args.home, args.run_id, connect=connect_plan_host, obfuscate=args.obfuscate,
                        domains=getattr(args, "domain", None) or (), out=Path(args.output) if args.output else None)
    if args.json:
        print_json(info)
    else:
        from ...core.language import resolve_lang

        print_diagnostics(console(), info, lang=resolve_lang(getattr(args, "lang", None)))
    return ExitCode.OK


def print_severity(c: Any, sev: dict[str, Any] | None, lang: str | None = None) -> None:
    """The severity level, its meaning, the three response times and the service hours: in ``lang`` ("en" or
    "zh"); without one (run, resume, rollback) in English, and in Chinese too when the locale is Chinese."""
    if not sev:
        return
    from rich.markup import escape

    from ...core.language import resolve_lang
    from ...customer.severity import describe

    langs = [lang] if lang else ["en"] + (["zh"] if resolve_lang(None) == "zh" else [])
    for n, one in enumerate(langs):
        for i, line in enumerate(describe(sev, one)):
            c.print(f"[bold red]{escape(line)}[/bold red]" if i == 0 and n == 0 else escape(line), soft_wrap=True)


def print_diagnostics(c: Any, info: dict[str, Any] | None, lang: str | None = None) -> None:
    """Bundle path, severity level and response target: in ``lang`` ("en" or "zh", as ``upgrader diagnostics``
    speaks); without one (run, resume, rollback) in English, and in Chinese too when the locale is Chinese."""
    if not info:
        return
    from rich.markup import escape

    from ..command_messages import texts
    from ...core.language import resolve_lang

    langs = [lang] if lang else ["en"] + (["zh"] if resolve_lang(None) == "zh" else [])
    if not info.get("bundle"):
        if lang:
            error = str(info.get("error") or "").removeprefix("the diagnostics bundle could not be written: ")
            c.print(texts(lang)("bundle_failed", error=error), soft_wrap=True)
        else:
            c.print(f"[yellow]{escape(str(info.get('error')))}[/yellow]", soft_wrap=True)
        print_severity(c, info.get("severity"), lang)
        return
    for one in langs:
        t = texts(one)
        obfuscated = t("bundle_obfuscated") if info.get("obfuscated") else ""
        c.print(t("bundle_written", bundle=info["bundle"], obfuscated=obfuscated), soft_wrap=True)
        if info.get("obfuscation_key"):
            c.print(t("bundle_key", file=info["obfuscation_key"]), soft_wrap=True)
    print_severity(c, info.get("severity"), lang)
