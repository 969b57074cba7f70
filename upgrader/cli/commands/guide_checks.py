"""The guide's preconditions that can refuse before the service is stopped, and before questions where
they can: a lock left on the install (checked as soon as the install is known, before any question
about the upgrade) and health probes that fail on the running version (``probe_proof``, step 4,
before the backup, access and stop questions). A refusal here changes nothing on the host and uses
up nothing: no run is started, so no approval is marked used.

The seam: ``g`` is the guide (``say``, ``t``, ``error``, ``record``, ``args``); its words are in the
guide's catalog, both languages.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
import shlex
from typing import Any

from ...core.errors import NeedsPerson
from ...core.text_safety import shown

__all__ = ["refuse_if_locked", "lock_fields", "prove_probes", "show_unproven", "way_out"]


def way_out(home: Any, run: str) -> dict[str, str]:
    """The commands that resolve a lock left by ``run`` (complete: with --home)."""
    base = f"upgrader --home {shlex.quote(str(home))}"
    return {"status": f"{base} status", "resume": f"{base} resume {shlex.quote(run)} --break-lock",
            "rollback": f"{base} rollback {shlex.quote(run)} --break-lock"}


def refuse_if_locked(g: Any, facts: dict[str, Any]) -> None:
    """A lock on the install (an earlier run that did not end, or one going on): refused, exit 5. Only the lock's
    fields that pass lock_fields are shown and recorded."""
    lock = facts.get("lock")
    if not lock:
        return
    fields = lock_fields(lock)
    run = fields["run"]
    try:  # in the policy's time zone, the zone named, as every time the guide shows
        since = "?" if fields["time"] is None else g.when(_dt.datetime.fromtimestamp(fields["time"], _dt.timezone.utc))
    except (TypeError, ValueError, OverflowError, OSError):
        since = "?"
    who = {"run": run, "user": fields["user"], "controller": fields["controller"]}
    commands = way_out(g.args.home, run)
    g.say("locked", since=since, **who)
    g.say("locked_way_out", **commands)
    g.record("guide_refused", outcome="refused", reason="the install is locked", holder=fields)
    raise g.error(NeedsPerson, "locked_error", "locked_error_hint", **who, **commands)


#: a run id as upgrader makes them (and as the host agent accepts one to name a directory)
_RUN_ID = re.compile(r"[A-Za-z0-9._-]{1,100}")
#: the most of an operator's text (user, controller) a lock shows
_TEXT_SHOWN = 64


def lock_fields(lock: Any) -> dict[str, Any]:
    """The fields of a lock left on the install that the guide shows: anyone who could write the state dir wrote
    the file, so each is checked. The run id only in its own shape (else "?": it is put in commands to type), the
    time only as a finite number of seconds, user and controller as text with every control or bidi character
    escaped (core/text_safety.py) and cut to _TEXT_SHOWN characters; anything else is "?"."""
    lock = lock if isinstance(lock, dict) else {}
    run = lock.get("run")
    when = lock.get("time")
    return {"run": run if isinstance(run, str) and _RUN_ID.fullmatch(run) and run not in (".", "..") else "?",
            "time": float(when) if isinstance(when, (int, float)) and not isinstance(when, bool)
            and math.isfinite(when) and 0 <= when < 1e11 else None,
            "user": _safe_text(lock.get("user")), "controller": _safe_text(lock.get("controller"))}


def _safe_text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        return "?"
    text = shown(value)
    return text if len(text) <= _TEXT_SHOWN else text[:_TEXT_SHOWN] + "..."


def _show_vars(g: Any, vars_read: dict[str, Any]) -> None:
    from ...audit.redaction import redact_value

    for name, r in sorted(redact_value(vars_read).items()):  # a URL's password is shown masked
        where = f"{r.get('file')}" + (f":{r['line']}" if r.get("line") else "")
        if "value" in r and r.get("used"):
            g.say("vars_read", name=name, value=r["value"], file=where)
        elif "value" in r:
            g.say("vars_given", name=name, used=r.get("value_used"), value=r["value"], file=where)
        else:
            g.say("vars_default", name=name, used=r.get("value_used"), file=r.get("file"), error=r.get("error"))


def prove_probes(g: Any, plan: Any) -> None:
    """Each health probe of the plan once on the running version of this install; refused (exit 2) if one fails."""
    from ...core.probe_proof import ProbeUnproven, agent_call, prove
    from ...fleet.transport import AgentClient
    from ...fleet.transport.local import LocalTransport
    from ..guide_messages import _MARKS

    h = plan.hosts[0]
    _show_vars(g, h.get("vars_read") or {})
    transport = LocalTransport("local")
    agent = AgentClient(transport)
    try:
        results = prove(agent_call(agent, h["install_dir"], h.get("state_dir")), host=h["name"],
                        observe=h["playbook"]["rollback_observe"], version=h["current"], vars_read=h.get("vars_read"))
    except ProbeUnproven as e:
        show_unproven(g, e)
        g.record("guide_refused", outcome="refused", reason="health checks fail on the running version",
                 plan=plan.digest, probes=[f.probe for f in e.failures])
        raise
    finally:
        agent.close()
        transport.close()
    g.say("probes_proven", version=h["current"], n=len(results))
    for r in results:
        detail = g.t.plain("probe_log_later") if r.get("skipped") else g.words(r.get("detail"))
        g.say("probe_line", mark=_MARKS["skip" if r.get("skipped") else "pass"], probe=r["probe"], detail=detail)


def show_unproven(g: Any, e: Any) -> None:
    """Each failing probe with its likely fix, in the operator's language."""
    text, fixes = e.lines(g.t.lang)
    g.say("probe_refused", text=text)
    for fix in fixes:
        g.say("probe_fix", fix=fix)
    g.say("probe_var_hint")
    e.shown = True  # said in the operator's words: no second line translated word by word
