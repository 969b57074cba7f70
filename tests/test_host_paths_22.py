"""Issue 12 (fix12s, attack12r22 H1, M1, M3): a root command is read as the shell reads it, and runs with root's PATH.

Root owns the install, so the agent (root) runs the playbook's commands as root, and every absolute path such a command
names outside the install must be root's alone (fix12x, test_host_paths_20). The words were cut at blanks and quotes:
``"/x/vendor tools/stop.sh"`` was judged as ``/x/vendor``, ``/bin/sh -c "/"x/svc/stop.sh`` as ``/bin/sh`` and ``/``;
a glob ``/x/*/stop.sh`` as ``/x/`` and ``~svc/stop.sh`` not at all: root ran another account's script. Now the words
are split as the POSIX shell splits them (quotes joined, ``sh -c`` scripts too), and a word the shell would expand is
refused (exit 2, naming the command and the word). The agent's PATH no longer reaches root commands: a directory of
another account first on it had root run that account's ``python3`` (the sample's bin/start.sh). The service account
is uid 65534.
"""

from __future__ import annotations

import os
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
    d = Path(tempfile.mkdtemp(prefix="hp22-", dir="/etc/upgrader"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        subprocess.run(["rm", "-rf", str(d)], check=True)


def stop_script(where: Path, marker: Path) -> Path:
    """A stop wrapper in ``where`` (made root's 0755): writes the uid it ran as to ``marker``, then stops the sample."""
    where.mkdir(parents=True, exist_ok=True)
    where.chmod(0o755)
    f = where / "stop.sh"
    f.write_text(f"id -u > {marker}\ncd \"$UPGRADER_INSTALL_DIR\" && exec ./bin/stop.sh\n")
    f.chmod(0o755)
    return f


def said(text: str) -> str:
    return " ".join(text.split())


def give_away(path: Path, marker: Path) -> None:
    """The service account gets ``path`` (a directory) and adds a line to the stop wrapper in it."""
    subprocess.run(["chown", f"{NOBODY}:{NOBODY}", str(path)], check=True)
    subprocess.run(["sed", "-i", f"1i id -u > {marker}", str(path / "stop.sh")], check=True)


#: (stop command, the directory the service account gets): a quoted path with a blank, a quote inside a word
QUOTED = [('"{d}/vendor tools/stop.sh"', "vendor tools"),
          ('/bin/sh -c "/"{r}/svc/stop.sh', "svc"),
          ("{d}/s'v'c/stop.sh", "svc")]


@pytest.mark.parametrize("form, owned", QUOTED)
def test_1_a_quoted_path_is_judged_whole_at_plan_and_before_stop(
        root_box: Sandbox, scripts: Path, marker_dir: Path, capsys: pytest.CaptureFixture[str], form: str,
        owned: str) -> None:
    """H1: the stop command names its wrapper through quotes. Root's: plan and approve pass. Then the service account
    gets the wrapper's directory and adds a line: ``run`` is refused at its preflight (exit 2) naming the whole path
    and its owner; the line never ran, the whole host untouched. ``plan`` now refuses the same (exit 2)."""
    box = root_box
    stop = form.format(d=scripts, r=str(scripts).lstrip("/"))
    wrapper = stop_script(scripts / owned, marker_dir / "ran-stop")
    operator_playbook(box, stop, "bin/start.sh")
    rc, plan = plan_to(box, FULL)
    assert rc == ExitCode.OK, rc
    approval = approve(box, plan)
    marker = marker_dir / "added-line-ran"
    give_away(scripts / owned, marker)
    was = host_state(box.install_dir)
    rc, text = run_cli(box, capsys, "run", str(plan), "--approval", str(approval))
    assert rc == ExitCode.BAD_INPUT, text
    s = said(text)
    assert f"stop.command ({stop}) would run as root, but {wrapper}, named in it, is not root's alone: " \
           f"{scripts / owned} is owned by nobody (uid {NOBODY})" in s, text
    (host,) = last_result(box)["hosts"]
    assert [p["phase"] for p in host["phases"]] == ["preflight"], host
    assert not marker.exists() and not (marker_dir / "ran-stop").exists(), "root ran the service account's line"
    assert_host_untouched(was, host_state(box.install_dir), run_record=last_run_id(box))
    assert box.answers() == OLD
    capsys.readouterr()
    rc, again = plan_to(box, FULL)
    out, err = capsys.readouterr()
    assert rc == ExitCode.BAD_INPUT and not again.exists(), out + err
    assert f"but {wrapper}, named in it, is not root's alone" in said(out + err), out + err


#: (stop command, the word refused, why): what the shell expands is refused whoever owns what it would match
EXPANDED = [("/bin/sh -c '{d}/*/stop.sh'", "{d}/*/stop.sh", "a glob"),
            ("{d}/sv?/stop.sh", "{d}/sv?/stop.sh", "a glob"),
            ("~nobody/stop.sh", "~nobody/stop.sh", "a ~ (home directory)"),
            ("/bin/sh -c \"$HOME/stop.sh\"", "$HOME/stop.sh", "a $ expansion"),
            ("/bin/sh {d}/svc/stop.sh 'unended", "'unended", "a quote or escape in it does not end")]


@pytest.mark.parametrize("form, word, why", EXPANDED)
def test_2_a_word_the_shell_expands_is_refused_at_plan(
        root_box: Sandbox, scripts: Path, marker_dir: Path, capsys: pytest.CaptureFixture[str], form: str,
        word: str, why: str) -> None:
    """M1: a glob, ``~user``, ``$VAR`` or an unended quote in a root command: ``plan`` refuses (exit 2) naming the
    command, the word and what to do (en and zh); no plan written, the whole host untouched; right before it would run
    the agent refuses it too (it never runs)."""
    box = root_box
    stop_script(scripts / "svc", marker_dir / "ran-stop")
    subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(scripts / "svc")], check=True)
    stop = form.format(d=scripts)
    operator_playbook(box, stop, "bin/start.sh")
    was = host_state(box.install_dir)
    capsys.readouterr()
    rc, plan = plan_to(box, FULL)
    out, err = capsys.readouterr()
    assert rc == ExitCode.BAD_INPUT, out + err
    s = said(out + err)
    line = f"stop.command ({stop}) would run as root, but the word {word.format(d=scripts)} in it cannot be judged " \
           f"as written ({why}"
    assert line in s, out + err
    assert "nothing was stopped: write it as a plain absolute path" in s and "Traceback" not in s, out + err
    zh = translate(s[s.index("stop.command ("):s.index("plain absolute path") + len("plain absolute path")], "zh")
    assert UNTRANSLATED not in zh and "无法按字面判断" in zh and "请把它写成普通的绝对路径" in zh, zh
    assert not plan.exists()
    assert_host_untouched(was, host_state(box.install_dir))
    assert box.answers() == OLD
    with pytest.raises(processes.AgentError, match="cannot be judged as written"):
        processes.run_shell(stop, str(box.install_dir), 10)
    assert not (marker_dir / "ran-stop").exists()


@pytest.fixture
def planted() -> Iterator[Path]:
    """A directory the service account owns (a tool directory of another account on the agent's PATH)."""
    d = Path(tempfile.mkdtemp(prefix="upgrader-hp22-path-"))
    subprocess.run(["chown", f"{NOBODY}:{NOBODY}", str(d)], check=True)
    try:
        yield d
    finally:
        subprocess.run(["rm", "-rf", str(d)], check=True)


def test_3_another_accounts_directory_on_path_picks_no_program_of_a_root_command(
        root_box: Sandbox, marker_dir: Path, planted: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """M3: the service account's ``python3`` first on the agent's PATH (and its JAVA_HOME): the shipped playbook's
    bin/start.sh, run as root, runs root's own python3; the run commits and the planted one never ran."""
    box = root_box
    marker = marker_dir / "planted-ran"
    fake = planted / "python3"
    fake.write_text(f"#!/bin/sh\nid -u > {marker}\nexec /usr/bin/python3 \"$@\"\n")
    fake.chmod(0o755)
    subprocess.run(["chown", f"{NOBODY}:{NOBODY}", str(fake)], check=True)
    rc, plan = plan_to(box, FULL)
    assert rc == ExitCode.OK, rc
    approval = approve(box, plan)
    monkeypatch.setenv("PATH", f"{planted}:{os.environ['PATH']}")
    monkeypatch.setenv("JAVA_HOME", str(planted))
    rc, text = run_cli(box, capsys, "run", str(plan), "--approval", str(approval))
    assert rc == ExitCode.OK, text
    assert not marker.exists(), "root ran the service account's python3"
    assert box.answers() == FULL
    res = processes.run_shell("/usr/bin/printenv", str(box.install_dir), 10)
    env = dict(line.split("=", 1) for line in res["stdout"].splitlines() if "=" in line)
    assert res["exit"] == 0 and str(planted) not in res["stdout"], res
    assert "JAVA_HOME" not in env and "/usr/bin" in env["PATH"].split(":"), res


def test_4_ordinary_root_owned_commands_with_quotes_still_commit(
        root_box: Sandbox, scripts: Path, marker_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The quoted path with a blank, root's alone, and a ``sh -c`` script in the install: plan, approve and run commit
    (exit 0); the wrapper ran as root."""
    box = root_box
    stop_script(scripts / "vendor tools", marker_dir / "ran-stop")
    stop = f"\"{scripts}/vendor tools/stop.sh\" && /bin/sh -c '/bin/ls logs > /dev/null 2>&1 || true'"
    commits_with_root_stop(box, capsys, stop, marker_dir / "ran-stop")


def test_5_words_are_split_as_the_shell_splits_them() -> None:
    """The lexer: quotes joined, sh -c scripts recursed, what is expanded flagged; plain text passes."""
    assert processes.named_paths('"/a b/c.sh" x') == ["/a b/c.sh", "/a"]
    assert processes.named_paths('/bin/sh -c "/"srv/x/hook.sh') == ["/bin/sh", "/srv/x/hook.sh"]
    assert processes.named_paths("/srv/s\"v\"c/x") == ["/srv/svc/x"]
    assert processes.unjudged_word("/bin/sh -c \"/bin/sh -c '/a/*'\"") == ("/a/*", "a glob")
    assert processes.unjudged_word("kill $(cat run/server.pid)") == ("$", "a $ expansion")
    assert processes.unjudged_word("cat <(ls /x)") == ("<(", "a process substitution")
    assert processes.unjudged_word("/bin/echo /x/{a,b}") == ("/x/{a,b}", "a brace expansion")
    assert processes.unjudged_word("rm -f ../*/x") == ("../*/x", "a glob")
    assert processes.unjudged_word("rm -f logs/.*/x") == ("logs/.*/x", "a glob")
    known = {"UPGRADER_HOST": "app-02", "UPGRADER_INSTALL_DIR": "/opt/app"}
    assert processes.unjudged_word('test "$UPGRADER_HOST" != app-02', known) is None
    assert processes.named_paths("/bin/sh -c 'cd ${UPGRADER_INSTALL_DIR}/bin'", known) == ["/bin/sh", "/opt/app/bin"]
    assert processes.unjudged_word("/x/$UPGRADER_HOST", {"UPGRADER_HOST": "a b"}) == ("/x/a b", "a $ expansion")
    assert processes.unjudged_word("{ bin/stop.sh; }") == ("{", "a brace")  # groups: not a root command's grammar
    assert processes.unjudged_word("rm -f logs/*.log") == ("logs/*.log", "a glob")  # cd logs; cp * x: cp -l
    for ok in ("bin/stop.sh", "/usr/bin/systemctl stop tomcat10",
               "/usr/bin/logger \"it's done\" # a comment with * and $X", "/bin/echo 'a*b'"):
        assert processes.unjudged_word(ok) is None, ok
