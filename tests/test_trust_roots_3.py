"""Whose gate is it, round three: each weakness a third attack on the trust gate found, played as the attacker would
with the shipped CLI, real keys, a real catalog and the real sample middleware; each now ends in a refusal with its
exit code and message, and nothing on the host changed (product files, service pid and version, lock, staged
packages, the host's records, run records).

A1 a second plan entry for the same install (another name) going on from the version the first one installs, and a
   plan whose own current -> target pair the policy refuses while the host runs another version
A3/A4 a health probe sent to the requester's server, a stop pointed at another service's process: each a value
   the playbook's ``${var}`` once accepted whatever it was
A2 a host renamed in the requester's inventory to dodge the operator's contract date in rules.contracts
A5 one engineer under two keys (alice@customer signs plans, alice@vendor approves them) approving her own plan
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from conftest import plan_to
from hoststate import assert_host_untouched
from trust_support import approval_signed_anyway, cli, host_state, pristine, resigned
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.exit_codes import ExitCode
from upgrader.core.plan import readable_json


def _edit(box: Sandbox, plan: Path, change: Any) -> dict[str, Any]:
    """The requester edits their plan (``change(data)``) and signs it again with their own key."""
    data = json.loads(plan.read_text(encoding="utf-8"))
    change(data)
    data.pop("signature", None)
    signed = resigned(data, box.root)
    plan.write_text(readable_json(signed), encoding="utf-8")
    return signed


def _goes_on_to(box: Sandbox, h: dict[str, Any], current: str, target: str) -> None:
    """Plan entry ``h`` made to read ``current -> target``, with the signed catalog's package of ``target`` and the
    version probes rendered for those versions (as the playbook renders them)."""
    from upgrader.core.planner import package_entry
    from upgrader.trust.catalog import load_catalog

    cat = load_catalog(box.catalog)
    entry = cat.find("sample-middleware", target)
    assert entry is not None
    h["current"], h["target"] = current, target
    h["package"] = package_entry(cat, entry)
    for p in h["playbook"]["spec"]["observe"]["probes"]:
        if p.get("name") == "version":
            p["body"] = target
    for p in h["playbook"]["rollback_observe"]["probes"]:
        if p.get("name") == "version":
            p["body"] = current


# ---------------------------------------------------------------- A1: one install, one entry, the plan's own pair


def test_a_second_entry_for_the_same_install_is_refused(sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """A genuine plan 7.0.4.1 -> 7.0.4.2, plus a second entry for the same install under another name going on
    7.0.4.2 -> 7.1.0.0 (a level-2 upgrade the policy refuses), its decision copied from the first: approve, plan show
    and run (--canary 1 --yes) refuse it as a plan that contradicts itself (exit 4); the host is untouched."""
    rc, plan = plan_to(sandbox, "7.0.4.2")
    assert rc == ExitCode.OK

    def second_entry(data: dict[str, Any]) -> None:
        a = data["hosts"][0]
        b = copy.deepcopy(a)
        b["name"], b["address"] = "app-01-b", "localhost"  # the same machine, spelt otherwise
        b["install_dir"] = a["install_dir"].rstrip("/") + "/./"  # the same install, spelt otherwise
        b["state_dir"] = str(Path(a["install_dir"]).parent / ".upgrader-app-01-b")
        _goes_on_to(sandbox, b, "7.0.4.2", "7.1.0.0")
        data["hosts"].append(b)

    _edit(sandbox, plan, second_entry)
    before = pristine(sandbox)
    rc, err = cli(sandbox, capsys, "approve", str(plan), "--key", str(sandbox.engineer_key), "-o",
                  str(sandbox.approvals / "a1.approval"))
    assert rc == ExitCode.APPROVAL_REFUSED, err
    assert "the plan contradicts itself" in err and "(app-01-b) is the same install as app-01: this machine" in err, err
    assert "goes to 7.1.0.0, the plan's target is 7.0.4.2" in err, err
    assert not (sandbox.approvals / "a1.approval").exists()
    rc, err = cli(sandbox, capsys, "plan", "show", str(plan))
    assert rc == ExitCode.APPROVAL_REFUSED and "the plan contradicts itself" in err, err
    approval = approval_signed_anyway(sandbox, plan)
    rc, err = cli(sandbox, capsys, "run", str(plan), "--approval", str(approval), "--canary", "1", "--yes")
    assert rc == ExitCode.APPROVAL_REFUSED, err
    assert "the plan contradicts itself" in err and "same install as app-01" in err, err
    assert_host_untouched(before, host_state(sandbox))


def test_a_plan_whose_own_pair_the_policy_refuses_is_refused_offline(sandbox: Sandbox,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The requester's plan says 7.0.5.0 -> 7.1.0.0 (the level-2 upgrade the policy refuses), decision copied from a
    genuine 'allowed' one, while the host runs 7.0.4.1: the run no longer leaves such a host to the engine's stale
    check: it decides the plan's own pair again offline and refuses (exit 3).
    ``approve`` refuses to sign it (exit 3). Nothing changed."""
    rc, plan = plan_to(sandbox, "7.0.4.2")
    assert rc == ExitCode.OK

    def other_pair(data: dict[str, Any]) -> None:
        data["target"] = "7.1.0.0"
        _goes_on_to(sandbox, data["hosts"][0], "7.0.5.0", "7.1.0.0")

    _edit(sandbox, plan, other_pair)
    before = pristine(sandbox)
    rc, err = cli(sandbox, capsys, "approve", str(plan), "--key", str(sandbox.engineer_key), "-o",
                  str(sandbox.approvals / "a1b.approval"))
    assert rc == ExitCode.POLICY_REFUSED, err
    assert "decides differently than the plan says for app-01" in err, err
    assert not (sandbox.approvals / "a1b.approval").exists()
    approval = approval_signed_anyway(sandbox, plan)
    rc, err = cli(sandbox, capsys, "run", str(plan), "--approval", str(approval), "--canary", "1", "--yes")
    assert rc == ExitCode.POLICY_REFUSED, err
    assert "app-01: the plan says allowed, decided again now: refused (" in err and "free_levels" in err, err
    assert_host_untouched(before, host_state(sandbox))


def test_plan_show_prints_the_decision_made_again(sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """``plan show`` of the edited plan prints the host REFUSED with the rule that fails, and of a genuine plan the
    same decision."""
    rc, plan = plan_to(sandbox, "7.0.4.2")
    assert rc == ExitCode.OK
    capsys.readouterr()
    from conftest import upgrader

    assert upgrader(sandbox, "plan", "show", str(plan)) == ExitCode.OK
    out = capsys.readouterr().out
    assert "7.0.4.1 -> 7.0.4.2: allowed" in out and "7.0.4.1 -> 7.0.4.2): the same" in out, out

    def other_pair(data: dict[str, Any]) -> None:
        data["target"] = "7.1.0.0"
        _goes_on_to(sandbox, data["hosts"][0], "7.0.5.0", "7.1.0.0")

    _edit(sandbox, plan, other_pair)
    assert upgrader(sandbox, "plan", "show", str(plan)) == ExitCode.OK
    out = capsys.readouterr().out
    assert "7.0.5.0 -> 7.1.0.0: REFUSED" in out, out
    assert "REFUSED: free_levels:" in out and "DIFFERENT from the plan's decision" in out, out


# ---------------------------------------------------------------- A3/A4: the plan's steps are the playbook's, exactly


def _stop_and_probe_redirected(data: dict[str, Any]) -> None:
    """What the attacker of round three did where the playbook has ``${port}`` or ``${install_dir}``: the health
    probe sent to a server of theirs, and the stop pointed at another service's process."""
    h = data["hosts"][0]
    spec = h["playbook"]["spec"]
    for p in spec["observe"]["probes"]:
        if p.get("name") == "health":
            p["url"] = p["url"].replace("/health", "1/health#/health", 1)  # ${port} := PORT + "1/health#"
    spec["stop"].pop("pid_file", None)
    spec["stop"]["process"] = {"cmdline_contains": ["-Dcatalina.base=/srv/other-tomcat"], "ports": []}


def test_a_probe_or_stop_rendered_with_other_values_is_refused(sandbox: Sandbox,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The requester points the health probe at their own server and the stop's process selector at another
    service (each a string the playbook's ``${var}`` could have been once): ``plan show`` prints exactly which
    process the stop may signal; the run renders the operator's playbook with the plan's own values and refuses
    the difference (exit 4); nothing changed."""
    rc, plan = plan_to(sandbox, "7.0.4.2")
    assert rc == ExitCode.OK
    _edit(sandbox, plan, _stop_and_probe_redirected)
    capsys.readouterr()
    from conftest import upgrader

    assert upgrader(sandbox, "plan", "show", str(plan)) == ExitCode.OK
    out = capsys.readouterr().out
    assert "stop may signal (SIGTERM, then SIGKILL) only: process whose command line holds " \
           "'-Dcatalina.base=/srv/other-tomcat'" in out, out
    assert f"http GET http://127.0.0.1:{sandbox.port}1/health#/health answers 200" in out, out
    before = pristine(sandbox)
    approval = approval_signed_anyway(sandbox, plan)
    rc, err = cli(sandbox, capsys, "run", str(plan), "--approval", str(approval), "--canary", "1", "--yes")
    assert rc == ExitCode.APPROVAL_REFUSED, err
    assert "the plan's steps are not those of the operator's playbook" in err, err
    assert "rendered with the plan's values" in err and "stop differs" in err, err
    assert_host_untouched(before, host_state(sandbox))


def test_only_the_probe_redirected_is_refused_too(sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """The health probe alone sent elsewhere (the approver would have to spot one URL): exit 4 naming the probe."""
    rc, plan = plan_to(sandbox, "7.0.4.2")
    assert rc == ExitCode.OK

    def probe_only(data: dict[str, Any]) -> None:
        for p in data["hosts"][0]["playbook"]["spec"]["observe"]["probes"]:
            if p.get("name") == "health":
                p["url"] = p["url"].replace("/health", "1/health#/health", 1)

    _edit(sandbox, plan, probe_only)
    before = pristine(sandbox)
    rc, err = cli(sandbox, capsys, "run", str(plan), "--approval", str(approval_signed_anyway(sandbox, plan)))
    assert rc == ExitCode.APPROVAL_REFUSED, err
    assert "observe.probes[" in err and "].url differs" in err, err
    assert_host_untouched(before, host_state(sandbox))


def test_the_review_prints_the_values_the_playbook_is_rendered_with(sandbox: Sandbox,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The values a plan renders the playbook with are the plan's (given in the inventory, or read from the install's
    configuration): the review prints each in full and where it came from, and which process the stop may
    signal."""
    rc, plan = plan_to(sandbox, "7.0.4.2")
    assert rc == ExitCode.OK
    capsys.readouterr()
    from conftest import upgrader

    assert upgrader(sandbox, "plan", "show", str(plan)) == ExitCode.OK
    out = capsys.readouterr().out
    assert "values the playbook is rendered with" in out, out
    assert f"port = '{sandbox.port}' (inventory vars or --var)" in out, out
    assert "stop may signal (SIGTERM, then SIGKILL) only: the process of pid file run/server.pid" in out, out


# ---------------------------------------------------------------- A2: contract dates are the operator's


def _renamed_inventory(box: Sandbox, directory: Path, name: str) -> Path:
    """The requester's copy of the inventory: the same install under another name, with a contract date of theirs."""
    directory.mkdir(parents=True, exist_ok=True)
    inv = directory / "inventory.yaml"
    text = box.inventory.read_text(encoding="utf-8")
    assert "  app-01:\n" in text and "demo: [app-01]" in text
    inv.write_text(text.replace("  app-01:\n", f"  {name}:\n").replace("demo: [app-01]", f"demo: [{name}]"),
                   encoding="utf-8")
    return inv


def test_a_host_renamed_to_dodge_the_policys_contract_date_is_refused(sandbox: Sandbox, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The operator's policy says app-01's contract ended; the requester's inventory calls the same install
    app-01-east (maintenance_until 2099-12-31): no rules.contracts entry names it, so it has no contract: the plan is
    refused (exit 3) naming the rule, nothing on the host changed. '*' in rules.contracts covers every name."""
    text = sandbox.policy.read_text(encoding="utf-8")
    sandbox.policy.write_text(text + "rules:\n  contracts:\n    app-01: 2020-01-01\n", encoding="utf-8")
    inv = _renamed_inventory(sandbox, tmp_path / "req", "app-01-east")
    before = pristine(sandbox)
    out = sandbox.plans / "renamed.json"
    rc, err = cli(sandbox, capsys, "plan", "--inventory", str(inv), "--to", "7.0.4.2", "--catalog",
                  str(sandbox.catalog), "-o", str(out))
    assert rc == ExitCode.POLICY_REFUSED, err
    rule = {r["rule"]: r for r in json.loads(out.read_text(encoding="utf-8"))["hosts"][0]["decision"]["rules"]}
    reason = rule["maintenance_contract"]["reason"]
    assert rule["maintenance_contract"]["status"] == "fail", reason
    assert "rules.contracts names no entry matching host app-01-east" in reason, reason
    assert_host_untouched(before, host_state(sandbox))
    sandbox.policy.write_text(text + "rules:\n  contracts:\n    app-01: 2020-01-01\n    '*': 2099-06-30\n",
                              encoding="utf-8")
    rc, err = cli(sandbox, capsys, "plan", "--inventory", str(inv), "--to", "7.0.4.2", "--catalog",
                  str(sandbox.catalog), "-o", str(out))
    assert rc == ExitCode.OK, err
    rule = {r["rule"]: r for r in json.loads(out.read_text(encoding="utf-8"))["hosts"][0]["decision"]["rules"]}
    assert "contract valid until 2099-06-30" in rule["maintenance_contract"]["reason"]
    assert "rules.contracts entry '*'" in rule["maintenance_contract"]["reason"]


# ---------------------------------------------------------------- A5: one person under two keys


def test_one_person_under_two_keys_cannot_approve_her_own_plan(sandbox: Sandbox, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """alice@customer (plans) and alice@vendor (approvals) are two keys of one engineer in allowed_signers: she signs
    a plan with the first (label ops-batch) and approves it with the second: approve refuses (exit 4, no file), and
    an approval she signs anyway is refused by the run (exit 4); nothing changed."""
    from trust_support import add_signer, make_ssh_key

    plan_key = make_ssh_key(tmp_path / "alice-plan", "ed25519", comment="alice@customer")
    appr_key = make_ssh_key(tmp_path / "alice-appr", "ed25519", comment="alice@vendor")
    signers = sandbox.keys / "allowed_signers"
    add_signer(signers, "alice@customer", plan_key, 'namespaces="upgrader-plan"')
    add_signer(signers, "alice@vendor", appr_key, 'namespaces="upgrader-approval"')
    rc, plan = plan_to(sandbox, "7.0.4.2", "--key", str(plan_key), "--requester", "ops-batch")
    assert rc == ExitCode.OK
    before = pristine(sandbox)
    out = sandbox.approvals / "alice.approval"
    rc, err = cli(sandbox, capsys, "approve", str(plan), "--key", str(appr_key), "-o", str(out))
    assert rc == ExitCode.APPROVAL_REFUSED, err
    assert "listed as alice@customer: the same person as you (alice@vendor)" in err, err
    assert not out.exists()
    approval = approval_signed_anyway(sandbox, plan, key=appr_key, approver="alice@vendor")
    rc, err = cli(sandbox, capsys, "run", str(plan), "--approval", str(approval))
    assert rc == ExitCode.APPROVAL_REFUSED, err
    assert "alice@vendor" in err and "approved their own plan" in err, err
    assert_host_untouched(before, host_state(sandbox))
