"""Issue 20, attack20r8 MEDIUM #3: the witnesses' syslog copies are evidence only when signed by a trusted audit key.

Any local account on a host can write an ``upgrader-agent:`` line to its syslog. One forged datagram (a made-up run
id, the real log's ``log=`` id, ``host=app-01``) made an HONEST log read ALTERED ("cut off") under ``audit verify
--witness --syslog``. The agent's copy now carries the operator's SSH signature of the checkpoint (``sig=``) and the
time it signs (``signed=``); the verifier checks it with the log's allowed signers. A line not so signed (none, a
garbled one, one by a key the signers do not list) is named and ignored: INTACT, exit 0. A genuine signed copy the log
contradicts is ALTERED even when the host's own (rewritable) witness was made to agree with the rewritten log (it read
NOT PROVEN, "a syslog line not from the agent?"). ``audit case`` and ``audit export`` take ``--syslog`` and
``--other-log`` too, and carry the result into their verdict line. Played through the shipped CLI over the real sshd,
the datagrams through the real syslog socket the host's agent writes to."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import kill_processes_under, sandbox  # noqa: F401

from fleet import Fleet
from test_audit_syslog_copies import daemon_named, send_to_syslog, syslog_on
from test_audit_witness_attacks_2 import ALTERED, fleet, log_of, records, run_once, verify  # noqa: F401
from test_audit_witness_attacks_8 import syslog_export  # noqa: F401 - a fixture
from test_audit_witness_attacks_9 import two_syslog_runs
from upgrader.cli import main
from upgrader.cli.commands.demo import Sandbox

#: a run id nobody ever ran
MADE_UP = "20261205T010101Z-abcdef"


def cli(f: Fleet, *argv: str) -> subprocess.CompletedProcess[str]:
    """The shipped CLI as a child process (what the auditor types)."""
    return subprocess.run([sys.executable, "-m", "upgrader", "--home", str(f.box.root), *argv], capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)


def test_forged_syslog_datagrams_leave_an_honest_log_intact_and_are_named(
        fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str], syslog_export: Any) -> None:  # noqa: F811
    """attack20r8 #3: an honest run, audit.syslog on. An account on the host sends three datagrams to the host's
    syslog socket: a made-up run far past the log's end with the real log id and host=app-01 and no signature (read
    ALTERED "cut off" before); the same with a garbled signature; the same signed with the attacker's own key, the
    checkpoint statement exact. Each is ignored and named by file and line (en, zh); the verdict is INTACT, exit 0;
    the agent's own copy is signed, under 2 KB, and matched."""
    from upgrader.audit.log import NAMESPACE, checkpoint_statement, log_identity
    from upgrader.trust.keys import generate_key, load_private_key
    from upgrader.trust.sshsig import sign

    f = fleet
    syslog_on(f)
    run, _, _ = run_once(f)
    log_id = log_identity(log_of(f))
    seq = len(records(log_of(f))) + 40
    forged = (f"upgrader-agent: witnessed checkpoint run={MADE_UP} seq={seq} head={'5' * 64} signer=operator@customer "
              f"key=SHA256:x time=2026-12-05T01:01:01.000+00:00 log={log_id} host=app-01")
    sock = tmp_path / "log.sock"
    send_to_syslog(sock, forged)
    send_to_syslog(sock, forged + f" sig={'QUJD' * 60} signed=2026-12-05T01:01:01.000+00:00")
    generate_key(tmp_path / "attacker", "operator@customer")
    own = sign(load_private_key(tmp_path / "attacker"), checkpoint_statement(
        seq, "5" * 64, MADE_UP, "operator@customer", "2026-12-05T01:01:01.000+00:00"), NAMESPACE)
    send_to_syslog(sock, forged + " sig=" + "".join(own.strip().splitlines()[1:-1])
                   + " signed=2026-12-05T01:01:01.000+00:00")
    export = daemon_named(syslog_export(4))
    rc, report, text = verify(f, capsys, "--syslog", str(export))
    assert rc == 0 and text.startswith("INTACT"), text
    genuine = export.read_text().splitlines()[0]
    assert f"run={run} " in genuine and " sig=" in genuine and " signed=" in genuine, genuine
    assert len(genuine.encode()) < 2048, len(genuine.encode())
    assert "ALTERED" not in text and "the log ends at seq" not in text, text
    said = "a syslog line not signed by a trusted audit key: ignored (not proven)"
    assert f"{export} line 2: {said}: it carries no signature" in text, text
    assert f"{export} line 3: {said}: its signature does not verify" in text, text
    assert f"{export} line 4: {said}: its key may not sign audit checkpoints as operator@customer" in text, text
    assert f"it says host app-01 witnessed run {MADE_UP} at seq {seq} head 555555555555…" in text, text
    assert "1 syslog copy(ies) of the witnesses match the log and the hosts' records" in text, text
    assert report["witness"]["status"] == "intact" and len(report["witness"]["ignored"]) == 3, report
    assert report["witness"]["syslog_checked"] == 1, report

    zh = cli(f, "audit", "verify", "--witness", str(f.box.inventory), "--syslog", str(export), "--lang", "zh")
    out = " ".join(zh.stdout.split())
    assert zh.returncode == 0 and out.startswith("完好"), zh.stdout + zh.stderr
    for n, why in ((2, "它没有签名"), (3, "它的签名无法通过验证"), (4, "它的密钥不被允许以 operator@customer 的名义签署审计检查点")):
        assert f"{export} 第 {n} 行：一行没有可信审计密钥签名的 syslog：已忽略（未证实）：{why}" in out, out
    assert "syslog line not signed" not in out and "its signature" not in out, out

    # audit case and audit export take --syslog too, and their verdict line carries it
    case = cli(f, "audit", "case", run, "--witness", str(f.box.inventory), "--syslog", str(export), "--lang", "en")
    out = " ".join(case.stdout.split())
    assert case.returncode == 0, case.stdout + case.stderr
    assert ("INTACT: the hosts' 1 witnessed checkpoint(s) all match the log; 1 syslog copy(ies) of the witnesses "
            "match the log and the hosts' records") in out, out
    assert ("3 syslog line(s) not signed by a trusted audit key ignored (audit verify --witness --syslog names "
            "each)") in out, out
    case = cli(f, "audit", "case", run, "--witness", str(f.box.inventory), "--syslog", str(export), "--lang", "zh")
    out = " ".join(case.stdout.split())
    assert case.returncode == 0 and "1 个见证的 syslog 副本与日志和主机记录一致" in out, out
    assert "3 行没有可信审计密钥签名的 syslog 已忽略" in out, out
    report_file = tmp_path / "report.json"
    done = cli(f, "audit", "export", "--format", "json", "-o", str(report_file), "--witness", str(f.box.inventory),
               "--syslog", str(export))
    out = " ".join(done.stdout.split())
    assert done.returncode == 0, done.stdout + done.stderr
    assert ("witnesses: 1 witnessed checkpoint(s) match the log; 1 syslog copy(ies) of the witnesses match the log "
            "and the hosts' records; 3 syslog line(s) not signed by a trusted audit key ignored") in out, out
    assert json.loads(report_file.read_text())["witness"]["headline"] == (
        "INTACT (1 witnessed checkpoint(s) match the log); 3 syslog line(s) not signed by a trusted audit key ignored")
    show = cli(f, "audit", "show", "--witness", str(f.box.inventory), "--syslog", str(export), "--lang", "en")
    out = " ".join(show.stdout.split())
    assert show.returncode == 0, show.stdout + show.stderr
    assert ("witnesses: INTACT (1 witnessed checkpoint(s) match the log); 3 syslog line(s) not signed by a trusted "
            "audit key ignored") in out, out
    assert f"witness: {export} line 4: {said}: its key may not sign" in out, out


def rewrite_witness(f: Fleet, host: str, run: str, head: str) -> None:
    """A modified agent's work: the host's witness of ``run`` in every copy of its ledger names ``head``."""
    h = f[host]
    for path in {*Path(h.install_dir).parent.rglob("checkpoints.jsonl"), *Path(str(h.state_dir)).rglob(
            "checkpoints.jsonl")}:
        out = []
        for line in path.read_text().splitlines(keepends=True):
            rec = json.loads(line)
            if rec.get("run") == run:
                rec["head"] = head
                line = json.dumps(rec, sort_keys=True) + "\n"
            out.append(line)
        path.write_text("".join(out))


def test_a_signed_copy_the_rewritten_log_contradicts_is_altered_though_the_host_agrees(
        fleet: Fleet, capsys: pytest.CaptureFixture[str], syslog_export: Any) -> None:  # noqa: F811
    """Two runs witnessed with audit.syslog on. The engineer, with the operator key, rewrites a line of the second
    run, rebuilds the chain and signs every checkpoint again; their modified agent rewrites the host's witness of
    that run to the new head. The log and the host agree; the agent's signed syslog copy does not, and the engineer
    cannot unsend it: ALTERED, exit 6, naming the copy (it read NOT PROVEN, "a syslog line not from the agent?"),
    in English and Chinese; audit case --syslog reads ALTERED too."""
    from test_audit_witness_clock import resign

    f = fleet
    first, second, export = two_syslog_runs(f, syslog_export)
    rc, _, text = verify(f, capsys, "--syslog", str(export))
    assert rc == 0 and text.startswith("INTACT"), text

    def edit(rec: dict[str, Any]) -> dict[str, Any]:
        if rec.get("run") == second and rec.get("event") == "run_finished":
            rec["data"] = {**(rec.get("data") or {}), "note": "routine change, nothing to report"}
        return rec

    resign(f.box, edit)
    recs = records(log_of(f))
    cp = next(r["checkpoint"] for r in recs if r.get("event") == "checkpoint" and r.get("run") == second)
    rewrite_witness(f, "app-01", second, cp["head"])
    rc, _, text = verify(f, capsys)  # without the export: nothing shows it
    assert rc == 0 and text.startswith("INTACT"), text
    rc, _, text = verify(f, capsys, "--syslog", str(export))
    assert rc == ALTERED and text.startswith("ALTERED"), text
    assert f"app-01 (its syslog copy, {export} line 2) witnessed run {second} at seq {cp['seq']} head " in text, text
    assert f"the log has head {cp['head'][:12]}… at seq {cp['seq']}" in text, text
    assert "not from the agent" not in text and "ignored" not in text, text
    capsys.readouterr()
    assert main(["--home", str(f.box.root), "audit", "verify", "--witness", str(f.box.inventory), "--syslog",
                 str(export), "--lang", "zh"]) == ALTERED
    zh = " ".join(capsys.readouterr().out.split())
    assert f"主机 app-01（syslog 副本，{export} 第 2 行） 在序号 {cp['seq']}" in zh and "日志在序号" in zh, zh
    case = cli(f, "audit", "case", second, "--witness", str(f.box.inventory), "--syslog", str(export))
    assert case.returncode == ALTERED, case.stdout + case.stderr
    assert "ALTERED: 1 witnessed checkpoint(s) of the hosts do not match the log" in " ".join(case.stdout.split())


def test_a_genuine_copy_of_another_log_relabelled_as_this_ones_accuses_nothing(
        sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str], syslog_export: Any) -> None:  # noqa: F811
    """The signature covers the checkpoint, not ``log=``. The engineer's controller and the customer's guide (same
    operator key) each run an upgrade on app-01, audit.syslog on: two signed copies. An account that can read the
    host's syslog sends the guide's genuine line again with log= set to the controller's log. Checked with the
    guide's log given (--other-log), that line is exactly a checkpoint of the guide's chain: it is the guide's, and
    the controller's log reads INTACT (ALTERED "cut off" without the attribution)."""
    from test_audit_witness_attacks_9 import two_logs
    from upgrader.audit.log import log_identity

    box = sandbox
    box.policy.write_text(box.policy.read_text().replace("audit:\n", "audit:\n  syslog: true\n"))
    ours, theirs = two_logs(box, tmp_path)
    export = syslog_export(2)
    lines = export.read_text().splitlines()
    mine, other = log_identity(ours), log_identity(theirs)
    assert f" log={mine} " in lines[0] and f" log={other} " in lines[1], lines
    send_to_syslog(tmp_path / "log.sock", lines[1].split(" app-01 ", 1)[1].replace(f" log={other} ", f" log={mine} "))
    export = syslog_export(3)
    capsys.readouterr()
    rc = main(["--home", str(box.root), "audit", "verify", str(ours), "--policy", str(box.policy), "--witness",
               str(box.inventory), "--other-log", str(theirs), "--syslog", str(export)])
    text = " ".join(capsys.readouterr().out.split())
    assert rc == 0 and text.startswith("INTACT"), text
    assert "cut off" not in text.replace("nothing was cut off", "") and "rewritten" not in text, text


@pytest.fixture(autouse=True)
def _no_leftovers(tmp_path: Path) -> Iterator[None]:
    yield
    kill_processes_under(tmp_path)
