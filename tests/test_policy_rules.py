"""Specification of the free-upgrade rules (decide) and of policy loading (version_policy)."""

from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path

import pytest

from version_policy import (
    PolicyError,
    UpgradeRequest,
    VersionPolicyError,
    decide,
    default_policy_path,
    load_policy,
    parse_range,
    parse_version,
)
from version_policy.policy import SCHEMA

RULE_ORDER = ["same_product", "newer", "same_line", "free_levels", "declared_changes",
              "maintenance_contract", "patch_requires", "approval"]
JAN_31 = datetime.date(2026, 1, 31)
FEB_01 = datetime.date(2026, 2, 1)


def request(current: str, target: str, **changes: object) -> UpgradeRequest:
    fields: dict[str, object] = {"product": "TongWeb", "target_product": "TongWeb"}
    fields.update(changes)
    if isinstance(fields.get("requires"), str):
        fields["requires"] = parse_range(str(fields["requires"]))
    return UpgradeRequest(current=parse_version(current), target=parse_version(target),
                          **fields)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def default_policy():
    return load_policy()


# id, request, allowed?, {rule: (status, words in its reason)}
DECISIONS = [
    ("level 4 maintenance upgrade", request("7.0.4.1", "7.0.4.9"), True,
     {"newer": ("pass", "7.0.4.9 is newer than 7.0.4.1"),
      "free_levels": ("pass", "levels 1-3 equal (7.0.4)")}),
    ("level 3 maintenance upgrade", request("7.0.4.1", "7.0.5.0"), True,
     {"free_levels": ("pass", "levels 1-2 equal (7.0); only levels 3-4 change")}),
    ("upgrade to a tagged build", request("7.0.4.1", "7.0.4.9_M3"), True,
     {"newer": ("pass", "newer")}),
    ("untagged to tagged build of one base", request("7.0.4.9", "7.0.4.9_M1"), True,
     {"free_levels": ("pass", "only the build tag changes")}),
    ("tag M2 to M10 compares numbers", request("7.0.4.9_M2", "7.0.4.9_M10"), True,
     {"newer": ("pass", "tag M10 vs M2")}),
    ("upgrade within letter line C", request("7.0.C.3", "7.0.C.6"), True,
     {"same_line": ("pass", "both versions are on line C")}),
    ("minor change 7.0 to 7.1", request("7.0.4.1", "7.1.0.0"), False,
     {"free_levels": ("fail", "7.0 -> 7.1 changes level 2 (minor); only levels 3 and 4 are free"),
      "newer": ("pass", "newer")}),
    ("major change 7 to 8", request("7.0.4.1", "8.0.0.0"), False,
     {"free_levels": ("fail", "7 -> 8 changes level 1 (major)")}),
    ("downgrade", request("7.0.4.9", "7.0.4.1"), False,
     {"newer": ("fail", "downgrade")}),
    ("tagged build down to its base", request("7.0.4.9_M1", "7.0.4.9"), False,
     {"newer": ("fail", "downgrade")}),
    ("same version", request("7.0.4.2", "7.0.4.2"), False,
     {"newer": ("fail", "already at 7.0.4.2"), "free_levels": ("pass", "no level changes")}),
    ("same version spelled differently", request("7.0.4", "V7.0.4.0"), False,
     {"newer": ("fail", "already at 7.0.4")}),
    ("line change 4 to C", request("7.0.4.9", "7.0.C.6"), False,
     {"same_line": ("fail", "moves between product lines (4 vs C); the policy does not allow"),
      "newer": ("fail", "different product lines (4 vs C)")}),
    ("line change C to E", request("7.0.C.6", "7.0.E.3"), False,
     {"same_line": ("fail", "(C vs E)")}),
    ("declared external interface change", request("7.0.4.1", "7.0.4.2",
                                                   declared_changes=("external_interface",)),
     False, {"declared_changes": ("fail", "the package declares a change to external "
                                          "interfaces; such upgrades are never free")}),
    ("declared config format change", request("7.0.4.1", "7.0.4.2",
                                              declared_changes=("config_format",)),
     False, {"declared_changes": ("fail", "the configuration format")}),
    ("declared monitoring change", request("7.0.4.1", "7.0.4.2",
                                           declared_changes=("monitoring",)),
     False, {"declared_changes": ("fail", "a change to monitoring")}),
    ("two refused changes named together",
     request("7.0.4.1", "7.0.4.2", declared_changes=("external_interface", "monitoring")),
     False, {"declared_changes": ("fail", "changes to external interfaces and monitoring")}),
    ("refused change in odd case", request("7.0.4.1", "7.0.4.2",
                                           declared_changes=(" Monitoring",)),
     False, {"declared_changes": ("fail", "monitoring")}),
    ("declared change the policy does not refuse",
     request("7.0.4.1", "7.0.4.2", declared_changes=("bugfix",)),
     True, {"declared_changes": ("pass", "bugfix, which the policy does not refuse")}),
    ("expired contract", request("7.0.4.1", "7.0.4.2", maintenance_until=JAN_31, today=FEB_01),
     False, {"maintenance_contract": ("fail", "contract ended 2026-01-31")}),
    ("valid contract", request("7.0.4.1", "7.0.4.2", maintenance_until=FEB_01, today=JAN_31),
     True, {"maintenance_contract": ("pass", "contract valid until 2026-02-01")}),
    ("contract on its last day", request("7.0.4.1", "7.0.4.2", maintenance_until=JAN_31,
                                         today=JAN_31),
     True, {"maintenance_contract": ("pass", "valid until 2026-01-31")}),
    ("no contract date, no host", request("7.0.4.1", "7.0.4.2", today=JAN_31), True,
     {"maintenance_contract": ("skip", "not checked: no host given")}),
    ("a host without a contract date", request("7.0.4.1", "7.0.4.2", today=JAN_31, host="app-01"), False,
     {"maintenance_contract": ("fail", "no maintenance contract date for host app-01")}),
    ("no date for today", request("7.0.4.1", "7.0.4.2", maintenance_until=JAN_31), True,
     {"maintenance_contract": ("skip", "not checked")}),
    ("patch within its requires range",
     request("7.0.4.2", "7.0.4.2_P1", kind="patch", requires=">=7.0.4.1, <7.0.4.3"), True,
     {"patch_requires": ("pass", "7.0.4.2 is within >=7.0.4.1, <7.0.4.3")}),
    ("patch outside its requires range",
     request("7.0.4.3", "7.0.4.3_P1", kind="patch", requires=">=7.0.4.1, <7.0.4.3"), False,
     {"patch_requires": ("fail", "7.0.4.3 is outside")}),
    ("patch for another line cannot tell",
     request("7.0.C.2", "7.0.C.2_P1", kind="patch", requires=">=7.0.4.1"), False,
     {"patch_requires": ("fail", "cannot tell")}),
    ("patch without requires range", request("7.0.4.2", "7.0.4.2_P1", kind="patch"), False,
     {"patch_requires": ("fail", "a patch must declare the versions it applies to")}),
    ("full package has no requires", request("7.0.4.1", "7.0.4.2"), True,
     {"patch_requires": ("skip", "full package: no requires range")}),
    ("different product", request("7.0.4.1", "7.0.4.2", target_product="TongLINK"), False,
     {"same_product": ("fail", "'TongLINK'")}),
    ("tags of different letters", request("7.0.4.9_M1", "7.0.4.9_P1"), False,
     {"newer": ("fail", "tags M1 and P1 have different letters")}),
    ("every rule that can fail fails",
     request("7.0.4.9", "8.0.C.1", target_product="TongLINK", kind="patch",
             declared_changes=("config_format",), maintenance_until=JAN_31, today=FEB_01,
             requires=">=9.0"),
     False, {"same_product": ("fail", ""), "same_line": ("fail", ""),
             "free_levels": ("fail", "level 1"), "declared_changes": ("fail", ""),
             "maintenance_contract": ("fail", ""), "patch_requires": ("fail", "outside")}),
]


@pytest.mark.parametrize(("req", "allowed", "expected"), [c[1:] for c in DECISIONS],
                         ids=[c[0] for c in DECISIONS])
def test_decide_reports_every_rule_with_status_and_reason(default_policy, req, allowed,
                                                          expected):
    decision = decide(req, default_policy)
    assert decision.allowed is allowed
    assert [r.rule for r in decision.results] == RULE_ORDER
    by_rule = {r.rule: r for r in decision.results}
    for rule, (status, words) in expected.items():
        assert by_rule[rule].status == status, by_rule[rule]
        assert words in by_rule[rule].reason
    assert all(r.reason for r in decision.results)
    assert by_rule["approval"].status == "skip"
    assert "signed approval" in by_rule["approval"].reason
    assert (not decision.refusals()) is allowed


def test_decision_to_dict_is_json_ready_and_summary_is_one_line(default_policy):
    allowed = decide(request("7.0.4.1", "7.0.4.2"), default_policy)
    refused = decide(request("7.0.4.1", "7.1.0"), default_policy)
    assert allowed.summary() == "allowed: 7.0.4.1 -> 7.0.4.2 (full)"
    assert refused.summary() == ("refused: 7.0 -> 7.1 changes level 2 (minor); "
                                 "only levels 3 and 4 are free")
    data = json.loads(json.dumps(refused.to_dict()))
    assert data["allowed"] is False
    assert [r["rule"] for r in data["rules"]] == RULE_ORDER
    assert set(data["rules"][0]) == {"rule", "status", "reason"}
    assert [r.rule for r in refused.refusals()] == ["free_levels"]


def test_declared_changes_given_as_a_bare_string_is_not_split_into_letters(default_policy):
    req = request("7.0.4.1", "7.0.4.2", declared_changes="monitoring")
    assert not decide(req, default_policy).allowed


# ---------------------------------------------------------------- policy loading


def write(tmp_path: Path, text: str, name: str = "my-policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_default_policy_loads_with_the_documented_defaults(default_policy):
    assert default_policy.free_levels == (3, 4)
    assert default_policy.allow_line_change is False
    assert default_policy.refused_changes == ("external_interface", "config_format",
                                              "monitoring")
    assert default_policy.require_maintenance_contract is True
    assert default_policy.manual_changes == "warn"
    assert default_policy.approvals_required == 1
    assert default_policy.allow_self_approval is False
    assert default_policy.allowed_signers is None and default_policy.trusted_signers is None
    assert default_policy.source.endswith("default-policy.yaml")
    content = default_policy_path().read_bytes()
    assert default_policy.digest == hashlib.sha256(content).hexdigest()


def test_default_policy_file_states_every_schema_default(default_policy):
    for setting in SCHEMA:
        assert default_policy.value(setting.path) == setting.default, setting.path
    assert default_policy.raw["rules"]["free_levels"] == [3, 4]  # type: ignore[index]


def test_empty_policy_file_means_all_defaults(tmp_path, default_policy):
    policy = load_policy(write(tmp_path, "# nothing here\n"))
    assert policy.raw == default_policy.raw
    assert policy.digest != default_policy.digest


def test_raw_is_a_fresh_copy_that_cannot_change_the_policy(default_policy):
    default_policy.raw["rules"]["free_levels"] = [1]  # type: ignore[index]
    assert default_policy.free_levels == (3, 4)


def test_custom_policy_with_free_level_4_refuses_a_level_3_change(tmp_path):
    policy = load_policy(write(tmp_path, "rules:\n  free_levels: [4]\n"))
    refused = decide(request("7.0.4.1", "7.0.5.0"), policy)
    assert not refused.allowed
    reason = {r.rule: r.reason for r in refused.refusals()}["free_levels"]
    assert "changes level 3 (maintenance); only level 4 is free" in reason
    assert decide(request("7.0.4.1", "7.0.4.2"), policy).allowed


def test_policy_allowing_line_changes_lets_an_upgrade_cross_lines(tmp_path):
    policy = load_policy(write(tmp_path, "rules:\n  allow_line_change: true\n"))
    decision = decide(request("7.0.4.9", "7.0.C.6"), policy)
    statuses = {r.rule: r.status for r in decision.results}
    assert decision.allowed
    assert statuses["same_line"] == "pass" and statuses["newer"] == "skip"


def test_policy_without_contract_requirement_skips_the_contract_rule(tmp_path):
    policy = load_policy(write(tmp_path, "rules:\n  require_maintenance_contract: false\n"))
    decision = decide(request("7.0.4.1", "7.0.4.2", maintenance_until=JAN_31, today=FEB_01),
                      policy)
    result = {r.rule: r for r in decision.results}["maintenance_contract"]
    assert decision.allowed and result.status == "skip"
    assert "does not require" in result.reason


def test_policy_with_no_refused_changes_allows_a_declared_interface_change(tmp_path):
    policy = load_policy(write(tmp_path, "rules:\n  refused_changes: []\n"))
    req = request("7.0.4.1", "7.0.4.2", declared_changes=("external_interface",))
    assert decide(req, policy).allowed


# policy text, key path named (or None), words the message must contain
BAD_POLICIES = [
    ("rules:\n  free_levels: three\n", "rules.free_levels",
     "my-policy.yaml: rules.free_levels: expected a list of levels between 1 and 4, "
     "got 'three'"),
    ("rules:\n  free_levels: [0, 3]\n", "rules.free_levels", "between 1 and 4"),
    ("rules:\n  free_levels: [true]\n", "rules.free_levels", "between 1 and 4"),
    ("rules:\n  free_levels: []\n", "rules.free_levels", "between 1 and 4"),
    ("rules:\n  free_level: [3, 4]\n", "rules.free_level",
     "known keys in rules are free_levels, allow_line_change"),
    ("colour: blue\n", "colour", "known keys at the top level are format, rules"),
    ("rules:\n  allow_line_change: 'true'\n", "rules.allow_line_change", "true or false"),
    ("rules:\n  manual_changes: ignore\n", "rules.manual_changes", "warn or block"),
    ("rules:\n  refused_changes: External Interface\n", "rules.refused_changes", "a list"),
    ("approvals:\n  required: 0\n", "approvals.required", "between 1 and 100"),
    ("approvals:\n  allowed_signers: 7\n", "approvals.allowed_signers", "a file path"),
    ("format: 2\nrules:\n  new_thing: 1\n", "format", "expected 1"),
    ("rules: 5\n", "rules", "expected a section of keys"),
    ("- rules\n", None, "expected a mapping of sections"),
    ("rules:\n  free_levels: [3]\n  free_levels: [3, 4]\n", "rules.free_levels",
     "given twice"),
    ("rules:\n  free_levels: [3, 4\n", None, "not valid YAML"),
    ("rules: !!python/object/apply:os.system ['id']\n", None, "not valid YAML"),
    ("base: &b [3, 4]\nrules:\n  free_levels: *b\n", None, "anchors and aliases"),
    ("rules:\n  free_levels: &x [3, 4]\n", None, "anchors and aliases"),
    ("rules:\n  free_levels: " + "[" * 50 + "]" * 50 + "\n", None, "nested"),
]


@pytest.mark.parametrize(("text", "key", "words"), BAD_POLICIES,
                         ids=[repr(c[0][:30]) for c in BAD_POLICIES])
def test_bad_policy_files_name_the_file_and_key(tmp_path, text, key, words):
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    error = caught.value
    assert str(error).startswith(f"{path}: ")
    assert error.path == str(path)
    assert error.key == key
    assert words in str(error)
    assert isinstance(error, ValueError) and isinstance(error, VersionPolicyError)


def test_policy_file_over_one_mebibyte_is_refused_unread(tmp_path):
    path = write(tmp_path, "# padding\n" * (1024 * 1024 // 10 + 1))
    assert path.stat().st_size > 1024 * 1024
    with pytest.raises(PolicyError, match="larger than 1 MiB"):
        load_policy(path)


@pytest.mark.parametrize(("make", "words"), [
    (lambda p: p / "missing.yaml", "cannot read the policy file"),
    (lambda p: p, "cannot read the policy file"),
], ids=["missing file", "a directory"])
def test_unreadable_policy_path_is_a_policy_error(tmp_path, make, words):
    with pytest.raises(PolicyError, match=words):
        load_policy(make(tmp_path))


def test_policy_that_is_not_utf8_is_refused(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"rules:\n  manual_changes: \xe9\n")
    with pytest.raises(PolicyError, match="not UTF-8"):
        load_policy(path)


def test_digest_changes_when_the_file_changes(tmp_path):
    path = write(tmp_path, "rules:\n  free_levels: [3, 4]\n")
    first = load_policy(path)
    assert load_policy(path).digest == first.digest
    path.write_text("rules:\n  free_levels: [3, 4]  # same meaning, other bytes\n")
    assert load_policy(path).digest != first.digest


def test_paths_in_the_policy_resolve_against_the_policy_directory(tmp_path):
    folder = tmp_path / "etc"
    folder.mkdir()
    policy = load_policy(write(folder, "approvals:\n  allowed_signers: keys/approvers\n"))
    assert policy.allowed_signers == "keys/approvers"
    assert policy.resolve_path(policy.allowed_signers) == folder / "keys" / "approvers"
    assert policy.resolve_path("/abs/signers") == Path("/abs/signers")
