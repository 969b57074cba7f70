"""Nothing outside the install dir, ever: paths on the host are resolved physically, after `${var}` substitution.

Attacks through the shipped CLI: a patch whose `remove:` entry lies under a directory symlink that leads
out of the install dir (`extras -> /somewhere`), an inventory variable that points a pid file or a log
probe outside (by name, or through a link made after the plan), a cached package changed on the host
(the cached host agent: tests/test_hostagent_bundle.py), and a `~/.ssh` swapped for a link while
authorized_keys is edited. Each refusal comes before stop (exit 2), names the path and the link, leaves
the canary file outside as it was, the service running with the same pid, and the host's state (lock,
staged runs and packages, product files) unchanged; the tampered cache is thrown away and sent again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from conftest import approve, plan_to, upgrader
from fleet import Fleet
from hoststate import LEDGER, HostState, assert_host_untouched, lock_audit, take_lock
from hoststate import host_state as whole_host_state
from upgrader.hostagent.access import open_ssh_dir, replace_authorized_keys
from upgrader.hostagent.beneath import move_beneath, remove_beneath
from upgrader.hostagent.common import AgentError
from upgrader.hostagent.files import append_line_nofollow, read_json, write_json_atomic
from upgrader.hostagent.inspection import config_facts, inside_globs
from upgrader.hostagent.main import handle
from upgrader.hostagent.manifests import copy_tree, scan_tree, snapshot
from upgrader.cli.commands.demo import Sandbox
from upgrader.trust.package import file_digest
from upgrader.core.playbook import shipped_playbooks_dir

OLD, PATCH = "7.0.4.1", "7.0.4.4"
CANARY = b"the customer's file outside the install dir\n"


def state_dir(install: Path) -> Path:
    return install.parent / f".upgrader-{install.name}"


def host_state(install: Path) -> HostState:
    """The whole host a refusal must leave as it was (tests/hoststate.py): product files (links included), the
    service's pid and start time, the agent's state dir (lock, runs, packages, ledger)."""
    return whole_host_state(install)


def outside(tmp_path: Path) -> Path:
    """A directory outside the install dir holding the canary file the attacks aim at."""
    d = tmp_path / "somewhere"
    d.mkdir(exist_ok=True)
    (d / "victim.txt").write_bytes(CANARY)
    (d / "server.pid").write_bytes(CANARY)
    (d / "server.log").write_bytes(CANARY)
    return d


def run_cli(box: Sandbox, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    rc = upgrader(box, *argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out + err


def last_result(box: Sandbox) -> dict[str, Any]:
    runs = sorted((box.root / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    return dict(json.loads((runs[-1] / "result.json").read_text()))


def last_run_id(box: Sandbox) -> str:
    """The id of the last run made in the sandbox home (its run directory's name)."""
    return max((box.root / "runs").iterdir(), key=lambda p: p.stat().st_mtime).name


def assert_refused_before_stop(box: Sandbox, was: HostState, somewhere: Path) -> None:
    assert_host_untouched(was, host_state(box.install_dir))
    assert box.answers() == OLD
    assert (somewhere / "victim.txt").read_bytes() == CANARY
    assert all((somewhere / n).read_bytes() == CANARY for n in ("server.pid", "server.log"))
    (host,) = last_result(box)["hosts"]
    assert host["outcome"] == "bad_input"
    assert [p["phase"] for p in host["phases"]] == ["preflight"], "a phase after preflight ran"


# ---------------------------------------------------------------- a patch's remove: through a symlinked directory


def patch_catalog(box: Sandbox, tmp_path: Path) -> Path:
    """A copy of the sandbox catalog plus patch 7.0.4.4 (requires >=7.0.4.1) whose remove list names extras/victim.txt."""
    catalog = tmp_path / "catalog-with-patch"
    shutil.copytree(box.catalog, catalog)
    src = tmp_path / "patch-src" / "lib"
    src.mkdir(parents=True)
    (src / "VERSION").write_text(f"{PATCH}\n")
    pkg = catalog / f"sample-middleware-{PATCH}.tar.gz"
    assert upgrader(box, "package", "build", str(src.parent), "--product", "sample-middleware", "--version", PATCH,
                    "--kind", "patch", "--requires", ">=7.0.4.1, <7.0.4.4", "--remove", "extras/victim.txt",
                    "-o", str(pkg)) == 0
    doc = yaml.safe_load((catalog / "catalog.yaml").read_text())
    doc["packages"].append({"file": pkg.name, "product": "sample-middleware", "version": PATCH, "kind": "patch",
                            "requires": ">=7.0.4.1, <7.0.4.4", "sha256": file_digest(pkg),
                            "size": pkg.stat().st_size})
    (catalog / "catalog.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    assert upgrader(box, "catalog", "sign", str(catalog / "catalog.yaml"), "--key", str(box.vendor_key)) == 0
    return catalog


def test_plan_of_a_patch_removing_through_a_symlinked_dir_is_refused(sandbox, tmp_path, capsys):
    """extras -> a directory outside: planning the patch that removes extras/victim.txt exits 2 naming the link."""
    somewhere = outside(tmp_path)
    (sandbox.install_dir / "extras").symlink_to(somewhere)
    catalog = patch_catalog(sandbox, tmp_path)
    was = host_state(sandbox.install_dir)
    rc, text = run_cli(sandbox, capsys, "plan", "--inventory", str(sandbox.inventory), "--to", PATCH, "--catalog",
                       str(catalog), "-o", str(sandbox.plans / "patch.json"))
    assert rc == 2, text
    assert f"extras -> {somewhere}" in text and "extras/victim.txt" in text
    assert not (sandbox.plans / "patch.json").exists()
    assert_host_untouched(was, host_state(sandbox.install_dir))
    assert (somewhere / "victim.txt").read_bytes() == CANARY


def test_run_of_a_patch_removing_through_a_dir_swapped_for_a_symlink_is_refused_before_stop(sandbox, tmp_path,
                                                                                              capsys):
    """extras is a plain directory at plan time, a link outside at run time: run exits 2 in preflight, the file
    outside is not deleted, the service never stopped, the host's state unchanged."""
    somewhere = outside(tmp_path)
    (sandbox.install_dir / "extras").mkdir()
    (sandbox.install_dir / "extras" / "victim.txt").write_text("the installed file\n")
    catalog = patch_catalog(sandbox, tmp_path)
    rc, plan = plan_to(sandbox, PATCH, "--catalog", str(catalog))
    assert rc == 0
    approval = approve(sandbox, plan)
    shutil.rmtree(sandbox.install_dir / "extras")
    (sandbox.install_dir / "extras").symlink_to(somewhere)
    was = host_state(sandbox.install_dir)
    rc, text = run_cli(sandbox, capsys, "run", str(plan), "--approval", str(approval))
    assert rc == 2, text
    assert f"extras -> {somewhere}" in text
    assert_refused_before_stop(sandbox, was, somewhere)


def test_over_ssh_a_patch_removing_through_a_dir_swapped_for_a_symlink_is_refused_before_stop(fleet, tmp_path,
                                                                                               capsys):
    """The same attack on a host reached over the real sshd: run exits 2 in preflight, before the package is even
    sent; the file outside is kept, the service never stopped, the host's state unchanged."""
    f: Fleet = fleet(1)
    box = f.box
    somewhere = outside(tmp_path)
    (box.install_dir / "extras").mkdir()
    (box.install_dir / "extras" / "victim.txt").write_text("the installed file\n")
    catalog = patch_catalog(box, tmp_path)
    rc, plan = plan_to(box, PATCH, "--catalog", str(catalog))
    assert rc == 0
    approval = approve(box, plan)
    shutil.rmtree(box.install_dir / "extras")
    (box.install_dir / "extras").symlink_to(somewhere)
    was = host_state(box.install_dir)
    rc, text = run_cli(box, capsys, "run", str(plan), "--approval", str(approval))
    assert rc == 2, text
    assert f"extras -> {somewhere}" in text
    assert_refused_before_stop(box, was, somewhere)


def test_the_agent_alone_refuses_a_remove_through_a_symlinked_dir(sandbox, tmp_path):
    """The agent's prepare, sent the patch without any controller check, refuses (unsafe_path) and deletes nothing."""
    somewhere = outside(tmp_path)
    (sandbox.install_dir / "extras").symlink_to(somewhere)
    catalog = patch_catalog(sandbox, tmp_path)
    pkg = catalog / f"sample-middleware-{PATCH}.tar.gz"
    base = {"install_dir": str(sandbox.install_dir), "state_dir": None}
    assert take_lock(lambda op, **req: handle({"op": op, **base, **req}), "remove-1")["ok"]  # as a run does first
    was = host_state(sandbox.install_dir)
    reply = handle({"op": "prepare", "install_dir": str(sandbox.install_dir), "state_dir": None,
                          "run_id": "remove-1", "package_path": str(pkg), "sha256": file_digest(pkg),
                          "size": pkg.stat().st_size, "limits": {}, "kind": "patch", "remove": ["extras/victim.txt"],
                          "preserve": [], "current_version": OLD})
    assert reply["ok"] is False and reply["kind"] == "unsafe_path"
    assert "extras" in reply["error"] and str(somewhere) in reply["error"]
    assert (somewhere / "victim.txt").read_bytes() == CANARY
    assert_host_untouched(was, host_state(sandbox.install_dir), run_record="remove-1")  # its action lock only


def test_remove_beneath_never_deletes_through_a_link_even_inside_a_copy(tmp_path):
    """remove_beneath on a tree whose directory is a link outside refuses; a final link is removed, not followed."""
    somewhere = outside(tmp_path)
    root = tmp_path / "tree"
    root.mkdir()
    (root / "extras").symlink_to(somewhere)
    (root / "own").symlink_to(somewhere / "victim.txt")
    with pytest.raises(AgentError) as e:
        remove_beneath(str(root), "extras/victim.txt", "the patch's remove entry")
    assert e.value.kind == "unsafe_path"
    assert remove_beneath(str(root), "own", "the patch's remove entry") is True
    assert not os.path.lexists(root / "own")
    assert (somewhere / "victim.txt").read_bytes() == CANARY


# ---------------------------------------------------------------- pid files and log probes from inventory variables


def templated_playbook(box: Sandbox) -> None:
    """The sample playbook with its pid file and log probe taken from variables (defaults as shipped)."""
    spec = yaml.safe_load((shipped_playbooks_dir() / "sample-middleware.yaml").read_text(encoding="utf-8"))
    spec["name"] = "templated"
    spec["vars"] = {**spec["vars"], "pid_file": "run/server.pid", "server_log": "logs/server.log"}
    spec["stop"]["pid_file"] = "${pid_file}"
    spec["observe"]["window"] = "0.5s"
    for probe in spec["observe"]["probes"]:
        if probe["type"] == "process":
            probe["pid_file"] = "${pid_file}"
        if probe["type"] == "log":
            probe["file"] = "${server_log}"
    path = box.root / "playbooks" / "templated.yaml"  # the operator's playbooks: HOME/playbooks
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    inv = yaml.safe_load(box.inventory.read_text(encoding="utf-8"))
    inv["hosts"]["app-01"]["playbook"] = "templated"
    box.inventory.write_text(yaml.safe_dump(inv, sort_keys=False), encoding="utf-8")


def set_var(box: Sandbox, name: str, value: str) -> None:
    inv = yaml.safe_load(box.inventory.read_text(encoding="utf-8"))
    inv["hosts"]["app-01"]["vars"][name] = value
    box.inventory.write_text(yaml.safe_dump(inv, sort_keys=False), encoding="utf-8")


@pytest.mark.parametrize("var, value, key", [
    ("pid_file", "../../../somewhere/server.pid", "stop.pid_file"),
    ("pid_file", "{somewhere}/server.pid", "stop.pid_file"),
    ("server_log", "logs/../../../somewhere/server.log", "observe.probes[4].file"),
    ("server_log", "{somewhere}/server.log", "observe.probes[4].file"),
])
def test_inventory_variable_pointing_a_pid_file_or_log_probe_outside_is_refused_by_plan(sandbox, tmp_path, capsys,
                                                                                        var, value, key):
    """A ${var} whose inventory value is absolute or climbs: plan exits 2 naming the key, the host and the inventory."""
    somewhere = outside(tmp_path)
    templated_playbook(sandbox)
    set_var(sandbox, var, value.format(somewhere=somewhere))
    was = host_state(sandbox.install_dir)
    rc, text = run_cli(sandbox, capsys, "plan", "--inventory", str(sandbox.inventory), "--to", "7.0.4.2",
                       "--catalog", str(sandbox.catalog), "-o", str(sandbox.plans / "p.json"))
    assert rc == 2, text
    assert key in text and "app-01" in text and str(sandbox.inventory) in text
    assert_host_untouched(was, host_state(sandbox.install_dir))
    assert (somewhere / "server.pid").read_bytes() == CANARY


@pytest.mark.parametrize("var, file", [("pid_file", "server.pid"), ("server_log", "server.log")])
def test_inventory_variable_through_a_link_outside_is_refused_by_plan(sandbox, tmp_path, capsys, var, file):
    """A ${var} naming state/<file> where state -> a directory outside: plan exits 2 naming the link."""
    somewhere = outside(tmp_path)
    templated_playbook(sandbox)
    (sandbox.install_dir / "state").symlink_to(somewhere)
    set_var(sandbox, var, f"state/{file}")
    was = host_state(sandbox.install_dir)
    rc, text = run_cli(sandbox, capsys, "plan", "--inventory", str(sandbox.inventory), "--to", "7.0.4.2",
                       "--catalog", str(sandbox.catalog), "-o", str(sandbox.plans / "p.json"))
    assert rc == 2, text
    assert f"state -> {somewhere}" in text and f"state/{file}" in text
    assert_host_untouched(was, host_state(sandbox.install_dir))


def test_log_probe_dir_swapped_for_a_link_after_the_plan_is_refused_before_stop(sandbox, tmp_path, capsys):
    """The log probe's directory is plain at plan time and a link outside at run time: run exits 2 in preflight."""
    somewhere = outside(tmp_path)
    templated_playbook(sandbox)
    (sandbox.install_dir / "audit").mkdir()
    set_var(sandbox, "server_log", "audit/server.log")
    rc, plan = plan_to(sandbox, "7.0.4.2")
    assert rc == 0
    approval = approve(sandbox, plan)
    (sandbox.install_dir / "audit").rmdir()
    (sandbox.install_dir / "audit").symlink_to(somewhere)
    was = host_state(sandbox.install_dir)
    rc, text = run_cli(sandbox, capsys, "run", str(plan), "--approval", str(approval))
    assert rc == 2, text
    assert f"audit -> {somewhere}" in text and "log file audit/server.log" in text
    assert_refused_before_stop(sandbox, was, somewhere)


def test_the_agent_reads_no_pid_file_through_a_link_outside(sandbox, tmp_path):
    """The agent's stop, asked directly with a pid file under a link outside, refuses rather than reading it."""
    somewhere = outside(tmp_path)
    (somewhere / "server.pid").write_text(f"{os.getpid()}\n")
    (sandbox.install_dir / "state").symlink_to(somewhere)
    base = {"install_dir": str(sandbox.install_dir), "state_dir": None}
    assert take_lock(lambda op, **req: handle({"op": op, **base, **req}), "pid-link-1")["ok"]  # as a run does first
    reply = handle({"op": "stop", **base, "run_id": "pid-link-1",
                    "stop": {"command": "true", "pid_file": "state/server.pid", "timeout": 1}})
    assert reply["ok"] is False and reply["kind"] == "unsafe_path"
    assert f"state -> {somewhere}" in reply["error"]
    assert sandbox.answers() == OLD


# ---------------------------------------------------------------- cached packages, re-checked


def test_a_cached_package_changed_on_the_host_is_sent_again_and_the_run_succeeds(fleet, capsys):
    """Over the real sshd: packages/<sha256>.tar.gz replaced on the host by other bytes of the same size is not
    used: it is thrown away, the true package sent again, and the upgrade commits (exit 0)."""
    f: Fleet = fleet(1)
    host = f.hosts[0]
    rc, plan = plan_to(f.box, "7.0.4.2")
    assert rc == 0
    pkg_entry = json.loads(plan.read_text())["hosts"][0]["package"]
    cached = state_dir(host.install_dir) / "packages" / f"{pkg_entry['sha256']}.tar.gz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"\0" * int(pkg_entry["size"]))  # same size: only the digest tells them apart
    rc = upgrader(f.box, "run", str(plan), "--approval", str(approve(f.box, plan)))
    assert rc == 0, capsys.readouterr()
    assert host.answers() == "7.0.4.2"
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == pkg_entry["sha256"]


# ---------------------------------------------------------------- ~/.ssh edited from descriptors


def test_access_grant_refuses_a_ssh_dir_that_is_a_link(tmp_path, monkeypatch, capsys):
    """~/.ssh -> another account's directory: `access grant` exits 2 and writes nothing there."""
    home = tmp_path / "home"
    home.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (home / ".ssh").symlink_to(elsewhere)
    monkeypatch.setenv("HOME", str(home))
    pub = tmp_path / "engineer.pub"
    pub.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq0Vt7pyC3qJz2Ph9bqKvc9yqfB6Dfsl2Q4lqg9X9qk engineer@vendor\n")
    from upgrader.cli import main

    capsys.readouterr()
    rc = main(["--home", str(tmp_path / "state"), "access", "grant", "--key", str(pub), "--hours", "1",
               "--reason", "ticket 1"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "not a plain directory" in err
    assert list(elsewhere.iterdir()) == []


def test_authorized_keys_is_written_into_the_directory_opened_even_if_it_is_swapped_for_a_link(tmp_path):
    """Once ~/.ssh is open, swapping it for a link to elsewhere does not redirect the write: the new file lands in
    the directory that was opened (moved aside), never in the link's target."""
    import pwd

    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    pw = pwd.getpwuid(os.geteuid())
    fd = open_ssh_dir(pw, str(home / ".ssh"), create=False)
    try:
        os.rename(home / ".ssh", home / "moved")
        (home / ".ssh").symlink_to(elsewhere)
        replace_authorized_keys(fd, str(home / ".ssh" / "authorized_keys"), b"ssh-ed25519 AAAA x\n", None, pw)
    finally:
        os.close(fd)
    assert list(elsewhere.iterdir()) == []
    assert (home / "moved" / "authorized_keys").read_bytes() == b"ssh-ed25519 AAAA x\n"
    assert oct((home / "moved" / "authorized_keys").stat().st_mode & 0o777) == oct(0o600)


# ---------------------------------------------------------------- inspect reads nothing through a link outside


def test_inspect_globs_leave_out_files_reached_through_links_outside(tmp_path):
    """Config and log globs skip a file linked outside and a directory linked outside; the files inside remain."""
    somewhere = outside(tmp_path)
    root = tmp_path / "app"
    (root / "conf").mkdir(parents=True)
    (root / "conf" / "server.conf").write_text("port = 1\n")
    (root / "conf" / "evil.conf").symlink_to(somewhere / "victim.txt")
    (root / "conf" / "inner.conf").symlink_to("server.conf")
    (root / "logs").symlink_to(somewhere)
    assert inside_globs(str(root), ["conf/*.conf", "logs/*"]) == ["conf/inner.conf", "conf/server.conf"]
    with pytest.raises(AgentError) as e:
        config_facts(str(root), "conf/evil.conf", True)
    assert e.value.kind == "unsafe_path" and str(somewhere) in str(e.value)


# ---------------------------------------------------------------- preserved paths moved from descriptors (attack 14b)


def hostile_full_catalog(box: Sandbox, tmp_path: Path, version: str, links: dict[str, str]) -> Path:
    """A copy of the sandbox catalog plus full package ``version``: 7.0.4.2's files and the symlinks ``links``
    (each one inside on its own, as `package verify` accepts it)."""
    import tarfile

    catalog = tmp_path / "catalog-hostile"
    shutil.copytree(box.catalog, catalog)
    src = tmp_path / "hostile-src"
    src.mkdir()
    with tarfile.open(catalog / "sample-middleware-7.0.4.2.tar.gz") as tar:
        tar.extractall(src, filter="data")
    (src / "package.yaml").unlink()
    (src / "lib" / "VERSION").write_text(f"{version}\n")
    for name, target in links.items():
        (src / name).symlink_to(target)
    pkg = catalog / f"sample-middleware-{version}.tar.gz"
    assert upgrader(box, "package", "build", str(src), "--product", "sample-middleware", "--version", version,
                    "--kind", "full", "-o", str(pkg)) == 0
    doc = yaml.safe_load((catalog / "catalog.yaml").read_text())
    doc["packages"].append({"file": pkg.name, "product": "sample-middleware", "version": version, "kind": "full",
                            "sha256": file_digest(pkg), "size": pkg.stat().st_size, "changes": []})
    (catalog / "catalog.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    assert upgrader(box, "catalog", "sign", str(catalog / "catalog.yaml"), "--key", str(box.vendor_key)) == 0
    assert upgrader(box, "package", "verify", str(pkg), "--catalog", str(catalog)) == 0
    return catalog


def preserving_playbook(box: Sandbox, *extra: str) -> None:
    spec = yaml.safe_load((shipped_playbooks_dir() / "sample-middleware.yaml").read_text(encoding="utf-8"))
    spec["name"] = "preserving"
    spec["preserve"] += [{"path": p, "kind": "data"} for p in extra]
    path = box.root / "playbooks" / "preserving.yaml"  # the operator's playbooks: HOME/playbooks
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    inv = yaml.safe_load(box.inventory.read_text(encoding="utf-8"))
    inv["hosts"]["app-01"]["playbook"] = "preserving"
    box.inventory.write_text(yaml.safe_dump(inv, sort_keys=False), encoding="utf-8")


def tree_listing(root: Path) -> dict[str, Any]:
    """Every name under root (links not followed) with its bytes or link target: a before/after comparison."""
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            out[rel] = ("link", os.readlink(p)) if p.is_symlink() else \
                ("dir", p.stat().st_mode) if p.is_dir() else ("file", p.read_bytes(), p.stat().st_uid)
    return out


@pytest.mark.parametrize("links, preserve, live_links", [
    # a link inside the preserved data dir, reached through a package link: q/c would land outside
    ({"q": "data/archive"}, "q/c", {"data/archive": "{somewhere}"}),
    # a preserved link that climbs back through package links (d1 -> .) in the new tree
    ({"d1": ".", "q": "p/somewhere"}, "q/victim.txt", {"p": "d1/d1/d1/d2/../../../.."}),
])
def test_a_package_link_on_a_preserved_paths_way_is_refused_before_stop(sandbox, tmp_path, capsys, request, links,
                                                                         preserve, live_links):
    """A package whose symlinks (each inside on its own) put a link above a preserved path in the new tree: the
    run exits 2 before stop, nothing outside written, moved or deleted, the host as it was. The live link's target
    is in a directory of root's alone (/run), not under the world-writable /tmp: a link out to a place another
    account can change is refused at plan already by the whole-tree rule (tests/test_host_paths_18.py)."""
    place = Path(tempfile.mkdtemp(prefix="upgrader-hp-", dir="/run"))
    request.addfinalizer(lambda: shutil.rmtree(place, ignore_errors=True))
    somewhere = outside(place)
    inst = sandbox.install_dir
    for name, target in live_links.items():
        if name == "p":
            (inst / "d1" / "d1" / "d1" / "d2").mkdir(parents=True)
        (inst / name).symlink_to(target.format(somewhere=somewhere))
    (inst / preserve).parent.mkdir(parents=True, exist_ok=True)
    (inst / preserve).write_text("written by the run\n")
    preserving_playbook(sandbox, "p", preserve) if "p" in live_links else preserving_playbook(sandbox, preserve)
    catalog = hostile_full_catalog(sandbox, tmp_path, "7.0.4.9", links)
    before = tree_listing(somewhere)
    rc, plan = plan_to(sandbox, "7.0.4.9", "--catalog", str(catalog))
    assert rc == 0, capsys.readouterr()
    approval = approve(sandbox, plan)
    was = host_state(inst)
    rc, text = run_cli(sandbox, capsys, "run", str(plan), "--approval", str(approval))
    assert rc == 2, text
    assert "passes through the symlink q" in text
    assert tree_listing(somewhere) == before
    run_dir = state_dir(inst) / "runs" / last_run_id(sandbox)  # the refused run's record, nothing staged
    assert_host_untouched(was, host_state(inst), run_record=run_dir.name, appended=LEDGER)  # the run locked the host
    assert not (run_dir / "staging").exists() and not (run_dir / "backup").exists()
    assert sandbox.answers() == OLD
    (host,) = last_result(sandbox)["hosts"]
    assert host["outcome"] == "bad_input"
    assert "stop" not in [p["phase"] for p in host["phases"]]


def agent_op(box: Sandbox, op: str, **req: Any) -> dict[str, Any]:
    return dict(handle({"op": op, "install_dir": str(box.install_dir), "state_dir": None, "run_id": "swap-1",
                              **req}))


def prepared_and_stopped(box: Sandbox) -> None:
    """The agent's own steps of a run to 7.0.4.2, up to a stopped service (the controller's order)."""
    pkg = box.catalog / "sample-middleware-7.0.4.2.tar.gz"
    spec = yaml.safe_load((shipped_playbooks_dir() / "sample-middleware.yaml").read_text(encoding="utf-8"))
    assert agent_op(box, "lock", audit=lock_audit("swap-1"))["ok"]
    reply = agent_op(box, "prepare", package_path=str(pkg), sha256=file_digest(pkg), size=pkg.stat().st_size,
                     limits={}, kind="full", remove=[], preserve=spec["preserve"], current_version=OLD)
    assert reply["ok"], reply
    reply = agent_op(box, "stop", stop={"command": "bin/stop.sh", "timeout": 15, "pid_file": "run/server.pid",
                                        "ports": [box.port]}, env=box.service_env())
    assert reply["ok"], reply
    assert box.answers() is None


def test_conf_swapped_for_a_link_after_prepare_moves_nothing_outside(sandbox, tmp_path):
    """The service account swaps conf/ for a link outside while the service stops: install and rollback refuse
    (needs_person), the file outside is neither moved nor read, the customer's conf and data stay in the install."""
    somewhere = outside(tmp_path)
    (somewhere / "server.conf").write_bytes(CANARY)
    inst = sandbox.install_dir
    data_before = tree_listing(inst / "data")
    prepared_and_stopped(sandbox)
    before = tree_listing(somewhere)
    os.rename(inst / "conf", inst / "conf.mine")
    (inst / "conf").symlink_to(somewhere)
    spec = yaml.safe_load((shipped_playbooks_dir() / "sample-middleware.yaml").read_text(encoding="utf-8"))
    reply = agent_op(sandbox, "install", preserve=spec["preserve"], target_version="7.0.4.2")
    assert reply["ok"] is False and reply["kind"] == "needs_person", reply
    assert "conf" in reply["error"]
    reply = agent_op(sandbox, "rollback")
    assert reply["ok"] is False, reply
    assert tree_listing(somewhere) == before
    assert (inst / "lib" / "VERSION").read_text().split()[0] == OLD
    assert (inst / "conf.mine" / "server.conf").is_file()
    assert tree_listing(inst / "data") == data_before


def test_install_dir_swapped_for_a_link_after_stop_moves_nothing_outside(sandbox, tmp_path):
    """The install dir's name swapped for a link to a directory outside after stop: install and rollback refuse
    (needs_person) without moving the linked directory or anything in it; the real install keeps its data."""
    somewhere = outside(tmp_path)
    (somewhere / "data").mkdir()
    (somewhere / "data" / "victim.txt").write_bytes(CANARY)
    inst = sandbox.install_dir
    prepared_and_stopped(sandbox)
    real_before = tree_listing(inst)
    before = tree_listing(somewhere)
    os.rename(inst, inst.with_name("app-01.real"))
    inst.symlink_to(somewhere)
    spec = yaml.safe_load((shipped_playbooks_dir() / "sample-middleware.yaml").read_text(encoding="utf-8"))
    reply = agent_op(sandbox, "install", preserve=spec["preserve"], target_version="7.0.4.2")
    assert reply["ok"] is False and reply["kind"] == "needs_person", reply
    assert "symlink" in reply["error"]
    reply = agent_op(sandbox, "rollback")
    assert reply["ok"] is False and reply["kind"] == "needs_person", reply
    assert tree_listing(somewhere) == before
    assert inst.is_symlink()
    assert tree_listing(inst.with_name("app-01.real")) == real_before
    os.unlink(inst)
    os.rename(inst.with_name("app-01.real"), inst)  # put back for the fixture's stop


def test_move_beneath_refuses_a_link_on_either_side(tmp_path):
    """The descriptor move refuses a link among the parents in the old tree and in the new one; nothing outside
    is moved, replaced or deleted."""
    somewhere = outside(tmp_path)
    old, new = tmp_path / "old", tmp_path / "new"
    (old / "a").mkdir(parents=True)
    (old / "a" / "victim.txt").write_text("the customer's\n")
    (new).mkdir()
    (new / "a").symlink_to(somewhere)
    before = tree_listing(somewhere)
    ofd, nfd = os.open(old, os.O_RDONLY), os.open(new, os.O_RDONLY)
    try:
        with pytest.raises(AgentError):
            move_beneath(ofd, nfd, "a/victim.txt", "preserved path", str(old), str(new))
        os.unlink(new / "a")
        os.rename(old / "a", old / "b")
        (old / "a").symlink_to(somewhere)
        with pytest.raises(AgentError):
            move_beneath(ofd, nfd, "a/victim.txt", "preserved path", str(old), str(new))
    finally:
        os.close(ofd)
        os.close(nfd)
    assert tree_listing(somewhere) == before
    assert (old / "b" / "victim.txt").read_text() == "the customer's\n"


def test_vars_from_through_a_link_outside_reads_nothing_there(sandbox, tmp_path):
    """read_vars with conf/ swapped for a link outside (after any check): no value from the file outside."""
    somewhere = outside(tmp_path)
    (somewhere / "server.conf").write_text("port = 4242\n")
    inst = sandbox.install_dir
    os.rename(inst / "conf", inst / "conf.mine")
    (inst / "conf").symlink_to(somewhere)
    try:
        reply = agent_op(sandbox, "read_vars", vars_from={"port": {"file": "conf/server.conf",
                                                                   "pattern": r"^port\s*=\s*(\d+)"}})
    finally:
        os.unlink(inst / "conf")
        os.rename(inst / "conf.mine", inst / "conf")
    entry = reply["result"]["vars"]["port"]
    assert "value" not in entry and str(somewhere) in entry["error"], entry
    reply = agent_op(sandbox, "read_vars", vars_from={"port": {"file": "conf/server.conf",
                                                               "pattern": r"^port\s*=\s*(\d+)"}})
    assert reply["result"]["vars"]["port"]["value"] == str(sandbox.port)


@pytest.mark.parametrize("name", [".authorized_keys.lock", "authorized_keys"])
def test_access_grant_refuses_a_hard_link_to_a_file_elsewhere(tmp_path, monkeypatch, capsys, name):
    """~/.ssh/<name> hard-linked to a file outside ~/.ssh: `access grant` exits 2; that file's bytes, owner and
    mode stay as they were."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    victim = outside(tmp_path) / "victim.txt"
    os.chmod(victim, 0o640)
    os.link(victim, home / ".ssh" / name)
    st = victim.stat()
    monkeypatch.setenv("HOME", str(home))
    pub = tmp_path / "engineer.pub"
    pub.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq0Vt7pyC3qJz2Ph9bqKvc9yqfB6Dfsl2Q4lqg9X9qk engineer@vendor\n")
    from upgrader.cli import main

    capsys.readouterr()
    rc = main(["--home", str(tmp_path / "state"), "access", "grant", "--key", str(pub), "--hours", "1",
               "--reason", "ticket 1"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "2 names" in err and name in err
    assert victim.read_bytes() == CANARY
    now = victim.stat()
    assert (now.st_uid, now.st_gid, now.st_mode, now.st_nlink) == (st.st_uid, st.st_gid, st.st_mode, 2)


def test_a_state_dir_others_can_write_is_refused_before_stop(sandbox, tmp_path, capsys):
    """A state dir writable by other accounts, with approvals-used.jsonl linked to a file outside: the run exits 2
    in preflight and root appends nothing outside; a link in a state dir of the agent's own is refused too."""
    somewhere = outside(tmp_path)
    state = state_dir(sandbox.install_dir)
    state.mkdir()
    os.chmod(state, 0o777)
    (state / "approvals-used.jsonl").symlink_to(somewhere / "victim.txt")
    rc, plan = plan_to(sandbox, "7.0.4.2")
    assert rc == 0
    approval = approve(sandbox, plan)
    was = host_state(sandbox.install_dir)
    rc, text = run_cli(sandbox, capsys, "run", str(plan), "--approval", str(approval))
    assert rc == 2, text
    assert str(state) in text and "nobody else can write" in text
    assert_refused_before_stop(sandbox, was, somewhere)
    os.chmod(state, 0o700)
    with pytest.raises(AgentError) as e:
        append_line_nofollow(str(state / "approvals-used.jsonl"), "{}\n")
    assert e.value.kind == "unsafe_path"
    (state / "installed.json").symlink_to(somewhere / "victim.txt")
    with pytest.raises(AgentError):
        read_json(str(state / "installed.json"))
    write_json_atomic(str(state / "x.json"), {"a": 1})
    assert (somewhere / "victim.txt").read_bytes() == CANARY


def test_snapshot_and_patch_copy_read_no_file_through_a_dir_swapped_for_a_link(tmp_path):
    """The backup's hard links (snapshot) and a patch's copy of the tree (copy_tree) are made from descriptors: a
    directory swapped for a link outside after the scan is refused, nothing outside is linked, copied or changed."""
    somewhere = outside(tmp_path)
    root = tmp_path / "app"
    (root / "lib").mkdir(parents=True)
    (root / "lib" / "victim.txt").write_text("the product's own\n")
    manifest = scan_tree(str(root), [])
    os.rename(root / "lib", root / "lib.moved")
    (root / "lib").symlink_to(somewhere)
    before = tree_listing(somewhere)
    with pytest.raises(AgentError) as e:
        snapshot(str(root), str(tmp_path / "backup"), manifest)
    assert e.value.kind == "unsafe_path"
    with pytest.raises(AgentError):
        copy_tree(str(root), str(tmp_path / "copy"), manifest)
    assert tree_listing(somewhere) == before and os.stat(somewhere / "victim.txt").st_nlink == 1
    assert not (tmp_path / "copy" / "lib" / "victim.txt").exists()
