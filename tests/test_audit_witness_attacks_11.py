"""Issue 20, attack20r12 H1, M1, M3 and LOW, played as the engineer: the shipped log writer (`AuditLog`) and the
operator key the engineer's controller holds append a made-up resume, rollback or run and sign it; the auditor runs
the shipped CLI over the real sshd.

- H1: a resume of a committed run whose lines end the host otherwise (the engine keeps the end a host already had:
  "already finished: nothing to do"), and a rollback that ends the host restored with no lock on a host that keeps
  the run's opening record: ALTERED with the hosts' records (INTACT before). An honest rollback reads INTACT.
- M1: a made-up run naming the approval the honest run spent at its lock: ALTERED in plain `audit verify`, `audit
  show` and `audit case` (the log alone shows it), en and zh.
- M3: a made-up run giving the host another install_dir: `--witness` still gives its verdict (no usage error).
- LOW: a resume line whose `journal` is text, or whose `hosts` are not the run's, is an edited line."""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import approve, kill_processes_under, plan_to, upgrader

from fleet import Fleet
from test_audit_witness_attacks_2 import ALTERED, fleet, log_of, records, run_once, verify  # noqa: F401
from test_audit_witness_attacks_10 import case, engineer_appends
from upgrader.cli import main


def stamp(tag: str) -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + tag


def opening(f: Fleet, run: str) -> dict[str, Any]:
    return next(r for r in records(log_of(f)) if r.get("run") == run and r["event"] == "run_started")["data"]


def made_up_resume(f: Fleet, run: str, outcome: str, *, journal: Any = None, hosts: Any = None) -> str:
    data = opening(f, run)
    label = f"{run}/resume-{stamp('abc777')}"
    engineer_appends(f, label, [
        ("resume_requested", {"data": {
            "of_run": run, "hosts": ["app-01"] if hosts is None else hosts,
            "journal": {"app-01": {"intents": ["preflight", "backup", "stop", "install", "start", "observe"],
                                   "ended": outcome}} if journal is None else journal,
            "policy": data["policy"]}}),
        ("host_finished", {"host": "app-01", "outcome": outcome,
                           "data": {"version": "7.0.4.1", "error": "already finished before the interruption: "
                                    "nothing to do", "rollback_cause": None}}),
        ("run_finished", {"data": {"exit_code": 1 if outcome == "rolled_back" else 0, "stopped_early": None,
                                   "outcomes": {"app-01": outcome}}}),
    ])
    return label


def test_a_made_up_resume_that_changes_the_end_of_a_finished_run_is_altered(
        fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    """H1: the honest run committed app-01; a resume of it that says it ended app-01 rolled back (no phase, no lock)
    cannot be written by the engine (a resume keeps a finished host's end): ALTERED, en and zh, in verify and in
    the run's case; the host still runs the new version."""
    f = fleet
    run, _, _ = run_once(f)
    rc, _, text = verify(f, capsys)
    assert rc == 0 and text.startswith("INTACT"), text
    label = made_up_resume(f, run, "rolled_back")
    rc, report, text = verify(f, capsys)
    assert rc == ALTERED and text.startswith("ALTERED"), text
    assert (f"the log says resume {label} ended host app-01 rolled_back, but the run it resumes, {run}, had already "
            "ended committed there; a resume keeps the end a host already had") in text, text
    assert label in json.dumps(report["witness"]["problems"])
    rc, text = case(f, capsys, run, "--witness", str(f.box.inventory))
    assert rc == ALTERED, text
    rc, zh = case(f, capsys, label, "--witness", str(f.box.inventory), "--lang", "zh")
    assert rc == ALTERED and f"日志称续跑 {label} 在主机 app-01 上以" in zh, zh
    assert "(None)" not in text and "(None)" not in zh


def test_a_made_up_rollback_that_restores_without_the_lock_is_altered_and_an_honest_one_intact(
        fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    """H1: a rollback of the committed run that ends app-01 restored with no phase: the run took app-01's lock (the
    host keeps its opening record), so the engine restores it only under a lock of its own, and app-01 keeps no
    opening record of the rollback: ALTERED. Before that, an honest `upgrader rollback` of another run reads
    INTACT."""
    f = fleet
    first, _, _ = run_once(f)
    assert upgrader(f.box, "rollback", first, "--yes") == 0
    rc, _, text = verify(f, capsys)
    assert rc == 0 and text.startswith("INTACT"), text
    run, _, _ = run_once(f, "7.0.4.3")
    data = opening(f, run)
    label = f"{run}/rollback-{stamp('abc888')}"
    engineer_appends(f, label, [
        ("rollback_requested", {"data": {"of_run": run, "hosts": ["app-01"], "batch": None, "max_failures": None,
                                         "window": None, "confirmed": None, "break_lock": False,
                                         "policy": data["policy"]}}),
        ("host_finished", {"host": "app-01", "outcome": "restored",
                           "data": {"version": "7.0.4.1", "error": None, "rollback_cause": "requested by the operator"}}),
        ("run_finished", {"data": {"exit_code": 0, "stopped_early": None, "outcomes": {"app-01": "restored"}}}),
    ])
    rc, _, text = verify(f, capsys)
    assert rc == ALTERED, text
    assert (f"the log says {label} ended host app-01 restored, which upgrader does only under the host's lock, but the "
            "host keeps no opening record of this resume/rollback") in text, text
    capsys.readouterr()
    assert main(["--home", str(f.box.root), "audit", "verify", "--witness", str(f.box.inventory), "--lang", "zh"]) \
        == ALTERED
    assert f"日志称 {label} 在主机 app-01 上以" in " ".join(capsys.readouterr().out.split())


def test_a_made_up_run_replaying_a_spent_approval_is_altered_in_every_view(
        fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    """M1: the honest run spent its approval at app-01's lock; a made-up run naming it again (stopped at preflight as
    a locked host does) is ALTERED by the log alone: plain verify, show and case, en and zh."""
    f = fleet
    run, _, _ = run_once(f)
    data = copy.deepcopy(opening(f, run))
    fake = stamp("feed01")
    why = "preflight: the host's lock is held by another run"
    lines = engineer_appends(f, fake, [
        ("run_started", {"data": data}),
        ("approval_accepted", {"outcome": "accepted", "data": data["approvals"][0]}),
        ("host_started", {"host": "app-01"}),
        ("phase_started", {"host": "app-01", "phase": "preflight"}),
        ("phase_finished", {"host": "app-01", "phase": "preflight", "outcome": "failed",
                            "data": {"seconds": 0.1, "detail": why, "failure": "locked"}}),
        ("host_finished", {"host": "app-01", "outcome": "needs_person",
                           "data": {"version": None, "error": why, "rollback_cause": None}}),
        ("run_finished", {"data": {"exit_code": 5, "stopped_early": None, "outcomes": {"app-01": "needs_person"}}}),
    ])
    home = ["--home", str(f.box.root), "audit"]
    capsys.readouterr()
    assert main([*home, "verify"]) == ALTERED
    text = " ".join(capsys.readouterr().out.split())
    assert (f"line {lines['run_started']}: run {fake} names approval {data['approvals'][0]['digest'][:16]}…, which "
            f"run {run} (line ") in text, text
    assert "an approval is used once" in text, text
    assert main([*home, "verify", "--lang", "zh"]) == ALTERED
    assert "一份批准只能用一次" in capsys.readouterr().out
    assert main([*home, "show"]) == ALTERED
    capsys.readouterr()
    rc, text = case(f, capsys, fake, "--approvals", str(f.box.approvals))
    assert rc == ALTERED and text.startswith("ALTERED"), text


def test_a_made_up_run_giving_the_host_another_install_dir_does_not_hide_the_verdict(
        fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    """M3: a made-up run (stopped at preflight) whose opening line gives app-01 another install_dir, and one whose
    install_dir is a list: `audit verify --witness` reads the host at the inventory's dir (where it keeps the honest
    run's records), names the line as contradicting the host and gives its verdict, ALTERED (exit 6), en and zh;
    the case too (before: a usage error, exit 2, blaming the auditor's inventory)."""
    f = fleet
    rc, plan = plan_to(f.box, "7.0.4.3")
    assert rc == 0
    approve(f.box, plan)
    run, _, _ = run_once(f)
    made = [r["data"] for r in records(log_of(f)) if r["event"] == "approval_created"][0]
    for tag, where in (("feed05", "/srv/app-01"), ("feed06", ["/srv/app-01"])):
        data = copy.deepcopy(opening(f, run))
        approval = {k: made[k] for k in ("approver", "key", "expires", "digest", "comment", "after_hours")}
        data.update(plan=made["plan"], target="7.0.4.3", approvals=[approval])
        data["hosts"][0].update(install_dir=where, target="7.0.4.3")
        fake = stamp(tag)
        why = "preflight: the host's lock is held by another run"
        engineer_appends(f, fake, [
            ("run_started", {"data": data}),
            ("host_started", {"host": "app-01"}),
            ("phase_started", {"host": "app-01", "phase": "preflight"}),
            ("phase_finished", {"host": "app-01", "phase": "preflight", "outcome": "failed",
                                "data": {"seconds": 0.1, "detail": why, "failure": "locked"}}),
            ("host_finished", {"host": "app-01", "outcome": "needs_person",
                               "data": {"version": None, "error": why, "rollback_cause": None}}),
            ("run_finished", {"data": {"exit_code": 5, "stopped_early": None,
                                       "outcomes": {"app-01": "needs_person"}}}),
        ])
        rc, _, text = verify(f, capsys)
        assert rc == ALTERED and text.startswith("ALTERED"), text
        assert f"(run {fake}) gives host app-01 install_dir " in text, text
        assert "/srv/app-01" in text.split(f"(run {fake}) gives host app-01 install_dir ")[1][:30], text
        assert "where it keeps its records of the log's earlier runs: the line contradicts the host (ALTERED)" in text
        capsys.readouterr()
        assert main(["--home", str(f.box.root), "audit", "verify", "--witness", str(f.box.inventory), "--lang",
                     "zh"]) == ALTERED
        assert "该行与主机相矛盾（已被篡改）" in capsys.readouterr().out
        rc, text = case(f, capsys, run, "--witness", str(f.box.inventory))
        assert rc == ALTERED, text
        # the next round starts from an honest log again: only the made-up run's lines differ
        kept = [line for line in log_of(f).read_bytes().splitlines(keepends=True)
                if json.loads(line).get("run") != fake]
        log_of(f).write_bytes(b"".join(kept))


def test_resume_lines_with_a_journal_of_the_wrong_type_or_another_host_are_edited(
        fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    """LOW: a made-up resume whose journal is text, and one naming a host the run does not have: edited lines
    (ALTERED at the resume's opening line), en and zh; a resume's case prints no 'plan file (None)'."""
    f = fleet
    run, _, _ = run_once(f)
    label = made_up_resume(f, run, "committed", journal="app-01 committed")
    capsys.readouterr()
    assert main(["--home", str(f.box.root), "audit", "verify"]) == ALTERED
    text = " ".join(capsys.readouterr().out.split())
    assert "not an event upgrader writes: its resume_requested line's 'journal' is \"app-01 committed\", not an " \
        "object" in text, text
    rc, text = case(f, capsys, label, "--plans", str(f.box.plans))
    assert rc == ALTERED and "(None)" not in text, text
    kept = [line for line in log_of(f).read_bytes().splitlines(keepends=True) if json.loads(line).get("run") != label]
    log_of(f).write_bytes(b"".join(kept))
    rc, _, text = verify(f, capsys)
    assert rc == 0, text
    made_up_resume(f, run, "committed", hosts=["zz-01"])
    capsys.readouterr()
    assert main(["--home", str(f.box.root), "audit", "verify"]) == ALTERED
    text = " ".join(capsys.readouterr().out.split())
    assert f"its resume_requested line names host(s) zz-01, which run {run} does not have" in text, text
    assert main(["--home", str(f.box.root), "audit", "verify", "--lang", "zh"]) == ALTERED
    assert "该 resume_requested 行列出了运行" in capsys.readouterr().out


@pytest.fixture(autouse=True)
def _no_leftovers(tmp_path: Path) -> Iterator[None]:
    yield
    kill_processes_under(tmp_path)


def test_a_made_up_resume_after_a_canary_or_a_first_run_with_a_resumes_id_is_altered(
        fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    """attack20r13 H1, H2: a made-up resume of the honest run that says it goes on after a canary (``after``) and
    commits app-01 (host_started, host_finished committed, no lock) is held to the host like a first run: ALTERED;
    and a made-up first run whose id has a "/" (the shape of a resume's id) is an edited line, whatever it claims."""
    f = fleet
    run, _, _ = run_once(f)
    rc, _, text = verify(f, capsys)
    assert rc == 0 and text.startswith("INTACT"), text
    data = opening(f, run)
    label = f"{run}/resume-{stamp('abc778')}"
    engineer_appends(f, label, [
        ("resume_requested", {"data": {"of_run": run, "hosts": ["app-01"], "after": "canary confirmed",
                                       "journal": {}, "policy": data["policy"]}}),
        ("host_started", {"host": "app-01"}),
        ("host_finished", {"host": "app-01", "outcome": "committed",
                           "data": {"version": "7.0.4.7", "error": None, "rollback_cause": None}}),
        ("run_finished", {"data": {"exit_code": 0, "stopped_early": None, "outcomes": {"app-01": "committed"}}}),
    ])
    rc, report, text = verify(f, capsys)
    assert rc == ALTERED and text.startswith("ALTERED") and label in text, text
    assert f"the log says signed run {label} reached host app-01" in text, text


def test_a_first_run_with_a_resumes_id_is_an_edited_line(fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    """attack20r13 H2: run_started of "RUN/x" (no first run of upgrader has a "/" in its id): ALTERED from the log
    alone, naming the line."""
    f = fleet
    run, _, _ = run_once(f)
    data = copy.deepcopy(opening(f, run))
    lines = engineer_appends(f, f"{stamp('e1e1e1')}/x", [
        ("run_started", {"data": data}),
        ("host_finished", {"host": "app-01", "outcome": "committed",
                           "data": {"version": "7.0.4.5", "error": None, "rollback_cause": None}}),
        ("run_finished", {"data": {"exit_code": 0, "stopped_early": None, "outcomes": {"app-01": "committed"}}}),
    ])
    rc, _, text = verify(f, capsys)
    assert rc == ALTERED and f"line {lines['run_started']}" in text and "is not one upgrader makes" in text, text


@pytest.mark.parametrize("outcome", ["committed", "rolled_back"])
def test_a_made_up_resume_after_a_canary_without_host_started_is_altered(
        fleet: Fleet, capsys: pytest.CaptureFixture[str], outcome: str) -> None:
    """attack20r14 H1: the same made-up continuation with no host_started line (the host's end alone): a resume
    going on after a canary is held as a first run is, by its opening line: ALTERED."""
    f = fleet
    run, _, _ = run_once(f)
    data = opening(f, run)
    label = f"{run}/resume-{stamp('abc779')}"
    engineer_appends(f, label, [
        ("resume_requested", {"data": {"of_run": run, "hosts": ["app-01"], "after": "canary confirmed",
                                       "journal": {}, "policy": data["policy"]}}),
        ("host_finished", {"host": "app-01", "outcome": outcome,
                           "data": {"version": "7.0.4.7", "error": None, "rollback_cause": None}}),
        ("run_finished", {"data": {"exit_code": 0 if outcome == "committed" else 1, "stopped_early": None,
                                   "outcomes": {"app-01": outcome}}}),
    ])
    rc, _, text = verify(f, capsys)
    assert rc == ALTERED and text.startswith("ALTERED") and label in text, text
