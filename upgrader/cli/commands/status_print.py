"""What ``upgrader status`` prints for people, in the operator's language (``command_messages``): per host the
version, the lock and its holder (since when, in the policy's time zone) and the runs that need a person, each
with the complete command that resolves it (``upgrader --home HOME ...``, runnable as printed)."""

from __future__ import annotations

import datetime as _dt
import shlex
from typing import Any

from rich.markup import escape

__all__ = ["print_status"]


def _since(lock: dict[str, Any], zone: str, lang: str) -> str:
    from ...core.shown_time import shown_time

    try:
        return shown_time(_dt.datetime.fromtimestamp(float(lock.get("time") or 0), _dt.timezone.utc), zone, lang)
    except (TypeError, ValueError, OverflowError, OSError):
        return "?"


def print_status(c: Any, hosts: list[dict[str, Any]], known: dict[str, str], *, home: Any, lang: str,
                 zone: str) -> None:
    """``hosts`` as ``cmd_status`` builds them; ``known``: this machine's runs and the command that last worked on
    each (resume or rollback)."""
    from ..command_messages import texts
    from ..guide_messages import Messages

    t = texts(lang)
    phases = Messages(lang)
    base = f"upgrader --home {shlex.quote(str(home))}"
    for e in hosts:
        if e["reachable"]:
            c.print(t("status_runs", host=e["host"], version=e.get("version")), soft_wrap=True)
            if e.get("version_refused"):  # a host with its own trust root did not run the playbook's version command
                c.print(t("status_version_refused", why=escape(str(e.get("version_error")))), soft_wrap=True)
            elif e.get("version") is None and e.get("version_error"):  # e.g. a version command root may not run
                c.print(t("status_version_unread", why=escape(str(e.get("version_error")))), soft_wrap=True)
        else:
            c.print(t("status_unreachable", host=e["host"], error=e.get("error")), soft_wrap=True)
        lock = e.get("lock")
        if lock:
            run = str(lock.get("run"))
            who = {"run": run, "user": lock.get("user"), "controller": lock.get("controller"),
                   "since": _since(lock, zone, lang)}
            if run in known:
                c.print(t("status_lock_ours", command=f"{base} {known[run]} {shlex.quote(run)}", **who),
                        soft_wrap=True)
            else:
                c.print(t("status_lock_foreign", rollback=f"{base} rollback RUN_ID --break-lock",
                          resume=f"{base} resume RUN_ID --break-lock", run_plan=f"{base} run PLAN --break-lock",
                          **who), soft_wrap=True)
        for n in e["needs"]:
            run = shlex.quote(str(n["run"]))
            command = str(n.get("command") or "resume")
            if n.get("kind") == "waiting":
                c.print(t("status_waiting", run=n["run"], resolve=f"{base} resume {run} --yes"), soft_wrap=True)
            elif n.get("kind") == "needs_person":
                c.print(t("status_needs_person", run=n["run"], command=command, resolve=f"{base} {command} {run}",
                          diagnostics=f"{base} diagnostics {run}"), soft_wrap=True)
            else:
                phase, _, _ = str(n.get("at") or "").partition(" ")
                c.print(t("status_interrupted", run=n["run"], command=command, phase=phases.phase(phase) or phase,
                          resolve=f"{base} {command} {run}"), soft_wrap=True)
        if e["ok"]:
            c.print(t("status_ok"), soft_wrap=True)
