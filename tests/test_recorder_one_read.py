"""Issue 12, the one-read rule for the operator's audit principal: ``operator_identity`` (core/recorder.py) picks the
principal the run's audit events and checkpoint name from the operators' allowed_signers as the policy read them --
the bytes hashed into the policy's identity -- never from a second read of the file's path. A file swapped between
the policy's read and the principal's lookup once named the operator as whoever the new file said."""

from __future__ import annotations

from pathlib import Path

from upgrader.cli.commands.demo import Sandbox
from upgrader.core.recorder import operator_identity
from version_policy import load_policy


def test_the_audit_principal_comes_from_the_bytes_the_policy_read(sandbox: Sandbox) -> None:
    """The operator's policy is loaded (keys/allowed_signers read with it: operator@customer for the operator's key);
    then the file is swapped for one that lists the same key as ``auditor@elsewhere``. The operator is still named
    operator@customer, with no warning; a policy loaded after the swap reads the new name (the file is read)."""
    box = sandbox
    policy = load_policy(box.policy)
    signers = box.keys / "allowed_signers"
    original = signers.read_text(encoding="utf-8")
    assert "operator@customer" in original
    swapped = signers.with_name("allowed_signers.new")
    swapped.write_text(original.replace("operator@customer", "auditor@elsewhere"), encoding="utf-8")
    swapped.replace(signers)  # as an attacker renames a file over it
    me = operator_identity(box.root, policy, key_path=str(box.operator_key))
    assert me.principal == "operator@customer", me
    assert me.warning is None, me.warning
    later = operator_identity(box.root, load_policy(box.policy), key_path=str(box.operator_key))
    assert later.principal == "auditor@elsewhere", later


def test_a_missing_signers_file_leaves_the_default_principal(sandbox: Sandbox, tmp_path: Path) -> None:
    """The file the policy names is not there: the operator is ``user@host`` (as before), no error here (the
    checkpoint's verification says the file is missing)."""
    box = sandbox
    (box.keys / "allowed_signers").unlink()
    me = operator_identity(box.root, load_policy(box.policy), key_path=str(box.operator_key))
    assert me.principal == f"{me.user}@{me.host}" and me.warning is None, me
