"""What ``rollback`` (and ``resume``) check and say around the engine: the service window for a rollback, the
operator's confirmation before more than one host is stopped, configuration changed since the upgrade (said
before the stop, and where it was kept said after), and the lock broken on the operator's word.

It does not reach hosts (the engine does) and does not decide what a host needs (the host's own state does)."""

from __future__ import annotations

import threading
from typing import Any


__all__ = ["RecoveryNotes", "print_config_kept"]


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
