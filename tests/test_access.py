"""Time-limited access for an engineer (`upgrader access`), proven against a real OpenSSH server.

The module's own sshd reads two authorized_keys files: its operator's (the fleet's client key) and
``<root>/home/.ssh/authorized_keys``, the file upgrader edits for an account whose HOME is
``<root>/home`` (the sshd sets that HOME for its sessions too, so a grant made over SSH lands there).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import os
import re
import secrets
import shutil
import stat
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import approve, kill_processes_under, plan_to, upgrader
from fleet import build_fleet
from sshd import SSHServer, free_port, start_sshd
from upgrader.customer.access import (PublicKey, add_grant, check_from, check_reason, edit_on_host, list_grants,
                             parse_public_key, remove_grants)
from upgrader.cli import main
from upgrader.core.clock import FixedClock, SystemClock
from upgrader.core.errors import InputError
from upgrader.fleet.transport import AgentClient, close_all
from upgrader.fleet.transport.bundle import agent_bundle
from upgrader.fleet.transport.local import LocalTransport


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    """A real sshd that also reads <root>/home/.ssh/authorized_keys (a Match block overrides the global file)."""
    root = tmp_path_factory.mktemp("access-sshd")
    srv = start_sshd(root, extra_config=f"Match all\n    AuthorizedKeysFile {root}/authorized_keys "
                                        f"{root}/home/.ssh/authorized_keys\n")
    try:
        yield srv
    finally:
        close_all()
        srv.stop()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Engineer key pairs made by ssh-keygen: 'engineer' and 'colleague' (private key paths; .pub beside)."""
    d = tmp_path_factory.mktemp("engineer-keys")
    out = {}
    for name in ("engineer", "colleague"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@vendor", "-f", str(d / name)],
                       check=True)
        out[name] = d / name
    return out


@pytest.fixture
def ak(server: SSHServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The authorized_keys sshd reads for root, empty at the start; HOME points at its home for `access` here."""
    home = server.root / "home"
    monkeypatch.setenv("HOME", str(home))
    shutil.rmtree(home / ".ssh", ignore_errors=True)
    yield home / ".ssh" / "authorized_keys"
    shutil.rmtree(home / ".ssh", ignore_errors=True)


def access(tmp_path: Path, *argv: str) -> int:
    """The real CLI, in-process, with its audit log under tmp_path/state."""
    return main(["--home", str(tmp_path / "state"), "access", *argv])


def access_json(tmp_path: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    capsys.readouterr()
    rc = access(tmp_path, *argv, "--json")
    out = capsys.readouterr().out
    assert rc == 0, out
    return dict(json.loads(out))


def ssh(server: SSHServer, key: Path, *command: str, bind: str | None = None,
        extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """A real OpenSSH client logging in as root with only ``key`` (no agent, no config, host key checked)."""
    argv = ["ssh", "-F", "/dev/null", "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={server.known_hosts}",
            "-o", "ConnectTimeout=10", "-p", str(server.port), *(["-b", bind] if bind else []), *extra,
            "root@127.0.0.1", *(command or ("echo", "ok"))]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def logs_in(server: SSHServer, key: Path, bind: str | None = None) -> bool:
    """True if the key logs in and runs a command; False only if sshd refused the key ("Permission denied"). A server
    that is down, a connection refused or cut, or a host key that does not match is the test's own failure, never
    counted as a refusal."""
    res = ssh(server, key, bind=bind)
    assert res.returncode in (0, 255), res.stderr
    if res.returncode == 0:
        assert res.stdout == "ok\n", res.stdout
        return True
    assert "Permission denied" in res.stderr, f"ssh failed, but not because sshd refused the key: {res.stderr}"
    return False


def test_cannot_log_in_means_refused_by_sshd_never_a_server_that_is_down(server: SSHServer, keys: dict[str, Path],
                                                                         ak: Path) -> None:
    """The helper behind every "cannot log in" check: a key sshd refuses is False ("Permission denied"); a port where
    no server listens is the test's own failure (AssertionError naming "Connection refused"), never a refusal."""
    assert not ak.exists()  # no grant: sshd refuses the key
    assert logs_in(server, keys["engineer"]) is False
    down = dataclasses.replace(server, port=free_port(), proc=None)
    with pytest.raises(AssertionError, match="not because sshd refused the key.*Connection refused"):
        logs_in(down, keys["engineer"])


def pub_line(key: Path) -> bytes:
    return key.with_name(key.name + ".pub").read_bytes().strip()


def events(tmp_path: Path) -> list[dict[str, Any]]:
    log = tmp_path / "state" / "audit" / "audit.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()]


def write_with_clock(key: Path, at: dt.datetime, hours: float, **extra: Any) -> None:
    """A grant written by the library itself at time ``at`` (a fixed clock), through the agent on this machine."""
    public = parse_public_key(pub_line(key), str(key))
    expires = (FixedClock(at).now() + dt.timedelta(hours=hours)).replace(second=0, microsecond=0)

    def edit(current: Any) -> tuple[bytes, None]:
        change = add_grant(current.data, public, expires=expires, from_=extra.get("from_"), by="test@ci",
                           reason=extra.get("reason"), new_id=lambda: "feedc0de0001", source=current.path)
        return change.data, None

    agent = AgentClient(LocalTransport())
    try:
        edit_on_host(agent, None, edit)
    finally:
        agent.close()


# ---------------------------------------------------------------- against sshd


def test_granted_key_runs_commands_and_sftp_but_gets_no_pty_or_forwarding(
        tmp_path: Path, server: SSHServer, keys: dict[str, Path], ak: Path) -> None:
    """A granted key logs in with a real ssh client and runs a command and SFTP; restrict denies pty and forwarding."""
    assert not logs_in(server, keys["engineer"])
    assert access(tmp_path, "grant", "--key", f"{keys['engineer']}.pub", "--hours", "2", "--reason", "CHG-1") == 0
    assert logs_in(server, keys["engineer"])
    sftp = subprocess.run(["sftp", "-F", "/dev/null", "-i", str(keys["engineer"]), "-o", "IdentitiesOnly=yes",
                           "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={server.known_hosts}",
                           "-P", str(server.port), "-b", "-", "root@127.0.0.1"],
                          input=f"ls {ak.parent}\n", capture_output=True, text=True, timeout=60)
    assert sftp.returncode == 0 and "authorized_keys" in sftp.stdout, sftp.stderr
    pty = ssh(server, keys["engineer"], "tty", extra=("-tt",))
    assert pty.returncode != 0 and "PTY allocation request failed" in pty.stderr
    forward = ssh(server, keys["engineer"], extra=("-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:9"))
    assert forward.returncode == 255 and "forwarding failed" in forward.stderr


def test_engineer_upgrades_a_host_through_a_grant_made_over_ssh(
        tmp_path: Path, server: SSHServer, keys: dict[str, Path], ak: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Granted over SSH on an inventory, the engineer's key alone carries a plan, approval and run; revoking ends it."""
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    fleet = build_fleet(tmp_path / "fleet", server, 1)
    try:
        inventory = str(fleet.box.inventory)
        granted = access_json(tmp_path, capsys, "grant", "--inventory", inventory, "--key", f"{keys['engineer']}.pub",
                              "--hours", "1", "--reason", "upgrade to 7.0.4.2")
        (host,) = granted["hosts"]
        assert host["host"] == "app-01" and host["outcome"] == "granted" and host["file"] == str(ak)
        fleet.write_inventory(key=str(keys["engineer"]))  # from here on only the engineer's key reaches the host
        close_all()
        # the test's host account and the controller's account are one here (one machine, one HOME): the grant into
        # the host lets the engineer into the account that holds HOME/keys, and a plan signed by a key that account
        # holds cannot be approved while anyone is let in (attack12r19 H1). The requester's key is kept elsewhere,
        # as the requester's own would be on a real controller.
        requester = tmp_path / "requester-own"
        fleet.box.requester_key.rename(requester)
        fleet.box.requester_key.with_suffix(".pub").rename(requester.with_suffix(".pub"))
        rc, plan = plan_to(fleet.box, "7.0.4.2", "--key", str(requester))
        assert rc == 0
        assert upgrader(fleet.box, "run", str(plan), "--approval", str(approve(fleet.box, plan))) == 0
        assert fleet["app-01"].answers() == "7.0.4.2"
        listed = access_json(tmp_path, capsys, "list", "--inventory", inventory)
        assert [g["id"] for g in listed["hosts"][0]["grants"]] == [host["grant"]["id"]]
        close_all()
        fleet.write_inventory()  # the customer's own key revokes
        assert access(tmp_path, "revoke", "--all", "--inventory", inventory) == 0
        assert ak.read_bytes() == b"" and not logs_in(server, keys["engineer"])
        close_all()
        fleet.write_inventory(key=str(keys["engineer"]))
        assert plan_to(fleet.box, "7.0.4.3", "--key", str(requester))[0] == 5  # came in through the grant, now gone
    finally:
        close_all()
        fleet.stop_all()
        kill_processes_under(tmp_path / "fleet")


def test_expired_grant_is_refused_by_sshd_and_granting_again_extends_it(tmp_path: Path, server: SSHServer,
                                                                        keys: dict[str, Path], ak: Path) -> None:
    """sshd itself refuses a grant whose expiry-time has passed; a new grant extends that line, never duplicates it."""
    now = SystemClock().now()
    write_with_clock(keys["engineer"], now - dt.timedelta(hours=3), 1)
    (line,) = ak.read_bytes().splitlines()
    expiry = re.search(rb'expiry-time="(\d{12})Z"', line)
    assert expiry and dt.datetime.strptime(expiry.group(1).decode(), "%Y%m%d%H%M").replace(
        tzinfo=dt.timezone.utc) < now - dt.timedelta(hours=1)
    assert not logs_in(server, keys["engineer"])
    assert access(tmp_path, "grant", "--key", f"{keys['engineer']}.pub", "--hours", "1") == 0
    (line,) = ak.read_bytes().splitlines()
    assert b"upgrader-grant:feedc0de0001 " in line
    assert logs_in(server, keys["engineer"])
    assert [e["event"] for e in events(tmp_path)] == ["access_extended"]


def test_from_patterns_are_enforced_by_sshd_on_the_client_address(tmp_path: Path, server: SSHServer,
                                                                  keys: dict[str, Path], ak: Path) -> None:
    """from="127.0.0.2" refuses a client on 127.0.0.1 and admits one bound to 127.0.0.2; from="127.0.0.1" admits it."""
    assert access(tmp_path, "grant", "--key", f"{keys['engineer']}.pub", "--from", "127.0.0.2") == 0
    assert not logs_in(server, keys["engineer"])
    assert logs_in(server, keys["engineer"], bind="127.0.0.2")
    assert access(tmp_path, "grant", "--key", f"{keys['engineer']}.pub", "--from", "127.0.0.1") == 0
    assert b'from="127.0.0.1"' in ak.read_bytes() and len(ak.read_bytes().splitlines()) == 1
    assert logs_in(server, keys["engineer"])
    assert not logs_in(server, keys["engineer"], bind="127.0.0.2")


def test_revoke_removes_exactly_the_grant_line_and_every_other_byte_stays(tmp_path: Path, server: SSHServer,
                                                                          keys: dict[str, Path], ak: Path) -> None:
    """Comments, a blank line, a CRLF line, an options line and a missing final newline survive grant and revoke."""
    original = (b"# keys of the operations team\n\n"
                + pub_line(server.client_key) + b"\r\n"
                + b'from="10.0.0.0/8",command="echo a, b" ' + pub_line(keys["colleague"]) + b"\n"
                + b"   # indented comment, trailing spaces   \n"
                + b"ssh-ed25519 AAAAnotakey last line without newline")
    ak.parent.mkdir(mode=0o700)
    ak.write_bytes(original)
    assert access(tmp_path, "grant", "--key", f"{keys['engineer']}.pub", "--reason", "CHG-7 patch") == 0
    first = ak.read_bytes()
    assert first.startswith(original + b"\n") and first.count(b"\n") == original.count(b"\n") + 1
    assert logs_in(server, keys["engineer"])
    (grant,) = list_grants(first)
    assert access(tmp_path, "revoke", grant.id) == 0
    assert ak.read_bytes() == original
    assert not logs_in(server, keys["engineer"])
    assert [e["event"] for e in events(tmp_path)] == ["access_granted", "access_revoked"]


def test_revoke_by_id_leaves_the_other_grants(tmp_path: Path, server: SSHServer, keys: dict[str, Path],
                                              ak: Path) -> None:
    """Of two grants, revoking one by id removes only its line; the other key still logs in."""
    ak.parent.mkdir(mode=0o700)
    ak.write_bytes(b"# ops\n")
    for name in ("engineer", "colleague"):
        assert access(tmp_path, "grant", "--key", f"{keys[name]}.pub") == 0
    first, second = list_grants(ak.read_bytes())
    assert access(tmp_path, "revoke", first.id) == 0
    assert [g.id for g in list_grants(ak.read_bytes())] == [second.id]
    assert ak.read_bytes().startswith(b"# ops\n")
    assert not logs_in(server, keys["engineer"]) and logs_in(server, keys["colleague"])


def test_grant_and_revoke_keep_owner_group_and_mode(tmp_path: Path, keys: dict[str, Path], ak: Path) -> None:
    """A file owned by uid 65534 with mode 0640 keeps both through a grant and a revoke (the file is replaced whole)."""
    ak.parent.mkdir(mode=0o700)
    ak.write_bytes(b"# nobody's file\n")
    os.chown(ak, 65534, 65534)
    os.chmod(ak, 0o640)
    assert access(tmp_path, "grant", "--key", f"{keys['engineer']}.pub") == 0
    for _ in ("after grant", "after revoke"):
        st = ak.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (65534, 65534, 0o640)
        assert access(tmp_path, "revoke", "--all") == 0
    assert ak.read_bytes() == b"# nobody's file\n"
    assert sorted(p.name for p in ak.parent.iterdir()) == [".authorized_keys.lock", "authorized_keys"]


def test_missing_ssh_dir_and_file_are_created_0700_and_0600(tmp_path: Path, keys: dict[str, Path], ak: Path) -> None:
    """Without ~/.ssh, a grant creates it 0700 and authorized_keys 0600, owned by the account."""
    assert access(tmp_path, "grant", "--key", f"{keys['engineer']}.pub") == 0
    assert stat.S_IMODE(ak.parent.stat().st_mode) == 0o700 and stat.S_IMODE(ak.stat().st_mode) == 0o600
    assert (ak.stat().st_uid, ak.parent.stat().st_uid) == (os.geteuid(), os.geteuid())


def test_concurrent_grants_all_land_in_the_file(tmp_path: Path, ak: Path) -> None:
    """Eight grants written at once by eight agents all end up in the file (lock and compare-and-swap lose no edit)."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from upgrader.trust.sshsig import public_key_line

    ak.parent.mkdir(mode=0o700)
    ak.write_bytes(b"# ops\n")
    public = [parse_public_key(public_key_line(ed25519.Ed25519PrivateKey.generate().public_key()).encode(), "k")
              for _ in range(8)]

    def one(key: PublicKey) -> None:
        def edit(current: Any) -> tuple[bytes, None]:
            return _grant(current.data, key, new_id=lambda: secrets.token_hex(6)).data, None

        agent = AgentClient(LocalTransport())
        try:
            edit_on_host(agent, None, edit, attempts=50)
        finally:
            agent.close()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, public))
    grants = list_grants(ak.read_bytes())
    assert sorted(g.fingerprint for g in grants) == sorted(k.fingerprint for k in public)
    assert len({g.id for g in grants}) == 8 and ak.read_bytes().startswith(b"# ops\n")


def test_list_marks_expired_grants_and_revoke_expired_removes_only_those(
        tmp_path: Path, keys: dict[str, Path], ak: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`list --json` gives id, fingerprint, granter, reason, from and time left; --expired removes the expired one."""
    write_with_clock(keys["colleague"], SystemClock().now() - dt.timedelta(hours=5), 1, reason="old", from_="10.9.*")
    assert access(tmp_path, "grant", "--key", f"{keys['engineer']}.pub", "--hours", "3", "--from", "192.0.2.0/24",
                  "--reason", "CHG-9 工单") == 0
    (host,) = access_json(tmp_path, capsys, "list")["hosts"]
    old, new = host["grants"]
    assert (old["expired"], old["seconds_left"], old["reason"], old["from"]) == (True, 0, "old", "10.9.*")
    assert new["expired"] is False and 3 * 3600 - 120 < new["seconds_left"] <= 3 * 3600
    assert (new["reason"], new["from"], new["granted_by"].split("@")[0]) == ("CHG-9 工单", "192.0.2.0/24", "root")
    assert new["fingerprint"] == parse_public_key(pub_line(keys["engineer"]), "k").fingerprint
    assert access(tmp_path, "revoke", "--expired") == 0
    assert [g.id for g in list_grants(ak.read_bytes())] == [new["id"]]
    granted, revoked = [e for e in events(tmp_path)]
    assert granted["event"] == "access_granted" and granted["data"]["hours"] == 3.0
    assert (granted["data"]["from"], granted["data"]["reason"], granted["data"]["grant"]) == (
        "192.0.2.0/24", "CHG-9 工单", new["id"])
    assert revoked["event"] == "access_revoked" and revoked["data"]["grant"] == old["id"]
    assert revoked["data"]["fingerprint"] == old["fingerprint"] and revoked["data"]["expired"] is True


# ---------------------------------------------------------------- bad input: exit 2, file untouched


def _bad_key_files(d: Path, keys: dict[str, Path]) -> dict[str, Path]:
    blob = base64.b64decode(pub_line(keys["engineer"]).split()[1])
    files: dict[str, Path | bytes] = {
        "private": keys["engineer"],
        "not base64": b"ssh-ed25519 AAAA!!!!notbase64 x\n",
        "truncated": b"ssh-ed25519 " + base64.b64encode(blob[:-5]) + b" x\n",
        "two keys": pub_line(keys["engineer"]) + b"\n" + pub_line(keys["colleague"]) + b"\n",
        "options": b"restrict " + pub_line(keys["engineer"]) + b"\n",
        "empty": b""}
    out = {}
    for name, content in files.items():
        if isinstance(content, Path):
            out[name] = content
        else:
            out[name] = d / name.replace(" ", "_")
            out[name].write_bytes(content)
    return out


BAD = [
    ("private", [], "PRIVATE key"),
    ("not base64", [], "not valid base64"),
    ("truncated", [], "truncated or damaged"),
    ("two keys", [], "found 2 lines"),
    ("options", [], "not an OpenSSH public key line"),
    ("empty", [], "found none"),
    (None, ["--hours", "25"], "beyond the policy's maximum of 24 hours"),
    (None, ["--hours", "0"], "above 0"),
    (None, ["--hours", "-1"], "above 0"),
    (None, ["--hours", "nan"], "above 0"),
    (None, ["--user", "no-such-user-here"], "no user 'no-such-user-here'"),
    (None, ["--user", "nobody"], "no home directory (/nonexistent)"),
    (None, ["--user", "root;id"], "not a user name"),
    (None, ["--from", '127.0.0.1",command="sh'], "not an OpenSSH address pattern"),
    (None, ["--from", "127.0.0.1 10.0.0.1"], "not an OpenSSH address pattern"),
    (None, ["--from", "127.0.0.1\nssh-ed25519"], "not an OpenSSH address pattern"),
    (None, ["--from", ""], "not an OpenSSH address pattern"),
    (None, ["--from", "10.1.2.3/24"], "not a CIDR block"),
    (None, ["--from", "!10.0.0.1"], "only exclusions"),
    (None, ["--reason", "line one\nssh-ed25519 AAAA"], "one line"),
    (None, ["--reason", 'say "hi"'], "without quotes"),
    ("permanent", [], "already authorized permanently"),
]


@pytest.mark.parametrize(("key", "extra", "message"), BAD, ids=[f"{k or ''}{' '.join(e)}".strip() for k, e, _ in BAD])
def test_bad_grant_input_exits_2_with_a_message_and_leaves_the_file_alone(
        tmp_path: Path, keys: dict[str, Path], ak: Path, capsys: pytest.CaptureFixture[str],
        key: str | None, extra: list[str], message: str) -> None:
    """Each bad input is refused with exit 2, a message naming it, authorized_keys unchanged (bytes, inode, mtime)."""
    ak.parent.mkdir(mode=0o700)
    ak.write_bytes(b"# ops\r\n" + pub_line(keys["engineer"]) + b" permanent\n" if key == "permanent" else b"# ops")
    key_file = _bad_key_files(tmp_path, keys).get(key or "", Path(f"{keys['engineer']}.pub"))
    before = (ak.read_bytes(), ak.stat().st_ino, ak.stat().st_mtime_ns, sorted(os.listdir(ak.parent)))
    capsys.readouterr()
    assert access(tmp_path, "grant", "--key", str(key_file), *extra) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    if key:
        assert str(ak if key == "permanent" else key_file) in err
    assert (ak.read_bytes(), ak.stat().st_ino, ak.stat().st_mtime_ns, sorted(os.listdir(ak.parent))) == before
    assert not (tmp_path / "state" / "audit" / "audit.jsonl").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["nosuchid"], "no grant nosuchid"),
    ([], "exactly one of ID, --all or --expired"),
    (["--all", "--expired"], "exactly one of ID, --all or --expired"),
    (["bad/id"], "not a grant id"),
])
def test_bad_revoke_input_exits_2_and_removes_nothing(tmp_path: Path, keys: dict[str, Path], ak: Path,
                                                      capsys: pytest.CaptureFixture[str], argv: list[str],
                                                      message: str) -> None:
    """An unknown id or a missing or doubled selector is refused with exit 2 and the grants stay."""
    assert access(tmp_path, "grant", "--key", f"{keys['engineer']}.pub") == 0
    before = (ak.read_bytes(), ak.stat().st_ino)
    capsys.readouterr()
    assert access(tmp_path, "revoke", *argv) == 2
    assert message in capsys.readouterr().err
    assert (ak.read_bytes(), ak.stat().st_ino) == before


def test_only_root_may_change_another_accounts_authorized_keys(tmp_path: Path) -> None:
    """The host-side agent, run as uid 65534, refuses to read or write root's authorized_keys."""
    with tempfile.TemporaryDirectory(prefix="agent-") as shipped:  # the zip as a host gets it, readable by that account
        os.chmod(shipped, 0o755)
        zipapp = Path(shipped) / agent_bundle().name
        zipapp.write_bytes(agent_bundle().data)
        zipapp.chmod(0o644)
        replies = [subprocess.run(["/usr/bin/python3", "-I", str(zipapp)],
                                  input=json.dumps({"op": op, "user": "root", **extra}), capture_output=True,
                                  text=True, timeout=60, user=65534, group=65534,
                                  env={"HOME": "/nonexistent", "PATH": "/usr/bin:/bin"}, cwd="/")
                   for op, extra in (("access_read", {}), ("access_write", {"data": "", "expect": None}))]
    for res in replies:
        reply = json.loads(res.stdout)
        assert reply["ok"] is False and reply["kind"] == "bad_input"
        assert "only root (or root) may change the authorized_keys of root" in reply["error"]


# ---------------------------------------------------------------- the pure core, table-driven

ED = parse_public_key(b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMC83V6VHEpeDNHrj36bP9P31p1jm3wtAV8GyxLL6779 e", "e")
NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.timezone.utc)


def _grant(data: bytes, key: PublicKey = ED, **kw: Any) -> Any:
    args: dict[str, Any] = {"expires": NOW + dt.timedelta(hours=4), "from_": None, "by": "op@db-01",
                            "reason": None, "new_id": lambda: "abc123abc123", "source": "ak"}
    return add_grant(data, key, **{**args, **kw})


@pytest.mark.parametrize(("existing", "refused"), [
    (f"{ED.kind} {ED.b64}".encode(), True),
    (f'command="echo a b",no-pty {ED.kind} {ED.b64} ops'.encode(), True),
    (f'from="a,b" {ED.kind} {ED.b64}\r'.encode(), True),
    (f"  {ED.kind} {ED.b64} indented".encode(), True),
    (f"# {ED.kind} {ED.b64} commented out".encode(), False),
    (f"cert-authority {ED.kind} {ED.b64} a CA".encode(), False),
    (f"{ED.kind} AAAAC3NzaC1lZDI1NTE5AAAAIGQ40yH0o2uyuzfp5jXkPz0pl4VSpCJbtXHXWRs1E3GW other".encode(), False),
])
def test_a_line_that_already_lets_the_key_in_refuses_the_grant(existing: bytes, refused: bool) -> None:
    """Only a live key line for the same key (any options, CRLF, indent) counts as permanent access."""
    data = b"# x\n" + existing + b"\n"
    if refused:
        with pytest.raises(InputError, match="line 2: .*already authorized permanently"):
            _grant(data)
    else:
        assert _grant(data).data.startswith(data)


def test_extending_replaces_expiry_and_keeps_id_granter_and_unrelated_options() -> None:
    """An extension rewrites expiry-time and the comment's until; id, granter, from and hand-added options stay."""
    first = _grant(b"", from_="10.0.0.*", reason="CHG-1").data
    edited = first.replace(b"restrict,", b'restrict,environment="A=1",')
    later = _grant(edited, expires=NOW + dt.timedelta(hours=8), by="someone@else", new_id=lambda: "zzz")
    assert later.extended and later.previous_expires == NOW + dt.timedelta(hours=4)
    assert later.data == (f'restrict,expiry-time="202611262000Z",from="10.0.0.*",environment="A=1" {ED.kind} '
                          f"{ED.b64} upgrader-grant:abc123abc123 by op@db-01 for CHG-1 until 2026-11-26T20:00Z\n"
                          ).encode()


@pytest.mark.parametrize("original", [b"", b"a\n", b"a", b"a\r\nb", b"\n\n", b"# only comment\r\n", b"x\n\ny"])
def test_grant_then_revoke_gives_back_the_same_bytes(original: bytes) -> None:
    """Whatever the file's line endings and final newline, grant + revoke returns it byte for byte."""
    granted = _grant(original).data
    assert granted.startswith(original) and len(list_grants(granted)) == 1
    restored, removed = remove_grants(granted, lambda g: True)
    assert restored == original and [g.id for g in removed] == ["abc123abc123"]


@pytest.mark.parametrize(("patterns", "ok"), [
    ("10.1.2.*", True), ("192.0.2.7,198.51.100.0/24", True), ("*.example.com,!bad.example.com", True),
    ("2001:db8::/32", True), ("10.0.0.?", True),
    ('10.0.0.1"', False), ("10.0.0.1 x", False), ("a,,b", False), ("10.0.0.1/33", False), ("!a,!b", False),
    ("10.0.0.1\n", False), ("x=y", False), ("", False),
])
def test_from_accepts_openssh_patterns_only(patterns: str, ok: bool) -> None:
    """--from takes OpenSSH address patterns and CIDR blocks; anything that could break out of from="..." is refused."""
    if ok:
        assert check_from(patterns) == patterns
    else:
        with pytest.raises(InputError, match="--from"):
            check_from(patterns)


@pytest.mark.parametrize(("reason", "ok"), [
    ("CHG-1234 upgrade to 7.0.4.9", True), ("升级 TongWeb", True), ("a`b", False), ("a\\b", False),
    ("a'b", False), ("a\tb", False), ("a\u202eb", False), ("a\u2028b", False), ("x" * 201, False),
])
def test_reason_is_one_line_of_plain_text(reason: str, ok: bool) -> None:
    """--reason refuses quotes, backslashes, control and bidi characters, line separators and very long text."""
    if ok:
        assert check_reason(reason) == reason
    else:
        with pytest.raises(InputError, match="--reason"):
            check_reason(reason)
