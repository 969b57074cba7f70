"""Issue 20, the auditor's case file, round 9 (attack20r9 M3), over the real sshd: the controller's wall clock
stepped back 5 s (an NTP step, a VM resumed) in the middle of an honest rolling run (`--batch 1`, two hosts).

The run's controller runs under libfaketime with its offset read from a file (FAKETIME_TIMESTAMP_FILE, reread on
every call): the test writes "-5" there while app-01 observes; the monotonic clock is not faked (a step moves the
wall clock only) and the hosts' agents, under sshd, keep the true clock. Each line the run writes keeps the
controller's monotonic clock beside its wall clock (``mono``), so the log records the step:

- the honest run reads INTACT with `audit verify --witness` (ALTERED before: app-01's one clock offset "-0.1s /
  -5.0s", app-02's run start "after the lock");
- the same run with its step back taken out of the record (the later lines' monotonic readings moved with their
  times: lines moved 5 s earlier with no step back recorded; chain rebuilt, re-signed) reads ALTERED, each host's
  times named;
- a phase moved earlier by its times alone (its monotonic readings kept: a step back that the lines after it do
  not show) still reads ALTERED."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import LIBFAKETIME, approve, kill_processes_under, plan_to

from fleet import Fleet
from test_audit_witness_attacks_2 import ALTERED, log_of, records, verify
from test_audit_witness_attacks_7 import fleet2  # noqa: F401 - a fixture
from test_audit_witness_clock import shifted
from test_audit_witness_clock_2 import resign_fleet


def run_with_a_step_back(f: Fleet, tmp_path: Path) -> str:
    """The rolling run, its controller's wall clock stepped back 5 s once app-01's observe phase started: its id."""
    rc, plan = plan_to(f.box, "7.0.4.2")
    assert rc == 0
    approval = approve(f.box, plan)
    spec = tmp_path / "faketime-offset"
    spec.write_text("+0\n")
    env = {k: v for k, v in os.environ.items() if k != "UPGRADER_FAULT_KILL_AT"}
    env.update({"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME_TIMESTAMP_FILE": str(spec), "FAKETIME_NO_CACHE": "1",
                "FAKETIME_DONT_FAKE_MONOTONIC": "1"})
    log = log_of(f)
    stepped = threading.Event()

    def step_when_app01_observes() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            try:
                lines = records(log)
            except ValueError:  # a line being written
                lines = []
            if any(r.get("event") == "phase_started" and r.get("phase") == "observe" and r.get("host") == "app-01"
                   for r in lines):
                spec.write_text("-5\n")
                stepped.set()
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=step_when_app01_observes, daemon=True)
    watcher.start()
    ran = subprocess.run([sys.executable, "-m", "upgrader", "--home", str(f.box.root), "run", str(plan),
                          "--approval", str(approval), "--batch", "1", "--yes"], env=env, capture_output=True,
                         text=True, timeout=300, stdin=subprocess.DEVNULL)
    watcher.join(timeout=1)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert stepped.is_set()
    assert f["app-01"].answers() == f["app-02"].answers() == "7.0.4.2"
    run = next(r["run"] for r in records(log) if r.get("event") == "run_started")
    mine = [r for r in records(log) if r.get("run") == run]
    # the step is in the log: lines raised with the writer's clock beside them, the monotonic clock on every line
    assert all(isinstance(r.get("mono"), (int, float)) for r in mine), mine
    assert any("clock" in r for r in mine), mine
    observe = next(r for r in mine if r.get("phase") == "observe" and r.get("host") == "app-01")
    last = mine[-1]
    wall = (_at(last.get("clock", last["time"])) - _at(observe.get("clock", observe["time"])))
    assert wall - (last["mono"] - observe["mono"]) < -4.0, (observe, last)
    return run


def _at(value: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(value).timestamp()


def test_an_honest_rolling_run_whose_controller_clock_stepped_back_reads_intact(
        fleet2: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """M3: the honest run reads INTACT, both hosts' witnesses read (ALTERED before: app-01's clock offset, app-02's
    run start after its lock)."""
    f = fleet2
    run_with_a_step_back(f, tmp_path)
    rc, report, text = verify(f, capsys)
    assert rc == 0 and text.startswith("INTACT"), text


def forged(f: Fleet, run: str, edit: Any) -> None:
    """The engineer with the operator key edits the run's lines, keeping times as the writer keeps them (a line whose
    clock is before the line before's time is raised to it, its clock beside it; any other's time is its clock),
    rebuilds the chain and re-signs it. (The hosts witnessed the honest head: that mismatch is said too; what is
    asserted is each host's own times against the forged lines.)"""
    last: list[str] = []

    def in_order(r: dict[str, Any]) -> dict[str, Any]:
        r = edit(r)
        clock = r.pop("clock", r["time"])
        if last and clock < last[0]:
            r["time"], r["clock"] = last[0], clock
        else:
            r["time"] = clock
        last[:] = [r["time"]]
        return r

    resign_fleet(f, in_order)


def test_lines_moved_as_a_step_back_would_but_with_none_recorded_read_altered(
        fleet2: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same honest run, its step back taken out of the record: every line after the step given a monotonic
    reading 5 s less, so that the lines look moved 5 s earlier with no step back recorded (chain rebuilt,
    re-signed): ALTERED, app-01's clock offset and app-02's run start named, as before
    this version. And the honest run's app-01 stop phase moved 5 s earlier by its times alone (its monotonic
    readings kept, the lines after it not moved: a step back that does not stay): ALTERED naming the stop time."""
    f = fleet2
    run = run_with_a_step_back(f, tmp_path)
    log = log_of(f)
    honest = log.read_bytes()
    observed = next(r for r in records(log) if r.get("run") == run and r.get("phase") == "observe"
                    and r.get("host") == "app-01" and r["event"] == "phase_finished")

    def unrecorded(r: dict[str, Any]) -> dict[str, Any]:
        if r.get("run") == run and r["seq"] >= observed["seq"]:
            r["mono"] = round(r["mono"] - 5, 3)
        return r

    forged(f, run, unrecorded)
    rc, _, text = verify(f, capsys)
    assert rc == ALTERED and text.startswith("ALTERED"), text
    assert f"host app-01's own record of run {run} differs from the log: clock offset is" in text, text
    assert f"host app-02's own record of run {run} differs from the log: run start is" in text, text

    log.write_bytes(honest)

    def stop_only(r: dict[str, Any]) -> dict[str, Any]:
        if r.get("run") == run and r.get("phase") == "stop" and r.get("host") == "app-01":
            r["clock"] = shifted(r.get("clock", r["time"]), -5)
        return r

    forged(f, run, stop_only)
    rc, _, text = verify(f, capsys)
    assert rc == ALTERED, text
    assert f"host app-01's own record of run {run} differs from the log: stop time is" in text, text


@pytest.fixture(autouse=True)
def _no_leftovers(tmp_path: Path) -> Iterator[None]:
    yield
    kill_processes_under(tmp_path)
