"""End to end on this machine: the real CLI upgrades, refuses and rolls back the real sample middleware."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from conftest import Run, approve, plan_to, product_digest, tree_digest, upgrader
from hoststate import HostState, assert_host_untouched, host_state
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.journal import read_journal
from upgrader.core.playbook import shipped_playbooks_dir
from upgrader.sample import http_get
from version_policy import default_policy_path

UPGRADE_PHASES = ("preflight", "backup", "stop", "install", "start", "observe")


# ---------------------------------------------------------------- helpers


def state_dir(box: Sandbox) -> Path:
    """Where the agent keeps its state for the sandbox's install: <parent>/.upgrader-<name>."""
    return box.install_dir.parent / f".upgrader-{box.install_dir.name}"


def service_pid(box: Sandbox) -> str | None:
    try:
        return (box.install_dir / "run" / "server.pid").read_text().strip()
    except FileNotFoundError:
        return None


def snapshot(box: Sandbox) -> HostState:
    """The whole host (tests/hoststate.py): product files, the running service (pid, start time, version), the
    agent's state dir (lock, runs, packages, ledger) and this machine's runs."""
    return host_state(box.install_dir, answers=box.answers, home=box.root)


def execute(box: Sandbox, plan: Path, *extra: str, approved: bool = True) -> Run:
    """`upgrader run` (with the sandbox engineer's approval unless told otherwise) and the run dir it made."""
    if approved:
        extra = ("--approval", str(approve(box, plan)), *extra)
    runs = box.root / "runs"
    before = set(runs.iterdir()) if runs.is_dir() else set()
    rc = upgrader(box, "run", str(plan), *extra)
    new = (set(runs.iterdir()) if runs.is_dir() else set()) - before
    assert len(new) <= 1, f"one run made several run dirs: {new}"
    return Run(rc, new.pop() if new else None)


def upgrade(box: Sandbox, version: str) -> Run:
    """Plan and run an upgrade that must succeed."""
    rc, plan = plan_to(box, version)
    assert rc == 0, f"plan to {version} refused"
    run = execute(box, plan)
    assert run.rc == 0, f"upgrade to {version} failed: {run.host() if run.dir else run.rc}"
    return run


def health(box: Sandbox) -> int:
    status, _ = http_get(box.port, "/health")
    return status


def backups(box: Sandbox) -> set[str]:
    """Run ids that still have a backup on the host."""
    runs = state_dir(box) / "runs"
    return {p.name for p in runs.iterdir() if (p / "backup").is_dir()} if runs.is_dir() else set()


def assert_refused_untouched(box: Sandbox, version: str, *extra: str) -> None:
    """Plan to `version` is refused (exit 3), running that plan is refused too, and nothing changes."""
    before = snapshot(box)
    rc, plan = plan_to(box, version, *extra)
    assert rc == 3
    assert_host_untouched(before, snapshot(box))
    assert execute(box, plan, approved=False).rc == 3
    assert_host_untouched(before, snapshot(box))


def failing_rules(plan: Path) -> set[str]:
    (host,) = json.loads(plan.read_text())["hosts"]
    return {r["rule"] for r in host["decision"]["rules"] if r["status"] == "fail"} | \
        {c["check"] for c in host["checks"] if c["status"] == "fail"}


# ---------------------------------------------------------------- allowed paths


def test_full_upgrade_to_7_0_4_2_serves_new_version_and_keeps_config_and_data(sandbox):
    """A full upgrade 7.0.4.1 -> 7.0.4.2 commits, serves 7.0.4.2 healthy and keeps conf/ and data/ byte for byte."""
    box = sandbox
    conf = (box.install_dir / "conf" / "server.conf").read_bytes()
    data = tree_digest(box.install_dir / "data")
    run = upgrade(box, "7.0.4.2")
    assert run.host()["outcome"] == "committed"
    assert box.answers() == "7.0.4.2"
    assert health(box) == 200
    assert (box.install_dir / "lib" / "VERSION").read_text().strip() == "7.0.4.2"
    assert (box.install_dir / "conf" / "server.conf").read_bytes() == conf
    assert tree_digest(box.install_dir / "data") == data


def test_full_upgrade_across_level_3_to_7_0_5_0_commits(sandbox):
    """7.0.4.1 -> 7.0.5.0 changes level 3 only: allowed, committed, the service answers 7.0.5.0."""
    run = upgrade(sandbox, "7.0.5.0")
    assert run.host()["outcome"] == "committed"
    assert run.host()["version"] == "7.0.5.0"
    assert sandbox.answers() == "7.0.5.0"
    assert health(sandbox) == 200


def test_patch_overlays_files_and_removes_legacy_compat(sandbox):
    """The 7.0.4.3 patch on 7.0.4.2 overlays its files, deletes lib/legacy_compat.py and leaves the rest as it was."""
    box = sandbox
    upgrade(box, "7.0.4.2")
    assert (box.install_dir / "lib" / "legacy_compat.py").is_file()
    before = product_digest(box.install_dir)
    run = upgrade(box, "7.0.4.3")
    after = product_digest(box.install_dir)
    assert run.host()["outcome"] == "committed"
    assert box.answers() == "7.0.4.3"
    assert not (box.install_dir / "lib" / "legacy_compat.py").exists()
    assert "lib/legacy_compat.py" not in after
    assert (box.install_dir / "lib" / "patches" / "7.0.4.3.txt").is_file()
    assert after["lib/VERSION"] != before["lib/VERSION"]
    untouched_by_patch = {k for k in before if not k.startswith(("lib/VERSION", "lib/server.py", "lib/legacy"))
                          and k != "lib"}
    assert {k: after[k] for k in untouched_by_patch} == {k: before[k] for k in untouched_by_patch}


# ---------------------------------------------------------------- refusals: exit 3, nothing touched


@pytest.mark.parametrize("version, rule", [
    ("7.1.0.0", "free_levels"),
    ("7.0.4.8", "declared_changes"),
    ("7.0.4.1", "newer"),
])
def test_refused_upgrade_exits_3_and_touches_nothing(sandbox, version, rule):
    """A minor upgrade, a package declaring an interface change and a same-version upgrade are refused; nothing changes."""
    assert_refused_untouched(sandbox, version)
    (plan,) = [p for p in sandbox.plans.iterdir() if p.name.startswith(f"to-{version}-")]
    assert rule in failing_rules(plan)
    assert not (state_dir(sandbox) / "runs").exists()


def test_downgrade_is_refused_and_touches_nothing(sandbox):
    """After an upgrade to 7.0.4.2, planning 7.0.4.1 is a downgrade: exit 3 and nothing changes."""
    upgrade(sandbox, "7.0.4.2")
    assert_refused_untouched(sandbox, "7.0.4.1")
    (plan,) = [p for p in sandbox.plans.iterdir() if p.name.startswith("to-7.0.4.1-")]
    assert "newer" in failing_rules(plan)
    assert sandbox.answers() == "7.0.4.2"


def test_patch_whose_requires_excludes_current_version_is_refused(sandbox, tmp_path):
    """A patch 7.0.4.4 that requires >=7.0.4.2 is refused on 7.0.4.1 (exit 3) and nothing changes."""
    catalog = tmp_path / "catalog-with-patch"
    shutil.copytree(sandbox.catalog, catalog)
    patch_src = tmp_path / "patch-src"
    (patch_src / "lib").mkdir(parents=True)
    (patch_src / "lib" / "VERSION").write_text("7.0.4.4\n")
    pkg = catalog / "sample-middleware-7.0.4.4.tar.gz"
    assert upgrader(sandbox, "package", "build", str(patch_src), "--product", "sample-middleware",
                    "--version", "7.0.4.4", "--kind", "patch", "--requires", ">=7.0.4.2, <7.0.4.4",
                    "-o", str(pkg)) == 0
    add_catalog_entry(sandbox, catalog, pkg, version="7.0.4.4", kind="patch", requires=">=7.0.4.2, <7.0.4.4")
    assert_refused_untouched(sandbox, "7.0.4.4", "--catalog", str(catalog))
    (plan,) = [p for p in sandbox.plans.iterdir() if p.name.startswith("to-7.0.4.4-")]
    assert failing_rules(plan) == {"patch_requires"}


def test_expired_maintenance_contract_is_refused(sandbox):
    """A host whose maintenance_until lies in the past is refused (exit 3) and nothing changes."""
    text = sandbox.inventory.read_text()
    assert "maintenance_until: 2099-12-31" in text
    sandbox.inventory.write_text(text.replace("maintenance_until: 2099-12-31", "maintenance_until: 2020-01-31"))
    assert_refused_untouched(sandbox, "7.0.4.2")
    (plan,) = [p for p in sandbox.plans.iterdir() if p.name.startswith("to-7.0.4.2-")]
    assert failing_rules(plan) == {"maintenance_contract"}


# ---------------------------------------------------------------- failures: exit 1, rolled back


@pytest.mark.parametrize("version, cause", [
    ("7.0.4.5", ["never healthy after start", "health", "answered 503"]),       # fails its health probes
    ("7.0.4.6", ["never healthy after start", "process", "not running"]),       # cannot start at all
    # dies 1.5 s after start, logging "fatal: out of memory" just before it exits: the sample that catches the
    # failure sees the log line, the process gone, or both (which probe notices first is a race)
    ("7.0.4.7", ["during the observation window", ("process: ", "fatal: out of memory")]),
])
def test_failing_upgrade_rolls_back_byte_identical_and_old_version_answers(sandbox, version, cause):
    """A faulty release exits 1, the product tree is byte-identical to before and 7.0.4.1 answers healthy again."""
    box = sandbox
    before = product_digest(box.install_dir)
    data = tree_digest(box.install_dir / "data")
    rc, plan = plan_to(box, version)
    assert rc == 0
    run = execute(box, plan)
    assert run.rc == 1
    assert run.host()["outcome"] == "rolled_back"
    assert run.host()["version"] == "7.0.4.1"
    assert run.host()["rollback_cause"].startswith("observe: ")
    for words in cause:
        alternatives = words if isinstance(words, tuple) else (words,)
        assert any(w in run.host()["rollback_cause"] for w in alternatives), (words, run.host()["rollback_cause"])
    assert product_digest(box.install_dir) == before
    assert tree_digest(box.install_dir / "data") == data
    assert box.answers() == "7.0.4.1"
    assert health(box) == 200


# ---------------------------------------------------------------- corrupt packages: exit 2, nothing touched


def test_package_with_a_flipped_byte_is_refused_at_plan(sandbox, tmp_path):
    """A package altered by one byte in a copy of the catalog makes plan exit 2; nothing is touched."""
    catalog = tmp_path / "catalog-copy"
    shutil.copytree(sandbox.catalog, catalog)
    pkg = catalog / "sample-middleware-7.0.4.2.tar.gz"
    data = bytearray(pkg.read_bytes())
    data[len(data) // 2] ^= 0x01
    pkg.write_bytes(bytes(data))
    before = snapshot(sandbox)
    rc, plan = plan_to(sandbox, "7.0.4.2", "--catalog", str(catalog))
    assert rc == 2
    assert not plan.exists()
    assert_host_untouched(before, snapshot(sandbox))


def test_package_truncated_after_planning_is_refused_at_run(sandbox, tmp_path):
    """A package truncated between plan and run makes run exit 2 before any host is touched."""
    catalog = tmp_path / "catalog-copy"
    shutil.copytree(sandbox.catalog, catalog)
    rc, plan = plan_to(sandbox, "7.0.4.2", "--catalog", str(catalog))
    assert rc == 0
    pkg = catalog / "sample-middleware-7.0.4.2.tar.gz"
    with open(pkg, "r+b") as f:
        f.truncate(pkg.stat().st_size // 2)
    before = snapshot(sandbox)
    run = execute(sandbox, plan)
    assert run.rc == 2
    assert run.dir is None
    assert_host_untouched(before, snapshot(sandbox))


def test_package_flipped_after_planning_is_refused_at_run(sandbox, tmp_path):
    """A package altered (same size) between plan and run makes run exit 2 before any host is touched."""
    catalog = tmp_path / "catalog-copy"
    shutil.copytree(sandbox.catalog, catalog)
    rc, plan = plan_to(sandbox, "7.0.4.2", "--catalog", str(catalog))
    assert rc == 0
    pkg = catalog / "sample-middleware-7.0.4.2.tar.gz"
    data = bytearray(pkg.read_bytes())
    data[-10] ^= 0x80
    pkg.write_bytes(bytes(data))
    before = snapshot(sandbox)
    run = execute(sandbox, plan)
    assert run.rc == 2
    assert_host_untouched(before, snapshot(sandbox))


# ---------------------------------------------------------------- the customer's files


def test_config_edited_by_the_customer_survives_the_upgrade(sandbox):
    """conf/server.conf edited before the upgrade is still the edited file after it, and in effect; data/ is intact."""
    box = sandbox
    conf = box.install_dir / "conf" / "server.conf"
    edited = conf.read_text().replace("greeting = Welcome to sample-middleware", "greeting = Hello from ACME")
    edited += "# tuned by ACME ops, ticket 4711\n"
    conf.write_text(edited)
    data = tree_digest(box.install_dir / "data")
    upgrade(box, "7.0.4.2")
    assert conf.read_text() == edited
    assert tree_digest(box.install_dir / "data") == data
    status, body = http_get(box.port, "/")
    assert status == 200
    assert body.startswith("Hello from ACME\n") and "7.0.4.2" in body


def test_failed_upgrade_restores_edited_config_byte_for_byte(sandbox):
    """After a customer edit of conf/server.conf, a failed upgrade leaves that edited file and data/ byte for byte."""
    box = sandbox
    conf = box.install_dir / "conf" / "server.conf"
    conf.write_text(conf.read_text() + "# customer comment\n")
    before = product_digest(box.install_dir)
    rc, plan = plan_to(box, "7.0.4.5")
    assert rc == 0
    assert execute(box, plan).rc == 1
    assert product_digest(box.install_dir) == before
    assert conf.read_text().endswith("# customer comment\n")


# ---------------------------------------------------------------- the run's record


def test_journal_records_intent_before_done_for_every_phase_and_result_says_committed(sandbox):
    """Every phase of a committed run is journalled as intent, then done; result.json says committed, exit 0."""
    run = upgrade(sandbox, "7.0.4.2")
    records = list(read_journal(run.dir / "journal.jsonl"))
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    events = [(r.phase, r.event) for r in records]
    for phase in UPGRADE_PHASES:
        assert events.count((phase, "intent")) == 1, phase
        assert events.count((phase, "done")) == 1, phase
        assert events.index((phase, "intent")) < events.index((phase, "done"))
    order = [events.index((p, "intent")) for p in UPGRADE_PHASES]
    assert order == sorted(order)
    assert not [e for e in events if e[1] == "failed"]
    assert run.result["exit_code"] == 0
    assert run.host()["outcome"] == "committed"
    assert json.loads((run.dir / "plan.json").read_text())["target"] == "7.0.4.2"


def test_journal_of_failed_run_records_failure_then_rollback(sandbox):
    """A rolled-back run journals observe failed, then rollback intent and done; result.json says rolled_back."""
    rc, plan = plan_to(sandbox, "7.0.4.5")
    assert rc == 0
    run = execute(sandbox, plan)
    events = [(r.phase, r.event) for r in read_journal(run.dir / "journal.jsonl")]
    failed = events.index(("observe", "failed"))
    assert events.index(("rollback", "intent")) > failed
    assert events.index(("rollback", "done")) > events.index(("rollback", "intent"))
    assert run.result["exit_code"] == 1
    assert run.host()["outcome"] == "rolled_back"


def test_dry_run_checks_everything_and_touches_nothing(sandbox):
    """`run --dry-run` of an approved plan exits 0, makes no run and leaves host and service as they were."""
    box = sandbox
    rc, plan = plan_to(box, "7.0.4.2")
    assert rc == 0
    before = snapshot(box)
    run = execute(box, plan, "--dry-run")
    assert run.rc == 0
    assert run.dir is None
    assert_host_untouched(before, snapshot(box))


def test_stale_plan_is_stopped_at_preflight_without_touching_the_host(sandbox):
    """A plan made for 7.0.4.1 but run after the host moved to 7.0.4.2 stops at preflight; nothing changes."""
    box = sandbox
    rc, stale = plan_to(box, "7.0.4.2")
    assert rc == 0
    upgrade(box, "7.0.4.2")
    before = snapshot(box)
    run = execute(box, stale)
    assert run.rc == 2  # bad input: the plan no longer describes the host
    assert run.host()["outcome"] == "stale"
    assert "make a new plan" in run.host()["error"]
    assert [p["phase"] for p in run.host()["phases"]] == ["preflight"]
    after = snapshot(box)
    assert (after.product, after.pid, after.version) == (before.product, before.pid, "7.0.4.2")
    assert after.host_runs == before.host_runs
    assert not (state_dir(box) / "lock").exists()


# ---------------------------------------------------------------- rollback on request


def test_rollback_of_committed_run_restores_previous_version_byte_identical_and_is_idempotent(sandbox):
    """`upgrader rollback RUN_ID` puts 7.0.4.1 back byte-identical and healthy; a second call changes nothing."""
    box = sandbox
    before = product_digest(box.install_dir)
    data = tree_digest(box.install_dir / "data")
    run = upgrade(box, "7.0.4.2")
    assert product_digest(box.install_dir) != before
    assert upgrader(box, "rollback", run.id) == 0
    assert box.answers() == "7.0.4.1"
    assert health(box) == 200
    assert product_digest(box.install_dir) == before
    assert tree_digest(box.install_dir / "data") == data
    once = snapshot(box)
    assert upgrader(box, "rollback", run.id) == 0
    again = snapshot(box)
    assert again.product == once.product
    assert again.pid == once.pid
    assert again.version == "7.0.4.1"


def test_rollback_of_a_patch_brings_back_the_removed_file_byte_identical(sandbox):
    """Rolling back the 7.0.4.3 patch restores 7.0.4.2 exactly: legacy_compat.py back, lib/patches/ gone."""
    box = sandbox
    upgrade(box, "7.0.4.2")
    before = product_digest(box.install_dir)
    patch = upgrade(box, "7.0.4.3")
    assert upgrader(box, "rollback", patch.id) == 0
    assert box.answers() == "7.0.4.2"
    assert product_digest(box.install_dir) == before
    assert (box.install_dir / "lib" / "legacy_compat.py").is_file()
    assert not (box.install_dir / "lib" / "patches").exists()


def test_rollback_on_request_keeps_data_written_after_the_upgrade(sandbox):
    """Customer data written while the new version ran is carried back by `upgrader rollback`, never lost."""
    box = sandbox
    run = upgrade(box, "7.0.4.2")
    order = box.install_dir / "data" / "order-after-upgrade.csv"
    order.write_text("000201,customer-07,99.50,new\n")
    data = tree_digest(box.install_dir / "data")
    assert upgrader(box, "rollback", run.id) == 0
    assert box.answers() == "7.0.4.1"
    assert tree_digest(box.install_dir / "data") == data


def test_rollback_of_an_automatically_rolled_back_run_changes_nothing(sandbox):
    """`upgrader rollback` of a run that already rolled itself back exits 0 and leaves the running service alone."""
    box = sandbox
    rc, plan = plan_to(box, "7.0.4.5")
    assert rc == 0
    run = execute(box, plan)
    assert run.rc == 1
    before = snapshot(box)
    assert upgrader(box, "rollback", run.id) == 0
    after = snapshot(box)
    assert (after.product, after.pid, after.version) == (before.product, before.pid, "7.0.4.1")


def test_rollback_of_unknown_run_id_exits_2(sandbox):
    """Rolling back a run id that does not exist is bad input (exit 2) and touches nothing."""
    before = snapshot(sandbox)
    assert upgrader(sandbox, "rollback", "20990101T000000Z-000000") == 2
    assert_host_untouched(before, snapshot(sandbox))


# ---------------------------------------------------------------- backups retention


def test_backup_retention_keeps_newest_and_newest_healthy_backup(sandbox):
    """With backup.keep 1, older backups go, but the newest backup of a committed run survives a later failed run."""
    box = sandbox
    spec = yaml.safe_load((shipped_playbooks_dir() / "sample-middleware.yaml").read_text())
    spec["backup"]["keep"] = 1
    (box.root / "playbooks").mkdir()
    (box.root / "playbooks" / "sample-middleware.yaml").write_text(yaml.safe_dump(spec))
    first = upgrade(box, "7.0.4.2")
    assert backups(box) == {first.id}
    second = upgrade(box, "7.0.4.3")
    assert backups(box) == {second.id}
    rc, plan = plan_to(box, "7.0.4.5")
    assert rc == 0
    third = execute(box, plan)
    assert third.rc == 1
    assert backups(box) == {second.id, third.id}
    assert box.answers() == "7.0.4.3"


# ---------------------------------------------------------------- hand-edited product files


def hand_edit_server(box: Sandbox) -> None:
    server = box.install_dir / "lib" / "server.py"
    server.write_text(server.read_text() + "\n# local hotfix by the customer\n")


def test_hand_edited_product_file_is_reported_as_manual_change(sandbox, capsys):
    """After an upgrade, a hand edit of lib/server.py makes plan warn (manual_changes) naming the file, exit 0."""
    box = sandbox
    upgrade(box, "7.0.4.2")
    hand_edit_server(box)
    capsys.readouterr()
    rc, _ = plan_to(box, "7.0.4.3", "--json")
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    (host,) = out["hosts"]
    (check,) = [c for c in host["checks"] if c["check"] == "manual_changes"]
    assert check["status"] == "warn"
    assert "lib/server.py" in check["reason"]


def test_hand_edited_product_file_blocks_plan_under_blocking_policy(sandbox, tmp_path):
    """With manual_changes: block in the policy, a hand-edited lib/server.py makes plan exit 3; nothing is touched."""
    box = sandbox
    upgrade(box, "7.0.4.2")
    hand_edit_server(box)
    policy = policy_copy(box, tmp_path / "policy.yaml", manual_changes="block")
    assert_refused_untouched(box, "7.0.4.3", "--policy", str(policy))
    (plan,) = [p for p in box.plans.iterdir() if p.name.startswith("to-7.0.4.3-")]
    assert failing_rules(plan) == {"manual_changes"}
    assert box.answers() == "7.0.4.2"


def test_plan_reads_without_creating_runs_on_the_host(sandbox):
    """An allowed plan reads the host but creates no run state there and no run in the home."""
    before = snapshot(sandbox)
    rc, plan = plan_to(sandbox, "7.0.4.2")
    assert rc == 0
    assert plan.is_file()
    assert_host_untouched(before, snapshot(sandbox))
    assert not (state_dir(sandbox) / "runs").exists()


# ---------------------------------------------------------------- catalog and policy helpers


def add_catalog_entry(box: Sandbox, catalog: Path, pkg: Path, **fields: Any) -> None:
    """Append an entry for pkg (its true sha256 and size) to catalog/catalog.yaml and sign it as the vendor."""
    import hashlib

    doc = yaml.safe_load((catalog / "catalog.yaml").read_text())
    entry = {"file": pkg.name, "product": "sample-middleware", "kind": "full",
             "sha256": hashlib.sha256(pkg.read_bytes()).hexdigest(), "size": pkg.stat().st_size, **fields}
    doc["packages"].append(entry)
    (catalog / "catalog.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    assert upgrader(box, "catalog", "sign", str(catalog / "catalog.yaml"), "--key", str(box.vendor_key)) == 0


def policy_copy(box: Sandbox, path: Path, **rules: Any) -> Path:
    """The shipped default policy with `rules` changed, trusting the sandbox's engineer and vendor keys."""
    doc = yaml.safe_load(Path(str(default_policy_path())).read_text())
    doc["rules"].update(rules)
    doc["approvals"]["allowed_signers"] = str(box.keys / "allowed_signers")
    doc["catalog"]["trusted_signers"] = str(box.keys / "vendor_signers")
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_rollback_keeps_the_configuration_edited_after_the_upgrade_beside_the_backup(sandbox):
    """Rolling back a committed run restores the pre-upgrade config byte for byte and keeps the later edit."""
    box = sandbox
    conf = box.install_dir / "conf" / "server.conf"
    original = conf.read_bytes()
    run = upgrade(box, "7.0.4.2")
    edited = original.replace(b"greeting = ", b"greeting = edited after the upgrade, ")
    assert edited != original
    conf.write_bytes(edited)
    assert upgrader(box, "rollback", run.id) == 0
    assert conf.read_bytes() == original
    kept = state_dir(box) / "runs" / run.id / "config-before-rollback" / "conf" / "server.conf"
    assert kept.read_bytes() == edited


def test_a_stale_lock_is_reported_and_broken_only_on_request(sandbox):
    """A lock left by a dead run stops the run (exit 5, holder named); --break-lock takes it over and upgrades."""
    box = sandbox
    lock = state_dir(box) / "lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"run": "20260101T000000Z-dead00", "user": "bob", "controller": "old-laptop",
                                "time": 0}))
    rc, plan = plan_to(box, "7.0.4.2")
    assert rc == 0
    refused = execute(box, plan)
    assert refused.rc == 5
    assert "20260101T000000Z-dead00" in refused.host()["error"] and "bob@old-laptop" in refused.host()["error"]
    assert box.answers() == "7.0.4.1"
    # an approval is good for one run: the retry gets its own
    again = approve(box, plan, "--comment", "the lock holder's laptop was lost; lock broken")
    taken = execute(box, plan, "--approval", str(again), "--break-lock", approved=False)
    assert taken.rc == 0
    assert box.answers() == "7.0.4.2"
    assert not lock.exists()
