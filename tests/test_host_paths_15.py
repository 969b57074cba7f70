"""Issue 12 (round 15, attack12r15 findings F1 and F2): the service account must not become root through the agent.

When the agent runs as root, the playbook's commands run as the install dir's owner (processes.command_account).
F1: a patch install and every rollback rebuilt the install dir as a directory of the agent's own (root's), so from
then on the service account's own scripts (bin/start.sh) ran as root. Now the staged copy of a patch gets the install
dir's owner, group and mode, the backup manifest records them, a rollback gives them back and verify_tree checks them.
F2 (a): a pid file naming a process that is not the service's own was only said in the review; a root stop.sh then
killed it. Now the run's preflight refuses it (exit 2, before stop), by pid and uid only.

The service account is uid 65534 (played with setpriv), the runs use the shipped CLI, the host is the local one (the
agent runs as root, as a root SSH login would run it).
"""

from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from conftest import approve, plan_to
from hoststate import assert_host_untouched, host_state
from test_host_paths import last_result, last_run_id, run_cli
from test_faults import use_playbook
from test_host_paths_13 import as_daemon, daemon_edits, owned_box
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.exit_codes import ExitCode

OLD, FULL, PATCH, BROKEN = "7.0.4.1", "7.0.4.2", "7.0.4.3", "7.0.4.5"
NOBODY = 65534
RUNTIME = ("run", "logs", "data")  # what the service writes


def as_nobody(*argv: str) -> list[str]:
    return as_daemon(*argv, uid=str(NOBODY), gid=str(NOBODY))


def nobody_box(monkeypatch: pytest.MonkeyPatch, whole: bool) -> Iterator[Sandbox]:
    """The sample install 7.0.4.1 with its service started by uid 65534: ``whole``, the install is 65534's (``chown
    -R``); else root owns it and 65534 only its runtime paths (run/, logs/, data/: the hardened layout)."""
    yield from owned_box(monkeypatch, f"{NOBODY}:{NOBODY}", (str(NOBODY), str(NOBODY)), ("",) if whole else RUNTIME)


@pytest.fixture
def owned(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    yield from nobody_box(monkeypatch, whole=True)


@pytest.fixture
def hardened(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    yield from nobody_box(monkeypatch, whole=False)


@pytest.fixture
def rooted(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """Root owns the whole install (``chown -R root``: a root command in an install another account can change in any
    file is refused, test_host_paths_18); the service, started by 65534, still runs as 65534."""
    for box in nobody_box(monkeypatch, whole=False):
        subprocess.run(["chown", "-R", "root:root", str(box.install_dir)], check=True)
        yield box


OUTSIDE = {"stop": {"command": "/usr/bin/systemctl stop upgrader-sample"},
           "start": {"command": "/usr/bin/systemctl start upgrader-sample"}}


def outside_commands(box: Sandbox, **changes: object) -> None:
    """The operator's playbook stops and starts the service with a plain command outside the install (systemctl):
    the install may then hold files of the service account (its pid file) without refusing the run at plan, and
    what the agent itself does with the pid file (its check before stop, its escalation) is what is left."""
    use_playbook(box, "sample-outside", **{**OUTSIDE, **changes})


def wrapped_commands(box: Sandbox) -> None:
    """The operator's playbook stops and starts the service through root's own scripts outside the install (which
    run the vendor's bin/stop.sh and bin/start.sh of the install dir: such a command runs in /, so the wrapper goes
    there itself, through UPGRADER_INSTALL_DIR): in-install commands would need the whole install root's alone
    (test_host_paths_18), and the files here are the service account's."""
    wrappers = box.root / "wrappers"
    wrappers.mkdir(exist_ok=True)
    for what in ("stop", "start"):
        (wrappers / f"{what}.sh").write_text(f'cd "$UPGRADER_INSTALL_DIR" && exec ./bin/{what}.sh\n')
    use_playbook(box, "sample-wrapped", stop={"command": f"/bin/sh {wrappers}/stop.sh"},
                 start={"command": f"/bin/sh {wrappers}/start.sh"})


@contextmanager
def root_victim(box: Sandbox, secret: str) -> Iterator[tuple[subprocess.Popen[bytes], Path, int]]:
    """A root process that is not the service (its command line carries ``secret``, which no output may show), the
    pid file and the service's pid; the process is killed at the end."""
    victim = subprocess.Popen(["sh", "-c", f"exec sleep 900 # {secret}"], cwd="/", stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        pid_file = box.install_dir / "run" / "server.pid"
        yield victim, pid_file, int(pid_file.read_text())
    finally:
        victim.kill()
        victim.wait()


def run_to(box: Sandbox, capsys: pytest.CaptureFixture[str], version: str) -> tuple[int, str]:
    rc, plan = plan_to(box, version)
    assert rc == 0, rc
    return run_cli(box, capsys, "run", str(plan), "--approval", str(approve(box, plan)))


def mark_start(box: Sandbox) -> Path:
    """The service account adds ``id -u > run/start-uid`` to its own bin/start.sh: the file then says which account
    the next start of that script ran as."""
    daemon_edits_as_nobody(box.install_dir / "bin" / "start.sh", "id -u > run/start-uid")
    return box.install_dir / "run" / "start-uid"


def daemon_edits_as_nobody(path: Path, line: str) -> None:
    """test_host_paths_13.daemon_edits, played by uid 65534 (the script's owner here)."""
    assert path.stat().st_uid == NOBODY
    daemon_edits(path, line, str(NOBODY))


def assert_still_nobodys(box: Sandbox, marker: Path) -> None:
    """The install dir and bin/ are 65534's, the marked start.sh ran as 65534 (never 0), the service runs as 65534,
    and no command of any run ran as root."""
    assert marker.read_text().strip() == str(NOBODY), marker.read_text()
    for d in (box.install_dir, box.install_dir / "bin"):
        assert d.lstat().st_uid == NOBODY, (d, d.lstat())
    service = int((box.install_dir / "run" / "server.pid").read_text())
    assert Path(f"/proc/{service}").stat().st_uid == NOBODY
    journal = "".join(p.read_text(errors="replace") for p in (box.root / "runs").rglob("*.jsonl"))
    assert '"account": "root (uid 0)"' not in journal, journal[-3000:]


def test_1_a_patch_keeps_the_install_dir_the_service_accounts(
        owned: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """The install is 65534's; the patch 7.0.4.3 (a copy of the install with the patch laid over it) commits (exit 0):
    the install dir is still 65534's, so the service account's marked bin/start.sh ran as 65534, not as root."""
    box = owned
    marker = mark_start(box)
    rc, text = run_to(box, capsys, PATCH)
    assert rc == ExitCode.OK, text
    assert box.answers() == PATCH
    assert_still_nobodys(box, marker)


def test_2_a_rollback_after_commit_gives_the_install_dir_its_owner_back(
        owned: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """The install is 65534's, its start.sh marked; 7.0.4.2 commits, then ``upgrader rollback RUN`` rebuilds 7.0.4.1
    from the backup (exit 0): the rebuilt install dir is 65534's with its mode, the restored start.sh ran as 65534,
    and the backup manifest recorded the install dir's owner."""
    box = owned
    mode = box.install_dir.lstat().st_mode
    marker = mark_start(box)
    rc, text = run_to(box, capsys, FULL)
    assert rc == ExitCode.OK, text
    assert not marker.exists()  # 7.0.4.2's own start.sh writes none
    run = last_run_id(box)
    rc, text = run_cli(box, capsys, "rollback", run, "--yes")
    assert rc == ExitCode.OK, text
    assert box.answers() == OLD
    assert_still_nobodys(box, marker)
    assert box.install_dir.lstat().st_mode == mode


def test_3_the_automatic_rollback_of_a_failed_run_gives_the_install_dir_its_owner_back(
        owned: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """The install is 65534's, its start.sh marked; 7.0.4.5 fails its probes and the run rolls back (exit 1, old
    version healthy): the restored start.sh ran as 65534, and the install dir and bin/ are 65534's."""
    box = owned
    marker = mark_start(box)
    rc, text = run_to(box, capsys, BROKEN)
    assert rc == ExitCode.ROLLED_BACK, text
    assert box.answers() == OLD
    (host,) = last_result(box)["hosts"]
    assert host["outcome"] == "rolled_back", host
    assert_still_nobodys(box, marker)


def test_4_a_pid_file_naming_a_foreign_process_is_refused_before_stop(
        rooted: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """Root owns the install; the operator stops and starts through systemctl (outside the install: in-install root
    commands over a pid file of another account are refused by themselves, test_host_paths_18); the service account
    owns run/server.pid. After the approval it points the pid file at a root process. The run is refused at preflight (exit 2): the pid file, the pid and its
    uid are named (never its command line), with what to do; the root process is alive, the service never stopped,
    the host untouched."""
    box = rooted
    outside_commands(box)
    os.chown(box.install_dir / "run" / "server.pid", NOBODY, NOBODY)
    rc, plan = plan_to(box, FULL)
    assert rc == 0, rc
    approval = approve(box, plan)
    secret = "hp15-not-for-the-console"
    with root_victim(box, secret) as (victim, pid_file, service):
        subprocess.run(as_nobody("sh", "-c", f"echo {victim.pid} > {pid_file}"), check=True)
        was = host_state(box.install_dir)
        rc, text = run_cli(box, capsys, "run", str(plan), "--approval", str(approval))
        assert rc == ExitCode.BAD_INPUT, text
        assert victim.poll() is None, text  # alive: no stop command ran
        assert "run/server.pid" in text and f"pid {victim.pid} (uid 0/0/0)" in text, text
        assert "NOT the service's own" in text and "stop the service by hand" in text, text
        assert secret not in text and "sleep 900" not in text, text
        (host,) = last_result(box)["hosts"]
        assert [p["phase"] for p in host["phases"]] == ["preflight"], host
        assert_host_untouched(was, host_state(box.install_dir), run_record=last_run_id(box))
        assert Path(f"/proc/{service}").exists() and box.answers() == OLD


def test_4b_a_pid_file_rewritten_after_the_preflight_is_refused_by_the_stop_itself(
        rooted: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """The race the preflight cannot see: the pid file is pointed at a root process after the preflight proved it
    (played deterministically by a before_stop hook, a plain command outside the install, that writes the pid into
    run/server.pid as the service account's file; the stop is systemctl's, outside the install too). The agent does not run the root stop command (exit 2, naming the pid file, the pid and its uid): the root
    process is alive, the service was never stopped and still answers the old version."""
    box = rooted
    secret = "hp15b-not-for-the-console"
    os.chown(box.install_dir / "run" / "server.pid", NOBODY, NOBODY)
    with root_victim(box, secret) as (victim, pid_file, service):
        # a plain command outside the install, as the hook must be, in a directory of its own: python3 imports from
        # its script's directory, which must be root's alone as a whole (the box holds the service account's files)
        (box.root / "hook").mkdir(mode=0o755)
        swap = box.root / "hook" / "swap-pid.py"
        swap.write_text(f"import os\nos.chdir(os.environ['UPGRADER_INSTALL_DIR'])  # it runs in /\n"
                        f"open('run/server.pid.new', 'w').write('{victim.pid}\\n')\n"
                        f"os.chown('run/server.pid.new', {NOBODY}, {NOBODY})\n"
                        "os.rename('run/server.pid.new', 'run/server.pid')\n")
        outside_commands(box, hooks={"before_stop": [{"command": f"/usr/bin/python3 {swap}"}]})
        rc, text = run_to(box, capsys, FULL)
        assert rc == ExitCode.BAD_INPUT, text
        assert victim.poll() is None, text  # alive: the stop command never ran
        assert f"pid {victim.pid} (uid 0/0/0)" in text and "NOT the service's own" in text, text
        assert "it was not run and nothing was stopped" in text, text
        assert secret not in text and "sleep 900" not in text, text
        (host,) = last_result(box)["hosts"]
        assert host["outcome"] == "bad_input", host
        assert Path(f"/proc/{service}").exists() and box.answers() == OLD


def test_5_root_never_runs_a_script_the_service_account_can_change(
        rooted: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """Root owns the install dir (its commands run as root); after the approval bin/ becomes 65534's (``chown -R``,
    as an untar keeping the vendor's uids leaves it) and the service account adds ``id -u > run/stop-uid`` to
    bin/stop.sh. The run is refused at preflight (exit 2) naming the script and its owner: the line never ran, the
    service was never stopped, the host is untouched."""
    box = rooted
    rc, plan = plan_to(box, FULL)
    assert rc == 0, rc
    approval = approve(box, plan)
    subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(box.install_dir / "bin")], check=True)
    daemon_edits_as_nobody(box.install_dir / "bin" / "stop.sh", "id -u > run/stop-uid")
    service = int((box.install_dir / "run" / "server.pid").read_text())
    was = host_state(box.install_dir)
    rc, text = run_cli(box, capsys, "run", str(plan), "--approval", str(approval))
    assert rc == ExitCode.BAD_INPUT, text
    said = " ".join(text.split())
    assert "start.command, stop.command would run as root in" in said, text
    assert f"{box.install_dir}/bin is owned by nobody (uid {NOBODY})" in said, text
    assert not (box.install_dir / "run" / "stop-uid").exists()
    (host,) = last_result(box)["hosts"]
    assert [p["phase"] for p in host["phases"]] == ["preflight"], host
    assert_host_untouched(was, host_state(box.install_dir), run_record=last_run_id(box))
    assert Path(f"/proc/{service}").exists() and box.answers() == OLD

