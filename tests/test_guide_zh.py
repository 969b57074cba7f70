"""The customer's guided upgrade in Chinese, as the operator meets it: every command the guide prints is run
exactly as printed (in a shell, in a terminal), the audit key is set up on first use, a rollback asks before
it stops the service, the access answers are checked one by one, no English sentence of the catalogs shows
in the Chinese guide, inspect and access output, and the inspection is a 巡检 form rendered by Chromium."""

from __future__ import annotations

import json
import os
import pwd
import re
import shlex
import socket
import sys
from pathlib import Path

import pexpect
import pytest

from conftest import ARTIFACTS, approve, upgrader
from test_audit_report import Page, chromium
from test_guide import (ANSI, OTHER_KEY, TIMEOUT, Term, answer_until_stop, approved_plan, audit_events,
                        authorized_keys, guide, pid, runs)
from upgrader.cli.command_messages import COMMAND_MESSAGES
from upgrader.cli.commands.demo import Sandbox
from upgrader.cli.guide_messages import MESSAGES, PHASES, RULES
from upgrader.customer.inspect_report import _LABELS

# the guide finds installs without an inventory: their contract date is in the operator's policy
pytestmark = pytest.mark.usefixtures("guide_contract")

BIN = str(Path(sys.executable).parent)


def printed(transcript: str, before: str) -> str:
    """The command the screen shows right after ``before`` (to the end of its line)."""
    flat = transcript.replace("\r\n", "\n")
    i = flat.rindex(before)
    rest = flat[i + len(before):].lstrip(" ")
    return rest.lstrip("\n").split("\n", 1)[0].strip() if rest.startswith("\n") else rest.split("\n", 1)[0].strip()


def shell(command: str, env: dict[str, str] | None = None) -> Term:
    """``command`` exactly as printed, run by a shell in a terminal, with the installed upgrader on PATH."""
    full = {**os.environ, "LANG": "zh_CN.UTF-8", "TERM": "xterm-256color", "PATH": f"{BIN}:{os.environ['PATH']}",
            **(env or {})}
    full.pop("LC_ALL", None)
    full.pop("COLUMNS", None)
    return Term(pexpect.spawn("/bin/sh", ["-c", command], env=full, encoding="utf-8", timeout=TIMEOUT,
                              dimensions=(50, 220)))


def upgrade_in_chinese(box: Sandbox, *extra: str) -> Term:
    plan, approval = approved_plan(box, "7.0.4.2")
    child = guide(box, "--plan", str(plan), "--approval", str(approval), *extra, lang="zh")
    answer_until_stop(child, "zh")
    child.sendline("y")
    child.expect("升级完成")
    assert child.finish() == 0
    return child


# ---------------------------------------------------------------- follow-ups as printed


def test_the_printed_rollback_asks_before_it_stops_the_service_and_runs_as_printed(sandbox: Sandbox) -> None:
    """After an upgrade the guide prints "如需退回：upgrader --home … rollback RUN"; run as printed it says what it
    will do and asks: "n" (the default) changes nothing, the new version keeps running; "y" rolls back."""
    box = sandbox
    child = upgrade_in_chinese(box)
    assert box.wait_version("7.0.4.2", 10) == "7.0.4.2"
    command = printed(child.transcript, "如需退回（停止服务前会先征求您的同意）：")
    (run,) = runs(box)
    assert shlex.split(command) == ["upgrader", "--home", str(box.root), "rollback", run.name]
    resume = printed(child.transcript, "之后可以用 ").split(" 查看和完成")[0]
    assert shlex.split(resume) == ["upgrader", "--home", str(box.root), "resume", run.name]

    before = pid(box)
    term = shell(command)
    term.expect("将在 app-01 上停止服务 sample-middleware")
    term.expect("现在停止服务并回滚吗？")
    term.sendline("")
    term.expect("没有回滚：未做任何改动。")
    assert term.finish() == 130
    assert pid(box) == before and box.answers() == "7.0.4.2"
    assert "rollback_requested" not in [e["event"] for e in audit_events(box)]

    term = shell(command)
    term.expect("现在停止服务并回滚吗？")
    term.sendline("y")
    assert term.finish() == 0
    assert box.wait_version("7.0.4.1", 10) == "7.0.4.1"
    assert (run / "rollback-result.json").is_file()

    term = shell(resume)  # the run-started follow-up, as printed: the run has nothing left to do
    code = term.finish()
    assert code == 0, term.transcript[-2000:]


def killed_run_holding_the_lock(box: Sandbox) -> tuple[Path, Path, Path]:
    """A run killed (SIGKILL at a fault point) after it stopped the service and installed 7.0.4.2: its lock stays,
    the service is down. Also a second plan with its own approval, made before, for the guide afterwards."""
    import subprocess

    from conftest import fault_env

    plan, approval = approved_plan(box, "7.0.4.2")
    later_plan, later_approval = approved_plan(box, "7.0.4.2")  # a fresh approval: its own signed statement
    later_approval = approve(box, later_plan, "--comment", "the customer's second try")
    killed = subprocess.run([str(Path(BIN) / "upgrader"), "--home", str(box.root), "run", str(plan), "--approval",
                             str(approval)], env={**os.environ, "PYTHON": sys.executable,
                                                  **fault_env(kill_at="install:finished")},
                            capture_output=True, timeout=120)
    assert killed.returncode == -9 and box.answers() is None
    (run,) = runs(box)
    return run, later_plan, later_approval


def lock_way_out(box: Sandbox, run: Path, plan: Path, approval: Path) -> dict[str, str]:
    """The guide, locked out: the three commands it prints (status, resume and rollback with --break-lock)."""
    child = guide(box, "--plan", str(plan), "--approval", str(approval), lang="zh")
    child.expect(f"这个安装已被运行 {run.name} 锁定")
    assert child.finish() == 5
    out = child.transcript.replace("\r\n", "")
    found = {"status": re.search(r"查看本机状态：(upgrader .*? status)  2\.", out),
             "resume": re.search(r"用 (upgrader .*? --break-lock) 按运行日志完成它", out),
             "rollback": re.search(r"或用 (upgrader .*? --break-lock) 退回旧版本", out)}
    commands = {k: m.group(1) for k, m in found.items() if m}
    assert set(commands) == {"status", "resume", "rollback"}, out[-2000:]
    assert re.search(r"自 \d{4}-\d\d-\d\d \d\d:\d\d 北京时间 起", out) and "+00:00" not in out
    # the error's hint repeats them, as complete
    assert f"{commands['status']}；然后 {commands['resume']} 或 {commands['rollback']}" in out
    home = ["upgrader", "--home", str(box.root)]
    assert shlex.split(commands["status"]) == [*home, "status"]
    assert shlex.split(commands["resume"]) == [*home, "resume", run.name, "--break-lock"]
    assert shlex.split(commands["rollback"]) == [*home, "rollback", run.name, "--break-lock"]
    return commands


def test_the_lock_left_behind_way_out_runs_as_printed_status_then_resume_then_the_guide_again(
        sandbox: Sandbox) -> None:
    """The guide meets the lock of a killed run and prints the way out; run as printed: `status` names the lock and
    its run (exit 5: a person is needed); `resume RUN --break-lock` finishes the run from its journal (it rolls back
    to 7.0.4.1, exit 1) and frees the install; the guide again with the same approval (it was not used) upgrades."""
    box = sandbox
    run, plan, approval = killed_run_holding_the_lock(box)
    commands = lock_way_out(box, run, plan, approval)

    term = shell(commands["status"])
    assert term.finish() == 5, term.transcript[-2000:]
    shown = ANSI.sub("", term.transcript).replace("\n", "")
    assert re.search(rf"被运行 {run.name} 锁定（\S+@\S+，自 \d{{4}}-\d\d-\d\d \d\d:\d\d 北京时间 起）：这是本机的运行，"
                     rf"用 upgrader --home {re.escape(str(box.root))} resume {run.name} 完成它", shown), shown
    assert f"运行 {run.name}：resume 在“安装”阶段被中断" in shown and "locked by" not in shown
    assert sorted(f for f in english_fragments() if f in shown) == []

    term = shell(commands["resume"])
    assert term.finish() == 1, term.transcript[-2000:]
    assert box.wait_version("7.0.4.1", 10) == "7.0.4.1"
    assert not (box.install_dir.parent / f".upgrader-{box.install_dir.name}" / "lock").exists()
    term = shell(commands["status"])
    assert term.finish() == 0
    assert "app-01  运行版本 7.0.4.1" in term.transcript and "没有锁，没有需要人工处理的事" in term.transcript

    child = guide(box, "--plan", str(plan), "--approval", str(approval), lang="zh")
    answer_until_stop(child, "zh")
    child.sendline("y")
    child.expect("升级完成")
    assert child.finish() == 0
    assert box.wait_version("7.0.4.2", 10) == "7.0.4.2"


def test_the_lock_left_behind_way_out_runs_as_printed_rollback_asks_then_puts_the_old_version_back(
        sandbox: Sandbox) -> None:
    """Run as printed, `rollback RUN --break-lock` says what it will do and asks (a terminal); "y" restores 7.0.4.1,
    starts it and frees the install (exit 0); `status` as printed then finds nothing that needs a person."""
    box = sandbox
    run, plan, approval = killed_run_holding_the_lock(box)
    commands = lock_way_out(box, run, plan, approval)
    term = shell(commands["rollback"])
    term.expect("现在停止服务并回滚吗？")
    term.sendline("y")
    assert term.finish() == 0, term.transcript[-2000:]
    assert box.wait_version("7.0.4.1", 10) == "7.0.4.1"
    assert not (box.install_dir.parent / f".upgrader-{box.install_dir.name}" / "lock").exists()
    term = shell(commands["status"])
    assert term.finish() == 0, term.transcript[-2000:]


def test_rollback_with_yes_does_not_ask(sandbox: Sandbox) -> None:
    """--yes (scripts, fleets) answers the question: the printed command plus --yes rolls back without asking."""
    box = sandbox
    child = upgrade_in_chinese(box)
    command = printed(child.transcript, "如需退回（停止服务前会先征求您的同意）：")
    term = shell(command + " --yes")
    assert term.finish() == 0
    assert "现在停止服务并回滚吗" not in term.transcript
    assert box.wait_version("7.0.4.1", 10) == "7.0.4.1"


def test_first_use_sets_up_the_audit_key_where_asked_and_every_printed_command_works(sandbox: Sandbox,
                                                                                     tmp_path: Path) -> None:
    """No operator key anywhere: the guide says why it needs one, asks where to keep it, makes it there; the plan
    is written and the printed command (with the approval file filled in) upgrades; the printed rollback, which
    names the key, signs its checkpoint with it instead of failing with "no SSH key"."""
    box = sandbox
    for name in ("operator", "operator.pub"):
        (box.keys / name).unlink()
    place = tmp_path / "我的密钥" / "operator"
    pkg = str(box.catalog / "sample-middleware-7.0.4.2.tar.gz")
    child = guide(box, "--inventory", str(box.inventory), "--package", pkg, lang="zh")
    child.expect("目前没有找到这个密钥，现在为您生成一个。")
    child.expect("新密钥保存在哪里")
    child.sendline(str(place))
    child.expect("已生成审计密钥")
    assert child.finish() == 4
    assert place.is_file() and place.with_name("operator.pub").is_file()
    assert oct(place.stat().st_mode & 0o777) == "0o600"
    made = [e for e in audit_events(box) if e["event"] == "guide_audit_key_made"]
    assert made and made[0]["data"]["key"] == str(place)
    # the new key is the plan's requester only when allowed_signers names it: that file is a trust root, the guide
    # never writes it; it prints the exact line (the login account's name) and the file and stops before any plan
    pub = " ".join(place.with_name("operator.pub").read_text(encoding="utf-8").split()[:2])
    signers = box.keys / "allowed_signers"
    assert pub not in signers.read_text(encoding="utf-8")
    assert not list((box.root / "guide").glob("plans/*.json"))
    line = f'{pwd.getpwuid(os.getuid()).pw_name}@{socket.gethostname()} namespaces="upgrader-plan,upgrader-audit" {pub}'
    flat = re.sub(r"\s+", "", ANSI.sub("", child.transcript))
    assert f"{signers}是信任根，向导从不修改它" in flat and re.sub(r"\s+", "", line) in flat, child.transcript
    assert [e for e in audit_events(box) if e["event"] == "guide_audit_key_line_shown"]
    with signers.open("a", encoding="utf-8") as f:
        f.write(line + "\n")  # the file's owner adds it; the operator runs the guide again with the new key
    child = guide(box, "--inventory", str(box.inventory), "--package", pkg, "--audit-key", str(place), lang="zh")
    assert child.finish() == 4
    (plan,) = (box.root / "guide" / "plans").glob("*.json")
    again = printed(child.transcript, "工程师审批后会发给您一个审批文件，然后运行：")
    assert shlex.split(again) == ["upgrader", "--home", str(box.root), "guide", "--plan", str(plan),
                                  "--approval", "APPROVAL", "--inventory", str(box.inventory), "--lang", "zh",
                                  "--audit-key", str(place)]

    approval = upgrader_approve(box, plan)
    term = shell(again.replace("APPROVAL", shlex.quote(str(approval))))
    term.expect("审计密钥：")
    answer_until_stop(term, "zh")
    term.sendline("y")
    term.expect("升级完成")
    assert term.finish() == 0
    assert box.wait_version("7.0.4.2", 10) == "7.0.4.2"
    rollback = printed(term.transcript, "如需退回（停止服务前会先征求您的同意）：")
    assert "--audit-key" in shlex.split(rollback)
    back = shell(rollback)
    back.expect("现在停止服务并回滚吗？")
    back.sendline("是")
    assert back.finish() == 0, back.transcript[-2000:]
    assert box.wait_version("7.0.4.1", 10) == "7.0.4.1"
    (run,) = runs(box)
    result = json.loads((run / "rollback-result.json").read_text())
    assert result["checkpoint"], result


def upgrader_approve(box: Sandbox, plan: Path) -> Path:
    out = box.approvals / f"{plan.stem}.approval"
    assert upgrader(box, "approve", str(plan), "--key", str(box.engineer_key), "-o", str(out)) == 0
    return out


def test_a_failed_upgrade_is_explained_in_plain_chinese_first_with_the_technical_detail_after(
        sandbox: Sandbox) -> None:
    """7.0.4.6 cannot start (its log says why): the guide says "新版本启动失败" with the log's own line first and
    the probes in plain words, then the technical detail; the old version runs again; exit 1."""
    box = sandbox
    plan, approval = approved_plan(box, "7.0.4.6")
    child = guide(box, "--plan", str(plan), "--approval", str(approval), lang="zh")
    answer_until_stop(child, "zh")
    child.sendline("y")
    child.expect("升级失败，已回滚。原因：新版本启动失败：日志 logs/server.log 报错“")
    child.expect("configuration rejected")
    child.expect("”；没有 pid 文件 run/server.pid：进程没有运行，或在运行但没有写 pid 文件（无法判断）；端口")
    child.expect("没有打开")
    child.expect("技术细节：never healthy after start")
    child.expect("旧版本 7.0.4.1 已恢复，正在正常运行。")
    assert child.finish() == 1
    assert box.wait_version("7.0.4.1", 10) == "7.0.4.1"
    assert "原文" not in child.transcript


# ---------------------------------------------------------------- access, answer by answer


def test_each_access_answer_is_checked_as_it_is_given_in_chinese(sandbox: Sandbox) -> None:
    """A private key pasted by mistake, a missing file, hours beyond the policy, an empty or malformed source
    address: each is explained in Chinese at once and asked again; "任何地址" is an explicit choice, recorded in
    the grant's line and the audit log; the time is Beijing time; the printed revoke command closes it."""
    box = sandbox
    ak = authorized_keys(OTHER_KEY)
    plan, approval = approved_plan(box, "7.0.4.2")
    child = guide(box, "--plan", str(plan), "--approval", str(approval), lang="zh")
    child.expect("您已经备份好业务数据了吗")
    child.sendline("y")
    child.expect("需要让工程师在几个小时内远程登录本机协助吗")
    child.sendline("y")
    child.expect("工程师的公钥文件")
    child.sendline(str(box.keys / "engineer"))  # the private key
    child.expect("是私钥，不是公钥。私钥绝不能交给别人")
    child.expect("工程师的公钥文件")
    child.sendline(str(box.keys / "no-such.pub"))
    child.expect("无法读取")
    child.expect("工程师的公钥文件")
    child.sendline(str(box.keys / "engineer.pub"))
    child.expect("公钥 SHA256:")
    child.expect("开放几个小时")
    child.sendline("10000")
    child.expect("不是有效的小时数")
    child.expect("开放几个小时")
    child.sendline("2")
    child.expect("只允许来自这些地址")
    child.sendline("")
    child.expect("必须填写来源地址")
    child.expect("只允许来自这些地址")
    child.sendline("10.0.0.0/33")
    child.expect("不是地址、网段（CIDR）或 OpenSSH 地址模式")
    child.expect("只允许来自这些地址")
    assert ak.read_bytes() == OTHER_KEY  # nothing granted while the answers are not all good
    child.sendline("任何地址")
    child.expect("已授权")
    child.expect("北京时间")
    child.expect("来源 任何地址（操作员明确选择）")
    line = ak.read_text().splitlines()[-1]
    assert "from=" not in line and "any source address" in line
    (granted,) = [e for e in audit_events(box) if e["event"] == "access_granted"]
    assert granted["data"]["from"] is None and "any source address" in granted["data"]["reason"]
    child.expect("现在停止 sample-middleware")
    child.sendline("n")
    child.expect("但工程师的访问授权")
    child.expect("仍然有效，下面会询问是否关闭")
    child.expect("现在关闭工程师的访问授权")
    assert "未做任何改动" not in child.transcript
    child.sendline("n")
    child.expect("随时可以关闭：")
    assert child.finish() == 130
    revoke = printed(child.transcript, "随时可以关闭：")
    assert shlex.split(revoke)[:5] == ["upgrader", "--home", str(box.root), "access", "revoke"]
    term = shell(revoke)
    term.expect("已撤销")
    assert term.finish() == 0
    assert ak.read_bytes() == OTHER_KEY


def test_ctrl_c_while_a_grant_is_open_says_so_and_closes_it(sandbox: Sandbox) -> None:
    """Ctrl-C at the stop question after access was granted: the guide does not claim "本机没有任何改动" while the
    grant's line is there; it says the grant is open and closes it (the safe default)."""
    box = sandbox
    ak = authorized_keys(OTHER_KEY)
    plan, approval = approved_plan(box, "7.0.4.2")
    child = guide(box, "--plan", str(plan), "--approval", str(approval), lang="zh")
    child.expect("您已经备份好业务数据了吗")
    child.sendline("y")
    child.expect("需要让工程师在几个小时内远程登录本机协助吗")
    child.sendline("y")
    child.expect("工程师的公钥文件")
    child.sendline(str(box.keys / "engineer.pub"))
    child.expect("开放几个小时")
    child.sendline("1")
    child.expect("只允许来自这些地址")
    child.sendline("127.0.0.1")
    child.expect("已授权")
    child.expect("现在停止 sample-middleware")
    child.ctrl_c()
    child.expect("仍然有效，下面将关闭它")
    child.expect("现在关闭工程师的访问授权")
    child.sendline("")
    child.expect("已关闭访问")
    assert child.finish() == 130
    assert "本机没有任何改动" not in child.transcript
    assert ak.read_bytes() == OTHER_KEY and box.answers() == "7.0.4.1" and not runs(box)


# ---------------------------------------------------------------- no English in the Chinese output


def english_fragments() -> set[str]:
    """The fixed English words of every catalog (fields and markup taken out), three words or more each."""
    texts: list[str] = [en for en, _ in MESSAGES.values()] + [en for en, _ in COMMAND_MESSAGES.values()]
    texts += [r[0] for r in RULES.values()] + [r[2] for r in RULES.values()] + [p[0] for p in PHASES.values()]
    texts += list(_LABELS["en"].values())
    out: set[str] = set()
    for text in texts:
        plain = re.sub(r"\[/?[a-z ]+\]", "", text)
        for piece in re.split(r"{[^}]*}", plain):
            piece = piece.strip(" :;,.()\n")
            if len(re.findall(r"[A-Za-z]+", piece)) >= 3:
                out.add(piece)
    return out


def test_catalog_fragments_are_found_in_english_output() -> None:
    """The check below can fail: English fragments are found, and the catalogs are complete in both languages."""
    fragments = english_fragments()
    assert "Have you backed up your business data?" in fragments and "Stop the service and roll back now? [y/N]" \
        in fragments
    for table in (MESSAGES, COMMAND_MESSAGES):
        field = re.compile(r"{(\w+)")
        for key, (en, zh) in table.items():
            assert en and zh, key
            assert set(field.findall(en)) == set(field.findall(zh)), key
    assert set(_LABELS["en"]) == set(_LABELS["zh"])


def test_no_english_sentence_shows_in_the_chinese_guide_inspect_and_access(sandbox: Sandbox, tmp_path: Path) -> None:
    """The demo's flows in Chinese: a refused guide, the guide with access granted and the upgrade done, the
    inspection (table and HTML form), access grant, list and revoke: no English fragment of the catalogs, no
    reason left untranslated ("原文"), every time in Beijing time."""
    box = sandbox
    ak = authorized_keys(OTHER_KEY)
    shown: list[str] = []

    refused = guide(box, "--inventory", str(box.inventory), "--catalog", str(box.catalog), "--to", "7.1.0.0",
                    lang="zh")
    assert refused.finish() == 3
    shown.append(refused.transcript)

    plan, approval = approved_plan(box, "7.0.4.2")
    child = guide(box, "--plan", str(plan), "--approval", str(approval), "--var", f"port={box.port}", lang="zh")
    child.expect("您已经备份好业务数据了吗")
    child.sendline("y")
    child.expect("需要让工程师在几个小时内远程登录本机协助吗")
    child.sendline("y")
    child.expect("工程师的公钥文件")
    child.sendline(str(box.keys / "engineer.pub"))
    child.expect("开放几个小时")
    child.sendline("2")
    child.expect("只允许来自这些地址")
    child.sendline("127.0.0.1")
    child.expect("现在停止 sample-middleware")
    child.sendline("y")
    child.expect("升级完成")
    child.expect("现在关闭工程师的访问授权")
    child.sendline("")
    assert child.finish() == 0
    shown.append(child.transcript)
    assert ak.read_bytes() == OTHER_KEY

    env = {"LANG": "zh_CN.UTF-8"}
    report = tmp_path / "inspection.html"
    for command in (f"inspect --install-dir {box.install_dir} --var port={box.port} -o {report} --customer 某某银行",
                    f"access grant --key {box.keys / 'engineer.pub'} --hours 2 --from 127.0.0.1",
                    "access list"):
        term = shell(f"upgrader --home {box.root} {command}", env)
        assert term.finish() == 0, term.transcript[-2000:]
        shown.append(term.transcript)
    (grant_id,) = re.findall(r"授权编号 (\w+)", shown[-2])
    term = shell(f"upgrader --home {box.root} access revoke {grant_id}", env)
    assert term.finish() == 0
    shown.append(term.transcript)
    dom = chromium(f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", report.as_uri())
    assert dom.returncode == 0
    shown.append(Page(dom.stdout).text)

    everything = ANSI.sub("", "\n".join(shown))
    found = sorted(f for f in english_fragments() if f in everything)
    assert found == [], found
    assert "原文" not in everything
    assert "北京时间" in shown[1] and "北京时间" in shown[2] and "北京时间" in shown[3] and "北京时间" in shown[4]
    assert not re.search(r"\d\d:\d\d(:\d\d)?\+00:00", everything)  # no UTC time shown to a person
    for english in ("is newer than", "service window", "package on host", "snapshotted", "the installed product",
                    "is not open on", "granted by", "revoked grant"):
        assert english not in everything, english


def test_a_failed_upgrade_and_its_diagnostics_speak_chinese_with_no_english_severity_line(sandbox: Sandbox) -> None:
    """7.0.4.6 cannot start and is rolled back by the guide in Chinese; then `upgrader diagnostics RUN --obfuscate`,
    run by a shell in the operator's Chinese locale: the bundle, the key to the obfuscated names, the level (三级
    一般), its response times, service hours and the rule that decided it are all in Chinese, in the guide and in
    diagnostics; no English fragment of the catalogs or of the severity rules is shown."""
    from upgrader.customer.severity import RULES as SEVERITY_RULES

    box = sandbox
    plan, approval = approved_plan(box, "7.0.4.6")
    child = guide(box, "--plan", str(plan), "--approval", str(approval), lang="zh")
    answer_until_stop(child, "zh")
    child.sendline("y")
    child.expect("故障级别：三级 一般（响应级别：重要）")
    assert child.finish() == 1
    (run,) = runs(box)
    term = shell(f"upgrader --home {box.root} diagnostics {run.name} --obfuscate", {"LANG": "zh_CN.UTF-8"})
    assert term.finish() == 0, term.transcript[-2000:]
    out = ANSI.sub("", term.transcript).replace("\n", "")
    bundle = run / f"diagnostics-{run.name}.tar.gz"
    assert bundle.is_file() and f"诊断包：{bundle}（已隐去密码等敏感信息，主机名和地址已替换为代号），请发送给技术支持。" in out
    assert "代号与真实名称的对照表留在本机：" in out
    assert "故障级别：三级 一般（响应级别：重要）" in out and "8 小时内响应，4 小时内首次回电" in out
    assert "判定依据（app-01）：升级失败并已回滚：旧版本在运行且健康" in out
    both = ANSI.sub("", child.transcript + term.transcript)
    assert "判定依据（app-01）：升级失败并已回滚" in child.transcript
    english = sorted(f for f in english_fragments() | {rule for _, rule in SEVERITY_RULES} if f in both)
    assert english == [], english
    for line in ("Severity level", "Response: within", "diagnostics bundle", "the key to the obfuscated", "Why ("):
        assert line not in both, line


# ---------------------------------------------------------------- the 巡检 form


def test_the_chinese_inspection_form_renders_in_chromium_with_its_head_findings_conclusion_and_signatures(
        sandbox: Sandbox, tmp_path: Path) -> None:
    """inspect -o form.html --lang zh with customer, system and inspector: Chromium shows a filled-in form head, the
    host's real name and addresses (not "local (local)"), the period in Beijing time, the findings in Chinese,
    the conclusion and the signature block; the screenshot is kept in test-artifacts/."""
    box = sandbox
    box.stop_service()  # findings to show: the product is not running, its port is closed
    report = tmp_path / "form.html"
    rc = upgrader(box, "inspect", "--install-dir", str(box.install_dir), "--var", f"port={box.port}", "-o",
                  str(report), "--lang", "zh", "--customer", "某某市政务云", "--system", "统一身份认证系统",
                  "--inspector", "张工")
    assert rc == 0
    dom = chromium(f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", report.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = Page(dom.stdout).text
    for words in ("健康巡检报告", "巡检记录表", "客户名称", "某某市政务云", "系统名称", "统一身份认证系统", "巡检人", "张工",
                  "巡检时间", "北京时间", "主机名", socket.gethostname(), "IP 地址", "告警", "产品没有运行",
                  f"端口 {box.port} 在 127.0.0.1 上没有开放", "巡检结论", "建议处理后复查", "签字确认", "巡检人签字",
                  "客户确认签字", "日期"):
        assert words in text, words
    assert "local (local)" not in text and "is not open" not in text and "not running" not in text
    facts = json.loads(json.dumps(_inspect_json(box)))
    assert all(a in text for a in facts["addresses"])
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "inspect-form-zh.png"
    shot.unlink(missing_ok=True)
    done = chromium(f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2600", f"--screenshot={shot}",
                    report.as_uri())
    assert done.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _inspect_json(box: Sandbox) -> dict:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert upgrader(box, "inspect", "--install-dir", str(box.install_dir), "--json") == 0
    return dict(json.loads(out.getvalue())["hosts"][0]["facts"])


@pytest.mark.parametrize("flag", ["--customer", "--system", "--inspector"])
def test_a_form_field_on_several_lines_is_bad_input(sandbox: Sandbox, flag: str) -> None:
    """A name that would break the form (a newline) is refused, exit 2, nothing written."""
    box = sandbox
    out = box.root / "form.html"
    assert upgrader(box, "inspect", "--install-dir", str(box.install_dir), "-o", str(out), flag, "a\nb") == 2
    assert not out.exists()


@pytest.mark.parametrize("argv,chinese", [
    (["access", "grant", "--key", "{keys}/engineer", "--lang", "zh"], "这是私钥，不是公钥；未做任何改动"),
    (["access", "grant", "--key", "{keys}/engineer.pub", "--hours", "1000", "--lang", "zh"], "超过了策略规定的最多"),
    (["inspect", "--install-dir", "{root}/no-such-dir", "--lang", "zh"], "安装目录不存在（或不是目录）"),
    (["inspect", "--install-dir", "{root}", "-o", "x.pdf", "--lang", "zh"], "报告文件名必须以 .html 或 .json 结尾"),
])
def test_errors_of_the_operators_commands_come_in_chinese_before_the_english_log_line(
        sandbox: Sandbox, capsys: pytest.CaptureFixture[str], argv: list[str], chinese: str) -> None:
    """Bad input to access or inspect with --lang zh: a "错误：" line in Chinese, then the English `upgrader: error:`
    line for logs; exit 2; authorized_keys is never created."""
    box = sandbox
    capsys.readouterr()
    rc = upgrader(box, *[a.format(keys=box.keys, root=box.root) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2
    lines = err.splitlines()
    zh = next(i for i, line in enumerate(lines) if line.startswith("错误："))
    assert chinese in lines[zh] and "原文" not in lines[zh]
    assert any(line.startswith("upgrader: error:") for line in lines[zh + 1:])
    assert not (Path(os.environ["HOME"]) / ".ssh" / "authorized_keys").exists()


def test_available_speaks_chinese_with_every_refusal_reason_translated(sandbox: Sandbox,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """`available --lang zh` on the demo: the table's heads, the newest free upgrade and each refused version's
    reasons in Chinese; no English fragment of the catalogs and nothing left "原文"."""
    box = sandbox
    capsys.readouterr()
    assert upgrader(box, "available", "--inventory", str(box.inventory), "--catalog", str(box.catalog),
                    "--lang", "zh") == 0
    out = capsys.readouterr().out
    assert "可用的升级" in out and "最新的免费升级" in out and "7.0.4.1" in out
    assert "7.1.0.0（完整包）不属于免费升级：7.0 → 7.1 改变了第 2 级（次版本）" in out
    assert "7.0.4.8（完整包）不属于免费升级：升级包声明会改变" in out
    assert "原文" not in out and "is not a free upgrade" not in out
    assert [f for f in english_fragments() if f in out] == []
