"""``upgrader status``: per host, what runs there now (read-only), who holds its lock, and every run of this
machine that left the host needing a person, with the command that resolves it.

It reads the hosts (the agent's read-only ``facts``) and this machine's run journals; it changes nothing on any
host and writes nothing."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ...core.errors import TransportError
from ...core.exit_codes import ExitCode
from ._common import console, print_json

__all__ = ["cmd_status", "run_needs"]


def _targets(args: argparse.Namespace) -> list[tuple[Any, dict[str, Any]]]:
    """(Host, rendered playbook spec) per host: from --inventory, else from the plans of this machine's runs."""
    from ...fleet.inventory import host_from_plan
    from ...core.journal import runs_dir

    if args.inventory:
        from ...fleet.inventory import load_inventory
        from ...core.playbook import load_operator_playbook

        inventory = load_inventory(args.inventory)
        out = []
        for h in inventory.select(args.hosts):
            pb, _ = load_operator_playbook(h.playbook, args.home, where=str(inventory.path),
                                           key=f"hosts.{h.name}.playbook")
            spec = pb.render({"install_dir": h.install_dir, "host": h.name, **h.vars, "target_version": "unknown",
                              "current_version": "unknown"})
            out.append((h, spec))
        return out
    latest: dict[str, tuple[Any, dict[str, Any]]] = {}
    for run in sorted(p for p in runs_dir(args.home).glob("*") if (p / "plan.json").is_file()):
        for h in json.loads((run / "plan.json").read_text(encoding="utf-8"))["hosts"]:
            latest[h["name"]] = (host_from_plan(h), h["playbook"]["spec"])
    return list(latest.values())


def _last_command(run: Path) -> str:
    """'rollback' when the last command that worked on this run was a rollback, else 'resume'."""
    from ...core.journal import read_journal

    last = "resume"
    if (run / "journal.jsonl").is_file():
        for r in read_journal(run / "journal.jsonl"):
            if (r.phase, r.event) in (("run", "start"), ("resume", "start"), ("rollback", "requested")):
                last = "rollback" if r.phase == "rollback" else "resume"
    return last


def run_needs(runs: Path, host: str) -> list[dict[str, str]]:
    """This machine's runs that left ``host`` needing a person (or waiting), each with the command that resolves
    it: a host whose last record is not its end was interrupted; an end that needs a person says so."""
    from ...core.journal import read_journal

    needs = []
    for run in sorted(p for p in runs.glob("*") if (p / "journal.jsonl").is_file()):
        records = list(read_journal(run / "journal.jsonl"))
        mine = [r for r in records if r.host == host]
        if not mine:
            continue
        starts = [r for r in records if (r.phase, r.event) in (("run", "start"), ("resume", "start"),
                                                               ("rollback", "requested"))]
        command = "rollback" if starts and starts[-1].phase == "rollback" else "resume"
        last = mine[-1]
        if not (last.phase == "host" and last.event in ("end", "not_started")):
            needs.append({"run": run.name, "why": f"its {command} was interrupted at {last.phase} {last.event}",
                          "resolve": f"upgrader {command} {run.name}", "kind": "interrupted", "command": command,
                          "at": f"{last.phase} {last.event}"})
        elif last.data.get("outcome") == "needs_person":
            needs.append({"run": run.name, "why": f"its {command} ended needing a person",
                          "resolve": f"upgrader {command} {run.name} (after reading its journal: upgrader "
                                     f"diagnostics {run.name})", "kind": "needs_person", "command": command})
        elif last.event == "not_started" and last.data.get("waiting") and command == "rollback":
            continue  # rolled back after its canary: the run is over, the waiting hosts were never changed
        elif last.event == "not_started" and last.data.get("waiting"):
            needs.append({"run": run.name, "why": "waits for a confirmation after a healthy canary",
                          "resolve": f"upgrader resume {run.name} --yes", "kind": "waiting", "command": "resume"})
    return needs


def _lock_line(lock: dict[str, Any], known: dict[str, str]) -> dict[str, str]:
    since = _dt.datetime.fromtimestamp(float(lock.get("time") or 0), _dt.timezone.utc).isoformat(timespec="seconds")
    who = f"locked by run {lock.get('run')} ({lock.get('user')}@{lock.get('controller')} since {since})"
    if lock.get("run") in known:
        return {"lock": who, "resolve": f"a run of this machine: finish it with upgrader {known[lock['run']]} "
                                        f"{lock.get('run')}"}
    return {"lock": who, "resolve": "not a run of this machine: ask its owner; only if that run is dead, recover with "
                                    "--break-lock (upgrader rollback RUN_ID --break-lock, upgrader resume RUN_ID "
                                    "--break-lock or upgrader run PLAN --break-lock)"}


def _read(host: Any, spec: dict[str, Any]) -> dict[str, Any]:
    from ...fleet.transport import AgentClient, connect

    try:
        transport = connect(host)
        try:
            facts = AgentClient(transport).call("facts", install_dir=host.install_dir, state_dir=host.state_dir,
                                                version_source=spec["version"], check_drift=False, preserve=[],
                                                packages=[], timeout=120)
        finally:
            transport.close()
    except TransportError as e:
        return {"reachable": False, "error": str(e)}
    except Exception as e:  # noqa: BLE001 - an agent failure on one host is that host's line
        return {"reachable": False, "error": f"{type(e).__name__}: {e}"}
    return {"reachable": True, "version": facts.get("version"), "version_error": facts.get("version_error"),
            **({"version_refused": facts["version_refused"]} if facts.get("version_refused") else {}),
            "lock": facts.get("lock")}


def cmd_status(args: argparse.Namespace) -> int:
    from ...core.journal import runs_dir

    runs = runs_dir(args.home)
    known = {p.name: _last_command(p) for p in runs.glob("*") if p.is_dir()}
    targets = _targets(args)
    if not targets:
        from ...core.errors import InputError

        raise InputError(f"no hosts to show: no runs in {runs}", hint="give --inventory INV")
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(targets)))) as pool:
        read = list(pool.map(lambda t: _read(*t), targets))
    hosts = []
    for (h, _), facts in zip(targets, read):
        entry: dict[str, Any] = {"host": h.name, **facts, "needs": run_needs(runs, h.name)}
        if facts.get("lock"):
            entry["lock_note"] = _lock_line(facts["lock"], known)
        entry["ok"] = facts["reachable"] and not facts.get("lock") and \
            not any("confirmation" not in n["why"] for n in entry["needs"])
        hosts.append(entry)
    code = ExitCode.OK if all(e["ok"] for e in hosts) else ExitCode.NEEDS_PERSON
    if args.json:
        print_json({"hosts": hosts, "exit_code": int(code)})
        return code
    from ...core.language import resolve_lang
    from .status_print import print_status

    print_status(console(), hosts, known, home=args.home, lang=resolve_lang(getattr(args, "lang", None)),
                 zone=_zone(args))
    return code


def _zone(args: argparse.Namespace) -> str:
    """The policy's time zone (times for people are shown in it), Asia/Shanghai when no policy is readable."""
    from ...core.shown_time import DEFAULT_ZONE, policy_zone

    try:
        from ._common import load_policy_or_fail, policy_path

        return policy_zone(load_policy_or_fail(policy_path(args)))
    except Exception:  # noqa: BLE001 - the zone only decides how a time is shown
        return DEFAULT_ZONE
