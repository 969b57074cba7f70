"""The wheel as users install it: built from the checkout, installed in a fresh venv, working without the checkout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
        "from upgrader.playbook import shipped_playbooks_dir, load_playbook\n"
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
