"""Issue 12, round twelve's leftovers, played through the shipped CLI with real keys, a real signed catalog and the real
sample middleware; each refusal is checked with its exit code and message, and the whole host unchanged
(tests/hoststate.py: product files, the service's pid and process, lock, staged packages, the agent's state dir).

1 the run journal's "plan accepted" record is sealed with the operator key the run was accepted under and checked
  against the operator's audit allowed_signers: someone who can write the operator's HOME rewrites the accepted plan
  (plan.json and the record's digest, the checksum computed again) or drops the seal (as if an older upgrader had
  written the journal), or seals it again with a key of their own put in HOME/keys/operator; ``resume`` and
  ``rollback`` refuse (exit 4) naming the journal file and line, and touch nothing.
2 ``approve`` and ``plan show`` refuse a plan whose requester key is listed only through a pattern principal
  (``*@customer``), naming the principal and the allowed_signers line, as ``run`` does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import approve, plan_to, upgrader
from trust_support import add_signer, assert_host_untouched, cli, host_state, make_ssh_key, pristine, resigned
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.exit_codes import ExitCode
from upgrader.core.journal import _checksum
from upgrader.core.plan import plan_digest

TO = "7.0.4.2"


def _committed_run(sandbox: Sandbox) -> Path:
    """The operator's honest run of the requester's approved plan to 7.0.4.2, committed; its run directory."""
    pristine(sandbox)
    rc, plan = plan_to(sandbox, TO)
    assert rc == ExitCode.OK
    assert upgrader(sandbox, "run", str(plan), "--approval", str(approve(sandbox, plan))) == ExitCode.OK
    (run,) = list((sandbox.root / "runs").iterdir())
    assert sandbox.answers() == TO
    return run


def _rewrite_journal(run: Path, edit: Any) -> None:
    """The attacker's edit of the run's journal: ``edit(rec)`` changes each record's parsed body in place; every
    line's checksum is computed again, as the journal computes it."""
    lines = []
    for line in (run / "journal.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)["rec"]
        edit(rec)
        body = json.dumps(rec, sort_keys=True, ensure_ascii=False, default=str)
        lines.append('{"crc": "%s", "rec": %s}' % (_checksum(body), body))
    (run / "journal.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _accepted(rec: dict[str, Any]) -> bool:
    return bool(rec["phase"] == "plan" and rec["event"] == "accepted")


def _another_plan(run: Path) -> str:
    """plan.json rewritten as the attacker wants it (the host's target and the plan's: 7.0.5.0, which nobody
    approved); returns its digest."""
    data: dict[str, Any] = json.loads((run / "plan.json").read_text(encoding="utf-8"))
    data["target"] = "7.0.5.0"
    for h in data["hosts"]:
        h["target"] = "7.0.5.0"
    (run / "plan.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    return plan_digest(data)


def _refused_everywhere(sandbox: Sandbox, run: Path, capsys: pytest.CaptureFixture[str], *words: str) -> None:
    """``resume`` (as if the run had been interrupted) and ``rollback`` both exit 4 with ``words`` in the message,
    naming the journal and the record's line, no traceback; the whole host as it was."""
    (run / "result.json").unlink(missing_ok=True)
    before = host_state(sandbox)
    for argv in (["resume", run.name, "--yes"], ["rollback", run.name, "--yes"]):
        rc, err = cli(sandbox, capsys, *argv)
        assert rc == ExitCode.APPROVAL_REFUSED, (argv, err)
        assert f"{run / 'journal.jsonl'} line 1" in err and "Traceback" not in err, (argv, err)
        for w in words:
            assert w in err, (argv, w, err)
    after = host_state(sandbox)
    assert_host_untouched(before, after)
    assert after.version == TO


# ---------------------------------------------------------------- 1. the sealed "plan accepted" record


def test_a_rewritten_accepted_plan_with_its_checksum_fixed_is_refused_by_resume_and_rollback(
        sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """The attacker writes the operator's HOME: plan.json gets another target, the journal's accepted record the new
    digest, its checksum recomputed. ``resume`` and ``rollback`` refuse (exit 4): the seal no longer verifies."""
    run = _committed_run(sandbox)
    digest = _another_plan(run)

    def edit(rec: dict[str, Any]) -> None:
        if _accepted(rec):
            rec["data"]["digest"] = digest

    _rewrite_journal(run, edit)
    _refused_everywhere(sandbox, run, capsys, "the seal of the run's accepted plan does not verify",
                        "put the journal back")


def test_a_changed_approval_list_in_the_accepted_record_is_refused(
        sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """The record's approvals (what the canary's continuation checks and what the hosts are told) are sealed too: an
    approval's expiry pushed back a year is refused."""
    run = _committed_run(sandbox)

    def edit(rec: dict[str, Any]) -> None:
        if _accepted(rec):
            rec["data"]["approvals"][0]["expires"] = "2099-01-01T00:00:00+00:00"

    _rewrite_journal(run, edit)
    _refused_everywhere(sandbox, run, capsys, "does not verify")


def test_an_unsealed_record_as_an_older_upgrader_wrote_it_is_refused_and_says_what_to_do(
        sandbox: Sandbox, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The seal dropped (or a journal of an upgrader before the seal): refused (exit 4), saying it is not sealed, that
    an older upgrader wrote it, and what to do instead; in Chinese too for the operator's ``rollback``."""
    run = _committed_run(sandbox)
    digest = _another_plan(run)

    def edit(rec: dict[str, Any]) -> None:
        if _accepted(rec):
            rec["data"].pop("seal")
            rec["data"]["digest"] = digest

    _rewrite_journal(run, edit)
    _refused_everywhere(sandbox, run, capsys, "is not sealed", "older upgrader", "finish it with the upgrader that "
                        f"started it ('upgrader resume {run.name}'", "make, approve and run a new plan")
    monkeypatch.setenv("LC_ALL", "zh_CN.UTF-8")  # the operator's locale
    before = host_state(sandbox)
    for argv in (["resume", run.name, "--yes"], ["rollback", run.name, "--yes"]):
        rc, err = cli(sandbox, capsys, *argv)
        assert rc == ExitCode.APPROVAL_REFUSED, err
        assert "第 1 行" in err and "没有封印" in err and "旧版本" in err and "手工恢复" in err, err
        assert "原文" not in err, err
    assert_host_untouched(before, host_state(sandbox))


def test_a_record_sealed_again_with_a_key_put_in_home_is_refused(
        sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The attacker replaces HOME/keys/operator with a key of their own and seals the rewritten record with it: the
    seal verifies, but the operator's audit allowed_signers do not list that key: refused (exit 4), naming the key
    and the file."""
    from upgrader.trust.keys import load_private_key
    from upgrader.trust.run_seal import seal
    from upgrader.trust.sshsig import fingerprint, public_key_blob

    run = _committed_run(sandbox)
    digest = _another_plan(run)
    mallory = make_ssh_key(tmp_path / "mallory" / "id", "ed25519")
    for suffix in ("", ".pub"):
        Path(f"{sandbox.operator_key}{suffix}").write_bytes(Path(f"{mallory}{suffix}").read_bytes())
    key = load_private_key(mallory)

    def edit(rec: dict[str, Any]) -> None:
        if _accepted(rec):
            rec["data"]["digest"] = digest
            rec["data"]["seal"] = seal(run.name, {k: v for k, v in rec["data"].items() if k != "seal"}, key)

    _rewrite_journal(run, edit)
    _refused_everywhere(sandbox, run, capsys, f"sealed by key {fingerprint(public_key_blob(key.public_key()))}",
                        f"{sandbox.keys / 'allowed_signers'} does not list")


def test_a_record_sealed_for_another_run_is_refused(sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """A sealed record names its run: the directory of another run (its journal and plan) copied under this run's id
    does not verify."""
    import shutil

    run = _committed_run(sandbox)
    copy = run.with_name(run.name[:-6] + "ffffff")
    shutil.copytree(run, copy)
    _refused_everywhere(sandbox, copy, capsys, "does not verify")


def test_the_honest_journal_is_accepted_by_rollback(sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """The seal the run wrote verifies under the operator's allowed_signers: ``rollback`` restores 7.0.4.1."""
    run = _committed_run(sandbox)
    record = json.loads((run / "journal.jsonl").read_text(encoding="utf-8").splitlines()[0])["rec"]
    assert _accepted(record) and record["data"]["seal"].startswith("-----BEGIN SSH SIGNATURE-----")
    rc, err = cli(sandbox, capsys, "rollback", run.name, "--yes")
    assert rc == ExitCode.OK, err
    assert sandbox.answers() == "7.0.4.1"


def test_the_canary_continuation_refuses_another_plan_put_in_place_of_the_accepted_one(
        fleet: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Two hosts over the real sshd; the approved run to 7.0.4.2 pauses after its healthy canary (app-01). The attacker
    puts the requester's other, never approved plan to 7.0.5.0 in the run's plan.json, in the evidence kept for resume
    (host-evidence.json) and its digest in the journal's accepted record (checksum fixed): ``resume --yes`` (the
    continuation) refuses (exit 4) and app-02 is untouched (before the seal, it upgraded app-02 to 7.0.5.0)."""
    import io
    import sys

    from test_fleet_ssh import fleet_host_state

    f = fleet(2)
    rc, plan = plan_to(f.box, TO)
    assert rc == ExitCode.OK
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # nobody to confirm: the others wait
    assert upgrader(f.box, "run", str(plan), "--approval", str(approve(f.box, plan)), "--canary", "1") == ExitCode.OK
    (run,) = list((f.box.root / "runs").iterdir())
    assert f.versions() == {"app-01": TO, "app-02": "7.0.4.1"}
    rc, other = plan_to(f.box, "7.0.5.0")  # the requester's, signed, never approved
    assert rc == ExitCode.OK
    (run / "plan.json").write_bytes(other.read_bytes())
    data = json.loads(other.read_text(encoding="utf-8"))
    digest = plan_digest(data)
    evidence = json.loads((run / "host-evidence.json").read_text(encoding="utf-8"))  # the evidence kept for resume
    evidence.update(plan_sha256=digest, plan_signature=data["signature"])
    (run / "host-evidence.json").write_text(json.dumps(evidence), encoding="utf-8")

    def edit(rec: dict[str, Any]) -> None:
        if _accepted(rec):
            rec["data"]["digest"] = digest

    _rewrite_journal(run, edit)
    before = fleet_host_state(f["app-02"])
    rc, err = cli(f.box, capsys, "resume", run.name, "--yes")
    assert rc == ExitCode.APPROVAL_REFUSED, err
    assert f"{run / 'journal.jsonl'} line 1" in err and "does not verify" in err, err
    assert_host_untouched(before, fleet_host_state(f["app-02"]), "app-02")
    assert f.versions() == {"app-01": TO, "app-02": "7.0.4.1"}


# ---------------------------------------------------------------- 2. a pattern-only requester at approve and plan show


def test_approve_and_plan_show_refuse_a_plan_signed_by_a_pattern_only_requester(
        sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The plan is signed by a key that allowed_signers lists only as ``*@customer``: ``plan show`` and ``approve``
    refuse it (exit 4), naming the principal and the allowed_signers line; no approval file is written."""
    key = make_ssh_key(tmp_path / "wild" / "id", "ed25519")
    add_signer(sandbox.keys / "allowed_signers", "*@customer", key, 'namespaces="upgrader-plan"')
    line = len((sandbox.keys / "allowed_signers").read_text(encoding="utf-8").splitlines())
    before = pristine(sandbox)
    rc, plan = plan_to(sandbox, TO)
    assert rc == ExitCode.OK
    from upgrader.trust.keys import load_private_key
    from upgrader.trust.requester import sign_plan

    data = json.loads(plan.read_text(encoding="utf-8"))
    plan.write_text(json.dumps(sign_plan(data, load_private_key(key), plan_digest)), encoding="utf-8")
    out = sandbox.approvals / "wild.approval"
    for argv in (["plan", "show", str(plan)], ["approve", str(plan), "--key", str(sandbox.engineer_key), "-o",
                                               str(out)]):
        rc, err = cli(sandbox, capsys, *argv)
        assert rc == ExitCode.APPROVAL_REFUSED, (argv, err)
        assert "*@customer" in err and f"{sandbox.keys / 'allowed_signers'} line {line}" in err, (argv, err)
        assert "Traceback" not in err
    assert not out.exists()
    assert_host_untouched(before, host_state(sandbox))


def test_resigned_plans_by_the_listed_requester_still_show(sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """The control: the same plan signed by the requester's literal key (requester@customer) shows (exit 0)."""
    rc, plan = plan_to(sandbox, TO)
    assert rc == ExitCode.OK
    plan.write_text(json.dumps(resigned(json.loads(plan.read_text(encoding="utf-8")), sandbox.root)),
                    encoding="utf-8")
    rc, err = cli(sandbox, capsys, "plan", "show", str(plan))
    assert rc == ExitCode.OK, err
