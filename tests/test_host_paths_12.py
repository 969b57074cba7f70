"""Nothing outside the install dir, round 13: what the controller and the agent read and write around a host.

1. The guide reads a lock left on the install by the host agent's rules: the state dir checked as the agent's own,
   the lock never followed through a link (a link to a root-only file would show that file's fields), never read
   past its size cap, and only its checked fields shown (the run id in its own shape, the time as a number, the
   user and controller with every control or bidi character escaped).

2. Root's cached host agent (the local transport's zip) lies in root's own login directory from the password
   database, never in the $HOME that ``sudo`` keeps; a cache dir named by $XDG_CACHE_HOME is walked from ``/``
   one component at a time without following a link, and a directory of another account on the way is refused.

3. Run as root without --home, with a $HOME of another account (``sudo`` keeps it), upgrader refuses (exit 2)
   naming the directory and its owner and saying to give --home or use ``sudo -H``; nothing is written there.

4. Over SSH the uploaded agent is renamed into ~/.cache/upgrader with ``mv -T``: a directory planted at its name
   is not moved into, and a link at the cache dir is refused, never followed (nor its target chmod-ed).

5. The host agent splits /proc/self/mountinfo on b"\\n" and b" " only: a mount point inside the install dir whose
   name holds \\r, \\x0b, \\x85 or \\u2028 (line breaks to str.splitlines) no longer hides itself, and the plan
   refuses it like any other mount inside the install.

Every mount is made inside the test process's own mount namespace (the suite runs under ``unshare -m``) and undone.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from conftest import plan_to
from hoststate import assert_host_untouched
from sshd import SSHServer
from test_guide import UPGRADER, guide
from test_host_paths import run_cli
from test_host_paths_9 import private_mounts
from trust_support import host_state
from upgrader.fleet.transport import close_all
from upgrader.cli.commands.demo import Sandbox
from upgrader.fleet.transport.bundle import agent_bundle

NEW = "7.0.4.2"
DAEMON = pwd.getpwnam("daemon")


def tree(path: Path) -> dict[str, tuple[int, int]]:
    """Every name at and below ``path`` (not following links) with its owner and mode."""
    out = {}
    for p in [path, *path.rglob("*")]:
        st = p.lstat()
        out[str(p.relative_to(path))] = (st.st_uid, st.st_mode)
    return out


def state_dir(box: Sandbox) -> Path:
    d = box.install_dir.parent / f".upgrader-{box.install_dir.name}"
    d.mkdir(mode=0o700, exist_ok=True)
    return d


# ------------------------------------------------------------------ 1: the guide reads a left lock by the agent's rules


@pytest.fixture
def root_only_secret(tmp_path: Path) -> Path:
    """A root-only file (0600 in a 0700 directory) in the shape of a lock, whose "run" is a secret."""
    d = tmp_path / "root-only"
    d.mkdir(mode=0o700)
    secret = d / "secret.json"
    secret.write_text(json.dumps({"run": "SECRET-7f3a9c", "user": "root", "controller": "vault", "time": 1.7e9}))
    secret.chmod(0o600)
    return secret


def guide_finding_the_install(box: Sandbox) -> tuple[int, str]:
    """``upgrader guide --yes`` that finds the sandbox's install in its search path: its exit status and screen."""
    child = guide(box, "--yes", "--catalog", str(box.catalog), "--to", NEW, "--var", f"port={box.port}",
                  env={"UPGRADER_SEARCH_PATH": f"{box.root}/hosts/*"})
    child.expect(f"Found sample-middleware in {box.install_dir}")
    rc = child.finish()
    return rc, child.transcript.replace("\r\n", "")


@pytest.mark.usefixtures("guide_contract")
def test_1_the_guide_never_follows_a_lock_link_to_a_root_only_file(sandbox: Sandbox, root_only_secret: Path) -> None:
    """Whoever could write the state dir made its lock a link to a root-only file in a lock's shape. The guide (run
    as root) refuses (exit 2) naming the lock and the link, before any question; the secret's fields are never
    shown, the file is as it was and nothing on the host changed."""
    lock = state_dir(sandbox) / "lock"
    lock.symlink_to(root_only_secret)
    was = root_only_secret.read_bytes()
    before = host_state(sandbox)
    rc, out = guide_finding_the_install(sandbox)
    assert rc == 2, out
    assert "SECRET-7f3a9c" not in out and "vault" not in out, out  # before the fix: "locked by run SECRET-7f3a9c"
    assert f"{lock} is a symlink" in out and "remove the link" in out, out
    assert "Traceback" not in out
    assert root_only_secret.read_bytes() == was and lock.is_symlink()
    assert_host_untouched(before, host_state(sandbox))


@pytest.mark.usefixtures("guide_contract")
def test_1_a_lock_past_its_size_cap_is_refused_unread(sandbox: Sandbox) -> None:
    """A lock of 2 MB (a JSON object whose user is 2 MB of "A"): refused (exit 2) as not a file the agent wrote,
    naming it and its cap; none of it is printed."""
    lock = state_dir(sandbox) / "lock"
    lock.write_text(json.dumps({"run": "20261203T020000Z-big001", "user": "A" * (2 << 20), "controller": "x",
                                "time": 1.7e9}))
    before = host_state(sandbox)
    rc, out = guide_finding_the_install(sandbox)
    assert rc == 2, out[-2000:]
    assert f"{lock} is larger than 65536 bytes" in out and "AAAAAAAAAAAAAAAA" not in out, out[-2000:]
    assert_host_untouched(before, host_state(sandbox))


@pytest.mark.usefixtures("guide_contract")
def test_1_a_locks_fields_are_shown_only_checked(sandbox: Sandbox) -> None:
    """A lock whose user holds terminal escapes (a title change, a screen clear), whose controller holds a bidi
    override and whose run is not a run id but a shell command: the guide still refuses (exit 5, the install is
    locked) and shows the user and controller escaped (\\x1b, \\u202e), the run as "?", never the command."""
    lock = state_dir(sandbox) / "lock"
    lock.write_text(json.dumps({"run": "x; rm -rf ~", "user": "\x1b]0;pwned\x07\x1b[2Jzhang",
                                "controller": "ops\u202eevil", "time": "soon"}))
    before = host_state(sandbox)
    rc, out = guide_finding_the_install(sandbox)
    assert rc == 5, out
    assert "\x1b]0;pwned" not in out and "\x1b[2J" not in out and "\u202e" not in out, out  # before: raw
    assert "\\x1b]0;pwned\\x07\\x1b[2Jzhang@ops\\u202eevil" in out, out
    assert "rm -rf" not in out and "locked by run ?" in out, out
    assert_host_untouched(before, host_state(sandbox))


# ------------------------------------------------------------------ 2: root's cached agent in root's own home


def daemons_dir(path: Path) -> Path:
    path.mkdir(mode=0o755)
    os.chown(path, DAEMON.pw_uid, DAEMON.pw_gid)
    return path


@pytest.mark.parametrize("where", ["HOME of another account", "XDG_CACHE_HOME a link", "XDG_CACHE_HOME in another "
                                   "account's directory"])
def test_2_roots_cached_agent_never_lies_where_another_account_points(
        sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        where: str) -> None:
    """Root runs ``upgrader inspect`` (the local transport writes its agent zip into its cache and runs it) with
    (a) the $HOME of daemon, whose ~/.cache daemon made a link to a root-only directory: the zip goes to root's
    own home (password database), nothing into the link's target; (b) $XDG_CACHE_HOME itself a link to that
    directory, or (c) $XDG_CACHE_HOME inside a directory of daemon's: refused, naming the cache dir and the
    component, nothing made there."""
    assert os.getuid() == 0
    target = tmp_path / "root-only"
    target.mkdir(mode=0o700)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    if where == "HOME of another account":
        home = daemons_dir(tmp_path / "daemon-home")
        (home / ".cache").symlink_to(target)
        monkeypatch.setenv("HOME", str(home))
        watched = home
    elif where == "XDG_CACHE_HOME a link":
        (tmp_path / "xdg").symlink_to(target)
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        watched = tmp_path / "xdg"
    else:
        watched = daemons_dir(tmp_path / "daemons")
        monkeypatch.setenv("XDG_CACHE_HOME", str(watched / "cache"))
    was = tree(watched)
    rc, out = run_cli(sandbox, capsys, "inspect", "--install-dir", str(sandbox.install_dir), "--playbook",
                      "sample-middleware", "--var", f"port={sandbox.port}", "--json")
    assert list(target.iterdir()) == []  # before the fix: upgrader/agent-<sha256>.pyz, root's
    assert tree(watched) == was
    if where == "HOME of another account":
        assert rc == 0, out
        mine = Path(pwd.getpwuid(0).pw_dir) / ".cache" / "upgrader" / agent_bundle().name
        assert mine.read_bytes() == agent_bundle().data
    else:
        assert rc != 0 and "the agent's cache directory" in out, out
        shown = tmp_path / "xdg" if where == "XDG_CACHE_HOME a link" else watched
        why = "a link or not a directory" if where == "XDG_CACHE_HOME a link" else f"owned by uid {DAEMON.pw_uid}"
        assert f"({shown} is {why})" in out, out


# ------------------------------------------------------------------ 3: root's default home in another account's HOME


def test_3_root_with_another_accounts_home_and_no_home_option_is_refused(tmp_path: Path) -> None:
    """``sudo upgrader inspect ...`` keeps the operator's HOME (daemon's here): upgrader, as root, with neither
    --home nor UPGRADER_HOME, refuses (exit 2) before doing anything, naming the default home, the directory and
    its owner, saying to use --home or sudo -H, in Chinese too; daemon's home is as it was. With --home it goes
    on (to its own answer)."""
    home = daemons_dir(tmp_path / "daemon-home")
    env = {k: v for k, v in os.environ.items() if k != "UPGRADER_HOME"}
    env.update(HOME=str(home), PYTHON=sys.executable)
    was = tree(home)
    res = subprocess.run([UPGRADER, "inspect", "--install-dir", str(tmp_path / "none"), "--lang", "zh"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"the default home {home}/.local/state/upgrader is in {home}, which belongs to daemon" in res.stderr
    assert "give --home DIR" in res.stderr and "sudo -H" in res.stderr and "Traceback" not in res.stderr
    assert f"默认的数据目录 {home}/.local/state/upgrader 位于 {home}，该目录属于 daemon" in res.stderr, res.stderr
    assert tree(home) == was  # before the fix: .local/state/upgrader made there, root's
    own = tmp_path / "roots-home"
    res = subprocess.run([UPGRADER, "--home", str(own), "status"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert "no runs in %s/runs" % own in res.stderr and "default home" not in res.stderr, res.stderr
    assert tree(home) == was


# ------------------------------------------------------------------ 4: the agent moved into its cache over SSH


@pytest.fixture
def remote_cache(sshd: SSHServer) -> Iterator[Path]:
    """The login directory's ~/.cache/upgrader of the test sshd (shared by the session), emptied before and after;
    the process's shared SSH connections are closed too, so the CLI connects afresh and sends the agent (a
    connection kept from an earlier test of this session already knows its agent and would not upload it)."""
    cache = sshd.root / "home" / ".cache" / "upgrader"

    def clear() -> None:
        close_all()
        if cache.is_symlink() or cache.is_file():
            cache.unlink()
        elif cache.exists():
            shutil.rmtree(cache)

    clear()
    cache.parent.mkdir(exist_ok=True)
    try:
        yield cache
    finally:
        clear()


@pytest.mark.parametrize("planted", ["a directory at the agent's name", "the cache dir a link"])
def test_4_the_uploaded_agent_never_moves_into_a_planted_directory_or_through_a_link(
        sandbox: Sandbox, sshd: SSHServer, remote_cache: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], planted: str) -> None:
    """``upgrader inspect`` of a host over the real sshd, whose ~/.cache/upgrader holds a directory at the agent's
    name, or is itself a link to another directory (mode 0755): the agent is not installed (exit not 0, the
    message names the path and says to remove it), nothing was moved into the directory, no upload is left
    behind, and the link's target has neither the agent nor a new mode."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    elsewhere.chmod(0o755)
    if planted == "the cache dir a link":
        remote_cache.symlink_to(elsewhere)
        watched = elsewhere
    else:
        remote_cache.mkdir(mode=0o700)
        watched = remote_cache / agent_bundle().name
        watched.mkdir()
    was = tree(watched)
    inventory = tmp_path / "inventory.yaml"
    entry = {**sshd.host_entry(), "install_dir": str(sandbox.install_dir), "product": "sample-middleware",
             "playbook": "sample-middleware", "vars": {"port": str(sandbox.port)}}
    inventory.write_text(json.dumps({"format": 1, "hosts": {"app-01": entry}}))
    rc, out = run_cli(sandbox, capsys, "inspect", "--inventory", str(inventory), "--json")
    assert rc != 0, out
    assert tree(watched) == was and (elsewhere.stat().st_mode & 0o777) == 0o755  # before: the zip moved in / 0700
    if planted == "the cache dir a link":
        assert "the agent's cache directory" in out and "leads elsewhere" in out, out
    else:
        assert "a directory or a link is in the way" in out and agent_bundle().name in out, out
        assert sorted(p.name for p in remote_cache.iterdir()) == [agent_bundle().name]  # no .part left


# ------------------------------------------------------------------ 5: a mount point whose name breaks str lines


@pytest.mark.parametrize("char", ["\r", "\x0b", "\x85", "\u2028"])
def test_5_a_mount_inside_the_install_is_seen_whatever_its_name(sandbox: Sandbox, char: str,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A tmpfs mounted inside the install dir at a directory whose name holds a character that str.splitlines
    takes for a line break (the kernel escapes only space, tab, newline and backslash in /proc/self/mountinfo), in
    the preserved data/ (which the drift scan does not walk): ``plan`` refuses (exit 2) naming it a mount point
    inside the install dir, and writes no plan."""
    private_mounts()
    point = sandbox.install_dir / "data" / f"cache{char}forged"
    point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(point)], check=True)
    try:
        rc, plan = plan_to(sandbox, NEW)
        out = capsys.readouterr()
        assert rc == 2, out  # before the fix: 0 (the mount hid itself from the table)
        assert "in preserved path data, is a mount point inside the install dir (tmpfs tmpfs mounted there)" \
            in out.out + out.err, out
        assert not plan.exists()
    finally:
        subprocess.run(["umount", str(point)], check=True)
        point.rmdir()


# ------------------------------------------------------------------ 6: the agent's own facts read the lock capped


def test_6_plan_reads_a_hosts_lock_only_up_to_its_cap(sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """The host agent's facts (what ``plan`` asks of a host) read its lock from the state dir's descriptor, never
    through a link and never past its cap: a lock of 2 MB is refused (exit 2) naming it and the cap, unread; no
    plan is written and nothing on the host changed."""
    lock = state_dir(sandbox) / "lock"
    lock.write_text(json.dumps({"run": "20261203T020000Z-big002", "user": "B" * (2 << 20), "time": 1.7e9}))
    before = host_state(sandbox)
    rc, plan = plan_to(sandbox, NEW)
    out = capsys.readouterr()
    assert rc == 2, out  # before the fix: the whole file read (and the plan said the host was locked)
    assert f"{lock} is larger than 65536 bytes" in out.err and "BBBBBBBBBBBBBBBB" not in out.out + out.err, out
    assert not plan.exists()
    assert_host_untouched(before, host_state(sandbox))


# ------------------------------------------------------------------ 7: root trusts only its own known_hosts


def test_7_root_never_trusts_a_host_key_from_another_accounts_home(
        sandbox: Sandbox, sshd: SSHServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Root runs ``upgrader inspect`` of a host over SSH with the $HOME of daemon (``sudo`` keeps it), whose
    ~/.ssh/known_hosts daemon filled with the key the host presents (as it could with a man in the middle's key).
    The inventory names no known_hosts: the host key is unknown to root, and the host is refused (naming the
    unknown key and the ways to accept it); root's own login directory is what counts."""
    home = daemons_dir(tmp_path / "daemon-home")
    ssh = home / ".ssh"
    ssh.mkdir(mode=0o700)
    (ssh / "known_hosts").write_text(sshd.known_hosts.read_text())
    os.chown(ssh, DAEMON.pw_uid, DAEMON.pw_gid)
    os.chown(ssh / "known_hosts", DAEMON.pw_uid, DAEMON.pw_gid)
    monkeypatch.setenv("HOME", str(home))
    roots = Path(pwd.getpwuid(0).pw_dir) / ".ssh" / "known_hosts"
    assert not roots.exists() or f":{sshd.port}]" not in roots.read_text()
    inventory = tmp_path / "inventory.yaml"
    entry = {k: v for k, v in sshd.host_entry().items() if k != "known_hosts"}
    entry.update({"install_dir": str(sandbox.install_dir), "product": "sample-middleware",
                  "playbook": "sample-middleware", "vars": {"port": str(sandbox.port)}})
    inventory.write_text(json.dumps({"format": 1, "hosts": {"app-01": entry}}))
    rc, out = run_cli(sandbox, capsys, "inspect", "--inventory", str(inventory), "--json")
    assert rc != 0 and "unknown host key for 127.0.0.1" in out, out  # before the fix: 0, daemon's key trusted
