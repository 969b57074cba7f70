"""attack12r23 M3: in a folder another account can write (a team's shared drop folder, 0777, not sticky), a link
planted at the name a command writes must never be written through: ``run --events FILE`` (the engine's event
stream) and ``keys generate PATH`` (a new private key and its .pub). Refused (exit 2) before anything runs, the
file the link points to left as it was; the shipped CLI in its own process, the link owned by account ``nobody``."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from test_trust_roots_13 import _untouched
from test_trust_roots_9 import _cli
from trust_support import pristine
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.exit_codes import ExitCode


def _shared_with_a_planted_link(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """(the victim: root's 0600 file; the link ``shared/NAME`` -> victim, planted by nobody)."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n", encoding="utf-8")
    victim.chmod(0o600)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    link = shared / name
    link.symlink_to(victim)
    os.lchown(link, 65534, 65534)  # nobody's link (pytest's folders above are root's 0700: nobody cannot reach them)
    assert link.is_symlink() and link.lstat().st_uid == 65534
    return victim, link


def _said(done: subprocess.CompletedProcess[str]) -> str:
    return " ".join((done.stdout + done.stderr).split())


def test_run_events_are_never_written_through_a_planted_link(sandbox: Sandbox, tmp_path: Path) -> None:
    before = pristine(sandbox)
    victim, link = _shared_with_a_planted_link(tmp_path, "events.jsonl")
    plan = tmp_path / "A.json"
    done = _cli(sandbox.root, "plan", "--inventory", str(sandbox.inventory), "--catalog",
                str(sandbox.catalog / "catalog.yaml"), "--to", "7.0.4.2", "--key", str(sandbox.requester_key),
                "-o", str(plan))
    assert done.returncode == ExitCode.OK, _said(done)
    approval = tmp_path / "A.approval"
    done = _cli(sandbox.root, "approve", str(plan), "--key", str(sandbox.engineer_key), "-o", str(approval))
    assert done.returncode == ExitCode.OK, _said(done)
    done = _cli(sandbox.root, "run", str(plan), "--approval", str(approval), "--events", str(link),
                env={"UPGRADER_AUDIT_KEY": str(sandbox.operator_key)})
    said = _said(done)
    assert done.returncode == ExitCode.BAD_INPUT, said
    assert "--events names a link" in said and str(link) in said and "Traceback" not in said, said
    assert victim.read_text(encoding="utf-8") == "precious\n" and victim.stat().st_mode & 0o777 == 0o600
    assert link.is_symlink()
    _untouched(before, sandbox)


@pytest.mark.parametrize("planted", ["key", "pub"])
def test_keys_generate_never_writes_through_a_planted_link(tmp_path: Path, planted: str) -> None:
    victim, link = _shared_with_a_planted_link(tmp_path, "engineer" if planted == "key" else "engineer.pub")
    victim.unlink()  # a dangling link: the key would be made where it points
    home = tmp_path / "home"
    home.mkdir()
    path = link.parent / "engineer"
    done = _cli(home, "keys", "generate", str(path))
    said = _said(done)
    assert done.returncode == ExitCode.BAD_INPUT, said
    assert "a key (or a link) already exists there" in said and "Traceback" not in said, said
    assert not victim.exists() and link.is_symlink()
    assert sorted(p.name for p in link.parent.iterdir()) == [link.name]
