"""Ctrl-C (SIGINT) while `upgrader run`, `resume` or `rollback` goes on.

`run`: the first Ctrl-C cancels at the engine's next safe point (a host not stopped yet is released
unchanged, a stopped one is rolled back), no other host starts, the run still ends with its summary, its
result file and its audit records; further presses only ask for patience. `resume` and `rollback` are
never stopped halfway: Ctrl-C only says so. The real CLI runs as a child process on the real sample
middleware; the signal is the one a terminal sends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from conftest import approve, fault_env, plan_to
from hoststate import assert_released, host_state
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.engine import CANCELLED
from upgrader.core.journal import read_journal


def slow_observation(box: Sandbox, window: str = "6s") -> None:
    """The sandbox's playbook with a longer observation window: time to press Ctrl-C during it."""
    playbooks = box.root / "playbooks"
    playbooks.mkdir(exist_ok=True)
    text = (Path(__file__).resolve().parent.parent / "playbooks" / "sample-middleware.yaml").read_text()
    (playbooks / "sample-middleware.yaml").write_text(text.replace("window: 2s", f"window: {window}"))


def cli(box: Sandbox, *argv: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "upgrader", "--home", str(box.root), *argv], cwd=box.root,
                            env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def journal_shows(box: Sandbox, phase: str, event: str, timeout: float = 60) -> Path:
    """Wait until the (only) run's journal has this record; the run directory."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in (box.root / "runs").glob("*/journal.jsonl"):
            if any(r.phase == phase and r.event == event for r in read_journal(run)):
                return run.parent
        time.sleep(0.05)
    raise AssertionError(f"the journal never showed {phase} {event}")


def press_ctrl_c(proc: subprocess.Popen[str], times: int = 1) -> tuple[int, str, str]:
    for _ in range(times):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def audit_events(box: Sandbox) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (box.root / "audit" / "audit.jsonl").read_text().splitlines()]


def audit_verifies(box: Sandbox) -> bool:
    return subprocess.run([sys.executable, "-m", "upgrader", "--home", str(box.root), "audit", "verify"],
                          capture_output=True, text=True).returncode == 0


def approved(box: Sandbox, version: str) -> tuple[Path, Path]:
    rc, plan = plan_to(box, version)
    assert rc == 0
    return plan, approve(box, plan)


def pid_of(box: Sandbox) -> str:
    return (box.install_dir / "run" / "server.pid").read_text().strip()


def run_with_ctrl_c(box: Sandbox, when: Callable[[], Path], times: int = 1,
                    env: dict[str, str] | None = None) -> tuple[int, str, str, dict[str, Any]]:
    plan, approval = approved(box, "7.0.4.2")
    proc = cli(box, "run", str(plan), "--approval", str(approval), "--json", env=env)
    run_dir = when()
    rc, out, err = press_ctrl_c(proc, times)
    return rc, out, err, json.loads((run_dir / "result.json").read_text())


def test_ctrl_c_while_the_new_version_is_observed_rolls_it_back_and_keeps_every_record(sandbox: Sandbox) -> None:
    """Pressed twice during observe: the host is rolled back to 7.0.4.1 (cause: the operator's cancel), exit 1,
    the summary and result.json are written, the audit log records the two presses and still verifies."""
    box = sandbox
    slow_observation(box)
    rc, out, err, result = run_with_ctrl_c(box, lambda: journal_shows(box, "observe", "intent"), times=2)
    assert rc == 1, err
    (host,) = result["hosts"]
    assert (host["outcome"], host["rollback_cause"], host["version"]) == ("rolled_back", CANCELLED, "7.0.4.1")
    assert json.loads(out)["hosts"][0]["outcome"] == "rolled_back"
    assert box.answers() == "7.0.4.1"
    assert "Ctrl-C: cancelling the run" in err and "still cancelling" in err
    assert f"upgrader resume {result['run_id']}" in err
    assert "Traceback" not in err and "internal error" not in err
    assert "app-01: was rolled back: cancelled by the operator" in err
    events = audit_events(box)
    (pressed,) = [e for e in events if e["event"] == "run_interrupted"]
    assert (pressed["outcome"], pressed["data"]["presses"]) == ("cancelled", 2)
    finished = [e for e in events if e["event"] == "run_finished"]
    assert finished and finished[-1]["outcome"] != "error"
    assert events[-1]["event"] == "checkpoint"
    assert audit_verifies(box)
    resumed = cli(box, "resume", result["run_id"])
    assert resumed.wait(60) == 1 and "had finished" in resumed.communicate()[0]


def test_ctrl_c_before_stop_releases_the_host_untouched(sandbox: Sandbox) -> None:
    """Pressed while the run waits before stop: the service is never stopped (same process), exit 1, outcome
    unchanged with the operator's cancel as the reason."""
    box = sandbox
    before, whole = pid_of(box), host_state(box.install_dir, answers=box.answers)
    rc, _, err, result = run_with_ctrl_c(box, lambda: journal_shows(box, "backup", "done"),
                                         env=fault_env(pause_at="stop"))
    assert rc == 1, err
    (host,) = result["hosts"]
    assert host["outcome"] == "unchanged" and CANCELLED in host["error"], host
    assert [p["phase"] for p in host["phases"]] == ["preflight", "backup"]
    assert pid_of(box) == before and box.answers() == "7.0.4.1"
    assert_released(whole, host_state(box.install_dir, answers=box.answers))
    assert "Traceback" not in err
    assert audit_verifies(box)


def test_ctrl_c_during_rollback_is_not_obeyed_halfway(sandbox: Sandbox) -> None:
    """`upgrader rollback` of a committed run, Ctrl-C pressed twice while the old version is observed: the
    rollback goes on to its end (7.0.4.1, healthy, exit 0), the operator is told why, the audit records it."""
    box = sandbox
    slow_observation(box, "4s")
    plan, approval = approved(box, "7.0.4.2")
    assert cli(box, "run", str(plan), "--approval", str(approval)).wait(120) == 0
    (run_dir,) = [p for p in (box.root / "runs").iterdir() if p.is_dir()]
    run_ended = max(r.seq for r in read_journal(run_dir / "journal.jsonl") if r.phase == "run" and r.event == "end")
    proc = cli(box, "rollback", run_dir.name, "--json")
    deadline = time.monotonic() + 60
    while not any(r.seq > run_ended and r.phase == "observe" and r.event == "intent"
                  for r in read_journal(run_dir / "journal.jsonl")):
        assert time.monotonic() < deadline, "the rollback never reached its observe"
        time.sleep(0.05)
    rc, out, err = press_ctrl_c(proc, times=2)
    assert rc == 0, err
    assert json.loads(out)["hosts"][0]["outcome"] == "restored"
    assert box.answers() == "7.0.4.1"
    assert err.count("a resume or rollback is not stopped halfway") == 2
    (pressed,) = [e for e in audit_events(box) if e["event"] == "run_interrupted"]
    assert (pressed["outcome"], pressed["data"]["presses"]) == ("continued", 2)
    assert audit_verifies(box)



def test_ctrl_c_during_the_second_host_of_a_fleet_rolls_it_back_and_no_later_host_is_touched(fleet) -> None:
    """Four hosts over the real sshd, `--batch 1`; Ctrl-C while the second host runs its after_install hook (stopped,
    new version in place): the first stays committed on 7.0.4.2, the second is rolled back to 7.0.4.1 byte for
    byte, the third and fourth are never touched (the whole host as before: product files, service process and
    its start time, lock, staged packages, the agent's state and ledger); exit 1, the audit log verifies."""
    from fleet import Fleet
    from hoststate import assert_host_untouched

    f: Fleet = fleet(4)
    started, release = f.box.root / "app-02-hook-started", f.box.root / "hook-release"
    # a script file: the hook runs as root, and a root command names no shell variable but the agent's own
    waiter = f.box.root / "wait-on-app-02.sh"
    waiter.write_text(f'if [ "$UPGRADER_HOST" = app-02 ]; then touch {started}; i=0; '
                      f'while [ ! -e {release} ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done; fi\n')
    waits = f"/bin/sh {waiter}"
    f.write_inventory(playbook=f.write_playbook("ctrl-c-fleet", hooks={
        "after_install": [{"command": waits, "timeout": "120s"}]}).stem)

    def whole(name: str) -> Any:
        h = f[name]
        return host_state(h.install_dir, state_dir=h.state_dir, answers=h.answers)

    before = {h.name: whole(h.name) for h in f.hosts}
    plan, approval = approved(f.box, "7.0.4.2")
    proc = cli(f.box, "run", str(plan), "--approval", str(approval), "--batch", "1", "--json")
    deadline = time.monotonic() + 120
    while not started.exists():
        assert proc.poll() is None, f"the run ended before app-02's hook: {proc.communicate()}"
        assert time.monotonic() < deadline, "app-02's after_install hook never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    release.touch()
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 1, f"exit {proc.returncode}: {out[-2000:]} {err[-2000:]}"
    result = json.loads(out)
    outcomes = {h["host"]: h["outcome"] for h in result["hosts"]}
    assert outcomes == {"app-01": "committed", "app-02": "rolled_back", "app-03": "not_started",
                        "app-04": "not_started"}, outcomes
    assert CANCELLED in next(h for h in result["hosts"] if h["host"] == "app-02")["rollback_cause"] or \
        CANCELLED in str(next(h for h in result["hosts"] if h["host"] == "app-02").get("error"))
    assert f["app-01"].answers() == "7.0.4.2"
    assert f["app-02"].answers() == "7.0.4.1"
    assert whole("app-02").product == before["app-02"].product, "app-02 is not 7.0.4.1 byte for byte"
    for name in ("app-03", "app-04"):
        assert_host_untouched(before[name], whole(name), name)
        assert not f[name].run_dir(result["run_id"]).exists()
    assert "Traceback" not in err
    assert audit_verifies(f.box)
