"""Issue 12 (round 16, attack12r15 F2 and attack14r15 finding 1): the hardened layout must not make root act on what
the service account writes.

Root owns the install dir, so the agent (root) runs the playbook's in-install commands as root; the service account
(uid 65534, played with setpriv) owns run/, logs/ and data/. The vendor's stock scripts act on them: bin/stop.sh
kills the pid run/server.pid names, bin/start.sh appends to logs/console.out. So the service account could have root
kill any process, create any file through a link, and the service it starts would come back as root. Now a command
inside the install that would run as root over a directory another account can change is refused before anything
is stopped (exit 2, naming the directory, its owner and what to do), at plan, at the run's preflight, and before a
manual ``rollback`` or a ``resume`` runs stop/start/hooks again.
"""

from __future__ import annotations

import datetime
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from conftest import approve, fault_env, faketime_env, plan_to
from hoststate import assert_host_untouched, host_state
from test_host_paths import last_result, last_run_id, run_cli
from test_host_paths_13 import owned_box
from test_host_paths_15 import (FULL, NOBODY, OLD, RUNTIME, as_nobody, hardened, root_victim, rooted,  # noqa: F401
                                run_to, wrapped_commands)
from test_trust_roots_6 import host_root  # noqa: F401 - the host trust root fixture (engineer, requester, vendor)
from test_trust_roots_9 import _cli
from test_trust_roots_13 import _approve, _plan, _untouched
from test_trust_roots_14 import operator_plan_approved
from trust_support import approval_signed_anyway, host_state as whole_host, pristine, write_root_config
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.reasons import UNTRANSLATED, translate
from upgrader.core.exit_codes import ExitCode


def refusal_names_run(text: str, box: Sandbox, rel: str = "run") -> None:
    """The refusal names the root commands, the first path another account owns (``rel``: the tree is walked in name
    order, data/ before logs/ and run/), its owner and what to do."""
    said = " ".join(text.split())
    assert "start.command, stop.command would run as root in" in said, text
    assert f"{box.install_dir}/{rel} is owned by nobody (uid {NOBODY})" in said, text
    assert "give the install to the service account" in said, text


def test_1_a_plan_of_the_hardened_layout_is_refused(hardened: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """Root owns the install, 65534 owns run/, logs/, data/: ``plan`` refuses (exit 2) naming run/ and its owner; no
    plan is written."""
    box = hardened
    capsys.readouterr()
    rc, plan = plan_to(box, FULL)
    out, err = capsys.readouterr()
    assert rc == ExitCode.BAD_INPUT, out + err
    refusal_names_run(out + err, box, "data")
    assert "Traceback" not in out + err
    assert not plan.exists()


def test_2_the_service_account_cannot_steer_a_root_stop_and_start(
        rooted: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """A plan approved while root owned run/ and logs/; then they are handed to the service account (``chown``), which
    points run/server.pid at a root process and links logs/console.out to a root-only directory. The run is refused
    at preflight (exit 2) naming run/ and its owner: the root process is alive, no root file was made, the service
    never stopped and still runs as 65534, the host is untouched."""
    box = rooted
    rc, plan = plan_to(box, FULL)
    assert rc == 0, rc
    approval = approve(box, plan)
    subprocess.run(["chown", f"{NOBODY}:{NOBODY}", *(str(box.install_dir / rel) for rel in RUNTIME)], check=True)
    rootonly = Path(tempfile.mkdtemp(prefix="upgrader-hp16-"))  # 0700, root's: the service account cannot write it
    made = rootonly / "made-by-root"
    try:
        with root_victim(box, "hp16-victim") as (victim, pid_file, service):
            console = box.install_dir / "logs" / "console.out"
            subprocess.run(as_nobody("sh", "-c", f"echo {victim.pid} > {pid_file}.new && mv {pid_file}.new "
                                                 f"{pid_file} && rm -f {console} && ln -s {made} {console}"),
                           check=True)
            was = host_state(box.install_dir)
            rc, text = run_cli(box, capsys, "run", str(plan), "--approval", str(approval))
            assert rc == ExitCode.BAD_INPUT, text
            refusal_names_run(text, box, "data")
            assert victim.poll() is None, text  # alive: no stop command ran
            assert not made.exists() and not made.is_symlink()
            (host,) = last_result(box)["hosts"]
            assert [p["phase"] for p in host["phases"]] == ["preflight"], host
            assert_host_untouched(was, host_state(box.install_dir), run_record=last_run_id(box))
            assert Path(f"/proc/{service}").stat().st_uid == NOBODY and box.answers() == OLD
    finally:
        made.unlink(missing_ok=True)
        rootonly.rmdir()


@pytest.fixture
def root_box(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """The sample install, root's throughout, its service started by root, in a directory others can traverse."""
    yield from owned_box(monkeypatch, "root:root", ("0", "0"))


def test_3_a_manual_rollback_repeats_the_check_before_its_stop(
        root_box: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """The sample install, root's throughout, commits 7.0.4.2; then run/ is handed to the service account, which points
    run/server.pid at a root process. ``upgrader rollback RUN`` is refused (exit 2) before its stop, naming run/ and
    its owner: the root process is alive, the host still runs 7.0.4.2, untouched."""
    box = root_box
    rc, plan = plan_to(box, FULL)
    assert rc == 0, rc
    rc, text = run_cli(box, capsys, "run", str(plan), "--approval", str(approve(box, plan)))
    assert rc == ExitCode.OK, text
    run = last_run_id(box)
    os.chown(box.install_dir / "run", NOBODY, NOBODY)
    with root_victim(box, "hp16-rollback") as (victim, pid_file, service):
        subprocess.run(as_nobody("sh", "-c", f"echo {victim.pid} > {pid_file}.new && mv {pid_file}.new {pid_file}"),
                       check=True)
        was = host_state(box.install_dir)
        rc, text = run_cli(box, capsys, "rollback", run, "--yes")
        assert rc == ExitCode.BAD_INPUT, text
        refusal_names_run(text, box)
        assert victim.poll() is None, text
        assert_host_untouched(was, host_state(box.install_dir))
        assert Path(f"/proc/{service}").exists() and box.answers() == FULL


def installed_version(sandbox: Sandbox) -> str:
    return (sandbox.install_dir / "lib" / "VERSION").read_text().split()[0]


def _killed_after_install(sandbox: Sandbox, tmp_path: Path) -> str:
    """An approved run to 7.0.4.2, its controller killed (SIGKILL) right after the install: the host's entry of the
    run is never spent (no finish). The run's id."""
    plan = _plan(sandbox, tmp_path)
    approval, _ = _approve(sandbox, plan)
    done = _cli(sandbox.root, "run", str(plan), "--approval", str(approval), "--yes",
                env={"UPGRADER_AUDIT_KEY": str(sandbox.operator_key), **fault_env(kill_at="install:finished")})
    assert done.returncode == -9, done.stdout + done.stderr
    (rid,) = [d.name for d in (sandbox.root / "runs").iterdir() if d.is_dir()]
    return rid


def test_4_an_unfinished_runs_rollback_is_bounded_by_rollback_hours_from_its_install(
        sandbox: Sandbox, host_root: Path, tmp_path: Path) -> None:
    """Root allows no time for a later rollback (``rollback_hours: 0``). A run is killed after its install (its finish
    never reaches the host). Its rollback three hours later (the controller's and the agent's clock moved on with
    libfaketime) is refused by the host (exit 4) naming rollback_hours and host-trust.json, nothing changed; the same
    rollback right after the crash (within the run's own hour) restores 7.0.4.1."""
    write_root_config(host_root, rollback_hours=0)
    rid = _killed_after_install(sandbox, tmp_path)
    installed = whole_host(sandbox)
    assert installed_version(sandbox) == "7.0.4.2"
    later = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=3)).isoformat()
    env = {"UPGRADER_AUDIT_KEY": str(sandbox.operator_key)}
    done = _cli(sandbox.root, "rollback", rid, "--yes", env={**env, **faketime_env(later)})
    out = done.stdout + done.stderr
    assert done.returncode == ExitCode.APPROVAL_REFUSED, out
    assert "installed here" in out and "never finished" in out and "rollback_hours (0)" in out, out
    assert "host-trust.json" in out and "by hand from the run's backup" in out and "Traceback" not in out, out
    (said,) = re.findall(r"run \S+ was installed here .*? or root raises rollback_hours there", out)
    zh = translate(said, "zh")
    assert UNTRANSLATED not in zh and "从未结束" in zh and "rollback_hours（0 小时" in zh, zh
    after = whole_host(sandbox)  # the product and the service as the crash left them (the agent records the refusal)
    assert installed_version(sandbox) == "7.0.4.2"
    assert (after.product, after.pid, after.service, after.version) == \
        (installed.product, installed.pid, installed.service, installed.version)
    done = _cli(sandbox.root, "rollback", rid, "--yes", env=env)
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    assert whole_host(sandbox).version == "7.0.4.1"


def test_5_a_service_that_comes_back_as_root_does_not_commit(
        rooted: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """Root owns the install, the service ran as 65534 (its pid file its own); the operator's root wrappers outside
    the install (nothing to refuse before stop) stop it and start 7.0.4.2 as root. The run does not commit: the process probe fails naming both
    uids (the run rolls back; the old version, started by root too, is not accepted either)."""
    box = rooted
    os.chown(box.install_dir / "run" / "server.pid", NOBODY, NOBODY)  # the service's own pid file
    wrapped_commands(box)  # root's wrappers outside the install run bin/stop.sh and bin/start.sh as root
    service = int((box.install_dir / "run" / "server.pid").read_text())
    assert Path(f"/proc/{service}").stat().st_uid == NOBODY
    rc, text = run_to(box, capsys, FULL)
    assert rc in (ExitCode.ROLLED_BACK, ExitCode.NEEDS_PERSON), text
    (host,) = last_result(box)["hosts"]
    assert host["outcome"] != "committed", host
    said = " ".join(text.split())
    assert "runs as uid 0/0/0, but the service ran as uid 65534 before this run stopped it" in said, text


@pytest.mark.parametrize("escape", ["comment-edited", "authorized_keys2", "other-audit-key"])
def test_6_the_granted_engineer_cannot_escape_the_open_access_refusal(
        sandbox: Sandbox, tmp_path: Path, escape: str) -> None:
    """attack12r15 F3: ``access grant`` lets the engineer's key into the operator's account (a scratch HOME). Logged
    in there, the engineer (a) rewrites the grant line's comment, (b) copies the key to authorized_keys2 and revokes
    the grant, or (c) approves and runs with another audit key of their own. Each time they sign a plan with the
    operator's key and approve it with their own: ``approve`` and ``run`` refuse (exit 4) naming the file that lets
    the key in; the host is untouched."""
    before = pristine(sandbox)
    home = tmp_path / "operator-home"
    home.mkdir()
    env = {"HOME": str(home)}
    done = _cli(sandbox.root, "access", "grant", "--key", str(sandbox.keys / "engineer.pub"), "--hours", "2", env=env)
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    authorized = home / ".ssh" / "authorized_keys"
    (grant,) = re.findall(r"upgrader-grant:(\w+)", authorized.read_text(encoding="utf-8"))
    named = authorized
    if escape == "comment-edited":
        authorized.write_text(re.sub(r" upgrader-grant:\S*.*$", " engineer-laptop",
                                     authorized.read_text(encoding="utf-8"), flags=re.M), encoding="utf-8")
        assert "no grants" in _cli(sandbox.root, "access", "list", env=env).stdout
    elif escape == "authorized_keys2":
        named = home / ".ssh" / "authorized_keys2"
        named.write_text(authorized.read_text(encoding="utf-8"), encoding="utf-8")
        done = _cli(sandbox.root, "access", "revoke", grant, env=env)
        assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    else:
        throwaway = tmp_path / "throwaway"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(throwaway)], check=True)
        env["UPGRADER_AUDIT_KEY"] = str(throwaway)
    plan, approval, done = operator_plan_approved(sandbox, tmp_path, env)
    out = done.stdout + done.stderr
    assert done.returncode == ExitCode.APPROVAL_REFUSED, out
    assert str(named) in out and "lets that key log in to this account" in out and "Traceback" not in out, out
    assert not approval.exists()
    done = _cli(sandbox.root, "run", str(plan), "--approval", str(approval_signed_anyway(sandbox, plan)), "--yes",
                env={"UPGRADER_AUDIT_KEY": str(sandbox.operator_key), **env})
    out = done.stdout + done.stderr
    assert done.returncode == ExitCode.APPROVAL_REFUSED, out
    assert str(named) in out and "Traceback" not in out, out
    _untouched(before, sandbox)
