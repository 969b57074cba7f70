"""`upgrader demo`, the README's first command, run as a user runs it: the installed script, in a terminal-less
shell whose PATH does not hold the virtual environment."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_demo_tells_the_whole_story_leaves_the_sandbox_and_prints_commands_that_work(tmp_path: Path) -> None:
    """Exit 0; DIR holds what PRODUCT.md lists; the audit log verifies; each "try next" line calls upgrader the
    way the user did (.venv/bin/upgrader, not on PATH) and the first of them runs as printed."""
    script = Path(sys.executable).parent / "upgrader"
    assert script.is_file(), f"the test runs from a virtual environment with upgrader installed: {script}"
    env = {**os.environ, "PATH": "/usr/bin:/bin", "COLUMNS": "400"}
    called = os.path.relpath(script, REPO)
    box = tmp_path / "demo"
    proc = subprocess.run([called, "demo", "--dir", str(box)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("inventory.yaml", "catalog/catalog.yaml", "catalog/catalog.yaml.sig", "keys/allowed_signers",
                 "hosts/app-01", "audit/audit.jsonl", "runs"):
        assert (box / name).exists(), name
    verify = subprocess.run([called, "--home", str(box), "audit", "verify"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    tail = proc.stdout.split("Try next, on the same sandbox:", 1)[1]
    lines = [line.strip() for line in tail.splitlines() if line.strip().startswith(called)]
    assert len(lines) >= 5, tail
    first = shlex.split(lines[0])
    assert first[1:3] == ["versions", "check"]
    check = subprocess.run(first, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
