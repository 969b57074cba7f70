"""Nothing outside the install dir, round 12: the read-only ``inspect`` and the agent's own start write nothing.

1. ``upgrader inspect`` reads the OS patch level from the package manager's own view. Run as root on a stock
   Debian/Ubuntu host (no docker-clean snippet), ``apt list --upgradable`` rebuilds and writes its binary caches
   (/var/cache/apt/pkgcache.bin and srcpkgcache.bin, some 70 MB). The agent runs the listing as nobody (no groups,
   cwd /) and without binary cache files: /var/cache/apt stays as it was, and the figures are still reported.

2. The host agent starts with ``python3 -I -B`` and sets ``sys.dont_write_bytecode`` first: on a host whose Python
   has no compiled standard library (Alpine without its pyc subpackage, a source-built Python), the modules the
   agent imports are compiled in memory only; nothing is written into the library's ``__pycache__`` as root.

Every mount is made inside the test process's own mount namespace (the suite runs under ``unshare -m``) and undone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Iterator

import pytest

from conftest import upgrader
from hoststate import assert_host_untouched
from test_host_paths_9 import private_mounts
from trust_support import host_state
from upgrader.cli.commands.demo import Sandbox
from upgrader.fleet.transport.bundle import agent_bundle
from upgrader.fleet.transport.local import LocalTransport


def tree(path: Path) -> list[str]:
    """Every name below ``path`` (relative), sorted."""
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.fixture
def stock_apt() -> Iterator[Path]:
    """/var/cache/apt as on a stock host whose cache was cleaned (only archives/partial), and /etc/apt/apt.conf.d
    without the container image's docker-clean snippet (which turns the binary caches off): both empty tmpfs, in this
    test's mount namespace only."""
    private_mounts()
    if not os.access("/usr/bin/apt", os.X_OK):
        pytest.fail("this test needs apt (/usr/bin/apt): run it on Debian or Ubuntu")
    cache = Path("/var/cache/apt")
    mounted: list[str] = []
    try:
        for where in (str(cache), "/etc/apt/apt.conf.d"):
            subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", where], check=True)
            mounted.append(where)
        (cache / "archives" / "partial").mkdir(parents=True)
        yield cache
    finally:
        for where in reversed(mounted):
            subprocess.run(["umount", where], check=True)


def test_1_inspect_writes_nothing_in_apts_cache(sandbox: Sandbox, stock_apt: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """``upgrader inspect`` (JSON) on a host where root's apt would write its binary caches: the patch figures come
    from apt, the same numbers as apt's own listing by an unprivileged account, and /var/cache/apt holds only what
    it held (no pkgcache.bin, no srcpkgcache.bin); nothing else on the host changed."""
    was = tree(stock_apt)
    assert was == ["archives", "archives/partial"]
    before = host_state(sandbox)
    capsys.readouterr()
    rc = upgrader(sandbox, "inspect", "--install-dir", str(sandbox.install_dir), "--playbook", "sample-middleware",
                  "--var", f"port={sandbox.port}", "--json")
    out, err = capsys.readouterr()
    assert rc == 0 and "Traceback" not in err, out + err
    (host,) = json.loads(out)["hosts"]
    patches = host["facts"]["patches"]
    assert patches["source"].startswith("apt list --upgradable"), patches
    assert "error" not in patches and isinstance(patches["pending"], int), patches
    # what apt itself lists to an account that is not root (it reads the lists, writes nothing)
    listed = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/apt", "list",
                             "--upgradable"], cwd="/", capture_output=True, text=True, check=True).stdout
    assert patches["pending"] == sum("[upgradable from" in x for x in listed.splitlines()), patches
    assert tree(stock_apt) == was  # before the fix: pkgcache.bin and srcpkgcache.bin, root's, about 70 MB
    assert_host_untouched(before, host_state(sandbox))


@pytest.fixture
def stdlib_without_bytecode(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The agent's Python (this interpreter) as on a host whose standard library has no compiled bytecode: its
    ``__pycache__`` replaced by an empty tmpfs in this test's mount namespace. This test process itself writes no
    bytecode meanwhile (the agent, started with ``-I``, does not inherit that), so whatever appears there is the
    agent's."""
    private_mounts()
    cache = Path(sysconfig.get_paths()["stdlib"]) / "__pycache__"
    assert cache.is_dir(), cache
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(cache)], check=True)
    try:
        yield cache
    finally:
        subprocess.run(["umount", str(cache)], check=True)


def test_2_the_agent_writes_no_bytecode_into_the_hosts_python(sandbox: Sandbox, stdlib_without_bytecode: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A whole ``upgrader inspect`` (the agent imports hashlib, zipfile, json, subprocess, urllib...) leaves the
    library's empty ``__pycache__`` empty, and nothing else on the host changed; the agent's command line holds
    ``-B`` and its boot sets ``sys.dont_write_bytecode`` first."""
    assert tree(stdlib_without_bytecode) == []
    before = host_state(sandbox)
    capsys.readouterr()
    rc = upgrader(sandbox, "inspect", "--install-dir", str(sandbox.install_dir), "--playbook", "sample-middleware",
                  "--var", f"port={sandbox.port}", "--json")
    out, err = capsys.readouterr()
    assert rc == 0 and "Traceback" not in err, out + err
    (host,) = json.loads(out)["hosts"]
    assert host["facts"]["process"]["running"] is True, host["facts"]["process"]
    assert tree(stdlib_without_bytecode) == []  # before the fix: hashlib, zipfile, warnings... .cpython-311.pyc
    transport = LocalTransport()
    stream = transport.open_stream([transport.python, transport.agent_path(), "--serve"])
    try:
        argv = Path("/proc/%d/cmdline" % stream.proc.pid).read_bytes().split(b"\0")[:-1]
        assert argv[1:5] == [b"-I", b"-B", b"-S", b"-c"], argv[:5]
        assert argv[5].startswith(b"import sys;sys.dont_write_bytecode=True;"), argv[5][:80]
        assert argv[6].decode().endswith(agent_bundle().name) and argv[-1] == b"--serve", argv[6:]
    finally:
        stream.close()
    assert tree(stdlib_without_bytecode) == []
    assert_host_untouched(before, host_state(sandbox))
