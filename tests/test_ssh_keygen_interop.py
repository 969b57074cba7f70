"""Interoperability with stock OpenSSH, both ways: approvals and catalog signatures written by
upgrader verify with ``ssh-keygen -Y verify``; signatures made by ``ssh-keygen -Y sign`` and keys
made by ``ssh-keygen -t ...`` work with upgrader; and upgrader and ssh-keygen agree on who an
allowed_signers file lets sign."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from conftest import plan_to, upgrader
from trust_support import (
    add_signer,
    cli,
    make_ssh_key,
    public_key_fields,
    split_approval,
    ssh_keygen,
)
from upgrader.trust.approval import make_statement
from upgrader.cli.commands.demo import Sandbox
from upgrader.core.errors import InputError
from upgrader.core.exit_codes import ExitCode
from upgrader.trust.keys import load_private_key
from upgrader.core.plan import load_plan
from upgrader.trust.signers import parse_allowed_signers
from upgrader.trust.sshsig import parse_armored, public_key_blob, sign

NS = "upgrader-approval"
ALICE = "alice@vendor"
KINDS = {"ed25519": ("ed25519", None), "ecdsa": ("ecdsa", None), "ecdsa-384": ("ecdsa", 384),
         "ecdsa-521": ("ecdsa", 521), "rsa-3072": ("rsa", 3072)}


@pytest.fixture(scope="module")
def ssh_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Keys made by ``ssh-keygen -t KIND [-b BITS]`` (and one by ``upgrader keys generate``), no passphrase."""
    d = tmp_path_factory.mktemp("interop-keys")
    return {name: make_ssh_key(d / name, kind, bits) for name, (kind, bits) in KINDS.items()}


def planned(box: Sandbox) -> Path:
    rc, plan = plan_to(box, "7.0.4.2")
    assert rc == ExitCode.OK
    return plan


def keygen_verify(signers: Path, identity: str, signature: Path, message: Path,
                  namespace: str = NS) -> tuple[int, str]:
    """``ssh-keygen -Y verify -n NS -f allowed_signers -I ID -s SIG < MESSAGE``: exit status and output."""
    proc = ssh_keygen("-Y", "verify", "-n", namespace, "-f", str(signers), "-I", identity, "-s", str(signature),
                      stdin=message.read_bytes(), check=False)
    return proc.returncode, (proc.stdout + proc.stderr).decode(errors="replace")


def fingerprint_of(private_key: Path) -> str:
    return ssh_keygen("-l", "-f", str(private_key) + ".pub").stdout.decode().split()[1]


def statement_for(plan: Path, approver: str) -> str:
    requester = json.loads(plan.read_text(encoding="utf-8"))["requester"]["user"]
    return make_statement(load_plan(plan).digest, approver, requester, dt.datetime.now(dt.UTC),
                          3600).text()


# ---------------------------------------------------------------- upgrader approve -> ssh-keygen -Y verify


@pytest.mark.parametrize("kind", ["upgrader keys generate", *KINDS])
def test_approval_written_by_upgrader_verifies_with_ssh_keygen(sandbox: Sandbox, ssh_keys: dict[str, Path],
                                                              tmp_path: Path, kind: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """``upgrader approve --key KEY`` writes an approval that ``ssh-keygen -Y verify`` accepts over the documented split."""
    if kind == "upgrader keys generate":
        assert upgrader(sandbox, "keys", "generate", "alice", "--principal", ALICE, "--dir", str(tmp_path)) == 0
        key = tmp_path / "alice"
    else:
        key = ssh_keys[kind]
    signers = sandbox.keys / "allowed_signers"
    add_signer(signers, ALICE, key, f'namespaces="{NS}"')
    plan = planned(sandbox)
    approval = sandbox.approvals / f"{kind}.approval"
    rc, err = cli(sandbox, capsys, "approve", str(plan), "--key", str(key), "-o", str(approval))
    assert rc == ExitCode.OK, err
    statement, signature = split_approval(approval, tmp_path)
    rc, out = keygen_verify(signers, ALICE, signature, statement)
    assert rc == 0, out
    assert f'Good "{NS}" signature for {ALICE}' in out and fingerprint_of(key) in out
    rc, err = cli(sandbox, capsys, "run", str(plan), "--approval", str(approval), "--dry-run")
    assert rc == ExitCode.OK, err


def test_ssh_keygen_rejects_the_approval_for_a_changed_statement_or_namespace(sandbox: Sandbox, tmp_path: Path,
                                                                             capsys: pytest.CaptureFixture[str]
                                                                             ) -> None:
    """The documented split is exactly what is signed: ssh-keygen refuses it with one byte changed or another namespace."""
    plan = planned(sandbox)
    approval = sandbox.approvals / "a.approval"
    assert upgrader(sandbox, "approve", str(plan), "--key", str(sandbox.engineer_key), "-o", str(approval)) == 0
    statement, signature = split_approval(approval, tmp_path)
    signers = sandbox.keys / "allowed_signers"
    assert keygen_verify(signers, "engineer@vendor", signature, statement)[0] == 0
    assert keygen_verify(signers, "engineer@vendor", signature, statement, namespace="upgrader-catalog")[0] != 0
    assert keygen_verify(signers, "someone@vendor", signature, statement)[0] != 0
    data = bytearray(statement.read_bytes())
    data[data.index(b"plan: ") + 6] ^= 0x01
    statement.write_bytes(bytes(data))
    assert keygen_verify(signers, "engineer@vendor", signature, statement)[0] != 0


# ---------------------------------------------------------------- ssh-keygen -Y sign -> upgrader run


@pytest.mark.parametrize("kind", KINDS)
def test_statement_signed_by_ssh_keygen_is_accepted_by_upgrader_run(sandbox: Sandbox, ssh_keys: dict[str, Path],
                                                                   kind: str,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A statement signed with ``ssh-keygen -Y sign -n upgrader-approval`` (STATEMENT.sig beside it) passes every check."""
    add_signer(sandbox.keys / "allowed_signers", ALICE, ssh_keys[kind], f'namespaces="{NS}"')
    plan = planned(sandbox)
    statement = sandbox.approvals / f"{kind}.statement"
    statement.write_text(statement_for(plan, ALICE), encoding="utf-8")
    ssh_keygen("-Y", "sign", "-f", str(ssh_keys[kind]), "-n", NS, str(statement))
    assert statement.with_name(statement.name + ".sig").is_file()
    rc, err = cli(sandbox, capsys, "run", str(plan), "--approval", str(statement), "--dry-run")
    assert rc == ExitCode.OK, err


def test_ssh_keygen_signed_approval_runs_the_upgrade(sandbox: Sandbox, ssh_keys: dict[str, Path],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The real run with an ssh-keygen-signed approval upgrades the host to 7.0.4.2 (exit 0)."""
    add_signer(sandbox.keys / "allowed_signers", ALICE, ssh_keys["ed25519"], f'namespaces="{NS}"')
    plan = planned(sandbox)
    statement = sandbox.approvals / "alice.statement"
    statement.write_text(statement_for(plan, ALICE), encoding="utf-8")
    ssh_keygen("-Y", "sign", "-f", str(ssh_keys["ed25519"]), "-n", NS, str(statement))
    rc, err = cli(sandbox, capsys, "run", str(plan), "--approval", str(statement))
    assert rc == ExitCode.OK, err
    assert sandbox.wait_version("7.0.4.2", timeout=10) == "7.0.4.2"


@pytest.mark.parametrize("how, reason", [
    ("namespace git", "namespace"),
    ("signature of another statement", "does not match"),
    ("no .sig file", "no signature"),
])
def test_ssh_keygen_signature_that_does_not_fit_is_refused(sandbox: Sandbox, ssh_keys: dict[str, Path], how: str,
                                                           reason: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A .sig made in another namespace, over other bytes, or missing, is refused with exit 4."""
    add_signer(sandbox.keys / "allowed_signers", ALICE, ssh_keys["ed25519"], f'namespaces="{NS}"')
    plan = planned(sandbox)
    statement = sandbox.approvals / "alice.statement"
    text = statement_for(plan, ALICE)
    statement.write_text(text, encoding="utf-8")
    if how != "no .sig file":
        namespace = "git" if how == "namespace git" else NS
        ssh_keygen("-Y", "sign", "-f", str(ssh_keys["ed25519"]), "-n", namespace, str(statement))
    if how == "signature of another statement":
        statement.write_text(text.replace("comment: \n", "comment: changed after signing\n"), encoding="utf-8")
        assert statement.read_text(encoding="utf-8") != text
    rc, err = cli(sandbox, capsys, "run", str(plan), "--approval", str(statement))
    assert rc == ExitCode.APPROVAL_REFUSED, err
    assert reason in err
    assert sandbox.answers() == "7.0.4.1"


def test_passphrase_protected_key_without_the_passphrase_is_refused_with_a_hint(
        sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An encrypted ssh-keygen key and no passphrase (and no terminal): exit 2, naming the passphrase, no approval."""
    key = make_ssh_key(tmp_path / "locked", "ed25519", passphrase="correct horse")
    add_signer(sandbox.keys / "allowed_signers", ALICE, key, f'namespaces="{NS}"')
    plan = planned(sandbox)
    approval = sandbox.approvals / "locked.approval"
    rc, err = cli(sandbox, capsys, "approve", str(plan), "--key", str(key), "-o", str(approval))
    assert rc == ExitCode.BAD_INPUT
    assert "passphrase" in err and "UPGRADER_KEY_PASSPHRASE" in err
    assert not approval.exists()



def test_passphrase_protected_key_approves_with_the_passphrase_from_the_environment(
        sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """With UPGRADER_KEY_PASSPHRASE, an encrypted ssh-keygen key approves and ssh-keygen verifies the approval."""
    key = make_ssh_key(tmp_path / "locked", "ed25519", passphrase="correct horse")
    add_signer(sandbox.keys / "allowed_signers", ALICE, key, f'namespaces="{NS}"')
    plan = planned(sandbox)
    approval = sandbox.approvals / "locked.approval"
    monkeypatch.setenv("UPGRADER_KEY_PASSPHRASE", "correct horse")
    rc, err = cli(sandbox, capsys, "approve", str(plan), "--key", str(key), "-o", str(approval))
    assert rc == ExitCode.OK, err
    statement, signature = split_approval(approval, tmp_path)
    assert keygen_verify(sandbox.keys / "allowed_signers", ALICE, signature, statement)[0] == 0


def test_unencrypted_key_loads_while_a_passphrase_is_set_in_the_environment(ssh_keys: dict[str, Path],
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """UPGRADER_KEY_PASSPHRASE is for encrypted keys; an unencrypted ssh-keygen key still loads."""
    monkeypatch.setenv("UPGRADER_KEY_PASSPHRASE", "for another key")
    key = load_private_key(ssh_keys["ed25519"])
    assert public_key_blob(key.public_key()) == parse_armored(sign(key, b"x", NS)).public_key


# ---------------------------------------------------------------- keys and raw signatures


def test_key_made_by_upgrader_is_read_by_ssh_keygen(sandbox: Sandbox, tmp_path: Path) -> None:
    """``ssh-keygen -y`` derives from an upgrader private key exactly the public key upgrader wrote beside it."""
    assert upgrader(sandbox, "keys", "generate", "bob", "--dir", str(tmp_path)) == 0
    derived = ssh_keygen("-y", "-f", str(tmp_path / "bob")).stdout.decode()
    assert " ".join(derived.split()[:2]) == public_key_fields(tmp_path / "bob")


@pytest.mark.parametrize("kind", ["ecdsa", "ecdsa-384", "ecdsa-521", "rsa-3072"])
def test_every_signature_upgrader_makes_passes_ssh_keygen_check(ssh_keys: dict[str, Path], tmp_path: Path,
                                                                kind: str) -> None:
    """Many signatures (so that ECDSA r and s of every length and top bit occur) all pass ssh-keygen's check."""
    key = load_private_key(ssh_keys[kind])
    sig_file, msg_file = tmp_path / "m.sig", tmp_path / "m"
    for i in range(24 if kind.startswith("ecdsa") else 3):
        message = f"message {i}\n".encode()
        msg_file.write_bytes(message)
        for hash_alg in ("sha512", "sha256"):
            sig_file.write_text(sign(key, message, NS, hash_alg=hash_alg), encoding="utf-8")
            proc = ssh_keygen("-Y", "check-novalidate", "-n", NS, "-s", str(sig_file), stdin=message, check=False)
            assert proc.returncode == 0, (i, hash_alg, proc.stderr.decode(errors="replace"))


# ---------------------------------------------------------------- catalogs


def test_catalog_signature_verifies_with_ssh_keygen(sandbox: Sandbox) -> None:
    """The sandbox's catalog.yaml.sig verifies with ssh-keygen against keys/vendor_signers, and is byte for byte
    what ssh-keygen itself writes (Ed25519 signatures are deterministic)."""
    catalog = sandbox.catalog / "catalog.yaml"
    ours = (sandbox.catalog / "catalog.yaml.sig").read_bytes()
    (sandbox.catalog / "catalog.yaml.sig").unlink()
    ssh_keygen("-Y", "sign", "-f", str(sandbox.vendor_key), "-n", "upgrader-catalog", str(catalog))
    assert (sandbox.catalog / "catalog.yaml.sig").read_bytes() == ours
    rc, out = keygen_verify(sandbox.keys / "vendor_signers", "vendor-release",
                            sandbox.catalog / "catalog.yaml.sig", catalog, namespace="upgrader-catalog")
    assert rc == 0, out
    assert fingerprint_of(sandbox.vendor_key) in out


def test_catalog_signed_by_ssh_keygen_is_trusted_by_plan(sandbox: Sandbox,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A catalog signed with ``ssh-keygen -Y sign -n upgrader-catalog`` by the vendor key is accepted by ``upgrader plan``."""
    sig = sandbox.catalog / "catalog.yaml.sig"
    before = sig.read_text()
    sig.unlink()
    ssh_keygen("-Y", "sign", "-f", str(sandbox.vendor_key), "-n", "upgrader-catalog", "-O", "hashalg=sha256",
               str(sandbox.catalog / "catalog.yaml"))
    assert parse_armored(sig.read_text()).hash_alg == "sha256" and sig.read_text() != before
    assert plan_to(sandbox, "7.0.4.2")[0] == ExitCode.OK


# ---------------------------------------------------------------- allowed_signers: same verdicts as ssh-keygen


AGREEMENT_CASES = [
    pytest.param("alice@vendor", "", ALICE, id="plain"),
    pytest.param("alice@vendor", f'namespaces="{NS}"', ALICE, id="namespace listed"),
    pytest.param("alice@vendor", 'namespaces="git"', ALICE, id="other namespace only"),
    pytest.param("alice@vendor", 'namespaces="git,upgrader-*"', ALICE, id="namespace wildcard"),
    pytest.param("alice@vendor", 'NAMESPACES="git"', ALICE, id="option name in capitals"),
    pytest.param("alice@vendor", 'namespaces="*,!upgrader-approval"', ALICE, id="negated namespace"),
    pytest.param("alice@vendor", 'namespaces="git",namespaces="upgrader-approval"', ALICE,
                 id="namespaces given twice"),
    pytest.param("alice@vendor", 'valid-before="20200101"', ALICE, id="expired"),
    pytest.param("alice@vendor", 'valid-before="20990101Z"', ALICE, id="valid until 2099"),
    pytest.param("alice@vendor", 'valid-after="20990101Z"', ALICE, id="not yet valid"),
    pytest.param("alice@vendor", f'valid-after="20200101",namespaces="{NS}"', ALICE, id="valid since 2020"),
    pytest.param("*@vendor", "", ALICE, id="principal wildcard"),
    pytest.param("*@vendor,!alice@vendor", "", ALICE, id="negated principal"),
    pytest.param('"bob@vendor,alice@vendor"', "", ALICE, id="quoted principal list"),
    pytest.param("bob@vendor", "", ALICE, id="other principal"),
    pytest.param("alice@vendor", "", "Alice@vendor", id="principal case differs"),
]


@pytest.mark.parametrize("principals, options, identity", AGREEMENT_CASES)
def test_upgrader_and_ssh_keygen_agree_on_who_may_sign(ssh_keys: dict[str, Path], tmp_path: Path, principals: str,
                                                       options: str, identity: str) -> None:
    """For the same allowed_signers line and signature, upgrader accepts exactly when ssh-keygen -Y verify does."""
    key = ssh_keys["ed25519"]
    signers = tmp_path / "allowed_signers"
    signers.write_text("", encoding="utf-8")
    add_signer(signers, principals, key, options)
    message = tmp_path / "statement"
    message.write_bytes(b"upgrader approval 1\n")
    ssh_keygen("-Y", "sign", "-f", str(key), "-n", NS, str(message))
    keygen_ok = keygen_verify(signers, identity, tmp_path / "statement.sig", message)[0] == 0
    signature = parse_armored((tmp_path / "statement.sig").read_text())
    assert signature.public_key == public_key_blob(load_private_key(key).public_key())
    try:
        parse_allowed_signers(signers.read_text(), str(signers)).check(
            identity, signature.public_key, NS, dt.datetime.now(dt.UTC))
        upgrader_ok = True
    except (ValueError, InputError):  # not allowed, or a file upgrader refuses to read: nobody may sign
        upgrader_ok = False
    assert upgrader_ok == keygen_ok, f"upgrader {'accepts' if upgrader_ok else 'refuses'}, " \
                                     f"ssh-keygen {'accepts' if keygen_ok else 'refuses'}"
