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
from test_host_trust import host_root  # noqa: F401 - a fixture
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
    for name in ("time", "clock"):  # a line the writer raised keeps its clock in `clock`: moved too
        if name in rec:
            t = dt.datetime.fromisoformat(str(rec[name]).replace("Z", "+00:00")) + by
            rec[name] = t.isoformat(timespec="milliseconds")
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


def _rewritten_after_its_witness(f: Fleet) -> str:
    """A run whose checkpoint the host witnessed, then the log rewritten and re-signed with the operator key (the
    requester changed): its own chain and signatures hold (audit verify without --witness: INTACT), the host's
    witnessed head does not. Returns the run id."""
    from modified_controller import checkpoint_to_witness, run_witness_cut

    run = run_witness_cut(f)
    lines = log_of(f).read_bytes().splitlines(keepends=True)
    assert agent(f, "witness", checkpoint=checkpoint_to_witness(lines, run))["written"]

    def edit(rec: dict[str, Any]) -> dict[str, Any]:
        # the requester's key (its user and host are held to the plan's plan_created line, the log's first line here,
        # whose change would make the log another log for the host)
        if rec.get("run") == run and rec["event"] == "run_started":
            rec["data"]["requester"].update(key="SHA256:change-board-key")
        return rec

    log_of(f).write_bytes(b"".join(rechain(lines, edit, load_private_key(str(f.box.operator_key)),
                                           "operator@customer")))
    assert main(["--home", str(f.box.root), "audit", "verify"]) == 0, "the re-signed chain holds by itself"
    return run


def test_audit_show_with_witness_carries_the_hosts_verdict(fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    """`audit show` of a log rewritten and re-signed exits 0 by itself (its chain holds); with --witness INVENTORY
    the hosts' verdict is shown under the log's (ALTERED, each finding), in --json too, and the exit code is 6."""
    f = fleet
    _rewritten_after_its_witness(f)
    home = ["--home", str(f.box.root), "audit", "show"]
    capsys.readouterr()
    assert main(home) == 0
    assert main([*home, "--witness", str(f.box.inventory)]) == ALTERED
    text = " ".join(capsys.readouterr().out.split())
    assert re.search(r"^INTACT .* witnesses: ALTERED \(\d+ finding\(s\) against the hosts' own records\)", text), text
    assert "witness: host app-01 witnessed run" in text and "the log was rewritten" in text, text
    assert main([*home, "--witness", str(f.box.inventory), "--lang", "zh"]) == ALTERED
    zh = " ".join(capsys.readouterr().out.split())
    assert re.search(r"见证：已被篡改（\d+ 处与主机自己的记录不符）", zh) and "日志在第" in zh, zh
    assert main([*home, "--witness", str(f.box.inventory), "--json"]) == ALTERED
    shown = json.loads(capsys.readouterr().out)
    assert shown["witness"]["status"] == "altered" and shown["exit_code"] == ALTERED
    assert shown["witness"]["headline"].startswith("ALTERED")


def test_audit_export_with_witness_writes_the_hosts_verdict_at_the_top(
        fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`audit export --witness`: the CSV's verification row (and its case file's) ends with the hosts' verdict,
    the HTML's verification card names it with each finding (in Chinese with --lang zh), the JSON carries it."""
    import csv

    f = fleet
    _rewritten_after_its_witness(f)
    out: dict[str, Path] = {}
    for fmt, lang in (("csv", "en"), ("html", "en"), ("html", "zh"), ("json", "en")):
        out[f"{fmt}-{lang}"] = tmp_path / f"report-{lang}.{fmt}"
        assert main(["--home", str(f.box.root), "audit", "export", "--format", fmt, "--lang", lang, "-o",
                     str(out[f"{fmt}-{lang}"]), "--witness", str(f.box.inventory)]) == ALTERED
    for path in (out["csv-en"], out["csv-en"].with_name("report-en.cases.csv")):
        first = next(csv.reader(path.open(encoding="utf-8", newline="")))
        assert first[:2] == ["verification", "INTACT"] and first[-2] == "witness", first
        assert re.fullmatch(r"ALTERED \(\d+ finding\(s\) against the hosts' own records\)", first[-1]), first
    html = out["html-en"].read_text(encoding="utf-8")
    assert "The hosts&#x27; own records (--witness)" in html and "finding(s) against the hosts&#x27; own records" in html
    assert "the log was rewritten" in html
    zh = out["html-zh"].read_text(encoding="utf-8")
    assert "各主机自己的记录（--witness）" in zh and "处与主机自己的记录不符" in zh and "日志在第" in zh
    doc = json.loads(out["json-en"].read_text(encoding="utf-8"))
    assert doc["witness"]["headline"].startswith("ALTERED") and doc["witness"]["status"] == "altered"


def test_a_second_host_finished_line_is_altered(fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    """The engineer adds a second host_finished line to a run (it "rolled back" after all), re-signs the log and
    has the forged head witnessed: the verifier reads every line, not the first of each run: ALTERED, both lines
    named."""
    from modified_controller import checkpoint_to_witness, run_witness_cut

    f = fleet
    run = run_witness_cut(f)
    lines = log_of(f).read_bytes().splitlines(keepends=True)
    at = next(i for i, r in enumerate(records(log_of(f))) if r.get("run") == run and r["event"] == "host_finished")
    second = json.loads(lines[at])
    second.update(outcome="rolled_back")
    lines.insert(at + 1, json.dumps(second).encode() + b"\n")
    forged = rechain(lines, lambda r: r, load_private_key(str(f.box.operator_key)), "operator@customer")
    log_of(f).write_bytes(b"".join(forged))
    assert agent(f, "witness", checkpoint=checkpoint_to_witness(forged, run))["written"]
    rc, report, text = verify(f, capsys)
    assert rc == ALTERED, text
    assert (f"the log ends run {run} on host app-01 twice (host_finished on lines {at + 1} and {at + 2}, the second "
            "rolled_back): a run ends once on a host (ALTERED)") in text


def test_a_host_keeping_two_finish_records_of_one_run_is_altered(
        fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    """A modified controller (tests/modified_controller.py) takes the host's lock for a run and sends its finish
    twice, keeping the lock the first time. A host that records both: the verifier reads all of them and names
    the run finished twice (ALTERED). A host that refuses the second finish keeps one record and the log is not
    called intact either way."""
    from modified_controller import ModifiedController, log_records, write_run
    from upgrader.fleet.transport.base import AgentFailure

    f = fleet
    run, _, _ = run_once(f)
    other = run[:-6] + "71ce00"
    opened = next(r for r in log_records(f) if r.get("run") == run and r["event"] == "run_started")
    with ModifiedController(f, "app-01") as c:
        audit = {"as": other, "kind": "run", "plan": opened["data"]["plan"], "window": None}
        assert c.call("lock", run_id=other, controller="vm", user="root", approvals=[], audit=audit)["locked"]
        c.call("finish", run_id=other, outcome="unchanged", keep=3, approvals=[], audit=audit)
        try:
            c.call("finish", run_id=other, outcome="unchanged", keep=3, approvals=[], audit=audit)
            twice = True
        except AgentFailure:
            twice = False
        write_run(f, other, [
            {"event": "run_started", "data": opened["data"]},
            {"event": "phase_started", "host": "app-01", "phase": "preflight"},
            {"event": "phase_finished", "host": "app-01", "phase": "preflight", "outcome": "ok"},
            {"event": "host_finished", "host": "app-01", "outcome": "unchanged", "data": {}},
            {"event": "run_finished", "outcome": "0", "data": {}}])
    kept = [r for r in records(f["app-01"].state_dir / "runs.jsonl") if r.get("as") == other or r.get("run") == other]
    assert len(kept) == (2 if twice else 1)
    rc, report, text = verify(f, capsys)
    assert rc in (ALTERED, NOT_PROVEN) and not text.startswith("INTACT"), text
    if twice:
        assert rc == ALTERED
        assert (f"host app-01 keeps 2 records of finishing run {other} (unchanged, unchanged): a run ends once on a "
                "host") in text, text


def test_the_approvals_expiry_and_the_plans_hosts_are_checked_against_their_files(
        fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    """The engineer re-signs the log with the approval's expiry put a week later and the run's host renamed:
    --plans/--approvals compares the approval's signed expiry and the plan's hosts (inside its digest) with the
    log's (exit 6, each named); given with --witness in the same call, both checks run and the worse verdict is the
    exit code."""
    f = fleet
    run, plan, approval = run_once(f)
    later = {}

    def edit(rec: dict[str, Any]) -> dict[str, Any]:
        if rec.get("run") == run and rec["event"] == "run_started":
            a = rec["data"]["approvals"][0]
            later["was"] = a["expires"]
            a["expires"] = (dt.datetime.fromisoformat(a["expires"]) + dt.timedelta(days=7)).isoformat()
            later["now"] = a["expires"]
            rec["data"]["hosts"][0]["host"] = "app-07"
        return rec

    lines = log_of(f).read_bytes().splitlines(keepends=True)
    log_of(f).write_bytes(b"".join(rechain(lines, edit, load_private_key(str(f.box.operator_key)),
                                           "operator@customer")))
    rc, text = cross(f, capsys)
    assert rc == ALTERED, text
    assert f"expires at {later['was']}, the log says {later['now']}" in " ".join(text.split()), text
    assert f"run {run} (line" in text and "names host(s) app-07, its plan file" in text and "has app-01" in text
    rc, zh = cross(f, capsys, "--lang", "zh")
    assert "的有效期至" in zh and "提到了主机 app-07" in zh, zh
    capsys.readouterr()
    rc = main(["--home", str(f.box.root), "audit", "verify", "--witness", str(f.box.inventory), "--plans",
               str(f.box.plans), "--approvals", str(f.box.approvals)])
    both = " ".join(capsys.readouterr().out.split())
    assert rc == ALTERED, both
    assert "(with the hosts' witnessed checkpoints)" in both and "names host(s) app-07" in both, both


def test_each_host_says_what_protects_its_records(
        fleet: Fleet, capsys: pytest.CaptureFixture[str], host_root: Any) -> None:
    """`audit verify --witness` names per host what keeps its records out of a controller's reach (protected_by):
    neither (and the boundary: a controller running modified upgrader, or its hook, can rewrite them), syslog
    (audit.syslog: true in the policy), the host's own trust root (asked read-only of the host), which binds only
    the shipped agent and is never said to keep the records out of a controller's reach."""
    from test_host_trust import _operators_root

    f = fleet
    run_once(f)
    rc, report, text = verify(f, capsys)
    assert rc == 0, text
    assert report["witness"]["hosts"][0]["protected_by"] == ["neither"]
    assert ("host app-01's records are written by its agent, which is the code the controller uploads: a controller "
            "running modified upgrader (or a hook it runs as root there) can rewrite them; for records the engineer "
            "cannot rewrite, also send the witnesses to syslog") in text, text
    capsys.readouterr()
    main(["--home", str(f.box.root), "audit", "verify", "--witness", str(f.box.inventory), "--lang", "zh"])
    assert "运行修改版 upgrader 的控制端（或它以 root 身份运行的钩子）可以改写这些记录" in " ".join(
        capsys.readouterr().out.split())
    policy = f.box.policy.read_text(encoding="utf-8")
    f.box.policy.write_text(policy + "audit:\n  syslog: true\n" if "\naudit:" not in policy else
                            policy.replace("\naudit:\n", "\naudit:\n  syslog: true\n"), encoding="utf-8")
    _operators_root(f.box, host_root)
    rc, report, text = verify(f, capsys, "--policy", str(f.box.policy))
    assert report["witness"]["hosts"][0]["protected_by"] == ["host trust root", "syslog"], text
    assert "its trust root binds only the agent upgrader ships" in text, text
    assert "each witness also went to the host's syslog: a copy forwarded off the host" in text, text
    assert "protected by" not in text, text
