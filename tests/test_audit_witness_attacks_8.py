"""Issue 20, the auditor's case file, round 5 (attack20r5 findings 1-5), played through the shipped CLI over the
real sshd.

- A run killed after it installed (the controller dies at its observe phase), then closed with the README's
  recovery (`upgrader rollback RUN`): the host keeps the killed run's steps under the run's own label and the
  rollback's under the rollback's, so the honest log reads INTACT.
- The same killed run rewritten in the log's unsigned tail into "stop failed, install failed, unchanged" before
  its recovery: the host's steps of the unfinished run contradict it: ALTERED, naming the run, the host and the
  step, in English and Chinese.
- A controller running modified upgrader ships its own agent code, which rewrites the host's records whatever its
  trust root: the verdict never says the records are out of its reach; the witnesses' syslog copies, exported off
  the host (`audit verify --syslog EXPORT`), are, and show the run cut off and the host's records rewritten.
- Two true logs of one host (the engineer's controller, the customer's guide on the host): each host record names
  the log of its run; each log is compared with its own runs' records only, the other's are "another log's runs"
  (not proven until that log is given with --other-log), never "rewritten" or "cut off".
- What only the log says: a plan's or approval's creation time moved in the log is checked against the time
  signed in its file (--plans, --approvals); what nothing checks is marked "(the controller's word)" in the case."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import approve, kill_processes_under, plan_to, sandbox, upgrader  # noqa: F401

from fleet import Fleet
from upgrader.cli.commands.demo import Sandbox
from test_audit_witness_attacks_2 import ALTERED, fleet, log_of, records, run_killed_at, run_once, verify  # noqa: F401
from test_host_trust import host_root  # noqa: F401 - a fixture
from upgrader.cli import main


def killed_after_install(f: Fleet) -> str:
    """A run to 7.0.4.2 whose controller dies when its observe phase starts (the host stopped, installed and
    started); its run id."""
    return run_killed_at(f, "observe:started")


@pytest.mark.parametrize("recovery", ["rollback", "resume"])
def test_an_honest_recovery_of_a_run_killed_after_its_install_reads_intact(
        fleet: Fleet, capsys: pytest.CaptureFixture[str], recovery: str) -> None:  # noqa: F811
    """Finding 2: the README's recovery of a run killed after its install (`upgrader rollback RUN --yes`, or
    `upgrader resume RUN`) is no tampering: `audit verify --witness` reads INTACT (the rollback read ALTERED:
    "install done on the host, not done in the log", its record held the killed run's steps), and `audit case` of
    the killed run and of its recovery too."""
    f = fleet
    run = killed_after_install(f)
    # a resume of it rolls back (the sample playbook's answer to an interrupted run): exit 1
    assert upgrader(f.box, recovery, run, *(["--yes"] if recovery == "rollback" else [])) == (
        0 if recovery == "rollback" else 1)
    rc, _, text = verify(f, capsys)
    assert rc == 0 and text.startswith("INTACT"), text
    label = next(r["run"] for r in records(log_of(f)) if r.get("event") in ("rollback_requested", "resume_requested"))
    for which in (run, label):
        capsys.readouterr()
        rc = main(["--home", str(f.box.root), "audit", "case", which, "--witness", str(f.box.inventory)])
        out = capsys.readouterr().out
        assert rc == 0 and "ALTERED" not in out, out


def forge_unchanged(run: str, host: str) -> Any:
    """The engineer's rewrite of a killed run's lines (the log's unsigned tail): its stop and install failed, and
    the host ended unchanged where its observe phase started."""
    def edit(r: dict[str, Any]) -> dict[str, Any]:
        if r.get("run") != run or r.get("host") != host:
            return r
        if r.get("event") == "phase_finished" and r.get("phase") in ("stop", "install"):
            return {**r, "outcome": "failed"}
        if r.get("event") == "phase_started" and r.get("phase") == "observe":
            return {**r, "event": "host_finished", "phase": None, "outcome": "unchanged",
                    "data": {"error": "stop: the stop command failed; nothing was changed"}}
        return r
    return edit


@pytest.mark.parametrize("recovery", ["resume", "rollback"])
def test_a_killed_run_rewritten_into_nothing_changed_is_altered(
        fleet: Fleet, capsys: pytest.CaptureFixture[str], recovery: str) -> None:  # noqa: F811
    """Finding 1: the run killed after its install, its lines rewritten (unsigned tail, chain rebuilt) into "stop
    failed, install failed, unchanged", then recovered with `upgrader resume` or `rollback`: the host's own steps
    of that run (stop and install done) contradict the log: ALTERED (exit 6), naming the run, the host and the
    step, in English and Chinese."""
    from test_audit_witness import rechain
    from upgrader.trust.keys import load_private_key

    f = fleet
    run = killed_after_install(f)
    forged = rechain(log_of(f).read_bytes().splitlines(keepends=True), forge_unchanged(run, "app-01"),
                     load_private_key(str(f.box.operator_key)), "operator@customer")
    log_of(f).write_bytes(b"".join(forged))
    assert upgrader(f.box, recovery, run, *(["--yes"] if recovery == "rollback" else [])) in (0, 1)
    rc, _, text = verify(f, capsys)
    assert rc == ALTERED and text.startswith("ALTERED"), text
    assert f"host app-01 executed install for run {run}" in text, text
    assert "the log says it failed there" in text or "ended unchanged there" in text, text
    capsys.readouterr()
    assert main(["--home", str(f.box.root), "audit", "verify", "--witness", str(f.box.inventory), "--lang",
                 "zh"]) == ALTERED
    zh = " ".join(capsys.readouterr().out.split())
    assert f"主机 app-01 为运行 {run} 执行了 install" in zh, zh


@pytest.fixture
def syslog_export(tmp_path: Path) -> Iterator[Any]:
    """The host's syslog socket (/etc/upgrader/agent.json, root's: a unix datagram socket the test binds); yields a
    function that writes what it received to an export file as a syslog daemon (and a SIEM) keeps it, with the
    time and the host's name before each message, and returns that file."""
    import socket

    sock_path = tmp_path / "log.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(sock_path))
    server.settimeout(60)
    config = Path("/etc/upgrader/agent.json")
    assert not config.exists(), f"{config} exists before the test: another test left it"
    config.parent.mkdir(mode=0o755, exist_ok=True)
    config.write_text(json.dumps({"syslog_socket": str(sock_path)}))
    got: list[str] = []

    def export(count: int) -> Path:
        while len(got) < count:
            got.append(server.recv(65536).decode().split(">", 1)[1])
        out = tmp_path / "siem-export.log"
        out.write_text("".join(f"Dec  4 18:00:{i:02d} app-01 {m}\n" for i, m in enumerate(got)))
        return out

    try:
        yield export
    finally:
        config.unlink()
        server.close()


def test_a_modified_controllers_agent_rewrites_the_hosts_records_and_only_a_syslog_copy_shows_it(
        fleet: Fleet, capsys: pytest.CaptureFixture[str], host_root: Any, syslog_export: Any) -> None:  # noqa: F811
    """Finding 3: two runs witnessed (audit.syslog: true), the host under its own trust root. The engineer cuts the
    second run off the log (the unsigned tail after the first run's checkpoint) and their modified upgrader's agent
    removes it from every copy of the host's ledger. `audit verify --witness` cannot see it (INTACT) and says so
    plainly: the records are written by the agent the controller sends, the trust root binds only the shipped
    agent, a controller running modified upgrader can rewrite them (it said "protected by host trust root"). With
    the witnesses' syslog export (`--syslog`): ALTERED, the copy names the cut, in English and Chinese. The honest
    log with the host's witness line removed: ALTERED, the copy names the rewrite on the host."""
    from modified_controller import drop_run_on_host
    from test_audit_witness_attacks_9 import two_syslog_runs
    from test_host_trust import _operators_root

    f = fleet
    first, second, export = two_syslog_runs(f, syslog_export)
    _operators_root(f.box, host_root)
    honest = log_of(f).read_bytes()
    rc, report, text = verify(f, capsys, "--syslog", str(export))
    assert rc == 0 and text.startswith("INTACT"), text
    assert "2 syslog copy(ies) of the witnesses match the log and the hosts' records" in text, text
    # the host's own witness of the second run removed (a modified agent's work): the syslog copy still holds it
    kept = f["app-01"].state_dir / "checkpoints.jsonl"
    kept.write_bytes(b"".join(x for x in kept.read_bytes().splitlines(keepends=True) if second.encode() not in x))
    rc, _, text = verify(f, capsys, "--syslog", str(export))
    assert rc == ALTERED, text
    assert (f"host app-01's syslog copy ({export} line 2) holds its witness of run {second} at seq ") in text, text
    assert "but the host's own records no longer do: they were rewritten on the host (ALTERED)" in text, text
    # the attack: the second run cut off the log, and removed from the host's records by the modified agent
    recs = records(log_of(f))
    cut = next(r["seq"] for r in recs if r.get("event") == "checkpoint" and r.get("run") == first)
    log_of(f).write_bytes(b"".join(honest.splitlines(keepends=True)[:cut]))
    drop_run_on_host(f, "app-01", second)
    rc, report, text = verify(f, capsys)
    assert rc == 0, text  # nothing the host keeps shows it: the limit, said plainly
    assert "protected by host trust root" not in text, text
    assert ("host app-01's records are written by its agent, which is the code the controller uploads: its trust "
            "root binds only the agent upgrader ships, so a controller running modified upgrader (or a hook it runs "
            "as root there) can rewrite them; each witness also went to the host's syslog: a copy forwarded off the "
            "host (a SIEM) is out of the controller's reach, compare it with --syslog EXPORT") in text, text
    assert report["witness"]["hosts"][0]["limit"].startswith("host app-01's records are written by its agent"), report
    rc, _, text = verify(f, capsys, "--syslog", str(export))
    assert rc == ALTERED and text.startswith("ALTERED"), text
    assert (f"app-01 (its syslog copy, {export} line 2) witnessed run {second} at seq ") in text, text
    assert f"but the log ends at seq {cut}: cut off" in text, text
    capsys.readouterr()
    assert main(["--home", str(f.box.root), "audit", "verify", "--witness", str(f.box.inventory), "--syslog",
                 str(export), "--lang", "zh"]) == ALTERED
    zh = " ".join(capsys.readouterr().out.split())
    assert f"主机 app-01（syslog 副本，{export} 第 2 行） 在序号" in zh and "被截断" in zh, zh
    assert "主机信任根只约束 upgrader 发布的代理" in zh, zh


def test_two_true_logs_of_one_host_are_each_compared_with_their_own_runs(
        sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Finding 4: the engineer's controller runs an upgrade, then the customer's `guide` on the host (its own HOME,
    the same operator key) another one on the same install. Neither log reads ALTERED (both did: "the log was
    rewritten", "cut off"): each names the other's run as another log's (NOT PROVEN, exit 2, "give that log with
    --other-log"), and with the other log given both read INTACT."""
    from test_audit_witness_attacks_9 import two_logs

    box = sandbox
    ours, theirs = two_logs(box, tmp_path)
    first = next(r["run"] for r in records(ours) if r.get("event") == "run_started")
    second = next(r["run"] for r in records(theirs) if r.get("event") == "run_started")

    def verify_log(log: Path, *extra: str) -> tuple[int, str]:
        capsys.readouterr()
        rc = main(["--home", str(box.root), "audit", "verify", str(log), "--policy", str(box.policy), "--witness",
                   str(box.inventory), *extra])
        return rc, " ".join(capsys.readouterr().out.split())

    for log, other, run in ((ours, theirs, second), (theirs, ours, first)):
        rc, text = verify_log(log)
        assert rc == 2 and text.startswith("NOT PROVEN"), text
        assert "ALTERED" not in text and "was rewritten" not in text and ": cut off" not in text, text
        assert "host app-01 keeps the records of 1 run(s) of another log (identity " in text, text
        assert f"{run}): not compared with this log; give that log with --other-log" in text, text
        rc, text = verify_log(log, "--other-log", str(other))
        assert rc == 0 and text.startswith("INTACT"), text
    rc, zh = verify_log(ours, "--lang", "zh")
    assert rc == 2 and "主机 app-01 保存着另一份日志（标识" in zh, zh
    assert "请用 --other-log 给出那份日志以核对它们（未证实）" in zh, zh


def test_a_plans_and_an_approvals_creation_time_moved_in_the_log_is_altered(
        fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    """Finding 5: the engineer moves the log's plan_created and approval_created lines 97 s earlier than their
    files say they were made (the chain rebuilt, re-signed with the operator key). `audit verify --plans
    --approvals` is ALTERED (exit 6), naming each file and its signed time (it read INTACT); `audit case RUN
    --approvals` too. Without the files, the case marks those times "(the controller's word)", and the rollback
    cause too, in English and Chinese."""
    import datetime as dt

    from test_audit_witness import rechain
    from upgrader.trust.keys import load_private_key

    f = fleet
    rc, plan = plan_to(f.box, "7.0.4.5")
    assert rc == 0
    approval = approve(f.box, plan)
    assert upgrader(f.box, "run", str(plan), "--approval", str(approval)) == 1  # rolled back
    run = f.run_dirs()[-1].name

    def earlier(r: dict[str, Any]) -> dict[str, Any]:
        if r.get("event") in ("plan_created", "approval_created"):
            moved = dt.datetime.fromisoformat(str(r["time"])) - dt.timedelta(seconds=97)
            r["time"] = moved.isoformat(timespec="milliseconds")
        return r

    rc, text = verify_files(f, capsys)
    assert rc == 0, text
    forged = rechain(log_of(f).read_bytes().splitlines(keepends=True), earlier,
                     load_private_key(str(f.box.operator_key)), "operator@customer")
    log_of(f).write_bytes(b"".join(forged))
    rc, text = verify_files(f, capsys)
    assert rc == ALTERED, text
    assert f"the log says the plan was made at " in text and f"its file {plan} says created " in text, text
    assert f"its file {approval} says created " in text and "the log's time was moved" in text, text
    capsys.readouterr()
    rc = main(["--home", str(f.box.root), "audit", "case", run, "--approvals", str(f.box.approvals)])
    out = " ".join(capsys.readouterr().out.split())
    assert rc == ALTERED and "the log's time was moved" in out, out
    for lang, words in (("en", ("(the controller's word)", "rolled back because:")),
                        ("zh", ("（控制端的一面之词）", "回滚原因："))):
        capsys.readouterr()
        assert main(["--home", str(f.box.root), "audit", "case", run, "--lang", lang]) == 0
        out = capsys.readouterr().out
        marked = [line for line in out.splitlines() if words[0] in line]
        # the plan's and the approval's creation, the catalog, the service window, the operator's account (issue
        # 20, attack20r9) and the rollback's cause
        assert len(marked) == 6 and any(words[1] in line for line in marked), out


def verify_files(f: Fleet, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["--home", str(f.box.root), "audit", "verify", "--plans", str(f.box.plans), "--approvals",
               str(f.box.approvals)])
    return rc, " ".join(capsys.readouterr().out.split())


@pytest.fixture(autouse=True)
def _no_leftovers(tmp_path: Path) -> Iterator[None]:
    yield
    kill_processes_under(tmp_path)
