"""The package is read and hashed once per run on a host, and the bytes checked are the bytes extracted (issue 16).

For the run that holds the host's lock, ``receive_check`` hashes the cached package while copying it into the run's
own copy, and ``prepare`` (later in the same agent session) extracts that copy instead of reading the cached package
and hashing it a second time. What must hold:

1. a cached package changed on the host after the check can neither fail nor alter the run: prepare extracts the
   bytes the check hashed (before: it copied the changed file again, hashed it and refused the run);
2. the run's copy changed after the check is never extracted: prepare copies and hashes the cached package again
   (and refuses when that one is changed too), as before;
3. a check by a run that does not hold the lock writes nothing into the state dir's runs.

The agent's own request handler (what the controller's requests reach on a host) is called as the controller calls
it: lock, receive_check (upload and receive_commit when the package is missing), prepare.
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import pytest

from hoststate import take_lock
from upgrader import sample
from upgrader.hostagent.main import handle
from upgrader.sample.packages import RELEASES, build_packages, package_name
from upgrader.trust.package import file_digest

RUN = "run-once"
PRESERVE = [{"path": "conf/server.conf", "kind": "config"}, {"path": "data", "kind": "data"},
            {"path": "logs", "kind": "data"}, {"path": "run", "kind": "data"}]


def call(op: str, **req: object) -> dict[str, object]:
    """One request to the agent's handler; its result (the reply must be ok)."""
    reply = handle({"op": op, **req})
    assert reply["ok"] is True, reply
    result = reply["result"]
    assert isinstance(result, dict)
    return result


class Host:
    """An install of 7.0.4.1, the package 7.0.4.2 cached on it, and the base fields of the run's requests."""

    def __init__(self, tmp_path: Path, run_id: str = RUN) -> None:
        self.install = tmp_path / "hosts" / "app-01"
        sample.install(self.install, port=18081)
        (release,) = [r for r in RELEASES if r.version == "7.0.4.2"]
        build_packages(tmp_path / "pkgs", releases=(release,))
        self.package = tmp_path / "pkgs" / package_name("7.0.4.2")
        self.sha256, self.size = file_digest(self.package), self.package.stat().st_size
        self.base = {"install_dir": str(self.install), "state_dir": None, "run_id": run_id}
        self.state = self.install.parent / ".upgrader-app-01"
        first = call("receive_check", **self.base, sha256=self.sha256, size=self.size)
        assert first["present"] is False
        shutil.copyfile(self.package, str(first["upload_to"]))
        self.cached = Path(str(call("receive_commit", **self.base, sha256=self.sha256, size=self.size)["path"]))

    def check(self) -> dict[str, object]:
        return call("receive_check", **self.base, sha256=self.sha256, size=self.size)

    def prepare(self) -> dict[str, object]:
        return handle({"op": "prepare", **self.base, "package_path": str(self.cached), "sha256": self.sha256,
                       "size": self.size, "limits": {}, "kind": "full", "remove": [], "current_version": "7.0.4.1",
                       "preserve": PRESERVE})

    def run_copy(self) -> Path:
        return self.state / "runs" / str(self.base["run_id"]) / "package.tar.gz"

    def staged_version(self) -> str:
        return (self.state / "runs" / str(self.base["run_id"]) / "staging" / "tree" / "lib" / "VERSION").read_text().strip()


def scramble(path: Path) -> None:
    """The file's bytes changed in place: same inode, same size."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    with open(path, "r+b") as f:
        f.write(bytes(data))


@pytest.fixture
def host(tmp_path: Path) -> Host:
    h = Host(tmp_path)
    base = {k: v for k, v in h.base.items() if k != "run_id"}
    take_lock(lambda op, **req: call(op, **base, **req), str(h.base["run_id"]))
    return h


def test_1_a_cached_package_changed_after_the_check_neither_fails_nor_alters_the_run(host: Host) -> None:
    """The check hashed the bytes on their way into the run's copy: prepare extracts those, not the changed file."""
    assert host.check()["present"] is True
    scramble(host.cached)
    reply = host.prepare()
    assert reply["ok"] is True, reply  # before: bad_input, "package on the host has sha256 ..." (hashed again)
    assert host.staged_version() == "7.0.4.2"
    with tarfile.open(host.run_copy()) as tar:  # the copy it extracted is the package, byte for byte
        assert tar.getnames() and file_digest(host.run_copy()) == host.sha256
    again = host.check()  # the changed cached copy is refused at the next check and sent again
    assert again["present"] is False and "replaced" in again and not host.cached.exists()


def test_2_the_runs_copy_changed_after_the_check_is_never_extracted(host: Host) -> None:
    """Prepare copies and hashes the cached package again when the run's copy is not the file the check wrote."""
    assert host.check()["present"] is True
    scramble(host.run_copy())
    reply = host.prepare()
    assert reply["ok"] is True, reply
    assert host.staged_version() == "7.0.4.2" and file_digest(host.run_copy()) == host.sha256


def test_2b_both_changed_after_the_check_the_run_is_refused_before_anything_is_staged(host: Host) -> None:
    assert host.check()["present"] is True
    scramble(host.run_copy())
    scramble(host.cached)
    reply = host.prepare()
    assert reply["ok"] is False and reply["kind"] == "bad_input", reply
    assert "the catalog says %s" % host.sha256 in str(reply["error"])
    assert not (host.state / "runs" / RUN / "staging").exists()


def test_2c_a_copy_replaced_by_another_file_is_not_used(host: Host) -> None:
    """Another file (another inode) at the run copy's name, even with the package's own bytes, is copied over."""
    assert host.check()["present"] is True
    copy = host.run_copy()
    planted = copy.with_name("planted")
    shutil.copyfile(host.package, planted)
    copy.unlink()
    copy.hardlink_to(planted)
    reply = host.prepare()
    assert reply["ok"] is True, reply
    assert not copy.samefile(planted)  # prepare wrote its own copy (the planted file lives on under its other name)


def test_3_a_check_by_a_run_without_the_lock_writes_no_run_copy(tmp_path: Path) -> None:
    h = Host(tmp_path, run_id="not-locked")
    assert h.check()["present"] is True
    assert not (h.state / "runs" / "not-locked").exists()
