"""The seal of a run's "plan accepted" journal record: what ``resume``, ``rollback`` and the continuation after a
canary act on is the plan the run was accepted under, not whatever the operator's HOME now says.

The journal's own checksums only find torn lines: anyone who can write HOME can rewrite the accepted record (the
plan's digest, the catalog, the approvals) together with ``plan.json`` and compute the checksum again. So ``run``
signs the record with the key the run was accepted under (the operator's key, which signs the audit checkpoints),
in the operators' namespace ``upgrader-audit``, over a statement that starts with its own first line (no audit
checkpoint statement starts so) and names the run id, so a record sealed for one run cannot stand in another.
``resume`` and ``rollback`` check it against the operator's trust root, the audit ``allowed_signers`` of the
operator's policy (``audit.allowed_signers``, else ``approvals.allowed_signers``), never against a key file in
HOME, which the same writer could replace. The statement can be checked with stock OpenSSH too
(``ssh-keygen -Y verify -n upgrader-audit``).
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Mapping

from ..audit.redaction import redact_value
from ..core.errors import ApprovalRefused
from .signers import AllowedSigners
from .sshsig import PrivateKey, SignatureError, parse_armored, sign, verify

__all__ = ["NAMESPACE", "SEAL", "seal", "seal_statement", "check_seal"]

NAMESPACE = "upgrader-audit"  # the operators' namespace: their keys are listed for it in audit.allowed_signers
SEAL = "seal"  # the field of the record that holds the signature (outside what it signs)
_FIRST_LINE = "upgrader run seal 1"


def seal_statement(run_id: str, fields: Mapping[str, object]) -> bytes:
    """The exact bytes the seal signs: a first line of its own, the run id, the record's fields as canonical JSON
    (sorted keys, the seal itself left out)."""
    body = {k: v for k, v in fields.items() if k != SEAL}
    return (f"{_FIRST_LINE}\nrun: {run_id}\naccepted: "
            f"{json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(',', ':'))}\n").encode()


def seal(run_id: str, fields: Mapping[str, object], key: PrivateKey) -> str:
    """The seal of the record's ``fields`` as the journal will keep them: redacted (the journal redacts every record)
    and through JSON, so that the fields read back are the fields signed."""
    kept: dict[str, object] = json.loads(json.dumps(redact_value(dict(fields)), ensure_ascii=False, default=str))
    return sign(key, seal_statement(run_id, kept), NAMESPACE)


def check_seal(journal: Path, line: int, run_id: str, fields: Mapping[str, object], signers: AllowedSigners | None,
               now: _dt.datetime) -> str:
    """The fingerprint of the operator key that sealed the accepted record at ``line`` of ``journal``; ApprovalRefused
    (exit 4, naming the file and line and what to do) when there is no seal (a journal of an older upgrader), when it
    does not verify, or when ``signers`` (the operator's audit allowed_signers) do not list its key now."""
    where = f"{journal} line {line}"
    armored = fields.get(SEAL)
    if not armored:
        raise ApprovalRefused(
            f"{where}: the run's accepted plan is not sealed: the run was started by an older upgrader, which did "
            f"not sign it, so nothing proves it is the plan that was approved; run {run_id} cannot be resumed or "
            "rolled back by this upgrader, nothing was changed",
            hint=f"finish it with the upgrader that started it ('upgrader resume {run_id}' or 'upgrader rollback "
                 f"{run_id}' there), or put each host back by hand ('upgrader status' shows what each runs; the "
                 "run's backup is in the agent's state dir .upgrader-NAME beside the install, the playbook has the "
                 "stop and start commands), then make, approve and run a new plan")
    hint = ("the run's journal was edited after the run started: put the journal back from a backup of the "
            "operator's HOME, or make, approve and run a new plan")
    try:
        signature = parse_armored(str(armored))
        verify(signature, seal_statement(run_id, fields), NAMESPACE)
    except SignatureError as e:
        raise ApprovalRefused(f"{where}: the seal of the run's accepted plan does not verify ({e}): the record (plan "
                              "digest, catalog or approvals) was changed after the run started; nothing was changed",
                              hint=hint) from None
    if signers is None:
        raise ApprovalRefused(f"{where}: the operator's policy names no audit.allowed_signers to check the seal of the "
                              f"run's accepted plan against (key {signature.fingerprint}); nothing was changed",
                              hint="set audit.allowed_signers in the operator's policy to the file that lists the "
                                   "operators' keys (namespace upgrader-audit)")
    if not signers.principals_for(signature.public_key, NAMESPACE, now):
        raise ApprovalRefused(f"{where}: the run's accepted plan is sealed by key {signature.fingerprint}, "
                              f"which {signers.source} does not list for '{NAMESPACE}' now: it is not an operator's "
                              "key; nothing was changed",
                              hint=f"if it is an operator's key, add its line to {signers.source} "
                                   f"(namespaces=\"{NAMESPACE}\"); otherwise {hint[0].lower() + hint[1:]}")
    return signature.fingerprint
