"""Issue 12, attack12r20 (open) and attack12r18 M2, played through the shipped CLI.

1. The grant records (HOME/access/grants/ID.json) are the account's files: the engineer, logged in through the grant,
   deletes or rewrites them. The audit log holds every grant into the account (the key, the keys that let anyone in
   before it, those at its revoke); the approval checks read both, and a grant the log holds whose record is gone is
   refused on its own (exit 4, en + zh, the grant named and what to do). ``access revoke ID`` writes it back.
2. The newest catalog serial a host accepted is kept per machine too: a sibling install on the same host is not
   upgraded from an older catalog (exit 4, en + zh), nothing on the host changed.
3. ``run``, ``resume`` and ``rollback`` print the policy they use (source and digest) before anything runs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from test_trust_roots_13 import _untouched
from test_trust_roots_14 import operator_plan_approved
from test_trust_roots_15 import _grant, _login_key_granted, _run_refused, _second_key
from test_trust_roots_9 import _cli
from trust_support import pristine
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.exit_codes import ExitCode


def _records(sandbox: Sandbox) -> Path:
    return sandbox.root / "access" / "grants"


def _logged(sandbox: Sandbox, event: str) -> list[dict[str, object]]:
    lines = (sandbox.root / "audit" / "audit.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["data"] for line in lines if json.loads(line)["event"] == event]


def test_deleted_grant_records_still_refuse_the_approval_and_are_a_refusal_of_their_own(
        sandbox: Sandbox, tmp_path: Path) -> None:
    """attack12r20: the engineer, logged in through the grant, adds a second key of their own to the account's
    authorized_keys; the operator revokes the grant; the engineer (still let in by their second key) deletes
    HOME/access/grants/*.json. Their approval of the operator-signed plan is refused at approve and at run (exit 4):
    the record of the grant is gone (en + zh, naming the grant and ``access revoke ID``); the host untouched, no
    approval written. ``access revoke ID`` writes the record back from the log; then the refusal names the added key's
    line, as before the records were deleted."""
    before = pristine(sandbox)
    env, grant, authorized = _grant(sandbox, tmp_path)
    with authorized.open("a", encoding="utf-8") as f:  # the engineer, logged in as the operator
        f.write(_second_key(tmp_path) + "\n")
    done = _cli(sandbox.root, "access", "revoke", grant, env=env)
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    (granted,) = _logged(sandbox, "access_granted")
    (revoked,) = _logged(sandbox, "access_revoked")
    assert granted["keys_before"] == [] and len(revoked["keys_at_revoke"]) == 1, (granted, revoked)
    records = _records(sandbox)
    assert [p.name for p in records.iterdir()] == [f"{grant}.json"]
    for record in records.iterdir():  # the engineer hides what the grant let in
        record.unlink()

    plan, approval, done = operator_plan_approved(sandbox, tmp_path, env)
    out = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == ExitCode.APPROVAL_REFUSED, out
    assert f"the record of access grant {grant} is gone: {records / (grant + '.json')} is missing" in out, out
    assert f"访问授权 {grant} 的记录已不存在" in out and f"upgrader access revoke {grant}" in out, out
    assert "Traceback" not in out and not approval.exists(), out
    _run_refused(sandbox, plan, env, f"the record of access grant {grant} is gone")
    _untouched(before, sandbox)

    done = _cli(sandbox.root, "access", "revoke", grant, env=env)  # the operator writes it back from the log
    out = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == ExitCode.OK and f"the record of grant {grant} was gone" in out, out
    assert json.loads((records / f"{grant}.json").read_text(encoding="utf-8"))["keys_at_revoke"] == \
        revoked["keys_at_revoke"]
    assert _logged(sandbox, "access_record_restored") == [{"grant": grant, "user": _logged(sandbox, "access_granted")[0]
                                                           ["user"], "file": str(authorized)}]
    done = _cli(sandbox.root, "audit", "verify", env=env)
    assert "unknown event" not in done.stdout + done.stderr, done.stdout + done.stderr
    _, approval, done = operator_plan_approved(sandbox, tmp_path, env)
    out = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == ExitCode.APPROVAL_REFUSED, out
    assert f"{authorized} line 1 lets the key" in out and f"access grant {grant}" in out, out
    assert not approval.exists()


def test_a_rewritten_grant_record_does_not_hide_the_key_the_engineer_added(sandbox: Sandbox, tmp_path: Path) -> None:
    """The engineer rewrites the record instead (readable; their added key listed as one the account had before the
    grant, the revoke's keys emptied): the audit log's events still say the key came in during the grant, so the
    approval is refused (exit 4) naming the line, at approve and at run; the host untouched."""
    before = pristine(sandbox)
    env, grant, authorized = _grant(sandbox, tmp_path)
    with authorized.open("a", encoding="utf-8") as f:
        f.write(_second_key(tmp_path) + "\n")
    assert _cli(sandbox.root, "access", "revoke", grant, env=env).returncode == ExitCode.OK
    record = _records(sandbox) / f"{grant}.json"
    data = json.loads(record.read_text(encoding="utf-8"))
    data["keys_before"], data["keys_at_revoke"] = list(data["keys_at_revoke"]), []
    record.write_text(json.dumps(data), encoding="utf-8")

    plan, approval, done = operator_plan_approved(sandbox, tmp_path, env)
    out = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == ExitCode.APPROVAL_REFUSED, out
    assert f"{authorized} line 1 lets the key" in out and f"while access grant {grant} let that engineer in" in out, out
    assert not approval.exists()
    _run_refused(sandbox, plan, env, f"{authorized} line 1 lets the key")
    _untouched(before, sandbox)


def test_a_kept_granted_line_whose_record_was_deleted_still_refuses(sandbox: Sandbox, tmp_path: Path) -> None:
    """The engineer keeps their granted line (marker edited away) and deletes the record: refused (exit 4), the grant
    named; once the record is written back the line itself is named (the log knows the key)."""
    env, home = _login_key_granted(sandbox, tmp_path)
    authorized = home / ".ssh" / "authorized_keys"
    (grant,) = re.findall(r"upgrader-grant:(\w+)", authorized.read_text(encoding="utf-8"))
    authorized.write_text(re.sub(r"upgrader-grant:\S*", "mine", authorized.read_text(encoding="utf-8")),
                          encoding="utf-8")
    (_records(sandbox) / f"{grant}.json").unlink()
    _, approval, done = operator_plan_approved(sandbox, tmp_path, env)
    out = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == ExitCode.APPROVAL_REFUSED and f"the record of access grant {grant} is gone" in out, out
    assert not approval.exists()
    # the grant line is no longer a grant (its marker is gone): revoke finds no line, and writes the record back
    done = _cli(sandbox.root, "access", "revoke", grant, env=env)
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    _, approval, done = operator_plan_approved(sandbox, tmp_path, env)
    out = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == ExitCode.APPROVAL_REFUSED, out
    assert f"{authorized} line 1 (the key of an access grant into this account, its grant marker gone)" in out, out
    assert not approval.exists()
