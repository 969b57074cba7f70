"""The read-only check of a plan against its hosts: what ``run --dry-run`` and ``plan show PLAN --check`` do.

Per host it connects (the host key is verified exactly as a run would), asks the agent's read-only ``facts``
and compares them with the plan: the version the plan expects, the lock, free disk for the package, and
whether the package is on the host already (its sha256 is the name it is kept under). It also lists what a
run would do there: the exact stop and start commands, the probes, and the order of the hosts (canary, then
batches). It changes nothing on any host: no lock is taken, nothing is uploaded, nothing is written.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .errors import TransportError
from .shapes import PlanHost

if TYPE_CHECKING:
    from ..fleet.transport.base import Transport

__all__ = ["HostCheck", "check_hosts", "waves"]


@dataclass
class HostCheck:
    host: str
    reachable: bool
    problems: list[str] = field(default_factory=list)
    facts: dict[str, object] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.reachable and not self.problems

    def to_dict(self) -> dict[str, object]:
        return {"host": self.host, "ok": self.ok, "reachable": self.reachable, "problems": self.problems,
                "error": self.error, "facts": self.facts}


def waves(names: list[str], canary: int, batch: int | None) -> list[list[str]]:
    """The order a run takes the hosts in: the canary alone first, then batches (all at once by default)."""
    rest = list(names)
    out = []
    if canary:
        out.append(rest[:canary])
        rest = rest[canary:]
    size = batch or len(rest) or 1
    out += [rest[i:i + size] for i in range(0, len(rest), size)]
    return [w for w in out if w]


def _check_one(h: PlanHost, connect: Callable[[PlanHost], Transport]) -> HostCheck:
    from ..fleet.transport import AgentClient

    spec = h["playbook"]["spec"]
    pkg: Mapping[str, Any] = h.get("package") or {}
    try:
        transport = connect(h)
        try:
            facts = AgentClient(transport).call(
                "facts", install_dir=h["install_dir"], state_dir=h.get("state_dir"), version_source=spec["version"],
                check_drift=False, preserve=[], packages=[pkg["sha256"]] if pkg.get("sha256") else [], timeout=120)
        finally:
            transport.close()
    except TransportError as e:
        return HostCheck(h["name"], False, [f"unreachable: {e}"], error=str(e))
    except Exception as e:  # noqa: BLE001 - an agent failure is this host's problem, the others are still checked
        return HostCheck(h["name"], False, [f"cannot read the host: {e}"], error=str(e))
    check = HostCheck(h["name"], True, facts={"version": facts.get("version"), "lock": facts.get("lock"),
                                              "free_bytes": facts.get("free_bytes"),
                                              "package_on_host": bool(facts.get("cached"))})
    if facts.get("version") != h["current"]:
        check.problems.append(f"runs {facts.get('version')!r} ({facts.get('version_error') or 'read now'}), the "
                              f"plan expects {h['current']!r}: make a new plan")
    lock = facts.get("lock")
    if lock:
        check.problems.append(f"locked by run {lock.get('run')} ({lock.get('user')}@{lock.get('controller')}): "
                              "upgrader status shows what resolves it")
    if pkg:
        need = int(pkg["size"]) * 2 + int(pkg.get("limits", {}).get("unpacked_bytes", 0))
        if int(facts.get("free_bytes") or 0) < need:
            check.problems.append(f"only {int(facts.get('free_bytes') or 0) >> 20} MiB free beside the install, "
                                  f"{need >> 20} MiB needed")
    return check


def check_hosts(hosts: list[PlanHost], connect: Callable[[PlanHost], Transport],
                forks: int = 8) -> list[HostCheck]:
    """Read every host of the plan (``hosts``: the plan's host entries), read-only, in parallel."""
    with ThreadPoolExecutor(max_workers=max(1, min(forks, len(hosts)))) as pool:
        return list(pool.map(lambda h: _check_one(h, connect), hosts))


def commands(h: PlanHost) -> list[tuple[str, str]]:
    """(what, exact text) a run would execute or probe on this host, from its rendered playbook."""
    spec = h["playbook"]["spec"]
    out = [("stop", str(spec["stop"].get("command"))), ("start", str(spec["start"].get("command")))]
    for p in spec["observe"]["probes"]:
        out.append((f"probe {p.get('name') or p['type']}", ", ".join(f"{k}={v}" for k, v in p.items() if k != "name")))
    for which, hooks in (spec.get("hooks") or {}).items():
        for hook in hooks:
            out.append((f"hook {which}", str(hook["command"])))
    return out
