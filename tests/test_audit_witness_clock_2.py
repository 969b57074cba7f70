"""Issue 20, the auditor's case file, round 8 (attack20r8 HIGH #1, HIGH #2, LOW #4), played through the shipped CLI
over the real sshd (the host's agent runs under sshd: the controller's faked clock is not the host's).

- HIGH #1: the controller's clock set back 15 minutes (libfaketime on `upgrader run`) runs a change on an approval
  that has expired by the true time. The host refuses the lock by its own clock, reading the expiry from the
  approval's signed statement (exit 4, en and zh, nothing on the host changed); the verifier holds each host's lock
  time to the approval's expiry (a lock after it, as a host before this version kept it, is ALTERED).
- HIGH #2: a killed run moved later by the log's unsigned lines (its opening line set later, every later line
  "raised" to it with its true clock beside it) and then rolled back: the opening line is held to the controller's
  clock the host kept at its lock (ALTERED); `audit show` and `audit case` show a raised line's own clock.
- LOW #4: the case of a killed run recovered later shows the downtime from both runs' phases, never a raw None."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fleet import Fleet
from hoststate import assert_host_untouched, host_state
from test_audit_witness_attacks_2 import (  # noqa: F401 - fleet is a fixture
    ALTERED, fleet, log_of, records, verify)
from test_audit_witness_clock import resign, shifted
from upgrader.cli import main


def cli(f: Fleet, *argv: str, fake: str | None = None, kill_at: str | None = None) -> subprocess.CompletedProcess[str]:
    """The shipped CLI in a child process, its clock moved by faketime ``fake`` (the host's agent, under sshd, keeps
    the true clock), or killed at ``kill_at`` (the test suite's fault plugin)."""
    from conftest import fault_env

    env = {k: v for k, v in os.environ.items() if k != "UPGRADER_FAULT_KILL_AT"}
    if kill_at:
        env.update(fault_env(kill_at=kill_at))
    cmd = [sys.executable, "-m", "upgrader", "--home", str(f.box.root), *argv]
    return subprocess.run((["faketime", "-f", fake] if fake else []) + cmd, env=env, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)


def expired_approval(f: Fleet) -> tuple[Path, Path]:
    """A plan and its approval made while the controller's clock ran 20 minutes slow, valid for 10 minutes: by the
    true time the approval expired 10 minutes ago, by a clock set back 15 minutes it is still valid."""
    plan = f.box.plans / "slow.json"
    made = cli(f, "plan", "--inventory", str(f.box.inventory), "--to", "7.0.4.2", "--catalog", str(f.box.catalog),
               "--key", str(f.box.requester_key), "-o", str(plan), fake="-20m")
    assert made.returncode == 0, made.stdout + made.stderr
    approval = f.box.approvals / "slow.approval"
    signed = cli(f, "approve", str(plan), "--key", str(f.box.engineer_key), "-o", str(approval), "--expires", "10m",
                 fake="-20m")
    assert signed.returncode == 0, signed.stdout + signed.stderr
    return plan, approval


def test_the_host_refuses_the_lock_of_a_run_whose_approval_expired_by_its_own_clock(fleet: Fleet) -> None:
    """HIGH #1 a: `upgrader run` under faketime -15m with an approval expired by the true time: the host refuses the
    lock naming the approval, its expiry and its own clock, in English and Chinese; the run exits 4 and nothing on
    the host changed (exit 0, committed, before)."""
    f = fleet
    plan, approval = expired_approval(f)
    h = f["app-01"]
    before = host_state(h.install_dir, answers=h.answers)
    ran = cli(f, "run", str(plan), "--approval", str(approval), "--yes", fake="-15m")
    out = " ".join((ran.stdout + ran.stderr).split())
    assert ran.returncode == 4, out
    assert "expired at" in out and "by this host's clock" in out and "已于" in out and "过期" in out, out
    assert_host_untouched(before, host_state(h.install_dir, answers=h.answers), "a run on an expired approval")
    assert h.answers() == "7.0.4.1"


def case_of(f: Fleet, capsys: pytest.CaptureFixture[str], run: str, *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["--home", str(f.box.root), "audit", "case", run, "--witness", str(f.box.inventory), *extra])
    return rc, " ".join(capsys.readouterr().out.split())


def test_a_killed_first_run_moved_later_by_its_unsigned_lines_is_held_to_the_controllers_clock(
        fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    """HIGH #2: the run is killed when its install finished (no finish, no checkpoint). The engineer edits the
    unsigned tail: the run's opening line two days later, every line after it given that time with its true time as
    the writer's ``clock`` (a raise the log allows), chain rebuilt; then `upgrader rollback --yes` closes it. The
    host kept the controller's clock at the run's lock: the opening line is two days after it: ALTERED naming the
    line, in English and Chinese, by `audit verify --witness` and `audit case --witness` (INTACT before). `audit
    show` and `audit case` show a raised line's clock beside its time."""
    from test_audit_witness_attacks_2 import run_killed_at

    f = fleet
    run = run_killed_at(f, "install:finished")
    log = log_of(f)
    opening = next(r for r in records(log) if r.get("run") == run and r["event"] == "run_started")
    moved = shifted(opening["time"], 2 * 86400)

    def later(r: dict[str, Any]) -> dict[str, Any]:
        if r["seq"] == opening["seq"]:
            r["time"] = moved
        elif r["seq"] > opening["seq"]:
            r["clock"], r["time"] = r.get("clock", r["time"]), moved
        return r

    resign_fleet(f, later)
    back = cli(f, "rollback", run, "--yes")
    assert back.returncode == 0, back.stdout + back.stderr
    rc, report, text = verify(f, capsys)
    assert rc == ALTERED and text.startswith("ALTERED"), text
    assert f"host app-01's own steps of run {run} (opened there at " in text, text
    assert "run start is " in text and moved[:19] in text and f"(line {opening['seq']})" in text, text
    rc, _, zh = verify(f, capsys, "--lang", "zh")
    assert rc == ALTERED and "运行开始行的时间（不晚于加锁时控制端的时钟）" in zh, zh
    rc, case = case_of(f, capsys, run)
    assert rc == ALTERED and "run start is" in case, case
    assert "was raised above the writer's clock" in case, case
    capsys.readouterr()
    assert main(["--home", str(f.box.root), "audit", "show", "--policy", str(f.box.policy)]) == 0
    shown = capsys.readouterr().out
    assert "(writer's clock " in shown, shown


def resign_fleet(f: Fleet, edit: Any) -> None:
    """The engineer with the operator key: edit the log's lines, rebuild the chain, sign every checkpoint again."""
    from test_audit_witness import rechain
    from upgrader.trust.keys import load_private_key

    log = log_of(f)
    log.write_bytes(b"".join(rechain(log.read_bytes().splitlines(keepends=True), edit,
                                     load_private_key(str(f.box.operator_key)), "operator@customer")))


def test_each_hosts_lock_is_held_to_the_approvals_expiry(fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    """HIGH #1 b: the host keeps each approval's expiry as the approval's signed statement gave it at the lock. The
    engineer holds the run's witness back, rewrites the log's expiry of the run's approval to a minute before the run
    started (re-signed) and has the host witness the forged head: the host's record says otherwise (ALTERED by
    `audit verify --witness`; INTACT before). Held to the log's expiry alone -- the opening record of an agent before
    this check, which kept none -- the host's lock came after it: ALTERED, naming the run, host, approval and both
    times, in English and Chinese, and by `audit case --witness`."""
    from modified_controller import ModifiedController, checkpoint_to_witness, run_witness_cut
    from test_audit_witness_attacks_2 import agent

    f = fleet
    run = run_witness_cut(f)
    opening = next(r for r in records(log_of(f)) if r.get("run") == run and r["event"] == "run_started")
    [approval] = opening["data"]["approvals"]
    early = shifted(opening["time"], -60)

    def expired(r: dict[str, Any]) -> dict[str, Any]:
        if r["seq"] == opening["seq"]:
            r["data"]["approvals"][0]["expires"] = early
        return r

    resign_fleet(f, expired)
    with ModifiedController(f, "app-01") as c:  # the forged head witnessed, within the hour
        assert c.call("witness", run_id=run, checkpoint=checkpoint_to_witness(
            log_of(f).read_bytes().splitlines(keepends=True), run))["written"]
    rc, _, text = verify(f, capsys)
    assert rc == ALTERED and text.startswith("ALTERED"), text
    assert f"host app-01's opening record of run {run} differs from the log: approval expiry is " in text, text
    assert f"{early} in the log" in text, text
    # the opening record as an agent before this check kept it: no expiry of its own
    files = {str(o["file"]) for o in agent(f, "witness_read")["opened"] if o.get("as") == run}
    assert files
    for name in files:
        path = Path(name)
        kept = [json.loads(x) for x in path.read_text().splitlines()]
        path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "expires"}) + "\n" for r in kept))
    rc, _, text = verify(f, capsys)
    assert rc == ALTERED, text
    assert (f"host app-01 took its lock for run {run} at " in text and
            f"after approval {approval['digest'][:12]}… ({approval['approver']}) expired at {early} (the expiry the "
            "log gives it): a change started on an expired approval (ALTERED)" in text), text
    rc, _, zh = verify(f, capsys, "--lang", "zh")
    assert rc == ALTERED and f"已于 {early} 过期（日志所记的有效期）：变更在批准过期后才开始" in zh, zh
    rc, case = case_of(f, capsys, run)
    assert rc == ALTERED and "a change started on an expired approval" in case, case


def test_the_case_of_a_killed_run_shows_its_downtime_until_its_recovery_never_none(
        fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    """LOW #4: the run is killed when its install finished (the service down). Its case says the downtime is unknown
    because the run was killed (en, zh); after `upgrader rollback --yes` the case shows the downtime from the run's
    stop to the end of the rollback's start phase, in English and Chinese, never a raw None (0.0 s and None before)."""
    from test_audit_witness_attacks_2 import run_killed_at

    f = fleet
    run = run_killed_at(f, "install:finished")
    for lang, unknown in (("en", "downtime unknown — the run was killed"), ("zh", "停机 未知——运行在服务重新启动之前被中止")):
        capsys.readouterr()
        rc = main(["--home", str(f.box.root), "audit", "case", run, "--lang", lang])
        text = " ".join(capsys.readouterr().out.split())
        assert rc == 6 or rc == 0, text  # the killed run's lines are the log's uncovered tail
        assert unknown in text and "None" not in text, text
    back = cli(f, "rollback", run, "--yes")
    assert back.returncode == 0, back.stdout + back.stderr
    capsys.readouterr()
    assert main(["--home", str(f.box.root), "audit", "case", run, "--json"]) == 0
    case = json.loads(capsys.readouterr().out)["case"]
    [host] = case["hosts"]
    assert case["downtime_unknown"] == [] and host["downtime_seconds"] > 0, case
    assert case["downtime_seconds"] == host["downtime_seconds"] and host["up_again"]["run"].startswith(
        f"{run}/rollback-"), case
    stop = next(p for p in host["phases"] if p["phase"] == "stop")
    assert dt.datetime.fromisoformat(host["up_again"]["at"]) > dt.datetime.fromisoformat(stop["started"]), host
    for lang, said in (("en", f"downtime {host['downtime_seconds']} s"), ("zh", f"停机 {host['downtime_seconds']} 秒")):
        capsys.readouterr()
        assert main(["--home", str(f.box.root), "audit", "case", run, "--lang", lang]) == 0
        text = " ".join(capsys.readouterr().out.split())
        assert said in text and "None" not in text.replace("None of", ""), text
