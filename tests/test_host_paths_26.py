"""Issue 12 (attack12r25 H1 H2 M1): a root command runs only programs upgrader knows run what they are given.

Round 25 ran the service account's hook as root through programs with command languages of their own, which no list
of interpreters names: ``sed -n 1e/x/hook.sh``, ``sed w/x`` (a copy of /etc/shadow in its directory), ``echo '!x' |
ed``, ``gdb -ex '!x'``, ``python3 -i FILE`` reading Python from its standard input, and ``slogin`` (ssh by another
name). Now the program of every simple command of a root command must be a shell builtin, a POSIX shell, an
interpreter given only a script file, a program of the install, a script outside it (judged as a path, its directory
as a tree), or one of a short list of system programs (systemctl, kill, sleep, cat, cp, ...): anything else is refused
at ``plan`` (exit 2, naming the program and why, en and zh) and again right before it would run; the hook never ran.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from test_host_paths_18 import marker_dir, operator_playbook, root_box  # noqa: F401 - fixtures
from test_host_paths_23 import planted, refused_at_plan, scripts  # noqa: F401 - fixture
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.reasons import UNTRANSLATED, translate
from upgrader.hostagent import processes
from upgrader.hostagent.common import AgentError

UNLISTED = "a program not on upgrader's list of programs that run only what they are given"

#: (stop command, the program named, the reason): each ran the service account's hook as root in round 25
ATTACKS = [
    ("/usr/bin/sed -n 1e{h} {t}", "/usr/bin/sed", UNLISTED + " (/usr/bin/sed)"),
    ("/usr/bin/sed -n w{d}/shadow /etc/shadow", "/usr/bin/sed", UNLISTED + " (/usr/bin/sed)"),
    ("/bin/echo '!{h}' | /bin/ed", "/bin/ed", UNLISTED + " (/usr/bin/ed)"),
    ("/usr/bin/timeout 60 /usr/bin/gdb -batch -nx '-ex=!{h}'", "/usr/bin/gdb", UNLISTED + " (/usr/bin/gdb)"),
    ("/bin/echo 'import os' | /usr/bin/python3 -i {t}", "/usr/bin/python3", "an option of python (-i)"),
    ("slogin -p 22 root@127.0.0.1 {h}", "slogin", UNLISTED + " (/usr/bin/ssh)"),  # ssh by another name
    ("/usr/bin/tar -cf /dev/null {t} --checkpoint=1 --checkpoint-action=exec={h}", "/usr/bin/tar",
     UNLISTED + " (/usr/bin/tar)"),
    ("/usr/bin/sort --compress-program={h} {t}", "/usr/bin/sort", UNLISTED + " (/usr/bin/sort)"),
    ("eval /bin/true", "eval", "a shell builtin that runs its words as code, or sets variables or the umask (eval)"),
    ("/bin/sh -i -c /bin/true", "/bin/sh", "a shell option upgrader does not read (-i)"),
    # round 26
    ("/bin/bash -c 'function cat; cat'", "function",  # with its body in braces: test_host_paths_27
     "shell syntax a root command may not use (function)"),
    # round 27: shell syntax that fed a script's standard input (only simple commands joined by && || ; now)
    ("/usr/bin/printf x | ( /usr/bin/python3 /usr/lib/python3.11/code.py )", "(", "shell syntax a root command may "
     "not use (()"),
    ("/usr/bin/printf x |& /usr/bin/python3 /usr/lib/python3.11/code.py", "&", "shell syntax a root command may not "
     "use (&)"),
    ("/usr/bin/printf x | if true; then /usr/bin/python3 /usr/lib/python3.11/code.py; fi", "if", "shell syntax a root "
     "command may not use (if)"),
    ("exec <{t}; /usr/bin/python3 /usr/lib/python3.11/code.py", "<", "shell syntax a root command may not use (<)"),
    ("/usr/bin/python3 /usr/lib/python3.11/code.py 0<>{t}", "<", "shell syntax a root command may not use (<)"),
    ("/usr/bin/nice --adj 5 /usr/bin/sed -n 1e{h} {t}", "/usr/bin/nice",
     "an option of /usr/bin/nice upgrader does not read exactly"),
    ("/usr/bin/timeout --sig KILL 5 /usr/bin/sed -n 1e{h} {t}", "/usr/bin/timeout",
     "an option of /usr/bin/timeout upgrader does not read exactly"),
    ("/bin/bash -c 'exec -a x /usr/bin/sed -n 1e{h} {t}'", "-a", "a program not found on root's PATH (-a)"),
    ("/usr/bin/printf x | /usr/bin/python3 /usr/lib/python3.11/code.py", "/usr/bin/python3",
     "a program given its standard input by a pipe or a file"),
]


@pytest.mark.parametrize("form, program, why", ATTACKS)
def test_1_a_program_with_a_command_language_of_its_own_is_refused_at_plan(
        root_box: Sandbox, scripts: Path, marker_dir: Path, capsys: pytest.CaptureFixture[str], form: str,
        program: str, why: str) -> None:
    """The attacker's commands: ``plan`` refuses (exit 2) naming the program and why, in English and in Chinese;
    nothing planned, the whole host untouched (refused_at_plan), the hook never ran, no copy of /etc/shadow made."""
    marker = marker_dir / "hook-ran"
    hook = planted(scripts, marker)
    subprocess.run(["chown", "-R", "root:root", str(hook.parent)], check=True)  # even root's: the program is unread
    text = scripts / "data.txt"
    text.write_text("x\n")
    stop = form.format(h=hook, d=hook.parent, t=text)
    s = refused_at_plan(root_box, capsys, stop, f"but {program} in it runs code upgrader does not read ({why}",
                        "put the code in a root-owned script and name that script by its absolute path")
    zh = translate(s[s.index("stop.command ("):s.index("absolute path") + len("absolute path")], "zh")
    assert UNTRANSLATED not in zh and "upgrader 不读取的代码" in zh, zh
    assert not marker.exists(), "root ran the hook"
    assert not (hook.parent / "shadow").exists()


def test_1b_a_path_stuck_to_a_cluster_of_options_is_judged(
        root_box: Sandbox, scripts: Path, marker_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Round 26 H4: ``cp -ft/x`` is cp's -f and -t /x: root would write into the service account's directory (and
    through its link). The path after any letter of a short-option cluster is judged: refused at plan."""
    hook = planted(scripts, marker_dir / "hook-ran")
    text = scripts / "data.txt"
    text.write_text("x\n")
    refused_at_plan(root_box, capsys, f"/bin/cp -ft{hook.parent} {text}",
                    f"but {hook.parent}, named in it, is not root's alone")
    assert sorted(p.name for p in hook.parent.iterdir()) == ["stop.sh"]


def test_2_the_agent_refuses_an_unlisted_program_right_before_it_runs(tmp_path: Path) -> None:
    """The same rule where the agent runs a command as root (root_workdir): a command that reached the agent without
    the plan's check (another controller) is not run; the marker it would write is absent."""
    marker, t = tmp_path / "ran", tmp_path / "data.txt"
    t.write_text("x\n")
    for command in (f"/usr/bin/sed -n '1e/usr/bin/touch {marker}' {t}",
                    f"/bin/sh -c '/usr/bin/sed -n \"1e/usr/bin/touch {marker}\" {t}'"):
        with pytest.raises(AgentError) as e:
            processes.run_shell(command, str(tmp_path), 10)
        assert "runs code upgrader does not read" in str(e.value) and "/usr/bin/sed" in str(e.value), str(e.value)
        assert not marker.exists()


def test_3_what_root_commands_may_run() -> None:
    """The list, read: shells with -c scripts, script files, builtins, the install's programs, listed system
    programs, through timeout/nice; anything else is named."""
    install = {"UPGRADER_INSTALL_DIR": "/opt/x"}
    for ok in ("/usr/bin/systemctl restart tomcat10", "systemctl stop x && sleep 1", "bin/shutdown.sh",
               "/bin/sh -c 'cd bin && ./stop.sh' 2>&1", "/bin/bash -e -o pipefail -c 'kill -TERM 1'",
               "timeout -s KILL 30 nice -n 5 /bin/sh bin/stop.sh", "cd bin; ./x; cd -", "exec bin/start.sh",
               "/usr/bin/python3 /opt/ops/tool.py a", "service tomcat10 restart", "/bin/echo 'stopping now' >&2",
               "/bin/rm -f logs/x.log"):
        assert processes.unlisted_code(ok, install) is None, ok
    for bad, program in (("/usr/bin/find . -exec /bin/rm {} +", "/usr/bin/find"), ("sudo systemctl stop x", "sudo"),
                         ("/usr/bin/env A=1 /bin/true", "/usr/bin/env"), ("timeout 5 /usr/bin/vim -c q", "/usr/bin/vim"),
                         ("/bin/sh -c 'cat /x | ed'", "ed"), ("awk -f /x/a.awk", "awk"), ("java -jar /x.jar", "java"),
                         ("/usr/bin/python3 -c 1", "/usr/bin/python3")):
        found = processes.unlisted_code(bad, install)
        assert found is not None and found[0] == program, (bad, found)


def test_1c_a_relative_path_stuck_to_a_cluster_of_options_is_judged(
        root_box: Sandbox, scripts: Path, marker_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """attack12r27 H2: ``cd /; cp -ft<relative dir>`` is cp's -t with a path relative to / (the service account's
    directory): every suffix of a short-option cluster is judged as a path, relative ones where the command runs."""
    hook = planted(scripts, marker_dir / "hook-ran")
    text = scripts / "data.txt"
    text.write_text("x\n")
    relative = str(hook.parent).lstrip("/")
    refused_at_plan(root_box, capsys, f"cd / && /bin/cp -ft{relative} {text}", "is not root's alone")
    assert sorted(p.name for p in hook.parent.iterdir()) == ["stop.sh"]
