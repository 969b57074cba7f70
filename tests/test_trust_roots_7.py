"""Whose gate is it, round seven: the leftovers of the sixth review, played through the shipped CLI (or, for the
host agent, as a modified controller would speak to it) with real keys, a real catalog and the real sample
middleware; each ends in a refusal with its exit code and message, and nothing on the host changed.

1 an engineer signs a plan with a throwaway key, names that key as the operator who runs it and approves the plan
  with her own key: an operator key that no line of the policy's allowed_signers names is refused as a requester.
2 a modified controller asks a host with its own trust root for its lock (and for stop, start, hook, prepare) for a
  run the host accepted nothing for (and finish, which would write the host's ledger): refused before anything is
  taken, no host lock, no runs/RUN/.op.lock, the ledger unchanged.
3 a catalog signed by the vendor the host trusts that lists the plan's package under another version: the host
  finds no entry for the plan's product and target with that sha256 and refuses (host_trust: exit 4).
4 plan-time probe proof on a host with a trust root: a command probe of the playbook (anyone's, before any
  approval) is not run at plan; it runs at the preflight of the run the host accepted, under its lock.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import approve, plan_to
from test_trust_roots_6 import _operator_runs_next, host_root  # noqa: F401 - host_root is a fixture
from trust_support import approval_signed_anyway, host_state, pristine, state_dir
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.exit_codes import ExitCode
from upgrader.fleet.transport import AgentClient
from upgrader.fleet.transport.base import AgentFailure
from upgrader.fleet.transport.local import LocalTransport

TO = "7.0.4.2"


def _cli(home: Path, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The shipped CLI in its own process: ``upgrader --home HOME ...``."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_")}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "upgrader", "--home", str(home), *argv], cwd=home, env=full,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)


# ------------------------------------------------------------------ 1: a throwaway key as the operator who runs it


def test_a_throwaway_operator_key_cannot_stand_in_as_the_plans_requester(sandbox: Sandbox, tmp_path: Path) -> None:
    """The engineer signs the plan with a throwaway key, names it as the operator's key (UPGRADER_AUDIT_KEY or
    --audit-key), approves with her own listed engineer key and runs: approve and run refuse, exit 4, naming the
    unlisted key's fingerprint and the allowed_signers file to add it to; nothing on the host changed."""
    before = pristine(sandbox)
    throwaway = tmp_path / "throwaway"
    made = _cli(sandbox.root, "keys", "generate", str(throwaway))
    assert made.returncode == ExitCode.OK, made.stderr
    from upgrader.trust.keys import load_private_key
    from upgrader.trust.sshsig import fingerprint, public_key_blob
    fp = fingerprint(public_key_blob(load_private_key(throwaway).public_key()))
    signers = str(sandbox.keys / "allowed_signers")
    plan = tmp_path / "p.json"
    done = _cli(sandbox.root, "plan", "--inventory", str(sandbox.inventory), "--to", TO, "--catalog",
                str(sandbox.catalog), "--key", str(throwaway), "-o", str(plan))
    assert done.returncode == ExitCode.OK, done.stderr
    env = {"UPGRADER_AUDIT_KEY": str(throwaway)}
    out = tmp_path / "p.approval"
    approved = _cli(sandbox.root, "approve", str(plan), "--key", str(sandbox.engineer_key), "-o", str(out), env=env)
    assert approved.returncode == ExitCode.APPROVAL_REFUSED, approved.stdout + approved.stderr
    assert f"the operator key {fp}" in approved.stderr and signers in approved.stderr, approved.stderr
    assert not out.exists()
    out = approval_signed_anyway(sandbox, plan)  # she signs the approval with her own tooling
    for how, extra, env_run in (("UPGRADER_AUDIT_KEY", (), env), ("--audit-key", ("--audit-key", str(throwaway)), {})):
        run = _cli(sandbox.root, "run", str(plan), "--approval", str(out), "--yes", *extra, env=env_run)
        assert run.returncode == ExitCode.APPROVAL_REFUSED, f"{how}: {run.stdout}{run.stderr}"
        for words in (f"the operator key {fp}", f"no line of {signers} names it",
                      "an approval could be its requester's own", f"add the operator's key to {signers}"):
            assert words in run.stderr, f"{how}: {words!r} not in {run.stderr}"
        assert "Traceback" not in run.stderr
    after = host_state(sandbox)
    assert (after.pid, after.version, after.product, after.lock, after.staged, after.host_records,
            after.host_runs) == (before.pid, "7.0.4.1", before.product, None, None, before.host_records, None)


# ------------------------------------------------------------------ 2: the lock of a run the host accepted nothing for


def test_a_modified_controller_cannot_take_a_trust_root_hosts_lock_for_a_run_it_accepted_nothing_for(
        sandbox: Sandbox, host_root: Path) -> None:
    """Spoken to as a modified controller would (the real agent, its real session): ``lock`` without evidence,
    with evidence that does not verify, and the run's mutating steps (prepare, stop, start, hook) of a run this host
    kept no entry for: each refused (kind host_trust, the controller's exit 4) before the agent takes anything; no
    host lock, no run directory (no runs/RUN/.op.lock), the host state unchanged; the operator's honest run next
    takes the lock on its accepted evidence and commits."""
    before = pristine(sandbox)
    run = "20261203T160000Z-evil01"
    base = {"install_dir": str(sandbox.install_dir), "state_dir": None, "run_id": run}
    stop = {"command": "true", "timeout": 5.0, "pid_file": "run/server.pid", "ports": []}
    asks = [
        ("lock", {"controller": "evil", "user": "mallory", "approvals": []}),
        ("lock", {"controller": "evil", "user": "mallory", "approvals": [], "sha256": "0" * 64,
                  "current_version": "7.0.4.1", "host_trust": {"plan": '{"requester": {"key": "SHA256:x"}}', "plan_signature": "x", "host": "app-01",
                                                               "approvals": [], "catalog": {}}}),
        ("prepare", {"preserve": [], "sha256": "0" * 64, "package_path": "/nonexistent"}),
        ("stop", {"stop": stop}),
        ("start", {"start": {"command": "sh -c 'echo pwned > run/pwned'", "timeout": 5.0}, "pid_file": None,
                   "ports": []}),
        ("hook", {"command": "sh -c 'echo pwned > run/pwned'", "hook_timeout": 5.0}),
        # the end of a run: it would spend these approvals and raise the catalog serial on the controller's word
        ("finish", {"outcome": "committed", "approvals": ["ab" * 32], "catalog": {"product": "sample-middleware",
                                                                                 "serial": 999}}),
    ]
    transport = LocalTransport("local")
    agent = AgentClient(transport)
    try:
        for op, extra in asks:
            with pytest.raises(AgentFailure) as refused:
                agent.call(op, **base, **extra)
            said = refused.value
            assert said.kind == "host_trust", (op, said.kind, said.message)
            assert "this host has its own trust root" in said.message and run in said.message, said.message
            assert "nothing was" in said.message, said.message
            if op == "lock":
                assert "refusing the lock of run" in said.message, said.message
            else:
                assert f"refusing {op}" in said.message and "has no plan entry accepted here" in said.message
            # checked after each: nothing taken on the host
            assert not (state_dir(sandbox.install_dir) / "lock").exists(), f"{op} left the host locked"
            assert not (state_dir(sandbox.install_dir) / "runs" / run).exists(), f"{op} left runs/{run}"
    finally:
        agent.close()
        transport.close()
    assert not (sandbox.install_dir / "run" / "pwned").exists()
    assert host_state(sandbox) == before
    _operator_runs_next(sandbox)


# ------------------------------------------------------------------ 3: the catalog entry the host accepts


def _evidence(sandbox: Sandbox, plan: Path, approval: Path, catalog_text: str) -> dict[str, object]:
    """What a controller sends a host with a trust root (trust/host_evidence.py): the plan's canonical bytes and
    the requester's signature, the approval, and ``catalog_text`` signed by the sandbox vendor's real key."""
    from upgrader.core.plan import canonical_json
    from upgrader.trust.approval import read_approval
    from upgrader.trust.host_evidence import armor
    from upgrader.trust.keys import load_private_key
    from upgrader.trust.sshsig import sign

    data = json.loads(plan.read_text(encoding="utf-8"))
    a = read_approval(approval)
    content = catalog_text.encode("utf-8")
    return {"plan": canonical_json({k: v for k, v in data.items() if k != "signature"}).decode("utf-8"),
            "plan_signature": data["signature"], "host": "app-01",
            "approvals": [{"text": a.text, "signature": armor(a.signature)}],
            "catalog": {"content": base64.b64encode(content).decode("ascii"),
                        "signature": sign(load_private_key(sandbox.vendor_key), content, "upgrader-catalog")}}


def test_the_host_binds_the_signed_catalog_entry_to_the_plans_product_target_and_package(
        sandbox: Sandbox, host_root: Path) -> None:
    """The operator's own plan to 7.0.4.2 and its approval; the vendor (the key the host trusts) signed a catalog
    whose entry for that very package says 7.0.4.9 (and one where it is another product's). Sent to the host as a
    controller would (host_trust, then lock): refused, kind host_trust (exit 4), naming what the catalog lists;
    nothing locked or changed. The same evidence with the vendor's real catalog is accepted (the control)."""
    before = pristine(sandbox)
    rc, plan = plan_to(sandbox, TO)
    assert rc == ExitCode.OK
    approval = approve(sandbox, plan)
    sha = json.loads(plan.read_text(encoding="utf-8"))["hosts"][0]["package"]["sha256"]
    honest = (sandbox.catalog / "catalog.yaml").read_text(encoding="utf-8")
    entry = f"  version: {TO}\n  kind: full\n  sha256: {sha}\n"
    assert honest.count(entry) == 1, honest
    other_version = honest.replace(entry, entry.replace(TO, "7.0.4.9"))
    other_product = honest.replace(f"  product: sample-middleware\n{entry}", f"  product: other-middleware\n{entry}")
    assert other_product != honest
    base = {"install_dir": str(sandbox.install_dir), "state_dir": None, "run_id": "20261203T170000Z-cat001",
            "sha256": sha, "current_version": "7.0.4.1"}
    transport = LocalTransport("local")
    agent = AgentClient(transport)
    try:
        for text, listed in ((other_version, "sample-middleware 7.0.4.9"), (other_product, f"other-middleware {TO}")):
            for op, extra in (("host_trust", {}), ("lock", {"controller": "c", "user": "u", "approvals": []})):
                with pytest.raises(AgentFailure) as refused:
                    agent.call(op, **base, **extra, host_trust=_evidence(sandbox, plan, approval, text))
                said = refused.value
                assert said.kind == "host_trust", (op, said.kind, said.message)
                for words in (f"has no entry for sample-middleware {TO} with the package sha256 {sha}",
                              f"(it lists that package as {listed})", "refused, nothing changed"):
                    assert words in said.message, f"{op}: {words!r} not in {said.message}"
                assert not (state_dir(sandbox.install_dir) / "lock").exists()
        accepted = agent.call("host_trust", **base, host_trust=_evidence(sandbox, plan, approval, honest))
        assert accepted["host_trust"]["package"] == sha and accepted["host_trust"]["target"] == TO
    finally:
        agent.close()
        transport.close()
    after = host_state(sandbox)
    assert (after.pid, after.version, after.product, after.lock, after.staged, after.host_runs) == (
        before.pid, "7.0.4.1", before.product, None, None, None)


# ------------------------------------------------------------------ 4: no command at plan time on a trust-root host


def test_plan_runs_no_command_probe_on_a_host_with_a_trust_root_the_accepted_run_proves_it(
        sandbox: Sandbox, host_root: Path, tmp_path: Path) -> None:
    """HOME/playbooks/sample-middleware.yaml gains a command probe that appends to a marker file. ``plan`` (the
    shipped CLI, before any approval) proves the built-in probes on the running version but does not run the
    command (no marker; the plan says why, exit 0); nothing on the host changed. The operator's approved run then
    proves it at its preflight under the lock the host granted on the accepted evidence (the marker appears) and
    commits."""
    marker = sandbox.install_dir / "logs" / "probe-ran"  # a root command writes only beneath the install's logs/
    src = Path(__file__).resolve().parent.parent / "playbooks" / "sample-middleware.yaml"
    doc = yaml.safe_load(src.read_text(encoding="utf-8"))
    doc["observe"]["probes"].append({"name": "selfcheck", "type": "command", "command": f"echo ran >> {marker}"})
    (sandbox.root / "playbooks").mkdir(exist_ok=True)
    (sandbox.root / "playbooks" / "sample-middleware.yaml").write_text(yaml.safe_dump(doc, sort_keys=False),
                                                                       encoding="utf-8")
    before = pristine(sandbox)
    plan = tmp_path / "p.json"
    done = _cli(sandbox.root, "plan", "--inventory", str(sandbox.inventory), "--to", TO, "--catalog",
                str(sandbox.catalog), "--key", str(sandbox.requester_key), "-o", str(plan))
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    assert not marker.exists(), "plan ran the playbook's command probe on a host with a trust root"
    assert "Traceback" not in done.stderr
    checks = {c["check"]: c for c in json.loads(plan.read_text(encoding="utf-8"))["hosts"][0]["checks"]}
    said = checks["health_checks"]["reason"]
    assert "4 probe(s) pass on the running 7.0.4.1" in said, said
    assert "selfcheck: not run: this host has its own trust root" in said, said
    assert host_state(sandbox) == before
    approval = tmp_path / "p.approval"
    done = _cli(sandbox.root, "approve", str(plan), "--key", str(sandbox.engineer_key), "-o", str(approval))
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    assert not marker.exists()
    done = _cli(sandbox.root, "run", str(plan), "--approval", str(approval), "--yes")
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    assert marker.is_file(), "the accepted run did not prove its command probe"
    assert host_state(sandbox).version == TO
