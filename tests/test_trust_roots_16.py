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

from hoststate import assert_host_untouched
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


# ---------------------------------------------------------------- 2. the catalog serial, per machine


def test_a_sibling_install_on_the_same_machine_is_not_upgraded_from_an_older_catalog(
        sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """attack12r18 M2: install A (this sandbox) is upgraded from the vendor's catalog serial 2; install B, a sibling on
    the same machine with a controller of its own, planned and approved with serial 1 before that. B's run is refused
    at its lock (exit 4, en + zh) and so is a new plan (exit 4): the machine remembers serial 2, B's own ledger never
    saw it. Nothing on B, on A or in the machine's record changed."""
    from test_trust_roots import _plan, _upgraded_once
    from conftest import approve, kill_processes_under
    from trust_support import cli, copy_catalog, host_state, state_dir, vendor_catalog
    from upgrader.cli.commands.demo import build_sandbox
    from upgrader.hostagent.ledger import MACHINE_LEDGER_ROOT

    sibling = build_sandbox(tmp_path / "sibling")
    sibling.start_service()
    try:
        rc, err, old_plan = _plan(sibling, capsys, "old-catalog")
        assert rc == ExitCode.OK, err
        old_approval = approve(sibling, old_plan)
        newer = copy_catalog(sandbox, "catalog-serial-2")
        vendor_catalog(sandbox, newer, serial=2)
        _upgraded_once(sandbox, capsys, catalog=newer)
        machine = Path(MACHINE_LEDGER_ROOT) / "catalog-serials.json"
        assert json.loads(machine.read_text(encoding="utf-8")) == {"sample-middleware": 2}
        assert not (state_dir(sibling.install_dir) / "catalog-serials.json").exists()
        before = {"a": host_state(sandbox), "b": pristine(sibling)}
        recorded = machine.read_bytes()

        rc, err = cli(sibling, capsys, "run", str(old_plan), "--approval", str(old_approval))
        said = " ".join(err.split())
        assert rc == ExitCode.APPROVAL_REFUSED, err
        assert "catalog serial 1 is older than serial 2 this host was already upgraded from" in said, said
        assert "another one on this machine" in said and "目录序号 1 比本机" in said and "Traceback" not in said, said
        rc, err, again = _plan(sibling, capsys, "old-catalog-again")
        said = " ".join(err.split())
        assert rc == ExitCode.APPROVAL_REFUSED and "目录序号 1 比本机" in said, said
        assert not again.exists()
        after_b = host_state(sibling)
        new = [r for r in after_b.home_runs if r not in before["b"].home_runs]
        assert len(new) <= 1, new
        assert_host_untouched(before["b"], after_b, run_record=new[0] if new else None)
        assert_host_untouched(before["a"], host_state(sandbox))
        assert machine.read_bytes() == recorded
    finally:
        sibling.stop_service()
        kill_processes_under(tmp_path / "sibling")


# ---------------------------------------------------------------- 3. the policy a run uses, said before it runs


def test_run_and_rollback_say_which_policy_they_use_before_anything_runs(sandbox: Sandbox, tmp_path: Path) -> None:
    """``run`` and ``rollback`` print one line naming the operator's policy (its source and sha256) before the first
    phase; with ``--json`` the line goes to stderr and stdout stays one JSON document."""
    import hashlib

    from conftest import approve, signed_plan

    plan = tmp_path / "p.json"
    done = _cli(sandbox.root, *signed_plan(sandbox, ["plan", "--inventory", str(sandbox.inventory), "--catalog",
                                                     str(sandbox.catalog / "catalog.yaml"), "--to", "7.0.4.2",
                                                     "-o", str(plan)]))
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    digest = hashlib.sha256(sandbox.policy.read_bytes()).hexdigest()
    line = f"policy: {sandbox.policy} (sha256 {digest})"
    done = _cli(sandbox.root, "run", str(plan), "--approval", str(approve(sandbox, plan)))
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    out = done.stdout
    assert out.count(line) == 1 and out.index(line) < out.index("preflight"), out
    (run_id,) = re.findall(r"^run (\S+):", out, re.M)
    done = _cli(sandbox.root, "rollback", run_id, "--yes", "--json")
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    assert f"upgrader: {line}" in done.stderr and line not in done.stdout, done.stderr
    assert json.loads(done.stdout)["hosts"], done.stdout


def test_resume_says_which_policy_it_uses_before_anything_runs(sandbox: Sandbox, tmp_path: Path) -> None:
    """A run killed once its stop finished; ``resume`` prints the operator's policy line first, before it rolls the
    host back."""
    import hashlib

    from conftest import approve, fault_env, signed_plan

    plan = tmp_path / "p.json"
    done = _cli(sandbox.root, *signed_plan(sandbox, ["plan", "--inventory", str(sandbox.inventory), "--catalog",
                                                     str(sandbox.catalog / "catalog.yaml"), "--to", "7.0.4.2",
                                                     "-o", str(plan)]))
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    done = _cli(sandbox.root, "run", str(plan), "--approval", str(approve(sandbox, plan)),
                env=fault_env(kill_at="stop:finished"))
    assert done.returncode != ExitCode.OK, done.stdout + done.stderr
    (run_id,) = re.findall(r"^run (\S+):", done.stdout, re.M)
    line = f"policy: {sandbox.policy} (sha256 {hashlib.sha256(sandbox.policy.read_bytes()).hexdigest()})"
    done = _cli(sandbox.root, "resume", run_id, "--yes")
    out = done.stdout
    assert line in out, out + done.stderr
    assert done.returncode == ExitCode.ROLLED_BACK and "now running 7.0.4.1" in out, out + done.stderr
    assert out.splitlines()[0] == line and out.count(line) == 1, out
