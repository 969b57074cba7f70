"""Recovery that can never cause an outage, over the real sshd: a rollback or resume checks the host before it
stops anything, stale locks are broken on purpose, a healthy canary is no failure, fleet rollbacks go in
batches, a dry run reads the hosts, and the inventory cases met on the way (issue 19)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import Run, approve, fault_env, now_at, plan_to, shifted_iso, upgrader, weeks_ahead
from fleet import Fleet, FleetHost, wait_for
from hoststate import OPENED, RUN_RECORDS, WITNESS, HostState, assert_host_untouched, assert_hosts_untouched, without_run
from hoststate import host_state as whole_host_state


# ---------------------------------------------------------------- helpers


def execute(f: Fleet, plan: Path, *extra: str) -> Run:
    before = set(f.run_dirs())
    rc = upgrader(f.box, "run", str(plan), "--approval", str(approve(f.box, plan)), *extra)
    new = [d for d in f.run_dirs() if d not in before]
    return Run(rc, new[0] if new else None)


def planned(f: Fleet, version: str, *extra: str) -> Path:
    rc, plan = plan_to(f.box, version, *extra)
    assert rc == 0, f"plan to {version} exited {rc}"
    return plan


def pid(h: FleetHost) -> int | None:
    """The pid of the service that runs now (its pid file), or None."""
    p = h.install_dir / "run" / "server.pid"
    return int(p.read_text().strip()) if p.is_file() else None


def host_state(h: FleetHost) -> HostState:
    """The whole host a refusal must leave as it was (tests/hoststate.py): the version answered, the service's pid
    and start time, the agent's state dir (lock, runs, staged packages, installed manifest, ledger), the product."""
    return whole_host_state(h.install_dir, state_dir=h.state_dir, answers=h.answers)


def rollback_result(f: Fleet, run_id: str) -> dict[str, Any]:
    return json.loads((f.box.root / "runs" / run_id / "rollback-result.json").read_text())


# ---------------------------------------------------------------- 1. a rollback checks before it stops


def test_rolling_back_a_run_that_a_later_run_replaced_is_refused_before_anything_stops(fleet, capsys):
    """Run A 7.0.4.1 -> 7.0.4.2, rollback A, run B to 7.0.4.2 again, rollback A again: refused with exit 5 naming
    run B and what to do; 7.0.4.2 keeps running under the same pid, no lock is left, no file changed."""
    f = fleet(1)
    h = f["app-01"]
    a = execute(f, planned(f, "7.0.4.2"))
    assert a.rc == 0 and h.answers() == "7.0.4.2"
    assert upgrader(f.box, "rollback", a.id) == 0
    assert h.answers() == "7.0.4.1"
    b = execute(f, planned(f, "7.0.4.2"))
    assert b.rc == 0 and h.answers() == "7.0.4.2"
    before = host_state(h)
    capsys.readouterr()
    rc = upgrader(f.box, "rollback", a.id)
    out, err = capsys.readouterr()
    assert rc == 5
    assert f"app-01 was changed by run {b.id} since; roll back {b.id}" in out + err
    assert_host_untouched(before, host_state(h), appended=[OPENED])  # only the host's opening record of it
    assert rollback_result(f, a.id)["hosts"][0]["outcome"] == "superseded"
    html = f.box.root / "audit.html"
    assert upgrader(f.box, "audit", "export", "--format", "html", "-o", str(html)) == 0
    assert "refused: a later run changed the host since; nothing was stopped" in html.read_text()
    # the way out it names works: B is rolled back, 7.0.4.1 runs again
    assert upgrader(f.box, "rollback", b.id) == 0
    assert h.answers() == "7.0.4.1"


def test_rolling_back_a_run_twice_changes_nothing_the_second_time(fleet, capsys):
    """rollback A, then rollback A again: exit 0, "nothing to do", the old version keeps its pid, no lock; the host
    records only this part's own end (its opening, finish record, steps and checkpoint: attack20r6 #3)."""
    f = fleet(1)
    h = f["app-01"]
    a = execute(f, planned(f, "7.0.4.2"))
    assert upgrader(f.box, "rollback", a.id) == 0
    before = host_state(h)
    assert before.version == "7.0.4.1" and before.pid and before.lock is None
    capsys.readouterr()
    assert upgrader(f.box, "rollback", a.id) == 0
    out = capsys.readouterr().out
    assert "nothing to do" in out
    # its audit checkpoint, opening and finish records, and its steps in the run's own record
    assert_host_untouched(without_run(before, a.id), without_run(host_state(h), a.id),
                          appended=[WITNESS, OPENED, RUN_RECORDS])


def test_resume_of_a_run_that_a_later_run_replaced_stops_nothing(fleet):
    """Run A killed after its install; the operator breaks the lock with run B, which rolls the host forward to
    7.0.4.3; `resume A` then finds the host changed by B: exit 5 naming B, 7.0.4.3 keeps its pid, no lock left."""
    import os
    import subprocess
    import sys

    f = fleet(1)
    h = f["app-01"]
    plan = planned(f, "7.0.4.2")
    approval = approve(f.box, plan)
    killed = subprocess.run([sys.executable, "-m", "upgrader", "--home", str(f.box.root), "run", str(plan),
                             "--approval", str(approval)],
                            env={**os.environ, **fault_env(kill_at="start:before")}, capture_output=True,
                            text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr[-2000:]
    (a_dir,) = f.run_dirs()
    assert (h.state_dir / "lock").exists() and h.answers() is None  # stopped, installed, not started
    h.start()  # someone started it by hand (start.sh returns before the service listens and writes its pid file)
    wait_for(lambda: h.answers() == "7.0.4.2" and pid(h), 15, "the service started by hand")
    b = execute(f, planned(f, "7.0.4.3"), "--break-lock")
    assert b.rc == 0 and h.answers() == "7.0.4.3"
    before = host_state(h)
    assert upgrader(f.box, "resume", a_dir.name) == 5
    assert_host_untouched(before, host_state(h), appended=[OPENED])  # only the host's opening record of it
    result = json.loads((a_dir / "result.json").read_text())
    assert result["hosts"][0]["outcome"] == "superseded"
    assert f"app-01 was changed by run {b.id} since; roll back {b.id}" in result["hosts"][0]["error"]


# ---------------------------------------------------------------- 2. a lock left behind


def test_a_lock_left_by_a_killed_rollback_is_shown_by_status_and_cleared_with_break_lock(fleet, capsys):
    """`rollback A` killed before it stopped anything leaves A's lock: run B is refused by it (host untouched);
    `upgrader status` names the lock's holder and the command that resolves it; `rollback A` finishes it. Then a lock
    of a run this machine does not know (another controller's, killed) is broken with `rollback --break-lock`,
    which the audit log records naming that lock's holder."""
    import os
    import subprocess
    import sys

    f = fleet(1)
    h = f["app-01"]
    a = execute(f, planned(f, "7.0.4.2"))
    killed = subprocess.run([sys.executable, "-m", "upgrader", "--home", str(f.box.root), "rollback", a.id],
                            env={**os.environ, **fault_env(kill_at="rollback:before")}, capture_output=True,
                            text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr[-2000:]
    held = host_state(h)
    assert held.lock is not None and held.version == "7.0.4.2"
    capsys.readouterr()
    assert upgrader(f.box, "status", "--inventory", str(f.box.inventory)) == 5
    out = capsys.readouterr().out
    assert "app-01" in out and "7.0.4.2" in out and f"locked by run {a.id}" in out
    assert f"upgrader --home {f.box.root} rollback {a.id}" in out  # complete, runnable as printed
    assert upgrader(f.box, "resume", a.id) == 0  # the run had finished; resume points at the rollback
    assert f"but app-01: run {a.id} its rollback was interrupted" in capsys.readouterr().out
    assert_host_untouched(held, host_state(h))
    assert upgrader(f.box, "status", "--inventory", str(f.box.inventory), "--json") == 5
    status = json.loads(capsys.readouterr().out)
    assert status["hosts"][0]["lock"]["run"] == a.id and status["hosts"][0]["version"] == "7.0.4.2"
    assert upgrader(f.box, "rollback", a.id) == 0
    assert h.answers() == "7.0.4.1" and not (h.state_dir / "lock").exists()

    # a lock of another controller's run, whose journal is not here
    b = execute(f, planned(f, "7.0.4.2"))
    (h.state_dir / "lock").write_text(json.dumps({"run": "20261101T000000Z-other0", "controller": "laptop-7",
                                                   "user": "wang", "time": 1761955200}))
    before = host_state(h)
    assert upgrader(f.box, "rollback", b.id) == 5  # refused by the lock; nothing stopped
    assert_host_untouched(before, host_state(h))
    capsys.readouterr()
    assert upgrader(f.box, "status", "--inventory", str(f.box.inventory)) == 5
    out = capsys.readouterr().out
    assert "locked by run 20261101T000000Z-other0 (wang@laptop-7" in out and "--break-lock" in out
    assert upgrader(f.box, "rollback", b.id, "--break-lock") == 0
    assert h.answers() == "7.0.4.1" and not (h.state_dir / "lock").exists()
    events = [json.loads(x) for x in (f.box.root / "audit" / "audit.jsonl").read_text().splitlines()]
    (broken,) = [e for e in events if e["event"] == "lock_broken"]
    assert broken["host"] == "app-01" and broken["data"]["holder"]["run"] == "20261101T000000Z-other0"
    capsys.readouterr()
    assert upgrader(f.box, "status", "--inventory", str(f.box.inventory)) == 0
    assert "7.0.4.1" in capsys.readouterr().out


# ---------------------------------------------------------------- 3. an honest canary


def test_a_healthy_canary_ends_waiting_with_exit_0_and_the_audit_says_paused(fleet, monkeypatch, capsys, tmp_path):
    """--canary 1 without --yes and without a terminal: exit 0, outcome waiting, the line with the resume command;
    audit show and the HTML export call it paused after a healthy canary, never failed."""
    import io
    import sys

    f = fleet(2)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    capsys.readouterr()
    run = execute(f, planned(f, "7.0.4.2"), "--canary", "1")
    out, err = capsys.readouterr()
    assert run.rc == 0
    assert run.outcomes == {"app-01": "committed", "app-02": "waiting"}
    assert f"1 host(s) wait: upgrader resume {run.id} --yes" in out
    assert "NEEDS" not in err and "failed" not in err
    assert upgrader(f.box, "audit", "show", "--run", run.id) == 0
    assert "paused after a healthy canary" in capsys.readouterr().out
    html = tmp_path / "audit.html"
    assert upgrader(f.box, "audit", "export", "--format", "html", "-o", str(html)) == 0
    text = html.read_text()
    assert "paused after a healthy canary" in text and "failed, rolled back" not in text
    assert upgrader(f.box, "resume", run.id, "--yes") == 0
    assert f.versions() == {"app-01": "7.0.4.2", "app-02": "7.0.4.2"}


# ---------------------------------------------------------------- 4. fleet rollback like a fleet upgrade


def test_a_two_host_rollback_in_batches_of_one_stops_after_a_failing_host(fleet, monkeypatch, capsys):
    """Rollback of two hosts: without --yes and without a terminal it is refused (exit 2, nothing touched); with
    --batch 1 --max-failures 0 --yes, app-01 (whose backup is damaged) fails and app-02 is not stopped at all."""
    import io
    import sys

    f = fleet(2)
    run = execute(f, planned(f, "7.0.4.2"))
    assert run.rc == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    before = {h.name: host_state(h) for h in f.hosts}
    capsys.readouterr()
    assert upgrader(f.box, "rollback", run.id) == 2
    assert "--yes" in capsys.readouterr().err
    assert_hosts_untouched(before, {h.name: host_state(h) for h in f.hosts})
    # the first host's backup is damaged: its rollback fails the backup check, before its service is stopped
    victim = next((f["app-01"].run_dir(run.id) / "backup" / "tree").rglob("VERSION"))
    victim.unlink()
    victim.write_text("tampered\n")
    capsys.readouterr()
    rc = upgrader(f.box, "rollback", run.id, "--batch", "1", "--max-failures", "0", "--yes")
    out = capsys.readouterr().out
    assert rc == 5
    result = rollback_result(f, run.id)
    outcomes = {h["host"]: h["outcome"] for h in result["hosts"]}
    assert outcomes["app-01"] == "needs_person" and outcomes["app-02"] == "not_started"
    assert "no further host was stopped" in result["stopped_early"]
    assert_host_untouched(before["app-02"], host_state(f["app-02"]))  # same pid: never stopped
    # app-01 was not stopped either: its backup failed the check first, 7.0.4.2 runs under the same pid
    assert host_state(f["app-01"]).service == before["app-01"].service and f["app-01"].answers() == "7.0.4.2"
    assert not (f["app-01"].state_dir / "lock").exists()
    assert "nothing was stopped" in result["hosts"][0]["error"]
    assert result["hosts"][0]["after"]["healthy"] is True  # read on the host afterwards, not assumed
    assert "rollbacks are allowed at any hour (policy window.rollback: any_time)" in out


# ---------------------------------------------------------------- 5. a dry run that reads the hosts


def test_dry_run_reads_every_host_and_fails_when_sshd_is_down(tmp_path, capsys):
    """run --dry-run reads the hosts over SSH (version, lock, disk, host key, package), prints the exact commands,
    probes and the canary/batch order and touches nothing (exit 0); with this fleet's sshd stopped: exit 5."""
    from conftest import kill_processes_under
    from fleet import build_fleet
    from sshd import start_sshd
    from upgrader.fleet.transport import close_all

    server = start_sshd(tmp_path / "sshd")
    f = build_fleet(tmp_path / "fleet", server, 2)
    try:
        plan = planned(f, "7.0.4.2")
        approval = approve(f.box, plan)
        before = {h.name: host_state(h) for h in f.hosts}
        capsys.readouterr()
        rc = upgrader(f.box, "run", str(plan), "--approval", str(approval), "--dry-run", "--canary", "1")
        out = capsys.readouterr().out
        assert rc == 0, out
        assert "read now: runs 7.0.4.1, lock free" in out and "host key verified" in out
        assert "stop               bin/stop.sh" in out and "start              bin/start.sh" in out
        assert "probe" in out and "order: [app-01] → [app-02] (the first is the canary)" in out
        assert_hosts_untouched(before, {h.name: host_state(h) for h in f.hosts})
        assert f.run_dirs() == []
        # plan show --check: the same read, without any approval
        assert upgrader(f.box, "plan", "show", str(plan), "--check") == 0
        assert "dry run: every host read, nothing was touched" in capsys.readouterr().out
        server.kill_sessions()  # the pooled connections go too: nothing answers on that port any more
        server.stop()
        close_all()
        rc = upgrader(f.box, "run", str(plan), "--approval", str(approval), "--dry-run")
        out = capsys.readouterr().out
        assert rc == 5
        assert "unreachable" in out and "NOT READY" in out
        assert upgrader(f.box, "plan", "show", str(plan), "--check") == 5
        assert_hosts_untouched(before, {h.name: host_state(h) for h in f.hosts})
    finally:
        server.stop()
        f.stop_all()
        kill_processes_under(tmp_path)


# ---------------------------------------------------------------- 6. inventories


def _ansible_ini(f: Fleet, extra: str = "", group: bool = True) -> Path:
    entry = f.sshd.host_entry()
    lines = ["[prod]" if group else ""]
    for h in f.hosts:
        lines.append(f"{h.name} ansible_host=127.0.0.1 ansible_port={entry['port']} ansible_user={entry['user']} "
                     f"ansible_ssh_private_key_file={entry['key']} known_hosts={entry['known_hosts']} "
                     f"install_dir={h.install_dir} product=sample-middleware playbook=sample-middleware "
                     f"maintenance_until=2099-12-31 port={h.port} {extra}")
    path = f.box.root / "hosts.ini"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_hosts_all_and_ungrouped_select_as_in_ansible(fleet):
    """--hosts all plans every host of an Ansible INI inventory; ungrouped selects the hosts in no group."""
    f = fleet(2)
    inv = _ansible_ini(f)
    out = f.box.plans / "all.json"
    assert upgrader(f.box, "plan", "--inventory", str(inv), "--to", "7.0.4.2", "--catalog", str(f.box.catalog),
                    "--hosts", "all", "-o", str(out)) == 0
    assert [h["name"] for h in json.loads(out.read_text())["hosts"]] == ["app-01", "app-02"]
    inv = _ansible_ini(f, group=False)
    assert upgrader(f.box, "plan", "--inventory", str(inv), "--to", "7.0.4.2", "--catalog", str(f.box.catalog),
                    "--hosts", "ungrouped", "-o", str(out)) == 0
    assert [h["name"] for h in json.loads(out.read_text())["hosts"]] == ["app-01", "app-02"]


def test_ansible_become_is_refused_naming_the_host_and_the_key(fleet, capsys):
    """ansible_become=true (or an ansible_become_user): exit 2 naming the host and the key, no plan, host untouched."""
    f = fleet(1)
    before = host_state(f["app-01"])
    for extra, key in (("ansible_become=true", "ansible_become"), ("ansible_become_user=tongweb", "ansible_become_user")):
        inv = _ansible_ini(f, extra)
        out = f.box.plans / "become.json"
        capsys.readouterr()
        assert upgrader(f.box, "plan", "--inventory", str(inv), "--to", "7.0.4.2", "--catalog", str(f.box.catalog),
                        "-o", str(out)) == 2
        err = capsys.readouterr().err
        assert f"host app-01: {key}" in err and "Traceback" not in err
        assert not out.exists()
    assert_host_untouched(before, host_state(f["app-01"]))


def test_an_unknown_host_key_names_the_three_ways_to_accept_it(fleet, capsys):
    """An empty known_hosts: refused (exit 5) with ssh-keyscan, the inventory's known_hosts and accept-new named."""
    f = fleet(1)
    empty = f.box.root / "empty_known_hosts"
    empty.write_text("")
    f.write_inventory(known_hosts=str(empty))
    capsys.readouterr()
    rc, _ = plan_to(f.box, "7.0.4.2")
    err = capsys.readouterr().err
    assert rc == 5
    assert "ssh-keyscan -p" in err and "known_hosts: FILE for app-01" in err and "host_key: accept-new" in err


def test_configuration_edited_since_the_upgrade_is_named_before_the_rollback_and_where_it_was_kept_after(fleet,
                                                                                                         capsys):
    """conf/server.conf edited while 7.0.4.2 ran: the rollback says so before the stop, restores the backed-up
    file byte for byte and prints where the edited one was kept (it is there, with the edit)."""
    f = fleet(1)
    h = f["app-01"]
    conf = h.install_dir / "conf" / "server.conf"
    original = conf.read_bytes()
    a = execute(f, planned(f, "7.0.4.2"))
    assert a.rc == 0
    conf.write_bytes(original + b"# tuned after the upgrade\n")
    capsys.readouterr()
    assert upgrader(f.box, "rollback", a.id) == 0
    out = capsys.readouterr().out
    said = out.index("app-01: configuration changed since the upgrade: conf/server.conf")
    assert said < out.index("rollback            ok")  # named before the host was stopped and restored
    kept_line = next(line for line in out.splitlines() if "is kept in" in line and line.startswith("app-01:"))
    kept_dir = Path(kept_line.rsplit("is kept in ", 1)[1].strip())
    assert (kept_dir / "conf" / "server.conf").read_bytes() == original + b"# tuned after the upgrade\n"
    assert conf.read_bytes() == original and h.answers() == "7.0.4.1"


def test_a_policy_can_hold_rollbacks_to_the_service_window(fleet, monkeypatch, capsys):
    """window.rollback: like_run with outside: refuse: a rollback at 20:00 is refused (exit 4, host untouched, same
    pid); the next morning it runs. The default (any_time) says that it allows rollbacks at any hour."""
    f = fleet(1)
    h = f["app-01"]
    policy = f.box.policy.read_text(encoding="utf-8")
    assert "  outside: allow\n" in policy
    f.box.policy.write_text(policy.replace("  outside: allow\n", "  outside: refuse\n  rollback: like_run\n"),
                            encoding="utf-8")
    ahead = weeks_ahead("2026-11-27T10:00:00+08:00")  # a Friday to come: the host checks the approval's expiry
    now_at(monkeypatch, shifted_iso("2026-11-27T10:00:00+08:00", ahead))  # by its own clock; inside the window
    plan = planned(f, "7.0.4.2")
    a = execute(f, plan)
    assert a.rc == 0
    before = host_state(h)
    now_at(monkeypatch, shifted_iso("2026-11-27T20:00:00+08:00", ahead))
    capsys.readouterr()
    assert upgrader(f.box, "rollback", a.id) == 4
    assert "outside the service window" in capsys.readouterr().err
    assert_host_untouched(before, host_state(h))
    now_at(monkeypatch, shifted_iso("2026-11-30T10:00:00+08:00", ahead))  # Monday morning
    assert upgrader(f.box, "rollback", a.id) == 0
    assert "the rollback is allowed now (policy window.rollback: like_run)" in capsys.readouterr().out
    assert h.answers() == "7.0.4.1"


def test_on_a_terminal_a_fleet_rollback_asks_before_it_stops_more_than_one_host(fleet):
    """In a real terminal `rollback` of two hosts asks first; "n" leaves both hosts running under the same pids
    (exit 130, as every answer no); "y" rolls both back."""
    import os
    import sys

    import pexpect

    f = fleet(2)
    run = execute(f, planned(f, "7.0.4.2"))
    assert run.rc == 0
    before = {h.name: host_state(h) for h in f.hosts}
    exe = str(Path(sys.executable).with_name("upgrader"))
    for answer, code in (("n", 130), ("y", 0)):
        child = pexpect.spawn(exe, ["--home", str(f.box.root), "rollback", run.id, "--batch", "1"], encoding="utf-8",
                              timeout=120, dimensions=(40, 160), env={**os.environ, "TERM": "xterm"})
        child.expect("roll back 2 hosts")
        child.sendline(answer)
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == code, (child.before or "")[-2000:]
        if answer == "n":
            assert_hosts_untouched(before, {h.name: host_state(h) for h in f.hosts})
    assert f.versions() == {"app-01": "7.0.4.1", "app-02": "7.0.4.1"}


def test_resume_takes_over_a_foreign_lock_only_with_break_lock(fleet, capsys):
    """Run A killed in preflight leaves only its lock; another controller's lock then replaces it. `resume A` is
    refused by that lock (exit 5, pid unchanged); `resume A --break-lock` releases the host untouched and the audit
    log names the holder it replaced."""
    import os
    import subprocess
    import sys

    f = fleet(1)
    h = f["app-01"]
    plan = planned(f, "7.0.4.2")
    killed = subprocess.run([sys.executable, "-m", "upgrader", "--home", str(f.box.root), "run", str(plan),
                             "--approval", str(approve(f.box, plan))],
                            env={**os.environ, **fault_env(kill_at="backup:before")}, capture_output=True,
                            text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr[-2000:]
    (a_dir,) = f.run_dirs()
    (h.state_dir / "lock").write_text(json.dumps({"run": "20261101T000000Z-other1", "controller": "laptop-9",
                                                   "user": "li", "time": 1761955200}))
    before = host_state(h)
    assert upgrader(f.box, "resume", a_dir.name) == 5
    assert_host_untouched(before, host_state(h))
    capsys.readouterr()
    assert upgrader(f.box, "resume", a_dir.name, "--break-lock") == 1  # released untouched: the run did not happen
    out = capsys.readouterr().out
    assert "broke the lock of run 20261101T000000Z-other1 (li@laptop-9)" in out
    assert h.answers() == "7.0.4.1" and str(pid(h)) == before.pid and not (h.state_dir / "lock").exists()
    events = [json.loads(x) for x in (f.box.root / "audit" / "audit.jsonl").read_text().splitlines()]
    assert [e["data"]["holder"]["user"] for e in events if e["event"] == "lock_broken"] == ["li"]
