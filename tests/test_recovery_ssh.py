"""Recovery that can never cause an outage, over the real sshd: a rollback or resume checks the host before it
stops anything, stale locks are broken on purpose, a healthy canary is no failure, fleet rollbacks go in
batches, a dry run reads the hosts, and the inventory cases met on the way (issue 19)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import Run, approve, plan_to, upgrader
from fleet import Fleet, FleetHost


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


def host_state(h: FleetHost) -> dict[str, Any]:
    """Everything a refusal must leave as it was: the version answered, the pid, the lock, the run directories."""
    runs = h.state_dir / "runs"
    return {"answers": h.answers(), "pid": pid(h), "lock": (h.state_dir / "lock").exists(),
            "runs": sorted((p.name, sorted(c.name for c in p.iterdir())) for p in runs.iterdir()) if runs.is_dir()
            else [],
            "installed": (h.state_dir / "installed.json").read_text() if (h.state_dir / "installed.json").exists()
            else None}


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
    assert host_state(h) == before
    assert rollback_result(f, a.id)["hosts"][0]["outcome"] == "superseded"
    # the way out it names works: B is rolled back, 7.0.4.1 runs again
    assert upgrader(f.box, "rollback", b.id) == 0
    assert h.answers() == "7.0.4.1"


def test_rolling_back_a_run_twice_changes_nothing_the_second_time(fleet, capsys):
    """rollback A, then rollback A again: exit 0, "nothing to do", the old version keeps its pid, no lock."""
    f = fleet(1)
    h = f["app-01"]
    a = execute(f, planned(f, "7.0.4.2"))
    assert upgrader(f.box, "rollback", a.id) == 0
    before = host_state(h)
    assert before["answers"] == "7.0.4.1" and before["pid"] and not before["lock"]
    capsys.readouterr()
    assert upgrader(f.box, "rollback", a.id) == 0
    out = capsys.readouterr().out
    assert "nothing to do" in out
    assert host_state(h) == before
