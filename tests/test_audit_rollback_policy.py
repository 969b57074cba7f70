"""Issue 20, the attacker's fifth review (attack20-r5), finding 6: a rollback records the policy it ran under.

A run committed under the customer's policy P1; the customer then changes the policy file (P2: a window open at
every hour); the operator rolls the run back under P2 (the shipped CLI, over the real sshd). The rollback's opening
line and the host's opening record keep P2's sha256, so the auditor's `audit verify --witness` judges the rollback's
window by P2 and the run's by P1 (given with --earlier-policy): INTACT, not ALTERED. Without P1 the run's window is
NOT PROVEN (exit 2), never ALTERED. `audit case` of the rollback names the run it rolls back with that run's
requester, plan, target and approver (labelled as that run's), its own policy, its hosts' versions and exit code:
no None."""

from __future__ import annotations

import hashlib
import json

import pytest
from conftest import upgrader

from fleet import Fleet
from test_audit_witness_attacks_2 import (  # noqa: F401 - fleet is a fixture
    NOT_PROVEN, fleet, log_of, records, run_once)
from upgrader.cli import main


def said(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_a_rollback_under_a_changed_policy_is_judged_by_its_own_policy_and_its_case_names_the_run(
        fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    f = fleet
    home = ["--home", str(f.box.root)]
    run, plan, approval = run_once(f)
    p1 = f.box.policy.read_bytes()
    kept = f.box.root / "policy-p1.yaml"
    kept.write_bytes(p1)
    text = p1.decode()
    assert "  outside: allow\n" in text
    f.box.policy.write_text(text.replace("  outside: allow\n", (
        "  outside: allow\n  timezone: UTC\n  days: [mon, tue, wed, thu, fri, sat, sun]\n  start: '00:00'\n"
        "  end: '24:00'\n")), encoding="utf-8")
    p2 = hashlib.sha256(f.box.policy.read_bytes()).hexdigest()
    assert upgrader(f.box, "rollback", run, "--yes") == 0
    [opening] = [e for e in records(log_of(f)) if e["event"] == "rollback_requested"]
    rollback = opening["run"]
    assert opening["data"]["policy"]["sha256"] == p2 and opening["data"]["window"]["inside"] is True
    assert opening["data"]["policy"]["source"] == str(f.box.policy)

    # the host kept the policy of the rollback in its opening record
    rc, out = said(capsys, *home, "audit", "verify", "--witness", str(f.box.inventory), "--earlier-policy",
                   str(kept), "--json")
    assert rc == 0, out
    assert json.loads(out)["witness"]["status"] == "intact", out
    rc, out = said(capsys, *home, "audit", "verify", "--witness", str(f.box.inventory), "--earlier-policy",
                   str(kept))
    assert rc == 0 and out.startswith("INTACT"), out
    # without the policy of the run's time: that run's window is not proven, the rollback's is judged by P2
    rc, out = said(capsys, *home, "audit", "verify", "--witness", str(f.box.inventory))
    assert rc == NOT_PROVEN, out
    p1_digest = hashlib.sha256(p1).hexdigest()
    assert f"the service window of run {run} (opened on host app-01 at " in out
    assert f"the run's policy sha256 is {p1_digest}, the policy given is {p2}" in out
    assert f"of run {rollback}" not in out and "ALTERED" not in out, out

    # the rollback's case: the run it rolls back, that run's requester, plan, target, approver; its own policy
    rc, case = said(capsys, *home, "audit", "case", rollback, "--json")
    assert rc == 0, case
    c = json.loads(case)["case"]
    of = c["of_run"]
    started = next(e for e in records(log_of(f)) if e["event"] == "run_started" and e["run"] == run)["data"]
    assert c["kind"] == "rollback" and of["run"] == run and of["plan"] == started["plan"]
    assert of["requester"] == {k: started["requester"][k] for k in ("user", "host", "key")}
    assert of["target"] == "7.0.4.2" and [a["approver"] for a in of["approvals"]] == ["engineer@vendor"]
    assert c["policy"]["sha256"] == p2 and c["outcome"]["exit_code"] == 0
    [h] = c["hosts"]
    assert (h["host"], h["from"], h["to"], h["outcome"]) == ("app-01", "7.0.4.2", "7.0.4.1", "restored")
    rc, text = said(capsys, *home, "audit", "case", rollback)
    assert rc == 0 and "None" not in text, text
    assert f"rollback of run {run} (started " in text and f"that run's: requested by {of['requester']['user']}@" in text
    assert f"policy: {f.box.policy} sha256 {p2}" in text and "host app-01: 7.0.4.2 -> 7.0.4.1: restored" in text
    rc, zh = said(capsys, *home, "audit", "case", rollback, "--lang", "zh")
    assert rc == 0 and "None" not in zh, zh
    assert f"回滚的是运行 {run}" in zh and f"策略：{f.box.policy}，sha256 {p2}" in zh and "结果：退出码 0" in zh, zh
