"""Witnessed checkpoints (issue 20): every host a run touched keeps the run's signed checkpoint in its own ledger
(checkpoints.jsonl), and `upgrader audit verify --witness INVENTORY` checks the log against those records over the
real sshd. The attacks are the ones a signature alone cannot catch: the log rewritten and re-signed with the
operator's own key, and the last run cut off the end. A host unreachable at the run's end does not fail the run."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import approve, fault_env, kill_processes_under, plan_to, upgrader

from fleet import Fleet, build_fleet
from sshd import SSHServer, start_sshd
from upgrader.cli import main
from upgrader.trust.keys import load_private_key
from upgrader.trust.sshsig import fingerprint, public_key_blob, sign

ALTERED = 6


@dataclass(frozen=True)
class Witnessed:
    fleet: Fleet
    log: bytes                      # the audit log as the two runs left it
    runs: list[str]                 # the upgrade (7.0.4.2, committed), the failing one (7.0.4.5, rolled back)
    checkpoints: list[dict[str, Any]]  # each run's checkpoint (result.json)


@pytest.fixture(scope="module")
def witnessed(tmp_path_factory: pytest.TempPathFactory, sshd: SSHServer) -> Iterator[Witnessed]:
    """Two real runs over the real sshd on two hosts: an upgrade, then a failing one rolled back automatically."""
    root = tmp_path_factory.mktemp("witnessed")
    f = build_fleet(root / "fleet", sshd, 2)
    try:
        for version, expected in (("7.0.4.2", 0), ("7.0.4.5", 1)):
            rc, plan = plan_to(f.box, version)
            assert rc == 0
            assert upgrader(f.box, "run", str(plan), "--approval", str(approve(f.box, plan))) == expected
    finally:
        f.stop_all()
        kill_processes_under(root)
    runs = [d.name for d in f.run_dirs()]
    cps = [json.loads((d / "result.json").read_text())["checkpoint"] for d in f.run_dirs()]
    yield Witnessed(f, (f.box.root / "audit" / "audit.jsonl").read_bytes(), runs, cps)


def verify(w: Witnessed, log: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict[str, Any], str]:
    """`upgrader audit verify LOG` with the sandbox's policy (its allowed signers), as JSON and as text."""
    capsys.readouterr()
    rc_json = main(["--home", str(w.fleet.box.root), "audit", "verify", str(log), "--json", *extra])
    report = json.loads(capsys.readouterr().out)
    rc = main(["--home", str(w.fleet.box.root), "audit", "verify", str(log), *extra])
    text = capsys.readouterr().out
    assert rc == rc_json
    return rc, report, " ".join(text.split())


def records(host_state: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (host_state / "checkpoints.jsonl").read_text().splitlines()]


def sha(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def rechain(lines: list[bytes], edit: Any, key: Any, principal: str) -> list[bytes]:
    """The attacker with the operator's key: edit, renumber, rechain, and re-sign every checkpoint."""
    from upgrader.audit.log import NAMESPACE, checkpoint_statement

    out: list[bytes] = []
    prev = "0" * 64
    for line in lines:
        rec = edit(json.loads(line))
        rec["seq"], rec["prev"] = len(out) + 1, prev
        if rec["event"] == "checkpoint":
            fp = fingerprint(public_key_blob(key.public_key()))
            rec["checkpoint"] = {"seq": len(out), "head": prev, "signer": principal, "key": fp,
                                 "signature": sign(key, checkpoint_statement(len(out), prev, rec["run"], principal,
                                                                             rec["time"]), NAMESPACE)}
        out.append(json.dumps(rec, separators=(",", ":"), ensure_ascii=False).encode() + b"\n")
        prev = sha(out[-1])
    return out


def test_each_host_a_run_touched_keeps_that_runs_checkpoint_in_its_own_ledger(witnessed: Witnessed) -> None:
    for h in witnessed.fleet.hosts:
        kept = records(h.state_dir)
        assert [(r["run"], r["seq"], r["head"]) for r in kept] == [
            (run, cp["seq"], cp["head"]) for run, cp in zip(witnessed.runs, witnessed.checkpoints)]
        assert all(r["signer"] == "operator@customer" and r["key"].startswith("SHA256:") for r in kept)
        assert oct((h.state_dir / "checkpoints.jsonl").stat().st_mode & 0o777) == "0o600"


def test_an_honest_log_verifies_intact_with_every_hosts_witnesses(witnessed: Witnessed, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_bytes(witnessed.log)
    rc, report, text = verify(witnessed, log, capsys, "--witness", str(witnessed.fleet.box.inventory))
    assert rc == 0, text
    assert report["witness"]["status"] == "intact" and report["witness"]["checked"] == 4
    assert [h["checkpoints"] for h in report["witness"]["hosts"]] == [2, 2]
    assert text.startswith("INTACT") and "4 witnessed checkpoint(s) match the log" in text


def test_a_log_rewritten_and_re_signed_with_the_operator_key_is_caught_by_the_hosts(
        witnessed: Witnessed, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The engineer holds the log and the operator key: he changes the first run's approval comment, rebuilds the chain
    and signs every checkpoint again. The signatures verify (exit 0 without witnesses); the hosts' records do not."""
    box = witnessed.fleet.box
    key = load_private_key(str(box.operator_key))
    lines = witnessed.log.splitlines(keepends=True)

    def edit(rec: dict[str, Any]) -> dict[str, Any]:
        if rec["event"] == "approval_accepted" and rec["run"] == witnessed.runs[0]:
            # the comment (the approver's name is held to the approvers' allowed_signers by verify itself)
            rec["data"]["comment"] = "approved by the CISO"
        return rec

    forged = rechain(lines, edit, key, "operator@customer")
    edited = next(n for n, line in enumerate(lines, 1) if b'"approval_accepted"' in line)
    assert forged != lines
    log = tmp_path / "audit.jsonl"
    log.write_bytes(b"".join(forged))
    rc, report, text = verify(witnessed, log, capsys)
    assert rc == 0 and report["status"] == "intact", "the re-signed log must fool a signature check alone"
    rc, report, text = verify(witnessed, log, capsys, "--witness", str(box.inventory))
    assert rc == ALTERED, text
    first = witnessed.checkpoints[0]
    assert first["seq"] >= edited
    problems = report["witness"]["problems"]
    assert len(problems) == 4  # both runs' heads, on both hosts
    assert (f"host app-01 witnessed run {witnessed.runs[0]} at seq {first['seq']} head {first['head'][:12]}…, the "
            f"log has head {sha(forged[first['seq'] - 1])[:12]}… at seq {first['seq']}: the log was rewritten at or "
            f"before line {first['seq']}") in problems
    assert text.startswith("ALTERED") and "app-02" in text


def test_the_last_run_cut_off_the_end_is_caught_by_the_hosts_anchors(
        witnessed: Witnessed, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Everything after the first run's checkpoint is removed: a signature check alone reads INTACT."""
    lines = witnessed.log.splitlines(keepends=True)
    first, second = witnessed.checkpoints
    log = tmp_path / "audit.jsonl"
    log.write_bytes(b"".join(lines[:first["line"]]))
    rc, report, _ = verify(witnessed, log, capsys)
    assert rc == 0 and report["status"] == "intact"
    rc, report, text = verify(witnessed, log, capsys, "--witness", str(witnessed.fleet.box.inventory))
    assert rc == ALTERED, text
    assert (f"host app-02 witnessed run {witnessed.runs[1]} at seq {second['seq']} head {second['head'][:12]}…, "
            f"but the log ends at seq {first['line']}: cut off") in " ".join(report["witness"]["problems"])
    assert len(report["witness"]["problems"]) == 2
    # the honest part still matches: the first run is not reported
    assert witnessed.runs[0] not in " ".join(report["witness"]["problems"])


def test_a_host_unreachable_at_the_runs_end_does_not_fail_the_run_and_the_log_notes_it(
        tmp_path: Path, sshd: SSHServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The host's own sshd dies right after the host answered the run's finish: the run still exits 0, its output
    warns that the host did not record the checkpoint, the audit log has a witness_missing line and verifies."""
    own = start_sshd(tmp_path / "sshd-own")
    f = build_fleet(tmp_path / "fleet", sshd, 1)
    try:
        f.write_inventory(**own.host_entry())
        rc, plan = plan_to(f.box, "7.0.4.2")
        assert rc == 0
        approval = approve(f.box, plan)
        env = {**os.environ, **fault_env(), "UPGRADER_FAULT_STOP_AT": "agent:replied:finish",
               "UPGRADER_FAULT_STOP_PID": str(own.proc.pid)}
        done = subprocess.run([sys.executable, "-m", "upgrader", "--home", str(f.box.root), "run", str(plan),
                               "--approval", str(approval)], env=env, capture_output=True, text=True, timeout=300,
                              stdin=subprocess.DEVNULL)
        out = " ".join(done.stdout.split())
        assert done.returncode == 0, done.stdout + done.stderr
        assert own.proc.poll() is not None, "the host's sshd was stopped at the run's end"
        assert "warning: host app-01 did not record the checkpoint" in out
        assert f.versions() == {"app-01": "7.0.4.2"}
        assert not (f["app-01"].state_dir / "checkpoints.jsonl").exists()
        (run_dir,) = f.run_dirs()
        result = json.loads((run_dir / "result.json").read_text())
        assert result["witness"]["witnessed"] == [] and result["witness"]["missing"][0]["host"] == "app-01"
        events = [json.loads(line) for line in (f.box.root / "audit" / "audit.jsonl").read_text().splitlines()]
        assert events[-1]["event"] == "witness_missing" and events[-1]["host"] == "app-01"
        assert events[-1]["data"]["for_run"] == run_dir.name and events[-1]["run"] is None
        assert main(["--home", str(f.box.root), "audit", "verify"]) == 0
        monkeypatch.setenv("COLUMNS", "2000")
        capsys.readouterr()
        assert main(["--home", str(f.box.root), "audit", "show", "--lang", "zh"]) == 0  # said in Chinese too
        shown = capsys.readouterr().out
        assert "主机未记录检查点" in shown and "witness_missing" not in shown
        # the auditor cannot read that host now: the log is not proven against it (exit 2, the host named)
        assert main(["--home", str(f.box.root), "audit", "verify", "--witness", str(f.box.inventory)]) == 2
    finally:
        own.stop()
        f.stop_all()
        kill_processes_under(tmp_path)
        shutil.rmtree(tmp_path / "sshd-own", ignore_errors=True)


def case(w: Witnessed, run: str, log: Path, capsys: pytest.CaptureFixture[str], *extra: str
         ) -> tuple[int, dict[str, Any], str, str]:
    """`upgrader audit case RUN LOG` as JSON, as English text and as Chinese text: one exit code for all three."""
    home = ["--home", str(w.fleet.box.root), "audit", "case", run, str(log), *extra]
    capsys.readouterr()
    rc_json = main([*home, "--json"])
    report = json.loads(capsys.readouterr().out)
    rc_en = main([*home, "--lang", "en"])
    en = " ".join(capsys.readouterr().out.split())
    rc_zh = main([*home, "--lang", "zh"])
    zh = " ".join(capsys.readouterr().out.split())
    assert rc_json == rc_en == rc_zh == report["exit_code"]
    return rc_json, report["case"], en, zh


def test_audit_case_names_the_hosts_that_keep_the_runs_checkpoint_and_that_it_matches(
        witnessed: Witnessed, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_bytes(witnessed.log)
    inventory = str(witnessed.fleet.box.inventory)
    rc, plain, en, _ = case(witnessed, witnessed.runs[0], log, capsys)
    assert rc == 0 and plain["witnesses"] is None and "witnesses: not looked up (add --witness INVENTORY)" in en
    for run, cp in zip(witnessed.runs, witnessed.checkpoints):
        rc, got, en, zh = case(witnessed, run, log, capsys, "--witness", inventory)
        assert rc == 0, en
        w = got["witnesses"]
        assert w["status"] == "intact" and w["unreadable"] == [] and w["not_kept"] == []
        assert [(k["host"], k["seq"], k["head"], k["signer"], k["matches"], k["problem"]) for k in w["hosts"]] == [
            (h, cp["seq"], cp["head"], "operator@customer", True, None) for h in ("app-01", "app-02")]
        assert all(k["key"] == cp["key"] and k["time"] for k in w["hosts"])
        for host in ("app-01", "app-02"):
            assert (f"witness: host {host} keeps this run's checkpoint (seq {cp['seq']}, head {cp['head']}, signer "
                    f"operator@customer, time ") in en
            assert f"见证：主机 {host} 保存了本次运行的检查点（序号 {cp['seq']}，链头 {cp['head']}，" in zh
        assert en.count("— matches the log") == 2 and zh.count("——与日志一致") == 2
        assert "INTACT: the hosts' 4 witnessed checkpoint(s) all match the log" in en
        assert "完好：主机的 4 个见证检查点都与日志一致" in zh


def test_audit_case_on_a_log_re_signed_with_the_operator_key_says_the_hosts_checkpoints_do_not_match(
        witnessed: Witnessed, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The log rewritten (the first run's approval comment) and re-signed: the case alone reads INTACT; with the hosts'
    witnesses it says each host's record of the run does not match, and exits 6."""
    box = witnessed.fleet.box
    key = load_private_key(str(box.operator_key))

    def edit(rec: dict[str, Any]) -> dict[str, Any]:
        if rec["event"] == "approval_accepted" and rec["run"] == witnessed.runs[0]:
            # the comment (the approver's name is held to the approvers' allowed_signers by verify itself)
            rec["data"]["comment"] = "approved by the CISO"
        return rec

    log = tmp_path / "audit.jsonl"
    log.write_bytes(b"".join(rechain(witnessed.log.splitlines(keepends=True), edit, key, "operator@customer")))
    rc, got, en, _ = case(witnessed, witnessed.runs[0], log, capsys)
    assert rc == 0 and en.startswith("INTACT"), "the re-signed log fools the case without witnesses"
    rc, got, en, zh = case(witnessed, witnessed.runs[0], log, capsys, "--witness", str(box.inventory))
    assert rc == ALTERED, en
    w = got["witnesses"]
    assert w["status"] == "altered" and [k["host"] for k in w["hosts"]] == ["app-01", "app-02"]
    assert not any(k["matches"] for k in w["hosts"])
    assert all("the log was rewritten at or before line" in k["problem"] for k in w["hosts"])
    assert "ALTERED: 4 witnessed checkpoint(s) of the hosts do not match the log" in en
    assert en.count("DOES NOT MATCH the log: host app-0") == 2
    assert "已被篡改：主机的见证检查点有 4 处与日志不符" in zh and zh.count("与日志不符：host app-0") == 2


def test_audit_case_with_the_last_run_cut_off_names_no_witness_of_the_first_as_wrong(
        witnessed: Witnessed, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The second run cut off the end: the first run's case still has both hosts' matching witnesses, and exits 6,
    because the hosts witnessed a run the log no longer has."""
    first = witnessed.checkpoints[0]
    log = tmp_path / "audit.jsonl"
    log.write_bytes(b"".join(witnessed.log.splitlines(keepends=True)[:first["line"]]))
    rc, got, en, _ = case(witnessed, witnessed.runs[0], log, capsys, "--witness", str(witnessed.fleet.box.inventory))
    assert rc == ALTERED, en
    assert [k["matches"] for k in got["witnesses"]["hosts"]] == [True, True]
    assert "ALTERED: 2 witnessed checkpoint(s) of the hosts do not match the log" in en


def test_the_exports_case_sections_carry_the_hosts_witnesses(
        witnessed: Witnessed, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`audit export --witness INVENTORY`: each run's case section (HTML en and zh, JSON, the cases CSV) names the
    hosts that keep its checkpoint and that the log matches; on a log re-signed with the operator key each says it
    does not, and the export exits 6."""
    import csv as _csv

    from test_audit_case import case_rows

    box = witnessed.fleet.box
    log = tmp_path / "audit.jsonl"
    log.write_bytes(witnessed.log)
    home = ["--home", str(box.root), "audit", "export", str(log), "--witness", str(box.inventory)]
    for lang in ("en", "zh"):
        out = tmp_path / f"{lang}.html"
        assert main([*home, "--format", "html", "-o", str(out), "--lang", lang]) == 0
        html = out.read_text()
        for index, cp in enumerate(witnessed.checkpoints, 1):
            row = case_rows(html, index)["witnesses"]
            for host in ("app-01", "app-02"):
                assert (f"主机 {host} 保存了本次运行的检查点（序号 {cp['seq']}，链头 {cp['head']}，" if lang == "zh"
                        else f"host {host} keeps this run's checkpoint (seq {cp['seq']}, head {cp['head']}, ") in row
            assert row.count("与日志一致" if lang == "zh" else "matches the log") == 2
    capsys.readouterr()
    assert main([*home, "--format", "json", "-o", str(tmp_path / "a.json"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["exit_code"] == 0
    doc = json.loads((tmp_path / "a.json").read_text())
    assert doc["witness"]["status"] == "intact" and doc["witness"]["checked"] == 4
    for c, cp in zip(doc["cases"], witnessed.checkpoints):
        assert [(k["host"], k["seq"], k["head"], k["matches"]) for k in c["witnesses"]["hosts"]] == [
            (h, cp["seq"], cp["head"], True) for h in ("app-01", "app-02")]
    assert main([*home, "--format", "csv", "-o", str(tmp_path / "a.csv")]) == 0
    rows = list(_csv.reader((tmp_path / "a.cases.csv").open(newline="")))
    w = rows[1].index("witnesses")
    assert {r[w] for r in rows[2:]} == {"app-01 matches; app-02 matches"} and len(rows) == 2 + 2 * 2
    # the log rewritten and re-signed with the operator's key: every view says the hosts' records do not match
    key = load_private_key(str(box.operator_key))

    def edit(rec: dict[str, Any]) -> dict[str, Any]:
        if rec["event"] == "approval_accepted" and rec["run"] == witnessed.runs[0]:
            # the comment (the approver's name is held to the approvers' allowed_signers by verify itself)
            rec["data"]["comment"] = "approved by the CISO"
        return rec

    log.write_bytes(b"".join(rechain(witnessed.log.splitlines(keepends=True), edit, key, "operator@customer")))
    assert main([*home[:-2], "--format", "html", "-o", str(tmp_path / "plain.html")]) == 0
    capsys.readouterr()
    assert main([*home, "--format", "html", "-o", str(tmp_path / "f.html"), "--lang", "en"]) == ALTERED
    assert "witnesses: ALTERED, 4 witnessed checkpoint(s) do not match the log" in capsys.readouterr().out
    row = case_rows((tmp_path / "f.html").read_text(), 1)["witnesses"]
    assert row.count("DOES NOT MATCH the log: host app-0") == 2 and "matches the log" not in row
    assert main([*home, "--format", "html", "-o", str(tmp_path / "f-zh.html"), "--lang", "zh"]) == ALTERED
    assert case_rows((tmp_path / "f-zh.html").read_text(), 1)["witnesses"].count("与日志不符") == 2
    assert main([*home, "--format", "csv", "-o", str(tmp_path / "f.csv")]) == ALTERED
    rows = list(_csv.reader((tmp_path / "f.cases.csv").open(newline="")))
    assert {r[w] for r in rows[2:]} == {"app-01 DOES NOT MATCH; app-02 DOES NOT MATCH"}


def test_each_host_keeps_its_own_record_of_every_run_it_finished_and_the_log_agrees(
        witnessed: Witnessed, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """runs.jsonl beside the witnesses: per run the host's own account (outcome, versions, steps, its clock); the
    honest log agrees with every one of them (no difference, no doubt)."""
    for h in witnessed.fleet.hosts:
        recs = [json.loads(x) for x in (h.state_dir / "runs.jsonl").read_text().splitlines()]
        assert [(r["as"], r["outcome"], r["version_before"], r["version_after"]) for r in recs] == [
            (witnessed.runs[0], "committed", "7.0.4.1", "7.0.4.2"),
            (witnessed.runs[1], "rolled_back", "7.0.4.2", "7.0.4.2")]
        ops = [[(s["op"], s["ok"]) for s in r["steps"]] for r in recs]
        assert ("install", True) in ops[0] and ("rollback", True) in ops[1] and ("rollback", True) not in ops[0]
        assert all(r["started"] <= r["finished"] and re.fullmatch(r"[0-9a-f]{64}", r["plan"]) and r["approvals"]
                   for r in recs)
        assert oct((h.state_dir / "runs.jsonl").stat().st_mode & 0o777) == "0o600"
    log = tmp_path / "audit.jsonl"
    log.write_bytes(witnessed.log)
    rc, report, text = verify(witnessed, log, capsys, "--witness", str(witnessed.fleet.box.inventory))
    assert rc == 0 and report["witness"]["runs_compared"] == 4 and report["witness"]["doubts"] == [], text
    assert "4 run(s) as the hosts recorded them match it" in text
