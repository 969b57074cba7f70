"""Races with renameat2(RENAME_EXCHANGE): a local account swaps a directory for a symlink while root's agent works.

B1: whoever can write the install dir's parent owns, or swaps for a link, the ledger copy kept beside the install
(`.upgrader-NAME`: approvals-used.jsonl, installed.json, catalog-serials.json) while the run's own state dir is
elsewhere. The agent opens each ledger dir once, from its parent's descriptor with O_NOFOLLOW, checks owner and
mode on that descriptor and reads and writes only through it; a ledger dir of another account is refused before
stop (exit 2), a link swapped in before finish leaves the host needing a person (exit 5, the lock kept).

B2: the service account (owner of the install dir) exchanges `conf/` with a link to a directory outside while
prepare scans the tree. The scan walks from descriptors and records what it saw; a recorded link on a preserved
path's way (or leading out) is refused before stop, and the backup is written from descriptors of its own
directories, so a link the backup recreates can never be written through.

The attacker is a real local account (`nobody`): a forked child drops root and calls renameat2 itself. A single
exchange at a fixed point makes a race deterministic where the agent's steps allow it (a fault point of the test
suite's plugin between the engine's steps; a scan and the backup run one after the other); a process exchanging
over and over while the agent runs shows the rest, and each of those tests asserts what must hold at every
interleaving: nothing outside changed, every write where it belongs.
"""

from __future__ import annotations

import ctypes
import json
import os
import pwd
import select
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml  # type: ignore[import-untyped]

from conftest import approve, fault_env, plan_to
from hoststate import take_lock
from upgrader.hostagent.beneath import recorded_link_problems
from upgrader.hostagent.common import AgentError
from upgrader.hostagent.main import handle
from upgrader.hostagent.manifests import copy_preserved, scan_tree, snapshot
from upgrader.hostagent.recovery import config_changed_since
from upgrader.hostagent.state import Paths, append_line_at, open_state_dir, write_json_at
from upgrader.cli.commands.demo import Sandbox
from upgrader.trust.package import file_digest
from upgrader.core.playbook import shipped_playbooks_dir

NOBODY = pwd.getpwnam("nobody").pw_uid
LIBC = ctypes.CDLL(None, use_errno=True)
RENAME_EXCHANGE = 2
CANARY = b"root's own file outside the install dir\n"
OLD = "7.0.4.1"


def listing(root: Path) -> dict[str, Any]:
    """Every name under root with its kind, bytes or link target, owner and mode."""
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st = p.lstat()
            what = os.readlink(p) if p.is_symlink() else p.read_bytes() if p.is_file() else "dir"
            out[str(p.relative_to(root))] = (what, st.st_uid, st.st_mode)
    return out


def outside(tmp_path: Path) -> Path:
    """A root-only directory outside the install dir (stands for /etc/cron.d or /root/.ssh)."""
    d = tmp_path / "outside"
    d.mkdir(mode=0o755)
    (d / "README").write_bytes(CANARY)
    (d / "server.conf").write_bytes(CANARY)
    return d


def as_attacker(directory: Path, fn: Any, uid: int = NOBODY) -> int:
    """Run ``fn(dfd)`` in a forked child that has dropped root for account ``uid``, ``dfd`` a descriptor of
    ``directory`` (root opens it: the test's scratch dirs above it are root's own); its exit status (0: it
    returned). The kernel checks the account's own rights on every call it makes there."""
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            fn(dfd)
            code = 0
        finally:
            os._exit(code)
    os.close(dfd)
    _, status = os.waitpid(pid, 0)
    return status


def exchange_at(dfd: int, a: str, b: str) -> None:
    if LIBC.renameat2(dfd, a.encode(), dfd, b.encode(), RENAME_EXCHANGE) != 0:
        raise OSError(ctypes.get_errno(), f"renameat2 {a} {b}")


class Toggler:
    """A child process of account ``nobody`` that exchanges two names in a directory over and over (from a
    descriptor of that directory root opened for it) until stopped; stopped with the names as they were."""

    def __init__(self, directory: Path, a: str, b: str) -> None:
        self.stop_r, self.stop_w = os.pipe()
        self.count_r, self.count_w = os.pipe()
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                os.setgroups([])
                os.setresgid(NOBODY, NOBODY, NOBODY)
                os.setresuid(NOBODY, NOBODY, NOBODY)
                n = 0
                while not select.select([self.stop_r], [], [], 0)[0]:
                    exchange_at(dfd, a, b)
                    n += 1
                if n % 2:
                    exchange_at(dfd, a, b)
                    n += 1
                os.write(self.count_w, str(n).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(dfd)

    def stop(self) -> int:
        """Stop the exchanges; how many there were (always even: the names are back as they were)."""
        os.write(self.stop_w, b"x")
        _, status = os.waitpid(self.pid, 0)
        assert status == 0, "the attacker's process failed"
        count = int(os.read(self.count_r, 64) or b"0")
        for fd in (self.stop_r, self.stop_w, self.count_r, self.count_w):
            os.close(fd)
        return count


def give_to_nobody(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        os.lchown(dirpath, NOBODY, NOBODY)
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), NOBODY, NOBODY)


def ledger(install: Path) -> Path:
    return install.parent / f".upgrader-{install.name}"


def with_state_dir(box: Sandbox, state: Path) -> None:
    """The engineer keeps this host's state elsewhere (inventory state_dir, a root-only directory)."""
    doc = yaml.safe_load(box.inventory.read_text())
    doc["hosts"]["app-01"]["state_dir"] = str(state)
    box.inventory.write_text(yaml.safe_dump(doc, sort_keys=False))


def run_child(box: Sandbox, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real CLI as a child process (where the test suite's fault plugin can act)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("UPGRADER_FAULT_")}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "upgrader", "--home", str(box.root), *argv], cwd=box.root,
                          env=full, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)


def last_result(box: Sandbox) -> dict[str, Any]:
    runs = sorted((box.root / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    return dict(json.loads((runs[-1] / "result.json").read_text()))


def pid(box: Sandbox) -> str:
    return (box.install_dir / "run" / "server.pid").read_text()


# ------------------------------------------------------------------------- B1: the ledger beside the install


def test_a_ledger_dir_beside_the_install_made_by_a_local_user_is_refused_before_stop(sandbox, tmp_path):
    """A local user who can write the install dir's parent makes `.upgrader-app-01` their own (0700, theirs) while
    the run's state is kept elsewhere: the run exits 2 in preflight naming the parent the user can write and its
    owner; nothing is written in it or outside, no lock is taken, the service keeps its pid."""
    somewhere = outside(tmp_path)
    state = tmp_path / "state-app-01"  # made by the agent, with its marker
    with_state_dir(sandbox, state)
    hosts = sandbox.install_dir.parent
    rc, plan = plan_to(sandbox, "7.0.4.2")  # planned while the parent was root's (a plan now is refused, exit 2)
    assert rc == 0
    approval = approve(sandbox, plan)
    os.chown(hosts, NOBODY, NOBODY)
    assert as_attacker(hosts, lambda d: os.mkdir(".upgrader-app-01", 0o700, dir_fd=d)) == 0
    assert plan_to(sandbox, "7.0.4.2")[0] == 2
    before, was_pid = listing(somewhere), pid(sandbox)
    done = run_child(sandbox, "run", str(plan), "--approval", str(approval))
    assert done.returncode == 2, done.stdout + done.stderr
    text = done.stdout + done.stderr
    assert "Traceback" not in text
    # refused already for the parent the local user can write (the StrictModes-like rule), naming it and its owner
    assert f"below {hosts} (owned by uid {NOBODY}" in text
    assert list(ledger(sandbox.install_dir).iterdir()) == []
    assert listing(somewhere) == before
    assert not (state / "lock").exists()
    assert pid(sandbox) == was_pid and sandbox.answers() == OLD
    (host,) = last_result(sandbox)["hosts"]
    assert host["outcome"] == "bad_input"
    assert [p["phase"] for p in host["phases"]] == ["preflight"]


def test_a_ledger_dir_a_local_user_could_swap_for_a_link_before_finish_is_refused_before_stop(sandbox, tmp_path):
    """The local user can write the install dir's parent and is ready to exchange root's `.upgrader-app-01` with a
    link to a root-only dir right before the run's finish (a fault point of the test plugin, after observe). The
    parent it can write is refused in preflight already (exit 2, naming it and its owner): the exchange never
    comes, no lock is taken, nothing is written outside, the ledger holds what it held, the service keeps its pid."""
    somewhere = outside(tmp_path)
    state = tmp_path / "state-app-01"  # made by the agent, with its marker
    with_state_dir(sandbox, state)
    hosts = sandbox.install_dir.parent
    real = ledger(sandbox.install_dir)
    real.mkdir(mode=0o700)  # root's own ledger copy, from an earlier run
    (real / "catalog-serials.json").write_text('{"sample-middleware": 1}\n')
    held = listing(real)
    rc, plan = plan_to(sandbox, "7.0.4.2")  # planned while the parent was root's (a plan now is refused, exit 2)
    assert rc == 0
    approval = approve(sandbox, plan)
    os.chown(hosts, NOBODY, NOBODY)
    assert as_attacker(hosts, lambda d: os.symlink(somewhere, ".upgrader-app-01.lnk", dir_fd=d)) == 0
    before, was_pid = listing(somewhere), pid(sandbox)
    done = run_child(sandbox, "run", str(plan), "--approval", str(approval), env=fault_env(
        exchange_at="cancel_check:commit", exchange=(hosts, real.name, ".upgrader-app-01.lnk", NOBODY)))
    text = done.stdout + done.stderr
    assert "Traceback" not in text
    assert done.returncode == 2, text
    assert f"below {hosts} (owned by uid {NOBODY}" in text
    assert not real.is_symlink() and listing(real) == held
    assert listing(somewhere) == before
    assert not (state / "lock").exists()
    (host,) = last_result(sandbox)["hosts"]
    assert [p["phase"] for p in host["phases"]] == ["preflight"]
    assert pid(sandbox) == was_pid and sandbox.answers() == OLD


def test_ledger_writes_stay_in_the_directory_opened_while_a_local_user_keeps_swapping_it(sandbox, tmp_path):
    """The local user exchanges root's `.upgrader-app-01` with a link to a root-only dir over and over while the
    agent is asked to finish run after run: every finish is refused (the parent is the user's); nothing is ever
    written outside nor in root's ledger dir."""
    somewhere = outside(tmp_path)
    state = tmp_path / "state-app-01"
    state.mkdir(mode=0o700)
    hosts = sandbox.install_dir.parent
    ledger(sandbox.install_dir).mkdir(mode=0o700)
    os.chown(hosts, NOBODY, NOBODY)
    assert as_attacker(hosts, lambda d: os.symlink(somewhere, ".upgrader-app-01.lnk", dir_fd=d)) == 0
    before = listing(somewhere)
    digest = "ab" * 32
    replies = []
    toggler = Toggler(hosts, ".upgrader-app-01", ".upgrader-app-01.lnk")
    try:
        for i in range(150):
            replies.append(handle({
                "op": "finish", "install_dir": str(sandbox.install_dir), "state_dir": str(state), "run_id": f"r{i}",
                "outcome": "committed", "approvals": [digest], "keep": 3,
                "catalog": {"product": "sample-middleware", "serial": i + 1}}))
    finally:
        swaps = toggler.stop()
    assert swaps > 0
    assert listing(somewhere) == before
    # the parent the local user can write is refused at every finish (the StrictModes-like rule), whichever
    # way the names stand: nothing is recorded anywhere, in root's ledger copy or outside
    assert all(not r["ok"] and r["kind"] == "unsafe_path" and f"below {hosts} (owned by uid {NOBODY}" in r["error"]
               for r in replies), [r for r in replies if r["ok"]][:1]
    assert list(ledger(sandbox.install_dir).iterdir()) == []


def test_the_ledger_descriptor_keeps_pointing_at_the_directory_checked(tmp_path):
    """Opened, checked, then the name exchanged with a link to a root-only dir: the write lands in the directory
    that was opened; the next open of the name refuses the link."""
    somewhere = outside(tmp_path)
    parent = tmp_path / "hosts"
    parent.mkdir()
    d = parent / ".upgrader-app-01"
    fd = open_state_dir(str(d), create=True)
    assert fd is not None
    try:
        os.chown(parent, NOBODY, NOBODY)  # the parent given away after the open (refused by any later open)
        assert as_attacker(parent, lambda d: os.symlink(somewhere, "lnk", dir_fd=d)) == 0
        assert as_attacker(parent, lambda dfd: exchange_at(dfd, d.name, "lnk")) == 0
        write_json_at(fd, "installed.json", {"run": "r1"})
        append_line_at(fd, "approvals-used.jsonl", "{}\n", str(d))
    finally:
        os.close(fd)
    assert sorted(p.name for p in (parent / "lnk").iterdir()) == [".upgrader-state", "approvals-used.jsonl",
                                                                   "installed.json"]
    assert (somewhere / "server.conf").read_bytes() == CANARY and sorted(os.listdir(somewhere)) == [
        "README", "server.conf"]
    with pytest.raises(AgentError) as e:
        open_state_dir(str(d))
    assert e.value.kind == "unsafe_path" and f"below {parent} (owned by uid {NOBODY}" in str(e.value)
    os.chown(parent, 0, 0)  # and with the parent root's again, the link itself is refused
    with pytest.raises(AgentError) as e:
        open_state_dir(str(d))
    assert e.value.kind == "unsafe_path" and "symlink" in str(e.value)


# ------------------------------------------------------------------------- B2: conf/ exchanged during the scan


def prepare(box: Sandbox, run_id: str) -> dict[str, Any]:
    """The agent's prepare of run ``run_id``, after its lock (taken over from the previous test run's, as the
    controller's --break-lock does): a host prepares only for the run that holds its lock."""
    pkg = box.catalog / "sample-middleware-7.0.4.2.tar.gz"
    spec = yaml.safe_load((shipped_playbooks_dir() / "sample-middleware.yaml").read_text(encoding="utf-8"))
    base = {"install_dir": str(box.install_dir), "state_dir": None}
    locked = take_lock(lambda op, **req: handle({"op": op, **base, **req}), run_id, break_lock=True)
    assert locked["ok"], locked
    return dict(handle({"op": "prepare", "install_dir": str(box.install_dir), "state_dir": None,
                              "run_id": run_id, "package_path": str(pkg), "sha256": file_digest(pkg),
                              "size": pkg.stat().st_size, "limits": {}, "kind": "full", "remove": [],
                              "preserve": spec["preserve"], "current_version": OLD}))


@pytest.fixture
def service_account_link(sandbox: Sandbox, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """The install dir given to the service account (nobody), which parks `data/x -> <outside>` in its preserved
    data dir, ready to be exchanged with `conf/`; yields (install dir, outside)."""
    somewhere = outside(tmp_path)
    inst = sandbox.install_dir
    give_to_nobody(inst)
    assert as_attacker(inst, lambda d: os.symlink(somewhere, "data/x", dir_fd=d)) == 0
    yield inst, somewhere


def exchange_conf(inst: Path) -> None:
    assert as_attacker(inst, lambda dfd: exchange_at(dfd, "conf", "data/x")) == 0


def test_conf_scanned_as_a_link_is_refused_and_the_backup_is_never_written_through_it(sandbox,
                                                                                       service_account_link):
    """The service account exchanges conf/ with its link to a root-only dir, the scan runs, the account exchanges
    them back (the checks before and after see a plain conf/): the recorded link is refused as lying on the
    preserved conf/server.conf's way, and the backup made from that scan (its copy of the link included) refuses
    to write the config copy through it; the root-only file outside stays as it was (it was deleted, then
    overwritten, before)."""
    inst, somewhere = service_account_link
    spec = yaml.safe_load((shipped_playbooks_dir() / "sample-middleware.yaml").read_text(encoding="utf-8"))
    preserve = [p["path"] for p in spec["preserve"]]
    before = listing(somewhere)
    exchange_conf(inst)
    manifest = scan_tree(str(inst), preserve)
    exchange_conf(inst)
    assert manifest["links"] == {"conf": str(somewhere)}
    problems = recorded_link_problems(str(inst), manifest["links"], preserve)
    assert problems and f"conf -> {somewhere}" in problems[0] and "conf/server.conf" in problems[0]
    backup = inst.parent / "backup-tree"
    snapshot(str(inst), str(backup), manifest)
    assert (backup / "conf").is_symlink()
    with pytest.raises(AgentError) as e:
        copy_preserved(str(inst), str(backup), "conf/server.conf")
    assert e.value.kind == "unsafe_path"
    assert listing(somewhere) == before
    assert (inst / "conf" / "server.conf").is_file() and not (inst / "conf").is_symlink()


def test_a_product_link_leading_outside_is_refused_by_prepare_before_stop(sandbox, tmp_path):
    """A product link whose target leads out of the install dir (the backup and a patch's staged tree would
    recreate it) is refused by prepare (unsafe_path, naming the link); nothing is staged or backed up."""
    somewhere = outside(tmp_path)
    (sandbox.install_dir / "lib" / "ext").symlink_to(somewhere)
    (sandbox.install_dir / "lib" / "up").symlink_to("../..")
    (sandbox.install_dir / "lib" / "here").symlink_to("../conf")  # inside: fine
    reply = prepare(sandbox, "link-1")
    assert reply["ok"] is False and reply["kind"] == "unsafe_path", reply
    assert f"lib/ext -> {somewhere}" in reply["error"]
    assert any("lib/up -> ../.." in p for p in reply["data"]["problems"])
    assert not any("lib/here" in p for p in reply["data"]["problems"])
    run_dir = ledger(sandbox.install_dir) / "runs" / "link-1"
    assert not (run_dir / "backup").exists() and not (run_dir / "staging" / "tree").exists()


def test_prepare_while_the_service_account_keeps_exchanging_conf_writes_nothing_outside(sandbox,
                                                                                       service_account_link):
    """The service account exchanges conf/ and its link to a root-only dir over and over while root's agent
    prepares run after run: each prepare either refuses (unsafe_path) or backs up a tree with no link on conf's
    way; the file outside is never read into a backup, replaced or deleted."""
    inst, somewhere = service_account_link
    before = listing(somewhere)
    replies = {}
    toggler = Toggler(inst, "conf", "data/x")
    try:
        for i in range(40):
            replies[f"race-{i}"] = prepare(sandbox, f"race-{i}")
    finally:
        swaps = toggler.stop()
    assert swaps > 0
    assert listing(somewhere) == before
    for run_id, reply in replies.items():
        if not reply["ok"]:
            assert reply["kind"] == "unsafe_path", reply
            continue
        run_dir = ledger(inst) / "runs" / run_id
        manifest = json.loads((run_dir / "backup" / "manifest.json").read_text())
        assert "conf" not in manifest["tree"]["links"], manifest["tree"]["links"]
        assert not (run_dir / "backup" / "tree" / "conf").is_symlink()
        (config,) = manifest["config"]
        assert (run_dir / "backup" / "tree" / "conf" / "server.conf").read_bytes() != CANARY
        assert config["path"] == "conf/server.conf"
    assert not (inst / "conf").is_symlink()


def test_verify_and_the_config_check_read_nothing_through_conf_exchanged_with_a_link(sandbox, service_account_link):
    """After a backup, the service account exchanges conf/ with its link to a root-only dir: the byte-identical
    check reports the link instead of reading through it, and the check of configuration changed since the backup
    (before a rollback) refuses the link rather than hashing the file outside."""
    inst, somewhere = service_account_link
    reply = prepare(sandbox, "verify-1")
    assert reply["ok"], reply
    manifest = json.loads((ledger(inst) / "runs" / "verify-1" / "backup" / "manifest.json").read_text())
    exchange_conf(inst)
    try:
        reply = handle({"op": "verify_tree", "install_dir": str(inst), "state_dir": None, "run_id": "verify-1"})
        assert reply["ok"] and reply["result"]["identical"] is False, reply
        assert {"path": "conf", "change": "added"} in reply["result"]["differences"]
        with pytest.raises(AgentError) as e:
            config_changed_since(Paths({"install_dir": str(inst)}), manifest)
        assert e.value.kind == "unsafe_path" and "conf is not a plain directory" in str(e.value)
    finally:
        exchange_conf(inst)
    assert config_changed_since(Paths({"install_dir": str(inst)}), manifest) == []
