"""attack12r23 M3: in a folder another account can write (a team's shared drop folder, 0777, not sticky), a link
planted at the name a command writes must never be written through: ``run --events FILE`` (the engine's event
stream) and ``keys generate PATH`` (a new private key and its .pub). Refused (exit 2) before anything runs, the
file the link points to left as it was; the shipped CLI in its own process, the link owned by account ``nobody``."""

from __future__ import annotations

import json
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


def _shared_with_a_planted_folder_link(tmp_path: Path) -> tuple[Path, Path]:
    """attack12r24 L1: (root's 0700 folder ``secret`` holding a 0600 ``victim``; the link ``shared/reports`` ->
    ``secret``, planted by nobody in the 0777 folder ``shared``)."""
    secret = tmp_path / "secret"
    secret.mkdir(mode=0o700)
    victim = secret / "victim"
    victim.write_text("precious\n", encoding="utf-8")
    victim.chmod(0o600)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    link = shared / "reports"
    link.symlink_to(secret)
    os.lchown(link, 65534, 65534)
    return victim, link


def test_no_output_is_written_through_another_accounts_link_on_the_way(sandbox: Sandbox, tmp_path: Path) -> None:
    """A link nobody planted as a FOLDER on the way (``shared/reports`` -> root's 0700 ``secret``): ``run --events
    shared/reports/victim`` truncated and rewrote root's file before; now ``run --events``, ``plan -o``, ``approve -o``
    and ``keys generate`` through it are refused (exit 2, naming the link and its owner), nothing written, nothing on
    the host changed. A link root (the user running upgrader) made on the way is still followed."""
    before = pristine(sandbox)
    victim, link = _shared_with_a_planted_folder_link(tmp_path)
    secret = victim.parent
    plan = tmp_path / "A.json"
    args = ["plan", "--inventory", str(sandbox.inventory), "--catalog", str(sandbox.catalog / "catalog.yaml"),
            "--to", "7.0.4.2", "--key", str(sandbox.requester_key), "-o"]
    done = _cli(sandbox.root, *args, str(link / "A.json"))
    said = _said(done)
    assert done.returncode == ExitCode.BAD_INPUT, said
    assert "reports is a link" in said and "nobody (uid 65534)" in said and "Traceback" not in said, said
    assert sorted(p.name for p in secret.iterdir()) == ["victim"]
    done = _cli(sandbox.root, *args, str(plan))
    assert done.returncode == ExitCode.OK, _said(done)
    approval = tmp_path / "A.approval"
    done = _cli(sandbox.root, "approve", str(plan), "--key", str(sandbox.engineer_key), "-o",
                str(link / "A.approval"))
    assert done.returncode == ExitCode.BAD_INPUT and "reports is a link" in _said(done), _said(done)
    done = _cli(sandbox.root, "approve", str(plan), "--key", str(sandbox.engineer_key), "-o", str(approval))
    assert done.returncode == ExitCode.OK, _said(done)
    done = _cli(sandbox.root, "run", str(plan), "--approval", str(approval), "--events", str(link / "victim"),
                env={"UPGRADER_AUDIT_KEY": str(sandbox.operator_key)})
    said = _said(done)
    assert done.returncode == ExitCode.BAD_INPUT, said
    assert "--events" in said and "reports is a link" in said and "Traceback" not in said, said
    assert "Traceback" not in said and "run_started" not in (tmp_path / "secret" / "victim").read_text(), said
    assert not any(r.get("event") == "run_started" for r in map(json.loads, (sandbox.root / "audit" /
                                                                              "audit.jsonl").read_text().splitlines()))
    done = _cli(tmp_path, "keys", "generate", str(link / "engineer"))
    assert done.returncode == ExitCode.BAD_INPUT and "reports is a link" in _said(done), _said(done)
    assert victim.read_text(encoding="utf-8") == "precious\n" and victim.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in secret.iterdir()) == ["victim"] and link.is_symlink()
    _untouched(before, sandbox)
    mine = tmp_path / "mine"
    mine.symlink_to(secret)  # root's own link: followed
    done = _cli(tmp_path, "keys", "generate", str(mine / "engineer"))
    assert done.returncode == ExitCode.OK, _said(done)
    assert (secret / "engineer").is_file() and (secret / "engineer.pub").is_file()
