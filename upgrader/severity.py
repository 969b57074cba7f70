"""Incident severity of a failed run, by the vendor's four levels, from the run's phase records. Pure.

Levels: 1 the service cannot start, crashes or cannot reach its data source; 2 a core function is
unstable or much slower; 3 a minor loss with a workaround; 4 slight. Each host that did not end
well is classified by the first rule that matches (``RULES`` documents them in this order); the
run's level is the most severe (lowest) of its hosts. Hosts that committed, were restored on
request, were not started, were refused or had a stale plan are no incident (None), and neither is
a host the operator cancelled (``is_cancelled``: left unchanged, or stopped and rolled back to a
healthy old version): a cancel is a decision, not a failure. A cancelled host whose rollback failed
is an incident like any other (level 1: the service is down).

Core probes are the process, TCP and HTTP probes; log and command probes are non-core. This
module reads no file and knows no time; the caller adds the policy's response-time target.
"""

from __future__ import annotations

import re
from typing import Any

from .engine import CANCELLED

__all__ = ["RULES", "classify_host", "classify_run", "is_cancelled", "LEVEL_NAMES"]

LEVEL_NAMES = {1: "the service cannot start, crashes or cannot reach its data source",
               2: "a core function is unstable or much slower",
               3: "a minor loss with a workaround",
               4: "slight"}

#: (level, rule) in the order they are tried
RULES = (
    (1, "the service was stopped and is not healthy again (rollback failed or the host was lost): needs a person"),
    (1, "the start command failed or timed out"),
    (1, "a failing probe shows the service cannot reach its data source (JDBC, datasource, database)"),
    (1, "the process probe failed: the service did not start or died"),
    (1, "a core probe (TCP, HTTP) never passed after start: the service is not available"),
    (2, "core probes passed, then failed during the observation window: unstable"),
    (3, "only non-core probes (log, command) failed"),
    (3, "a hook failed, or install or stop failed and the old version runs again"),
    (4, "the run failed before the service was touched (preflight, backup): nothing changed"),
)

_NO_INCIDENT = ("committed", "restored", "not_started", "refused", "stale", "superseded", "waiting")
_CORE = ("process", "tcp", "http")
_DATA_SOURCE = re.compile(r"jdbc|data ?source|database|sqlexception|could not connect to (the )?db", re.I)


def _failed_probes(detail: str, types: dict[str, str]) -> list[tuple[str, str, str]]:
    """(name, type, detail) of each probe named in an observe failure ``when: name: detail; name: detail``."""
    _, _, rest = detail.partition(": ")
    out = []
    for part in rest.split("; "):
        name, sep, what = part.partition(": ")
        if sep:
            out.append((name, types.get(name, "command" if name not in _CORE else name), what))
    return out


def _rule(index: int, host: str, detail: str) -> dict[str, Any]:
    level, rule = RULES[index]
    return {"host": host, "level": level, "meaning": LEVEL_NAMES[level], "rule": rule, "evidence": detail}


def is_cancelled(host: dict[str, Any]) -> bool:
    """Did the operator cancel this host's run, and did it end well (unchanged, or rolled back healthy)?"""
    if host.get("outcome") not in ("unchanged", "rolled_back", "not_started"):
        return False
    return host.get("rollback_cause") == CANCELLED or str(host.get("error") or "").startswith(
        (CANCELLED, f"cancel: {CANCELLED}"))


def classify_host(host: dict[str, Any], probe_types: dict[str, str] | None = None) -> dict[str, Any] | None:
    """The severity of one host's result (``RunResult.to_dict()['hosts'][i]``), or None: no incident.

    ``probe_types`` maps the playbook's probe names to their types (process, tcp, http, log, command)."""
    if host.get("outcome") in _NO_INCIDENT or is_cancelled(host):
        return None
    name = str(host.get("host"))
    phases = host.get("phases") or []
    failed = next((p for p in phases if p.get("status") == "failed"), None)
    stopped = any(p.get("phase") == "stop" and p.get("status") == "ok" for p in phases)
    detail = str((failed or {}).get("detail") or host.get("error") or "")
    if host.get("outcome") == "needs_person" and stopped:
        return _rule(0, name, str(host.get("error") or detail))
    if failed is None:
        return _rule(8, name, detail or str(host.get("outcome")))
    phase = str(failed.get("phase"))
    if phase == "start":
        return _rule(1, name, detail)
    if phase == "observe":
        probes = _failed_probes(detail, probe_types or {})
        if any(_DATA_SOURCE.search(what) for _, _, what in probes):
            return _rule(2, name, detail)
        if any(kind == "process" for _, kind, _ in probes):
            return _rule(3, name, detail)
        core = [p for p in probes if p[1] in _CORE]
        if core and "during the observation window" not in detail:
            return _rule(4, name, detail)
        if core:
            return _rule(5, name, detail)
        return _rule(6, name, detail)
    if phase.startswith("hook:") or phase in ("install", "stop", "rollback"):
        return _rule(7, name, detail)
    return _rule(8, name, detail)


def classify_run(result: dict[str, Any], probe_types: dict[str, dict[str, str]] | None = None,
                 response_hours: tuple[float, ...] = (2.0, 4.0, 8.0, 48.0)) -> dict[str, Any] | None:
    """The run's severity: the most severe host's, with every host's, and the response-time target."""
    hosts = [c for c in (classify_host(h, (probe_types or {}).get(str(h.get("host")))) for h in result["hosts"])
             if c is not None]
    if not hosts:
        return None
    worst = min(hosts, key=lambda c: int(c["level"]))
    level = int(worst["level"])
    return {"level": level, "meaning": LEVEL_NAMES[level], "response_hours": response_hours[level - 1],
            "host": worst["host"], "rule": worst["rule"], "evidence": worst["evidence"], "hosts": hosts}
