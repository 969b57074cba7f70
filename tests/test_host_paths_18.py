"""Issue 12 (round 17, attack12r16 H1, H2, M1, L1): root never runs code the service account can change.

Root owns the install dir, so the agent (root) runs the playbook's commands as root, in the install dir. Which file a
shell command runs, sources or reads cannot be told from its text: ``LANG=C bin/start.sh``, ``sh bin/stop.sh``
and ``cd bin && ./stop.sh`` all run bin/; a start script sources or reads the preserved config; a stop script reads a
pid file the service account may rewrite between the agent's look and the script's. So a command that is not a plain
command outside the install (``/usr/bin/systemctl stop app``) now needs the whole install tree root's alone: any file
or directory beneath it another account can change refuses it (exit 2, naming the path, its owner and what to do),
at plan and at the run's preflight, before anything is stopped. The service account is uid 65534 (setpriv).
"""

from __future__ import annotations

import datetime
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from conftest import approve, faketime_env, plan_to
from hoststate import assert_host_untouched, host_state
from test_host_paths import last_result, last_run_id, run_cli
from test_host_paths_13 import owned_box
from test_host_paths_15 import FULL, NOBODY, OLD, as_nobody, rooted  # noqa: F401 - rooted: the M1 layout
from test_host_paths_16 import _killed_after_install, installed_version
from test_trust_roots_6 import host_root  # noqa: F401 - the host trust root fixture (engineer, requester, vendor)
from test_trust_roots_9 import _cli
from trust_support import write_root_config
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.exit_codes import ExitCode
from upgrader.core.playbook import shipped_playbooks_dir


@pytest.fixture
def root_box(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """The sample install, root's throughout, its service started by root."""
    yield from owned_box(monkeypatch, "root:root", ("0", "0"))


def operator_playbook(box: Sandbox, stop: str, start: str, **sections: object) -> None:
    """The operator's own copy of the sample playbook (HOME/playbooks) with these stop and start commands (and these
    ``sections`` in place of the sample's: ``version``, ``hooks``)."""
    spec = yaml.safe_load((shipped_playbooks_dir() / "sample-middleware.yaml").read_text())
    spec["stop"]["command"], spec["start"]["command"] = stop, start
    spec.update(sections)
    (box.root / "playbooks").mkdir(exist_ok=True)
    (box.root / "playbooks" / "sample-middleware.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def commits_with_root_stop(box: Sandbox, capsys: pytest.CaptureFixture[str], stop: str, marker: Path) -> None:
    """The operator's playbook with ``stop`` (and bin/start.sh): plan, approve and run commit (exit 0), the stop
    command's wrapper wrote root's uid to ``marker``, the new version answers."""
    operator_playbook(box, stop, "bin/start.sh")
    rc, plan = plan_to(box, FULL)
    assert rc == ExitCode.OK, rc
    approval = approve(box, plan)
    rc, text = run_cli(box, capsys, "run", str(plan), "--approval", str(approval))
    assert rc == ExitCode.OK, text
    assert marker.read_text() == "0\n"
    assert box.answers() == FULL


def refused_naming(text: str, path: Path, keys: str = "start.command, stop.command") -> None:
    """The refusal names the root commands, the path another account owns, and what to do."""
    said = " ".join(text.split())
    assert f"{keys} would run as root in " in said, text
    assert f"{path} is owned by nobody (uid {NOBODY})" in said, text
    assert "give the install to the service account" in said and "(systemctl)" in said, text
    assert "Traceback" not in text


def refused_at_plan(box: Sandbox, capsys: pytest.CaptureFixture[str], path: Path) -> None:
    """``plan`` refuses (exit 2) naming the root commands and ``path``; no plan is written."""
    capsys.readouterr()
    rc, plan = plan_to(box, FULL)
    out, err = capsys.readouterr()
    assert rc == ExitCode.BAD_INPUT, out + err
    refused_naming(out + err, path)
    assert not plan.exists()


def refused_at_preflight(box: Sandbox, capsys: pytest.CaptureFixture[str], plan: Path, approval: Path,
                         path: Path, marker: Path | None = None) -> None:
    """The approved run is refused at its preflight (exit 2) naming ``path``: nothing stopped, the marker the
    service account's line would write is absent, the host untouched, the old version still answering."""
    was = host_state(box.install_dir)
    rc, text = run_cli(box, capsys, "run", str(plan), "--approval", str(approval))
    assert rc == ExitCode.BAD_INPUT, text
    refused_naming(text, path)
    (host,) = last_result(box)["hosts"]
    assert [p["phase"] for p in host["phases"]] == ["preflight"], host
    assert marker is None or not marker.exists()
    assert_host_untouched(was, host_state(box.install_dir), run_record=last_run_id(box))
    assert box.answers() == OLD


@pytest.fixture
def marker_dir() -> Iterator[Path]:
    """A directory root alone can write: a file appears there only if root ran the service account's line."""
    d = Path(tempfile.mkdtemp(prefix="upgrader-hp18-"))
    try:
        yield d
    finally:
        for f in d.iterdir():
            f.unlink()
        d.rmdir()


@pytest.mark.parametrize("stop, start", [
    ("LANG=C bin/stop.sh", "LANG=C bin/start.sh"),
    ("sh bin/stop.sh", "sh bin/start.sh"),
    ("cd bin && ./stop.sh", "cd bin && ./start.sh"),
])
def test_1_a_shell_form_of_an_in_install_command_is_refused_over_a_service_owned_bin(
        root_box: Sandbox, marker_dir: Path, capsys: pytest.CaptureFixture[str], stop: str, start: str) -> None:
    """H1: the operator's playbook says ``LANG=C bin/stop.sh`` (or ``sh bin/stop.sh``, ``cd bin &&
    ./stop.sh``). With bin/ 65534's, ``plan`` refuses (exit 2) naming bin/; a plan approved while bin/ was root's is
    refused at preflight once the account owns bin/ and added a line to stop.sh: the line never ran."""
    box = root_box
    operator_playbook(box, stop, start)
    bin_dir = box.install_dir / "bin"
    subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(bin_dir)], check=True)
    refused_at_plan(box, capsys, bin_dir)
    subprocess.run(["chown", "-R", "root:root", str(bin_dir)], check=True)
    rc, plan = plan_to(box, FULL)
    assert rc == ExitCode.OK, rc
    approval = approve(box, plan)
    subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(bin_dir)], check=True)
    marker = marker_dir / "ran-as-root"
    subprocess.run(as_nobody("sed", "-i", f"2i id -u > {marker} 2>/dev/null || true", str(bin_dir / "stop.sh")),
                   check=True)
    refused_at_preflight(box, capsys, plan, approval, bin_dir, marker)


def test_2_a_preserved_config_the_service_account_owns_is_refused(
        root_box: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """H2 on the sample: the preserved conf/server.conf (the config root's start reads; Tomcat's catalina.sh sources
    its bin/setenv.sh the same way) is handed to the service account after the approval. The shipped playbook's run
    is refused at preflight (exit 2) naming the file; a new plan is refused too."""
    box = root_box
    rc, plan = plan_to(box, FULL)
    assert rc == ExitCode.OK, rc
    approval = approve(box, plan)
    conf = box.install_dir / "conf" / "server.conf"
    os.chown(conf, NOBODY, NOBODY)
    refused_at_preflight(box, capsys, plan, approval, conf)
    capsys.readouterr()
    rc, plan = plan_to(box, FULL)
    out, err = capsys.readouterr()
    assert rc == ExitCode.BAD_INPUT, out + err
    refused_naming(out + err, conf)


def test_3_a_pid_file_the_service_account_owns_in_roots_run_is_refused(
        rooted: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """M1: root owns run/, the service account its pid file run/server.pid, which root's stop.sh reads (``kill $(cat
    run/server.pid)``) after the agent looked: the account could rewrite it in between. ``plan`` refuses (exit 2)
    naming the pid file; no plan is written, the service still runs."""
    box = rooted
    pid_file = box.install_dir / "run" / "server.pid"
    os.chown(pid_file, NOBODY, NOBODY)  # as an init script that chowns the service's pid file leaves it
    capsys.readouterr()
    rc, plan = plan_to(box, FULL)
    out, err = capsys.readouterr()
    assert rc == ExitCode.BAD_INPUT, out + err
    said = " ".join((out + err).split())
    assert "would run as root in" in said and f"{box.install_dir}/" in said and "is owned by nobody" in said, said
    assert not plan.exists()
    assert box.answers() == OLD


def test_4_a_plain_command_outside_the_install_is_still_allowed(
        root_box: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """Stop and start through a plain command outside the install (``/usr/bin/systemctl stop ...``): the service
    account may own logs/ and data/, nothing root runs is there, so ``plan`` is not refused (exit 0). The same
    layout with the shipped in-install commands is refused (exit 2) naming the first of them."""
    box = root_box
    for rel in ("logs", "data"):
        subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(box.install_dir / rel)], check=True)
    capsys.readouterr()
    rc, plan = plan_to(box, FULL)
    out, err = capsys.readouterr()
    assert rc == ExitCode.BAD_INPUT, out + err
    refused_naming(out + err, box.install_dir / "data")
    operator_playbook(box, "/usr/bin/systemctl stop upgrader-sample", "/usr/bin/systemctl start upgrader-sample")
    rc, plan = plan_to(box, FULL)
    out, err = capsys.readouterr()
    assert rc == ExitCode.OK, out + err
    assert plan.exists()


def test_5_a_refused_late_rollback_reports_the_version_the_host_still_runs(
        sandbox: Sandbox, host_root: Path, tmp_path: Path) -> None:
    """L1: a run killed after its install; its rollback three hours later is refused by the host (exit 4,
    rollback_hours: 0). The console says the host now runs 7.0.4.2 (as it does), not the plan's 7.0.4.1."""
    write_root_config(host_root, rollback_hours=0)
    rid = _killed_after_install(sandbox, tmp_path)
    later = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=3)).isoformat()
    done = _cli(sandbox.root, "rollback", rid, "--yes",
                env={"UPGRADER_AUDIT_KEY": str(sandbox.operator_key), **faketime_env(later)})
    out = done.stdout + done.stderr
    assert done.returncode == ExitCode.APPROVAL_REFUSED, out
    assert installed_version(sandbox) == "7.0.4.2"
    assert "now running 7.0.4.2" in out and "now running 7.0.4.1" not in out, out


def test_6_a_version_command_over_a_service_owned_bin_never_runs_as_root(
        root_box: Sandbox, marker_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """attack12r17 H1: the version is read before the plan's tree check, and `status`, `inspect` and `available`
    have no such check: a playbook ``version: {command: sh bin/version.sh}`` over a service-owned bin/ ran the
    service account's line as root. Now the version command obeys the same rule as stop and start: `status` and
    `plan` report the version unread, naming bin/, and the line never runs; plan is still refused (exit 2)."""
    box = root_box
    operator_playbook(box, "bin/stop.sh", "bin/start.sh", version={"command": "sh bin/version.sh"})
    bin_dir = box.install_dir / "bin"
    marker = marker_dir / "version-ran-as-root"
    (bin_dir / "version.sh").write_text(f"#!/bin/sh\nid -u > {marker} 2>/dev/null\necho 7.0.4.1\n")
    subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(bin_dir)], check=True)
    capsys.readouterr()
    rc, text = run_cli(box, capsys, "status", "--inventory", str(box.inventory))
    said = " ".join(text.split())
    assert "version not read: version.command would run as root in " in said, text
    assert f"{bin_dir} is owned by nobody" in said, text
    assert not marker.exists(), "root ran the service account's version script"
    rc, plan = plan_to(box, FULL)
    out, err = capsys.readouterr()
    assert rc == ExitCode.BAD_INPUT, out + err
    assert not plan.exists() and not marker.exists()
    assert "Traceback" not in text + out + err
