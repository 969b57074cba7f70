"""Whose gate is it, round nine: the attacks the eighth review found, played through the shipped CLI with real keys,
a real catalog and the real sample middleware; each now ends in a refusal with its exit code and message, and
nothing on the host changed (product files, the service's pid and version, lock, staged packages, host records).

1 a first upgrade (no ledger) of an install that runs 7.0.5.0: the requester's own playbook gives the version file a
  ``pattern`` that reads 7.0.5.0 as "7.0", so her plan says 7.0 -> 7.0.4.2 (a downgrade) and an engineer approves it.
  The host reads the version its own way (the first word of the file, a whole version), 7.0.5.0, and refuses (exit
  4). A version file whose first word is no whole version ("7.0") is refused too, naming what was read.
2 root lists version commands in host-trust.json ``version_commands``: a relative one is refused (it would run
  whatever lies at that path in any install dir a controller names); an absolute one never runs in an install dir
  owned by another account (that account would choose what it runs or reads as root): ``status`` with the
  requester's inventory runs no script of that account and discloses no root-only file.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import yaml

from test_trust_roots_6 import host_root  # noqa: F401 - a fixture
from trust_support import host_state, pristine, write_root_config
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.exit_codes import ExitCode
from upgrader.hostagent import hosttrust

SHIPPED = Path(__file__).resolve().parent.parent / "playbooks" / "sample-middleware.yaml"


def _cli(home: Path, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The shipped CLI in its own process: ``upgrader --home HOME ...``."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_")}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "upgrader", "--home", str(home), *argv], cwd=home, env=full,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)


# ------------------------------------------------------------------ 1: the requester's pattern on a first upgrade


def _vendor_installed_7050(sandbox: Sandbox) -> None:
    """Before upgrader ever ran here, the vendor's installer put 7.0.5.0 in place (its package's product files; conf,
    data and logs kept); the service runs it. No ledger (installed.json) on the host."""
    sandbox.stop_service()
    with tarfile.open(sandbox.catalog / "sample-middleware-7.0.5.0.tar.gz") as tar:
        members = [m for m in tar.getmembers() if m.name.split("/")[0] in ("bin", "lib", "docs")]
        tar.extractall(sandbox.install_dir, members=members)
    sandbox.start_service()
    sandbox.wait_version("7.0.5.0", timeout=15)


def _requester_home(sandbox: Sandbox, tmp_path: Path, version: dict[str, str]) -> Path:
    """Her HOME: the operator's inventory, policy and signer files, her own key; the shipped playbook with her
    version source and without the http probe that compares the page's version with the plan's."""
    home = tmp_path / "requester-home"
    (home / "keys").mkdir(parents=True)
    (home / "playbooks").mkdir()
    shutil.copy(sandbox.inventory, home / "inventory.yaml")
    shutil.copy(sandbox.root / "policy.yaml", home / "policy.yaml")
    for name in ("allowed_signers", "vendor_signers", "requester", "requester.pub"):
        shutil.copy(sandbox.keys / name, home / "keys" / name)
    doc = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    doc["version"] = version
    doc["observe"]["probes"] = [p for p in doc["observe"]["probes"] if p.get("name") != "version"]
    (home / "playbooks" / "sample-middleware.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return home


def _plan_approve_run(sandbox: Sandbox, home: Path, tmp_path: Path,
                      current: str) -> subprocess.CompletedProcess[str]:
    plan, approval = tmp_path / "p.json", tmp_path / "p.approval"
    done = _cli(home, "plan", "--inventory", str(home / "inventory.yaml"), "--to", "7.0.4.2", "--catalog",
                str(sandbox.catalog), "--key", str(home / "keys" / "requester"), "-o", str(plan))
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    assert json.loads(plan.read_text(encoding="utf-8"))["hosts"][0]["current"] == current
    done = _cli(home, "approve", str(plan), "--key", str(sandbox.engineer_key), "-o", str(approval))
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    return _cli(home, "run", str(plan), "--approval", str(approval), "--yes",
                env={"UPGRADER_AUDIT_KEY": str(home / "keys" / "requester")})


def test_a_requesters_version_pattern_cannot_make_a_downgrade_look_free_on_a_first_upgrade(
        sandbox: Sandbox, host_root: Path, tmp_path: Path) -> None:
    """7.0.5.0 runs (no ledger); the operator's HOME refuses 7.0.4.2 (a downgrade). Her playbook's pattern reads
    7.0.5.0 as "7.0": her plan says 7.0 -> 7.0.4.2, an engineer approves it; ``run`` is refused by the host (exit 4),
    which read 7.0.5.0 itself (the file's first word), and nothing on the host changed."""
    _vendor_installed_7050(sandbox)
    before = host_state(sandbox)
    assert before.version == "7.0.5.0" and before.host_runs is None
    refused = _cli(sandbox.root, "plan", "--inventory", str(sandbox.inventory), "--to", "7.0.4.2", "--catalog",
                   str(sandbox.catalog), "--key", str(sandbox.requester_key), "-o", str(tmp_path / "op.json"))
    assert refused.returncode == ExitCode.POLICY_REFUSED and "older than 7.0.5.0" in refused.stdout + refused.stderr
    home = _requester_home(sandbox, tmp_path, {"file": "lib/VERSION", "pattern": r"^(7\.0\.4\.2|7\.0)"})
    run = _plan_approve_run(sandbox, home, tmp_path, "7.0")
    assert run.returncode == ExitCode.APPROVAL_REFUSED, run.stdout + run.stderr
    for words in (f"host trust root {hosttrust.TRUST_DIR}", "runs 7.0.5.0 by the version file lib/VERSION",
                  "the plan says it runs 7.0", "nothing changed"):
        assert words in run.stdout + run.stderr, f"{words!r} not in {run.stdout + run.stderr}"
    assert "Traceback" not in run.stderr
    after = host_state(sandbox)
    assert after == before and after.version == "7.0.5.0"


def test_a_version_file_whose_first_word_is_no_whole_version_is_refused_naming_what_was_read(
        sandbox: Sandbox, host_root: Path, tmp_path: Path) -> None:
    """The install's version file says "7.0 (7.0.5.0)" (its first word, 7.0, has two levels; the target four): the
    plan says 7.0 -> 7.0.4.2 and is approved; the host refuses (exit 4), naming what it read; nothing changed."""
    version = sandbox.install_dir / "lib" / "VERSION"
    version.write_text("7.0 (7.0.5.0)\n", encoding="utf-8")
    before = host_state(sandbox)
    home = _requester_home(sandbox, tmp_path, {"file": "lib/VERSION"})
    run = _plan_approve_run(sandbox, home, tmp_path, "7.0")
    assert run.returncode == ExitCode.APPROVAL_REFUSED, run.stdout + run.stderr
    for words in ("read '7.0'", "first line '7.0 (7.0.5.0)'", "not a whole version of 4 numeric levels",
                  "nothing changed"):
        assert words in run.stdout + run.stderr, f"{words!r} not in {run.stdout + run.stderr}"
    assert host_state(sandbox) == before


def test_a_committed_first_upgrade_records_the_raw_line_the_host_read(
        sandbox: Sandbox, host_root: Path, tmp_path: Path) -> None:
    """The operator's own first upgrade 7.0.4.1 -> 7.0.4.2 commits; host-trust.jsonl records the line it read."""
    plan, approval = tmp_path / "p.json", tmp_path / "p.approval"
    done = _cli(sandbox.root, "plan", "--inventory", str(sandbox.inventory), "--to", "7.0.4.2", "--catalog",
                str(sandbox.catalog), "--key", str(sandbox.requester_key), "-o", str(plan))
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    first_line = (sandbox.install_dir / "lib" / "VERSION").read_text(encoding="utf-8").strip().splitlines()[0]
    done = _cli(sandbox.root, "approve", str(plan), "--key", str(sandbox.engineer_key), "-o", str(approval))
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    done = _cli(sandbox.root, "run", str(plan), "--approval", str(approval), "--yes")
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    ledger = sandbox.install_dir.parent / f".upgrader-{sandbox.install_dir.name}" / "host-trust.jsonl"
    record = json.loads(ledger.read_text(encoding="utf-8").splitlines()[-1])
    assert record["current"] == "7.0.4.1" and record["read_line"] == first_line and record["outcome"] == "committed"


# ------------------------------------------------------------------ 2: root's version commands, another's install dir


def _operator_playbook(sandbox: Sandbox, command: str) -> None:
    doc = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    doc["version"] = {"command": command}
    (sandbox.root / "playbooks").mkdir(exist_ok=True)
    (sandbox.root / "playbooks" / "sample-middleware.yaml").write_text(yaml.safe_dump(doc, sort_keys=False),
                                                                       encoding="utf-8")


def _roots_commands(host_root: Path, commands: list[str]) -> None:
    write_root_config(host_root, version_commands=commands)


def _inventory_with(sandbox: Sandbox, tmp_path: Path, install_dir: Path) -> Path:
    """The requester's inventory: the operator's, plus app-02 whose install_dir is ``install_dir``."""
    data = yaml.safe_load(sandbox.inventory.read_text(encoding="utf-8"))
    other = copy.deepcopy(data["hosts"]["app-01"])
    other["install_dir"] = str(install_dir)
    data["hosts"]["app-02"] = other
    for members in (data.get("groups") or {}).values():
        members.append("app-02")
    inv = tmp_path / "inv.yaml"
    inv.write_text(yaml.safe_dump(data), encoding="utf-8")
    return inv


def _anothers_dir(tmp_path: Path) -> Path:
    homes = tmp_path / "homes"
    (homes / "mallory" / "bin").mkdir(parents=True)
    (homes / "mallory" / "lib").mkdir()
    homes.chmod(0o755)
    return homes / "mallory"


def test_root_listed_version_command_never_runs_in_another_accounts_install_dir(
        sandbox: Sandbox, host_root: Path, tmp_path: Path) -> None:
    """Root lists the product's script by its absolute path form (``/bin/sh bin/version.sh``); the operator's
    playbook uses it. The requester's inventory names a directory of uid 65534 holding its own bin/version.sh
    (writes a marker, stops the operator's service): ``status`` exits 0, says app-02's version was not read and why;
    no marker, the operator's service runs with the same pid, nothing on the host changed."""
    _roots_commands(host_root, ["/bin/sh bin/version.sh"])
    script = sandbox.install_dir / "bin" / "version.sh"
    script.write_text("#!/bin/sh\ncat lib/VERSION\n", encoding="utf-8")
    script.chmod(0o755)
    _operator_playbook(sandbox, "/bin/sh bin/version.sh")
    own = _cli(sandbox.root, "status", "--inventory", str(sandbox.inventory))
    assert own.returncode == ExitCode.OK and "7.0.4.1" in own.stdout, own.stdout + own.stderr
    before = pristine(sandbox)
    marker = tmp_path / "PWNED"
    mallory = _anothers_dir(tmp_path)
    (mallory / "bin" / "version.sh").write_text(
        f"#!/bin/sh\nid -un > {marker}\nkill $(cat {sandbox.install_dir}/run/server.pid)\necho 7.0.4.1\n",
        encoding="utf-8")
    (mallory / "bin" / "version.sh").chmod(0o755)
    (mallory / "lib" / "VERSION").write_text("7.0.4.1\n", encoding="utf-8")
    for p in (mallory, mallory / "bin", mallory / "lib", mallory / "bin" / "version.sh", mallory / "lib" / "VERSION"):
        os.chown(p, 65534, 65534)
    done = _cli(sandbox.root, "status", "--inventory", str(_inventory_with(sandbox, tmp_path, mallory)))
    out = done.stdout + done.stderr
    assert done.returncode == ExitCode.OK, out
    assert "owned by uid 65534, not by root or the agent's user" in out and "Traceback" not in out
    assert not marker.exists()
    assert host_state(sandbox) == before


def test_a_root_listed_command_cannot_read_a_root_only_file_through_another_accounts_link(
        sandbox: Sandbox, host_root: Path, tmp_path: Path) -> None:
    """Root lists ``/bin/cat lib/VERSION``; in a directory of uid 65534, lib/VERSION links to a root-only file.
    ``status`` with that directory as an install shows not a word of the file; nothing on the host changed."""
    _roots_commands(host_root, ["/bin/cat lib/VERSION"])
    _operator_playbook(sandbox, "/bin/cat lib/VERSION")
    before = pristine(sandbox)
    secret = tmp_path / "secret"
    secret.write_text("TOPSECRET-root-only rest\n", encoding="utf-8")
    secret.chmod(0o600)
    mallory = _anothers_dir(tmp_path)
    (mallory / "lib" / "VERSION").symlink_to(secret)
    for p in (mallory, mallory / "bin", mallory / "lib"):
        os.chown(p, 65534, 65534)
    os.chown(mallory / "lib" / "VERSION", 65534, 65534, follow_symlinks=False)
    done = _cli(sandbox.root, "status", "--inventory", str(_inventory_with(sandbox, tmp_path, mallory)))
    out = done.stdout + done.stderr
    assert done.returncode == ExitCode.OK, out
    assert "TOPSECRET" not in out and "owned by uid 65534" in out
    assert host_state(sandbox) == before


def test_a_relative_version_command_in_host_trust_json_is_refused_naming_it(
        sandbox: Sandbox, host_root: Path, tmp_path: Path) -> None:
    """Root lists ``bin/version.sh`` (relative: it would run whatever lies there in any install dir a controller
    names): the host's trust root is refused, naming the entry and what to write; ``plan`` exits 4 and writes no
    plan, the version script never runs, nothing on the host changed."""
    _roots_commands(host_root, ["bin/version.sh"])
    marker = tmp_path / "PWNED"
    script = sandbox.install_dir / "bin" / "version.sh"
    script.write_text(f"#!/bin/sh\nid -un > {marker}\ncat lib/VERSION\n", encoding="utf-8")
    script.chmod(0o755)
    _operator_playbook(sandbox, "bin/version.sh")
    before = pristine(sandbox)
    plan = tmp_path / "p.json"
    done = _cli(sandbox.root, "plan", "--inventory", str(sandbox.inventory), "--to", "7.0.4.2", "--catalog",
                str(sandbox.catalog), "--key", str(sandbox.requester_key), "-o", str(plan))
    out = done.stdout + done.stderr
    assert done.returncode == ExitCode.APPROVAL_REFUSED, out
    assert "version_commands lists 'bin/version.sh', which is not an absolute command" in out, out
    assert not plan.exists() and not marker.exists() and "Traceback" not in out
    assert host_state(sandbox) == before


def test_a_playbook_pattern_is_used_by_the_host_only_when_root_lists_that_exact_pattern(
        sandbox: Sandbox, host_root: Path, tmp_path: Path) -> None:
    """The install's version file says "build 7.0.4.1"; the operator's playbook reads it with a pattern. Until root
    lists that exact pattern in host-trust.json ``version_patterns`` the host reads the first word, "build", and
    refuses the approved run (exit 4, naming it), nothing changed; listed, the same plan's run commits 7.0.4.2."""
    pattern = r"(\d+(?:\.\d+){3})"
    (sandbox.install_dir / "lib" / "VERSION").write_text("build 7.0.4.1\n", encoding="utf-8")
    doc = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    doc["version"] = {"file": "lib/VERSION", "pattern": pattern}
    (sandbox.root / "playbooks").mkdir(exist_ok=True)
    (sandbox.root / "playbooks" / "sample-middleware.yaml").write_text(yaml.safe_dump(doc, sort_keys=False),
                                                                       encoding="utf-8")
    before = host_state(sandbox)
    plan, approval = tmp_path / "p.json", tmp_path / "p.approval"
    done = _cli(sandbox.root, "plan", "--inventory", str(sandbox.inventory), "--to", "7.0.4.2", "--catalog",
                str(sandbox.catalog), "--key", str(sandbox.requester_key), "-o", str(plan))
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    done = _cli(sandbox.root, "approve", str(plan), "--key", str(sandbox.engineer_key), "-o", str(approval))
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    run = _cli(sandbox.root, "run", str(plan), "--approval", str(approval), "--yes")
    assert run.returncode == ExitCode.APPROVAL_REFUSED, run.stdout + run.stderr
    assert "read 'build' (first line 'build 7.0.4.1')" in run.stdout + run.stderr, run.stdout + run.stderr
    after = host_state(sandbox)  # the host as it was; this HOME now holds the refused run's journal
    assert len(after.home_runs) == 1 and dataclasses.replace(after, home_runs=()) == before
    write_root_config(host_root, version_patterns=[pattern])
    run = _cli(sandbox.root, "run", str(plan), "--approval", str(approval), "--yes")
    assert run.returncode == ExitCode.OK, run.stdout + run.stderr
    assert host_state(sandbox).version == "7.0.4.2"


def test_another_installs_ledger_named_as_state_dir_does_not_say_what_this_install_runs(
        sandbox: Sandbox, host_root: Path, tmp_path: Path) -> None:
    """Round 9: app-01 runs 7.0.5.0 with no ledger; another install's state dir on the same machine says upgrader
    installed 7.0.0.0 there. The requester's inventory names that dir as app-01's state_dir and her pattern reads
    "7.0": the host reads this install's version only from the ledger beside it (none) or its own version file
    (7.0.5.0), so the approved 7.0 -> 7.0.4.2 is refused (exit 4), nothing changed."""
    from upgrader.hostagent.state import ensure_state_dir

    _vendor_installed_7050(sandbox)
    other = sandbox.install_dir.parent / ".upgrader-app-00"
    ensure_state_dir(str(other))
    (other / "installed.json").write_text(json.dumps({"version": "7.0.0.0", "files": {}, "dirs": {}, "links": {}}))
    os.chmod(other / "installed.json", 0o600)
    before = host_state(sandbox)
    home = _requester_home(sandbox, tmp_path, {"file": "lib/VERSION", "pattern": r"^(7\.0)"})
    inv = home / "inventory.yaml"
    lines = []
    for line in inv.read_text(encoding="utf-8").splitlines():
        lines.append(line)
        if line.strip().startswith("install_dir:"):
            lines.append(line.split("install_dir:")[0] + f"state_dir: {other}")
    inv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    run = _plan_approve_run(sandbox, home, tmp_path, "7.0")
    out = run.stdout + run.stderr
    assert run.returncode == ExitCode.APPROVAL_REFUSED, out
    assert "runs 7.0.5.0 by the version file lib/VERSION" in out and "nothing changed" in out, out
    assert "Traceback" not in run.stderr
    after = host_state(sandbox)
    assert after == before and after.version == "7.0.5.0"


def test_a_kept_entry_of_one_install_admits_no_step_for_another_install(
        sandbox: Sandbox, host_root: Path, tmp_path: Path) -> None:
    """Round 10: after the operator's approved run on install A committed, the requester rewrites that run's
    directory in the operator's HOME (plan.json and the CRC-only journal: install_dir -> install B on the same
    host, state_dir -> A's state dir, where A's accepted entry is kept) and runs ``rollback RUN``. The host finds no
    accepted entry for install B (the kept one is A's): nothing is admitted, B's service keeps running, A stays on
    the upgrade."""
    from upgrader.cli.commands.demo import build_sandbox
    from upgrader.core.journal import _checksum
    from upgrader.core.plan import plan_digest

    home = sandbox.root
    plan, approval = tmp_path / "p.json", tmp_path / "p.approval"
    done = _cli(home, "plan", "--inventory", str(sandbox.inventory), "--to", "7.0.4.2", "--catalog",
                str(sandbox.catalog), "--key", str(sandbox.requester_key), "-o", str(plan))
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    done = _cli(home, "approve", str(plan), "--key", str(sandbox.engineer_key), "-o", str(approval))
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    done = _cli(home, "run", str(plan), "--approval", str(approval), "--yes",
                env={"UPGRADER_AUDIT_KEY": str(sandbox.operator_key)})
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    state_a = sandbox.install_dir.parent / ".upgrader-app-01"
    rid = sorted(p.name for p in (state_a / "runs").iterdir())[-1]
    other = build_sandbox(tmp_path / "other")
    other.start_service()
    try:
        pid_b = (other.install_dir / "run" / "server.pid").read_text().strip()
        assert other.answers() == "7.0.4.1"
        run_dir = home / "runs" / rid
        a, b = str(sandbox.install_dir), str(other.install_dir)
        doc = json.loads((run_dir / "plan.json").read_text())
        for h in doc["hosts"]:
            h["install_dir"], h["state_dir"] = b, str(state_a)
        doc = json.loads(json.dumps(doc).replace(json.dumps(a)[1:-1], json.dumps(b)[1:-1]))
        (run_dir / "plan.json").write_text(json.dumps(doc, indent=1))
        lines = []
        for line in (run_dir / "journal.jsonl").read_text().splitlines():
            rec = json.loads(json.dumps(json.loads(line)["rec"]).replace(json.dumps(a)[1:-1], json.dumps(b)[1:-1]))
            if rec["phase"] == "plan" and rec["event"] == "accepted":
                rec["data"]["digest"] = plan_digest(doc)
            body = json.dumps(rec, sort_keys=True, ensure_ascii=False, default=str)
            lines.append('{"crc": "%s", "rec": %s}' % (_checksum(body), body))
        (run_dir / "journal.jsonl").write_text("\n".join(lines) + "\n")
        before_b = host_state(other)
        rb = _cli(home, "rollback", rid, "--yes", env={"UPGRADER_AUDIT_KEY": str(sandbox.operator_key)})
        out = rb.stdout + rb.stderr
        assert rb.returncode != ExitCode.OK and "Traceback" not in rb.stderr, out
        assert other.answers() == "7.0.4.1" and os.path.exists(f"/proc/{pid_b}"), out  # B never stopped
        after_b = host_state(other)
        assert (after_b.product, after_b.pid, after_b.service, after_b.version) == \
            (before_b.product, before_b.pid, before_b.service, before_b.version)
        assert sandbox.answers() == "7.0.4.2"  # A as the approved run left it
    finally:
        other.stop_service()
