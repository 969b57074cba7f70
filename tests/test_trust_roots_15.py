"""Issue 12, round sixteen (attack12r16 M2): a granted engineer still approved the operator's plan.

(a) While ``access grant`` let the engineer into the operator's own account, the engineer added a SECOND key of their
    own (or a ``cert-authority`` line) to its authorized_keys; the grant was revoked, no grant was left, ``access list``
    showed nothing, and the engineer's approval of a plan the operator's account signed was accepted. Now a grant into
    the account keeps the keys that let anyone in when it was made (and when it was revoked): a key added in between
    that still logs in refuses the engineer's approval at ``approve`` and at ``run`` (exit 4, naming the file and the
    line), and ``access revoke`` and ``access list`` show the line. Removed, the approval is accepted again.
(b) The plan signed with another key the account keeps (HOME/keys/requester, not HOME/keys/operator or ~/.ssh/id_*)
    escaped the check: every private key of HOME/keys and ~/.ssh is now the account's.
All through the shipped CLI, with real keys and the real sample middleware; the host untouched by the refused run.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from test_trust_roots_13 import _untouched
from test_trust_roots_14 import operator_plan_approved
from test_trust_roots_9 import _cli
from trust_support import approval_signed_anyway, pristine
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.exit_codes import ExitCode


def _grant(sandbox: Sandbox, tmp_path: Path) -> tuple[dict[str, str], str, Path]:
    """``access grant`` of the engineer's key into the operator's account (a scratch HOME): the account's
    environment, the grant's id and its authorized_keys."""
    home = tmp_path / "operator-home"
    home.mkdir(exist_ok=True)
    env = {"HOME": str(home)}
    done = _cli(sandbox.root, "access", "grant", "--key", str(sandbox.keys / "engineer.pub"), "--hours", "2", env=env)
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    authorized = home / ".ssh" / "authorized_keys"
    (grant,) = re.findall(r"upgrader-grant:(\w+)", authorized.read_text(encoding="utf-8"))
    return env, grant, authorized


def _second_key(tmp_path: Path) -> str:
    """The engineer's second key pair, made on their own: its public line."""
    key = tmp_path / "engineer-second"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mine", "-f", str(key)], check=True)
    return key.with_suffix(".pub").read_text(encoding="utf-8").strip()


def _run_refused(sandbox: Sandbox, plan: Path, env: dict[str, str], said: str) -> None:
    """The run of ``plan`` with the engineer's approval signed anyway is refused (exit 4) saying ``said``."""
    done = _cli(sandbox.root, "run", str(plan), "--approval", str(approval_signed_anyway(sandbox, plan)), "--yes",
                env={**env, "UPGRADER_AUDIT_KEY": str(sandbox.operator_key)})
    out = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == ExitCode.APPROVAL_REFUSED, out
    assert said in out and "Traceback" not in out, out


@pytest.mark.parametrize("prefix", ["", "cert-authority "])
def test_a_key_the_engineer_added_during_the_grant_refuses_their_approval_after_the_revoke(
        sandbox: Sandbox, tmp_path: Path, prefix: str) -> None:
    """(a) The attacker's repro: logged in through the grant, the engineer appends their second key (or a
    cert-authority line for their own CA) to the account's authorized_keys; the operator revokes the grant. The revoke
    and ``access list`` name the line; the engineer's approval of the operator-signed plan is refused at approve and
    at run (exit 4) naming the file and the line, nothing written, the host untouched. The operator removes the line:
    the approval is accepted."""
    before = pristine(sandbox)
    env, grant, authorized = _grant(sandbox, tmp_path)
    with authorized.open("a", encoding="utf-8") as f:  # the engineer, logged in as the operator
        f.write(prefix + _second_key(tmp_path) + "\n")
    added = len(authorized.read_text(encoding="utf-8").splitlines())
    done = _cli(sandbox.root, "access", "revoke", grant, env=env)
    out = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == ExitCode.OK, out
    assert f"{authorized} line {added - 1} lets the key" in out and f"while grant {grant} was open" in out, out
    assert "upgrader-grant" not in authorized.read_text(encoding="utf-8")  # the grant itself is gone
    done = _cli(sandbox.root, "access", "list", "--json", env=env)
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    (host,) = json.loads(done.stdout)["hosts"]
    assert host["grants"] == [] and [(a["file"], a["line"], a["grant"]) for a in host["added_during_grants"]] == \
        [(str(authorized), added - 1, grant)], host
    plan, approval, done = operator_plan_approved(sandbox, tmp_path, env)
    out = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == ExitCode.APPROVAL_REFUSED, out
    assert f"{authorized} line {added - 1} lets the key" in out and f"access grant {grant}" in out, out
    assert "remove that line" in out and "Traceback" not in out, out
    assert not approval.exists()
    _run_refused(sandbox, plan, env, f"{authorized} line {added - 1} lets the key")
    _untouched(before, sandbox)
    assert len(authorized.read_text(encoding="utf-8").splitlines()) == 1
    authorized.write_text("", encoding="utf-8")  # the operator removes the engineer's line
    done = _cli(sandbox.root, "approve", str(plan), "--key", str(sandbox.engineer_key), "-o", str(approval), env=env)
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr


def test_a_key_the_operator_had_before_the_grant_does_not_count(sandbox: Sandbox, tmp_path: Path) -> None:
    """A key that let someone in before the grant was made (the operator's own line) is not the engineer's: once the
    grant is revoked, the engineer's approval of the operator's plan is accepted."""
    (tmp_path / "operator-home" / ".ssh").mkdir(parents=True)
    (tmp_path / "operator-home" / ".ssh" / "authorized_keys").write_text(_second_key(tmp_path) + "\n",
                                                                         encoding="utf-8")
    env, grant, _ = _grant(sandbox, tmp_path)
    done = _cli(sandbox.root, "access", "revoke", grant, env=env)
    assert done.returncode == ExitCode.OK and "lets the key" not in done.stdout + done.stderr, done.stdout
    _, approval, done = operator_plan_approved(sandbox, tmp_path, env)
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    assert approval.exists()


def test_a_plan_signed_with_another_key_of_the_account_is_refused_while_the_grant_is_open(
        sandbox: Sandbox, tmp_path: Path) -> None:
    """(b) The engineer, logged in through the grant, signs the plan with HOME/keys/requester (a key the account keeps
    beside HOME/keys/operator) and approves it with their own key: refused at approve and at run (exit 4) naming the
    grant and the authorized_keys file; the host untouched."""
    before = pristine(sandbox)
    env, grant, authorized = _grant(sandbox, tmp_path)
    plan = tmp_path / "requester.json"
    done = _cli(sandbox.root, "plan", "--inventory", str(sandbox.inventory), "--catalog",
                str(sandbox.catalog / "catalog.yaml"), "--to", "7.0.4.2", "--key", str(sandbox.requester_key),
                "-o", str(plan), env=env)
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    assert sandbox.requester_key.parent == sandbox.root / "keys"  # HOME/keys/requester
    approval = tmp_path / "requester.approval"
    done = _cli(sandbox.root, "approve", str(plan), "--key", str(sandbox.engineer_key), "-o", str(approval), env=env)
    out = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == ExitCode.APPROVAL_REFUSED, out
    assert f"access grant {grant}" in out and str(authorized) in out and "Traceback" not in out, out
    assert not approval.exists()
    _run_refused(sandbox, plan, env, f"access grant {grant}")
    _untouched(before, sandbox)


def _login_key_granted(sandbox: Sandbox, tmp_path: Path) -> tuple[dict[str, str], Path]:
    """``access grant`` into the operator's account (a scratch HOME) of a login key the engineer made for it, not the
    key they approve with: the account's environment and its HOME."""
    home = tmp_path / "operator-home"
    home.mkdir()
    env = {"HOME": str(home)}
    login = tmp_path / "engineer-login"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "login", "-f", str(login)], check=True)
    done = _cli(sandbox.root, "access", "grant", "--key", str(login.with_suffix(".pub")), "--hours", "2", env=env)
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    return env, home


def test_a_grant_of_another_key_still_refuses_the_approval_of_a_plan_the_account_signed(
        sandbox: Sandbox, tmp_path: Path) -> None:
    """attack12r19 H1: the engineer is let into the operator's account with one key (the grant's) and approves with
    another of their own (the listed engineer key, which the grant does not name); logged in, they signed the plan
    with a key the account holds. While any grant lets anyone into the account, an approval of a plan signed by the
    account's keys is refused at approve and at run (exit 4), naming the grant, the host untouched; revoked, the
    approval is accepted."""
    before = pristine(sandbox)
    env, home = _login_key_granted(sandbox, tmp_path)
    (grant,) = re.findall(r"upgrader-grant:(\w+)", (home / ".ssh" / "authorized_keys").read_text(encoding="utf-8"))

    plan, approval, done = operator_plan_approved(sandbox, tmp_path, env)
    out = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == ExitCode.APPROVAL_REFUSED, out
    assert f"access grant {grant}" in out and "lets an engineer log in to this account" in out, out
    assert not approval.exists()
    _run_refused(sandbox, plan, env, f"access grant {grant}")
    _untouched(before, sandbox)

    done = _cli(sandbox.root, "access", "revoke", grant, env=env)
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    plan, approval, done = operator_plan_approved(sandbox, tmp_path, env)
    assert done.returncode == ExitCode.OK and approval.exists(), done.stdout + done.stderr


def test_a_grant_whose_marker_the_engineer_removed_still_refuses_the_approval(
        sandbox: Sandbox, tmp_path: Path) -> None:
    """attack12r20 H1: logged in through the grant, the engineer deleted the ``upgrader-grant:`` marker from their own
    line (so no grant was listed), signed the plan with the account's key and approved it with another key of their
    own. A line of a key a grant into this account was made for lets that engineer in whatever its comment: the
    approval is refused (exit 4), naming the line."""
    env, home = _login_key_granted(sandbox, tmp_path)
    authorized = home / ".ssh" / "authorized_keys"
    text = authorized.read_text(encoding="utf-8")
    assert "upgrader-grant:" in text
    authorized.write_text(re.sub(r"upgrader-grant:\S*", "mine", text), encoding="utf-8")  # the engineer's edit
    plan, approval, done = operator_plan_approved(sandbox, tmp_path, env)
    out = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == ExitCode.APPROVAL_REFUSED, out
    assert f"{authorized} line 1 (the key of an access grant into this account, its grant marker gone)" in out, out
    assert not approval.exists()


def test_guide_discovery_skips_a_playbook_another_account_could_change(tmp_path: Path) -> None:
    """attack12r20 M1: without an inventory, the guide identifies the install with the operator's playbooks and the
    shipped ones; a HOME/playbooks file another account could write had its command probe run as root there. Such a
    playbook is not used to identify anything (the shipped one of the same name is used instead)."""
    import shutil

    from upgrader.core.discovery import shipped_playbooks
    from upgrader.core.playbook import shipped_playbooks_dir

    mine = tmp_path / "playbooks"
    mine.mkdir()
    planted = mine / "sample-middleware.yaml"
    shutil.copy(shipped_playbooks_dir() / "sample-middleware.yaml", planted)
    assert any(pb.path == planted for pb in shipped_playbooks([mine]))  # the operator's own: used
    mine.chmod(0o777)
    try:
        found = shipped_playbooks([mine])
    finally:
        mine.chmod(0o755)
    assert not any(pb.path == planted for pb in found)
    assert any(pb.name == "sample-middleware" and pb.path.parent == shipped_playbooks_dir() for pb in found)
