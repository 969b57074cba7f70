"""The diagnostics bundle of a run: what a support engineer needs first when an upgrade failed.

``build_bundle`` writes ``<home>/runs/<run_id>/diagnostics-<run_id>.tar.gz`` (or ``out``), one
folder ``diagnostics-<run_id>/`` holding, in the shape of ``sos report``:

    manifest.json            every other member: path, sha256, size and the collector that made it
    severity.json            the incident's level (1-4), its meaning, the rule, and the response target
    run/                     plan.json, the journal (journal.jsonl), result files          (collector "run")
    hosts/<host>/phases.json phase records and probe results of the host                  ("phases")
    hosts/<host>/versions.json  current, target and found versions                        ("versions")
    hosts/<host>/platform.json  the inspection facts (OS, kernel, limits, disk, ...)       ("platform", via the agent)
    hosts/<host>/configs.json   sha256, size and mtime of each configuration file         ("configs")
    hosts/<host>/config/<path>  the text of the config files the playbook's inspect.configs
                                names, redacted (never key stores, keys, licences, security/,
                                binary files: see ``inspection.inspect_host``)             ("configs")
    hosts/<host>/logs/<path>.tail  the last lines of each log                              ("logs")
    hosts/<host>/collect-error.txt  why a host could not be read                           ("platform")

Host files are collected for the hosts that did not end well (all hosts when none failed; a host
the operator cancelled ended well). By default the bundle holds no configuration text at all, only
digests. Every member is redacted (``redaction.redact``) before it is hashed; with ``obfuscate``
host names (the inventory's names and addresses, each host's own hostname as its agent reports it,
this machine's name and FQDN: short and qualified forms, any case), their domains and the
``domains`` given, and IPv4 and IPv6 addresses are replaced as well (``obfuscation.Obfuscator``),
and the mapping is written beside the bundle (``diagnostics-<run_id>.obfuscation.json``, mode
0600), never into it. A host that cannot be
reached costs its host files, not the bundle. Transports come from the ``connect`` callable.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable

from ..core.errors import InputError, UpgraderError
from ..core.journal import run_dir_of
from ..audit.obfuscation import Obfuscator
from ..audit.redaction import redact
from .severity import classify_run, is_cancelled

__all__ = ["build_bundle", "run_severity", "bundle_name", "TAIL_LINES", "needs_bundle", "bundle_after_run",
           "connect_plan_host"]

TAIL_LINES = 200
_DONE = ("committed", "restored", "not_started", "waiting", "superseded")


def bundle_name(run_id: str) -> str:
    return f"diagnostics-{run_id}.tar.gz"


def _probe_types(plan: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {h["name"]: {p.get("name") or p["type"]: p["type"] for p in h["playbook"]["spec"]["observe"]["probes"]}
            for h in plan["hosts"]}


def _response_hours(plan: dict[str, Any]) -> tuple[tuple[float, ...], str | None]:
    """The policy's response-time targets (the run's policy file; the defaults if it is gone)."""
    from version_policy import PolicyError, load_policy

    try:
        policy = load_policy(plan["policy"]["source"])
        return tuple(policy.response_hours(level) for level in (1, 2, 3, 4)), None
    except (PolicyError, KeyError) as e:
        return (2.0, 4.0, 8.0, 48.0), f"the run's policy could not be read ({e}); default response times used"


def run_severity(plan: dict[str, Any], result: dict[str, Any]) -> dict[str, Any] | None:
    """The run's incident severity with the policy's response-time target (None: no incident)."""
    hours, note = _response_hours(plan)
    severity = classify_run(result, _probe_types(plan), hours)
    if severity is not None and note:
        severity["note"] = note
    return severity


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read it: {e}", path=str(path)) from e


def _spec_playbook(h: dict[str, Any], home: Path) -> Any:
    """A Playbook over the plan's rendered spec, with the ``inspect:`` block of the operator's playbook of that name
    (HOME/playbooks, /etc/upgrader/playbooks, the shipped ones; never the path the plan names) if it is the one the
    plan was made with."""
    from ..core.playbook import Playbook, load_operator_playbook

    meta = h["playbook"]
    inspect: dict[str, Any] = {}
    try:
        pb, _ = load_operator_playbook(str(meta.get("name")), home)
        if pb.digest == meta.get("sha256"):
            inspect = pb.inspect
    except UpgraderError:
        pass
    return Playbook(path=Path(meta["path"]), digest=str(meta.get("sha256")), name=str(meta.get("name")),
                    product=str(h["product"]), spec=meta["spec"], defaults={}, inspect=inspect)


def _collect_host(h: dict[str, Any], outcome: dict[str, Any] | None, connect: Callable[[dict[str, Any]], Any],
                  home: Path) -> tuple[list[tuple[str, str, str]], set[str]]:
    """(member path, text, collector) for one host, and the names the host calls itself."""
    from .inspection import inspect_host

    base = f"hosts/{h['name']}"
    outcome = outcome or {}
    files = [(f"{base}/phases.json", _json({"host": h["name"], "outcome": outcome.get("outcome"),
                                             "error": outcome.get("error"),
                                             "rollback_cause": outcome.get("rollback_cause"),
                                             "phases": outcome.get("phases", [])}), "phases")]
    versions = {"current": h.get("current"), "target": h.get("target"), "running_at_end": outcome.get("version")}
    try:
        transport = connect(h)
        try:
            report = inspect_host(transport, _spec_playbook(h, home), install_dir=h["install_dir"], name=h["name"],
                                  state_dir=h.get("state_dir"), tail=TAIL_LINES, config_text=True)
        finally:
            transport.close()
    except UpgraderError as e:
        files.append((f"{base}/versions.json", _json(versions), "versions"))
        files.append((f"{base}/collect-error.txt", f"could not collect from the host: {e}\n", "platform"))
        return files, set()
    facts = report["facts"]
    versions["found_now"] = facts.get("version")
    files.append((f"{base}/versions.json", _json(versions), "versions"))
    configs = facts.pop("configs", []) or []
    logs = facts.pop("logs", []) or []
    files.append((f"{base}/platform.json", _json({**report, "facts": facts}), "platform"))
    files.append((f"{base}/configs.json", _json([{k: c[k] for k in ("path", "sha256", "size", "mtime",
                                                                     "withheld", "text_withheld") if k in c}
                                                 for c in configs]), "configs"))
    for c in configs:
        if isinstance(c.get("text"), str) and "\x00" not in c["text"]:
            files.append((f"{base}/config/{c['path']}", c["text"], "configs"))
    for log in logs:
        files.append((f"{base}/logs/{log['path']}.tail", "\n".join(log.get("tail") or []) + "\n", "logs"))
    return files, {str(facts["hostname"])} if facts.get("hostname") else set()


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"


def build_bundle(home: Path, run_id: str, *, connect: Callable[[dict[str, Any]], Any],
                 result: dict[str, Any] | None = None, result_name: str = "result.json", obfuscate: bool = False,
                 domains: Iterable[str] = (), out: Path | None = None) -> dict[str, Any]:
    """Collect, redact (and obfuscate), and write the bundle; return {"bundle", "severity", ...}.

    ``result``: the result the command that just ran is about to write as ``result_name`` (default:
    the newest result file of the run)."""
    run_dir = run_dir_of(home, run_id)
    plan = _load(run_dir / "plan.json")
    if plan is None:
        raise InputError(f"no run {run_id!r} in {home / 'runs'}", hint="check the run id, or give --home")
    names = ("result.json", "rollback-result.json")
    results = {n: r for n in names if (r := _load(run_dir / n)) is not None}
    if result is not None:
        results[result_name] = result
    else:
        result = next((results[n] for n in sorted(results, key=lambda n: (run_dir / n).stat().st_mtime,
                                                  reverse=True)), None) \
            or {"run_id": run_id, "hosts": []}
    severity = run_severity(plan, result)
    by_host = {h["host"]: h for h in result.get("hosts", [])}
    chosen = [h for h in plan["hosts"] if (by_host.get(h["name"]) or {}).get("outcome") not in _DONE
              and not is_cancelled(by_host.get(h["name"]) or {})] or list(plan["hosts"])
    members: list[tuple[str, str, str]] = [("run/plan.json", _json(plan), "run"),
                                           ("severity.json", _json(severity), "severity")]
    for n, r in results.items():
        members.append((f"run/{n}", _json(r), "run"))
    try:
        members.append(("run/journal.jsonl", (run_dir / "journal.jsonl").read_text(encoding="utf-8",
                                                                                    errors="replace"), "run"))
    except OSError:
        pass
    seen_names: set[str] = set()
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(chosen)))) as pool:
        for files, own_names in pool.map(lambda h: _collect_host(h, by_host.get(h["name"]), connect, home), chosen):
            members += files
            seen_names |= own_names
    obfuscator = None
    if obfuscate:
        keep = {str(v) for h in plan["hosts"] for v in (h.get("current"), h.get("target"))}
        keep |= {str(h.get("version")) for h in result.get("hosts", [])}
        hostnames = {h["name"] for h in plan["hosts"]} | {h.get("address") or "" for h in plan["hosts"]}
        hostnames |= seen_names | {socket.gethostname(), socket.getfqdn()}
        obfuscator = Obfuscator(hostnames, keep=keep, domains=domains)
    prefix = f"diagnostics-{run_id}"
    manifest_files = []
    blobs: list[tuple[str, bytes]] = []
    for path, text, collector in members:
        text = redact(text)
        if obfuscator is not None:
            text, path = obfuscator(text), obfuscator(path)
        data = text.encode("utf-8")
        blobs.append((path, data))
        manifest_files.append({"path": path, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                               "collector": collector})
    manifest = {"format": 1, "run": run_id, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "tool": "upgrader diagnostics", "redacted": True, "obfuscated": obfuscate,
                "severity": {k: severity[k] for k in ("level", "meaning", "response_hours")} if severity else None,
                "hosts_collected": [h["name"] for h in chosen], "files": manifest_files}
    text = _json(manifest)
    if obfuscator is not None:
        text = obfuscator(text)
    blobs.append(("manifest.json", text.encode("utf-8")))
    target = out or run_dir / bundle_name(run_id)
    _write_tar(target, prefix, blobs)
    info: dict[str, Any] = {"bundle": str(target), "severity": severity, "obfuscated": obfuscate,
                            "files": len(blobs)}
    if obfuscator is not None:
        key = target.with_name(target.name.removesuffix(".tar.gz") + ".obfuscation.json")
        from ..core.output import write_output

        write_output(key, _json(obfuscator.mapping).encode("utf-8"), what="the obfuscation key", mode=0o600)
        info["obfuscation_key"] = str(key)
    return info


def _write_tar(target: Path, prefix: str, blobs: list[tuple[str, bytes]]) -> None:
    """The tar.gz, written to a temporary file and renamed into place (never half a bundle)."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    except OSError as e:
        raise InputError(f"cannot write the bundle: {e.strerror or e}", path=str(target),
                         hint="choose a writable path with -o") from e
    try:
        with os.fdopen(fd, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w:gz") as tar:
                now = time.time()
                for path, data in blobs:
                    info = tarfile.TarInfo(f"{prefix}/{path}")
                    info.size, info.mtime, info.mode = len(data), now, 0o600
                    tar.addfile(info, io.BytesIO(data))
            raw.flush()
            os.fsync(raw.fileno())
        os.chmod(tmp, 0o600)  # redacted, but still the site's logs and configuration
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_FAILED = ("rolled_back", "unchanged", "needs_person")


def connect_plan_host(h: dict[str, Any]) -> Any:
    """A transport to a host of a run's plan (how ``run``, ``resume`` and ``rollback`` reach it)."""
    from ..fleet.inventory import host_from_plan
    from ..fleet.transport import connect

    return connect(host_from_plan(h))


def needs_bundle(result: dict[str, Any]) -> bool:
    """Did a host fail, get rolled back or need a person, other than by the operator's cancel?"""
    return any(h["outcome"] in _FAILED and not is_cancelled(h) for h in result["hosts"])


def bundle_after_run(home: Path, result: dict[str, Any], write: Callable[[dict[str, Any]], None],
                     result_name: str = "result.json", *, obfuscate: bool = False,
                     connect: Callable[[dict[str, Any]], Any] = connect_plan_host) -> None:
    """Write ``result`` (``write``); then, when a host failed, was rolled back or needs a person (not by the
    operator's cancel), write the bundle, note it in ``result`` and write ``result`` again.

    The result is on disk before the bundle is tried, so nothing that goes wrong while collecting can
    lose it; a bundle that cannot be made, for whatever reason, is reported in the result and never
    changes the run's exit code."""
    if needs_bundle(result):
        result["severity"] = _run_severity_of(home, result)  # in result.json even when no bundle can be made
    write(result)
    if not needs_bundle(result):
        return
    try:
        info = build_bundle(home, result["run_id"], connect=connect, result=result, result_name=result_name,
                            obfuscate=obfuscate)
    except (UpgraderError, OSError) as e:
        info = {"bundle": None, "error": f"the diagnostics bundle could not be written: {e}"}
    except Exception as e:  # noqa: BLE001 - the bundle is a courtesy; the run's result and exit code come first
        info = {"bundle": None, "error": f"the diagnostics bundle could not be written (an internal error of "
                                         f"upgrader, please report it): {type(e).__name__}: {e}"}
    if info.get("severity") is None and result.get("severity") is not None:
        info["severity"] = result["severity"]
    result["diagnostics"] = info
    try:
        write(result)
    except Exception as e:  # noqa: BLE001 - the result without the bundle's note is already written
        info["note"] = f"the result was written without this note: {e}"


def _run_severity_of(home: Path, result: dict[str, Any]) -> dict[str, Any] | None:
    """The run's severity by the customer's state after it (severity.py), from the run's plan; None if unreadable."""
    from ..core.journal import runs_dir

    try:
        plan = json.loads((runs_dir(Path(home)) / str(result["run_id"]) / "plan.json").read_text(encoding="utf-8"))
        return run_severity(plan, result)
    except Exception:  # noqa: BLE001 - a damaged plan costs the level, never the run's result or exit code
        return None
