"""Issue 12 (round 18, attack12r17 H2): a "plain command outside the install" run as root no longer runs in the install.

Since tests/test_host_paths_18.py a command root runs in an install root owns needs the whole tree root's alone,
unless it is a plain command outside the install (``/usr/bin/systemctl stop app``). That exemption ignored the working
directory, the install, and read option values whole: ``make -Cbin``, ``env -Cbin /bin/sh stop.sh``, ``perl -Ibin``,
``java -cp bin:x``, ``/bin/sh /proc/self/cwd/bin/stop.sh`` and ``python3 -m server`` (a module of the install) all ran
the service account's files as root. Now each piece of an argument is judged (``--opt=x``, attached short-option
values, ``:``/``,`` lists, ``@file``, /proc and /dev/fd paths): those shapes are refused at plan (exit 2, naming the
path) with the host untouched; an exempt command runs in ``/`` (UPGRADER_INSTALL_DIR names the install for a wrapper
that goes there itself); any other root command looks at the tree again right before it runs. The service account is
uid 65534.
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
from test_host_paths import run_cli
from test_host_paths_15 import FULL, NOBODY, OLD
from test_host_paths_18 import marker_dir, operator_playbook, refused_at_plan, root_box  # noqa: F401 - fixtures
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.exit_codes import ExitCode
from upgrader.core.reasons import UNTRANSLATED, translate


@pytest.fixture
def root_scripts() -> Iterator[Path]:
    """A directory root alone can change (beneath /etc/upgrader, the suite's own tmpfs): scripts there are plain
    commands outside the install, as an operator's root wrappers are."""
    d = Path(tempfile.mkdtemp(prefix="hp19-", dir="/etc/upgrader"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        subprocess.run(["rm", "-rf", str(d)], check=True)


@pytest.mark.parametrize("command", [
    "/usr/bin/make -s -Cbin {what}",
    "/usr/bin/env -Cbin /bin/sh {what}.sh",
    "/usr/bin/perl -Ibin /usr/bin/{what}",  # -e and -M, code upgrader does not read, are refused: test_host_paths_23
    "/usr/bin/java -cp bin:x Main",
    "/bin/sh /proc/self/cwd/bin/{what}.sh",
])
def test_1_an_option_value_or_proc_path_into_a_service_owned_bin_is_refused_at_plan(
        root_box: Sandbox, capsys: pytest.CaptureFixture[str], command: str) -> None:
    """The attacker's shapes: a root-only program outside the install whose argument reaches bin/ through an attached
    option value, a class path list or /proc/self/cwd. With bin/ 65534's, ``plan`` refuses (exit 2) naming bin/, no
    plan written, the whole host untouched."""
    box = root_box
    operator_playbook(box, command.format(what="stop"), command.format(what="start"))
    bin_dir = box.install_dir / "bin"
    subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(bin_dir)], check=True)
    was = host_state(box.install_dir)
    if command.startswith("/bin/sh"):
        refused_at_plan(box, capsys, bin_dir)
    else:  # make, env, java and perl's -I are not on the list of root programs (attack12r25): refused before
        capsys.readouterr()
        rc, plan = plan_to(box, FULL)
        said = " ".join("".join(capsys.readouterr()).split())
        assert rc == ExitCode.BAD_INPUT and "runs code upgrader does not read" in said and not plan.exists(), said
    assert_host_untouched(was, host_state(box.install_dir))
    assert box.answers() == OLD


def test_2_an_exempt_command_runs_in_root_not_in_the_install(
        root_box: Sandbox, root_scripts: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The operator's root wrappers outside the install stop and start the service: each writes its working directory
    to a root-only file, then goes to UPGRADER_INSTALL_DIR itself. The run commits; both ran in ``/``."""
    box = root_box
    for what in ("stop", "start"):
        (root_scripts / f"{what}.sh").write_text(f"pwd > {root_scripts}/{what}.pwd\n"
                                                 f'cd "$UPGRADER_INSTALL_DIR" && exec ./bin/{what}.sh\n')
    operator_playbook(box, f"/bin/sh {root_scripts}/stop.sh", f"/bin/sh {root_scripts}/start.sh")
    rc, plan = plan_to(box, FULL)
    assert rc == ExitCode.OK, rc
    approval = approve(box, plan)
    rc, text = run_cli(box, capsys, "run", str(plan), "--approval", str(approval))
    assert rc == ExitCode.OK, text
    assert (root_scripts / "stop.pwd").read_text() == "/\n"
    assert (root_scripts / "start.pwd").read_text() == "/\n"


def test_3_a_module_the_service_account_put_in_the_install_never_runs_as_root(
        root_box: Sandbox, marker_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``version: {command: /usr/bin/python3 -m hp19version}``: a plain command outside the install by its text, but
    run in the install ``python3 -m`` imports the service account's hp19version.py there. ``status`` reads the version
    as root: the module never runs (the command runs in /), the version is reported unread, no traceback."""
    box = root_box
    operator_playbook(box, "bin/stop.sh", "bin/start.sh", version={"command": "/usr/bin/python3 -m hp19version"})
    marker = marker_dir / "module-ran-as-root"
    module = box.install_dir / "hp19version.py"
    module.write_text(f"import os\nopen({str(marker)!r}, 'w').write(str(os.getuid()))\nprint('7.0.4.1')\n")
    subprocess.run(["chown", f"{NOBODY}:{NOBODY}", str(module)], check=True)
    capsys.readouterr()
    rc, text = run_cli(box, capsys, "status", "--inventory", str(box.inventory))
    assert not marker.exists(), "root ran the service account's module"
    assert "version not read" in " ".join(text.split()) and "Traceback" not in text, text


def test_4_a_tree_handed_over_after_the_preflight_refuses_the_root_stop_command(
        root_box: Sandbox, root_scripts: Path, marker_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The tree was root's at plan and preflight; a before_stop hook (root's own script outside the install, playing
    the service account's move between the preflight and the stop) hands bin/ to 65534 and adds a line to stop.sh.
    The stop command ``bin/stop.sh`` is looked at again right before it runs: not run (naming bin/ and its owner), the
    line never ran as root, the old version still answers."""
    box = root_box
    marker = marker_dir / "stop-ran-as-root"
    hook = root_scripts / "hand-over.sh"
    hook.write_text(f"sed -i '2i id -u > {marker} 2>/dev/null || true' {box.install_dir}/bin/stop.sh\n"
                    f"chown -R {NOBODY}:{NOBODY} {box.install_dir}/bin\n")
    operator_playbook(box, "bin/stop.sh", "bin/start.sh", hooks={"before_stop": [{"command": f"/bin/sh {hook}"}]})
    rc, plan = plan_to(box, FULL)
    assert rc == ExitCode.OK, rc
    approval = approve(box, plan)
    rc, text = run_cli(box, capsys, "run", str(plan), "--approval", str(approval))
    said = " ".join(text.split())
    assert rc != ExitCode.OK, text
    assert not marker.exists(), "root ran the line the service account added to stop.sh"
    assert "'bin/stop.sh' was not run: it would run as root in" in said, text
    assert f"{box.install_dir / 'bin'} is owned by nobody (uid {NOBODY})" in said, text
    assert "Traceback" not in text
    assert box.answers() == OLD


def test_5_the_whole_tree_refusal_reads_in_chinese(root_box: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """The refusal the agent words (the commands, the first path another account can change, what to do) has a
    Chinese form for the operator who reads Chinese, as the messages around it have: nothing left untranslated."""
    box = root_box
    operator_playbook(box, "bin/stop.sh", "bin/start.sh")
    subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(box.install_dir / "bin")], check=True)
    capsys.readouterr()
    rc, _ = plan_to(box, FULL)
    out, err = capsys.readouterr()
    assert rc == ExitCode.BAD_INPUT, out + err
    (said,) = re.findall(r"host \S+: .*?\(systemctl\)", " ".join((out + err).split()))
    zh = translate(said, "zh")
    assert UNTRANSLATED not in zh, zh
    assert "以 root 身份执行" in zh and f"{box.install_dir / 'bin'} 属于 nobody (uid {NOBODY})" in zh, zh
    assert "请把安装目录交给服务账户" in zh, zh
