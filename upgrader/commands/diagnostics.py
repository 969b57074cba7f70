"""``upgrader diagnostics RUN_ID``, and the bundle that ``run``, ``resume`` and ``rollback`` write when
a host did not end well: the bundle's path, the incident's severity level and the response-time
target go into the run's result (``diagnostics``) and its summary."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

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
                        out=Path(args.output) if args.output else None)
    if args.json:
        print_json(info)
    else:
        print_diagnostics(console(), info)
    return ExitCode.OK


def bundle_after_run(args: argparse.Namespace, result: dict[str, Any], result_name: str = "result.json") -> None:
    """When a host failed, was rolled back or needs a person: write the bundle, note it in ``result``.
    A bundle that cannot be made is reported in the result; it never changes the run's exit code."""
    if not any(h["outcome"] in _FAILED for h in result["hosts"]):
        return
    from ..diagnostics import build_bundle
    from ..errors import UpgraderError

    try:
        info = build_bundle(args.home, result["run_id"], connect=_connect, result=result, result_name=result_name,
                            obfuscate=bool(getattr(args, "obfuscate", False)))
    except (UpgraderError, OSError) as e:
        result["diagnostics"] = {"bundle": None, "error": f"the diagnostics bundle could not be written: {e}"}
        return
    result["diagnostics"] = info


def print_diagnostics(c: Any, info: dict[str, Any] | None) -> None:
    """Bundle path, severity level and response target; in Chinese too when the locale is Chinese."""
    if not info:
        return
    if not info.get("bundle"):
        c.print(f"[yellow]{info.get('error')}[/yellow]")
        return
    from ..audit_report import resolve_lang

    sev = info.get("severity")
    c.print(f"diagnostics bundle: [bold]{info['bundle']}[/bold] (secrets redacted"
            + (", host names and addresses obfuscated" if info.get("obfuscated") else "") + "): send it to support",
            soft_wrap=True)
    if info.get("obfuscation_key"):
        c.print(f"the key to the obfuscated names stays here: {info['obfuscation_key']}", soft_wrap=True)
    if sev:
        c.print(f"[bold red]severity level {sev['level']}[/bold red] ({sev['meaning']}): response within "
                f"[bold]{sev['response_hours']:g} h[/bold]; {sev['host']}: {sev['rule']}", soft_wrap=True)
    if resolve_lang(None) == "zh":
        c.print(f"诊断包：{info['bundle']}（已隐去密码等敏感信息），请发送给技术支持。", soft_wrap=True)
        if sev:
            c.print(f"故障级别：{sev['level']} 级，响应时限 {sev['response_hours']:g} 小时。", soft_wrap=True)
