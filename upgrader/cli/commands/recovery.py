"""What ``rollback`` (and ``resume``) check and say around the engine: the service window for a rollback, the
operator's confirmation before more than one host is stopped, configuration changed since the upgrade (said
before the stop, and where it was kept said after), and the lock broken on the operator's word.

It does not reach hosts (the engine does) and does not decide what a host needs (the host's own state does)."""

from __future__ import annotations

import threading
from typing import Any


__all__ = ["rollback_window", "RecoveryNotes", "print_config_kept"]


def rollback_window(policy: Any, now: Any) -> tuple[dict[str, Any], str]:
    """The service window as it applies to a rollback now, and the line that says so. The policy's
    ``window.rollback`` is ``any_time`` (the default: undoing a bad upgrade does not wait) or ``like_run``
    (then refused outside the window exactly as ``run`` is: exit 4, nothing touched)."""
    from ...customer.service_window import check_run_window, plan_window

    how = str(policy.value("window.rollback"))
    if how == "any_time":
        window = plan_window(policy, now)
        where = "inside" if window.get("inside") else "outside" if window.get("inside") is False else "at"
        return ({**window, "rollback": how},
                f"service window: rollbacks are allowed at any hour (policy window.rollback: any_time); now is "
                f"{where} the window")
    checked = check_run_window(None, policy, [], now)
    return {**checked, "rollback": how}, "service window: the rollback is allowed now (policy window.rollback: like_run)"


class RecoveryNotes:
    """An engine observer that says, on the console, what an operator must know during a recovery: a lock broken
    (and whose it was), configuration edited since the upgrade (before that host is stopped)."""

    def __init__(self, c: Any) -> None:
        self.c = c
        self._lock = threading.Lock()

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        with self._lock:
            if kind == "config_changed_since":
                self.c.print(f"[yellow]{event['host']}: configuration changed since the upgrade:[/yellow] "
                             f"{', '.join(event['paths'])}; the rollback restores the backed-up copy and keeps "
                             "these aside", soft_wrap=True)
            elif kind == "lock_broken":
                h = event.get("holder") or {}
                self.c.print(f"[yellow]{event['host']}: broke the lock of run {h.get('run')}[/yellow] "
                             f"({h.get('user')}@{h.get('controller')}), as --break-lock asked", soft_wrap=True)


def print_config_kept(c: Any, result: dict[str, Any]) -> None:
    """After a rollback: where each host kept the configuration that was in use before it."""
    for h in result["hosts"]:
        for p in h.get("phases") or ():
            kept = (p.get("data") or {}).get("config_kept")
            if kept:
                c.print(f"{h['host']}: the configuration in use before the rollback ({', '.join(kept['paths'])}) "
                        f"is kept in {kept['in']}", soft_wrap=True)
