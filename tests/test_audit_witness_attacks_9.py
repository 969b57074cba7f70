"""Issue 20, the auditor's case file, round 6 (attack20r6), played through the shipped CLI.

- A log given with `--other-log` is verified on its own before its runs may explain any host record: a guide log
  edited without rebuilding its chain, or re-signed by a key the auditor does not allow, makes the pair ALTERED,
  naming that log and why (both read INTACT).
- An honest `upgrader rollback RUN --yes` of a run already rolled back (the demo suggests the command), and a
  second one after that: the host records the end of each such part, so the log reads INTACT (it read ALTERED,
  "never finished it there, but the log says it ended restored").
- A modified agent relabels a run cut off the log as "another log's" on the host: the run's syslog copy names its
  log, outranks the host's records, and shows the cut (it was skipped on the host records' word: NOT PROVEN).
- A real syslog export names the host as the syslog daemon does (its own hostname): the copies are matched to the
  inventory's host when that is unambiguous, so a witness removed from the host is still seen; a witness of the
  log with no copy in the export is named (NOT PROVEN).
- After the controller's clock was stepped back, the log's writer raises a line's time to the line before's: an
  honest plan's and approval's lines are not called "moved" (ALTERED before).
- A killed run's stop and install phases moved 14 minutes later in the log before its recovery (the outage shown
  as seconds): held to the host's one clock offset, as a finished run's are: ALTERED (INTACT before).
- A resume killed after its rollback phase (which stopped the service first), then resumed again: the host's stop
  step is the rollback phase's, not a stop the log lacks: INTACT (ALTERED before).
- `audit verify --plans --approvals` whose files contradict the log says ALTERED on its first line (it said
  INTACT above its MISMATCH lines, exit 6)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import approve, fault_env, kill_processes_under, plan_to, sandbox, upgrader  # noqa: F401

from upgrader.cli import main
from upgrader.cli.commands.demo import Sandbox
from fleet import Fleet
from test_audit_witness_attacks_2 import ALTERED, fleet, log_of, records, run_once, verify  # noqa: F401
from test_audit_witness_attacks_8 import syslog_export  # noqa: F401 - a fixture


def two_logs(box: Sandbox, tmp_path: Path) -> tuple[Path, Path]:
    """The engineer's controller runs an upgrade, then the customer's `guide` (its own HOME, the operator key)
    another one on the same install: (the controller's log, the guide's log)."""
    rc, plan = plan_to(box, "7.0.4.2")
    assert rc == 0
    assert upgrader(box, "run", str(plan), "--approval", str(approve(box, plan))) == 0
    rc, plan = plan_to(box, "7.0.4.3")
    assert rc == 0
    approval = approve(box, plan)
    home = tmp_path / "customer"
    guided = subprocess.run([sys.executable, "-m", "upgrader", "--home", str(home), "guide", "--plan", str(plan),
                             "--approval", str(approval), "--inventory", str(box.inventory), "--policy",
                             str(box.policy), "--catalog", str(box.catalog), "--audit-key",
                             str(box.keys / "operator"), "--yes", "--lang", "en"], capture_output=True, text=True,
                            timeout=300, stdin=subprocess.DEVNULL, env={**os.environ, "LANG": "C.UTF-8"})
    assert guided.returncode == 0, guided.stdout + guided.stderr
    return box.root / "audit" / "audit.jsonl", home / "audit" / "audit.jsonl"


def verify_pair(box: Sandbox, capsys: pytest.CaptureFixture[str], log: Path, *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["--home", str(box.root), "audit", "verify", str(log), "--policy", str(box.policy), "--witness",
               str(box.inventory), *extra])
    return rc, " ".join(capsys.readouterr().out.split())


def test_a_syslog_export_by_the_daemons_hostname_still_checks_the_hosts_records(
        fleet: Fleet, capsys: pytest.CaptureFixture[str], syslog_export: Any) -> None:  # noqa: F811
    """Finding 6 (and 2's missing copy): the export names the host "siem-vm", as rsyslog writes its own hostname.
    The copies are this host's (the only one read): INTACT, both copies checked; with the host's witness of run 2
    removed, ALTERED "rewritten on the host" (the check never ran: INTACT). An export without run 2's copy: NOT
    PROVEN naming it (it read INTACT)."""
    f = fleet
    _, second, export = two_syslog_runs(f, syslog_export)
    export.write_text(export.read_text().replace(" app-01 upgrader-agent:", " siem-vm upgrader-agent:"))
    rc, _, text = verify(f, capsys, "--syslog", str(export))
    assert rc == 0 and text.startswith("INTACT"), text
    assert "2 syslog copy(ies) of the witnesses match the log and the hosts' records" in text, text
    first_only = export.with_name("first-only.log")
    first_only.write_text(export.read_text().splitlines(keepends=True)[0])
    rc, _, text = verify(f, capsys, "--syslog", str(first_only))
    assert rc == 2 and text.startswith("NOT PROVEN"), text
    assert f"host app-01 witnessed run {second} at seq " in text and "but no syslog export given holds its copy" in text
    kept = f["app-01"].state_dir / "checkpoints.jsonl"
    kept.write_bytes(b"".join(x for x in kept.read_bytes().splitlines(keepends=True) if second.encode() not in x))
    rc, _, text = verify(f, capsys, "--syslog", str(export))
    assert rc == ALTERED, text
    assert f"host app-01's syslog copy ({export} line 2) holds its witness of run {second} at seq " in text, text
    assert "but the host's own records no longer do: they were rewritten on the host (ALTERED)" in text, text


def test_an_other_log_is_verified_on_its_own_before_its_runs_explain_anything(
        sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Finding 1: the guide log given with --other-log is edited without rebuilding its chain (the approver
    renamed), or rebuilt and re-signed by the engineer's key, which the policy does not allow for the audit log.
    The pair read INTACT; now ALTERED (exit 6), naming that log and its own verdict, in English and Chinese."""
    from test_audit_witness import rechain
    from upgrader.trust.keys import load_private_key

    box = sandbox
    ours, theirs = two_logs(box, tmp_path)
    rc, text = verify_pair(box, capsys, ours, "--other-log", str(theirs))
    assert rc == 0 and text.startswith("INTACT"), text  # the honest pair

    lines = theirs.read_bytes().splitlines(keepends=True)
    edited = tmp_path / "guide-edited.jsonl"
    n = next(i for i, line in enumerate(lines) if b'"approver"' in line)
    rec = json.loads(lines[n])
    text_line = json.dumps(rec, separators=(",", ":"), ensure_ascii=False)
    lines_e = list(lines)
    lines_e[n] = text_line.replace('"approver":"', '"approver":"ciso@bank-').encode() + b"\n"
    assert lines_e[n] != lines[n]
    edited.write_bytes(b"".join(lines_e))
    rc, text = verify_pair(box, capsys, ours, "--other-log", str(edited))
    assert rc == ALTERED and text.startswith("ALTERED"), text
    assert f"log {edited} given with --other-log is not intact on its own: ALTERED: line {n + 1}" in text, text
    assert "its runs explain none of the hosts' records" in text, text
    rc, zh = verify_pair(box, capsys, ours, "--other-log", str(edited), "--lang", "zh")
    assert rc == ALTERED and f"用 --other-log 给出的日志 {edited} 自身未通过核验" in zh, zh

    resigned = tmp_path / "guide-resigned.jsonl"
    resigned.write_bytes(b"".join(rechain(lines, lambda r: r, load_private_key(str(box.keys / "engineer")),
                                          "engineer@vendor")))
    rc, text = verify_pair(box, capsys, ours, "--other-log", str(resigned))
    assert rc == ALTERED and text.startswith("ALTERED"), text
    assert f"log {resigned} given with --other-log is not intact on its own: ALTERED" in text, text


def test_a_cross_check_that_finds_mismatches_does_not_say_intact_first(
        sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """Finding 9a: `audit verify --plans --approvals` (no --witness) of a log whose plan_created line the engineer
    moved 97 s earlier (chain rebuilt, re-signed with the operator key) printed INTACT as its first line above the
    MISMATCH lines (exit 6); its first line now says ALTERED, in English and Chinese."""
    import datetime as dt

    from test_audit_witness import rechain
    from upgrader.trust.keys import load_private_key

    box = sandbox
    rc, plan = plan_to(box, "7.0.4.2")
    assert rc == 0
    approve(box, plan)
    log = box.root / "audit" / "audit.jsonl"

    def earlier(r: dict[str, Any]) -> dict[str, Any]:
        if r.get("event") == "plan_created":
            r["time"] = (dt.datetime.fromisoformat(str(r["time"])) - dt.timedelta(seconds=97)).isoformat(
                timespec="milliseconds")
        return r

    log.write_bytes(b"".join(rechain(log.read_bytes().splitlines(keepends=True), earlier,
                                     load_private_key(str(box.operator_key)), "operator@customer")))
    for lang, word in (("en", "ALTERED"), ("zh", "已被篡改")):
        capsys.readouterr()
        rc = main(["--home", str(box.root), "audit", "verify", "--plans", str(box.plans), "--approvals",
                   str(box.approvals), "--lang", lang])
        out = capsys.readouterr().out
        assert rc == ALTERED, out
        assert "MISMATCH" in out or "不符" in out, out
        assert out.lstrip().startswith(word), out


def test_rolling_back_a_run_already_rolled_back_reads_intact(
        sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """Finding 3: the run to 7.0.4.5 fails and is rolled back; the operator then runs `rollback RUN --yes` (nothing
    to do), and again. Each exits 0 and is witnessed; `audit verify --witness` reads INTACT after each (exit 6
    before: the host opened the part and only unlocked)."""
    box = sandbox
    rc, plan = plan_to(box, "7.0.4.5")
    assert rc == 0
    assert upgrader(box, "run", str(plan), "--approval", str(approve(box, plan))) == 1  # rolled back
    log = box.root / "audit" / "audit.jsonl"
    run = next(r["run"] for r in records(log) if r.get("event") == "run_started")
    for _ in range(2):
        capsys.readouterr()
        assert main(["--home", str(box.root), "rollback", run, "--yes"]) == 0
        out = " ".join(capsys.readouterr().out.split())
        assert "witnessed by: app-01" in out, out
        rc, text = verify_pair(box, capsys, log)
        assert rc == 0 and text.startswith("INTACT"), text


def two_syslog_runs(f: Fleet, syslog_export: Any) -> tuple[str, str, Path]:
    """audit.syslog on, a run to 7.0.4.2 and one to 7.0.4.5 (rolled back), both witnessed: (first run, second run,
    the syslog export of both witnesses)."""
    f.box.policy.write_text(f.box.policy.read_text().replace("audit:\n", "audit:\n  syslog: true\n"))
    first, _, _ = run_once(f)
    rc, plan = plan_to(f.box, "7.0.4.5")
    assert rc == 0
    assert upgrader(f.box, "run", str(plan), "--approval", str(approve(f.box, plan))) == 1  # rolled back
    # the log's last run (two run ids of one second do not sort by time)
    second = [r["run"] for r in records(log_of(f)) if r.get("event") == "run_started"][-1]
    return first, second, syslog_export(2)


def relabel_run_on_host(f: Fleet, host: str, run: str, log: str) -> None:
    """A modified agent's work (run as the agent's account): every record of ``run`` in every copy of the host's
    ledger now names the log ``log``."""
    h = f[host]
    dirs = {p.parent for p in Path(h.install_dir).parent.rglob("runs-opened.jsonl")} | \
        {p.parent for p in Path(str(h.state_dir)).rglob("runs-opened.jsonl")}
    for d in dirs:
        for name in ("runs-opened.jsonl", "runs.jsonl", "checkpoints.jsonl"):
            path = d / name
            if not path.exists():
                continue
            out = []
            for line in path.read_text().splitlines(keepends=True):
                rec = json.loads(line)
                if str(rec.get("run", "")).split("/")[0] == run:
                    rec["log"] = log
                    line = json.dumps(rec, sort_keys=True) + "\n"
                out.append(line)
            path.write_text("".join(out))


def test_a_run_relabelled_on_the_host_as_another_logs_is_still_this_logs_by_its_syslog_copy(
        fleet: Fleet, capsys: pytest.CaptureFixture[str], syslog_export: Any) -> None:  # noqa: F811
    """Finding 2: two runs witnessed with audit.syslog on; the engineer cuts the second off the log and their
    modified agent relabels its host records as another log's. The syslog copy names this log (log=), so it is
    compared with it whatever the host says: ALTERED, cut off (it read NOT PROVEN, "give that log")."""
    f = fleet
    first, second, export = two_syslog_runs(f, syslog_export)
    assert " log=" in export.read_text(), export.read_text()
    rc, _, text = verify(f, capsys, "--syslog", str(export))
    assert rc == 0 and text.startswith("INTACT"), text
    honest = log_of(f).read_bytes()
    cut = next(r["seq"] for r in records(log_of(f)) if r.get("event") == "checkpoint" and r.get("run") == first)
    log_of(f).write_bytes(b"".join(honest.splitlines(keepends=True)[:cut]))
    relabel_run_on_host(f, "app-01", second, "f" * 64)
    rc, _, text = verify(f, capsys, "--syslog", str(export))
    assert rc == ALTERED and text.startswith("ALTERED"), text
    assert f"app-01 (its syslog copy, {export} line 2) witnessed run {second} at seq " in text, text
    assert f"but the log ends at seq {cut}: cut off" in text, text


def test_plans_made_after_the_controllers_clock_stepped_back_are_not_called_moved(
        sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """Finding 8: one plan made while the controller's clock ran 20 minutes fast (faketime), then a plan and its
    approval at the real time: the log raised their lines' time to the fast one. `audit verify --plans
    --approvals` reads INTACT (exit 6 before: "the log's time was moved")."""
    box = sandbox
    fast = subprocess.run(["faketime", "-f", "+20m", sys.executable, "-m", "upgrader", "--home", str(box.root), "plan",
                           "--inventory", str(box.inventory), "--to", "7.0.4.2", "--catalog", str(box.catalog),
                           "--key", str(box.requester_key), "-o", str(box.plans / "fast.json")],
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert fast.returncode == 0, fast.stdout + fast.stderr
    rc, plan = plan_to(box, "7.0.4.2")
    assert rc == 0
    approve(box, plan)
    times = [r["time"] for r in records(box.root / "audit" / "audit.jsonl")]
    assert times[-1] == times[-2] == times[-3], times  # raised to the fast clock's line
    capsys.readouterr()
    rc = main(["--home", str(box.root), "audit", "verify", "--plans", str(box.plans), "--approvals",
               str(box.approvals)])
    out = " ".join(capsys.readouterr().out.split())
    assert rc == 0 and out.startswith("INTACT"), out


def test_a_killed_runs_phases_moved_later_are_held_to_the_hosts_clock_offset(
        sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """Finding 5: the run to 7.0.4.2 is killed when its install finished (the service down); the engineer moves its
    stop and install phase lines 840 s later (chain rebuilt) and 15 minutes later (faketime: the controller's and the
    local host's clock) rolls it back. The host's steps say stop ran 840 s before the log says: ALTERED (INTACT
    before: an unfinished run was held to CLOCK_SKEW only)."""
    import datetime as dt

    from test_audit_witness import rechain
    from upgrader.trust.keys import load_private_key

    box = sandbox
    rc, plan = plan_to(box, "7.0.4.2")
    assert rc == 0
    approval = approve(box, plan)
    env = {k: v for k, v in os.environ.items() if k != "UPGRADER_FAULT_KILL_AT"}
    killed = subprocess.run([sys.executable, "-m", "upgrader", "--home", str(box.root), "run", str(plan),
                             "--approval", str(approval)], env={**env, **fault_env(kill_at="install:finished")},
                            capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert killed.returncode < 0, killed.stdout + killed.stderr
    run = next(r["run"] for r in records(box.root / "audit" / "audit.jsonl") if r.get("event") == "run_started")

    def later(r: dict[str, Any]) -> dict[str, Any]:
        if r.get("run") == run and r.get("phase") in ("stop", "install"):
            for name in ("time", "clock"):  # a raised line's clock is in `clock`: moved too
                if name in r:
                    r[name] = (dt.datetime.fromisoformat(str(r[name])) + dt.timedelta(seconds=840)).isoformat(
                        timespec="milliseconds")
        return r

    log = box.root / "audit" / "audit.jsonl"
    log.write_bytes(b"".join(rechain(log.read_bytes().splitlines(keepends=True), later,
                                     load_private_key(str(box.operator_key)), "operator@customer")))
    recovered = subprocess.run(["faketime", "-f", "+15m", sys.executable, "-m", "upgrader", "--home", str(box.root),
                                "rollback", run, "--yes"], env=env, capture_output=True, text=True, timeout=300,
                               stdin=subprocess.DEVNULL)
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    rc, text = verify_pair(box, capsys, log)
    assert rc == ALTERED and text.startswith("ALTERED"), text
    assert f"host app-01's own steps of run {run} (opened there at " in text and "stop time is " in text, text


def test_a_resume_killed_after_its_rollback_then_resumed_again_reads_intact(
        sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """Finding 4: the run killed when its install finished; `resume` killed when its rollback phase finished (that
    phase stopped the service first: a stop step on the host, no stop phase in the log); `resume` again (exit 1,
    rolled back). `audit verify --witness` reads INTACT (ALTERED before: "executed stop ... but the log has no stop
    phase")."""
    box = sandbox
    rc, plan = plan_to(box, "7.0.4.2")
    assert rc == 0
    approval = approve(box, plan)
    env = {k: v for k, v in os.environ.items() if k != "UPGRADER_FAULT_KILL_AT"}

    def cli(point: str | None, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "upgrader", "--home", str(box.root), *argv],
                              env={**env, **(fault_env(kill_at=point) if point else {})}, capture_output=True,
                              text=True, timeout=300, stdin=subprocess.DEVNULL)

    killed = cli("install:finished", "run", str(plan), "--approval", str(approval))
    assert killed.returncode < 0, killed.stdout + killed.stderr
    log = box.root / "audit" / "audit.jsonl"
    run = next(r["run"] for r in records(log) if r.get("event") == "run_started")
    again = cli("rollback:finished", "resume", run)
    assert again.returncode < 0, again.stdout + again.stderr
    last = cli(None, "resume", run)
    assert last.returncode == 1, last.stdout + last.stderr
    rc, text = verify_pair(box, capsys, log)
    assert rc == 0 and text.startswith("INTACT"), text


@pytest.fixture(autouse=True)
def _no_leftovers(tmp_path: Path) -> Iterator[None]:
    yield
    kill_processes_under(tmp_path)
