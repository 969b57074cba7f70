"""Issue 21, point 1, exactly as the customer met it, driven through tmux as a person at a terminal: a Chinese
locale (LANG=zh_CN.UTF-8, no --lang), no install in the usual places so the install dir is typed at the prompt,
the sample middleware listening on the port its conf/server.conf names (not the playbook's 18080). tmux runs the
real ``upgrader guide`` in a detached session of a fixed size on a private socket; keys are typed with send-keys
and the screen is read with capture-pane. The host is checked afterwards: the version that answers, the
service's pid, the product files, the tool's state beside the install."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import approve
from hoststate import assert_host_untouched
from test_guide import pid, runs
from test_guide_safety import free_port, host_state, move_config_port, no_usual_places, package
from upgrader.cli.commands.demo import Sandbox

# the guide finds installs without an inventory: their contract date is in the operator's policy
pytestmark = pytest.mark.usefixtures("guide_contract")

UPGRADER = str(Path(sys.executable).with_name("upgrader"))
WIDTH, HEIGHT = 160, 50
TIMEOUT = 90.0


class Tmux:
    """One program in a detached tmux session on a private socket (under the test's tmp dir)."""

    def __init__(self, workdir: Path, argv: list[str], env: dict[str, str]) -> None:
        self.socket = workdir / "tmux.sock"
        self.exit_file = workdir / f"exit-{time.monotonic_ns()}"
        conf = workdir / "tmux.conf"
        conf.write_text("set -g history-limit 50000\nset -g status off\n")
        # the exit status is written where the test reads it; the pane stays for capture-pane
        script = f"{shlex.join(argv)}; echo $? > {shlex.quote(str(self.exit_file))}; sleep 600"
        self.env = env
        self.session = f"guide{time.monotonic_ns()}"
        self._tmux("-f", str(conf), "new-session", "-d", "-s", self.session, "-x", str(WIDTH), "-y", str(HEIGHT),
                   "/bin/sh", "-c", script)

    def _tmux(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-u", "-S", str(self.socket), *args], env=self.env, capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 0, f"tmux {args[0]}: {done.stderr}"
        return done.stdout

    def screen(self) -> str:
        """Everything the pane has shown (its history too), wrapped lines joined."""
        return self._tmux("capture-pane", "-p", "-J", "-S", "-", "-t", self.session)

    def wait_for(self, text: str, timeout: float = TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while True:
            shown = self.screen()
            if text in shown:
                return shown
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never appeared on the screen; it shows:\n{shown[-3000:]}")
            time.sleep(0.2)

    def type(self, text: str) -> None:
        self._tmux("send-keys", "-t", self.session, "-l", text)
        self._tmux("send-keys", "-t", self.session, "Enter")

    def exit_code(self, timeout: float = 180) -> int:
        deadline = time.monotonic() + timeout
        while not (self.exit_file.is_file() and self.exit_file.read_text().strip()):
            if time.monotonic() > deadline:
                raise AssertionError("the guide did not end; the screen shows:\n" + self.screen()[-3000:])
            time.sleep(0.2)
        return int(self.exit_file.read_text())

    def kill(self) -> None:
        subprocess.run(["tmux", "-S", str(self.socket), "kill-server"], env=self.env, capture_output=True,
                       timeout=30)


def chinese_guide(box: Sandbox, tmp_path: Path, *argv: str) -> Tmux:
    """`upgrader guide` with the operator's Chinese locale (the locale decides the language, no --lang)."""
    env = {**os.environ, "LANG": "zh_CN.UTF-8", "TERM": "xterm-256color", "PYTHON": sys.executable,
           **no_usual_places(tmp_path)}
    for name in ("LC_ALL", "LC_MESSAGES", "COLUMNS", "LINES", "TMUX"):
        env.pop(name, None)
    return Tmux(tmp_path, [UPGRADER, "--home", str(box.root), "guide", *argv], env)


@pytest.fixture(autouse=True)
def _tmux_installed() -> None:
    assert shutil.which("tmux"), "tmux is needed (tests/run.sh installs it)"


def test_tmux_chinese_install_dir_typed_port_read_from_the_config_and_the_upgrade_commits(
        sandbox: Sandbox, tmp_path: Path) -> None:
    """The install dir typed at the prompt; the port comes from conf/server.conf (not 18080), is shown, proven on the
    running 7.0.4.1 before stop; the engineer approves the plan; the second guide run upgrades and 7.0.4.2 answers
    on that port."""
    box = sandbox
    assert box.port != 18080 and f"port = {box.port}" in (box.install_dir / "conf" / "server.conf").read_text()
    term = chinese_guide(box, tmp_path, "--package", package(box))
    try:
        term.wait_for("在常用位置没有找到已安装的产品")
        term.wait_for("请输入安装目录")
        term.type(str(box.install_dir))
        assert term.exit_code() == 4  # the plan is written and waits for the engineer's approval
        shown = term.screen()
    finally:
        term.kill()
    assert "未做任何改动（退出码 4）" in shown and "18080" not in shown and "Traceback" not in shown
    assert f"从配置文件读取：port = {box.port}（conf/server.conf:2）" in shown  # shown before the plan is sent
    (plan_file,) = (box.root / "guide" / "plans").glob("*.json")
    h = json.loads(plan_file.read_text())["hosts"][0]
    assert h["vars_read"]["port"]["value"] == str(box.port) and h["vars_read"]["port"]["used"] is True
    assert box.answers() == "7.0.4.1" and not runs(box)

    old_pid = pid(box)
    term = chinese_guide(box, tmp_path, "--package", package(box), "--approval", str(approve(box, plan_file)))
    try:
        term.wait_for(f"从配置文件读取：port = {box.port}（conf/server.conf:2）")
        term.wait_for("健康检查已在停止服务之前、在当前运行的 7.0.4.1 上验证：5 项通过")
        term.wait_for(f"tcp：端口 {box.port} 已打开")
        term.wait_for("您已经备份好业务数据了吗")
        term.type("是")
        term.wait_for("需要让工程师在几个小时内远程登录本机协助吗")
        term.type("否")
        term.wait_for("现在停止 sample-middleware")
        term.type("是")
        term.wait_for("升级完成")
        assert term.exit_code() == 0
        shown = term.screen()
    finally:
        term.kill()
    assert "18080" not in shown and "故障级别" not in shown and "需要人工处理" not in shown
    assert f"健康检查已验证：4 项检查在当前运行的 7.0.4.1 上通过：process（进程 {old_pid} 在运行），tcp（端口 {box.port} 已打开）" \
        in shown and "probe(s)" not in shown and "原文" not in shown
    assert box.wait_version("7.0.4.2", 10) == "7.0.4.2"  # on the port the config names
    (run,) = runs(box)
    assert json.loads((run / "result.json").read_text())["hosts"][0]["outcome"] == "committed"
    assert not (box.install_dir.parent / f".upgrader-{box.install_dir.name}" / "lock").exists()


def test_tmux_chinese_config_pointing_elsewhere_is_refused_before_stop_with_the_probe_named(
        sandbox: Sandbox, tmp_path: Path) -> None:
    """conf/server.conf names a port the service does not listen on (it still serves on the old one): after the
    install dir is typed, the guide refuses before stop (exit 2), names the tcp probe, the config line and the
    --var way out, in Chinese; the service's pid, its answer, the product files and the tool's state are as they
    were, and no plan is written."""
    box = sandbox
    elsewhere = free_port()
    move_config_port(box, elsewhere)
    before = host_state(box)
    old_pid = pid(box)
    term = chinese_guide(box, tmp_path, "--package", package(box))
    try:
        term.wait_for("请输入安装目录")
        term.type(str(box.install_dir))
        term.wait_for("在停止服务之前拒绝执行")
        assert term.exit_code() == 2
        shown = term.screen()
    finally:
        term.kill()
    flat = shown.replace("\n", "")
    assert f"'tcp' (port {elsewhere} closed)" in flat and "在当前运行的版本 7.0.4.1 上就不通过" in flat
    assert f"conf/server.conf:2 中 port = {elsewhere}，但该处没有响应" in flat and "--var port=" in flat
    assert "您已经备份好业务数据了吗" not in shown and "Traceback" not in shown
    assert "错误：" not in shown and "和roll" not in shown  # said once, in Chinese (the English log line follows)
    assert pid(box) == old_pid and box.answers() == "7.0.4.1"
    assert_host_untouched(before, host_state(box))
    assert not list((box.root / "guide" / "plans").glob("*.json"))
