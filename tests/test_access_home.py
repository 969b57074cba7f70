"""`access grant --user ACCOUNT` reaches the account's ~/.ssh without following a link the account could have made,
and leaves an existing ~/.ssh's owner and mode as they are.

Played with the real account `nobody` through the shipped CLI, in a private mount namespace (unshare -m) whose
/home is a scratch directory and whose /etc/passwd gives `nobody` the home /home/nobody: the host's real /home and
passwd are never touched. The attacker (`nobody`, able to write its home's parent) replaces its home by a link to a
root-only directory with an .ssh of its own; and, without any link, a root-owned ~nobody/.ssh (a usual hardening)
must stay root's.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from test_swap_races import NOBODY, as_attacker

KEY_B64 = "AAAAC3NzaC1lZDI1NTE5AAAAIGq0Vt7pyC3qJz2Ph9bqKvc9yqfB6Dfsl2Q4lqg9X9qk"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq0Vt7pyC3qJz2Ph9bqKvc9yqfB6Dfsl2Q4lqg9X9qk engineer@vendor\n"
ROOTS_OWN = b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ0000000000000000000000000000000000000000000 root-admin\n"
OTHER_UID = 64123  # an account of no one in particular: a uid that is neither nobody nor root


def world(tmp_path: Path, home_owner: int) -> tuple[Path, Path]:
    """(the directory mounted as /home, owned by ``home_owner``; the passwd file mounted over /etc/passwd)."""
    homes = tmp_path / "homes"
    homes.mkdir(mode=0o755)
    os.chown(homes, home_owner, home_owner)
    passwd = tmp_path / "passwd"
    lines = [ln for ln in Path("/etc/passwd").read_text().splitlines() if not ln.startswith("nobody:")]
    lines.append(f"nobody:x:{NOBODY}:{NOBODY}:nobody:/home/nobody:/usr/sbin/nologin")
    passwd.write_text("\n".join(lines) + "\n")
    passwd.chmod(0o644)
    return homes, passwd


def grant_as_root(tmp_path: Path, homes: Path, passwd: Path) -> subprocess.CompletedProcess[str]:
    """`upgrader access grant --user nobody` (the real CLI, as root) in a mount namespace of its own."""
    pub = tmp_path / "engineer.pub"
    pub.write_text(KEY)
    cli = " ".join([sys.executable, "-m", "upgrader", "--home", str(tmp_path / "state"), "access", "grant",
                    "--key", str(pub), "--user", "nobody", "--hours", "1", "--reason", "ticket-1"])
    script = (f"mount --make-rprivate / && mount --bind {homes} /home && mount --bind {passwd} /etc/passwd "
              f"&& exec {cli}")
    return subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, cwd=tmp_path)


def root_only_ssh(tmp_path: Path) -> Path:
    """A root-only directory with an .ssh of its own (stands for /root)."""
    d = tmp_path / "rootlike"
    (d / ".ssh").mkdir(parents=True, mode=0o700)
    d.chmod(0o700)
    (d / ".ssh").chmod(0o700)
    (d / ".ssh" / "authorized_keys").write_bytes(ROOTS_OWN)
    (d / ".ssh" / "authorized_keys").chmod(0o600)
    return d


def owner_mode(p: Path) -> tuple[int, int, int]:
    st = p.lstat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def test_a_home_the_account_replaced_by_a_link_to_a_root_only_dir_is_refused(tmp_path):
    """`nobody` can write /home and makes /home/nobody a link to a root-only directory: the grant exits 2 naming
    the link and the directory's owner; the root-only .ssh keeps owner, mode and bytes."""
    homes, passwd = world(tmp_path, NOBODY)
    rootlike = root_only_ssh(tmp_path)
    assert as_attacker(homes, lambda d: os.symlink(str(rootlike), "nobody", dir_fd=d)) == 0
    done = grant_as_root(tmp_path, homes, passwd)
    text = done.stdout + done.stderr
    assert done.returncode == 2, text
    assert "Traceback" not in text
    assert f"nobody is a link (-> {rootlike})" in text and f"owned by uid {NOBODY}" in text
    assert owner_mode(rootlike / ".ssh") == (0, 0, 0o700)
    assert owner_mode(rootlike / ".ssh" / "authorized_keys") == (0, 0, 0o600)
    assert (rootlike / ".ssh" / "authorized_keys").read_bytes() == ROOTS_OWN
    assert sorted(os.listdir(rootlike / ".ssh")) == ["authorized_keys"]


def test_a_link_to_the_home_made_by_root_in_a_root_only_parent_is_followed(tmp_path):
    """/home/nobody -> <elsewhere>/nobody made by root in a root-owned /home (the /home -> /usr/home kind of
    system): the grant lands in the real home's new .ssh, made 0700 and given to the account."""
    homes, passwd = world(tmp_path, 0)
    real = tmp_path / "usr-home" / "nobody"
    real.mkdir(parents=True)
    os.chown(real, NOBODY, NOBODY)
    (homes / "nobody").symlink_to(real)
    done = grant_as_root(tmp_path, homes, passwd)
    assert done.returncode == 0, done.stdout + done.stderr
    assert owner_mode(real / ".ssh") == (NOBODY, NOBODY, 0o700)
    assert owner_mode(real / ".ssh" / "authorized_keys") == (NOBODY, NOBODY, 0o600)
    assert KEY_B64 in (real / ".ssh" / "authorized_keys").read_text()


@pytest.mark.parametrize("keys_exist", [True, False])
def test_a_root_owned_ssh_dir_stays_roots(tmp_path, keys_exist):
    """No link at all: ~nobody/.ssh is root:root 0755 (authorized_keys root:root 0644 when present), the hardening
    that keeps an account from adding its own keys. The grant writes the key and both stay root's, modes kept
    (a new authorized_keys there is root's 0644)."""
    homes, passwd = world(tmp_path, 0)
    home = homes / "nobody"
    (home / ".ssh").mkdir(parents=True)
    os.chown(home, NOBODY, NOBODY)
    (home / ".ssh").chmod(0o755)
    if keys_exist:
        (home / ".ssh" / "authorized_keys").write_bytes(ROOTS_OWN)
        (home / ".ssh" / "authorized_keys").chmod(0o644)
    done = grant_as_root(tmp_path, homes, passwd)
    assert done.returncode == 0, done.stdout + done.stderr
    assert owner_mode(home / ".ssh") == (0, 0, 0o755)
    assert owner_mode(home / ".ssh" / "authorized_keys") == (0, 0, 0o644)
    text = (home / ".ssh" / "authorized_keys").read_text()
    assert KEY_B64 in text and (ROOTS_OWN.decode() in text) == keys_exist
    assert all(p.lstat().st_uid == 0 for p in (home / ".ssh").iterdir())


def test_an_ssh_dir_of_another_account_is_refused_and_left_as_it_is(tmp_path):
    """~nobody/.ssh owned by a third account: exit 2 naming the directory and its owner; nothing written there,
    its owner and mode as they were."""
    homes, passwd = world(tmp_path, 0)
    home = homes / "nobody"
    (home / ".ssh").mkdir(parents=True)
    os.chown(home, NOBODY, NOBODY)
    os.chown(home / ".ssh", OTHER_UID, OTHER_UID)
    (home / ".ssh").chmod(0o750)
    done = grant_as_root(tmp_path, homes, passwd)
    text = done.stdout + done.stderr
    assert done.returncode == 2, text
    assert "Traceback" not in text
    assert f"is owned by uid {OTHER_UID}, neither nobody nor root" in text
    assert owner_mode(home / ".ssh") == (OTHER_UID, OTHER_UID, 0o750)
    assert os.listdir(home / ".ssh") == []
