"""One record per change (``upgrader audit case RUN_ID``): what an auditor asks of a run, joined from the log's
events — who requested, who approved when, under which policy and window, what ran, what happened, and which
checkpoint proves it. Pure: the events (as read once, after verification) come in, a JSON-able dict goes out.

Downtime is the time the service was down on a host: from each ``stop`` (or ``rollback``, which stops it too)
phase's start to the end of the next ``start`` phase. Times are the controller's clock when each line was written
(``line_clock``: a line the writer raised after a clock step back keeps the clock beside its time)."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Any, cast

from .log import line_clock, run_opening

__all__ = ["build_case", "run_ids", "downtime_text", "downtime_from_hosts", "mark_approvers", "WITNESS_HOOK",
           "UNCHECKED", "REQUESTER_FIELDS", "hold_requester", "requester_word"]

#: where witnessed checkpoints (the hosts' own records of a run's checkpoint) go once they are known; a case
#: carries ``"witnesses": None`` (not looked up) until a caller fills it
WITNESS_HOOK = "witnesses"


def _d(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


def _at(text: object) -> _dt.datetime | None:
    try:
        return _dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None


def _secs(a: object, b: object) -> float | None:
    pa, pb = _at(a), _at(b)
    if pa is None or pb is None or (pa.tzinfo is None) != (pb.tzinfo is None):
        return None
    return round((pb - pa).total_seconds(), 3)


def run_ids(events: list[dict[str, object]]) -> list[str]:
    """The runs of the events, in order of first appearance."""
    seen: dict[str, None] = {}
    for e in events:
        if e.get("run"):
            seen.setdefault(str(e["run"]), None)
    return list(seen)


def build_case(events: list[dict[str, object]], run: str) -> dict[str, object] | None:
    """The case file of ``run`` (an exact id) from the whole log's events; None when the log has no such run."""
    mine = [e for e in events if e.get("run") == run]
    if not mine:
        return None
    followups = _followups(events, run)
    start = cast("dict[str, object]", run_opening(mine, run) or mine[0])
    sd: dict[str, Any] = _d(start.get("data"))
    plan = sd.get("plan")
    # each approval's creation, joined by its digest (written since issue 20's attack 3) and only from before the
    # run started: an approval of the same plan made later, or by the same approver, is never taken for it
    before_start = events[:next((i for i, e in enumerate(events) if e is start), len(events))]
    created = {str(_d(e.get("data")).get("digest")): e for e in before_start
               if e.get("event") == "approval_created" and _d(e.get("data")).get("digest")}
    plan_made = next((e for e in events if e.get("event") == "plan_created" and plan
                      and _d(e.get("data")).get("plan") == plan), None)
    approvals = []
    for a in [_d(x) for x in (sd.get("approvals") or [])] or [_d(e.get("data")) for e in mine
                                                                if e.get("event") == "approval_accepted"]:
        made = created.get(str(a.get("digest")))
        approvals.append({"approver": a.get("approver"), "key": a.get("key"),
                          "created": made.get("time") if made else None,
                          "file": _d(made.get("data")).get("file") if made else None,
                          "expires": a.get("expires"), "digest": a.get("digest"), "comment": a.get("comment"),
                          "after_hours": a.get("after_hours")})
    requester: dict[str, Any] = _d(sd.get("requester"))
    policy: dict[str, Any] = _d(sd.get("policy"))
    catalog: dict[str, Any] = _d(sd.get("catalog"))
    finish = next((e for e in mine if e.get("event") == "run_finished"), None)
    fd: dict[str, Any] = _d(finish.get("data")) if finish else {}
    cp_line = next((e for e in mine if e.get("event") == "checkpoint"), None)
    cp: dict[str, Any] = _d(cp_line.get("checkpoint")) if cp_line else {}
    run_kind = {"rollback_requested": "rollback", "resume_requested": "resume"}.get(str(start.get("event")), "upgrade")
    of_run = _of_run(events, sd) if run_kind != "upgrade" else None
    hosts: dict[str, dict[str, Any]] = {}
    for h in sd.get("hosts") or []:
        if isinstance(h, dict) and h.get("host"):
            hosts[str(h["host"])] = {"host": h["host"], "from": h.get("current"), "to": h.get("target"),
                                     "phases": [], "downtime_seconds": None, "outcome": None, "version_after": None,
                                     "rollback_cause": None}
    versions = cast("dict[str, tuple[object, object]]", of_run["versions"]) if of_run else {}
    for name, (current, target) in versions.items():  # a rollback goes back: its way
        if name in (sd.get("hosts") or []):  # is the run's, the other way round
            hosts[name] = {"host": name, "from": target if run_kind == "rollback" else current,
                           "to": current if run_kind == "rollback" else target, "phases": [], "downtime_seconds": None,
                           "outcome": None, "version_after": None, "rollback_cause": None}
    down_since: dict[str, object] = {}
    downtime: dict[str, float] = {}
    for e in mine:
        host = e.get("host")
        if not host:
            continue
        h = hosts.setdefault(str(host), {"host": host, "from": None, "to": None, "phases": [],
                                         "downtime_seconds": None, "outcome": None, "version_after": None,
                                         "rollback_cause": None})
        d: dict[str, Any] = _d(e.get("data"))
        kind, phase = e.get("event"), e.get("phase")
        if kind == "phase_started":
            h["phases"].append({"phase": phase, "started": line_clock(e), "finished": None, "seconds": None,
                                "outcome": None})
            if phase in ("stop", "rollback") and str(host) not in down_since:
                down_since[str(host)] = line_clock(e)
        elif kind == "phase_finished":
            p = next((p for p in reversed(h["phases"]) if p["phase"] == phase and p["outcome"] is None), None)
            if p is None:
                p = {"phase": phase, "started": None}
                h["phases"].append(p)
            # the phase's seconds from its own lines' times (the writer's clock), never the figure the line states:
            # that is only the controller's word (kept beside it, ``seconds_said``)
            measured = _secs(p.get("started"), line_clock(e))
            p.update(finished=line_clock(e), seconds=measured if measured is not None else d.get("seconds"),
                     seconds_said=d.get("seconds"), seconds_source="lines" if measured is not None else "log",
                     outcome=e.get("outcome"))
            if phase == "start" and str(host) in down_since:
                span = _secs(down_since.pop(str(host)), line_clock(e))
                if span is not None:
                    downtime[str(host)] = round(downtime.get(str(host), 0.0) + span, 3)
        elif kind == "rollback_started":
            h["rollback_cause"] = d.get("cause")
        elif kind == "host_finished":
            h["outcome"], h["version_after"] = e.get("outcome"), d.get("version")
    for name in list(down_since):
        # stopped and never started again in this run (killed, or needs a person): the service came back at the end
        # of the first start phase that went well on that host in a later run of this change (its resume or
        # rollback), as both runs recorded their phases
        back = _back_up(events, followups, name)
        if back is not None:
            span = _secs(down_since[name], back[1])
            if span is not None:
                downtime[name] = round(downtime.get(name, 0.0) + span, 3)
                hosts[name]["up_again"] = {"run": back[0], "at": back[1]}
                hosts[name]["down_since"] = down_since.pop(name)
    for name, h in hosts.items():
        h["downtime_seconds"] = downtime.get(name, 0.0 if not down_since.get(name) else None)
        h["downtime_source"] = "log"
        if name in down_since:
            h["down_since"] = down_since[name]  # stopped and never started again in this run nor a later one
    actor: dict[str, Any] = _d(start.get("actor"))
    return {
        "run": run,
        "kind": run_kind,
        "of_run": of_run,
        "requested": {"user": requester.get("user"), "host": requester.get("host"), "key": requester.get("key"),
                      "plan": plan, "plan_created": plan_made.get("time") if plan_made else None,
                      "plan_file": _d(plan_made.get("data")).get("file") if plan_made else None},
        "approvals": approvals,
        "policy": {"source": policy.get("source"), "sha256": policy.get("sha256"),
                   "identity": policy.get("identity")},
        "catalog": {"path": catalog.get("path"), "serial": catalog.get("serial"), "signer": catalog.get("signer"),
                    "fingerprint": catalog.get("fingerprint"), "sha256": catalog.get("sha256")},
        "window": sd.get("window"),
        "operator": {"user": actor.get("user"), "host": actor.get("host"), "principal": actor.get("principal"),
                     "key": actor.get("key")},
        "target": sd.get("target"),
        "started": line_clock(start),
        "finished": line_clock(finish) if finish else None,
        "duration_seconds": _secs(line_clock(start), line_clock(finish)) if finish else None,
        "hosts": list(hosts.values()),
        "downtime_seconds": round(sum(downtime.values()), 3),
        # hosts whose service stopped and was never seen started again (the run was killed, nothing recovered it
        # yet): their downtime is unknown, never 0
        "downtime_unknown": sorted(down_since),
        "downtime_source": "log",
        # each host's outcome from its own host_finished line (which --witness holds to the host's finish record);
        # verify calls a run_finished that contradicts them, or whose exit code its outcomes do not give, edited
        "outcome": {"exit_code": _exit_code(finish), "hosts": _outcomes(fd.get("outcomes"), hosts)}
        if finish else None,
        "checkpoint": {"line": cp_line.get("seq"), "seq": cp.get("seq"), "head": cp.get("head"),
                       "signer": cp.get("signer"), "key": cp.get("key"), "time": cp_line.get("time"),
                       "anchor": f"{cp.get('seq')}:{cp.get('head')}"} if cp_line else None,
        "followups": followups,
        # each line of the run whose time the writer raised above its own clock (the line before it was later): the
        # case's times are that clock; a time raised shows here, beside the clock it was raised from
        "raised_lines": [{"line": e.get("seq"), "time": e.get("time"), "clock": e.get("clock")} for e in mine
                         if isinstance(e.get("clock"), str)],
        WITNESS_HOOK: None,
        # what only the controller's log says, which nothing the auditor holds checks (shown "the controller's word")
        "unchecked": list(UNCHECKED) + (list(REQUESTER_FIELDS) if run_kind == "upgrade" else []),
    }


def downtime_from_hosts(case: dict[str, object]) -> None:
    """The case's downtime taken from each host's own record of the run (its stop step's start to its start step's
    end, by its own clock) wherever a host recorded it; the log's figure is kept beside it (``downtime_log_seconds``)
    and ``downtime_source`` says which one is shown: "hosts", "log", or "hosts and log"."""
    witnesses = case.get("witnesses")
    told = witnesses.get("downtime") if isinstance(witnesses, dict) else None
    down: dict[str, object] = told if isinstance(told, dict) else {}
    sources: set[str] = set()
    total = 0.0
    for h in cast("list[dict[str, object]]", case.get("hosts") or []):
        h["downtime_log_seconds"] = h.get("downtime_seconds")
        mine = down.get(str(h.get("host")))
        if isinstance(mine, (int, float)):
            h["downtime_seconds"], h["downtime_source"] = float(mine), "host"
            unknown = case.get("downtime_unknown")
            if isinstance(unknown, list) and h.get("host") in unknown:  # the host's own clock knows it
                unknown.remove(h.get("host"))
        value = h.get("downtime_seconds")
        if isinstance(value, (int, float)) and value:
            sources.add(str(h.get("downtime_source")))
            total += float(value)
    case["downtime_log_seconds"] = case.get("downtime_seconds")
    case["downtime_seconds"] = round(total, 3)
    case["downtime_source"] = ("hosts" if sources == {"host"} else "hosts and log" if "host" in sources else "log")


#: the fields of a case only the controller's log says: no host, plan, approval or allowed_signers file checks them
UNCHECKED = ("catalog", "window", "operator.user", "operator.host", "hosts.rollback_cause", "plan_created")


#: the requester's fields (an upgrade run's opening line says them): the controller's word until a file the
#: auditor holds checks them: the plan file (``--plans``: user and host inside its digest, the key that signed it)
#: or an approval file (``--approvals``: the ``requester:`` it signs, the plan's user)
REQUESTER_FIELDS = ("requested.user", "requested.host", "requested.key")


def hold_requester(case: dict[str, object], held: Mapping[str, str]) -> None:
    """The requester's fields of ``case`` a file checked (``held``: field -> the file that checked it) leave its
    ``unchecked``; ``requested.checked_by`` names the file per field (verify and the cross-check call a
    contradiction ALTERED, so a field held here agrees with that file)."""
    unchecked = case.get("unchecked")
    requested = case.get("requested")
    if not isinstance(requested, dict):
        return
    by = requested.setdefault("checked_by", {})
    for name, source in held.items():
        if isinstance(by, dict):
            by[name.split(".", 1)[-1]] = source
        if isinstance(unchecked, list) and name in unchecked:
            unchecked.remove(name)


def requester_word(case: Mapping[str, object]) -> bool:
    """Whether any of the case's requester fields is only the controller's word (shown so)."""
    unchecked = case.get("unchecked")
    return isinstance(unchecked, list) and any(f in unchecked for f in REQUESTER_FIELDS)


def mark_approvers(case: dict[str, object], approvers_file: str | None,
                   listed: frozenset[str] = frozenset()) -> None:
    """Each approval of ``case`` names the approvers' allowed_signers its approver name was held to (verify: a
    name that is not its key's literal principal there is ALTERED), ``approver_listed_in``. Without that file, or
    for an approval whose key it does not list (``listed``: the keys it lists; an engineer who left), the name is
    the controller's word: "approvals.approver" joins the case's ``unchecked``."""
    approvals = case.get("approvals")
    unheld = approvers_file is None
    for a in approvals if isinstance(approvals, list) else []:
        if isinstance(a, dict):
            held = approvers_file is not None and a.get("key") in listed
            a["approver_listed_in"] = approvers_file if held else None
            unheld = unheld or not held
    unchecked = case.get("unchecked")
    if unheld and isinstance(unchecked, list) and "approvals.approver" not in unchecked:
        unchecked.append("approvals.approver")


def _outcomes(said: object, hosts: Mapping[str, Mapping[str, object]]) -> dict[str, object] | None:
    """The run's outcome per host: each host's host_finished line where it has one, else run_finished's."""
    out: dict[str, object] = dict(said) if isinstance(said, dict) else {}
    for name, h in hosts.items():
        if h.get("outcome") is not None:
            out[name] = h["outcome"]
    return out if out or isinstance(said, dict) else None


def _back_up(events: list[dict[str, object]], followups: list[dict[str, object]],
             host: str) -> tuple[str, object] | None:
    """(the later run, the writer's clock) of the first start phase that went well on ``host`` in a later run of the
    change (``followups``: its resumes and rollbacks), or None."""
    later = {str(f.get("run")) for f in followups}
    for e in events:
        if e.get("run") in later and e.get("host") == host and e.get("event") == "phase_finished" \
                and e.get("phase") == "start" and e.get("outcome") == "ok":
            return str(e.get("run")), line_clock(e)
    return None


def downtime_text(seconds: object, unknown: bool, lang: str = "en") -> str:
    """A downtime as a case shows it: ``N s`` (``N 秒``), or, when the service stopped and was never seen started
    again, that it is unknown because the run was killed -- never a raw None."""
    if unknown or seconds is None:
        return ("未知——运行在服务重新启动之前被中止（恢复它的续跑或回滚结束后可知）" if lang == "zh" else
                "unknown — the run was killed before the service was started again (known once a resume or "
                "rollback recovered it)")
    return f"{seconds} 秒" if lang == "zh" else f"{seconds} s"


def _exit_code(finish: dict[str, object]) -> object:
    """A run's exit code as its run_finished line has it (a rollback's, a resume's: the line's outcome)."""
    code = _d(finish.get("data")).get("exit_code")
    said = finish.get("outcome") if code is None else code
    return int(said) if isinstance(said, str) and said.isdigit() else said


def _of_run(events: list[dict[str, object]], sd: dict[str, object]) -> dict[str, object] | None:
    """The run a rollback or resume carries on (its ``of_run``), as that run's opening line has it: who requested
    it, its plan, target and approvals, and each host's versions. A rollback's case names it, labelled as that
    run's: the rollback itself was asked for by its operator, under its own policy."""
    of = sd.get("of_run")
    if not isinstance(of, str):
        return None
    opening = run_opening([e for e in events if e.get("run") == of], of)
    od: dict[str, Any] = _d(opening.get("data")) if opening else {}
    who: dict[str, Any] = _d(od.get("requester"))
    return {"run": of, "started": line_clock(opening) if opening else None,
            "requester": {k: who.get(k) for k in ("user", "host", "key")} if who else None,
            "plan": od.get("plan"), "target": od.get("target"),
            "approvals": [{k: _d(a).get(k) for k in ("approver", "key", "digest")} for a in od.get("approvals") or []],
            "versions": {str(h["host"]): (h.get("current"), h.get("target")) for h in od.get("hosts") or []
                         if isinstance(h, dict) and h.get("host")}}


def _followups(events: list[dict[str, object]], run: str) -> list[dict[str, object]]:
    """The runs that came after ``run`` and changed what it did: each rollback and resume of it (its
    ``rollback_requested`` / ``resume_requested`` names ``of_run``), with its outcome as the log has it."""
    out: list[dict[str, object]] = []
    for e in events:
        if e.get("event") in ("rollback_requested", "resume_requested") and _d(e.get("data")).get("of_run") == run \
                and e.get("run"):
            rid = e.get("run")
            end = next((x for x in events if x.get("run") == rid and x.get("event") == "run_finished"), None)
            ed = _d(end.get("data")) if end else {}
            out.append({"run": rid, "kind": "rollback" if e.get("event") == "rollback_requested" else "resume",
                        "started": line_clock(e), "finished": line_clock(end) if end else None,
                        "exit_code": _exit_code(end) if end else None,
                        "hosts": ed.get("outcomes") if end else None})
    return out
