"""Nothing outside the install dir, round 11: the leftovers of the earlier rounds.

1. After a stop timeout the agent signals only the service's own process: the pid the pid file names, running as the
   pid file's owner and started before the pid file was written, or a match of the playbook's process selector. A
   root process that merely sits in the install dir or has one of its files open (root's ``tail -f logs/x.log``) is
   never signalled: the run needs a person, naming the pid.

2. ``inspect`` never runs as root a JDK tool (jcmd, jstat) that an account other than root could have changed: the
   tool itself or a directory on its way (a JDK inside the install dir, the service account's). It says why, in
   English and Chinese, and measures the heap no other way.

3. Mounts: an install dir that is itself a mount point is refused before stop (plan and run, exit 2), like a mount
   inside it; a rollback never moves a live tree that holds a mount into runs/RUN/failed: it needs a person before
   anything is moved, the mount where it was.

4. The host trust check's temporary directory is removed from descriptors, never across a mount: a file system
   mounted in it meanwhile keeps every file.

5. A run id or a run label that is not one name (``.``, ``..``, with a ``/``) is refused wherever it would name a
   directory: the operator's ``rollback``, ``resume`` and ``diagnostics`` (exit 2, nothing read or written in the
   directory it names), and the host agent's witness and run directories.

6. A state dir made in a sticky, world-writable parent (1777, as /tmp or a fresh tmpfs): another account that puts
   the name there first (its own directory, or a link to a root-only directory), before the run or racing it, gets
   the run refused (exit 2, before stop) or finds the agent's own root-owned directory there; nothing of the agent
   is ever written into that account's directory or through its link.

Every mount is made inside the test process's own mount namespace (the suite runs under ``unshare -m``) and undone.
"""

from __future__ import annotations

import json
import os
import shutil
import base64
import ctypes
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import approve, inspect_json, plan_to, run_plan, upgrader
from hoststate import assert_host_untouched
from test_host_paths import last_result, last_run_id, run_cli
from test_host_paths_8 import bind, cache_playbook, shared_dir, shared_files, unmount_below
from test_host_paths_4 import sticky_disk  # noqa: F401 (a fixture)
from test_host_paths_9 import private_mounts
from test_host_paths_15 import outside_commands
from test_swap_races import as_attacker
from test_host_trust import HostRoot, _operators_root, host_root  # noqa: F401 (a fixture)
from trust_support import host_state
from upgrader.cli.commands.demo import Sandbox

OLD, NEW = "7.0.4.1", "7.0.4.2"


# ------------------------------------------------------------------ 1: escalation hits the service's own process only


@pytest.mark.parametrize("writer", ["service-account", "root-stale"])
def test_1_stop_never_signals_roots_tail_of_an_install_log(sandbox: Sandbox, writer: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Root runs ``tail -f INSTALL/logs/server.log`` with its working directory in the install (SIGTERM ignored, as
    a shell's `trap '' TERM` leaves it). The pid file names it, written either by the service account (daemon owns
    run/server.pid; a run/ it owned is refused before that, test_host_paths_16) or, root's own but stale, an hour before that tail started. The run is refused at preflight, before stop
    (exit 2: the pid file names a process that is not the service's own, by pid and why), so neither bin/stop.sh nor
    the agent signals it: the tail is alive, the service still answers the old version, and the whole host is as it
    was."""
    if writer == "service-account":
        outside_commands(sandbox)  # in-install root commands over daemon's pid file: refused, test_host_paths_18
    rc, plan = plan_to(sandbox, NEW)
    assert rc == 0
    approval = approve(sandbox, plan)
    log = sandbox.install_dir / "logs" / "server.log"
    victim = subprocess.Popen(["sh", "-c", "trap '' TERM; exec tail -f %s" % log], cwd=sandbox.install_dir,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        run = sandbox.install_dir / "run"
        pid_file = run / "server.pid"
        if writer == "service-account":
            subprocess.run(["chown", "daemon:daemon", str(pid_file)], check=True)  # run/ stays root's
            pid_file.write_text("%d\n" % victim.pid)  # what daemon writes in its own pid file
            assert pid_file.stat().st_uid == pwd_uid("daemon")
        else:
            pid_file.write_text("%d\n" % victim.pid)
            hour_ago = time.time() - 3600
            os.utime(pid_file, (hour_ago, hour_ago))
        deadline = time.monotonic() + 10
        while os.readlink("/proc/%d/exe" % victim.pid).endswith("/sh") and time.monotonic() < deadline:
            time.sleep(0.05)  # until the shell has become tail
        before = host_state(sandbox)
        rc, text = run_cli(sandbox, capsys, "run", str(plan), "--approval", str(approval))
        assert rc == 2, text
        assert "pid %d" % victim.pid in text and "NOT the service's own" in text, text
        assert ("pid file's writer" in text) if writer == "service-account" else ("after the pid file" in text), text
        (host,) = last_result(sandbox)["hosts"]
        assert [p["phase"] for p in host["phases"]] == ["preflight"], host  # never stopped
        assert victim.poll() is None  # alive: neither SIGTERM nor SIGKILL reached it
        assert sandbox.answers() == OLD
        after = host_state(sandbox)
        assert (after.product, after.pid, after.service, after.version) == \
            (before.product, before.pid, before.service, OLD)
    finally:
        victim.kill()
        victim.wait()


def pwd_uid(name: str) -> int:
    import pwd
    return pwd.getpwnam(name).pw_uid


# ------------------------------------------------------------------ 2: no JDK tool the service account can write runs as root


def test_2_inspect_runs_no_jdk_tool_of_the_install_as_root(sandbox: Sandbox, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The product bundles its JDK in the install (a TongWeb-style ``jdk/``), and the install is the service
    account's (daemon). Root started the product's JVM from that JDK (``jdk/bin/java``, argv[0] ``java``) and wrote
    its pid file. daemon has replaced ``jdk/bin/jcmd`` and ``jdk/bin/jstat`` with scripts that would leave a file in
    a root-only directory. ``inspect`` (JSON, and the Chinese HTML report) runs neither: the file never appears,
    the heap is reported not measured, naming the tool and why; nothing on the host changed."""
    rootonly = tmp_path / "rootonly"
    rootonly.mkdir(mode=0o700)
    jdk = sandbox.install_dir / "jdk" / "bin"
    jdk.mkdir(parents=True)
    shutil.copy2("/bin/sleep", jdk / "java")
    for tool in ("jcmd", "jstat"):
        (jdk / tool).write_text("#!/bin/sh\necho %s ran as $(id -u) > %s/%s\n"
                                "echo 'garbage-first heap   total 1024K, used 512K'\n" % (tool, rootonly, tool))
        os.chmod(jdk / tool, 0o755)
    subprocess.run(["chown", "-R", "daemon:daemon", str(sandbox.install_dir)], check=True)
    jvm = subprocess.Popen(["java", "600"], executable=str(jdk / "java"), cwd="/",
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        pid_file = sandbox.install_dir / "run" / "server.pid"
        pid_file.unlink()
        pid_file.write_text("%d\n" % jvm.pid)  # root's, as root started the JVM
        assert pid_file.stat().st_uid == 0
        before = host_state(sandbox)
        rc, out = inspect_json(sandbox, capsys, "--playbook", "sample-middleware", "--var", f"port={sandbox.port}")
        assert rc == 0, out
        (host,) = json.loads(out)["hosts"]
        assert host["facts"]["process"]["running"] is True, host["facts"]["process"]  # the service's own JVM
        heap = host["facts"]["perf"]["jvm"]["heap_used"]
        assert heap["value"] is None, heap
        assert "the JVM runs as root and %s could be changed" % (jdk / "jcmd") in heap["error"], heap
        assert "owned by uid %d" % pwd_uid("daemon") in heap["error"], heap
        assert list(rootonly.iterdir()) == []  # neither script ran
        report = tmp_path / "report.html"
        rc = upgrader(sandbox, "inspect", "--install-dir", str(sandbox.install_dir), "--playbook",
                      "sample-middleware", "--var", f"port={sandbox.port}", "--lang", "zh", "-o", str(report))
        out, err = capsys.readouterr()
        assert rc == 0 and "Traceback" not in err, out + err
        html = report.read_text()
        assert "JVM 以 root 运行，而 %s 可被 root 以外的账户修改" % (jdk / "jcmd") in html, html[-3000:]
        assert list(rootonly.iterdir()) == []
        assert jvm.poll() is None
        assert_host_untouched(before, host_state(sandbox))
    finally:
        jvm.kill()
        jvm.wait()


def mounted(path: Path) -> bool:
    """Is ``path`` a mount point in the mount table (a bind mount of the same file system included)?"""
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4].encode().decode("unicode_escape") == str(path) for line in f)


# ------------------------------------------------------------------ 3: a mount at the install dir; rollback and mounts


def test_3_an_install_dir_that_is_itself_a_mount_point_is_refused_before_stop(
        sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """The install dir is bind-mounted onto itself (a file system mounted at the install dir, as a dedicated disk at
    /opt/app would be): plan refuses (exit 2) naming it and saying what to do; a run planned before the mount
    appeared refuses in its preflight, before stop. The service still answers the old version and nothing on the
    host changed."""
    private_mounts()
    install = sandbox.install_dir
    rc, plan = plan_to(sandbox, NEW)
    assert rc == 0
    approval = approve(sandbox, plan)
    bind(install, install)
    try:
        before = host_state(sandbox)
        rc, out = run_cli(sandbox, capsys, "plan", "--inventory", str(sandbox.inventory), "--to", NEW,
                          "--catalog", str(sandbox.catalog), "-o", str(sandbox.plans / "m.json"))
        assert rc == 2 and "the install dir %s is itself a mount point" % install in out, out
        assert "mount the file system one level up" in out
        assert not (sandbox.plans / "m.json").exists()
        rc, out = run_cli(sandbox, capsys, "run", str(plan), "--approval", str(approval))
        assert rc == 2 and "is itself a mount point" in out, out
        assert sandbox.answers() == OLD
        assert_host_untouched(before, host_state(sandbox), run_record=last_run_id(sandbox))
        assert mounted(install)
    finally:
        subprocess.run(["umount", "-l", str(install)], check=False)


def test_3_rollback_never_moves_a_live_tree_holding_a_mount(sandbox: Sandbox, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """After an upgrade the cache work/ is mounted on the live tree (from fstab after a reboot, say); the operator
    rolls the run back. Once the new version is stopped, the rollback needs a person (exit 5) naming the mount
    before it builds or moves anything: the mount is still at INSTALL/work (not carried into runs/RUN/failed), the
    live product tree is as it was and the shared files are all there."""
    private_mounts()
    install, shared = sandbox.install_dir, shared_dir(tmp_path)
    cache_playbook(sandbox)
    files = shared_files(shared)
    try:
        rc, plan = plan_to(sandbox, "7.0.5.0")
        assert rc == 0
        assert run_plan(sandbox, plan) == 0
        run = last_run_id(sandbox)
        (install / "work").mkdir(exist_ok=True)
        bind(shared, install / "work")
        before = host_state(sandbox)
        rc, out = run_cli(sandbox, capsys, "rollback", run, "--yes")
        assert rc == 5 and "NEEDS A PERSON" in out and "%s/work is a mount point" % install in out, out
        assert mounted(install / "work")  # where it was
        state_runs = [p for p in install.parent.glob(".upgrader-*/runs/%s" % run)]
        assert state_runs and not any((r / "failed").exists() or (r / "restore").exists() for r in state_runs)
        after = host_state(sandbox)
        assert after.product == before.product  # the live tree untouched (the new version was stopped first)
        assert shared_files(shared) == files
    finally:
        unmount_below(tmp_path)
    assert shared_files(shared) == files


# ------------------------------------------------------------------ 4: the trust check's temporary directory


def bind_now(src: Path, dst: Path) -> None:
    """mount --bind SRC DST with one system call (the window is the few milliseconds of an ssh-keygen run)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(str(src).encode(), str(dst).encode(), None, 4096, None) != 0:  # MS_BIND
        raise OSError(ctypes.get_errno(), "mount --bind %s %s" % (src, dst))


def test_4_the_trust_checks_temporary_dir_is_removed_without_entering_a_mount(
        sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        host_root: HostRoot) -> None:  # noqa: F811
    """A host with its own trust root checks each run's evidence with ssh-keygen in a temporary directory of its own.
    While it does, a file system is mounted in that directory (here: root's directory of files bind-mounted there
    by a watcher the moment the directory appears). The run commits as it would anyway, and removing the
    temporary directory did not enter the mount: every file of the mounted directory is still there."""
    private_mounts()
    _operators_root(sandbox, host_root)
    agent_tmp = tmp_path / "agent-tmp"
    agent_tmp.mkdir(mode=0o700)
    monkeypatch.setenv("TMPDIR", str(agent_tmp))  # the host agent's temporary directories are made here
    shared = tmp_path / "shared"
    shared.mkdir()
    for i in range(3):
        (shared / ("file-%d.dat" % i)).write_text("root's data %d\n" % i)
    files = sorted(os.listdir(shared))
    mounted_in: list[Path] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for name in os.listdir(agent_tmp):
                d = agent_tmp / name
                if name.startswith("upgrader-trust-") and d not in mounted_in:
                    try:
                        (d / "mnt").mkdir()
                        bind_now(shared, d / "mnt")
                    except OSError:
                        continue  # removed meanwhile: the next check's directory
                    mounted_in.append(d)
            time.sleep(0.0005)

    watcher = threading.Thread(target=watch, daemon=True)
    try:
        rc, plan = plan_to(sandbox, NEW)
        assert rc == 0
        approval = approve(sandbox, plan)
        watcher.start()
        rc, text = run_cli(sandbox, capsys, "run", str(plan), "--approval", str(approval))
        done.set()
        watcher.join(timeout=10)
        assert rc == 0, text
        assert mounted_in, "no trust check's temporary directory was seen"
        assert sorted(os.listdir(shared)) == files  # nothing of the mounted directory was deleted
        for d in mounted_in:
            assert mounted(d / "mnt") and sorted(os.listdir(d / "mnt")) == files
    finally:
        done.set()
        unmount_below(tmp_path)
    assert sorted(os.listdir(shared)) == files


# ------------------------------------------------------------------ 5: labels and run ids that name another directory


def listing(top: Path) -> list[tuple[str, float]]:
    return sorted((str(p.relative_to(top)), p.lstat().st_mtime) for p in top.rglob("*"))


@pytest.mark.parametrize("command", ["rollback", "resume", "diagnostics"])
def test_5_a_run_id_that_names_another_directory_is_refused(sandbox: Sandbox, command: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """HOME/elsewhere holds what looks like a run (a plan.json): ``upgrader rollback ../elsewhere`` (and resume,
    diagnostics) would take HOME/runs/../elsewhere for a run's directory. Each, and ``.``, ``..`` and ``a/b``, is
    refused (exit 2) saying it is not a run id; nothing in that directory or on the host changed."""
    rc, plan = plan_to(sandbox, NEW)
    assert rc == 0
    elsewhere = sandbox.root / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "plan.json").write_bytes(plan.read_bytes())
    (sandbox.root / "runs").mkdir(exist_ok=True)
    (sandbox.root / "plan.json").write_bytes(plan.read_bytes())  # HOME/runs/.. is HOME
    seen = listing(elsewhere)
    before = host_state(sandbox)
    for run_id in ("../elsewhere", "..", ".", "x/../../elsewhere"):
        extra = ["--yes"] if command != "diagnostics" else ["-o", str(sandbox.root / "bundle.tar.gz")]
        rc, out = run_cli(sandbox, capsys, command, run_id, *extra)
        assert rc == 2 and "%r is not a run id" % run_id in out, (run_id, out)
        assert listing(elsewhere) == seen
        assert not (sandbox.root / "bundle.tar.gz").exists()
    assert_host_untouched(before, host_state(sandbox))


def agent_reply(request: dict[str, object]) -> dict[str, object]:
    """One request to the real host agent (python -m upgrader.hostagent, the request as base64 in argv[1])."""
    arg = base64.b64encode(json.dumps(request).encode()).decode()
    done = subprocess.run([sys.executable, "-m", "upgrader.hostagent", arg], capture_output=True, check=False)
    return dict(json.loads(done.stdout.decode().strip().splitlines()[-1]))


def test_5_the_agent_refuses_labels_and_run_ids_that_are_not_one_name(sandbox: Sandbox) -> None:
    """The host agent itself: a witness whose checkpoint names run ``x/..``, ``..`` or ``./x``, and a run's op whose
    run id is ``.``, ``..`` or ``a/b``, are refused as bad input; nothing is made in the state dir."""
    before = host_state(sandbox)
    for run in ("x/..", "..", "./x", "x/."):
        reply = agent_reply({"op": "witness", "install_dir": str(sandbox.install_dir),
                             "checkpoint": {"seq": 1, "head": "0" * 64, "run": run}})
        assert reply.get("ok") is False and reply.get("kind") == "bad_input", (run, reply)
        assert "not a run id" in str(reply.get("error")), reply
    for run_id in (".", "..", "a/b"):
        reply = agent_reply({"op": "stop", "install_dir": str(sandbox.install_dir), "run_id": run_id,
                             "stop": {"command": "true", "pid_file": "run/server.pid"}})
        assert reply.get("ok") is False and reply.get("kind") == "bad_input", (run_id, reply)
    assert_host_untouched(before, host_state(sandbox))
    assert sandbox.answers() == OLD


# ------------------------------------------------------------------ 6: a state dir in a sticky 1777 parent


def nobodys_dirs_are_empty(top: Path) -> None:
    """No file of the agent's in a directory of another account's below ``top`` (walked without following links)."""
    nobody = pwd_uid("nobody")
    for dirpath, dirnames, filenames in os.walk(top):
        if os.lstat(dirpath).st_uid == nobody:
            assert not dirnames and not filenames, (dirpath, dirnames, filenames)


@pytest.mark.parametrize("planted", ["directory", "link"])
def test_6_a_state_dir_name_another_account_puts_in_a_sticky_parent_first_is_refused(
        sticky_disk: tuple[Sandbox, Path], tmp_path: Path, planted: str,  # noqa: F811
        capsys: pytest.CaptureFixture[str]) -> None:
    """The install lies in a 1777 mount point; its default state dir (.upgrader-app-01) does not exist at plan.
    Before the run, nobody puts that name there: its own 0777 directory, or a link to a root-only directory. The
    run refuses (exit 2) before stop, naming it; nothing is written into nobody's directory nor through the link,
    the service still answers the old version and the rest of the host is as it was."""
    box, disk = sticky_disk
    rootonly = tmp_path / "root-only"
    rootonly.mkdir(mode=0o700)
    rc, plan = plan_to(box, NEW)
    assert rc == 0
    approval = approve(box, plan)
    assert not (disk / ".upgrader-app-01").exists()
    if planted == "directory":
        assert as_attacker(disk, lambda d: os.mkdir(".upgrader-app-01", 0o777, dir_fd=d)) == 0
    else:
        assert as_attacker(disk, lambda d: os.symlink(str(rootonly), ".upgrader-app-01", dir_fd=d)) == 0
    before = host_state(box)
    rc, out = run_cli(box, capsys, "run", str(plan), "--approval", str(approval))
    assert rc == 2 and ".upgrader-app-01" in out, out
    assert box.answers() == OLD
    assert os.listdir(rootonly) == []
    nobodys_dirs_are_empty(disk)
    after = host_state(box)
    assert (after.product, after.pid, after.service) == (before.product, before.pid, before.service)


def test_6_another_account_racing_for_the_state_dir_name_never_gets_the_agents_files(
        sticky_disk: tuple[Sandbox, Path], capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    """While the run makes its state dir in the 1777 mount point, nobody makes and removes that name as its own
    directory as fast as it can. Whoever wins, the agent never works in nobody's directory: either the run is
    refused (exit 2) before stop, the old version answering, or the state dir is the agent's own (root's, 0700,
    with its marker) and the run commits; nobody's directory, when left, is empty."""
    box, disk = sticky_disk
    rc, plan = plan_to(box, NEW)
    assert rc == 0
    approval = approve(box, plan)
    stop_r, stop_w = os.pipe()
    dfd = os.open(disk, os.O_RDONLY | os.O_DIRECTORY)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the racing account
        try:
            os.close(stop_w)
            os.setgroups([])
            os.setresgid(pwd_uid("nobody"), pwd_uid("nobody"), pwd_uid("nobody"))
            os.setresuid(pwd_uid("nobody"), pwd_uid("nobody"), pwd_uid("nobody"))
            os.set_blocking(stop_r, False)
            while True:
                try:
                    if os.read(stop_r, 1) == b"":
                        break
                except BlockingIOError:
                    pass
                try:
                    os.mkdir(".upgrader-app-01", 0o777, dir_fd=dfd)
                    os.rmdir(".upgrader-app-01", dir_fd=dfd)
                except OSError:
                    pass
        finally:
            os._exit(0)
    os.close(stop_r)
    os.close(dfd)
    try:
        rc, out = run_cli(box, capsys, "run", str(plan), "--approval", str(approval))
    finally:
        os.close(stop_w)
        os.waitpid(pid, 0)
    state = disk / ".upgrader-app-01"
    if rc == 0:
        st = state.lstat()
        assert st.st_uid == 0 and st.st_mode & 0o7777 == 0o700 and (state / ".upgrader-state").is_file()
        assert box.answers() == NEW
    else:
        assert rc == 2 and ".upgrader-app-01" in out, out
        assert box.answers() == OLD
    nobodys_dirs_are_empty(disk)
