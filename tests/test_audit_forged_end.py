"""Issue 20, attack20r10 H1 (a made-up run reads INTACT) and M2 (a run's end moved later), played as the engineer:
the shipped log writer (`upgrader.audit.log.AuditLog`) and the operator key the engineer's controller holds append
lines and sign them; the shipped CLI, as the auditor runs it, must not read INTACT.

- H1a: a run that touched no host (its opening line, a run_finished that says a host was restored or committed, a
  checkpoint) is an edited end: the engine writes a host_finished line for every host it changes or leaves to a
  person. ALTERED at the run_finished line, en and zh, without witnesses.
- H1c: an upgrade run whose opening line lists fewer approvals than the policy requires, checked with --approvals
  or --plans.
- M2: see test_audit_witness_clock_4.py (over the real sshd)."""

from __future__ import annotations

import copy
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import plan_to, run_plan

from upgrader.audit.log import AuditLog
from upgrader.cli import main
from upgrader.cli.commands.demo import Sandbox
from upgrader.trust.keys import load_private_key

ALTERED = 6


def records(box: Sandbox) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (box.root / "audit" / "audit.jsonl").read_bytes().splitlines()]


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def engineer_appends(box: Sandbox, lines: list[tuple[str, dict[str, Any]]], run: str) -> int:
    """The engineer appends ``lines`` (event, fields) of ``run`` with the stock writer and closes them with a
    checkpoint signed by the operator key on the controller; the line number of its run_finished line."""
    path = box.root / "audit" / "audit.jsonl"
    actor = records(box)[-1]["actor"]
    log = AuditLog(path, actor)
    for event, kw in lines:
        log.append(event, run=run, time=now(), mono=time.monotonic(), **kw)
    log.checkpoint(run=run, time=now(), signer="operator@customer", key=load_private_key(str(box.operator_key)),
                   mono=time.monotonic())
    return int(next(r["seq"] for r in records(box) if r.get("run") == run and r["event"] == "run_finished"))


def verify(box: Sandbox, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["--home", str(box.root), "audit", "verify", *argv])
    captured = capsys.readouterr()
    text = " ".join((captured.out + captured.err).split())
    assert "Traceback" not in text, text
    return rc, text


def committed_run(box: Sandbox) -> str:
    rc, plan = plan_to(box, "7.0.4.2")
    assert rc == 0
    assert run_plan(box, plan) == 0
    return str([r["run"] for r in records(box) if r.get("event") == "run_started"][-1])


def test_a_made_up_rollback_that_touched_no_host_is_altered(sandbox: Sandbox,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """H1a: a rollback of a committed run that never reached app-01 (no host line), its end saying app-01 was
    restored, signed by the operator key: ALTERED (exit 6) at its run_finished line, en and zh; INTACT before."""
    box = sandbox
    run = committed_run(box)
    rc, text = verify(box, capsys)
    assert rc == 0 and text.startswith("INTACT"), text
    opened = next(r for r in records(box) if r.get("run") == run and r["event"] == "run_started")
    label = f"{run}/rollback-20261205T023412Z-abc123"
    line = engineer_appends(box, [
        ("rollback_requested", {"data": {"of_run": run, "hosts": ["app-01"], "batch": 1, "max_failures": 0,
                                         "window": {"inside": True, "reason": "rollback"}, "confirmed": "--yes",
                                         "break_lock": False, "policy": opened["data"].get("policy")}}),
        ("run_finished", {"data": {"exit_code": 0, "stopped_early": None, "outcomes": {"app-01": "restored"}}}),
    ], label)
    rc, text = verify(box, capsys)
    assert rc == ALTERED and text.startswith("ALTERED"), text
    assert (f"line {line}: run {label} ends with host app-01 restored, but no host_finished line of the run (or of "
            "an earlier part of it) ends that host so: the run's end was edited") in text, text
    rc, zh = verify(box, capsys, "--lang", "zh")
    assert rc == ALTERED and zh.startswith("已被篡改"), zh
    assert f"第 {line} 行" in zh and f"运行 {label} 的结束行说主机 app-01" in zh and "没有任何 host_finished 行" in zh, zh
    capsys.readouterr()
    assert main(["--home", str(box.root), "audit", "case", label]) == ALTERED


def test_a_made_up_upgrade_run_without_approvals_is_altered(sandbox: Sandbox,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """H1a and H1c: an honest run's opening line replayed under a new id with no approval and a new target, its end
    saying app-01 committed, no host line: ALTERED at the run_finished line; its opening line with fewer approvals
    than the policy requires is named by --approvals (and --plans) too."""
    box = sandbox
    run = committed_run(box)
    opened = next(r for r in records(box) if r.get("run") == run and r["event"] == "run_started")
    data = copy.deepcopy(opened["data"])
    data["target"] = "7.0.4.5"
    data["approvals"] = []
    for h in data.get("hosts") or []:
        h["target"] = "7.0.4.5"
    forged = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-f0f0f0"
    line = engineer_appends(box, [
        ("run_started", {"data": data}),
        ("run_finished", {"data": {"exit_code": 0, "stopped_early": None, "outcomes": {"app-01": "committed"}}}),
    ], forged)
    rc, text = verify(box, capsys)
    assert rc == ALTERED and text.startswith("ALTERED"), text
    assert f"line {line}: run {forged} ends with host app-01 committed, but no host_finished line" in text, text
    line = int(next(r["seq"] for r in records(box) if r.get("run") == forged and r["event"] == "run_started"))
    for flag, folder in (("--approvals", box.approvals), ("--plans", box.plans)):
        rc, text = verify(box, capsys, flag, str(folder))
        assert rc == ALTERED, text
        assert (f"run {forged} (line {line}) lists 0 approval key(s), but its policy" in text
                and "requires 1: upgrader never runs with fewer" in text), text
    rc, zh = verify(box, capsys, "--approvals", str(box.approvals), "--lang", "zh")
    assert rc == ALTERED and f"运行 {forged}（第 {line} 行）只列出 0 个批准密钥" in zh, zh
    capsys.readouterr()
    assert main(["--home", str(box.root), "audit", "case", forged, "--approvals", str(box.approvals)]) == ALTERED
    out = " ".join(capsys.readouterr().out.split())
    assert f"ALTERED: run {forged} (line {line}) lists 0 approval key(s)" in out, out


def test_honest_runs_have_their_approval_count_checked_and_read_intact(sandbox: Sandbox,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The honest run lists the one approval the demo policy requires: INTACT with --approvals and --plans, and no
    approval count is left unchecked (the home's policy is the run's)."""
    box = sandbox
    committed_run(box)
    rc, text = verify(box, capsys, "--approvals", str(box.approvals), "--plans", str(box.plans))
    assert rc == 0 and text.startswith("INTACT"), text
    assert "approval counts not checked" not in text and "approval key(s)" not in text, text
