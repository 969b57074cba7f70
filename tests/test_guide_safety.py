"""Issue 21's safety half, as a customer meets it: health checks proven on the running old version before stop
(the port read from the install's own configuration), nothing used up by a refusal (a lock left behind is
explained before any question, an approval stays unspent), and the incident's severity by the customer's state
after the run. The real guide in a terminal (pexpect, as tests/test_guide.py drives it), the real CLI and the
real sample middleware on a loopback port that is not the playbook's default."""

from __future__ import annotations

import dataclasses
import json
import socket
from pathlib import Path

import pytest
import yaml

from conftest import approve, fault_env, plan_to, upgrader
from hoststate import HostState, assert_host_untouched, take_lock
from hoststate import host_state as whole_host_state
from test_guide import SCREEN, answer_until_stop, approved_plan, guide, pid, runs, state_dir
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.playbook import shipped_playbooks_dir

# the guide finds installs without an inventory: their contract date is in the operator's policy
pytestmark = pytest.mark.usefixtures("guide_contract")

ZH_BACKUP_QUESTION = SCREEN["zh"]["backup"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def package(box: Sandbox, version: str = "7.0.4.2") -> str:
    return str(box.catalog / f"sample-middleware-{version}.tar.gz")


def no_usual_places(tmp_path: Path) -> dict[str, str]:
    """The guide's search finds nothing (an empty search path): it must ask for the install dir."""
    empty = tmp_path / "nothing-installed-here"
    empty.mkdir(exist_ok=True)
    return {"UPGRADER_SEARCH_PATH": str(empty)}


def host_state(box: Sandbox) -> HostState:
    """The whole host (tests/hoststate.py): the service's pid, start time and answer, the product files, the agent's
    whole state dir (lock, staged packages, run directories, ledger) and the run journals here. (An agent state dir
    holding only its marker counts as none: the lock action makes the folder.)"""
    return whole_host_state(box.install_dir, answers=box.answers, home=box.root)


def used_approvals(box: Sandbox) -> str:
    used = box.root / "approvals" / "used.jsonl"
    return used.read_text() if used.is_file() else ""


def approval_digest(approval: Path) -> str:
    from upgrader.trust.approval import read_approval

    return str(read_approval(str(approval)).digest)


def move_config_port(box: Sandbox, port: int) -> None:
    conf = box.install_dir / "conf" / "server.conf"
    conf.write_text(conf.read_text().replace(f"port = {box.port}", f"port = {port}"))


# ---------------------------------------------------------------- A: the port read from the configuration


def test_issue_21_point_1_the_guide_in_chinese_reads_the_port_from_the_config_and_the_upgrade_commits(
        sandbox: Sandbox, tmp_path: Path) -> None:
    """The customer's path of point 1: Chinese, no install in the usual places, the install dir typed at the prompt,
    the service on the port conf/server.conf names (not the playbook's 18080). The port is read from the config,
    shown and recorded in the plan, proven on the running 7.0.4.1 before stop, and the good upgrade commits."""
    box = sandbox
    assert box.port != 18080 and f"port = {box.port}" in (box.install_dir / "conf" / "server.conf").read_text()
    env = no_usual_places(tmp_path)
    child = guide(box, "--package", package(box), lang="zh", env=env)
    child.expect("在常用位置没有找到已安装的产品")
    child.expect("请输入安装目录")
    child.sendline(str(box.install_dir))
    assert child.finish() == 4  # the plan is written and waits for the engineer's approval
    (plan_file,) = (box.root / "guide" / "plans").glob("*.json")
    h = json.loads(plan_file.read_text())["hosts"][0]
    assert h["vars_read"]["port"] == {"file": "conf/server.conf", "line": 2, "value": str(box.port), "used": True,
                                      "value_used": str(box.port)}
    probes = {p["name"]: p for p in h["playbook"]["spec"]["observe"]["probes"]}
    assert probes["tcp"]["port"] == str(box.port) and f":{box.port}/" in probes["health"]["url"]
    assert h["playbook"]["spec"]["stop"]["ports"] == [str(box.port)]
    (proven,) = [c for c in h["checks"] if c["check"] == "health_checks"]
    assert proven["status"] == "pass" and f"port {box.port} open" in proven["reason"]

    child = guide(box, "--package", package(box), "--approval", str(approve(box, plan_file)), lang="zh", env=env)
    child.expect(f"从配置文件读取：port = {box.port}（conf/server.conf:2）")
    child.expect("健康检查已在停止服务之前、在当前运行的 7.0.4.1 上验证：5 项通过")
    child.expect(f"tcp：端口 {box.port} 已打开")
    answer_until_stop(child, "zh")
    child.sendline("是")
    child.expect("升级完成")
    assert child.finish() == 0
    assert box.wait_version("7.0.4.2", 10) == "7.0.4.2"
    (run,) = runs(box)
    assert json.loads((run / "result.json").read_text())["hosts"][0]["outcome"] == "committed"
    assert "18080" not in child.transcript and "故障级别" not in child.transcript


def test_the_guide_refuses_before_stop_when_the_config_names_a_port_the_service_does_not_listen_on(
        sandbox: Sandbox, tmp_path: Path) -> None:
    """conf/server.conf was edited to another port but the service still listens on the old one: the guide names
    the failing probes and the likely fix in Chinese and refuses (exit 2) before any question; the service's pid,
    the product files, the host's lock and state and the runs are as they were; no plan was written."""
    box = sandbox
    elsewhere = free_port()
    move_config_port(box, elsewhere)
    before = host_state(box)
    child = guide(box, "--package", package(box), lang="zh", env=no_usual_places(tmp_path))
    child.expect("请输入安装目录")
    child.sendline(str(box.install_dir))
    child.expect("在停止服务之前拒绝执行")
    assert child.finish() == 2
    out = child.transcript.replace("\r\n", "")
    assert f"'tcp' (port {elsewhere} closed)" in out and "在当前运行的版本 7.0.4.1 上就不通过" in out
    assert f"conf/server.conf:2 中 port = {elsewhere}，但该处没有响应" in out
    assert "--var port=" in out and ZH_BACKUP_QUESTION not in out and "Traceback" not in out
    assert_host_untouched(before, host_state(box))
    assert not list((box.root / "guide" / "plans").glob("*.json"))  # no plan to approve: it would fail the same way


def test_an_explicit_port_wins_over_the_config_and_a_wrong_one_is_refused_naming_the_config(sandbox: Sandbox) -> None:
    """`upgrader plan` with the inventory's port wrong (the playbook's default 18080): exit 2, the probes named, the
    value conf/server.conf holds given as the fix; nothing written, nothing on the host changed."""
    box = sandbox
    inv = box.inventory.read_text().replace(f'port: "{box.port}"', 'port: "18080"')
    box.inventory.write_text(inv)
    before = host_state(box)
    rc, plan_file = plan_to(box, "7.0.4.2")
    assert rc == 2 and not plan_file.exists()
    assert_host_untouched(before, host_state(box))


def test_run_refuses_before_stop_when_the_service_moved_since_the_plan_and_keeps_the_approval(
        sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """The plan was proven on port P; before the run the site moved the service (config edited, restarted): the
    run reads the install's configuration again before any run starts and refuses (exit 4: the approved probes use
    the old port) naming the variable and both values; it stops nothing, takes no lock, and the approval stays
    unspent (here and on the host)."""
    box = sandbox
    plan, approval = approved_plan(box, "7.0.4.2")
    old = box.port
    box.stop_service()
    move_config_port(box, moved := free_port())
    box.port = moved
    box.start_service()
    before = host_state(box)
    capsys.readouterr()
    assert upgrader(box, "run", str(plan), "--approval", str(approval)) == 4
    err = capsys.readouterr().err
    assert f"app-01: port in conf/server.conf was '{old}' when the plan was made, is '{moved}' now" in err, err
    assert "nothing was changed" in err and "Traceback" not in err
    assert runs(box) == []
    assert_host_untouched(before, host_state(box))
    assert not (state_dir(box) / "lock").exists()
    assert approval_digest(approval) not in used_approvals(box)
    assert not (state_dir(box) / "approvals-used.jsonl").exists()


def test_a_playbook_reads_an_xml_attribute_and_ignores_a_commented_out_element(sandbox: Sandbox) -> None:
    """vars_from with xml: (as the Tomcat playbook reads conf/server.xml's HTTP connector): a commented-out
    <Connector> does not count; the value is recorded in the plan and the plan's probes use it."""
    box = sandbox
    (box.install_dir / "conf" / "ports.xml").write_text(
        '<Server port="8005">\n  <Service name="Catalina">\n'
        '    <!-- <Connector port="1" protocol="HTTP/1.1"/> -->\n'
        f'    <Connector port="{box.port}" protocol="HTTP/1.1" connectionTimeout="20000"/>\n'
        '  </Service>\n</Server>\n')
    spec = yaml.safe_load((shipped_playbooks_dir() / "sample-middleware.yaml").read_text())
    spec["vars_from"] = {"port": {"file": "conf/ports.xml", "xml": "./Service/Connector[@protocol='HTTP/1.1']",
                                  "attribute": "port"}}
    (box.root / "playbooks").mkdir()
    (box.root / "playbooks" / "sample-middleware.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    box.inventory.write_text(box.inventory.read_text().replace(f'    vars:\n      port: "{box.port}"\n', ""))
    rc, plan_file = plan_to(box, "7.0.4.2")
    assert rc == 0
    h = json.loads(plan_file.read_text())["hosts"][0]
    assert h["vars_read"]["port"]["value"] == str(box.port) and h["vars_read"]["port"]["used"] is True
    assert h["playbook"]["spec"]["stop"]["ports"] == [str(box.port)]


def test_a_vars_from_file_that_leads_out_of_the_install_dir_is_not_read(
        sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Attack: conf/server.conf replaced by a link to a file outside the install naming another port. Nothing is read
    through it: the plan is refused (exit 2) naming the link, and no plan is written (the agent's own refusal to
    read a value through such a link is tested in tests/test_config_vars.py)."""
    box = sandbox
    outside = tmp_path / "elsewhere.conf"
    outside.write_text("port = 1\n")
    conf = box.install_dir / "conf" / "server.conf"
    kept = conf.read_text()
    conf.unlink()
    conf.symlink_to(outside)
    capsys.readouterr()
    try:
        rc, plan_file = plan_to(box, "7.0.4.2")
    finally:
        conf.unlink()
        conf.write_text(kept)
    err = capsys.readouterr().err
    assert rc == 2 and not plan_file.exists()
    assert f"conf/server.conf -> {outside}" in err and "leads outside the install dir" in err
    assert outside.read_text() == "port = 1\n"


# ---------------------------------------------------------------- B: nothing used up by a refusal


def test_a_lock_left_behind_is_explained_in_chinese_before_any_question_and_the_approval_stays_unused(
        sandbox: Sandbox) -> None:
    """A run died after it locked the install (the agent's own lock action, never released). The guide with a fresh
    approval refuses (exit 5) before any question, explains the lock and the way out in Chinese (status, resume
    --break-lock, rollback --break-lock, each with --home), changes nothing and does not spend the approval."""
    from upgrader.fleet.transport import AgentClient
    from upgrader.fleet.transport.local import LocalTransport

    box = sandbox
    plan, approval = approved_plan(box, "7.0.4.2")
    transport = LocalTransport("local")
    agent = AgentClient(transport)
    try:
        take_lock(lambda op, **req: agent.call(op, install_dir=str(box.install_dir), state_dir=None, **req),
                  "20261203T020000Z-dead01", controller="ops-box", user="zhang")
    finally:
        agent.close()
        transport.close()
    before = host_state(box)
    child = guide(box, "--plan", str(plan), "--approval", str(approval), lang="zh")
    child.expect("这个安装已被运行 20261203T020000Z-dead01 锁定")
    assert child.finish() == 5
    out = child.transcript.replace("\r\n", "")
    assert "zhang@ops-box" in out and "您的审批文件没有被使用" in out
    home = str(box.root)
    for command in (f"upgrader --home {home} status", f"upgrader --home {home} resume 20261203T020000Z-dead01 "
                    "--break-lock", f"upgrader --home {home} rollback 20261203T020000Z-dead01 --break-lock"):
        assert command in out, command
    assert ZH_BACKUP_QUESTION not in out and "第 2/8 步" not in out
    assert_host_untouched(before, host_state(box))
    assert approval_digest(approval) not in used_approvals(box)


def test_a_run_refused_by_a_lock_at_preflight_does_not_spend_its_approval(sandbox: Sandbox) -> None:
    """`upgrader run` on a locked host: needs a person (exit 5), nothing changed, and the same approval still runs
    the plan once the lock is gone."""
    box = sandbox
    plan, approval = approved_plan(box, "7.0.4.2")
    lock = state_dir(box) / "lock"
    lock.parent.mkdir(exist_ok=True)
    lock.write_text(json.dumps({"run": "20261203T020000Z-dead02", "controller": "ops-box", "user": "li",
                                "time": 1764727200.0}))
    before = host_state(box)
    assert upgrader(box, "run", str(plan), "--approval", str(approval)) == 5
    after = host_state(box)
    assert_host_untouched(before, dataclasses.replace(after, home_runs=before.home_runs))
    assert approval_digest(approval) not in used_approvals(box)
    lock.unlink()
    assert upgrader(box, "run", str(plan), "--approval", str(approval)) == 0
    assert box.wait_version("7.0.4.2", 10) == "7.0.4.2"
    assert approval_digest(approval) in used_approvals(box)


# ---------------------------------------------------------------- C: severity by the state after the run


def test_a_failed_upgrade_rolled_back_to_a_healthy_old_version_is_level_3_not_1(
        sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """7.0.4.6 cannot start; it is rolled back and 7.0.4.1 serves: level 3 (一般, response 重要: 8 h, 4 h, 1 working
    day, standard hours), shown by `run` and kept in result.json."""
    box = sandbox
    plan, approval = approved_plan(box, "7.0.4.6")
    capsys.readouterr()
    assert upgrader(box, "run", str(plan), "--approval", str(approval)) == 1
    out = capsys.readouterr().out.replace("\n", " ")
    assert "Severity level 3, moderate (response level: important)" in out
    assert "within 8 h, first call-back within 4 h, initial action plan within 1 working day" in out
    assert box.answers() == "7.0.4.1"
    (run,) = runs(box)
    sev = json.loads((run / "result.json").read_text())["severity"]
    assert sev["level"] == 3 and sev["name_zh"] == "一般" and sev["response_level_zh"] == "重要"


def test_a_rollback_that_fails_and_leaves_the_service_down_is_level_1(
        sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """7.0.4.6 cannot start and the rollback's after_rollback hook fails (the site's own step): the old files are
    back but the service is not started: level 1 (非常严重, 非常紧急: 2 h, 1 h, 2 h; 7×24 when booked), exit 5."""
    box = sandbox
    spec = yaml.safe_load((shipped_playbooks_dir() / "sample-middleware.yaml").read_text())
    spec["hooks"] = {"after_rollback": [{"command": "exit 3"}]}
    (box.root / "playbooks").mkdir()
    (box.root / "playbooks" / "sample-middleware.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    plan, approval = approved_plan(box, "7.0.4.6")
    capsys.readouterr()
    assert upgrader(box, "run", str(plan), "--approval", str(approval)) == 5
    out = capsys.readouterr().out.replace("\n", " ")
    assert "Severity level 1, very serious (response level: very urgent)" in out
    assert "within 2 h, first call-back within 1 h, initial action plan within 2 h" in out and "7×24" in out
    assert box.answers() is None
    (run,) = runs(box)
    assert json.loads((run / "result.json").read_text())["severity"]["level"] == 1


def test_the_guide_shows_the_level_in_chinese_after_a_failed_upgrade(sandbox: Sandbox) -> None:
    """The guide, 7.0.4.6 rolled back: 故障级别 三级 一般 with 响应级别 重要 and its response times and hours."""
    box = sandbox
    plan, approval = approved_plan(box, "7.0.4.6")
    child = guide(box, "--plan", str(plan), "--approval", str(approval), lang="zh")
    answer_until_stop(child, "zh")
    child.sendline("是")
    child.expect("故障级别：三级 一般（响应级别：重要）")
    child.expect("8 小时内响应，4 小时内首次回电，1 个工作日内给出初步处理方案")
    child.expect("仅限标准服务时间：工作日 9:00–18:00（北京时间），法定节假日除外")
    assert child.finish() == 1
    assert box.answers() == "7.0.4.1"


def test_a_killed_run_rolled_back_by_resume_is_level_3_and_not_called_untouched(
        sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """`upgrader run` is killed (SIGKILL at a fault point, as tests/test_kill_matrix.py places it) after it
    stopped the service and installed 7.0.4.2; `upgrader resume` rolls it back to a healthy 7.0.4.1: level 3 with
    the rolled-back reason, never the old false "failed before the service was touched"."""
    import os
    import subprocess
    import sys

    box = sandbox
    plan, approval = approved_plan(box, "7.0.4.2")
    upgrader_bin = str(Path(sys.executable).with_name("upgrader"))
    killed = subprocess.run([upgrader_bin, "--home", str(box.root), "run", str(plan), "--approval", str(approval)],
                            env={**os.environ, "PYTHON": sys.executable, **fault_env(kill_at="install:finished")},
                            capture_output=True, timeout=120)
    assert killed.returncode == -9 and box.answers() is None  # killed with the service stopped
    (run,) = runs(box)
    capsys.readouterr()
    assert upgrader(box, "resume", run.name) == 1
    out = capsys.readouterr().out.replace("\n", " ")
    assert "Severity level 3, moderate (response level: important)" in out
    assert "before the service was touched" not in out and "rolled back" in out
    assert box.answers() == "7.0.4.1"
    sev = json.loads((run / "result.json").read_text())["severity"]
    assert sev["level"] == 3 and "rolled back" in sev["rule"]
