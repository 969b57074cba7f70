"""Whose gate is it, round six: the two attacks the sixth review found, played through the shipped CLI with real
keys, a real catalog and the real sample middleware; each now ends in a refusal (or in "nothing to do") with its exit
code and message, and nothing on the host changed (product files, service pid and version, lock, staged packages).

1 a requester with a controller HOME of her own: her run is refused at preflight by the host's trust root, then
  `rollback` of that run from her HOME would run her playbook's start command as root. Now no command of hers runs.
  The same rollback without a host trust root touches nothing either (the controller's own rule).
2 an engineer signs a plan with a throwaway key, names that key as the operator who runs it, and approves the plan
  with her own key: the unlisted operator key is refused as a requester (exit 4).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from conftest import kill_processes_under, plan_to, run_plan, upgrader
from hoststate import assert_host_untouched
from trust_support import add_signer, approval_signed_anyway, host_state, pristine, root_installs, state_dir
from upgrader.cli.commands.demo import Sandbox, build_sandbox
from upgrader.core.exit_codes import ExitCode
from upgrader.hostagent import hosttrust

TO = "7.0.4.2"
ROOT = Path(hosttrust.TRUST_DIR)


def _cli(home: Path, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The shipped CLI in its own process (the attacker's controller): ``upgrader --home HOME ...``."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_")}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "upgrader", "--home", str(home), *argv], cwd=home, env=full,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)


@pytest.fixture
def host_root(sandbox: Sandbox) -> Iterator[Path]:
    """The operator's host trust root: the sandbox's engineer, requester and vendor only; removed afterwards."""
    assert os.geteuid() == 0, "the host trust root is root's: these tests run as root"
    made_parent = not ROOT.parent.exists()
    assert not ROOT.exists(), f"{ROOT} exists before the test: another test left it"
    ROOT.mkdir(parents=True)
    allowed, vendors = ROOT / "allowed_signers", ROOT / "vendor_signers"
    add_signer(allowed, "engineer@vendor", sandbox.engineer_key, 'namespaces="upgrader-approval"')
    add_signer(allowed, "requester@customer", sandbox.requester_key, 'namespaces="upgrader-plan"')
    add_signer(vendors, "vendor-release", sandbox.vendor_key, 'namespaces="upgrader-catalog"')
    for f in (allowed, vendors):
        f.chmod(0o644)
    root_installs(ROOT, sandbox)  # root's word on the installed product (the install dir's files are not)
    ROOT.chmod(0o755)
    try:
        yield ROOT
    finally:
        shutil.rmtree(ROOT if not made_parent else ROOT.parent, ignore_errors=True)


def _mallory(sandbox: Sandbox, tmp_path: Path, marker: Path) -> tuple[Path, socket.socket]:
    """Mallory's own controller HOME (her keys, "vendor", catalog, policy) whose inventory names the operator's
    install, and her playbook of the same name: its start command writes ``marker`` and stops the service; its probe
    is a port of hers (returned, open) that never answers once she closes it."""
    home = tmp_path / "mallory"
    build_sandbox(home)
    inv = home / "inventory.yaml"
    lines = []
    for line in inv.read_text(encoding="utf-8").splitlines():
        key = line.strip().split(":", 1)[0]
        if key == "install_dir":
            line = line.split("install_dir:")[0] + f"install_dir: {sandbox.install_dir}"
        elif key == "port":
            line = line.split("port:")[0] + f'port: "{sandbox.port}"'
        lines.append(line)
    inv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert str(sandbox.install_dir) in inv.read_text(encoding="utf-8")
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(50)
    probe_port = listener.getsockname()[1]
    _playbook(home, f"sh -c 'id -un > {marker}; bin/stop.sh'", probe_port)
    return home, listener


def _playbook(home: Path, start: str, probe_port: int) -> None:
    """HOME/playbooks/sample-middleware.yaml: ``start`` is its start command; no pid file or port that would say
    "already running"; one tcp probe on ``probe_port``."""
    (home / "playbooks").mkdir(exist_ok=True)
    (home / "playbooks" / "sample-middleware.yaml").write_text(f"""format: 1
name: sample-middleware
product: sample-middleware
vars:
  port: "18080"
vars_from:
  port: {{file: conf/server.conf, pattern: '^port\\s*=\\s*(\\d+)'}}
version:
  file: lib/VERSION
preserve:
  - {{path: conf/server.conf, kind: config}}
  - {{path: data, kind: data}}
  - {{path: logs, kind: data}}
  - {{path: run, kind: data}}
stop:
  command: "true"
  timeout: 5s
  pid_file: run/none.pid
  ports: []
start:
  command: "{start}"
  timeout: 15s
observe:
  start_timeout: 1s
  window: 0s
  interval: 0.25s
  probes:
    - {{type: tcp, port: "{probe_port}"}}
""", encoding="utf-8")


def _refused_run(home: Path, listener: socket.socket) -> tuple[int, str, str]:
    """Mallory plans (her probe port open), approves with her own "engineer", closes the port and runs: returns the
    run's exit code, its stderr and its run id."""
    plan, approval = home / "plans" / "p.json", home / "approvals" / "p.approval"
    done = _cli(home, "plan", "--inventory", str(home / "inventory.yaml"), "--to", TO, "--catalog",
                str(home / "catalog"), "--key", str(home / "keys" / "requester"), "-o", str(plan))
    assert done.returncode == ExitCode.OK, done.stderr
    done = _cli(home, "approve", str(plan), "--key", str(home / "keys" / "engineer"), "-o", str(approval))
    assert done.returncode == ExitCode.OK, done.stderr
    listener.close()
    run = _cli(home, "run", str(plan), "--approval", str(approval), "--yes")
    runs = sorted((home / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    return run.returncode, run.stderr, runs[-1].name


def _operator_runs_next(sandbox: Sandbox) -> None:
    """The operator's next honest run proceeds: the host is not locked by anyone."""
    rc, plan = plan_to(sandbox, TO)
    assert rc == ExitCode.OK
    assert run_plan(sandbox, plan, "--yes") == ExitCode.OK
    assert host_state(sandbox).version == TO


# ------------------------------------------------------------------ 1: rollback of a run the host refused


def test_rollback_of_a_run_the_host_trust_root_refused_runs_none_of_the_requesters_commands(
        sandbox: Sandbox, host_root: Path, tmp_path: Path) -> None:
    marker = sandbox.install_dir / "logs" / "PWNED"  # where a root command may write
    home, listener = _mallory(sandbox, tmp_path, marker)
    try:
        before = pristine(sandbox)
        rc, err, run_id = _refused_run(home, listener)
    finally:
        listener.close()
    assert rc == ExitCode.APPROVAL_REFUSED, err
    assert "host trust root" in err and "allowed_signers" in err, err
    assert_host_untouched(before, host_state(sandbox))
    done = _cli(home, "rollback", run_id, "--yes")
    out = done.stdout + done.stderr
    assert done.returncode == ExitCode.OK, out
    assert "nothing to roll back on app-01 (refused at preflight, never touched)" in out, out
    assert "Traceback" not in out
    assert not marker.exists(), "the requester's start command ran on the host"
    after = host_state(sandbox)
    assert after.pid == before.pid and after.version == "7.0.4.1"
    assert after.lock is None and after == before
    _operator_runs_next(sandbox)
    kill_processes_under(tmp_path / "mallory")



def test_the_host_refuses_the_rollback_steps_when_the_requesters_journal_hides_the_refusal(
        sandbox: Sandbox, host_root: Path, tmp_path: Path) -> None:
    """Her controller is hers: she cuts her run's journal before the preflight refusal, so her controller no longer
    knows the host refused the run. The host itself runs none of the run's steps (no entry accepted at prepare)."""
    marker = sandbox.install_dir / "logs" / "PWNED"  # where a root command may write
    home, listener = _mallory(sandbox, tmp_path, marker)
    try:
        before = pristine(sandbox)
        rc, err, run_id = _refused_run(home, listener)
    finally:
        listener.close()
    assert rc == ExitCode.APPROVAL_REFUSED, err
    journal = home / "runs" / run_id / "journal.jsonl"
    lines = journal.read_text(encoding="utf-8").splitlines(keepends=True)
    cut = next(i for i, line in enumerate(lines) if '"preflight"' in line and '"failed"' in line)
    journal.write_text("".join(lines[:cut]), encoding="utf-8")
    done = _cli(home, "rollback", run_id, "--yes")
    out = done.stdout + done.stderr
    assert done.returncode == ExitCode.APPROVAL_REFUSED, out
    # the host refuses the rollback's first request, its lock (round 7: nothing is taken for such a run)
    for words in ("this host has its own trust root: refusing the lock of run " + run_id,
                  "nothing was locked or changed"):
        assert words in out, f"{words!r} not in {out}"
    assert "refusing start" not in out and "refusing observe" not in out and "Traceback" not in out
    assert not (state_dir(sandbox.install_dir) / "runs" / run_id).exists(), "the host keeps a directory of the run"
    assert not marker.exists(), "the requester's start command ran on the host"
    after = host_state(sandbox)
    assert (after.pid, after.version, after.product, after.staged) == (before.pid, "7.0.4.1", before.product, None)
    assert after.lock is None, f"the refused rollback left the host locked: {after.lock}"
    _operator_runs_next(sandbox)


def test_rollback_of_a_run_refused_at_preflight_touches_nothing_without_a_host_trust_root(
        sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The controller's own rule (no host trust root): the operator's run is refused at preflight (its probe no
    longer passes on the running version); its rollback says there is nothing to roll back, exit 0, and sends the
    host no step: the playbook's start command (it writes a marker) never runs, the service keeps its pid."""
    marker = sandbox.install_dir / "logs" / "started"  # where a root command may write
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(50)
    _playbook(sandbox.root, f"sh -c 'echo started > {marker}'", listener.getsockname()[1])
    try:
        before = pristine(sandbox)
        rc, plan = plan_to(sandbox, TO)
        assert rc == ExitCode.OK
        assert str(sandbox.root / "playbooks") in plan.read_text(encoding="utf-8")
    finally:
        listener.close()
    capsys.readouterr()
    rc = run_plan(sandbox, plan, "--yes")
    err = capsys.readouterr().err
    assert rc == ExitCode.BAD_INPUT, err  # stale: the probe no longer passes
    assert "preflight" in err, err
    run_id = next(p.name for p in (sandbox.root / "runs").iterdir())
    refused = host_state(sandbox)  # what the refused run left (its lock released)
    assert refused.lock is None and refused.pid == before.pid
    journal = (sandbox.root / "runs" / run_id / "journal.jsonl").read_text(encoding="utf-8")
    rc = upgrader(sandbox, "rollback", run_id, "--yes")
    out = capsys.readouterr()
    text = out.out + out.err
    assert rc == ExitCode.OK, text
    assert "nothing to roll back on app-01 (refused at preflight, never touched)" in text, text
    assert not marker.exists(), "the rollback ran the playbook's start command"
    after = host_state(sandbox)
    assert dataclasses.replace(after, home_runs=()) == dataclasses.replace(refused, home_runs=())
    assert (after.pid, after.version, after.product, after.lock) == (before.pid, "7.0.4.1", before.product, None)
    # no agent step at all: the rollback's journal records nothing sent to the host but its "nothing" line
    added = (sandbox.root / "runs" / run_id / "journal.jsonl").read_text(encoding="utf-8")[len(journal):]
    assert '"nothing"' in added
    for step in ('"intent"', '"lock"', '"start"'):
        assert step not in added, f"{step} in the rollback's journal: {added}"

