"""Issue 20, the attacker's second review (attack20-r2): the verdict is INTACT only when the log and what each host
recorded itself agree in both directions, for every host the log names, read where the log says it is. Each attack
is played through the shipped CLI and ordinary agent requests over the real sshd, and the refusal shown.

- Attack 1: a run appended to the log and signed with the operator key; the host will not "finish" a run that does
  not hold its lock, nor record one as committed that it never prepared (nothing recorded); the log's run with no
  opening record on the host is NOT PROVEN; a run the host opened that the log lacks is ALTERED.
- Attack 2: a run that never reached its finish on the host (it needs a person) is cut off the log: the host's
  opening record and its lock name it: ALTERED. A run the log says committed that the host never finished: ALTERED.
- Attack 3: the auditor's inventory naming another install dir for a host of the log is refused (exit 2, both
  named); a host of the log left out is NOT PROVEN; the agent never makes a ledger for witness or witness_read.
- Attack 5: an approval named by two runs, or for a plan it does not approve, is a mismatch (exit 6).
- Attack 4: the service window judged from the host's own clock against the policy's window.
- Attack 6: the requester and the policy rewritten after the run: the host's opening record says otherwise (ALTERED),
  and --plans compares the log's requester with the plan file's signer."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import approve, fault_env, kill_processes_under, now_at, plan_to, upgrader

from fleet import Fleet, build_fleet
from sshd import SSHServer, start_sshd
from test_audit_witness import rechain
from upgrader.audit.log import AuditLog
from upgrader.cli import main
from upgrader.fleet.inventory import load_inventory
from upgrader.fleet.transport import connect
from upgrader.fleet.transport.base import AgentClient, AgentFailure
from upgrader.trust.keys import load_private_key

ALTERED, NOT_PROVEN = 6, 2


def agent(f: Fleet, op: str, *, install_dir: str | None = None, **req: Any) -> dict[str, Any]:
    """The controller's own request to the host's agent over the real sshd (what an engineer's script can send)."""
    h = load_inventory(f.box.inventory).select(None)[0]
    c = AgentClient(connect(h))
    try:
        reply: dict[str, Any] = c.call(op, install_dir=install_dir or h.install_dir, state_dir=h.state_dir, **req)
        return reply
    finally:
        c.close()


def refused(f: Fleet, op: str, **req: Any) -> str:
    with pytest.raises(AgentFailure) as caught:
        agent(f, op, **req)
    return caught.value.message


def verify(f: Fleet, capsys: pytest.CaptureFixture[str], *extra: str,
           inventory: Path | None = None) -> tuple[int, dict[str, Any], str]:
    capsys.readouterr()
    home = ["--home", str(f.box.root), "audit", "verify", "--witness", str(inventory or f.box.inventory), *extra]
    rc = main([*home, "--json"])
    out = capsys.readouterr().out
    report = json.loads(out) if out.strip() else {}
    assert main(home) == rc
    captured = capsys.readouterr()
    return rc, report, " ".join((captured.out + captured.err).split())


def cross(f: Fleet, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["--home", str(f.box.root), "audit", "verify", "--plans", str(f.box.plans), "--approvals",
               str(f.box.approvals)])
    return rc, " ".join(capsys.readouterr().out.split())


def host_files(f: Fleet) -> dict[str, bytes]:
    """Every file of the host's state dir (the ledger, the lock, the runs' directories) with its bytes."""
    state = f["app-01"].state_dir
    return {str(p.relative_to(state)): p.read_bytes() for p in sorted(state.rglob("*")) if p.is_file()
            and p.name != ".op.lock"}


@pytest.fixture
def fleet(tmp_path: Path, sshd: SSHServer) -> Iterator[Fleet]:
    f = build_fleet(tmp_path / "fleet", sshd, 1)
    try:
        yield f
    finally:
        f.stop_all()
        kill_processes_under(tmp_path)


def run_once(f: Fleet, version: str = "7.0.4.2") -> tuple[str, Path, Path]:
    rc, plan = plan_to(f.box, version)
    assert rc == 0
    approval = approve(f.box, plan)
    assert upgrader(f.box, "run", str(plan), "--approval", str(approval)) == 0
    return f.run_dirs()[-1].name, plan, approval


def run_killed_at(f: Fleet, point: str, version: str = "7.0.4.2") -> str:
    """An approved run to ``version`` whose controller dies at ``point`` (the test suite's fault plugin, in a child
    process: the product has no such hook); its run id."""
    rc, plan = plan_to(f.box, version)
    assert rc == 0
    approval = approve(f.box, plan)
    env = {k: v for k, v in os.environ.items() if k != "UPGRADER_FAULT_KILL_AT"}
    env.update(fault_env(kill_at=point))
    killed = subprocess.run([sys.executable, "-m", "upgrader", "--home", str(f.box.root), "run", str(plan),
                             "--approval", str(approval)], env=env, capture_output=True, text=True, timeout=300,
                            stdin=subprocess.DEVNULL)
    assert killed.returncode < 0, killed.stdout + killed.stderr
    return f.run_dirs()[-1].name


def log_of(f: Fleet) -> Path:
    return f.box.root / "audit" / "audit.jsonl"


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def fabricate(f: Fleet, template: str, new: str, edit: Any = None) -> None:
    """The engineer appends a copy of run ``template``'s lines under ``new`` and signs its checkpoint with the
    operator key (as upgrader writes lines)."""
    log = log_of(f)
    mine = [r for r in records(log) if r.get("run") == template and r["event"] != "checkpoint"]
    a = AuditLog(log, actor=mine[0]["actor"])
    now = dt.datetime.now(dt.timezone.utc)
    for i, r in enumerate(mine):
        if edit is not None:
            edit(r)
        a.append(r["event"], run=new, host=r.get("host"), phase=r.get("phase"), outcome=r.get("outcome"),
                 time=(now + dt.timedelta(milliseconds=10 * i)).isoformat(timespec="milliseconds"),
                 data=r.get("data") or None)
    a.checkpoint(run=new, time=(now + dt.timedelta(seconds=1)).isoformat(timespec="milliseconds"),
                 signer=mine[0]["actor"]["principal"], key=load_private_key(str(f.box.operator_key)))


def test_a_fabricated_run_is_refused_by_the_host_and_never_proven_by_it(
        fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    """Attack 1 and 5: a made-up run appended and signed with the operator key (a copy of a real run, its approval
    spent again). The host refuses to "finish" it (it never took the lock) and to witness it, recording nothing; the
    log's signed run with no opening record on a host that keeps the earlier run's is ALTERED (attack20r10 H1b;
    NOT PROVEN before); the approval named by two runs is a mismatch. A run
    that takes the lock but never prepared is refused a committed finish, and the opening it left on the host, absent
    from the log, is ALTERED."""
    f = fleet
    run, plan, approval = run_once(f)
    fake = run[:-6] + "c0ffee"
    fabricate(f, run, fake)
    before = host_files(f)
    assert "lock" not in before
    # the host's agent is asked to record that run's finish, then to witness it: both refused, nothing recorded
    why = refused(f, "finish", run_id=fake, outcome="committed", keep=99, unlock=False, audit={"as": fake})
    assert f"run {fake} does not hold this host's lock (nobody holds it)" in why and "nothing was recorded" in why
    last = records(log_of(f))[-1]
    cp = dict(last["checkpoint"], run=fake, time=last["time"], line=last["seq"])
    cp.pop("signature")
    assert f"this host did not finish run {fake}" in refused(f, "witness", checkpoint=cp)
    assert host_files(f) == before, "a refused finish or witness changes nothing on the host"
    rc, report, text = verify(f, capsys)
    # attack20r10 H1b: the run is signed and the host keeps the opening record of the earlier run: it never ran there
    assert rc == ALTERED and text.startswith("ALTERED"), text
    assert (f"the log says signed run {fake} reached host app-01 (took its lock or ended there), but the host keeps "
            "no opening record of that run, though it keeps those of earlier runs of the log: the run never ran "
            "there (ALTERED)") in text
    assert report["witness"]["problems"]
    capsys.readouterr()
    assert main(["--home", str(f.box.root), "audit", "case", fake, "--witness", str(f.box.inventory)]) == ALTERED
    assert "host record: the log says signed run" in " ".join(capsys.readouterr().out.split())
    assert main(["--home", str(f.box.root), "audit", "case", fake, "--witness", str(f.box.inventory),
                 "--lang", "zh"]) == ALTERED
    assert f"日志称已签名的运行 {fake} 到达了主机 app-01" in " ".join(capsys.readouterr().out.split())
    # attack 5: the approval spent by the real run is named again by the fabricated one
    rc, text = cross(f, capsys)
    assert rc == ALTERED, text
    assert f"was spent by run {run} (line" in text and f"and is named again by run {fake} (line" in text, text
    # a run that takes the lock (an ordinary lock request) but never prepares: no committed finish is recorded
    other = run[:-6] + "0ddba1"
    agent(f, "lock", run_id=other, controller="engineer-laptop", user="mallory", approvals=[],
          audit={"kind": "run", "as": other})
    opened = records(f["app-01"].state_dir / "runs-opened.jsonl")
    assert [r["as"] for r in opened][-1] == other and opened[-1]["user"] == "mallory"
    kept = host_files(f)
    why = refused(f, "finish", run_id=other, outcome="committed", keep=99, unlock=False, audit={"as": other})
    assert f"run {other} has no successful prepare on this host" in why and "nothing was recorded" in why
    assert host_files(f) == kept
    rc, report, text = verify(f, capsys)
    assert rc == ALTERED and text.startswith("ALTERED"), text
    assert (f"host app-01 opened run {other} at " in text and "(its lock taken for mallory@engineer-laptop), but "
            "the log has no line of that run: cut off or removed (ALTERED)" in text)
    assert f"host app-01 is locked by run {other} (mallory@engineer-laptop), a run the log has no line of" in text
    assert agent(f, "unlock", run_id=other)["released"] is True


@pytest.fixture
def own_sshd(tmp_path: Path, sshd: SSHServer) -> Iterator[tuple[Fleet, list[SSHServer]]]:
    """A one-host fleet reached through its own sshd (the first of the list; a test that restarts it appends the new
    one), which a fault can stop without touching the session's."""
    servers = [start_sshd(tmp_path / "sshd-own")]
    f = build_fleet(tmp_path / "fleet", sshd, 1)
    try:
        f.write_inventory(**servers[0].host_entry())
        yield f, servers
    finally:
        for s in servers:
            s.stop()
        f.stop_all()
        kill_processes_under(tmp_path)


def test_a_run_the_host_never_finished_cannot_be_cut_off_nor_called_committed(
        own_sshd: tuple[Fleet, list[SSHServer]], capsys: pytest.CaptureFixture[str]) -> None:
    """Attack 2: the shipped CLI runs an upgrade whose finish never reaches the host (its sshd stopped after the
    observe step: tests/modified_controller.py run_finish_lost), and the engineer re-signs the log to say it
    committed on the host: ALTERED (the host opened it and never finished it); cut off the log with plain head -n
    (no key), the host's opening record and its lock still name it: ALTERED, not INTACT."""
    from modified_controller import run_finish_lost

    f, servers = own_sshd
    run, again = run_finish_lost(f, servers[0])
    servers.append(again)
    keep = next(i for i, r in enumerate(records(log_of(f))) if r.get("run") == run)  # the lines before the run
    state = f["app-01"].state_dir
    assert json.loads((state / "lock").read_text())["run"] == run
    assert run not in (state / "runs.jsonl").read_text() if (state / "runs.jsonl").exists() else True

    def committed(rec: dict[str, Any]) -> dict[str, Any]:
        if rec.get("run") == run and rec["event"] == "host_finished":
            rec["outcome"] = "committed"
        return rec

    key = load_private_key(str(f.box.operator_key))
    log_of(f).write_bytes(b"".join(rechain(log_of(f).read_bytes().splitlines(keepends=True), committed, key,
                                           "operator@customer")))
    rc, report, text = verify(f, capsys)
    assert rc == ALTERED, text
    assert (f"host app-01 opened run {run} at " in text and "by its own clock and never finished it there, but the "
            "log says it ended committed on that host (ALTERED)" in text)
    # the cut: every line from the run's first one on (no key needed)
    lines = log_of(f).read_bytes().splitlines(keepends=True)
    log_of(f).write_bytes(b"".join(lines[:keep]))
    capsys.readouterr()
    assert main(["--home", str(f.box.root), "audit", "verify"]) == 0, "the cut log is a valid chain"
    rc, report, text = verify(f, capsys)
    assert rc == ALTERED and text.startswith("ALTERED"), text
    assert f"host app-01 opened run {run} at " in text and "but the log has no line of that run: cut off or removed" \
        in text
    assert f"host app-01 is locked by run {run} (" in text


def test_a_needs_person_run_cut_off_the_log_is_altered(
        own_sshd: tuple[Fleet, list[SSHServer]], capsys: pytest.CaptureFixture[str]) -> None:
    """Attack 2 as it happens: the run ends needs_person (the host's finish never reached it: its lock is kept),
    exit 5; the honest log is not ALTERED; the same log with that run cut off is."""
    from modified_controller import run_finish_lost

    f, servers = own_sshd
    run, again = run_finish_lost(f, servers[0])
    servers.append(again)
    keep = next(i for i, r in enumerate(records(log_of(f))) if r.get("run") == run)  # the lines before the run
    rc, report, text = verify(f, capsys)
    assert rc in (0, NOT_PROVEN) and "ALTERED" not in text, text
    honest = log_of(f).read_bytes()
    # rewritten instead: the run "left the host unchanged" (its stop and install lines dropped), re-signed
    key = load_private_key(str(f.box.operator_key))
    kept = [line for line in honest.splitlines(keepends=True)
            if not (json.loads(line).get("run") == run and json.loads(line).get("phase") not in (None, "preflight",
                                                                                                  "backup"))]

    def unchanged(rec: dict[str, Any]) -> dict[str, Any]:
        if rec.get("run") == run and rec["event"] == "host_finished":
            rec["outcome"] = "unchanged"
        return rec

    log_of(f).write_bytes(b"".join(rechain(kept, unchanged, key, "operator@customer")))
    rc, report, text = verify(f, capsys)
    assert rc == ALTERED, text
    assert (f"host app-01 executed install for run {run} (opened there at " in text and "never finished), but the "
            "log has no install phase of that run on that host (ALTERED)" in text)
    log_of(f).write_bytes(honest)
    lines = log_of(f).read_bytes().splitlines(keepends=True)
    log_of(f).write_bytes(b"".join(lines[:keep]))
    rc, report, text = verify(f, capsys)
    assert rc == ALTERED, text
    assert f"host app-01 opened run {run} at " in text and "cut off or removed (ALTERED)" in text


def test_the_hosts_are_read_where_the_log_says_and_every_host_it_names(
        fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Attack 3: an inventory naming another install dir for a host of the log is NOT PROVEN (exit 2, both named:
    the host is read at the inventory's dir, where it keeps nothing), nothing created on the host; an inventory that leaves out a host of the log is NOT PROVEN; the agent makes no
    ledger for a witness or a read of a place no run went."""
    f = fleet
    run, _, _ = run_once(f)
    real = str(f["app-01"].install_dir)
    elsewhere = real + "-audit"
    inv = yaml_inventory(f, tmp_path / "inv-a.yaml", install_dir=elsewhere)
    rc, report, text = verify(f, capsys, inventory=inv)
    assert rc == NOT_PROVEN, text
    # since attack20r12 M3 the host is read at the inventory's dir (the customer's word) and the log's line named
    assert f"gives host app-01 install_dir \"{real}\", the inventory {elsewhere}; the host was read at {elsewhere}" \
        in text, text
    assert f"not proven (if the host was moved, give the inventory its install_dir: \"{real}\")" in text, text
    parent = f["app-01"].install_dir.parent
    assert not any(p.name.endswith("-audit") for p in parent.iterdir())
    # the agent itself: no ledger is made by a witness, none read where no run went
    last = records(log_of(f))[-1]
    cp = dict(last["checkpoint"], run=run, time=last["time"], line=last["seq"])
    cp.pop("signature")
    why = refused(f, "witness", install_dir=elsewhere, checkpoint=cp, run_id=run)
    assert "does not exist: no run of upgrader took this host's lock" in why
    assert agent(f, "witness_read", install_dir=elsewhere)["absent"]
    assert not any(p.name.endswith("-audit") for p in parent.iterdir())
    # a host of the log left out of the inventory: named, not proven
    inv = yaml_inventory(f, tmp_path / "inv-b.yaml", install_dir=elsewhere, rename="app-09")
    rc, report, text = verify(f, capsys, inventory=inv)
    assert rc == NOT_PROVEN and text.startswith("NOT PROVEN"), text
    assert "host app-01 is named by the log but was not read (not in the inventory" in text


def yaml_inventory(f: Fleet, out: Path, *, install_dir: str | None = None, rename: str | None = None) -> Path:
    import yaml

    inv = yaml.safe_load(f.box.inventory.read_text())
    if install_dir:
        inv["hosts"]["app-01"]["install_dir"] = install_dir
    if rename:
        inv["hosts"][rename] = inv["hosts"].pop("app-01")
        for g, names in (inv.get("groups") or {}).items():
            inv["groups"][g] = [rename if n == "app-01" else n for n in names]
    out.write_text(yaml.safe_dump(inv, sort_keys=False))
    return out


def test_an_approval_for_another_plan_is_a_mismatch_at_every_use(
        fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    """Attack 5: a run of plan P2 citing the approval of P1 (which P1's run spent): --plans --approvals checks the
    pair at that use too (the approval approves another plan) and names the approval spent twice."""
    f = fleet
    run, plan, approval = run_once(f)
    from upgrader.core.plan import load_plan

    p2_digest = "ab" * 32  # a plan nobody approved

    def to_p2(r: dict[str, Any]) -> None:
        if r["event"] == "run_started":
            r["data"]["plan"] = p2_digest
    fabricate(f, run, run[:-6] + "5e7e7e", to_p2)
    rc, text = cross(f, capsys)
    assert rc == ALTERED, text
    assert f"approves plan {load_plan(plan).digest}, the log names plan {p2_digest}" in text
    assert f"was spent by run {run}" in text


def run_outside_the_window(f: Fleet, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str, str]:
    """The policy refuses runs outside a window that opens six minutes from now: the shipped CLI refuses the run
    (exit 4). The engineer's controller then runs it with its clock twelve minutes ahead (conftest's now_at: the
    in-process CLI's clock, nothing of upgrader patched), inside the window by that clock; the host's own clock is
    outside it. The window's time zone is a fixed offset in which it is about noon now, so the window never crosses
    midnight whatever the hour of the run (a window cannot). Returns the run id and the window's start and end."""
    now = dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0)
    shift = 12 - now.hour
    zone = "UTC" if shift == 0 else f"Etc/GMT{-shift:+d}"  # POSIX signs: Etc/GMT-5 is five hours ahead of UTC
    opens = now + dt.timedelta(hours=shift, minutes=6)  # the window's local time
    start, end, fake = opens, opens + dt.timedelta(minutes=40), now + dt.timedelta(minutes=12)
    policy = f.box.policy.read_text(encoding="utf-8")
    assert "  outside: allow\n" in policy
    f.box.policy.write_text(policy.replace("  outside: allow\n", (
        f"  outside: refuse\n  timezone: {zone}\n  days: [mon, tue, wed, thu, fri, sat, sun]\n"
        f"  start: '{start:%H:%M}'\n  end: '{end:%H:%M}'\n")), encoding="utf-8")
    rc, plan = plan_to(f.box, "7.0.4.2")
    assert rc == 0
    assert upgrader(f.box, "run", str(plan), "--approval", str(approve(f.box, plan))) == 4, "the shipped CLI refuses"
    now_at(monkeypatch, fake.isoformat())  # the controller's clock from here on (its plan, approval and run)
    rc, plan = plan_to(f.box, "7.0.4.2")
    assert rc == 0
    assert upgrader(f.box, "run", str(plan), "--approval", str(approve(f.box, plan))) == 0
    return f.run_dirs()[-1].name, f"{start:%H:%M}", f"{end:%H:%M}"


def test_the_window_is_judged_from_the_hosts_own_clock(
        fleet: Fleet, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Attack 4: the policy refuses runs outside its window (which excludes now, UTC); the engineer's controller,
    its clock set into the window, runs anyway. The log says inside; the host's opening record, by its own clock, is
    outside the policy's window: ALTERED, the time and the window named."""
    f = fleet
    run, start, end = run_outside_the_window(f, monkeypatch)
    rc, report, text = verify(f, capsys)
    assert rc == ALTERED, text
    assert f"host app-01 opened run {run} at " in text
    assert f"is outside the service window" in text and f"({start}-{end}" in text
    assert "the log says the run was inside the window (ALTERED)" in text


def test_the_requester_and_policy_rewritten_after_the_run_are_caught(
        fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    """Attack 6: the witness withheld, the run's requester and policy rewritten, the chain re-signed, then the forged
    head witnessed: the host's opening record says who requested it and under which policy (ALTERED), and --plans
    compares the log's requester with the plan file."""
    from modified_controller import checkpoint_to_witness, run_witness_cut

    f = fleet
    run = run_witness_cut(f)  # the witness held back: its connection cut
    key = load_private_key(str(f.box.operator_key))

    def edit(rec: dict[str, Any]) -> dict[str, Any]:
        if rec.get("run") == run and rec["event"] == "run_started":
            rec["data"]["requester"].update(user="change-board", host="cab-workstation")
            rec["data"]["policy"].update(sha256="0" * 64)
        return rec

    forged = rechain(log_of(f).read_bytes().splitlines(keepends=True), edit, key, "operator@customer")
    log_of(f).write_bytes(b"".join(forged))
    assert agent(f, "witness", checkpoint=checkpoint_to_witness(forged, run))["written"]
    rc, report, text = verify(f, capsys)
    assert rc == ALTERED, text
    assert f"host app-01's opening record of run {run} differs from the log: requester is " in text
    assert "change-board@cab-workstation" in text
    assert f"policy sha256 is " in text and f"{'0' * 64} in the log (ALTERED)" in text
    rc, text = cross(f, capsys)
    assert rc == ALTERED, text
    assert f"run {run} (line" in text and "names requester user change-board, its plan file" in text


def test_an_approval_spent_on_one_host_and_taken_by_another_run_elsewhere_is_altered(
        tmp_path: Path, sshd: SSHServer, capsys: pytest.CaptureFixture[str]) -> None:
    """Attack 5 as played: approval A1 approved plan P1 and run 1 spent it on app-01. Plan P2 (app-02) is never
    approved: the shipped CLI refuses it with A1 (exit 4). The engineer's modified controller (tests/
    modified_controller.py: the agent's own requests over the real sshd, nothing patched) takes app-02's lock for a
    run of P2 with A1, ends it there, and writes that run into the log, signed with the operator key. --witness:
    app-01's own record spent A1, app-02's opening record names it for another run: ALTERED; --plans --approvals:
    A1 approves P1, not P2, and is spent twice: exit 6."""
    from modified_controller import ModifiedController, log_records, write_run
    from upgrader.trust.approval import read_approval

    f = build_fleet(tmp_path / "fleet", sshd, 2)
    try:
        rc, p1 = plan_to(f.box, "7.0.4.2", "--hosts", "app-01")
        assert rc == 0
        a1 = approve(f.box, p1)
        assert upgrader(f.box, "run", str(p1), "--approval", str(a1)) == 0
        first = f.run_dirs()[-1].name
        rc, p2 = plan_to(f.box, "7.0.4.2", "--hosts", "app-02")
        assert rc == 0
        assert upgrader(f.box, "run", str(p2), "--approval", str(a1)) == 4, "the shipped CLI refuses"
        digest = read_approval(a1).digest
        p2_digest = load_plan_digest(p2)
        second = first[:-6] + "5e7e7e"
        opened = next(r for r in log_records(f) if r.get("run") == first and r["event"] == "run_started")
        who = opened["data"]["requester"]
        with ModifiedController(f, "app-02") as c:  # the run of P2 with A1, as the modified controller sends it
            audit = {"kind": "run", "as": second, "plan": p2_digest, "window": True,
                     "policy": opened["data"]["policy"]["sha256"],
                     "requester": {k: who.get(k) for k in ("user", "host", "key")}}
            # the approval's signed statement with it: a host checks each approval's expiry from its own bytes
            assert c.call("lock", run_id=second, controller="engineer-laptop", user="mallory", approvals=[digest],
                          host_trust={"approvals": [{"text": read_approval(a1).text}]}, audit=audit)["locked"]
            assert c.call("finish", run_id=second, outcome="unchanged", keep=3, approvals=[digest],
                          audit=audit)["released"]
            started = dict(opened["data"], plan=p2_digest, hosts=[
                dict(h, host="app-02", install_dir=c.host.install_dir, address=c.host.address)
                for h in opened["data"].get("hosts") or []])
            cp = write_run(f, second, [
                {"event": "run_started", "data": started},
                {"event": "host_finished", "host": "app-02", "outcome": "unchanged", "data": {}},
                {"event": "run_finished", "outcome": "unchanged", "data": {}}])
            assert c.call("witness", run_id=second, checkpoint=cp)["written"]
        capsys.readouterr()
        home = ["--home", str(f.box.root), "audit", "verify", "--witness", str(f.box.inventory)]
        assert main(home) == ALTERED
        text = " ".join(capsys.readouterr().out.split())
        assert (f"approval {digest} was spent by run {first} (host app-01's own record), yet host app-02 opened run "
                f"{second} with it at ") in text and "an approval is used once (ALTERED)" in text
        rc, text = cross(f, capsys)
        assert rc == ALTERED, text
        assert f"was spent by run {first} (line" in text and f"is named again by run {second}" in text
        assert f"approves plan {load_plan_digest(p1)}, the log names plan {p2_digest}" in text
    finally:
        f.stop_all()
        kill_processes_under(tmp_path)


def load_plan_digest(plan: Path) -> str:
    from upgrader.core.plan import load_plan

    return load_plan(plan).digest
