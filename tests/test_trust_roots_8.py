"""Whose gate is it, round eight: the two attacks the seventh review found, played through the shipped CLI with real
keys, a real catalog and the real sample middleware; each now ends in a refusal with its exit code and message, and
nothing on the host changed (product files, the service's pid and version, lock, staged packages, host records).

1 the requester (listed on the host for upgrader-plan) makes a controller HOME of her own whose policy drops the
  "never free" declared changes (``refused_changes: []``), plans 7.0.4.8 (the vendor's signed catalog and the package
  declare ``external_interface``), a real engineer the host trusts approves it and she runs it: the host's trust root
  reads the change from the vendor-signed entry and refuses (exit 3), naming the change and the entry.
2 on a host with a trust root, someone with a HOME of her own (keys the host does not know) gives her playbook a
  version ``command`` that writes a marker and stops the service: ``plan`` (exit 4, naming it, en+zh), ``status`` and
  ``inspect`` run no command of hers (no marker, the service still runs with the same pid) and say why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from test_trust_roots_6 import host_root  # noqa: F401 - a fixture
from hoststate import lock_audit
from trust_support import host_state, pristine, write_root_config
from upgrader.cli.commands.demo import Sandbox, build_sandbox
from upgrader.core.exit_codes import ExitCode
from upgrader.hostagent import hosttrust


def _cli(home: Path, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The shipped CLI in its own process: ``upgrader --home HOME ...``."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_")}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "upgrader", "--home", str(home), *argv], cwd=home, env=full,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)


# ------------------------------------------------------------------ 1: a declared change, the requester's own policy


def test_a_requesters_own_policy_cannot_make_a_declared_interface_change_free_on_a_trust_root_host(
        sandbox: Sandbox, host_root: Path, tmp_path: Path) -> None:
    """Her HOME: the operator's inventory and signer files, the vendor's real signed catalog, her own key, and a
    policy that refuses no declared change. Her plan to 7.0.4.8 (external_interface) is made and approved by the
    host's engineer; ``run`` is refused by the host's trust root, exit 3, naming the change and the signed catalog
    entry; nothing on the host changed (the service's pid, version, product files, lock, staged packages, records)."""
    before = pristine(sandbox)
    refused = _cli(sandbox.root, "plan", "--inventory", str(sandbox.inventory), "--to", "7.0.4.8", "--catalog",
                   str(sandbox.catalog), "--key", str(sandbox.requester_key), "-o", str(tmp_path / "op.json"))
    assert "declares a change to external interfaces" in refused.stdout + refused.stderr  # the operator's policy
    home = tmp_path / "requester-home"
    (home / "keys").mkdir(parents=True)
    shutil.copy(sandbox.inventory, home / "inventory.yaml")
    for name in ("allowed_signers", "vendor_signers", "requester", "requester.pub"):
        shutil.copy(sandbox.keys / name, home / "keys" / name)
    policy = yaml.safe_load((sandbox.root / "policy.yaml").read_text(encoding="utf-8"))
    policy.setdefault("rules", {})["refused_changes"] = []
    (home / "policy.yaml").write_text(yaml.safe_dump(policy, sort_keys=False), encoding="utf-8")
    plan, approval = tmp_path / "p.json", tmp_path / "p.approval"
    done = _cli(home, "plan", "--inventory", str(home / "inventory.yaml"), "--to", "7.0.4.8", "--catalog",
                str(sandbox.catalog), "--key", str(home / "keys" / "requester"), "-o", str(plan))
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    assert json.loads(plan.read_text(encoding="utf-8"))["hosts"][0]["package"]["changes"] == ["external_interface"]
    done = _cli(home, "approve", str(plan), "--key", str(sandbox.engineer_key), "-o", str(approval))
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    run = _cli(home, "run", str(plan), "--approval", str(approval), "--yes",
               env={"UPGRADER_AUDIT_KEY": str(home / "keys" / "requester")})
    assert run.returncode == ExitCode.POLICY_REFUSED, run.stdout + run.stderr
    for words in (f"host trust root {hosttrust.TRUST_DIR}", "the vendor's signed catalog entry sample-middleware "
                  "7.0.4.8", "signed by vendor-release", "declares the change external_interface",
                  "whatever the controller's policy says", "nothing changed"):
        assert words in run.stderr, f"{words!r} not in {run.stderr}"
    assert "Traceback" not in run.stderr
    assert host_state(sandbox) == before


def test_the_hosts_own_refused_changes_are_added_never_removed_and_a_patch_range_is_the_hosts(
        sandbox: Sandbox, host_root: Path) -> None:
    """host-trust.json may add to the changes the host refuses, never remove the three: a root that lists none still
    refuses external_interface (its entry is read from the vendor-signed bytes). A patch's requires range is decided
    on the version the host reads itself."""
    write_root_config(host_root, refused_changes=[])
    root = hosttrust.load_root()
    assert root is not None and root["refused_changes"] == []
    text = (sandbox.catalog / "catalog.yaml").read_text(encoding="utf-8")
    entry = next(e for e in hosttrust.catalog_entry_list(text) if e["version"] == "7.0.4.8")
    assert entry["changes"] == ["external_interface"]
    try:
        hosttrust._entry_rules(entry, {"kind": "full"}, root, ("vendor-release", "SHA256:x"), "7.0.4.1", "ledger",
                               "vendors")
    except hosttrust.AgentError as e:
        assert e.kind == "host_policy" and "declares the change external_interface" in str(e), str(e)
    else:
        raise AssertionError("external_interface was accepted by a root whose refused_changes is empty")
    patch = next(e for e in hosttrust.catalog_entry_list(text) if e["version"] == "7.0.4.3")
    assert patch["requires"] == ">=7.0.4.1, <7.0.4.3"
    assert hosttrust.requires_problem("7.0.4.1", patch["requires"]) is None
    assert "outside" in str(hosttrust.requires_problem("7.0.4.3", patch["requires"]))
    assert "outside" in str(hosttrust.requires_problem("7.0.4.0", patch["requires"]))


# ------------------------------------------------------------------ 2: a version command of anyone's playbook


def _mallory(sandbox: Sandbox, tmp_path: Path, marker: Path) -> Path:
    """Mallory's own HOME (her keys, "vendor", catalog, policy; none known to the host) whose inventory names the
    operator's install, and her playbook whose version source is a command that writes ``marker`` and stops the
    service."""
    home = tmp_path / "mallory"
    build_sandbox(home)
    inv = home / "inventory.yaml"
    lines = []
    for line in inv.read_text(encoding="utf-8").splitlines():
        key = line.strip().split(":", 1)[0]
        if key == "install_dir":
            line = line.split("install_dir:")[0] + f"install_dir: {sandbox.install_dir}"
        elif key == "port":
            line = line.split("port:")[0] + f'port: "{sandbox.port}"'
        lines.append(line)
    inv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    src = Path(__file__).resolve().parent.parent / "playbooks" / "sample-middleware.yaml"
    doc = yaml.safe_load(src.read_text(encoding="utf-8"))
    doc["version"] = {"command": f"id -un > {marker}; bin/stop.sh >/dev/null 2>&1; cat lib/VERSION"}
    (home / "playbooks").mkdir(exist_ok=True)
    (home / "playbooks" / "sample-middleware.yaml").write_text(yaml.safe_dump(doc, sort_keys=False),
                                                               encoding="utf-8")
    return home


def test_plan_status_and_inspect_run_no_version_command_of_anyones_playbook_on_a_trust_root_host(
        sandbox: Sandbox, host_root: Path, tmp_path: Path) -> None:
    """``plan`` (exit 4, en+zh, naming the refused version source and not claiming anything about stopping),
    ``status`` and ``inspect`` (exit 0, saying the version was not read and why) from Mallory's HOME: her version
    command never runs (no marker), the service runs with the same pid, nothing on the host changed."""
    marker = sandbox.install_dir / "logs" / "PWNED"  # where a root command may write
    home = _mallory(sandbox, tmp_path, marker)
    before = pristine(sandbox)
    plan = _cli(home, "plan", "--inventory", str(home / "inventory.yaml"), "--to", "7.0.4.2", "--catalog",
                str(home / "catalog"), "--key", str(home / "keys" / "requester"), "-o", str(home / "p.json"))
    assert plan.returncode == ExitCode.APPROVAL_REFUSED, plan.stdout + plan.stderr
    for words in ("app-01: " + hosttrust.VERSION_COMMAND_REFUSED, "the command was not run",
                  "版本来源是一条命令；主机有自己的信任根时，在被接受的运行之外只读取文件来源"):
        assert words in plan.stderr, f"{words!r} not in {plan.stderr}"
    assert "nothing was stopped" not in plan.stdout + plan.stderr and "Traceback" not in plan.stderr
    assert not (home / "p.json").exists()
    assert not marker.exists(), "plan ran the playbook's version command on a host with a trust root"
    assert host_state(sandbox) == before
    status = _cli(home, "status", "--inventory", str(home / "inventory.yaml"))
    assert status.returncode == ExitCode.OK, status.stdout + status.stderr
    assert "version not read: version source is a command; with a host trust root only file sources" in \
        " ".join(status.stdout.split()), status.stdout
    assert not marker.exists(), "status ran the playbook's version command on a host with a trust root"
    status = _cli(home, "status", "--inventory", str(home / "inventory.yaml"), "--json")
    assert json.loads(status.stdout)["hosts"][0]["version_refused"] == "host_trust", status.stdout
    report = tmp_path / "report.json"
    inspect = _cli(home, "inspect", "--inventory", str(home / "inventory.yaml"), "-o", str(report))
    assert inspect.returncode == ExitCode.OK, inspect.stdout + inspect.stderr
    assert hosttrust.VERSION_COMMAND_REFUSED in " ".join(inspect.stdout.split()), inspect.stdout
    assert hosttrust.VERSION_COMMAND_REFUSED in report.read_text(encoding="utf-8")
    assert not marker.exists(), "inspect ran the playbook's version command on a host with a trust root"
    assert host_state(sandbox) == before


# ------------------------------------------------------------------ 1b: package.yaml must say what the signed entry says


def test_prepare_refuses_a_package_whose_package_yaml_declares_otherwise_than_the_signed_entry(
        sandbox: Sandbox, host_root: Path) -> None:
    """The operator's own plan to 7.0.4.2 and its approval; the vendor (the key the host trusts) signed a catalog whose
    entry for that very package adds ``requires: '>=7.0.4.1'``, which the package's own package.yaml does not say.
    Spoken to as a controller would (the real agent session: lock, then prepare with the real package): the lock is
    granted on the signed evidence, prepare reads package.yaml from the copy it hashed and refuses (kind host_trust)
    before extracting anything: no staged tree, no backup, the copy removed; the product and the service as before."""
    from conftest import approve, plan_to
    from test_trust_roots_7 import _evidence
    from trust_support import state_dir
    from upgrader.fleet.transport import AgentClient
    from upgrader.fleet.transport.base import AgentFailure
    from upgrader.fleet.transport.local import LocalTransport

    before = pristine(sandbox)
    rc, plan = plan_to(sandbox, "7.0.4.2")
    assert rc == ExitCode.OK
    approval = approve(sandbox, plan)
    entry = json.loads(plan.read_text(encoding="utf-8"))["hosts"][0]
    pkg = entry["package"]
    honest = (sandbox.catalog / "catalog.yaml").read_text(encoding="utf-8")
    line = f"  sha256: {pkg['sha256']}\n"
    assert honest.count(line) == 1
    signed = honest.replace(line, line + "  requires: '>=7.0.4.1'\n")
    run = "20261203T180000Z-meta01"
    base = {"install_dir": str(sandbox.install_dir), "state_dir": None, "run_id": run, "sha256": pkg["sha256"],
            "current_version": "7.0.4.1", "host_trust": _evidence(sandbox, plan, approval, signed)}
    transport = LocalTransport("local")
    agent = AgentClient(transport)
    try:
        agent.call("lock", **base, controller="c", user="u", approvals=[], audit=lock_audit(run))
        try:
            agent.call("prepare", **base, package_path=str(sandbox.catalog / pkg["file"]), size=pkg["size"],
                       limits=pkg["limits"], kind=pkg["kind"], remove=pkg.get("remove", []),
                       preserve=entry["playbook"]["spec"]["preserve"])
        except AgentFailure as e:
            said = e
        else:
            raise AssertionError("prepare accepted a package whose package.yaml differs from the signed entry")
        assert said.kind == "host_trust", (said.kind, said.message)
        for words in ("declares otherwise than the vendor's signed catalog entry",
                      "requires (package.yaml: None, the signed catalog entry: '>=7.0.4.1')",
                      "refused before it was extracted, nothing changed"):
            assert words in said.message, f"{words!r} not in {said.message}"
        run_dir = state_dir(sandbox.install_dir) / "runs" / run
        assert not any((run_dir / name).exists() for name in ("staging", "backup", "package.tar.gz"))
        agent.call("unlock", **base)
    finally:
        agent.close()
        transport.close()
    after = host_state(sandbox)
    assert (after.pid, after.version, after.product, after.lock, after.staged) == (
        before.pid, "7.0.4.1", before.product, None, None)


def test_a_version_command_root_lists_in_host_trust_json_is_read_and_the_run_commits(
        sandbox: Sandbox, host_root: Path, tmp_path: Path) -> None:
    """The operator's own playbook reads the version with a command. On a trust-root host ``plan`` refuses it (exit 4)
    until root lists that very (absolute) command in host-trust.json ``version_commands``; then plan, approve and run commit
    7.0.4.2 (the host reads the version it runs with root's command on this first upgrade)."""
    src = Path(__file__).resolve().parent.parent / "playbooks" / "sample-middleware.yaml"
    doc = yaml.safe_load(src.read_text(encoding="utf-8"))
    doc["version"] = {"command": "/bin/cat lib/VERSION"}
    (sandbox.root / "playbooks").mkdir(exist_ok=True)
    (sandbox.root / "playbooks" / "sample-middleware.yaml").write_text(yaml.safe_dump(doc, sort_keys=False),
                                                                       encoding="utf-8")
    before = pristine(sandbox)
    plan, approval = tmp_path / "p.json", tmp_path / "p.approval"
    argv = ("plan", "--inventory", str(sandbox.inventory), "--to", "7.0.4.2", "--catalog", str(sandbox.catalog),
            "--key", str(sandbox.requester_key), "-o", str(plan))
    done = _cli(sandbox.root, *argv)
    assert done.returncode == ExitCode.APPROVAL_REFUSED, done.stdout + done.stderr
    assert hosttrust.VERSION_COMMAND_REFUSED in done.stderr and not plan.exists()
    assert host_state(sandbox) == before
    write_root_config(host_root, version_commands=["/bin/cat lib/VERSION"])
    done = _cli(sandbox.root, *argv)
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    done = _cli(sandbox.root, "approve", str(plan), "--key", str(sandbox.engineer_key), "-o", str(approval))
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    done = _cli(sandbox.root, "run", str(plan), "--approval", str(approval), "--yes")
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    assert host_state(sandbox).version == "7.0.4.2"
