"""Issue 20, attack20r11 H0 and M3, played as the engineer: the shipped log writer (`upgrader.audit.log.AuditLog`)
and the operator key the engineer's controller holds append a made-up run and sign it; the auditor runs the shipped
CLI over the real sshd.

- H0: a signed run whose opening line names app-01, with a host_started and a host_finished line there (needs a
  person: "install failed half-way") but no phase, and a real approval never used: app-01 keeps opening records of
  the log's earlier runs and none of this one: ALTERED, "the run never ran there", in verify and in the case
  (the attacker's sandbox read INTACT, exit 0: the run was never held to the host's records). The same run with
  a failed preflight (refused before the lock: nothing to open), and an honest run refused at its preflight by
  another run's lock, read INTACT.
- M3: a made-up run or rollback whose opening line names no host (`hosts: []`), and a run whose approval has no
  digest: ALTERED at that line (INTACT before); the case with --approvals says the approval names no file and exits
  6. An approval without a digest no longer counts towards approvals.required."""

from __future__ import annotations

import copy
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import approve, kill_processes_under, plan_to, upgrader

from fleet import Fleet
from test_audit_witness_attacks_2 import ALTERED, fleet, log_of, records, run_once, verify  # noqa: F401
from upgrader.audit.log import AuditLog
from upgrader.cli import main
from upgrader.trust.keys import load_private_key


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def engineer_appends(f: Fleet, run: str, lines: list[tuple[str, dict[str, Any]]]) -> dict[str, int]:
    """The engineer appends ``lines`` (event, fields) of ``run`` with the stock writer and signs them with the
    operator key (as upgrader closes a run); {event: its first line number}."""
    path = log_of(f)
    actor = records(path)[-1]["actor"]
    log = AuditLog(path, actor)
    for event, kw in lines:
        log.append(event, run=run, time=now(), mono=time.monotonic(), **kw)
        time.sleep(0.01)
    log.checkpoint(run=run, time=now(), signer="operator@customer", key=load_private_key(str(f.box.operator_key)),
                   mono=time.monotonic())
    seen: dict[str, int] = {}
    for r in records(path):
        if r.get("run") == run:
            seen.setdefault(r["event"], int(r["seq"]))
    return seen


def made_up_run(f: Fleet, version: str, *, preflight_failed: bool = False) -> tuple[str, dict[str, int]]:
    """A real plan to ``version`` and its real approval (never used), then a made-up run of it appended and signed:
    run_started (the honest run's opening line with this plan, target and approval), approval_accepted,
    host_started, (a failed preflight), host_finished needs_person, run_finished exit 5."""
    rc, plan = plan_to(f.box, version)
    assert rc == 0
    approve(f.box, plan)
    log = records(log_of(f))
    made = [r["data"] for r in log if r["event"] == "approval_created"][-1]
    honest = [r for r in log if r["event"] == "run_started"][0]["data"]
    approval = {k: made[k] for k in ("approver", "key", "expires", "digest", "comment", "after_hours")}
    data = copy.deepcopy(honest)
    data.update(plan=made["plan"], target=version, approvals=[approval])
    for h in data["hosts"]:
        h["target"] = version
    run = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-f0f0f7"
    why = "install failed half-way: service down, data directory damaged"
    middle: list[tuple[str, dict[str, Any]]] = [("host_started", {"host": "app-01"})]
    if preflight_failed:
        why = "preflight: the host's lock is held by another run"
        middle += [("phase_started", {"host": "app-01", "phase": "preflight"}),
                   ("phase_finished", {"host": "app-01", "phase": "preflight", "outcome": "failed",
                                       "data": {"seconds": 0.1, "detail": why, "failure": "locked"}})]
    lines = engineer_appends(f, run, [
        ("run_started", {"data": data}),
        ("approval_accepted", {"outcome": "accepted", "data": approval}),
        *middle,
        ("host_finished", {"host": "app-01", "outcome": "needs_person",
                           "data": {"version": None, "error": why, "rollback_cause": None}}),
        ("run_finished", {"data": {"exit_code": 5, "stopped_early": None, "outcomes": {"app-01": "needs_person"}}}),
    ])
    return run, lines


def case(f: Fleet, capsys: pytest.CaptureFixture[str], run: str, *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["--home", str(f.box.root), "audit", "case", run, *extra])
    captured = capsys.readouterr()
    text = " ".join((captured.out + captured.err).split())
    assert "internal error" not in text, text
    return rc, text


def test_a_made_up_run_that_names_a_host_but_no_phase_is_altered_by_the_hosts_records(
        fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    """H0: app-01 keeps the honest run's opening record, not the made-up one's: ALTERED in verify (with the plans
    and the approvals, which match) and in the case, en and zh; the host still runs the honest run's version."""
    f = fleet
    run_once(f)
    rc, _, text = verify(f, capsys, "--plans", str(f.box.plans), "--approvals", str(f.box.approvals))
    assert rc == 0 and text.startswith("INTACT"), text
    fake, _ = made_up_run(f, "7.0.4.3")
    rc, report, text = verify(f, capsys, "--plans", str(f.box.plans), "--approvals", str(f.box.approvals))
    assert rc == ALTERED and text.startswith("ALTERED"), text
    assert (f"the log says signed run {fake} reached host app-01 (took its lock or ended there), but the host keeps "
            "no opening record of that run, though it keeps those of earlier runs of the log: the run never ran "
            "there (ALTERED)") in text, text
    assert f"signed run {fake} reached host app-01" in json.dumps(report["witness"]["problems"])
    rc, text = case(f, capsys, fake, "--witness", str(f.box.inventory), "--approvals", str(f.box.approvals))
    assert rc == ALTERED, text
    assert f"the log says signed run {fake} reached host app-01" in text, text
    rc, zh = case(f, capsys, fake, "--witness", str(f.box.inventory), "--lang", "zh")
    assert rc == ALTERED and f"日志称已签名的运行 {fake} 到达了主机 app-01" in zh, zh
    opened = records(f["app-01"].state_dir / "runs-opened.jsonl")
    assert fake not in {r.get("as") for r in opened} and len(opened) == 1


def test_a_run_that_says_it_stopped_at_preflight_is_not_held_to_an_opening_record(
        fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    """The engine takes a host's lock in its preflight: a run whose preflight failed there (another run's lock) may
    have no opening record on the host. Its host_finished needs_person is no claim that it ran there: not ALTERED by
    the host's records (the checks of the run's own lines stand)."""
    f = fleet
    run_once(f)
    fake, _ = made_up_run(f, "7.0.4.3", preflight_failed=True)
    rc, report, text = verify(f, capsys)
    assert "never ran there" not in text, text
    assert fake not in json.dumps(report["witness"]["problems"]), report["witness"]["problems"]
    assert rc == 0 and text.startswith("INTACT"), text


def test_an_honest_run_refused_at_its_preflight_by_another_runs_lock_reads_intact(
        fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    """The honest counterpart of H0: app-01's lock is held by another run, so the second run's preflight fails
    there before it takes the lock (host_started, a failed preflight, host_finished needs_person, exit 5) and the
    host keeps no opening record of it. Once that lock is gone the log reads INTACT with the hosts' records."""
    f = fleet
    run_once(f)
    rc, plan = plan_to(f.box, "7.0.4.3")
    assert rc == 0
    lock = f["app-01"].state_dir / "lock"
    lock.write_text(json.dumps({"run": "20261203T020000Z-dead02", "controller": "ops-box", "user": "li",
                                "time": 1764727200.0}))
    assert upgrader(f.box, "run", str(plan), "--approval", str(approve(f.box, plan))) == 5
    lock.unlink()
    refused = [r for r in records(log_of(f)) if r["event"] == "run_started"][-1]["run"]
    mine = [(r["event"], r.get("phase"), r.get("outcome")) for r in records(log_of(f)) if r.get("run") == refused]
    assert ("host_started", None, None) in mine and ("phase_finished", "preflight", "failed") in mine, mine
    assert ("host_finished", None, "needs_person") in mine, mine
    assert refused not in {r.get("as") for r in records(f["app-01"].state_dir / "runs-opened.jsonl")}
    rc, _, text = verify(f, capsys)
    assert rc == 0 and text.startswith("INTACT"), text


def test_a_made_up_run_or_rollback_that_names_no_host_is_altered(
        fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    """M3: a rollback of the honest run naming no host, its end exit 0 with no outcome, signed: ALTERED at its
    opening line (INTACT before; the honest run's case listed it as a later successful rollback)."""
    f = fleet
    run, _, _ = run_once(f)
    policy = [r for r in records(log_of(f)) if r["event"] == "run_started"][0]["data"]["policy"]
    label = f"{run}/rollback-{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%dT%H%M%SZ')}-abc123"
    lines = engineer_appends(f, label, [
        ("rollback_requested", {"data": {"of_run": run, "hosts": [], "batch": 1, "max_failures": 0,
                                         "window": {"inside": True, "reason": "rollback"}, "confirmed": "--yes",
                                         "break_lock": False, "policy": policy}}),
        ("run_finished", {"data": {"exit_code": 0, "stopped_early": None, "outcomes": {}}}),
    ])
    rc, _, text = verify(f, capsys)
    assert rc == ALTERED and text.startswith("ALTERED"), text
    assert (f"line {lines['rollback_requested']}: not an event upgrader writes: its rollback_requested line names no "
            "host ('hosts' is []): upgrader opens a run, resume or rollback only for at least one host") in text, text
    capsys.readouterr()
    assert main(["--home", str(f.box.root), "audit", "verify", "--lang", "zh"]) == ALTERED
    zh = " ".join(capsys.readouterr().out.split())
    assert f"第 {lines['rollback_requested']} 行" in zh and "rollback_requested 行没有列出任何主机" in zh, zh
    rc, text = case(f, capsys, run, "--witness", str(f.box.inventory))
    assert rc == ALTERED, text


def test_a_made_up_run_whose_approval_has_no_digest_is_altered_and_its_case_names_no_file(
        fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    """M3: the made-up run of H0 with its approval's digest left out (and hosts: [] left as they are): ALTERED at
    its opening line; the case with --approvals shows that no file has the approval and exits 6; --approvals names
    the approval without a digest and no longer counts it towards approvals.required."""
    f = fleet
    run_once(f)
    rc, plan = plan_to(f.box, "7.0.4.3")
    assert rc == 0
    approve(f.box, plan)
    log = records(log_of(f))
    made = [r["data"] for r in log if r["event"] == "approval_created"][-1]
    data = copy.deepcopy([r for r in log if r["event"] == "run_started"][0]["data"])
    data.update(plan=made["plan"], target="7.0.4.3", approvals=[
        {k: made[k] for k in ("approver", "key", "expires", "comment", "after_hours")}])
    fake = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-f0f0f1"
    lines = engineer_appends(f, fake, [
        ("run_started", {"data": data}),
        ("run_finished", {"data": {"exit_code": 0, "stopped_early": None, "outcomes": {}}}),
    ])
    rc, _, text = verify(f, capsys, "--approvals", str(f.box.approvals))
    assert rc == ALTERED and text.startswith("ALTERED"), text
    assert (f"line {lines['run_started']}: not an event upgrader writes: its run_started line names an approval "
            "without its digest (64 hex digits)") in text, text
    assert f"run {fake} (line {lines['run_started']}) names an approval by engineer@vendor without its digest" in text
    assert f"run {fake} (line {lines['run_started']}) lists 0 approval key(s), but its policy" in text, text
    rc, text = case(f, capsys, fake, "--approvals", str(f.box.approvals))
    assert rc == ALTERED, text
    assert f"approval file: none in {f.box.approvals} has this digest" in text, text


@pytest.fixture(autouse=True)
def _no_leftovers(tmp_path: Path) -> Iterator[None]:
    yield
    kill_processes_under(tmp_path)
