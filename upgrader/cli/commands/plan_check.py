"""``run --dry-run`` and ``plan show PLAN --check`` (after the review, commands/review.py): print what
``upgrader.api.check_hosts`` read of every host of a plan (read-only) and what a run would do there. Exit 0
when every host is ready, 5 when one is unreachable or not as the plan expects."""

from __future__ import annotations

from typing import Any

from ._common import console, print_json

__all__ = ["print_host_check"]


def print_host_check(checked: Any, c: Any, *, as_json: bool, canary: int = 0,
                     json_extra: dict[str, Any] | None = None) -> int:
    """Print (or as JSON, with ``json_extra`` beside) the check, the commands and probes, and the order of the
    hosts; the exit code."""
    from ...core.hostcheck import commands

    data = checked.data
    if as_json:
        print_json({**(json_extra or {}), **data})
    else:
        c = c or console()
        for x, h in zip(checked.checks, checked.hosts):
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
        c.print("order: " + " → ".join(f"[{', '.join(w)}]" for w in checked.order)
                + (" (the first is the canary)" if canary else ""), markup=False)
        if data["package_verified"]:
            c.print("packages: sha256 and size verified against the signed catalog", markup=False)
        c.print("dry run: every host read, nothing was touched" if checked.ok else
                "dry run: some hosts are not ready (above); nothing was touched")
    return checked.exit_code
