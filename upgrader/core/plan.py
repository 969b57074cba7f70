"""Plans: what a run will do on each host, decided before anything is touched. Pure.

``build_plan`` takes the hosts, their rendered playbooks, the facts read from each host, the
catalog entries and the policy, and returns a ``Plan``: per host the current and target version,
the package, the policy decision with every rule's reason, the preflight checks and the phases.
Its digest is the sha256 of its canonical JSON; an approval signs that digest. No I/O here: the
caller gathers facts and reads files.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence, cast

from .errors import ApprovalRefused, InputError
from .shapes import (AgentReply, DecisionData, JSONObject, ObserveSpec, PlanCheck, PlanData, PlanHost,
                     PlanPackage, PlaybookSpec, ProbeResult, VarRead)

__all__ = ["Plan", "HostInput", "build_plan", "canonical_json", "readable_json", "load_plan", "plan_digest", "PHASES",
           "check_consistency", "install_key"]

PLAN_FORMAT = 1
PHASES = ("preflight", "backup", "stop", "install", "start", "observe")
_PHASE_TEXT = {
    "preflight": "policy, package sha256, free disk, host lock; nothing is touched before all pass",
    "backup": "stage the new tree and snapshot the product files (sha256-verified) while the service still runs",
    "stop": "run the stop command, wait until the process and ports are gone, escalate to signals",
    "install": "swap the staged tree in and carry the preserved paths across (renames only)",
    "start": "run the start command",
    "observe": "every probe must pass, then keep passing for the observation window; "
               "on failure: roll back, restart the old version and observe it",
}


def canonical_json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _json_key(key: object) -> str:
    """A dict key as json.dumps writes it (JSON keys are strings: True -> "true", 1 -> "1", None -> "null")."""
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, (bool, int, float)):
        return json.dumps(key)
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


def readable_json(obj: object, default: Callable[[object], object] | None = None) -> str:
    """JSON for files people open: sorted keys, one top-level key a line, and one item a line of the lists
    under them (a plan or a result reads and diffs host by host). Every value is written by the C encoder;
    ``indent=2`` runs the pure-Python one, which took a tenth of a second for a 50-host plan."""
    def enc(value: object) -> str:
        return json.dumps(value, sort_keys=True, ensure_ascii=False, default=default)

    if not isinstance(obj, dict) or not obj:
        return enc(obj) + "\n"
    lines = []
    named = {_json_key(key): value for key, value in obj.items()}
    for key in sorted(named):
        value = named[key]
        if isinstance(value, list) and value:
            text = "[\n" + ",\n".join("    " + enc(item) for item in value) + "\n  ]"
        else:
            text = enc(value)
        lines.append(f"  {enc(key)}: {text}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def plan_digest(data: Mapping[str, object]) -> str:
    """The digest an approval signs: sha256 of the plan's canonical JSON without its ``signature``."""
    return hashlib.sha256(canonical_json({k: v for k, v in data.items() if k != "signature"})).hexdigest()


@dataclass(frozen=True)
class HostInput:
    """Everything the planner needs to know about one host (gathered by the caller)."""

    host: JSONObject                  # Host.describe()
    state_dir: str | None
    playbook: dict[str, str]          # {"name", "path", "sha256"}
    spec: PlaybookSpec                # playbook rendered for the target version
    rollback_observe: ObserveSpec     # observe spec rendered for the current version
    facts: AgentReply                 # agent facts of the host
    package: PlanPackage | None       # catalog entry + package.yaml's remove list, or None
    decision: DecisionData            # version_policy Decision.to_dict()
    current: str | None
    target: str
    vars_read: dict[str, VarRead] = field(default_factory=dict)  # config_vars: what the configuration said
    proof: list[ProbeResult] = field(default_factory=list)  # probe_proof: probes run on the running version


@dataclass(frozen=True)
class Plan:
    data: PlanData

    @property
    def digest(self) -> str:
        """sha256 of the canonical JSON, the requester's signature (of this digest) left out."""
        return plan_digest(self.data)

    @property
    def hosts(self) -> list[PlanHost]:
        return list(self.data["hosts"])

    @property
    def allowed(self) -> bool:
        return bool(self.data["allowed"])

    def refused_hosts(self) -> list[PlanHost]:
        return [h for h in self.hosts if not h["allowed"]]

    def to_json(self) -> str:
        return readable_json(self.data)


def _checks(h: HostInput, policy_rules: Mapping[str, object]) -> list[PlanCheck]:
    facts = h.facts
    out: list[PlanCheck] = []
    if facts.get("version_error"):
        out.append({"check": "installed_version", "status": "fail", "reason": str(facts["version_error"])})
    drift = facts.get("drift") or []
    if not facts.get("baseline"):
        out.append({"check": "manual_changes", "status": "pass",
                    "reason": "no manifest of an earlier install by upgrader yet; this run records one"})
    elif drift:
        mode = str(policy_rules.get("manual_changes", "warn"))
        listed = ", ".join(f"{d['path']} ({d['change']})" for d in drift[:5])
        total = int(facts.get("drift_count", len(drift)))
        more = f" and {total - 5} more" if total > 5 else ""
        out.append({"check": "manual_changes", "status": "fail" if mode == "block" else "warn",
                    "reason": f"product files changed by hand since the last install: {listed}{more}; "
                              "the upgrade would overwrite them (a local hotfix?)"
                              + ("; the policy blocks this" if mode == "block" else "")})
    else:
        out.append({"check": "manual_changes", "status": "pass", "reason": "product files match the last install"})
    lock = facts.get("lock")
    if lock:
        out.append({"check": "lock", "status": "warn",
                    "reason": f"host is locked by run {lock.get('run')} ({lock.get('user')}@{lock.get('controller')})"})
    if h.package:
        need = int(h.package.get("size", 0)) * 2 + int(h.package.get("limits", {}).get("unpacked_bytes", 0))
        need += int(h.spec.get("preflight", {}).get("min_free", 0)) << 20
        free = int(facts.get("free_bytes", 0))
        out.append({"check": "free_disk", "status": "pass" if free >= need else "fail",
                    "reason": f"{free >> 20} MiB free, {need >> 20} MiB needed for the package and staging"})
    if h.proof:
        judged = [p for p in h.proof if not p.get("skipped")]
        later = len([p for p in h.proof if p.get("skipped") and p.get("type") == "log"])
        out.append({"check": "health_checks", "status": "pass",
                    "reason": f"{len(judged)} probe(s) pass on the running {h.current}: "
                              + ", ".join(f"{p['probe']} ({p['detail']})" for p in judged)
                              + (f"; {later} log probe(s) judged after start" if later else "")
                              + "".join(f"; {p['probe']}: {p['skipped']}" for p in h.proof
                                        if p.get("skipped") and p.get("type") == "command")})
    trust = facts.get("host_trust")
    if isinstance(trust, dict):  # the host's own trust root (hostagent/hosttrust.py); a refused one fails here already
        out.append({"check": "host_trust_root", "status": "pass" if trust.get("ok") else "fail",
                    "reason": str(trust.get("text"))})
    names = facts.get("non_ascii") or []
    if names:
        out.append({"check": "non_ascii_names", "status": "fail", "reason": non_ascii_reason(names)})
    return out


def non_ascii_reason(names: list[str]) -> str:
    """Why a host whose playbook's ``preflight.ascii_dirs`` hold non-ASCII names is refused, naming them."""
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    return ("non-ASCII names in application folders, which break the vendor's patch tool: " + ", ".join(names[:5])
            + more + "; rename them to ASCII names (e.g. pinyin) before upgrading")


def build_plan(inputs: list[HostInput], *, target: str, catalog: Mapping[str, object],
               policy: Mapping[str, object], requester: Mapping[str, object], created: _dt.datetime,
               window: Mapping[str, object] | None = None) -> Plan:
    policy_rules = cast(Mapping[str, object], policy.get("rules", {}))
    hosts = []
    for h in inputs:
        checks = _checks(h, policy_rules)
        allowed = bool(h.decision.get("allowed")) and h.package is not None and \
            not any(c["status"] == "fail" for c in checks)
        hosts.append({
            **h.host,
            "state_dir": h.state_dir,
            "current": h.current,
            "target": h.target,
            "package": h.package,
            "playbook": {**h.playbook, "spec": h.spec, "rollback_observe": h.rollback_observe},
            "decision": h.decision,
            "checks": checks,
            "allowed": allowed,
            "phases": [{"phase": p, "does": _PHASE_TEXT[p]} for p in PHASES],
            **({"vars_read": h.vars_read} if h.vars_read else {}),
        })
    data = {
        "format": PLAN_FORMAT,
        "created": created.isoformat(timespec="seconds"),
        "requester": dict(requester),
        "target": target,
        "catalog": dict(catalog),
        "policy": {"source": policy.get("source"), "sha256": policy.get("digest"),
                   # the policy's identity: its file and every trust file it names (source and sha256)
                   "identity": policy.get("identity"), "trust_files": list(cast(list[object],
                                                                                 policy.get("trust_files") or [])),
                   "manual_changes": str(policy_rules.get("manual_changes", "warn"))},
        "window": dict(window) if window else None,
        "hosts": hosts,
        "allowed": bool(hosts) and all(x["allowed"] for x in hosts),
    }
    return Plan(cast(PlanData, data))


_STR, _OPT_STR = (str,), (str, type(None))
#: every key a plan may hold, with its type: a plan is checked whole before anything uses it
_TOP = {"format": (int,), "created": _STR, "requester": (dict,), "target": _STR, "catalog": (dict,),
        "policy": (dict,), "window": (dict, type(None)), "hosts": (list,), "allowed": (bool,), "signature": _STR}
_HOST = {"name": _STR, "address": _STR, "port": (int,), "user": _OPT_STR, "install_dir": _STR, "product": _STR,
         "playbook": (dict,), "maintenance_until": _OPT_STR, "groups": (list,), "key": _OPT_STR,
         "host_key": _OPT_STR, "known_hosts": _OPT_STR, "state_dir": _OPT_STR, "current": _OPT_STR,
         "target": _STR, "package": (dict, type(None)), "decision": (dict,), "checks": (list,), "allowed": (bool,),
         "phases": (list,), "vars": (dict,), "vars_read": (dict,), "identity": (dict, type(None))}
_REQUIRED_HOST = ("name", "address", "install_dir", "product", "current", "target", "playbook", "decision",
                  "allowed")


def _check_keys(d: Mapping[str, object], schema: dict[str, tuple[type, ...]], p: Path, where: str) -> None:
    for key, value in d.items():
        if key not in schema:
            raise InputError(f"unknown key {key!r}", path=str(p), key=f"{where}{key}",
                             hint="a plan is written by 'upgrader plan'; make it again rather than editing it")
        kinds = schema[key]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            want = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
            raise InputError(f"expected {want}, got {type(value).__name__}", path=str(p), key=f"{where}{key}",
                             hint="make the plan again with 'upgrader plan'")


def load_plan(path: str | Path) -> Plan:
    """Read a plan and check its whole shape (keys and types), naming the first bad key."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise InputError("plan file not found", path=str(p), hint="make one with 'upgrader plan ... -o PLAN'") from e
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"not a valid plan (JSON): {e}", path=str(p)) from e
    except OSError as e:
        raise InputError(f"cannot read the plan: {e.strerror}", path=str(p)) from e
    if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT or not isinstance(data.get("hosts"), list):
        raise InputError("not an upgrader plan (format 1 with hosts)", path=str(p))
    _check_keys(data, _TOP, p, "")
    for i, h in enumerate(data["hosts"]):
        if not isinstance(h, dict):
            raise InputError("a host entry must be a mapping", path=str(p), key=f"hosts[{i}]")
        for key in _REQUIRED_HOST:
            if key not in h:
                raise InputError(f"host entry {i} lacks {key!r}", path=str(p), key=f"hosts[{i}]",
                                 hint="make the plan again with 'upgrader plan'")
        _check_keys(h, _HOST, p, f"hosts[{i}].")
    return Plan(cast(PlanData, data))  # every key and its type checked above


def install_key(h: Mapping[str, object]) -> tuple[str, str]:
    """What names one install on one machine: the address (case folded; every loopback, unspecified or IPv4-mapped
    loopback address and this machine's own name are this machine) and the normalised install_dir (``//opt/x``,
    ``/opt/./x/`` are ``/opt/x``). The host agent's lock and ledger are keyed by the install, never by the host's
    name, a label the requester picks. A link to the install is caught by ``same_installs``."""
    import ipaddress
    import posixpath
    import socket

    address = str(h.get("address") or "").strip().lower().rstrip(".").strip("[]")
    try:
        ip = ipaddress.ip_address(address)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        here = ip.is_loopback or ip.is_unspecified
    except ValueError:
        names = {socket.gethostname().lower(), socket.getfqdn().lower()}
        here = address in ("local", "localhost", "localhost.localdomain") or address in names
    install = posixpath.normpath("/" + str(h.get("install_dir") or "/").lstrip("/"))
    return ("this machine" if here else address), install


def same_installs(entries: Sequence[tuple[str, Mapping[str, object] | None]]) -> list[str]:
    """One line per entry that is the same install as an earlier one by what its host agent read: the same machine
    identity (machine-id, else boot id) and the same install dir (st_dev, st_ino, a link followed). ``entries``:
    (name, the facts' ``identity``) per plan entry."""
    seen: dict[tuple[str, str], str] = {}
    out = []
    for name, ident in entries:
        machine, install = (ident or {}).get("machine"), (ident or {}).get("install")
        if not machine or not isinstance(install, list):
            continue
        key = (str(machine), json.dumps(install))
        if key in seen:
            out.append(f"{name} is the same install as {seen[key]}: machine {machine}, install dir (st_dev, st_ino) "
                       f"{tuple(install)}")
        else:
            seen[key] = name
    return out


def check_consistency(hosts: Sequence[Mapping[str, object]], target: str, where: str) -> None:
    """ApprovalRefused (exit 4) for a plan that contradicts itself: two entries for one install (same address and
    install_dir under other names), or an entry whose target is not the plan's target. ``upgrader plan`` never
    writes either: such a plan was edited."""
    seen: dict[tuple[str, str], str] = {}
    problems: list[str] = []
    for i, h in enumerate(hosts):
        name = str(h.get("name"))
        key = install_key(h)
        if key in seen:
            problems.append(f"hosts[{i}] ({name}) is the same install as {seen[key]}: {key[0]} {key[1]}")
        else:
            seen[key] = name
        if str(h.get("target")) != target:
            problems.append(f"hosts[{i}] ({name}) goes to {h.get('target')}, the plan's target is {target}")
    if problems:
        raise ApprovalRefused(f"{where}: the plan contradicts itself (the plan was edited), nothing was changed:\n  "
                              + "\n  ".join(problems),
                              hint="make and approve a new plan with 'upgrader plan' (one entry per install, one "
                                   "target)")
