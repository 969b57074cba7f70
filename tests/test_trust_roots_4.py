"""Whose gate is it, round four: each weakness a fourth attack on the trust gate found, played as the attacker would
with the shipped CLI, real keys, a real catalog and the real sample middleware; each now ends in a refusal with its
exit code and message, and nothing on the host changed (product files, service pid and version, lock, staged
packages, the host's records, run records).

B1 a byte-identical copy of the operator's policy.yaml in the requester's own home, naming the requester's own
   allowed_signers beside it: the same policy file, other trust files; and a plan of an older upgrader that
   records only the policy file's sha256
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from conftest import plan_to, upgrader
from hoststate import assert_host_untouched
from trust_support import add_signer, approval_signed_anyway, cli, host_state, make_ssh_key, pristine, resigned
from upgrader.cli.commands.demo import Sandbox
from upgrader.cli import main
from upgrader.core.exit_codes import ExitCode
from upgrader.core.plan import load_plan, readable_json


def _both(box: Sandbox, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Run the real CLI in-process; its exit code and everything it printed (stdout and stderr)."""
    capsys.readouterr()
    rc = upgrader(box, *argv)
    out = capsys.readouterr()
    return rc, out.out + out.err


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- B1: the policy's identity covers its trust files


def _requesters_home(box: Sandbox, tmp_path: Path) -> tuple[Path, Path]:
    """The requester's own home: the operator's policy.yaml copied byte for byte, the operator's signer files beside
    it plus the requester's own key listed as an engineer. Returns (home, the requester's 'engineer' key)."""
    home = tmp_path / "requester-home"
    (home / "keys").mkdir(parents=True)
    shutil.copyfile(box.policy, home / "policy.yaml")
    for f in box.keys.iterdir():
        if f.name.endswith("signers"):
            shutil.copyfile(f, home / "keys" / f.name)
    mine = make_ssh_key(tmp_path / "mallory" / "id_ed25519", "ed25519", comment="mallory")
    add_signer(home / "keys" / "allowed_signers", "mallory@vendor", mine)
    assert _sha(home / "policy.yaml") == _sha(box.policy)
    return home, mine


def test_a_byte_identical_policy_naming_other_signer_files_is_another_policy(
        sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The requester plans in their own home whose policy.yaml is a byte-identical copy of the operator's, but whose
    allowed_signers (resolved beside that copy) lists the requester's own key. The policy file's sha256 is the
    operator's; its identity is not. The operator's plan show marks it DIFFERENT and prints each trust file with
    source and sha256; approve and run (with an approval the engineer signed anyway) refuse it (exit 4) naming
    approvals.allowed_signers with both sources and digests; the host is untouched."""
    home, _ = _requesters_home(sandbox, tmp_path)
    plan = sandbox.plans / "from-requester-home.json"
    capsys.readouterr()
    rc = main(["--home", str(home), "plan", "--inventory", str(sandbox.inventory), "--to", "7.0.4.2", "--catalog",
               str(sandbox.catalog), "-o", str(plan), "--key", str(sandbox.requester_key)])
    assert rc == ExitCode.OK, capsys.readouterr().err
    planned = load_plan(plan).data["policy"]
    assert planned["sha256"] == _sha(sandbox.policy)  # the policy file alone is the operator's
    theirs, ours = home / "keys" / "allowed_signers", sandbox.keys / "allowed_signers"
    by_key = {t["key"]: t for t in planned["trust_files"]}
    assert by_key["approvals.allowed_signers"] == {"key": "approvals.allowed_signers", "source": str(theirs),
                                                   "sha256": _sha(theirs), "state": "read"}
    assert by_key["window.holidays"]["state"] == "not set"

    before = pristine(sandbox)
    rc, shown = _both(sandbox, capsys, "plan", "show", str(plan))
    assert rc == ExitCode.OK
    assert "DIFFERENT: a run here refuses this plan (exit 4)" in shown
    for words in (f"trust file approvals.allowed_signers: {theirs}  sha256 {_sha(theirs)}",
                  f"trust file approvals.allowed_signers: {ours}  sha256 {_sha(ours)}",
                  "trust file window.holidays: not set"):
        assert words in shown, f"{words!r} not in {shown}"

    rc, err = cli(sandbox, capsys, "approve", str(plan), "--key", str(sandbox.engineer_key), "-o",
                  str(sandbox.approvals / "refused.approval"))
    assert rc == ExitCode.APPROVAL_REFUSED, err
    assert not (sandbox.approvals / "refused.approval").exists()

    approval = approval_signed_anyway(sandbox, plan)
    rc, err = cli(sandbox, capsys, "run", str(plan), "--approval", str(approval), "--canary", "1", "--yes")
    assert rc == ExitCode.APPROVAL_REFUSED, err
    for words in ("made under another policy", "approvals.allowed_signers", str(theirs), _sha(theirs), str(ours),
                  _sha(ours), "nothing was changed"):
        assert words in err, f"{words!r} not in {err}"
    assert "Traceback" not in err
    assert_host_untouched(before, host_state(sandbox))
    assert before.version == "7.0.4.1"


def test_a_plan_without_the_policy_identity_is_refused_with_make_it_again(
        sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """A plan as an older upgrader wrote it (the policy file's sha256 only, no identity, no trust files), signed by
    its requester: run refuses it (exit 4) saying to make the plan again; the host is untouched. The review says the
    trust files are not recorded."""
    rc, plan = plan_to(sandbox, "7.0.4.2")
    assert rc == ExitCode.OK
    data: dict[str, Any] = json.loads(plan.read_text(encoding="utf-8"))
    for key in ("identity", "trust_files"):
        del data["policy"][key]
    data.pop("signature", None)
    plan.write_text(readable_json(resigned(data, sandbox.root)), encoding="utf-8")
    approval = approval_signed_anyway(sandbox, plan)
    before = pristine(sandbox)
    rc, err = cli(sandbox, capsys, "run", str(plan), "--approval", str(approval), "--canary", "1", "--yes")
    assert rc == ExitCode.APPROVAL_REFUSED, err
    for words in ("records only its policy file", "older upgrader", "make and approve the plan again"):
        assert words in err, f"{words!r} not in {err}"
    rc, shown = _both(sandbox, capsys, "plan", "show", str(plan))
    assert "trust files: NOT RECORDED" in shown, shown
    assert_host_untouched(before, host_state(sandbox))


def test_the_review_prints_every_trust_file_and_a_changed_signer_file_refuses_the_run(
        sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """The operator's own plan: plan show prints each trust file with source and sha256 and says the policy here is
    the same. Then the approvers' allowed_signers changes (a line added, the policy file untouched): the run refuses
    the plan (exit 4), naming that file, its sha256 then and now; the host is untouched."""
    rc, plan = plan_to(sandbox, "7.0.4.2")
    assert rc == ExitCode.OK
    signers = sandbox.keys / "allowed_signers"
    then = _sha(signers)
    rc, shown = _both(sandbox, capsys, "plan", "show", str(plan))
    assert rc == ExitCode.OK
    assert f"trust file approvals.allowed_signers: {signers}  sha256 {then}" in shown
    assert f"trust file catalog.trusted_signers: {sandbox.keys / 'vendor_signers'}  sha256 " \
           f"{_sha(sandbox.keys / 'vendor_signers')}" in shown
    assert ": the same" in shown and "DIFFERENT" not in shown
    approval = approval_signed_anyway(sandbox, plan)
    with open(signers, "a", encoding="utf-8") as f:
        f.write("# one more line\n")
    before = pristine(sandbox)
    rc, err = cli(sandbox, capsys, "run", str(plan), "--approval", str(approval), "--canary", "1", "--yes")
    assert rc == ExitCode.APPROVAL_REFUSED, err
    assert f"approvals.allowed_signers: the plan's is {signers} (sha256 {then}), the operator's is {signers} " \
           f"(sha256 {_sha(signers)})" in err, err
    assert_host_untouched(before, host_state(sandbox))


# ---------------------------------------------------------------- B2: the inventory may not redirect vars_from values


def _inventory_with_port(box: Sandbox, directory: Path, port: str) -> Path:
    """The requester's inventory: the operator's, with app-01's port set to ``port`` (the requester's server)."""
    directory.mkdir(parents=True, exist_ok=True)
    inv = directory / "inventory.yaml"
    text = box.inventory.read_text(encoding="utf-8")
    assert f'      port: "{box.port}"\n' in text
    inv.write_text(text.replace(f'      port: "{box.port}"\n', f'      port: "{port}"\n'), encoding="utf-8")
    return inv


def test_an_inventory_port_other_than_the_installs_configuration_is_refused_at_plan_time(
        sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The playbook reads port from conf/server.conf; the requester's inventory says port "48999" (their own
    server, which answers /health whatever the release does). plan refuses (exit 2) naming the inventory key, the
    host and the configuration's value; no plan is written, nothing on the host changed. When the operator's policy
    lists port in rules.vars_override the plan is made, and the review shows both values."""
    inv = _inventory_with_port(sandbox, tmp_path / "requester", "48999")
    out = sandbox.plans / "redirected.json"
    before = pristine(sandbox)
    rc, shown = _both(sandbox, capsys, "plan", "--inventory", str(inv), "--to", "7.0.4.2", "--catalog",
                      str(sandbox.catalog), "-o", str(out))
    assert rc == ExitCode.BAD_INPUT, shown
    for words in (str(inv), "hosts.app-01.vars.port", "'48999'", "conf/server.conf",
                  f"says '{sandbox.port}'", "rules.vars_override"):
        assert words in shown, f"{words!r} not in {shown}"
    assert "Traceback" not in shown and not out.exists()
    assert_host_untouched(before, host_state(sandbox))

    # the legitimate case the operator allows: the service listens on the inventory's port, the file says another
    conf = sandbox.install_dir / "conf" / "server.conf"
    conf.write_text(conf.read_text(encoding="utf-8").replace(f"port = {sandbox.port}", "port = 48998"),
                    encoding="utf-8")
    rc, shown = _both(sandbox, capsys, "plan", "--inventory", str(sandbox.inventory), "--to", "7.0.4.2",
                      "--catalog", str(sandbox.catalog), "-o", str(out))
    assert rc == ExitCode.BAD_INPUT and "hosts.app-01.vars.port" in shown and "says '48998'" in shown, shown
    policy = sandbox.policy.read_text(encoding="utf-8")
    sandbox.policy.write_text(policy + "rules:\n  vars_override: [port]\n", encoding="utf-8")
    rc, shown = _both(sandbox, capsys, "plan", "--inventory", str(sandbox.inventory), "--to", "7.0.4.2",
                      "--catalog", str(sandbox.catalog), "-o", str(out))
    assert rc == ExitCode.OK, shown
    rc, shown = _both(sandbox, capsys, "plan", "show", str(out))
    assert rc == ExitCode.OK
    assert f"port = '{sandbox.port}' (inventory vars or --var) OVERRIDES the install's configuration: " \
           "conf/server.conf line 2 says '48998'" in shown, shown


def test_a_run_reads_the_configuration_again_and_refuses_a_value_that_moved(
        sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """A plan made while conf/server.conf said port N, approved; then the configuration says another port: the
    run reads the install's configuration again and refuses (exit 4) naming the variable, the file, both values;
    nothing on the host changed (beyond the edited configuration itself)."""
    rc, plan = plan_to(sandbox, "7.0.4.2")
    assert rc == ExitCode.OK
    assert load_plan(plan).hosts[0]["vars_read"]["port"]["value"] == str(sandbox.port)
    approval = approval_signed_anyway(sandbox, plan)
    conf = sandbox.install_dir / "conf" / "server.conf"
    text = conf.read_text(encoding="utf-8")
    assert f"port = {sandbox.port}" in text, text
    conf.write_text(text.replace(f"port = {sandbox.port}", "port = 48999"), encoding="utf-8")
    before = host_state(sandbox)
    assert before.version == "7.0.4.1"
    rc, err = cli(sandbox, capsys, "run", str(plan), "--approval", str(approval), "--canary", "1", "--yes")
    assert rc == ExitCode.APPROVAL_REFUSED, err
    assert f"app-01: port in conf/server.conf was '{sandbox.port}' when the plan was made, is '48999' now" in err, err
    assert "Traceback" not in err
    assert_host_untouched(before, host_state(sandbox))


# ---------------------------------------------------------------- B3: one install under other spellings


def _inventory_twice(box: Sandbox, directory: Path, install_dir: str, address: str = "local") -> Path:
    """The requester's inventory: app-01 as the operator's, plus app-01-b at ``address`` with ``install_dir``."""
    directory.mkdir(parents=True, exist_ok=True)
    inv = directory / "inventory.yaml"
    text = box.inventory.read_text(encoding="utf-8")
    start = text.index("  app-01:\n")
    end = text.index("groups:\n")
    second = text[start:end].replace("  app-01:\n", "  app-01-b:\n").replace(
        f"    install_dir: {box.install_dir}\n", f"    install_dir: {install_dir}\n").replace(
        "    address: local\n", f"    address: {address}\n")
    assert second != text[start:end]
    inv.write_text(text[:end] + second + text[end:].replace("demo: [app-01]", "demo: [app-01, app-01-b]"),
                   encoding="utf-8")
    return inv


@pytest.mark.parametrize("spelling", ["link", "double-slash", "dot"])
def test_the_same_install_under_another_spelling_is_one_install_at_plan_time(
        sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str], spelling: str) -> None:
    """The requester's inventory names the operator's install twice: app-01, and app-01-b through a symlink to the
    install dir (or spelt //dir, dir/./): plan refuses it as the same install, no plan written, nothing on the host
    changed."""
    link = tmp_path / "elsewhere" / "app"
    link.parent.mkdir()
    link.symlink_to(sandbox.install_dir)
    install = {"link": str(link), "double-slash": "/" + str(sandbox.install_dir),
               "dot": f"{sandbox.install_dir.parent}/./{sandbox.install_dir.name}/"}[spelling]
    inv = _inventory_twice(sandbox, tmp_path / "requester", install)
    out = sandbox.plans / "twice.json"
    before = pristine(sandbox)
    rc, shown = _both(sandbox, capsys, "plan", "--inventory", str(inv), "--to", "7.0.4.2", "--catalog",
                      str(sandbox.catalog), "-o", str(out))
    # the inventory's own check (exit 2) meets it first for the local transport; the host agent's identity check
    # (exit 4) meets what it cannot see (another address for the machine), as the run-time test below shows
    assert rc in (ExitCode.APPROVAL_REFUSED, ExitCode.BAD_INPUT), shown
    assert "same install" in shown and "app-01-b" in shown and "Traceback" not in shown and not out.exists(), shown
    assert_host_untouched(before, host_state(sandbox))


def _second_entry_through(sandbox: Sandbox, plan: Path, other: Path) -> Path:
    """The requester's edit: a second entry named app-01-b for the install reached as ``other``, put first (the
    canary), the plan signed again with their key, and an approval signed for it anyway."""
    import copy

    data: dict[str, Any] = json.loads(plan.read_text(encoding="utf-8"))
    b = copy.deepcopy(data["hosts"][0])
    b["name"], b["install_dir"] = "app-01-b", str(other)
    b["state_dir"] = str(other.parent / ".upgrader-app-b")
    b.pop("identity", None)
    data["hosts"].insert(0, b)
    data.pop("signature", None)
    plan.write_text(readable_json(resigned(data, sandbox.root)), encoding="utf-8")
    return approval_signed_anyway(sandbox, plan)


def test_a_plan_entry_edited_to_reach_the_install_through_a_bind_mount_is_refused_at_run_time(
        sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A genuine plan, plus a second entry the requester adds for the same install under another path (a bind
    mount: no link anywhere, another name): the run reads each host again and finds one machine and one
    (st_dev, st_ino): refused (exit 4), the host untouched."""
    import subprocess

    rc, plan = plan_to(sandbox, "7.0.4.2")
    assert rc == ExitCode.OK
    other = tmp_path / "elsewhere" / "app"
    other.mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(sandbox.install_dir), str(other)], check=True)
    try:
        approval = _second_entry_through(sandbox, plan, other)
        before = pristine(sandbox)
        rc, err = cli(sandbox, capsys, "run", str(plan), "--approval", str(approval), "--canary", "1", "--yes")
        assert rc == ExitCode.APPROVAL_REFUSED, err
        assert "is the same install as" in err and "app-01-b" in err and "machine-id" in err, err
        assert_host_untouched(before, host_state(sandbox))
    finally:
        subprocess.run(["umount", str(other)], check=True)


def test_a_plan_entry_edited_to_reach_the_install_through_a_symlink_is_refused_at_run_time(
        sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same edit through a symlink: the host refuses an install dir that is a link before it reads anything
    (issue 14's rule: exit 2, naming the link); that entry is the canary, so the run ends there, the host
    untouched."""
    rc, plan = plan_to(sandbox, "7.0.4.2")
    assert rc == ExitCode.OK
    link = tmp_path / "elsewhere" / "app"
    link.parent.mkdir()
    link.symlink_to(sandbox.install_dir)
    approval = _second_entry_through(sandbox, plan, link)
    before = pristine(sandbox)
    rc, err = cli(sandbox, capsys, "run", str(plan), "--approval", str(approval), "--canary", "1", "--yes")
    assert rc == ExitCode.BAD_INPUT, err
    assert str(link) in err and "link" in err, err
    after = host_state(sandbox)  # the host as it was; only the controller's journal of the refused run is new
    assert dataclasses.replace(after, home_runs=before.home_runs) == before
    assert after.home_runs != before.home_runs


@pytest.mark.parametrize("address", ["0.0.0.0", "::ffff:127.0.0.1", "[::1]", "127.0.0.2", "LOCALHOST."])
def test_every_spelling_of_this_machine_and_of_a_directory_is_one_install_key(address: str) -> None:
    import socket

    from upgrader.core.plan import install_key

    want = install_key({"address": "127.0.0.1", "install_dir": "/opt/x"})
    assert install_key({"address": address, "install_dir": "//opt/./x/"}) == want
    assert install_key({"address": socket.gethostname(), "install_dir": "/opt/x"}) == want
    assert install_key({"address": "10.0.0.1", "install_dir": "/opt/x"}) != want


# ---------------------------------------------------------------- B4: approve --as with a key the policy does not list


def test_approve_as_a_name_with_a_key_not_listed_is_refused_before_writing(
        sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A key the operator's allowed_signers does not list at all, `approve --as engineer@vendor`: refused (exit 4)
    naming the key and the signers file, and no approval file is written."""
    key = make_ssh_key(tmp_path / "stranger" / "id_ed25519", "ed25519", comment="stranger")
    rc, plan = plan_to(sandbox, "7.0.4.2")
    assert rc == ExitCode.OK
    out = sandbox.approvals / "stranger.approval"
    before = sorted(p.name for p in sandbox.approvals.iterdir())
    rc, err = cli(sandbox, capsys, "approve", str(plan), "--key", str(key), "--as", "engineer@vendor", "-o", str(out))
    assert rc == ExitCode.APPROVAL_REFUSED, err
    assert "is not listed in" in err and str(sandbox.keys / "allowed_signers") in err, err
    assert not out.exists() and sorted(p.name for p in sandbox.approvals.iterdir()) == before


def test_diagnostics_take_the_inspect_block_of_the_operators_playbook_not_the_plans_path(tmp_path: Path) -> None:
    """A plan entry names a playbook file of the requester's (its sha256 matching that file) whose inspect: block
    collects other files into the diagnostics bundle: the bundle's playbook is the operator's of that name (the
    shipped sample-middleware, without such a block), never the file the plan names."""
    from upgrader.core.playbook import load_operator_playbook
    from upgrader.customer.diagnostics import _spec_playbook

    home = tmp_path / "home"
    home.mkdir()
    shipped, _ = load_operator_playbook("sample-middleware", home)
    theirs = tmp_path / "requester" / "sample-middleware.yaml"
    theirs.parent.mkdir()
    theirs.write_text(shipped.path.read_text(encoding="utf-8") + "\ninspect:\n  configs: ['conf/*', 'data/*']\n",
                      encoding="utf-8")
    h = {"name": "app-01", "product": "sample-middleware",
         "playbook": {"name": "sample-middleware", "path": str(theirs), "sha256": _sha(theirs), "spec": shipped.spec}}
    pb = _spec_playbook(h, home)
    assert pb.inspect == {} and "configs" not in pb.inspect
    h["playbook"]["sha256"] = shipped.digest  # the plan made with the operator's playbook: its block is used
    assert _spec_playbook(h, home).inspect == shipped.inspect
