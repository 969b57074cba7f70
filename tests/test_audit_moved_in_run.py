"""Issue 20, attack20r11 M2 (b): a run's opening lines moved earlier (or its end lines later) in the log alone.

The engineer's controller (the shipped upgrader, its log writer dating the run's opening lines SHIFT s earlier, or
its run_finished line and checkpoint SHIFT s later, before the run's checkpoint signs them) runs an approved plan.
Every line keeps the writer's monotonic clock (``mono``): the moved lines' wall clock stands apart from both their
neighbours by more than the monotonic clock shows, a gap that closes again. `audit verify` (no witness needed):
ALTERED naming the line (INTACT before; `audit case` showed a run of 42 s for one of 2 s). An honest clock step
forward (libfaketime, the monotonic clock not faked) inside the run, at its start or at its end, stays for every
later line: INTACT."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import LIBFAKETIME, approve, plan_to, sandbox, signed_plan, upgrader  # noqa: F401

from test_audit_case_controller_word import cli, line_of, records
from test_audit_witness_attacks_2 import fleet  # noqa: F401 - a fixture (one host over the real sshd)

ALTERED = 6

#: the engineer's controller: stock upgrader, its log writer dating the lines argv[2] names SHIFT s (argv[1]) later
#: (a negative SHIFT: earlier)
MOVED = r'''
import datetime as dt
import sys
from upgrader.audit import log as L
from upgrader.cli import main

SHIFT = float(sys.argv.pop(1))
EVENTS = sys.argv.pop(1).split(",")
orig = L.AuditLog._append_locked


def append(self, event, *, time, **kw):
    if event in EVENTS and kw.get("run"):
        time = (dt.datetime.fromisoformat(time) + dt.timedelta(seconds=SHIFT)).isoformat(timespec="milliseconds")
    return orig(self, event, time=time, **kw)


L.AuditLog._append_locked = append
sys.argv[0] = "upgrader"
sys.exit(main())
'''


def moved_run(box: Any, tmp_path: Path, shift: str, events: str, version: str = "7.0.4.2") -> str:
    script = tmp_path / "moved_controller.py"
    script.write_text(MOVED)
    rc, plan = plan_to(box, version)
    assert rc == 0
    approval = approve(box, plan)
    time.sleep(4.5)  # the opening lines moved 3 s earlier stay after the approval's line (the log keeps its order)
    done = subprocess.run([sys.executable, str(script), shift, events, "--home", str(box.root), "run", str(plan),
                           "--approval", str(approval)], capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL, env={**os.environ, "LANG": "C.UTF-8"})
    assert done.returncode == 0, done.stdout + done.stderr
    return [r["run"] for r in records(box) if r.get("event") == "run_started"][-1]


def test_a_runs_opening_lines_moved_earlier_are_altered(sandbox: Any, tmp_path: Path,  # noqa: F811
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    box = sandbox
    run = moved_run(box, tmp_path, "-3", "run_started,approval_accepted")
    line = line_of(box, run, "run_started")
    rc, text = cli(box, capsys, "audit", "verify")
    assert rc == ALTERED and text.startswith("ALTERED"), text
    assert f"line {line}: the run_started line of run {run} and the run's lines up to line" in text, text
    assert "s earlier: their wall clock is behind both the log's line before them" in text, text
    rc, text = cli(box, capsys, "audit", "case", run)
    assert rc == ALTERED, text


def test_a_runs_end_moved_later_is_altered_once_a_line_follows(sandbox: Any, tmp_path: Path,  # noqa: F811
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The end moved 3 s later: the log's next line (a plan made after it) shows the gap close again: ALTERED. With
    no line after it yet, the log alone cannot tell (the README's limit; --witness holds it to the host)."""
    box = sandbox
    run = moved_run(box, tmp_path, "3", "run_finished,checkpoint")
    rc, text = cli(box, capsys, "audit", "verify")
    assert rc == 0, text  # the limit: nothing after the run's end yet
    time.sleep(3.5)
    rc, _ = plan_to(box, "7.0.4.3")
    assert rc == 0
    line = line_of(box, run, "run_finished")
    rc, text = cli(box, capsys, "audit", "verify")
    assert rc == ALTERED and text.startswith("ALTERED"), text
    assert f"line {line}: the run_finished line of run {run} and the run's lines after it were moved" in text, text


#: the step's trigger (not the product's code path: the wall clock is libfaketime's, read from the file argv[1]):
#: once the run writes its line argv[2], the file says +5 s, as an NTP step would at that moment
STEP_AFTER = r'''
import sys
from pathlib import Path
from upgrader.audit import log as L
from upgrader.cli import main

spec, when = Path(sys.argv.pop(1)), sys.argv.pop(1)
orig = L.AuditLog.append


def append(self, event, **kw):
    done = orig(self, event, **kw)
    if event == when:
        spec.write_text("+5\n")
    return done


L.AuditLog.append = append
sys.argv[0] = "upgrader"
sys.exit(main())
'''


def stepped_run(f: Any, tmp_path: Path, when: str) -> tuple[str, dict[str, str]]:
    """An honest run whose controller's wall clock steps 5 s forward (libfaketime, monotonic clock not faked) once
    its line ``when`` is written; (its id, the faked environment, still 5 s ahead, for the commands after it)."""
    rc, plan = plan_to(f.box, "7.0.4.2")
    assert rc == 0
    approval = approve(f.box, plan)
    spec = tmp_path / "faketime-offset"
    spec.write_text("+0\n")
    env = {k: v for k, v in os.environ.items() if k != "UPGRADER_FAULT_KILL_AT"}
    env.update({"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME_TIMESTAMP_FILE": str(spec), "FAKETIME_NO_CACHE": "1",
                "FAKETIME_DONT_FAKE_MONOTONIC": "1", "LANG": "C.UTF-8"})
    script = tmp_path / "step_after.py"
    script.write_text(STEP_AFTER)
    ran = subprocess.run([sys.executable, str(script), str(spec), when, "--home", str(f.box.root), "run", str(plan),
                          "--approval", str(approval), "--yes"], env=env, capture_output=True, text=True,
                         timeout=300, stdin=subprocess.DEVNULL)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert spec.read_text() == "+5\n"
    return [r["run"] for r in records(f.box) if r.get("event") == "run_started"][-1], env


@pytest.mark.parametrize("when", ["run_started", "host_finished"])
def test_an_honest_forward_clock_step_inside_a_run_reads_intact(
        fleet: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], when: str) -> None:  # noqa: F811
    f = fleet
    run, env = stepped_run(f, tmp_path, when)
    mine = [r for r in records(f.box) if r.get("run") == run]
    first, last = mine[0], mine[-1]
    import datetime as dt

    wall = dt.datetime.fromisoformat(last.get("clock", last["time"])).timestamp() \
        - dt.datetime.fromisoformat(first.get("clock", first["time"])).timestamp()
    assert wall - (last["mono"] - first["mono"]) > 4.0, (first, last)  # the step is in the run's lines
    # the step stays: the next command (a plan) runs on the same stepped clock
    made = subprocess.run([sys.executable, "-m", "upgrader", "--home", str(f.box.root),
                           *signed_plan(f.box, ["plan", "--inventory", str(f.box.inventory), "--to", "7.0.4.3",
                                                "--catalog", str(f.box.catalog), "-o",
                                                str(tmp_path / "next.json")])],
                          env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert made.returncode == 0, made.stdout + made.stderr
    rc, text = cli(f.box, capsys, "audit", "verify")
    assert rc == 0 and text.startswith("INTACT"), text
    rc, text = cli(f.box, capsys, "audit", "verify", "--witness", str(f.box.inventory))
    assert rc == 0 and text.startswith("INTACT"), text
