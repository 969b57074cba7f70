"""Issue 12, round fourteen: the attacker's leftovers, played through the shipped CLI with real keys, a real
vendor-signed catalog and the real sample middleware.

F2 The controller took a plan's requester through any allowed_signers line of its key, ignoring ``namespaces=`` and
   ``valid-before=``: a requester the operator revoked the OpenSSH way (or a key listed only for the audit) still
   asked for plans. Now ``approve`` and ``run`` refuse (exit 4) naming the file, the line and why; the host untouched.
Also seen (b): ``approve --as ENGINEER@vendor`` (another letter case) wrote an approval that every run refused (runs
   compare names exactly). Now approve refuses it (exit 4) naming the principal as allowed_signers spells it.
"""

from __future__ import annotations

from pathlib import Path

from test_trust_roots_13 import _plan, _run, _untouched
from test_trust_roots_9 import _cli
from trust_support import approval_signed_anyway, pristine
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.exit_codes import ExitCode


def _requester_line(sandbox: Sandbox, options: str) -> int:
    """The operator rewrites the requester's allowed_signers line with ``options``; returns its line number."""
    signers = sandbox.keys / "allowed_signers"
    lines = signers.read_text(encoding="utf-8").splitlines()
    (n,) = [i for i, line in enumerate(lines) if line.startswith("requester@customer ")]
    lines[n] = f"requester@customer {options} " + " ".join(lines[n].split()[-2:])
    signers.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return n + 1


def _revoked_requester_refused(sandbox: Sandbox, tmp_path: Path, options: str, why: str) -> None:
    """The plan signed by the revoked requester: ``plan show`` and ``approve`` refuse it (exit 4) naming the file, the
    line and ``why``; an approval the engineer signs anyway is refused by the run (exit 4), the whole host untouched."""
    before = pristine(sandbox)
    line = _requester_line(sandbox, options)
    plan = _plan(sandbox, tmp_path)  # signing needs no listing: the requester still has the key
    signers = str(sandbox.keys / "allowed_signers")
    for argv in (("plan", "show", str(plan)),
                 ("approve", str(plan), "--key", str(sandbox.engineer_key), "-o", str(tmp_path / "p.approval"))):
        done = _cli(sandbox.root, *argv)
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
