"""Whose gate is it, round five: each weakness the fifth attack on the trust gate found, played through the shipped
CLI with real keys, a real catalog and the real sample middleware; each now ends in a refusal with its exit code and
message, and nothing on the host changed (product files, service pid and version, lock, staged packages, the host's
records).

1 an approval for one machine used on another machine (or another install at the same path): the run's re-decision
  refuses it, and a host with its own trust root compares the plan entry's identity with its own
2 "two approvals required" met by one person with two keys (controller and host trust root)
3 the run's host-evidence.json exchanged for another approved plan's before the canary continuation
4 the host's version rule and a level-3 decrease
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pytest

from conftest import approve, fault_env, plan_to
from trust_support import HostState, add_signer, approval_signed_anyway, cli, host_state, pristine, resigned, \
    root_installs, state_dir, write_root_config
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.exit_codes import ExitCode
from upgrader.core.plan import readable_json
from upgrader.hostagent import hosttrust

TO = "7.0.4.2"
ROOT = Path(hosttrust.TRUST_DIR)
HostRoot = Callable[..., Path]


@pytest.fixture
def host_root() -> Iterator[HostRoot]:
    """write(engineers=[(principal, key)], required=N): the host trust root (the sandbox's vendor and requester
    added by the caller), owned by root; removed afterwards (and /etc/upgrader too when this fixture made it)."""
    assert os.geteuid() == 0, "the host trust root is root's: these tests run as root"
    made_parent = not ROOT.parent.exists()
    assert not ROOT.exists(), f"{ROOT} exists before the test: another test left it"

    def write(box: Sandbox, engineers: Sequence[tuple[str, Path]], required: int | None = None) -> Path:
        ROOT.mkdir(parents=True, exist_ok=True)
        allowed, vendors = ROOT / "allowed_signers", ROOT / "vendor_signers"
        allowed.write_text("", encoding="utf-8")
        for principal, key in engineers:
            add_signer(allowed, principal, key, 'namespaces="upgrader-approval"')
        add_signer(allowed, "requester@customer", box.requester_key, 'namespaces="upgrader-plan"')
        vendors.write_text("", encoding="utf-8")
        add_signer(vendors, "vendor-release", box.vendor_key, 'namespaces="upgrader-catalog"')
        for f in (allowed, vendors):
            f.chmod(0o644)
        if required is not None:
            write_root_config(ROOT, approvals_required=required)
        root_installs(ROOT, box)  # root's word on the installed product (the install dir's files are not)
        ROOT.chmod(0o755)
        return ROOT

    try:
        yield write
    finally:
        shutil.rmtree(ROOT if not made_parent else ROOT.parent, ignore_errors=True)
        assert not ROOT.exists()


def _unchanged(box: Sandbox, before: HostState) -> None:
    """Nothing on the host changed: product files, service pid and version, lock, staged packages, the host's
    records and run records (the controller's home records the refused run: that is not the host)."""
    after = host_state(box)
    assert dataclasses.replace(after, home_runs=()) == dataclasses.replace(before, home_runs=())
    assert after.version == "7.0.4.1"


def _edited_plan(box: Sandbox, plan: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """The plan edited by its requester and signed again with their key; approved anyway by the engineer."""
    data: dict[str, Any] = json.loads(plan.read_text(encoding="utf-8"))
    edit(data)
    data.pop("signature", None)
    plan.write_text(readable_json(resigned(data, box.root)), encoding="utf-8")
    return approval_signed_anyway(box, plan)


def _run_child(box: Sandbox, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_FAULT_")}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "upgrader", "--home", str(box.root), *argv], cwd=box.root, env=full,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)


# ------------------------------------------------------------------ 1: the plan was made for this machine and install


def test_an_approval_for_one_machine_is_refused_on_another_machine(
        sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """The plan records machine A's identity; the address now reaches machine B (simulated: the plan's recorded
    machine id is A's, this box is B). The run refuses (exit 4) naming both machines; nothing on B changed."""
    rc, plan = plan_to(sandbox, TO)
    assert rc == ExitCode.OK
    recorded = json.loads(plan.read_text(encoding="utf-8"))["hosts"][0]["identity"]
    assert recorded["machine"] and isinstance(recorded["install"], list)

    def other_machine(data: dict[str, Any]) -> None:
        data["hosts"][0]["identity"]["machine"] = "machine-id:" + "a" * 32

    approval = _edited_plan(sandbox, plan, other_machine)
    before = pristine(sandbox)
    rc, err = cli(sandbox, capsys, "run", str(plan), "--approval", str(approval), "--yes")
    assert rc == ExitCode.APPROVAL_REFUSED, err
    for words in ("the plan was made for machine machine-id:" + "a" * 32, "this address reaches machine "
                  + str(recorded["machine"]), "make the plan again", "nothing was changed"):
        assert words in err, f"{words!r} not in {err}"
    assert "Traceback" not in err
    _unchanged(sandbox, before)
    # the approval was not spent: nothing ran
    assert not (state_dir(sandbox.install_dir) / "approvals-used.jsonl").exists()


def test_another_install_at_the_same_path_is_refused(sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """After the plan was approved the install at the path is another one (a copy put in its place: a new inode).
    The run refuses (exit 4): the plan was made for another install."""
    rc, plan = plan_to(sandbox, TO)
    approval = approve(sandbox, plan)
    copy = sandbox.install_dir.with_name("app-01.copy")
    shutil.copytree(sandbox.install_dir, copy, symlinks=True)
    os.rename(sandbox.install_dir, sandbox.install_dir.with_name("app-01.old"))
    os.rename(copy, sandbox.install_dir)
    before = host_state(sandbox)
    rc, err = cli(sandbox, capsys, "run", str(plan), "--approval", str(approval), "--yes")
    assert rc == ExitCode.APPROVAL_REFUSED, err
    assert "another install at the same path" in err and "make the plan again" in err, err
    _unchanged(sandbox, before)


def test_the_host_trust_root_compares_the_plan_identity_with_its_own(
        sandbox: Sandbox, host_root: HostRoot) -> None:
    """With a host trust root the agent itself compares the verified plan entry's identity with the install it
    runs on: the install is exchanged for a copy (another inode) right after the controller read the host again;
    preflight is refused by the host (exit 4, 'this plan was approved for the install'), nothing staged or
    stopped."""
    host_root(sandbox, [("engineer@vendor", sandbox.engineer_key)])
    rc, plan = plan_to(sandbox, TO)
    assert rc == ExitCode.OK
    approval = approve(sandbox, plan)
    copy = sandbox.install_dir.with_name("app-01.copy")
    shutil.copytree(sandbox.install_dir, copy, symlinks=True)
    before = pristine(sandbox)
    done = _run_child(sandbox, "run", str(plan), "--approval", str(approval), "--yes",
                      env=fault_env(exchange_at="agent:replied:facts",
                                    exchange=(sandbox.install_dir.parent, "app-01", "app-01.copy", 0)))
    assert done.returncode == ExitCode.APPROVAL_REFUSED, done.stdout + done.stderr
    assert "this plan was approved for the install" in done.stdout + done.stderr, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    after = host_state(sandbox)
    assert after.product == before.product and after.pid == before.pid and after.version == "7.0.4.1"
    assert after.lock is None and after.staged == before.staged
    runs = state_dir(sandbox.install_dir) / "runs"
    assert not [p for p in runs.rglob("*") if p.name in ("staging", "backup", "package.tar.gz")]


# ------------------------------------------------------------------ 2: people, not keys or names


def _second_key(box: Sandbox, tmp_path: Path, principal: str) -> Path:
    """The engineer's second key (a token), listed in the controller's allowed_signers as ``principal``."""
    from trust_support import make_ssh_key

    token = make_ssh_key(tmp_path / "token" / "id_ed25519", "ed25519", comment="engineer-token")
    add_signer(box.keys / "allowed_signers", principal, token, 'namespaces="upgrader-approval"')
    return token


def _approve_as(box: Sandbox, capsys: pytest.CaptureFixture[str], plan: Path, key: Path, as_: str,
                name: str) -> Path:
    out = box.approvals / name
    rc, err = cli(box, capsys, "approve", str(plan), "--key", str(key), "--as", as_, "-o", str(out))
    assert rc == ExitCode.OK, err
    return out


@pytest.mark.parametrize("second_name", ["engineer", "engineer@vendor"])
def test_two_keys_of_one_engineer_are_one_approval_for_the_controller(
        sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str], second_name: str) -> None:
    """approvals.required: 2; the engineer approves with their laptop key as engineer@vendor and with their token
    as ``engineer`` (or again as engineer@vendor): one person. The run refuses (exit 4) naming both names as one
    person; nothing on the host changed."""
    from trust_support import set_policy

    set_policy(sandbox, "required: 1", "required: 2")
    token = _second_key(sandbox, tmp_path, second_name)
    rc, plan = plan_to(sandbox, TO)
    assert rc == ExitCode.OK
    a1 = _approve_as(sandbox, capsys, plan, sandbox.engineer_key, "engineer@vendor", "a1.approval")
    a2 = _approve_as(sandbox, capsys, plan, token, second_name, "a2.approval")
    before = pristine(sandbox)
    rc, err = cli(sandbox, capsys, "run", str(plan), "--approval", str(a1), "--approval", str(a2), "--yes")
    assert rc == ExitCode.APPROVAL_REFUSED, err
    assert "requires approvals from 2 different engineers; got 1" in err, err
    assert ("engineer and engineer@vendor" if second_name == "engineer" else "the 2 keys of engineer@vendor") \
        + " are one person" in err, err
    assert "Traceback" not in err
    _unchanged(sandbox, before)


@pytest.mark.parametrize("second_name", ["engineer", "engineer@vendor"])
def test_two_keys_of_one_engineer_are_one_approval_for_the_host(
        sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str], host_root: HostRoot,
        second_name: str) -> None:
    """host-trust.json asks for 2 approvals; the host lists the engineer's two keys (as engineer@vendor and as
    ``engineer``, or both as engineer@vendor). The controller's policy needs one: it accepts; the host counts one
    person and refuses (exit 3) before anything changed."""
    token = _second_key(sandbox, tmp_path, second_name)
    host_root(sandbox, [("engineer@vendor", sandbox.engineer_key), (second_name, token)], required=2)
    rc, plan = plan_to(sandbox, TO)
    assert rc == ExitCode.OK
    a1 = _approve_as(sandbox, capsys, plan, sandbox.engineer_key, "engineer@vendor", "a1.approval")
    a2 = _approve_as(sandbox, capsys, plan, token, second_name, "a2.approval")
    before = pristine(sandbox)
    rc, err = cli(sandbox, capsys, "run", str(plan), "--approval", str(a1), "--approval", str(a2), "--yes")
    assert rc == ExitCode.POLICY_REFUSED, err
    assert "of 2 different people; got 1" in err and "are one person" in err, err
    assert "Traceback" not in err
    _unchanged(sandbox, before)
    assert not (state_dir(sandbox.install_dir) / "host-trust.jsonl").exists()


# ------------------------------------------------------------------ 3: the run's evidence and the accepted entry


def test_another_plans_evidence_put_in_the_run_before_the_canary_continuation_is_refused(
        fleet: Callable[[int], Any], capsys: pytest.CaptureFixture[str], host_root: HostRoot,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """P1 is approved and never run; P2 runs with a canary (app-01 commits, app-02 waits). The requester replaces
    the run's host-evidence.json with P1's evidence (signed material only), then with P2's plan but another
    approval of it: `resume --yes` refuses both (exit 4) naming the file; app-02 is untouched. With the run's own
    evidence put back, the continuation commits app-02."""
    import io

    from upgrader.trust.approval import read_approval
    from upgrader.trust.catalog import load_catalog
    from upgrader.trust.host_evidence import host_evidence

    f = fleet(2)
    box = f.box
    host_root(box, [("engineer@vendor", box.engineer_key)])
    rc, p1 = plan_to(box, TO)
    assert rc == ExitCode.OK
    p1_approval = approve(box, p1)
    rc, p2 = plan_to(box, TO, "--requester", "requester@customer")  # the same hosts: another plan
    assert rc == ExitCode.OK
    assert json.loads(p2.read_text()) != json.loads(p1.read_text())
    p2_approval = approve(box, p2)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    rc, err = cli(box, capsys, "run", str(p2), "--approval", str(p2_approval), "--canary", "1")
    assert rc == ExitCode.OK, err
    assert f.versions() == {"app-01": TO, "app-02": "7.0.4.1"}
    (run_dir,) = f.run_dirs()
    evidence_file = run_dir / "host-evidence.json"
    own = evidence_file.read_bytes()
    app02 = f["app-02"]
    ledger = state_dir(app02.install_dir)
    before = (json.dumps(sorted(p.name for p in ledger.rglob("*"))) if ledger.exists() else None,
              app02.install_dir.joinpath("run", "server.pid").read_text())

    catalog = load_catalog(box.catalog / "catalog.yaml")
    p1_data = json.loads(p1.read_text(encoding="utf-8"))
    evidence_file.write_text(json.dumps(host_evidence(p1_data, [read_approval(p1_approval)], catalog)))
    rc, err = cli(box, capsys, "resume", run_dir.name, "--yes")
    assert rc == ExitCode.APPROVAL_REFUSED, err
    assert "host-evidence.json carries the evidence of plan" in err and "the file was replaced" in err, err

    other = approval_signed_anyway(box, p2)
    p2_data = json.loads(p2.read_text(encoding="utf-8"))
    evidence_file.write_text(json.dumps(host_evidence(p2_data, [read_approval(other)], catalog)))
    rc, err = cli(box, capsys, "resume", run_dir.name, "--yes")
    assert rc == ExitCode.APPROVAL_REFUSED, err
    assert "carries other approvals than the ones this run accepted" in err, err
    assert "Traceback" not in err
    assert f.versions() == {"app-01": TO, "app-02": "7.0.4.1"}
    assert (json.dumps(sorted(p.name for p in ledger.rglob("*"))) if ledger.exists() else None,
            app02.install_dir.joinpath("run", "server.pid").read_text()) == before

    evidence_file.write_bytes(own)
    rc, err = cli(box, capsys, "resume", run_dir.name, "--yes")
    assert rc == ExitCode.OK, err
    assert f.versions() == {"app-01": TO, "app-02": TO}


def _agent(req: dict[str, Any]) -> dict[str, Any]:
    """One request to the real host agent (its own process, as the controller starts it on a local host)."""
    done = subprocess.run([sys.executable, "-m", "upgrader.hostagent"], input=json.dumps(req), capture_output=True,
                          text=True, timeout=120)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_host_binds_every_later_step_to_the_plan_entry_it_accepted(
        sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str], host_root: HostRoot) -> None:
    """The host accepted an approved plan at prepare; later requests of that run carrying another plan's steps (a
    hook nobody approved, another stop command, a command probe, another target) are refused by the agent before
    they act (kind host_trust); the service keeps running, the hook's file is never written. The approvals the
    host verified itself are the ones it records as used."""
    import hashlib

    host_root(sandbox, [("engineer@vendor", sandbox.engineer_key)])
    rc, plan = plan_to(sandbox, TO)
    approval = approve(sandbox, plan)
    rc, err = cli(sandbox, capsys, "run", str(plan), "--approval", str(approval), "--yes")
    assert rc == ExitCode.OK, err
    (run_dir,) = [p for p in (sandbox.root / "runs").iterdir() if p.is_dir()]
    state = state_dir(sandbox.install_dir)
    kept = json.loads((state / "runs" / run_dir.name / "host-trust-entry.json").read_text())
    spec = kept["entry"]["playbook"]["spec"]
    text = approval.read_text(encoding="utf-8").split("-----BEGIN SSH SIGNATURE-----")[0]
    verified = hashlib.sha256(text.encode()).hexdigest()
    assert kept["approvals"] == [verified]
    used = [json.loads(x) for x in (state / "approvals-used.jsonl").read_text().splitlines()]
    assert [u["approval"] for u in used] == [verified]
    (record,) = [json.loads(x) for x in (state / "host-trust.jsonl").read_text().splitlines()]
    assert record["approvals"] == [verified] and record["host"] == "app-01"
    assert record["identity"] == json.loads(plan.read_text())["hosts"][0]["identity"]

    pwned = tmp_path / "PWNED"
    base = {"install_dir": str(sandbox.install_dir), "state_dir": None, "run_id": run_dir.name}
    env = {"UPGRADER_RUN": run_dir.name, "UPGRADER_HOST": "app-01", "UPGRADER_CURRENT_VERSION": "7.0.4.1",
           "UPGRADER_TARGET_VERSION": TO}
    pid = (sandbox.install_dir / "run" / "server.pid").read_text()
    for req, field in (({"op": "hook", "command": f"touch {pwned}", "hook_timeout": 30, "env": env}, "hook"),
                       ({"op": "stop", "stop": {**spec["stop"], "command": f"touch {pwned}"}, "env": env}, "stop"),
                       ({"op": "observe", "observe": {**spec["observe"], "probes": [
                           {"type": "command", "name": "x", "command": f"touch {pwned}"}]}, "log_offsets": {}},
                        "probes"),
                       ({"op": "start", "start": {**spec["start"], "command": f"touch {pwned}"}, "env": env,
                         "pid_file": spec["stop"].get("pid_file"), "ports": spec["stop"].get("ports", [])}, "start"),
                       ({"op": "stop", "stop": spec["stop"], "env": {**env, "UPGRADER_TARGET_VERSION": "7.0.4.9"}},
                        "env")):
        reply = _agent({**base, **req})
        assert reply["ok"] is False and reply["kind"] == "host_trust", reply
        assert "is not what the plan this host accepted says" in reply["error"] and field in reply["error"], reply
        assert not pwned.exists()
    assert (sandbox.install_dir / "run" / "server.pid").read_text() == pid
    assert host_state(sandbox).version == TO


# ------------------------------------------------------------------ 4: the host's version rule


@pytest.mark.parametrize(("current", "target", "words"), [
    ("7.0.4.2", "7.0.3.A", "level 3 goes back"),
    ("7.0.4.2", "7.0.3.9", "level 3 goes back"),
    ("7.0.4.2", "7.0.4.1", "level 4 goes back"),
    ("7.0.C.6", "7.0.C.5", "level 4 goes back"),
    ("7.0.C.6", "7.0.E.1", "changes the product line"),
    ("7.0.4.1", "7.0.C.1", "changes the product line"),
    ("7.0.4.1", "7.1.0.0", "changes level 2"),
    ("7.0.4.1", "8.0.4.1", "changes level 1"),
    ("7.0.4.1", "7.0.5.X", "cannot order level 4"),
])
def test_the_hosts_version_rule_refuses_any_decrease_and_any_change_of_levels_1_and_2(
        current: str, target: str, words: str) -> None:
    """The host's stdlib twin of the free-levels rule (hostagent/hosttrust.py, run by the agent on the host)."""
    why = hosttrust.free_levels_only(current, target)
    assert why is not None and words in why, why


@pytest.mark.parametrize(("current", "target"), [("7.0.4.1", "7.0.4.2"), ("7.0.4.9", "7.0.5.1"), ("7.0.4.1", "7.0.5"),
                                                 ("V7.0.4.1_M1", "7.0.4.2"), ("7.0.C.6", "7.0.C.7")])
def test_the_hosts_version_rule_accepts_maintenance_upgrades(current: str, target: str) -> None:
    assert hosttrust.free_levels_only(current, target) is None
