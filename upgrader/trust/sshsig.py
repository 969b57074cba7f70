"""SSH signatures in OpenSSH's SSHSIG format (what ``ssh-keygen -Y sign`` writes and git uses).

Only the framing lives here (PROTOCOL.sshsig: the signed-data blob, the signature blob and its
ASCII armour); keys, hashing and the signature primitives are the ``cryptography`` package's.
Ed25519, ECDSA (nistp256/384/521) and RSA (rsa-sha2-512) keys are supported. Nothing here knows
what is signed or who is trusted: see ``signers.py`` and ``approval.py``.
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.serialization import SSHPrivateKeyTypes, SSHPublicKeyTypes

#: the private keys that sign (OpenSSH's kinds: Ed25519, ECDSA, RSA; DSA is refused when signing)
PrivateKey: TypeAlias = "SSHPrivateKeyTypes"
#: the public keys that verify
PublicKey: TypeAlias = "SSHPublicKeyTypes"

__all__ = ["SignatureError", "Signature", "sign", "verify", "parse_armored", "public_key_blob",
           "public_key_line", "fingerprint", "load_public_key_blob"]

MAGIC = b"SSHSIG"
VERSION = 1
BEGIN = "-----BEGIN SSH SIGNATURE-----"
END = "-----END SSH SIGNATURE-----"
_HASHES = {"sha512": hashlib.sha512, "sha256": hashlib.sha256}
_B64_LINE = re.compile(r"[A-Za-z0-9+/]+={0,2}")


class SignatureError(ValueError):
    """A signature is malformed, made with an unsupported key, or does not verify."""


def _string(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise SignatureError("signature is truncated or malformed")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def uint32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def string(self) -> bytes:
        return self.take(self.uint32())

    def done(self) -> None:
        if self.pos != len(self.data):
            raise SignatureError("signature has trailing bytes")


def public_key_blob(key: PublicKey) -> bytes:
    """The SSH wire encoding of a public key (the base64 part of an OpenSSH public key line)."""
    from cryptography.hazmat.primitives import serialization

    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return base64.b64decode(line.split()[1])


def public_key_line(key: PublicKey, comment: str = "") -> str:
    blob = public_key_blob(key)
    kind = _Reader(blob).string().decode()
    return f"{kind} {base64.b64encode(blob).decode()}" + (f" {comment}" if comment else "")


def fingerprint(blob: bytes) -> str:
    """OpenSSH's SHA256 fingerprint of a public key blob (as ``ssh-keygen -l`` prints it)."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def load_public_key_blob(blob: bytes) -> PublicKey:
    from cryptography.hazmat.primitives import serialization

    from cryptography.exceptions import UnsupportedAlgorithm

    try:
        kind = _Reader(blob).string().decode()
        return serialization.load_ssh_public_key(f"{kind} {base64.b64encode(blob).decode()}".encode())
    except (ValueError, UnicodeDecodeError, TypeError, UnsupportedAlgorithm, NotImplementedError) as e:
        raise SignatureError(f"unsupported or malformed public key: {e}") from None


def _signed_data(namespace: str, hash_alg: str, message: bytes) -> bytes:
    return (MAGIC + _string(namespace.encode()) + _string(b"") + _string(hash_alg.encode())
            + _string(_HASHES[hash_alg](message).digest()))


def _raw_sign(private_key: PrivateKey, data: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return _string(b"ssh-ed25519") + _string(private_key.sign(data))
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        size = private_key.curve.key_size
        algo = {256: hashes.SHA256(), 384: hashes.SHA384(), 521: hashes.SHA512()}[size]
        r, s = decode_dss_signature(private_key.sign(data, ec.ECDSA(algo)))
        name = f"ecdsa-sha2-nistp{size}".encode()
        return _string(name) + _string(_string(_mpint(r)) + _string(_mpint(s)))
    if isinstance(private_key, rsa.RSAPrivateKey):
        return _string(b"rsa-sha2-512") + _string(private_key.sign(data, padding.PKCS1v15(), hashes.SHA512()))
    raise SignatureError(f"unsupported key type {type(private_key).__name__}; use Ed25519, ECDSA or RSA")


def _mpint(n: int) -> bytes:
    """SSH mpint body of a non-negative integer (a leading zero byte when the high bit is set)."""
    return n.to_bytes((n.bit_length() + 8) // 8, "big") if n else b""


def sign(private_key: PrivateKey, message: bytes, namespace: str, hash_alg: str = "sha512") -> str:
    """An armoured SSHSIG signature of ``message`` in ``namespace``."""
    if not namespace:
        raise SignatureError("a namespace is required")
    blob = public_key_blob(private_key.public_key())
    sig = _raw_sign(private_key, _signed_data(namespace, hash_alg, message))
    body = (MAGIC + struct.pack(">I", VERSION) + _string(blob) + _string(namespace.encode()) + _string(b"")
            + _string(hash_alg.encode()) + _string(sig))
    b64 = base64.b64encode(body).decode()
    lines = [b64[i:i + 70] for i in range(0, len(b64), 70)]
    return "\n".join([BEGIN, *lines, END]) + "\n"


@dataclass(frozen=True)
class Signature:
    public_key: bytes     # blob
    namespace: str
    hash_alg: str
    signature: bytes      # the SSH signature blob (format name + raw signature)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)

    @property
    def key_type(self) -> str:
        return _Reader(self.public_key).string().decode()


def parse_armored(text: str) -> Signature:
    """Parse ``BEGIN``, base64 lines, ``END`` separated by LF (or CRLF) only: anything else is refused."""
    lines = text.replace("\r\n", "\n").rstrip("\n").split("\n")
    if not lines or lines[0] != BEGIN or lines[-1] != END:
        raise SignatureError(f"not an SSH signature (expected '{BEGIN}' ... '{END}')")
    for line in lines[1:-1]:
        if not line or not _B64_LINE.fullmatch(line):
            raise SignatureError("signature block has a damaged line (only base64 characters are allowed)")
    body = "".join(lines[1:-1])
    try:
        raw = base64.b64decode(body, validate=True)
    except ValueError as e:
        raise SignatureError(f"signature is not valid base64: {e}") from None
    if base64.b64encode(raw).decode() != body:  # unused padding bits: one text, one signature
        raise SignatureError("signature is not in canonical base64")
    r = _Reader(raw)
    if r.take(6) != MAGIC:
        raise SignatureError("not an SSHSIG signature (bad magic)")
    version = r.uint32()
    if version != VERSION:
        raise SignatureError(f"unsupported SSHSIG version {version}")
    blob = r.string()
    namespace = r.string().decode("utf-8", "replace")
    r.string()  # reserved
    hash_alg = r.string().decode("ascii", "replace")
    sig = r.string()
    r.done()
    if hash_alg not in _HASHES:
        raise SignatureError(f"unsupported hash algorithm {hash_alg!r}")
    return Signature(blob, namespace, hash_alg, sig)


def verify(signature: Signature, message: bytes, namespace: str) -> None:
    """Raise ``SignatureError`` unless ``signature`` is a valid signature of ``message`` in ``namespace``
    by the public key it carries (who that key belongs to is for the caller to check)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    if signature.namespace != namespace:
        raise SignatureError(f"signature is for namespace {signature.namespace!r}, expected {namespace!r}")
    key = load_public_key_blob(signature.public_key)
    data = _signed_data(namespace, signature.hash_alg, message)
    r = _Reader(signature.signature)
    fmt = r.string().decode("ascii", "replace")
    raw = r.string()
    r.done()
    try:
        if isinstance(key, ed25519.Ed25519PublicKey) and fmt == "ssh-ed25519":
            key.verify(raw, data)
        elif isinstance(key, ec.EllipticCurvePublicKey) and fmt == f"ecdsa-sha2-nistp{key.curve.key_size}":
            rr = _Reader(raw)
            rs = (int.from_bytes(rr.string(), "big"), int.from_bytes(rr.string(), "big"))
            rr.done()
            algo = {256: hashes.SHA256(), 384: hashes.SHA384(), 521: hashes.SHA512()}[key.curve.key_size]
            key.verify(encode_dss_signature(*rs), data, ec.ECDSA(algo))
        elif isinstance(key, rsa.RSAPublicKey) and fmt in ("rsa-sha2-512", "rsa-sha2-256"):
            algo2 = hashes.SHA512() if fmt == "rsa-sha2-512" else hashes.SHA256()
            key.verify(raw, data, padding.PKCS1v15(), algo2)
        else:
            raise SignatureError(f"signature format {fmt!r} does not match the key type")
    except InvalidSignature:
        raise SignatureError("the signature does not match the signed data (altered, or signed by another key)") \
            from None
