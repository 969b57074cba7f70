"""What an approver reviews: everything a plan will do, in full. Pure (no I/O).

``plan_review`` turns a plan into the review that ``upgrader plan show`` prints and ``upgrader
approve`` prints before it signs: who asked (and with which key), the catalog (signer, serial,
sha256), the policy (source, digest, identity and
every trust file it names with its source and sha256), the service window, and per host the versions, the package
(file and full sha256), whether the host confirmed the product (NOT CONFIRMED: the inventory's word), every
rule's decision and check, and every command the run may execute on
the host, rendered as it will run (version read, stop, start, hooks, command probes, and the
rollback's start and probes).
"""

from __future__ import annotations

from typing import Any, Mapping

from .shapes import PlanData, PlanHost, ProbeSpec, ProcessSpec

__all__ = ["plan_review", "host_commands"]


def host_commands(h: PlanHost) -> list[dict[str, object]]:
    """Every command the run may execute on host ``h``, in the order a run (and its rollback) reaches them."""
    spec = h["playbook"].get("spec") or {}
    out: list[dict[str, Any]] = []

    def add(when: str, command: object, timeout: object = None) -> None:
        if command:
            out.append({"when": when, "command": str(command), "timeout": timeout})

    version = spec.get("version") or {}
    add("preflight: read the installed version", version.get("command"), version.get("timeout"))
    hooks = spec.get("hooks") or {}
    for hook in hooks.get("before_stop", []):
        add("hook before_stop", hook.get("command"), hook.get("timeout"))
    stop = spec.get("stop") or {}
    add("stop", stop.get("command"), stop.get("timeout"))
    for name in ("after_stop", "after_install"):
        for hook in hooks.get(name, []):
            add(f"hook {name}", hook.get("command"), hook.get("timeout"))
    start = spec.get("start") or {}
    add("start", start.get("command"), start.get("timeout"))
    for hook in hooks.get("after_start", []):
        add("hook after_start", hook.get("command"), hook.get("timeout"))
    for probe in (spec.get("observe") or {}).get("probes", []):
        if probe.get("type") == "command":
            add(f"observe: probe {probe.get('name')}", probe.get("command"), probe.get("timeout"))
    for hook in hooks.get("after_commit", []):
        add("hook after_commit", hook.get("command"), hook.get("timeout"))
    add("rollback: start the old version", start.get("command"), start.get("timeout"))
    for hook in hooks.get("after_rollback", []):
        add("hook after_rollback", hook.get("command"), hook.get("timeout"))
    for probe in (h["playbook"].get("rollback_observe") or {}).get("probes", []):
        if probe.get("type") == "command":
            add(f"rollback: probe {probe.get('name')}", probe.get("command"), probe.get("timeout"))
    return out


def host_variables(h: PlanHost) -> list[str]:
    """Every value the plan rendered the playbook with besides install_dir and the versions, one line each, in
    full: the explicit ones (inventory vars, --var) and those read from the install's configuration (or their
    defaults). The run renders the operator's playbook with exactly these and refuses any other step."""
    from .config_vars import describe_read

    explicit = dict(h.get("vars") or {})
    found = dict(h.get("vars_read") or {})
    lines = []
    for k, v in sorted(explicit.items()):
        said = found.get(k) or {}
        if "value" in said and str(said["value"]) != str(v):  # allowed by the operator's rules.vars_override
            where = f"{said.get('file')} line {said['line']}" if said.get("line") else str(said.get("file"))
            lines.append(f"{k} = {v!r} (inventory vars or --var) OVERRIDES the install's configuration: {where} "
                         f"says {str(said['value'])!r}")
        else:
            lines.append(f"{k} = {v!r} (inventory vars or --var)")
    read = {k: v for k, v in found.items() if k not in explicit}
    return lines + describe_read(read)


def default_state_dir(h: Mapping[str, object]) -> str:
    """Where the host agent keeps its state for the install when the inventory names no state_dir (and where it
    always keeps the host's trust ledger): ``.upgrader-NAME`` beside the install."""
    import posixpath

    install = posixpath.normpath(str(h.get("install_dir") or "/"))
    parent, name = posixpath.split(install)
    return posixpath.join(parent, ".upgrader-" + name)


def _selector_text(sel: ProcessSpec) -> str:
    """Exactly which processes a process selector picks (every argument shown in full, quoted)."""
    last = f", last argument {sel['cmdline_last']!r}" if sel.get("cmdline_last") else ""
    ports = f", holding port {' or '.join(map(str, sel['ports']))} when listening" if sel.get("ports") else ""
    held = " ".join(repr(str(a)) for a in sel.get("cmdline_contains") or [])
    return f"process whose command line holds {held}{last}{ports}"


def _probe_text(p: ProbeSpec) -> str:
    kind = p.get("type")
    if kind == "process":
        if p.get("pid_file") or not p.get("process"):
            return f"process of pid file {p.get('pid_file')}"
        return _selector_text(p["process"])
    if kind == "tcp":
        return f"tcp {p.get('host')}:{p.get('port')} accepts"
    if kind == "http":
        want = f", body {p['body']!r}" if "body" in p else ""
        want += f", contains {p['contains']!r}" if "contains" in p else ""
        return f"http GET {p.get('url')} answers {p.get('status')}{want}"
    if kind == "log":
        what = f"no match of {p['absent']!r}" if "absent" in p else f"a match of {p.get('present')!r}"
        return f"log {p.get('file')}: {what}"
    if kind == "command":
        return f"command {p.get('command')!r} exits {p.get('exit', 0)}"
    return str(kind)


def product_confirmed(h: PlanHost) -> bool | None:
    """Whether the host confirmed the product the plan upgrades (its trust root's ``installs`` or a ledger record
    that root's run wrote: hostagent/product.py), from the same_product rule; None when that rule was not reached.
    Unconfirmed, the product is the inventory's word (the service account's files can say anything)."""
    for rule in h["decision"].get("rules", []):
        if rule.get("rule") == "same_product":
            return "NOT CONFIRMED" not in str(rule.get("reason"))
    return None


def _host(h: PlanHost) -> dict[str, object]:
    spec = h["playbook"].get("spec") or {}
    observe = spec.get("observe") or {}
    stop = spec.get("stop") or {}
    pkg: Mapping[str, Any] = h.get("package") or {}
    return {
        "host": h["name"], "address": h["address"], "port": h.get("port"), "user": h.get("user"),
        "install_dir": h["install_dir"], "product": h["product"], "product_confirmed": product_confirmed(h),
        "current": h["current"], "target": h["target"],
        "allowed": h["allowed"], "state_dir": h.get("state_dir"), "default_state_dir": default_state_dir(h),
        "package": {k: pkg.get(k) for k in ("file", "kind", "version", "sha256", "size", "requires", "changes",
                                            "remove")} if pkg else None,
        "playbook": {k: h["playbook"].get(k) for k in ("name", "path", "sha256", "from")},
        "version_source": dict(spec.get("version") or {}),
        "decision": {"allowed": h["decision"].get("allowed"), "rules": list(h["decision"].get("rules", []))},
        "checks": list(h.get("checks", [])),
        "commands": host_commands(h),
        "stop": {k: stop.get(k) for k in ("timeout", "pid_file", "ports", "force", "kill_wait") if k in stop},
        "stop_signals": (f"the process of pid file {stop['pid_file']}" if stop.get("pid_file") else
                         _selector_text(stop["process"]) if stop.get("process") else None),
        "variables": host_variables(h),
        "probes": [{"name": p.get("name"), "checks": _probe_text(p)} for p in observe.get("probes", [])],
        "observe": {k: observe.get(k) for k in ("window", "start_timeout", "interval") if k in observe},
        "preserve": [p.get("path") for p in spec.get("preserve", [])],
    }


def plan_review(data: PlanData, digest: str) -> dict[str, object]:
    """The review of a plan (``data`` as loaded, ``digest`` the one an approval signs)."""
    requester = dict(data.get("requester") or {})
    return {
        "plan": digest,
        "created": data.get("created"),
        "target": data.get("target"),
        "allowed": data.get("allowed"),
        "requester": {"user": requester.get("user"), "host": requester.get("host"), "key": requester.get("key"),
                      "signed": bool(data.get("signature"))},
        "catalog": {k: (data.get("catalog") or {}).get(k) for k in ("path", "sha256", "serial", "signer",
                                                                      "fingerprint")},
        "policy": {k: (data.get("policy") or {}).get(k) for k in ("source", "sha256", "identity", "trust_files",
                                                                    "manual_changes")},
        "window": data.get("window"),
        "hosts": [_host(h) for h in data.get("hosts", [])],
    }
