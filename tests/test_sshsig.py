"""Unit tests of the SSHSIG framing (``upgrader.trust.sshsig``) and the allowed_signers reader
(``upgrader.trust.signers``), with keys made by the stock ``ssh-keygen``. The bad signatures are built
here by hand from PROTOCOL.sshsig, not with the module under test."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import string
import struct
from pathlib import Path
from typing import Any

import pytest

from trust_support import make_ssh_key, public_key_fields, ssh_keygen
from upgrader.core.errors import InputError
from upgrader.trust.keys import load_private_key
from upgrader.trust.signers import parse_allowed_signers
from upgrader.trust.sshsig import (
    BEGIN,
    END,
    Signature,
    SignatureError,
    fingerprint,
    parse_armored,
    public_key_blob,
    public_key_line,
    sign,
    verify,
)

NS = "upgrader-approval"
MESSAGE = b"upgrader approval 1\nplan: " + b"ab" * 32 + b"\n"
KINDS = {"ed25519": ("ed25519", None), "ecdsa-256": ("ecdsa", 256), "ecdsa-384": ("ecdsa", 384),
         "ecdsa-521": ("ecdsa", 521), "rsa-3072": ("rsa", 3072)}
UTC = dt.UTC


@pytest.fixture(scope="module")
def key_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One private key per kind, made by ``ssh-keygen -t KIND [-b BITS]``."""
    d = tmp_path_factory.mktemp("sshsig-keys")
    return {name: make_ssh_key(d / name, kind, bits) for name, (kind, bits) in KINDS.items()}


@pytest.fixture(scope="module")
def keys(key_files: dict[str, Path]) -> dict[str, Any]:
    return {name: load_private_key(path) for name, path in key_files.items()}


# ---------------------------------------------------------------- framing built by hand (PROTOCOL.sshsig)


def _string(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def _raw(armoured: str) -> bytes:
    return base64.b64decode("".join(armoured.strip().splitlines()[1:-1]))


def _armour(raw: bytes) -> str:
    b64 = base64.b64encode(raw).decode()
    return "\n".join([BEGIN, *(b64[i:i + 70] for i in range(0, len(b64), 70)), END]) + "\n"


def _fields(raw: bytes) -> tuple[bytes, int, list[bytes]]:
    """magic, version and the five strings (public key, namespace, reserved, hash, signature) of a blob."""
    magic, version, pos, out = raw[:6], struct.unpack(">I", raw[6:10])[0], 10, []
    for _ in range(5):
        n = struct.unpack(">I", raw[pos:pos + 4])[0]
        out.append(raw[pos + 4:pos + 4 + n])
        pos += 4 + n
    assert pos == len(raw)
    return magic, version, out


def _join(magic: bytes, version: int, fields: list[bytes]) -> bytes:
    return magic + struct.pack(">I", version) + b"".join(_string(f) for f in fields)


def _signed_data(namespace: str, hash_alg: str, message: bytes) -> bytes:
    return (b"SSHSIG" + _string(namespace.encode()) + _string(b"") + _string(hash_alg.encode())
            + _string(hashlib.new(hash_alg, message).digest()))


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("kind", KINDS)
def test_signature_round_trips_for_each_ssh_keygen_key_type(keys: dict[str, Any], key_files: dict[str, Path],
                                                            kind: str) -> None:
    """A signature made with an ssh-keygen key parses back to that key and namespace and verifies."""
    sig = parse_armored(sign(keys[kind], MESSAGE, NS))
    verify(sig, MESSAGE, NS)
    assert sig.namespace == NS and sig.hash_alg == "sha512"
    assert sig.key_type == public_key_fields(key_files[kind]).split()[0]
    listed = ssh_keygen("-l", "-f", str(key_files[kind]) + ".pub").stdout.decode().split()[1]
    assert sig.fingerprint == listed


@pytest.mark.parametrize("kind", KINDS)
def test_signature_made_by_ssh_keygen_verifies(key_files: dict[str, Path], tmp_path: Path, kind: str) -> None:
    """``ssh-keygen -Y sign`` output parses and verifies over the same bytes."""
    msg = tmp_path / "message"
    msg.write_bytes(MESSAGE)
    ssh_keygen("-Y", "sign", "-f", str(key_files[kind]), "-n", NS, str(msg))
    sig = parse_armored((tmp_path / "message.sig").read_text())
    verify(sig, MESSAGE, NS)
    assert sig.public_key == public_key_blob(load_private_key(key_files[kind]).public_key())


def test_sha256_signatures_verify_too(keys: dict[str, Any]) -> None:
    """SSHSIG's other hash algorithm (sha256) signs and verifies."""
    sig = parse_armored(sign(keys["ed25519"], MESSAGE, NS, hash_alg="sha256"))
    assert sig.hash_alg == "sha256"
    verify(sig, MESSAGE, NS)


def test_signed_bytes_follow_protocol_sshsig(keys: dict[str, Any]) -> None:
    """The key signs exactly PROTOCOL.sshsig's signed-data blob (checked with the raw Ed25519 primitive)."""
    sig = parse_armored(sign(keys["ed25519"], MESSAGE, NS))
    fmt_len = struct.unpack(">I", sig.signature[:4])[0]
    assert sig.signature[4:4 + fmt_len] == b"ssh-ed25519"
    raw_sig = sig.signature[4 + fmt_len + 4:]
    keys["ed25519"].public_key().verify(raw_sig, _signed_data(NS, "sha512", MESSAGE))


def test_armour_is_wrapped_at_70_columns_like_ssh_keygen(keys: dict[str, Any]) -> None:
    """The base64 body lines are 70 characters, the last one possibly shorter, between the armour lines."""
    lines = sign(keys["rsa-3072"], MESSAGE, NS).splitlines()
    assert lines[0] == BEGIN and lines[-1] == END
    assert all(len(ln) == 70 for ln in lines[1:-2]) and 0 < len(lines[-2]) <= 70


def test_public_key_line_and_fingerprint_match_ssh_keygen(keys: dict[str, Any], key_files: dict[str, Path]) -> None:
    """The public key line and SHA256 fingerprint are what ssh-keygen writes and prints."""
    for kind, key in keys.items():
        assert public_key_line(key.public_key()) == public_key_fields(key_files[kind])
        listed = ssh_keygen("-l", "-f", str(key_files[kind]) + ".pub").stdout.decode().split()[1]
        assert fingerprint(public_key_blob(key.public_key())) == listed


# ---------------------------------------------------------------- verification refusals


def test_verify_refuses_a_signature_for_another_namespace(keys: dict[str, Any]) -> None:
    """A valid signature in namespace 'git' does not verify as an upgrader approval."""
    sig = parse_armored(sign(keys["ed25519"], MESSAGE, "git"))
    with pytest.raises(SignatureError, match="namespace"):
        verify(sig, MESSAGE, NS)


@pytest.mark.parametrize("kind", KINDS)
def test_verify_refuses_an_altered_message(keys: dict[str, Any], kind: str) -> None:
    """One flipped bit in the signed message makes verification fail."""
    sig = parse_armored(sign(keys[kind], MESSAGE, NS))
    altered = bytearray(MESSAGE)
    altered[len(altered) // 2] ^= 0x01
    with pytest.raises(SignatureError, match="does not match"):
        verify(sig, bytes(altered), NS)


def test_verify_refuses_a_signature_presented_with_another_public_key(keys: dict[str, Any],
                                                                      tmp_path: Path) -> None:
    """Swapping in another key of the same type (to claim another signer) makes the signature fail."""
    other = load_private_key(make_ssh_key(tmp_path / "other", "ed25519"))
    sig = parse_armored(sign(keys["ed25519"], MESSAGE, NS))
    swapped = Signature(public_key_blob(other.public_key()), sig.namespace, sig.hash_alg, sig.signature)
    with pytest.raises(SignatureError, match="does not match"):
        verify(swapped, MESSAGE, NS)


def test_verify_refuses_rsa_signatures_with_sha1(keys: dict[str, Any]) -> None:
    """An RSA signature in the legacy 'ssh-rsa' (SHA-1) format is refused; the same framing with rsa-sha2-512 verifies."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    key = keys["rsa-3072"]
    blob = public_key_blob(key.public_key())
    data = _signed_data(NS, "sha512", MESSAGE)
    good = _string(b"rsa-sha2-512") + _string(key.sign(data, padding.PKCS1v15(), hashes.SHA512()))
    verify(Signature(blob, NS, "sha512", good), MESSAGE, NS)
    sha1 = _string(b"ssh-rsa") + _string(key.sign(data, padding.PKCS1v15(), hashes.SHA1()))
    with pytest.raises(SignatureError, match="does not match the key type"):
        verify(Signature(blob, NS, "sha512", sha1), MESSAGE, NS)


def test_verify_refuses_a_signature_format_of_another_key_type(keys: dict[str, Any]) -> None:
    """An Ed25519 signature labelled as ECDSA is refused, not interpreted."""
    sig = parse_armored(sign(keys["ed25519"], MESSAGE, NS))
    raw = sig.signature[4 + len(b"ssh-ed25519"):]
    relabelled = Signature(sig.public_key, NS, "sha512", _string(b"ecdsa-sha2-nistp256") + raw)
    with pytest.raises(SignatureError, match="does not match the key type"):
        verify(relabelled, MESSAGE, NS)


def test_sign_refuses_an_empty_namespace(keys: dict[str, Any]) -> None:
    """SSHSIG requires a namespace; signing without one is an error."""
    with pytest.raises(SignatureError, match="namespace"):
        sign(keys["ed25519"], MESSAGE, "")


@pytest.mark.parametrize("kind", KINDS)
def test_no_one_bit_change_to_a_signature_verifies(keys: dict[str, Any], kind: str) -> None:
    """Flipping any single bit of the decoded signature blob never yields a signature that verifies."""
    raw = _raw(sign(keys[kind], MESSAGE, NS))
    assert _verifies(_armour(raw))
    verified = []
    for i in range(len(raw)):
        for bit in range(8):
            changed = bytearray(raw)
            changed[i] ^= 1 << bit
            if _verifies(_armour(bytes(changed))):
                verified.append((i, bit))
    assert verified == []


def _verifies(armour: str) -> bool:
    """Whether ``armour`` parses and verifies over MESSAGE; any refusal counts (the next test asks which)."""
    try:
        verify(parse_armored(armour), MESSAGE, NS)
    except Exception:  # noqa: BLE001
        return False
    return True


@pytest.mark.parametrize("kind", KINDS)
def test_every_one_bit_change_to_a_signature_raises_signature_error(keys: dict[str, Any], kind: str) -> None:
    """Every single-bit change of the signature blob is refused with SignatureError, never another exception."""
    raw = _raw(sign(keys[kind], MESSAGE, NS))
    escaped: dict[str, int] = {}
    for i in range(len(raw)):
        for bit in range(8):
            changed = bytearray(raw)
            changed[i] ^= 1 << bit
            try:
                verify(parse_armored(_armour(bytes(changed))), MESSAGE, NS)
            except SignatureError:
                continue
            except Exception as e:  # noqa: BLE001 - what the test is about
                escaped[type(e).__name__] = escaped.get(type(e).__name__, 0) + 1
    assert escaped == {}


# ---------------------------------------------------------------- parsing refusals


def _tweak(raw: bytes, how: str) -> bytes:
    magic, version, f = _fields(raw)
    if how == "bad magic":
        return _join(b"SSHSIH", version, f)
    if how == "version 2":
        return _join(magic, 2, f)
    if how == "trailing bytes":
        return raw + b"\x00"
    if how == "truncated":
        return raw[:-5]
    if how == "sha1 hash":
        return _join(magic, version, [f[0], f[1], f[2], b"sha1", f[4]])
    raise AssertionError(how)


@pytest.mark.parametrize("how, reason", [("bad magic", "magic"), ("version 2", "version"),
                                         ("trailing bytes", "trailing"), ("truncated", "truncated"),
                                         ("sha1 hash", "hash algorithm")])
def test_parse_refuses_malformed_signature_blobs(keys: dict[str, Any], how: str, reason: str) -> None:
    """Blobs with a wrong magic, version, length or hash algorithm are refused with the reason."""
    raw = _raw(sign(keys["ed25519"], MESSAGE, NS))
    parse_armored(_armour(raw))
    with pytest.raises(SignatureError, match=reason):
        parse_armored(_armour(_tweak(raw, how)))


@pytest.mark.parametrize("how", ["no BEGIN line", "no END line", "character outside base64", "empty"])
def test_parse_refuses_malformed_armour(keys: dict[str, Any], how: str) -> None:
    """Armour without its BEGIN/END lines, or with a non-base64 character, is not a signature."""
    lines = sign(keys["ed25519"], MESSAGE, NS).splitlines()
    text = {"no BEGIN line": "\n".join(lines[1:]),
            "no END line": "\n".join(lines[:-1]),
            "character outside base64": "\n".join([lines[0], "!" + lines[1][1:], *lines[2:]]),
            "empty": ""}[how]
    with pytest.raises(SignatureError):
        parse_armored(text)


def test_parse_refuses_non_canonical_base64(keys: dict[str, Any]) -> None:
    """Base64 whose unused padding bits are set decodes to the same bytes but is refused (one text, one signature)."""
    armour = sign(keys["ed25519"], MESSAGE, NS)
    lines = armour.splitlines()
    body = "".join(lines[1:-1])
    pad = len(body) - len(body.rstrip("="))
    assert pad, "this signature needs no padding: pick another namespace"
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "+/"
    k = len(body) - pad - 1
    loose = body[:k] + alphabet[alphabet.index(body[k]) ^ 0x01] + body[k + 1:]
    assert loose != body and base64.b64decode(loose) == base64.b64decode(body)
    parse_armored("\n".join([BEGIN, *(body[i:i + 70] for i in range(0, len(body), 70)), END]))
    with pytest.raises(SignatureError, match="canonical"):
        parse_armored("\n".join([BEGIN, *(loose[i:i + 70] for i in range(0, len(loose), 70)), END]))


# ---------------------------------------------------------------- allowed_signers


NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def pub(key_files: dict[str, Path]) -> dict[str, str]:
    return {kind: public_key_fields(path) for kind, path in key_files.items()}


@pytest.fixture(scope="module")
def blob(keys: dict[str, Any]) -> dict[str, bytes]:
    return {kind: public_key_blob(key.public_key()) for kind, key in keys.items()}


def test_allowed_signers_reads_principals_options_and_key(pub: dict[str, str], blob: dict[str, bytes]) -> None:
    """A line with quoted principals and every supported option is read field by field."""
    text = (f'# engineers\n\n"alice@vendor,bob@vendor" namespaces="git,upgrader-*",valid-after="20260101Z",'
            f'valid-before="202612311200Z" {pub["ed25519"]} a comment\n')
    signers = parse_allowed_signers(text, "signers")
    (e,) = signers.entries
    assert e.principals == ("alice@vendor", "bob@vendor")
    assert e.namespaces == ("git", "upgrader-*")
    assert e.valid_after == dt.datetime(2026, 1, 1, tzinfo=UTC)
    assert e.valid_before == dt.datetime(2026, 12, 31, 12, 0, tzinfo=UTC)
    assert e.key_blob == blob["ed25519"] and e.line == 3


def test_allowed_signers_times_without_z_are_local_time(pub: dict[str, str]) -> None:
    """valid-after without a trailing Z is read in local time, with seconds when given (as ssh-keygen does)."""
    (e,) = parse_allowed_signers(f'a valid-after="20260102030405" {pub["ed25519"]}\n', "s").entries
    assert e.valid_after == dt.datetime(2026, 1, 2, 3, 4, 5).astimezone()


def test_option_names_are_case_insensitive(pub: dict[str, str], blob: dict[str, bytes]) -> None:
    """NAMESPACES= works like namespaces= (ssh-keygen matches option names without case)."""
    signers = parse_allowed_signers(f'alice NAMESPACES="git" {pub["ed25519"]}\n', "s")
    assert signers.entries[0].namespaces == ("git",)
    with pytest.raises(ValueError, match="may not sign"):
        signers.check("alice", blob["ed25519"], NS, NOW)


def test_check_accepts_the_listed_principal_key_namespace_and_time(pub: dict[str, str],
                                                                  blob: dict[str, bytes]) -> None:
    """The owner of a listed key, in an allowed namespace, inside the validity window, is accepted."""
    signers = parse_allowed_signers(
        f'alice@vendor namespaces="{NS}",valid-after="20260101Z",valid-before="20270101Z" {pub["ecdsa-256"]}\n', "s")
    assert signers.check("alice@vendor", blob["ecdsa-256"], NS, NOW).line == 1


def test_check_refuses_a_key_that_is_not_listed(pub: dict[str, str], blob: dict[str, bytes]) -> None:
    """A key absent from the file is refused, naming the file."""
    signers = parse_allowed_signers(f"alice@vendor {pub['ed25519']}\n", "keys/allowed_signers")
    with pytest.raises(ValueError, match="not in keys/allowed_signers"):
        signers.check("alice@vendor", blob["rsa-3072"], NS, NOW)


def test_check_refuses_a_listed_key_used_under_another_name(pub: dict[str, str], blob: dict[str, bytes]) -> None:
    """Alice's key cannot sign as bob."""
    signers = parse_allowed_signers(f"alice@vendor {pub['ed25519']}\nbob@vendor {pub['rsa-3072']}\n", "s")
    with pytest.raises(ValueError, match="not to 'bob@vendor'"):
        signers.check("bob@vendor", blob["ed25519"], NS, NOW)


def test_check_refuses_a_namespace_the_line_does_not_allow(pub: dict[str, str], blob: dict[str, bytes]) -> None:
    """A key allowed for git signatures only may not sign approvals."""
    signers = parse_allowed_signers(f'alice namespaces="git,upgrader-audit" {pub["ed25519"]}\n', "s")
    with pytest.raises(ValueError, match="may not sign 'upgrader-approval'"):
        signers.check("alice", blob["ed25519"], NS, NOW)


@pytest.mark.parametrize("option, when, ok", [
    ('valid-after="202606011200Z"', NOW - dt.timedelta(minutes=1), False),
    ('valid-after="202606011200Z"', NOW + dt.timedelta(minutes=1), True),
    ('valid-before="202606011200Z"', NOW - dt.timedelta(minutes=1), True),
    ('valid-before="202606011200Z"', NOW + dt.timedelta(minutes=1), False),
    # both bounds are inclusive, as in OpenSSH's sshsig.c (expired when verify time > valid-before)
    ('valid-after="202606011200Z"', NOW, True),
    ('valid-before="202606011200Z"', NOW, True),
    ('valid-before="202606011200Z"', NOW + dt.timedelta(seconds=1), False),
], ids=["before valid-after", "after valid-after", "before valid-before", "after valid-before",
        "at valid-after", "at valid-before", "a second after valid-before"])
def test_check_honours_the_validity_window(pub: dict[str, str], blob: dict[str, bytes], option: str,
                                           when: dt.datetime, ok: bool) -> None:
    """valid-after and valid-before bound when the key may sign."""
    signers = parse_allowed_signers(f"alice {option} {pub['ed25519']}\n", "s")
    if ok:
        signers.check("alice", blob["ed25519"], NS, when)
    else:
        with pytest.raises(ValueError, match="not valid at"):
            signers.check("alice", blob["ed25519"], NS, when)


def test_negated_principal_is_refused_even_when_a_wildcard_matches(pub: dict[str, str],
                                                                   blob: dict[str, bytes]) -> None:
    """``*@vendor,!mallory@vendor`` lets alice sign and not mallory."""
    signers = parse_allowed_signers(f"*@vendor,!mallory@vendor {pub['ed25519']}\n", "s")
    signers.check("alice@vendor", blob["ed25519"], NS, NOW)
    with pytest.raises(ValueError, match="not to 'mallory@vendor'"):
        signers.check("mallory@vendor", blob["ed25519"], NS, NOW)
    with pytest.raises(ValueError):
        signers.check("alice@elsewhere", blob["ed25519"], NS, NOW)


def test_principals_for_lists_only_current_positive_principals(pub: dict[str, str], blob: dict[str, bytes]) -> None:
    """principals_for skips negated patterns, other namespaces and lines outside their validity window."""
    text = (f"alice,!mallory {pub['ed25519']}\n"
            f'carol namespaces="git" {pub["ed25519"]}\n'
            f'dave valid-before="20200101Z" {pub["ed25519"]}\n'
            f"erin {pub['rsa-3072']}\n")
    signers = parse_allowed_signers(text, "s")
    assert signers.principals_for(blob["ed25519"], NS, NOW) == ["alice"]


def test_a_key_on_two_lines_is_checked_against_the_line_that_allows_it(pub: dict[str, str],
                                                                       blob: dict[str, bytes]) -> None:
    """The same key restricted to git on one line and allowed for approvals on another may approve."""
    text = f'alice namespaces="git" {pub["ed25519"]}\nalice namespaces="{NS}" {pub["ed25519"]}\n'
    assert parse_allowed_signers(text, "s").check("alice", blob["ed25519"], NS, NOW).line == 2


@pytest.mark.parametrize("line, reason", [
    ("alice@vendor", "expected 'principals"),
    ("alice@vendor ssh-ed25519", "expected 'principals"),
    ('alice@vendor bogus="x" {key}', "unknown option 'bogus'"),
    ('alice@vendor valid-before="2026-01-01" {key}', "bad time"),
    ("alice@vendor cert-authority {key}", "cert-authority"),
    ("alice@vendor ssh-dss AAAAB3NzaC1kc3MAAACBAP", "ssh-dss"),
    ("alice@vendor ssh-ed25519 not*base64", "not valid base64"),
], ids=["principals only", "no key", "unknown option", "bad time", "cert-authority", "dsa key", "bad base64"])
def test_malformed_allowed_signers_lines_are_refused_with_their_line_number(pub: dict[str, str], line: str,
                                                                            reason: str) -> None:
    """A malformed line makes the file invalid (exit 2), naming the file, the line and the problem."""
    text = f"# team\n{line.format(key=pub['ed25519'])}\n"
    with pytest.raises(InputError, match=reason) as err:
        parse_allowed_signers(text, "keys/allowed_signers")
    assert "keys/allowed_signers: line 2" in str(err.value)


def test_negated_namespace_refuses_that_namespace(pub: dict[str, str], blob: dict[str, bytes]) -> None:
    """``namespaces="*,!upgrader-approval"`` allows git but not approvals, as in ssh-keygen."""
    signers = parse_allowed_signers(f'alice namespaces="*,!{NS}" {pub["ed25519"]}\n', "s")
    signers.check("alice", blob["ed25519"], "git", NOW)
    with pytest.raises(ValueError, match="may not sign"):
        signers.check("alice", blob["ed25519"], NS, NOW)


def test_an_option_given_twice_makes_the_line_invalid(pub: dict[str, str]) -> None:
    """A line naming namespaces twice is ambiguous and refused, as ssh-keygen refuses it."""
    with pytest.raises(InputError, match="line 1"):
        parse_allowed_signers(f'alice namespaces="git",namespaces="{NS}" {pub["ed25519"]}\n', "s")
