"""Whose gate is it, round two: each weakness a second attack on the trust gate found, played as the attacker would
with the shipped CLI, real keys, a real catalog and the real sample middleware; each now ends in a refusal with its
exit code and message, and nothing on the host changed (product files, service pid and version, lock, staged
packages, the host's records, run records).

B1 the version source is the requester's: a playbook beside the requester's inventory, a path in the inventory, a
   playbook from the requester's own home, a plan whose steps were edited; the host's own ledger and its reading of
   the version after the install
B2 a maintenance contract date dropped from (or lengthened in) the requester's inventory
B4 an unsigned plan under another name, approved by its author
4. ``approve --as NAME`` with a key listed only under a pattern
5. a run's plan.json edited before ``resume``
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from conftest import approve, plan_to, signed_plan, upgrader
from hoststate import assert_host_untouched
from trust_support import add_signer, cli, host_state, pristine, set_policy, state_dir
from upgrader.cli import main
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.exit_codes import ExitCode
from upgrader.core.plan import load_plan
from upgrader.core.playbook import shipped_playbooks_dir

SHIPPED = shipped_playbooks_dir() / "sample-middleware.yaml"


def _evil_playbook(directory: Path, version_command: str = "echo 7.0.4.0") -> Path:
    """The shipped playbook with the version read from a command the requester chose (an old log line would do the
    same) and the version probe's body check dropped."""
    directory.mkdir(parents=True, exist_ok=True)
    text = SHIPPED.read_text(encoding="utf-8")
    text = text.replace("  file: lib/VERSION      # the installed version is the first word of this file",
                        f"  command: {version_command}")
    text = text.replace(', body: "${target_version}"}', "}")
    assert version_command in text and "${target_version}" not in text
    out = directory / "sample-middleware.yaml"
    out.write_text(text, encoding="utf-8")
    return out


def _plan(box: Sandbox, capsys: pytest.CaptureFixture[str], name: str, inventory: Path, to: str,
          *extra: str, home: Path | None = None) -> tuple[int, str, Path]:
    out = box.plans / f"{name}.json"
    capsys.readouterr()
    rc = main(["--home", str(home or box.root), *signed_plan(box, ["plan", "--inventory", str(inventory), "--to", to,
                                                                   "--catalog", str(box.catalog), "-o", str(out),
                                                                   *extra])])
    return rc, capsys.readouterr().err, out


def _upgraded(box: Sandbox, to: str = "7.0.4.2") -> None:
    """The operator's ordinary upgrade of the sandbox host (so that its ledger names the version installed)."""
    rc, plan = plan_to(box, to)
    assert rc == ExitCode.OK
    assert upgrader(box, "run", str(plan), "--approval", str(approve(box, plan))) == ExitCode.OK
    assert box.wait_version(to, timeout=10) == to


def _requester_inventory(box: Sandbox, directory: Path, playbook: str = "sample-middleware") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    inv = directory / "inventory.yaml"
    inv.write_text(box.inventory.read_text(encoding="utf-8").replace("playbook: sample-middleware",
                                                                     f"playbook: {playbook}"), encoding="utf-8")
    return inv


# ---------------------------------------------------------------- B1: the playbook is the operator's


def test_a_playbook_beside_the_requesters_inventory_is_not_used(sandbox: Sandbox, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The host runs 7.0.4.2; the requester's inventory has their own playbook beside it (and in playbooks/ beside
    it) that reads the version as 7.0.4.0, to pass the downgrade to 7.0.4.1 off as an upgrade. plan takes the
    operator's playbook (here the shipped one), reads 7.0.4.2 and refuses the downgrade (exit 3); the plan records
    the playbook's source and digest."""
    _upgraded(sandbox)
    req = tmp_path / "requester"
    inv = _requester_inventory(sandbox, req)
    _evil_playbook(req)
    _evil_playbook(req / "playbooks")
    before = host_state(sandbox)
    rc, err, plan = _plan(sandbox, capsys, "downgrade", inv, "7.0.4.1")
    assert rc == ExitCode.POLICY_REFUSED, err
    h = load_plan(plan).data["hosts"][0]
    assert h["current"] == "7.0.4.2"
    assert h["playbook"]["path"] == str(SHIPPED) and h["playbook"]["from"] == "shipped playbooks"
    assert h["playbook"]["sha256"] == hashlib.sha256(SHIPPED.read_bytes()).hexdigest()
    assert [r["status"] for r in h["decision"]["rules"] if r["rule"] == "newer"] == ["fail"]
    assert_host_untouched(before, host_state(sandbox))


@pytest.mark.parametrize("named", ["./sample-middleware.yaml", "/srv/evil/sample-middleware.yaml",
                                   "playbooks/sample-middleware", "sample-middleware.yaml"])
def test_an_inventory_naming_a_playbook_by_path_is_refused(sandbox: Sandbox, tmp_path: Path, named: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """An inventory that gives its playbook as a path (relative, absolute, with .yaml) is bad input (exit 2): the
    message names the inventory, the key and what to do; no plan is written, nothing on the host changed."""
    req = tmp_path / "requester"
    inv = _requester_inventory(sandbox, req, named)
    _evil_playbook(req)
    before = pristine(sandbox)
    rc, err, plan = _plan(sandbox, capsys, "by-path", inv, "7.0.4.2")
    assert rc == ExitCode.BAD_INPUT, err
    for words in (str(inv), "hosts.app-01.playbook", "is a path, not a playbook name", "HOME/playbooks"):
        assert words in err, err
    assert "Traceback" not in err and not plan.exists()
    assert_host_untouched(before, host_state(sandbox))


def test_a_plan_made_with_the_requesters_own_playbook_is_refused_at_run(sandbox: Sandbox, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The requester makes the downgrade plan in a home of their own whose playbooks/ holds their playbook (version
    read as 7.0.4.0): the plan says 7.0.4.0 -> 7.0.4.1, allowed, signed by them. The engineer's review (in the
    operator's home) shows the playbook's source and digest, the operator's playbook of that name (DIFFERENT) and
    the version source in full; approved anyway, the operator's run refuses it (exit 4) naming both playbooks and
    digests; nothing on the host changed."""
    _upgraded(sandbox)
    their_home = tmp_path / "their-home"
    evil = _evil_playbook(their_home / "playbooks")
    rc, err, plan = _plan(sandbox, capsys, "theirs", sandbox.inventory, "7.0.4.1", "--policy", str(sandbox.policy),
                          home=their_home)
    assert rc == ExitCode.OK, err
    h = load_plan(plan).data["hosts"][0]
    evil_digest = hashlib.sha256(evil.read_bytes()).hexdigest()
    assert h["current"] == "7.0.4.0" and h["playbook"]["path"] == str(evil) and h["playbook"]["sha256"] == evil_digest
    assert h["playbook"]["from"] == "HOME/playbooks"
    capsys.readouterr()
    assert upgrader(sandbox, "plan", "show", str(plan)) == ExitCode.OK
    shown = capsys.readouterr().out
    for words in (f"playbook: sample-middleware ({evil}, HOME/playbooks, sha256 {evil_digest})",
                  f"playbook here: {SHIPPED} (shipped playbooks) sha256", "DIFFERENT: a run here refuses this plan",
                  "installed version read from: the output of command 'echo 7.0.4.0'"):
        assert words in shown, shown
    assert upgrader(sandbox, "plan", "show", str(plan), "--json") == ExitCode.OK
    review = json.loads(capsys.readouterr().out)["hosts"][0]
    assert review["version_source"]["command"] == "echo 7.0.4.0" and review["playbook_here"]["same"] is False
    approval = approve(sandbox, plan)
    before = host_state(sandbox)
    rc, err = cli(sandbox, capsys, "run", str(plan), "--approval", str(approval))
    assert rc == ExitCode.APPROVAL_REFUSED, err
    shipped_digest = hashlib.sha256(SHIPPED.read_bytes()).hexdigest()
    for words in ("made with another playbook than the operator's", str(evil), evil_digest, str(SHIPPED),
                  shipped_digest, "nothing was changed"):
        assert words in err, err
    assert_host_untouched(before, host_state(sandbox))
    assert before.version == "7.0.4.2"


def test_a_plan_whose_version_source_was_edited_is_refused_at_run(sandbox: Sandbox,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The requester edits the version source of their plan (the playbook's name and digest left as the operator's)
    and signs it again: the run finds the plan's steps are not the operator's playbook's (exit 4), nothing changed."""
    from upgrader.trust.keys import load_private_key
    from upgrader.core.plan import plan_digest, readable_json
    from upgrader.trust.requester import sign_plan

    rc, plan = plan_to(sandbox, "7.0.4.2")
    assert rc == ExitCode.OK
    data = json.loads(plan.read_text(encoding="utf-8"))
    data["hosts"][0]["playbook"]["spec"]["version"] = {"file": "logs/server.log",
                                                       "pattern": r"sample-middleware (\S+) started"}
    plan.write_text(readable_json(sign_plan(data, load_private_key(sandbox.requester_key), plan_digest)),
                    encoding="utf-8")
    approval = approve(sandbox, plan)
    before = pristine(sandbox)
    rc, err = cli(sandbox, capsys, "run", str(plan), "--approval", str(approval))
    assert rc == ExitCode.APPROVAL_REFUSED, err
    assert "the plan's steps are not those of the operator's playbook" in err and "version.file differs" in err, err
    assert_host_untouched(before, host_state(sandbox))


def test_the_operators_home_playbook_comes_before_the_shipped_one_and_a_change_refuses_old_plans(
        sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """HOME/playbooks/NAME.yaml is the playbook a plan uses (recorded with its source); when the operator changes it
    after the plan was approved, run, and rollback of an earlier run, refuse (exit 4) naming both digests."""
    mine = sandbox.root / "playbooks" / "sample-middleware.yaml"
    mine.parent.mkdir(exist_ok=True)
    mine.write_text(SHIPPED.read_text(encoding="utf-8") + "# the operator's copy\n", encoding="utf-8")
    rc, plan = plan_to(sandbox, "7.0.4.2")
    assert rc == ExitCode.OK
    meta = load_plan(plan).data["hosts"][0]["playbook"]
    assert meta["path"] == str(mine) and meta["from"] == "HOME/playbooks"
    approval = approve(sandbox, plan)
    assert upgrader(sandbox, "run", str(plan), "--approval", str(approval)) == ExitCode.OK
    (run,) = list((sandbox.root / "runs").iterdir())
    rc, plan2 = plan_to(sandbox, "7.0.4.3")
    assert rc == ExitCode.OK
    approval2 = approve(sandbox, plan2)
    old_digest = meta["sha256"]
    mine.write_text(mine.read_text(encoding="utf-8") + "# changed later\n", encoding="utf-8")
    new_digest = hashlib.sha256(mine.read_bytes()).hexdigest()
    before = host_state(sandbox)
    rc, err = cli(sandbox, capsys, "run", str(plan2), "--approval", str(approval2))
    assert rc == ExitCode.APPROVAL_REFUSED and old_digest in err and new_digest in err, err
    rc, err = cli(sandbox, capsys, "rollback", run.name, "--yes")
    assert rc == ExitCode.APPROVAL_REFUSED and old_digest in err and new_digest in err, err
    assert_host_untouched(before, host_state(sandbox))
    assert before.version == "7.0.4.2"


def test_the_host_refuses_a_plan_whose_current_version_is_not_its_ledgers(sandbox: Sandbox) -> None:
    """Defence on the host (what a second controller racing past the controller's checks meets): after upgrader
    installed 7.0.4.2, the agent's prepare for a plan that says the host runs 7.0.4.0 is refused before anything is
    staged or stopped, naming the ledger and both versions."""
    from upgrader.hostagent.common import AgentError
    from upgrader.hostagent.prepare import op_prepare

    _upgraded(sandbox)
    before = host_state(sandbox)
    with pytest.raises(AgentError) as refused:
        op_prepare({"install_dir": str(sandbox.install_dir), "run_id": "20990101T000000-evil",
                          "preserve": [], "current_version": "7.0.4.0", "package_path": "/nonexistent"})
    assert refused.value.kind == "version_mismatch"
    for words in ("installed.json", "last installed 7.0.4.2", "host runs 7.0.4.0", "before stop"):
        assert words in str(refused.value), refused.value
    assert not (state_dir(sandbox.install_dir) / "runs" / "20990101T000000-evil").exists()
    assert_host_untouched(before, host_state(sandbox))


def test_the_host_reads_the_version_again_after_the_install_and_rolls_back(sandbox: Sandbox,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """An operator's playbook whose version source does not follow the install (here a version file the package
    never writes): the host reads the version again after the swap, finds the old one, fails the host and puts the
    old version back (exit 1); the service answers 7.0.4.1 again."""
    version = sandbox.install_dir / "conf" / "version.txt"
    version.write_text("7.0.4.1\n", encoding="utf-8")
    mine = sandbox.root / "playbooks" / "sample-middleware.yaml"
    mine.parent.mkdir(exist_ok=True)
    mine.write_text(SHIPPED.read_text(encoding="utf-8").replace(
        "  file: lib/VERSION      # the installed version is the first word of this file", "  file: conf/version.txt")
        .replace("- {path: conf/server.conf, kind: config}", "- {path: conf, kind: config}"), encoding="utf-8")
    rc, plan = plan_to(sandbox, "7.0.4.2")
    assert rc == ExitCode.OK
    rc, err = cli(sandbox, capsys, "run", str(plan), "--approval", str(approve(sandbox, plan)))
    assert rc == ExitCode.ROLLED_BACK, err
    assert "after the install the host reads version 7.0.4.1, not the target 7.0.4.2" in err, err
    assert sandbox.wait_version("7.0.4.1", timeout=10) == "7.0.4.1"
    assert (sandbox.install_dir / "lib" / "VERSION").read_text(encoding="utf-8").split()[0] == "7.0.4.1"


# ---------------------------------------------------------------- B2: contract dates


def test_a_contract_date_dropped_from_the_requesters_inventory_fails_the_rule(sandbox: Sandbox, tmp_path: Path,
                                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The operator's policy requires a contract; the requester's copy of the inventory has no maintenance_until:
    the rule fails (not skip), plan refuses (exit 3) naming the rule; nothing on the host changed."""
    inv = tmp_path / "req" / "inventory.yaml"
    inv.parent.mkdir()
    inv.write_text("".join(line for line in sandbox.inventory.read_text(encoding="utf-8").splitlines(keepends=True)
                           if "maintenance_until" not in line), encoding="utf-8")
    before = pristine(sandbox)
    rc, err, plan = _plan(sandbox, capsys, "no-date", inv, "7.0.5.0")
    assert rc == ExitCode.POLICY_REFUSED, err
    rule = {r["rule"]: r for r in load_plan(plan).data["hosts"][0]["decision"]["rules"]}["maintenance_contract"]
    assert rule["status"] == "fail" and "no maintenance contract date for host app-01" in rule["reason"]
    assert_host_untouched(before, host_state(sandbox))


def test_the_policys_contract_date_limits_the_inventorys(sandbox: Sandbox, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The operator's policy lists app-* as ended 2020-01-01; the requester's inventory says 2099-12-31 (or nothing):
    the earlier date counts, the plan is refused (exit 3) naming the policy entry. A date the policy gives makes a
    host without one in the inventory allowed. A bad date in the policy is bad input naming the key (exit 2)."""
    text = sandbox.policy.read_text(encoding="utf-8")
    sandbox.policy.write_text(text + "rules:\n  contracts:\n    app-*: 2020-01-01\n", encoding="utf-8")
    before = pristine(sandbox)
    rc, err, plan = _plan(sandbox, capsys, "ended", sandbox.inventory, "7.0.5.0")
    assert rc == ExitCode.POLICY_REFUSED, err
    rule = {r["rule"]: r for r in load_plan(plan).data["hosts"][0]["decision"]["rules"]}["maintenance_contract"]
    assert rule["status"] == "fail" and "contract ended 2020-01-01" in rule["reason"]
    assert "the policy's rules.contracts entry 'app-*'" in rule["reason"]
    sandbox.policy.write_text(text + "rules:\n  contracts:\n    app-01: 2099-06-30\n", encoding="utf-8")
    inv = tmp_path / "req" / "inventory.yaml"
    inv.parent.mkdir()
    inv.write_text(sandbox.inventory.read_text(encoding="utf-8").replace("    maintenance_until: 2099-12-31\n", ""),
                   encoding="utf-8")
    rc, err, plan = _plan(sandbox, capsys, "listed", inv, "7.0.5.0")
    assert rc == ExitCode.OK, err
    rule = {r["rule"]: r for r in load_plan(plan).data["hosts"][0]["decision"]["rules"]}["maintenance_contract"]
    assert rule["status"] == "pass" and "2099-06-30" in rule["reason"]
    sandbox.policy.write_text(text + "rules:\n  contracts:\n    app-01: someday\n", encoding="utf-8")
    rc, err, _ = _plan(sandbox, capsys, "bad", sandbox.inventory, "7.0.5.0")
    assert rc == ExitCode.BAD_INPUT and "rules.contracts" in err and "Traceback" not in err, err
    assert_host_untouched(before, host_state(sandbox))


# ---------------------------------------------------------------- B4: unsigned plans


def test_an_engineer_cannot_approve_their_own_unsigned_plan_under_another_label(
        sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """Under the demo's policy (and the shipped default) plans must be signed: the engineer's unsigned plan under the
    label change-board is refused by approve (exit 4, no approval written); an approval of it made with the library
    is refused at run (exit 4); signed with their key, approve refuses it as their own plan. Nothing on the host
    changed."""
    from upgrader.trust.approval import make_statement, write_approval
    from upgrader.trust.keys import load_private_key

    out = sandbox.plans / "unsigned.json"
    capsys.readouterr()
    rc = main(["--home", str(sandbox.root), "plan", "--requester", "change-board", "--inventory",
               str(sandbox.inventory), "--to", "7.0.5.0", "--catalog", str(sandbox.catalog), "-o", str(out)])
    assert rc == ExitCode.OK
    before = pristine(sandbox)
    approval = sandbox.approvals / "unsigned.approval"
    rc, err = cli(sandbox, capsys, "approve", str(out), "--key", str(sandbox.engineer_key), "-o", str(approval))
    assert rc == ExitCode.APPROVAL_REFUSED and "the plan is not signed" in err and not approval.exists(), err
    write_approval(approval, make_statement(load_plan(out).digest, "engineer@vendor", "change-board",
                                            dt.datetime.now(dt.UTC), 3600), load_private_key(sandbox.engineer_key))
    rc, err = cli(sandbox, capsys, "run", str(out), "--approval", str(approval))
    assert rc == ExitCode.APPROVAL_REFUSED and "the plan is not signed" in err, err
    rc, err, signed = _plan(sandbox, capsys, "signed", sandbox.inventory, "7.0.5.0", "--requester", "change-board",
                            "--key", str(sandbox.engineer_key))
    assert rc == ExitCode.OK, err
    mine = sandbox.approvals / "mine.approval"
    rc, err = cli(sandbox, capsys, "approve", str(signed), "--key", str(sandbox.engineer_key), "-o", str(mine))
    assert rc == ExitCode.APPROVAL_REFUSED and "your own plan" in err and not mine.exists(), err
    assert_host_untouched(before, host_state(sandbox))


def test_the_shipped_default_policy_requires_signed_plans() -> None:
    from version_policy import load_policy

    assert load_policy(None).allow_unsigned_plans is False


# ---------------------------------------------------------------- 4. --as on a pattern-only line


def test_approve_as_a_name_the_key_has_only_through_a_pattern_is_refused_before_writing(
        sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A key listed only as `*@vendor`: `approve --as bob@vendor` refuses (exit 4) naming the line's pattern, and no
    approval file is written."""
    key = tmp_path / "wild" / "wild"
    assert upgrader(sandbox, "keys", "generate", str(key)) == ExitCode.OK
    add_signer(sandbox.keys / "allowed_signers", "*@vendor", key, 'namespaces="upgrader-approval"')
    rc, plan = plan_to(sandbox, "7.0.4.2")
    assert rc == ExitCode.OK
    out = sandbox.approvals / "wild.approval"
    rc, err = cli(sandbox, capsys, "approve", str(plan), "--key", str(key), "--as", "bob@vendor", "-o", str(out))
    assert rc == ExitCode.APPROVAL_REFUSED, err
    assert "only as *@vendor" in err and "bob@vendor" in err and not out.exists(), err


# ---------------------------------------------------------------- 5. resume checks the accepted plan


def test_resume_refuses_a_run_whose_plan_file_was_edited(sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """A run stopped after its canary; its plan.json is edited (a start command), then `resume --yes` (and
    `rollback`): refused (exit 4), naming both digests; nothing on the host changed."""
    rc, plan = plan_to(sandbox, "7.0.4.2")
    assert rc == ExitCode.OK
    assert upgrader(sandbox, "run", str(plan), "--approval", str(approve(sandbox, plan))) == ExitCode.OK
    (run,) = list((sandbox.root / "runs").iterdir())
    accepted = load_plan(run / "plan.json").digest
    data: dict[str, Any] = json.loads((run / "plan.json").read_text(encoding="utf-8"))
    data["hosts"][0]["playbook"]["spec"]["start"]["command"] = "bin/start.sh; touch owned"
    (run / "plan.json").write_text(json.dumps(data), encoding="utf-8")
    (run / "result.json").unlink()  # as if the run had been interrupted
    before = host_state(sandbox)
    for argv in (["resume", run.name, "--yes"], ["rollback", run.name, "--yes"]):
        rc, err = cli(sandbox, capsys, *argv)
        assert rc == ExitCode.APPROVAL_REFUSED, (argv, err)
        assert "is not the plan this run accepted" in err and accepted in err, err
    assert_host_untouched(before, host_state(sandbox))
    assert before.version == "7.0.4.2"
