"""Faults in the environment during a real run of the sample middleware: the disk fills, the package is
deleted from the host after staging, the start or stop command hangs, the service dies while observed,
a probe endpoint never answers. Each run ends with its exit code and a clear message, and the host runs
the old version byte for byte (or the new one, healthy), or is marked exit 5."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import time
import tarfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml  # type: ignore[import-untyped]

from conftest import approve, kill_processes_under, plan_to, product_digest, tree_digest, upgrader
from hoststate import assert_released, host_state
from fleet import Fleet
from upgrader import sample
from upgrader.cli.commands.demo import Sandbox, build_sandbox
from upgrader.core.journal import read_journal
from upgrader.core.playbook import shipped_playbooks_dir
from upgrader.sample import http_get

OLD, NEW = "7.0.4.1", "7.0.4.2"
CONF = "conf/server.conf"


# ---------------------------------------------------------------- helpers


@dataclass
class Outcome:
    rc: int
    result: dict[str, Any]
    err: str

    @property
    def host(self) -> dict[str, Any]:
        (host,) = self.result["hosts"]
        return host

    def phase(self, name: str) -> dict[str, Any]:
        return [p for p in self.host["phases"] if p["phase"] == name][0]


def run(box: Sandbox, capsys: pytest.CaptureFixture[str], version: str, *plan_args: str) -> Outcome:
    """Plan, approve and run an upgrade to ``version`` with --json; the run's exit code, result and stderr."""
    rc, plan = plan_to(box, version, *plan_args)
    assert rc == 0, f"plan to {version} refused: {capsys.readouterr()}"
    approval = approve(box, plan)
    capsys.readouterr()
    rc = upgrader(box, "run", str(plan), "--approval", str(approval), "--json")
    out, err = capsys.readouterr()
    return Outcome(rc, json.loads(out), err)


def use_playbook(box: Sandbox, name: str, **changes: Any) -> Path:
    """A copy of the sample playbook (0.5 s window) with top-level sections merged with ``changes``."""
    spec = yaml.safe_load((shipped_playbooks_dir() / "sample-middleware.yaml").read_text(encoding="utf-8"))
    spec["name"] = name
    spec["observe"]["window"] = "0.5s"
    for key, value in changes.items():
        spec[key] = {**spec[key], **value} if isinstance(spec.get(key), dict) else value
    path = box.root / "playbooks" / f"{name}.yaml"  # the operator's playbooks: HOME/playbooks, named by name
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    inventory = yaml.safe_load(box.inventory.read_text(encoding="utf-8"))
    for host in inventory["hosts"].values():
        host["playbook"] = name
    box.inventory.write_text(yaml.safe_dump(inventory, sort_keys=False), encoding="utf-8")
    return path


def processes_under(root: Path) -> list[tuple[int, list[str]]]:
    """(pid, argv) of every process whose working directory lies under root (renamed or deleted too)."""
    base = str(root.resolve())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = [a.decode(errors="replace") for a in (entry / "cmdline").read_bytes().split(b"\0") if a]
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if argv and (cwd == base or cwd.startswith(base + "/")):
            found.append((int(entry.name), argv))
    return found


def service_pids(root: Path) -> list[int]:
    return [pid for pid, argv in processes_under(root) if any(a.endswith("lib/server.py") for a in argv)]


def pid_of(box: Sandbox) -> str:
    return (box.install_dir / "run" / "server.pid").read_text().strip()


@dataclass(frozen=True)
class Before:
    tree: dict[str, tuple[str, int]]
    conf: bytes
    data: dict[str, tuple[str, int]]
    pid: str


def before(box: Sandbox) -> Before:
    return Before(product_digest(box.install_dir), (box.install_dir / CONF).read_bytes(),
                  tree_digest(box.install_dir / "data"), pid_of(box))


def assert_old_version_intact(box: Sandbox, was: Before, *, same_process: bool = False) -> None:
    """The old version's tree byte for byte, config and data intact, 7.0.4.1 answering healthy, one server."""
    assert product_digest(box.install_dir) == was.tree
    assert (box.install_dir / CONF).read_bytes() == was.conf
    assert tree_digest(box.install_dir / "data") == was.data
    assert box.answers() == OLD
    assert http_get(box.port, "/health")[0] == 200
    assert len(service_pids(box.install_dir.parent)) == 1
    if same_process:
        assert pid_of(box) == was.pid, "the service was restarted although the run never got to stop it"


def journal_intents(box: Sandbox) -> list[str]:
    (run_dir,) = [p for p in (box.root / "runs").iterdir() if p.is_dir()]
    return [r.phase for r in read_journal(run_dir / "journal.jsonl") if r.event == "intent"]


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def package_files(pkg: Path) -> dict[str, str]:
    """sha256 of every regular file a package ships (package.yaml aside)."""
    out = {}
    with tarfile.open(pkg, "r:gz") as tar:
        for m in tar:
            f = tar.extractfile(m) if m.isreg() else None
            if f is not None and m.name != "package.yaml":
                out[m.name] = hashlib.sha256(f.read()).hexdigest()
    return out


def installed_files(install_dir: Path) -> dict[str, str]:
    return {k: v[0] for k, v in product_digest(install_dir).items()
            if v[0] != "dir" and not k.startswith("data/")}


# ---------------------------------------------------------------- a disk that fills up


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], tuple[Sandbox, Path]]]:
    """small_disk(size): a sandbox whose install (7.0.4.1, running) lies on a fresh tmpfs of that size."""
    mounts: list[Path] = []
    boxes: list[Sandbox] = []

    def make(size: str) -> tuple[Sandbox, Path]:
        box = build_sandbox(tmp_path / "box")
        disk = tmp_path / "disk"
        disk.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(disk)], check=True)
        mounts.append(disk)
        box.install_dir = disk / "app-01"
        sample.install(box.install_dir, port=box.port)
        inventory = yaml.safe_load(box.inventory.read_text(encoding="utf-8"))
        inventory["hosts"]["app-01"]["install_dir"] = str(box.install_dir)
        box.inventory.write_text(yaml.safe_dump(inventory, sort_keys=False), encoding="utf-8")
        boxes.append(box)
        box.start_service()
        return box, disk

    try:
        yield make
    finally:
        for box in boxes:
            if (box.install_dir / "bin" / "stop.sh").is_file():
                box.stop_service()
        kill_processes_under(tmp_path)
        for disk in mounts:
            _unmount(disk)


def _unmount(disk: Path) -> None:
    """Unmount, waiting (with a deadline) for killed processes to let go of the mount; never leave it behind."""
    deadline = time.monotonic() + 15
    while subprocess.run(["umount", str(disk)], capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            subprocess.run(["umount", "-l", str(disk)], check=True)  # detach it; the last user frees it
            return
        kill_processes_under(disk)
        time.sleep(0.1)


def compressible_catalog(box: Sandbox, directory: Path, zeros: int, unpacked_limit: int | None) -> Path:
    """A signed catalog whose 7.0.4.2 package carries ``zeros`` bytes of zeros (a few KiB packed).

    ``unpacked_limit``: the catalog's unpacked-size limit for it; None makes it the package's real size."""
    tree = directory / "tree"
    sample.write_tree(tree, NEW)
    (tree / "lib" / "modules").mkdir()
    (tree / "lib" / "modules" / "zeros.bin").write_bytes(bytes(zeros))
    pkg = directory / f"sample-middleware-{NEW}.tar.gz"
    assert upgrader(box, "package", "build", str(tree), "--product", "sample-middleware", "--version", NEW,
                    "-o", str(pkg)) == 0
    with tarfile.open(pkg, "r:gz") as tar:
        members = tar.getmembers()
    unpacked = sum(m.size for m in members if m.isreg())
    doc = {"format": 1, "serial": 2, "published": "2026-11-01T00:00:00+00:00", "packages": [{
        "file": pkg.name, "product": "sample-middleware", "version": NEW, "kind": "full",
        "sha256": hashlib.sha256(pkg.read_bytes()).hexdigest(), "size": pkg.stat().st_size, "changes": [],
        "limits": {"members": 100, "unpacked_bytes": unpacked if unpacked_limit is None else unpacked_limit}}]}
    (directory / "catalog.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    assert upgrader(box, "catalog", "sign", str(directory), "--key", str(box.vendor_key)) == 0
    return directory


def test_disk_filling_up_while_staging_ends_on_the_old_version_untouched_with_a_message_about_space(
        small_disk, tmp_path, capsys):
    """A package that unpacks to more than the free space (no limit declared) fills the disk while staging:
    exit 1 before stop, 'No space left', the service never stopped, the staging space given back."""
    box, disk = small_disk("3m")
    catalog = compressible_catalog(box, tmp_path / "big-catalog", zeros=6 << 20, unpacked_limit=0)
    use_playbook(box, "quick")
    was = before(box)
    free = free_bytes(disk)
    res = run(box, capsys, NEW, "--catalog", str(catalog))
    assert res.rc == 1
    assert res.host["outcome"] == "unchanged"
    assert res.host["error"].startswith("backup: ")
    assert "No space left on device" in res.host["error"]
    assert "No space left on device" in res.err
    assert f"the file system at {disk} has " in res.host["error"] and "MiB free of 3 MiB" in res.host["error"]
    assert "stop" not in journal_intents(box)
    assert_old_version_intact(box, was, same_process=True)
    assert free_bytes(disk) >= free - (64 << 10), "the partly staged package was left on the full disk"


def test_package_bigger_than_the_free_space_is_refused_before_stop(small_disk, tmp_path, capsys):
    """A package whose unpacked size exceeds the free space at run time (the disk filled after planning)
    is refused in preflight: exit 1, a message giving free and needed MiB, nothing touched."""
    box, disk = small_disk("8m")
    catalog = compressible_catalog(box, tmp_path / "big-catalog", zeros=5 << 20, unpacked_limit=None)
    use_playbook(box, "quick")
    rc, plan = plan_to(box, NEW, "--catalog", str(catalog))
    assert rc == 0, "with 8 MiB free the plan must pass its free-disk check"
    (disk / "someone-elses-file").write_bytes(bytes(4 << 20))
    was, whole = before(box), host_state(box.install_dir, answers=box.answers)
    approval = approve(box, plan)
    capsys.readouterr()
    rc = upgrader(box, "run", str(plan), "--approval", str(approval), "--json")
    out, err = capsys.readouterr()
    (host,) = json.loads(out)["hosts"]
    assert rc == 1
    assert host["outcome"] == "unchanged"
    assert host["error"].startswith("preflight: only ") and "MiB free" in host["error"]
    assert "MiB needed" in err
    assert journal_intents(box) == ["preflight"]
    assert_old_version_intact(box, was, same_process=True)
    assert_released(whole, host_state(box.install_dir, answers=box.answers))
    assert not (disk / ".upgrader-app-01" / "runs").exists() or \
        not any((disk / ".upgrader-app-01" / "runs").rglob("staging"))


# ---------------------------------------------------------------- the package vanishes after staging


def remover(box, path):
    """A root-owned script that deletes ``path`` (a root command itself may remove only what lies beneath the
    install's logs/; a script root owns does what it says)."""
    script = box.root / "remove-package.sh"
    script.write_text(f"rm -f '{path}'\n")
    return script


def test_package_deleted_from_local_host_after_staging_installs_from_the_verified_staged_copy(sandbox, capsys):
    """The package file is deleted by a before_stop hook: the install uses the staged tree and commits 7.0.4.2."""
    box = sandbox
    pkg = box.catalog / f"sample-middleware-{NEW}.tar.gz"
    shipped = package_files(pkg)
    use_playbook(box, "deletes-package", hooks={"before_stop": [{"command": f"/bin/sh {remover(box, pkg)}"}]})
    was = before(box)
    res = run(box, capsys, NEW)
    assert not pkg.exists(), "the hook did not delete the package: the test proves nothing"
    assert res.rc == 0, res.host
    assert res.host["outcome"] == "committed"
    assert box.answers() == NEW
    assert installed_files(box.install_dir) == {**{k: v for k, v in shipped.items() if k != CONF},
                                                CONF: was.tree[CONF][0]}
    assert tree_digest(box.install_dir / "data") == was.data
    assert len(service_pids(box.install_dir.parent)) == 1


def test_package_deleted_from_ssh_host_after_staging_installs_from_the_verified_staged_copy(fleet, capsys):
    """Over SSH the host's own copy of the package is deleted before stop: the install still commits 7.0.4.2."""
    f: Fleet = fleet(1)
    box = f.box
    catalog = yaml.safe_load((box.catalog / "catalog.yaml").read_text(encoding="utf-8"))
    (entry,) = [p for p in catalog["packages"] if p["version"] == NEW]
    host_copy = f.hosts[0].state_dir / "packages" / f"{entry['sha256']}.tar.gz"
    shipped = package_files(box.catalog / entry["file"])
    use_playbook(box, "deletes-package",
                 hooks={"before_stop": [{"command": f"/bin/sh {remover(box, host_copy)}"}]})
    was = before(box)
    res = run(box, capsys, NEW)
    assert not host_copy.exists(), "the hook did not delete the host's copy: the test proves nothing"
    assert res.rc == 0, res.host
    assert res.host["outcome"] == "committed"
    assert box.answers() == NEW
    assert installed_files(box.install_dir) == {**{k: v for k, v in shipped.items() if k != CONF},
                                                CONF: was.tree[CONF][0]}
    assert tree_digest(box.install_dir / "data") == was.data


# ---------------------------------------------------------------- commands that hang


def test_start_command_that_hangs_past_its_timeout_rolls_back_to_the_old_version(sandbox, capsys):
    """The new version's start hangs past its 1 s timeout: the command is killed, exit 1, 7.0.4.1 healthy again."""
    box = sandbox
    hang = f"grep -q '^{NEW}' lib/VERSION && exec sleep 61.5; exec bin/start.sh"
    use_playbook(box, "start-hangs", start={"command": hang, "timeout": "1s"})
    was = before(box)
    res = run(box, capsys, NEW)
    assert res.rc == 1, res.host
    assert res.host["outcome"] == "rolled_back"
    assert res.host["rollback_cause"].startswith("start: start command timed out after 1")
    assert "failed and was rolled back" in res.err
    assert_old_version_intact(box, was)
    hung = [p for p in processes_under(box.install_dir.parent) if "61.5" in p[1]]
    assert not hung, f"the hung start command was left running: {hung}"


def test_stop_command_that_hangs_is_escalated_to_a_signal_and_the_upgrade_goes_on(sandbox, capsys):
    """A stop command that sleeps past its 1 s timeout is killed, the service gets SIGTERM, the upgrade commits."""
    box = sandbox
    use_playbook(box, "stop-hangs", stop={"command": "sleep 60", "timeout": "1s"})
    old_pid = int(pid_of(box))
    res = run(box, capsys, NEW)
    assert res.rc == 0, res.host
    assert res.host["outcome"] == "committed"
    assert "escalated to SIGTERM" in res.phase("stop")["detail"]
    assert box.answers() == NEW
    assert old_pid not in service_pids(box.install_dir.parent)
    assert service_pids(box.install_dir.parent) == [int(pid_of(box))]
    hung = [p for p in processes_under(box.install_dir.parent) if p[1][:2] == ["sleep", "60"]]
    assert not hung, f"the hung stop command was left running: {hung}"


def test_service_dying_during_the_observation_window_is_rolled_back(sandbox, capsys):
    """7.0.4.7 dies 1.5 s after start, inside a 3 s window: exit 1, the cause named, 7.0.4.1 healthy again."""
    box = sandbox
    use_playbook(box, "long-window", observe={"window": "3s"})
    was = before(box)
    res = run(box, capsys, "7.0.4.7")
    assert res.rc == 1, res.host
    assert res.host["outcome"] == "rolled_back"
    assert "healthy at first, then failed during the observation window" in res.host["rollback_cause"]
    assert_old_version_intact(box, was)


# ---------------------------------------------------------------- a probe endpoint that never answers


@dataclass
class SilentEndpoint:
    """A loopback HTTP endpoint that accepts every connection, answers 200 unless the request path contains
    ``hang_on``, and otherwise never answers (it holds the connection open until stopped)."""

    hang_on: str
    sock: socket.socket = field(default_factory=socket.socket)
    held: list[socket.socket] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def start(self) -> int:
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.05)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        return int(self.sock.getsockname()[1])

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            conn.settimeout(2)
            try:
                request = conn.recv(4096).decode("latin-1")
            except OSError:
                conn.close()
                continue
            path = request.split(" ")[1] if request.count(" ") >= 2 else ""
            self.paths.append(path)
            if self.hang_on in path:
                self.held.append(conn)
                continue
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
            conn.close()

    def stop(self) -> None:
        self.stopping.set()
        self.sock.close()
        self.thread.join(5)
        for conn in self.held:
            conn.close()


@pytest.fixture
def silent_endpoint() -> Iterator[Callable[[str], tuple[SilentEndpoint, int]]]:
    started: list[SilentEndpoint] = []

    def make(hang_on: str) -> tuple[SilentEndpoint, int]:
        endpoint = SilentEndpoint(hang_on)
        started.append(endpoint)
        return endpoint, endpoint.start()

    try:
        yield make
    finally:
        for endpoint in started:
            endpoint.stop()


def slow_probe_playbook(box: Sandbox, port: int) -> None:
    spec = yaml.safe_load((shipped_playbooks_dir() / "sample-middleware.yaml").read_text(encoding="utf-8"))
    probes = spec["observe"]["probes"] + [{"type": "http", "name": "dependency",
                                           "url": f"http://127.0.0.1:{port}/ready/${{target_version}}",
                                           "timeout": "0.3s"}]
    use_playbook(box, "slow-probe", observe={"start_timeout": "2s", "probes": probes})


def test_probe_endpoint_that_never_answers_for_the_new_version_rolls_back(sandbox, silent_endpoint, capsys):
    """An endpoint that accepts but never answers 7.0.4.2's probe (0.3 s timeout): unhealthy, exit 1, old version."""
    box = sandbox
    endpoint, port = silent_endpoint(NEW)
    slow_probe_playbook(box, port)
    was = before(box)
    res = run(box, capsys, NEW)
    assert f"/ready/{NEW}" in endpoint.paths, "the probe never reached the silent endpoint"
    assert res.rc == 1, res.host
    assert res.host["outcome"] == "rolled_back"
    assert res.host["rollback_cause"].startswith("observe: never healthy after start")
    assert "dependency: http probe: " in res.host["rollback_cause"] and "timed out" in res.host["rollback_cause"]
    assert_old_version_intact(box, was)


def test_probe_endpoint_that_never_answers_at_all_is_refused_before_stop(sandbox, silent_endpoint, capsys):
    """A probe endpoint that never answers for either version is no health check (issue 21): it is proven on the
    running 7.0.4.1 first, so `plan` refuses with exit 2 naming the probe, before anything is stopped; the old
    version answers from the same process and its files are as they were."""
    box = sandbox
    endpoint, port = silent_endpoint("/ready/")
    slow_probe_playbook(box, port)
    was = before(box)
    pids = service_pids(box.install_dir.parent)
    capsys.readouterr()
    rc, plan = plan_to(box, NEW)
    err = capsys.readouterr().err
    assert f"/ready/{OLD}" in endpoint.paths, "the old version's probe never reached the silent endpoint"
    assert rc == 2 and not plan.exists()
    assert "'dependency' (http probe: timed out)" in err and f"fail on the running version {OLD}" in err
    assert f"/ready/{OLD} does not answer" in err
    assert product_digest(box.install_dir) == was.tree
    assert tree_digest(box.install_dir / "data") == was.data
    assert box.answers() == OLD and service_pids(box.install_dir.parent) == pids
