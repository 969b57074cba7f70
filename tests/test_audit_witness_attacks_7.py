"""Issue 20, the auditor's case file, leftovers (fix20k), played through the shipped CLI over the real sshd.

- Two rollbacks of one run that start in the same second each get their own label in the log and on the hosts
  (RUN/rollback-TIME-RANDOM, sortable by time), and both end cleanly: every host keeps one record per label and the
  log with the hosts' records reads INTACT.
- The verifier reads the kind of run a host recorded at its lock (run, guided, continuation, resume, rollback), never
  infers it from the fields the record holds; a kind that does not fit the log's opening line is ALTERED, naming the
  host's file and line and the log's line.
- The host's witness_read answer says itself whether its own trust root protects its records; the verifier names
  it per host (protected_by).
- A rollback's phases are held to its host's one clock offset too (fixed by its opening line and its first phase).
- `audit case RUN --approvals DIR` names each approval's file and checks its signature."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import approve, kill_processes_under, now_at, plan_to, upgrader

from fleet import Fleet, FleetHost, build_fleet
from sshd import SSHServer
from test_audit_witness_attacks_2 import ALTERED, agent, fleet, log_of, records, run_once, verify  # noqa: F401
from test_host_trust import host_root  # noqa: F401 - a fixture
from upgrader.cli import main


@pytest.fixture
def fleet2(tmp_path: Path, sshd: SSHServer) -> Iterator[Fleet]:
    f = build_fleet(tmp_path / "fleet", sshd, 2)
    try:
        yield f
    finally:
        f.stop_all()
        kill_processes_under(tmp_path)


def test_two_rollbacks_of_one_run_in_the_same_second_each_get_their_own_label(
        fleet2: Fleet, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`rollback RUN --hosts app-01` then `rollback RUN --hosts app-02`, each starting in the same second on the
    controller's clock (conftest.now_at, the CLI's injected clock): both exit 0, the log opens two rollbacks with two
    labels (time first, so they sort), each host opened and ended its own label once, and `audit verify --witness`
    reads INTACT."""
    f = fleet2
    run, _, _ = run_once(f)  # both hosts upgraded
    # the controller's clock a second or two ahead (one offset for each rollback, as a host allows): the first
    # rollback starts on a whole second, and the second one within that second on the controller's clock
    second = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=2)).replace(microsecond=0)
    now_at(monkeypatch, second.isoformat())
    assert upgrader(f.box, "rollback", run, "--hosts", "app-01", "--yes") == 0
    took = dt.datetime.fromisoformat(records(log_of(f))[-1]["time"]) - second
    # the second starts where the first ended on that clock (the log's times never go back), with time left in the
    # second for its label; when the first outlasted most of it (a loaded machine), just after the first started
    quick = took < dt.timedelta(seconds=0.6)
    now_at(monkeypatch, (second + (took if quick else dt.timedelta(seconds=0.1))).isoformat())
    assert upgrader(f.box, "rollback", run, "--hosts", "app-02", "--yes") == 0
    opened = [r["run"] for r in records(log_of(f)) if r.get("event") == "rollback_requested"]
    assert len(opened) == 2 and len(set(opened)) == 2, opened
    stamp = f"{second:%Y%m%dT%H%M%S}"
    assert all(label.startswith(f"{run}/rollback-{stamp}") for label in opened), opened
    for name, label in zip(("app-01", "app-02"), opened):
        ended = [r for r in records(f[name].state_dir / "runs.jsonl") if r.get("as", r.get("run")) == label]
        assert len(ended) == 1 and ended[0]["kind"] == "rollback", ended
    if not quick:  # the second's log times were held at the first's end: its phases read shorter than the host's
        return
    rc, report, text = verify(f, capsys)
    assert rc == 0 and "INTACT" in text, text


def rewrite_opening(h: FleetHost, label: str, edit: Any) -> int:
    """Rewrite the host's opening record of ``label`` in its ledger (runs-opened.jsonl), as a hook run as root
    there could; returns the record's line."""
    path = h.state_dir / "runs-opened.jsonl"
    recs = records(path)
    (line,) = [n for n, r in enumerate(recs, 1) if r.get("as") == label]
    recs[line - 1] = edit(recs[line - 1])
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in recs))
    return line


def test_the_kind_of_a_run_is_read_from_the_hosts_record_not_inferred_from_its_fields(
        fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    """A host's opening record of a rollback that also holds a requester and a policy (the fields a first run
    records, here the run's own) is judged by the kind it says (rollback, as the log opens it): INTACT. The opening
    record of the first run with its kind forged to `continuation` (its fields still those of a first run) is
    ALTERED, exit 6, naming the host's file and line, the kind on both sides and the log's line, in en and zh."""
    f = fleet
    run, _, _ = run_once(f)
    assert upgrader(f.box, "rollback", run, "--yes") == 0
    h = f["app-01"]
    first = next(r for r in records(h.state_dir / "runs-opened.jsonl") if r["as"] == run)
    label = next(r["as"] for r in records(h.state_dir / "runs-opened.jsonl") if r["as"] != run)
    rewrite_opening(h, label, lambda r: {**r, "requester": first["requester"], "policy": first["policy"]})
    rc, _, text = verify(f, capsys)
    assert rc == 0 and "INTACT" in text, text
    line = rewrite_opening(h, run, lambda r: {**r, "kind": "continuation"})
    rc, report, text = verify(f, capsys)
    assert rc == ALTERED, text
    opened = next(r for r in records(log_of(f)) if r.get("event") == "run_started" and r.get("run") == run)
    assert (f"host app-01's opening record of run {run} differs from the log: kind is 'continuation' "
            f"({h.state_dir / 'runs-opened.jsonl'} line {line}) on the host, run_started (line {opened['seq']}) in "
            "the log (ALTERED)") in text, text
    capsys.readouterr()
    assert main(["--home", str(f.box.root), "audit", "verify", "--witness", str(f.box.inventory), "--lang",
                 "zh"]) == ALTERED
    zh = " ".join(capsys.readouterr().out.split())
    assert (f"主机 app-01 对运行 {run} 的开始记录与日志不符——运行类型：主机记为 'continuation'（{h.state_dir / 'runs-opened.jsonl'} "
            f"第 {line} 行），日志为 run_started（第 {opened['seq']} 行）（已被篡改）") in zh, zh


def test_the_host_says_itself_whether_its_trust_root_protects_its_records(
        fleet: Fleet, capsys: pytest.CaptureFixture[str], host_root: Any) -> None:
    """The agent's witness_read answer says whether the host's own trust root protects its records (trust_root: its
    directory, or None), and `audit verify --witness` names it per host (protected_by): neither without a root, the
    host trust root with one; a root the host cannot use (writable by others) still says so, with its problem."""
    from test_host_trust import _operators_root

    f = fleet
    run_once(f)
    reply = agent(f, "witness_read")
    assert "trust_root" in reply and reply["trust_root"] is None, reply.get("trust_root", "no trust_root key")
    rc, report, text = verify(f, capsys)
    assert rc == 0 and report["witness"]["hosts"][0]["protected_by"] == ["neither"], text
    root = _operators_root(f.box, host_root)
    assert agent(f, "witness_read")["trust_root"] == {"dir": str(root), "usable": True, "problem": None}
    rc, report, text = verify(f, capsys)
    assert report["witness"]["hosts"][0]["protected_by"] == ["host trust root"], text
    assert "host app-01's records are written by its agent" in text, text
    assert "its trust root binds only the agent upgrader ships" in text, text
    root.chmod(0o777)
    try:
        told = agent(f, "witness_read")["trust_root"]
    finally:
        root.chmod(0o755)
    assert told["dir"] == str(root) and told["usable"] is False and str(root) in told["problem"], told


def _shifted(rec: dict[str, Any], by: dt.timedelta) -> dict[str, Any]:
    for name in ("time", "clock"):  # a line the writer raised keeps its clock in `clock`: moved too
        if name in rec:
            rec[name] = (dt.datetime.fromisoformat(str(rec[name])) + by).isoformat(timespec="milliseconds")
    return rec


def test_a_rollbacks_phase_moved_by_less_than_the_clock_skew_is_altered(
        fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    """A rollback has no preflight phase, yet its host's clock offset is fixed too: the host took its lock after the
    log's rollback_requested line and before its first phase on that host. The engineer moves the rollback's restore
    and everything after it ten minutes later (within the fifteen minutes two clocks may differ), re-signs the log
    with the operator key and has the forged head witnessed in place of the honest one: ALTERED, naming the log's
    line of the rollback phase, in English and Chinese."""
    from test_audit_witness import rechain
    from modified_controller import checkpoint_to_witness
    from upgrader.trust.keys import load_private_key

    f = fleet
    run, _, _ = run_once(f)
    assert upgrader(f.box, "rollback", run, "--yes") == 0
    rc, _, text = verify(f, capsys)
    assert rc == 0 and "INTACT" in text, text
    h = f["app-01"]
    kept = h.state_dir / "checkpoints.jsonl"
    kept.write_bytes(b"".join(kept.read_bytes().splitlines(keepends=True)[:-1]))  # as if held back at its end
    recs = records(log_of(f))
    label = next(r["run"] for r in recs if r.get("event") == "rollback_requested")
    first = next(i for i, r in enumerate(recs) if r.get("run") == label and r.get("phase") == "rollback")
    forged = rechain(log_of(f).read_bytes().splitlines(keepends=True),
                     lambda r: r if r["seq"] <= first else _shifted(r, dt.timedelta(minutes=10)),
                     load_private_key(str(f.box.operator_key)), "operator@customer")
    log_of(f).write_bytes(b"".join(forged))
    assert agent(f, "witness", checkpoint=checkpoint_to_witness(forged, label))["written"]
    rc, _, text = verify(f, capsys)
    assert rc == ALTERED and text.startswith("ALTERED"), text
    assert f"host app-01's own record of run {label} differs from the log: rollback time is " in text, text
    assert f"(line {first + 1}, under the host's clock offset " in text, text
    capsys.readouterr()
    assert main(["--home", str(f.box.root), "audit", "verify", "--witness", str(f.box.inventory), "--lang",
                 "zh"]) == ALTERED
    zh = " ".join(capsys.readouterr().out.split())
    assert "回滚步骤的时间" in zh and f"第 {first + 1} 行" in zh, zh


def case_text(f: Fleet, capsys: pytest.CaptureFixture[str], run: str, *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["--home", str(f.box.root), "audit", "case", run, "--approvals", str(f.box.approvals), *extra])
    return rc, " ".join(capsys.readouterr().out.split())


def test_the_case_names_each_approval_file_and_checks_its_signature(
        fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    """`audit case RUN --approvals DIR` names under each approval the file that has its digest, its signature
    checked (exit 0, INTACT for the approval files). The engineer then puts another approval's signature under the
    approval's own text (the digest, over the text, is unchanged): exit 6, the file named with "bad signature", in
    English, Chinese and JSON."""
    f = fleet
    run, _, approval = run_once(f)
    rc, text = case_text(f, capsys, run)
    assert rc == 0, text
    assert f"INTACT: the run's approval files ({f.box.approvals}) match the log" in text, text
    assert (f"approval file: {approval} (signature checked; plan, approver, key, expiry, after-hours and comment match the log)"
            in text), text
    rc, other = plan_to(f.box, "7.0.4.3")
    assert rc == 0
    theirs = approve(f.box, other).read_text()
    mine = approval.read_text()
    marker = "-----BEGIN SSH SIGNATURE-----"
    approval.write_text(mine[:mine.index(marker)] + theirs[theirs.index(marker):])
    rc, text = case_text(f, capsys, run)
    assert rc == 6, text
    assert "ALTERED: 1 problem(s) of the approval files against the log (under each approval)" in text, text
    assert f"approval file: {approval} (does not match the log) ALTERED: file {approval}: bad signature" in text, text
    rc, zh = case_text(f, capsys, run, "--lang", "zh")
    assert rc == 6 and f"批准文件：{approval}（与日志不符） 已被篡改：文件 {approval}：签名无效" in zh, zh
    rc, out = case_text(f, capsys, run, "--json")
    a = json.loads(out)["case"]["approvals"][0]
    assert rc == 6 and a["checked_file"] == str(approval) and "bad signature" in a["file_problems"][0]["problem"], a
