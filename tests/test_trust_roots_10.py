"""Whose gate is it, round eleven: the leftovers of issue 12's host trust root, played through the shipped CLI (or, for
the host agent, as a modified controller would speak to the real agent) with real keys, a real catalog and the real
sample middleware; each ends in a refusal with its exit code and message, and the whole host unchanged
(tests/hoststate.py: product files, the service's pid and process, lock, staged packages, the agent's state dir).

1 the run's preflight proves its probes under the host's lock: a host with its own trust root runs only the command
  probes the plan entry it accepted names (the plan whose digest it recorded in the lock it granted, or the run's
  kept entry), byte for byte; any other, or the approved one changed by a byte, is refused (exit 4) naming the probe,
  before any probe runs.
2 a finished run's kept entry is spent: after a commit it admits only that run's own rollback (never prepare or
  install again); after the rollback, not even a stop.
3 a key that allowed_signers lists only through a pattern principal (``*@customer``) is never a plan's requester:
  refused (exit 4) by the controller and by the host's own trust root.
4 who may log in is the host's decision: ``access grant`` / ``revoke`` through the agent change an account's
  authorized_keys only when root lists the account in host-trust.json ``access_accounts`` (else exit 4).
5 a hook runs only at the phase the accepted plan lists it under, and only when the run is at that phase by the
  host's own record (runs/RUN/state.json).
6 prepare extracts with the vendor-signed catalog entry's limits and removes only the files the signed package's own
  package.yaml lists, whatever the controller (or an approved plan) says.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from hoststate import assert_host_untouched, lock_audit
from test_trust_roots_6 import host_root  # noqa: F401 - the host trust root fixture (engineer, requester, vendor)
from test_trust_roots_7 import _evidence
from test_trust_roots_9 import _cli
from trust_support import approval_signed_anyway, host_state, pristine, state_dir, write_root_config
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.exit_codes import ExitCode
from upgrader.fleet.transport import AgentClient
from upgrader.fleet.transport.base import AgentFailure
from upgrader.fleet.transport.local import LocalTransport

TO = "7.0.4.2"
SHIPPED = Path(__file__).resolve().parent.parent / "playbooks" / "sample-middleware.yaml"


def _playbook_with_command_probe(sandbox: Sandbox, marker: Path) -> None:
    """HOME/playbooks/sample-middleware.yaml: the shipped playbook plus a command probe that appends to ``marker``."""
    doc = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    doc["observe"]["probes"].append({"name": "selfcheck", "type": "command", "command": f"echo ran >> {marker}"})
    (sandbox.root / "playbooks").mkdir(exist_ok=True)
    (sandbox.root / "playbooks" / "sample-middleware.yaml").write_text(yaml.safe_dump(doc, sort_keys=False),
                                                                       encoding="utf-8")


def _approved(sandbox: Sandbox, tmp_path: Path, to: str = TO) -> tuple[Path, Path]:
    """The requester's signed plan to ``to`` and the engineer's approval of it (the shipped CLI)."""
    plan, approval = tmp_path / "p.json", tmp_path / "p.approval"
    done = _cli(sandbox.root, "plan", "--inventory", str(sandbox.inventory), "--to", to, "--catalog",
                str(sandbox.catalog), "--key", str(sandbox.requester_key), "-o", str(plan))
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    done = _cli(sandbox.root, "approve", str(plan), "--key", str(sandbox.engineer_key), "-o", str(approval))
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    return plan, approval


def _refused(agent: AgentClient, op: str, **req: object) -> str:
    with pytest.raises(AgentFailure) as refused:
        agent.call(op, **req)
    assert refused.value.kind == "host_trust", (op, refused.value.kind, refused.value.message)
    return refused.value.message


def _evil_probes(approved: list[dict[str, object]], ok: Path, pwned: Path) -> list[tuple[str, list[dict[str, object]]]]:
    """(the probe the refusal names, the probes a modified controller asks the host to prove)."""
    changed = [dict(p, command=f"echo ran >> {ok}; touch {pwned}") if p.get("name") == "selfcheck" else p
               for p in approved]
    return [("evil", approved + [{"name": "evil", "type": "command", "command": f"touch {pwned}"}]),
            ("selfcheck", changed)]


# ------------------------------------------------------------------ 1: the preflight's command probes


def test_the_preflight_proves_only_the_command_probes_of_the_plan_the_host_accepted(
        sandbox: Sandbox, host_root: Path, tmp_path: Path) -> None:
    """A modified controller holds the host's lock on the approved plan's evidence (the host verified it and
    recorded its digest in the lock) and asks the run's preflight proof for a command probe of its own, then for the
    plan's own probe with its command changed, then for the plan's probes without the plan: each is refused (the
    controller's exit 4) naming the probe, and no probe ran (not even the approved one of the same request). The
    plan's own probes, sent with the plan, run. The lock released, the whole host is as before."""
    logs = sandbox.install_dir / "logs"  # where a root command may write
    ok, pwned = logs / "selfcheck-ran", logs / "PWNED"
    _playbook_with_command_probe(sandbox, ok)
    plan, approval = _approved(sandbox, tmp_path)
    data = json.loads(plan.read_text(encoding="utf-8"))
    host = data["hosts"][0]
    approved = host["playbook"]["rollback_observe"]["probes"]
    assert any(p.get("name") == "selfcheck" for p in approved)
    ev = _evidence(sandbox, plan, approval, (sandbox.catalog / "catalog.yaml").read_text(encoding="utf-8"))
    before = host_state(sandbox)
    assert before.version == "7.0.4.1" and before.lock is None
    run = "20261203T200000Z-evil10"
    base = {"install_dir": str(sandbox.install_dir), "state_dir": None, "run_id": run}
    transport = LocalTransport("local")
    agent = AgentClient(transport)
    try:
        agent.call("lock", **base, controller="evil", user="mallory", approvals=[], sha256=host["package"]["sha256"],
                   audit=lock_audit(run), current_version="7.0.4.1", host_trust=ev)
        for name, probes in _evil_probes(approved, ok, pwned):
            said = _refused(agent, "prove", **base, probes=probes, host_trust=ev)
            assert f"the command probe '{name}'" in said and "refused before any probe ran" in said, said
            assert "is not one the plan this host accepted names" in said, said
            assert not pwned.exists() and not ok.exists(), f"a probe ran for {name}"
        said = _refused(agent, "prove", **base, probes=approved)
        assert "'selfcheck'" in said and "without the plan it accepted" in said, said
        assert not ok.exists()
        res = agent.call("prove", **base, probes=approved, host_trust=ev)  # the approved ones: proven
        assert [r["probe"] for r in res["probes"]] == [p.get("name") or p["type"] for p in approved]
        assert ok.is_file() and not pwned.exists()
        assert agent.call("unlock", **base)["released"] is True
    finally:
        agent.close()
        transport.close()
    assert_host_untouched(before, host_state(sandbox))


def test_a_kept_entry_binds_the_probes_of_its_run_too(sandbox: Sandbox, host_root: Path, tmp_path: Path) -> None:
    """After the operator's approved run (with a command probe) committed, its kept entry admits the lock of that
    run (its rollback needs it); a modified controller holding it asks the host to prove a command of its own, and
    the plan's probe with a changed command: refused (exit 4), nothing ran, the whole host as the run left it."""
    logs = sandbox.install_dir / "logs"  # where a root command may write
    ok, pwned = logs / "selfcheck-ran", logs / "PWNED"
    _playbook_with_command_probe(sandbox, ok)
    plan, approval = _approved(sandbox, tmp_path)
    done = _cli(sandbox.root, "run", str(plan), "--approval", str(approval), "--yes")
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    ok.unlink()
    rid = next(p.name for p in (sandbox.root / "runs").iterdir())
    approved = json.loads(plan.read_text(encoding="utf-8"))["hosts"][0]["playbook"]["rollback_observe"]["probes"]
    before = host_state(sandbox)
    assert before.version == TO and before.lock is None
    base = {"install_dir": str(sandbox.install_dir), "state_dir": None, "run_id": rid}
    transport = LocalTransport("local")
    agent = AgentClient(transport)
    try:
        agent.call("lock", **base, controller="evil", user="mallory", approvals=[],
                   audit=lock_audit(rid, "rollback"))  # a later part of the committed run
        for name, probes in _evil_probes(approved, ok, pwned):
            said = _refused(agent, "prove", **base, probes=probes)
            assert f"the command probe '{name}'" in said and "refused before any probe ran" in said, said
            assert not pwned.exists() and not ok.exists(), f"a probe ran for {name}"
        assert agent.call("unlock", **base)["released"] is True
    finally:
        agent.close()
        transport.close()
    assert_host_untouched(before, host_state(sandbox))


# ------------------------------------------------------------------ 2: a finished run's entry is spent


def test_a_finished_runs_entry_admits_only_its_own_rollback(sandbox: Sandbox, host_root: Path,
                                                            tmp_path: Path) -> None:
    """The operator's approved run commits. Its kept entry is spent: a modified controller asks prepare and install
    of that run again (refused, exit 4, "spent"); the operator's rollback of the committed run (the shipped CLI) still
    restores 7.0.4.1. After it, the entry admits no stop: the modified controller's stop, with the approved plan's
    very stop spec, is refused and the service keeps running; the whole host unchanged."""
    plan, approval = _approved(sandbox, tmp_path)
    done = _cli(sandbox.root, "run", str(plan), "--approval", str(approval), "--yes")
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    rid = next(p.name for p in (sandbox.root / "runs").iterdir())
    kept = json.loads((state_dir(sandbox.install_dir) / "runs" / rid / "host-trust-entry.json").read_text())
    assert kept["finished"] == "committed"
    spec = kept["entry"]["playbook"]["spec"]
    base = {"install_dir": str(sandbox.install_dir), "state_dir": None, "run_id": rid}
    committed = host_state(sandbox)
    transport = LocalTransport("local")
    agent = AgentClient(transport)
    try:
        agent.call("lock", **base, controller="evil", user="mallory", approvals=[],
                   audit=lock_audit(rid, "rollback"))  # a later part of the committed run
        pkg = kept["entry"]["package"]
        for op, extra in (("prepare", {"package_path": "/nonexistent", "sha256": pkg["sha256"], "size": pkg["size"],
                                       "kind": pkg["kind"], "remove": pkg.get("remove", []),
                                       "preserve": spec["preserve"], "limits": {}}),
                          ("install", {"preserve": spec["preserve"], "target_version": TO,
                                       "version_source": spec["version"]})):
            said = _refused(agent, op, **base, **extra)
            assert f"run {rid} already finished here (committed)" in said and f"not {op}" in said, said
        assert agent.call("unlock", **base)["released"] is True
    finally:
        agent.close()
        transport.close()
    assert_host_untouched(committed, host_state(sandbox))
    done = _cli(sandbox.root, "rollback", rid, "--yes")
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    kept = json.loads((state_dir(sandbox.install_dir) / "runs" / rid / "host-trust-entry.json").read_text())
    assert kept["finished"] == "rolled_back"
    before = host_state(sandbox)
    assert before.version == "7.0.4.1" and before.lock is None
    transport = LocalTransport("local")
    agent = AgentClient(transport)
    try:
        agent.call("lock", **base, controller="evil", user="mallory", approvals=[],
                   audit=lock_audit(rid, "rollback"))  # a later part of the committed run
        said = _refused(agent, "stop", **base, stop=spec["stop"])
        assert f"run {rid} already finished here (rolled_back)" in said and "not stop" in said, said
        assert "nothing was changed" in said, said
        assert agent.call("unlock", **base)["released"] is True
        assert_host_untouched(before, host_state(sandbox))
        agent.call("lock", **base, controller="evil", user="mallory", approvals=[],
                   audit=lock_audit(rid, "rollback"))  # a later part of the committed run
        # a committed finish asked again on the controller's word (finish is admitted: it records the end of this
        # part of the run) does not make the entry admit a stop again
        label = json.loads((state_dir(sandbox.install_dir) / "runs-opened.jsonl").read_text().splitlines()[-1])["as"]
        assert agent.call("finish", **base, outcome="committed", approvals=[], catalog=None,
                          audit={"as": label})["released"] is True
        assert "already finished here (finished)" in _refused(agent, "stop", **base, stop=spec["stop"])
    finally:
        agent.close()
        transport.close()
    after = host_state(sandbox)
    assert (after.product, after.pid, after.service, after.version, after.lock) == \
        (before.product, before.pid, before.service, "7.0.4.1", None)


# ------------------------------------------------------------------ 3: a pattern principal is nobody


def _pattern_requester(allowed_signers: Path) -> None:
    """The requester's key listed only as ``*@customer`` (its literal line replaced)."""
    text = allowed_signers.read_text(encoding="utf-8")
    assert "requester@customer " in text
    allowed_signers.write_text(text.replace("requester@customer ", "*@customer "), encoding="utf-8")


def test_a_pattern_principal_is_never_the_requester_for_the_controller(sandbox: Sandbox, tmp_path: Path) -> None:
    """The policy's allowed_signers lists the requester's key only as ``*@customer``: the run of the plan she signed
    (approved by the engineer with their own tooling: ``approve`` refuses such a plan, test_trust_roots_12) is refused
    as nobody's (exit 4, naming the pattern rule); nothing on the host changed."""
    before = pristine(sandbox)
    _pattern_requester(sandbox.keys / "allowed_signers")
    plan = tmp_path / "p.json"
    done = _cli(sandbox.root, "plan", "--inventory", str(sandbox.inventory), "--to", TO, "--catalog",
                str(sandbox.catalog), "--key", str(sandbox.requester_key), "-o", str(plan))
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    approval = approval_signed_anyway(sandbox, plan)
    done = _cli(sandbox.root, "run", str(plan), "--approval", str(approval), "--yes")
    out = done.stdout + done.stderr
    assert done.returncode == ExitCode.APPROVAL_REFUSED, out
    assert "only through a pattern principal" in out and "never a plan's requester identity" in out, out
    assert "Traceback" not in out
    runs = [p.name for p in (sandbox.root / "runs").iterdir()] if (sandbox.root / "runs").is_dir() else []
    assert_host_untouched(before, host_state(sandbox), run_record=runs[0] if runs else None)


def test_a_pattern_principal_is_never_the_requester_for_the_host(sandbox: Sandbox, host_root: Path,
                                                                 tmp_path: Path) -> None:
    """The host's own allowed_signers lists the requester only as ``*@customer`` (the controller's lists her by
    name): the approved run is refused by the host (exit 4, naming the pattern) before its lock; the whole host as
    before (the run's record on this machine aside)."""
    _pattern_requester(host_root / "allowed_signers")
    plan, approval = _approved(sandbox, tmp_path)
    before = host_state(sandbox)
    done = _cli(sandbox.root, "run", str(plan), "--approval", str(approval), "--yes")
    out = done.stdout + done.stderr
    assert done.returncode == ExitCode.APPROVAL_REFUSED, out
    assert "through a pattern principal" in out and "never a plan's requester identity" in out, out
    assert "Traceback" not in out
    rid = next(p.name for p in (sandbox.root / "runs").iterdir())
    assert_host_untouched(before, host_state(sandbox), run_record=rid)


# ------------------------------------------------------------------ 4: who may log in is the host's decision


def test_access_grants_over_the_agent_need_the_hosts_own_consent(sandbox: Sandbox, host_root: Path,
                                                                 tmp_path: Path) -> None:
    """A host with its own trust root: ``upgrader access grant`` (the shipped CLI, through the real agent) of an
    engineer's key to root's authorized_keys is refused (exit 4, naming host-trust.json "access_accounts"); the
    account's ~/.ssh is not made, the whole sandbox host unchanged. Once root lists the account there, the grant is
    written; with the account taken off the list again, ``revoke`` is refused the same way and the file keeps every
    byte; listed again, revoke removes the grant."""
    import subprocess

    home = tmp_path / "account-home"
    home.mkdir()
    key = tmp_path / "engineer-key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "engineer@vendor", "-f", str(key)],
                   check=True)
    env = {"HOME": str(home)}
    before = pristine(sandbox)
    grant = ("access", "grant", "--key", f"{key}.pub", "--hours", "1", "--reason", "upgrade")
    done = _cli(sandbox.root, *grant, env=env)
    out = done.stdout + done.stderr
    assert done.returncode == ExitCode.APPROVAL_REFUSED, out
    assert "decides itself who may log in" in out and '"access_accounts"' in out and "root" in out, out
    assert "nothing was changed" in out and "Traceback" not in out, out
    assert not (home / ".ssh").exists(), "the refused grant made ~/.ssh"
    assert_host_untouched(before, host_state(sandbox))
    # root's consent, in the host's own trust root
    write_root_config(host_root, access_accounts=["root"])
    done = _cli(sandbox.root, *grant, env=env)
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    granted = (home / ".ssh" / "authorized_keys").read_bytes()
    assert key.with_suffix(".pub").read_text().split()[1].encode() in granted
    write_root_config(host_root, access_accounts=["someone-else"])
    done = _cli(sandbox.root, "access", "revoke", "--all", env=env)
    out = done.stdout + done.stderr
    assert done.returncode == ExitCode.APPROVAL_REFUSED and '"access_accounts"' in out, out
    assert (home / ".ssh" / "authorized_keys").read_bytes() == granted
    write_root_config(host_root, access_accounts=["root"])
    done = _cli(sandbox.root, "access", "revoke", "--all", env=env)
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    assert (home / ".ssh" / "authorized_keys").read_bytes() == b""
    assert_host_untouched(before, host_state(sandbox))


# ------------------------------------------------------------------ 5: hooks only at the phases the plan names


def test_hooks_run_only_at_the_phase_the_accepted_plan_names_them(sandbox: Sandbox, host_root: Path,
                                                                  tmp_path: Path) -> None:
    """The operator's playbook has an ``after_commit`` hook and an ``after_rollback`` hook (each appends to a
    marker); the approved run commits and its after_commit hook runs once. A modified controller then holds the
    finished run's lock (its spent entry admits hooks for the run's own rollback) and asks the host for the
    approved after_commit hook again, the after_rollback hook while nothing was rolled back, the after_commit command
    under the before_stop phase, and a hook without a phase: each refused (exit 4) naming the hook and the phase;
    no marker line added, the whole host as the run left it."""
    logs = sandbox.install_dir / "logs"  # where a root command may write
    commit_marker, rollback_marker = logs / "after-commit", logs / "after-rollback"
    doc = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    doc["hooks"] = {"after_commit": [{"command": f"echo done >> {commit_marker}", "timeout": 10}],
                    "after_rollback": [{"command": f"echo back >> {rollback_marker}", "timeout": 10}]}
    (sandbox.root / "playbooks").mkdir(exist_ok=True)
    (sandbox.root / "playbooks" / "sample-middleware.yaml").write_text(yaml.safe_dump(doc, sort_keys=False),
                                                                       encoding="utf-8")
    plan, approval = _approved(sandbox, tmp_path)
    done = _cli(sandbox.root, "run", str(plan), "--approval", str(approval), "--yes")
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    assert commit_marker.read_text() == "done\n" and not rollback_marker.exists()
    rid = next(p.name for p in (sandbox.root / "runs").iterdir())
    hooks = json.loads(plan.read_text(encoding="utf-8"))["hosts"][0]["playbook"]["spec"]["hooks"]
    commit, back = hooks["after_commit"][0], hooks["after_rollback"][0]
    before = host_state(sandbox)
    base = {"install_dir": str(sandbox.install_dir), "state_dir": None, "run_id": rid}
    transport = LocalTransport("local")
    agent = AgentClient(transport)
    try:
        agent.call("lock", **base, controller="evil", user="mallory", approvals=[],
                   audit=lock_audit(rid, "rollback"))  # a later part of the committed run
        for hook, phase, says in ((commit, "after_commit", "this run is at 'finished' here"),
                                  (back, "after_rollback", "this run is at 'finished' here"),
                                  (commit, "before_stop", "the plan's hooks at that phase: none"),
                                  (commit, None, "at phase None")):
            said = _refused(agent, "hook", **base, command=hook["command"], hook_timeout=hook["timeout"],
                            **({"phase": phase} if phase else {}))
            assert "is not what the plan this host accepted says" in said and says in said, said
            assert repr(hook["command"]) in said, said
        assert agent.call("unlock", **base)["released"] is True
    finally:
        agent.close()
        transport.close()
    assert commit_marker.read_text() == "done\n" and not rollback_marker.exists()
    assert_host_untouched(before, host_state(sandbox))
    # the run's own rollback still runs its after_rollback hook, at its phase
    done = _cli(sandbox.root, "rollback", rid, "--yes")
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    assert rollback_marker.read_text() == "back\n" and commit_marker.read_text() == "done\n"


# ------------------------------------------------------------------ 6: the patch's remove list and limits as signed


def test_prepare_extracts_with_the_signed_limits_and_removes_only_the_signed_packages_files(
        sandbox: Sandbox, host_root: Path, tmp_path: Path) -> None:
    """The approved plan to the 7.0.4.3 patch (its package.yaml removes lib/legacy_compat.py). A modified controller
    holds the lock on its evidence and asks prepare with no extraction limits, then with limits of its own: refused
    (exit 4) naming the signed limits. The requester then edits her plan's remove list to delete bin/start.sh too,
    signs it again, and an engineer approves it with their own tooling: the host accepts the evidence (the plan says
    so), but its prepare compares the list with the signed package's own package.yaml and refuses (exit 4) before
    anything is extracted. No staged tree, no backup; the lock released, the whole host as before."""
    from trust_support import approval_signed_anyway, resigned

    plan, approval = _approved(sandbox, tmp_path, "7.0.4.3")
    data = json.loads(plan.read_text(encoding="utf-8"))
    entry = data["hosts"][0]
    pkg = entry["package"]
    assert pkg["kind"] == "patch" and pkg["remove"] == ["lib/legacy_compat.py"], pkg
    catalog = (sandbox.catalog / "catalog.yaml").read_text(encoding="utf-8")
    prepare = {"package_path": str(sandbox.catalog / pkg["file"]), "sha256": pkg["sha256"], "size": pkg["size"],
               "kind": pkg["kind"], "remove": pkg["remove"], "preserve": entry["playbook"]["spec"]["preserve"],
               "current_version": "7.0.4.1"}
    before = host_state(sandbox)
    run = "20261203T200000Z-limits"
    base = {"install_dir": str(sandbox.install_dir), "state_dir": None, "run_id": run}
    run_dir = state_dir(sandbox.install_dir) / "runs" / run
    transport = LocalTransport("local")
    agent = AgentClient(transport)
    try:
        ev = _evidence(sandbox, plan, approval, catalog)
        agent.call("lock", **base, controller="evil", user="mallory", approvals=[], sha256=pkg["sha256"],
                   audit=lock_audit(run), current_version="7.0.4.1", host_trust=ev)
        for limits in ({}, {"members": 1 << 30, "unpacked_bytes": 1 << 40}):
            said = _refused(agent, "prepare", **base, **prepare, limits=limits, host_trust=ev)
            assert f"with the limits {limits!r}" in said and str(pkg["limits"]) in said, said
            assert "refused before the package was copied, nothing changed" in said, said
            assert not any((run_dir / name).exists() for name in ("staging", "backup", "package.tar.gz"))
        assert agent.call("unlock", **base)["released"] is True
        # the requester's own remove list, signed again and approved anyway
        edited = json.loads(json.dumps(data))
        edited["hosts"][0]["package"]["remove"] = ["lib/legacy_compat.py", "bin/start.sh"]
        edited = resigned(edited, sandbox.root)
        plan2 = tmp_path / "p2.json"
        plan2.write_text(json.dumps(edited, indent=1), encoding="utf-8")
        ev2 = _evidence(sandbox, plan2, approval_signed_anyway(sandbox, plan2), catalog)
        agent.call("lock", **base, controller="evil", user="mallory", approvals=[], sha256=pkg["sha256"],
                   audit=lock_audit(run), current_version="7.0.4.1", host_trust=ev2)
        said = _refused(agent, "prepare", **base, **dict(prepare, remove=edited["hosts"][0]["package"]["remove"]),
                        limits=pkg["limits"], host_trust=ev2)
        assert "remove (the request: ['lib/legacy_compat.py', 'bin/start.sh'], the signed package's package.yaml: " \
               "['lib/legacy_compat.py'])" in said, said
        assert "refused before it was extracted, nothing changed" in said, said
        assert not any((run_dir / name).exists() for name in ("staging", "backup", "package.tar.gz"))
        assert agent.call("unlock", **base)["released"] is True
    finally:
        agent.close()
        transport.close()
    assert (sandbox.install_dir / "bin" / "start.sh").is_file()
    assert_host_untouched(before, host_state(sandbox), run_record=run)
