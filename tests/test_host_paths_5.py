"""Nothing outside the install dir, round 5: what the agent writes, not only where.

1. The service account (`nobody`) makes one of its own files set-user-ID/set-group-ID in the install (a product file
   in an install it owns, or its own preserved `conf/server.conf`): a root agent that copied it (a patch copies the
   install, a backup and a rollback copy the configuration) would leave a root-owned set-id file whose bytes the
   account chose. `plan` and `run` refuse it before stop (exit 2) naming the file and the fix; the copies the agent
   makes keep their source's owner and group, and set-id/sticky bits only of what root owns.
2. A FIFO in place of a file the agent reads (`run/server.pid`) is reported as not a regular file at once: `inspect`
   and a run's preflight never wait on it.
3. An existing empty directory is not taken as a state dir: the agent makes its state dir, or finds its marker.
4. A file with more than one link that is not the service account's (a hard link of a root-only file, on a host
   with fs.protected_hardlinks=0) is not disclosed by inspect or diagnostics.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

from conftest import approve, plan_to, tree_digest
from hoststate import assert_host_untouched
from fleet import Fleet
from test_host_paths import host_state, last_result, run_cli
from test_host_paths_15 import wrapped_commands
from test_swap_races import NOBODY, as_attacker
from upgrader.cli.commands.demo import Sandbox
from upgrader.hostagent.beneath import copy_out, read_beneath
from upgrader.hostagent.common import AgentError
from upgrader.hostagent.inspection import config_facts, log_facts

FULL, PATCH, BROKEN = "7.0.4.2", "7.0.4.3", "7.0.4.5"
SET_ID = stat.S_ISUID | stat.S_ISGID


def state_dir(box: Sandbox) -> Path:
    return box.install_dir.parent / f".upgrader-{box.install_dir.name}"


def root_setid_files(install: Path) -> list[str]:
    """Every set-id file in the install that root owns (the sample product ships none)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(install):
        for name in filenames + dirnames:
            st = os.lstat(os.path.join(dirpath, name))
            if st.st_uid == 0 and st.st_mode & SET_ID and not stat.S_ISLNK(st.st_mode):
                found.append(os.path.relpath(os.path.join(dirpath, name), install))
    return found


def chown_tree(top: Path, uid: int) -> None:
    os.lchown(top, uid, uid)
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, uid)


def upgrade(box: Sandbox, capsys: pytest.CaptureFixture[str], version: str, *approving: str) -> tuple[int, str]:
    rc, plan = plan_to(box, version)
    assert rc == 0, f"plan to {version} exited {rc}"
    return run_cli(box, capsys, "run", str(plan), "--approval", str(approve(box, plan, *approving)))


def write_setid(directory: Path, name: str, mode: int, data: bytes) -> None:
    """As `nobody`: (re)write its own file ``name`` in ``directory`` with ``data`` and chmod it ``mode``."""
    def attack(dfd: int) -> None:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644, dir_fd=dfd)
        try:
            os.write(fd, data)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)

    assert as_attacker(directory, attack) == 0
    st = os.lstat(directory / name)
    assert st.st_uid == NOBODY and stat.S_IMODE(st.st_mode) == mode


def chmod_as_nobody(path: Path, mode: int) -> None:
    assert as_attacker(path.parent, lambda dfd: os.chmod(path.name, mode, dir_fd=dfd)) == 0


# ------------------------------------------------------------------ 1: root-owned set-id copies


def variant_a_host(box: Sandbox, capsys: pytest.CaptureFixture[str]) -> Path:
    """7.0.4.2 installed by the agent, then everything in the install handed to `nobody`, which adds lib/helper (a
    copy of /bin/true, set-user-ID and set-group-ID), an ordinary file of its own (0640) and a setgid directory.
    The install dir itself stays root's: the service here is root's (the sandbox's, started by root), and the
    playbook's commands run as the install dir's owner, so a nobody-owned install dir would have bin/stop.sh run as
    nobody, which cannot stop root's service (test_host_paths_13 shows that refusal). bin/, conf/ and what the service
    writes (run/, logs/, data/) stay root's too: the commands run as root, which refuses a script nobody could change
    (test_host_paths_15) or a directory of the service's it acts on (test_host_paths_16), and a run refuses a pid file
    whose owner is not the account of the process it names (root's service here). The playbook's stop and start are
    root's wrappers outside the install (wrapped_commands): lib/ is nobody's, so in-install root commands would be
    refused (test_host_paths_18)."""
    rc, text = upgrade(box, capsys, FULL)
    assert rc == 0, text
    wrapped_commands(box)
    chown_tree(box.install_dir, NOBODY)
    os.lchown(box.install_dir, 0, 0)
    for rel in ("bin", "run", "logs", "data", "conf"):
        chown_tree(box.install_dir / rel, 0)
    lib = box.install_dir / "lib"
    write_setid(lib, "helper", 0o6755, Path("/bin/true").read_bytes())
    write_setid(lib, "own.jar", 0o640, b"the service account's own jar\n")
    assert as_attacker(lib, lambda dfd: os.mkdir("ext", 0o2770, dir_fd=dfd)) == 0
    chmod_as_nobody(lib / "ext", 0o2770)
    return lib


def test_a_patch_run_over_a_set_id_file_of_the_service_account_is_refused_and_copies_keep_owners(sandbox, capsys):
    lib = variant_a_host(sandbox, capsys)
    # plan: refused (exit 2), naming the file, its owner and the fix
    rc, plan = plan_to(sandbox, PATCH)
    out, err = capsys.readouterr()
    assert rc == 2, out + err
    assert "lib/helper" in out + err and f"owned by uid {NOBODY}" in out + err and "chmod ug-s" in out + err
    assert not plan.exists()
    # a plan made while the file was plain; the bits come back before the run: refused in preflight, nothing touched
    chmod_as_nobody(lib / "helper", 0o755)
    rc, plan = plan_to(sandbox, PATCH)
    assert rc == 0
    approval = approve(sandbox, plan)
    chmod_as_nobody(lib / "helper", 0o6755)
    was = host_state(sandbox.install_dir)
    rc, text = run_cli(sandbox, capsys, "run", str(plan), "--approval", str(approval))
    assert rc == 2, text
    assert "lib/helper" in text and "chmod ug-s" in text
    assert_host_untouched(was, host_state(sandbox.install_dir))
    assert sandbox.answers() == FULL
    (host,) = last_result(sandbox)["hosts"]
    assert host["outcome"] == "bad_input" and [p["phase"] for p in host["phases"]] == ["preflight"]
    assert root_setid_files(sandbox.install_dir) == []
    # the bits removed: the patch runs; every copied file keeps its owner, group and mode (none made root's)
    chmod_as_nobody(lib / "helper", 0o755)
    # the refused run took its lock, so it spent its approval: the same plan approved again within the same second
    # would be the same statement ("already used"); this approval says why it is new
    rc, text = upgrade(sandbox, capsys, PATCH, "--comment", "again, the set-id bits removed")
    assert rc == 0, text
    assert sandbox.answers() == PATCH
    for name, mode in (("helper", 0o755), ("own.jar", 0o640)):
        st = os.lstat(lib / name)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (NOBODY, NOBODY, mode), name
    st = os.lstat(lib / "ext")  # the account's setgid directory: still its own, without the set-id bit
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (NOBODY, NOBODY, 0o770)
    assert os.lstat(lib).st_uid == NOBODY  # directories keep their owner too
    assert root_setid_files(sandbox.install_dir) == []


def test_a_preserved_config_turned_set_id_is_refused_before_the_run_that_would_roll_back(sandbox, capsys):
    """Variant B, the steady state: product files root's, only the preserved config the account's (a data, logs or
    run dir of its own under root's commands is refused by itself, test_host_paths_16); it turns conf/server.conf into a set-id file. The next run (7.0.4.5, which rolls back) is refused
    by plan and, planned before, by the run's preflight: no rollback restores a root-owned set-id copy."""
    rc, text = upgrade(sandbox, capsys, FULL)
    assert rc == 0, text
    install = sandbox.install_dir
    wrapped_commands(sandbox)
    os.lchown(install / "conf" / "server.conf", NOBODY, NOBODY)
    rc, plan = plan_to(sandbox, BROKEN)
    assert rc == 0
    approval = approve(sandbox, plan)
    config = (install / "conf" / "server.conf").read_bytes()
    write_setid(install / "conf", "server.conf", 0o4755, config)
    rc, plan2 = plan_to(sandbox, BROKEN)
    out, err = capsys.readouterr()
    assert rc == 2, out + err
    assert "conf/server.conf" in out + err and "chmod ug-s" in out + err
    was = host_state(install)
    rc, text = run_cli(sandbox, capsys, "run", str(plan), "--approval", str(approval))
    assert rc == 2, text
    assert "conf/server.conf" in text
    assert_host_untouched(was, host_state(install))
    assert sandbox.answers() == FULL
    assert root_setid_files(install) == []
    # the bit removed, the same run goes through and rolls back (7.0.4.5 is unhealthy): the restored config is
    # the account's own file as it was, owner and mode kept
    chmod_as_nobody(install / "conf" / "server.conf", 0o644)
    rc, plan = plan_to(sandbox, BROKEN)
    assert rc == 0
    rc, text = run_cli(sandbox, capsys, "run", str(plan), "--approval", str(approve(sandbox, plan)))
    assert rc != 0 and sandbox.answers() == FULL, text
    st = os.lstat(install / "conf" / "server.conf")
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (NOBODY, 0o644)
    assert (install / "conf" / "server.conf").read_bytes() == config
    assert root_setid_files(install) == []


def test_the_agents_copy_keeps_the_owner_and_drops_set_id_bits_of_a_file_root_does_not_own(tmp_path):
    """The copy itself (a patch's copy of the install, the backup and the rollback's copies of configuration), for
    a set-id file that appears between the check and the copy: owner and group kept, set-id bits dropped; root's
    own set-id file and directory keep theirs."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    (src / "evil").write_bytes(b"\x7fELF the account's bytes")
    os.chown(src / "evil", NOBODY, NOBODY)
    os.chmod(src / "evil", 0o6755)
    (src / "dir").mkdir()
    os.chown(src / "dir", NOBODY, NOBODY)
    os.chmod(src / "dir", 0o3775)
    (src / "dir" / "plain").write_text("x")
    os.chown(src / "dir" / "plain", NOBODY, 0)
    os.chmod(src / "dir" / "plain", 0o640)
    (src / "roots").write_text("root's own set-id tool")
    os.chmod(src / "roots", 0o4755)
    sfd, dfd = os.open(src, os.O_RDONLY), os.open(dst, os.O_RDONLY)
    try:
        for name in ("evil", "dir", "roots"):
            copy_out(sfd, name, dfd, name)
    finally:
        os.close(sfd)
        os.close(dfd)

    def owner_mode(p: Path) -> tuple[int, int, int]:
        st = os.lstat(p)
        return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)

    assert owner_mode(dst / "evil") == (NOBODY, NOBODY, 0o755)
    assert owner_mode(dst / "dir") == (NOBODY, NOBODY, 0o775)
    assert owner_mode(dst / "dir" / "plain") == (NOBODY, 0, 0o640)
    assert owner_mode(dst / "roots") == (0, 0, 0o4755)
    assert (dst / "evil").read_bytes() == b"\x7fELF the account's bytes"


def test_over_ssh_a_patch_over_a_set_id_file_of_the_service_account_is_refused_before_stop(fleet, capsys):
    f: Fleet = fleet(1)
    box = f.box
    lib = variant_a_host(box, capsys)
    chmod_as_nobody(lib / "helper", 0o755)
    rc, plan = plan_to(box, PATCH)
    assert rc == 0
    approval = approve(box, plan)
    chmod_as_nobody(lib / "helper", 0o6755)
    was = host_state(box.install_dir)
    rc, text = run_cli(box, capsys, "run", str(plan), "--approval", str(approval))
    assert rc == 2, text
    assert "lib/helper" in text and f"owned by uid {NOBODY}" in text and "chmod ug-s" in text
    assert_host_untouched(was, host_state(box.install_dir))
    assert box.answers() == FULL
    assert root_setid_files(box.install_dir) == []
    chmod_as_nobody(lib / "helper", 0o755)
    # the refused run took the host's lock, so it spent its approval; the same plan made again within the same second
    # would be approved by the very same statement: a new approval says why it is new
    rc, text = upgrade(box, capsys, PATCH, "--comment", "again after the set-id file was fixed")
    assert rc == 0, text
    st = os.lstat(lib / "helper")
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (NOBODY, 0o755)
    assert root_setid_files(box.install_dir) == []


# ------------------------------------------------------------------ 2: a FIFO where a file is read


def cli_child(box: Sandbox, *argv: str) -> subprocess.CompletedProcess[str]:
    """The shipped CLI as its own process (a hang would hold the test: the timeout only guards against that)."""
    return subprocess.run([sys.executable, "-m", "upgrader", "--home", str(box.root), *argv], capture_output=True,
                          text=True, timeout=600)


def pid_file_as_fifo(box: Sandbox) -> str:
    """As `nobody`, owner of run/: run/server.pid replaced by a FIFO; the pid it held is returned."""
    run = box.install_dir / "run"
    pid = (run / "server.pid").read_text()
    chown_tree(run, NOBODY)

    def attack(dfd: int) -> None:
        os.unlink("server.pid", dir_fd=dfd)
        os.mkfifo("server.pid", 0o644, dir_fd=dfd)

    assert as_attacker(run, attack) == 0
    assert stat.S_ISFIFO(os.lstat(run / "server.pid").st_mode)
    return pid


def product_files(box: Sandbox) -> dict[str, tuple[str, int]]:
    """product_digest of everything but run/ and logs/, never reading run/ (its FIFO would hold the test itself)."""
    return {rel: v for top in sorted(os.listdir(box.install_dir)) if top not in ("run", "logs")
            for rel, v in ([(top, ("dir", 0))] if (box.install_dir / top).is_dir() else []) +
            [(f"{top}/{k}", v) for k, v in tree_digest(box.install_dir / top).items()]}


def put_pid_back(box: Sandbox, pid: str) -> None:
    (box.install_dir / "run" / "server.pid").unlink()
    (box.install_dir / "run" / "server.pid").write_text(pid)


def test_inspect_and_a_runs_preflight_do_not_wait_on_a_fifo_pid_file(sandbox, tmp_path, capsys):
    rc, plan = plan_to(sandbox, FULL)
    assert rc == 0
    approval = approve(sandbox, plan)
    pid = pid_file_as_fifo(sandbox)
    try:
        res = cli_child(sandbox, "inspect", "--inventory", str(sandbox.inventory), "--json")
        text = res.stdout + res.stderr
        assert "Traceback" not in text
        assert res.returncode == 0, text  # inspected, the pid file reported as what it is, not read
        (host,) = json.loads(res.stdout)["hosts"]
        assert "run/server.pid is a FIFO (named pipe), not a regular file" in host["facts"]["process"]["error"]
        assert host["facts"]["process"]["pid"] is None
        assert any("the product's process is unknown: pid_file run/server.pid is a FIFO" in w["message"]
                   for w in host["warnings"])
        was = host_state(sandbox.install_dir)
        res = cli_child(sandbox, "run", str(plan), "--approval", str(approval))
        text = res.stdout + res.stderr
        assert "Traceback" not in text
        assert res.returncode == 2, text
        assert "run/server.pid is a FIFO (named pipe), not a regular file" in text, text
        assert_host_untouched(was, host_state(sandbox.install_dir))
        assert not (state_dir(sandbox) / "lock").exists()
        assert sandbox.answers() == "7.0.4.1"
        (host,) = last_result(sandbox)["hosts"]
        assert host["outcome"] == "bad_input" and [p["phase"] for p in host["phases"]] == ["preflight"]
    finally:
        put_pid_back(sandbox, pid)
    assert int(pid) == int((sandbox.install_dir / "run" / "server.pid").read_text())  # the same server runs on


# ------------------------------------------------------------------ 3: an existing empty directory is not a state dir


def test_an_empty_root_only_directory_is_not_taken_as_a_state_dir(sandbox, tmp_path, capsys):
    """/var/lib/private, /lost+found: empty, 0700, root's. Named as state_dir they are refused by plan and by the run
    (exit 2, nothing written there); a directory that does not exist yet is made by the agent, with its marker."""
    private = tmp_path / "var-lib-private"
    private.mkdir(mode=0o700)
    doc = yaml.safe_load(sandbox.inventory.read_text())
    doc["hosts"]["app-01"]["state_dir"] = str(private)
    sandbox.inventory.write_text(yaml.safe_dump(doc, sort_keys=False))
    capsys.readouterr()
    rc, plan = plan_to(sandbox, FULL)
    out, err = capsys.readouterr()
    assert rc == 2, out + err
    assert f"state_dir {private}" in out + err and ".upgrader-state" in out + err
    assert not plan.exists() and os.listdir(private) == []
    # planned while it did not exist; an empty root-only directory made there before the run: refused in preflight
    private.rmdir()
    rc, plan = plan_to(sandbox, FULL)
    assert rc == 0
    approval = approve(sandbox, plan)
    private.mkdir(mode=0o700)
    rc, text = run_cli(sandbox, capsys, "run", str(plan), "--approval", str(approval))
    assert rc == 2, text
    assert f"state_dir {private}" in text
    assert os.listdir(private) == [] and sandbox.answers() == "7.0.4.1"
    # absent: the agent makes it, with its marker, and the run goes through
    private.rmdir()
    rc, text = run_cli(sandbox, capsys, "run", str(plan), "--approval", str(approve(sandbox, plan)))
    assert rc == 0, text
    assert json.loads((private / ".upgrader-state").read_text())["format"] == 1 and sandbox.answers() == FULL


# ------------------------------------------------------------------ 4: a hard link of another owner's file


def test_inspect_withholds_the_text_of_a_hard_link_of_a_root_only_file(sandbox, tmp_path):
    """As on a host with fs.protected_hardlinks=0, where the service account may link any file into a directory it
    owns: conf/ and logs/ are the account's, root links a root-only file there (the link the account could make).
    inspect's config facts give its digest with its text withheld and the log's facts come without its lines; a log
    probe and a vars_from read refuse it; ordinary files are read as before."""
    secret = tmp_path / "root-only"
    secret.mkdir(mode=0o700)
    (secret / "shadow").write_text("ERROR root:$6$hunter2-hash:19000:0:99999:7:::\n")
    os.chmod(secret / "shadow", 0o600)
    install = sandbox.install_dir
    for rel in ("conf", "logs"):
        chown_tree(install / rel, NOBODY)
    os.link(secret / "shadow", install / "conf" / "x.conf")
    os.link(secret / "shadow", install / "logs" / "x.log")
    assert os.lstat(install / "conf" / "x.conf").st_nlink == 3
    root = str(install)
    c = config_facts(root, "conf/x.conf", True)
    assert "text" not in c and "has 3 hard links and is owned by uid 0" in c["text_withheld"]
    assert "port" in config_facts(root, "conf/server.conf", True)["text"]  # an ordinary config: read as before
    log = log_facts(root, "logs/x.log", 2000, 5, "ERROR")
    assert log["samples"] == [] and "tail" not in log and "hard links" in log["withheld"]
    assert "hunter2" not in json.dumps([c, log])
    assert log_facts(root, "logs/server.log", 2000, 0, "INFO")["lines"] > 0
    with pytest.raises(AgentError) as e:  # a log probe's lines and a vars_from value: the same refusal
        read_beneath(root, "logs/x.log", "log file", disclose=True)
    assert e.value.kind == "unsafe_path" and "its contents were not read" in str(e.value)
