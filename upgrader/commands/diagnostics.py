"""``upgrader diagnostics RUN_ID``, and the bundle that ``run``, ``resume`` and ``rollback`` write when
a host did not end well: the bundle's path, the incident's severity level and the response-time
target go into the run's result (``diagnostics``) and its summary. A host the operator cancelled
(left unchanged, or rolled back to its healthy old version) is no incident and makes no bundle."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from ..exit_codes import ExitCode
from ._common import console, print_json

__all__ = ["cmd_diagnostics", "bundle_after_run", "print_diagnostics"]

_FAILED = ("rolled_back", "unchanged", "needs_person")


def _connect(h: dict[str, Any]) -> Any:
    from ..transport import connect
    from .upgrade import host_from_plan

    return connect(host_from_plan(h))


def cmd_diagnostics(args: argparse.Namespace) -> int:
    from ..diagnostics import build_bundle

    info = build_bundle(args.home, args.run_id, connect=_connect, obfuscate=args.obfuscate,
                        domains=getattr(args, "domain", None) or (), out=Path(args.output) if args.output else None)
    if args.json:
        print_json(info)
    else:
        print_diagnostics(console(), info)
    return ExitCode.OK


def needs_bundle(result: dict[str, Any]) -> bool:
    """Did a host fail, get rolled back or need a person, other than by the operator's cancel?"""
    from ..severity import is_cancelled

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
    from ..diagnostics import build_bundle
    from ..errors import UpgraderError

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

    from ..diagnostics import run_severity
    from .upgrade import runs_dir

    try:
        plan = json.loads((runs_dir(Path(args.home)) / str(result["run_id"]) / "plan.json").read_text(encoding="utf-8"))
        return run_severity(plan, result)
    except Exception:  # noqa: BLE001 - a damaged plan costs the level, never the run's result or exit code
        return None


def print_severity(c: Any, sev: dict[str, Any] | None) -> None:
    """The severity level, its meaning, the three response times and the service hours; in Chinese too when the
    locale is Chinese."""
    if not sev:
        return
    from rich.markup import escape

    from ..audit_report import resolve_lang
    from ..severity import describe

    for i, line in enumerate(describe(sev, "en")):
        c.print(f"[bold red]{escape(line)}[/bold red]" if i == 0 else escape(line), soft_wrap=True)
    if resolve_lang(None) == "zh":
        for line in describe(sev, "zh"):
            c.print(escape(line), soft_wrap=True)


def print_diagnostics(c: Any, info: dict[str, Any] | None) -> None:
    """Bundle path, severity level and response target; in Chinese too when the locale is Chinese."""
    if not info:
        return
    if not info.get("bundle"):
        c.print(f"[yellow]{info.get('error')}[/yellow]")
        print_severity(c, info.get("severity"))
        return
    from ..audit_report import resolve_lang

    sev = info.get("severity")
    c.print(f"diagnostics bundle: [bold]{info['bundle']}[/bold] (secrets redacted"
            + (", host names and addresses obfuscated" if info.get("obfuscated") else "") + "): send it to support",
            soft_wrap=True)
    if info.get("obfuscation_key"):
        c.print(f"the key to the obfuscated names stays here: {info['obfuscation_key']}", soft_wrap=True)
    if resolve_lang(None) == "zh":
        c.print(f"诊断包：{info['bundle']}（已隐去密码等敏感信息），请发送给技术支持。", soft_wrap=True)
    print_severity(c, sev)
