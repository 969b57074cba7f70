"""Issue 12 (fix12u, attack12r23 H1, M1): a root command must never run code upgrader does not read.

Root owns the install, so the agent (root) runs the playbook's commands as root, and every path such a command names
outside the install must be root's alone (test_host_paths_20, _22). The attacker is the service account (uid 65534),
which planted a script: only the word right after ``-c`` was read as a script (``sh -c -- 'S'``, ``sh -o errexit -c
'S'``, ``env -S 'S'`` were not); code given as text to another interpreter (``perl -e 'exec("/x/hook.sh")'``, an awk
program, ``echo /x/hook.sh | sh``) and a path inside a word (``ExecStartPre=!/x/hook.sh``, ``'true;/x/hook.sh'``) were
not read at all; and what a program takes from a path it is given was not judged: ``run-parts /x/hooks.d`` ran the
service account's 10-notify, ``python3 /x/tool/main.py`` imported its helper.py. Now every shell operand after the
options of ``-c`` is a script, code upgrader does not read is refused (exit 2, naming the program and why; put it in a
root-owned script), paths inside words are judged, and a directory named (or holding an interpreter's script) must be
root's alone as a whole tree.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from conftest import approve, plan_to
from hoststate import assert_host_untouched, host_state
from test_host_paths import last_result, last_run_id, run_cli
from test_host_paths_15 import FULL, NOBODY, OLD
from test_host_paths_18 import commits_with_root_stop, marker_dir, operator_playbook, root_box  # noqa: F401 - fixtures
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.exit_codes import ExitCode
from upgrader.core.reasons import UNTRANSLATED, translate
from upgrader.hostagent import processes


@pytest.fixture
def scripts() -> Iterator[Path]:
    """A root-only directory (beneath /etc/upgrader, the suite's own tmpfs) for scripts outside the install."""
    d = Path(tempfile.mkdtemp(prefix="hp23-", dir="/etc/upgrader"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        subprocess.run(["rm", "-rf", str(d)], check=True)


def said(text: str) -> str:
    return " ".join(text.split())


def planted(scripts: Path, marker: Path) -> Path:
    """The service account's hook: ``svc/stop.sh`` in a directory it owns, writing the uid it ran as to ``marker``."""
    d = scripts / "svc"
    d.mkdir()
    hook = d / "stop.sh"
    hook.write_text(f"#!/bin/sh\nid -u > {marker}\n")
    hook.chmod(0o755)
    subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(d)], check=True)
    return hook


def refused_at_plan(box: Sandbox, capsys: pytest.CaptureFixture[str], stop: str, *expected: str,
                    start: str = "bin/start.sh", refused: str = "stop") -> str:
    """``plan`` refuses (exit 2) naming the ``refused`` command (``stop`` or ``start``) and ``expected``: no plan, the
    whole host untouched; right before it would run the agent refuses it too. The refusal, on one line."""
    command = stop if refused == "stop" else start
    operator_playbook(box, stop, start)
    was = host_state(box.install_dir)
    capsys.readouterr()
    rc, plan = plan_to(box, FULL)
    out, err = capsys.readouterr()
    s = said(out + err)
    assert rc == ExitCode.BAD_INPUT, out + err
    assert f"{refused}.command ({command}) would run as root, but " in s and "Traceback" not in s, out + err
    for e in expected:
        assert e in s, out + err
    assert not plan.exists()
    assert_host_untouched(was, host_state(box.install_dir))
    assert box.answers() == OLD
    with pytest.raises(processes.AgentError, match="was not run: it would run as root"):
        processes.run_shell(command, str(box.install_dir), 10)
    return s


#: H1 a: (stop command, refused word or None): the script of a shell run with -c after other options, env -S's
#: command; the hook quoted inside it, or globbed (a word the shell expands only when it runs the script)
SCRIPTS = [("/bin/sh -c -- '\"{h}\"'", None), ("/bin/sh -c -e '\"{h}\"'", None), ("/bin/bash -c -x '\"{h}\"'", None),
           ("/bin/bash -ec -- '\"{h}\"'", None), ("/bin/sh -o errexit -c '\"{h}\"'", None),
           ("/usr/bin/env -S'\"{h}\"'", None), ("/usr/bin/env --split-string='\"{h}\"'", None),
           ("/bin/sh -c -- '{g}'", "{g}"), ("/bin/sh -o errexit -c '{g}'", "{g}"), ("/bin/bash -ec -- '{g}'", "{g}"),
           ("/usr/bin/su root -c -- '{g}'", "{g}"), ("/usr/bin/flock /run/x.lock -c '{g}'", "{g}")]


@pytest.mark.parametrize("form, word", SCRIPTS)
def test_1_every_operand_of_a_shell_run_with_c_is_read_as_a_script(
        root_box: Sandbox, scripts: Path, marker_dir: Path, capsys: pytest.CaptureFixture[str], form: str,
        word: str | None) -> None:
    """H1 a: the service account's hook reached through ``sh -c -- 'S'`` and the like: ``plan`` refuses (exit 2)
    naming the hook and its owner, or the glob that would find it; the hook never ran."""
    marker = marker_dir / "hook-ran"
    hook = planted(scripts, marker)
    glob = str(hook).replace("/svc/", "/sv[c]/")
    stop = form.format(h=hook, g=glob)
    refused_at_plan(root_box, capsys, stop,
                    f"but {hook}" if word is None and form.startswith("/usr/bin/env -S") else  # as -S"PATH" reads
                    f"but {hook}, named in it, is not root's alone: {hook} is owned by nobody (uid {NOBODY})"
                    if word is None else f"but the word {word.format(g=glob)} in it cannot be judged as written "
                                         "(a glob)")
    assert not marker.exists(), "root ran the service account's hook"


#: H1 b: (stop command, the program named, why): code given as text, or read from standard input
INLINE = [("/usr/bin/perl -e 'exec(\"{h}\")'", "/usr/bin/perl", "code given as text (-e)"),
          ("/usr/bin/awk 'BEGIN{{system(\"{h}\")}}'", "/usr/bin/awk", "an awk program given as text"),
          ("/usr/bin/python3 -c 'import os; os.system(\"{h}\")'", "/usr/bin/python3", "code given as text (-c)"),
          ("/usr/bin/env /usr/bin/perl -E 'system(\"{h}\")'", "/usr/bin/perl", "code given as text (-E)"),
          ("/usr/bin/ssh -o ProxyCommand={h} localhost", "/usr/bin/ssh", "an ssh option that runs a command"),
          ("/usr/bin/ssh localhost {h}", "/usr/bin/ssh", "a remote command for ssh"),
          ("/bin/echo {h} | /bin/sh", "/bin/sh", "a shell reading its standard input"),
          ("/bin/sh < {h}", "/bin/sh", "a shell reading its standard input"),
          ("/bin/cat {h} | /usr/bin/timeout 60 /bin/bash -s", "/bin/bash", "a shell reading its standard input"),
          ("/bin/cat {h} | /usr/bin/python3", "/usr/bin/python3", "a script read from its standard input")]


@pytest.mark.parametrize("form, program, why", INLINE)
def test_2_code_upgrader_does_not_read_is_refused_at_plan(
        root_box: Sandbox, scripts: Path, marker_dir: Path, capsys: pytest.CaptureFixture[str], form: str,
        program: str, why: str) -> None:
    """H1 b: the hook run from code given as text to an interpreter (directly or through env/timeout), or from what a
    shell reads on its standard input: ``plan`` refuses (exit 2) naming the program and why, and what to do (en and
    zh); the hook never ran. Root's own hook in code given as text is refused as well: upgrader does not read it."""
    marker = marker_dir / "hook-ran"
    hook = planted(scripts, marker)
    subprocess.run(["chown", "-R", "root:root", str(hook.parent)], check=True)  # even root's: the code is unread
    stop = form.format(h=hook)
    s = refused_at_plan(root_box, capsys, stop, f"but {program} in it runs code upgrader does not read ({why}",
                        "put the code in a root-owned script and name that script by its absolute path")
    zh = translate(s[s.index("stop.command ("):s.index("absolute path") + len("absolute path")], "zh")
    assert UNTRANSLATED not in zh and "upgrader 不读取的代码" in zh and "root 所有的脚本" in zh, zh
    assert not marker.exists(), "root ran the hook"


#: H1 c: an absolute path that starts inside a word
INNER = ["/usr/bin/systemd-run --property=ExecStartPre=!{h} /bin/true", "/usr/bin/watch -g 'true;{h}'",
         "/bin/dd if={h} of=/dev/null"]  # xargs is refused whatever it names (test_host_paths_24)


@pytest.mark.parametrize("form", INNER)
def test_3_a_path_inside_a_word_is_judged(
        root_box: Sandbox, scripts: Path, marker_dir: Path, capsys: pytest.CaptureFixture[str], form: str) -> None:
    """H1 c: the hook named inside a word (after ``=!``, ``;``): ``plan`` refuses naming it and its owner."""
    marker = marker_dir / "hook-ran"
    hook = planted(scripts, marker)
    refused_at_plan(root_box, capsys, form.format(h=hook), f"{hook}, named in it, is not root's alone: "
                    f"{hook} is owned by nobody (uid {NOBODY})")
    assert not marker.exists()


def run_refused_after_planting(box: Sandbox, capsys: pytest.CaptureFixture[str], stop: str, plant: Path,
                               marker: Path, named: Path) -> None:
    """Plan and approve pass while everything is root's; then the service account plants ``plant`` (its own file,
    writing ``marker`` when run): ``run`` is refused at its preflight (exit 2) naming ``named`` and the planted file;
    the planted file never ran, the whole host untouched, the old version answering."""
    operator_playbook(box, stop, "bin/start.sh")
    rc, plan = plan_to(box, FULL)
    assert rc == ExitCode.OK, rc
    approval = approve(box, plan)
    plant.write_text(f"#!/bin/sh\nid -u > {marker}\n" if plant.suffix != ".py" else
                     f"import os\nos.system('id -u > {marker}')\n")
    plant.chmod(0o755)
    subprocess.run(["chown", f"{NOBODY}:{NOBODY}", str(plant)], check=True)
    was = host_state(box.install_dir)
    rc, text = run_cli(box, capsys, "run", str(plan), "--approval", str(approval))
    assert rc == ExitCode.BAD_INPUT, text
    s = said(text)
    assert f"stop.command ({stop}) would run as root, but {named}, named in it, is not root's alone: " \
           f"{plant} is owned by nobody (uid {NOBODY})" in s, text
    (host,) = last_result(box)["hosts"]
    assert [p["phase"] for p in host["phases"]] == ["preflight"], host
    assert not marker.exists(), "root ran the service account's file"
    assert_host_untouched(was, host_state(box.install_dir), run_record=last_run_id(box))
    assert box.answers() == OLD


@pytest.mark.parametrize("form", ["cd {d} && ./10-notify; cd - && bin/stop.sh"])  # run-parts: not a root program
def test_4_a_directory_named_with_another_accounts_file_in_it_is_refused(
        root_box: Sandbox, scripts: Path, marker_dir: Path, capsys: pytest.CaptureFixture[str], form: str) -> None:
    """M1: ``run-parts`` of a root-owned hooks directory, or a ``cd`` there; after the approval the service account's
    10-notify appears in it (root's directory, a file of another account: as an untar keeping uids leaves it):
    refused at preflight."""
    hooks = scripts / "hooks.d"
    hooks.mkdir(mode=0o755)
    stop = form.format(d=hooks)
    run_refused_after_planting(root_box, capsys, stop, hooks / "10-notify", marker_dir / "notify-ran", hooks)


def test_5_an_interpreters_script_directory_must_be_roots_alone(
        root_box: Sandbox, scripts: Path, marker_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """M1: ``python3 /x/tool/main.py`` imports helper.py beside it; after the approval the service account's
    helper.py appears there: refused at preflight naming the script and the helper."""
    tool = scripts / "tool"
    tool.mkdir(mode=0o755)
    main = tool / "main.py"
    main.write_text("import os\ntry:\n    import helper  # noqa\nexcept ImportError:\n    pass\n"
                    "os.chdir(os.environ['UPGRADER_INSTALL_DIR'])\nos.execv('bin/stop.sh', ['bin/stop.sh'])\n")
    stop = f"/usr/bin/python3 {main}"
    run_refused_after_planting(root_box, capsys, stop, tool / "helper.py", marker_dir / "helper-ran", main)


def test_5b_a_script_run_by_its_own_path_needs_its_directory_roots_alone(
        root_box: Sandbox, scripts: Path, marker_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """M1: the same tool run by its own path (``#!/usr/bin/python3``): the kernel runs python3 on it, which imports
    helper.py beside it: refused at preflight once the service account's helper.py appears."""
    tool = scripts / "tool"
    tool.mkdir(mode=0o755)
    main = tool / "main.py"
    main.write_text("#!/usr/bin/python3\nimport os\ntry:\n    import helper  # noqa\nexcept ImportError:\n    pass\n"
                    "os.chdir(os.environ['UPGRADER_INSTALL_DIR'])\nos.execv('bin/stop.sh', ['bin/stop.sh'])\n")
    main.chmod(0o755)
    run_refused_after_planting(root_box, capsys, str(main), tool / "helper.py", marker_dir / "helper-ran", main)


def test_6_ordinary_root_commands_still_commit(
        root_box: Sandbox, scripts: Path, marker_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What works keeps working: a root-alone wrapper run through ``sh -c -e``, a shell script file through timeout,
    a listing of the install's logs: plan, approve and run commit (exit 0); the wrapper ran as root."""
    box = root_box
    ok = scripts / "ok"
    ok.mkdir(mode=0o755)
    wrapper = ok / "stop.sh"
    wrapper.write_text(f"id -u > {marker_dir / 'ran-stop'}\ncd \"$UPGRADER_INSTALL_DIR\" && exec ./bin/stop.sh\n")
    wrapper.chmod(0o755)
    stop = f"/bin/sh -c -e '/usr/bin/timeout 60 /bin/sh {wrapper}' && /bin/sh -c '/bin/ls logs > /dev/null 2>&1 || true'"
    commits_with_root_stop(box, capsys, stop, marker_dir / "ran-stop")


def test_7_how_commands_are_read() -> None:
    """read_command: scripts, script files and code upgrader does not read, through wrappers and pipes."""
    unlisted = "a program not on upgrader's list of programs that run only what they are given"
    for cmd, program in (("su root -c 'perl -e 1'", "su"), ("find / -exec awk '{print}' {} +", "find"),
                         ("/usr/bin/watch -n 1 'echo x | sh'", "/usr/bin/watch"),
                         ("flock /run/x perl -c -e 1", "flock"), ("/usr/bin/sed -n 1e/x /y", "/usr/bin/sed")):
        assert processes.unlisted_code(cmd) == (program, unlisted + " (" + processes.os.path.realpath(
            processes.shutil.which(program.rsplit("/", 1)[-1]) or "") + "): sed, gdb, ed, vim, tar and the like can "
            "run code from their words, a file or their standard input"), cmd
    assert processes.unlisted_code("sudo -u x python3 -m foo") == ("sudo", "a program not found on root's PATH (sudo)")
    assert processes.inline_code("sudo -u x nice -n 5 python3 -m foo") == ("python3", "a module found by name (-m)")
    assert processes.inline_code("/bin/sh -c 'echo x | /bin/sh -c \"perl -e 1\"'") == ("perl",
                                                                                     "code given as text (-e)")
    assert processes.unlisted_code("eval 'perl -e 1'") == ("eval", "a shell builtin that runs its words as code, or sets variables or the umask (eval)")
    assert processes.inline_code("/usr/bin/ssh -p 22 host") == ("/usr/bin/ssh", "a shell reading its standard input")
    assert processes.unlisted_code("/usr/bin/python3 -i /x/y.py") == ("/usr/bin/python3", (
        "an option of python (-i): an interpreter may only be given a script file, with no option (-i, -d and the "
        "like read code upgrader does not see)"))
    assert processes.script_files("awk -f /x/a.awk /y") == ["/x/a.awk"]
    assert processes.script_files("timeout 10 /bin/sh -e /x/s.sh > log 2>&1") == ["/x/s.sh"]
    assert processes.script_files("/usr/bin/perl /y/z.pl a") == ["/y/z.pl"]
    assert "/x/h" in [w[0] for w in processes.script_words("sh -o errexit -c '/x/h'")[0][3:]]
    assert "/x/h.sh" in processes.named_paths("/usr/bin/foo 'exec(\"/x/h.sh\")'")
    assert "/y" in processes.named_paths("/usr/bin/foo a,b=x;/y")
    assert processes.named_paths("/usr/bin/sed -e s/a/b/ -e 's|/x|/y|'") == ["/usr/bin/sed", "/x", "/y"]
    with tempfile.TemporaryDirectory() as d:
        for n in range(5):
            Path(d, str(n)).write_text("")
        assert processes.tree_problems(d, 1, most=3) == [f"{d} holds more than 3 entries, more than upgrader looks "
                                                         "through to judge it"]
        assert processes.tree_problems(d, 1, most=5) == []
    install = {"UPGRADER_INSTALL_DIR": "/opt/x"}
    for ok in ("systemctl restart x", "bin/stop.sh", "/bin/sh -c 'cd x && ./y' 2>&1",
               "/bin/sh bin/stop.sh > log", "/usr/bin/perl /x/y.pl",
               "timeout -s KILL 30 nice -n 5 /bin/sh -e -c 'kill 1'"):
        assert processes.inline_code(ok, install) is None and processes.unlisted_code(ok, install) is None, ok
