"""Issue 20, attack20r9 H1, M2, L4: every field `audit case` shows is either held to something the auditor holds or
marked "(the controller's word)".

The engineer's controller (a script that runs the shipped CLI with the log's writer changed to say what the
engineer wants, before the run's own checkpoint signs it) forges one field per run; the shipped CLI, as the auditor
runs it, then names it (each read INTACT, exit 0, before):
- the opening line's target and hosts' targets: `audit verify --plans` (the plan file's target);
- an approval's after-hours booking and comment: `audit verify --approvals` and `audit case --approvals`;
- the run's end (exit 0, every host committed, on a run that rolled back): `audit verify` (the run's host_finished
  lines);
- the approver's name (with the engineer's own key): `audit verify` (the approvers' allowed_signers);
- the phases' seconds: `audit case` computes them from the lines' times (the line's own figure kept beside).
What stays the log's alone (catalog, service window, the operator's account) is marked in the case, en and zh.
L4: `audit export --witness` gives each case the hosts' downtime, as `audit case --witness` does."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import approve, plan_to, upgrader

from upgrader.cli import main
from upgrader.cli.commands.demo import Sandbox

ALTERED = 6

#: the engineer's controller: the shipped upgrader, with the log's writer changed to write the forged fields (argv[1]
#: names them) into the run's lines before the run's own checkpoint signs them
EVIL = r'''
import sys
from upgrader.audit import log as L
from upgrader.cli import main

forge = sys.argv.pop(1)
orig = L.AuditLog.append


def append(self, event, **kw):
    data = dict(kw.get("data") or {})
    if forge == "target" and event == "run_started":
        data["target"] = "7.1.0.0"
        data["hosts"] = [{**h, "target": "7.1.0.0"} for h in data.get("hosts") or []]
    if forge == "approval" and event in ("run_started", "approval_accepted"):
        said = {"after_hours": True, "comment": "after-hours change approved by the CISO"}
        if event == "run_started":
            data["approvals"] = [{**a, **said} for a in data.get("approvals") or []]
        else:
            data.update(said)
    if forge == "approver" and event in ("run_started", "approval_accepted"):
        if event == "run_started":
            data["approvals"] = [{**a, "approver": "ciso@customer"} for a in data.get("approvals") or []]
        else:
            data["approver"] = "ciso@customer"
    if forge == "finish" and event == "run_finished":
        if "exit_code" in data:
            data["exit_code"] = 0
        if isinstance(data.get("outcomes"), dict):
            data["outcomes"] = {h: "committed" for h in data["outcomes"]}
    if forge == "seconds" and event == "phase_finished" and "seconds" in data:
        data["seconds"] = 0.001
    if kw.get("data") is not None:
        kw["data"] = data
    return orig(self, event, **kw)


L.AuditLog.append = append
sys.argv[0] = "upgrader"
sys.exit(main())
'''


def evil_run(box: Sandbox, tmp_path: Path, forge: str, version: str = "7.0.4.5") -> str:
    """The engineer's controller runs an approved plan to ``version`` with ``forge`` written into the log; the run
    id (7.0.4.5 fails its observation and is rolled back: exit 1)."""
    script = tmp_path / "evil_controller.py"
    script.write_text(EVIL)
    rc, plan = plan_to(box, version)
    assert rc == 0
    approval = approve(box, plan)
    done = subprocess.run([sys.executable, str(script), forge, "--home", str(box.root), "run", str(plan),
                           "--approval", str(approval)], capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL, env={**os.environ, "LANG": "C.UTF-8"})
    assert done.returncode == (1 if version == "7.0.4.5" else 0), done.stdout + done.stderr
    return [r["run"] for r in records(box) if r.get("event") == "run_started"][-1]


def records(box: Sandbox) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (box.root / "audit" / "audit.jsonl").read_bytes().splitlines()]


def line_of(box: Sandbox, run: str, event: str) -> int:
    return int(next(r["seq"] for r in records(box) if r.get("run") == run and r["event"] == event))


def cli(box: Sandbox, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["--home", str(box.root), *argv])
    captured = capsys.readouterr()
    text = " ".join((captured.out + captured.err).split())
    assert "Traceback" not in text, text
    return rc, text


def test_an_honest_rolled_back_run_and_its_case_read_intact(sandbox: Sandbox,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The honest run that rolls back (exit 1): verify with plans and approvals INTACT; the case's outcome is each
    host's own host_finished line, its phases' seconds the lines' times; what only the log says is marked."""
    box = sandbox
    rc, plan = plan_to(box, "7.0.4.5")
    assert rc == 0
    assert upgrader(box, "run", str(plan), "--approval", str(approve(box, plan))) == 1
    run = [r["run"] for r in records(box) if r.get("event") == "run_started"][-1]
    rc, text = cli(box, capsys, "audit", "verify", "--plans", str(box.plans), "--approvals", str(box.approvals))
    assert rc == 0 and text.startswith("INTACT"), text
    rc, out = cli(box, capsys, "audit", "case", run, "--json")
    assert rc == 0, out
    case = json.loads(out)["case"] if "case" in json.loads(out) else json.loads(out)
    assert case["outcome"] == {"exit_code": 1, "hosts": {"app-01": "rolled_back"}}, case["outcome"]
    assert {"catalog", "window", "operator.user", "operator.host"} <= set(case["unchecked"]), case["unchecked"]
    [a] = case["approvals"]
    assert a["approver_listed_in"] and a["approver_listed_in"].endswith("allowed_signers"), a
    for p in case["hosts"][0]["phases"]:
        assert p["seconds_source"] == "lines" and p["seconds"] is not None, p
    rc, text = cli(box, capsys, "audit", "case", run)
    assert rc == 0
    assert "(the controller's word)" in text.split("catalog: ", 1)[1].split("service window:", 1)[0], text
    assert "(the controller's word)" in text.split("service window: ", 1)[1].split("operator:", 1)[0], text
    assert "approved by: engineer@vendor key" in text, text  # held to allowed_signers: not marked
    rc, zh = cli(box, capsys, "audit", "case", run, "--lang", "zh")
    assert rc == 0 and "目录：" in zh and "（控制端的一面之词）" in zh.split("目录：", 1)[1].split("维护窗口：", 1)[0], zh


def test_a_forged_target_is_caught_by_the_plan_file(sandbox: Sandbox, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """H1 (a): the log says the run went to 7.1.0.0, the plan file (checked by digest) says 7.0.4.5."""
    box = sandbox
    run = evil_run(box, tmp_path, "target")
    line = line_of(box, run, "run_started")
    for lang, word in (("en", "ALTERED"), ("zh", "已被篡改")):
        rc, text = cli(box, capsys, "audit", "verify", "--plans", str(box.plans), "--approvals", str(box.approvals),
                       "--lang", lang)
        assert rc == ALTERED and text.startswith(word), text
    rc, text = cli(box, capsys, "audit", "verify", "--plans", str(box.plans))
    assert rc == ALTERED, text
    assert f"run {run} (line {line}) names target 7.1.0.0, its plan file" in text and "has 7.0.4.5" in text, text
    rc, zh = cli(box, capsys, "audit", "verify", "--plans", str(box.plans), "--lang", "zh")
    assert rc == ALTERED and f"运行 {run}（第 {line} 行）记的目标版本是 7.1.0.0" in zh, zh


def test_a_forged_after_hours_booking_and_comment_are_caught_by_the_approval_file(
        sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """H1 (c): the log says the approval was booked after hours with the CISO's comment; the signed file says
    after-hours: no, no comment."""
    box = sandbox
    run = evil_run(box, tmp_path, "approval")
    line = line_of(box, run, "run_started")
    rc, text = cli(box, capsys, "audit", "verify", "--approvals", str(box.approvals))
    assert rc == ALTERED and text.startswith("ALTERED"), text
    assert "says after_hours False, the log says True (line " + str(line) + ")" in text, text
    accepted = line_of(box, run, "approval_accepted")
    assert f"the log says True (line {accepted})" in text, text  # the run's approval_accepted line too
    rc, text = cli(box, capsys, "audit", "case", run, "--approvals", str(box.approvals))
    assert rc == ALTERED, text
    assert "approval file:" in text and "(does not match the log)" in text and "after_hours" in text, text
    rc, zh = cli(box, capsys, "audit", "case", run, "--approvals", str(box.approvals), "--lang", "zh")
    assert rc == ALTERED and "的非工作时间预约是 False，日志" in zh, zh


def test_a_forged_run_end_contradicting_its_hosts_lines_is_altered(
        sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """H1 (d): the run rolled back (exit 1), the log's run_finished says exit 0, app-01 committed; its own
    host_finished line says rolled_back: every view says ALTERED at the run_finished line."""
    box = sandbox
    run = evil_run(box, tmp_path, "finish")
    line = line_of(box, run, "run_finished")
    rc, text = cli(box, capsys, "audit", "verify")
    assert rc == ALTERED and text.startswith("ALTERED"), text
    assert f"line {line}: run {run} ends with host app-01 committed, but that host's host_finished line in the run " \
           "says rolled_back" in text, text
    rc, zh = cli(box, capsys, "audit", "verify", "--lang", "zh")
    assert rc == ALTERED and zh.startswith("已被篡改") and f"第 {line} 行" in zh, zh
    rc, text = cli(box, capsys, "audit", "case", run)
    assert rc == ALTERED and "app-01': 'rolled_back'" in text, text
    rc, text = cli(box, capsys, "audit", "show")
    assert rc == ALTERED, text


def test_a_forged_approver_name_is_caught_by_the_approvers_allowed_signers(
        sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """M2: the log names ciso@customer with the engineer's key; allowed_signers lists that key only as
    engineer@vendor: ALTERED at the opening line, without any approval file."""
    box = sandbox
    run = evil_run(box, tmp_path, "approver", "7.0.4.2")
    line = line_of(box, run, "run_started")
    rc, text = cli(box, capsys, "audit", "verify")
    assert rc == ALTERED and text.startswith("ALTERED"), text
    assert f"line {line}: run {run} names approver ciso@customer with key SHA256:" in text, text
    assert "that key is listed only as engineer@vendor" in text, text
    rc, zh = cli(box, capsys, "audit", "verify", "--lang", "zh")
    assert rc == ALTERED and f"第 {line} 行" in zh and "只登记为 engineer@vendor" in zh and "names approver" not in zh, zh
    rc, text = cli(box, capsys, "audit", "case", run)
    assert rc == ALTERED, text


def test_without_the_approvers_file_the_approver_is_the_controllers_word(
        sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """M2: a policy without approvals.allowed_signers (on the auditor's machine): the name is marked."""
    box = sandbox
    rc, plan = plan_to(box, "7.0.4.2")
    assert rc == 0
    assert upgrader(box, "run", str(plan), "--approval", str(approve(box, plan))) == 0
    run = [r["run"] for r in records(box) if r.get("event") == "run_started"][-1]
    text = box.policy.read_text()
    # drop the approvals' allowed_signers (the key under approvals:)
    lines, out, in_approvals = text.splitlines(), [], False
    for x in lines:
        if x.startswith("approvals:"):
            in_approvals = True
        elif x and not x.startswith(" "):
            in_approvals = False
        if in_approvals and x.strip().startswith("allowed_signers:"):
            continue
        out.append(x)
    assert len(out) == len(lines) - 1
    box.policy.write_text("\n".join(out) + "\n")
    rc, out_text = cli(box, capsys, "audit", "case", run)
    assert "approved by: engineer@vendor (the controller's word) key" in out_text, out_text
    rc, js = cli(box, capsys, "audit", "case", run, "--json")
    doc = json.loads(js)
    case = doc.get("case", doc)
    assert "approvals.approver" in case["unchecked"], case["unchecked"]


def test_an_approver_whose_key_was_removed_since_reads_intact_and_the_name_is_the_controllers_word(
        sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """An honest run approved by engineer@vendor; the engineer leaves and their key is taken out of the approvers'
    allowed_signers: the old run is not ALTERED (nothing contradicts the log), its approver's name is marked."""
    box = sandbox
    rc, plan = plan_to(box, "7.0.4.2")
    assert rc == 0
    assert upgrader(box, "run", str(plan), "--approval", str(approve(box, plan))) == 0
    run = [r["run"] for r in records(box) if r.get("event") == "run_started"][-1]
    signers = box.keys / "allowed_signers"
    kept = [x for x in signers.read_text(encoding="utf-8").splitlines() if not x.startswith("engineer@vendor ")]
    assert len(kept) == len(signers.read_text(encoding="utf-8").splitlines()) - 1
    signers.write_text("\n".join(kept) + "\n", encoding="utf-8")
    rc, text = cli(box, capsys, "audit", "verify")
    assert rc == 0 and text.startswith("INTACT"), text
    rc, out_text = cli(box, capsys, "audit", "case", run)
    assert rc == 0 and "approved by: engineer@vendor (the controller's word) key" in out_text, out_text
    rc, js = cli(box, capsys, "audit", "case", run, "--json")
    doc = json.loads(js)
    case = doc.get("case", doc)
    assert "approvals.approver" in case["unchecked"] and case["approvals"][0]["approver_listed_in"] is None, case


def test_forged_phase_seconds_are_not_shown(sandbox: Sandbox, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """H1 (e): every phase line says 0.001 s; the case shows the seconds between the phase's own lines."""
    box = sandbox
    run = evil_run(box, tmp_path, "seconds")
    rc, out = cli(box, capsys, "audit", "case", run, "--json")
    doc = json.loads(out)
    case = doc.get("case", doc)
    phases = case["hosts"][0]["phases"]
    import datetime as dt

    lines = [r for r in records(box) if r.get("run") == run and r.get("phase")]
    starts = [dt.datetime.fromisoformat(r.get("clock") or r["time"]) for r in lines if r["event"] == "phase_started"]
    ends = [dt.datetime.fromisoformat(r.get("clock") or r["time"]) for r in lines if r["event"] == "phase_finished"]
    assert len(phases) == len(starts) == len(ends) >= 8
    for p, start, end in zip(phases, starts, ends):  # each phase: the seconds between its own two lines
        assert p["seconds_said"] == 0.001 and p["seconds"] == round((end - start).total_seconds(), 3), p
    observe = [p for p in phases if p["phase"] == "observe"][-1]
    assert observe["seconds"] > 1.0, observe  # the observation window the line said took a millisecond
    assert all(p["seconds_source"] == "lines" for p in phases), phases
    rc, text = cli(box, capsys, "audit", "case", run)
    assert f"observe {observe['outcome']} {observe['seconds']} s" in text and "0.001 s" not in text, text


from test_audit_witness_attacks_2 import fleet  # noqa: E402,F401 - a fixture (one host over the real sshd)


def test_exports_with_witnesses_give_the_hosts_downtime_as_the_case_does(
        fleet: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:  # noqa: F811
    """L4: an honest run that rolls back; `audit export --witness` (JSON, CSV cases) gives its downtime by the
    host's own clock, the figure `audit case --witness` gives (the log's figure before)."""
    f = fleet
    rc, plan = plan_to(f.box, "7.0.4.5")
    assert rc == 0
    assert upgrader(f.box, "run", str(plan), "--approval", str(approve(f.box, plan))) == 1
    run = f.run_dirs()[-1].name
    rc, out = cli(f.box, capsys, "audit", "case", run, "--witness", str(f.box.inventory), "--json")
    assert rc == 0, out
    doc = json.loads(out)
    case = doc.get("case", doc)
    assert case["downtime_source"] == "hosts", case
    down = case["downtime_seconds"]
    capsys.readouterr()
    report = tmp_path / "audit.json"
    assert main(["--home", str(f.box.root), "audit", "export", "--format", "json", "-o", str(report), "--witness",
                 str(f.box.inventory)]) == 0
    [exported] = [c for c in json.loads(report.read_text())["cases"] if c["run"] == run]
    assert exported["downtime_source"] == "hosts" and exported["downtime_seconds"] == down, exported
    assert exported["downtime_log_seconds"] == case["downtime_log_seconds"]
    table = tmp_path / "audit.csv"
    assert main(["--home", str(f.box.root), "audit", "export", "--format", "csv", "-o", str(table), "--witness",
                 str(f.box.inventory)]) == 0
    rows = list(csv.reader(table.with_name("audit.cases.csv").read_text().splitlines()))
    head = rows[1]
    [row] = [r for r in rows[2:] if r[head.index("run")] == run]
    assert float(row[head.index("host_downtime_seconds")]) == down, row


def test_a_forged_target_is_caught_by_the_hosts_opening_record(
        fleet: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:  # noqa: F811
    """H1 (b): the lock tells the host the target version and the package sha256, the host keeps them in its
    opening record; the log's opening line says 7.1.0.0: `audit verify --witness` ALTERED, naming both (no plan
    file needed). An honest run beside it reads INTACT."""
    f = fleet
    rc, plan = plan_to(f.box, "7.0.4.2")
    assert rc == 0
    assert upgrader(f.box, "run", str(plan), "--approval", str(approve(f.box, plan))) == 0
    opened = json.loads((f["app-01"].state_dir / "runs-opened.jsonl").read_text().splitlines()[-1])
    assert opened["target"] == "7.0.4.2" and opened["current"] == "7.0.4.1" and len(opened["package"]) == 64
    rc, text = cli(f.box, capsys, "audit", "verify", "--witness", str(f.box.inventory))
    assert rc == 0 and text.startswith("INTACT"), text
    run = evil_run(f.box, tmp_path, "target", "7.0.4.5")
    rc, text = cli(f.box, capsys, "audit", "verify", "--witness", str(f.box.inventory))
    assert rc == ALTERED and text.startswith("ALTERED"), text
    assert (f"host app-01's opening record of run {run} differs from the log: target is 7.0.4.5 on the host, "
            "7.1.0.0 in the log (ALTERED)") in text, text
    rc, zh = cli(f.box, capsys, "audit", "verify", "--witness", str(f.box.inventory), "--lang", "zh")
    assert rc == ALTERED and "目标版本：主机记为 7.0.4.5，日志为 7.1.0.0" in zh, zh
    rc, text = cli(f.box, capsys, "audit", "case", run, "--witness", str(f.box.inventory))
    assert rc == ALTERED, text


def test_verify_derives_a_runs_exit_code_as_the_engine_does() -> None:
    """The verifier's table of each outcome's exit code is the engine's (an honest run's end never reads edited)."""
    from upgrader.audit.log import OUTCOME_EXIT as verifiers
    from upgrader.core.engine import OUTCOME_EXIT as engines

    assert verifiers == engines
