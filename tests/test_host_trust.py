"""Issue 12, round 4: the host holds its own trust root (/etc/upgrader/host-trust).

Whoever holds a host's SSH credentials can make a controller HOME of their own: a byte-identical copy of the
operator's policy whose relative signer files resolve to their own keys, their own "vendor" signing their own
catalog and package, a second key of theirs as the "engineer". No controller-side check stops them. A host with its
own trust root (allowed_signers for approvals, vendor_signers for catalogs, host-trust.json) checks the evidence
itself with ssh-keygen and refuses before anything on it changes.

Each test writes the trust root as root through the ``host_root`` fixture, which removes it again whatever happens
(other tests of the suite must never see one). Everything runs through the shipped CLI with real keys, real
signatures, a real catalog and package, the real sample middleware; one test reaches the host over the real sshd.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import stat
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pytest

from conftest import approve, plan_to, upgrader
from fleet import Fleet
from trust_support import HostState, add_signer, cli, host_state, pristine, rebuild_package, sandbox_installs, \
    state_dir, write_root_config
from upgrader.cli import main
from upgrader.cli.commands.demo import Sandbox, _trust
from upgrader.core.exit_codes import ExitCode
from upgrader.hostagent import hosttrust

TO = "7.0.4.2"
ROOT = Path(hosttrust.TRUST_DIR)

HostRoot = Callable[..., Path]


@pytest.fixture
def host_root() -> Iterator[HostRoot]:
    """write(engineers=[(principal, key)], vendors=[(principal, key)], required=N, mode=0o755, requesters=[...],
    ns=the engineers' namespaces option ("" for none): the host trust root,
    owned by root; removed afterwards (and /etc/upgrader too when this fixture made it)."""
    assert os.geteuid() == 0, "the host trust root is root's: these tests run as root"
    made_parent = not ROOT.parent.exists()
    assert not ROOT.exists(), f"{ROOT} exists before the test: another test left it"

    def write(engineers: list[tuple[str, Path]], vendors: list[tuple[str, Path]], required: int | None = None,
              mode: int = 0o755, requesters: Sequence[tuple[str, Path]] = (), ns: str = "upgrader-approval",
              installs: dict[str, str] | None = None) -> Path:
        ROOT.mkdir(parents=True, exist_ok=True)
        for name, signers in (("allowed_signers", [(p, k, ns) for p, k in engineers]
                               + [(p, k, "upgrader-plan") for p, k in requesters]),
                              ("vendor_signers", [(p, k, "upgrader-catalog") for p, k in vendors])):
            path = ROOT / name
            path.write_text("", encoding="utf-8")
            for principal, key, namespaces in signers:
                add_signer(path, principal, key, f'namespaces="{namespaces}"' if namespaces else "")
            path.chmod(0o644)
        if required is not None:
            write_root_config(ROOT, approvals_required=required)
        if installs:  # root's word on the installed product (the install dir's files are not)
            write_root_config(ROOT, installs=installs)
        ROOT.chmod(mode)
        return ROOT

    try:
        yield write
    finally:
        shutil.rmtree(ROOT if not made_parent else ROOT.parent, ignore_errors=True)
        assert not ROOT.exists()


def _operators_root(box: Sandbox, write: HostRoot, **kw: object) -> Path:
    """The host trusts the operator's engineer, requester and the real vendor (the sandbox's keys)."""
    return write([("engineer@vendor", box.engineer_key)], [("vendor-release", box.vendor_key)],
                 requesters=[("requester@customer", box.requester_key)], installs=sandbox_installs(box), **kw)


def _own_home(box: Sandbox, tmp_path: Path, name: str = "mallory") -> Sandbox:
    """The requester's own HOME: the operator's policy byte for byte (its relative signer files now resolve to the
    requester's own keys), their own engineer, operator, requester and vendor keys, their own catalog signed by
    their "vendor" with a package of 7.0.4.2 that the vendor never released."""
    theirs = Sandbox(tmp_path / name, box.port)
    theirs.root.mkdir()
    shutil.copytree(box.catalog, theirs.catalog)
    (theirs.catalog / "catalog.yaml.sig").unlink()
    theirs.plans.mkdir()
    _trust(theirs)  # the same policy text as the operator's, the requester's own keys and signers
    assert theirs.policy.read_bytes() == box.policy.read_bytes()
    rebuild_package(box, theirs.catalog, TO, tmp_path / "work")
    rc = main(["--home", str(theirs.root), "catalog", "build", str(theirs.catalog), "--serial", "7",
               "--key", str(theirs.vendor_key)])
    assert rc == 0
    return theirs


def _plan_approve(box: Sandbox, home: Sandbox, capsys: pytest.CaptureFixture[str], to: str = TO,
                  catalog: Path | None = None, requester: Path | None = None, engineer: Path | None = None,
                  as_: str | None = None) -> tuple[Path, Path]:
    """plan --home HOME (signed by ``requester``), approve --home HOME (by ``engineer``)."""
    plan = home.plans / f"to-{to}.json"
    capsys.readouterr()
    rc = main(["--home", str(home.root), "plan", "--inventory", str(box.inventory), "--to", to, "--catalog",
               str(catalog or home.catalog), "-o", str(plan), "--key", str(requester or home.requester_key)])
    assert rc == 0, capsys.readouterr().err
    approval = home.approvals / f"to-{to}.approval"
    rc = main(["--home", str(home.root), "approve", str(plan), "--key", str(engineer or home.engineer_key),
               "-o", str(approval), *(["--as", as_] if as_ else [])])
    assert rc == 0, capsys.readouterr().err
    return plan, approval


def _shown(home: Sandbox, plan: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """What the review (``plan show``) prints."""
    capsys.readouterr()
    assert main(["--home", str(home.root), "plan", "show", str(plan)]) == 0
    return " ".join(capsys.readouterr().out.split())


def _unchanged(box: Sandbox, before: HostState) -> None:
    """Nothing on the host changed: product files, service pid and version, lock, staged packages, the host's
    records and run records (the controller's home records the refused run: that is not the host)."""
    after = host_state(box)
    assert dataclasses.replace(after, home_runs=()) == dataclasses.replace(before, home_runs=())


def _run(home: Sandbox, plan: Path, approval: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["--home", str(home.root), "run", str(plan), "--approval", str(approval)])
    return rc, capsys.readouterr().err


def test_the_round_4_attack_commits_without_a_host_trust_root_and_is_refused_with_one(
        sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str], host_root: HostRoot) -> None:
    """The requester's own home (the operator's policy byte for byte, their own vendor, catalog, package and
    "engineer"): with the operator's trust root on the host, refused (exit 4) naming the host's allowed_signers,
    nothing on the host changed; the very same plan and approval, once the host has no trust root, commit (exit 0)
    the package the vendor never released."""
    theirs = _own_home(sandbox, tmp_path)
    plan, approval = _plan_approve(sandbox, theirs, capsys)
    assert "host trust root: none \u2014 the controller's trust roots decide" in _shown(theirs, plan, capsys)
    before = pristine(sandbox)
    _operators_root(sandbox, host_root)
    rc, err = _run(theirs, plan, approval, capsys)
    assert rc == ExitCode.APPROVAL_REFUSED, err
    for words in ("host trust root", str(ROOT / "allowed_signers"), "does not list", "upgrader-plan"):
        assert words in err, f"{words!r} not in {err}"
    after = host_state(sandbox)
    assert after.product == before.product and after.pid == before.pid and after.version == "7.0.4.1"
    assert after.lock is None and after.staged == before.staged and after.host_records == before.host_records
    assert not (state_dir(sandbox.install_dir) / "runs").exists() or not any(
        (r / "staging").exists() or (r / "backup").exists() for r in (state_dir(sandbox.install_dir) / "runs").iterdir())
    # today's behaviour without a host trust root: the attack commits
    shutil.rmtree(ROOT)
    rc, err = _run(theirs, plan, approval, capsys)
    assert rc == ExitCode.OK, err
    assert (sandbox.install_dir / "docs" / "REBUILT.txt").is_file()
    assert host_state(sandbox).version == TO


def test_an_honest_plan_approved_by_a_host_trusted_engineer_commits_and_the_host_records_it(
        sandbox: Sandbox, capsys: pytest.CaptureFixture[str], host_root: HostRoot) -> None:
    _operators_root(sandbox, host_root)
    rc, plan = plan_to(sandbox, TO)
    assert rc == 0
    assert f"host trust root: {ROOT} (approvals by {ROOT / 'allowed_signers'}" in _shown(sandbox, plan, capsys)
    approval = approve(sandbox, plan)
    rc, err = cli(sandbox, capsys, "run", str(plan), "--approval", str(approval))
    assert rc == ExitCode.OK, err
    assert host_state(sandbox).version == TO
    (record,) = [json.loads(line) for line in
                 (state_dir(sandbox.install_dir) / "host-trust.jsonl").read_text(encoding="utf-8").splitlines()]
    assert record["approvers"] == ["engineer@vendor"] and record["catalog_signer"] == "vendor-release"
    assert record["outcome"] == "committed" and record["current"] == "7.0.4.1" and record["target"] == TO


def test_the_host_counts_its_own_required_approvals(sandbox: Sandbox, capsys: pytest.CaptureFixture[str],
                                                    host_root: HostRoot) -> None:
    """host-trust.json asks for 2 approvals; the controller's policy asks for 1: the host refuses (exit 3)."""
    before = pristine(sandbox)
    _operators_root(sandbox, host_root, required=2)
    rc, plan = plan_to(sandbox, TO)
    approval = approve(sandbox, plan)
    rc, err = cli(sandbox, capsys, "run", str(plan), "--approval", str(approval))
    assert rc == ExitCode.POLICY_REFUSED, err
    assert "requires approvals by 2 different keys" in err and "host-trust.json" in err, err
    _unchanged(sandbox, before)


def test_a_self_approval_the_requesters_own_policy_allows_is_refused_by_the_host(
        sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str], host_root: HostRoot) -> None:
    """Mallory is an engineer the host trusts. In her own home (self-approval allowed, the real vendor's catalog)
    she signs the plan and approves it with the same key: the host refuses (exit 3), segregation of duties."""
    theirs = Sandbox(tmp_path / "mallory", sandbox.port)
    theirs.root.mkdir()
    theirs.plans.mkdir()
    theirs.approvals.mkdir()
    assert main(["--home", str(theirs.root), "keys", "generate", "mallory", "--dir", str(theirs.keys)]) == 0
    assert main(["--home", str(theirs.root), "keys", "generate", "operator", "--dir", str(theirs.keys)]) == 0
    key = theirs.keys / "mallory"
    add_signer(theirs.keys / "allowed_signers", "mallory@vendor", key)
    add_signer(theirs.keys / "allowed_signers", "mallory-ops@vendor", theirs.keys / "operator")
    shutil.copy(sandbox.keys / "vendor_signers", theirs.keys / "vendor_signers")
    theirs.policy.write_text(sandbox.policy.read_text(encoding="utf-8").replace(
        "allow_self_approval: false", "allow_self_approval: true"), encoding="utf-8")
    host_root([("mallory@vendor", key), ("engineer@vendor", sandbox.engineer_key)],
              [("vendor-release", sandbox.vendor_key)], ns="")  # her key: approvals and plans
    plan, approval = _plan_approve(sandbox, theirs, capsys, catalog=sandbox.catalog, requester=key, engineer=key,
                                   as_="mallory@vendor")
    before = pristine(sandbox)
    rc, err = _run(theirs, plan, approval, capsys)
    assert rc == ExitCode.POLICY_REFUSED, err
    assert "requester's own key" in err and "segregation of duties" in err, err
    _unchanged(sandbox, before)


def test_an_approval_expired_by_the_hosts_clock_is_refused(sandbox: Sandbox, capsys: pytest.CaptureFixture[str],
                                                           host_root: HostRoot) -> None:
    """The controller's clock (cli.main clock=) says the approval is still good; the host's own clock says it expired:
    the host refuses (exit 4), naming the expiry."""
    import datetime as dt

    from conftest import TickingClock

    _operators_root(sandbox, host_root)
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=3)
    capsys.readouterr()
    plan = sandbox.plans / "old.json"
    rc = main(["--home", str(sandbox.root), "plan", "--inventory", str(sandbox.inventory), "--to", TO, "--catalog",
               str(sandbox.catalog), "-o", str(plan), "--key", str(sandbox.requester_key)], clock=TickingClock(past))
    assert rc == 0, capsys.readouterr().err
    approval = sandbox.approvals / "old.approval"
    rc = main(["--home", str(sandbox.root), "approve", str(plan), "--key", str(sandbox.engineer_key), "-o",
               str(approval), "--expires", "1h"], clock=TickingClock(past))
    assert rc == 0, capsys.readouterr().err
    before = pristine(sandbox)
    capsys.readouterr()
    rc = main(["--home", str(sandbox.root), "run", str(plan), "--approval", str(approval)],
              clock=TickingClock(past + dt.timedelta(minutes=30)))
    err = capsys.readouterr().err
    assert rc == ExitCode.APPROVAL_REFUSED, err
    assert "expired at" in err and "by this host's clock" in err, err
    _unchanged(sandbox, before)


def test_a_level_2_target_a_trusted_engineer_approved_is_refused_by_the_host(
        sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str], host_root: HostRoot) -> None:
    """The requester's home allows level 2 (7.0 -> 7.1); the real engineer approves the plan and the real vendor's
    catalog lists the package: the host's own version rule refuses it (exit 3)."""
    theirs = Sandbox(tmp_path / "req", sandbox.port)
    theirs.root.mkdir()
    theirs.plans.mkdir()
    theirs.approvals.mkdir()
    shutil.copytree(sandbox.keys, theirs.keys)
    theirs.policy.write_text(sandbox.policy.read_text(encoding="utf-8").replace(
        "format: 1\n", "format: 1\nrules:\n  free_levels: [2, 3, 4]\n", 1), encoding="utf-8")
    _operators_root(sandbox, host_root)
    plan, approval = _plan_approve(sandbox, theirs, capsys, to="7.1.0.0", catalog=sandbox.catalog)
    before = pristine(sandbox)
    rc, err = _run(theirs, plan, approval, capsys)
    assert rc == ExitCode.POLICY_REFUSED, err
    assert "changes level 2" in err and "levels 3 and 4" in err, err
    _unchanged(sandbox, before)


@pytest.mark.parametrize("what", ["directory", "allowed_signers"])
def test_a_trust_root_others_can_write_is_refused_over_ssh(fleet: Callable[[int], Fleet],
                                                           capsys: pytest.CaptureFixture[str], host_root: HostRoot,
                                                           what: str) -> None:
    """A trust root writable by group or others is a refusal (exit 4) naming it and the fix, never ignored; the
    host is reached over the real sshd."""
    f = fleet(1)
    box = f.box
    root = _operators_root(box, host_root)
    target = root if what == "directory" else root / "allowed_signers"
    rc, plan = plan_to(box, TO)
    assert rc == 0
    approval = approve(box, plan)
    before = pristine(box)
    target.chmod(stat.S_IMODE(target.stat().st_mode) | 0o020)
    capsys.readouterr()
    rc, _ = plan_to(box, TO)  # a plan made now shows the refusal in its review, and is refused
    out = " ".join(capsys.readouterr().out.split())
    assert rc == ExitCode.POLICY_REFUSED and "host_trust_root: host trust root: refused" in out, out
    rc, err = cli(box, capsys, "run", str(plan), "--approval", str(approval))
    assert rc == ExitCode.APPROVAL_REFUSED, err
    assert str(target) in err and "chmod go-w" in err, err
    _unchanged(box, before)
    target.chmod(stat.S_IMODE(target.stat().st_mode) & ~0o022)  # repaired by root: the same approval commits
    rc, err = cli(box, capsys, "run", str(plan), "--approval", str(approval))
    assert rc == ExitCode.OK, err
    assert f.versions() == {"app-01": TO}


def test_the_agents_version_rule_is_the_default_policys() -> None:
    ok = hosttrust.free_levels_only
    assert ok("7.0.4.1", "7.0.4.2") is None and ok("7.0.4.1", "7.0.5") is None and ok("V7.0.4.1_M1", "7.0.4.2") is None
    assert "level 2" in (ok("7.0.4.1", "7.1.0.0") or "") and "level 1" in (ok("7.0.4.1", "8.0.4.1") or "")
    assert "downgrade" in (ok("7.0.4.2", "7.0.4.1") or "")


def test_prepare_decides_again_on_the_trust_root_it_finds_before_stop(sandbox: Sandbox, tmp_path: Path,
                                                                      host_root: HostRoot) -> None:
    """The agent checks the evidence again when it prepares (before anything is staged or stopped): root replaces
    the trust root right after the lock was taken on it (an engineer removed, the fault plugin exchanges the directories;
    the lock itself checks the evidence too, round 7);
    the backup phase is refused (exit 4) naming the host's allowed_signers; the product, the service and the lock
    are as they were, nothing was staged."""
    import subprocess
    import sys

    from conftest import fault_env

    other = tmp_path / "other"
    assert main(["--home", str(sandbox.root), "keys", "generate", "other", "--dir", str(other)]) == 0
    spare = ROOT.with_name("host-trust.next")
    try:
        host_root([("other@vendor", other / "other")], [("vendor-release", sandbox.vendor_key)],
                  requesters=[("requester@customer", sandbox.requester_key)])
        ROOT.rename(spare)
        _operators_root(sandbox, host_root)
        rc, plan = plan_to(sandbox, TO)
        assert rc == 0
        approval = approve(sandbox, plan)
        before = pristine(sandbox)
        env = {k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_FAULT_")}
        env.update(fault_env(exchange_at="agent:replied:lock", exchange=(ROOT.parent, ROOT.name, spare.name, 0)))
        done = subprocess.run([sys.executable, "-m", "upgrader", "--home", str(sandbox.root), "run", str(plan),
                               "--approval", str(approval)], cwd=sandbox.root, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == ExitCode.APPROVAL_REFUSED, done.stderr
        assert "backup: host trust root" in done.stderr and "does not verify under this host's allowed_signers" \
            in done.stderr, done.stderr
        assert (spare / "allowed_signers").read_text().startswith("engineer@vendor")  # the exchange happened
        after = host_state(sandbox)
        assert after.product == before.product and after.pid == before.pid and after.version == "7.0.4.1"
        assert after.lock is None and after.staged == before.staged
        runs = state_dir(sandbox.install_dir) / "runs"
        assert not [p for p in runs.rglob("*") if p.name in ("staging", "backup", "package.tar.gz")]
    finally:
        shutil.rmtree(spare, ignore_errors=True)


# -- the requester is someone the host knows, and not the approver (gap 1) --------------------------------------

def _mallorys_home(box: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str], label: str) -> tuple[Path, Path]:
    """Mallory, an engineer the host trusts (key ``mallory``), makes a home of her own with the operator's policy
    and the real vendor's catalog, where a second key of hers (``second``) is a requester named ``label``; she signs
    the plan with the second key and approves it with her own. Her controller sees two people and accepts."""
    theirs = Sandbox(tmp_path / "mallory", box.port)
    theirs.root.mkdir()
    theirs.plans.mkdir()
    theirs.approvals.mkdir()
    for name in ("mallory", "second", "operator"):
        assert main(["--home", str(theirs.root), "keys", "generate", name, "--dir", str(theirs.keys)]) == 0
    signers = theirs.keys / "allowed_signers"
    add_signer(signers, "mallory@vendor", theirs.keys / "mallory", 'namespaces="upgrader-approval"')
    add_signer(signers, label, theirs.keys / "second", 'namespaces="upgrader-plan"')
    add_signer(signers, "mallory-ops@customer", theirs.keys / "operator", 'namespaces="upgrader-audit"')
    shutil.copy(box.keys / "vendor_signers", theirs.keys / "vendor_signers")
    theirs.policy.write_bytes(box.policy.read_bytes())
    plan, approval = _plan_approve(box, theirs, capsys, catalog=box.catalog, requester=theirs.keys / "second",
                                   engineer=theirs.keys / "mallory", as_="mallory@vendor")
    return plan, approval


@pytest.mark.parametrize("listed", ["not at all", "for approvals only"])
def test_a_plan_signed_with_a_key_the_host_does_not_list_as_a_requester_is_refused(
        sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str], host_root: HostRoot,
        listed: str) -> None:
    """A throwaway key of an engineer the host trusts signs the plan, her own key approves it: the host does not
    list the throwaway key for upgrader-plan (not at all, or only for approvals: the namespaces option is honoured)
    and refuses (exit 4) naming its allowed_signers; nothing on the host changed."""
    plan, approval = _mallorys_home(sandbox, tmp_path, capsys, "bob@customer")
    keys = tmp_path / "mallory" / "keys"
    engineers = [("mallory@vendor", keys / "mallory"), ("engineer@vendor", sandbox.engineer_key)]
    if listed == "for approvals only":
        engineers.append(("bob@customer", keys / "second"))
    host_root(engineers, [("vendor-release", sandbox.vendor_key)],
              requesters=[("requester@customer", sandbox.requester_key)])
    before = pristine(sandbox)
    rc, err = _run(Sandbox(tmp_path / "mallory", sandbox.port), plan, approval, capsys)
    assert rc == ExitCode.APPROVAL_REFUSED, err
    for words in (str(ROOT / "allowed_signers"), "does not list", "upgrader-plan", "cannot tell whose plan"):
        assert words in err, f"{words!r} not in {err}"
    _unchanged(sandbox, before)


def test_a_requester_and_an_approver_the_host_lists_as_the_same_person_is_a_self_approval(
        sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str], host_root: HostRoot) -> None:
    """The host lists Mallory's second key as her requester key (mallory@customer) and her own as an engineer
    (mallory@vendor); in her home the second key is "bob": two keys, one person by the controller's rule (the local
    part): the host refuses (exit 3, segregation of duties), nothing changed."""
    plan, approval = _mallorys_home(sandbox, tmp_path, capsys, "bob@customer")
    keys = tmp_path / "mallory" / "keys"
    host_root([("mallory@vendor", keys / "mallory")], [("vendor-release", sandbox.vendor_key)],
              requesters=[("mallory@customer", keys / "second")])
    before = pristine(sandbox)
    rc, err = _run(Sandbox(tmp_path / "mallory", sandbox.port), plan, approval, capsys)
    assert rc == ExitCode.POLICY_REFUSED, err
    for words in ("mallory@vendor and the requester mallory@customer", "same person", "segregation of duties"):
        assert words in err, f"{words!r} not in {err}"
    _unchanged(sandbox, before)


# -- resume sends the run's evidence; rollback needs none (gap 2) -------------------------------------------------

def test_resume_after_a_healthy_canary_sends_the_runs_evidence_and_rollback_needs_none(
        fleet: Callable[[int], Fleet], capsys: pytest.CaptureFixture[str], host_root: HostRoot,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Over the real sshd, both hosts keep the operator's trust root. The canary commits, app-02 waits before its
    preflight (nothing on it touched); `resume --yes` sends the evidence the run kept and app-02's root accepts it
    (exit 0, its host-trust record names the run). `rollback --yes` then restores both: no consent is asked for
    restoring the version a host ran before."""
    import io
    import sys

    f = fleet(2)
    box = f.box
    _operators_root(box, host_root)
    rc, plan = plan_to(box, TO)
    assert rc == 0
    approval = approve(box, plan)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    rc, err = cli(box, capsys, "run", str(plan), "--approval", str(approval), "--canary", "1")
    assert rc == ExitCode.OK, err
    assert f.versions() == {"app-01": TO, "app-02": "7.0.4.1"}
    (run_dir,) = f.run_dirs()
    assert (run_dir / "host-evidence.json").is_file()
    rc, err = cli(box, capsys, "resume", run_dir.name, "--yes")
    assert rc == ExitCode.OK, err
    assert f.versions() == {"app-01": TO, "app-02": TO}
    records = [json.loads(line) for line in
               (state_dir(f["app-02"].install_dir) / "host-trust.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(r["run"], r["outcome"], r["approvers"]) for r in records] == [(run_dir.name, "committed",
                                                                          ["engineer@vendor"])]
    rc, err = cli(box, capsys, "rollback", run_dir.name, "--yes")
    assert rc == ExitCode.OK, err
    assert f.versions() == {"app-01": "7.0.4.1", "app-02": "7.0.4.1"}


# -- the catalog serial the host reads from the signed bytes (gap 3) ----------------------------------------------

def test_the_host_compares_the_signed_catalogs_serial_with_its_ledger(
        sandbox: Sandbox, capsys: pytest.CaptureFixture[str], host_root: HostRoot) -> None:
    """The host reads the serial from the vendor-signed catalog bytes and compares it with its own ledger, whatever
    the controller checked: right after the controller read the host's facts (and found the serial current), the
    ledger records a newer serial (another controller's run ended meanwhile; the fault plugin exchanges the files):
    the host's trust root refuses before the lock (exit 4), naming both serials and the vendor; nothing staged,
    stopped or locked. An honest run then records the serial the host read from the signed bytes."""
    import re
    import subprocess
    import sys

    from conftest import fault_env

    serial = int(re.search(r"^serial: (\d+)$", (sandbox.catalog / "catalog.yaml").read_text(), re.M).group(1))
    _operators_root(sandbox, host_root)
    rc, plan = plan_to(sandbox, TO)
    assert rc == 0
    product = json.loads(plan.read_text())["hosts"][0]["product"]
    ledger = state_dir(sandbox.install_dir)
    ledger.mkdir(mode=0o700, exist_ok=True)
    from upgrader.hostagent.state import STATE_FORMAT, STATE_MARKER  # the agent's own state dir, as it marks one

    (ledger / STATE_MARKER).write_text(json.dumps({"format": STATE_FORMAT}), encoding="utf-8")
    (ledger / "catalog-serials.json").write_text(json.dumps({product: serial}), encoding="utf-8")
    (ledger / "catalog-serials.next").write_text(json.dumps({product: serial + 5}), encoding="utf-8")
    approval = approve(sandbox, plan)
    before = host_state(sandbox)
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_FAULT_")}
    env.update(fault_env(exchange_at="agent:replied:facts",
                         exchange=(ledger, "catalog-serials.json", "catalog-serials.next", 0)))
    done = subprocess.run([sys.executable, "-m", "upgrader", "--home", str(sandbox.root), "run", str(plan),
                           "--approval", str(approval)], cwd=sandbox.root, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == ExitCode.APPROVAL_REFUSED, done.stderr
    assert f"signed by vendor-release has serial {serial}, older than serial {serial + 5}" in done.stderr, done.stderr
    assert json.loads((ledger / "catalog-serials.json").read_text()) == {product: serial + 5}  # exchanged
    after = host_state(sandbox)
    assert after.product == before.product and after.pid == before.pid and after.version == "7.0.4.1"
    assert after.lock is None and after.staged == before.staged
    assert not [p for p in (ledger / "runs").rglob("*") if p.name in ("staging", "backup", "package.tar.gz")] \
        if (ledger / "runs").exists() else True
    (ledger / "catalog-serials.json").write_text(json.dumps({product: serial - 1}), encoding="utf-8")
    rc, err = cli(sandbox, capsys, "run", str(plan), "--approval", str(approval))
    assert rc == ExitCode.OK, err
    assert json.loads((ledger / "catalog-serials.json").read_text()) == {product: serial}
