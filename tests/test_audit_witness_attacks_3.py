"""Issue 20, the attacker's third review (attack20-r3), played through the shipped CLI over the real sshd.

- Attack C: the run's opening line renamed run_started -> resume_requested (requester, approver and policy then
  rewritten), re-signed, and the forged head witnessed: a resume or rollback that names no earlier run of the log is
  refused by `audit verify` (ALTERED), with --witness, with --plans/--approvals and by `audit case`.
- Attack A: the operator's policy file touched after the run: the service window of a run whose policy sha256 is
  not the policy given is not judged, and that is said (NOT PROVEN, the run and both digests named, --policy
  asked for); given the policy of that time, the window is judged again (ALTERED)."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import pytest

from fleet import Fleet
from test_audit_witness import rechain
from test_audit_witness_attacks_2 import (  # noqa: F401 - fleet is a fixture
    ALTERED, NOT_PROVEN, agent, cross, fleet, log_of, run_once, run_outside_the_window, verify)
from upgrader.cli import main
from upgrader.trust.keys import load_private_key


def test_a_run_opener_renamed_to_a_resume_is_refused(
        fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    from modified_controller import checkpoint_to_witness, run_witness_cut

    f = fleet
    run = run_witness_cut(f)  # the controller holds the witness back: its connection cut

    def edit(rec: dict[str, Any]) -> dict[str, Any]:
        if rec.get("run") == run and rec["event"] == "run_started":
            rec["event"] = "resume_requested"
            d = rec["data"]
            d["requester"].update(user="change-board", host="cab-workstation")
            d["policy"].update(sha256="0" * 64, source="/etc/upgrader/policy-approved.yaml")
            for a in d.get("approvals") or []:
                a.update(approver="cab-chair@customer")
        if rec.get("run") == run and rec["event"] == "approval_accepted" and isinstance(rec.get("data"), dict):
            rec["data"].update(approver="cab-chair@customer")
        return rec

    key = load_private_key(str(f.box.operator_key))
    forged = rechain(log_of(f).read_bytes().splitlines(keepends=True), edit, key, "operator@customer")
    log_of(f).write_bytes(b"".join(forged))
    assert agent(f, "witness", checkpoint=checkpoint_to_witness(forged, run))["written"]  # within the hour
    rc, report, text = verify(f, capsys)
    assert rc == ALTERED, text
    assert f"a resume_requested of run {run} that names no earlier run (of_run)" in text
    rc, text = cross(f, capsys)
    assert rc == ALTERED, text
    assert "names no earlier run" in text
    capsys.readouterr()
    rc = main(["--home", str(f.box.root), "audit", "case", run, "--witness", str(f.box.inventory)])
    out = capsys.readouterr()
    text = out.out + out.err
    assert rc == ALTERED, text
    assert text.startswith("ALTERED (line "), text
    assert text.splitlines()[0].endswith("forged) " + str(log_of(f))) and "完好" not in text


def test_a_touched_policy_file_leaves_the_window_unjudged_and_says_so(
        fleet: Fleet, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    f = fleet
    run, _, _ = run_outside_the_window(f, monkeypatch)  # the engineer's controller, its clock inside the window
    then = f.box.policy.read_bytes()
    kept = f.box.root / "policy-of-that-time.yaml"
    kept.write_bytes(then)
    rc, report, text = verify(f, capsys)
    assert rc == ALTERED, text
    # the engineer touches the operator's policy file: one comment line
    f.box.policy.write_bytes(then + b"# reviewed\n")
    old, new = hashlib.sha256(then).hexdigest(), hashlib.sha256(f.box.policy.read_bytes()).hexdigest()
    for extra in ((), ("--policy", str(f.box.policy))):
        rc, report, text = verify(f, capsys, *extra)
        assert rc == NOT_PROVEN, text
        assert f"the service window of run {run} (opened on host app-01 at " in text
        assert f"the run's policy sha256 is {old}, the policy given is {new}" in text
        assert "pass the policy file in force at that time with --earlier-policy (or --policy) (NOT PROVEN)" in text
    rc, report, text = verify(f, capsys, "--policy", str(kept))
    assert rc == ALTERED, text
    assert "the log says the run was inside the window (ALTERED)" in text


def test_a_rollback_the_host_opened_as_a_first_run_is_altered(
        fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    """A modified controller (tests/modified_controller.py: the agent's own requests over the real sshd, nothing
    patched) rolls a committed run back and gives the host at the lock what only a first run carries (a requester and
    a policy; the kind it states is rollback: the host refuses a first run of a run id it already opened,
    test_audit_witness_attacks_6), while the log it writes opens it as rollback_requested: the host's record and the
    log's differ (ALTERED, both named: the policy and the requester; the kind is the host's own, rollback, which fits
    the log's line)."""
    from modified_controller import ModifiedController, log_records, write_run

    f = fleet
    run, _, _ = run_once(f)
    label = f"{run}/rollback-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S}"
    opened = next(r for r in log_records(f) if r.get("run") == run and r["event"] == "run_started")
    with ModifiedController(f, "app-01") as c:
        audit = {"kind": "rollback", "as": label, "plan": opened["data"]["plan"], "window": None, "policy": "1" * 64,
                 "requester": {"user": "root", "host": "vm", "key": None}}
        assert c.call("lock", run_id=run, controller="vm", user="root", approvals=[], audit=audit)["locked"]
        assert c.call("rollback", run_id=run, verify="quick")["files"] > 0
        assert c.call("finish", run_id=run, outcome="rolled_back", keep=3, approvals=[], audit=audit)["released"]
        cp = write_run(f, label, [
            {"event": "rollback_requested", "data": {"of_run": run, "hosts": opened["data"]["hosts"]}},
            {"event": "phase_started", "host": "app-01", "phase": "rollback"},
            {"event": "phase_finished", "host": "app-01", "phase": "rollback", "outcome": "ok"},
            {"event": "host_finished", "host": "app-01", "outcome": "restored",
             "data": {"version": opened["data"]["hosts"][0].get("current")}},
            {"event": "run_finished", "outcome": "0", "data": {}}])
        assert c.call("witness", run_id=run, checkpoint=cp)["written"]
    rc, report, text = verify(f, capsys)
    assert rc == ALTERED, text
    assert f"host app-01's opening record of run {run}/rollback-" in text
    # judged by the kind the host recorded (rollback, as the log opens it), not by the fields a first run keeps: the
    # policy and requester the host was given are what differ from the log (the run's own)
    assert "kind is" not in text, text
    assert "differs from the log: policy sha256 is " + "1" * 64 in text, text
    assert "differs from the log: requester is root@vm key None on the host" in text, text
