"""Issue 12 (fix12v, attack12r24 H1 H2 H3 M1): a root command's code is read whatever program stands before it.

Root owns the install, so the agent (root) runs the playbook's commands as root (test_host_paths_20, _22, _23). The
attacker is the service account (uid 65534), which planted ``svc/stop.sh`` in a directory it owns. Round 24 reached
it four ways the reader missed: a script an interpreter reads from its standard input through a path
(``sh /dev/stdin``, ``/proc/self/fd/0``) or through ``xargs``; a shell or interpreter after a program not on the
wrapper list (``setarch``, ``prlimit``, ``linux64``, ``sg GROUP 'S'``, ``env -iS``, perl by another of its names);
a brace expansion with a quoted blank inside (``/{etc,"x y"}/...``); and ``java -jar`` taking classes from the
jar's directory. Each attack below passed ``plan`` before the fix (test_3 "x", test_5 and test_6's
ordinary cases are regression cases); now ``plan`` refuses it (exit 2), the hook never
runs and the whole host is untouched. Ordinary commands keep committing.
"""

from __future__ import annotations

import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from test_host_paths_15 import NOBODY
from test_host_paths_18 import commits_with_root_stop, marker_dir, operator_playbook, root_box  # noqa: F401 - fixtures
from test_host_paths_23 import planted, refused_at_plan, scripts  # noqa: F401 - fixture
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.reasons import UNTRANSLATED, translate
from upgrader.hostagent import processes

CODE = "in it runs code upgrader does not read"
JUDGE = "in it cannot be judged as written"


def split(hook: Path) -> tuple[str, str]:
    """The hook's path in two pieces no rule sees as its path: ``/etc`` (root's) and the rest (judged by ``/``)."""
    text = str(hook)
    return text[:4], text[4:]


#: H1: (stop command, expected): the hook's path printed into a shell that reads it through a path of its standard
#: input, or built into a command by xargs
STDIN = [("/usr/bin/printf '%s%s\\n' {a} {b} | /bin/sh /dev/stdin",
          f"/bin/sh {CODE} (a script read from its standard input (/dev/stdin))"),
         ("/usr/bin/printf '%s%s\\n' {a} {b} | /bin/sh /proc/self/fd/0",
          f"/bin/sh {CODE} (a script read from its standard input (/proc/self/fd/0))"),
         ("/usr/bin/printf '%s%s\\n' {a} {b} | /bin/bash /dev/fd/0",
          f"/bin/bash {CODE} (a script read from its standard input (/dev/fd/0))"),
         ("/usr/bin/printf '%s%s' {a} {b} | /usr/bin/xargs /bin/sh -c",
          f"/usr/bin/xargs {CODE} (a command built from its standard input (xargs))")]


@pytest.mark.parametrize("form, expected", STDIN)
def test_1_a_script_read_from_standard_input_through_a_path_is_refused(
        root_box: Sandbox, scripts: Path, marker_dir: Path, capsys: pytest.CaptureFixture[str], form: str,
        expected: str) -> None:
    """H1: ``printf /etc /rest | sh /dev/stdin`` (or /proc/self/fd/0, /dev/fd/0, xargs sh -c): ``plan`` refuses
    (exit 2) naming the program and why, en and zh; the hook never ran."""
    marker = marker_dir / "hook-ran"
    a, b = split(planted(scripts, marker))
    s = refused_at_plan(root_box, capsys, form.format(a=a, b=b), expected)
    zh = translate(s[s.index("stop.command ("):s.index("absolute path") + len("absolute path")], "zh")
    assert UNTRANSLATED not in zh and "upgrader 不读取的代码" in zh and "标准输入" in zh, zh
    assert not marker.exists(), "root ran the service account's hook"


#: H2: the hook globbed (so that only a reader of the script sees it) behind programs not on any wrapper list
BEHIND = ["/usr/bin/setarch x86_64 /bin/sh -c -- '{g}'", "/usr/bin/prlimit --nofile=1024 /bin/sh -c -- '{g}'",
          "/usr/bin/linux64 /bin/bash -c -- '{g}'", "/usr/bin/sg root '{g} sg'",
          "/usr/bin/env -iS '/bin/sh -c {g}'", "/usr/bin/env -uX -S '/bin/sh -c {g}'"]


@pytest.mark.parametrize("form", BEHIND)
def test_2_a_shell_after_any_program_is_read(
        root_box: Sandbox, scripts: Path, marker_dir: Path, capsys: pytest.CaptureFixture[str], form: str) -> None:
    """H2: ``setarch x86_64 /bin/sh -c -- 'S'`` and the like: S is read, its glob refused (exit 2, naming it)."""
    marker = marker_dir / "hook-ran"
    hook = planted(scripts, marker)
    glob = str(hook).replace("/svc/", "/sv[c]/")
    refused_at_plan(root_box, capsys, form.format(g=glob), f"but the word {glob} {JUDGE} (a glob)")
    assert not marker.exists(), "root ran the service account's hook"


def test_2b_an_interpreter_known_by_another_name_is_read(
        root_box: Sandbox, scripts: Path, marker_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """H2: perl by a name of its family (a root-owned link ``perl5.99-x86_64-linux-gnu``, as Debian ships perl's hard
    link), with the hook's path built in its code: refused as code given as text."""
    marker = marker_dir / "hook-ran"
    a, b = split(planted(scripts, marker))
    tools = scripts / "tools"
    tools.mkdir(mode=0o755)
    perl = tools / "perl5.99-x86_64-linux-gnu"
    perl.symlink_to("/usr/bin/perl")
    refused_at_plan(root_box, capsys, f"{perl} -e 'exec q{{{a}}}.q{{{b}}}'", f"{perl} {CODE} (code given as text (-e))")
    assert not marker.exists(), "root ran the service account's hook"


@pytest.mark.skipif(not os.path.exists("/usr/bin/jshell"), reason="no JDK jshell")
def test_2c_jshell_reading_its_standard_input_is_refused(
        root_box: Sandbox, scripts: Path, marker_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """H2: the JDK's jshell fed code on its standard input: refused."""
    marker = marker_dir / "hook-ran"
    a, b = split(planted(scripts, marker))
    stop = f"/usr/bin/printf 'new ProcessBuilder(\"%s%s\").start().waitFor()\\n' {a} {b} | /usr/bin/jshell -q -"
    refused_at_plan(root_box, capsys, stop, f"/usr/bin/jshell {CODE} (a script read from its standard input)")
    assert not marker.exists(), "root ran the service account's hook"


@pytest.mark.parametrize("inside", ['"x y"', "x\\ y", "x"])
def test_3_any_unquoted_brace_is_a_brace_expansion(
        root_box: Sandbox, scripts: Path, marker_dir: Path, capsys: pytest.CaptureFixture[str], inside: str) -> None:
    """H3: ``bash -c '/{etc,"x y"}/rest'`` expands to the hook: refused as a brace expansion whatever is inside."""
    marker = marker_dir / "hook-ran"
    a, b = split(planted(scripts, marker))
    word = "/{%s,%s}%s" % (a[1:], inside, b)
    s = refused_at_plan(root_box, capsys, f"/bin/bash -c '{word} br'", JUDGE, "(a brace expansion)")
    assert "/{etc," in s
    assert not marker.exists(), "root ran the service account's hook"


def jar(path: Path, class_path: str) -> Path:
    """A real jar: its manifest names Main and a Class-Path relative to the jar's directory."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("META-INF/MANIFEST.MF", f"Manifest-Version: 1.0\nMain-Class: Main\nClass-Path: {class_path}\n\n")
    path.chmod(0o644)
    return path


@pytest.mark.parametrize("form", ["/usr/bin/java -jar {j}", "/usr/bin/java -cp {j} Main",
                                  "/usr/bin/java --class-path={j} Main"])
def test_4_a_jars_directory_must_be_roots_alone(
        root_box: Sandbox, scripts: Path, marker_dir: Path, capsys: pytest.CaptureFixture[str], form: str) -> None:
    """M1: a root-owned jar whose manifest Class-Path is ``svc/``, the service account's directory beside it: refused
    (exit 2) naming the jar and the service account's file."""
    hook = planted(scripts, marker_dir / "hook-ran")
    j = jar(scripts / "tool.jar", "svc/")
    refused_at_plan(root_box, capsys, form.format(j=j), f"but {j}, named in it, is not root's alone: ",
                    f"is owned by nobody (uid {NOBODY})")
    assert hook.exists()


def test_4b_java_argument_files_are_refused(
        root_box: Sandbox, scripts: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """M1: ``java @file`` takes its options (a class path among them) from a file upgrader does not read."""
    args = scripts / "java.args"
    args.write_text("-cp /x Main\n")
    refused_at_plan(root_box, capsys, f"/usr/bin/java @{args}", f"/usr/bin/java {CODE} (options read from a file "
                    f"(@{args}))")


def test_5_ordinary_commands_behind_other_programs_still_commit(
        root_box: Sandbox, scripts: Path, marker_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What works keeps working: a root-alone wrapper run by ``timeout 60 /bin/sh -c --``, ``nice -n 1 cat`` of it:
    plan, approve and run commit (exit 0); the wrapper ran as root (setarch, sg and find are no longer root programs:
    attack12r25)."""
    box = root_box
    ok = scripts / "ok"
    ok.mkdir(mode=0o755)
    wrapper = ok / "stop.sh"
    wrapper.write_text(f"id -u >> {marker_dir / 'ran-stop'}\ncd \"$UPGRADER_INSTALL_DIR\" && exec ./bin/stop.sh\n")
    wrapper.chmod(0o755)
    stop = (f"/usr/bin/timeout 60 /bin/sh -c -- '/bin/sh {ok}/stop.sh' && "
            f"/usr/bin/nice -n 1 /bin/cat {ok}/stop.sh > /dev/null")
    commits_with_root_stop(box, capsys, stop, marker_dir / "ran-stop")


def test_6_how_commands_are_read(tmp_path: Path) -> None:
    """family, stdin_script, env clusters, braces, later words: units of the reader."""
    assert processes.family("/usr/bin/perl5.36-x86_64-linux-gnu") == "perl"
    assert processes.family("python3.11") == "python" and processes.family("/bin/ksh93") == "ksh"
    assert processes.family("/opt/x/bin/stop.sh") is None and processes.family("x86_64") is None
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    assert processes.inline_code(f"/bin/sh {fifo}") == ("/bin/sh", f"a script read from its standard input ({fifo})")
    assert processes.inline_code("/usr/bin/awk -f /dev/stdin") == ("/usr/bin/awk", "a script read from its "
                                                                   "standard input (/dev/stdin)")
    assert processes.inline_code("/usr/bin/python3 ../../dev/stdin")[1].startswith("a script read from")  # type: ignore
    assert processes.inline_code("/bin/sh /proc/self/root/dev/stdin") is not None
    assert processes.inline_code("/bin/sh -c '. /dev/stdin'") == (".", "a script read from its standard input "
                                                                  "(/dev/stdin)")
    assert processes.inline_code("/bin/sh /proc/self/cwd/bin/stop.sh") is None  # the install's own file
    assert processes.unjudged_word("/usr/bin/logger \"it's done\"") is None  # one line sh would not run: a message
    for cmd in ("/opt/x/bin/ctl.sh restart python3", "/usr/bin/runcon u:r:t perl -e 1", "/usr/bin/newgrp root",
                "/usr/bin/systemd-run --scope /usr/bin/python3 -c 1", "/usr/bin/parallel ::: a", "/usr/bin/csh -c 'x'",
                "/usr/bin/java -jar /x/t.jar", "/usr/bin/jshell"):
        found = processes.unlisted_code(cmd)  # the program itself is not on the list (the ctl.sh a missing file)
        assert found is not None and found[0] == cmd.split()[0], (cmd, found)
    assert processes.unjudged_word("/usr/bin/env -vS'/bin/sh -c /x/*'") == ("/x/*", "a glob")
    assert processes.unjudged_word("/bin/echo 'a b /x/*'") == ("/x/*", "a glob")
    assert processes.unjudged_word("/bin/sh -c '/{a,b}/x'") == ("/{a,b}/x", "a brace expansion")
    assert processes.unjudged_word("/bin/sh -c '/x/{y}/z'") == ("/x/{y}/z", "a brace expansion")
    assert processes.unjudged_word("/bin/sh -c '/x{},y}/z'") == ("/x{},y}/z", "a brace expansion")  # bash: /x} /xy
    install = {"UPGRADER_INSTALL_DIR": "/opt/x"}
    for ok in ("/usr/bin/systemctl restart php8.2-fpm", "/opt/x/bin/stop.sh", "/bin/sh -c '/opt/x/bin/stop.sh'",
               "/bin/kill 1", "/bin/sleep 5", "/usr/bin/timeout 60 /bin/sh /x/s.sh",
               "/bin/echo 'stopping now'"):
        assert processes.inline_code(ok, install) is None and processes.unjudged_word(ok) is None, ok
        assert processes.unlisted_code(ok, install) is None, ok
