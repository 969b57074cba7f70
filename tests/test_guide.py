"""``upgrader guide`` driven the way a person uses it: the real program in a terminal (pexpect), answering
its questions and reading the screen, against the real sample middleware running in a sandbox."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pexpect
import pytest

from conftest import approve, fault_env, plan_to, product_digest, run_with_cancel, upgrader
from hoststate import HostState, assert_host_untouched, assert_released, host_state
from upgrader.cli.commands.demo import Sandbox
from upgrader.cli.commands.guide import CANCELLED_EXIT
from upgrader.cli.guide_messages import MESSAGES, RULES, Messages
from upgrader.core.language import resolve_lang
from upgrader.core.journal import read_journal

# the guide finds installs without an inventory: their contract date is in the operator's policy
pytestmark = pytest.mark.usefixtures("guide_contract")

UPGRADER = str(Path(sys.executable).with_name("upgrader"))
TIMEOUT = 60

# what each language shows at the questions and the ends (substrings of the message catalog)
SCREEN = {
    "en": {"backup": "Have you backed up your business data?", "access": "let your engineer log in",
           "stop": "Stop sample-middleware now", "done": "Upgrade done", "cancelled": "Nothing on this host was changed",
           "cancelled_run": "nothing on this host was changed", "rolled_back": "Cancelled and rolled back",
           "stopped": "✔ stop the service", "backed_up": "✔ backup", "wait": "Please wait: the run is being cancelled",
           "refused": "The version policy REFUSES", "levels": "maintenance levels only (NOT met)",
           "interfaces": "no interface changes (NOT met)", "revoke": "Close the engineer's access",
           "revoked": "Access closed", "granted": "Access granted", "key": "The engineer's public key file",
           "hours": "For how many hours", "from": "Only from these addresses"},
    "zh": {"backup": "您已经备份好业务数据了吗", "access": "需要让工程师在几个小时内远程登录本机协助吗",
           "stop": "现在停止 sample-middleware", "done": "升级完成", "cancelled": "本机没有任何改动",
           "cancelled_run": "本机没有任何改动", "rolled_back": "已取消并回滚", "stopped": "✔ 停止服务",
           "backed_up": "✔ 备份", "wait": "请稍候：正在取消", "refused": "版本策略不允许",
           "levels": "只变化维护级别 (不满足)", "interfaces": "不改变接口 (不满足)", "revoke": "现在关闭工程师的访问授权",
           "revoked": "已关闭访问", "granted": "已授权", "key": "工程师的公钥文件", "hours": "开放几个小时",
           "from": "只允许来自这些地址"},
}


# ---------------------------------------------------------------- helpers


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


class Term:
    """The real program in a pseudo-terminal; ``expect`` reads the screen without its colour codes."""

    def __init__(self, child: pexpect.spawn) -> None:
        self.child = child
        self.pending = ""     # output not yet matched
        self.transcript = ""  # everything shown, without colour codes

    def _read(self, timeout: float) -> bool:
        try:
            chunk = self.child.read_nonblocking(65536, timeout=timeout)
        except pexpect.TIMEOUT:
            return True
        except pexpect.EOF:
            return False
        self.pending += chunk
        return True

    def expect(self, text: str, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            clean = ANSI.sub("", self.pending)
            i = clean.find(text)
            if i >= 0:
                self.transcript += clean[:i + len(text)]
                self.pending = clean[i + len(text):]
                return
            if time.monotonic() > deadline or not self._read(1.0):
                raise AssertionError(f"{text!r} never appeared on the screen; it shows:\n{clean[-3000:]}")

    def sendline(self, text: str) -> None:
        self.child.sendline(text)

    def ctrl_c(self) -> None:
        self.child.sendintr()

    def finish(self, timeout: float = 180) -> int:
        """Read to the end; the exit status."""
        deadline = time.monotonic() + timeout
        while self._read(1.0):
            if time.monotonic() > deadline:
                raise AssertionError("the program did not end; it shows:\n" + ANSI.sub("", self.pending)[-3000:])
        self.transcript += ANSI.sub("", self.pending)
        self.pending = ""
        self.child.close()
        assert self.child.exitstatus is not None, f"killed by signal {self.child.signalstatus}"
        return int(self.child.exitstatus)


def whole_host(box: Sandbox) -> HostState:
    """The whole host (tests/hoststate.py): product files, the service (pid, start time, version), the agent's state
    dir (lock, staged packages, runs, ledger)."""
    return host_state(box.install_dir, answers=box.answers)


def guide(box: Sandbox, *argv: str, lang: str | None = "en", env: dict[str, str] | None = None) -> Term:
    """The real `upgrader guide` in a terminal of 50x220; --lang given unless lang is None (the locale decides)."""
    full_env = {**os.environ, "LANG": "C.UTF-8", "TERM": "xterm-256color", "PYTHON": sys.executable, **(env or {})}
    full_env.pop("LC_ALL", None)
    full_env.pop("LC_MESSAGES", None)
    full_env.pop("COLUMNS", None)
    args = ["--home", str(box.root), "guide", *argv] + (["--lang", lang] if lang else [])
    return Term(pexpect.spawn(UPGRADER, args, env=full_env, encoding="utf-8", timeout=TIMEOUT, dimensions=(50, 220)))


def approved_plan(box: Sandbox, version: str, *extra: str) -> tuple[Path, Path]:
    rc, plan = plan_to(box, version, *extra)
    assert rc == 0
    return plan, approve(box, plan)


def answer_until_stop(child: Term, lang: str, access: str = "n") -> None:
    s = SCREEN[lang]
    child.expect(s["backup"])
    child.sendline("y")
    child.expect(s["access"])
    child.sendline(access)
    child.expect(s["stop"])


def hang_up(child: Term, timeout: float = 180) -> int:
    """Close the terminal (the kernel hangs up the session) and wait, with a deadline, for the program's exit
    status; a program still running then is killed and the test fails."""
    proc = child.child.ptyproc
    proc.fileobj.close()
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(proc.pid, os.WNOHANG)
        if done:
            proc.terminated = True
            assert os.WIFEXITED(status), f"killed by signal {os.WTERMSIG(status)}"
            return os.WEXITSTATUS(status)
        if time.monotonic() > deadline:
            os.kill(proc.pid, signal.SIGKILL)
            os.waitpid(proc.pid, 0)
            proc.terminated = True
            raise AssertionError(f"the program did not end within {timeout}s of losing its terminal (killed)")
        time.sleep(0.1)


def wait_for(what: str, condition: Any, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout}s")
        time.sleep(0.05)


def grant_access(child: Term, box: Sandbox) -> None:
    """Answer yes to "let your engineer in" and give the engineer's key, 2 hours, from 127.0.0.1."""
    child.expect(SCREEN["en"]["access"])
    child.sendline("y")
    child.expect(SCREEN["en"]["key"])
    child.sendline(str(box.keys / "engineer.pub"))
    child.expect(SCREEN["en"]["hours"])
    child.sendline("2")
    child.expect(SCREEN["en"]["from"])
    child.sendline("127.0.0.1")


def authorized_keys(original: bytes) -> Path:
    ak = Path(os.environ["HOME"]) / ".ssh" / "authorized_keys"
    ak.parent.mkdir(mode=0o700)
    ak.write_bytes(original)
    ak.chmod(0o600)
    return ak


OTHER_KEY = b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBMXSH8ZDBoQhJOSdq5Jm0V3d0tgu6c0wPmFS6mAA2kj someone@else\n"


def runs(box: Sandbox) -> list[Path]:
    d = box.root / "runs"
    return sorted(p for p in d.iterdir() if p.is_dir()) if d.is_dir() else []


def audit_events(box: Sandbox) -> list[dict[str, Any]]:
    path = box.root / "audit" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def pid(box: Sandbox) -> str:
    return (box.install_dir / "run" / "server.pid").read_text().strip()


def state_dir(box: Sandbox) -> Path:
    return box.install_dir.parent / f".upgrader-{box.install_dir.name}"


# ---------------------------------------------------------------- the whole way


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_guide_makes_the_plan_then_upgrades_with_the_engineers_approval_of_it(sandbox: Sandbox, lang: str) -> None:
    """Without an approval the guide writes the plan and stops (exit 4); with the engineer's approval of that plan
    (the PRODUCT.md form: --package and --approval) it upgrades, recorded like `upgrader run`."""
    box = sandbox
    pkg = str(box.catalog / "sample-middleware-7.0.4.2.tar.gz")
    child = guide(box, "--inventory", str(box.inventory), "--package", pkg, lang=lang)
    assert child.finish() == 4
    (plan,) = (box.root / "guide" / "plans").glob("*.json")
    assert plan.name[:-5] in child.transcript.replace("\r\n", "")
    assert box.answers() == "7.0.4.1" and not runs(box)
    approval = approve(box, plan)

    child = guide(box, "--inventory", str(box.inventory), "--package", pkg, "--approval", str(approval), lang=lang)
    answer_until_stop(child, lang)
    child.sendline("y")
    child.expect(SCREEN[lang]["done"])
    assert child.finish() == 0
    assert box.wait_version("7.0.4.2", 10) == "7.0.4.2"
    (run,) = runs(box)
    result = json.loads((run / "result.json").read_text())
    assert result["hosts"][0]["outcome"] == "committed" and result["checkpoint"]
    kinds = [e["event"] for e in audit_events(box) if e.get("run") == run.name]
    assert {"run_started", "approval_accepted", "guide_run", "run_finished"} <= set(kinds)
    (confirmed,) = [e for e in audit_events(box) if e["event"] == "guide_backup_confirmation"]
    assert confirmed["outcome"] == "confirmed" and confirmed["data"]["answer"] == "yes"
    assert confirmed["data"]["answered_at"] and confirmed["data"]["scripted"] is False
    (guide_run,) = [e for e in audit_events(box) if e["event"] == "guide_run" and e.get("run") == run.name]
    assert guide_run["data"]["backup_confirmed"]["answer"] == "yes"
    assert upgrader(box, "audit", "verify") == 0


def test_guide_speaks_chinese_when_the_locale_is_chinese(sandbox: Sandbox) -> None:
    """LANG=zh_CN.UTF-8 and no --lang: every screen is in Chinese; the plan and approval the engineer sent are used."""
    box = sandbox
    plan, approval = approved_plan(box, "7.0.4.2")
    child = guide(box, "--plan", str(plan), "--approval", str(approval), lang=None, env={"LANG": "zh_CN.UTF-8"})
    child.expect("第 1/8 步：已安装的产品")
    answer_until_stop(child, "zh")
    child.sendline("是")
    child.expect("升级完成")
    assert child.finish() == 0
    assert box.wait_version("7.0.4.2", 10) == "7.0.4.2"


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("version,rule", [("7.1.0.0", "levels"), ("7.0.4.8", "interfaces")])
def test_refused_upgrade_is_explained_rule_by_rule_and_exits_3(sandbox: Sandbox, lang: str, version: str,
                                                               rule: str) -> None:
    """A minor-level change or a package that changes the management API: the failing rule is on screen in plain
    words, exit 3, nothing touched, no question asked."""
    box = sandbox
    before = whole_host(box)
    child = guide(box, "--inventory", str(box.inventory), "--catalog", str(box.catalog), "--to", version, lang=lang)
    child.expect(SCREEN[lang]["refused"])
    child.expect(SCREEN[lang][rule])
    assert child.finish() == 3
    assert "Traceback" not in child.transcript
    assert_host_untouched(before, whole_host(box))
    assert box.answers() == "7.0.4.1" and not runs(box)


def test_the_guides_own_errors_are_shown_in_chinese_and_logged_in_english(sandbox: Sandbox) -> None:
    """In Chinese, a plan for another directory and a malformed --var are explained in Chinese on the screen;
    the error line (what scripts and logs keep) stays English; exit 2, nothing changed."""
    box = sandbox
    plan, approval = approved_plan(box, "7.0.4.2")
    before = whole_host(box)
    for argv, zh, en in (
            (("--plan", str(plan), "--approval", str(approval), "--install-dir", str(box.root)),
             "这份计划针对的是", f"the plan is for {box.install_dir}, not {box.root}"),
            (("--plan", str(plan), "--var", "port"), "格式应为 名称=值", "expected NAME=VALUE")):
        child = guide(box, *argv, lang="zh")
        child.expect(zh)
        assert child.finish() == 2
        assert "upgrader: error: " in child.transcript and en in child.transcript.replace("\n", "")
        assert "Traceback" not in child.transcript
    assert_host_untouched(before, whole_host(box))
    assert not runs(box) and box.answers() == "7.0.4.1"


def test_markup_in_a_path_is_shown_as_written(sandbox: Sandbox, tmp_path: Path) -> None:
    """A plan kept in a folder named with rich markup ("[/bold]"): the path is shown as it is, no traceback, and
    the guide goes on to its questions."""
    box = sandbox
    plan, approval = approved_plan(box, "7.0.4.2")
    odd = tmp_path / "from [/bold] the [red]engineer"
    odd.mkdir(parents=True)  # "[/bold]" holds a slash: a folder "from [" with "bold] the [red]engineer" in it
    shutil.copy(plan, odd / plan.name)
    child = guide(box, "--plan", str(odd / plan.name), "--approval", str(approval))
    child.expect(f"Using the plan {odd / plan.name}")
    child.expect(SCREEN["en"]["backup"])
    child.ctrl_c()
    child.expect(SCREEN["en"]["cancelled"])
    assert child.finish() == CANCELLED_EXIT
    assert "Traceback" not in child.transcript and "internal error" not in child.transcript


def test_message_fields_are_escaped_but_rendered_messages_and_marks_are_not() -> None:
    """Fields holding rich markup come out literally; a message passed into another keeps its markup."""
    from rich.console import Console

    from upgrader.cli.guide_messages import Markup

    t = Messages("en")
    out = Console(width=200, record=True, file=open(os.devnull, "w"))
    out.print(t("check_line", mark=Markup("[green]✔[/green]"), name="x [/bold] y", reason="[red]not red[/red]"))
    out.print(t("step", n=1, total=8, title=t("step_find")))
    text = out.export_text()
    assert "✔ x [/bold] y: [red]not red[/red]" in text and "[green]" not in text
    assert "Step 1/8: the installed product" in text


def test_bad_input_exits_2_with_the_file_named_and_no_traceback(sandbox: Sandbox, tmp_path: Path) -> None:
    """Nothing to upgrade to, a missing plan file, a malformed --var: exit 2, a clear message, nothing changed."""
    box = sandbox
    before = whole_host(box)
    for argv, words in (((), "--package PKG"), (("--plan", str(tmp_path / "nope.json")), "nope.json"),
                        (("--install-dir", str(box.install_dir), "--catalog", str(box.catalog), "--to", "7.0.4.2",
                          "--var", "port"), "NAME=VALUE")):
        child = guide(box, *argv)
        assert child.finish() == 2
        out = child.transcript
        assert words in out and "Traceback" not in out
    assert_host_untouched(before, whole_host(box))
    assert not runs(box) and box.answers() == "7.0.4.1"


# ---------------------------------------------------------------- Ctrl-C


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_ctrl_c_at_the_stop_question_changes_nothing(sandbox: Sandbox, lang: str) -> None:
    """Ctrl-C at "stop the service now?": exit 130, the install byte-identical, the same old process answering."""
    box = sandbox
    plan, approval = approved_plan(box, "7.0.4.2")
    before, old_pid = whole_host(box), pid(box)
    child = guide(box, "--plan", str(plan), "--approval", str(approval), lang=lang)
    answer_until_stop(child, lang)
    child.ctrl_c()
    child.expect(SCREEN[lang]["cancelled"])
    assert child.finish() == CANCELLED_EXIT
    assert_host_untouched(before, whole_host(box))
    assert box.answers() == "7.0.4.1" and pid(box) == old_pid and not runs(box)
    assert any(e["event"] == "guide_cancelled" for e in audit_events(box))


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_ctrl_c_during_the_run_before_stop_releases_the_host_untouched(sandbox: Sandbox, lang: str) -> None:
    """Ctrl-C after the backup, before stop (held there by the test hook): the host is released (lock and staging
    gone), the service never stopped, exit 130."""
    box = sandbox
    plan, approval = approved_plan(box, "7.0.4.2")
    before, old_pid, whole = product_digest(box.install_dir), pid(box), whole_host(box)
    child = guide(box, "--plan", str(plan), "--approval", str(approval), lang=lang,
                  env=fault_env(pause_at="stop"))
    answer_until_stop(child, lang)
    child.sendline("y")
    child.expect(SCREEN[lang]["backed_up"])
    child.ctrl_c()
    child.expect(SCREEN[lang]["cancelled_run"])
    assert child.finish() == CANCELLED_EXIT
    assert product_digest(box.install_dir) == before and box.answers() == "7.0.4.1" and pid(box) == old_pid
    (run,) = runs(box)
    assert json.loads((run / "result.json").read_text())["hosts"][0]["outcome"] == "unchanged"
    records = list(read_journal(run / "journal.jsonl"))
    assert not any(r.phase == "stop" for r in records)
    assert any(r.phase == "finish" and r.event == "done" and r.data.get("outcome") == "unchanged" for r in records)
    assert not (state_dir(box) / "lock").exists() and not list(state_dir(box).glob("**/staging*"))
    assert_released(whole, whole_host(box))


def test_ctrl_c_as_the_run_starts_ends_the_run_with_its_records(sandbox: Sandbox) -> None:
    """Ctrl-C just after the run was started (its directory and run_started event written; held there by the
    test hook): the run still ends with result.json, run_finished and its checkpoint, the host is released
    unchanged, and the guide's own exit code (130) is recorded beside the run's."""
    box = sandbox
    plan, approval = approved_plan(box, "7.0.4.2")
    before, old_pid = product_digest(box.install_dir), pid(box)
    child = guide(box, "--plan", str(plan), "--approval", str(approval), env=fault_env(pause_at="run_started"))
    answer_until_stop(child, "en")
    child.sendline("y")
    child.expect("If this window closes")
    child.ctrl_c()
    child.expect(SCREEN["en"]["cancelled_run"])
    assert child.finish() == CANCELLED_EXIT
    assert product_digest(box.install_dir) == before and box.answers() == "7.0.4.1" and pid(box) == old_pid
    (run,) = runs(box)
    result = json.loads((run / "result.json").read_text())
    assert result["hosts"][0]["outcome"] in ("unchanged", "not_started") and result["checkpoint"]
    events = [e for e in audit_events(box) if e.get("run") == run.name]
    assert {"run_started", "run_finished", "guide_interrupted"} <= {e["event"] for e in events}
    (interrupted,) = [e for e in events if e["event"] == "guide_interrupted"]
    assert interrupted["data"]["exit_code"] == CANCELLED_EXIT
    assert interrupted["data"]["run_exit_code"] == result["exit_code"] != CANCELLED_EXIT
    assert not (state_dir(box) / "lock").exists()
    assert upgrader(box, "audit", "verify") == 0


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_ctrl_c_after_stop_rolls_back_and_a_second_ctrl_c_does_not_abandon_it(sandbox: Sandbox, lang: str) -> None:
    """Ctrl-C once the service is stopped (held before install by the test hook): the old version is restored and
    answers, the install is byte-identical, exit 1; a second Ctrl-C only asks for patience."""
    box = sandbox
    plan, approval = approved_plan(box, "7.0.4.2")
    before = product_digest(box.install_dir)
    child = guide(box, "--plan", str(plan), "--approval", str(approval), lang=lang,
                  env=fault_env(pause_at="install"))
    answer_until_stop(child, lang)
    child.sendline("y")
    child.expect(SCREEN[lang]["stopped"])
    child.ctrl_c()
    child.expect("Ctrl-C")
    child.ctrl_c()
    child.expect(SCREEN[lang]["wait"])
    child.expect(SCREEN[lang]["rolled_back"])
    assert child.finish() == 1
    assert box.wait_version("7.0.4.1", 10) == "7.0.4.1"
    assert product_digest(box.install_dir) == before
    (run,) = runs(box)
    host = json.loads((run / "result.json").read_text())["hosts"][0]
    assert host["outcome"] == "rolled_back" and host["rollback_cause"] == "cancelled by the operator"


# ---------------------------------------------------------------- a lost terminal


def test_lost_terminal_mid_run_lets_the_run_reach_its_end(sandbox: Sandbox) -> None:
    """The terminal closes (SIGHUP) after stop, while the new version is observed for 8 s: the run goes on with its
    output dropped, commits, records the lost terminal in the audit log; `upgrader resume` has nothing left to do."""
    box = sandbox
    playbooks = box.root / "playbooks"
    playbooks.mkdir()
    text = (Path(__file__).resolve().parent.parent / "playbooks" / "sample-middleware.yaml").read_text()
    (playbooks / "sample-middleware.yaml").write_text(text.replace("window: 2s", "window: 8s"))
    plan, approval = approved_plan(box, "7.0.4.2")
    child = guide(box, "--plan", str(plan), "--approval", str(approval))
    answer_until_stop(child, "en")
    child.sendline("y")
    child.expect("✔ start")
    assert hang_up(child) == 0
    (run,) = runs(box)
    assert json.loads((run / "result.json").read_text())["hosts"][0]["outcome"] == "committed"
    assert box.wait_version("7.0.4.2", 10) == "7.0.4.2"
    lost = [e for e in audit_events(box) if e["event"] == "guide_interrupted"]
    assert [e["data"]["terminal_lost"] for e in lost] == [True]
    assert upgrader(box, "resume", run.name) == 0


# ---------------------------------------------------------------- access for the engineer


def test_access_is_granted_when_asked_and_revoked_at_the_end(sandbox: Sandbox) -> None:
    """Yes to "let your engineer in": one grant line with expiry-time and from= lands in ~/.ssh/authorized_keys;
    at the end (here: the operator declines the stop) the default answer closes it and every other byte stays."""
    box = sandbox
    ak = Path(os.environ["HOME"]) / ".ssh" / "authorized_keys"
    ak.parent.mkdir(mode=0o700)
    original = b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBMXSH8ZDBoQhJOSdq5Jm0V3d0tgu6c0wPmFS6mAA2kj someone@else\n"
    ak.write_bytes(original)
    ak.chmod(0o600)
    plan, approval = approved_plan(box, "7.0.4.2")
    child = guide(box, "--plan", str(plan), "--approval", str(approval))
    child.expect(SCREEN["en"]["backup"])
    child.sendline("y")
    grant_access(child, box)
    child.expect(SCREEN["en"]["granted"])
    granted = ak.read_bytes()
    engineer = (box.keys / "engineer.pub").read_text().split()[1]
    assert granted.startswith(original) and engineer in granted.decode()
    assert b"expiry-time=" in granted and b'from="127.0.0.1"' in granted
    child.expect(SCREEN["en"]["stop"])
    child.sendline("")  # the default: No
    child.expect(SCREEN["en"]["revoke"])
    child.sendline("")  # the default: Yes, close it
    child.expect(SCREEN["en"]["revoked"])
    assert child.finish() == CANCELLED_EXIT
    assert ak.read_bytes() == original
    kinds = [e["event"] for e in audit_events(box)]
    assert "access_granted" in kinds and "access_revoked" in kinds
    assert box.answers() == "7.0.4.1" and not runs(box)


def test_ctrl_c_at_the_close_access_question_closes_it(sandbox: Sandbox) -> None:
    """Ctrl-C when asked whether to close the engineer's access: the safe answer is taken, the grant's line is
    removed and every other byte of authorized_keys stays; the closing is in the audit log."""
    box = sandbox
    ak = authorized_keys(OTHER_KEY)
    plan, approval = approved_plan(box, "7.0.4.2")
    child = guide(box, "--plan", str(plan), "--approval", str(approval))
    child.expect(SCREEN["en"]["backup"])
    child.sendline("y")
    grant_access(child, box)
    child.expect(SCREEN["en"]["granted"])
    assert ak.read_bytes() != OTHER_KEY
    child.expect(SCREEN["en"]["stop"])
    child.sendline("n")
    child.expect(SCREEN["en"]["revoke"])
    child.ctrl_c()
    child.expect(SCREEN["en"]["revoked"])
    assert child.finish() == CANCELLED_EXIT
    assert ak.read_bytes() == OTHER_KEY
    (closed,) = [e for e in audit_events(box) if e["event"] == "guide_access_closed"]
    assert closed["outcome"] == "closed" and "Ctrl-C" in closed["data"]["reason"]
    assert "access_revoked" in [e["event"] for e in audit_events(box)]


def test_lost_terminal_just_after_a_grant_closes_it_and_exits_129(sandbox: Sandbox) -> None:
    """The terminal is lost while the grant is being made (held just after its line was written, by the test
    hook): the grant is kept track of and closed, the closing recorded, nothing else changed; exit 129."""
    box = sandbox
    ak = authorized_keys(OTHER_KEY)
    plan, approval = approved_plan(box, "7.0.4.2")
    engineer = (box.keys / "engineer.pub").read_text().split()[1].encode()
    child = guide(box, "--plan", str(plan), "--approval", str(approval),
                  env=fault_env(pause_at="access_granted"))
    child.expect(SCREEN["en"]["backup"])
    child.sendline("y")
    grant_access(child, box)
    wait_for("the grant's line in authorized_keys", lambda: engineer in ak.read_bytes())
    assert hang_up(child) == 129
    assert ak.read_bytes() == OTHER_KEY
    kinds = [e["event"] for e in audit_events(box)]
    assert "access_granted" in kinds and "access_revoked" in kinds and "guide_cancelled" in kinds
    (closed,) = [e for e in audit_events(box) if e["event"] == "guide_access_closed"]
    assert closed["data"]["reason"] == "the terminal was lost"
    assert box.answers() == "7.0.4.1" and not runs(box)


# ---------------------------------------------------------------- the local agent and the terminal's signals


AGENT_UNDER_CTRL_C = """
import os, signal, sys
from upgrader.fleet.transport.local import LocalTransport
signal.signal(signal.SIGINT, lambda signum, frame: None)  # this controller survives; a handler is not inherited
t = LocalTransport("local")
stream = t.open_stream([sys.executable, t.agent_path(), "--serve"])
os.killpg(os.getpgrp(), signal.SIGINT)  # Ctrl-C in the terminal while the agent is still starting
stream.send_line('{"op": "no-such-op"}')
print(stream.read_line(60))
t.close()
"""


def test_local_agent_survives_a_ctrl_c_in_the_terminal_while_it_starts(tmp_path: Path) -> None:
    """A Ctrl-C sent to the controller's process group right after the local agent was spawned does not kill
    the agent (it has its own session); it answers its first request."""
    import subprocess

    proc = subprocess.run([sys.executable, "-c", AGENT_UNDER_CTRL_C], capture_output=True, text=True, timeout=120,
                          start_new_session=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    reply = json.loads(proc.stdout.strip().splitlines()[-1])
    assert reply["ok"] is False and reply["kind"] == "bad_input"


# ---------------------------------------------------------------- --yes and finding the install


def test_yes_mode_upgrades_without_questions_and_never_opens_access(sandbox: Sandbox) -> None:
    """--yes: the scripted answers are shown, no access is granted, the upgrade runs; exit 0."""
    box = sandbox
    plan, approval = approved_plan(box, "7.0.4.2")
    child = guide(box, "--yes", "--plan", str(plan), "--approval", str(approval))
    child.expect(SCREEN["en"]["access"])
    child.expect("→ no (--yes)")
    child.expect(SCREEN["en"]["done"])
    assert child.finish() == 0
    assert box.wait_version("7.0.4.2", 10) == "7.0.4.2"
    assert not (Path(os.environ["HOME"]) / ".ssh" / "authorized_keys").exists()


def test_yes_mode_finds_the_install_by_its_files_and_without_approval_writes_the_plan(sandbox: Sandbox,
                                                                                       tmp_path: Path) -> None:
    """The install is found by the playbook's files in UPGRADER_SEARCH_PATH (the folder renamed: names are not
    trusted); with no approval the plan for it is written and the guide exits 4 without asking anything. (Found
    without an inventory, the install's maintenance contract date comes from the operator's policy.)"""
    box = sandbox
    child = guide(box, "--yes", "--catalog", str(box.catalog), "--to", "7.0.4.2", "--var", f"port={box.port}",
                  env={"UPGRADER_SEARCH_PATH": f"{tmp_path}/nothing-here/*:{box.root}/hosts/*"})
    child.expect(f"Found sample-middleware in {box.install_dir}")
    assert child.finish() == 4
    (plan,) = (box.root / "guide" / "plans").glob("*.json")
    data = json.loads(plan.read_text())
    assert data["hosts"][0]["install_dir"] == str(box.install_dir) and data["hosts"][0]["current"] == "7.0.4.1"
    assert box.answers() == "7.0.4.1" and not runs(box)


def test_approval_of_another_plan_is_refused_with_exit_4(sandbox: Sandbox) -> None:
    """An approval whose plan the guide does not have (and no --plan): exit 4, told to give --plan; nothing runs."""
    box = sandbox
    _, approval = approved_plan(box, "7.0.4.2")
    before = whole_host(box)
    child = guide(box, "--package", str(box.catalog / "sample-middleware-7.0.4.2.tar.gz"), "--approval",
                  str(approval))
    assert child.finish() == 4
    assert "--plan" in child.transcript and not runs(box)
    assert_host_untouched(before, whole_host(box))


# ---------------------------------------------------------------- the message catalog


def test_every_message_exists_in_both_languages_with_the_same_fields() -> None:
    """Each key has an English and a Chinese text naming the same {fields}; every rule has both names."""
    field = re.compile(r"{(\w+)")
    for key, (en, zh) in MESSAGES.items():
        assert en and zh, key
        assert set(field.findall(en)) == set(field.findall(zh)), key
    for rule, texts in RULES.items():
        assert all(texts), rule


@pytest.mark.parametrize("arg,env,want", [
    (None, {"LANG": "zh_CN.UTF-8"}, "zh"), (None, {"LANG": "en_US.UTF-8"}, "en"), (None, {}, "en"),
    (None, {"LC_ALL": "zh_TW.UTF-8", "LANG": "en_US.UTF-8"}, "zh"), (None, {"LC_MESSAGES": "C", "LANG": "zh_CN"}, "en"),
    ("en", {"LANG": "zh_CN.UTF-8"}, "en"), ("zh", {"LANG": "C"}, "zh"),
])
def test_language_comes_from_lang_else_the_locale(arg: str | None, env: dict[str, str], want: str) -> None:
    """--lang wins; else the first of LC_ALL, LC_MESSAGES, LANG that is set decides (zh* is Chinese)."""
    assert resolve_lang(arg, env) == want


# ---------------------------------------------------------------- the engine's cancel, in process


def test_engine_cancelled_before_stop_releases_the_host_unchanged(sandbox: Sandbox) -> None:
    """Cancelled once the backup is made: the service is never stopped, the outcome is unchanged, the lock is gone."""
    box = sandbox
    before, old_pid, whole = product_digest(box.install_dir), pid(box), whole_host(box)
    host = run_with_cancel(box, "backup")["hosts"][0]
    assert host["outcome"] == "unchanged" and "cancelled by the operator" in host["error"]
    assert [p["phase"] for p in host["phases"]] == ["preflight", "backup"]
    assert product_digest(box.install_dir) == before and pid(box) == old_pid and box.answers() == "7.0.4.1"
    assert not (state_dir(box) / "lock").exists()
    assert_released(whole, whole_host(box))


def test_engine_cancelled_after_stop_rolls_back_to_the_old_version(sandbox: Sandbox) -> None:
    """Cancelled once the service is stopped: rolled back with the cause "cancelled by the operator", the old
    version answers and the install is byte-identical."""
    box = sandbox
    before = product_digest(box.install_dir)
    host = run_with_cancel(box, "stop")["hosts"][0]
    assert host["outcome"] == "rolled_back" and host["rollback_cause"] == "cancelled by the operator"
    assert "install" not in [p["phase"] for p in host["phases"]]
    assert box.wait_version("7.0.4.1", 10) == "7.0.4.1" and product_digest(box.install_dir) == before
