"""Issue 20, the attacker's review (attack20): the hosts' witness must hold against the engineer who holds the
controller and the operator key, over the real sshd.

- Attack 1, the flood: the controller cannot pad the host's record (a witness with seq 0, for a run the host never
  finished, or a second one for a run, is refused), and what an older agent let in cannot hide a later witness:
  ``witness_read`` returns the whole record, and a run cut off the end is caught by the host's own record of it.
- Attack 2, withhold then rewrite then witness the forged head: the host keeps its own record of every run it
  finished (outcome, versions, plan, approvals, window, steps, its clock), so the run's lines rewritten and re-signed
  are caught (ALTERED, the field named) even when the forged head is witnessed; a run never witnessed is
  "unwitnessed" and a witness received long after the host's own finish is "late" (not INTACT, exit 2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import approve, kill_processes_under, plan_to, upgrader

from fleet import Fleet, build_fleet
from sshd import SSHServer
from test_audit_witness import rechain
from upgrader.cli import main
from upgrader.fleet.inventory import load_inventory
from upgrader.fleet.transport import connect
from upgrader.fleet.transport.base import AgentClient
from upgrader.trust.keys import load_private_key

ALTERED, NOT_PROVEN = 6, 2


def agent(f: Fleet, op: str, **req: Any) -> dict[str, Any]:
    """The controller's own request to the host's agent over the real sshd (what an engineer's script can send)."""
    h = load_inventory(f.box.inventory).select(None)[0]
    c = AgentClient(connect(h))
    try:
        reply: dict[str, Any] = c.call(op, install_dir=h.install_dir, state_dir=h.state_dir, **req)
        return reply
    finally:
        c.close()


def refused(f: Fleet, checkpoint: dict[str, Any]) -> str:
    from upgrader.fleet.transport.base import AgentFailure

    with pytest.raises(AgentFailure) as caught:
        agent(f, "witness", checkpoint=checkpoint)
    assert caught.value.kind == "bad_input"
    return caught.value.message


def verify(f: Fleet, log: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any], str]:
    capsys.readouterr()
    home = ["--home", str(f.box.root), "audit", "verify", str(log), "--witness", str(f.box.inventory)]
    rc = main([*home, "--json"])
    report = json.loads(capsys.readouterr().out)
    assert main(home) == rc
    return rc, report, " ".join(capsys.readouterr().out.split())


@pytest.fixture
def fleet(tmp_path: Path, sshd: SSHServer) -> Iterator[Fleet]:
    f = build_fleet(tmp_path / "fleet", sshd, 1)
    try:
        yield f
    finally:
        f.stop_all()
        kill_processes_under(tmp_path)


def run_once(f: Fleet, version: str = "7.0.4.2") -> str:
    rc, plan = plan_to(f.box, version)
    assert rc == 0
    assert upgrader(f.box, "run", str(plan), "--approval", str(approve(f.box, plan))) == 0
    return f.run_dirs()[-1].name


def test_the_host_refuses_a_witness_flood_and_reads_its_whole_record(
        fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = fleet
    state = f["app-01"].state_dir
    run = run_once(f)
    cp = json.loads((f.run_dirs()[-1] / "result.json").read_text())["checkpoint"]
    # what an older agent let in: 100001 padding lines of seq 0 before the run's real witness
    honest = (state / "checkpoints.jsonl").read_text()
    (state / "checkpoints.jsonl").write_text('{"head": "' + "0" * 64 + '", "seq": 0, "run": null}\n' * 100001
                                             + honest)
    lines = (state / "checkpoints.jsonl").read_text().splitlines()
    assert len(lines) == 100002 and json.loads(lines[-1])["run"] == run  # the honest witness, line 100002
    [record] = [json.loads(x) for x in (state / "runs.jsonl").read_text().splitlines()]
    assert record["run"] == record["as"] == run and record["outcome"] == "committed"
    assert record["version_after"] == "7.0.4.2" and record["version_before"] == "7.0.4.1"
    assert [s["op"] for s in record["steps"]][:2] == ["prepare", "stop"] and record["approvals"]
    # the controller's flood is refused, line by line, and nothing is appended
    assert "seq (a number, 1 or more)" in refused(f, {"seq": 0, "head": "0" * 64, "run": run})
    assert "did not finish run 20991231T000000Z-000000" in refused(
        f, {"seq": 5, "head": "0" * 64, "run": "20991231T000000Z-000000"})
    assert f"run {run} is already witnessed on this host" in refused(
        f, {"seq": cp["seq"], "head": cp["head"], "run": run})
    assert len((state / "checkpoints.jsonl").read_text().splitlines()) == 100002
    # witness_read returns the whole record: the honest witness past line 100000 is read, the padding named
    got = agent(f, "witness_read")
    assert [(c["run"], c["seq"], c["file_line"]) for c in got["checkpoints"]] == [(run, cp["seq"], 100002)]
    assert got["unreadable_count"] == 100001 and len(got["unreadable"]) == 20
    assert [r["as"] for r in got["runs"]] == [run]
    # the honest log: the witness matches, but the padding leaves it not proven (exit 2), never INTACT
    log = tmp_path / "audit.jsonl"
    data = (f.box.root / "audit" / "audit.jsonl").read_bytes()
    log.write_bytes(data)
    rc, report, text = verify(f, log, capsys)
    assert rc == NOT_PROVEN and report["witness"]["status"] == "unproven", text
    assert report["witness"]["checked"] == 1 and report["witness"]["problems"] == []
    assert "host app-01: 100001 line(s) of its record could not be used" in text and text.startswith("NOT PROVEN")
    # the run cut off the end (no signing needed): the host's own record of it names it
    start = next(n for n, line in enumerate(data.splitlines(keepends=True))
                 if json.loads(line)["event"] == "run_started")
    log.write_bytes(b"".join(data.splitlines(keepends=True)[:start]))
    rc, report, text = verify(f, log, capsys)
    assert rc == ALTERED and text.startswith("ALTERED"), text
    assert any(f"host app-01 witnessed run {run} at seq {cp['seq']}" in p and "cut off" in p
               for p in report["witness"]["problems"])


def test_a_withheld_witness_then_a_rewrite_then_the_forged_head_witnessed_is_caught(
        fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The engineer's own controller (here: the shipped CLI whose witness request's connection is cut, so the
    checkpoint never reaches the host) runs the upgrade; the host's own record says it finished the run.
    Then the run's lines are rewritten (the service window flipped, the version after changed), the chain rebuilt
    and every checkpoint re-signed with the operator key, and the host asked to witness the forged head: it takes
    it (the run did finish there, once), but its own record of the run differs from the log: ALTERED."""
    from modified_controller import checkpoint_to_witness, run_witness_cut

    f = fleet
    run = run_witness_cut(f)
    state = f["app-01"].state_dir
    assert not (state / "checkpoints.jsonl").exists()
    log = f.box.root / "audit" / "audit.jsonl"
    rc, report, text = verify(f, log, capsys)
    assert rc == NOT_PROVEN and text.startswith("NOT PROVEN"), text
    assert f"host app-01 finished run {run} at " in text and "keeps no witness of its checkpoint: unwitnessed" in text
    # the rewrite, re-signed with the operator's key
    key = load_private_key(str(f.box.operator_key))
    inside = None

    def edit(rec: dict[str, Any]) -> dict[str, Any]:
        nonlocal inside
        d = rec.get("data") or {}
        if rec.get("run") == run and isinstance(d.get("window"), dict):
            inside = d["window"]["inside"]
            d["window"]["inside"] = not inside
        if rec.get("run") == run and rec["event"] == "host_finished":
            d["version"] = "7.0.4.3"
        return rec

    forged = rechain(log.read_bytes().splitlines(keepends=True), edit, key, "operator@customer")
    log.write_bytes(b"".join(forged))
    assert isinstance(inside, bool)
    # the host witnesses the forged head: it finished that run and has no witness of it yet
    assert agent(f, "witness", checkpoint=checkpoint_to_witness(forged, run))["written"]
    capsys.readouterr()
    assert main(["--home", str(f.box.root), "audit", "verify"]) == 0, "the re-signed log fools a signature check"
    rc, report, text = verify(f, log, capsys)
    assert rc == ALTERED and text.startswith("ALTERED"), text
    problems = " ".join(report["witness"]["problems"])
    assert (f"host app-01's own record of run {run} differs from the log: window is {inside} on the host, "
            f"{not inside} in the log: ALTERED") in problems
    assert "version_after is 7.0.4.2 on the host, 7.0.4.3 in the log" in problems
    # audit case names the fields too, in English and Chinese, and exits 6
    capsys.readouterr()
    home = ["--home", str(f.box.root), "audit", "case", run, "--witness", str(f.box.inventory)]
    assert main([*home, "--json"]) == ALTERED
    case = json.loads(capsys.readouterr().out)["case"]
    [account] = case["witnesses"]["accounts"]
    assert {d["field"] for d in account["differences"]} == {"window", "version_after"}
    assert case["witnesses"]["status"] == "altered"
    assert main([*home, "--lang", "zh"]) == ALTERED
    zh = " ".join(capsys.readouterr().out.split())
    assert "主机记录：主机 app-01 自己的运行记录与日志不符——之后的版本：主机记为 7.0.4.2，日志为 7.0.4.3（已被篡改）" in zh
    assert "已被篡改" in zh


def test_a_witness_received_long_after_the_hosts_own_finish_is_late(
        fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The host's record as it would be had the controller sent the witness two hours after the host finished the
    run (the witness line's own time moved on; the test cannot wait an hour): shown as late, never INTACT."""
    f = fleet
    run = run_once(f)
    path = f["app-01"].state_dir / "checkpoints.jsonl"
    [w] = [json.loads(x) for x in path.read_text().splitlines()]
    assert w["run"] == run and w["witnessed"] >= w["finished"]
    w["witnessed"] = w["finished"] + 7200
    path.write_text(json.dumps(w) + "\n")
    rc, report, text = verify(f, f.box.root / "audit" / "audit.jsonl", capsys)
    assert rc == NOT_PROVEN and report["witness"]["problems"] == [], text
    assert f"host app-01 received the checkpoint of run {run} 7200 s after it finished the run" in text
    capsys.readouterr()
    assert main(["--home", str(f.box.root), "audit", "case", run, "--witness", str(f.box.inventory),
                 "--lang", "zh"]) == NOT_PROVEN
    zh = " ".join(capsys.readouterr().out.split())
    assert "未经证实" in zh and f"主机 app-01 在自己结束运行 {run} 7200 秒后才收到其检查点" in zh


def test_with_audit_syslog_each_host_sends_the_witnessed_checkpoint_to_its_local_syslog(
        fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`audit.syslog: true` in the policy: the host's agent (over the real sshd) sends the run's checkpoint to the
    syslog socket its own config names (/etc/upgrader/agent.json, root's) -- here a real unix datagram socket the
    test binds -- as an auth.info message a SIEM can keep. A socket nobody listens on is a warning, never a failed
    run, and the host still keeps its witness."""
    import socket

    f = fleet
    f.box.policy.write_text(f.box.policy.read_text().replace(
        "audit:\n", "audit:\n  syslog: true                              # each host tells its syslog too\n"))
    sock_path = tmp_path / "log.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(sock_path))
    server.settimeout(60)
    config = Path("/etc/upgrader/agent.json")  # the host's own config (this machine is the host)
    assert not config.exists(), f"{config} exists before the test: another test left it"
    made_parent = not config.parent.exists()
    config.parent.mkdir(mode=0o755, exist_ok=True)
    config.write_text(json.dumps({"syslog_socket": str(sock_path)}))
    try:
        capsys.readouterr()
        run = run_once(f)
        out = " ".join(capsys.readouterr().out.split())
        assert "sent to syslog by: app-01" in out
        cp = json.loads((f.run_dirs()[-1] / "result.json").read_text())["checkpoint"]
        message = server.recv(65536).decode()
        assert message.startswith("<38>upgrader-agent: witnessed checkpoint ")  # auth (4) * 8 + info (6)
        assert f"run={run} seq={cp['seq']} head={cp['head']} signer=operator@customer key={cp['key']}" in message
        # nobody listening: the run still exits 0 and warns; the host keeps its witness
        server.close()
        sock_path.unlink()
        capsys.readouterr()
        rc, plan = plan_to(f.box, "7.0.4.5")
        assert rc == 0
        assert upgrader(f.box, "run", str(plan), "--approval", str(approve(f.box, plan))) == 1  # rolled back
        out = " ".join(capsys.readouterr().out.split())
        assert "warning: host app-01 could not send the checkpoint to its syslog (audit.syslog: true):" in out
        assert "witnessed by: app-01" in out
        runs = [json.loads(x)["run"] for x in (f["app-01"].state_dir / "checkpoints.jsonl").read_text().splitlines()]
        assert runs == [run, f.run_dirs()[-1].name]
    finally:
        config.unlink()
        if made_parent:
            config.parent.rmdir()
        server.close()
