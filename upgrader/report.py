"""Everything upgrader prints for people: decisions, plans, live phase lines, run summaries.

The only module (with ``cli``) that uses rich. It renders data the core returns; it computes
nothing of its own. The console is handed in, so tests and ``--json`` runs can redirect it.
"""

from __future__ import annotations

import threading
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = ["PhaseLines", "print_decision", "print_plan", "print_run_summary", "STATUS_STYLE"]

STATUS_STYLE = {"pass": "green", "ok": "green", "committed": "bold green", "fail": "bold red",
                "failed": "bold red", "skip": "dim", "warn": "yellow", "rolled_back": "bold yellow",
                "unchanged": "yellow", "needs_person": "bold red reverse", "not_started": "dim"}
_MARK = {"pass": "✔", "fail": "✘", "skip": "·", "warn": "!"}


def _styled(status: str, text: str | None = None) -> Text:
    return Text(text or status, style=STATUS_STYLE.get(status, ""))


def print_decision(console: Console, current: str, target: str, decision: dict[str, Any]) -> None:
    verdict = "ALLOWED" if decision["allowed"] else "REFUSED"
    console.print(Text.assemble(("Upgrade ", ""), (f"{current} → {target}", "bold"), ": ",
                                _styled("pass" if decision["allowed"] else "fail", verdict)))
    for r in decision["rules"]:
        console.print(Text.assemble("  ", _styled(r["status"], _MARK.get(r["status"], "?")), " ",
                                    (f"{r['rule']:<21}", "bold"), r["reason"]))


def print_plan(console: Console, plan: dict[str, Any], digest: str) -> None:
    table = Table(title=f"Plan to {plan['target']}  (digest {digest[:16]}…)", title_justify="left")
    for col in ("host", "address", "current", "target", "package", "policy", "checks"):
        table.add_column(col)
    for h in plan["hosts"]:
        pkg = h.get("package") or {}
        refusals = [r for r in h["decision"]["rules"] if r["status"] == "fail"]
        policy = _styled("pass", "allowed") if h["decision"]["allowed"] else \
            _styled("fail", "refused: " + "; ".join(r["reason"] for r in refusals))
        checks = Text()
        for c in h.get("checks", []):
            if c["status"] != "pass":
                checks.append(f"{c['check']}: {c['reason']}\n", style=STATUS_STYLE[c["status"]])
        table.add_row(h["name"], h["address"], str(h["current"]), h["target"],
                      f"{pkg.get('kind', '-')} {pkg.get('sha256', '')[:12]}" if pkg else "-",
                      policy, checks or Text("ok", style="green"))
    console.print(table)
    for h in plan["hosts"]:
        if not h["decision"]["allowed"]:
            console.print(f"\n[bold]{h['name']}[/bold]: why the policy refuses")
            print_decision(console, str(h["current"]), h["target"], h["decision"])


class PhaseLines:
    """An observer that prints one line per finished phase, with its elapsed time."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._lock = threading.Lock()

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        with self._lock:
            if kind == "phase_finished":
                status = event["status"]
                self.console.print(Text.assemble(
                    (f"{event['host']:<14}", "bold"), (f"{event['phase']:<20}", "cyan"),
                    _styled(status, f"{status:<7}"), (f"{event['seconds']:7.2f}s  ", "dim"),
                    str(event.get("detail", ""))))
            elif kind == "rollback_started":
                self.console.print(Text.assemble((f"{event['host']:<14}", "bold"),
                                                 ("rolling back: ", "bold yellow"), event["cause"]))
            elif kind == "host_finished":
                self.console.print(Text.assemble((f"{event['host']:<14}", "bold"),
                                                 _styled(event["outcome"], event["outcome"].upper()),
                                                 f"  now running {event.get('version')}"))


def print_run_summary(console: Console, result: dict[str, Any]) -> None:
    table = Table(title=f"Run {result['run_id']}", title_justify="left")
    for col in ("host", "outcome", "from", "to", "running", "downtime", "time", "note"):
        table.add_column(col)
    for h in result["hosts"]:
        table.add_row(h["host"], _styled(h["outcome"]), str(h["current"]), str(h["target"]), str(h["version"]),
                      f"{h['downtime']:.2f}s" if h.get("downtime") is not None else "-",
                      f"{h['seconds']:.1f}s", h.get("error") or "")
    console.print(table)
    versions: dict[str, int] = {}
    for h in result["hosts"]:
        versions[str(h["version"])] = versions.get(str(h["version"]), 0) + 1
    if len(versions) > 1:
        console.print("[yellow]Hosts are left on mixed versions:[/yellow] "
                      + ", ".join(f"{v} ×{n}" for v, n in sorted(versions.items())))
    if result.get("stopped_early"):
        console.print(f"[bold red]Stopped early:[/bold red] {result['stopped_early']}")
