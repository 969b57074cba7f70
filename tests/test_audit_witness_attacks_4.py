"""Issue 20, the leftovers of the attacker's third review (attack20-r3 B), played through the shipped CLI over the
real sshd.

- Attack B: the run's witness held back (its request's SSH connection cut: the checkpoint never reaches the host),
  the outage squeezed out of the log (every line from the stop to the start given one time, seconds 0) and the run
  given to another operator, re-signed with the operator key, the forged head then witnessed. The host recorded
  each step's start and end and who took its lock: --witness names the stop, start and downtime differences and
  the operator (ALTERED); `audit case --witness` shows the downtime by the host's own clock and says so.
- `audit verify --lang zh` speaks Chinese; `audit case` on an ALTERED log marks everything below the headline as
  not evidence (en and zh).
- A run whose witness never reached the host: `audit verify --witness` says what proves it (NOT PROVEN until
  then); a rollback of it witnessed within the hour covers it (INTACT); that witness later than the hour: late."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from conftest import approve, plan_to

from fleet import Fleet
from modified_controller import ModifiedController, checkpoint_to_witness, log_path, log_records, run_witness_cut
from test_audit_witness import rechain
from test_audit_witness_attacks_2 import (  # noqa: F401 - fleet is a fixture
    ALTERED, NOT_PROVEN, fleet, run_once, verify)
from upgrader.cli import main
from upgrader.trust.keys import load_private_key


def case_text(f: Fleet, capsys: pytest.CaptureFixture[str], run: str, *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["--home", str(f.box.root), "audit", "case", run, *extra])
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_the_outage_and_the_operator_rewritten_within_the_hour_are_caught(
        fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    f = fleet
    run = run_witness_cut(f)
    steps = json.loads((f["app-01"].state_dir / "runs.jsonl").read_text().splitlines()[-1])["steps"]
    by_op = {s["op"]: s for s in steps}
    assert all(by_op[op]["start"] <= by_op[op]["at"] for op in ("stop", "install", "start"))
    honest_down = round(by_op["start"]["at"] - by_op["stop"]["start"], 3)
    recs = log_records(f)
    mine = [r for r in recs if r.get("run") == run]
    stop_at = next(r["seq"] for r in mine if r["event"] == "phase_started" and r.get("phase") == "stop")
    up = next(r for r in mine if r["event"] == "phase_finished" and r.get("phase") == "start")
    up_clock = str(up.get("clock") or up["time"])

    def edit(rec: dict[str, Any]) -> dict[str, Any]:
        if rec.get("run") == run:
            if stop_at <= rec["seq"] <= up["seq"]:  # the outage squeezed to nothing
                # a line the writer raised (its time taken before another thread's later line) keeps its clock in
                # `clock`, which the verifier reads: the forger moves that too (CI, under load, raised some)
                rec["time"] = up_clock
                rec.pop("clock", None)
                if rec["event"] == "phase_finished" and isinstance(rec.get("data"), dict) and "seconds" in rec["data"]:
                    rec["data"]["seconds"] = 0.0
            if isinstance(rec.get("actor"), dict):  # someone else ran it
                rec["actor"].update(user="night-shift", host="ops-bastion")
        return rec

    key = load_private_key(str(f.box.operator_key))
    forged = rechain(log_path(f).read_bytes().splitlines(keepends=True), edit, key, "operator@customer")
    log_path(f).write_bytes(b"".join(forged))
    cp = checkpoint_to_witness(forged, run)
    with ModifiedController(f, "app-01") as c:  # within the hour: not late
        assert c.call("witness", run_id=run, checkpoint=cp)["written"]
    rc, report, text = verify(f, capsys)
    assert rc == ALTERED, text
    assert f"host app-01's own record of run {run} differs from the log: stop time is " in text
    # the squeezed outage reads (next to) nothing in the log: its lines' monotonic readings may credit a millisecond
    assert "start time is " in text and re.search(r"downtime is [0-9.]+s on the host, 0\.00[0-9]s in the log: ALTERED",
                                                  text), text
    lock = json.loads((f["app-01"].state_dir / "runs-opened.jsonl").read_text().splitlines()[-1])
    assert (f"host app-01's opening record of run {run} differs from the log: operator is "
            f"{lock['user']}@{lock['controller']} on the host, night-shift@ops-bastion in the log (ALTERED)") in text
    rc, text = case_text(f, capsys, run, "--witness", str(f.box.inventory))
    assert rc == ALTERED, text
    flat = " ".join(text.split())
    assert f"downtime {honest_down} s (by the hosts' own clocks)" in flat, flat
    assert f"downtime {honest_down} s (by the host's own clock); phases:" in flat
    rc, text = case_text(f, capsys, run, "--witness", str(f.box.inventory), "--lang", "zh")
    assert f"停机 {honest_down} 秒（按各主机自己的时钟）" in " ".join(text.split()), text
    assert "主机记为" in text and "操作员" in text


def test_an_honest_runs_case_takes_its_downtime_from_the_host_and_says_so(
        fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    f = fleet
    rc, plan = plan_to(f.box, "7.0.4.2")
    approval = approve(f.box, plan)
    assert main(["--home", str(f.box.root), "run", str(plan), "--approval", str(approval)]) == 0
    run = f.run_dirs()[-1].name
    steps = json.loads((f["app-01"].state_dir / "runs.jsonl").read_text().splitlines()[-1])["steps"]
    by_op = {s["op"]: s for s in steps}
    down = round(by_op["start"]["at"] - by_op["stop"]["start"], 3)
    rc, report, text = verify(f, capsys)
    assert rc == 0, text
    rc, text = case_text(f, capsys, run)
    assert rc == 0 and "(from the log's phase times)" in text, text
    rc, text = case_text(f, capsys, run, "--witness", str(f.box.inventory))
    assert rc == 0, text
    assert f"downtime {down} s (by the hosts' own clocks)" in " ".join(text.split()), text
    capsys.readouterr()
    assert main(["--home", str(f.box.root), "audit", "case", run, "--witness", str(f.box.inventory), "--json"]) == 0
    case = json.loads(capsys.readouterr().out)["case"]
    assert case["downtime_source"] == "hosts" and case["downtime_seconds"] == down
    assert case["downtime_log_seconds"] >= down, "the log's outage holds the host's"


def test_verify_speaks_chinese_and_a_case_from_an_altered_log_is_marked_no_evidence(
        fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    f = fleet
    run, _, _ = run_once(f)
    home = ["--home", str(f.box.root), "audit"]
    capsys.readouterr()
    assert main([*home, "verify", "--lang", "zh"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert text.startswith("完好 ") and "最后一个检查点：第 " in text and "INTACT" not in text, text
    rc, text = case_text(f, capsys, run)
    assert rc == 0 and "not evidence" not in text
    # the engineer edits the run's outcome in the log (no key): the log is ALTERED
    lines = log_path(f).read_bytes().splitlines(keepends=True)
    n = next(i for i, x in enumerate(lines) if json.loads(x)["event"] == "host_finished")
    lines[n] = lines[n].replace(b'"committed"', b'"rolled_back"')
    log_path(f).write_bytes(b"".join(lines))
    capsys.readouterr()
    assert main([*home, "verify", "--lang", "zh"]) == ALTERED
    text = " ".join(capsys.readouterr().out.split())
    assert text.startswith("已被篡改 ") and "ALTERED" not in text and "altered" not in text, text
    capsys.readouterr()
    assert main([*home, "verify", "--witness", str(f.box.inventory), "--lang", "zh"]) == ALTERED
    text = " ".join(capsys.readouterr().out.split())
    assert text.startswith("已被篡改 ") and "（已与各主机见证的检查点核对）" in text, text
    assert (f"见证：主机 app-01 自己对运行 {run} 的记录与日志不符——结果：主机记为 已提交，日志为 已回滚（已被篡改）"
            in text), text
    assert "witness:" not in text and "the log" not in text and "ALTERED" not in text, text
    # the case: the headline, then every section taken from the log marked no evidence; the hosts' word unmarked
    rc, text = case_text(f, capsys, run, "--witness", str(f.box.inventory))
    assert rc == ALTERED, text
    lines_out = text.splitlines()
    assert lines_out[0].startswith("ALTERED (line ") and lines_out[1].startswith(
        "ALTERED: 1 witnessed checkpoint(s)"), text
    assert lines_out[2].startswith("from an altered log — not evidence: every section below"), text
    body = [x for x in lines_out[3:] if not x.startswith(" ")]
    marked = [x for x in body if x.startswith("[from an altered log — not evidence] ")]
    assert [x for x in body if x not in marked] and all(
        x.startswith(("witness: ", "host record: ")) for x in body if x not in marked), text
    assert any(" run " + run in x or x.endswith(f"run {run} (upgrade) to 7.0.4.2") for x in marked), text
    assert any("downtime" in x for x in marked) and any(x.startswith("[from an altered log — not evidence] "
                                                                      "requested by: ") for x in marked), text
    rc, text = case_text(f, capsys, run, "--lang", "zh")
    assert rc == ALTERED, text
    lines_out = text.splitlines()
    assert lines_out[0].startswith("已被篡改（第 ") and lines_out[1].startswith("取自被篡改的日志——不是证据："), text
    assert all(x.startswith("[取自被篡改的日志——不是证据] ") for x in lines_out[2:] if x and not x.startswith(
        ("见证：", "主机记录：", " "))), text
    capsys.readouterr()
    assert main([*home, "case", run, "--json"]) == ALTERED
    assert json.loads(capsys.readouterr().out)["evidence"] is False


def test_a_run_whose_witness_never_arrived_is_proven_by_the_next_witnessed_run_within_the_hour(
        fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    """The witness of a run never reached the host (its connection cut): NOT PROVEN, and the verdict says what would
    prove it. The operator then rolls it back with the shipped CLI: that rollback's checkpoint, witnessed by the
    host within the hour of the first run's finish there, covers every line before it: INTACT. Had that witness come
    later than the hour, the first run is late (NOT PROVEN), the covering run named."""
    f = fleet
    run = run_witness_cut(f)
    rc, report, text = verify(f, capsys)
    assert rc == NOT_PROVEN and text.startswith("NOT PROVEN"), text
    assert (f"host app-01 finished run {run} at " in text and "keeps no witness of its checkpoint: unwitnessed (a "
            "later run, resume or rollback whose checkpoint this host witnesses within 3600 s of that finish covers "
            "it; after that it stays not proven)" in text), text
    capsys.readouterr()
    assert main(["--home", str(f.box.root), "rollback", run, "--yes"]) == 0
    rc, report, text = verify(f, capsys)
    assert rc == 0 and text.startswith("INTACT"), text
    assert report["witness"]["doubts"] == [] and report["witness"]["runs_compared"] == 2
    path = f["app-01"].state_dir / "checkpoints.jsonl"
    [w] = [json.loads(x) for x in path.read_text().splitlines()]
    assert w["run"].startswith(f"{run}/rollback-")
    w["witnessed"] = w["witnessed"] + 7200  # as it would be had the rollback come two hours later
    path.write_text(json.dumps(w) + "\n")
    rc, report, text = verify(f, capsys)
    assert rc == NOT_PROVEN, text
    assert (f"host app-01 never received the checkpoint of run {run}; the first witness covering it (the checkpoint "
            f"of run {w['run']}) came ") in text and "(more than 3600 s): late" in text, text
