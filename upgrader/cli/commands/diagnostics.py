"""``upgrader diagnostics RUN_ID``, and the bundle that ``run``, ``resume`` and ``rollback`` write when
a host did not end well: the bundle's path, the incident's severity level and the response-time
target go into the run's result (``diagnostics``) and its summary. A host the operator cancelled
(left unchanged, or rolled back to its healthy old version) is no incident and makes no bundle."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from ...core.exit_codes import ExitCode
from ._common import console, print_json

__all__ = ["cmd_diagnostics", "bundle_after_run", "print_diagnostics"]

_FAILED = ("rolled_back", "unchanged", "needs_person")


def _connect(h: dict[str, Any]) -> Any:
    from ...fleet.transport import connect
    from ...fleet.inventory import host_from_plan

    return connect(host_from_plan(h))


def cmd_diagnostics(args: argparse.Namespace) -> int:
    from ...customer.diagnostics import build_bundle

    info = build_bundle(args.home, args.run_id, connect=_connect, obfuscate=args.obfuscate,
                        domains=getattr(args, "domain", None) or (), out=Path(args.output) if args.output else None)
    if args.json:
        print_json(info)
    else:
        from ...core.language import resolve_lang

        print_diagnostics(console(), info, lang=resolve_lang(getattr(args, "lang", None)))
    return ExitCode.OK


def needs_bundle(result: dict[str, Any]) -> bool:
    """Did a host fail, get rolled back or need a person, other than by the operator's cancel?"""
    from ...customer.severity import is_cancelled

    return any(h["outcome"] in _FAILED and not is_cancelled(h) for h in result["hosts"])


def bundle_after_run(args: argparse.Namespace, result: dict[str, Any], write: Callable[[dict[str, Any]], None],
                     result_name: str = "result.json",
                     connect: Callable[[dict[str, Any]], Any] = _connect) -> None:
    """Write ``result`` (``write``); then, when a host failed, was rolled back or needs a person (not by the
    operator's cancel), write the bundle, note it in ``result`` and write ``result`` again.

    The result is on disk before the bundle is tried, so nothing that goes wrong while collecting can
    lose it; a bundle that cannot be made, for whatever reason, is reported in the result and never
    changes the run's exit code."""
    if needs_bundle(result):
        result["severity"] = _severity(args, result)  # in result.json even when no bundle can be made
    write(result)
    if not needs_bundle(result):
        return
    from ...customer.diagnostics import build_bundle
    from ...core.errors import UpgraderError

    try:
        info = build_bundle(args.home, result["run_id"], connect=connect, result=result, result_name=result_name,
                            obfuscate=bool(getattr(args, "obfuscate", False)))
    except (UpgraderError, OSError) as e:
        info = {"bundle": None, "error": f"the diagnostics bundle could not be written: {e}"}
    except Exception as e:  # noqa: BLE001 - the bundle is a courtesy; the run's result and exit code come first
        info = {"bundle": None, "error": f"the diagnostics bundle could not be written (an internal error of "
                                         f"upgrader, please report it): {type(e).__name__}: {e}"}
    if info.get("severity") is None and result.get("severity") is not None:
        info["severity"] = result["severity"]
    result["diagnostics"] = info
    try:
        write(result)
    except Exception as e:  # noqa: BLE001 - the result without the bundle's note is already written
        info["note"] = f"the result was written without this note: {e}"


def _severity(args: argparse.Namespace, result: dict[str, Any]) -> dict[str, Any] | None:
    """The run's severity by the customer's state after it (severity.py), from the run's plan; None if unreadable."""
    import json

    from ...customer.diagnostics import run_severity
    from ...core.journal import runs_dir

    try:
        plan = json.loads((runs_dir(Path(args.home)) / str(result["run_id"]) / "plan.json").read_text(encoding="utf-8"))
        return run_severity(plan, result)
    except Exception:  # noqa: BLE001 - a damaged plan costs the level, never the run's result or exit code
        return None


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
