"""Issue 12, attack12r22 H2: the account's keys kept by other tools count too.

While a grant lets an engineer into the operator's account, an approval of a plan signed by a key the account holds is
refused (exit 4). Only files with ``PRIVATE KEY-----`` armour were read as keys: a PuTTY key file (``.ppk``, what
Windows admins keep; its Public-Lines hold the public key in clear even when the private part is encrypted) was
neither counted nor "a key that cannot be told", and the engineer converted it, signed the plan and approved it with
their own key. Now a .ppk counts as the key of its Public-Lines, and ssh.com/SECSH armour (or any file naming a
``PRIVATE KEY`` that upgrader does not read) is a key that cannot be told: the approval is refused while anyone is let
in, naming the file. All through the shipped CLI with real keys; the host untouched.
"""

from __future__ import annotations

import base64
import textwrap
from pathlib import Path

import pytest

from test_account_keys_held import _approve, _granted, _in_chinese, _keygen, _listed_requester, _plan, _refused, \
    _run_refused
from test_trust_roots_13 import _untouched
from trust_support import pristine
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.exit_codes import ExitCode


def _ppk(key: Path, where: Path) -> Path:
    """A PuTTY-User-Key-File-3 of ``key`` as puttygen writes it with a passphrase: the public blob in clear, the
    private part (here random bytes) encrypted."""
    kind, blob = key.with_name(key.name + ".pub").read_text(encoding="utf-8").split()[:2]
    lines = textwrap.wrap(blob, 64)
    where.parent.mkdir(parents=True, exist_ok=True)
    where.write_text("\n".join([
        f"PuTTY-User-Key-File-3: {kind}", "Encryption: aes256-cbc", "Comment: kept", f"Public-Lines: {len(lines)}",
        *lines, "Key-Derivation: Argon2id", "Argon2-Memory: 8192", "Argon2-Passes: 21", "Argon2-Parallelism: 1",
        "Argon2-Salt: 00112233445566778899aabbccddeeff", "Private-Lines: 1",
        base64.b64encode(bytes(range(48))).decode(), "Private-MAC: " + "ab" * 32]) + "\r\n", encoding="ascii")
    where.chmod(0o600)
    return where


@pytest.mark.parametrize("held", ["requester", "another"])
def test_a_putty_key_of_the_account_refuses_the_approval_while_the_engineer_is_let_in(
        sandbox: Sandbox, tmp_path: Path, held: str) -> None:
    """The account keeps the listed requester key only as ~/.ssh/id_req.ppk (encrypted); the engineer, let in, signs
    the plan with a converted copy and approves it with their own key: refused at approve and at run (exit 4) naming
    the grant, nothing written, the host untouched. Control: a .ppk of another key is read as that key (not as one
    that cannot be told): the approval goes through."""
    before = pristine(sandbox)
    env, home, grant = _granted(sandbox, tmp_path)
    key = _keygen(tmp_path / "outside" / "id_req", "-t", "ed25519")
    _listed_requester(sandbox, key)
    _ppk(key if held == "requester" else _keygen(tmp_path / "other" / "id_other", "-t", "ed25519"),
         home / ".ssh" / "id_req.ppk")
    plan = _plan(sandbox, tmp_path, key, env)
    done, approval = _approve(sandbox, plan, env)
    if held == "another":
        assert done.returncode == ExitCode.OK and approval.exists(), done.stdout + done.stderr
        return
    _refused(done, f"access grant {grant}", "lets an engineer log in to this account")
    assert not approval.exists()
    _run_refused(sandbox, plan, env, f"access grant {grant}")
    _untouched(before, sandbox)


@pytest.mark.parametrize("kind", ["secsh", "ppk-damaged"])
def test_a_key_file_of_another_tool_that_cannot_be_read_refuses_the_approval_while_anyone_is_let_in(
        sandbox: Sandbox, tmp_path: Path, kind: str) -> None:
    """An ssh.com/SECSH key (``---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----``) or a .ppk whose Public-Lines cannot be
    read may be the key that signed the plan: refused (exit 4) naming the file, in English and Chinese; with its .pub
    beside it (the key told: another one), the approval goes through."""
    before = pristine(sandbox)
    env, home, grant = _granted(sandbox, tmp_path)
    key = _keygen(tmp_path / "outside" / "id_req", "-t", "ed25519")
    _listed_requester(sandbox, key)
    plan = _plan(sandbox, tmp_path, key, env)
    kept = home / ".ssh" / "id_ssh2"
    kept.parent.mkdir(parents=True, exist_ok=True)
    if kind == "secsh":
        kept.write_text("---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----\nComment: \"kept\"\n"
                        + "\n".join(textwrap.wrap(base64.b64encode(bytes(range(200))).decode(), 70))
                        + "\n---- END SSH2 ENCRYPTED PRIVATE KEY ----\n", encoding="ascii")
        why = "ssh.com/SECSH"
    else:
        _ppk(key, kept)
        text = kept.read_text(encoding="ascii")
        assert "Public-Lines: 2\n" in text
        kept.write_text(text.replace("Public-Lines: 2\n", "Public-Lines: 9\n"), encoding="ascii")
        why = "a PuTTY key file whose Public-Lines cannot be read"
    done, approval = _approve(sandbox, plan, env)
    _refused(done, f"{kept} looks like a private key of this account, but upgrader cannot tell which key it is",
             why, f"access grant {grant}")
    _in_chinese(done, f"{kept} 看起来是本账户的私钥", f"访问授权 {grant}")
    assert not approval.exists()
    _run_refused(sandbox, plan, env, f"{kept} looks like a private key of this account")
    _untouched(before, sandbox)
    other = _keygen(tmp_path / "other" / "id_other", "-t", "ed25519")
    kept.with_name("id_ssh2.pub").write_text(other.with_name("id_other.pub").read_text(encoding="utf-8"))
    done, approval = _approve(sandbox, plan, env)
    assert done.returncode == ExitCode.OK and approval.exists(), done.stdout + done.stderr
