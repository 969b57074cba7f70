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
                   time: str) -> dict[str, str]:
    """Send the run's checkpoint to every target (in parallel); returns {host: why} for each host that did not
    record it. Never raises: a witness must not fail a run."""
    record: JSONObject = {"seq": checkpoint["seq"], "head": checkpoint["head"], "line": checkpoint.get("line"),
              "signer": checkpoint.get("signer"), "key": checkpoint.get("key"), "time": time, "run": run_id}

    def one(t: WitnessTarget) -> tuple[str, str | None]:
        try:
            _call(t, "witness", {"checkpoint": record})
        except Exception as e:  # noqa: BLE001 - any failure is a missing witness, reported, never raised
            return t.name, _error(e)
        return t.name, None

    if not targets:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(targets)))) as pool:
        done = list(pool.map(one, targets))
    return {name: why for name, why in done if why is not None}


@dataclass
class HostWitness:
    host: str
    checkpoints: list[JSONObject] = field(default_factory=list)
    error: str | None = None
    unreadable: list[JSONObject] = field(default_factory=list)


def read_witnesses(targets: Sequence[WitnessTarget]) -> list[HostWitness]:
    """Every target's witnessed checkpoints (read-only); a host that cannot be read carries its ``error``."""

    def one(t: WitnessTarget) -> HostWitness:
        try:
            reply = _call(t, "witness_read")
        except Exception as e:  # noqa: BLE001 - reported as that host's error
            return HostWitness(t.name, error=_error(e))
        found = reply.get("checkpoints")
        bad = reply.get("unreadable")
        return HostWitness(t.name, [c for c in found if isinstance(c, dict)] if isinstance(found, list) else [],
                           unreadable=[b for b in bad if isinstance(b, dict)] if isinstance(bad, list) else [])

    if not targets:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(targets)))) as pool:
        return list(pool.map(one, targets))


@dataclass
class WitnessResult:
    """The log against the hosts' records: ``problems`` (each names host, run, seq) make it altered (exit 6);
    hosts that could not be read leave it unchecked (exit 2) when nothing else is wrong."""

    hosts: list[HostWitness]
    lines: int
    problems: list[str] = field(default_factory=list)
    checked: int = 0
    #: every witnessed checkpoint checked: (host, its record, the problem or None when the log matches it)
    findings: list[tuple[str, JSONObject, str | None]] = field(default_factory=list)

    @property
    def unreachable(self) -> list[HostWitness]:
        return [h for h in self.hosts if h.error]

    @property
    def status(self) -> str:
        if self.problems:
            return "altered"
        return "cannot_check" if self.unreachable else "intact"

    def to_dict(self) -> JSONObject:
        return {"status": self.status, "log_lines": self.lines, "checked": self.checked, "problems": self.problems,
                "hosts": [{"host": h.host, "checkpoints": len(h.checkpoints), "error": h.error,
                           "unreadable_lines": h.unreadable} for h in self.hosts]}


def _log_lines(data: bytes) -> tuple[list[str], dict[int, JSONObject]]:
    """The hash of every complete line (index 0 is line 1) and the parsed checkpoint lines by line number."""
    hashes: list[str] = []
    checkpoints: dict[int, JSONObject] = {}
    for n, line in enumerate(data.split(b"\n")[:-1], 1):  # the part after the last newline is no complete line
        hashes.append(hashlib.sha256(line).hexdigest())
        if b'"checkpoint"' in line:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and rec.get("event") == "checkpoint" and isinstance(rec.get("checkpoint"), dict):
                checkpoints[n] = rec
    return hashes, checkpoints


def _seq_of(c: Mapping[str, object]) -> int:
    seq = c.get("seq")
    return seq if type(seq) is int else 0


def _head_of(cp: object) -> object:
    return cp.get("head") if isinstance(cp, dict) else None


def check_witnesses(data: bytes, hosts: list[HostWitness]) -> WitnessResult:
    """Check the log's bytes against every host's witnessed checkpoints."""
    hashes, cps = _log_lines(data)
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
    status = ("altered" if any(not k["matches"] for k in kept) else
              "cannot_check" if not kept and any(h.error for h in result.hosts) else
              "intact" if kept else "none")
    return {"status": status, "hosts": kept,
            "unreadable": [{"host": h.host, "error": h.error} for h in result.hosts if h.error],
            "not_kept": [h for h in hosts if h in read and h not in keeping]}
