"""Issue 20, attack20r11 H1: `audit case` and `audit export` named a requester who never requested, as fact.

The engineer's controller (the shipped CLI with the log's writer changed, a child process) writes another person
(ciso@hq, another key) as the run's requester. The shipped CLI, as the auditor runs it:
- the run_started line's requester against the log's own plan_created line of the same plan digest: ALTERED naming
  the line (`audit verify`, `audit case`; INTACT, exit 0, before);
- when the controller also wrote the plan's plan_created line so (nothing in the log contradicts it): the case and
  the exports mark the requester "(the controller's word)" (`unchecked` in JSON); `audit case --approvals` holds it
  to the approval file's signed `requester:`, `audit case --plans` and `audit export --plans` to the plan file:
  ALTERED, exit 6 (INTACT, exit 0, before; neither command had --plans);
- an honest run: INTACT with --plans and --approvals, the requester then not marked."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import approve, plan_to, sandbox, signed_plan, upgrader  # noqa: F401

from upgrader.cli import main
from upgrader.cli.commands.demo import Sandbox

ALTERED = 6

#: the engineer's controller: the shipped upgrader, with the log's writer changed to name ciso@hq (and another key)
#: as the requester in the lines argv[1] names (run_started; "plan" also plan_created)
EVIL = r'''
import sys
from upgrader.audit import log as L
from upgrader.cli import main

forge = sys.argv.pop(1).split(",")
orig = L.AuditLog.append


def append(self, event, **kw):
    data = dict(kw.get("data") or {})
    if event in forge and isinstance(data.get("requester"), dict):
        data["requester"] = {**data["requester"], "user": "ciso", "host": "hq"}
        if "key" in data["requester"]:
            data["requester"]["key"] = "SHA256:qGIxCisoCisoCisoCisoCisoCisoCisoCisoCisoCis"
        kw["data"] = data
    return orig(self, event, **kw)


L.AuditLog.append = append
sys.argv[0] = "upgrader"
sys.exit(main())
'''


def evil(box: Sandbox, tmp_path: Path, forge: str, *argv: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "evil_controller.py"
    script.write_text(EVIL)
    return subprocess.run([sys.executable, str(script), forge, "--home", str(box.root), *signed_plan(box, argv)],
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
                          env={**os.environ, "LANG": "C.UTF-8"})


def forged_run(box: Sandbox, tmp_path: Path, forge: str) -> str:
    """An approved run to 7.0.4.2 whose requester the controller forged in ``forge``'s lines; its run id."""
    out = box.plans / "to-7.0.4.2.json"
    if "plan_created" in forge:
        done = evil(box, tmp_path, forge, "plan", "--inventory", str(box.inventory), "--to", "7.0.4.2", "--catalog",
                    str(box.catalog), "-o", str(out))
        assert done.returncode == 0, done.stdout + done.stderr
    else:
        rc, out = plan_to(box, "7.0.4.2")
        assert rc == 0
    approval = approve(box, out)
    done = evil(box, tmp_path, forge, "run", str(out), "--approval", str(approval))
    assert done.returncode == 0, done.stdout + done.stderr
    return [r["run"] for r in records(box) if r.get("event") == "run_started"][-1]


def records(box: Sandbox) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (box.root / "audit" / "audit.jsonl").read_bytes().splitlines()]


def cli(box: Sandbox, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["--home", str(box.root), *argv])
    captured = capsys.readouterr()
    text = " ".join((captured.out + captured.err).split())
    assert "Traceback" not in text, text
    return rc, text


def case_json(box: Sandbox, capsys: pytest.CaptureFixture[str], run: str, *extra: str) -> tuple[int, dict[str, Any]]:
    rc, out = cli(box, capsys, "audit", "case", run, "--json", *extra)
    return rc, json.loads(out)["case"]


def test_a_requester_the_logs_own_plan_line_contradicts_is_altered(
        sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The run_started line names ciso@hq; the log's plan_created line of the same plan digest names the real
    requester: ALTERED naming both lines (verify and the case), exit 6."""
    box = sandbox
    run = forged_run(box, tmp_path, "run_started")
    opening = next(r for r in records(box) if r.get("run") == run and r["event"] == "run_started")
    made = next(r for r in records(box) if r["event"] == "plan_created" and r["data"]["plan"] == opening["data"]["plan"])
    assert opening["data"]["requester"]["user"] == "ciso" != made["data"]["requester"]["user"]
    rc, text = cli(box, capsys, "audit", "verify")
    assert rc == ALTERED and text.startswith("ALTERED"), text
    assert f"line {opening['seq']}: run {run} names requester user 'ciso', but line {made['seq']} (plan_created of " \
           "the same plan" in text, text
    rc, text = cli(box, capsys, "audit", "case", run)
    assert rc == ALTERED and text.startswith("ALTERED"), text


def test_a_requester_the_controller_wrote_everywhere_is_its_word_until_a_file_holds_it(
        sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The plan's plan_created line and the run's opening line both name ciso@hq: the log agrees with itself.
    The case marks the requester as the controller's word (en, zh, JSON, CSV export); the approval file's signed
    requester and the plan file contradict it: ALTERED, exit 6, naming the file."""
    box = sandbox
    run = forged_run(box, tmp_path, "plan_created,run_started")
    line = next(r["seq"] for r in records(box) if r.get("run") == run and r["event"] == "run_started")
    rc, text = cli(box, capsys, "audit", "verify")
    assert rc == 0 and text.startswith("INTACT"), text  # nothing in the log alone tells the lie
    rc, case = case_json(box, capsys, run)
    assert rc == 0 and case["requested"]["user"] == "ciso", case["requested"]
    assert {"requested.user", "requested.host", "requested.key"} <= set(case["unchecked"]), case["unchecked"]
    rc, text = cli(box, capsys, "audit", "case", run)
    assert rc == 0 and "requested by: ciso@hq key SHA256:qGIx" in text, text
    assert "(the controller's word)" in text.split("requested by: ", 1)[1].split("; plan ", 1)[0], text
    rc, zh = cli(box, capsys, "audit", "case", run, "--lang", "zh")
    assert rc == 0 and "（控制端的一面之词）" in zh.split("申请人：", 1)[1].split("；计划", 1)[0], zh
    out = tmp_path / "report.csv"
    rc, text = cli(box, capsys, "audit", "export", "--format", "csv", "-o", str(out))
    assert rc == 0, text
    rows = list(csv.reader(out.with_name("report.cases.csv").read_text().splitlines()))
    header = rows[1]
    row = next(r for r in rows[2:] if r[0] == run)
    assert row[header.index("requester")] == "ciso@hq (the controller's word)", row

    rc, text = cli(box, capsys, "audit", "case", run, "--approvals", str(box.approvals))
    assert rc == ALTERED and "ALTERED" in text, text
    assert f"run {run} (line {line}) names requester user ciso, its approval file" in text, text
    signed_for = json.loads((box.plans / "to-7.0.4.2.json").read_text())["requester"]["user"]
    assert signed_for != "ciso" and f"signs requester {signed_for}" in text, text
    rc, zh = cli(box, capsys, "audit", "case", run, "--approvals", str(box.approvals), "--lang", "zh")
    assert rc == ALTERED and f"运行 {run}（第 {line} 行）记的申请人用户是 ciso" in zh, zh
    rc, text = cli(box, capsys, "audit", "case", run, "--plans", str(box.plans))
    assert rc == ALTERED and f"ALTERED: run {run} (line {line}) names requester user ciso, its plan file" in text, text
    rc, zh = cli(box, capsys, "audit", "case", run, "--plans", str(box.plans), "--lang", "zh")
    assert rc == ALTERED and f"已被篡改：运行 {run}（第 {line} 行）记的申请人用户是 ciso" in zh, zh
    rc, text = cli(box, capsys, "audit", "export", "--format", "csv", "-o", str(out), "--plans", str(box.plans))
    assert rc == ALTERED, text
    rc, text = cli(box, capsys, "audit", "export", "--format", "json", "-o", str(tmp_path / "r.json"), "--plans",
                   str(box.plans), "--json")
    assert rc == ALTERED and json.loads(text)["exit_code"] == ALTERED, text


def test_an_honest_requester_is_held_by_the_plan_and_approval_files(
        sandbox: Sandbox, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The honest run: INTACT with --plans and --approvals; the plan file holds user, host and the key that signed
    it, so the requester is not marked; an approval file alone holds the user only; the export with --plans too."""
    box = sandbox
    rc, plan = plan_to(box, "7.0.4.2")
    assert rc == 0
    assert upgrader(box, "run", str(plan), "--approval", str(approve(box, plan))) == 0
    run = [r["run"] for r in records(box) if r.get("event") == "run_started"][-1]
    rc, case = case_json(box, capsys, run, "--plans", str(box.plans), "--approvals", str(box.approvals))
    assert rc == 0, case
    assert not {"requested.user", "requested.host", "requested.key"} & set(case["unchecked"]), case["unchecked"]
    assert case["requested"]["checked_by"]["key"] == str(plan), case["requested"]
    rc, text = cli(box, capsys, "audit", "case", run, "--plans", str(box.plans))
    assert rc == 0 and f"INTACT: the run's plan file ({plan}) matches the log" in text, text
    assert "(the controller's word)" not in text.split("requested by: ", 1)[1].split("; plan ", 1)[0], text
    rc, case = case_json(box, capsys, run, "--approvals", str(box.approvals))
    assert rc == 0 and "requested.user" not in case["unchecked"] and "requested.key" in case["unchecked"], case
    rc, text = cli(box, capsys, "audit", "case", run, "--approvals", str(box.approvals))
    assert rc == 0 and "(only user by " in text and "the rest is the controller's word)" in text, text
    out = tmp_path / "report.csv"
    rc, text = cli(box, capsys, "audit", "export", "--format", "csv", "-o", str(out), "--plans", str(box.plans))
    assert rc == 0, text
    rows = list(csv.reader(out.with_name("report.cases.csv").read_text().splitlines()))
    row = next(r for r in rows[2:] if r[0] == run)
    assert not row[rows[1].index("requester")].endswith("(the controller's word)"), row
