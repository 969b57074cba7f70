"""Issue 20, attack20r10 M2: a run's end moved later. The engineer's controller (the shipped upgrader with the log's
writer changed to date the run's run_finished line and its checkpoint an hour later, before the checkpoint signs
them) runs an approved plan over the real sshd; the host witnesses the checkpoint at its own time. `audit verify
--witness` holds the run's end to that time under the run's clock offset: ALTERED naming the line, en and zh (it
read INTACT, and `audit case` showed a run of an hour). An honest run beside it reads INTACT."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import approve, plan_to, upgrader

from test_audit_case_controller_word import cli, line_of, records
from test_audit_witness_attacks_2 import fleet  # noqa: F401 - a fixture (one host over the real sshd)

ALTERED = 6

#: the engineer's controller: stock upgrader, its log writer dating run_finished and the checkpoint SHIFT s later
LATER = r'''
import datetime as dt
import sys
from upgrader.audit import log as L
from upgrader.cli import main

SHIFT = float(sys.argv.pop(1))
orig = L.AuditLog._append_locked


def append(self, event, *, time, **kw):
    if event in ("run_finished", "checkpoint") and kw.get("run"):
        time = (dt.datetime.fromisoformat(time) + dt.timedelta(seconds=SHIFT)).isoformat(timespec="milliseconds")
    return orig(self, event, time=time, **kw)


L.AuditLog._append_locked = append
sys.argv[0] = "upgrader"
sys.exit(main())
'''


def test_a_runs_end_moved_an_hour_later_is_altered(fleet: Any, tmp_path: Path,  # noqa: F811
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    f = fleet
    rc, plan = plan_to(f.box, "7.0.4.2")
    assert rc == 0
    assert upgrader(f.box, "run", str(plan), "--approval", str(approve(f.box, plan))) == 0
    rc, text = cli(f.box, capsys, "audit", "verify", "--witness", str(f.box.inventory))
    assert rc == 0 and text.startswith("INTACT"), text
    script = tmp_path / "later_controller.py"
    script.write_text(LATER)
    rc, plan = plan_to(f.box, "7.0.4.3")
    assert rc == 0
    done = subprocess.run([sys.executable, str(script), "3600", "--home", str(f.box.root), "run", str(plan),
                           "--approval", str(approve(f.box, plan))], capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL, env={**os.environ, "LANG": "C.UTF-8"})
    assert done.returncode == 0, done.stdout + done.stderr
    run = [r["run"] for r in records(f.box) if r.get("event") == "run_started"][-1]
    rc, text = cli(f.box, capsys, "audit", "verify")  # the log alone cannot tell
    assert rc == 0, text
    finished = line_of(f.box, run, "run_finished")
    checkpoint = line_of(f.box, run, "checkpoint")
    rc, text = cli(f.box, capsys, "audit", "verify", "--witness", str(f.box.inventory))
    assert rc == ALTERED and text.startswith("ALTERED"), text
    for line, event in ((finished, "run_finished"), (checkpoint, "checkpoint")):
        assert f"line {line} ({event} of run {run}) says" in text, text
    assert "but host app-01 received that run's checkpoint at" in text and "the run's end was moved later" in text
    assert "its monotonic clock ran" in text, text
    rc, zh = cli(f.box, capsys, "audit", "verify", "--witness", str(f.box.inventory), "--lang", "zh")
    assert rc == ALTERED and f"第 {checkpoint} 行（运行 {run} 的 checkpoint）" in zh and "运行的结束时间被往后挪了" in zh, zh
    rc, text = cli(f.box, capsys, "audit", "case", run, "--witness", str(f.box.inventory))
    assert rc == ALTERED, text
