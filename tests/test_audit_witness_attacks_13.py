"""Issue 20, attack20r15 H1, M2 and L3, through the shipped CLI over the real sshd.

- H1: Ctrl-C once the canary has committed is a pause, as the README says ("leaves the other hosts waiting the same
  way"): the other hosts end `waiting`, the run exits 0, and the honest `resume --yes` after it reads INTACT (the
  round-14 rule called its `after` line edited when the run left the hosts `not_started`).
- M2: only run_started, resume_requested and rollback_requested open a run: a made-up run whose first line is an
  approval_refused carrying its id (then run_started) is forged at that line, from the log alone (it skipped every
  opening-line rule before), and its case is no evidence.
- L3: an honest continuation after a canary asks only the hosts it ran to witness it: no warning, no witness_missing
  line for the canary host."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import approve, plan_to

from fleet import Fleet
from test_audit_witness_attacks_2 import ALTERED, fleet, log_of, records, run_once, verify  # noqa: F401
from test_audit_witness_attacks_10 import case, engineer_appends
from test_audit_witness_attacks_11 import stamp
from test_audit_witness_attacks_12 import fleet2, zh_verify  # noqa: F401
from test_ctrl_c import cli
from upgrader.cli import main


def shipped(f: Fleet, *argv: str) -> subprocess.CompletedProcess[str]:
    """The installed CLI as the operator runs it (a child process, stdin not a terminal)."""
    return subprocess.run([sys.executable, "-m", "upgrader", "--home", str(f.box.root), *argv], cwd=f.box.root,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)


def test_ctrl_c_once_the_canary_committed_is_a_pause_and_the_continuation_reads_intact(fleet2: Fleet) -> None:
    """H1 + L3: `run --canary 1 --yes`, Ctrl-C while app-01's after_commit hook runs (the canary has committed):
    app-02 ends `waiting`, exit 0 (a pause); `resume --yes` upgrades app-02 and asks only app-02 to witness it (no
    warning, no witness_missing line); `audit verify` (plain and --witness) and the continuation's case read INTACT.
    Before: app-02 not_started, exit 1, and every view of the honest log said ALTERED (exit 6)."""
    f = fleet2
    started, release = f.box.root / "app-01-commit-hook", f.box.root / "hook-release"
    waiter = f.box.root / "wait-on-app-01.sh"
    waiter.write_text(f'if [ "$UPGRADER_HOST" = app-01 ]; then touch {started}; i=0; '
                      f'while [ ! -e {release} ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done; fi\n')
    f.write_inventory(playbook=f.write_playbook("canary-commit-hook", hooks={
        "after_commit": [{"command": f"/bin/sh {waiter}", "timeout": "120s"}]}).stem)
    rc, plan = plan_to(f.box, "7.0.4.2")
    assert rc == 0
    approval = approve(f.box, plan)
    proc = cli(f.box, "run", str(plan), "--approval", str(approval), "--canary", "1", "--yes", "--json")
    deadline = time.monotonic() + 120
    while not started.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "app-01's after_commit hook never ran"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # the operator presses Ctrl-C once the canary has committed
    release.touch()
    out, err = proc.communicate(timeout=240)
    assert "Traceback" not in err, err
    result = json.loads(out)
    run = result["run_id"]
    assert proc.returncode == 0, (out, err)  # a pause after a healthy canary (README: exit codes)
    assert {h["host"]: h["outcome"] for h in result["hosts"]} == {"app-01": "committed", "app-02": "waiting"}
    assert f"upgrader resume {run} --yes" in result["stopped_early"]
    assert f.versions() == {"app-01": "7.0.4.2", "app-02": "7.0.4.1"}
    log = records(log_of(f))
    assert [r["outcome"] for r in log if r["event"] == "run_interrupted"] == ["cancelled"]
    assert [r["data"]["outcomes"] for r in log if r["event"] == "run_finished"] == [
        {"app-01": "committed", "app-02": "waiting"}]

    p = shipped(f, "resume", run, "--yes")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "did not record the checkpoint" not in p.stdout + p.stderr, p.stderr  # L3: app-01 never ran this part
    assert f.versions() == {"app-01": "7.0.4.2", "app-02": "7.0.4.2"}
    log = records(log_of(f))
    resumed = [r for r in log if r["event"] == "resume_requested"]
    assert len(resumed) == 1 and resumed[0]["data"]["after"] == "canary confirmed"
    assert resumed[0]["data"]["hosts"] == ["app-02"]
    assert [r for r in log if r["event"] == "witness_missing"] == []
    witness = json.loads((f.box.root / "runs" / run / "result.json").read_text())["witness"]
    assert (witness["witnessed"], witness["missing"]) == (["app-02"], [])

    for argv in (("audit", "verify"), ("audit", "verify", "--witness", str(f.box.inventory)),
                 ("audit", "case", resumed[0]["run"], "--witness", str(f.box.inventory)),
                 ("audit", "case", run, "--witness", str(f.box.inventory))):
        v = shipped(f, *argv)
        assert v.returncode == 0 and v.stdout.startswith("INTACT"), (argv, v.stdout, v.stderr)


def refused_then_started(f: Fleet, tag: str, *, requester: str | None = None,
                         prefix: bool = True) -> tuple[str, dict[str, int]]:
    """A real plan to 7.0.4.3 and its real approval (never used), then a made-up first run of it (attack20r15 g3/g4):
    an approval_refused line carrying the run's id (``prefix``), then run_started (the honest run's opening line with
    this plan and approval; ``requester``: another user), approval_accepted, host_started, a preflight that failed
    with no failure named, and app-01 ending needs_person."""
    rc, plan = plan_to(f.box, "7.0.4.3")
    assert rc == 0
    approval_file = approve(f.box, plan)
    log = records(log_of(f))
    made = [r["data"] for r in log if r["event"] == "approval_created"][-1]
    data: dict[str, Any] = json.loads(json.dumps([r for r in log if r["event"] == "run_started"][0]["data"]))
    approval = {k: made[k] for k in ("approver", "key", "expires", "digest", "comment", "after_hours")}
    data.update(plan=made["plan"], target="7.0.4.3", approvals=[approval])
    for h in data["hosts"]:
        h["target"] = "7.0.4.3"
    if requester is not None:
        data["requester"]["user"] = requester
    run = stamp(tag)
    lines = engineer_appends(f, run, [
        *([("approval_refused", {"outcome": "refused", "data": {"plan": made["plan"], "reason": "x",
                                                                   "approvals": [str(approval_file)]}})]
          if prefix else []),
        ("run_started", {"data": data}),
        ("approval_accepted", {"outcome": "accepted", "data": approval}),
        ("host_started", {"host": "app-01"}),
        ("phase_started", {"host": "app-01", "phase": "preflight"}),
        ("phase_finished", {"host": "app-01", "phase": "preflight", "outcome": "failed",
                            "data": {"seconds": 0.1, "detail": "x"}}),
        ("host_finished", {"host": "app-01", "outcome": "needs_person",
                           "data": {"version": None, "error": "install: the service did not stop",
                                    "rollback_cause": None}}),
        ("run_finished", {"data": {"exit_code": 5, "stopped_early": None, "outcomes": {"app-01": "needs_person"}}}),
    ])
    return run, lines


@pytest.mark.parametrize("shape", ["g3", "g4"])
def test_a_run_opened_by_another_event_is_forged_from_the_log_alone(
        fleet: Fleet, capsys: pytest.CaptureFixture[str], shape: str) -> None:
    """M2: the made-up run of attack20r15 g3 (needs_person past a preflight that failed, no failure named) and g4
    (the same, requester alice), each with an approval_refused line carrying its id before its run_started: ALTERED
    (exit 6) at that first line, in plain `audit verify`, with --witness, in zh, and in the run's case. Before, both
    read INTACT (exit 0): the prefix skipped every opening-line rule. The honest log before them reads INTACT."""
    f = fleet
    run_once(f)
    assert shipped(f, "audit", "verify").returncode == 0
    fake, lines = refused_then_started(f, "b2b2b2" if shape == "g3" else "b4b4b4",
                                       requester="alice" if shape == "g4" else None)
    said = (f"line {lines['approval_refused']}: an event of run {fake} that never started: its first line is "
            "approval_refused, but upgrader opens a run with run_started, resume_requested or rollback_requested "
            "before any other line of it")
    plain = shipped(f, "audit", "verify")
    assert plain.returncode == ALTERED and plain.stdout.startswith("ALTERED"), plain.stdout + plain.stderr
    assert said in " ".join(plain.stdout.split()), plain.stdout
    rc, _, text = verify(f, capsys)
    assert rc == ALTERED and said in text, text
    rc, zh = zh_verify(f, capsys)
    assert rc == ALTERED and f"运行 {fake} 的事件，而该运行从未开始：它的第一行是 approval_refused" in zh, zh
    rc, text = case(f, capsys, fake, "--witness", str(f.box.inventory))
    assert rc == ALTERED and text.startswith("ALTERED"), text
    assert f.versions() == {"app-01": "7.0.4.2"}


def test_the_same_made_up_run_without_the_prefix_is_still_caught_by_its_own_rule(
        fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    """M2's control (attack20r15 g0): the g3 run with run_started as its first line is ALTERED by the round-14 rule
    at its host_finished line (not by the opening rule): the opening line is read as before."""
    f = fleet
    run_once(f)
    fake, lines = refused_then_started(f, "b0b0b0", prefix=False)
    capsys.readouterr()
    assert main(["--home", str(f.box.root), "audit", "verify"]) == ALTERED
    text = " ".join(capsys.readouterr().out.split())
    assert (f"line {lines['host_finished']}: not an event upgrader writes: its host_finished line ends host app-01 "
            f"needs_person in run {fake}, whose preflight there failed") in text, text
