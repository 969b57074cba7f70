"""An approval is spent the moment its run takes a host's lock, not when the run finishes (issue 12, attack12r21 M1).

The attack, through the shipped CLI: `upgrader run` is killed (SIGKILL, the test suite's fault plugin) after the new
version started; `upgrader rollback RUN` puts the old version back (it needs no approval); the same plan is run again
with the same approval. Before, neither ledger named the approval (both are written at a run's finish), and the second
run committed. Now the controller records it spent (HOME/approvals/used.jsonl, fsync'd) once the first host's lock is
taken, and refuses the second run (exit 4, the first run named); a second controller (another HOME, the same keys
and policy) is refused by the host itself, from its own opening record of the first run (runs-opened.jsonl): nothing
is locked, nothing on the host changes. Resuming the killed run still works (same run id)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import approve, fault_env, plan_to, upgrader
from hoststate import assert_host_untouched
from trust_support import cli, host_state, state_dir
from upgrader.cli import main
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.exit_codes import ExitCode
from upgrader.core.reasons import translate
from upgrader.trust.approval import read_approval

FROM, TO = "7.0.4.1", "7.0.4.2"


def killed_run(box: Sandbox, plan: Path, approval: Path, point: str = "start:finished") -> str:
    """`upgrader run` as a child process, killed (SIGKILL) at ``point``; the run's id."""
    env = {k: v for k, v in os.environ.items() if k != "UPGRADER_FAULT_KILL_AT"}
    env.update(fault_env(kill_at=point))
    done = subprocess.run([sys.executable, "-m", "upgrader", "--home", str(box.root), "run", str(plan), "--approval",
                           str(approval)], cwd=box.root, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == -9, f"the run was not killed at {point} (exit {done.returncode}): {done.stderr[-2000:]}"
    (run,) = [p.name for p in (box.root / "runs").iterdir() if p.is_dir()]
    return run


def used_by(box: Sandbox) -> dict[str, str]:
    used = box.root / "approvals" / "used.jsonl"
    lines = used.read_text(encoding="utf-8").splitlines() if used.is_file() else []
    return {json.loads(line)["approval"]: json.loads(line)["run"] for line in lines}


def test_a_run_killed_after_its_start_then_rolled_back_leaves_its_approval_spent_on_both_sides(
        sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    box = sandbox
    rc, plan = plan_to(box, TO)
    assert rc == ExitCode.OK
    approval = approve(box, plan)
    digest = read_approval(str(approval)).digest
    run = killed_run(box, plan, approval)
    assert box.wait_version(TO, 10) == TO  # the new version was started: the host was changed under the approval
    # spent from the lock on, though the run never reached its finish
    assert used_by(box) == {digest: run}
    rc, err = cli(box, capsys, "rollback", run, "--yes")
    assert rc == ExitCode.OK, err
    assert box.wait_version(FROM, 10) == FROM
    assert not (state_dir(box.install_dir) / "lock").exists()

    # the same approval again, from this controller: refused before any host is touched
    before = host_state(box)
    rc, err = cli(box, capsys, "run", str(plan), "--approval", str(approval))
    assert rc == ExitCode.APPROVAL_REFUSED, err
    assert f"this approval was already used by run {run} at " in err and "Traceback" not in err, err
    assert_host_untouched(before, host_state(box))
    said = err.split("upgrader: error: ", 1)[1].splitlines()[0]
    assert f"已被运行 {run} 于" in translate(said, "zh"), translate(said, "zh")  # as the guide shows it

    # from a second controller (another HOME, the operator's key and policy): the host's own record refuses the lock
    other = tmp_path / "other-home"
    rc = main(["--home", str(other), "run", str(plan), "--approval", str(approval),
               "--audit-key", str(box.keys / "operator"), "--policy", str(box.policy)])
    err = capsys.readouterr().err
    assert rc == ExitCode.APPROVAL_REFUSED, f"exit {rc}: {err}"
    assert f"approval {digest[:12]}... was already used on this host by run {run}" in err, err
    assert "runs-opened.jsonl" in err and "nothing was locked" in err and "Traceback" not in err, err
    said = err[err.index("approval " + digest[:12]):].splitlines()[0]
    assert f"已被运行 {run} 在本主机上用过" in translate(said, "zh"), translate(said, "zh")
    assert_host_untouched(before, host_state(box))
    assert box.answers() == FROM


def test_a_resume_of_the_killed_run_goes_on_under_its_spent_approval(
        sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """The approval is spent by the run, not against it: `resume RUN` of a run killed after its install goes on
    (rolls it back, exit 1), and a second resume changes nothing."""
    box = sandbox
    rc, plan = plan_to(box, TO)
    assert rc == ExitCode.OK
    approval = approve(box, plan)
    run = killed_run(box, plan, approval, "install:finished")
    assert used_by(box) == {read_approval(str(approval)).digest: run}
    rc, err = cli(box, capsys, "resume", run)
    assert rc == ExitCode.ROLLED_BACK, err
    assert box.wait_version(FROM, 10) == FROM
    before = host_state(box)
    rc, err = cli(box, capsys, "resume", run)
    assert rc == ExitCode.ROLLED_BACK, err
    assert_host_untouched(before, host_state(box))


def test_a_run_refused_before_any_lock_spends_nothing(sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """A host locked by another run refuses the lock itself: no host's lock was taken, so the approval is not spent
    and runs the plan once that lock is gone."""
    box = sandbox
    rc, plan = plan_to(box, TO)
    assert rc == ExitCode.OK
    approval = approve(box, plan)
    lock = state_dir(box.install_dir) / "lock"
    lock.parent.mkdir(exist_ok=True)
    lock.write_text(json.dumps({"run": "20261203T020000Z-dead02", "controller": "ops-box", "user": "li",
                                "time": 1764727200.0}))
    assert upgrader(box, "run", str(plan), "--approval", str(approval)) == ExitCode.NEEDS_PERSON
    assert used_by(box) == {}
    lock.unlink()
    rc, err = cli(box, capsys, "run", str(plan), "--approval", str(approval))
    assert rc == ExitCode.OK, err
    assert box.answers() == TO
