"""Tests of the sample middleware product: real installs, real processes on loopback, real packages."""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest
import yaml  # type: ignore[import-untyped]

from upgrader.trust.catalog import load_catalog
from upgrader.sample import (
    INSTALLED_FIRST,
    PRODUCT,
    RELEASES,
    build_packages,
    http_get,
    install,
    package_name,
    write_tree,
)

T = TypeVar("T")
SERVER_SOURCE = Path(__file__).resolve().parents[1] / "upgrader" / "sample" / "server.py"


# ---------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, predicate: Callable[[], T], timeout: float = 5.0, interval: float = 0.03) -> T:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def proc_state(pid: int) -> str | None:
    """The /proc state letter of ``pid`` (R, S, Z, ...), or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def is_alive(pid: int) -> bool:
    # The detached server is reparented away from us; a zombie nobody reaps counts as dead.
    return proc_state(pid) not in (None, "Z", "X")


def is_dead(pid: int) -> bool:
    return not is_alive(pid)


def server_pids(install_dir: Path) -> set[int]:
    """Live processes running ``lib/server.py`` with ``install_dir`` as their working directory."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if b"lib/server.py" in cmdline and Path(cwd) == install_dir.resolve() and is_alive(int(entry.name)):
            found.add(int(entry.name))
    return found


def read_pid(install_dir: Path) -> int | None:
    try:
        return int((install_dir / "run" / "server.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def try_get(port: int, path: str = "/version") -> tuple[int, str] | None:
    try:
        return http_get(port, path, timeout=1.0)
    except OSError:
        return None


def log_text(install_dir: Path) -> str:
    return (install_dir / "logs" / "server.log").read_text()


def run_script(install_dir: Path, name: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run([str(install_dir / "bin" / name)], env=env, capture_output=True, text=True,
                          timeout=10, check=False)


@dataclass
class Installed:
    dir: Path
    port: int
    seen_pids: set[int] = field(default_factory=set)

    def start(self) -> subprocess.CompletedProcess[str]:
        result = run_script(self.dir, "start.sh")
        self.seen_pids |= server_pids(self.dir)
        return result

    def wait_listening(self) -> int:
        """Wait until /version answers and the pid file names a process; return that pid."""
        wait_for("the service to answer /version", lambda: try_get(self.port))
        pid: int = wait_for("run/server.pid", lambda: read_pid(self.dir) or 0)
        self.seen_pids.add(pid)
        return pid

    def kill_all(self) -> None:
        pids = set(self.seen_pids) | server_pids(self.dir)
        pid = read_pid(self.dir)
        if pid is not None:
            pids.add(pid)
        for pid in pids:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"lib/server.py" in cmdline and is_alive(pid):
                os.kill(pid, signal.SIGKILL)
        for pid in pids:
            wait_for(f"pid {pid} to die", functools.partial(is_dead, pid))


@pytest.fixture
def product(tmp_path: Path) -> Iterator[Callable[..., Installed]]:
    """A factory of installs on free ports; every service they started is killed at teardown."""
    made: list[Installed] = []

    def make(name: str = "tongweb", fault: str | None = None, **kwargs: object) -> Installed:
        port = free_port()
        install_dir = tmp_path / name
        install(install_dir, port=port, **kwargs)  # type: ignore[arg-type]
        if fault:
            (install_dir / "lib" / "FAULT").write_text(fault + "\n")
        inst = Installed(install_dir, port)
        made.append(inst)
        return inst

    try:
        yield make
    finally:
        for inst in made:
            inst.kill_all()


@pytest.fixture(scope="module")
def catalog_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_packages(tmp_path_factory.mktemp("repo"), serial=7)


def tar_members(path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: m for m in tar.getmembers()}


def tar_read(path: Path, name: str) -> bytes:
    with tarfile.open(path, "r:gz") as tar:
        f = tar.extractfile(name)
        assert f is not None
        return f.read()


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- the running service


def test_start_script_runs_the_service_answering_its_version_with_a_live_pid_file(product):
    """bin/start.sh returns at once and leaves a detached service that answers /version and owns run/server.pid."""
    inst = product()
    result = inst.start()
    assert result.returncode == 0, result.stderr
    pid = inst.wait_listening()
    assert http_get(inst.port) == (200, INSTALLED_FIRST)
    assert is_alive(pid)
    assert b"lib/server.py" in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert f"INFO {PRODUCT} {INSTALLED_FIRST} started on 127.0.0.1:{inst.port} pid {pid}" in log_text(inst.dir)


def test_service_answers_health_greeting_and_404_for_other_paths(product):
    """A healthy service reports ok with its version on /health, greets on / and answers 404 elsewhere."""
    inst = product()
    inst.start()
    inst.wait_listening()
    status, body = http_get(inst.port, "/health")
    assert status == 200 and json.loads(body) == {"status": "ok", "version": INSTALLED_FIRST}
    status, body = http_get(inst.port, "/")
    assert status == 200 and "Welcome to sample-middleware" in body
    assert http_get(inst.port, "/manager/status")[0] == 404
    assert "ERROR" not in log_text(inst.dir)
    assert (inst.dir / "logs" / "console.out").read_text() == ""  # no access log on stderr


def test_stop_script_ends_the_service_and_removes_its_pid_file(product):
    """bin/stop.sh makes the service log its stop, close its port, remove its pid file and exit."""
    inst = product()
    inst.start()
    pid = inst.wait_listening()
    result = run_script(inst.dir, "stop.sh")
    assert result.returncode == 0, result.stderr
    wait_for("the process to exit", lambda: not is_alive(pid))
    assert not port_open(inst.port)
    assert not (inst.dir / "run" / "server.pid").exists()
    log = log_text(inst.dir)
    assert " INFO sample-middleware 7.0.4.1 started on " in log
    assert log.index(" started on ") < log.index(" INFO stopping")


def test_stop_script_succeeds_when_nothing_runs(product):
    """bin/stop.sh exits 0 when there is no pid file, and when the pid file names a dead process."""
    inst = product()
    assert run_script(inst.dir, "stop.sh").returncode == 0
    (inst.dir / "run").mkdir()
    (inst.dir / "run" / "server.pid").write_text("999999999\n")
    assert run_script(inst.dir, "stop.sh").returncode == 0


def test_sigint_stops_the_service_as_cleanly_as_sigterm(product):
    """SIGINT makes the service log its stop, remove its pid file and exit like SIGTERM does."""
    inst = product()
    inst.start()
    pid = inst.wait_listening()
    os.kill(pid, signal.SIGINT)
    wait_for("the process to exit", lambda: not is_alive(pid))
    assert not (inst.dir / "run" / "server.pid").exists()
    assert " INFO stopping" in log_text(inst.dir)


def test_unhealthy_fault_fails_health_with_503_and_logs_an_error(product):
    """With lib/FAULT 'unhealthy' the service runs and answers /version but /health is 503 and logged."""
    inst = product(fault="unhealthy")
    inst.start()
    inst.wait_listening()
    assert http_get(inst.port) == (200, INSTALLED_FIRST)
    status, body = http_get(inst.port, "/health")
    assert status == 503 and json.loads(body) == {"status": "degraded"}
    assert " ERROR health check failed: backend pool exhausted" in log_text(inst.dir)


def test_no_start_fault_lets_start_script_succeed_but_nothing_listens(product):
    """With lib/FAULT 'no-start', start.sh still exits 0 but the service logs why and exits without a pid file."""
    inst = product(fault="no-start")
    result = inst.start()
    assert result.returncode == 0
    wait_for("the ERROR line", lambda: "ERROR cannot start" in log_text(inst.dir))
    wait_for("the process to exit", lambda: not server_pids(inst.dir))
    assert not port_open(inst.port)
    assert not (inst.dir / "run" / "server.pid").exists()
    assert ("ERROR cannot start: configuration rejected (unknown attribute 'seesion-manager')"
            in log_text(inst.dir))


def test_crash_after_fault_kills_the_service_after_the_delay_leaving_its_pid_file(product):
    """With lib/FAULT 'crash-after:0.5' the service serves, then dies after the delay like a real crash."""
    inst = product(fault="crash-after:0.5")
    started = time.monotonic()
    inst.start()
    pid = inst.wait_listening()
    assert http_get(inst.port) == (200, INSTALLED_FIRST)
    wait_for("the crash", lambda: not is_alive(pid))
    assert time.monotonic() - started >= 0.5
    assert not port_open(inst.port)
    assert read_pid(inst.dir) == pid  # left behind, as a real crash would
    log = log_text(inst.dir)
    assert " ERROR fatal: out of memory" in log and " INFO stopping" not in log


def test_service_refuses_to_start_when_its_port_is_taken(product):
    """When something else holds the configured port the service logs an ERROR and exits without a pid file."""
    inst = product()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", inst.port))
        squatter.listen()
        inst.start()
        wait_for("the ERROR line", lambda: f"ERROR cannot start: cannot listen on 127.0.0.1:{inst.port}"
                 in log_text(inst.dir))
        wait_for("the process to exit", lambda: not server_pids(inst.dir))
    assert not (inst.dir / "run" / "server.pid").exists()


def test_http_get_raises_oserror_when_nothing_listens():
    """http_get raises OSError (not an HTTP error type) when no service answers on the port."""
    with pytest.raises(OSError):
        http_get(free_port(), "/version", timeout=1.0)


# ---------------------------------------------------------------- packages and catalog


def test_build_packages_lists_every_release_with_true_digests_and_sizes(catalog_path):
    """The catalog lists every release once, with the sha256 and size of the package file beside it."""
    catalog = load_catalog(catalog_path)
    assert catalog.serial == 7
    assert [e.version for e in catalog.entries] == [r.version for r in RELEASES]
    for entry in catalog.entries:
        path = catalog.package_path(entry)
        assert entry.file == package_name(entry.version) == f"sample-middleware-{entry.version}.tar.gz"
        assert entry.product == PRODUCT
        assert entry.size == path.stat().st_size
        assert entry.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    by_version = {e.version: e for e in catalog.entries}
    assert by_version["7.0.4.3"].kind == "patch"
    assert by_version["7.0.4.3"].requires == ">=7.0.4.1, <7.0.4.3"
    assert by_version["7.0.4.8"].changes == ("external_interface",)
    assert all(e.kind == "full" and not e.requires for v, e in by_version.items() if v != "7.0.4.3")


def test_patch_package_overlays_version_and_server_and_removes_legacy_compat(catalog_path):
    """The 7.0.4.3 patch ships only lib/VERSION, lib/server.py and its note, and lists legacy_compat for removal."""
    path = catalog_path.parent / package_name("7.0.4.3")
    files = {name for name, m in tar_members(path).items() if m.isreg()}
    assert files == {"package.yaml", "lib/VERSION", "lib/server.py", "lib/patches/7.0.4.3.txt"}
    meta = yaml.safe_load(tar_read(path, "package.yaml"))
    assert meta["kind"] == "patch"
    assert meta["requires"] == ">=7.0.4.1, <7.0.4.3"
    assert meta["remove"] == ["lib/legacy_compat.py"]
    assert tar_read(path, "lib/VERSION") == b"7.0.4.3\n"


def test_full_packages_carry_their_fault_file_and_legacy_compat_only_where_due(catalog_path):
    """Faulty builds contain lib/FAULT with their fault; legacy_compat.py ships only before 7.0.4.3."""
    for release in RELEASES:
        if release.kind != "full":
            continue
        path = catalog_path.parent / package_name(release.version)
        members = tar_members(path)
        assert members["bin/start.sh"].mode == 0o755 and members["lib/server.py"].mode == 0o644
        assert tar_read(path, "lib/VERSION") == f"{release.version}\n".encode()
        if release.fault:
            assert tar_read(path, "lib/FAULT").decode().strip() == release.fault
        else:
            assert "lib/FAULT" not in members
        assert ("lib/legacy_compat.py" in members) == (release.version in ("7.0.4.1", "7.0.4.2"))
    faults = {r.version: r.fault for r in RELEASES if r.fault}
    assert faults == {"7.0.4.5": "unhealthy", "7.0.4.6": "no-start", "7.0.4.7": "crash-after:1.5"}


def test_packages_are_byte_identical_when_built_twice(catalog_path, tmp_path):
    """Building the release line again gives packages with the same sha256 as before."""
    again = load_catalog(build_packages(tmp_path / "again", serial=7))
    first = load_catalog(catalog_path)
    assert [(e.file, e.sha256, e.size) for e in again.entries] == [(e.file, e.sha256, e.size) for e in first.entries]


def test_release_line_starts_at_the_installed_version():
    """RELEASES begins with INSTALLED_FIRST and lists each version once, in ascending order."""
    versions = [r.version for r in RELEASES]
    assert versions[0] == INSTALLED_FIRST
    keys = [tuple(int(p) for p in v.split(".")) for v in versions]
    assert keys == sorted(set(keys))


# ---------------------------------------------------------------- trees and installs


def test_filler_totals_the_requested_bytes_and_is_deterministic(tmp_path):
    """filler_bytes=3_000_000 puts about 3 MB under lib/modules, byte-identical on a second write."""
    write_tree(tmp_path / "a", "7.0.4.2", filler_bytes=3_000_000)
    write_tree(tmp_path / "b", "7.0.4.2", filler_bytes=3_000_000)
    modules = sorted((tmp_path / "a" / "lib" / "modules").iterdir())
    assert len(modules) == 20 and modules[0].name == "module-0000.jar"
    total = sum(p.stat().st_size for p in modules)
    assert abs(total - 3_000_000) <= 3_000_000 * 0.01
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b")
    write_tree(tmp_path / "c", "7.0.5.0", filler_bytes=3_000_000)
    assert (tmp_path / "c" / "lib/modules/module-0000.jar").read_bytes() != modules[0].read_bytes()


def test_write_tree_writes_release_files_with_modes_but_no_runtime_dirs(tmp_path):
    """write_tree writes bin, lib, conf and docs with scripts 0755 and files 0644, and no data, logs or run."""
    write_tree(tmp_path / "t", "7.0.4.2")
    root = tmp_path / "t"
    assert sorted(p.name for p in root.iterdir()) == ["bin", "conf", "docs", "lib"]
    assert (root / "lib" / "VERSION").read_text() == "7.0.4.2\n"
    assert (root / "lib" / "server.py").read_bytes() == SERVER_SOURCE.read_bytes()
    assert "port = 18080" in (root / "conf" / "server.conf").read_text()
    for p in root.rglob("*"):
        if p.is_file():
            expected = 0o755 if p.suffix == ".sh" else 0o644
            assert p.stat().st_mode & 0o777 == expected, p
    write_tree(tmp_path / "new", "7.0.5.0")
    assert not (tmp_path / "new" / "lib" / "legacy_compat.py").exists()
    assert (root / "lib" / "legacy_compat.py").exists()


def test_install_lays_out_config_customer_data_and_an_empty_log(tmp_path):
    """install writes the release, the given port and password, the customer's data and an empty log."""
    install(tmp_path / "inst", port=18123, admin_password="pw-42")
    root = tmp_path / "inst"
    conf = (root / "conf" / "server.conf").read_text()
    assert "port = 18123" in conf and "admin_password = pw-42" in conf
    assert (root / "lib" / "VERSION").read_text() == f"{INSTALLED_FIRST}\n"
    assert (root / "data" / "orders.db").stat().st_size > 0
    assert (root / "data" / "README").exists()
    assert (root / "logs" / "server.log").read_text() == ""
    assert not (root / "run").exists()


def test_install_refuses_a_non_empty_directory(tmp_path):
    """install raises ValueError instead of writing over a directory that already holds files."""
    target = tmp_path / "inst"
    target.mkdir()
    (target / "keep.txt").write_text("customer file\n")
    with pytest.raises(ValueError):
        install(target, port=18124)
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]
    (tmp_path / "empty").mkdir()
    install(tmp_path / "empty", port=18125)  # an existing but empty directory is fine


def test_server_source_is_stdlib_only_and_python_3_8_syntax():
    """lib/server.py parses as Python 3.8 and imports only standard-library modules."""
    tree = ast.parse(SERVER_SOURCE.read_text(), feature_version=(3, 8))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0
            imported.add(node.module.split(".")[0])
    assert imported - {"__future__"} <= set(sys.stdlib_module_names)
