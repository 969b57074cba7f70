"""Issue 12, round fourteen: the attacker's leftovers, played through the shipped CLI with real keys, a real
vendor-signed catalog and the real sample middleware.

F2 The controller took a plan's requester through any allowed_signers line of its key, ignoring ``namespaces=`` and
   ``valid-before=``: a requester the operator revoked the OpenSSH way (or a key listed only for the audit) still
   asked for plans. Now ``approve`` and ``run`` refuse (exit 4) naming the file, the line and why; the host untouched.
F3 ``upgrader access grant`` (no --user) let the engineer's key into the operator's own account, which holds the
   operator key that signs plans as their requester: the engineer signed a plan with it, approved it with their own
   key and ran it. Now an approval by a key with an open grant into the account whose operator key requested the
   plan is refused at approve and at run (exit 4) naming the grant id and the authorized_keys file.
F5 With a host trust root, a committed run could be rolled back (downgraded) at any later time by any controller
   holding a copy of its run dir, with no approval. Now root's host-trust.json ``rollback_hours`` (default 24) bounds
   it: later, the host refuses the run's lock/stop/rollback (exit 4) saying the limit and what to do instead.
Also seen (a): the plan's review said "process (pid N alive)" for a pid file that names a process not the service's
   (the service account points it at a root process). Now the review says it is NOT the service's own, by pid and
   uid only (never that process's command line), as the agent's own foreign_process reasoning decides.
Also seen (b): ``approve --as ENGINEER@vendor`` (another letter case) wrote an approval that every run refused (runs
   compare names exactly). Now approve refuses it (exit 4) naming the principal as allowed_signers spells it.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from test_trust_roots_6 import host_root  # noqa: F401 - the host trust root fixture (engineer, requester, vendor)
from test_trust_roots_13 import _approve, _plan, _run, _untouched
from test_trust_roots_9 import _cli
from trust_support import approval_signed_anyway, host_state, pristine, write_root_config
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.exit_codes import ExitCode
from upgrader.core.reasons import UNTRANSLATED, translate


def _requester_line(sandbox: Sandbox, options: str) -> int:
    """The operator rewrites the requester's allowed_signers line with ``options``; returns its line number."""
    signers = sandbox.keys / "allowed_signers"
    lines = signers.read_text(encoding="utf-8").splitlines()
    (n,) = [i for i, line in enumerate(lines) if line.startswith("requester@customer ")]
    lines[n] = f"requester@customer {options} " + " ".join(lines[n].split()[-2:])
    signers.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return n + 1


def _revoked_requester_refused(sandbox: Sandbox, tmp_path: Path, options: str, why: str) -> None:
    """The plan signed by the revoked requester: ``approve`` refuses it (exit 4) naming the file, the
    line and ``why``; an approval the engineer signs anyway is refused by the run (exit 4), the whole host untouched."""
    before = pristine(sandbox)
    line = _requester_line(sandbox, options)
    plan = _plan(sandbox, tmp_path)  # signing needs no listing: the requester still has the key
    signers = str(sandbox.keys / "allowed_signers")
    done = _cli(sandbox.root, "approve", str(plan), "--key", str(sandbox.engineer_key), "-o",
                str(tmp_path / "p.approval"))
    out = done.stdout + done.stderr
    assert done.returncode == ExitCode.APPROVAL_REFUSED, out
    assert signers in out and f"line {line}" in out and why in out and "Traceback" not in out, out
    assert not (tmp_path / "p.approval").exists()
    done = _run(sandbox, plan, approval_signed_anyway(sandbox, plan))
    out = done.stdout + done.stderr
    assert done.returncode == ExitCode.APPROVAL_REFUSED, out
    assert signers in out and f"line {line}" in out and why in out and "Traceback" not in out, out
    _untouched(before, sandbox)


def test_a_requester_revoked_by_namespace_and_expiry_cannot_ask_for_a_plan(sandbox: Sandbox, tmp_path: Path) -> None:
    """The attacker's repro: the requester's line now allows only the audit namespace and expired in 2020."""
    _revoked_requester_refused(sandbox, tmp_path, 'namespaces="upgrader-audit",valid-before="20200101"',
                               "leaves out 'upgrader-plan'")


def test_an_expired_requester_cannot_ask_for_a_plan(sandbox: Sandbox, tmp_path: Path) -> None:
    """The requester's line keeps the namespace upgrader-plan but expired (valid-before in the past)."""
    _revoked_requester_refused(sandbox, tmp_path, 'namespaces="upgrader-plan",valid-before="20200101"', "expired")


def test_approve_as_another_letter_case_is_refused_naming_the_listed_spelling(sandbox: Sandbox,
                                                                             tmp_path: Path) -> None:
    """``--as ENGINEER@vendor`` names the engineer's key only in another letter case: every run compares the name
    exactly, so approve refuses (exit 4), nothing written, naming ``engineer@vendor`` as allowed_signers spells it."""
    plan = _plan(sandbox, tmp_path)
    approval = tmp_path / "case.approval"
    done = _cli(sandbox.root, "approve", str(plan), "--key", str(sandbox.engineer_key), "--as", "ENGINEER@vendor",
                "-o", str(approval))
    out = done.stdout + done.stderr
    assert done.returncode == ExitCode.APPROVAL_REFUSED, out
    assert "'engineer@vendor'" in out and "Traceback" not in out, out
    assert not approval.exists()
    done = _cli(sandbox.root, "approve", str(plan), "--key", str(sandbox.engineer_key), "--as", "engineer@vendor",
                "-o", str(approval))
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr


def operator_plan_approved(sandbox: Sandbox, tmp_path: Path,
                           env: dict[str, str]) -> tuple[Path, Path, subprocess.CompletedProcess[str]]:
    """In the operator's account (``env``): a plan to 7.0.4.2 signed with the operator's key, then the engineer's
    ``approve`` of it: the plan, where the approval goes, and that approve's result."""
    plan = tmp_path / "op.json"
    done = _cli(sandbox.root, "plan", "--inventory", str(sandbox.inventory), "--catalog",
                str(sandbox.catalog / "catalog.yaml"), "--to", "7.0.4.2", "--key", str(sandbox.operator_key),
                "-o", str(plan), env=env)
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    approval = tmp_path / "op.approval"
    return plan, approval, _cli(sandbox.root, "approve", str(plan), "--key", str(sandbox.engineer_key), "-o",
                                str(approval), env=env)


def test_an_engineer_granted_into_the_operators_account_cannot_approve_the_operators_plan(
        sandbox: Sandbox, tmp_path: Path) -> None:
    """The attacker's repro in a scratch HOME (the operator's account): the operator's key is listed for plans (a
    guide deployment); ``access grant`` lets the engineer's key in; logged in there, the engineer signs a plan with
    the operator's key and approves it with their own. ``approve`` and ``run`` refuse (exit 4) naming the grant and
    the authorized_keys file, the host untouched. Once the grant is closed the grant no longer stands in the way."""
    before = pristine(sandbox)
    assert 'operator@customer namespaces="upgrader-plan,upgrader-audit"' in \
        (sandbox.keys / "allowed_signers").read_text(encoding="utf-8")  # the demo's operator signs the guide's plans
    home = tmp_path / "operator-home"
    home.mkdir()
    env = {"HOME": str(home)}
    done = _cli(sandbox.root, "access", "grant", "--key", str(sandbox.keys / "engineer.pub"), "--hours", "2",
                env=env)
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    authorized = home / ".ssh" / "authorized_keys"
    (grant,) = re.findall(r"upgrader-grant:(\w+)", authorized.read_text(encoding="utf-8"))
    plan, approval, done = operator_plan_approved(sandbox, tmp_path, env)
    out = done.stdout + done.stderr
    assert done.returncode == ExitCode.APPROVAL_REFUSED, out
    assert f"access grant {grant}" in out and str(authorized) in out and "Traceback" not in out, out
    assert not approval.exists()
    done = _cli(sandbox.root, "run", str(plan), "--approval", str(approval_signed_anyway(sandbox, plan)), "--yes",
                env={**env, "UPGRADER_AUDIT_KEY": str(sandbox.operator_key)})
    out = done.stdout + done.stderr
    assert done.returncode == ExitCode.APPROVAL_REFUSED, out
    assert f"access grant {grant}" in out and str(authorized) in out and "Traceback" not in out, out
    _untouched(before, sandbox)
    done = _cli(sandbox.root, "access", "revoke", grant, env=env)
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    done = _cli(sandbox.root, "approve", str(plan), "--key", str(sandbox.engineer_key), "-o", str(approval), env=env)
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr


def test_a_committed_run_is_not_rolled_back_after_roots_rollback_hours(sandbox: Sandbox, host_root: Path,
                                                                      tmp_path: Path) -> None:
    """Root allows no time for a later rollback (``rollback_hours: 0``): an approved run commits 7.0.4.2; its
    rollback, asked afterwards (no approval needed), is refused by the host (exit 4) naming rollback_hours and
    host-trust.json and saying what a person does instead; the host keeps 7.0.4.2 untouched. Root raises the limit:
    the same rollback restores 7.0.4.1."""
    write_root_config(host_root, rollback_hours=0)
    plan = _plan(sandbox, tmp_path)
    approval, _ = _approve(sandbox, plan)
    done = _run(sandbox, plan, approval)
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    (rid,) = [d.name for d in (sandbox.root / "runs").iterdir() if d.is_dir()]
    committed = host_state(sandbox)
    assert committed.version == "7.0.4.2"
    env = {"UPGRADER_AUDIT_KEY": str(sandbox.operator_key)}
    done = _cli(sandbox.root, "rollback", rid, "--yes", env=env)
    out = done.stdout + done.stderr
    assert done.returncode == ExitCode.APPROVAL_REFUSED, out
    assert "rollback_hours (0)" in out and "host-trust.json" in out and "by hand from the run's backup" in out, out
    assert "Traceback" not in out, out
    (said,) = re.findall(r"run \S+ committed here .*? or root raises rollback_hours there", out)
    zh = translate(said, "zh")  # the operator who reads Chinese gets the whole refusal in Chinese
    assert UNTRANSLATED not in zh and "rollback_hours（0 小时）" in zh and "手动恢复旧版本" in zh, zh
    _untouched(committed, sandbox)
    write_root_config(host_root, rollback_hours=24)
    done = _cli(sandbox.root, "rollback", rid, "--yes", env=env)
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    assert host_state(sandbox).version == "7.0.4.1"


def test_a_pid_file_the_service_account_points_at_a_root_process_is_refused_without_showing_its_command_line(
        sandbox: Sandbox, tmp_path: Path) -> None:
    """The service account (uid 65534) points run/server.pid at a root process. The review used to say the pid file
    names a process that is NOT the service's own; since the whole-tree rule (tests/test_host_paths_18.py) a pid file
    another account owns, in an install whose commands run as root, refuses the plan outright (exit 2) naming the
    file and its owner. Either way the victim's command line is never shown, and nothing signals it."""
    secret = "fix12k-not-for-the-review"
    victim = subprocess.Popen(["sh", "-c", f"exec sleep 600 # {secret}"])
    try:
        pid_file = sandbox.install_dir / "run" / "server.pid"
        aside = pid_file.with_name("server.pid.new")
        aside.write_text(f"{victim.pid}\n", encoding="utf-8")
        os.chown(aside, 65534, 65534)
        os.replace(aside, pid_file)
        plan = tmp_path / "foreign.json"
        done = _cli(sandbox.root, "plan", "--inventory", str(sandbox.inventory), "--catalog",
                    str(sandbox.catalog / "catalog.yaml"), "--to", "7.0.4.2", "--key", str(sandbox.requester_key),
                    "-o", str(plan))
        said = done.stdout + done.stderr
        assert done.returncode == ExitCode.BAD_INPUT, said
        assert f"{pid_file} is owned by nobody (uid 65534)" in " ".join(said.split()), said
        assert f"pid {victim.pid} alive" not in said and secret not in said and "sleep 600" not in said, said
        assert not plan.exists() and victim.poll() is None
        assert "Traceback" not in said
    finally:
        victim.kill()
        victim.wait()
