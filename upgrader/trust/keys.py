"""SSH keys of engineers and vendors: generate, load, describe. Cryptography by ``cryptography``.

Private keys are read from OpenSSH files (as ``ssh-keygen`` writes them); a passphrase comes
from ``UPGRADER_KEY_PASSPHRASE`` or, on a terminal, a prompt. Nothing here ever writes private
key material anywhere but the file it was asked to create (mode 0600).
"""

from __future__ import annotations

import os
import re
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import InputError
from .sshsig import PrivateKey, PublicKey, fingerprint, public_key_blob, public_key_line

__all__ = ["generate_key", "load_private_key", "load_public_key", "Identity", "signer_line", "HeldKey", "held_key",
           "stored_public_blob", "HELD_KEY_BYTES"]


@dataclass(frozen=True)
class Identity:
    principal: str
    private_key: PrivateKey
    path: str

    @property
    def key_blob(self) -> bytes:
        return public_key_blob(self.private_key.public_key())

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.key_blob)


def signer_line(principal: str, public_key: PublicKey, namespaces: str | None = None) -> str:
    opts = f' namespaces="{namespaces}"' if namespaces else ""
    return f"{principal}{opts} {public_key_line(public_key)}"


def generate_key(path: Path, principal: str, *, overwrite: bool = False) -> tuple[Path, Path, str]:
    """Write an Ed25519 key pair (``path`` and ``path.pub``); return the paths and an allowed_signers line."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    pub = path.with_name(path.name + ".pub")
    if not overwrite and (os.path.lexists(path) or os.path.lexists(pub)):  # a link, dangling too, counts
        raise InputError("a key (or a link) already exists there", path=str(path),
                         hint="choose another NAME or remove the old key")
    # new files only, never through a link planted at either name meanwhile (a shared folder): O_EXCL|O_NOFOLLOW
    how = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_TRUNC if overwrite else os.O_EXCL)
    key = ed25519.Ed25519PrivateKey.generate()
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        from ..core.output import open_folder

        dfd = open_folder(path.parent, what="the key", option="--dir")  # no other account's link on the way
        try:
            fd = os.open(path.name, how, 0o600, dir_fd=dfd)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            with os.fdopen(os.open(pub.name, how, 0o644, dir_fd=dfd), "w", encoding="utf-8") as f:
                f.write(public_key_line(key.public_key(), principal) + "\n")
        finally:
            os.close(dfd)
    except OSError as e:
        raise InputError(f"cannot write the key: {e.strerror}", path=str(path),
                         hint="choose a directory you can write with --dir") from e
    return path, pub, signer_line(principal, key.public_key())


def load_private_key(path: str | Path) -> PrivateKey:
    from cryptography.hazmat.primitives import serialization

    p = Path(path).expanduser()
    try:
        data = p.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read the private key: {e.strerror}", path=str(p)) from e
    if data.lstrip().startswith((b"ssh-", b"ecdsa-")):
        raise InputError("this is a public key; give the private key file (without .pub)", path=str(p))
    password = os.environ.get("UPGRADER_KEY_PASSPHRASE")
    for attempt in range(2):
        try:
            return serialization.load_ssh_private_key(data, password=password.encode() if password else None)
        except TypeError as e:
            if password and "not encrypted" in str(e):  # a passphrase is set for other keys; this one needs none
                password = None
                continue
            if attempt or password or not sys.stdin.isatty():
                raise InputError("the key is protected by a passphrase", path=str(p),
                                 hint="set UPGRADER_KEY_PASSPHRASE or run on a terminal to be asked") from None
            import getpass

            password = getpass.getpass(f"passphrase for {p}: ")
        except ValueError as e:
            raise InputError(f"not an OpenSSH private key ({e})", path=str(p),
                             hint="keys made by 'ssh-keygen' or 'upgrader keys generate' work") from None
    raise AssertionError("unreachable")


def stored_public_blob(path: str | Path) -> bytes | None:
    """The public key blob an OpenSSH private key file carries in clear (``openssh-key-v1``: before the encrypted
    part), read without its passphrase and without asking for one; None when the file is not such a key."""
    try:
        data = Path(path).expanduser().read_bytes()[:1 << 16]
    except OSError:
        return None
    return _openssh_public_blob(data)


def _openssh_public_blob(raw: bytes) -> bytes | None:
    import base64
    import struct

    try:
        text = raw.decode("ascii")
        body = text.split("-----BEGIN OPENSSH PRIVATE KEY-----", 1)[1].split("-----END OPENSSH PRIVATE KEY-----")[0]
        data = base64.b64decode("".join(body.split()))
    except (UnicodeDecodeError, IndexError, ValueError):
        return None
    magic = b"openssh-key-v1\0"
    if not data.startswith(magic):
        return None
    at = len(magic)
    try:
        for _ in range(3):  # cipher name, kdf name, kdf options
            (n,) = struct.unpack(">I", data[at:at + 4])
            at += 4 + n
        (count,) = struct.unpack(">I", data[at:at + 4])
        (n,) = struct.unpack(">I", data[at + 4:at + 8])
    except struct.error:
        return None
    blob = data[at + 8:at + 8 + n]
    return blob if count >= 1 and len(blob) == n and n > 0 else None


#: a file of a key folder larger than this is not read as a key: it counts as one whose key cannot be told
HELD_KEY_BYTES = 1 << 20
_PRIVATE_ARMOUR = b"PRIVATE KEY-----"
#: a file naming this anywhere looks like some tool's private key (SECSH "---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----")
_PRIVATE_WORDS = b"PRIVATE KEY"
_PPK_HEADER = b"PuTTY-User-Key-File-"
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]*PRIVATE KEY)-----.*?-----END \1-----", re.S)


@dataclass(frozen=True)
class HeldKey:
    """A file that is, or looks like, a private key: ``blob`` its public key, None when which key it is cannot be
    told (encrypted PEM without its ``.pub``, damaged, unreadable, too large) -- ``why`` says which."""

    path: Path
    blob: bytes | None
    why: str = ""


def held_key(path: Path) -> HeldKey | None:
    """The private key a file of a key folder holds, in any form OpenSSH accepts (``openssh-key-v1``, PEM PKCS#1
    RSA/EC/DSA, PKCS#8) or PuTTY's (.ppk v2/v3: its Public-Lines), read without a passphrase; for an encrypted PEM
    key or another tool's (ssh.com/SECSH armour), from its ``.pub`` beside it. None when the file is not a regular
    file or does not look like a private key (neither ``PRIVATE KEY`` in it nor a PuTTY header). A file that
    cannot be read at all counts as a key that cannot be told (fail closed: it may be one)."""
    import errno
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ELOOP, errno.ENXIO, errno.EISDIR):
            return None
        return HeldKey(path, None, f"cannot be read ({e.strerror})")
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(HELD_KEY_BYTES + 1)
    except OSError as e:
        return HeldKey(path, None, f"cannot be read ({e.strerror})")
    finally:
        os.close(fd)
    if len(data) > HELD_KEY_BYTES:
        return HeldKey(path, None, f"larger than {HELD_KEY_BYTES >> 20} MiB") if _looks_private(data) else None
    if data.lstrip().startswith(_PPK_HEADER):  # PuTTY (.ppk): its Public-Lines hold the public key in clear
        blob = _ppk_public_blob(data) or _pub_beside(path)
        return HeldKey(path, blob, "" if blob is not None else "a PuTTY key file whose Public-Lines cannot be read")
    if _PRIVATE_ARMOUR not in data:
        if not _looks_private(data):
            return None
        blob = _pub_beside(path)  # ssh.com/SECSH armour ("---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----") and the like
        return HeldKey(path, blob, "" if blob is not None else "a private key in a form upgrader does not read, "
                                                                "ssh.com/SECSH or another tool's, without its .pub")
    if len(re.findall(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----", data)) > 1:  # which one would ssh use? fail closed
        return HeldKey(path, None, "more than one private key in one file")
    blob = _openssh_public_blob(data) if b"-----BEGIN OPENSSH PRIVATE KEY-----" in data else _pem_public_blob(data)
    if blob is None:
        blob = _pub_beside(path)
    return HeldKey(path, blob, "" if blob is not None else "encrypted without its .pub beside it, or damaged")


def _looks_private(data: bytes) -> bool:
    """Whether a file looks like a private key of a known tool (OpenSSH, PEM, PKCS#8, ssh.com/SECSH, PuTTY)."""
    return _PRIVATE_WORDS in data or data.lstrip().startswith(_PPK_HEADER)


def _ppk_public_blob(data: bytes) -> bytes | None:
    """The public key blob of a PuTTY key file (``PuTTY-User-Key-File-2``/``-3``: ``Public-Lines: N`` and N lines of
    base64, in clear even when the private part is encrypted) when it names the key type of its first line; None
    when the file is damaged or of another version."""
    import base64
    import binascii

    try:
        lines = data.decode("ascii").splitlines()
    except UnicodeDecodeError:
        return None
    first = lines[0].strip().split(":", 1) if lines else []
    if len(first) != 2 or first[0] not in ("PuTTY-User-Key-File-2", "PuTTY-User-Key-File-3"):
        return None
    for i, line in enumerate(lines):
        name, _, value = line.partition(":")
        if name.strip() != "Public-Lines":
            continue
        try:
            count = int(value.strip())
            body = lines[i + 1:i + 1 + count]
            blob = base64.b64decode("".join(x.strip() for x in body), validate=True) if len(body) == count else b""
            (n,) = struct.unpack(">I", blob[:4])
        except (ValueError, binascii.Error, struct.error):
            return None
        return blob if n > 0 and blob[4:4 + n] == first[1].strip().encode() else None
    return None


def _pem_public_blob(data: bytes) -> bytes | None:
    """The public key of the first PEM private key block (PKCS#1 RSA, SEC1 EC, DSA, PKCS#8), when not encrypted."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    m = _PEM_BLOCK.search(data)
    if m is None:
        return None
    try:
        key = serialization.load_pem_private_key(m.group(0), password=None)
        return public_key_blob(key.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError, UnsupportedAlgorithm):
        return None


def _pub_beside(path: Path) -> bytes | None:
    """The key blob of ``path``.pub (``TYPE BASE64 [COMMENT]``), None when there is none or it is not one."""
    import base64
    import binascii

    import stat

    try:
        fd = os.open(path.with_name(path.name + ".pub"), os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None
            fields = f.read(1 << 16).split()
        blob = base64.b64decode(fields[1], validate=True)
        (n,) = struct.unpack(">I", blob[:4])
    except (OSError, IndexError, binascii.Error, ValueError, struct.error):
        return None
    return blob if blob[4:4 + n] == fields[0] else None


def load_public_key(path: str | Path) -> PublicKey:
    from cryptography.hazmat.primitives import serialization

    p = Path(path).expanduser()
    try:
        text = p.read_bytes().strip()
    except OSError as e:
        raise InputError(f"cannot read the public key: {e.strerror}", path=str(p)) from e
    try:
        return serialization.load_ssh_public_key(b" ".join(text.split()[:2]))
    except (ValueError, IndexError) as e:
        raise InputError(f"not an OpenSSH public key ({e})", path=str(p)) from None
