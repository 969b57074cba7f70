"""Issue 20, the auditor's case file: the witnesses' syslog copies and the other logs, against honest fleets and the
attacks of rounds 6 and 7 (attack20r6 #7, attack20r7 #3, #4, #5), played through the shipped CLI over the real sshd.

- Every host of a run witnesses the same checkpoint, so a syslog daemon's hostname cannot tell whose copy a line
  is: the agent's line names the host as the inventory does (``host=``). An honest two-host run reads INTACT with
  both copies matched (it read NOT PROVEN, "no syslog export holds its copy"), and a witness removed from the
  second host is seen (the check never ran). Another machine's lines in the export (an older agent's with no
  ``log=``, or another log's) are not this log's: INTACT (ALTERED, or NOT PROVEN, before).
- With a one-host inventory, another host's copy of the same log is not that host's: no false ALTERED.
- Any account on a host can write an ``upgrader-agent:`` line to its syslog: a forged line (no signature by a
  trusted audit key) is ignored and named, never evidence: the honest log stays INTACT.
- An empty export, or one holding no copy of this log's witnesses, is named (NOT PROVEN), not silently INTACT.
- ``--other-log LOG:SIGNERS``: the customer's guide log, signed with the customer's own audit key, is verified
  under its own allowed signers: INTACT (ALTERED before, under the controller's signers only)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from conftest import approve, kill_processes_under, plan_to, sandbox, upgrader  # noqa: F401

from fleet import Fleet
from test_audit_witness_attacks_2 import ALTERED, fleet, log_of, records, run_once, verify  # noqa: F401
from test_audit_witness_attacks_7 import fleet2  # noqa: F401 - a fixture
from test_audit_witness_attacks_8 import syslog_export  # noqa: F401 - a fixture
from upgrader.cli import main
from upgrader.cli.commands.demo import Sandbox

#: a line another machine of the estate sent with an older agent (no log=, no host=), of a run of another log
OLDER_ELSEWHERE = ("Dec  4 18:05:00 db-07 upgrader-agent: witnessed checkpoint run=20261204T201500Z-0a1b2c seq=3 "
                   f"head={'ab' * 32} signer=ops@other key=SHA256:x time=2026-12-04T20:15:00Z\n")
#: a line another machine sent with a current agent, of its own log
NEWER_ELSEWHERE = ("Dec  4 18:05:01 db-07 upgrader-agent: witnessed checkpoint run=20261204T201501Z-0a1b2d seq=9 "
                   f"head={'cd' * 32} signer=ops@other key=SHA256:x time=2026-12-04T20:15:01Z log={'ef' * 32} "
                   "host=db-07\n")


def syslog_on(f: Fleet) -> None:
    f.box.policy.write_text(f.box.policy.read_text().replace("audit:\n", "audit:\n  syslog: true\n"))


def daemon_named(export: Path, name: str = "vm") -> Path:
    """The export as a real daemon writes it: every host of the fleet runs on this machine, so every line carries
    the machine's own hostname, never an inventory name."""
    export.write_text(export.read_text().replace(" app-01 upgrader-agent:", f" {name} upgrader-agent:"))
    return export


def test_an_honest_two_host_run_reads_intact_with_each_hosts_syslog_copy_matched(
        fleet2: Fleet, capsys: pytest.CaptureFixture[str], syslog_export: Any) -> None:  # noqa: F811
    """attack20r7 #3a/#3c: one run over app-01 and app-02, audit.syslog on; the export names both as "vm". INTACT,
    both copies checked, none called missing (NOT PROVEN before). Lines of another machine appended (an older
    agent's of an unknown run, a current agent's of another log): still INTACT (ALTERED "rewritten at or before line
    3" before). app-02's own witness then removed on the host: ALTERED, its copy names the rewrite (INTACT before:
    the copies were never matched to a host)."""
    f = fleet2
    syslog_on(f)
    run, _, _ = run_once(f)
    export = daemon_named(syslog_export(2))
    text = export.read_text()
    assert " host=app-01" in text and " host=app-02" in text, text
    rc, report, text = verify(f, capsys, "--syslog", str(export))
    assert rc == 0 and text.startswith("INTACT"), text
    assert "2 syslog copy(ies) of the witnesses match the log and the hosts' records" in text, text
    assert report["witness"]["syslog_checked"] == 2, report

    with export.open("a") as out:
        out.write(OLDER_ELSEWHERE + NEWER_ELSEWHERE)
    rc, _, text = verify(f, capsys, "--syslog", str(export))
    assert rc == 0 and text.startswith("INTACT"), text
    assert "db-07" not in text and "another log" not in text, text

    kept = f["app-02"].state_dir / "checkpoints.jsonl"
    kept.write_bytes(b"".join(x for x in kept.read_bytes().splitlines(keepends=True) if run.encode() not in x))
    line = next(n for n, x in enumerate(export.read_text().splitlines(), 1) if "host=app-02" in x)
    rc, _, text = verify(f, capsys, "--syslog", str(export))
    assert rc == ALTERED and text.startswith("ALTERED"), text
    assert f"host app-02's syslog copy ({export} line {line}) holds its witness of run {run} at seq " in text, text
    assert "they were rewritten on the host (ALTERED)" in text, text
    assert "host app-01's syslog copy" not in text, text


def test_another_hosts_copy_is_not_taken_for_the_one_host_read(
        fleet2: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str], syslog_export: Any) -> None:  # noqa: F811
    """attack20r7 #3b: a run over both hosts, then one on app-02 only; the auditor checks app-01 alone (an inventory
    of that host) with the export of all three copies. app-02's copy of the second run is app-02's, not app-01's:
    NOT PROVEN only for app-02 not read (ALTERED before, "rewritten on the host" for app-01). A copy of app-02's
    true line written to syslog as app-01's (any account can): app-01 never took part in that run, so the line is
    named, NOT PROVEN, never "rewritten on the host"."""
    f = fleet2
    syslog_on(f)
    run_once(f)
    rc, plan = plan_to(f.box, "7.0.4.3", "--hosts", "app-02")
    assert rc == 0
    assert upgrader(f.box, "run", str(plan), "--approval", str(approve(f.box, plan))) == 0
    export = daemon_named(syslog_export(3))
    data = yaml.safe_load(f.box.inventory.read_text())
    del data["hosts"]["app-02"]
    data["groups"]["prod"] = ["app-01"]
    one = tmp_path / "app-01-only.yaml"
    one.write_text(yaml.safe_dump(data, sort_keys=False))
    rc, _, text = verify(f, capsys, "--syslog", str(export), inventory=one)
    assert rc == 2 and text.startswith("NOT PROVEN"), text
    assert "ALTERED" not in text and "rewritten" not in text, text
    assert f"host app-02 is named by the log but was not read (not in the inventory {one})" in text, text
    assert "no syslog export given holds its copy" not in text, text

    # an account on a host copies app-02's true line as app-01's: app-01 never took part in that run
    second = next(x for x in export.read_text().splitlines()[2:] if "host=app-02" in x)
    send_to_syslog(tmp_path / "log.sock", second.split(" vm ", 1)[1].replace("host=app-02", "host=app-01"))
    export = daemon_named(syslog_export(4))
    rc, _, text = verify(f, capsys, "--syslog", str(export))
    assert rc == 2 and text.startswith("NOT PROVEN"), text
    assert "ALTERED" not in text and "rewritten on the host" not in text, text
    assert f"a syslog line ({export} line 4) says host app-01 witnessed run " in text, text
    assert "a run the log never took that host's lock for and the host keeps no witness of" in text, text


def send_to_syslog(sock: Path, message: str) -> None:
    """What any account on the host can do: write a line to the host's syslog socket, with any tag."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(f"<38>{message}".encode(), str(sock))


def test_a_forged_syslog_line_is_ignored_and_a_wrong_export_is_not_proven(
        fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str], syslog_export: Any) -> None:  # noqa: F811
    """attack20r6 #7: after an honest run, an account on the host writes a line "upgrader-agent: witnessed
    checkpoint" for that run with another head to the syslog socket. It carries no signature by a trusted audit key
    (attack20r8 #3): ignored and named, the verdict stays the log's and the host's, INTACT (it read ALTERED, then NOT
    PROVEN). attack20r7 #5: an empty export, and one holding only other machines' lines, are each named (NOT
    PROVEN; INTACT before), in English and Chinese."""
    from upgrader.audit.log import log_identity

    f = fleet
    syslog_on(f)
    run, _, _ = run_once(f)
    seq = next(r["seq"] for r in records(log_of(f)) if r.get("event") == "checkpoint" and r.get("run") == run) - 1
    send_to_syslog(tmp_path / "log.sock", f"upgrader-agent: witnessed checkpoint run={run} seq={seq} head={'0' * 64} "
                   f"signer=operator@customer key=x time=x log={log_identity(log_of(f))} host=app-01")
    export = daemon_named(syslog_export(2))
    rc, _, text = verify(f, capsys, "--syslog", str(export))
    assert rc == 0 and text.startswith("INTACT"), text
    assert "ALTERED" not in text and "rewritten" not in text, text
    assert (f"{export} line 2: a syslog line not signed by a trusted audit key: ignored (not proven): it carries no "
            f"signature (a line of an agent before signed copies, or not from the agent); it says host app-01 "
            f"witnessed run {run} at seq {seq} head 000000000000…") in text, text
    assert "1 syslog copy(ies) of the witnesses match the log and the hosts' records" in text, text
    capsys.readouterr()
    assert main(["--home", str(f.box.root), "audit", "verify", "--witness", str(f.box.inventory), "--syslog",
                 str(export), "--lang", "zh"]) == 0
    zh = " ".join(capsys.readouterr().out.split())
    assert f"{export} 第 2 行：一行没有可信审计密钥签名的 syslog：已忽略（未证实）" in zh, zh

    empty = tmp_path / "empty.log"
    empty.write_text("")
    elsewhere = tmp_path / "elsewhere.log"
    elsewhere.write_text(OLDER_ELSEWHERE + NEWER_ELSEWHERE + "Dec  4 18:06:00 vm sshd[12]: Accepted publickey\n")
    for given, said in ((empty, "holds no upgrader-agent witness line at all"),
                        (elsewhere, "holds 2 upgrader-agent witness line(s), none signed by a trusted audit key")):
        rc, _, text = verify(f, capsys, "--syslog", str(given))
        assert rc == 2 and text.startswith("NOT PROVEN"), text
        assert f"the syslog export {given} {said}" in text and "it proves nothing of the log" in text, text
        assert f"host app-01 witnessed run {run} at seq {seq}, but no syslog export given holds its copy" in text
    capsys.readouterr()
    assert main(["--home", str(f.box.root), "audit", "verify", "--witness", str(f.box.inventory), "--syslog",
                 str(empty), "--lang", "zh"]) == 2
    zh = " ".join(capsys.readouterr().out.split())
    assert f"syslog 导出文件 {empty} 中根本没有 upgrader-agent 的见证行" in zh, zh


def test_an_other_log_signed_with_the_customers_own_key_is_verified_under_its_own_signers(
        sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    """attack20r7 #4: the engineer's controller runs an upgrade; the customer's `guide` on the host another one,
    under the customer's policy whose audit signers list only the customer's own key (ops@bank), which signs the
    guide's log. Given as `--other-log LOG` the pair reads ALTERED (the key is not among the controller's signers),
    now saying how to give its own; as `--other-log LOG:SIGNERS` it reads INTACT (no way to say it before)."""
    from upgrader.trust.keys import generate_key, load_private_key, signer_line

    box = sandbox
    generate_key(box.keys / "custkey", "ops@bank")
    key = load_private_key(box.keys / "custkey").public_key()
    # the guide's operator may sign plans (the controller's signers file: its owner adds the line the guide shows),
    # and the customer's own audit signers list that key for the guide's log
    with (box.keys / "allowed_signers").open("a") as out:
        out.write(signer_line("ops@bank", key, "upgrader-plan") + "\n")
    signers = box.keys / "guide_signers"
    signers.write_text(signer_line("ops@bank", key, "upgrader-audit") + "\n")
    rc, plan = plan_to(box, "7.0.4.2")
    assert rc == 0
    assert upgrader(box, "run", str(plan), "--approval", str(approve(box, plan))) == 0
    guide_policy = box.root / "guide-policy.yaml"
    audit = "audit:\n  allowed_signers: keys/allowed_signers"
    assert audit in box.policy.read_text()
    guide_policy.write_text(box.policy.read_text().replace(audit, "audit:\n  allowed_signers: keys/guide_signers"))
    rc, plan = plan_to(box, "7.0.4.3", "--policy", str(guide_policy))  # a plan is run under the policy it names
    assert rc == 0
    approval = approve(box, plan, "--policy", str(guide_policy))
    home = tmp_path / "customer"
    guided = subprocess.run([sys.executable, "-m", "upgrader", "--home", str(home), "guide", "--plan", str(plan),
                             "--approval", str(approval), "--inventory", str(box.inventory), "--policy",
                             str(guide_policy), "--catalog", str(box.catalog), "--audit-key",
                             str(box.keys / "custkey"), "--yes", "--lang", "en"], capture_output=True, text=True,
                            timeout=300, stdin=subprocess.DEVNULL, env={**os.environ, "LANG": "C.UTF-8"})
    assert guided.returncode == 0, guided.stdout + guided.stderr
    ours, theirs = box.root / "audit" / "audit.jsonl", home / "audit" / "audit.jsonl"

    def verify_pair(*extra: str) -> tuple[int, str]:
        capsys.readouterr()
        rc = main(["--home", str(box.root), "audit", "verify", str(ours), "--policy", str(box.policy), "--witness",
                   str(box.inventory), "--earlier-policy", str(guide_policy), *extra])
        return rc, " ".join(capsys.readouterr().out.split())

    rc, text = verify_pair("--other-log", str(theirs))
    assert rc == ALTERED, text
    assert f"log {theirs} given with --other-log is not intact on its own" in text, text
    assert "a log signed under other allowed signers is given with them: --other-log LOG:SIGNERS" in text, text
    rc, text = verify_pair("--other-log", f"{theirs}:{signers}")
    assert rc == 0 and text.startswith("INTACT"), text
    rc, zh = verify_pair("--other-log", str(theirs), "--lang", "zh")
    assert rc == ALTERED and "--other-log 日志:签名人文件" in zh, zh


@pytest.fixture(autouse=True)
def _no_leftovers(tmp_path: Path) -> Iterator[None]:
    yield
    kill_processes_under(tmp_path)
