"""Nothing outside the install dir, round 6: what the agent reads and discloses.

On a host with fs.protected_hardlinks=0 the service account (`nobody`) can hard-link any file into a directory it
may write. This machine has fs.protected_hardlinks=1, so root makes the very link the account could make (as
tests/test_host_paths_5.py does); everything after that is the shipped code's own doing.

1. The version file (`lib/VERSION`, or an archive holding it) is a disclosing read: a hard link of a root-only file
   there puts nothing of it into `inspect --json`, the plan or the audit log.
2. Whether a file is disclosed is decided by the kernel: the agent (root) opens it again as the install's (or its
   directory's) non-root owner, so a root-only file stays unread whatever its link count (the original replaced by
   a rename leaves one link); a root-owned file in a root:group 0775 directory is disclosed only when that group may
   read it. The agent's own uid, gid and groups are back as they were after every such read.
"""

from __future__ import annotations

import io
import json
import os
import stat
import zipfile
from pathlib import Path

import pytest

from conftest import plan_to
from test_host_paths import run_cli
from test_host_paths_5 import chown_tree
from test_swap_races import NOBODY, Toggler
from upgrader.cli.commands.demo import Sandbox
from upgrader.hostagent.beneath import copy_out, read_beneath
from upgrader.hostagent.common import AgentError
from upgrader.hostagent.inspection import config_facts, log_facts
from upgrader.hostagent.state import Paths
from upgrader.hostagent.versions import read_version

SECRET = "root:$6$SECRETHASHhunter2$abcdefg:19000:0:99999:7:::"


def root_only(tmp_path: Path, name: str = "shadow", data: bytes = (SECRET + "\n").encode()) -> Path:
    d = tmp_path / "root-only"
    d.mkdir(mode=0o700, exist_ok=True)
    (d / name).write_bytes(data)
    os.chmod(d / name, 0o600)
    return d / name


def identity() -> tuple[int, int, int, list[int]]:
    return os.getuid(), os.geteuid(), os.getegid(), sorted(os.getgroups())


def everything_written(box: Sandbox) -> str:
    """Every file the controller wrote (plans, audit log, runs), the install aside."""
    out = []
    for p in box.root.rglob("*"):
        if p.is_file() and not p.is_symlink() and box.install_dir not in p.parents:
            out.append(p.read_bytes().decode("utf-8", "replace"))
    return "\n".join(out)


def test_a_hard_linked_version_file_is_not_disclosed_by_inspect_plan_or_audit(sandbox, tmp_path, capsys):
    secret = root_only(tmp_path)
    install = sandbox.install_dir
    chown_tree(install, NOBODY)  # the install is the service account's
    (install / "lib" / "VERSION").unlink()
    os.link(secret, install / "lib" / "VERSION")  # the link the account makes itself with protected_hardlinks=0
    rc, out = run_cli(sandbox, capsys, "inspect", "--install-dir", str(install), "--json")
    assert "SECRETHASH" not in out
    assert "version file lib/VERSION has 2 hard links" in out and "its contents were not read" in out
    rc, out = plan_to(sandbox, "7.0.4.2")[0], capsys.readouterr()
    assert "SECRETHASH" not in out.out + out.err
    assert "SECRETHASH" not in everything_written(sandbox)  # the plan, the audit log


def test_the_version_read_as_the_owner_after_the_original_was_renamed_away(sandbox, tmp_path, capsys):
    """The original replaced by a rename: the account's name holds the old root-only text with one link. The
    agent reads it as the install's owner, the kernel says no: no version, the reason says why."""
    secret = root_only(tmp_path)
    install = sandbox.install_dir
    chown_tree(install, NOBODY)
    (install / "lib" / "VERSION").unlink()
    os.link(secret, install / "lib" / "VERSION")
    newer = secret.with_name("shadow+")
    newer.write_text("root:$6$NEWHASH$xyz:19001:0:99999:7:::\n")
    os.chmod(newer, 0o600)
    os.rename(newer, secret)
    assert os.lstat(install / "lib" / "VERSION").st_nlink == 1
    before = identity()
    version, why = read_version(Paths({"install_dir": str(install)}), {"file": "lib/VERSION"})
    assert identity() == before
    assert version is None and "is not readable by the install dir's owner (uid %d)" % NOBODY in why
    assert "not disclosed" in why and "SECRETHASH" not in why
    rc, out = run_cli(sandbox, capsys, "inspect", "--install-dir", str(install), "--json")
    assert "SECRETHASH" not in out and "not readable by the install dir's owner" in out
    # the account's own version file is read as before, as the account
    (install / "lib" / "VERSION").unlink()
    (install / "lib" / "VERSION").write_text("7.0.4.1\n")
    os.chown(install / "lib" / "VERSION", NOBODY, NOBODY)
    assert read_version(Paths({"install_dir": str(install)}), {"file": "lib/VERSION"}) == ("7.0.4.1", None)
    assert identity() == before


def test_a_hard_linked_archive_for_version_member_is_not_read(sandbox, tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("META-INF/VERSION", SECRET + "\n")
    secret = root_only(tmp_path, "keys.jar", buf.getvalue())
    install = sandbox.install_dir
    chown_tree(install, NOBODY)
    os.link(secret, install / "lib" / "version.jar")
    version, why = read_version(Paths({"install_dir": str(install)}),
                                {"file": "lib/version.jar", "member": "META-INF/VERSION"})
    assert version is None and "has 2 hard links" in why and "SECRETHASH" not in why
    os.unlink(secret)  # one link left, root-only: the kernel, reading as the owner, refuses it
    version, why = read_version(Paths({"install_dir": str(install)}),
                                {"file": "lib/version.jar", "member": "META-INF/VERSION"})
    assert version is None and "not readable by the install dir's owner" in why


def test_a_renamed_away_link_in_the_accounts_logs_dir_is_not_disclosed(sandbox, tmp_path):
    """Finding 2: a root-owned install, logs/ the account's; after the rename the link has one link. Its
    directory's owner cannot read it: log facts and a log probe's read withhold it."""
    secret = root_only(tmp_path)
    install = sandbox.install_dir
    chown_tree(install / "logs", NOBODY)
    chown_tree(install / "conf", NOBODY)
    (install / "logs" / "server.log").unlink()
    os.link(secret, install / "logs" / "server.log")
    newer = secret.with_name("shadow+")
    newer.write_text("new\n")
    os.chmod(newer, 0o600)
    os.rename(newer, secret)  # root updates the original the usual way
    assert os.lstat(install / "logs" / "server.log").st_nlink == 1
    root = str(install)
    before = identity()
    log = log_facts(root, "logs/server.log", 2000, 5, "ERROR|root")
    assert "tail" not in log and log["samples"] == []
    assert "not readable by the owner of its directory (uid %d)" % NOBODY in log["withheld"]
    with pytest.raises(AgentError) as e:  # a log probe's lines, a vars_from value: the same refusal
        read_beneath(root, "logs/server.log", "log file")
    assert e.value.kind == "unsafe_path" and "not disclosed" in str(e.value)
    assert identity() == before
    assert "SECRETHASH" not in json.dumps(log)
    # the account's own log and config are read as before
    (install / "logs" / "own.log").write_text("INFO up\n")
    os.chown(install / "logs" / "own.log", NOBODY, NOBODY)
    assert log_facts(root, "logs/own.log", 2000, 1, "INFO")["tail"] == ["INFO up"]
    assert "port" in config_facts(root, "conf/server.conf", True)["text"]
    assert identity() == before


def test_a_root_owned_link_in_a_group_writable_root_dir_is_not_disclosed(sandbox, tmp_path):
    """Finding 3: logs/ is root:nogroup 0775 (the account writes through its group); a root-owned link of a root-only
    file there is withheld, and so is a root-owned log only the group may read (round 8: in a directory others may
    write, only what everyone may read is disclosed); a world-readable one is read."""
    secret = root_only(tmp_path)
    install = sandbox.install_dir
    logs = install / "logs"
    os.chown(logs, 0, NOBODY)  # nogroup is NOBODY's gid here too
    os.chmod(logs, 0o775)
    (logs / "server.log").unlink()
    os.link(secret, logs / "server.log")
    os.unlink(secret)  # one link: the round-5 rule alone would disclose it
    root = str(install)
    log = log_facts(root, "logs/server.log", 2000, 5, "root")
    assert "tail" not in log and "its directory's group (gid %d) may write its directory" % NOBODY in log["withheld"]
    (logs / "ok.log").write_text("root says hello\n")
    os.chown(logs / "ok.log", 0, NOBODY)
    os.chmod(logs / "ok.log", 0o640)
    log = log_facts(root, "logs/ok.log", 2000, 1, "root")
    assert "tail" not in log and "not readable by everyone" in log["withheld"]
    os.chmod(logs / "ok.log", 0o644)
    assert log_facts(root, "logs/ok.log", 2000, 1, "root")["tail"] == ["root says hello"]
    os.chmod(logs / "ok.log", 0o640)
    os.chmod(logs, 0o1777)  # sticky, everyone may write: only a world-readable root file is disclosed
    with pytest.raises(AgentError) as e:
        read_beneath(root, "logs/ok.log", "log file")
    assert "not readable by everyone" in str(e.value)
    os.chmod(logs / "ok.log", 0o644)
    assert read_beneath(root, "logs/ok.log", "log file") == b"root says hello\n"
    # a pid file opts out (only an integer is ever returned)
    assert read_beneath(root, "logs/server.log", "pid_file", 64, disclose=False).startswith(b"root")


def test_copy_out_takes_owner_and_mode_from_the_file_it_opened_while_names_are_swapped(tmp_path):
    """The service account exchanges, over and over, the name of root's set-user-ID tool with its own file in a
    directory it owns, while the agent copies the tool: every copy has the owner and mode of the bytes it holds (the
    account's bytes never come out root-owned and set-user-ID), whichever file the open met."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    os.chown(src, NOBODY, NOBODY)
    (src / "tool").write_bytes(b"root's own set-id tool")
    os.chmod(src / "tool", 0o4755)
    (src / "mine").write_bytes(b"the account's bytes")
    os.chown(src / "mine", NOBODY, NOBODY)
    os.chmod(src / "mine", 0o755)
    expected = {b"root's own set-id tool": (0, 0o4755), b"the account's bytes": (NOBODY, 0o755)}
    toggler = Toggler(src, "tool", "mine")
    seen = []
    sfd, dfd = os.open(src, os.O_RDONLY), os.open(dst, os.O_RDONLY)
    try:
        for i in range(1500):
            copy_out(sfd, "tool", dfd, "c%d" % i)
            st = os.lstat(dst / ("c%d" % i))
            data = (dst / ("c%d" % i)).read_bytes()
            seen.append((data, (st.st_uid, stat.S_IMODE(st.st_mode))))
    finally:
        os.close(sfd)
        os.close(dfd)
        assert toggler.stop() > 0
    assert [s for s in seen if expected[s[0]] != s[1]] == []
