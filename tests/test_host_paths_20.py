"""Issue 12 (fix12x): a root command never runs a file outside the install that another account can change.

Root owns the install, so the agent (root) runs the playbook's commands as root. A plain command outside the install
(``/bin/sh /somewhere/stop.sh``) was exempt from the whole-tree rule, and any other command only needed the install
tree root's alone: whoever could write /somewhere (the service account's HOME, a directory it owns, a group-writable
script) had root run what it wrote. Now every absolute path a root command names outside the install -- its program,
every piece of an argument, every word of its shell text -- must be root's alone (the file and each directory up to
``/`` root's and writable by nobody else): else the command is refused at plan and before stop (exit 2, naming the
command, the path and who can change it), and again right before it runs. ``/bin/sh`` itself is root's. The service
account is uid 65534.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from conftest import approve, plan_to
from hoststate import assert_host_untouched, host_state
from test_host_paths import last_result, last_run_id, run_cli
from test_host_paths_15 import FULL, NOBODY, OLD
from test_host_paths_18 import marker_dir, operator_playbook, root_box  # noqa: F401 - fixtures
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.exit_codes import ExitCode
from upgrader.core.reasons import UNTRANSLATED, translate
from upgrader.hostagent import processes


@pytest.fixture
def scripts() -> Iterator[Path]:
    """A directory for the stop and start wrappers outside the install, root's 0755 (beneath /etc/upgrader, the
    suite's own tmpfs): each wrapper writes the uid it ran as to ``ran-<what>``, then runs the install's script."""
    d = Path(tempfile.mkdtemp(prefix="hp20-", dir="/etc/upgrader"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        subprocess.run(["rm", "-rf", str(d)], check=True)


def wrappers(box: Sandbox, d: Path, marker: Path) -> None:
    for what in ("stop", "start"):
        f = d / f"{what}.sh"
        f.write_text(f"id -u > {marker}-{what}\ncd \"$UPGRADER_INSTALL_DIR\" && exec ./bin/{what}.sh\n")
        f.chmod(0o755)


def hand_over(how: str, d: Path) -> Path:
    """Let the service account change the stop wrapper: ``dir`` (it owns the wrapper's directory), ``file`` (it owns
    the wrapper), ``group`` (the wrapper is group-writable by its group). The path the refusal names."""
    if how == "dir":
        subprocess.run(["chown", f"{NOBODY}:{NOBODY}", str(d)], check=True)
        return d
    f = d / "stop.sh"
    if how == "file":
        subprocess.run(["chown", f"{NOBODY}:{NOBODY}", str(f)], check=True)
    else:
        subprocess.run(["chgrp", str(NOBODY), str(f)], check=True)
        f.chmod(0o775)
    return f


WHO = {"dir": f"is owned by nobody (uid {NOBODY})", "file": f"is owned by nobody (uid {NOBODY})",
       "group": f"may be written by its group (gid {NOBODY})"}

#: the stop command forms: the exempt form (program and script), the script as the program, a shell form
FORMS = ["/bin/sh {d}/stop.sh", "{d}/stop.sh", "/bin/sh -c 'exec /bin/sh {d}/stop.sh' && true"]


def said(text: str) -> str:
    return " ".join(text.split())


def refusal(text: str, stop: str, scripts: Path, path: Path, how: str) -> None:
    """The refusal names the command, the wrapper it names, and who can change it (``path``: the wrapper or its
    directory)."""
    s = said(text)
    assert f"stop.command ({stop}) would run as root, but {scripts}/stop.sh, named in it, is not root's alone: " \
           f"{path} {WHO[how]}" in s, text
    assert "another account could change what root runs or reads; nothing was stopped" in s, text
    assert "Traceback" not in text


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("how", ["dir", "file", "group"])
def test_1_a_root_stop_command_over_a_script_another_account_can_change_is_refused_at_plan(
        root_box: Sandbox, scripts: Path, capsys: pytest.CaptureFixture[str], form: str, how: str) -> None:
    """The install is root's alone (the whole-tree rule passes); the stop wrapper outside it is not. ``plan``
    refuses (exit 2) naming the command, the wrapper (or its directory) and its owner or group; no plan written, the
    whole host untouched, the service still answering."""
    box = root_box
    stop = form.format(d=scripts)
    wrappers(box, scripts, scripts / "ran")
    operator_playbook(box, stop, "bin/start.sh")
    path = hand_over(how, scripts)
    was = host_state(box.install_dir)
    capsys.readouterr()
    rc, plan = plan_to(box, FULL)
    out, err = capsys.readouterr()
    assert rc == ExitCode.BAD_INPUT, out + err
    refusal(out + err, stop, scripts, path, how)
    assert not plan.exists()
    assert_host_untouched(was, host_state(box.install_dir))
    assert box.answers() == OLD


@pytest.mark.parametrize("how", ["dir", "file"])
def test_2_a_wrapper_handed_over_after_the_approval_is_refused_before_stop(
        root_box: Sandbox, scripts: Path, marker_dir: Path, capsys: pytest.CaptureFixture[str], how: str) -> None:
    """Planned and approved while the wrappers were root's; then the service account gets the stop wrapper (or its
    directory) and adds a line. The run is refused at its preflight (exit 2, the path and owner named): the line
    never ran, nothing was stopped, the whole host (lock, staged files, product files, service pid) untouched."""
    box = root_box
    stop = f"/bin/sh {scripts}/stop.sh"
    wrappers(box, scripts, marker_dir / "ran")
    operator_playbook(box, stop, "bin/start.sh")
    rc, plan = plan_to(box, FULL)
    assert rc == ExitCode.OK, rc
    approval = approve(box, plan)
    path = hand_over(how, scripts)
    marker = marker_dir / "added-line-ran"
    subprocess.run(["sed", "-i", f"1i id -u > {marker}", str(scripts / "stop.sh")], check=True)
    was = host_state(box.install_dir)
    rc, text = run_cli(box, capsys, "run", str(plan), "--approval", str(approval))
    assert rc == ExitCode.BAD_INPUT, text
    refusal(text, stop, scripts, path, how)
    (host,) = last_result(box)["hosts"]
    assert [p["phase"] for p in host["phases"]] == ["preflight"], host
    assert not marker.exists() and not (marker_dir / "ran-stop").exists(), "root ran the service account's line"
    assert_host_untouched(was, host_state(box.install_dir), run_record=last_run_id(box))
    assert box.answers() == OLD


def test_3_root_owned_wrappers_outside_the_install_are_accepted(
        root_box: Sandbox, scripts: Path, marker_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same playbook with the wrappers root's 0755 in a root-only directory: plan, approve and run commit
    (exit 0); both wrappers ran as root (``/bin/sh`` passes: it is root's)."""
    box = root_box
    wrappers(box, scripts, marker_dir / "ran")
    operator_playbook(box, f"/bin/sh {scripts}/stop.sh", f"/bin/sh {scripts}/start.sh")
    rc, plan = plan_to(box, FULL)
    assert rc == ExitCode.OK, rc
    approval = approve(box, plan)
    rc, text = run_cli(box, capsys, "run", str(plan), "--approval", str(approval))
    assert rc == ExitCode.OK, text
    assert (marker_dir / "ran-stop").read_text() == "0\n"
    assert (marker_dir / "ran-start").read_text() == "0\n"
    assert box.answers() == FULL


def test_4_a_wrapper_handed_over_after_the_preflight_is_not_run(
        root_box: Sandbox, scripts: Path, marker_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A before_stop hook (root's own script, playing the service account's move between the preflight and the stop)
    hands the stop wrapper's directory to 65534 and adds a line to the wrapper. The stop command is looked at again
    right before it runs: not run (naming the command, the wrapper, its directory's owner); the line never ran as
    root, the old version still answers."""
    box = root_box
    marker = marker_dir / "added-line-ran"
    hook = scripts / "hand-over.sh"
    hook.write_text(f"sed -i '1i id -u > {marker}' {scripts}/stop.sh\nchown {NOBODY}:{NOBODY} {scripts}\n")
    wrappers(box, scripts, marker_dir / "ran")
    stop = f"/bin/sh {scripts}/stop.sh"
    operator_playbook(box, stop, "bin/start.sh", hooks={"before_stop": [{"command": f"/bin/sh {hook}"}]})
    rc, plan = plan_to(box, FULL)
    assert rc == ExitCode.OK, rc
    approval = approve(box, plan)
    rc, text = run_cli(box, capsys, "run", str(plan), "--approval", str(approval))
    s = said(text)
    assert rc != ExitCode.OK, text
    assert not marker.exists() and not (marker_dir / "ran-stop").exists(), "root ran the service account's line"
    assert f"the command '{stop}' was not run: it would run as root, but {scripts}/stop.sh, named in it, is not " \
           f"root's alone: {scripts} is owned by nobody (uid {NOBODY})" in s, text
    assert "Traceback" not in text
    assert box.answers() == OLD


def test_5_the_refusal_reads_in_chinese(root_box: Sandbox, scripts: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The refusal (the command, the path, who can change it, what to do) has its Chinese form; nothing is left
    untranslated."""
    box = root_box
    wrappers(box, scripts, scripts / "ran")
    operator_playbook(box, f"/bin/sh {scripts}/stop.sh", "bin/start.sh")
    hand_over("dir", scripts)
    capsys.readouterr()
    rc, _ = plan_to(box, FULL)
    out, err = capsys.readouterr()
    assert rc == ExitCode.BAD_INPUT, out + err
    (found,) = re.findall(r"host \S+: .*?or name a file that is", said(out + err))
    zh = translate(found, "zh")
    assert UNTRANSLATED not in zh, zh
    assert f"stop.command（/bin/sh {scripts}/stop.sh）将以 root 身份执行" in zh, zh
    assert f"{scripts} 属于 nobody (uid {NOBODY})" in zh and "chown root，chmod go-w" in zh, zh
    wrong = f"the command '/bin/sh {scripts}/stop.sh' was not run: it would run as root, but {scripts}/x, named in " \
            f"it, is not root's alone: {scripts}/x does not exist, and {scripts} is owned by nobody (uid {NOBODY}): " \
            "another account could change what root runs or reads"
    zh = translate(wrong, "zh")
    assert UNTRANSLATED not in zh and f"{scripts}/x 不存在，而 {scripts} 属于 nobody" in zh, zh


def test_6_a_clean_tree_is_walked_once_per_call_until_a_command_runs(root_box: Sandbox, tmp_path: Path) -> None:
    """The whole-tree look before a root command is reused while nothing ran (tree_checked): a file handed to the
    service account behind the agent's back is not seen by the reused look, but a command that runs forgets it, and
    the next look finds the file (a command may change the tree)."""
    install = str(root_box.install_dir)
    processes.forget_tree_checks()
    try:
        assert processes.tree_checked(install) == []
        conf = root_box.install_dir / "conf" / "server.conf"
        subprocess.run(["chown", f"{NOBODY}:{NOBODY}", str(conf)], check=True)
        assert processes.tree_checked(install) == []  # reused: nothing ran (only root could have done this)
        res = processes.run_shell("/bin/true", install, 10)
        assert res["exit"] == 0
        found = processes.tree_checked(install)
        assert found and f"{conf} is owned by nobody (uid {NOBODY})" in found[0], found
    finally:
        processes.forget_tree_checks()
