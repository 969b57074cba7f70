"""Issue 12, round twelve: the plan's PRODUCT is bound to the product installed, through the shipped CLI and the real
host agent, with real keys, a real vendor-signed catalog and the real sample middleware.

The attack (attack report r11, finding 1): the vendor's signed catalog lists a second product, other-middleware
7.0.9.0, whose version shares levels 1-2 with sample-middleware 7.0.4.1; the operator also has a playbook of it. The
requester edits the inventory (``product:`` and ``playbook:`` of app-01 to other-middleware). Before the fix, plan,
approval and run committed, replacing the install by the other product. Now:
- the controller compares the package's product with the product the HOST reports (its ledger, its trust root's
  statement, the product's identifying files), not the inventory's: ``plan`` refuses (exit 3) naming both, and a
  plan made while the host could not tell is refused by ``run`` (exit 3), the whole host unchanged;
- a host with its own trust root refuses the lock itself (host_policy) for another product than its files show, and
  on a first upgrade it cannot recognise, names what root must add (host-trust.json ``installs``);
- an honest run commits and records the product in installed.json and host-trust.jsonl; a later plan for another
  product is refused by the ledger even without a root.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from hoststate import assert_host_untouched
from test_trust_roots_6 import host_root  # noqa: F401 - the host trust root fixture (engineer, requester, vendor)
from test_trust_roots_7 import _evidence
from test_trust_roots_9 import _cli
from trust_support import host_state, pristine
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.exit_codes import ExitCode
from upgrader.fleet.transport import AgentClient
from upgrader.fleet.transport.base import AgentFailure
from upgrader.fleet.transport.local import LocalTransport

SHIPPED = Path(__file__).resolve().parent.parent / "playbooks" / "sample-middleware.yaml"


def _other_product(sandbox: Sandbox, tmp_path: Path) -> Path:
    """The vendor's signed catalog (serial 2) listing other-middleware 7.0.9.0 beside the sample packages, the
    operator's playbook of that product, and the requester's inventory edit; returns the catalog.yaml."""
    import tarfile

    pkg, cat = tmp_path / "pkg", tmp_path / "cat2"
    pkg.mkdir()
    cat.mkdir()
    with tarfile.open(sandbox.catalog / "sample-middleware-7.0.4.2.tar.gz") as tar:
        tar.extractall(pkg, filter="data")
    meta = (pkg / "package.yaml").read_text(encoding="utf-8")
    meta = "\n".join("product: other-middleware" if line.startswith("product:") else
                     "version: 7.0.9.0" if line.startswith("version:") else line for line in meta.splitlines()) + "\n"
    (pkg / "package.yaml").write_text(meta, encoding="utf-8")
    (pkg / "lib" / "VERSION").write_text("7.0.9.0\n", encoding="utf-8")
    with tarfile.open(cat / "other-middleware-7.0.9.0.tar.gz", "w:gz") as tar:
        for member in sorted(pkg.iterdir()):
            tar.add(member, arcname=member.name)
    for p in sandbox.catalog.glob("*.tar.gz"):
        (cat / p.name).write_bytes(p.read_bytes())
    done = _cli(sandbox.root, "catalog", "build", str(cat), "--serial", "2", "--key", str(sandbox.vendor_key))
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    doc = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    doc["product"] = "other-middleware"
    (sandbox.root / "playbooks").mkdir(exist_ok=True)
    (sandbox.root / "playbooks" / "other-middleware.yaml").write_text(yaml.safe_dump(doc, sort_keys=False),
                                                                      encoding="utf-8")
    inv = sandbox.inventory.read_text(encoding="utf-8")
    assert "product: sample-middleware" in inv and "playbook: sample-middleware" in inv
    sandbox.inventory.write_text(inv.replace("product: sample-middleware", "product: other-middleware")
                                 .replace("playbook: sample-middleware", "playbook: other-middleware"), encoding="utf-8")
    return cat / "catalog.yaml"


def _plan(sandbox: Sandbox, catalog: Path, to: str, tmp_path: Path, name: str = "p"):
    plan = tmp_path / f"{name}.json"
    return plan, _cli(sandbox.root, "plan", "--inventory", str(sandbox.inventory), "--catalog", str(catalog), "--to",
                      to, "--key", str(sandbox.requester_key), "-o", str(plan))


def _approve(sandbox: Sandbox, plan: Path) -> Path:
    approval = plan.with_suffix(".approval")
    done = _cli(sandbox.root, "approve", str(plan), "--key", str(sandbox.engineer_key), "-o", str(approval))
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    return approval


def _run(sandbox: Sandbox, plan: Path, approval: Path):
    return _cli(sandbox.root, "run", str(plan), "--approval", str(approval), "--yes",
                env={"UPGRADER_AUDIT_KEY": str(sandbox.operator_key)})


def _plan_while_host_cannot_tell(sandbox: Sandbox, catalog: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A plan the controller made while the host could not tell its product (bin/stop.sh was moved aside, so no
    product's files were all there): the review says it took the inventory's word. Approved; the file is back."""
    stop = sandbox.install_dir / "bin" / "stop.sh"
    aside = tmp_path / "stop.sh.aside"
    stop.rename(aside)
    try:
        plan, done = _plan(sandbox, catalog, "7.0.9.0", tmp_path)
    finally:
        aside.rename(stop)
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    rule = json.loads(plan.read_text(encoding="utf-8"))["hosts"][0]["decision"]["rules"][0]
    assert rule["rule"] == "same_product" and "the inventory's word: the host does not tell" in rule["reason"], rule
    return plan, _approve(sandbox, plan)


def test_the_controller_refuses_a_plan_for_another_product_than_the_host_reports(sandbox: Sandbox,
                                                                                  tmp_path: Path) -> None:
    """No host trust root: the inventory says other-middleware, the host's files say sample-middleware: ``plan``
    exits 3 naming both products and where the installed one came from; nothing on the host changed."""
    before = pristine(sandbox)
    catalog = _other_product(sandbox, tmp_path)
    plan, done = _plan(sandbox, catalog, "7.0.9.0", tmp_path)
    said = done.stdout + done.stderr
    assert done.returncode == ExitCode.POLICY_REFUSED, said
    assert "the package is for 'other-middleware' but the installed product is 'sample-middleware'" in said, said
    assert "its files on the host: lib/VERSION" in said and "the inventory says 'other-middleware'" in said, said
    assert not plan.exists() or not json.loads(plan.read_text(encoding="utf-8"))["hosts"][0]["decision"]["allowed"]
    assert_host_untouched(before, host_state(sandbox))


def test_run_refuses_a_plan_made_while_the_host_could_not_tell(sandbox: Sandbox, tmp_path: Path) -> None:
    """No host trust root: a signed, approved plan that took the inventory's word is decided again at the run on what
    the host reports now: exit 3, the whole host (files, service, lock, state dir) unchanged."""
    catalog = _other_product(sandbox, tmp_path)
    plan, approval = _plan_while_host_cannot_tell(sandbox, catalog, tmp_path)
    before = host_state(sandbox)
    assert before.version == "7.0.4.1" and before.lock is None
    done = _run(sandbox, plan, approval)
    said = done.stdout + done.stderr
    assert done.returncode == ExitCode.POLICY_REFUSED, said
    assert "the installed product is 'sample-middleware'" in said, said
    assert_host_untouched(before, host_state(sandbox))
    assert (sandbox.install_dir / "lib" / "VERSION").read_text(encoding="utf-8").split()[0] == "7.0.4.1"


def _lock_refused(sandbox: Sandbox, ev: dict[str, object], sha: str, product: str | None = None) -> str:
    transport = LocalTransport("local")
    agent = AgentClient(transport)
    base = {"install_dir": str(sandbox.install_dir), "state_dir": None, "run_id": "20261203T230000Z-swap12"}
    try:
        with pytest.raises(AgentFailure) as refused:
            agent.call("lock", **base, controller="evil", user="mallory", approvals=[], sha256=sha,
                       current_version="7.0.4.1", host_trust=ev, **({"product": product} if product else {}))
    finally:
        agent.close()
        transport.close()
    assert refused.value.kind == "host_policy", (refused.value.kind, refused.value.message)
    return refused.value.message


def test_a_trust_root_host_refuses_another_products_package_itself(sandbox: Sandbox, host_root: Path,
                                                                   tmp_path: Path) -> None:
    """With the host's own trust root (root states the install is sample-middleware): the approved plan for
    other-middleware is refused by ``run`` (exit 3); the host itself, asked for the lock on that plan's vendor-signed
    evidence (a controller that decides nothing), refuses it (host_policy, exit 3) naming both products; with root's
    statement and the identifying files gone it names what root must add. The whole host is unchanged throughout."""
    catalog = _other_product(sandbox, tmp_path)
    config = host_root / "host-trust.json"
    stated = config.read_text(encoding="utf-8")
    config.write_text("{}", encoding="utf-8")  # the plan is made before root states the product
    plan, approval = _plan_while_host_cannot_tell(sandbox, catalog, tmp_path)
    config.write_text(stated, encoding="utf-8")
    before = host_state(sandbox)
    done = _run(sandbox, plan, approval)
    assert done.returncode == ExitCode.POLICY_REFUSED, done.stdout + done.stderr
    assert_host_untouched(before, host_state(sandbox))
    ev = _evidence(sandbox, plan, approval, catalog.read_text(encoding="utf-8"))
    sha = json.loads(plan.read_text(encoding="utf-8"))["hosts"][0]["package"]["sha256"]
    said = _lock_refused(sandbox, ev, sha)
    assert "is an install of sample-middleware" in said and "upgrades it as other-middleware" in said, said
    assert "refused before the lock, nothing changed" in said, said
    config.write_text("{}", encoding="utf-8")  # root no longer states the product
    stop = sandbox.install_dir / "bin" / "stop.sh"
    aside = tmp_path / "stop.sh.aside"
    stop.rename(aside)
    try:
        said = _lock_refused(sandbox, ev, sha)
    finally:
        aside.rename(stop)
    assert "cannot tell which product is installed" in said and '"installs"' in said, said
    assert f'"{sandbox.install_dir}": "other-middleware"' in said, said
    assert_host_untouched(before, host_state(sandbox))


def test_an_honest_run_records_the_product_and_the_ledger_binds_the_next_plan(sandbox: Sandbox, host_root: Path,
                                                                              tmp_path: Path) -> None:
    """With the host's own trust root, the honest first upgrade (sample-middleware 7.0.4.1 -> 7.0.4.2, as root states
    in host-trust.json ``installs``) commits; installed.json beside the install and host-trust.jsonl record the product and where the host
    read it. Then the root is gone and a lock for other-middleware is refused by the ledger alone (host_policy)."""
    pristine(sandbox)
    plan, done = _plan(sandbox, sandbox.catalog / "catalog.yaml", "7.0.4.2", tmp_path, "honest")
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    rule = json.loads(plan.read_text(encoding="utf-8"))["hosts"][0]["decision"]["rules"][0]
    assert 'the installed product (by /etc/upgrader/host-trust/host-trust.json "installs" (' in rule["reason"], rule
    done = _run(sandbox, plan, _approve(sandbox, plan))
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    state = sandbox.install_dir.parent / f".upgrader-{sandbox.install_dir.name}"
    installed = json.loads((state / "installed.json").read_text(encoding="utf-8"))
    assert installed["product"] == "sample-middleware" and installed["version"] == "7.0.4.2"
    assert installed["product_source"]["trust_root"] == "/etc/upgrader/host-trust", installed
    trusted = json.loads((state / "host-trust.jsonl").read_text(encoding="utf-8").splitlines()[-1])
    assert trusted["product"] == "sample-middleware" and trusted["outcome"] == "committed"
    assert trusted["product_from"].startswith('/etc/upgrader/host-trust/host-trust.json "installs"'), trusted
    for f in host_root.iterdir():
        f.unlink()
    host_root.rmdir()
    before = host_state(sandbox)
    transport = LocalTransport("local")
    agent = AgentClient(transport)
    try:
        with pytest.raises(AgentFailure) as refused:
            agent.call("lock", install_dir=str(sandbox.install_dir), state_dir=None, run_id="20261203T230500Z-other",
                       controller="c", user="u", approvals=[], current_version="7.0.4.2", product="other-middleware")
    finally:
        agent.close()
        transport.close()
    assert refused.value.kind == "host_policy", refused.value.message
    assert "is an install of sample-middleware (by " in refused.value.message, refused.value.message
    assert "installed.json" in refused.value.message
    assert_host_untouched(before, host_state(sandbox))
