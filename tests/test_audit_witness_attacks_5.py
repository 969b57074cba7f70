"""Issue 20, the auditor's fifth review (fix20v): the verifier and its views, played through the shipped CLI over
the real sshd.

- The audit tests attack through the real paths only: no test of the auditor patches upgrader's own code.
- The --plans/--approvals mismatches are said in Chinese by `audit verify --lang zh`.
- A phase moved by less than the clock skew allowed between two machines is caught: each host's clock offset is
  fixed once per run by its lock and its finish, and every phase is held to that one offset (ALTERED, the line).
- Every view carries the witness verdict (audit show --witness, audit export --witness); every record a host keeps
  is read."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import plan_to

from fleet import Fleet
from test_audit_witness import rechain
from test_audit_witness_attacks_2 import (  # noqa: F401 - fleet is a fixture
    ALTERED, NOT_PROVEN, agent, fleet, log_of, records, run_once, verify)
from upgrader.cli import main
from upgrader.trust.keys import load_private_key

TESTS = Path(__file__).parent


def test_no_audit_test_patches_upgraders_own_code() -> None:
    """The auditor's tests play the attacker through real paths (tests/modified_controller.py, the fault plugin,
    libfaketime or the CLI's clock): a monkeypatch of an attribute of upgrader would test a product that does not
    exist. Patching the environment (setenv, delenv) is fine."""
    patched = [f"{p.name}:{n}" for p in sorted(TESTS.glob("test_audit_*.py")) if p.name != Path(__file__).name
               for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
               if re.search(r"monkeypatch\.(setattr|delattr|setitem)\(", line)]
    assert patched == []


def cross(f: Fleet, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["--home", str(f.box.root), "audit", "verify", "--plans", str(f.box.plans), "--approvals",
               str(f.box.approvals), *extra])
    return rc, " ".join(capsys.readouterr().out.split())


def test_the_cross_check_mismatches_are_said_in_chinese(fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    """The engineer swaps the plan file the log recorded for another plan (same name): `audit verify --plans
    --approvals --lang zh` names the file and both digests in Chinese, no English sentence and no "原文" (the
    untranslated marker) left; the English report says the same in English."""
    f = fleet
    run, plan, _ = run_once(f)
    rc, other = plan_to(f.box, "7.0.4.3")
    assert rc == 0
    shutil.copyfile(other, plan)
    rc, en = cross(f, capsys)
    assert rc == ALTERED and "the plan file was swapped or edited" in en, en
    rc, zh = cross(f, capsys, "--lang", "zh")
    assert rc == ALTERED, zh
    assert f"文件 {plan} 的摘要为" in zh and "计划文件被调换或改动过" in zh, zh
    mismatch = [line for line in zh.split("不符 ")[1:]]
    assert mismatch and not any("原文" in m or "swapped" in m or "the log names" in m for m in mismatch), zh


def _shifted(rec: dict[str, Any], by: dt.timedelta) -> dict[str, Any]:
    t = dt.datetime.fromisoformat(str(rec["time"]).replace("Z", "+00:00")) + by
    rec["time"] = t.isoformat(timespec="milliseconds")
    return rec


def test_a_phase_moved_by_less_than_the_clock_skew_is_altered(
        fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    """The engineer's controller holds the witness back (its connection cut), then moves the outage ten minutes
    later in the log (every line from the stop phase on: the times stay in order, no phase shortened, well within
    the fifteen minutes two clocks may differ), re-signs it with the operator key and has the forged head
    witnessed. The host's lock (inside the log's preflight) and its finish (before the log's host_finished) fix its
    clock offset for the run; the stop phase no longer holds the host's own stop step under it: ALTERED, the log's
    line of that phase named, in English and in Chinese."""
    from modified_controller import checkpoint_to_witness, run_witness_cut

    f = fleet
    run = run_witness_cut(f)
    honest = log_of(f).read_bytes()
    rc, report, text = verify(f, capsys)
    assert rc == NOT_PROVEN and "time" not in " ".join(report["witness"]["problems"]), text  # unwitnessed only
    lines = honest.splitlines(keepends=True)
    first = next(i for i, r in enumerate(records(log_of(f))) if r.get("run") == run and r.get("phase") == "stop")
    key = load_private_key(str(f.box.operator_key))
    forged = rechain(lines, lambda r: r if r["seq"] <= first else _shifted(r, dt.timedelta(minutes=10)), key,
                     "operator@customer")
    log_of(f).write_bytes(b"".join(forged))
    assert agent(f, "witness", checkpoint=checkpoint_to_witness(forged, run))["written"]
    stop_line = first + 1
    rc, report, text = verify(f, capsys)
    assert rc == ALTERED and text.startswith("ALTERED"), text
    assert f"host app-01's own record of run {run} differs from the log: stop time is " in text, text
    assert f"(line {stop_line}, under the host's clock offset " in text and "fixed by its lock and finish): ALTERED" \
        in text, text
    capsys.readouterr()
    assert main(["--home", str(f.box.root), "audit", "verify", "--witness", str(f.box.inventory), "--lang",
                 "zh"]) == ALTERED
    zh = " ".join(capsys.readouterr().out.split())
    assert "停止步骤的时间" in zh and f"第 {stop_line} 行" in zh, zh
