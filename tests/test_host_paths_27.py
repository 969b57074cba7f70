"""Issue 12 (attack12r27 M1, attack12r28 H1-H3, M1, L1): root runs no code its commands wrote, no system script,
no code a variable makes a program load, and hands nothing to another account while it runs.

Round 27 ran the service account's hook as root through code the approver cannot read: python's ``timeit.py`` and
``pdb3 --comm=!...`` (system scripts that take code in their words), and a command that writes its own script in
octal escapes into the root-owned install and runs it (``printf '\\NNN' > run/x; /bin/sh run/x``). Round 28 built a
PATH with ``printf -v``, emptied it with ``unset PATH``, had bash evaluate ``test -v 'a[$(...)]'``, wrote a script
through ``>&FILE``, a moved directory or ``cp --t`` and ran it, wrote ``lib/json.py`` the service imports, and handed
a directory to another account mid-command (``umask 0``, ``chown nobody``, ``chmod o+w``) to plant a script in it.
Now root commands write only beneath the install's ``logs/`` (and ``/dev/null``) and run nothing from there, run no
script of the system (under /usr, /bin, /sbin, /lib*; not /usr/local), set no variable but the locale's and the time
zone's, use no builtin that sets variables or the umask, no ``test -v``/``printf -v``, no ``$`` or backquote even
quoted, no printf/echo escapes but ``\\n``/``\\t``, cp/mv options read exactly (no ``-r``, which copies links),
no ln, chmod/chown/mkdir that give nothing to another account, and systemctl only on units named without a path.
Each is refused at ``plan`` (exit 2, naming the command and why, en and zh) and, for one command, again right before
it would run.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from test_host_paths_18 import marker_dir, root_box  # noqa: F401 - fixtures
from test_host_paths_23 import planted, refused_at_plan, scripts  # noqa: F401 - fixture
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.reasons import UNTRANSLATED, translate
from upgrader.hostagent import processes


def octal(text: str) -> str:
    """``text`` as printf's octal escapes: what the approver saw in round 27."""
    return "".join("\\%03o" % b for b in text.encode())


#: (stop command, the word named, the reason): {h} the service account's hook, {o} octal of "{h}\n", {t} a text file
ATTACKS = [
    ("/usr/bin/python3 /usr/lib/python3.11/timeit.py -n1 '__import__(\"os\").system(\"{h}\")'",
     "/usr/lib/python3.11/timeit.py", "runs a script of the system"),
    ("/usr/bin/pdb3 '--comm=!__import__(\"os\").system(\"{h}\")' /usr/lib/python3.11/this.py", "/usr/bin/pdb3",
     "runs a script of the system"),
    ("/usr/bin/printf '{o}' > logs/x; /bin/sh logs/x", "/usr/bin/printf", "text written in escapes"),
    ("/bin/echo '{o}' > logs/x; /bin/sh logs/x", "/bin/echo", "text written in escapes"),
    ("/usr/bin/printf %s%s {h1} {h2} > run/x; /bin/sh run/x", "run/x",
     "writes {i}/run/x, in the install outside its logs/"),
    ("/usr/bin/printf %s%s {h1} {h2} > {d}/x; /bin/sh {d}/x", "{d}/x", "writes {d}/x, outside the install's logs/"),
    ("/usr/bin/printf %s%s {h1} {h2} > {s}/hp27.sh; /bin/sh {s}/hp27.sh", "{s}/hp27.sh",
     "writes {s}/hp27.sh, outside the install's logs/"),
    ("/bin/mkdir {s}/w; /bin/cat {t} > {s}/w/x; /bin/mv {s}/w {s}/v; /bin/sh {s}/v/x", "{s}/w/x",
     "writes {s}/w/x, outside the install's logs/"),
    ("/usr/bin/printf %s%s {h1} {h2} > logs/x; /bin/sh logs/x", "logs/x", "runs a file from the install's logs/"),
    ("/usr/bin/printf %s%s {h1} {h2} > logs/x; cd logs && ./x", "./x", "runs a file from the install's logs/"),
    ("/bin/cat {t} > logs/x && /bin/cp logs/x bin/y && bin/y", "bin/y", "writes {i}/bin/y, in the install outside its "
     "logs/"),
    ("/bin/ln -s run d; /bin/cat {t} > d/y; /bin/sh run/y", "/bin/ln", "a program not on upgrader's list"),
    ("LD_PRELOAD=run/x.so /bin/true", "LD_PRELOAD=", "a variable a program may load code by (LD_PRELOAD)"),
    ("PATH=run /bin/sh -c true", "PATH=", "a variable a program may load code by (PATH)"),
    ("/bin/systemctl link {t}", "/bin/systemctl", "a systemctl command upgrader does not read (link)"),
    ("SYSTEMD_EDITOR={h} /bin/systemctl edit x", "SYSTEMD_EDITOR=", "a variable a program may load code by"),
    ("/bin/systemctl -H root@127.0.0.1 stop x", "/bin/systemctl", "a systemctl option upgrader does not read (-H)"),
    ("/bin/systemctl enable {t}", "/bin/systemctl", "a unit named by a path"),
    ("/bin/cat {t} | /usr/bin/tr a b > logs/y", "/usr/bin/tr", "a program not on upgrader's list"),
    # round 28
    ("/bin/bash -c 'printf -v PATH %s {d1} {d2}; cat /etc/hostname'", "printf", "printf -v, which sets a variable"),
    ("export BASH_ENV={h}; /bin/bash -c /bin/true", "export", "a shell builtin that runs its words as code, or sets "
     "variables or the umask (export)"),
    ("unset PATH; cat /etc/hostname", "unset", "sets variables or the umask (unset)"),
    ("/bin/bash -c 'test -v aX'", "test", "a test of a variable (-v, -R), whose name bash evaluates as code"),
    ("/bin/bash -c \"test -v 'a[\\$(/bin/sh {h})]'\"", "the word", "a $ or a backquote"),
    ("/bin/echo x >&logs/y; /bin/sh logs/y", ">&", "shell syntax a root command may not use (>&)"),
    ("/bin/mkdir -p logs/w; /bin/cat {t} > logs/w/x; /bin/mv logs/w v; /bin/sh v/x", "v", "writes {i}/v, in the "
     "install outside its logs/"),
    ("/bin/cat {t} > logs/x; /bin/cp --t bin logs/x; bin/x", "/bin/cp", "an option of cp upgrader does not read "
     "exactly (--t)"),
    ("/bin/cp -r {d} logs/", "/bin/cp", "an option of cp upgrader does not read exactly (-r)"),
    ("/bin/cat {t} > lib/json.py", "lib/json.py", "writes {i}/lib/json.py, in the install outside its logs/"),
    ("umask 0; /bin/mkdir -p logs/w; /bin/sleep 1; /bin/sh logs/w/x", "umask", "(umask)"),
    ("/bin/mkdir -m 777 logs/w", "/bin/mkdir", "an option of mkdir upgrader does not read exactly (-m)"),
    ("/bin/chmod o+w logs", "/bin/chmod", "a mode that lets another account write, or runs as another (o+w)"),
    ("/bin/chmod 1777 logs", "/bin/chmod", "a mode that lets another account write, or runs as another (1777)"),
    ("/bin/chmod u+s bin/start.sh", "/bin/chmod", "a mode that lets another account write, or runs as another"),
    ("/bin/chown nobody logs", "/bin/chown", "an owner other than root (nobody)"),
    # round 29
    ("/bin/cat {t} > /usr/local/sbin/printenv; /bin/chmod 755 /usr/local/sbin/printenv; printenv",
     "/usr/local/sbin/printenv", "writes /usr/local/sbin/printenv, outside the install's logs/"),
    ("/bin/echo 'import os' >> /root/.local/lib/python3.11/site-packages/x.pth", "/root/.local/lib/python3.11/"
     "site-packages/x.pth", "outside the install's logs/"),
    ("/bin/cat {t} > {{ /dev/null; /bin/sh {{ bin/stop.sh", "the word {{", "(a brace)"),
    ("/bin/mkdir {{; cd {{; /bin/cat {t} > ../lib/json.py", "the word {{", "(a brace)"),
    ("/bin/bash -c 'function cat {{ /usr/bin/sed -n 1e{h} {t}; }}; cat'", "the word {{", "(a brace)"),
    ("/bin/cat {t} > logs/y; /bin/sh l[o]gs/y", "the word l[o]gs/y", "(a glob)"),
    ("/usr/bin/nohup /bin/true > /dev/console; /bin/sh nohup.out", "/usr/bin/nohup",
     "a program not on upgrader's list"),
    ("/bin/echo x > /dev/console", "/dev/console", "outside the install's logs/"),
    ("/usr/bin/touch bin/x", "bin/x", "writes {i}/bin/x, in the install outside its logs/"),
    ("/bin/chown root.nogroup logs", "/bin/chown", "an owner other than root (root.nogroup)"),
    # round 30
    ("/bin/cat {t} > logs/5; cd logs; /bin/sh 5 > /dev/null ../bin/stop.sh", "5",
     "runs a file from the install's logs/ ({i}/logs/5)"),
    ("/bin/cat {t} > logs/y; cd l[o]gs; /bin/sh y", "the word l[o]gs", "(a glob)"),
    ("/bin/cat {t} | /usr/bin/tee -- -a > /dev/null; /bin/sh -- -a", "-a", "writes {i}/-a, in the install outside "
     "its logs/"),
    ("/usr/bin/awk -W -f '(getline x < \"logs/y\") && system(x)' /etc/hostname", "/usr/bin/awk",
     "a program that runs code upgrader does not read (awk)"),
    ("/bin/bash -c 'set -k; /bin/bash /bin/true BASH_ENV=logs/y'", "set", "a shell option upgrader does not read (-k)"),
    ("/bin/cat {t} >> {s}/allowed_signers", "{s}/allowed_signers", "writes {s}/allowed_signers, outside the install's "
     "logs/"),
    # round 31
    ("/bin/cat {t} > logs/10; cd logs; /bin/sh 10>/dev/null ../bin/stop.sh", "10", "runs a file from the install's "
     "logs/ ({i}/logs/10)"),
    ("/bin/cat {t} > logs/5; cd logs; /bin/sh '5'>/dev/null ../bin/stop.sh", "5", "runs a file from the install's "
     "logs/ ({i}/logs/5)"),
    ("/bin/cat {t} > logs/y; cd -P l[o]gs; /bin/sh y", "the word l[o]gs", "(a glob)"),
    ("cd logs; /bin/cp * ../bin/stop.sh logs/zz", "the word *", "(a glob)"),
    ("/bin/bash -c 'cd logs; set *'", "the word *", "(a glob)"),
    # round 32
    ("/bin/rm -f {s}/approvals-used.jsonl; false", "{s}/approvals-used.jsonl", "writes {s}/approvals-used.jsonl, "
     "outside the install's logs/"),
    ("/bin/chmod 644 {s}/engineer", "{s}/engineer", "writes {s}/engineer, outside the install's logs/"),
    ("/bin/rmdir {s}/d", "{s}/d", "outside the install's logs/"),
]


@pytest.mark.parametrize("form, word, why", ATTACKS)
def test_1_code_the_approver_cannot_read_is_refused_at_plan(
        root_box: Sandbox, scripts: Path, marker_dir: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        form: str, word: str, why: str) -> None:
    """The attacker's commands: ``plan`` refuses (exit 2) naming the word and why, in English and in Chinese;
    nothing planned, the whole host untouched (refused_at_plan: lock, packages, product files, the service's pid),
    the hook never ran and nothing was written into the install."""
    marker = marker_dir / "hook-ran"
    hook = planted(scripts, marker)
    subprocess.run(["chown", "-R", "root:root", str(hook.parent)], check=True)  # even root's: what runs it is unread
    text = scripts / "data.txt"
    text.write_text(f"{hook}\n")
    half = len(str(hook)) // 2
    stop = form.format(h=hook, o=octal(f"{hook}\n"), t=text, h1=str(hook)[:half], h2=str(hook)[half:], d=hook.parent,
                       d1=str(hook.parent)[:half], d2=str(hook.parent)[half:], s=tmp_path)
    s = refused_at_plan(root_box, capsys, stop, f"but {word.format(d=hook.parent, s=tmp_path)} ",
                        why.format(i=root_box.install_dir, d=hook.parent, s=tmp_path))
    start = s.index("stop.command (")
    zh = translate(s[start:s.index(" -> nothing was changed", start)], "zh")
    assert UNTRANSLATED not in zh and "root" in zh, zh
    assert not marker.exists(), "root ran the hook"
    for written in ("run/x", "logs/x", "logs/y", "logs/w", "d", "v", "bin/x", "bin/y", "lib/json.py", "{"):
        assert not (root_box.install_dir / written).exists(), written
    assert sorted(tmp_path.iterdir()) == []
    for written in ("/usr/local/sbin/printenv", "/root/.local"):
        assert not Path(written).exists(), written
    assert sorted(p.name for p in hook.parent.iterdir()) == ["stop.sh"]


def test_2_a_file_one_hook_writes_is_not_run_by_another(
        root_box: Sandbox, scripts: Path, marker_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The write and the run in two commands of one playbook (stop writes the script into logs/, start runs it):
    ``plan`` refuses naming the start command and the file; the whole host untouched, the hook never ran."""
    marker = marker_dir / "hook-ran"
    hook = planted(scripts, marker)
    half = len(str(hook)) // 2
    refused_at_plan(root_box, capsys, f"/usr/bin/printf %s%s {str(hook)[:half]} {str(hook)[half:]} > logs/x",
                    "but logs/x in it runs a file from the install's logs/ "
                    f"({root_box.install_dir}/logs/x), where root commands write", start="/bin/sh logs/x",
                    refused="start")
    assert not marker.exists()


def test_3_what_root_commands_may_still_do() -> None:
    """The rules read: logs written under logs/, ``\\n`` in printf, the locale set, systemctl on
    units by name pass; the refusals name the word."""
    install = "/opt/x"
    for ok in ("bin/shutdown.sh >> logs/upgrade.log 2>&1", "printf '%s\\n' stopping >> logs/upgrade.log",
               "LANG=C LC_ALL=C.UTF-8 /usr/bin/systemctl --no-block restart tomcat10",
               "systemctl -q is-active tomcat10", "systemctl kill -s TERM --kill-whom=main tomcat10",
               "echo 'a\\\\b' > /dev/null", "/bin/echo 'stopping (now); really' >> logs/x.log"):
        assert processes.ran_written_problem(install, [ok]) is None, ok
        assert processes.unlisted_code(ok, {"UPGRADER_INSTALL_DIR": install}) is None, ok
    assert processes.ran_written_problem(install, ["bin/start.sh", "echo x > bin/a.sh"])[0] == "bin/a.sh"
    assert processes.system_script("/usr/lib/python3.11/timeit.py")
    assert not processes.system_script("/bin/sh")  # an ELF program


def test_4_the_agent_refuses_them_right_before_they_run(tmp_path: Path) -> None:
    """A command that reached the agent without the plan's check is not run (root_workdir): the marker is absent."""
    marker = tmp_path / "ran"
    (tmp_path / "run").mkdir()
    for command in (f"/usr/bin/printf %s /usr/bin/touch' '{marker} > run/x; /bin/sh run/x",
                    f"LD_PRELOAD=/nonexistent.so /usr/bin/touch {marker}",
                    f"/usr/bin/python3 /usr/lib/python3.11/timeit.py -n1 'open(\"{marker}\", \"w\")'"):
        with pytest.raises(processes.AgentError, match="was not run: it would run as root"):
            processes.run_shell(command, str(tmp_path), 10)
        assert not marker.exists(), command


def test_5_root_commands_make_what_only_root_changes(tmp_path: Path) -> None:
    """A root command runs with umask 022 whatever the agent's own is: what it makes is root's alone."""
    script = tmp_path / "mask.sh"
    script.write_text("#!/bin/sh\numask\n")
    was = os.umask(0)
    try:
        result = processes.run_shell(f"/bin/sh {script}", str(tmp_path), 10)
    finally:
        os.umask(was)
    assert result["exit"] == 0 and result["stdout"].strip() == "0022", result
