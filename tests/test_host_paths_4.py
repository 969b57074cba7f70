"""Nothing outside the install dir, round 4: reads keep the StrictModes-like rule too, and the install dir's own
name counts.

The attacker is a real local account (`nobody`), the service account, which owns the install dir's parent: it
replaces the install dir with a link to a root-only directory (mode 0700, root's) holding a log with error lines,
a version file and a configuration with a secret value. `upgrader inspect` and `upgrader plan` (whose reads are
the agent's facts, read_vars, prove and inspect actions) are refused (exit 2) naming the directory the account can
change, its owner and what to do, and nothing of the root-only directory reaches the output; a link as the install
dir's last component is refused even where root made it; a plan made while the account keeps exchanging the
install dir with the link is refused every time, with nothing leaked.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest
import yaml  # type: ignore[import-untyped]

from conftest import plan_to
from test_host_paths import run_cli
from test_swap_races import NOBODY, Toggler, as_attacker, listing
from upgrader.cli.commands.demo import Sandbox

NEW = "7.0.4.2"
SECRET_VERSION = "9.9.9-ROOT-ONLY"
SECRET_PORT = "31337"
SECRET_LOG = "ERROR root-only-log-line: payroll db password=hunter2"
SECRETS = (SECRET_VERSION, SECRET_PORT, "hunter2", "root-only-log-line", "token-s3cr3t")


def root_only_install_like_dir(tmp_path: Path) -> Path:
    """A root-only directory shaped like an install (lib/VERSION, conf/server.conf, logs/server.log)."""
    d = tmp_path / "root-only"
    d.mkdir(mode=0o700)
    for sub in ("lib", "conf", "logs", "run"):
        (d / sub).mkdir(mode=0o700)
    (d / "lib" / "VERSION").write_text(SECRET_VERSION + "\n")
    (d / "conf" / "server.conf").write_text(f"port = {SECRET_PORT}\napi_token = token-s3cr3t\n")
    (d / "logs" / "server.log").write_text(SECRET_LOG + "\n")
    return d


def assert_nothing_leaked(text: str) -> None:
    assert "Traceback" not in text
    for s in SECRETS:
        assert s not in text, f"{s!r} leaked: {text}"


def link_the_install(box: Sandbox, target: Path) -> Path:
    """As `nobody`, owner of the install's parent: app-01 moved aside to app-01.real, app-01 -> target."""
    hosts = box.install_dir.parent
    os.chown(hosts, NOBODY, NOBODY)

    def swap(d: int) -> None:
        os.rename("app-01", "app-01.real", src_dir_fd=d, dst_dir_fd=d)
        os.symlink(str(target), "app-01", dir_fd=d)

    assert as_attacker(hosts, swap) == 0
    assert box.install_dir.is_symlink()
    return hosts


def put_back(box: Sandbox) -> None:
    hosts = box.install_dir.parent
    if box.install_dir.is_symlink():
        box.install_dir.unlink()
        (hosts / "app-01.real").rename(box.install_dir)
    os.chown(hosts, 0, 0)


def test_inspect_through_a_link_the_service_account_made_is_refused_and_reads_nothing(sandbox, tmp_path, capsys):
    secret = root_only_install_like_dir(tmp_path)
    rc, text = run_cli(sandbox, capsys, "inspect", "--inventory", str(sandbox.inventory), "--json")
    assert rc == 0, text  # the usual layout is inspected
    was = listing(secret)
    link_the_install(sandbox, secret)
    try:
        report = tmp_path / "report.json"
        rc, text = run_cli(sandbox, capsys, "inspect", "--inventory", str(sandbox.inventory), "--json",
                           "-o", str(report))
        assert rc == 2, text
        hosts = sandbox.install_dir.parent
        assert f"below {hosts} (owned by uid {NOBODY}" in text and "StrictModes" in text
        assert "chown" in text
        assert_nothing_leaked(text)
        assert_nothing_leaked(report.read_text())
        (host,) = json.loads(report.read_text())["hosts"]
        assert host["facts"] == {} and host["error"]
        assert listing(secret) == was
    finally:
        put_back(sandbox)


def test_plan_through_a_link_the_service_account_made_is_refused_and_reads_nothing(sandbox, tmp_path, capsys):
    secret = root_only_install_like_dir(tmp_path)
    was = listing(secret)
    link_the_install(sandbox, secret)
    try:
        capsys.readouterr()
        rc, plan = plan_to(sandbox, NEW)
        out, err = capsys.readouterr()
        text = out + err
        assert rc == 2, text
        assert f"below {sandbox.install_dir.parent} (owned by uid {NOBODY}" in text
        assert_nothing_leaked(text)
        assert not plan.exists()
        assert listing(secret) == was
    finally:
        put_back(sandbox)


def test_a_link_as_the_install_dirs_last_component_is_refused_even_when_root_made_it(sandbox, tmp_path, capsys):
    """The parent stays root's: only the last component is a link (to a root-only directory). plan and inspect
    refuse it (exit 2) naming the link and what to do; nothing of its target is read."""
    secret = root_only_install_like_dir(tmp_path)
    hosts = sandbox.install_dir.parent
    sandbox.install_dir.rename(hosts / "app-01.real")
    sandbox.install_dir.symlink_to(secret)
    try:
        capsys.readouterr()
        rc, plan = plan_to(sandbox, NEW)
        out, err = capsys.readouterr()
        assert rc == 2, out + err
        assert f"the install dir {sandbox.install_dir} is a symlink (-> {secret})" in out + err
        assert "name the directory itself as install_dir" in out + err
        assert_nothing_leaked(out + err)
        assert not plan.exists()
        rc, text = run_cli(sandbox, capsys, "inspect", "--inventory", str(sandbox.inventory), "--json")
        assert rc == 2, text
        (host,) = json.loads(text)["hosts"]
        assert "is a symlink" in host["error"] and host["facts"] == {}
        assert_nothing_leaked(text)
    finally:
        sandbox.install_dir.unlink()
        (hosts / "app-01.real").rename(sandbox.install_dir)


def test_plan_while_the_service_account_keeps_exchanging_the_install_with_a_link_never_leaks(sandbox, tmp_path,
                                                                                            capsys):
    """`nobody` owns the parent and exchanges app-01 with `app-01.lnk -> root-only dir` (renameat2) over and over
    while six plans read the host: every one is refused (exit 2), none prints anything of the root-only dir."""
    secret = root_only_install_like_dir(tmp_path)
    hosts = sandbox.install_dir.parent
    os.chown(hosts, NOBODY, NOBODY)
    assert as_attacker(hosts, lambda d: os.symlink(str(secret), "app-01.lnk", dir_fd=d)) == 0
    toggler = Toggler(hosts, "app-01", "app-01.lnk")
    try:
        for _ in range(6):
            capsys.readouterr()
            rc, plan = plan_to(sandbox, NEW)
            out, err = capsys.readouterr()
            assert rc == 2, out + err
            assert "StrictModes" in out + err
            assert_nothing_leaked(out + err)
            assert not plan.exists()
    finally:
        swaps = toggler.stop()
        os.chown(hosts, 0, 0)
    assert swaps > 0
    assert not sandbox.install_dir.is_symlink()


@pytest.mark.parametrize("op", ["facts", "read_vars", "prove", "inspect"])
def test_every_read_action_applies_the_rule_before_reading(sandbox, tmp_path, op):
    """Each read action of the agent (called as the controller does) refuses the linked install before it reads."""
    from upgrader.hostagent.main import handle

    secret = root_only_install_like_dir(tmp_path)
    link_the_install(sandbox, secret)
    try:
        req = {"op": op, "install_dir": str(sandbox.install_dir), "state_dir": None,
               "version_source": {"file": "lib/VERSION"}, "vars_from": {"port": {"file": "conf/server.conf",
                                                                                 "pattern": r"^port\s*=\s*(\d+)"}},
               "probes": [{"type": "log", "file": "logs/server.log", "absent": "ERROR"}], "logs": ["logs/*.log"],
               "configs": ["conf/*"], "tail": 5}
        reply = handle(req)
        assert not reply["ok"] and reply["kind"] == "unsafe_path", reply
        assert_nothing_leaked(json.dumps(reply))
    finally:
        put_back(sandbox)


def inventory_with(box: Sandbox, **values: str) -> None:
    doc = yaml.safe_load(box.inventory.read_text())
    doc["hosts"]["app-01"].update(values)
    box.inventory.write_text(yaml.safe_dump(doc, sort_keys=False))


# ------------------------------------------------------------------ 2: a state_dir must be the agent's own


def approve_and_run(box: Sandbox, capsys: pytest.CaptureFixture[str], plan: Path) -> tuple[int, str]:
    from conftest import approve

    return run_cli(box, capsys, "run", str(plan), "--approval", str(approve(box, plan)))


def another_tools_dir(tmp_path: Path) -> Path:
    """A root-owned directory of another tool (stands for /etc): its own installed.json among other files."""
    d = tmp_path / "other-tool"
    d.mkdir(mode=0o755)
    (d / "installed.json").write_text('{"other tool": "its own record"}\n')
    (d / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    return d


def test_a_state_dir_naming_another_tools_directory_is_refused_by_plan_and_run(sandbox, tmp_path, capsys):
    other = another_tools_dir(tmp_path)
    was = listing(other)
    inventory_with(sandbox, state_dir=str(other))
    capsys.readouterr()
    rc, plan = plan_to(sandbox, NEW)
    out, err = capsys.readouterr()
    assert rc == 2, out + err
    assert "inventory key hosts.app-01.state_dir" in out + err and str(other) in out + err
    assert ".upgrader-state" in out + err and "does not exist yet" in out + err
    assert not plan.exists()
    assert listing(other) == was
    # planned while the directory did not exist; made by someone else before the run: refused in preflight
    fresh = tmp_path / "later"
    inventory_with(sandbox, state_dir=str(fresh))
    rc, plan = plan_to(sandbox, NEW)
    assert rc == 0
    fresh.mkdir(mode=0o700)
    (fresh / "installed.json").write_text('{"other tool": 1}\n')
    was, was_pid = listing(fresh), (sandbox.install_dir / "run" / "server.pid").read_text()
    rc, text = approve_and_run(sandbox, capsys, plan)
    assert rc == 2, text
    assert f"state_dir {fresh}" in text and ".upgrader-state" in text
    assert listing(fresh) == was
    assert (sandbox.install_dir / "run" / "server.pid").read_text() == was_pid and sandbox.answers() != NEW


def test_a_relative_state_dir_is_refused(sandbox, capsys):
    inventory_with(sandbox, state_dir="state/app-01")
    capsys.readouterr()
    rc, plan = plan_to(sandbox, NEW)
    out, err = capsys.readouterr()
    assert rc == 2, out + err
    assert "hosts.app-01.state_dir" in out + err and "not an absolute path" in out + err
    assert not plan.exists()


def test_a_new_state_dir_is_made_with_the_marker_and_used(sandbox, tmp_path, capsys):
    """The state dir itself is made (0700, with the marker); its parent is the administrator's to make (the agent
    never makes a directory above a state dir: tests/test_host_paths_9.py)."""
    (tmp_path / "states").mkdir(mode=0o755)
    state = tmp_path / "states" / "app-01"
    inventory_with(sandbox, state_dir=str(state))
    rc, plan = plan_to(sandbox, NEW)
    assert rc == 0
    rc, text = approve_and_run(sandbox, capsys, plan)
    assert rc == 0, text
    assert sandbox.answers() == NEW
    assert json.loads((state / ".upgrader-state").read_text())["format"] == 1
    assert (state / "installed.json").is_file()
    default = sandbox.install_dir.parent / ".upgrader-app-01"
    assert json.loads((default / ".upgrader-state").read_text())["format"] == 1


def test_an_older_versions_default_state_dir_is_adopted_but_one_with_foreign_files_is_refused(sandbox, capsys):
    default = sandbox.install_dir.parent / ".upgrader-app-01"
    default.mkdir(mode=0o700)
    (default / "runs").mkdir(mode=0o700)
    (default / "catalog-serials.json").write_text('{"sample-middleware": 1}\n')
    (default / "notes.txt").write_text("someone else's file\n")
    capsys.readouterr()
    rc, plan = plan_to(sandbox, NEW)
    out, err = capsys.readouterr()
    assert rc == 2, out + err
    assert "notes.txt" in out + err and "move those files away" in out + err
    assert not (default / ".upgrader-state").exists()
    (default / "notes.txt").unlink()
    rc, plan = plan_to(sandbox, NEW)
    assert rc == 0
    assert not (default / ".upgrader-state").exists()  # plan only reads
    rc, text = approve_and_run(sandbox, capsys, plan)
    assert rc == 0, text
    assert json.loads((default / ".upgrader-state").read_text())["format"] == 1
    assert sandbox.answers() == NEW


# ------------------------------------------------------------------ 3: a sticky 1777 parent (a tmpfs's own mode)


@pytest.fixture
def sticky_disk(tmp_path: Path) -> Iterator[tuple[Sandbox, Path]]:
    """A sandbox whose install (7.0.4.1, running, root's) lies on a fresh tmpfs mounted with its default mode
    (1777, root's: sticky and world-writable, as /tmp)."""
    from test_faults import _unmount
    from conftest import build_sandbox, kill_processes_under
    from upgrader import sample

    box = build_sandbox(tmp_path / "box")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], check=True)
    try:
        box.install_dir = disk / "app-01"
        sample.install(box.install_dir, port=box.port)
        inventory_with(box, install_dir=str(box.install_dir))
        box.start_service()
        try:
            yield box, disk
        finally:
            if (box.install_dir / "bin" / "stop.sh").is_file():
                box.stop_service()
            kill_processes_under(tmp_path)
    finally:
        _unmount(disk)


def test_an_install_in_a_sticky_1777_mount_point_is_accepted_when_root_owns_it(sticky_disk, capsys):
    """The mount point is 1777 and root's, the install dir in it root's, the state dir not made yet: plan and run
    go through (the sticky bit lets only the owner of app-01 rename it); the state dir is made there, marked."""
    box, disk = sticky_disk
    assert oct(disk.stat().st_mode & 0o7777) == "0o1777"
    rc, plan = plan_to(box, NEW)
    assert rc == 0
    rc, text = approve_and_run(box, capsys, plan)
    assert rc == 0, text
    assert box.answers() == NEW
    assert (disk / ".upgrader-app-01" / ".upgrader-state").is_file()


def test_an_install_the_service_account_owns_in_a_sticky_mount_point_is_refused(sticky_disk, capsys):
    """The same mount point, but app-01 is `nobody`'s: in a sticky dir its owner may rename it away and put a link
    in its place, so plan refuses it (exit 2) naming the mount point, its mode and what to do; inspect too."""
    box, disk = sticky_disk
    os.chown(box.install_dir, NOBODY, NOBODY)
    capsys.readouterr()
    rc, plan = plan_to(box, NEW)
    out, err = capsys.readouterr()
    assert rc == 2, out + err
    assert f"below {disk} (owned by uid 0, mode 1777)" in out + err and "chmod go-w" in out + err
    assert not plan.exists()
    rc, text = run_cli(box, capsys, "inspect", "--inventory", str(box.inventory), "--json")
    assert rc == 2, text
    os.chown(box.install_dir, 0, 0)
