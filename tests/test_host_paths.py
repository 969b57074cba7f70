"""Nothing outside the install dir, ever: paths on the host are resolved physically, after `${var}` substitution.

Attacks through the shipped CLI: a patch whose `remove:` entry lies under a directory symlink that leads
out of the install dir (`extras -> /somewhere`), an inventory variable that points a pid file or a log
probe outside (by name, or through a link made after the plan), a cached package or a cached host agent
changed on the host, and a `~/.ssh` swapped for a link while authorized_keys is edited. Each refusal
comes before stop (exit 2), names the path and the link, leaves the canary file outside as it was, the
service running with the same pid, and the host's state (lock, staged runs and packages, product files)
unchanged; the tampered caches are thrown away and sent again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from conftest import approve, plan_to, product_digest, upgrader
from fleet import Fleet
from upgrader import agent
from upgrader.commands.demo import Sandbox
from upgrader.package import file_digest
from upgrader.playbook import shipped_playbooks_dir
from upgrader.transport.base import AGENT_SOURCE

OLD, PATCH = "7.0.4.1", "7.0.4.4"
CANARY = b"the customer's file outside the install dir\n"


def state_dir(install: Path) -> Path:
    return install.parent / f".upgrader-{install.name}"


def host_state(install: Path) -> tuple[Any, ...]:
    """What a refusal must leave as it was: product files (links included), the service's pid, the lock, the
    runs and packages kept in the host's state dir."""
    state = state_dir(install)
    return (product_digest(install), (install / "run" / "server.pid").read_text(), (state / "lock").exists(),
            sorted(p.name for p in (state / "runs").iterdir()) if (state / "runs").is_dir() else [],
            sorted(p.name for p in (state / "packages").iterdir()) if (state / "packages").is_dir() else [])


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


def assert_refused_before_stop(box: Sandbox, was: tuple[Any, ...], somewhere: Path) -> None:
    assert host_state(box.install_dir) == was
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
    assert host_state(sandbox.install_dir) == was
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
    was = host_state(sandbox.install_dir)
    reply = agent.handle({"op": "prepare", "install_dir": str(sandbox.install_dir), "state_dir": None,
                          "run_id": "remove-1", "package_path": str(pkg), "sha256": file_digest(pkg),
                          "size": pkg.stat().st_size, "limits": {}, "kind": "patch", "remove": ["extras/victim.txt"],
                          "preserve": [], "current_version": OLD})
    assert reply["ok"] is False and reply["kind"] == "unsafe_path"
    assert "extras" in reply["error"] and str(somewhere) in reply["error"]
    assert (somewhere / "victim.txt").read_bytes() == CANARY
    assert host_state(sandbox.install_dir)[:3] == was[:3]


def test_remove_beneath_never_deletes_through_a_link_even_inside_a_copy(tmp_path):
    """remove_beneath on a tree whose directory is a link outside refuses; a final link is removed, not followed."""
    somewhere = outside(tmp_path)
    root = tmp_path / "tree"
    root.mkdir()
    (root / "extras").symlink_to(somewhere)
    (root / "own").symlink_to(somewhere / "victim.txt")
    with pytest.raises(agent.AgentError) as e:
        agent.remove_beneath(str(root), "extras/victim.txt", "the patch's remove entry")
    assert e.value.kind == "unsafe_path"
    assert agent.remove_beneath(str(root), "own", "the patch's remove entry") is True
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
    path = box.root / "templated.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    inv = yaml.safe_load(box.inventory.read_text(encoding="utf-8"))
    inv["hosts"]["app-01"]["playbook"] = str(path)
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
    assert host_state(sandbox.install_dir) == was
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
    assert host_state(sandbox.install_dir) == was


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
    reply = agent.handle({"op": "stop", "install_dir": str(sandbox.install_dir), "state_dir": None,
                          "stop": {"command": "true", "pid_file": "state/server.pid", "timeout": 1}})
    assert reply["ok"] is False and reply["kind"] == "unsafe_path"
    assert f"state -> {somewhere}" in reply["error"]
    assert sandbox.answers() == OLD


# ---------------------------------------------------------------- cached packages and the cached agent, re-checked


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


def test_a_cached_agent_changed_on_the_host_is_not_run_and_is_sent_again(fleet, capsys):
    """Over the real sshd: the cached agent (named after its digest) edited on the host to leave a marker is not run;
    a whole copy is sent again and planning works (exit 0)."""
    f: Fleet = fleet(1)
    rc, _ = plan_to(f.box, "7.0.4.2")
    assert rc == 0  # the agent is cached on the host now
    digest = hashlib.sha256(AGENT_SOURCE.read_bytes()).hexdigest()
    cached = f.sshd.root / "home" / ".cache" / "upgrader" / f"agent_{digest[:16]}.py"
    assert cached.is_file()
    marker = f.sshd.root / "home" / "tampered-agent-ran"
    cached.write_text(cached.read_text() + f"\nopen({str(marker)!r}, 'w').close()\n")
    rc, _ = plan_to(f.box, "7.0.4.2")
    assert rc == 0
    assert not marker.exists(), "the tampered agent was run"
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == digest


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
    fd = agent.open_ssh_dir(pw, str(home / ".ssh"), create=False)
    try:
        os.rename(home / ".ssh", home / "moved")
        (home / ".ssh").symlink_to(elsewhere)
        agent.replace_authorized_keys(fd, str(home / ".ssh" / "authorized_keys"), b"ssh-ed25519 AAAA x\n", None, pw)
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
    assert agent.inside_globs(str(root), ["conf/*.conf", "logs/*"]) == ["conf/inner.conf", "conf/server.conf"]
    with pytest.raises(agent.AgentError) as e:
        agent.config_facts(str(root), "conf/evil.conf", True)
    assert e.value.kind == "unsafe_path" and str(somewhere) in str(e.value)
