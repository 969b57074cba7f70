"""Issue 20, attack20r16 H1, M1 and M2, through the shipped CLI over the real sshd.

- H1: a killed run stays open after the README's recovery (`upgrader resume RUN`); the engineer holding the operator
  key appended lines of it after the resume (a failed rollback, app-01 needs_person, exit 5) and signed them. Every
  view read INTACT with --witness. A resume or rollback of a run opens only once the run has stopped (the run's
  directory lock: a resume of a run still working is refused), so a line of the run after that opening is edited.
- M1: host events with no run skipped every run rule: upgrader writes every run, host and phase event with its run.
- M2: a host that finished the killed run before the kill keeps the recovering resume's checkpoint as its witness,
  so the honest kill + resume log reads INTACT with --witness (it stayed NOT PROVEN)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
import pytest
from conftest import approve, plan_to

from fleet import Fleet
from test_audit_witness_attacks_2 import ALTERED, fleet, log_of, records, run_once  # noqa: F401
from test_audit_witness_attacks_10 import engineer_appends
from test_audit_witness_attacks_12 import fleet2  # noqa: F401
from test_ctrl_c import cli


def shipped(f: Fleet, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed CLI as the operator runs it (a child process, stdin not a terminal)."""
    return subprocess.run([sys.executable, "-m", "upgrader", "--home", str(f.box.root), *argv], cwd=f.box.root,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300,
                          env={**os.environ, **(env or {})})


def hook_waits(f: Fleet, host: str) -> tuple[Path, Path]:
    """``host``'s after_commit hook waits for a release file (the host is committed by then); (started, release)."""
    started, release = f.box.root / f"{host}-commit-hook", f.box.root / "hook-release"
    waiter = f.box.root / "wait.sh"
    waiter.write_text(f'if [ "$UPGRADER_HOST" = {host} ]; then touch {started}; i=0; '
                      f'while [ ! -e {release} ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done; fi\n')
    f.write_inventory(playbook=f.write_playbook("commit-hook-waits", hooks={
        "after_commit": [{"command": f"/bin/sh {waiter}", "timeout": "120s"}]}).stem)
    return started, release


def wait_for(path: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)


def killed_in_hook(f: Fleet, host: str, done: tuple[str, ...] = ()) -> str:
    """`upgrader run` SIGKILLed while ``host``'s after_commit hook runs (and the log ended the ``done`` hosts); the
    run id."""
    started, release = hook_waits(f, host)
    rc, plan = plan_to(f.box, "7.0.4.2")
    assert rc == 0
    approval = approve(f.box, plan)
    proc = cli(f.box, "run", str(plan), "--approval", str(approval), "--yes", "--json")
    wait_for(started, proc)
    deadline = time.monotonic() + 120
    while not set(done) <= {r.get("host") for r in records(log_of(f)) if r["event"] == "host_finished"}:
        assert proc.poll() is None and time.monotonic() < deadline, "the other hosts never finished"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    release.touch()
    proc.communicate(timeout=240)
    time.sleep(0.5)  # the hook's end reaches the host's record
    return sorted(p.name for p in (f.box.root / "runs").iterdir())[-1]


def views(f: Fleet, run: str, log: Path, tmp_path: Path) -> dict[str, subprocess.CompletedProcess[str]]:
    inv = str(f.box.inventory)
    return {"verify": shipped(f, "audit", "verify", str(log), "--witness", inv),
            "plain": shipped(f, "audit", "verify", str(log)),
            "zh": shipped(f, "audit", "verify", str(log), "--witness", inv, "--lang", "zh"),
            "case": shipped(f, "audit", "case", run, str(log), "--witness", inv),
            "show": shipped(f, "audit", "show", str(log), "--witness", inv),
            "export": shipped(f, "audit", "export", str(log), "--witness", inv, "--format", "csv", "-o",
                              str(tmp_path / "x.csv"))}


def test_a_killed_run_reopened_after_its_resume_is_altered_and_the_honest_recovery_is_intact(
        fleet: Fleet, tmp_path: Path) -> None:
    """H1 (attacker's f4) + M2 on one host: SIGKILL while app-01's after_commit hook runs, then `resume RUN`. The
    honest log reads INTACT with --witness in every view. The engineer's lines of RUN after the resume (failed
    rollback, app-01 needs_person, exit 5, a signed checkpoint) are edited (exit 6) in verify (plain, --witness, zh),
    case, show and export, naming the first appended line; the case marks the made-up end the controller's word."""
    f = fleet
    run = killed_in_hook(f, "app-01")
    p = shipped(f, "resume", run)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f.versions() == {"app-01": "7.0.4.2"}
    honest = tmp_path / "honest.jsonl"
    shutil.copy(log_of(f), honest)
    for name, v in views(f, run, honest, tmp_path).items():
        assert v.returncode == 0, (name, v.stdout, v.stderr)
    assert "INTACT" in shipped(f, "audit", "verify", str(honest), "--witness", str(f.box.inventory)).stdout

    lines = len(records(log_of(f)))
    np = {"host": "app-01", "outcome": "needs_person",
          "data": {"version": "7.0.4.1", "error": "stop: the service did not stop; left for a person",
                   "rollback_cause": None}}
    engineer_appends(f, run, [
        ("phase_started", {"host": "app-01", "phase": "rollback"}),
        ("phase_finished", {"host": "app-01", "phase": "rollback", "outcome": "failed",
                            "data": {"seconds": 0.2, "detail": "restore failed: disk full"}}),
        ("host_finished", np),
        ("run_finished", {"data": {"exit_code": 5, "stopped_early": None, "outcomes": {"app-01": "needs_person"}}})])
    forged = log_of(f)
    seen = views(f, run, forged, tmp_path)
    for name, v in seen.items():
        assert v.returncode == ALTERED, (name, v.stdout, v.stderr)
        assert "Traceback" not in v.stderr, v.stderr
    text = " ".join(seen["verify"].stdout.split())
    assert f"ALTERED: line {lines + 1}: not an event upgrader writes: a line of run {run} after line" in text, text
    assert "a later part of that run" in text, text
    assert "之后" in seen["zh"].stdout and "后续部分" in seen["zh"].stdout, seen["zh"].stdout
    assert "needs_person (the controller's word)" in " ".join(seen["case"].stdout.split()), seen["case"].stdout
    zh = shipped(f, "audit", "case", run, str(forged), "--witness", str(f.box.inventory), "--lang", "zh")
    assert "（控制端的一面之词）" in zh.stdout, zh.stdout
    js = shipped(f, "audit", "case", run, str(forged), "--witness", str(f.box.inventory), "--json")
    assert json.loads(js.stdout)["case"]["witnesses"]["no_finish"] == ["app-01"], js.stdout
    cases = (tmp_path / "x.cases.csv").read_text()
    assert "needs_person (the controller's word)" in cases, cases


def test_a_resume_of_a_run_still_working_is_refused_and_nothing_is_written(fleet: Fleet) -> None:
    """H1's premise: `resume RUN` while RUN still runs (its hook waits) is refused (exit 2, en and zh), nothing is
    added to the log and the host is untouched; the run then ends and the log reads INTACT."""
    f = fleet
    started, release = hook_waits(f, "app-01")
    rc, plan = plan_to(f.box, "7.0.4.2")
    assert rc == 0
    approval = approve(f.box, plan)
    proc = cli(f.box, "run", str(plan), "--approval", str(approval), "--yes", "--json")
    wait_for(started, proc)
    run = sorted(p.name for p in (f.box.root / "runs").iterdir())[-1]
    before = log_of(f).read_bytes()
    for argv, lang in ((["resume", run], "en"), (["rollback", run, "--yes"], "en"), (["resume", run], "zh")):
        p = shipped(f, *argv, env={"LC_ALL": "zh_CN.UTF-8"} if lang == "zh" else {"LC_ALL": "C.UTF-8"})
        assert p.returncode == 2, (argv, p.stdout, p.stderr)
        assert "Traceback" not in p.stderr
        said = " ".join((p.stdout + p.stderr).split())
        assert (f"run {run} is still running in another upgrader process" in said if lang == "en"
                else f"运行 {run} 仍在另一个 upgrader 进程中运行" in said), said
    assert log_of(f).read_bytes() == before
    release.touch()
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, (out, err)
    assert f.versions() == {"app-01": "7.0.4.2"}
    assert not any(r["event"] in ("resume_requested", "rollback_requested") for r in records(log_of(f)))
    v = shipped(f, "audit", "verify", "--witness", str(f.box.inventory))
    assert v.returncode == 0 and "INTACT" in v.stdout, v.stdout + v.stderr


def test_host_events_with_no_run_are_edited_lines(fleet: Fleet, tmp_path: Path) -> None:
    """M1 (attacker's nr): host_started, a failed rollback phase and host_finished needs_person of app-01 with no
    run, signed with the operator key, are edited at the first of them in verify (plain, --witness), show and
    export; the honest log before them reads INTACT."""
    f = fleet
    run_once(f)
    assert shipped(f, "audit", "verify", "--witness", str(f.box.inventory)).returncode == 0
    lines = len(records(log_of(f)))
    engineer_appends(f, None, [  # type: ignore[arg-type]
        ("host_started", {"host": "app-01"}),
        ("phase_started", {"host": "app-01", "phase": "rollback"}),
        ("phase_finished", {"host": "app-01", "phase": "rollback", "outcome": "failed",
                            "data": {"seconds": 0.1, "detail": "x"}}),
        ("host_finished", {"host": "app-01", "outcome": "needs_person",
                           "data": {"version": "7.0.4.1", "error": "rollback failed", "rollback_cause": None}})])
    inv = str(f.box.inventory)
    for argv in (["verify"], ["verify", "--witness", inv], ["show", "--witness", inv],
                 ["export", "--witness", inv, "--format", "csv", "-o", str(tmp_path / "nr.csv")]):
        p = shipped(f, "audit", *argv)
        assert p.returncode == ALTERED, (argv, p.stdout, p.stderr)
    text = " ".join(shipped(f, "audit", "verify").stdout.split())
    assert (f"ALTERED: line {lines + 1}: not an event upgrader writes: a host_started line with no run" in text), text
    zh = shipped(f, "audit", "verify", "--lang", "zh")
    assert "一条没有运行编号的 host_started 行" in zh.stdout, zh.stdout


def test_a_host_that_finished_before_the_kill_is_witnessed_by_the_recovering_resume(
        fleet2: Fleet, tmp_path: Path) -> None:
    """M2 (attacker's P): two hosts, no canary; app-01 committed, SIGKILL while app-02's after_commit hook runs, then
    the README's `upgrader resume RUN`. The resume asks app-01 too to witness its checkpoint (it covers RUN's lines,
    app-01's finish among them), so `audit verify --witness` reads INTACT, not NOT PROVEN."""
    f = fleet2
    run = killed_in_hook(f, "app-02", ("app-01",))
    p = shipped(f, "resume", run)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f.versions() == {"app-01": "7.0.4.2", "app-02": "7.0.4.2"}
    assert "did not record the checkpoint" not in p.stdout + p.stderr, p.stderr
    assert not any(r["event"] == "witness_missing" for r in records(log_of(f)))
    v = shipped(f, "audit", "verify", "--witness", str(f.box.inventory))
    assert v.returncode == 0 and "INTACT" in v.stdout, v.stdout + v.stderr
    c = shipped(f, "audit", "case", run, "--witness", str(f.box.inventory))
    assert c.returncode == 0, c.stdout + c.stderr
