"""Health checks proven on the running old version, before anything is stopped.

A probe that fails against the version that runs now is not a health check: after the upgrade it
would fail the same way, and a good upgrade would be rolled back (or a rollback would "fail" on a
healthy old version). So ``plan``, ``run`` (the engine's preflight) and ``guide`` run every observe
probe once, rendered for the running version (``rollback_observe``: e.g. an HTTP body that names
the version expects the old one), and refuse with exit 2 when one fails, naming the probe and the
likely fix (a wrong port: what the configuration says, see ``config_vars``). Log probes are judged
on what a newly started version writes, so here only their file's place is checked (the agent says
so in the probe's ``skipped``).

``prove`` asks the agent (``prove``, read-only); ``failures`` and ``likely_fix`` are pure. Words
come from the guide's catalog (``guide_messages``), English in the error's message, the
operator's language on the guide's screen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping, Sequence, cast

from .errors import InputError, TransportError
from .shapes import AgentCall, AgentReply, ObserveSpec, ProbeResult

if TYPE_CHECKING:
    from ..fleet.transport.base import AgentClient

__all__ = ["ProbeUnproven", "Failure", "prove", "agent_call", "failures", "likely_fix"]


@dataclass(frozen=True)
class Failure:
    """One probe that fails on the running version, and the likely fix as a catalog key with its fields."""

    probe: str
    kind: str
    detail: str
    fix: str
    fields: dict[str, object] = field(default_factory=dict)


class ProbeUnproven(InputError):
    """Health checks that fail on the running version (exit 2): nothing was stopped or changed."""

    def __init__(self, host: str, version: str | None, found: list[Failure]) -> None:
        self.host, self.version, self.failures = host, version, found
        text, fixes = self.lines("en")
        super().__init__(f"{host}: {text}", hint="likely fix: " + "; ".join(fixes))

    def lines(self, lang: str) -> tuple[str, list[str]]:
        """(what failed, the likely fixes without repeats), in ``lang`` (guide_messages)."""
        from .guide_texts import Messages

        t = Messages(lang)
        probes = ", ".join(f"'{f.probe}' ({f.detail})" for f in self.failures)
        fixes: list[str] = []
        for f in self.failures:
            fix = t.plain(f.fix, **f.fields)
            if fix not in fixes:
                fixes.append(fix)
        return t.plain("probe_unproven", probe=probes, version=self.version or "?"), fixes


def agent_call(agent: AgentClient, install_dir: str, state_dir: str | None) -> AgentCall:
    """``call(op, **request)`` on an ``AgentClient`` for one install (what ``prove`` needs)."""
    def call(op: str, timeout: float | None = None, **req: object) -> AgentReply:
        return cast(AgentReply, dict(agent.call(op, timeout=timeout, install_dir=install_dir, state_dir=state_dir,
                                                **req)))
    return call


def prove(call: AgentCall, *, host: str, observe: ObserveSpec, version: str | None,
          vars_read: Mapping[str, Mapping[str, object]] | None = None, before_stop: bool = False) -> list[ProbeResult]:
    """Run each probe once on the running version; the results, or ``ProbeUnproven`` when one fails.
    ``call(op, timeout=..., **request)`` reaches the install's agent (``agent_call``, or the engine's retrying call).
    ``before_stop`` (a run's preflight): a pid file naming a process that is not the service's own fails too, since
    the playbook's stop command would signal it (a plan's review only says so)."""
    from ..fleet.transport.base import AgentFailure

    probes = list(observe.get("probes") or [])
    try:
        res = call("prove", probes=probes, timeout=120, **({"before_stop": True} if before_stop else {}))
    except AgentFailure as e:
        from .host_paths import refuse_agent_unsafe

        if e.kind in ("host_trust", "host_policy"):  # the host's own trust root refused: its word, not a transport fault
            raise
        refuse_agent_unsafe(e, host=host)
        raise TransportError(f"cannot check the health probes on the host: {e.message}", host=host) from e
    results = list(res.get("probes") or [])
    found = failures(probes, results, vars_read or {})
    if found:
        raise ProbeUnproven(host, version, found)
    return results


def failures(probes: Sequence[Mapping[str, object]], results: Sequence[Mapping[str, object]],
             vars_read: Mapping[str, Mapping[str, object]]) -> list[Failure]:
    """The failed results, each with its likely fix (pure)."""
    out = []
    bad = [(p, r) for p, r in zip(probes, results) if not r.get("ok")]
    judged = [p for p, r in zip(probes, results) if not r.get("skipped")]
    if bad and len(bad) == len(judged) and any(p.get("type") == "process" for p, _ in bad):
        # nothing answers at all and the process is gone: the service is down, not misconfigured
        return [Failure(str(r.get("probe")), str(p.get("type")), str(r.get("detail")), "fix_down", {})
                for p, r in bad]
    for p, r in zip(probes, results):
        if r.get("ok"):
            continue
        fix, fields = likely_fix(p, vars_read, str(r.get("detail") or ""))
        out.append(Failure(str(r.get("probe")), str(p.get("type")), str(r.get("detail")), fix, fields))
    return out


def _uses(probe: Mapping[str, object], value: str) -> bool:
    """Does this rendered probe use ``value`` where a variable would put it (the port, a URL's port, a word)?"""
    import re

    v = re.escape(value)
    return (str(probe.get("port")) == value or str(probe.get("host")) == value
            or bool(re.search(rf":{v}(?=[/?#]|$)|//{v}(?=[:/]|$)", str(probe.get("url") or "")))
            or bool(re.search(rf"(?<![\w.]){v}(?![\w.])", str(probe.get("command") or ""))))


def likely_fix(probe: Mapping[str, object], vars_read: Mapping[str, Mapping[str, object]],
               detail: str = "") -> tuple[str, dict[str, object]]:
    """The catalog key of the likely fix for a failing probe, and its fields (pure)."""
    kind = probe.get("type")
    if kind == "http" and detail and not detail.startswith("http probe:"):
        return "fix_http", {"url": probe.get("url")}  # it answered: the port is right, the expectation is not
    if kind == "process":
        if detail.startswith("no pid file"):  # the service may well run: nothing says which process it is
            return "fix_pid_file", {"pid_file": probe.get("pid_file")}
        if "NOT the service's own" in detail:  # the agent's foreign_process: the pid names someone else's process
            return "fix_foreign_pid", {"pid_file": probe.get("pid_file")}
        return "fix_process", {"pid_file": probe.get("pid_file")}
    if kind in ("tcp", "http", "command"):
        for name, r in sorted(vars_read.items()):
            used = str(r.get("value_used"))
            if not used or used == "None" or not _uses(probe, used):
                continue
            where = f"{r.get('file')}" + (f":{r['line']}" if r.get("line") else "")
            if "value" in r and not r.get("used") and str(r["value"]) != used:
                return "fix_explicit", {"name": name, "value": r["value"], "used": used, "file": where}
            if "value" in r:
                return "fix_config", {"name": name, "value": r["value"], "file": where}
            return "fix_default", {"name": name, "used": used, "file": r.get("file"), "error": r.get("error")}
        if kind in ("tcp", "http") and not vars_read:
            return "fix_port", {}
        if kind == "http":
            return "fix_no_answer", {"url": probe.get("url")}
    if kind == "log":
        return "fix_log", {"file": probe.get("file")}
    return "fix_other", {}
