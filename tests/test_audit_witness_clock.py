"""Issue 20, the auditor's case file, round 7 (attack20r7 #1 and #2, attack20r6 #9b): the controller's clock against
the hosts' own, played through the shipped CLI.

- After the controller's clock stepped back (one plan made while it ran fast), the log's writer raises the next
  lines' time to the fast line's and keeps its real clock beside it (``clock``): an honest run then reads INTACT
  with --witness (ALTERED before: stop, install and start "moved", downtime 0.000 s, a clock offset mismatch), and
  its case shows the real outage. A phase moved by its ``clock`` is still ALTERED; a ``clock`` beside a time that
  was not raised is an edited line.
- A killed run moved whole (every line, its preflight too) 840 s later before its recovery: the host kept the
  controller's clock at its lock beside its own, so the offset is fixed on the host: ALTERED naming the lock time
  (INTACT before: the offset moved with the lines).
- A resume or rollback of a run killed before its backup ends it "unchanged" on the host with no phase: the host is
  still sent the checkpoint (NOT PROVEN forever before: unwitnessed)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import approve, fault_env, kill_processes_under, plan_to, sandbox, upgrader  # noqa: F401

from upgrader.cli import main
from upgrader.cli.commands.demo import Sandbox
from test_audit_witness_attacks_2 import ALTERED, records


def verify_box(box: Sandbox, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    """The auditor's `audit verify --witness` of the sandbox's log (its one host read locally), as one line."""
    capsys.readouterr()
    rc = main(["--home", str(box.root), "audit", "verify", str(box.root / "audit" / "audit.jsonl"), "--policy",
               str(box.policy), "--witness", str(box.inventory), *extra])
    return rc, " ".join(capsys.readouterr().out.split())


def cli(box: Sandbox, *argv: str, kill_at: str | None = None,
        fake: str | None = None) -> subprocess.CompletedProcess[str]:
    """The shipped CLI in a child process: killed at ``kill_at`` (the test suite's fault plugin), or with its clock
    (and the local host's, whose agent it starts) moved by faketime ``fake``."""
    env = {k: v for k, v in os.environ.items() if k != "UPGRADER_FAULT_KILL_AT"}
    if kill_at:
        env.update(fault_env(kill_at=kill_at))
    cmd = [sys.executable, "-m", "upgrader", "--home", str(box.root), *argv]
    return subprocess.run((["faketime", "-f", fake] if fake else []) + cmd, env=env, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)


def resign(box: Sandbox, edit: Any) -> None:
    """The engineer with the operator key: edit the log's lines, rebuild the chain, sign every checkpoint again."""
    from test_audit_witness import rechain
    from upgrader.trust.keys import load_private_key

    log = box.root / "audit" / "audit.jsonl"
    log.write_bytes(b"".join(rechain(log.read_bytes().splitlines(keepends=True), edit,
                                     load_private_key(str(box.operator_key)), "operator@customer")))


def shifted(value: object, seconds: float) -> str:
    return (dt.datetime.fromisoformat(str(value)) + dt.timedelta(seconds=seconds)).isoformat(timespec="milliseconds")


def honest_run_after_a_clock_step_back(box: Sandbox) -> str:
    """A plan and its approval, then one plan made while the controller's clock ran 120 s fast (faketime), then the
    approved run at the real clock: its run id. The run's lines carry the fast line's time, their clock beside it."""
    rc, plan = plan_to(box, "7.0.4.2")
    assert rc == 0
    approval = approve(box, plan)
    fast = cli(box, "plan", "--inventory", str(box.inventory), "--to", "7.0.4.3", "--catalog", str(box.catalog),
               "--key", str(box.requester_key), "-o", str(box.plans / "fast.json"), fake="+120s")
    assert fast.returncode in (0, 3), fast.stdout + fast.stderr  # made or refused: its line is the fast one
    assert upgrader(box, "run", str(plan), "--approval", str(approval)) == 0
    return next(r["run"] for r in records(box.root / "audit" / "audit.jsonl") if r.get("event") == "run_started")


def raised_stop_lines(box: Sandbox, run: str) -> list[dict[str, Any]]:
    """The run's stop phase lines, each raised to the fast line's time with the writer's clock beside it."""
    raised = [r for r in records(box.root / "audit" / "audit.jsonl") if r.get("run") == run and r.get("phase") == "stop"]
    assert raised and all("clock" in r and r["clock"] < r["time"] for r in raised), raised
    return raised


def test_an_honest_run_after_the_controllers_clock_stepped_back_reads_intact(
        sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """Finding 1: the lines of the honest run were raised to the fast plan's time; compared by the writer's own
    clock kept beside them, the host's steps agree: INTACT (exit 6 before: stop, install, start "moved", downtime
    0.000 s); its case shows the outage by the controller's clock, not 0."""
    box = sandbox
    run = honest_run_after_a_clock_step_back(box)
    rc, text = verify_box(box, capsys)
    assert rc == 0 and text.startswith("INTACT"), text
    raised_stop_lines(box, run)
    capsys.readouterr()
    rc = main(["--home", str(box.root), "audit", "case", run, "--policy", str(box.policy), "--json"])
    case = json.loads(capsys.readouterr().out)
    assert rc == 0 and case["case"]["downtime_seconds"] > 0, case


def test_a_phase_moved_by_its_clock_still_reads_altered(sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """Finding 1, the other way: the engineer moves the honest run's stop phase 30 s earlier by its ``clock`` (chain
    rebuilt, re-signed): ALTERED naming the stop time. A ``clock`` put beside a time that was not raised is an
    edited line (ALTERED, the line named)."""
    box = sandbox
    run = honest_run_after_a_clock_step_back(box)
    raised_stop_lines(box, run)

    def earlier_stop(r: dict[str, Any]) -> dict[str, Any]:
        if r.get("run") == run and r.get("phase") == "stop":
            r["clock"] = shifted(r["clock"], -30)
        return r

    log = box.root / "audit" / "audit.jsonl"
    honest = log.read_bytes()
    resign(box, earlier_stop)
    rc, text = verify_box(box, capsys)
    assert rc == ALTERED and text.startswith("ALTERED"), text
    assert f"host app-01's own record of run {run} differs from the log: stop time is " in text, text

    log.write_bytes(honest)
    first = records(log)[0]

    def clocked(r: dict[str, Any]) -> dict[str, Any]:
        if r["seq"] == first["seq"]:
            r["clock"] = shifted(r["time"], -5)
        return r

    resign(box, clocked)
    rc, text = verify_box(box, capsys)
    assert rc == ALTERED and "line 1" in text and "'clock'" in text, text


def test_a_killed_run_moved_whole_is_held_to_the_controllers_clock_at_the_lock(
        sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """Finding 2: the run is killed when its install finished (the service down); the engineer moves every line of
    it, its run_started and preflight too, 840 s later (chain rebuilt) and 15 minutes later (faketime) rolls it
    back. The host kept the controller's clock at its lock: the log's preflight is 840 s after it: ALTERED, in
    English and Chinese (INTACT before: the offset moved with the lines, a 15-minute outage shown as one)."""
    box = sandbox
    rc, plan = plan_to(box, "7.0.4.2")
    assert rc == 0
    killed = cli(box, "run", str(plan), "--approval", str(approve(box, plan)), kill_at="install:finished")
    assert killed.returncode < 0, killed.stdout + killed.stderr
    log = box.root / "audit" / "audit.jsonl"
    run = next(r["run"] for r in records(log) if r.get("event") == "run_started")

    def later(r: dict[str, Any]) -> dict[str, Any]:
        if r.get("run") == run:
            r["time"] = shifted(r["time"], 840)
            if "clock" in r:
                r["clock"] = shifted(r["clock"], 840)
        return r

    resign(box, later)
    recovered = cli(box, "rollback", run, "--yes", fake="+15m")
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    rc, text = verify_box(box, capsys)
    assert rc == ALTERED and text.startswith("ALTERED"), text
    assert f"host app-01's own steps of run {run} (opened there at " in text and "lock time is " in text, text
    assert "(the controller's clock, told to the host at its lock at " in text, text
    rc, zh = verify_box(box, capsys, "--lang", "zh")
    assert rc == ALTERED and "加锁时控制端的时钟：主机记为" in zh, zh


@pytest.mark.parametrize("recovery", ["resume", "rollback"])
def test_a_recovery_of_a_run_killed_before_its_backup_is_witnessed(
        sandbox: Sandbox, capsys: pytest.CaptureFixture[str], recovery: str) -> None:
    """attack20r6 #9b: the run is killed when its backup phase started; its resume (or rollback) ends it unchanged on
    the host with no phase that went well. The host is sent the checkpoint all the same: "witnessed by: app-01" and
    INTACT (NOT PROVEN before: the host finished the part, its witness was never sent)."""
    box = sandbox
    rc, plan = plan_to(box, "7.0.4.2")
    assert rc == 0
    killed = cli(box, "run", str(plan), "--approval", str(approve(box, plan)), kill_at="backup:started")
    assert killed.returncode < 0, killed.stdout + killed.stderr
    run = next(r["run"] for r in records(box.root / "audit" / "audit.jsonl") if r.get("event") == "run_started")
    capsys.readouterr()
    rc = main(["--home", str(box.root), recovery, run, *(["--yes"] if recovery == "rollback" else [])])
    out = " ".join(capsys.readouterr().out.split())
    assert rc in (0, 1), out
    assert "witnessed by: app-01" in out, out
    rc, text = verify_box(box, capsys)
    assert rc == 0 and text.startswith("INTACT"), text


@pytest.fixture(autouse=True)
def _no_leftovers(tmp_path: Path) -> Iterator[None]:
    yield
    kill_processes_under(tmp_path)
