"""Nothing outside the install dir, round 9.

1. The agent never makes a directory above a state dir: an inventory state_dir whose parent is missing is refused
   (exit 2 at plan and in the run's preflight, naming the parent and saying to create it), and nothing is made.
   A state_dir that is itself a system path (/etc/NAME, /boot/NAME, /usr...) is refused too: a mere name there
   changes the system (/etc/nologin stops every non-root login).

Every mount is made inside the test process's own mount namespace (the suite runs under ``unshare -m``) and undone.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import re
import subprocess
from pathlib import Path
from typing import Iterator

import pytest
import yaml  # type: ignore[import-untyped]

from conftest import approve, inspect_json, plan_to
from hoststate import assert_host_untouched
from test_host_paths import last_result, last_run_id, run_cli
from test_host_paths_15 import outside_commands
from trust_support import host_state
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.playbook import shipped_playbooks_dir

OLD, NEW = "7.0.4.1", "7.0.4.2"


def with_state_dir(box: Sandbox, state: str) -> None:
    doc = yaml.safe_load(box.inventory.read_text())
    doc["hosts"]["app-01"]["state_dir"] = state
    box.inventory.write_text(yaml.safe_dump(doc, sort_keys=False))


def plan_cli(box: Sandbox, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, Path]:
    capsys.readouterr()
    rc, plan = plan_to(box, NEW)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out + err, plan


def private_mounts() -> None:
    """Mounts below are made only in a mount namespace of the test's own (never on this machine's /boot)."""
    if not os.path.ismount("/etc/upgrader"):  # the suite's own namespace mounts a tmpfs there
        pytest.fail("run the suite under `unshare -m` (tests/run.sh does): this test mounts a tmpfs over /boot")


@pytest.fixture
def scratch_boot() -> Iterator[Path]:
    """/boot replaced, in this test's mount namespace only, by an empty root-owned tmpfs (0755)."""
    private_mounts()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/boot"], check=True)
    try:
        yield Path("/boot")
    finally:
        subprocess.run(["umount", "/boot"], check=True)


# ------------------------------------------------------------------ 1: no parent of a state dir is ever made


def test_a1_a_state_dir_whose_parent_is_missing_is_refused_by_plan_and_run(sandbox: Sandbox, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """state_dir ETC/nologin/upgrader with ETC/nologin missing (ETC stands for the host's /etc): plan exits 2 naming
    ETC/nologin and saying to create it; planned while it existed and removed before the run, the run's preflight
    refuses the same way. ETC/nologin is never made, and the host is as it was."""
    etc = tmp_path / "etc"
    etc.mkdir(mode=0o755)
    nologin = etc / "nologin"
    with_state_dir(sandbox, str(nologin / "upgrader"))
    before = host_state(sandbox)
    rc, text, plan = plan_cli(sandbox, capsys)
    assert rc == 2, text
    assert str(nologin) in text and "create the parent" in text, text
    assert not plan.exists()
    assert not nologin.exists() and os.listdir(etc) == []
    nologin.mkdir(mode=0o755)
    rc, plan = plan_to(sandbox, NEW)  # planned while the parent existed
    assert rc == 0
    approval = approve(sandbox, plan)
    nologin.rmdir()
    before = host_state(sandbox)
    rc, text = run_cli(sandbox, capsys, "run", str(plan), "--approval", str(approval))
    assert rc == 2, text
    assert str(nologin) in text and "create the parent" in text, text
    assert not nologin.exists() and os.listdir(etc) == []
    assert_host_untouched(before, host_state(sandbox), run_record=last_run_id(sandbox))


def test_a1_a_state_dir_named_as_a_system_path_is_refused(sandbox: Sandbox, scratch_boot: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """state_dir /boot/upgrader-state (its parent exists, root's 0755: every other rule passes) is a name directly
    below a system directory: plan exits 2 naming it, and nothing is made there; //boot/x is read as /boot/x."""
    for given in ("/boot/upgrader-state", "//boot/upgrader-state", "/etc"):
        with_state_dir(sandbox, given)
        before = host_state(sandbox)
        rc, text, plan = plan_cli(sandbox, capsys)
        assert rc == 2, text
        assert "system path" in text and ("/boot/upgrader-state" if "boot" in given else "/etc") in text, text
        assert not plan.exists()
        assert os.listdir(scratch_boot) == []
        assert_host_untouched(before, host_state(sandbox))


# ------------------------------------------------------------------ 2: a digest or a pid is content too


def root_secret(tmp_path: Path, content: bytes) -> Path:
    """Outside the install: root's own 0600 file, in a directory only root may enter."""
    d = tmp_path / "root-only"
    d.mkdir(mode=0o700)
    f = d / "pin"
    f.write_bytes(content)
    os.chmod(f, 0o600)
    return f


def test_a2_inspect_reports_no_digest_of_a_linked_file_its_account_may_not_read(sandbox: Sandbox, tmp_path: Path,
                                                                               capsys: pytest.CaptureFixture[str]
                                                                               ) -> None:
    """The service account (daemon) owns the install and hard-links root's 0600 PIN over its conf/server.conf
    (root makes that link: this machine has fs.protected_hardlinks=1). inspect --json reports the file withheld,
    with no sha256: the PIN cannot be guessed back from the report; nothing on the host changes."""
    secret = root_secret(tmp_path, b"4711\n")
    subprocess.run(["chown", "-R", "daemon:daemon", str(sandbox.install_dir)], check=True)
    conf = sandbox.install_dir / "conf" / "server.conf"
    conf.unlink()
    os.link(secret, conf)
    before = host_state(sandbox)
    rc, out = inspect_json(sandbox, capsys)
    assert rc == 0, out
    assert hashlib.sha256(b"4711\n").hexdigest() not in out
    assert not any(hashlib.sha256(b"%04d\n" % pin).hexdigest() in out for pin in range(10000))
    (entry,) = [c for c in json.loads(out)["hosts"][0]["facts"]["configs"] if c["path"] == "conf/server.conf"]
    assert "sha256" not in entry and "withheld" in entry, entry
    assert_host_untouched(before, host_state(sandbox))


def test_a2b_the_number_in_a_linked_pid_file_is_not_reported(sandbox: Sandbox, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """daemon links root's 0600 file holding 4711 over its run/server.pid (the service stopped): inspect reports
    no pid (the pid file withheld), never 4711."""
    secret = root_secret(tmp_path, b"4711\n")
    subprocess.run(["chown", "-R", "daemon:daemon", str(sandbox.install_dir)], check=True)
    run = sandbox.install_dir / "run"
    run.mkdir(exist_ok=True)
    os.chown(run, pwd.getpwnam("daemon").pw_uid, pwd.getpwnam("daemon").pw_gid)
    pid = run / "server.pid"
    if pid.exists():
        pid.unlink()
    os.link(secret, pid)
    before = host_state(sandbox)
    rc, out = inspect_json(sandbox, capsys)
    assert rc == 0, out
    # the number as a value of its own; the digits may well occur inside a float (an mtime, a load figure)
    assert not re.search(r"(?<![\d.])4711(?![\d.])", out), out
    process = json.loads(out)["hosts"][0]["facts"]["process"]
    assert process["pid"] is None and "not read" in process["error"], process
    assert_host_untouched(before, host_state(sandbox))


# ------------------------------------------------------------------ 5: a recursive glob never follows a directory link


def test_a5_a_recursive_config_glob_does_not_loop_through_directory_links(sandbox: Sandbox,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The service account puts `conf/a -> .`, `conf/b -> .` and `conf/c -> ..` in its conf/; the playbook's
    inspect configs `**/*.conf` (and `conf`) are expanded without going through those links: inspect ends
    (before the fix the expansion was exponential in the path depth) and lists conf/server.conf once."""
    for name, target in (("a", "."), ("b", "."), ("c", "..")):
        os.symlink(target, sandbox.install_dir / "conf" / name)
    text = (shipped_playbooks_dir() / "sample-middleware.yaml").read_text()
    pb = sandbox.root / "globbing-sample.yaml"
    pb.write_text(text + "\ninspect:\n  configs: ['**/*.conf', 'conf']\n")
    before = host_state(sandbox)
    rc, out = inspect_json(sandbox, capsys, "--playbook", str(pb))
    assert rc == 0, out
    paths = [c["path"] for c in json.loads(out)["hosts"][0]["facts"]["configs"]]
    assert "conf/server.conf" in paths and len(paths) == len(set(paths)), paths
    assert not any(p.startswith(("conf/a/", "conf/b/", "conf/c/")) for p in paths), paths
    assert_host_untouched(before, host_state(sandbox))


# ------------------------------------------------------------------ 6: //etc is /etc


@pytest.mark.parametrize("given", ["//etc", "//", "///usr"])
def test_a6_a_leading_double_slash_does_not_pass_the_system_directory_check(sandbox: Sandbox, given: str,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """install_dir //etc (the kernel reads it as /etc) is refused as a system directory at plan, exit 2, naming
    the key; no plan is written."""
    doc = yaml.safe_load(sandbox.inventory.read_text())
    doc["hosts"]["app-01"]["install_dir"] = given
    sandbox.inventory.write_text(yaml.safe_dump(doc, sort_keys=False))
    rc, text, plan = plan_cli(sandbox, capsys)
    assert rc == 2, text
    assert "install_dir" in text and "system directory" in text, text
    assert not plan.exists()


# ------------------------------------------------------------------ 3: the directory that holds a link counts


def test_a3_a_link_in_the_service_accounts_directory_to_a_root_only_file_is_not_read(
        sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """The hardened layout: the install and lib/ are root's, conf/ and logs/ daemon's; lib/license.key is root's
    0600. daemon makes `logs/server.log -> ../lib/license.key` in its logs/ (it may not read the key). The
    log is followed to lib/license.key, whose physical path has only root's directories, but logs/ (daemon's) holds
    the link: inspect reads it as daemon, is refused, and reports none of its lines."""
    inst = sandbox.install_dir
    key = inst / "lib" / "license.key"
    key.write_text("ERROR ROOT-ONLY-SECRET r9 a3\n")
    os.chmod(key, 0o600)
    (inst / "logs").mkdir(exist_ok=True)
    subprocess.run(["chown", "-R", "daemon:daemon", str(inst / "conf"), str(inst / "logs")], check=True)
    log = inst / "logs" / "server.log"
    if log.exists() or log.is_symlink():
        log.unlink()
    os.symlink("../lib/license.key", log)  # what daemon does in its own logs/ (the test's tmp dirs are root's 0700)
    os.lchown(log, pwd.getpwnam("daemon").pw_uid, pwd.getpwnam("daemon").pw_gid)
    before = host_state(sandbox)
    rc, out = inspect_json(sandbox, capsys)
    assert rc == 0, out
    assert "ROOT-ONLY-SECRET" not in out, out
    (entry,) = [x for x in json.loads(out)["hosts"][0]["facts"]["logs"] if x["path"].endswith("logs/server.log")]
    assert entry["samples"] == [] and "not readable by" in entry["withheld"], entry
    assert_host_untouched(before, host_state(sandbox))


# ------------------------------------------------------------------ 4: stop signals only the service's own process


def test_a4_stop_sends_no_signal_to_a_process_a_pid_file_names_outside_the_install(
        sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """run/server.pid is the service account's (the operator's playbook stops and starts through systemctl: in-install
    commands would be refused over it, test_host_paths_18): it
    writes the pid of root's `sleep` (cwd /, ignoring SIGTERM, nothing of the
    install) into run/server.pid after the plan was approved. The run is refused at preflight, before stop (exit 2,
    naming the pid and why): neither bin/stop.sh nor the agent signals it; the process is alive, the service still
    answers the old version."""
    outside_commands(sandbox)  # in-install root commands over a pid file of another account: test_host_paths_18
    rc, plan = plan_to(sandbox, NEW)
    assert rc == 0
    approval = approve(sandbox, plan)
    victim = subprocess.Popen(["sh", "-c", "trap '' TERM; exec sleep 600"], cwd="/")
    try:
        run = sandbox.install_dir / "run"
        subprocess.run(["chown", "daemon:daemon", str(run / "server.pid")], check=True)  # run/ stays root's
        (run / "server.pid").write_text("%d\n" % victim.pid)  # what daemon writes in its own pid file
        before = host_state(sandbox)
        rc, text = run_cli(sandbox, capsys, "run", str(plan), "--approval", str(approval))
        assert rc == 2, text
        assert "pid %d" % victim.pid in text and "NOT the service's own" in text, text
        assert [p["phase"] for p in last_result(sandbox)["hosts"][0]["phases"]] == ["preflight"]  # never stopped
        assert victim.poll() is None  # still running: neither SIGTERM nor SIGKILL reached it
        assert sandbox.answers() == OLD
        after = host_state(sandbox)  # the product, the pid file and the service as they were; the host locked
        assert (after.product, after.pid, after.service, after.version) == \
            (before.product, before.pid, before.service, OLD)
    finally:
        victim.kill()
        victim.wait()


def test_r10_inspect_neither_measures_nor_attaches_to_a_process_the_pid_file_names_outside_the_install(
        sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Round 10: the service account (daemon) writes into its own run/server.pid the pid of a root process that looks
    like a JVM (argv[0] "java") and sits in a root-only directory outside the install. ``inspect`` (read-only) must
    not run jcmd against it (jcmd would make .attach_pidN in that directory as root and SIGQUIT it, killing it):
    the process is alive, no file appeared beside it, and inspect says it did not measure a process that is not the
    service's."""
    rootonly = tmp_path / "rootonly"
    rootonly.mkdir(mode=0o700)
    victim = subprocess.Popen(["java", "600"], executable="/bin/sleep", cwd=rootonly,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        subprocess.run(["chown", "-R", "daemon:daemon", str(sandbox.install_dir)], check=True)
        (sandbox.install_dir / "run" / "server.pid").write_text("%d\n" % victim.pid)
        rc, out = inspect_json(sandbox, capsys, "--playbook", "sample-middleware", "--var", f"port={sandbox.port}")
        assert rc == 0, out
        (host,) = json.loads(out)["hosts"]
        process = host["facts"]["process"]
        assert process["running"] is False and "not measured" in process["error"], process
        assert str(victim.pid) in process["error"] and "jcmd" not in json.dumps(host["facts"].get("perf"))
        assert victim.poll() is None  # alive: no SIGQUIT reached it
        assert list(rootonly.iterdir()) == []  # no .attach_pid file was made there
    finally:
        victim.kill()
        victim.wait()
