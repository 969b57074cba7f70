"""Issue 12 (fix12q, attack12r24 H4, the lead's H5): /proc views and relative paths of a root command.

Root owns the install, so the agent (root) runs the playbook's commands as root, and every path such a command names
outside the install must be root's alone (test_host_paths_20, _22, _23). The attacker is the service account (uid
65534), which planted a hook it owns. H4: ``/proc/PID/task/TID/root/x`` (and ``/dev/fd/../../PID/root/x``, which
os.path.normpath reads as /PID/root/x while the kernel walks /proc/self/fd/../..) named the hook through another
process's view of the file system, and nothing judged it. H5: a relative path was only ever taken in the install, but
a command runs it wherever it is: after ``cd /``, through ``../..`` from the install, through /proc/self/cwd, and in
``/`` itself for a plain command outside the install (``/usr/bin/env -C tmp /bin/sh x.sh`` ran the account's
/tmp/x.sh). Now every relative piece is judged in every directory the command may run in, and a /proc path is
accepted only as /proc/self/root/X (X judged), /proc/self/cwd/X (X judged where the command runs), a kernel file or
the command's standard streams: ``plan`` refuses the rest (exit 2, naming the path and why, en and zh), and the agent
refuses them again right before a command would run.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from conftest import approve, plan_to
from test_host_paths import run_cli
from test_host_paths_15 import FULL, NOBODY
from test_host_paths_18 import marker_dir, operator_playbook, root_box  # noqa: F401 - fixtures
from test_host_paths_23 import planted, refused_at_plan, scripts  # noqa: F401 - fixture
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.exit_codes import ExitCode
from upgrader.core.reasons import UNTRANSLATED, translate
from upgrader.hostagent import processes


def zh_of(said: str) -> str:
    """The refusal's sentence in Simplified Chinese (it must be translated whole)."""
    start = said.index("stop.command (")
    end = said.index("or name a file that is") + len("or name a file that is")
    zh = translate(said[start:end], "zh")
    assert UNTRANSLATED not in zh and "并非只有 root 能改动" in zh, zh
    return zh


#: H4: (stop command, why): the hook through another process's view, or through a /proc walk normpath does not see
PROC = [("{p}/task/{pid}/root{h}", "it is what another process sees, which the agent cannot judge"),
        ("/bin/sh {p}/task/{pid}/root{h}", "a script under /proc ({p}/task/{pid}/root{h}): what a process sees"),
        ("/dev/fd/../../{pid}/root{h}", "a /proc path with .. in it leads where the agent cannot judge"),
        ("/bin/sh /proc/self/task/{pid}/root{h}", "a script under /proc (/proc/self/task/{pid}/root{h}): what a "
         "process sees"),
        ("/bin/cat /proc/self/task/{pid}/root{h}", "it is what the command's own process holds (task/{pid})"),
        ("/bin/sh /proc/thread-self/root{h}", "{h} is owned by nobody (uid {n})")]


@pytest.mark.parametrize("form, why", PROC)
def test_1_a_proc_path_to_another_process_is_refused(
        root_box: Sandbox, scripts: Path, marker_dir: Path, capsys: pytest.CaptureFixture[str], form: str,
        why: str) -> None:
    """H4: ``/proc/PID/task/TID/root/...`` (this test's own process: its root is /) and the kernel's walk of
    ``/dev/fd/../..``: ``plan`` refuses (exit 2) naming the path and why, in en and zh; the hook never ran, the whole
    host untouched. /proc/thread-self/root/X is X: judged, the service account's hook refused by its owner."""
    marker = marker_dir / "hook-ran"
    hook = planted(scripts, marker)
    pid = os.getpid()
    stop = form.format(p=f"/proc/{pid}", pid=pid, h=hook)
    s = refused_at_plan(root_box, capsys, stop, why.format(p=f"/proc/{pid}", pid=pid, h=hook, n=NOBODY))
    if "a script under /proc" in why:  # refused as code upgrader does not read (the interpreter's script)
        zh = translate(s[s.index("stop.command ("):s.index("absolute path") + len("absolute path")], "zh")
        assert UNTRANSLATED not in zh and "位于 /proc 下的脚本" in zh, zh
    else:
        zh_of(s)
    assert not marker.exists(), "root ran the service account's hook"


@pytest.fixture
def tmp_hook(marker_dir: Path) -> Iterator[Path]:
    """The service account's script directly in /tmp (a name with no ``/``), writing the uid it ran as."""
    fd, name = tempfile.mkstemp(prefix="hp25-", suffix=".sh", dir="/tmp")
    os.write(fd, f"id -u > {marker_dir / 'hook-ran'}\n".encode())
    os.close(fd)
    os.chmod(name, 0o755)
    os.chown(name, NOBODY, NOBODY)
    try:
        yield Path(name)
    finally:
        os.unlink(name)


def test_2_a_plain_command_run_in_root_judges_its_relative_words_there(
        root_box: Sandbox, tmp_hook: Path, marker_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """H5: ``/usr/bin/env -C tmp /bin/sh hp25-x.sh`` is a plain command outside the install, so it runs in ``/``:
    its ``tmp`` is /tmp, which everyone may write. ``plan`` refuses (exit 2) naming /tmp and how the command reaches
    it (en and zh); the account's script never ran."""
    stop = f"/usr/bin/env -C tmp /bin/sh {tmp_hook.name}"
    assert processes.outside_install(str(root_box.install_dir), stop)
    s = refused_at_plan(root_box, capsys, stop, "but /tmp, named in it, is not root's alone: the command reaches it "
                        "as tmp from /, and /tmp may be written by everyone")
    assert "命令在 / 中以 tmp 到达它" in zh_of(s)
    assert not (marker_dir / "hook-ran").exists(), "root ran the service account's script"


#: H5: (stop command): the hook by a relative path from / (cd /, a shell's cd /, env -C / or -C ../..), from the
#: install, through /proc/self/cwd after cd /
RELATIVE = ["cd / && {r}", "cd / && /bin/sh {r}", "cd / && cd etc/.. && /bin/sh {r}", "/bin/sh {i}", "{i}",
            "cd / && /bin/sh /proc/self/cwd/{r}", "cd bin && /bin/sh ../{i}", "/bin/sh -c 'cd / && {r}'",
            "/usr/bin/env -C / /bin/sh {r}", "/usr/bin/env --chdir={u} /bin/sh {r}"]


@pytest.mark.parametrize("form", RELATIVE)
def test_3_a_relative_path_is_judged_where_the_command_runs_it(
        root_box: Sandbox, scripts: Path, marker_dir: Path, capsys: pytest.CaptureFixture[str], form: str) -> None:
    """H5: the hook named relative to ``/`` after ``cd /`` or ``env -C /`` (``/`` itself is not judged as a tree),
    relative to the install (``../../..``), or through /proc/self/cwd: ``plan`` refuses (exit 2) naming the hook, its
    owner and how the command reaches it; the hook never ran, the whole host untouched."""
    marker = marker_dir / "hook-ran"
    hook = planted(scripts, marker)
    install = root_box.install_dir
    stop = form.format(r=os.path.relpath(hook, "/"), i=os.path.relpath(hook, install),
                       u=os.path.relpath("/", install))
    s = refused_at_plan(root_box, capsys, stop, f"but {hook}, named in it, is not root's alone: the command reaches "
                        f"it as ", f"{hook} is owned by nobody (uid {NOBODY})")
    zh_of(s)
    assert not marker.exists(), "root ran the service account's hook"


def test_4_ordinary_commands_still_commit(
        root_box: Sandbox, marker_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What works keeps working: kill, sleep, a kernel file of /proc, the standard streams, ls in the install, a
    cd into the install's bin and back: plan, approve and run commit (exit 0)."""
    box = root_box
    stop = ("/bin/kill -0 1 && /bin/sleep 0 && /bin/cat /proc/loadavg > /dev/null && /bin/echo ok > /dev/stderr && "
            "/bin/ls . > /dev/null && /bin/ls /proc/self/cwd/bin > /dev/null && cd bin && "
            "./stop.sh")
    operator_playbook(box, stop, "bin/start.sh")
    rc, plan = plan_to(box, FULL)
    assert rc == ExitCode.OK, rc
    approval = approve(box, plan)
    rc, text = run_cli(box, capsys, "run", str(plan), "--approval", str(approval))
    assert rc == ExitCode.OK, text
    assert box.answers() == FULL


def test_5_how_paths_are_read(tmp_path: Path) -> None:
    """command_dirs, relative_pieces and _views: where relative names are taken, and what /proc paths become."""
    inst = str(tmp_path)
    assert processes.command_dirs(inst, "/usr/bin/systemctl stop tomcat10", plain=True) == [inst, "/"]
    assert processes.command_dirs(inst, "bin/stop.sh") == [inst]
    assert "/" in processes.command_dirs(inst, "cd / && x") and f"{inst}/bin" in processes.command_dirs(
        inst, "cd bin && ./x")
    pieces = processes.relative_pieces("/usr/bin/java -cp lib:x -Dy=z --a=b/c ../d '*.log'")
    assert {"lib", "x", "z", "b/c", "../d"} <= set(pieces) and not any(p.startswith(("-", "/")) for p in pieces)
    for ok in ("/usr/bin/systemctl stop tomcat10", "/bin/kill 1234", "/bin/sleep 1", "/usr/bin/find . -name x",
               "/bin/cat /proc/loadavg /proc/net/dev", "/bin/echo x > /dev/stderr"):
        assert processes.outside_path_problem(inst, ok) is None, ok
    assert [v for v, _, _ in processes._views("/proc/self/root/bin", [inst])] == list(
        dict.fromkeys(["/bin", processes._walk("/bin")]))
    assert [w for _, w, _ in processes._views("/proc/self/root/etc/../bin", [inst])][-1] == \
        "a /proc path with .. in it leads where the agent cannot judge"
    assert processes._walk("/dev/fd/../../1/root") == "/proc/self/fd/../../1/root"
    assert [w for _, w, _ in processes._views("/proc/1/cwd", [inst])] == [
        "it is what another process sees, which the agent cannot judge"]
