"""The wheel as users install it: built from the checkout, installed in a fresh venv, working without the checkout."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import faketime_env, product_digest

REPO = Path(__file__).resolve().parent.parent


def run(argv: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the upgrader wheel (built from this checkout) and its dependencies installed."""
    tmp = tmp_path_factory.mktemp("wheel")
    wheels = tmp / "dist"
    res = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(REPO)], cwd=tmp)
    assert res.returncode == 0, res.stderr
    (wheel,) = wheels.glob("upgrader-*.whl")
    venv = tmp / "venv"
    res = run([sys.executable, "-m", "venv", str(venv)], cwd=tmp)
    assert res.returncode == 0, res.stderr
    res = run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
               str(wheel)], cwd=tmp)
    assert res.returncode == 0, res.stderr
    return venv


@pytest.mark.slow
def test_installed_console_script_checks_versions(installed, tmp_path):
    """`<venv>/bin/upgrader versions check 7.0.4.1 7.0.4.2` exits 0 from outside the checkout; 7.1.0.0 exits 3."""
    ok = run([str(installed / "bin" / "upgrader"), "versions", "check", "7.0.4.1", "7.0.4.2", "--json"], cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["allowed"] is True
    refused = run([str(installed / "bin" / "upgrader"), "versions", "check", "7.0.4.1", "7.1.0.0"], cwd=tmp_path)
    assert refused.returncode == 3


@pytest.mark.slow
def test_installed_package_finds_its_shipped_playbooks_and_default_policy(installed, tmp_path):
    """The installed package (not the checkout) lists its three shipped playbooks and loads its default policy."""
    code = (
        "import json, upgrader\n"
        "from upgrader.core.playbook import shipped_playbooks_dir, load_playbook\n"
        "from version_policy import default_policy_path, load_policy\n"
        "d = shipped_playbooks_dir()\n"
        "print(json.dumps({'module': upgrader.__file__, 'dir': str(d),\n"
        "    'playbooks': sorted(p.name for p in d.glob('*.yaml')),\n"
        "    'products': sorted(load_playbook(p).product for p in d.glob('*.yaml')),\n"
        "    'policy': str(default_policy_path()), 'policy_source': load_policy().source}))\n"
    )
    res = run([str(installed / "bin" / "python"), "-c", code], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["module"].startswith(str(installed))
    assert info["dir"].startswith(str(installed))
    assert info["playbooks"] == ["sample-middleware.yaml", "tomcat.yaml", "tongweb.yaml"]
    assert info["products"] == ["sample-middleware", "tomcat", "tongweb"]
    assert info["policy"].startswith(str(installed)) and info["policy"].endswith("default-policy.yaml")
    assert Path(info["policy"]).is_file()


@pytest.mark.slow
def test_installed_help_works_without_the_checkout(installed, tmp_path):
    """`<venv>/bin/upgrader --help` exits 0 and lists the commands, run far from the checkout."""
    res = run([str(installed / "bin" / "upgrader"), "--help"], cwd=tmp_path)
    assert res.returncode == 0
    for command in ("plan", "run", "rollback", "versions", "package"):
        assert command in res.stdout


@pytest.mark.slow
def test_the_old_test_variables_change_nothing_on_the_installed_product(installed, sandbox, tmp_path):
    """UPGRADER_TEST_NOW, UPGRADER_TEST_KILL_AT and UPGRADER_TEST_PAUSE_AT, left set in a shell or a CI job, do not move
    the installed product's clock (an expired approval stays expired: exit 4, the host untouched), kill it or hold
    it: the run goes through at once and upgrades the host."""
    box = sandbox
    upgrader_bin = str(installed / "bin" / "upgrader")
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("UPGRADER_")}
    made_at = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=2)

    def cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([upgrader_bin, "--home", str(box.root), *argv], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300, env={**clean, **(env or {})})

    # planned and approved (for one hour) two days ago, as libfaketime makes the system clock say
    old = faketime_env(made_at.isoformat())
    plan, approval = box.plans / "old.json", box.approvals / "old.approval"
    made = cli("plan", "--inventory", str(box.inventory), "--to", "7.0.4.2", "--catalog", str(box.catalog),
               "--key", str(box.requester_key), "-o", str(plan), env=old)
    assert made.returncode == 0, made.stderr
    signed = cli("approve", str(plan), "--key", str(box.engineer_key), "--expires", "1h", "-o", str(approval), env=old)
    assert signed.returncode == 0, signed.stderr
    before = product_digest(box.install_dir)
    inside_the_hour = (made_at + datetime.timedelta(minutes=30)).isoformat()
    refused = cli("run", str(plan), "--approval", str(approval), env={"UPGRADER_TEST_NOW": inside_the_hour})
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert "expired" in refused.stderr
    assert product_digest(box.install_dir) == before and box.answers() == "7.0.4.1"
    assert not (box.root / "runs").is_dir() or not list((box.root / "runs").iterdir())

    fresh = box.plans / "fresh.json"
    assert cli("plan", "--inventory", str(box.inventory), "--to", "7.0.4.2", "--catalog", str(box.catalog),
               "--key", str(box.requester_key), "-o", str(fresh)).returncode == 0
    approval = box.approvals / "fresh.approval"
    assert cli("approve", str(fresh), "--key", str(box.engineer_key), "-o", str(approval)).returncode == 0
    started = time.monotonic()
    ran = cli("run", str(fresh), "--approval", str(approval),
              env={"UPGRADER_TEST_KILL_AT": "stop:before", "UPGRADER_TEST_PAUSE_AT": "stop"})
    took = time.monotonic() - started
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]  # not -9: not killed at stop:before
    assert took < 60, f"the run took {took:.0f} s: it was held at the stop check"
    assert box.wait_version("7.0.4.2", 10) == "7.0.4.2"
