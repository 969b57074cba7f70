"""Nothing outside the install dir, round 8: directories others may write, and mount points.

1. A directory of the install that anyone besides its owner and root may write (its group, an ACL entry, everyone):
   any of them could put there a hard link of a file of the directory's owner that it may not read itself. Such a
   file is withheld unless everyone may read it -- whoever owns it (the round-7 owner exemption is gone). As in
   tests/test_host_paths_5/6/7.py the threat is a host with fs.protected_hardlinks=0; this machine has =1, so root
   makes the very link that account could make.
2. A mount inside the install dir holds files that lie outside it. An upgrade moves the install dir aside and
   deletes what it leaves; rollback does the same with the live tree. A mount point inside the install is refused
   before anything is stopped (exit 2, naming it), and the agent's recursive delete stops at a mount boundary
   (mount ids, since a bind mount of the same file system has the same st_dev): the tree is left, the run needs a
   person, and nothing of the mounted directory is deleted.

Every mount is made inside the test process's own mount namespace (the suite runs under ``unshare -m``) and undone.
"""

from __future__ import annotations

import os
import pwd
import select
import subprocess
import threading
from pathlib import Path
from typing import Callable

import pytest
import yaml

from conftest import plan_to, run_plan, upgrader
from fleet import Fleet
from test_host_paths import run_cli
from test_host_paths_7 import acl_user_may_write, assert_not_disclosed, can_read_as, version_of
from trust_support import host_state
from upgrader.cli.commands.demo import Sandbox
from upgrader.hostagent.beneath import read_beneath
from upgrader.hostagent.common import AgentError
from upgrader.hostagent.state import Paths

DAEMON = pwd.getpwnam("daemon")
NOBODY = pwd.getpwnam("nobody")
SHIPPED = Path(__file__).resolve().parent.parent / "playbooks" / "sample-middleware.yaml"
SECRET = "OUTSIDE-SECRET-r8"


def daemons_private_file(tmp_path: Path) -> Path:
    """Outside the install: a file only the service account (daemon) may read, in a directory everyone may pass."""
    d = tmp_path / "etc-app"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    f = d / "token"
    f.write_text(SECRET + " daemon's API token\n")
    os.chown(f, DAEMON.pw_uid, DAEMON.pw_gid)
    os.chmod(f, 0o600)
    return f


def own_by_daemon(install: Path) -> None:
    subprocess.run(["chown", "-R", "daemon:daemon", str(install)], check=True)


def plant_version(install: Path, secret: Path) -> None:
    """nobody (who may write lib/) replaces lib/VERSION by a link of a file it may not read itself: root does what
    nobody does with fs.protected_hardlinks=0 (the test's tmp dirs above are root's 0700)."""
    assert not can_read_as(secret, NOBODY.pw_uid, NOBODY.pw_gid, [NOBODY.pw_gid])
    (install / "lib" / "VERSION").unlink()
    os.link(secret, install / "lib" / "VERSION")


# ------------------------------------------------------------------ 1: other writers, the owner's own file


def test_a_file_of_the_dir_owner_put_by_its_group_is_not_disclosed(sandbox: Sandbox, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """lib/ is daemon:nogroup 2775; nobody (group nogroup) links daemon's 0600 file as lib/VERSION: inspect, plan,
    the plan file and the audit log do not hold it (the round-7 rule read it as the directory's owner)."""
    install = sandbox.install_dir
    secret = daemons_private_file(tmp_path)
    own_by_daemon(install)
    os.chown(install / "lib", DAEMON.pw_uid, NOBODY.pw_gid)
    os.chmod(install / "lib", 0o2775)
    plant_version(install, secret)
    assert_not_disclosed(sandbox, capsys, "its directory's group (gid %d) may write its directory" % NOBODY.pw_gid,
                         "--inventory", str(sandbox.inventory))
    # everyone, everyone with the sticky bit, an ACL entry: the same file is withheld by read_beneath too
    root = str(install)
    for mode, acl in ((0o1777, False), (0o0777, False), (0o0755, True)):
        os.chown(install / "lib", DAEMON.pw_uid, DAEMON.pw_gid)
        os.chmod(install / "lib", mode)
        if acl:
            acl_user_may_write(install / "lib", NOBODY.pw_uid)
        with pytest.raises(AgentError) as e:
            read_beneath(root, "lib/VERSION", "version file")
        assert "not disclosed" in str(e.value) and "not readable by everyone" in str(e.value), oct(mode)
    # a version file everyone may read is read there, as before
    (install / "lib" / "VERSION").unlink()
    (install / "lib" / "VERSION").write_text("7.0.4.1\n")
    os.chmod(install / "lib" / "VERSION", 0o644)
    rc, out = run_cli(sandbox, capsys, "inspect", "--inventory", str(sandbox.inventory), "--json")
    assert version_of(out) == ["7.0.4.1"], out


def test_over_ssh_a_file_of_the_dir_owner_in_a_world_writable_dir_is_not_disclosed(
        fleet: Callable[[int], Fleet], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f: Fleet = fleet(1)
    box = f.box
    install = box.install_dir
    secret = daemons_private_file(tmp_path)
    own_by_daemon(install)
    os.chmod(install / "lib", 0o1777)
    plant_version(install, secret)
    assert_not_disclosed(box, capsys, "everyone may write its directory", "--inventory", str(box.inventory))


# ------------------------------------------------------------------ 2: mount points


def bind(src: Path, dst: Path) -> None:
    subprocess.run(["mount", "--bind", str(src), str(dst)], check=True)


def unmount_below(top: Path) -> None:
    """Undo every mount this test left below ``top`` (wherever the agent may have carried it), innermost first."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4].encode().decode("unicode_escape") for line in f]
    for p in sorted((p for p in points if p.startswith(str(top) + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", p], check=False)


def shared_dir(tmp_path: Path) -> Path:
    """Outside the install: a directory of root's files that the service account may not delete. (Root's alone:
    mounted into a root-owned install whose commands run as root, a file of another account there is refused
    before anything else, by the whole-tree rule of tests/test_host_paths_18.py; these tests are about the mount.)"""
    shared = tmp_path / "shared"
    (shared / "ref").mkdir(parents=True)
    (shared / "ref" / "root-owned.dat").write_text("reference data, root's\n")
    (shared / "ref" / "more.dat").write_text("more reference data\n")
    return shared


def shared_files(shared: Path) -> list[str]:
    return sorted(str(p.relative_to(shared)) for p in shared.rglob("*"))


def with_cache(playbook_text: str) -> str:
    """The playbook with work/ as a cache path, as the shipped tomcat.yaml has it."""
    spec = yaml.safe_load(playbook_text)
    spec["preserve"].append({"path": "work", "kind": "cache"})
    return yaml.safe_dump(spec, sort_keys=False)


def cache_playbook(box: Sandbox) -> None:
    (box.root / "playbooks").mkdir(exist_ok=True)
    (box.root / "playbooks" / "sample-middleware.yaml").write_text(with_cache(SHIPPED.read_text()))


def test_a_mount_point_inside_the_install_is_refused_before_stop(sandbox: Sandbox, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A bind mount in the preserved data path, then at the preserved path itself, then at a cache path: plan is
    refused (exit 2) naming it and saying what to do; nothing on the host changed, the shared files are all there."""
    install, shared = sandbox.install_dir, shared_dir(tmp_path)
    cache_playbook(sandbox)
    before, files = host_state(sandbox), shared_files(shared)
    try:
        (install / "data" / "shared").mkdir()
        bind(shared, install / "data" / "shared")
        rc, out = run_cli(sandbox, capsys, "plan", "--inventory", str(sandbox.inventory), "--to", "7.0.5.0",
                          "--catalog", str(sandbox.catalog), "-o", str(sandbox.plans / "m1.json"))
        assert rc == 2 and "data/shared, in preserved path data, is a mount point inside the install dir" in out, out
        assert "unmount it" in out and "Traceback" not in out
        subprocess.run(["umount", str(install / "data" / "shared")], check=True)
        (install / "data" / "shared").rmdir()
        bind(shared, install / "data")
        rc, out = run_cli(sandbox, capsys, "plan", "--inventory", str(sandbox.inventory), "--to", "7.0.5.0",
                          "--catalog", str(sandbox.catalog), "-o", str(sandbox.plans / "m2.json"))
        assert rc == 2 and "preserved path data is itself a mount point" in out, out
        subprocess.run(["umount", str(install / "data")], check=True)
        (install / "work").mkdir()
        bind(shared, install / "work")
        rc, out = run_cli(sandbox, capsys, "plan", "--inventory", str(sandbox.inventory), "--to", "7.0.5.0",
                          "--catalog", str(sandbox.catalog), "-o", str(sandbox.plans / "m3.json"))
        assert rc == 2 and "preserved path work is itself a mount point" in out, out
    finally:
        unmount_below(tmp_path)
    assert shared_files(shared) == files
    (install / "work").rmdir()
    assert host_state(sandbox) == before


def rollback_with_a_mount_in_the_live_tree(box: Sandbox, install: Path, shared: Path,
                                           capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Upgrade (no mount yet), then the cache work/ is mounted on the live tree (from fstab after a reboot, say),
    then the operator rolls the run back: rollback moves the live tree to runs/RUN/failed, finish deletes that."""
    rc, plan = plan_to(box, "7.0.5.0")
    assert rc == 0
    assert run_plan(box, plan) == 0
    run = sorted((box.root / "runs").iterdir(), key=lambda p: p.stat().st_mtime)[-1].name
    (install / "work").mkdir(exist_ok=True)
    bind(shared, install / "work")
    return run_cli(box, capsys, "rollback", run, "--yes")


def test_rollback_never_deletes_into_a_mount(sandbox: Sandbox, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    install, shared = sandbox.install_dir, shared_dir(tmp_path)
    cache_playbook(sandbox)
    files = shared_files(shared)
    try:
        rc, out = rollback_with_a_mount_in_the_live_tree(sandbox, install, shared, capsys)
        assert rc == 5 and "NEEDS A PERSON" in out and "is a mount point" in out and "left that tree" in out, out
        assert shared_files(shared) == files  # nothing of the mounted directory deleted
    finally:
        unmount_below(tmp_path)
    assert shared_files(shared) == files


def test_over_ssh_rollback_never_deletes_into_a_mount(fleet: Callable[[int], Fleet], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    f: Fleet = fleet(1)
    box = f.box
    install, shared = box.install_dir, shared_dir(tmp_path)
    f.playbook.write_text(with_cache(f.playbook.read_text()))
    files = shared_files(shared)
    try:
        rc, out = rollback_with_a_mount_in_the_live_tree(box, install, shared, capsys)
        assert rc == 5 and "is a mount point" in out and "left that tree" in out, out
        assert shared_files(shared) == files
        # and over ssh a plan is refused before anything is stopped while the mount is in the install
        (install / "work").mkdir(exist_ok=True)  # the restored tree has none: mounted again there
        bind(shared, install / "work")
        before = host_state(box)
        rc, out = run_cli(box, capsys, "plan", "--inventory", str(box.inventory), "--to", "7.0.4.1",
                          "--catalog", str(box.catalog), "-o", str(box.plans / "m.json"))
        assert rc == 2 and "work is itself a mount point" in out, out
        assert host_state(box) == before
    finally:
        unmount_below(tmp_path)
    assert shared_files(shared) == files


def test_a_mount_that_appears_after_prepare_is_refused_at_install(sandbox: Sandbox, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing is mounted at plan and prepare; the moment the server has stopped, a mount appears in a product
    directory (docs/, which install leaves in the old tree that finish deletes): install refuses before the swap and
    the rollback refuses to move the tree that holds the mount; the run needs a person naming the mount, the mounted
    files are all there. Unmounted, the operator's rollback restores the old version, running."""
    install, shared = sandbox.install_dir, shared_dir(tmp_path)
    (install / "docs" / "shared").mkdir()
    files = shared_files(shared)
    pidfd = os.pidfd_open(int((install / "run" / "server.pid").read_text()))

    def mount_at_stop() -> None:
        select.select([pidfd], [], [])
        bind(shared, install / "docs" / "shared")

    watcher = threading.Thread(target=mount_at_stop, daemon=True)
    try:
        rc, plan = plan_to(sandbox, "7.0.5.0")
        assert rc == 0
        watcher.start()
        capsys.readouterr()
        rc = run_plan(sandbox, plan)
        out = "".join(capsys.readouterr())
        watcher.join(timeout=60)
        assert rc == 5 and "install: docs/shared is a mount point inside the install dir" in out, out
        # the rollback does not move the live tree, which holds the mount, into runs/RUN/failed: it needs a person,
        # the mount where it was; once it is unmounted, the operator's rollback restores the old version
        assert "rollback failed at rollback" in out and "docs/shared is a mount point" in out, out
        assert shared_files(shared) == files
        subprocess.run(["umount", str(install / "docs" / "shared")], check=True)
        run = sorted((sandbox.root / "runs").iterdir(), key=lambda p: p.stat().st_mtime)[-1].name
        rc, out = run_cli(sandbox, capsys, "rollback", run, "--yes")
        assert rc == 0, out
        assert sandbox.wait_version("7.0.4.1", timeout=30) == "7.0.4.1"
    finally:
        os.close(pidfd)
        unmount_below(tmp_path)
    assert shared_files(shared) == files


def test_the_agent_refuses_the_run_ids_dot_and_dot_dot() -> None:
    for bad in (".", ".."):
        with pytest.raises(AgentError) as e:
            Paths({"install_dir": "/srv/app", "run_id": bad}).run("old")
        assert e.value.kind == "bad_input"
    assert Paths({"install_dir": "/srv/app", "run_id": "r.1"}).run("old").endswith("/runs/r.1/old")


def test_the_mount_table_and_the_directory_walk_find_the_same_mount_points(tmp_path: Path) -> None:
    """The agent names the mount points inside a tree from /proc/self/mountinfo (fast), and by walking the tree where
    /proc cannot place it: both find a bind mount of the same file system (same st_dev), a tmpfs, a mount point whose
    name needs escaping in the table, and neither enters a mount to report one nested in it."""
    from upgrader.hostagent.mounts import listed_mount_points, walked_mount_points

    top = tmp_path / "tree"
    for d in ("a/b", "c", "name with space", "src", "t"):
        (top / d).mkdir(parents=True)
    (top / "t" / "inner").mkdir()
    try:
        bind(top / "src", top / "a" / "b")
        bind(top / "src", top / "name with space")
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(top / "t")], check=True)
        (top / "t" / "inner").mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(top / "t" / "inner")], check=True)
        fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
        try:
            listed, walked = listed_mount_points(fd), walked_mount_points(fd)
        finally:
            os.close(fd)
        assert listed is not None
        assert [r for r, _ in listed] == [r for r, _ in sorted(walked)] == ["a/b", "name with space", "t"]
        assert dict(listed)["t"].startswith("tmpfs")
    finally:
        unmount_below(top)
