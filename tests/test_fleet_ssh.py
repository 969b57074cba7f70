"""Rolling runs over a real OpenSSH server: batches, canary, failure budget, lost connections, locks, host keys."""

from __future__ import annotations

import io
import json
import os
import shlex
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from conftest import Run, approve, fault_env, now_at, plan_to, product_digest, shifted_iso, upgrader, weeks_ahead
from fleet import Fleet, FleetHost, wait_for
from hoststate import HostState, assert_host_untouched, host_state, take_lock
from upgrader.fleet.inventory import load_inventory
from upgrader.core.journal import JournalRecord
from upgrader.fleet.transport import AgentClient, close_all, connect

ALL = ("app-01", "app-02", "app-03", "app-04", "app-05")


# ---------------------------------------------------------------- helpers


def execute(f: Fleet, plan: Path, *extra: str, approval: Path | None = None) -> Run:
    """`upgrader run` of ``plan`` (approved by the sandbox engineer unless given) and the run dir it made."""
    approval = approval or approve(f.box, plan)
    before = set(f.run_dirs())
    rc = upgrader(f.box, "run", str(plan), "--approval", str(approval), *extra)
    data = json.loads(plan.read_text())
    # another run may be going on at the same time (the lock test): pick the run of this plan
    new = [d for d in f.run_dirs() if d not in before and json.loads((d / "plan.json").read_text()) == data]
    assert len(new) <= 1, f"one run made several run dirs: {new}"
    return Run(rc, new[0] if new else None)


def planned(f: Fleet, version: str) -> Path:
    rc, plan = plan_to(f.box, version)
    assert rc == 0, f"plan to {version} exited {rc}"
    return plan


def max_in_flight(records: list[JournalRecord]) -> int:
    """The most hosts that were between their 'host start' and 'host end' records at the same moment."""
    running: set[str] = set()
    most = 0
    for r in records:
        if r.phase == "host" and r.event == "start":
            running.add(str(r.host))
            most = max(most, len(running))
        elif r.phase == "host" and r.event == "end":
            running.discard(str(r.host))
    return most


def seq_of(records: list[JournalRecord], host: str, phase: str, event: str) -> int:
    (seq,) = [r.seq for r in records if r.host == host and r.phase == phase and r.event == event]
    return seq


def fleet_host_state(h: FleetHost) -> HostState:
    """The whole host (tests/hoststate.py): product files, the service (pid, start time, version), the agent's state
    dir (lock, staged packages, runs, ledger)."""
    return host_state(h.install_dir, state_dir=h.state_dir, answers=h.answers)


def assert_untouched(h: FleetHost, before: HostState, run: Run) -> None:
    """The whole host as before (still serving 7.0.4.1), and no trace of the run on it."""
    assert_host_untouched(before, fleet_host_state(h), h.name)
    assert h.answers() == "7.0.4.1", f"{h.name} answers {h.answers()!r}"
    assert not h.run_dir(run.id).exists(), f"{h.name} has a run dir of {run.id}"


def digests(f: Fleet) -> dict[str, HostState]:
    return {h.name: fleet_host_state(h) for h in f.hosts}


def hook_playbook(f: Fleet, name: str, hook: str, command: str) -> Path:
    """A copy of the quick playbook with one hook (in HOME/playbooks); the inventory then names it."""
    path = f.write_playbook(name, hooks={hook: [{"command": command, "timeout": "60s"}]})
    f.write_inventory(playbook=path.stem)
    return path


def waiting_script(f: Fleet, started: Path, release: Path, only_on: str = "true") -> Path:
    """A root-owned script (a root command's loop and markers belong in one: the restricted grammar of root
    commands) that, when ``only_on`` holds, touches ``started`` and waits up to 30 s for ``release``."""
    script = f.box.root / f"wait-{started.name}.sh"
    gone = f"[ ! -e {shlex.quote(str(release))} ]"
    script.write_text(f"{only_on} || exit 0\ntouch {shlex.quote(str(started))}\ni=0\n"
                      f"while {gone} && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done\n")
    return script


def audit_events(f: Fleet) -> list[dict[str, Any]]:
    lines = (f.box.root / "audit" / "audit.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


# ---------------------------------------------------------------- 1. rolling batches


def test_five_hosts_in_batches_of_two_all_upgrade_and_at_most_two_run_at_once(fleet):
    """--batch 2 over 5 hosts: exit 0, every host answers 7.0.4.2, never more than 2 hosts in flight, waves in order."""
    f = fleet(5)
    run = execute(f, planned(f, "7.0.4.2"), "--batch", "2")
    assert run.rc == 0
    assert f.versions() == {h: "7.0.4.2" for h in ALL}
    assert set(run.outcomes.values()) == {"committed"}
    records = f.journal(run.dir)
    assert max_in_flight(records) == 2
    # wave 2 (app-03, app-04) starts only after both hosts of wave 1 ended, wave 3 after wave 2
    for first, second in ((("app-01", "app-02"), ("app-03", "app-04")), (("app-03", "app-04"), ("app-05",))):
        last_end = max(seq_of(records, h, "host", "end") for h in first)
        first_start = min(seq_of(records, h, "host", "start") for h in second)
        assert last_end < first_start, f"{second} started before {first} ended"


def test_batch_as_a_percentage_rounds_down_to_whole_hosts(fleet):
    """--batch 40% of 3 hosts is 1 host at a time: never two hosts in flight, all upgraded."""
    f = fleet(3)
    run = execute(f, planned(f, "7.0.4.2"), "--batch", "40%")
    assert run.rc == 0
    assert f.versions() == {h: "7.0.4.2" for h in ALL[:3]}
    assert max_in_flight(f.journal(run.dir)) == 1


# ---------------------------------------------------------------- 2. canary


def test_failed_canary_stops_the_run_before_any_other_host_is_touched(fleet, capsys):
    """7.0.4.5 fails its probes on the canary: it is rolled back byte for byte, the others are untouched, exit 1."""
    f = fleet(3)
    before = digests(f)
    plan = planned(f, "7.0.4.5")
    capsys.readouterr()
    run = execute(f, plan, "--canary", "1", "--yes")
    out = capsys.readouterr().out
    assert run.rc == 1
    assert run.outcomes == {"app-01": "rolled_back", "app-02": "not_started", "app-03": "not_started"}
    assert f["app-01"].answers() == "7.0.4.1"
    assert product_digest(f["app-01"].install_dir) == before["app-01"].product
    for name in ("app-02", "app-03"):
        assert_untouched(f[name], before[name], run)
    assert "the canary failed on app-01" in run.result["stopped_early"]
    assert "canary FAILED: the canary failed on app-01" in out
    assert "Stopped early: the canary failed on app-01" in out


def test_successful_canary_without_yes_and_without_a_terminal_stops_before_the_rest(fleet, monkeypatch, capsys):
    """A healthy canary with no --yes and stdin not a terminal: the canary is upgraded, the rest waits untouched;
    the run ends 'waiting' with exit 0 and the line that says how to go on."""
    f = fleet(3)
    before = digests(f)
    plan = planned(f, "7.0.4.2")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    capsys.readouterr()
    run = execute(f, plan, "--canary", "1")
    out = capsys.readouterr().out
    assert run.outcomes == {"app-01": "committed", "app-02": "waiting", "app-03": "waiting"}
    assert run.rc == 0  # a healthy canary is a pause, not a failure
    assert f["app-01"].answers() == "7.0.4.2"
    for name in ("app-02", "app-03"):
        assert_untouched(f[name], before[name], run)
    assert "Paused after a healthy canary: the canary succeeded on app-01; the other hosts wait for a confirmation" \
        in out
    assert f"2 host(s) wait: upgrader resume {run.id} --yes" in out
    # the way on that the message gives: the same run, under the same approval
    assert f"upgrader resume {run.id} --yes" in run.result["stopped_early"]
    assert upgrader(f.box, "resume", run.id, "--yes") == 0
    assert f.versions() == {h: "7.0.4.2" for h in ALL[:3]}


def test_ctrl_c_at_the_canary_question_answers_no_and_leaves_the_rest_untouched(fleet):
    """In a real terminal (live board, then the question): Ctrl-C at "continue with the other hosts?" is a no.
    The canary stays upgraded, the others wait untouched, exit 0, no traceback; resume --yes goes on later."""
    import pexpect

    f = fleet(2)
    before = digests(f)
    plan = planned(f, "7.0.4.2")
    approval = approve(f.box, plan)
    child = pexpect.spawn(str(Path(sys.executable).with_name("upgrader")),
                          ["--home", str(f.box.root), "run", str(plan), "--approval", str(approval), "--canary", "1"],
                          encoding="utf-8", timeout=120, dimensions=(40, 160), env={**os.environ, "TERM": "xterm"})
    child.expect("continue with the other hosts")
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    screen = child.before or ""
    assert child.exitstatus == 0, screen[-2000:]  # "no" to going on is a pause after a healthy canary
    assert "Traceback" not in screen and "interrupted" not in screen
    (run_dir,) = f.run_dirs()
    run = Run(0, run_dir)
    assert run.outcomes == {"app-01": "committed", "app-02": "waiting"}
    assert "the other hosts wait for a confirmation" in run.result["stopped_early"]
    assert_untouched(f["app-02"], before["app-02"], run)
    assert upgrader(f.box, "resume", run.id, "--yes") == 0
    assert f.versions() == {"app-01": "7.0.4.2", "app-02": "7.0.4.2"}


def test_resume_picks_up_a_run_stopped_after_its_canary(fleet, monkeypatch):
    """`upgrader resume RUN_ID --yes` after a canary stop upgrades the hosts that were not started; exit 0."""
    f = fleet(2)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    run = execute(f, planned(f, "7.0.4.2"), "--canary", "1")
    assert run.outcomes == {"app-01": "committed", "app-02": "waiting"}
    assert upgrader(f.box, "resume", run.id) == 2  # no terminal, no --yes: asks for the confirmation, touches nothing
    assert f.versions() == {"app-01": "7.0.4.2", "app-02": "7.0.4.1"}
    assert upgrader(f.box, "resume", run.id, "--yes") == 0
    assert f.versions() == {"app-01": "7.0.4.2", "app-02": "7.0.4.2"}


@pytest.mark.parametrize("only", [[], ["--hosts", "app-01"]], ids=["all", "the-canary"])
def test_a_run_paused_after_its_canary_and_rolled_back_is_not_resumed(fleet, monkeypatch, capsys, only):
    """attack12r23 M2: the canary committed, app-02 waits; the operator rolls the run back (both hosts as before).
    `resume --yes` then upgrades nothing: the rollback ended the run, its approval does not carry app-02 on."""
    f = fleet(2)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    run = execute(f, planned(f, "7.0.4.2"), "--canary", "1")
    assert run.outcomes == {"app-01": "committed", "app-02": "waiting"}
    assert upgrader(f.box, "rollback", run.id, *only, "--yes") == 0
    assert f.versions() == {"app-01": "7.0.4.1", "app-02": "7.0.4.1"}
    journal = (run.dir / "journal.jsonl").read_bytes()
    capsys.readouterr()
    assert upgrader(f.box, "resume", run.id, "--yes") == 0
    said = capsys.readouterr().out
    assert "nothing to resume" in said and "waits for a confirmation" not in said, said  # attack12r24 L2: no loop
    assert f.versions() == {"app-01": "7.0.4.1", "app-02": "7.0.4.1"}
    assert (run.dir / "journal.jsonl").read_bytes() == journal  # no host was started again
    assert upgrader(f.box, "status", "--json") == 0
    needs = {h["host"]: h["needs"] for h in json.loads(capsys.readouterr().out)["hosts"]}
    assert needs == {"app-01": [], "app-02": []}, needs  # status no longer advises that very resume


def test_a_continuation_after_the_canary_killed_midway_is_finished_from_the_journal(fleet, monkeypatch):
    """`resume --yes` after a canary is killed (SIGKILL) while app-02 is being observed: a later `resume` does not
    start app-02 afresh as a waiting host, it finishes it from the journal (rolled back, exit 1), one server."""
    f = fleet(2)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    run = execute(f, planned(f, "7.0.4.2"), "--canary", "1")
    assert run.outcomes == {"app-01": "committed", "app-02": "waiting"}
    killed = subprocess.run([sys.executable, "-m", "upgrader", "--home", str(f.box.root), "resume", run.id, "--yes"],
                            env={**os.environ, **fault_env(kill_at="observe:started")}, capture_output=True,
                            text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert upgrader(f.box, "resume", run.id) == 1
    assert run.outcomes == {"app-01": "committed", "app-02": "rolled_back"}
    assert f.versions() == {"app-01": "7.0.4.2", "app-02": "7.0.4.1"}
    assert upgrader(f.box, "resume", run.id) == 1  # and that is the end of it
    assert f.versions() == {"app-01": "7.0.4.2", "app-02": "7.0.4.1"}


def test_hosts_waiting_after_a_canary_start_only_inside_the_service_window(fleet, monkeypatch, capsys):
    """The canary runs on Friday morning; `resume --yes` that night is refused (exit 4, the waiting host untouched,
    the window named), because the plan's approval is not for after hours; on Monday morning it goes on."""
    f = fleet(2)
    policy = f.box.policy.read_text(encoding="utf-8")
    f.box.policy.write_text(policy.replace("  outside: allow\n", "  outside: after_hours_approval\n"), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    ahead = weeks_ahead("2026-11-27T10:00:00+08:00")  # a Friday to come: the hosts check the approval's expiry
    now_at(monkeypatch, shifted_iso("2026-11-27T10:00:00+08:00", ahead))  # by their own clock; inside the window
    plan = planned(f, "7.0.4.2")
    run = execute(f, plan, "--canary", "1", approval=approve(f.box, plan, "--expires", "7d"))
    assert run.outcomes == {"app-01": "committed", "app-02": "waiting"}
    before = fleet_host_state(f["app-02"])
    capsys.readouterr()
    now_at(monkeypatch, shifted_iso("2026-11-27T20:00:00+08:00", ahead))  # that evening: outside
    assert upgrader(f.box, "resume", run.id, "--yes") == 4
    err = capsys.readouterr().err
    assert "outside the service window" in err and "--after-hours" in err
    assert_host_untouched(before, fleet_host_state(f["app-02"]))
    assert f.versions() == {"app-01": "7.0.4.2", "app-02": "7.0.4.1"}
    now_at(monkeypatch, shifted_iso("2026-11-30T10:00:00+08:00", ahead))  # Monday morning, inside again
    assert upgrader(f.box, "resume", run.id, "--yes") == 0
    assert f.versions() == {"app-01": "7.0.4.2", "app-02": "7.0.4.2"}


def test_hosts_waiting_after_a_canary_are_not_started_once_the_approval_expired(fleet, monkeypatch, capsys):
    """The approval (1 day) has expired when the canary is confirmed: exit 4, the waiting host untouched."""
    f = fleet(2)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    ahead = weeks_ahead("2026-11-27T10:00:00+08:00")  # days to come: the canary host checks the expiry by its clock
    now_at(monkeypatch, shifted_iso("2026-11-27T10:00:00+08:00", ahead))
    plan = planned(f, "7.0.4.2")
    run = execute(f, plan, "--canary", "1", approval=approve(f.box, plan, "--expires", "1d"))
    assert run.outcomes == {"app-01": "committed", "app-02": "waiting"}
    capsys.readouterr()
    now_at(monkeypatch, shifted_iso("2026-11-30T10:00:00+08:00", ahead))
    assert upgrader(f.box, "resume", run.id, "--yes") == 4
    assert "no longer valid" in capsys.readouterr().err
    assert f.versions() == {"app-01": "7.0.4.2", "app-02": "7.0.4.1"}


def test_successful_canary_with_yes_goes_on_to_the_other_hosts_after_the_canary_ended(fleet, capsys):
    """--canary 1 --yes: the canary finishes alone first, then the others are upgraded; exit 0."""
    f = fleet(3)
    run = execute(f, planned(f, "7.0.4.2"), "--canary", "1", "--yes")
    assert "canary ok: going on with the other hosts" in capsys.readouterr().out
    assert run.rc == 0
    assert f.versions() == {h: "7.0.4.2" for h in ALL[:3]}
    records = f.journal(run.dir)
    canary_end = seq_of(records, "app-01", "host", "end")
    assert all(seq_of(records, h, "host", "start") > canary_end for h in ("app-02", "app-03"))


# ---------------------------------------------------------------- 3. failure budget


@pytest.mark.parametrize("budget", ["1", "20%"])
def test_failure_budget_counts_over_the_whole_run_and_stops_new_hosts(fleet, budget):
    """--batch 1 --max-failures 1 (or 20% of 5): after the 2nd failed host no new host starts; the rest is untouched.

    With one host per batch a per-batch count would never exceed 1, so stopping proves the count is run-wide.
    """
    f = fleet(5)
    before = digests(f)
    run = execute(f, planned(f, "7.0.4.5"), "--batch", "1", "--max-failures", budget)
    assert run.rc == 1
    assert run.outcomes == {"app-01": "rolled_back", "app-02": "rolled_back", "app-03": "not_started",
                            "app-04": "not_started", "app-05": "not_started"}
    for name in ("app-01", "app-02"):
        assert f[name].answers() == "7.0.4.1"
        assert product_digest(f[name].install_dir) == before[name].product
    for name in ("app-03", "app-04", "app-05"):
        assert_untouched(f[name], before[name], run)
    assert "more than 1 host(s) failed" in run.result["stopped_early"]
    started = {r.host for r in f.journal(run.dir) if r.phase == "host" and r.event == "start"}
    assert started == {"app-01", "app-02"}


# ---------------------------------------------------------------- 4. connection cut mid-install


def test_a_single_connection_cut_after_install_is_retried_and_recorded(fleet, capsys):
    """The sshd session dies while the after_install hook runs: the engine reconnects, records the retry, commits."""
    f = fleet(1)
    started, release = f.box.root / "hook-started", f.box.root / "hook-release"
    hook_playbook(f, "cut-once", "after_install", f"/bin/sh {waiting_script(f, started, release)}")
    plan = planned(f, "7.0.4.2")
    killed: list[int] = []

    def cut_once() -> None:
        try:
            wait_for(started.exists, 60, "the after_install hook to start")
            killed.append(f.sshd.kill_sessions())
        finally:
            release.touch()

    cutter = threading.Thread(target=cut_once)
    cutter.start()
    capsys.readouterr()
    try:
        run = execute(f, plan)
    finally:
        release.touch()
        cutter.join(70)
    out = capsys.readouterr().out
    assert killed and killed[0] >= 1
    assert run.rc == 0
    assert run.outcomes == {"app-01": "committed"}
    assert f["app-01"].answers() == "7.0.4.2"
    retries = [r for r in f.journal(run.dir) if r.event == "retry"]
    assert [(r.host, r.phase, r.data["attempt"]) for r in retries] == [("app-01", "hook", 1)]
    assert "connection lost" in retries[0].data["error"]
    assert "hook                connection lost, retry 1" in out


def test_a_host_lost_mid_install_is_marked_needs_person_with_a_record_and_rollback_restores_it(fleet):
    """Sessions cut again and again after install: exit 5, needs_person naming the last step, journal, audit and host
    records; `upgrader rollback` then restores the old version byte for byte."""
    f = fleet(1)
    h = f["app-01"]
    before = product_digest(h.install_dir)
    started, release = f.box.root / "hook-started", f.box.root / "hook-release"
    hook_playbook(f, "cut-always", "after_install", f"/bin/sh {waiting_script(f, started, release)}")
    plan = planned(f, "7.0.4.2")
    done = threading.Event()
    killed: list[int] = []

    def keep_cutting() -> None:
        try:
            wait_for(lambda: started.exists() or done.is_set(), 60, "the after_install hook to start")
            while not done.wait(0.01):
                killed.append(f.sshd.kill_sessions())
        finally:
            release.touch()

    cutter = threading.Thread(target=keep_cutting)
    cutter.start()
    try:
        run = execute(f, plan)
    finally:
        done.set()
        cutter.join(70)
    assert sum(killed) >= 1
    assert run.rc == 5
    host = run.host("app-01")
    assert host["outcome"] == "needs_person"
    assert host["error"].startswith("hook:after_install: app-01: ")
    assert "app-01: app-01:" not in host["error"]
    assert "after 4 attempt(s); the host's last recorded step: install done" in host["error"]
    records = f.journal(run.dir)
    failed = [r for r in records if r.host == "app-01" and r.event == "failed"]
    assert [(r.phase, r.data["kind"]) for r in failed] == [("hook:after_install", "unreachable")]
    assert ("app-01", "needs_person") in {(r.host, r.data.get("outcome")) for r in records
                                          if r.phase == "host" and r.event == "end"}
    assert any(e["event"] == "host_finished" and e["host"] == "app-01" and e["outcome"] == "needs_person"
               for e in audit_events(f))
    # the host's own record says how far it got: the new tree is in place, not started
    state = json.loads((h.run_dir(run.id) / "state.json").read_text())
    assert state["phase"] == "installed"
    rc = upgrader(f.box, "rollback", run.id)
    assert rc == 0
    assert h.answers() == "7.0.4.1"
    assert product_digest(h.install_dir) == before


# ---------------------------------------------------------------- 5. per-host lock


def test_a_host_locked_by_another_run_is_refused_naming_the_holder_and_left_untouched(fleet):
    """app-02 is locked by another controller's run: its outcome names that run and alice@ops-laptop, exit 5,
    app-02 untouched and still locked by the other run, app-01 upgraded."""
    f = fleet(2)
    locked = f["app-02"]
    host = load_inventory(f.box.inventory).hosts["app-02"]
    transport = connect(host)
    try:
        client = AgentClient(transport)
        take_lock(lambda op, **req: client.call(op, install_dir=str(locked.install_dir), **req),
                  "20260101T000000Z-0ther0", controller="ops-laptop", user="alice")
    finally:
        transport.close()
    lock_file = locked.state_dir / "lock"
    lock_before = lock_file.read_bytes()
    before = fleet_host_state(locked)
    run = execute(f, planned(f, "7.0.4.2"))
    assert run.rc == 5
    assert run.outcomes == {"app-01": "committed", "app-02": "needs_person"}
    error = run.host("app-02")["error"]
    assert "20260101T000000Z-0ther0" in error
    assert "alice@ops-laptop" in error
    assert_untouched(locked, before, run)
    assert lock_file.read_bytes() == lock_before
    assert f["app-01"].answers() == "7.0.4.2"


def test_a_second_run_while_the_first_observes_is_refused_by_the_lock(fleet):
    """While run A observes app-01, run B of another plan on app-01 is refused naming run A; A still commits."""
    f = fleet(1)
    h = f["app-01"]
    started = f.box.root / "observing"
    # a slow custom probe keeps run A in observe until the test has started run B; it waits only once the new
    # version is in place (the probes are proven on the running old version first, at plan time and in preflight)
    release = f.box.root / "release"
    gate = waiting_script(f, started, release, only_on='grep -q "^7.0.4.2" "$UPGRADER_INSTALL_DIR/lib/VERSION"')
    spec_probe = {"type": "command", "name": "gate", "timeout": "60s", "command": f"/bin/sh {gate}"}
    spec = yaml.safe_load(f.playbook.read_text())
    spec["observe"]["probes"].append(spec_probe)
    gated = f.write_playbook("gated", observe=spec["observe"])
    f.write_inventory(playbook=gated.stem)
    plan_a = planned(f, "7.0.4.2")
    f.write_inventory()
    plan_b = planned(f, "7.0.4.2")
    approval_b = approve(f.box, plan_b)
    result: dict[str, Any] = {}

    def start_run_b() -> None:
        try:
            wait_for(started.exists, 60, "run A to reach observe")
            result["run"] = execute(f, plan_b, approval=approval_b)
        finally:
            release.touch()

    second = threading.Thread(target=start_run_b)
    second.start()
    try:
        run_a = execute(f, plan_a)
    finally:
        release.touch()
        second.join(120)
    run_b = result["run"]
    assert run_b.rc == 5
    assert run_b.outcomes == {"app-01": "needs_person"}
    assert f"host is locked by run {run_a.id}" in run_b.host("app-01")["error"]
    assert not h.run_dir(run_b.id).exists()
    assert run_a.rc == 0
    assert h.answers() == "7.0.4.2"


# ---------------------------------------------------------------- 6. host keys


def other_host_key(tmp: Path) -> str:
    key = tmp / "impostor"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return " ".join(key.with_suffix(".pub").read_text().split()[:2])


def test_plan_refuses_a_host_whose_key_is_unknown_and_touches_nothing(fleet, capsys):
    """No known_hosts entry for the host: the plan fails saying the host key is unknown; no plan, host untouched."""
    f = fleet(1)
    f.write_inventory(known_hosts=str(f.box.root / "empty_known_hosts"))
    (f.box.root / "empty_known_hosts").write_text("")
    capsys.readouterr()
    rc, plan = plan_to(f.box, "7.0.4.2")
    err = capsys.readouterr().err
    assert rc == 5
    assert "unknown host key for 127.0.0.1" in err
    assert "host_key: accept-new" in err
    assert not plan.exists()
    assert not f["app-01"].state_dir.exists()


def test_plan_refuses_a_host_whose_key_differs_from_known_hosts(fleet, tmp_path, capsys):
    """known_hosts holds another key for the host: refused as a changed key (possible man-in-the-middle)."""
    f = fleet(1)
    known = f.box.root / "known_hosts"
    known.write_text(f"[127.0.0.1]:{f.sshd.port} {other_host_key(tmp_path)}\n")
    f.write_inventory(known_hosts=str(known))
    capsys.readouterr()
    rc, plan = plan_to(f.box, "7.0.4.2")
    err = capsys.readouterr().err
    assert rc == 5
    assert "host key of 127.0.0.1 CHANGED" in err
    assert not plan.exists()


def test_run_refuses_a_host_whose_key_changed_since_the_plan_and_touches_nothing(fleet, tmp_path):
    """The plan was made with the right key; known_hosts then names another key: the run refuses the host, exit 5."""
    f = fleet(1)
    known = f.box.root / "known_hosts"
    known.write_text(f.sshd.known_hosts.read_text())
    f.write_inventory(known_hosts=str(known))
    before = fleet_host_state(f["app-01"])
    plan = planned(f, "7.0.4.2")
    close_all()  # plan and run are separate commands: the run connects anew
    known.write_text(f"[127.0.0.1]:{f.sshd.port} {other_host_key(tmp_path)}\n")
    run = execute(f, plan)
    assert run.rc == 5
    assert run.outcomes == {"app-01": "needs_person"}
    assert "CHANGED" in run.host("app-01")["error"]
    assert "after 1 attempt(s)" in run.host("app-01")["error"]  # a refused key is not retried
    assert [r for r in f.journal(run.dir) if r.event == "retry"] == []
    assert_untouched(f["app-01"], before, run)
    assert not f["app-01"].state_dir.exists()


def test_accept_new_learns_an_unknown_host_key_and_writes_it_to_known_hosts(fleet):
    """host_key: accept-new with an empty known_hosts: the plan succeeds and the server's key is saved."""
    f = fleet(1)
    learned = f.box.root / "learned_hosts"
    f.write_inventory(known_hosts=str(learned), host_key="accept-new")
    planned(f, "7.0.4.2")
    assert learned.read_text().split("\n")[0] == f"[127.0.0.1]:{f.sshd.port} {f.sshd.host_pub}"
    f.write_inventory(known_hosts=str(learned))  # strict again: the learned key is now the known one
    run = execute(f, planned(f, "7.0.4.2"))
    assert run.rc == 0
    assert f["app-01"].answers() == "7.0.4.2"


# ---------------------------------------------------------------- 7. progress and summary


def test_without_a_terminal_progress_is_one_plain_line_per_phase(fleet, capsys):
    """stdout is not a terminal: each host's phases come as plain lines in order, no escape codes, then the summary."""
    f = fleet(2)
    plan = planned(f, "7.0.4.2")
    approval = approve(f.box, plan)
    capsys.readouterr()
    run = execute(f, plan, approval=approval)
    out = capsys.readouterr().out
    assert run.rc == 0
    assert "\x1b[" not in out
    for name in ("app-01", "app-02"):
        lines = [line.split() for line in out.splitlines() if line.startswith(name)]
        phases = [words[1] for words in lines if len(words) > 2 and words[2] == "ok"]
        assert phases == ["preflight", "backup", "stop", "install", "start", "observe"]
        assert [name, "COMMITTED", "now", "running", "7.0.4.2"] in lines
    assert f"Run {run.id}" in out


def test_json_output_gives_every_hosts_outcome_and_nothing_else_on_stdout(fleet, capsys):
    """--json: stdout is one JSON document with the run id, exit code and each host's outcome and version."""
    f = fleet(2)
    plan = planned(f, "7.0.4.2")
    approval = approve(f.box, plan)
    capsys.readouterr()
    run = execute(f, plan, "--json", approval=approval)
    data = json.loads(capsys.readouterr().out)
    assert run.rc == 0
    assert data["run_id"] == run.id
    assert data["exit_code"] == 0
    assert {h["host"]: (h["outcome"], h["version"]) for h in data["hosts"]} == {
        "app-01": ("committed", "7.0.4.2"), "app-02": ("committed", "7.0.4.2")}
    assert [p["phase"] for p in data["hosts"][0]["phases"]] == [
        "preflight", "backup", "stop", "install", "start", "observe"]


def test_summary_warns_that_a_group_is_left_on_mixed_versions(fleet, capsys):
    """app-02's after_install hook fails: it is rolled back, app-01 committed; the summary warns group prod is mixed."""
    f = fleet(2)
    hook_playbook(f, "fails-on-app-02", "after_install", 'test "$UPGRADER_HOST" != app-02')
    plan = planned(f, "7.0.4.2")
    capsys.readouterr()
    run = execute(f, plan)
    out = capsys.readouterr().out
    assert run.rc == 1
    assert run.outcomes == {"app-01": "committed", "app-02": "rolled_back"}
    assert f.versions() == {"app-01": "7.0.4.2", "app-02": "7.0.4.1"}
    assert "Hosts are left on mixed versions: 7.0.4.1 ×1, 7.0.4.2 ×1" in out
    assert "group prod is mixed: 7.0.4.1 on app-02; 7.0.4.2 on app-01" in out
    assert run.host("app-02")["groups"] == ["prod"]
