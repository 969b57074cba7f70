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

__all__ = ["PhaseLines", "LiveBoard", "print_decision", "print_plan", "print_run_summary", "STATUS_STYLE",
           "window_line"]

STATUS_STYLE = {"pass": "green", "ok": "green", "committed": "bold green", "fail": "bold red",
                "failed": "bold red", "skip": "dim", "warn": "yellow", "rolled_back": "bold yellow",
                "unchanged": "yellow", "needs_person": "bold red reverse", "not_started": "dim",
                "running": "cyan", "refused": "bold red", "stale": "bold red", "bad_input": "bold red", "rolling back": "bold yellow", "waiting": "dim", "restored": "bold green",
                "superseded": "bold red", "policy_refused": "bold red"}
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
    if plan.get("window"):
        console.print(window_line(plan["window"]))
    from ..core.config_vars import describe_read

    for h in plan["hosts"]:  # the values read from each install's configuration (playbook vars_from)
        for line in describe_read(h.get("vars_read") or {}):
            console.print(Text.assemble((f"{h['name']}: ", "bold"), line))
    for h in plan["hosts"]:
        if not h["decision"]["allowed"]:
            console.print(f"\n[bold]{h['name']}[/bold]: why the policy refuses")
            print_decision(console, str(h["current"]), h["target"], h["decision"])


_OUTSIDE_RULE = {"refuse": "the policy refuses runs outside it",
                 "after_hours_approval": "a run outside it needs an approval made with 'upgrader approve --after-hours'",
                 "allow": "the policy allows runs outside it"}


def window_line(window: dict[str, Any]) -> Text:
    """``service window: inside|outside|unknown  <reason>; <what a run outside needs>`` for a plan's window."""
    inside = window.get("inside")
    label = _styled("pass", "inside") if inside is True else _styled("warn", "outside" if inside is False
                                                                     else "unknown")
    rule = _OUTSIDE_RULE.get(str((window.get("policy") or {}).get("outside")), "")
    return Text.assemble(("service window: ", "bold"), label, "  ", str(window.get("reason", "")),
                         (f"; {rule} (checked again when the run starts)" if rule and inside is not True else ""))


class PhaseLines:
    """An observer that prints one line per finished phase, with its elapsed time."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._lock = threading.Lock()

    def on_event(self, event: dict[str, Any]) -> None:
        from ..audit.redaction import redact_value

        kind = event["event"]
        event = redact_value(event)  # details quote commands, logs and errors: terminals and CI logs keep them
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
            elif kind == "host_retry":
                self.console.print(Text.assemble((f"{event['host']:<14}", "bold"), (f"{event['op']:<20}", "cyan"),
                                                 (f"connection lost, retry {event['attempt']}: ", "yellow"),
                                                 str(event.get("error", ""))))
            elif kind == "canary_finished":
                self.console.print(Text.assemble(("canary ", "bold"), _styled("ok" if event["ok"] else "failed",
                                                                             "ok" if event["ok"] else "FAILED"),
                                                 f": {event.get('stopped') or 'going on with the other hosts'}"))
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
        for group, on in _mixed_groups(result["hosts"]).items():
            console.print(Text.assemble("  ", (f"group {group} is mixed: ", "yellow"),
                                        "; ".join(f"{v} on {_names(hosts)}" for v, hosts in sorted(on.items()))))
    if result.get("stopped_early") and any(h["outcome"] == "waiting" for h in result["hosts"]):
        console.print(f"[bold]Paused after a healthy canary:[/bold] {result['stopped_early']}")
    elif result.get("stopped_early"):
        console.print(f"[bold red]Stopped early:[/bold red] {result['stopped_early']}")


def _mixed_groups(hosts: list[dict[str, Any]]) -> dict[str, dict[str, list[str]]]:
    """The inventory groups whose hosts now run different versions: group -> version -> hosts."""
    groups: dict[str, dict[str, list[str]]] = {}
    for h in hosts:
        for g in h.get("groups") or ():
            groups.setdefault(g, {}).setdefault(str(h["version"]), []).append(h["host"])
    return {g: on for g, on in sorted(groups.items()) if len(on) > 1}


def _names(hosts: list[str], most: int = 5) -> str:
    return ", ".join(hosts[:most]) + (f" and {len(hosts) - most} more" if len(hosts) > most else "")


class LiveBoard:
    """A live view of a fleet run: counts per state, then the running and failing hosts (stays readable
    for hundreds of hosts). Use as a context manager around the run; an engine observer meanwhile."""

    MAX_ROWS = 24

    def __init__(self, console: Console, hosts: list[str], clock: Any) -> None:
        self.console = console
        self.clock = clock
        self.state: dict[str, dict[str, Any]] = {h: {"phase": "waiting", "status": "waiting", "since": None,
                                                     "detail": ""} for h in hosts}
        self._lock = threading.Lock()
        self._live: Any = None
        self.started = clock.monotonic()

    def __enter__(self) -> "LiveBoard":
        from rich.live import Live

        self._live = Live(self, console=self.console, refresh_per_second=4, transient=False)
        self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)

    def on_event(self, event: dict[str, Any]) -> None:
        host = event.get("host")
        kind = event["event"]
        with self._lock:
            s = self.state.get(host) if host else None
            if s is None:
                return
            if kind == "host_started":
                s.update(status="running", phase="connect", since=self.clock.monotonic())
            elif kind == "phase_started":
                s.update(phase=event["phase"])
            elif kind == "phase_finished" and event["status"] == "failed":
                s.update(detail=str(event.get("detail", ""))[:120])
            elif kind == "rollback_started":
                s.update(status="rolling back", detail=str(event.get("cause", ""))[:120])
            elif kind == "host_retry":
                s.update(detail=f"connection lost, retry {event['attempt']}")
            elif kind == "host_finished":
                s.update(status=event["outcome"], phase="done", done=self.clock.monotonic(),
                         detail=str(event.get("error") or "")[:120])

    def __rich__(self) -> Any:
        from rich.console import Group

        now = self.clock.monotonic()
        with self._lock:
            items = list(self.state.items())
        counts: dict[str, int] = {}
        for _, s in items:
            counts[s["status"]] = counts.get(s["status"], 0) + 1
        summary = Text.assemble(("elapsed ", "dim"), f"{now - self.started:5.1f}s   ",
                                *[x for k, v in sorted(counts.items()) for x in (_styled(k, k), f" {v}   ")])
        table = Table(box=None, pad_edge=False, show_header=True)
        for col in ("host", "state", "phase", "elapsed", "detail"):
            table.add_column(col)
        interesting = [(h, s) for h, s in items if s["status"] in ("running", "rolling back", "needs_person",
                                                                   "rolled_back", "unchanged")]
        for h, s in interesting[:self.MAX_ROWS]:
            end = s.get("done") or now
            elapsed = f"{end - s['since']:.1f}s" if s.get("since") else "-"
            table.add_row(h, _styled(s["status"], s["status"]), s["phase"], elapsed, s["detail"])
        hidden = len(interesting) - self.MAX_ROWS
        parts: list[Any] = [summary, table]
        if hidden > 0:
            parts.append(Text(f"… and {hidden} more", style="dim"))
        return Group(*parts)
