"""The run of ``upgrader guide``: the approved plan through ``upgrader run``'s own steps, with progress
lines, Ctrl-C and a lost terminal handled while it goes, and the result explained in plain words.

The seam: the guide has asked every question and checked the plan and its approval; ``run_guided``
starts the run and returns the guide's exit code. It reaches the guide only through ``Screen``:
its messages, console, signal handling, clock and arguments. It asks nothing.

A run, once started, always ends with its records: the running state (Ctrl-C cancels at the engine's
next safe point, a hang-up lets the run go on) is entered before ``start_run`` writes the run's
directory and its ``run_started`` event, so ``finish_run`` (result, ``run_finished``, checkpoint)
always follows. A terminal lost before that point starts nothing.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from typing import Any, Protocol

from ...core.interrupts import Interrupts, pause_for_test

__all__ = ["CANCELLED_EXIT", "HANGUP_EXIT", "Screen", "follow_up", "run_guided"]

CANCELLED_EXIT = 130  # the operator cancelled before stop: nothing changed
HANGUP_EXIT = 129     # the terminal was lost before the run started: nothing changed


def follow_up(args: argparse.Namespace, *argv: str) -> str:
    """A command for the operator to run later, complete as printed: ``upgrader --home HOME ...`` (and the
    audit key the guide set up, when it is not where upgrader looks by itself), each word shell-quoted."""
    import shlex

    words = ["upgrader", "--home", str(Path(args.home).absolute()), *argv]
    key = getattr(args, "audit_key", None)
    if key and argv and argv[0] in ("rollback", "resume", "guide"):
        words += ["--audit-key", str(key)]
    return " ".join(shlex.quote(w) for w in words)


class Screen(Protocol):
    """What the run needs from the guide."""

    t: Any                  # guide_messages.Messages in the operator's language
    c: Any                  # the rich console
    interrupts: Interrupts
    clock: Any
    args: argparse.Namespace
    run_code: int | None    # set here once the run has ended

    def say(self, msg: str, **fields: Any) -> None: ...


def run_guided(g: Screen, plan: Any, checked: Any, run_args: argparse.Namespace,
               backup: dict[str, Any] | None) -> int:
    """Run the plan's one host; the guide's exit code (the run's, or 130 when a cancel left it unchanged)."""
    from ...core.engine import CANCELLED, Engine
    from ...api import finish_run, spend_at_lock, start_run
    from ...audit.log import log_identity
    from ._common import context_of

    with g.interrupts.running():
        g.interrupts.check_terminal()  # lost after the last answer: nothing is started
        ctx = context_of(run_args)
        started = start_run(ctx, plan, checked)
        started.recorder.event("guide_run", outcome="started", lang=g.t.lang, scripted=bool(g.args.yes),
                               backup_confirmed=backup)
        g.say("run_started", run=started.run_id, journal=started.journal.dir,
              command=follow_up(g.args, "resume", started.run_id))
        pause_for_test("run_started", lambda: g.interrupts.cancel.is_set() or g.interrupts.hung_up)
        engine = Engine(journal=started.journal, clock=g.clock,
                        observers=[started.recorder, _Progress(g)], forks=1, controller=started.controller,
                        manual_changes=checked.policy.manual_changes,  # the operator's, never the plan's copy
                        approvals=checked.approval_digests, cancel=g.interrupts.cancel,
                        catalog_serial=checked.catalog_serial, host_evidence=checked.evidence,
                        on_locked=spend_at_lock(ctx, checked, started),  # the approval is spent at the lock
                        # what the host records the run as, at its lock, and the log it belongs to
                        audit={"kind": "guided", "log": log_identity(started.recorder.log.path)})
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["outcome"] = engine.run(checked.targets)
            except BaseException as e:  # noqa: BLE001 - handed to the main thread below
                box["error"] = e

        worker = threading.Thread(target=work, name="guide-run")
        worker.start()
        while worker.is_alive():
            worker.join(0.2)
            for note in g.interrupts.notes():
                g.say(note)
        for note in g.interrupts.notes():
            g.say(note)
        if "error" in box:
            started.close_on_error(box["error"])
            raise box["error"]
        outcome = box["outcome"]
        cancelled = g.interrupts.cancel.is_set()
        run_code = int(outcome.exit_code)
        code = CANCELLED_EXIT if cancelled and outcome.hosts[0].outcome in ("unchanged", "not_started") else run_code
        if cancelled or g.interrupts.hung_up:
            differs = {"exit_code": code, "run_exit_code": run_code} if code != run_code else {}
            started.recorder.event("guide_interrupted", outcome="cancelled" if cancelled else "continued",
                                   presses=g.interrupts.presses, terminal_lost=g.interrupts.hung_up, **differs)
        result = finish_run(ctx, checked, started, outcome, obfuscate=bool(getattr(run_args, "obfuscate", False)))
    g.run_code = code
    _explain(g, result, started, checked, cancelled, CANCELLED)
    return code


def _explain(g: Screen, result: dict[str, Any], started: Any, checked: Any, cancelled: bool,
             cause_cancelled: str) -> None:
    from ...core.reasons import cause as plain_cause
    from ...core.recorder import audit_path
    from ...customer.severity import is_cancelled

    g.c.print()
    h = result["hosts"][0]
    outcome = h["outcome"]
    cause = plain_cause(str(h.get("rollback_cause") or h.get("error") or ""), g.t.lang)
    if outcome == "committed":
        if cancelled:
            g.say("done_after_cancel")
        downtime = (f"{h['downtime']:.1f} 秒" if g.t.lang == "zh" else f"{h['downtime']:.1f}s") \
            if h.get("downtime") is not None else "-"
        g.say("done_ok", product=checked.targets[0].plan["product"], version=h["version"], downtime=downtime)
        g.say("done_ok_next", command=follow_up(g.args, "rollback", started.run_id))
    elif cancelled and outcome in ("unchanged", "not_started"):
        g.say("cancelled_nothing", lock=g.t("lock_released"))
    elif outcome == "rolled_back" and h.get("rollback_cause") == cause_cancelled:
        g.say("cancelled_rolled_back", version=h["version"])
    elif outcome == "rolled_back":
        g.say("failed_rolled_back", cause=cause, version=h["version"])
    elif outcome in ("unchanged", "bad_input"):
        g.say("failed_unchanged", cause=cause)
    elif outcome == "stale" or outcome == "refused":
        g.say("stale_plan", cause=cause)
    else:
        g.say("needs_person", cause=cause)
    # the operator's cancel is no incident: nothing to send to support (severity.is_cancelled)
    if outcome != "committed" and not (cancelled and outcome in ("unchanged", "not_started")) \
            and not is_cancelled(h):
        bundle = (result.get("diagnostics") or {}).get("bundle")
        g.say("send_support", journal=started.journal.dir, run=started.run_id, audit=audit_path(g.args.home),
              diag=g.t("diagnostics", bundle=bundle) if bundle else "")
        approvers = ", ".join(a.statement.approver for a in checked.approvals) or "-"
        g.say("contact", approver=approvers)
        _severity(g, result)
    cp = result.get("checkpoint")
    if cp:
        g.say("checkpoint", line=cp["line"], seq=cp["seq"], head=cp["head"])
    for line in _failure_lines(result):
        try:
            print(line, file=sys.stderr)
        except OSError:
            pass


def _severity(g: Screen, result: dict[str, Any]) -> None:
    """The incident's level by the host's state after the run, its three response times and service hours."""
    from rich.markup import escape

    from ...customer.severity import describe

    sev = result.get("severity") or (result.get("diagnostics") or {}).get("severity")
    if not sev:
        return
    for i, line in enumerate(describe(sev, g.t.lang)):
        try:
            g.c.print(f"[bold red]{escape(line)}[/bold red]" if i == 0 else escape(line), soft_wrap=True)
        except OSError:
            pass  # the terminal is gone; result.json and the bundle keep the level


class _Progress:
    """The engine's events as the guide's progress lines; a dead terminal never reaches the engine."""

    def __init__(self, g: Screen) -> None:
        self.g = g
        self._lock = threading.Lock()

    def on_event(self, event: dict[str, Any]) -> None:
        try:
            with self._lock:
                kind = event["event"]
                t = self.g.t
                from ...core.reasons import cause, failure, translate

                if kind == "phase_started":
                    self.g.say("phase_started", name=t.phase(event["phase"]))
                elif kind == "phase_finished":
                    self.g.say("phase_ok" if event["status"] == "ok" else "phase_failed", name=t.phase(event["phase"]),
                               seconds=float(event.get("seconds") or 0),
                               detail=(translate if event["status"] == "ok" else failure)(
                                   str(event.get("detail") or ""), t.lang))
                elif kind == "rollback_started":
                    self.g.say("rolling_back", cause=cause(str(event.get("cause", "")), t.lang))
        except Exception:  # noqa: BLE001 - showing progress must never break the run
            pass


def _failure_lines(result: dict[str, Any]) -> list[str]:
    words = {"rolled_back": "failed and was rolled back", "unchanged": "not upgraded, nothing changed",
             "needs_person": "NEEDS A PERSON", "not_started": "was not started", "refused": "was refused",
             "stale": "was not touched: the plan does not fit the host as it is now",
             "bad_input": "was refused before stop, nothing changed"}
    return [f"upgrader: {h['host']}: {words[h['outcome']]}: {h.get('error') or ''}".rstrip(": ")
            for h in result["hosts"] if h["outcome"] in words]
