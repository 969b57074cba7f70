"""Nothing outside the install dir, round 7: who a disclosing read is made as.

A read whose text can leave the host (the version, config text, log lines, vars_from, diagnostics) is made as the
accounts that could have put the file there: the owner of each directory from the install dir down to the file's
(a uid with no account entry reads with nobody's group, never its directory's); and when a directory on the way may
be written by an identity other than its owner and root (group or other write bits, or an entry of its POSIX ACL),
a file not everyone may read is withheld (round 8: whoever owns it, see tests/test_host_paths_8.py).

As in tests/test_host_paths_5.py and _6.py, the threat is a host with fs.protected_hardlinks=0, where whoever may
write a directory can hard-link any file into it; this machine has fs.protected_hardlinks=1, so root makes the very
link that account could make. Everything after that is the shipped CLI's own doing.

1. lib/ of a root-owned install is made writable for the service account by an ACL (setfacl -m u:nobody:rwx lib;
   the mode shows 0775 root:root): a root:root 0640 file linked there is not disclosed (over the real sshd).
2. An install owned by a uid with no passwd entry (its group root's): a renamed-away link of a root:root 0640 file
   is read as that uid with nobody's group, and not disclosed.
3. An install of one account with a directory of another: the read is made as the directory's owner too, so a file
   the install's owner may read but the directory's owner may not is not disclosed.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import struct
from pathlib import Path

import pytest

from conftest import plan_to
from fleet import Fleet
from test_host_paths import run_cli
from test_host_paths_5 import chown_tree
from test_host_paths_6 import SECRET, everything_written, identity
from test_swap_races import NOBODY
from upgrader.cli.commands.demo import Sandbox
from upgrader.hostagent.beneath import read_beneath
from upgrader.hostagent.common import AgentError
from upgrader.hostagent.inspection import log_facts

DAEMON = pwd.getpwnam("daemon").pw_uid
DAEMON_GID = pwd.getpwnam("daemon").pw_gid
NOGROUP = pwd.getpwnam("nobody").pw_gid
ALL = 0xFFFFFFFF  # the id field of an ACL entry that names no one


def acl(*entries: tuple[int, int, int]) -> bytes:
    """The value of system.posix_acl_access for ``entries`` (tag, perm, id), as setfacl writes it."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def acl_user_may_write(directory: Path, uid: int) -> None:
    """setfacl -m u:UID:rwx DIRECTORY (no setfacl here: the same ACL written as its xattr); the mode then shows the
    ACL's mask in its group bits."""
    os.setxattr(directory, "system.posix_acl_access",
                acl((0x01, 7, ALL), (0x02, 7, uid), (0x04, 5, ALL), (0x10, 7, ALL), (0x20, 5, ALL)))


def secret_file(tmp_path: Path, owner: tuple[int, int] = (0, 0), text: str = SECRET) -> Path:
    """A 0640 file outside the install, in a directory everyone may pass but not list."""
    d = tmp_path / "etc"
    d.mkdir(mode=0o711, exist_ok=True)
    os.chmod(d, 0o711)
    f = d / "secret"
    f.write_text(text + "\n")
    os.chown(f, *owner)
    os.chmod(f, 0o640)
    return f


def rename_away(secret: Path) -> None:
    """The original replaced by a rename (as visudo, vipw, passwd do): the link is the only name of the old text."""
    newer = secret.with_name(secret.name + ".new")
    newer.write_text("replaced\n")
    st = os.stat(secret)
    os.chown(newer, st.st_uid, st.st_gid)
    os.chmod(newer, 0o640)
    os.rename(newer, secret)


def can_read_as(path: Path, uid: int, gid: int, groups: list[int]) -> bool:
    """Whether ``uid`` with ``gid`` and ``groups`` may open ``path`` (from a descriptor of its directory, as the agent
    does: the test's own tmp dirs above are root's 0700); the test's identity restored after."""
    was = identity()
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    os.setgroups(groups)
    os.setegid(gid)
    os.seteuid(uid)
    try:
        os.close(os.open(path.name, os.O_RDONLY, dir_fd=dfd))
        return True
    except PermissionError:
        return False
    finally:
        os.seteuid(0)
        os.setegid(was[2])
        os.setgroups(was[3])
        os.close(dfd)


def version_of(out: str) -> list[object]:
    """The installed version of every host in ``inspect --json`` output (None: unknown)."""
    data = json.loads(out[out.index("{"):])
    return [h["facts"]["version"] for h in data["hosts"]]


def assert_not_disclosed(box: Sandbox, capsys: pytest.CaptureFixture[str], why: str, *inspect: str) -> None:
    """inspect and plan through the shipped CLI: the secret is in none of their output, the plan file or the audit
    log; the version is unknown and the reason names the file and ``why``."""
    rc, out = run_cli(box, capsys, "inspect", *inspect, "--json")
    assert "SECRETHASH" not in out, out
    assert "lib/VERSION" in out and "not disclosed" in out and why in out, out
    assert version_of(out) == [None], out
    rc, plan = plan_to(box, "7.0.4.2")
    text = capsys.readouterr()
    assert "SECRETHASH" not in text.out + text.err
    said = " ".join((text.out + text.err).split())
    if rc == 2:  # an ACL that lets another account write, where the commands run as root: the whole-tree rule
        assert "would run as root in" in said, said  # refuses the plan outright, before any audit line
        assert not plan.exists()
    else:
        assert rc == 3 and "Upgrade None → 7.0.4.2: REFUSED" in said  # the version is unknown
        assert "lib/VERSION" in plan.read_text() and "not disclosed" in plan.read_text()
    assert "SECRETHASH" not in everything_written(box)  # the plan (if any), the audit log, the runs
    if rc == 3:
        assert (box.root / "audit" / "audit.jsonl").read_text()  # the audit log was written, without the secret


# ------------------------------------------------------------------ 1: a POSIX ACL gives write, the mode hides it


def test_over_ssh_a_root_only_file_in_a_dir_the_account_writes_by_acl_is_not_disclosed(fleet, tmp_path, capsys):
    f: Fleet = fleet(1)
    box = f.box
    install = box.install_dir
    secret = secret_file(tmp_path)
    assert not can_read_as(secret, NOBODY, NOGROUP, [NOGROUP])  # the account may not read it itself
    acl_user_may_write(install / "lib", NOBODY)
    st = os.stat(install / "lib")
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, 0, 0o775)  # the mask in the group bits
    (install / "lib" / "VERSION").unlink()
    os.link(secret, install / "lib" / "VERSION")  # what nobody does itself with fs.protected_hardlinks=0
    assert_not_disclosed(box, capsys, "the ACL of its directory lets uid %d write it" % NOBODY,
                         "--inventory", str(box.inventory))
    # a version file everyone may read is still read there
    (install / "lib" / "VERSION").unlink()
    (install / "lib" / "VERSION").write_text("7.0.4.1\n")
    os.chmod(install / "lib" / "VERSION", 0o644)
    rc, out = run_cli(box, capsys, "inspect", "--inventory", str(box.inventory), "--json")
    assert version_of(out) == ["7.0.4.1"], out


def test_an_acl_entry_of_a_group_or_on_a_dir_above_withholds_a_file_that_is_not_everyones(sandbox, tmp_path):
    """The rule holds for every directory from the install dir down, and for ACL_GROUP entries too; a log the
    directory's owner owns, or one everyone may read, is read as before."""
    install = sandbox.install_dir
    root = str(install)
    logs = install / "logs"
    (logs / "app.log").write_text("ERROR root-only line\n")
    os.chmod(logs / "app.log", 0o640)
    before = identity()
    assert log_facts(root, "logs/app.log", 2000, 1, "ERROR")["tail"] == ["ERROR root-only line"]
    os.setxattr(logs, "system.posix_acl_access",
                acl((0x01, 7, ALL), (0x04, 5, ALL), (0x08, 7, DAEMON_GID), (0x10, 7, ALL), (0x20, 5, ALL)))
    log = log_facts(root, "logs/app.log", 2000, 1, "ERROR")
    assert "tail" not in log and "the ACL of its directory lets gid %d write it" % DAEMON_GID in log["withheld"]
    with pytest.raises(AgentError) as e:  # a log probe's lines, a vars_from value: the same refusal
        read_beneath(root, "logs/app.log", "log file")
    assert "not disclosed" in str(e.value) and "logs/app.log" in str(e.value)
    os.removexattr(logs, "system.posix_acl_access")
    acl_user_may_write(install, NOBODY)  # the install dir itself: a subtree could be renamed into place
    with pytest.raises(AgentError) as e:
        read_beneath(root, "logs/app.log", "log file")
    assert "the ACL of the install dir lets uid %d write it" % NOBODY in str(e.value)
    os.chmod(logs / "app.log", 0o644)
    assert read_beneath(root, "logs/app.log", "log file") == b"ERROR root-only line\n"
    assert identity() == before


# ------------------------------------------------------------------ 2: a numeric owner with no account entry


def unknown_uid() -> int:
    for uid in range(4242, 4342):
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
    raise AssertionError("no free uid in 4242..4341")


def test_an_install_of_a_uid_with_no_account_is_read_with_nobodys_group_not_root(sandbox, tmp_path, capsys):
    install = sandbox.install_dir
    uid = unknown_uid()
    os.lchown(install, uid, 0)  # chown -R 4242 /opt/app: the group stays root's
    for dirpath, dirnames, filenames in os.walk(install):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, 0)
    secret = secret_file(tmp_path)
    assert can_read_as(secret, uid, 0, [0])  # root's group may read it: the round-6 fallback read it
    assert not can_read_as(secret, uid, 65534, [65534])  # a process of that uid may not
    (install / "lib" / "VERSION").unlink()
    os.link(secret, install / "lib" / "VERSION")
    rename_away(secret)
    assert os.lstat(install / "lib" / "VERSION").st_nlink == 1
    assert_not_disclosed(sandbox, capsys, "not readable by the install dir's owner (uid %d)" % uid,
                         "--install-dir", str(install))
    # the uid's own version file is read as that uid, as before
    (install / "lib" / "VERSION").unlink()
    (install / "lib" / "VERSION").write_text("7.0.4.1\n")
    os.chown(install / "lib" / "VERSION", uid, 0)
    os.chmod(install / "lib" / "VERSION", 0o600)
    rc, out = run_cli(sandbox, capsys, "inspect", "--install-dir", str(install), "--json")
    assert version_of(out) == ["7.0.4.1"], out


# ------------------------------------------------------------------ 3: a directory of another account


def test_the_read_is_made_as_the_owner_of_the_files_directory_not_only_the_installs(sandbox, tmp_path, capsys):
    install = sandbox.install_dir
    chown_tree(install, DAEMON)
    os.chown(install, DAEMON, DAEMON_GID)
    os.chown(install / "lib", NOBODY, NOGROUP)  # lib/ is a second account's (a deploy user, a log shipper)
    secret = secret_file(tmp_path, (0, DAEMON_GID), "daemon-only:SECRETHASHhunter2:db-password")
    assert grp.getgrgid(DAEMON_GID)
    assert can_read_as(secret, DAEMON, DAEMON_GID, os.getgrouplist("daemon", DAEMON_GID))
    assert not can_read_as(secret, NOBODY, NOGROUP, os.getgrouplist("nobody", NOGROUP))
    (install / "lib" / "VERSION").unlink()
    os.link(secret, install / "lib" / "VERSION")  # what nobody does itself with fs.protected_hardlinks=0
    rename_away(secret)
    assert os.lstat(install / "lib" / "VERSION").st_nlink == 1
    assert_not_disclosed(sandbox, capsys, "not readable by the owner of its directory (uid %d)" % NOBODY,
                         "--install-dir", str(install))
    # a version file both accounts may read is read
    (install / "lib" / "VERSION").unlink()
    (install / "lib" / "VERSION").write_text("7.0.4.1\n")
    os.chown(install / "lib" / "VERSION", NOBODY, NOGROUP)
    os.chmod(install / "lib" / "VERSION", 0o644)
    rc, out = run_cli(sandbox, capsys, "inspect", "--install-dir", str(install), "--json")
    assert version_of(out) == ["7.0.4.1"], out
