"""Witnessed checkpoints: the hosts a run touched keep its signed checkpoint, where the controller cannot rewrite it.

A checkpoint signed with the operator's key proves nothing against whoever holds that key: they can edit the log,
rebuild the chain and sign it again, or cut the last run off the end. So at the end of every run, resume and
rollback, each host the run reached appends the run's checkpoint (seq, head, signer, key fingerprint, time, run id)
to ``checkpoints.jsonl`` in its own ledger (hostagent/witness.py). A host that cannot be reached then gets a
warning in the run's output and a ``witness_missing`` line in the audit log; the run's outcome is not changed.

``upgrader audit verify --witness INVENTORY`` reads every host's record (read-only) and checks the log against it:
each witnessed head must be the hash of the log's line at that seq, followed by that run's checkpoint line.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..core.errors import UpgraderError
from ..core.shapes import JSONObject

__all__ = ["WitnessTarget", "send_witnesses", "read_witnesses", "check_witnesses", "case_witnesses", "WitnessResult", "HostWitness"]

#: seconds a host may take to answer the witness request (a run's end never waits longer on one host)
CALL_TIMEOUT = 30.0


@dataclass(frozen=True)
class WitnessTarget:
    """A host to send the checkpoint to (or read its record from): its name and ``call(op, request)``, which asks
    its agent (the caller connects: api.py), raising on any failure."""

    name: str
    call: Callable[[str, JSONObject], JSONObject]


def _call(t: WitnessTarget, op: str, request: JSONObject | None = None) -> JSONObject:
    return t.call(op, request or {})


def _error(e: BaseException) -> str:
    if isinstance(e, UpgraderError):
        return e.message
    return f"{type(e).__name__}: {e}"


def send_witnesses(targets: Sequence[WitnessTarget], checkpoint: Mapping[str, object], run_id: str,
                   time: str, syslog: bool = False, syslog_failed: dict[str, str] | None = None) -> dict[str, str]:
    """Send the run's checkpoint to every target (in parallel); returns {host: why} for each host that did not
    record it. Never raises: a witness must not fail a run. ``syslog`` (the policy's ``audit.syslog``): each host
    also sends it to its local syslog; a host that could not is put in ``syslog_failed`` with why."""
    record: JSONObject = {"seq": checkpoint["seq"], "head": checkpoint["head"], "line": checkpoint.get("line"),
              "signer": checkpoint.get("signer"), "key": checkpoint.get("key"), "time": time, "run": run_id}

    def one(t: WitnessTarget) -> tuple[str, str | None, str | None]:
        try:
            reply = _call(t, "witness", {"checkpoint": record, **({"syslog": True} if syslog else {})})
        except Exception as e:  # noqa: BLE001 - any failure is a missing witness, reported, never raised
            return t.name, _error(e), None
        said = reply.get("syslog") if isinstance(reply, dict) else None
        failed = str(said.get("error")) if isinstance(said, dict) and said.get("error") else None
        return t.name, None, failed

    if not targets:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(targets)))) as pool:
        done = list(pool.map(one, targets))
    if syslog_failed is not None:
        syslog_failed.update({name: why for name, _, why in done if why is not None})
    return {name: why for name, why, _ in done if why is not None}


@dataclass
class HostWitness:
    host: str
    checkpoints: list[JSONObject] = field(default_factory=list)
    error: str | None = None
    unreadable: list[JSONObject] = field(default_factory=list)
    #: this host's own record of every run it finished (hostagent/witness.py runs.jsonl)
    runs: list[JSONObject] = field(default_factory=list)
    unreadable_count: int = 0


def read_witnesses(targets: Sequence[WitnessTarget]) -> list[HostWitness]:
    """Every target's witnessed checkpoints and its own run records (read-only); a host that cannot be read carries
    its ``error``."""

    def dicts(v: object) -> list[JSONObject]:
        return [c for c in v if isinstance(c, dict)] if isinstance(v, list) else []

    def one(t: WitnessTarget) -> HostWitness:
        try:
            reply = _call(t, "witness_read")
        except Exception as e:  # noqa: BLE001 - reported as that host's error
            return HostWitness(t.name, error=_error(e))
        bad = dicts(reply.get("unreadable"))
        count = reply.get("unreadable_count")
        return HostWitness(t.name, dicts(reply.get("checkpoints")), unreadable=bad, runs=dicts(reply.get("runs")),
                           unreadable_count=count if type(count) is int else len(bad))

    if not targets:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(targets)))) as pool:
        return list(pool.map(one, targets))


#: a witness a host received later than this many seconds after it finished the run itself is "late": the
#: controller held the checkpoint back (time enough to rewrite the log and sign it again)
LATE_AFTER = 3600.0
#: how far a host's clock may be from the controller's before the times of a run are called different
CLOCK_SKEW = 900.0


@dataclass
class WitnessResult:
    """The log against the hosts' records: ``problems`` (each names host, run, seq or field) make it altered (exit
    6); ``doubts`` (a witness late, a run a host finished never witnessed, a duplicate, a line unusable) leave it
    not proven (exit 2), and so do hosts that could not be read, when nothing else is wrong."""

    hosts: list[HostWitness]
    lines: int
    problems: list[str] = field(default_factory=list)
    checked: int = 0
    #: every witnessed checkpoint checked: (host, its record, the problem or None when the log matches it)
    findings: list[tuple[str, JSONObject, str | None]] = field(default_factory=list)
    doubts: list[str] = field(default_factory=list)
    #: every run a host finished, against the log: (host, run as the log names it, what differs, doubts)
    accounts: list[tuple[str, str, list[JSONObject], list[JSONObject]]] = field(default_factory=list)

    @property
    def unreachable(self) -> list[HostWitness]:
        return [h for h in self.hosts if h.error]

    @property
    def status(self) -> str:
        if self.problems:
            return "altered"
        if self.doubts:
            return "unproven"
        return "cannot_check" if self.unreachable else "intact"

    def to_dict(self) -> JSONObject:
        return {"status": self.status, "log_lines": self.lines, "checked": self.checked, "problems": self.problems,
                "doubts": self.doubts, "runs_compared": len(self.accounts),
                "hosts": [{"host": h.host, "checkpoints": len(h.checkpoints), "runs": len(h.runs),
                           "error": h.error, "unreadable_lines": h.unreadable,
                           "unreadable_count": h.unreadable_count} for h in self.hosts]}


def _log_lines(data: bytes) -> tuple[list[str], dict[int, JSONObject], list[JSONObject]]:
    """The hash of every complete line (index 0 is line 1), the parsed checkpoint lines by line number, and every
    event the log holds (as parsed)."""
    hashes: list[str] = []
    checkpoints: dict[int, JSONObject] = {}
    events: list[JSONObject] = []
    for n, line in enumerate(data.split(b"\n")[:-1], 1):  # the part after the last newline is no complete line
        hashes.append(hashlib.sha256(line).hexdigest())
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if not isinstance(rec, dict):
            continue
        events.append(rec)
        if rec.get("event") == "checkpoint" and isinstance(rec.get("checkpoint"), dict):
            checkpoints[n] = rec
    return hashes, checkpoints, events


def _seq_of(c: Mapping[str, object]) -> int:
    seq = c.get("seq")
    return seq if type(seq) is int else 0


def _head_of(cp: object) -> object:
    return cp.get("head") if isinstance(cp, dict) else None


def check_witnesses(data: bytes, hosts: list[HostWitness]) -> WitnessResult:
    """Check the log's bytes against every host's witnessed checkpoints."""
    hashes, cps, events = _log_lines(data)
    n = len(hashes)
    result = WitnessResult(hosts, n)
    matching = sorted({_seq_of(c) for h in hosts for c in h.checkpoints
                       if 0 < _seq_of(c) <= n and hashes[_seq_of(c) - 1] == c.get("head")})
    for h in hosts:
        for c in sorted(h.checkpoints, key=_seq_of):
            if _seq_of(c) < 1:
                continue
            result.checked += 1
            problem = _problem(hashes, cps, matching, h.host, c)
            result.findings.append((h.host, c, problem))
            if problem is not None:
                result.problems.append(problem)
    _compare_accounts(result, events)
    return result


def _problem(hashes: list[str], cps: dict[int, JSONObject], matching: list[int], host: str,
             c: Mapping[str, object]) -> str | None:
    """What is wrong with the log against one witnessed checkpoint ``c`` of ``host``; None when it matches."""
    n = len(hashes)
    seq, head, run = _seq_of(c), str(c.get("head") or ""), c.get("run") or "-"
    said = f"host {host} witnessed run {run} at seq {seq} head {head[:12]}…"
    if seq > n:
        return (f"{said}, but the log ends at seq {n}: cut off ({seq + 1 - n} line(s) at least, run {run}'s "
                f"checkpoint among them, are missing from the end)")
    if hashes[seq - 1] != head:
        good = [m for m in matching if m < seq]
        where = (f"the log was rewritten after line {good[-1]} (a head witnessed there still matches)"
                 if good else f"the log was rewritten at or before line {seq}")
        return f"{said}, the log has head {hashes[seq - 1][:12]}… at seq {seq}: {where}"
    rec = cps.get(seq + 1)
    if seq + 1 > n:
        return f"{said}, but the log ends at seq {n}, before run {run}'s checkpoint on line {seq + 1}: cut off"
    if rec is None or rec.get("run") != c.get("run") or _head_of(rec.get("checkpoint")) != head:
        return (f"{said}; the log's line {seq + 1} is not that run's checkpoint: the log was rewritten after "
                f"line {seq}")
    return None


#: a host's finish outcome for each outcome the log can give a host (a rollback the operator asked for ends
#: "restored" in the log, "rolled_back" on the host; every refusal before anything changed, "unchanged")
_OUTCOME = {"committed": "committed", "rolled_back": "rolled_back", "restored": "rolled_back",
            "needs_person": "needs_person"}


def _when(value: object) -> float | None:
    """Seconds since the epoch of a log time (ISO text) or a host time (a number)."""
    import datetime as _dt

    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    try:
        at = _dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return at.timestamp() if at.tzinfo is not None else None


def _iso(value: object) -> str:
    import datetime as _dt

    t = _when(value)
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat(timespec="seconds") if t is not None else "?"


def _log_account(events: list[JSONObject], label: str, host: str) -> JSONObject | None:
    """What the log says of ``host`` in the run ``label``: None when the log has no line of that run at all."""
    mine = [e for e in events if e.get("run") == label]
    if not mine:
        return None
    start = next((e for e in mine if e.get("event") in ("run_started", "rollback_requested", "resume_requested")),
                 None)
    sd = start.get("data") if start is not None and isinstance(start.get("data"), dict) else {}
    assert isinstance(sd, dict)
    ended = next((e for e in mine if e.get("event") == "host_finished" and e.get("host") == host), None)
    ed = ended.get("data") if ended is not None and isinstance(ended.get("data"), dict) else {}
    assert isinstance(ed, dict)
    before = next((h.get("current") for h in sd.get("hosts") or [] if isinstance(h, dict) and h.get("host") == host),
                  None) if start is not None and start.get("event") == "run_started" else None
    window = sd.get("window")
    phases = {str(e.get("phase")) for e in mine if e.get("event") == "phase_finished" and e.get("host") == host
              and e.get("outcome") == "ok"}
    first = next((e.get("time") for e in mine if e.get("host") == host and e.get("event") == "phase_started"), None)
    return {"kind": start.get("event") if start is not None else None,
            "plan": sd.get("plan") if start is not None and start.get("event") == "run_started" else None,
            "approvals": sorted(str(a.get("digest")) for a in sd.get("approvals") or [] if isinstance(a, dict))
            if start is not None and start.get("event") == "run_started" else None,
            "window": window.get("inside") if isinstance(window, dict) else None,
            "outcome": ended.get("outcome") if ended is not None else None, "finished": ended.get("time")
            if ended is not None else None, "version_after": ed.get("version"), "version_before": before,
            "phases": phases, "started": first}


def _differences(rec: JSONObject, log: JSONObject) -> list[JSONObject]:
    """Each field where the host's own record of a run and the log's lines of it differ:
    {"field", "host": what the host recorded, "log": what the log says}."""
    out: list[JSONObject] = []

    def differ(name: str, host_value: object, log_value: object) -> None:
        out.append({"field": name, "host": host_value, "log": log_value})

    told = rec.get("outcome")
    said = log.get("outcome")
    if said is None:
        differ("outcome", told, None)
    elif told is not None and _OUTCOME.get(str(said), "unchanged") != _OUTCOME.get(str(told), "unchanged"):
        differ("outcome", told, said)
    for name in ("version_after", "version_before", "plan", "window"):
        if rec.get(name) is not None and log.get(name) is not None and rec.get(name) != log.get(name):
            differ(name, rec.get(name), log.get(name))
    mine = rec.get("approvals")
    if isinstance(mine, list) and mine and log.get("approvals") is not None and sorted(map(str, mine)) != log["approvals"]:
        differ("approvals", sorted(map(str, mine)), log["approvals"])
    given = rec.get("steps")
    steps: list[object] = list(given) if isinstance(given, list) else []
    done = {str(s.get("op")) for s in steps if isinstance(s, dict) and s.get("ok")}
    phases = log.get("phases") or set()
    assert isinstance(phases, set)
    resumed = log.get("kind") == "resume_requested"  # its host's steps began with the interrupted run's
    if steps and not resumed:
        for phase in ("install", "start"):
            if (phase in done) != (phase in phases):
                differ("phases", f"{phase} {'done' if phase in done else 'not done'}",
                       f"{phase} {'done' if phase in phases else 'not done'}")
        if "rollback" in phases and "rollback" not in done:
            differ("phases", "rollback not done", "rollback done")
    host_end, log_end = _when(rec.get("finished")), _when(log.get("finished"))
    if host_end is not None and log_end is not None and abs(host_end - log_end) > CLOCK_SKEW:
        differ("finished", _iso(host_end), log.get("finished"))
    host_start, log_start = _when(rec.get("started")), _when(log.get("started"))
    if resumed:
        return out
    if host_start is not None and log_start is not None and abs(host_start - log_start) > CLOCK_SKEW + 3600 \
            or host_start is not None and log_start is not None and log_start > host_start + CLOCK_SKEW:
        differ("started", _iso(host_start), log.get("started"))
    return out


#: the fields of a host's own run record, in Chinese
FIELDS_ZH = {"outcome": "结果", "version_after": "之后的版本", "version_before": "之前的版本", "plan": "计划摘要",
             "window": "在维护窗口内", "approvals": "批准摘要", "phases": "执行的阶段", "finished": "结束时间",
             "started": "开始时间", "run": "运行"}


def account_texts(a: Mapping[str, object], lang: str = "en") -> list[str]:
    """One host's own record of a run against the log (an item of case_witnesses' ``accounts``), as plain lines:
    each field that differs (ALTERED), each doubt, or that it matches."""
    zh = lang == "zh"
    host = a.get("host")
    out: list[str] = []
    diffs = a.get("differences") if isinstance(a.get("differences"), list) else []
    doubts = a.get("doubts") if isinstance(a.get("doubts"), list) else []
    assert isinstance(diffs, list) and isinstance(doubts, list)
    for d in diffs:
        field_ = str(d.get("field"))
        if zh:
            out.append(f"主机 {host} 自己的运行记录与日志不符——{FIELDS_ZH.get(field_, field_)}：主机记为 {d.get('host')}，"
                       f"日志为 {d.get('log')}（已被篡改）")
        else:
            out.append(f"host {host}'s own record of the run differs from the log — {field_}: {d.get('host')} on "
                       f"the host, {d.get('log')} in the log (ALTERED)")
    out += [doubt_text(d, lang) for d in doubts if isinstance(d, dict)]
    if not diffs and not doubts:
        out.append(f"主机 {host} 自己的运行记录（结果、版本、计划、批准、窗口、步骤、时间）与日志相符" if zh else
                   f"host {host}'s own record of the run (outcome, versions, plan, approvals, window, steps, "
                   "times) agrees with the log")
    return out


def doubt_text(d: Mapping[str, object], lang: str = "en") -> str:
    """A doubt about a run a host finished (``kind`` unwitnessed, late or duplicate), in English or Chinese."""
    host, run, when, kind = d.get("host"), d.get("run"), d.get("finished"), d.get("kind")
    if lang == "zh":
        if kind == "late":
            return (f"主机 {host} 在自己结束运行 {run} {d.get('seconds')} 秒后才收到其检查点（超过 {int(LATE_AFTER)} "
                    "秒）：迟到的见证")
        if kind == "duplicate":
            return f"主机 {host} 保存了运行 {run} 的 {d.get('count')} 个见证：重复"
        return f"主机 {host} 于 {when} 结束了运行 {run}，但没有保存其检查点的见证：未见证"
    if kind == "late":
        return (f"host {host} received the checkpoint of run {run} {d.get('seconds')} s after it finished the run "
                f"(more than {int(LATE_AFTER)} s): late")
    if kind == "duplicate":
        return f"host {host} keeps {d.get('count')} witnesses of run {run}: duplicate"
    return f"host {host} finished run {run} at {when} but keeps no witness of its checkpoint: unwitnessed"


def _compare_accounts(result: WitnessResult, events: list[JSONObject]) -> None:
    """Every run a host finished (its own record) against the log: the run missing from the log, or a field of it
    different, is a problem; a run the host finished with no witness, or a witness it received late, or twice, is
    a doubt. Lines of a host's record it could not use are a doubt too."""
    witnessed_wrong = {(host, c.get("run")) for host, c, problem in result.findings if problem is not None}
    for h in result.hosts:
        if h.error:
            continue
        if h.unreadable_count:
            result.doubts.append(f"host {h.host}: {h.unreadable_count} line(s) of its record could not be used "
                                 "(not a witness or run record this version writes)")
        seen: set[str] = set()
        for rec in h.runs:
            label = str(rec.get("as") or rec.get("run") or "")
            if not label or label in seen:  # a finish retried: the first record is the run's
                continue
            seen.add(label)
            log = _log_account(events, label, h.host)
            when = _iso(rec.get("finished"))
            diffs: list[JSONObject] = []
            doubts: list[JSONObject] = []
            if log is None:
                if (h.host, label) not in witnessed_wrong:  # said once: its witness's problem names it already
                    result.problems.append(
                        f"host {h.host} finished run {label} at {when} ({rec.get('outcome')}), but the log has no "
                        "line of that run: cut off or removed")
                diffs.append({"field": "run", "host": label, "log": None})
            else:
                diffs = _differences(rec, log)
                for d in diffs:
                    result.problems.append(
                        f"host {h.host}'s own record of run {label} differs from the log: {d['field']} is "
                        f"{d['host']} on the host, {d['log']} in the log: ALTERED")
            wits = [c for c in h.checkpoints if c.get("run") == label]
            base = {"host": h.host, "run": label, "finished": when}
            if not wits:
                doubts.append({**base, "kind": "unwitnessed"})
            else:
                if len(wits) > 1:
                    doubts.append({**base, "kind": "duplicate", "count": len(wits)})
                got, end = _when(wits[0].get("witnessed")), _when(rec.get("finished"))
                if got is not None and end is not None and got - end > LATE_AFTER:
                    doubts.append({**base, "kind": "late", "seconds": int(got - end)})
            for d in doubts:
                d["text"] = doubt_text(d)
            result.doubts += [str(d["text"]) for d in doubts]
            result.accounts.append((h.host, label, diffs, doubts))


def case_witnesses(result: WitnessResult, run: str, hosts: Sequence[str]) -> JSONObject:
    """The witnesses of one run for its case file (``audit case RUN --witness``): every host that keeps the run's
    checkpoint and whether the log matches it, the hosts that could not be read, and the run's hosts (of those
    read) that keep no record of it."""
    kept: list[JSONObject] = [
        {"host": host, "seq": c.get("seq"), "head": c.get("head"), "signer": c.get("signer"), "key": c.get("key"),
         "time": c.get("time"), "matches": problem is None, "problem": problem}
        for host, c, problem in result.findings if c.get("run") == run]
    keeping = {str(k["host"]) for k in kept}
    read = {h.host for h in result.hosts if not h.error}
    accounts: list[JSONObject] = [{"host": host, "differences": diffs, "doubts": doubts}
                                  for host, label, diffs, doubts in result.accounts if label == run]
    status = ("altered" if any(not k["matches"] for k in kept) or any(a["differences"] for a in accounts) else
              "unproven" if any(a["doubts"] for a in accounts) else
              "cannot_check" if not kept and any(h.error for h in result.hosts) else
              "intact" if kept else "none")
    return {"status": status, "hosts": kept, "accounts": accounts,
            "unreadable": [{"host": h.host, "error": h.error} for h in result.hosts if h.error],
            "not_kept": [h for h in hosts if h in read and h not in keeping]}
