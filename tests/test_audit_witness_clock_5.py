"""Issue 20, attack20r11 M2 (a): a run's end moved later while the controller withheld that run's witness.

The engineer's controller (the shipped upgrader, its log writer dating the run's run_finished line and checkpoint
SHIFT s later, and sending the hosts no witness) runs an approved plan over the real sshd; an honest run follows,
witnessed. `audit verify --witness` now holds the first run's end to the host's receipt of the later run's witness
(it covers the first run's lines) and to the host's next opening record (the later run's lock, by the host's own
clock): ALTERED naming the lines, en and zh (INTACT, exit 0, before; `audit case` showed a run of 50 minutes). Two
honest runs, the first unwitnessed the same way (no host reached at its end), read NOT PROVEN at worst, never
ALTERED."""

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

#: the engineer's controller: stock upgrader that sends no witness, its log writer dating run_finished and the
#: checkpoint SHIFT s later (argv[1])
NO_WITNESS_LATER = r'''
import datetime as dt
import sys
from upgrader.audit import log as L, witness as W
from upgrader.cli import main

SHIFT = float(sys.argv.pop(1))
orig = L.AuditLog._append_locked


def append(self, event, *, time, **kw):
    if event in ("run_finished", "checkpoint") and kw.get("run"):
        time = (dt.datetime.fromisoformat(time) + dt.timedelta(seconds=SHIFT)).isoformat(timespec="milliseconds")
    return orig(self, event, time=time, **kw)


L.AuditLog._append_locked = append
W.send_witnesses = lambda *a, **k: {}
sys.argv[0] = "upgrader"
sys.exit(main())
'''


def two_runs(f: Any, tmp_path: Path, shift: str) -> str:
    """The first run by the controller above (``shift`` s), then an honest one; the first run's id."""
    script = tmp_path / "no_witness_controller.py"
    script.write_text(NO_WITNESS_LATER)
    rc, plan = plan_to(f.box, "7.0.4.2")
    assert rc == 0
    done = subprocess.run([sys.executable, str(script), shift, "--home", str(f.box.root), "run", str(plan),
                           "--approval", str(approve(f.box, plan))], capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL, env={**os.environ, "LANG": "C.UTF-8"})
    assert done.returncode == 0, done.stdout + done.stderr
    run = [r["run"] for r in records(f.box) if r.get("event") == "run_started"][-1]
    rc, plan = plan_to(f.box, "7.0.4.3")
    assert rc == 0
    assert upgrader(f.box, "run", str(plan), "--approval", str(approve(f.box, plan))) == 0
    return run


@pytest.mark.parametrize("shift", ["3000", "120"])
def test_an_unwitnessed_runs_end_moved_later_is_held_to_the_next_run(
        fleet: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], shift: str) -> None:  # noqa: F811
    f = fleet
    run = two_runs(f, tmp_path, shift)
    finished, checkpoint = line_of(f.box, run, "run_finished"), line_of(f.box, run, "checkpoint")
    rc, text = cli(f.box, capsys, "audit", "verify", "--witness", str(f.box.inventory))
    assert rc == ALTERED and text.startswith("ALTERED"), text
    for line, event in ((finished, "run_finished"), (checkpoint, "checkpoint")):
        assert f"line {line} ({event} of run {run}) says" in text, text
    assert "which covers this run's lines" in text and "the run's end was moved later (ALTERED)" in text, text
    assert "but host app-01 locked for the next run " in text, text
    rc, zh = cli(f.box, capsys, "audit", "verify", "--witness", str(f.box.inventory), "--lang", "zh")
    assert rc == ALTERED and f"第 {checkpoint} 行（运行 {run} 的 checkpoint）" in zh and "就为下一次运行" in zh, zh
    rc, text = cli(f.box, capsys, "audit", "case", run, "--witness", str(f.box.inventory))
    assert rc == ALTERED, text


def test_an_unwitnessed_honest_run_followed_by_another_is_not_altered(
        fleet: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    f = fleet
    run = two_runs(f, tmp_path, "0")
    rc, text = cli(f.box, capsys, "audit", "verify", "--witness", str(f.box.inventory))
    assert rc in (0, 2) and not text.startswith("ALTERED") and "was moved later" not in text, text
    rc, text = cli(f.box, capsys, "audit", "case", run, "--witness", str(f.box.inventory))
    assert rc in (0, 2), text
