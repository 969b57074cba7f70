"""OpenSSH ``allowed_signers`` files: who may sign, with which key, for which namespace, when.

Parses the format of ssh-keygen(1) "ALLOWED SIGNERS" (principals, options ``namespaces=``,
``valid-after=``, ``valid-before=``, ``cert-authority``, then the public key) and answers one
question: does this principal own this key for this namespace at this time? Certificates
(``cert-authority``) are recognised and refused, not half-supported.
"""

from __future__ import annotations

import base64
import datetime as _dt
import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path

from version_policy import Policy

from ..core.errors import InputError
from .sshsig import fingerprint

__all__ = ["AllowedSigner", "AllowedSigners", "load_allowed_signers", "parse_allowed_signers"]

_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa")


@dataclass(frozen=True)
class AllowedSigner:
    principals: tuple[str, ...]
    key_blob: bytes
    namespaces: tuple[str, ...] | None
    valid_after: _dt.datetime | None
    valid_before: _dt.datetime | None
    line: int

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.key_blob)

    def matches_principal(self, principal: str) -> bool:
        ok = False
        for pattern in self.principals:
            neg = pattern.startswith("!")
            if fnmatch.fnmatchcase(principal, pattern[1:] if neg else pattern):
                if neg:
                    return False
                ok = True
        return ok

    def allows_namespace(self, namespace: str) -> bool:
        """As ssh-keygen: a matching negated pattern (``!ns``) forbids; otherwise one positive match allows."""
        if self.namespaces is None:
            return True
        allowed = False
        for pattern in self.namespaces:
            if pattern.startswith("!"):
                if fnmatch.fnmatchcase(namespace, pattern[1:]):
                    return False
            elif fnmatch.fnmatchcase(namespace, pattern):
                allowed = True
        return allowed

    def valid_at(self, when: _dt.datetime) -> bool:
        """Both bounds inclusive, as ssh-keygen -Y verify has them (sshsig.c: expired when time > valid-before)."""
        return (self.valid_after is None or when >= self.valid_after) and \
            (self.valid_before is None or when <= self.valid_before)


@dataclass(frozen=True)
class AllowedSigners:
    source: str
    entries: tuple[AllowedSigner, ...]

    def principals_for(self, key_blob: bytes, namespace: str, when: _dt.datetime) -> list[str]:
        """Principal patterns that own ``key_blob`` for ``namespace`` at ``when``."""
        out: list[str] = []
        for e in self.entries:
            if e.key_blob == key_blob and e.allows_namespace(namespace) and e.valid_at(when):
                out.extend(p for p in e.principals if not p.startswith("!"))
        return out

    def check(self, principal: str, key_blob: bytes, namespace: str, when: _dt.datetime) -> AllowedSigner:
        """The entry that lets ``principal`` sign with ``key_blob``; raise ValueError with the reason if none."""
        by_key = [e for e in self.entries if e.key_blob == key_blob]
        if not by_key:
            raise ValueError(f"the signing key {fingerprint(key_blob)} is not in {self.source}")
        for e in by_key:
            if e.matches_principal(principal) and e.allows_namespace(namespace) and e.valid_at(when):
                return e
        e = by_key[0]
        if not any(x.matches_principal(principal) for x in by_key):
            raise ValueError(f"the signing key {e.fingerprint} belongs to {', '.join(e.principals)} in {self.source}, "
                             f"not to {principal!r}")
        if not any(x.allows_namespace(namespace) for x in by_key):
            raise ValueError(f"the key {e.fingerprint} may not sign {namespace!r} ({self.source} line {e.line})")
        raise ValueError(f"the key {e.fingerprint} is not valid at {when.isoformat()} ({self.source} line {e.line})")


def _timestamp(value: str, source: str, line: int) -> _dt.datetime:
    m = re.fullmatch(r"(\d{8})(\d{4})?(\d{2})?(Z?)", value)
    if not m:
        raise InputError(f"line {line}: bad time {value!r} (expected YYYYMMDD[HHMM[SS]][Z])", path=source)
    text = m.group(1) + (m.group(2) or "0000") + (m.group(3) or "00")
    t = _dt.datetime.strptime(text, "%Y%m%d%H%M%S")
    if m.group(4):
        return t.replace(tzinfo=_dt.timezone.utc)
    return t.astimezone()  # local time, as ssh-keygen reads it


def _split(line: str) -> list[str]:
    """Split on whitespace, keeping double-quoted parts (principals and option values) together."""
    out, cur, quoted = [], "", False
    for ch in line:
        if ch == '"':
            quoted = not quoted
            cur += ch
        elif ch.isspace() and not quoted:
            if cur:
                out.append(cur)
                cur = ""
        else:
            cur += ch
    if cur:
        out.append(cur)
    return out


def _split_options(field: str) -> list[str]:
    """Split ``a,b="x,y",c`` on the commas outside double quotes."""
    out, cur, quoted = [], "", False
    for ch in field:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [o for o in out if o]


def parse_allowed_signers(text: str, source: str) -> AllowedSigners:
    entries = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = _split(line)
        if len(fields) < 3:
            raise InputError(f"line {n}: expected 'principals [options] key-type base64-key'", path=source)
        principals = tuple(p for p in fields[0].strip('"').split(",") if p)
        rest = fields[1:]
        namespaces = None
        after = before = None
        if rest[0] not in _KEY_TYPES:
            seen: set[str] = set()
            for opt in _split_options(rest[0]):
                name, _, value = opt.partition("=")
                value = value.strip('"')
                name = name.lower()
                if name in seen:
                    raise InputError(f"line {n}: option {name!r} is given twice", path=source)
                seen.add(name)
                if name == "namespaces":
                    namespaces = tuple(v for v in value.split(",") if v)
                elif name == "valid-after":
                    after = _timestamp(value, source, n)
                elif name == "valid-before":
                    before = _timestamp(value, source, n)
                elif name == "cert-authority":
                    raise InputError(f"line {n}: cert-authority entries are not supported; list the signer's own key",
                                     path=source)
                else:
                    raise InputError(f"line {n}: unknown option {name!r}", path=source)
            rest = rest[1:]
        if len(rest) < 2 or rest[0] not in _KEY_TYPES:
            raise InputError(f"line {n}: expected a key type ({', '.join(_KEY_TYPES)}) then a base64 key", path=source)
        try:
            blob = base64.b64decode(rest[1], validate=True)
        except ValueError:
            raise InputError(f"line {n}: the key is not valid base64", path=source) from None
        entries.append(AllowedSigner(principals, blob, namespaces, after, before, n))
    return AllowedSigners(source, tuple(entries))


def load_allowed_signers(path: str | Path) -> AllowedSigners:
    return read_allowed_signers(path)[0]


def read_allowed_signers(path: str | Path) -> tuple[AllowedSigners, str]:
    """An allowed signers file and the sha256 of the very bytes parsed (one read: what a report names is what
    was trusted)."""
    import hashlib

    p = Path(path)
    try:
        raw = p.read_bytes()
        text = raw.decode("utf-8")
    except FileNotFoundError as e:
        raise InputError("allowed signers file not found", path=str(p)) from e
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read allowed signers: {e}", path=str(p)) from e
    return parse_allowed_signers(text, str(p)), hashlib.sha256(raw).hexdigest()


def policy_signers(policy: Policy, key: str) -> AllowedSigners | None:
    """The allowed signers file the policy's ``key`` names (``approvals.allowed_signers``,
    ``catalog.trusted_signers``, ``audit.allowed_signers``), parsed from the bytes read -- and hashed into the
    policy's identity -- when the policy was loaded; never read again from its path, so a file swapped after that
    read cannot be trusted under the identity of the one that was read. None when the key is not set."""
    read = policy.trust_file(key)
    named = policy.settings.get(key)
    if read is None:  # a policy made without its trust files (a test's Policy): the file as it is now
        return load_allowed_signers(policy.resolve_path(str(named))) if named else None
    if read.source is None:
        return None
    if read.content is None:
        raise InputError("allowed signers file not found" if read.state == "missing" else
                         f"cannot read allowed signers: {read.state}", path=read.source)
    try:
        text = read.content.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"cannot read allowed signers: {e}", path=read.source) from e
    return parse_allowed_signers(text, read.source)
