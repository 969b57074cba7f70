"""Over SSH, the link is cut at every action the controller sends to the host agent: the sshd processes of the
connection (its monitor and session) are killed (SIGKILL) just as the action's request goes out; the sshd itself
keeps listening. The run retries on a new connection; it ends on exactly one whole version, healthy, with one
service process (committed on 7.0.4.2, or, if it needed a person, brought there or back by `upgrader resume`),
no lock and no staging left, the action is sent again (the run's gate, which reads the host once before the engine starts, leaves what it
could not read to the engine's preflight; the audit checkpoint sent at the very end is reported missing, never
retried), and the audit log verifies.

How the cut is placed: the test suite's fault plugin (``UPGRADER_FAULT_CUT_AT=agent:request:<op>``, see
tests/plugin/upgrader_test_faults.py); the product has no such hook. The list of actions is checked against what a
clean run over SSH really sends (traced by the same plugin), so a new action cannot go uncut.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import approve, fault_env, plan_to
from fleet import Fleet
from hoststate import host_state
from test_kill_matrix import assert_audit_intact, health, service_pids

OLD, NEW = "7.0.4.1", "7.0.4.2"
#: every action a run over SSH sends to the host agent, in the order of its first use
#: the run's gate reads the host once more before the engine starts (facts, then read_vars); losing the link there
#: leaves the plan's decision to the engine, which reads the host again at its preflight (facts)
READ_AGAIN_BY = {"read_vars": "facts", "host_trust": "facts"}
ACTIONS = ("facts", "read_vars", "host_trust", "lock", "prove", "receive_check", "receive_commit", "prepare", "stop",
           "install", "start", "observe", "finish", "witness")


def run(f: Fleet, *argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "upgrader", "--home", str(f.box.root), *argv], cwd=f.box.root,
                          env={**os.environ, **fault_env(), **env}, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=300)


def approved(f: Fleet) -> tuple[Path, Path]:
    rc, plan = plan_to(f.box, NEW)
    assert rc == 0, f"plan to {NEW} refused"
    return plan, approve(f.box, plan)


def test_a_clean_run_over_ssh_sends_exactly_the_actions_the_cut_is_tried_at(fleet, tmp_path):
    """The parametrization below is complete: a clean run over the real sshd sends these actions, no other."""
    f: Fleet = fleet(1)
    plan, approval = approved(f)
    trace = tmp_path / "actions.txt"
    res = run(f, "run", str(plan), "--approval", str(approval), env={"UPGRADER_FAULT_TRACE": str(trace)})
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    sent = list(dict.fromkeys(trace.read_text().split()))
    assert sent == list(ACTIONS), f"a run over SSH sends {sent}"


@pytest.mark.slow
@pytest.mark.parametrize("op", ACTIONS)
def test_the_link_cut_as_an_action_goes_out_ends_on_one_whole_healthy_version(fleet, tmp_path, op):
    """The SSH connection cut as this action's request goes out: the action is sent again on a new connection, and
    the run ends on one whole healthy version (resume finishes what needed a person); no lock, nothing staged is
    left; the audit log verifies."""
    f: Fleet = fleet(1)
    h = f["app-01"]
    before = host_state(h.install_dir, state_dir=h.state_dir)
    plan, approval = approved(f)
    assert f.sshd.proc is not None
    trace = tmp_path / "actions.txt"
    res = run(f, "run", str(plan), "--approval", str(approval), "--json",
              env={"UPGRADER_FAULT_CUT_AT": f"agent:request:{op}", "UPGRADER_FAULT_CUT_PID": str(f.sshd.proc.pid),
                   "UPGRADER_FAULT_TRACE": str(trace)})
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    sent = trace.read_text().split()
    cut = next(i for i, line in enumerate(sent) if line.startswith("cut:"))
    assert sent[cut + 1] == op and int(sent[cut].split(":")[1]) >= 1, f"the link was not cut at {op}: {sent}"
    if op == "witness":  # the run is over: a witness lost is reported, never retried and never a failure
        assert res.returncode == 0, res.stdout[-3000:]
        missing = json.loads(res.stdout)["witness"]["missing"]
        assert [m["host"] for m in missing] == ["app-01"] and "connection lost" in missing[0]["error"], missing
    else:  # the action again on a new connection; the gate's reads are made again by the engine's preflight
        again = READ_AGAIN_BY.get(op, op)
        assert again in sent[cut + 2:], f"{again} was not sent after the cut at {op}: {sent} {res.stderr[-3000:]}"
    if res.returncode != 0:  # the host needs a person: resume decides from the journal and the host
        (run_dir,) = f.run_dirs()
        again = run(f, "resume", run_dir.name, "--json", env={})
        assert again.returncode in (0, 1), f"resume after the cut at {op} exited {again.returncode}: {again.stdout}"
    version = h.answers()
    assert version in (OLD, NEW), f"the host answers {version!r}"
    after = host_state(h.install_dir, state_dir=h.state_dir)
    if version == OLD:
        assert after.product == before.product, f"cut at {op}: not 7.0.4.1 byte for byte"
    assert after.lock is None, f"cut at {op}: the host is still locked: {after.lock}"
    assert health(f.box) == 200 and len(service_pids(h.install_dir)) == 1
    assert not any("/staging" in k for k in after.agent or {}), f"cut at {op}: staging left"
    assert_audit_intact(f.box)
