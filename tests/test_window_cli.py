"""The service window through the real CLI: plan records it, run checks it with the clock at run time.

The CLI runs in-process with its clock at a chosen time (conftest's now_at), or as a child process
under libfaketime (conftest's faketime_env): the product itself has no test clock. 2026-11-27 is a
Friday: 10:00 Asia/Shanghai is inside the default window, 20:00 is outside; 2027 has no holiday data.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import approve, faketime_env, now_at, plan_to, shifted_iso, upgrader, weeks_ahead
from trust_support import resigned
from hoststate import HostState, assert_host_untouched, host_state
from upgrader.audit.log import read_events
from upgrader.cli.commands.demo import Sandbox

FRIDAY_MORNING = "2026-11-27T10:00:00+08:00"
FRIDAY_NIGHT = "2026-11-27T20:00:00+08:00"
NO_DATA_YEAR = "2027-05-06T10:00:00+08:00"


def set_outside(box: Sandbox, outside: str, holidays: Path | None = None) -> None:
    """Make the sandbox policy's window.outside (the demo allows runs at any hour) and optionally its calendar."""
    text = box.policy.read_text(encoding="utf-8")
    assert "  outside: allow\n" in text
    extra = f"  holidays: {holidays}\n" if holidays else ""
    box.policy.write_text(text.replace("  outside: allow\n", f"  outside: {outside}\n{extra}"), encoding="utf-8")


def at(monkeypatch: pytest.MonkeyPatch, when: str) -> None:
    now_at(monkeypatch, when)


def runs(box: Sandbox) -> list[str]:
    home_runs = box.root / "runs"
    return sorted(p.name for p in home_runs.iterdir()) if home_runs.is_dir() else []


def whole_host(box: Sandbox) -> HostState:
    """The whole host (tests/hoststate.py): product files, the service (pid, start time, version), the agent's state
    dir (lock, staged packages, runs, ledger)."""
    return host_state(box.install_dir, answers=box.answers)


def assert_untouched(box: Sandbox, before: HostState) -> None:
    assert_host_untouched(before, whole_host(box))
    assert box.answers() == "7.0.4.1"
    assert runs(box) == []


def test_plan_records_inside_in_the_morning_and_outside_at_night(sandbox, monkeypatch, capsys):
    """The plan JSON and the plan table say inside at 10:00 and outside at 20:00, with reason and policy."""
    box = sandbox
    set_outside(box, "after_hours_approval")
    at(monkeypatch, FRIDAY_MORNING)
    rc, morning = plan_to(box, "7.0.4.2")
    assert rc == 0
    window = json.loads(morning.read_text())["window"]
    assert window["inside"] is True and window["next_opening"] is None
    assert "2026-11-27 10:00 Friday (Asia/Shanghai) is inside the service window" in window["reason"]
    assert window["policy"]["outside"] == "after_hours_approval" and window["policy"]["timezone"] == "Asia/Shanghai"
    assert "service window: inside" in capsys.readouterr().out
    at(monkeypatch, FRIDAY_NIGHT)
    rc, night = plan_to(box, "7.0.4.2")
    assert rc == 0  # a plan may be made at any time; the run is what the window gates
    window = json.loads(night.read_text())["window"]
    assert window["inside"] is False and window["next_opening"] == "2026-11-30T09:00:00+08:00"
    out = capsys.readouterr().out
    assert "service window: outside" in out and "after it closes at 18:00" in out
    assert "needs an approval made with 'upgrader approve --after-hours'" in out


def test_the_window_is_part_of_the_plan_digest(sandbox, monkeypatch, capsys):
    """Editing the plan's window (e.g. inside: true on a night plan) breaks the approval: exit 4."""
    box = sandbox
    at(monkeypatch, FRIDAY_NIGHT)
    rc, plan = plan_to(box, "7.0.4.2")
    assert rc == 0
    approval = approve(box, plan)
    data = json.loads(plan.read_text())
    data["window"]["inside"] = True
    plan.write_text(json.dumps(resigned(data, box.root)))  # the requester signs the edited plan again
    before = whole_host(box)
    assert upgrader(box, "run", str(plan), "--approval", str(approval)) == 4
    assert "the plan changed after it was approved" in capsys.readouterr().err
    assert_untouched(box, before)


def test_run_at_night_without_an_after_hours_approval_is_refused_and_touches_nothing(sandbox, monkeypatch,
                                                                                      capsys):
    """Planned and approved at 10:00, run at 20:00: the run-time clock decides, exit 4, nothing touched."""
    box = sandbox
    set_outside(box, "after_hours_approval")
    at(monkeypatch, FRIDAY_MORNING)
    rc, plan = plan_to(box, "7.0.4.2")
    assert rc == 0
    approval = approve(box, plan)
    before = whole_host(box)
    capsys.readouterr()
    at(monkeypatch, FRIDAY_NIGHT)
    assert upgrader(box, "run", str(plan), "--approval", str(approval)) == 4
    err = capsys.readouterr().err
    assert "2026-11-27 20:00 Friday (Asia/Shanghai) is outside the service window" in err
    assert "needs an approval made with --after-hours" in err and "opens next at 2026-11-30T09:00+08:00" in err
    assert_untouched(box, before)
    refused = [e for e in read_events(box.root / "audit" / "audit.jsonl") if e.get("event") == "approval_refused"]
    assert refused and "outside the service window" in refused[-1]["data"]["reason"]


def test_run_at_night_with_an_after_hours_approval_upgrades(sandbox, monkeypatch):
    """approve --after-hours books the night run: it upgrades, and the audit log records the window."""
    box = sandbox
    set_outside(box, "after_hours_approval")
    at(monkeypatch, shifted_iso(FRIDAY_NIGHT, weeks_ahead(FRIDAY_NIGHT)))  # the host's agent checks the expiry
    rc, plan = plan_to(box, "7.0.4.2")                                       # by the real clock
    assert rc == 0
    assert upgrader(box, "run", str(plan), "--approval", str(approve(box, plan, "--after-hours"))) == 0
    assert box.wait_version("7.0.4.2", 5) == "7.0.4.2"
    started = [e for e in read_events(box.root / "audit" / "audit.jsonl") if e.get("event") == "run_started"]
    window = started[-1]["data"]["window"]
    assert window["inside"] is False and window["after_hours_approvals"] == ["engineer@vendor"]


def test_refuse_policy_refuses_a_night_run_even_with_an_after_hours_approval(sandbox, monkeypatch, capsys):
    """window.outside: refuse: at 20:00 the run exits 4 whatever the approval says; nothing touched."""
    box = sandbox
    set_outside(box, "refuse")
    at(monkeypatch, FRIDAY_NIGHT)
    rc, plan = plan_to(box, "7.0.4.2")
    assert rc == 0
    before = whole_host(box)
    capsys.readouterr()
    assert upgrader(box, "run", str(plan), "--approval", str(approve(box, plan, "--after-hours"))) == 4
    assert "the policy refuses runs outside the service window (window.outside: refuse)" in capsys.readouterr().err
    assert_untouched(box, before)


def no_holidays_in(box: Sandbox, when: str) -> Path:
    """A calendar of the year of ``when`` with no holidays and no make-up days: a Friday to come (weeks_ahead) is then
    a working day whatever year it falls in (the shipped calendar lists only published years, and 1 January is a
    holiday)."""
    calendar = box.root / "holidays-test.yaml"
    year = when[:4]
    calendar.write_text(f"format: 1\nname: no holidays (test)\nyears:\n  {year}:\n    source: the test\n"
                        "    holidays: []\n    workdays: []\n", encoding="utf-8")
    return calendar


def test_run_inside_the_window_upgrades_with_an_ordinary_approval(sandbox, monkeypatch):
    """At 10:00 on a Friday an approval without --after-hours is enough."""
    box = sandbox
    friday = shifted_iso(FRIDAY_MORNING, weeks_ahead(FRIDAY_MORNING))
    set_outside(box, "after_hours_approval", holidays=no_holidays_in(box, friday))
    at(monkeypatch, friday)  # a Friday to come: the host checks
    rc, plan = plan_to(box, "7.0.4.2")                                           # the approval's expiry by its clock
    assert rc == 0
    assert upgrader(box, "run", str(plan), "--approval", str(approve(box, plan))) == 0
    assert box.wait_version("7.0.4.2", 5) == "7.0.4.2"


def test_a_day_without_holiday_data_needs_an_after_hours_approval(sandbox, monkeypatch, capsys):
    """2027 has no holiday data: plan says unknown, an ordinary approval is refused (exit 4), after-hours runs."""
    box = sandbox
    set_outside(box, "after_hours_approval")
    at(monkeypatch, NO_DATA_YEAR)
    rc, plan = plan_to(box, "7.0.4.2")
    assert rc == 0
    window = json.loads(plan.read_text())["window"]
    assert window["inside"] is None
    assert window["reason"].startswith("no holiday data for 2027: cannot tell whether 2027-05-06 is a working day; "
                                       "add the year to ")
    assert "service window: unknown" in capsys.readouterr().out
    before = whole_host(box)
    assert upgrader(box, "run", str(plan), "--approval", str(approve(box, plan))) == 4
    err = capsys.readouterr().err
    assert "no holiday data for 2027" in err and "holidays-cn.yaml" in err
    assert_untouched(box, before)
    assert upgrader(box, "run", str(plan), "--approval", str(approve(box, plan, "--after-hours"))) == 0
    assert box.wait_version("7.0.4.2", 5) == "7.0.4.2"


def test_a_holidays_file_changed_after_the_plan_refuses_the_run(sandbox, monkeypatch, capsys):
    """The plan records the calendar's sha256; editing the calendar before the run is refused (exit 4)."""
    box = sandbox
    from version_policy import default_holidays_path

    calendar = box.root / "holidays.yaml"
    shutil.copy(str(default_holidays_path()), calendar)
    set_outside(box, "after_hours_approval", holidays=calendar)
    at(monkeypatch, FRIDAY_MORNING)
    rc, plan = plan_to(box, "7.0.4.2")
    assert rc == 0
    assert json.loads(plan.read_text())["window"]["policy"]["holidays"]["file"] == str(calendar)
    approval = approve(box, plan)
    calendar.write_text(calendar.read_text(encoding="utf-8") + "# edited\n", encoding="utf-8")
    before = whole_host(box)
    capsys.readouterr()
    assert upgrader(box, "run", str(plan), "--approval", str(approval)) == 4
    err = capsys.readouterr().err  # the policy's identity covers the holidays file it names
    assert "the plan was made under another policy" in err and "window.holidays" in err and str(calendar) in err, err
    assert_untouched(box, before)


def test_the_cli_in_a_child_process_under_libfaketime_plans_with_that_time(sandbox):
    """The product reads the system's clock only: `upgrader plan` run as a child process under libfaketime at
    Friday 20:00 records the window as outside, at Friday 10:00 as inside."""
    box = sandbox
    set_outside(box, "after_hours_approval")
    inside = {}
    for when in (FRIDAY_NIGHT, FRIDAY_MORNING):
        out = box.plans / f"faketime-{len(inside)}.json"
        done = subprocess.run([sys.executable, "-m", "upgrader", "--home", str(box.root), "plan", "--inventory",
                               str(box.inventory), "--to", "7.0.4.2", "--catalog", str(box.catalog), "-o", str(out)],
                              env={**os.environ, **faketime_env(when)}, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        inside[when] = json.loads(out.read_text())["window"]["inside"]
    assert inside == {FRIDAY_NIGHT: False, FRIDAY_MORNING: True}
