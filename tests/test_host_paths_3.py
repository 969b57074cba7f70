"""Nothing outside the install dir, round 3: no directory above the install or the state dirs may be changed by
another account (the rule sshd's StrictModes applies to a home).

The attacker is a real local account (`nobody`) that can write the install dir's parent (or the directory an
inventory's state_dir lies in): it prepares `.A/packages/<sha256>.tar.gz.part -> <root-only file>` and swaps root's
`.upgrader-app-01` for a link to `.A` over and over while the run goes on, over the real sshd (the SFTP upload
writes by name) and locally (prepare's snapshot). Each run is refused before stop (exit 2) naming the directory
the account can write and its owner and mode; the root-only file outside is untouched, the host's state as it was.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from conftest import approve, fault_env, plan_to, upgrader
from hoststate import LEDGER, assert_host_untouched
from fleet import Fleet
from test_host_paths import host_state, last_result, last_run_id, run_cli
from test_swap_races import NOBODY, Toggler, as_attacker, give_to_nobody, run_child
from upgrader.hostagent.common import AgentError
from upgrader.hostagent.main import handle
from upgrader.hostagent.state import Paths, ancestor_problem, check_state_dir
from upgrader.cli.commands.demo import Sandbox
from upgrader.trust.package import file_digest
from upgrader.core.playbook import shipped_playbooks_dir

OLD, NEW, PATCH = "7.0.4.1", "7.0.4.2", "7.0.4.4"
SECRET = b"root's own configuration; nobody else may write it\n"


def root_only_file(tmp_path: Path) -> Path:
    d = tmp_path / "outside"
    d.mkdir(mode=0o700)
    victim = d / "important.conf"
    victim.write_bytes(SECRET)
    victim.chmod(0o600)
    return victim


def parent_given_to_the_service_account(box: Sandbox, victim: Path) -> tuple[Path, str]:
    """The install and its parent given to `nobody` (the round-2 model: the service account can write the install
    dir's parent), which parks `.A/packages/<sha256>.tar.gz.part -> victim` and `.upgrader-app-01.lnk -> .A`."""
    hosts = box.install_dir.parent
    give_to_nobody(box.install_dir)
    os.chown(hosts, NOBODY, NOBODY)
    sha = file_digest(box.catalog / f"sample-middleware-{NEW}.tar.gz")

    def prepare(d: int) -> None:
        os.mkdir(".A", 0o755, dir_fd=d)
        os.mkdir(".A/packages", 0o755, dir_fd=d)
        os.symlink(str(victim), f".A/packages/{sha}.tar.gz.part", dir_fd=d)
        os.symlink(".A", ".upgrader-app-01.lnk", dir_fd=d)

    assert as_attacker(hosts, prepare) == 0
    state = hosts / ".upgrader-app-01"
    if not state.exists():
        state.mkdir(mode=0o700)  # root's own state dir from an earlier run
    return hosts, sha


def assert_refused_naming(text: str, where: Path, uid: int) -> None:
    assert "Traceback" not in text
    assert f"below {where} (owned by uid {uid}" in text, text
    assert "StrictModes" in text


def run_while_swapping(box: Sandbox, capsys: pytest.CaptureFixture[str], hosts: Path, plan: Path,
                       approval: Path) -> tuple[int, str, int]:
    toggler = Toggler(hosts, ".upgrader-app-01", ".upgrader-app-01.lnk")
    try:
        rc, text = run_cli(box, capsys, "run", str(plan), "--approval", str(approval))
    finally:
        swaps = toggler.stop()
    return rc, text, swaps


def test_c4_over_ssh_the_package_upload_never_writes_through_a_state_dir_swapped_by_the_parents_owner(
        fleet, tmp_path):
    """Over the real sshd: the service account can write the install dir's parent and exchanges the state dir with
    a link to its own `.A` (whose packages/<sha256>.tar.gz.part leads to a root-only file) the moment the agent has
    answered receive_check, right before the SFTP upload (which writes by name). The run is refused in preflight
    (exit 2) naming the parent and its owner, before any package is sent: the exchange never comes, the root-only
    file keeps its bytes, the service its pid, the host its state."""
    f: Fleet = fleet(1)
    box = f.box
    victim = root_only_file(tmp_path)
    rc, plan = plan_to(box, NEW)  # planned while the parent was root's: a plan now is refused (exit 2)
    assert rc == 0
    approval = approve(box, plan)
    hosts, sha = parent_given_to_the_service_account(box, victim)
    assert plan_to(box, NEW)[0] == 2
    was = host_state(box.install_dir)
    done = run_child(box, "run", str(plan), "--approval", str(approval), env=fault_env(
        exchange_at="agent:replied:receive_check",
        exchange=(hosts, ".upgrader-app-01", ".upgrader-app-01.lnk", NOBODY)))
    text = done.stdout + done.stderr
    assert victim.read_bytes() == SECRET and stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert done.returncode == 2, text
    assert_refused_naming(text, hosts, NOBODY)
    assert not (hosts / ".upgrader-app-01").is_symlink()
    assert_host_untouched(was, host_state(box.install_dir))
    assert box.answers() == OLD
    (host,) = last_result(box)["hosts"]
    assert [p["phase"] for p in host["phases"]] == ["preflight"]


def test_c3_locally_prepare_never_writes_through_a_state_dir_swapped_by_the_parents_owner(sandbox, tmp_path,
                                                                                          capsys):
    """The same account swapping the state dir over and over while a local run would snapshot the install:
    refused in preflight (exit 2), nothing written into `.A` or the root-only file, the service keeps its pid."""
    victim = root_only_file(tmp_path)
    rc, plan = plan_to(sandbox, NEW)  # planned while the parent was root's
    assert rc == 0
    approval = approve(sandbox, plan)
    hosts, sha = parent_given_to_the_service_account(sandbox, victim)
    was = host_state(sandbox.install_dir)
    listing_a = sorted(os.listdir(hosts / ".A"))
    rc, text, swaps = run_while_swapping(sandbox, capsys, hosts, plan, approval)
    assert swaps > 0
    assert rc == 2, text
    assert_refused_naming(text, hosts, NOBODY)
    assert victim.read_bytes() == SECRET
    assert sorted(os.listdir(hosts / ".A")) == listing_a
    assert os.listdir(hosts / ".A" / "packages") == [f"{sha}.tar.gz.part"]
    assert_host_untouched(was, host_state(sandbox.install_dir))
    assert sandbox.answers() == OLD


def with_state_dir(box: Sandbox, state: Path) -> None:
    doc = yaml.safe_load(box.inventory.read_text())
    doc["hosts"]["app-01"]["state_dir"] = str(state)
    box.inventory.write_text(yaml.safe_dump(doc, sort_keys=False))


def test_c4n_a_state_dir_in_a_directory_nobody_can_write_is_refused_by_plan_and_run(sandbox, tmp_path, capsys):
    """`nobody`, who owns nothing of the install, made the directory the inventory keeps the state dir in (or it
    is group-writable): the run is refused in preflight naming that directory; nothing is written there."""
    victim = root_only_file(tmp_path)
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chown(shared, NOBODY, NOBODY)
    with_state_dir(sandbox, shared / "app-01")
    rc, text, plan = plan_text(sandbox, capsys)  # refused at plan time already (exit 2), naming the directory
    assert rc == 2, text
    assert_refused_naming(text, shared, NOBODY)
    assert not plan.exists()
    os.chown(shared, 0, 0)
    rc, plan = plan_to(sandbox, NEW)  # planned while it was root's, given to `nobody` before the run
    assert rc == 0
    approval = approve(sandbox, plan)
    os.chown(shared, NOBODY, NOBODY)
    was_pid = (sandbox.install_dir / "run" / "server.pid").read_text()
    rc, text = run_cli(sandbox, capsys, "run", str(plan), "--approval", str(approval))
    assert rc == 2, text
    assert_refused_naming(text, shared, NOBODY)
    assert os.listdir(shared) == []
    assert victim.read_bytes() == SECRET
    assert (sandbox.install_dir / "run" / "server.pid").read_text() == was_pid and sandbox.answers() == OLD
    (host,) = last_result(sandbox)["hosts"]
    assert [p["phase"] for p in host["phases"]] == ["preflight"]


def agent_lock(install: Path, state: Path | None) -> dict[str, Any]:
    return dict(handle({"op": "state", "install_dir": str(install), "state_dir": str(state) if state else None,
                        "run_id": None}))


def test_the_rule_for_group_writable_sticky_and_linked_ancestors(tmp_path):
    """Group-writable without the sticky bit: refused. A sticky, world-writable dir (like /tmp): accepted when
    the entry below it is root's, refused when it is another account's. A link on the way is followed and its
    own parent checked too: a root-owned link in a directory `nobody` can write is refused although its
    target is safe; the same link in a root-only dir is accepted."""
    safe = tmp_path / "safe"
    (safe / "hosts" / "app-01").mkdir(parents=True)
    assert ancestor_problem(str(safe / "hosts" / "app-01")) is None
    group = tmp_path / "group"
    group.mkdir()
    group.chmod(0o775)
    problem = ancestor_problem(str(group / "app-01" / ".upgrader-app-01"))
    assert problem is not None and f"below {group} (owned by uid 0, mode 775)" in str(problem)
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    (sticky / "mine").mkdir(mode=0o755)
    assert ancestor_problem(str(sticky / "mine" / ".upgrader-app-01")) is None
    assert as_attacker(sticky, lambda d: os.mkdir("theirs", 0o755, dir_fd=d)) == 0
    problem = ancestor_problem(str(sticky / "theirs" / ".upgrader-app-01"))
    assert problem is not None and f"below {sticky} (owned by uid 0, mode 1777)" in str(problem)
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    (open_dir / "hosts").symlink_to(safe / "hosts")
    os.chown(open_dir, NOBODY, NOBODY)
    problem = ancestor_problem(str(open_dir / "hosts" / "app-01"))
    assert problem is not None and f"below {open_dir} (owned by uid {NOBODY}" in str(problem)
    os.chown(open_dir, 0, 0)
    assert ancestor_problem(str(open_dir / "hosts" / "app-01")) is None
    # the check of every action: a state action on an install below the group-writable dir is refused
    (group / "app-01").mkdir()
    reply = agent_lock(group / "app-01", None)
    assert not reply["ok"] and reply["kind"] == "unsafe_path" and str(group) in reply["error"]
    with pytest.raises(AgentError):
        check_state_dir(Paths({"install_dir": str(safe / "hosts" / "app-01"), "state_dir": str(group / "st")}))
    check_state_dir(Paths({"install_dir": str(safe / "hosts" / "app-01")}))


def test_a_root_owned_layout_still_upgrades(sandbox, capsys):
    """The usual layout (every directory above the install root's, not writable by others) runs to the end."""
    rc, plan = plan_to(sandbox, NEW)
    assert rc == 0
    approval = approve(sandbox, plan)
    rc, text = run_cli(sandbox, capsys, "run", str(plan), "--approval", str(approval))
    assert rc == 0, text
    assert sandbox.answers() == NEW


# ---------------------------------------------------------------- C1: preflight.ascii_dirs


def ascii_playbook(box: Sandbox, dirs: list[str], var: str | None = None) -> None:
    """The operator's playbook: the shipped sample one plus a preflight check of upload names."""
    spec = yaml.safe_load((shipped_playbooks_dir() / "sample-middleware.yaml").read_text(encoding="utf-8"))
    spec["name"] = "uploads"
    spec["preflight"] = {"ascii_dirs": dirs}
    if var is not None:
        spec["vars"] = {**spec["vars"], "upload_dir": "data/deploy"}
    path = box.root / "playbooks" / "uploads.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True), encoding="utf-8")
    inv = yaml.safe_load(box.inventory.read_text(encoding="utf-8"))
    inv["hosts"]["app-01"]["playbook"] = "uploads"
    if var is not None:
        inv["hosts"]["app-01"].setdefault("vars", {})["upload_dir"] = var
    box.inventory.write_text(yaml.safe_dump(inv, sort_keys=False), encoding="utf-8")


SECRET_NAMES = ["薪资-2026-董事长.xlsx", "contrat-confidentiel-été.pdf", "plain.txt"]


def root_only_dir(tmp_path: Path) -> Path:
    d = tmp_path / "root-only"
    d.mkdir(mode=0o700)
    for n in SECRET_NAMES:
        (d / n).write_bytes(SECRET)
    return d


def plan_text(box: Sandbox, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, Path]:
    capsys.readouterr()
    rc, plan = plan_to(box, NEW)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out + err, plan


@pytest.mark.parametrize("value", ["../../root-only", "/etc", "data/../../x", "."])
def test_c1_an_ascii_dir_outside_the_install_is_refused_when_the_playbook_is_loaded(sandbox, capsys, value):
    ascii_playbook(sandbox, ["logs", value])
    rc, text, plan = plan_text(sandbox, capsys)
    assert rc == 2, text
    assert "ascii_dirs[1]" in text and "relative to the install dir" in text
    assert not plan.exists()


def test_c1_an_ascii_dir_that_leads_out_once_its_variable_is_substituted_is_refused_by_plan(sandbox, tmp_path,
                                                                                           capsys):
    root_only_dir(tmp_path)
    ascii_playbook(sandbox, ["${upload_dir}"], var="../../../root-only")
    rc, text, plan = plan_text(sandbox, capsys)
    assert rc == 2, text
    assert "preflight.ascii_dirs[0] is '../../../root-only'" in text
    assert not plan.exists()
    assert not any(n in text for n in SECRET_NAMES)


def test_c1_an_ascii_dir_the_service_account_made_a_link_out_is_refused_and_never_listed(sandbox, tmp_path, capsys):
    """The service account (nobody, owner of the install) makes data/deploy, a dir the playbook names, a link to a
    root-only directory: plan exits 2 naming the link; no name found there reaches the screen or a plan file."""
    secret = root_only_dir(tmp_path)
    ascii_playbook(sandbox, ["data/deploy"])
    give_to_nobody(sandbox.install_dir)
    assert as_attacker(sandbox.install_dir, lambda d: os.symlink(str(secret), "data/deploy", dir_fd=d)) == 0
    rc, text, plan = plan_text(sandbox, capsys)
    assert rc == 2, text
    assert "data/deploy" in text and str(secret) in text and "leads outside" in text
    assert not plan.exists()
    assert not any(n in text for n in SECRET_NAMES)
    # the agent alone, asked for the facts: nothing listed through the link
    reply = handle({"op": "facts", "install_dir": str(sandbox.install_dir), "state_dir": None,
                    "version_source": {"file": "lib/VERSION"}, "packages": [], "ascii_dirs": ["data/deploy"],
                    "check_paths": {"ascii_dirs": ["data/deploy"]}})
    assert reply["ok"], reply
    assert reply["result"]["non_ascii"] == []
    assert any("data/deploy" in p and "leads outside" in p for p in reply["result"]["unsafe_paths"])


def test_c1_an_ascii_dir_reached_through_a_link_inside_the_install_is_listed(sandbox):
    """A link that stays inside (data/deploy -> ../uploads) is followed as the file system would: its non-ASCII
    names are reported, read from descriptors."""
    (sandbox.install_dir / "uploads").mkdir()
    (sandbox.install_dir / "uploads" / "报表.war").write_bytes(b"x")
    (sandbox.install_dir / "uploads" / "plain.war").write_bytes(b"x")
    (sandbox.install_dir / "data" / "deploy").symlink_to("../uploads")
    reply = handle({"op": "facts", "install_dir": str(sandbox.install_dir), "state_dir": None,
                    "version_source": {"file": "lib/VERSION"}, "packages": [], "ascii_dirs": ["data/deploy"],
                    "check_paths": {"ascii_dirs": ["data/deploy"]}})
    assert reply["ok"], reply
    assert reply["result"]["non_ascii"] == ["data/deploy/报表.war"]
    assert reply["result"]["unsafe_paths"] == []


# ---------------------------------------------------------------- C7: a patch's link through the install's own


def hostile_patch_catalog(box: Sandbox, tmp_path: Path) -> Path:
    """The sandbox catalog plus patch 7.0.4.4 shipping `lib/esc -> up/../..` (inside, as far as the package alone
    says: `up` is not the package's)."""
    catalog = tmp_path / "catalog-with-patch"
    shutil.copytree(box.catalog, catalog)
    src = tmp_path / "patch-src" / "lib"
    src.mkdir(parents=True)
    (src / "VERSION").write_text(f"{PATCH}\n")
    (src / "esc").symlink_to("up/../..")
    pkg = catalog / f"sample-middleware-{PATCH}.tar.gz"
    assert upgrader(box, "package", "build", str(src.parent), "--product", "sample-middleware", "--version", PATCH,
                    "--kind", "patch", "--requires", f">={OLD}, <{PATCH}", "-o", str(pkg)) == 0
    doc = yaml.safe_load((catalog / "catalog.yaml").read_text())
    doc["packages"].append({"file": pkg.name, "product": "sample-middleware", "version": PATCH, "kind": "patch",
                            "requires": f">={OLD}, <{PATCH}", "sha256": file_digest(pkg),
                            "size": pkg.stat().st_size})
    (catalog / "catalog.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    assert upgrader(box, "catalog", "sign", str(catalog / "catalog.yaml"), "--key", str(box.vendor_key)) == 0
    return catalog


def test_c7_a_patch_link_that_climbs_out_through_the_installs_own_link_is_refused_before_stop(sandbox, tmp_path,
                                                                                              capsys):
    """The service account (nobody) adds `lib/up -> ..` to its install (inside: accepted); the patch's
    `lib/esc -> up/../..` laid over it would end above the install dir. The staged tree's links are resolved
    through the tree's own links after the overlay: the run exits 2 before stop naming lib/esc; the service keeps
    its pid, the install its files and version, no link above the install is installed."""
    catalog = hostile_patch_catalog(sandbox, tmp_path)
    give_to_nobody(sandbox.install_dir)
    # the sandbox's service runs as root and wrote its pid file: that file stays root's (a pid file of nobody's
    # naming a root process is refused at preflight for what it is, before the link this test is about)
    os.lchown(sandbox.install_dir / "run" / "server.pid", 0, 0)
    assert as_attacker(sandbox.install_dir, lambda d: os.symlink("..", "lib/up", dir_fd=d)) == 0
    rc, plan = plan_to(sandbox, PATCH, "--catalog", str(catalog))
    assert rc == 0
    approval = approve(sandbox, plan)
    was = host_state(sandbox.install_dir)
    rc, text = run_cli(sandbox, capsys, "run", str(plan), "--approval", str(approval))
    assert rc == 2, text
    assert "staged link lib/esc passes through the symlink lib/up -> .., which leads outside" in text, text
    run_dir = sandbox.install_dir.parent / ".upgrader-app-01" / "runs" / last_run_id(sandbox)
    assert_host_untouched(was, host_state(sandbox.install_dir), run_record=run_dir.name, appended=LEDGER)
    assert not (run_dir / "staging").exists() and not (run_dir / "backup").exists()  # the refused run's record
    assert sandbox.answers() == OLD
    assert not (sandbox.install_dir / "lib" / "esc").is_symlink()
    (host,) = last_result(sandbox)["hosts"]
    assert "stop" not in [p["phase"] for p in host["phases"]]


def test_c7_without_the_installs_link_the_same_patch_stays_inside_and_is_installed(sandbox, tmp_path, capsys):
    """Without `lib/up` the patch's `lib/esc -> up/../..` dangles inside the install (up/.. is lib, lib/.. the
    install dir): nothing leads out, the patch is installed."""
    catalog = hostile_patch_catalog(sandbox, tmp_path)
    rc, plan = plan_to(sandbox, PATCH, "--catalog", str(catalog))
    assert rc == 0
    approval = approve(sandbox, plan)
    rc, text = run_cli(sandbox, capsys, "run", str(plan), "--approval", str(approval))
    assert rc == 0, text
    assert sandbox.answers() == PATCH
