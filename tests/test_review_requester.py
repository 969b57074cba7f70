"""The review names the requester by its key (issue 12, attack12r22 L1).

``plan --requester cto@customer --key keys/requester`` made ``plan show`` and ``approve`` print "requester:
cto@customer@HOST": a name the requester typed, for a key the operator's allowed_signers lists as
requester@customer. The review now names the key's principals in allowed_signers (``(not listed)`` when none), the
typed name only as "(said: ...)". Through the shipped CLI."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from test_trust_roots_9 import _cli
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.exit_codes import ExitCode


def _plan(sandbox: Sandbox, key: Path, name: str) -> Path:
    plan = sandbox.root / "plans" / f"{name}.json"
    done = _cli(sandbox.root, "plan", "--inventory", str(sandbox.inventory), "--catalog",
                str(sandbox.catalog / "catalog.yaml"), "--to", "7.0.4.2", "--key", str(key), "--requester",
                "cto@customer", "-o", str(plan))
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    return plan


def _requester_line(out: str) -> str:
    (line,) = [ln for ln in out.splitlines() if ln.startswith("requester:")]
    return " ".join(line.split())


def test_plan_show_and_approve_name_the_requester_by_the_keys_listed_principal(sandbox: Sandbox) -> None:
    plan = _plan(sandbox, sandbox.requester_key, "typed")
    done = _cli(sandbox.root, "plan", "show", str(plan))
    assert done.returncode == ExitCode.OK, done.stderr
    line = _requester_line(done.stdout)
    assert re.fullmatch(r"requester: requester@customer \(said: cto@customer@\S+\), signed with key SHA256:\S+",
                        line), line
    shown = _cli(sandbox.root, "plan", "show", str(plan), "--json")
    assert shown.returncode == ExitCode.OK, shown.stderr
    assert json.loads(shown.stdout)["requester"]["listed_as"] == ["requester@customer"]
    approval = plan.with_suffix(".approval")
    done = _cli(sandbox.root, "approve", str(plan), "--key", str(sandbox.engineer_key), "-o", str(approval))
    assert done.returncode == ExitCode.OK and approval.exists(), done.stdout + done.stderr
    assert _requester_line(done.stdout) == line


def test_a_plan_signed_by_a_key_allowed_signers_does_not_list_shows_not_listed(sandbox: Sandbox,
                                                                               tmp_path: Path) -> None:
    key = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "cto@customer", "-f", str(key)], check=True)
    plan = _plan(sandbox, key, "stranger")
    done = _cli(sandbox.root, "plan", "show", str(plan))
    assert done.returncode == ExitCode.OK, done.stderr
    line = _requester_line(done.stdout)
    assert re.fullmatch(r"requester: \(not listed\) \(said: cto@customer@\S+\), signed with key SHA256:\S+",
                        line), line
    assert "cto@customer," not in line
