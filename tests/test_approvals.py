"""Approvals end to end through the real CLI, real keys and real SSHSIG signatures: every way an
approval can fail stops ``upgrader run`` with exit 4 before the host is touched, and the ones the
policy accepts let the run go ahead."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from conftest import approve, plan_to, product_digest, upgrader
from hoststate import assert_host_untouched
from trust_support import (
    HostState,
    approval_signed_anyway,
    add_signer,
    cli,
    copy_catalog,
    host_state,
    make_ssh_key,
    pristine,
    rebuild_package,
    set_policy,
    state_dir,
    vendor_catalog,
)
from upgrader.trust.approval import make_statement, write_approval
from upgrader.cli import main
from upgrader.cli.commands.demo import Sandbox, free_port
from upgrader.core.exit_codes import ExitCode
from upgrader.trust.keys import load_private_key
from upgrader.core.plan import load_plan, plan_digest
from upgrader.trust.requester import sign_plan
from upgrader.sample import install

FROM, TO = "7.0.4.1", "7.0.4.2"
ENGINEER = "engineer@vendor"

# Words one of which every refusal of a damaged approval file uses to say what is wrong with it.
DAMAGE_WORDS = ("altered", "damaged", "does not match", "not an upgrader approval", "no signature", "canonical",
                "malformed", "expected the line", "not a UTC time", "truncated", "base64", "namespace", "unsupported",
                "trailing", "magic")


# ---------------------------------------------------------------- helpers


def planned(box: Sandbox, version: str = TO, *extra: str) -> Path:
    rc, plan = plan_to(box, version, *extra)
    assert rc == ExitCode.OK, f"plan to {version} exited {rc}"
    return plan


def run_argv(plan: Path, approvals: list[Path], *extra: str) -> list[str]:
    argv = ["run", str(plan)]
    for a in approvals:
        argv += ["--approval", str(a)]
    return argv + list(extra)


def assert_refused(box: Sandbox, capsys: pytest.CaptureFixture[str], plan: Path, approvals: list[Path],
                   *words: str, before: HostState) -> str:
    """``upgrader run`` exits 4, its message names every one of ``words``, and the host is as ``before``."""
    rc, err = cli(box, capsys, *run_argv(plan, approvals))
    assert rc == ExitCode.APPROVAL_REFUSED, f"exit {rc}, expected 4: {err}"
    for word in words:
        assert word in err, f"{word!r} not in the message: {err}"
    assert_host_untouched(before, host_state(box))
    return err


def approve_with(box: Sandbox, plan: Path, key: Path, name: str, *extra: str) -> Path:
    out = box.approvals / f"{name}.approval"
    rc = upgrader(box, "approve", str(plan), "--key", str(key), "-o", str(out), *extra)
    assert rc == ExitCode.OK, f"approve with {key.name} exited {rc}"
    return out


def refused_by_approve(box: Sandbox, plan: Path, key: Path, name: str, approver: str) -> Path:
    """``approve`` refuses a key its allowed_signers does not let approve as ``approver`` before it writes anything
    (exit 4); the same approval signed with the library and that real key is what a run must still refuse."""
    out = box.approvals / f"{name}.approval"
    rc = upgrader(box, "approve", str(plan), "--key", str(key), "-o", str(out), "--as", approver)
    assert rc == ExitCode.APPROVAL_REFUSED and not out.exists(), f"approve with {key.name} exited {rc}"
    return approval_signed_anyway(box, plan, key=key, approver=approver)


def hand_signed(box: Sandbox, plan: Path, out: Path, now: dt.datetime, valid_for: float) -> Path:
    """An approval written with the library and the engineer's real key, at a chosen time."""
    requester = json.loads(plan.read_text(encoding="utf-8"))["requester"]["user"]
    statement = make_statement(load_plan(plan).digest, ENGINEER, requester, now, valid_for)
    write_approval(out, statement, load_private_key(box.engineer_key))
    return out


def dry_run_ok(box: Sandbox, capsys: pytest.CaptureFixture[str], plan: Path, approvals: list[Path]) -> None:
    rc, err = cli(box, capsys, *run_argv(plan, approvals, "--dry-run"))
    assert rc == ExitCode.OK, f"dry run exited {rc}: {err}"


# ---------------------------------------------------------------- missing approvals


def test_run_without_any_approval_is_refused_and_touches_nothing(sandbox: Sandbox,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A plan run with no --approval at all exits 4 and leaves the host as it was."""
    plan = planned(sandbox)
    assert_refused(sandbox, capsys, plan, [], "no approval given", before=pristine(sandbox))


def test_run_with_an_approval_file_that_does_not_exist_is_refused(sandbox: Sandbox,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """An --approval path that does not exist is refused (exit 4), naming the file."""
    plan = planned(sandbox)
    missing = sandbox.approvals / "never-written.approval"
    assert_refused(sandbox, capsys, plan, [missing], str(missing), "cannot read", before=pristine(sandbox))


def test_plan_refused_by_the_version_policy_cannot_be_approved(sandbox: Sandbox,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """``upgrader approve`` on the refused 7.1.0.0 plan exits 3 and writes no approval."""
    rc, plan = plan_to(sandbox, "7.1.0.0")
    assert rc == ExitCode.POLICY_REFUSED
    out = sandbox.approvals / "refused.approval"
    rc, err = cli(sandbox, capsys, "approve", str(plan), "--key", str(sandbox.engineer_key), "-o", str(out))
    assert rc == ExitCode.POLICY_REFUSED
    assert "cannot be approved" in err
    assert not out.exists()


@pytest.mark.parametrize("comment", [
    "change CHG-1234: customer window 22:00-23:00",
    "客户已批准本次维护升级",
    "tab\tand unicode line separator\u2028inside",
    "see -----BEGIN SSH SIGNATURE----- below",
], ids=["ascii", "chinese", "control characters", "armour marker"])
def test_approve_never_writes_an_approval_that_run_refuses(sandbox: Sandbox, capsys: pytest.CaptureFixture[str],
                                                           comment: str) -> None:
    """Whatever one-line comment the engineer gives, approve either refuses it (exit 2) or its approval is accepted."""
    plan = planned(sandbox)
    out = sandbox.approvals / "commented.approval"
    rc, err = cli(sandbox, capsys, "approve", str(plan), "--key", str(sandbox.engineer_key), "--comment", comment,
                  "-o", str(out))
    if rc == ExitCode.BAD_INPUT:
        assert "comment" in err and not out.exists()
        return
    assert rc == ExitCode.OK, err
    dry_run_ok(sandbox, capsys, plan, [out])


# ---------------------------------------------------------------- who signed


def test_approval_signed_by_a_key_not_in_allowed_signers_is_refused(sandbox: Sandbox, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A real key that is not in allowed_signers, claiming the engineer's name, is refused as untrusted."""
    plan = planned(sandbox)
    assert upgrader(sandbox, "keys", "generate", "intruder", "--dir", str(tmp_path / "intruder")) == 0
    forged = refused_by_approve(sandbox, plan, tmp_path / "intruder" / "intruder", "forged", ENGINEER)
    assert_refused(sandbox, capsys, plan, [forged], "untrusted key", "not in", before=pristine(sandbox))


def test_approval_by_a_known_key_under_another_engineers_name_is_refused(sandbox: Sandbox,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The engineer's own key cannot sign an approval in the name of someone else: approve refuses it before writing
    the file (exit 4), and an approval signed that way with the library is refused by run."""
    plan = planned(sandbox)
    out = sandbox.approvals / "claimed.approval"
    rc, err = cli(sandbox, capsys, "approve", str(plan), "--key", str(sandbox.engineer_key), "--as", "boss@vendor",
                  "-o", str(out))
    assert rc == ExitCode.APPROVAL_REFUSED and "boss@vendor" in err and not out.exists(), err
    statement = make_statement(load_plan(plan).digest, "boss@vendor", "requester", dt.datetime.now(dt.UTC), 3600)
    write_approval(out, statement, load_private_key(sandbox.engineer_key))
    claimed = out
    assert_refused(sandbox, capsys, plan, [claimed], "boss@vendor", "not to", before=pristine(sandbox))


def test_key_allowed_only_for_audit_checkpoints_cannot_approve(sandbox: Sandbox,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The operator key, listed for the upgrader-audit namespace only, may not sign approvals."""
    plan = planned(sandbox)
    by_operator = refused_by_approve(sandbox, plan, sandbox.keys / "operator", "operator", "operator@customer")
    assert_refused(sandbox, capsys, plan, [by_operator], "may not sign", "upgrader-approval",
                   before=pristine(sandbox))


def test_approval_by_a_key_past_its_valid_before_date_is_refused(sandbox: Sandbox,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """An allowed_signers entry that expired (valid-before in the past) no longer lets its key approve."""
    signers = sandbox.keys / "allowed_signers"
    text = signers.read_text(encoding="utf-8")
    assert f'{ENGINEER} namespaces="upgrader-approval" ' in text
    signers.write_text(text.replace(f"{ENGINEER} namespaces=", f'{ENGINEER} valid-before="20200101Z",namespaces='),
                       encoding="utf-8")
    plan = planned(sandbox)
    approval = refused_by_approve(sandbox, plan, sandbox.engineer_key, "expired", ENGINEER)
    assert_refused(sandbox, capsys, plan, [approval], "not valid at", before=pristine(sandbox))


def test_removing_the_engineer_from_allowed_signers_revokes_their_approval(sandbox: Sandbox,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """allowed_signers is read at run time: an approval made before the engineer's key was removed is refused (the
    policy's identity covers allowed_signers, so the plan is refused as made under another policy, naming the file)."""
    plan = planned(sandbox)
    approval = approve(sandbox, plan)
    dry_run_ok(sandbox, capsys, plan, [approval])
    signers = sandbox.keys / "allowed_signers"
    kept = [ln for ln in signers.read_text(encoding="utf-8").splitlines() if not ln.startswith(ENGINEER)]
    signers.write_text("\n".join(kept) + "\n", encoding="utf-8")
    assert_refused(sandbox, capsys, plan, [approval], "made under another policy", "approvals.allowed_signers",
                   str(signers), before=pristine(sandbox))


# ---------------------------------------------------------------- approval of another plan


def test_approval_is_refused_for_a_plan_with_one_more_host(sandbox: Sandbox,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """An approval of the one-host plan does not cover the same upgrade planned for two hosts."""
    plan_a = planned(sandbox)
    approval_a = approve(sandbox, plan_a)
    app02 = sandbox.root / "hosts" / "app-02"
    port = free_port()
    install(app02, port=port)
    # running: a plan proves each host's health probes on its running version (probe_proof)
    subprocess.run([str(app02 / "bin" / "start.sh")], check=True, env={**os.environ, "PYTHON": sys.executable})
    Sandbox(sandbox.root, port).wait_version(None, timeout=15)
    inventory = yaml.safe_load(sandbox.inventory.read_text(encoding="utf-8"))
    inventory["hosts"]["app-02"] = {**copy.deepcopy(inventory["hosts"]["app-01"]), "install_dir": str(app02),
                                    "vars": {"port": str(port)}}
    inventory["groups"]["demo"].append("app-02")
    two_hosts = sandbox.root / "inventory-two-hosts.yaml"
    two_hosts.write_text(yaml.safe_dump(inventory), encoding="utf-8")
    plan_b = sandbox.plans / "two-hosts.json"
    assert upgrader(sandbox, "plan", "--inventory", str(two_hosts), "--to", TO, "--catalog", str(sandbox.catalog),
                    "-o", str(plan_b)) == ExitCode.OK
    assert [h["name"] for h in load_plan(plan_b).hosts] == ["app-01", "app-02"]
    app02_before = product_digest(app02)
    assert_refused(sandbox, capsys, plan_b, [approval_a], "changed after it was approved", before=pristine(sandbox))
    assert product_digest(app02) == app02_before
    assert not state_dir(app02).exists()


def test_approval_is_refused_for_a_plan_to_another_target(sandbox: Sandbox,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """An approval of the plan to 7.0.4.2 does not let the plan to 7.0.5.0 run."""
    approval_a = approve(sandbox, planned(sandbox, TO))
    plan_b = planned(sandbox, "7.0.5.0")
    assert_refused(sandbox, capsys, plan_b, [approval_a], "changed after it was approved", before=pristine(sandbox))


def test_approval_is_refused_when_the_target_package_has_another_digest(sandbox: Sandbox, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Same host, same target, but a re-signed catalog whose 7.0.4.2 package differs: the approval does not cover it."""
    plan_a = planned(sandbox)
    approval_a = approve(sandbox, plan_a)
    catalog_b = copy_catalog(sandbox, "catalog-rebuilt")
    rebuild_package(sandbox, catalog_b, TO, tmp_path)
    vendor_catalog(sandbox, catalog_b, serial=2)
    plan_b = sandbox.plans / "rebuilt-package.json"
    assert upgrader(sandbox, "plan", "--inventory", str(sandbox.inventory), "--to", TO, "--catalog", str(catalog_b),
                    "-o", str(plan_b)) == ExitCode.OK
    assert load_plan(plan_b).hosts[0]["package"]["sha256"] != load_plan(plan_a).hosts[0]["package"]["sha256"]
    assert_refused(sandbox, capsys, plan_b, [approval_a], "changed after it was approved", before=pristine(sandbox))


def _set_target(d: dict[str, Any]) -> None:
    d["hosts"][0]["target"] = "7.0.5.0"


def _set_install_dir(d: dict[str, Any]) -> None:
    d["hosts"][0]["install_dir"] += "-elsewhere"


def _set_package_digest(d: dict[str, Any]) -> None:
    d["hosts"][0]["package"]["sha256"] = "0" * 64


def _set_requester(d: dict[str, Any]) -> None:
    d["requester"]["user"] = "someone-else"


def _add_field(d: dict[str, Any]) -> None:
    d["requester"]["note"] = "added by hand"  # (an unknown top-level key is refused as bad input, exit 2)


@pytest.mark.parametrize("edit", [_set_target, _set_install_dir, _set_package_digest, _set_requester, _add_field],
                         ids=["target", "install_dir", "package sha256", "requester", "extra field"])
def test_plan_edited_by_hand_loses_its_approval(sandbox: Sandbox, capsys: pytest.CaptureFixture[str],
                                                edit: Callable[[dict[str, Any]], None]) -> None:
    """Any change to the plan JSON after approval makes its approval refused as approving another plan."""
    plan = planned(sandbox)
    approval = approve(sandbox, plan)
    data = json.loads(plan.read_text(encoding="utf-8"))
    edit(data)  # and signed again by the requester, whose plan it is
    data = sign_plan(data, load_private_key(sandbox.requester_key), plan_digest)
    plan.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    assert_refused(sandbox, capsys, plan, [approval], "changed after it was approved", before=pristine(sandbox))


def test_reformatting_the_plan_json_keeps_its_approval(sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """The approval signs the canonical JSON digest, so re-indenting the same plan does not invalidate it."""
    plan = planned(sandbox)
    approval = approve(sandbox, plan)
    before = plan.read_text(encoding="utf-8")
    plan.write_text(json.dumps(json.loads(before), indent=7, sort_keys=False), encoding="utf-8")
    assert plan.read_text(encoding="utf-8") != before
    dry_run_ok(sandbox, capsys, plan, [approval])
    assert host_state(sandbox) == pristine(sandbox)


def test_policy_changed_after_planning_refuses_the_run(sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """Editing the policy file after the plan was made and approved refuses the run (exit 4)."""
    plan = planned(sandbox)
    approval = approve(sandbox, plan)
    set_policy(sandbox, "required: 1", "required: 1  # edited")
    assert_refused(sandbox, capsys, plan, [approval], "made under another policy", "sha256",
                   before=pristine(sandbox))


# ---------------------------------------------------------------- time


@pytest.mark.parametrize("age, valid_for", [(dt.timedelta(hours=2), 3600), (dt.timedelta(seconds=61), 60)],
                         ids=["expired an hour ago", "expired a second ago"])
def test_expired_approval_is_refused(sandbox: Sandbox, capsys: pytest.CaptureFixture[str],
                                     age: dt.timedelta, valid_for: float) -> None:
    """An approval whose expiry has passed is refused, though the same approval made now is accepted."""
    plan = planned(sandbox)
    now = dt.datetime.now(dt.UTC)
    dry_run_ok(sandbox, capsys, plan, [hand_signed(sandbox, plan, sandbox.approvals / "fresh.approval", now, 3600)])
    stale = hand_signed(sandbox, plan, sandbox.approvals / "stale.approval", now - age, valid_for)
    assert_refused(sandbox, capsys, plan, [stale], "expired", before=pristine(sandbox))


def test_approval_created_in_the_future_is_refused(sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """An approval dated an hour ahead of this machine's clock is refused and says to check the clocks."""
    plan = planned(sandbox)
    ahead = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    future = hand_signed(sandbox, plan, sandbox.approvals / "future.approval", ahead, 3600)
    assert_refused(sandbox, capsys, plan, [future], "in the future", before=pristine(sandbox))


# ---------------------------------------------------------------- replay


def test_approval_already_used_by_a_run_is_refused_for_the_same_plan(sandbox: Sandbox,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """After a run that failed and rolled back, running the same plan with the same approval is refused."""
    plan = planned(sandbox, "7.0.4.5")
    approval = approve(sandbox, plan)
    rc, err = cli(sandbox, capsys, *run_argv(plan, [approval]))
    assert rc == ExitCode.ROLLED_BACK, err
    after_first = host_state(sandbox)
    assert after_first.version == FROM and len(after_first.home_runs) == 1
    assert_refused(sandbox, capsys, plan, [approval], "already used", after_first.home_runs[0],
                   before=after_first)


def test_approval_already_used_is_refused_when_run_from_another_home(sandbox: Sandbox, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Replaying a used approval from a second controller home is refused too, by the host's own ledger of used
    approvals; the host is not touched again. (The rollback put the restored install in place under a new st_ino;
    the host's lineage record says it replaced the planned one, so the plan still names this install.)"""
    plan = planned(sandbox, "7.0.4.5")
    approval = approve(sandbox, plan)
    assert upgrader(sandbox, *run_argv(plan, [approval])) == ExitCode.ROLLED_BACK
    after_first = host_state(sandbox)
    capsys.readouterr()
    rc = main(["--home", str(tmp_path / "other-home"), *run_argv(plan, [approval]),
               "--audit-key", str(sandbox.keys / "operator"), "--policy", str(sandbox.policy)])
    err = capsys.readouterr().err
    assert rc == ExitCode.APPROVAL_REFUSED, f"exit {rc}: {err}"
    assert "was already used on this host by run" in err, err
    assert_host_untouched(after_first, host_state(sandbox))


# ---------------------------------------------------------------- tampering


def _regions(data: bytes) -> dict[str, list[int]]:
    """Byte positions of each part of an approval file."""
    begin = data.index(b"-----BEGIN SSH SIGNATURE-----")
    end = data.index(b"-----END SSH SIGNATURE-----")
    begin_line_end = begin + len("-----BEGIN SSH SIGNATURE-----")
    end_line_end = end + len("-----END SSH SIGNATURE-----")
    assert end_line_end == len(data) - 1 and data[-1:] == b"\n"
    return {
        "statement": list(range(begin)),
        "begin line": list(range(begin, begin_line_end)),
        "base64 body": [i for i in range(begin_line_end + 1, end) if data[i] != 0x0A],
        "end line": list(range(end, end_line_end)),
        "final newline": [len(data) - 1],
        "line breaks in the signature block": [i for i in range(begin, end) if data[i] == 0x0A],
    }


def _positions(data: bytes, region: list[int]) -> list[int]:
    """Every 7th byte of a region, its first and last byte, and (in the statement) every line break."""
    chosen = set(region[::7]) | {region[0], region[-1]}
    chosen |= {i for i in region if data[i] == 0x0A and i < data.index(b"-----BEGIN")}
    return sorted(chosen)


@pytest.mark.parametrize("region", [
    "statement", "begin line", "base64 body", "end line", "final newline", "line breaks in the signature block",
])
def test_one_changed_byte_anywhere_in_the_approval_is_refused(sandbox: Sandbox, tmp_path: Path, region: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Flipping one bit of any byte of the approval file (statement or signature block) is refused with exit 4."""
    plan = planned(sandbox)
    approval = approve(sandbox, plan)
    data = approval.read_bytes()
    before = pristine(sandbox)
    accepted: list[str] = []
    for pos in _positions(data, _regions(data)[region]):
        tampered = tmp_path / f"byte-{pos}.approval"
        changed = bytearray(data)
        changed[pos] ^= 0x01
        tampered.write_bytes(bytes(changed))
        rc, err = cli(sandbox, capsys, *run_argv(plan, [tampered], "--dry-run"))
        if rc != ExitCode.APPROVAL_REFUSED:
            accepted.append(f"byte {pos} ({data[pos:pos + 1]!r} -> {bytes(changed[pos:pos + 1])!r}): exit {rc}")
            continue
        assert str(tampered) in err, err
        assert any(w in err for w in DAMAGE_WORDS), f"byte {pos}: the message names no reason: {err}"
    assert accepted == [], "changed approvals not refused:\n" + "\n".join(accepted)
    assert_host_untouched(before, host_state(sandbox))
    dry_run_ok(sandbox, capsys, plan, [approval])  # the untouched original is still good: the flips were refused


def test_approval_whose_signature_names_an_unknown_key_type_is_refused(sandbox: Sandbox,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A well-formed signature block whose public key type was renamed is refused with exit 4, not a crash."""
    plan = planned(sandbox)
    approval = approve(sandbox, plan)
    text = approval.read_text(encoding="utf-8")
    marker = text.index("-----BEGIN SSH SIGNATURE-----")
    lines = text[marker:].splitlines()
    raw = base64.b64decode("".join(lines[1:-1]))
    assert raw.count(b"ssh-ed25519") == 2  # the public key's type and the signature's format
    b64 = base64.b64encode(raw.replace(b"ssh-ed25519", b"ssh-ed25419", 1)).decode()
    body = [b64[i:i + 70] for i in range(0, len(b64), 70)]
    approval.write_text(text[:marker] + "\n".join([lines[0], *body, lines[-1]]) + "\n", encoding="utf-8")
    assert_refused(sandbox, capsys, plan, [approval], str(approval), before=pristine(sandbox))


# ---------------------------------------------------------------- how many, and who


@pytest.fixture
def two_required(sandbox: Sandbox) -> Path:
    """The sandbox with a policy requiring approvals from 2 engineers, and a second engineer's key (returned)."""
    set_policy(sandbox, "required: 1", "required: 2")
    assert upgrader(sandbox, "keys", "generate", "engineer2", "--dir", str(sandbox.keys)) == 0
    add_signer(sandbox.keys / "allowed_signers", "engineer2@vendor", sandbox.keys / "engineer2",
               'namespaces="upgrader-approval"')
    return sandbox.keys / "engineer2"


def test_one_approval_is_refused_when_the_policy_requires_two(sandbox: Sandbox, two_required: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """With approvals.required 2, a single valid approval is refused (exit 4)."""
    plan = planned(sandbox)
    assert_refused(sandbox, capsys, plan, [approve(sandbox, plan)], "requires approvals from 2 different engineers",
                   "got 1", before=pristine(sandbox))


def test_same_approval_given_twice_counts_once(sandbox: Sandbox, two_required: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Passing one approval file twice does not make two approvals."""
    plan = planned(sandbox)
    approval = approve(sandbox, plan)
    assert_refused(sandbox, capsys, plan, [approval, approval], "got 1", before=pristine(sandbox))


def test_two_approvals_by_the_same_engineer_count_once(sandbox: Sandbox, two_required: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Two separately signed approvals (different statements) by one engineer count as one."""
    plan = planned(sandbox)
    first = approve(sandbox, plan, "--comment", "first look")
    second = approve(sandbox, plan, "--comment", "second look")
    assert first.read_bytes() != second.read_bytes()
    assert_refused(sandbox, capsys, plan, [first, second], "got 1", before=pristine(sandbox))


def test_one_engineer_with_two_keys_counts_once(sandbox: Sandbox, two_required: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """An engineer listed with two keys, approving with each, is still one engineer."""
    second_key = make_ssh_key(tmp_path / "engineer-laptop", "ed25519")
    add_signer(sandbox.keys / "allowed_signers", ENGINEER, second_key, 'namespaces="upgrader-approval"')
    plan = planned(sandbox)
    first = approve(sandbox, plan, "--as", ENGINEER)
    second = approve_with(sandbox, plan, second_key, "laptop", "--as", ENGINEER)
    assert_refused(sandbox, capsys, plan, [first, second], "got 1", before=pristine(sandbox))


def test_one_key_signing_under_two_names_counts_once(sandbox: Sandbox, two_required: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A key listed under a second principal cannot make a second approval by signing under that name."""
    add_signer(sandbox.keys / "allowed_signers", "alias@vendor", sandbox.engineer_key, 'namespaces="upgrader-approval"')
    plan = planned(sandbox)
    first = approve(sandbox, plan, "--as", ENGINEER)
    second = approve_with(sandbox, plan, sandbox.engineer_key, "alias", "--as", "alias@vendor")
    assert_refused(sandbox, capsys, plan, [first, second], "got 1", before=pristine(sandbox))


def test_approvals_from_two_engineers_satisfy_a_policy_requiring_two(sandbox: Sandbox, two_required: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Two approvals by different engineers with their own keys let the run upgrade the host (exit 0)."""
    plan = planned(sandbox)
    first = approve(sandbox, plan)
    second = approve_with(sandbox, plan, two_required, "engineer2")
    rc, err = cli(sandbox, capsys, *run_argv(plan, [first, second]))
    assert rc == ExitCode.OK, err
    assert sandbox.wait_version(TO, timeout=10) == TO


@pytest.mark.parametrize("requester", ["--requester=bob@vendor", "UPGRADER_USER=bob"])
def test_a_requester_name_does_not_hide_an_engineer_running_their_own_plan(sandbox: Sandbox,
                                                                           capsys: pytest.CaptureFixture[str],
                                                                           monkeypatch: pytest.MonkeyPatch,
                                                                           requester: str) -> None:
    """The engineer makes an unsigned plan claiming another requester (--requester bob, UPGRADER_USER=bob), approves
    it and runs it with their own key, under a policy that allows unsigned plans: the key that runs an unsigned
    plan is its requester, so the approval by that same key is a self-approval: exit 4, nothing touched."""
    set_policy(sandbox, "allow_unsigned_plans: false", "allow_unsigned_plans: true")
    plan = sandbox.plans / "unsigned.json"
    extra = [requester]
    if requester.startswith("UPGRADER_USER="):
        monkeypatch.setenv("UPGRADER_USER", requester.split("=", 1)[1])
        extra = []
    assert main(["--home", str(sandbox.root), "plan", "--inventory", str(sandbox.inventory), "--to", TO, "--catalog",
                 str(sandbox.catalog), "-o", str(plan), *extra]) == ExitCode.OK
    assert json.loads(plan.read_text(encoding="utf-8"))["requester"]["user"].startswith("bob")
    approval = approve(sandbox, plan)
    before = pristine(sandbox)
    rc, err = cli(sandbox, capsys, *run_argv(plan, [approval], "--audit-key", str(sandbox.engineer_key)))
    assert rc == ExitCode.APPROVAL_REFUSED, f"exit {rc}: {err}"
    for words in ("approved their own plan", "runs the plan", "segregation of duties"):
        assert words in err, err
    assert_host_untouched(before, host_state(sandbox))


def test_an_engineer_cannot_approve_a_plan_they_signed(sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """A plan signed with the engineer's key (plan --key) and naming bob as requester: approve refuses the engineer's
    own key (exit 4), and an approval made by that key anyway is refused by run; nothing touched."""
    plan = planned(sandbox, TO, "--key", str(sandbox.engineer_key), "--requester", "bob@vendor")
    out = sandbox.approvals / "own.approval"
    rc, err = cli(sandbox, capsys, "approve", str(plan), "--key", str(sandbox.engineer_key), "-o", str(out))
    assert rc == ExitCode.APPROVAL_REFUSED, err
    assert "your own plan" in err and not out.exists()
    own = hand_signed(sandbox, plan, out, dt.datetime.now(dt.UTC), 3600)
    assert_refused(sandbox, capsys, plan, [own], "approved their own plan", "signed the plan",
                   "segregation of duties", before=pristine(sandbox))


def test_a_wildcard_signer_cannot_approve_under_another_name(sandbox: Sandbox, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A key listed only as `*@vendor` could sign as any colleague (the requester's or a second approver's name):
    its approval is refused, naming the pattern and the line; nothing changes on the host."""
    key = tmp_path / "wild" / "wild"
    assert upgrader(sandbox, "keys", "generate", str(key)) == ExitCode.OK
    add_signer(sandbox.keys / "allowed_signers", "*@vendor", key, 'namespaces="upgrader-approval"')
    plan = planned(sandbox, TO, "--requester", "alice@vendor")
    approval = sandbox.approvals / "wild.approval"
    rc, err = cli(sandbox, capsys, "approve", str(plan), "--key", str(key), "--as", "bob@vendor", "-o", str(approval))
    assert rc == ExitCode.APPROVAL_REFUSED and "only as *@vendor" in err and not approval.exists(), err
    statement = make_statement(load_plan(plan).digest, "bob@vendor", "alice@vendor", dt.datetime.now(dt.UTC), 3600)
    write_approval(approval, statement, load_private_key(key))  # signed with the library: run refuses it too
    assert_refused(sandbox, capsys, plan, [approval], "bob@vendor", "only through the pattern *@vendor",
                   "named exactly", before=pristine(sandbox))


def test_self_approval_runs_when_the_policy_allows_it(sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """With approvals.allow_self_approval true, the requester's own approval lets the run upgrade the host."""
    set_policy(sandbox, "allow_self_approval: false", "allow_self_approval: true")
    plan = planned(sandbox, TO, "--requester", "engineer")
    rc, err = cli(sandbox, capsys, *run_argv(plan, [approve(sandbox, plan)]))
    assert rc == ExitCode.OK, err
    assert sandbox.wait_version(TO, timeout=10) == TO
