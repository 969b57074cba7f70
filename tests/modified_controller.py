"""A modified controller, for attack tests: the engineer's own client, which speaks to the shipped host agent over
the real sshd exactly as the controller does (the same AgentClient, the same op names and request fields) but
sends the fields it chooses, and writes its own lines into the audit log with the operator key it holds (the log's
own writer, as upgrader writes lines). Nothing of upgrader is patched: what a host records is what it was told."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from conftest import approve, fault_env, plan_to
from fleet import Fleet
from sshd import SSHServer, start_sshd
from upgrader.audit.log import AuditLog
from upgrader.fleet.inventory import load_inventory
from upgrader.fleet.transport import connect
from upgrader.fleet.transport.base import AgentClient
from upgrader.trust.keys import load_private_key


class ModifiedController:
    """One host's agent, driven request by request (the controller's requests with forged fields)."""

    def __init__(self, f: Fleet, host: str) -> None:
        self.f = f
        self.host = next(h for h in load_inventory(f.box.inventory).select(None) if h.name == host)
        self.client = AgentClient(connect(self.host))

    def call(self, op: str, **req: Any) -> dict[str, Any]:
        reply: dict[str, Any] = self.client.call(op, install_dir=self.host.install_dir, state_dir=self.host.state_dir,
                                                 **req)
        return reply

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "ModifiedController":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def log_path(f: Fleet) -> Path:
    return f.box.root / "audit" / "audit.jsonl"


def log_records(f: Fleet) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log_path(f).read_bytes().splitlines()]


def write_run(f: Fleet, label: str, events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The engineer appends ``events`` (dicts of event, host, phase, outcome, data) as run ``label``'s lines and
    closes them with a checkpoint signed by the operator key (as upgrader does); returns the checkpoint to witness."""
    actor = next(r["actor"] for r in log_records(f) if isinstance(r.get("actor"), dict))
    a = AuditLog(log_path(f), actor=actor)
    now = dt.datetime.now(dt.timezone.utc)
    for i, e in enumerate(events):
        a.append(str(e["event"]), run=label, host=e.get("host"), phase=e.get("phase"), outcome=e.get("outcome"),
                 time=(now + dt.timedelta(milliseconds=10 * i)).isoformat(timespec="milliseconds"),
                 data=e.get("data"))
    a.checkpoint(run=label, time=(now + dt.timedelta(seconds=1)).isoformat(timespec="milliseconds"),
                 signer=str(actor["principal"]), key=load_private_key(str(f.box.operator_key)))
    last = log_records(f)[-1]
    cp = dict(last["checkpoint"], run=label, time=last["time"], line=last["seq"])
    cp.pop("signature", None)
    return cp


def run_witness_cut(f: Fleet, version: str = "7.0.4.2") -> str:
    """The shipped CLI runs an upgrade (a subprocess); the SSH connection that carries its witness request is cut (the
    test suite's fault plugin, as in test_link_cut): the run ends, the host never received the checkpoint -- the
    engineer's controller holding the witness back. Returns the run id."""
    rc, plan = plan_to(f.box, version)
    assert rc == 0
    approval = approve(f.box, plan)
    env = {**os.environ, **fault_env(), "UPGRADER_FAULT_CUT_AT": "agent:request:witness",
           "UPGRADER_FAULT_CUT_PID": str(f.sshd.proc.pid)}
    done = subprocess.run([sys.executable, "-m", "upgrader", "--home", str(f.box.root), "run", str(plan),
                           "--approval", str(approval)], env=env, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "did not record the checkpoint" in " ".join(done.stdout.split()), done.stdout
    assert not any((h.state_dir / "checkpoints.jsonl").exists() for h in f.hosts)
    return f.run_dirs()[-1].name


def checkpoint_to_witness(lines: list[bytes], run: str) -> dict[str, Any]:
    """The checkpoint of run ``run`` in the log ``lines``, as the controller sends it to a host's witness op."""
    line = next(r for r in (json.loads(x) for x in lines) if r["event"] == "checkpoint" and r.get("run") == run)
    cp = dict(line["checkpoint"], run=run, time=line["time"], line=line["seq"])
    cp.pop("signature", None)
    return cp


def run_finish_lost(f: Fleet, own: SSHServer) -> tuple[str, SSHServer]:
    """The shipped CLI runs an upgrade (a subprocess) over ``own``, the host's own sshd, which the test suite's fault
    plugin stops right after the host answered the observe step (as test_audit_witness does at the finish): the
    new version is in and healthy, but the host never receives the run's finish -- its lock stays, it keeps no
    record of finishing the run, and the run ends needs_person (exit 5). The host's sshd is then started again on
    the same port and keys (the auditor reads the host later). Returns the run id and the restarted sshd."""
    rc, plan = plan_to(f.box, "7.0.4.2")
    assert rc == 0
    approval = approve(f.box, plan)
    env = {**os.environ, **fault_env(), "UPGRADER_FAULT_STOP_AT": "agent:replied:observe",
           "UPGRADER_FAULT_STOP_PID": str(own.proc.pid if own.proc else 0)}
    done = subprocess.run([sys.executable, "-m", "upgrader", "--home", str(f.box.root), "run", str(plan),
                           "--approval", str(approval)], env=env, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 5, done.stdout + done.stderr
    assert own.proc is not None and own.proc.poll() is not None, "the host's sshd was stopped before the finish"
    return f.run_dirs()[-1].name, start_sshd(own.root, port=own.port)


#: the agent code a modified controller ships in place of upgrader's (any code runs as the agent's account): it drops
#: every line naming run argv[-1] from each ledger file of each state dir named before it, and that run's directory
_DROP_RUN = r"""
import json, os, shutil, sys
run = sys.argv[-1]
for d in sys.argv[1:-1]:
    for name in os.listdir(d):
        p = os.path.join(d, name)
        if name.endswith(".jsonl") and os.path.isfile(p):
            with open(p) as f:
                kept = [x for x in f if run not in x]
            with open(p, "w") as f:
                f.writelines(kept)
    shutil.rmtree(os.path.join(d, "runs", run), ignore_errors=True)
"""


def drop_run_on_host(f: Fleet, host: str, run: str) -> None:
    """A controller running modified upgrader: the agent it uploads is its own code, run over the controller's SSH
    access as the agent's account (a host trust root binds only the shipped agent), and it removes run ``run`` from
    every copy of the host's ledger -- its opening, finish, checkpoint and steps."""
    from upgrader.fleet.transport import connect as transport

    h = next(x for x in load_inventory(f.box.inventory).select(None) if x.name == host)
    dirs = sorted({str(p.parent) for p in Path(h.install_dir).parent.rglob("runs-opened.jsonl")}
                  | {str(p.parent) for p in Path(str(h.state_dir)).rglob("runs-opened.jsonl")})
    t = transport(h)
    try:
        done = t.run(["python3", "-c", _DROP_RUN, *dirs, run])
    finally:
        t.close()
    assert done.exited == 0, done
