"""Issue 20, attack20r14 H1 and H2, played as the engineer: the shipped log writer (`AuditLog`) and the operator key
the engineer's controller holds append a made-up continuation or first run and sign it; the auditor runs the shipped
CLI over the real sshd.

- H1: a resume that says it goes on after a canary (``after``) of a run that never paused after one (its run_finished
  left no host waiting), or with a host that run ended, or a second time after a continuation that finished: an edited
  line (ALTERED from the log alone, naming the line), whatever the continuation ends the host (committed, rolled
  back, needing a person) and with or without host_started. An honest canary pause and `resume --yes` reads INTACT.
- H2: a made-up first run ending a host committed or rolled back after a preflight that failed or never finished,
  or needing a person after a preflight that failed otherwise than locked or unreachable: an edited line (the engine
  ends such a host refused, stale, unchanged...). The locked shape (an honest run meeting another's lock) is no
  edited line.
- The case of a run lists a later resume or rollback that no host witnessed as the controller's word."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import approve, kill_processes_under, plan_to, upgrader

from fleet import Fleet, build_fleet
from sshd import SSHServer
from test_audit_witness_attacks_2 import ALTERED, fleet, log_of, records, run_once, verify  # noqa: F401
from test_audit_witness_attacks_10 import case, engineer_appends, made_up_run
from test_audit_witness_attacks_11 import opening, stamp
from upgrader.cli import main


@pytest.fixture
def fleet2(tmp_path: Path, sshd: SSHServer) -> Iterator[Fleet]:
    f = build_fleet(tmp_path / "fleet2", sshd, 2)
    try:
        yield f
    finally:
        f.stop_all()
        kill_processes_under(tmp_path)


def made_up_continuation(f: Fleet, run: str, host: str, outcome: str, tag: str, *,
                         started: bool = False) -> tuple[str, dict[str, int]]:
    """A resume of ``run`` that says it goes on after the canary with ``host`` and ends it ``outcome``."""
    data = opening(f, run)
    label = f"{run}/resume-{stamp(tag)}"
    lines = engineer_appends(f, label, [
        ("resume_requested", {"data": {"of_run": run, "hosts": [host], "after": "canary confirmed",
                                       "window": data.get("window"), "policy": data["policy"]}}),
        *([("host_started", {"host": host})] if started else []),
        ("host_finished", {"host": host, "outcome": outcome,
                           "data": {"version": "7.0.4.7", "error": None, "rollback_cause": None}}),
        ("run_finished", {"data": {"exit_code": {"committed": 0, "rolled_back": 1, "needs_person": 5}[outcome],
                                   "stopped_early": None, "outcomes": {host: outcome}}}),
    ])
    return label, lines


def zh_verify(f: Fleet, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["--home", str(f.box.root), "audit", "verify", "--witness", str(f.box.inventory), "--lang", "zh"])
    return rc, " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("outcome", ["committed", "rolled_back", "needs_person"])
def test_a_continuation_after_a_canary_of_a_run_that_never_paused_is_an_edited_line(
        fleet: Fleet, capsys: pytest.CaptureFixture[str], outcome: str) -> None:
    """H1: the honest run committed app-01 with no canary; a made-up resume of it "after the canary" (no
    host_started) ends app-01 committed (another version), rolled back or needing a person: ALTERED at the resume's
    opening line, en and zh, in verify and in both cases (INTACT before: the round-13 fix left it to host_started);
    the host still runs the honest run's version."""
    f = fleet
    run, _, _ = run_once(f)
    rc, _, text = verify(f, capsys)
    assert rc == 0 and text.startswith("INTACT"), text
    label, lines = made_up_continuation(f, run, "app-01", outcome, "a5a5a5")
    rc, _, text = verify(f, capsys)
    assert rc == ALTERED and text.startswith("ALTERED"), text
    assert (f"line {lines['resume_requested']}: not an event upgrader writes: its resume_requested line goes on after a "
            f"canary (after 'canary confirmed'), but run {run} did not pause after a healthy canary (its run_finished "
            "line leaves no host waiting)") in text, text
    rc, zh = zh_verify(f, capsys)
    assert rc == ALTERED and f"但运行 {run} 并未在健康的金丝雀之后暂停" in zh, zh
    for which in (run, label):
        rc, text = case(f, capsys, which, "--witness", str(f.box.inventory))
        assert rc == ALTERED and text.startswith("ALTERED"), text
    assert f.versions() == {"app-01": "7.0.4.2"}


def test_an_honest_canary_pause_and_continuation_is_intact_and_a_second_or_a_made_up_one_is_edited(
        fleet2: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    """H1: a run paused after its healthy canary (app-01 committed, app-02 waiting): a made-up continuation of it
    after the canary with app-01 (which the run committed) is an edited line; the honest `resume --yes` then reads
    INTACT with the hosts' records; a second continuation after the canary (app-02) after it finished is an edited
    line too."""
    f = fleet2
    # no --yes and no terminal (the tests' stdin): the run pauses after its healthy canary
    rc, plan = plan_to(f.box, "7.0.4.2")
    assert rc == 0
    approval = approve(f.box, plan)
    assert upgrader(f.box, "run", str(plan), "--approval", str(approval), "--canary", "1") == 0
    run = f.run_dirs()[-1].name
    assert f.versions() == {"app-01": "7.0.4.2", "app-02": "7.0.4.1"}
    kept = log_of(f).read_bytes()
    _, lines = made_up_continuation(f, run, "app-01", "committed", "a6a6a6", started=True)
    rc, _, text = verify(f, capsys)
    assert rc == ALTERED and (f"line {lines['resume_requested']}: not an event upgrader writes: its resume_requested "
                              f"line goes on after a canary with host app-01, which run {run} ended committed, not "
                              "waiting") in text, text
    log_of(f).write_bytes(kept)  # the honest log again: the run goes on
    assert upgrader(f.box, "resume", run, "--yes") == 0
    assert f.versions() == {"app-01": "7.0.4.2", "app-02": "7.0.4.2"}
    honest = [r for r in records(log_of(f)) if r["event"] == "resume_requested"]
    assert len(honest) == 1 and honest[0]["data"]["after"] == "canary confirmed" and honest[0]["data"]["hosts"] == [
        "app-02"]
    # attack20r15 L3: the continuation asks only the host it ran (app-02) to witness it
    assert [r["host"] for r in records(log_of(f)) if r["event"] == "witness_missing"] == []
    rc, _, text = verify(f, capsys)
    assert rc == 0 and text.startswith("INTACT"), text
    rc, text = case(f, capsys, honest[0]["run"], "--witness", str(f.box.inventory))
    assert rc == 0 and text.startswith("INTACT"), text
    _, lines = made_up_continuation(f, run, "app-02", "rolled_back", "a7a7a7")
    rc, _, text = verify(f, capsys)
    assert rc == ALTERED and (f"line {lines['resume_requested']}: not an event upgrader writes: its resume_requested "
                              f"line goes on after a canary (after 'canary confirmed'), but run {run} already went on "
                              "after its canary") in text, text
    rc, zh = zh_verify(f, capsys)
    assert rc == ALTERED and "upgrader 只在金丝雀之后继续一次" in zh, zh
    assert f.versions() == {"app-01": "7.0.4.2", "app-02": "7.0.4.2"}


def first_run_lines(f: Fleet, version: str, middle: list[tuple[str, dict[str, Any]]], outcome: str,
                    error: str) -> tuple[str, dict[str, int]]:
    """A real plan to ``version`` and its real approval (never used), then a made-up first run of it: run_started
    (the honest run's opening line with this plan, target and approval), ``middle``, host_finished ``outcome``."""
    rc, plan = plan_to(f.box, version)
    assert rc == 0
    approve(f.box, plan)
    log = records(log_of(f))
    made = [r["data"] for r in log if r["event"] == "approval_created"][-1]
    data = json.loads(json.dumps([r for r in log if r["event"] == "run_started"][0]["data"]))
    approval = {k: made[k] for k in ("approver", "key", "expires", "digest", "comment", "after_hours")}
    data.update(plan=made["plan"], target=version, approvals=[approval])
    for h in data["hosts"]:
        h["target"] = version
    run = stamp("f2f2f2")
    lines = engineer_appends(f, run, [
        ("run_started", {"data": data}),
        ("approval_accepted", {"outcome": "accepted", "data": approval}),
        *middle,
        ("host_finished", {"host": "app-01", "outcome": outcome,
                           "data": {"version": None, "error": error, "rollback_cause": None}}),
        ("run_finished", {"data": {"exit_code": {"committed": 0, "rolled_back": 1, "needs_person": 5}[outcome],
                                   "stopped_early": None, "outcomes": {"app-01": outcome}}}),
    ])
    return run, lines


STARTED = ("host_started", {"host": "app-01"})
PREFLIGHT = ("phase_started", {"host": "app-01", "phase": "preflight"})


def failed_preflight(failure: str | None) -> tuple[str, dict[str, Any]]:
    return ("phase_finished", {"host": "app-01", "phase": "preflight", "outcome": "failed",
                               "data": {"seconds": 0.1, "detail": "x",
                                        **({"failure": failure} if failure is not None else {})}})


@pytest.mark.parametrize("shape", ["failed-needs-person", "no-failure-needs-person", "failed-rolled-back",
                                   "unfinished-committed"])
def test_a_made_up_first_run_ending_a_host_past_a_preflight_that_did_not_pass_is_an_edited_line(
        fleet: Fleet, capsys: pytest.CaptureFixture[str], shape: str) -> None:
    """H2 (f2, f3, p2): a made-up first run of a real approved plan whose preflight on app-01 failed (as stale, or
    with no failure named) and that ends app-01 needing a person ("install: the service did not stop"), or whose
    preflight failed or never finished and that ends app-01 rolled back or committed: ALTERED at its host_finished
    line, en and zh, in verify and in its case (INTACT before for the needs_person shapes)."""
    f = fleet
    run_once(f)
    middle, outcome = {
        "failed-needs-person": ([STARTED, PREFLIGHT, failed_preflight("stale_plan")], "needs_person"),
        "no-failure-needs-person": ([STARTED, PREFLIGHT, failed_preflight(None)], "needs_person"),
        "failed-rolled-back": ([STARTED, PREFLIGHT, failed_preflight("locked")], "rolled_back"),
        "unfinished-committed": ([STARTED, PREFLIGHT], "committed"),
    }[shape]
    fake, lines = first_run_lines(f, "7.0.4.3", middle, outcome, "install: the service did not stop; left for a person")
    rc, _, text = verify(f, capsys)
    assert rc == ALTERED and text.startswith("ALTERED"), text
    said = (f"line {lines['host_finished']}: not an event upgrader writes: its host_finished line ends host app-01 "
            f"{outcome} in run {fake}, whose preflight there ")
    assert said in text, text
    rc, zh = zh_verify(f, capsys)
    assert rc == ALTERED and f"该 host_finished 行称运行 {fake} 在主机 app-01 上以" in zh, zh
    rc, text = case(f, capsys, fake, "--witness", str(f.box.inventory))
    assert rc == ALTERED and text.startswith("ALTERED"), text
    assert f.versions() == {"app-01": "7.0.4.2"}


def test_a_first_run_meeting_another_runs_lock_is_no_edited_line(
        fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    """H2's control: the engine ends a host whose lock another run holds needing a person after its failed preflight
    ("locked"): that shape is no edited line (the log alone cannot call it made up; a spent approval or the host's
    records can)."""
    f = fleet
    run_once(f)
    fake, _ = made_up_run(f, "7.0.4.3", preflight_failed=True)
    capsys.readouterr()
    assert main(["--home", str(f.box.root), "audit", "verify"]) == 0, capsys.readouterr().out


def test_a_later_run_no_host_witnessed_is_the_controllers_word_in_the_case(
        fleet: Fleet, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The case of a run lists its later rollback, which app-01 witnessed, as is; a later resume no host keeps any
    record of (the engineer's made-up "nothing to do" resume) is marked the controller's word, en and zh, in the
    text, the JSON and the CSV export."""
    from test_audit_witness_attacks_11 import made_up_resume

    f = fleet
    first, _, _ = run_once(f)
    assert upgrader(f.box, "rollback", first, "--yes") == 0
    rc, text = case(f, capsys, first, "--witness", str(f.box.inventory))
    assert rc == 0 and f"later: rollback {first}/rollback-" in text, text
    assert "(the controller's word)" not in text.split("later: rollback")[1].split("checkpoint:")[0], text
    run, _, _ = run_once(f, "7.0.4.3")
    label = made_up_resume(f, run, "committed")
    rc, text = case(f, capsys, run, "--witness", str(f.box.inventory))
    assert f"later: resume {label} of this run" in text, text
    assert "{'app-01': 'committed'} (the controller's word)" in text.split(f"later: resume {label}")[1], text
    rc_zh, zh = case(f, capsys, run, "--witness", str(f.box.inventory), "--lang", "zh")
    assert rc_zh == rc and "（app-01：" in zh and "）（控制端的一面之词）" in zh.split(f"续跑 {label}")[1], zh
    capsys.readouterr()
    main(["--home", str(f.box.root), "audit", "case", run, "--witness", str(f.box.inventory), "--json"])
    [later] = json.loads(capsys.readouterr().out)["case"]["followups"]
    assert later["run"] == label and later["witnessed"] is False
    rc, text = case(f, capsys, run)  # not looked up: nothing said either way
    assert "(the controller's word)" not in text.split(f"later: resume {label}")[1].split("checkpoint:")[0], text
    assert main(["--home", str(f.box.root), "audit", "export", "--witness", str(f.box.inventory), "--format", "csv",
                 "-o", str(tmp_path / "a.csv")]) == rc
    cases = (tmp_path / "a.cases.csv").read_text()
    assert f"resume {label}: exit 0 {{'app-01': 'committed'}} (the controller's word)" in cases, cases


def test_an_end_no_host_keeps_any_record_of_is_the_controllers_word_in_the_case(
        fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    """H2 (f1): a made-up first run of a real approved plan that says app-01 needs a person, with no host_started
    (the shape of a host the run never connected to, which takes no lock: the log and the hosts cannot tell it from
    an honest unreachable host). The case no longer gives its end as the hosts' word: app-01 keeps no record of the
    run, so its outcome there is marked the controller's word, en and zh; the honest run's is not."""
    f = fleet
    honest, _, _ = run_once(f)
    fake, _ = first_run_lines(f, "7.0.4.3", [], "needs_person", "install: the service did not stop; left for a person")
    rc, text = case(f, capsys, fake, "--witness", str(f.box.inventory))
    assert "host app-01: 7.0.4.1 -> 7.0.4.3: needs_person (the controller's word), version after" in text, text
    assert "witness: host app-01 keeps no record of this run's checkpoint" in text, text
    _, zh = case(f, capsys, fake, "--witness", str(f.box.inventory), "--lang", "zh")
    assert "需要人工处理（控制端的一面之词）" in zh, zh
    rc, text = case(f, capsys, honest, "--witness", str(f.box.inventory))
    assert rc == 0 and "host app-01: 7.0.4.1 -> 7.0.4.2: committed, version after" in text, text
