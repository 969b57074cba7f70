"""``run --dry-run`` and ``plan show PLAN --check`` (after the review, commands/review.py): read every host of a plan (read-only) and print what a run
would do there. Exit 0 when every host is ready, 5 when one is unreachable or not as the plan expects."""

from __future__ import annotations

import argparse
from typing import Any

from ...core.exit_codes import ExitCode
from ._common import console, print_json

__all__ = ["check_plan_hosts"]


def check_plan_hosts(args: argparse.Namespace, plan: dict[str, Any], digest: str, c: Any, *,
                     canary: int = 0, batch: int | None = None, package_verified: bool = False,
                     json_extra: dict[str, Any] | None = None) -> int:
    """Read the hosts, print (or --json, with ``json_extra`` beside) the check, the commands and probes, and the
    order of the hosts."""
    from ...core.hostcheck import check_hosts, commands, waves
    from ...fleet.transport import connect
    from ...fleet.inventory import host_from_plan

    hosts = plan["hosts"]
    checks = check_hosts(hosts, lambda h: connect(host_from_plan(h)))
    order = waves([h["name"] for h in hosts], canary, batch)
    ok = all(x.ok for x in checks)
    data = {"dry_run": True, "digest": digest, "ok": ok, "order": order, "package_verified": package_verified,
            "hosts": [{**x.to_dict(), "current": h["current"], "target": h["target"],
                       "commands": [{"what": w, "text": t} for w, t in commands(h)]}
                      for x, h in zip(checks, hosts)]}
    if args.json:
        print_json({**(json_extra or {}), **data})
    else:
        c = c or console()
        for x, h in zip(checks, hosts):
            state = "ready" if x.ok else "NOT READY"
            c.print(f"[bold]{h['name']}[/bold] {h['current']} → {h['target']}: {state}", soft_wrap=True)
            if x.reachable:
                f = x.facts
                c.print(f"  read now: runs {f['version']}, lock {'held' if f['lock'] else 'free'}, "
                        f"{(f['free_bytes'] or 0) >> 20} MiB free, host key verified, package "
                        f"{'already on the host' if f['package_on_host'] else 'to be sent'}", markup=False)
            for p in x.problems:
                c.print(f"  [red]✘[/red] {p}", soft_wrap=True)
            for what, text in commands(h):
                c.print(f"  {what:<18} {text}", markup=False, soft_wrap=True)
        c.print("order: " + " → ".join(f"[{', '.join(w)}]" for w in order)
                + (" (the first is the canary)" if canary else ""), markup=False)
        if package_verified:
            c.print("packages: sha256 and size verified against the signed catalog", markup=False)
        c.print("dry run: every host read, nothing was touched" if ok else
                "dry run: some hosts are not ready (above); nothing was touched")
    return ExitCode.OK if ok else ExitCode.NEEDS_PERSON
