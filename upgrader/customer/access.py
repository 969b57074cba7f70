"""Time-limited SSH access for an engineer: upgrader's grants in an ``authorized_keys`` file.

A grant is one ``authorized_keys`` line that OpenSSH itself enforces, e.g. (one line)::

    restrict,expiry-time="202611261530Z",from="10.1.2.*" ssh-ed25519 AAAA...
        upgrader-grant:3f9a1c2b7d4e by alice@db-01 for CHG-1234 until 2026-11-26T15:30Z

``restrict`` still lets a client run commands (exec channels) and subsystems (SFTP), which is all
upgrader's own SSH use needs; it takes away the pty, every kind of forwarding and ``~/.ssh/rc``.
The comment marks the line as a grant and carries its id, who granted it, why, and until when;
sshd reads only the options.

The core is pure: bytes in, bytes out, the time passed in. Every line other than the grant being
added, extended or removed comes out byte for byte as it went in (comments, blank lines, CRLF
lines, options lines, a missing final newline). Input that could smuggle options into the file
(quotes, spaces, newlines in ``--from`` or ``--reason``) is refused, never escaped.

``edit_on_host`` is the one function that acts: it reads the file through a host's agent, applies
an edit, and has the agent swap the result in only if the file did not change in between; the
agent holds the lock, writes a temp file, fsyncs, renames and keeps owner and mode (``hostagent/access.py``,
because that is the code that runs on the host). Which file: ``~/.ssh/authorized_keys`` of the
account, the default ``AuthorizedKeysFile``; other settings of that option are not followed.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import hashlib
import ipaddress
import math
import re
import struct
import unicodedata
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from ..core.errors import InputError

__all__ = ["PublicKey", "Grant", "GrantChange", "HostFile", "MARKER", "parse_public_key", "load_public_key_file",
           "check_from", "check_reason", "check_user", "check_hours", "expiry_time", "format_time", "list_grants",
           "add_grant", "remove_grants", "read_on_host", "edit_on_host", "own_authorized_keys", "KeyLine",
           "lines_letting_in", "remember_grant", "close_grant", "current_keys", "AddedLine", "added_during_grants",
           "GrantKept", "grants_kept", "logged_grants", "restore_grant_record"]

MARKER = "upgrader-grant:"
MAX_LINE = 8000  # sshd reads authorized_keys lines of up to 8 KiB
_KEY_FILE_MAX = 16384
_TYPE = re.compile(r"[A-Za-z0-9@._-]{1,64}")
_COMMENT = re.compile(r"upgrader-grant:(?P<id>[A-Za-z0-9]{1,64})(?: by (?P<by>\S+))?(?: for (?P<reason>.*?))?"
                      r"(?: until (?P<until>\S+))?\s*")
_EXPIRY = re.compile(r"(\d{8})(\d{4}(\d{2})?)?([Zz]?)")
_FROM_PATTERN = re.compile(r"!?[A-Za-z0-9.:*?/_-]{1,255}")
_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?")
_CURVES = {"ecdsa-sha2-nistp256": ("nistp256", 65), "ecdsa-sha2-nistp384": ("nistp384", 97),
           "ecdsa-sha2-nistp521": ("nistp521", 133), "sk-ecdsa-sha2-nistp256@openssh.com": ("nistp256", 65)}
_KINDS = ("ssh-ed25519", "ssh-rsa", "sk-ssh-ed25519@openssh.com", *_CURVES)

T = TypeVar("T")


# ------------------------------------------------------------------ the engineer's public key


@dataclass(frozen=True)
class PublicKey:
    kind: str
    blob: bytes

    @property
    def b64(self) -> str:
        return base64.b64encode(self.blob).decode("ascii")

    @property
    def fingerprint(self) -> str:
        """As ``ssh-keygen -l`` prints it."""
        return "SHA256:" + base64.b64encode(hashlib.sha256(self.blob).digest()).decode().rstrip("=")


def _strings(blob: bytes) -> list[bytes]:
    """The SSH wire strings (and mpints) a key blob is made of; ValueError when it is not that."""
    out, pos = [], 0
    while pos < len(blob):
        if pos + 4 > len(blob):
            raise ValueError("truncated")
        (n,) = struct.unpack(">I", blob[pos:pos + 4])
        if pos + 4 + n > len(blob):
            raise ValueError("truncated")
        out.append(blob[pos + 4:pos + 4 + n])
        pos += 4 + n
    return out


def _check_blob(kind: str, blob: bytes) -> str | None:
    """Why this blob is not a usable public key of type ``kind`` (None: it is)."""
    try:
        fields = _strings(blob)
    except ValueError:
        return "the key data is truncated or damaged"
    if not fields or fields[0] != kind.encode():
        return f"the key data does not hold a {kind} key"
    rest = fields[1:]
    if kind in ("ssh-ed25519", "sk-ssh-ed25519@openssh.com"):
        ok = len(rest) == (1 if kind == "ssh-ed25519" else 2) and len(rest[0]) == 32
    elif kind in _CURVES:
        curve, size = _CURVES[kind]
        ok = (len(rest) == (2 if kind.startswith("ecdsa") else 3) and rest[0] == curve.encode()
              and len(rest[1]) == size and rest[1][:1] == b"\x04")
    elif kind == "ssh-rsa":
        ok = len(rest) == 2
        if ok and int.from_bytes(rest[1], "big").bit_length() < 2048:
            return "RSA keys under 2048 bits are too weak to open a customer's host"
    else:
        return None  # unreachable: parse_public_key admits only the kinds above
    return None if ok else "the key data is truncated or damaged"


def parse_public_key(data: bytes, source: str) -> PublicKey:
    """The one OpenSSH public key in ``data`` (a ``.pub`` file); InputError naming ``source`` otherwise."""
    def bad(message: str, hint: str = "give the engineer's public key file, e.g. id_ed25519.pub") -> InputError:
        return InputError(message, path=source, hint=hint)

    text = data[:_KEY_FILE_MAX].decode("utf-8", "replace")
    if "PRIVATE KEY-----" in text or text.startswith("PuTTY-User-Key-File"):
        raise bad("this is a PRIVATE key, not a public key; nothing was changed",
                  "ask the engineer for the .pub file; a private key never leaves its owner")
    if len(data) > _KEY_FILE_MAX:
        raise bad("the file is too large to be a public key")
    if "BEGIN SSH2 PUBLIC KEY" in text:
        raise bad("this public key is in RFC 4716 (SSH2) format", "convert it: ssh-keygen -i -f FILE > FILE.pub")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    if len(lines) != 1:
        raise bad("expected one public key line like 'ssh-ed25519 AAAA... name', found "
                  f"{'none' if not lines else f'{len(lines)} lines'} (a grant is for one key)")
    parts = lines[0].split(None, 2)
    kind = parts[0]
    if kind not in _KINDS and any(k in _KINDS for k in lines[0].split()[1:]):
        raise bad("not an OpenSSH public key line: options come before the key (an authorized_keys line?)",
                  "give the plain public key, 'TYPE BASE64 [comment]'; upgrader sets the options itself")
    if len(parts) < 2 or not _TYPE.fullmatch(kind):
        raise bad("not an OpenSSH public key line (expected 'TYPE BASE64 [comment]', without options)")
    if kind == "ssh-dss":
        raise bad("DSA keys are refused by current OpenSSH", "ask the engineer for an Ed25519 key")
    if kind.endswith("-cert-v01@openssh.com"):
        raise bad("this is an SSH certificate", "give the engineer's plain public key")
    if kind not in _KINDS:
        raise bad(f"unknown key type {kind!r}", "use an Ed25519, ECDSA or RSA key")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise bad("the key data is not valid base64 (a damaged copy?)") from None
    problem = _check_blob(kind, blob)
    if problem:
        raise bad(problem)
    return PublicKey(kind, blob)


def load_public_key_file(path: str | Path) -> PublicKey:
    p = Path(path).expanduser()
    try:
        with open(p, "rb") as f:
            data = f.read(_KEY_FILE_MAX + 1)
    except OSError as e:
        raise InputError(f"cannot read the public key: {e.strerror}", path=str(p),
                         hint="--key wants the engineer's public key file") from None
    return parse_public_key(data, str(p))


# ------------------------------------------------------------------ the other inputs


def check_from(patterns: str) -> str:
    """``--from``: an OpenSSH pattern-list of addresses, host names and CIDR blocks, nothing else."""
    hint = "e.g. --from '10.1.2.*,192.0.2.7' or --from 198.51.100.0/24 (commas, no spaces or quotes)"
    if len(patterns) > 1024:
        raise InputError("--from: at most 1024 characters", hint=hint)
    for pattern in patterns.split(","):
        if not _FROM_PATTERN.fullmatch(pattern):
            raise InputError(f"--from: {pattern!r} is not an OpenSSH address pattern (letters, digits and . : - _, "
                             "* and ? as wildcards, /N for a CIDR block, ! in front to exclude)", hint=hint)
        if "/" in pattern:
            try:
                ipaddress.ip_network(pattern.lstrip("!"), strict=True)
            except ValueError as e:
                raise InputError(f"--from: {pattern!r} is not a CIDR block ({e})", hint=hint) from None
    if all(p.startswith("!") for p in patterns.split(",")):
        raise InputError("--from: only exclusions ('!'): no address would match", hint=hint)
    return patterns


def check_reason(reason: str) -> str | None:
    """``--reason``: one line of plain text (it goes into the entry's comment)."""
    text = reason.strip()
    for ch in text:
        if ch in "\"'`\\" or unicodedata.category(ch)[0] == "C" or unicodedata.category(ch) in ("Zl", "Zp"):
            raise InputError(f"--reason: {ch!r} is not allowed: write the reason on one line, without quotes, "
                             "backslashes or control characters", hint="e.g. --reason 'CHG-1234 upgrade to 7.0.4.9'")
    if len(text) > 200:
        raise InputError("--reason: at most 200 characters", hint="a ticket number and a few words are enough")
    return text or None


def check_user(user: str) -> str:
    if not _USER.fullmatch(user):
        raise InputError(f"--user: {user!r} is not a user name", hint="the login name of an account on the host")
    return user


def check_hours(hours: float | None, default: float, maximum: float, policy_source: str) -> float:
    """``--hours`` (or the policy's default), within the policy's maximum."""
    if hours is None:
        if default > maximum:
            raise InputError(f"access.default_hours ({default:g}) is beyond access.max_hours ({maximum:g})",
                             path=policy_source, hint="fix the policy, or give --hours")
        return default
    if not math.isfinite(hours) or hours <= 0:
        raise InputError(f"--hours must be a number of hours above 0, got {hours:g}",
                         hint=f"e.g. --hours 4 (at most {maximum:g})")
    if hours > maximum:
        raise InputError(f"--hours {hours:g} is beyond the policy's maximum of {maximum:g} hours",
                         hint=f"ask for at most {maximum:g} hours (access.max_hours in {policy_source})")
    return hours


def expiry_time(now: _dt.datetime, hours: float) -> _dt.datetime:
    """When a grant of ``hours`` made at ``now`` ends: UTC, down to the minute (expiry-time's precision)."""
    end = (now + _dt.timedelta(hours=hours)).astimezone(_dt.timezone.utc).replace(second=0, microsecond=0)
    if end <= now:
        raise InputError("--hours is too short: a grant lasts at least one minute")
    return end


def _expiry_option(at: _dt.datetime) -> str:
    return at.astimezone(_dt.timezone.utc).strftime("%Y%m%d%H%MZ")


def _parse_expiry(value: str) -> _dt.datetime | None:
    m = _EXPIRY.fullmatch(value)
    if not m:
        return None
    digits = m.group(1) + (m.group(2) or "0000") + ("" if m.group(3) else "00")
    try:
        # without Z sshd reads the host's local time; lines upgrader writes always say Z, and a hand-written
        # one is read as UTC here (the listing can be off by the host's UTC offset, sshd itself is not)
        return _dt.datetime.strptime(digits, "%Y%m%d%H%M%S").replace(tzinfo=_dt.timezone.utc)
    except ValueError:
        return None


def format_time(at: _dt.datetime) -> str:
    """UTC to the minute, as grants show it: 2026-11-26T15:30Z."""
    return at.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


# ------------------------------------------------------------------ authorized_keys lines


@dataclass(frozen=True)
class _Line:
    number: int
    text: bytes  # without its b"\n" (a CRLF line keeps its b"\r")
    end: bytes  # b"\n", or b"" for a last line without one


@dataclass(frozen=True)
class _Entry:
    options: tuple[tuple[str, str | None], ...] | None  # None: present but not parseable
    kind: str
    b64: str
    blob: bytes
    comment: str

    def option(self, name: str) -> str | None:
        return next((v for k, v in self.options or () if k.lower() == name), None)

    def has(self, name: str) -> bool:
        return any(k.lower() == name for k, _ in self.options or ())


def _split_lines(data: bytes) -> list[_Line]:
    parts = data.split(b"\n")
    lines = [_Line(i + 1, p, b"\n") for i, p in enumerate(parts[:-1])]
    if parts[-1]:
        lines.append(_Line(len(parts), parts[-1], b""))
    return lines


def _join(lines: Sequence[_Line]) -> bytes:
    return b"".join(line.text + line.end for line in lines)


def _key_at(text: str) -> tuple[str, str, bytes, str] | None:
    """``TYPE BASE64 [comment]`` at the start of ``text`` whose blob names TYPE (as sshd reads a key)."""
    m = re.match(r"([^ \t]+)[ \t]+([^ \t]+)(?:[ \t]+(.*))?$", text, re.S)
    if not m or not _TYPE.fullmatch(m.group(1)):
        return None
    try:
        blob = base64.b64decode(m.group(2), validate=True)
        first = _strings(blob)[0]
    except (binascii.Error, ValueError, IndexError):
        return None
    return (m.group(1), m.group(2), blob, m.group(3) or "") if first == m.group(1).encode() else None


def _skip_options(text: str) -> int | None:
    """Where the options at the start of ``text`` end (sshd's rule: a space outside double quotes)."""
    quoted, i = False, 0
    while i < len(text) and (quoted or text[i] not in " \t"):
        if text[i] == "\\" and text[i + 1:i + 2] == '"':
            i += 1
        elif text[i] == '"':
            quoted = not quoted
        i += 1
    return None if quoted else i


def _parse_options(text: str) -> tuple[tuple[str, str | None], ...] | None:
    out: list[tuple[str, str | None]] = []
    pos = 0
    while pos < len(text):
        m = re.match(r'([A-Za-z0-9-]+)(?:="((?:[^"\\]|\\.)*)")?(,|$)', text[pos:])
        if not m:
            return None
        value = m.group(2)
        out.append((m.group(1), value.replace('\\"', '"') if value is not None else None))
        pos += m.end()
        if m.group(3) == "" and pos < len(text):
            return None
    return tuple(out)


def _entry(line: _Line) -> _Entry | None:
    text = line.text.decode("utf-8", "surrogateescape").rstrip("\r").lstrip(" \t")
    if not text or text.startswith("#"):
        return None
    key = _key_at(text)
    options: tuple[tuple[str, str | None], ...] | None = ()
    if key is None:
        end = _skip_options(text)
        if end is None:
            return None
        key = _key_at(text[end:].lstrip(" \t"))
        if key is None:
            return None
        options = _parse_options(text[:end])
    return _Entry(options, *key)


def _options_text(options: Sequence[tuple[str, str | None]]) -> str:
    return ",".join(k if v is None else f'{k}="{v.replace(chr(34), chr(92) + chr(34))}"' for k, v in options)


# ------------------------------------------------------------------ grants


@dataclass(frozen=True)
class Grant:
    """One grant line as the file has it now."""

    id: str
    line: int
    kind: str
    fingerprint: str
    expires: _dt.datetime | None  # None: the line has no (readable) expiry-time
    from_: str | None
    granted_by: str | None
    reason: str | None

    def seconds_left(self, now: _dt.datetime) -> float | None:
        return None if self.expires is None else (self.expires - now).total_seconds()

    def expired(self, now: _dt.datetime) -> bool:
        return self.expires is not None and self.expires <= now

    def describe(self, now: _dt.datetime) -> dict[str, Any]:
        left = self.seconds_left(now)
        return {"id": self.id, "line": self.line, "key_type": self.kind, "fingerprint": self.fingerprint,
                "expires": format_time(self.expires) if self.expires else None, "expired": self.expired(now),
                "seconds_left": max(0, int(left)) if left is not None else None, "from": self.from_,
                "granted_by": self.granted_by, "reason": self.reason}


def _grant(line: _Line, entry: _Entry | None) -> Grant | None:
    if entry is None:
        return None
    m = _COMMENT.fullmatch(entry.comment)
    if not m:
        return None
    expiry = entry.option("expiry-time")
    return Grant(m.group("id"), line.number, entry.kind, PublicKey(entry.kind, entry.blob).fingerprint,
                 _parse_expiry(expiry) if expiry else None, entry.option("from"), m.group("by"), m.group("reason"))


def list_grants(data: bytes) -> list[Grant]:
    """The grant lines of an authorized_keys file, in file order."""
    return [g for line in _split_lines(data) if (g := _grant(line, _entry(line))) is not None]


def own_authorized_keys() -> list[Path]:
    """The ``authorized_keys`` files of the account this process runs as: where ``access grant`` without ``--user``
    puts a grant on this machine (the agent takes ``$HOME``) and where sshd looks (the account's home in the password
    database). Both, so that a session which sets ``HOME`` elsewhere does not hide a grant into the account; and
    ``authorized_keys2`` beside each, which sshd reads too by default (Debian's AuthorizedKeysFile)."""
    import os
    import pwd

    homes = [pwd.getpwuid(os.geteuid()).pw_dir, os.environ.get("HOME") or ""]
    return list(dict.fromkeys(Path(h) / ".ssh" / name for h in homes if h
                              for name in ("authorized_keys", "authorized_keys2")))


@dataclass(frozen=True)
class KeyLine:
    """A line of an authorized_keys file that lets a key log in: its grant when it is one (else None)."""

    path: Path
    line: int
    grant: Grant | None


def lines_letting_in(files: Sequence[Path], fingerprint: str, now: _dt.datetime) -> list[KeyLine]:
    """Every line of ``files`` that lets the key ``fingerprint`` log in at ``now``: decided by the key itself (its
    blob), whatever the line's comment or options, so a grant whose marker comment was edited away, or the key copied
    into another file, still counts; a line whose ``expiry-time`` has passed does not. A missing or unreadable file
    holds none; each is read whole (a file larger than 64 MiB is refused, exit 4)."""
    return [line for fp, line in _keys_letting_in(files, now) if fp == fingerprint]


def open_grant_lines(files: Sequence[Path], now: _dt.datetime, home: Path | None = None) -> list[KeyLine]:
    """Every unexpired line of ``files`` that lets in a granted key: a grant line, and -- with ``home`` -- any line,
    whatever its comment, of a key a grant into this account was made for (HOME/access/grants and the audit log's
    grant events: the marker comment edited away, or the line copied into authorized_keys2, lets that engineer in
    all the same; so does a grant whose record was deleted)."""
    granted: set[str] = set()
    if home is not None:
        for kept in grants_kept(home):
            granted |= kept.engineers
    return [line for fp, line in _keys_letting_in(files, now) if line.grant is not None or fp in granted]


#: an authorized_keys file is read whole (sshd reads it all) up to this size; a larger one is refused, not read in part
AUTHORIZED_KEYS_READ_MAX = 64 << 20


def _read_whole(path: Path) -> bytes | None:
    """The whole of an authorized_keys file, None when it is missing, unreadable or not a regular file (sshd lets
    no key in through those). ApprovalRefused (exit 4) when it is larger than AUTHORIZED_KEYS_READ_MAX: padding in
    front of a line must not hide it (attack12r21 H2)."""
    import os
    import stat

    from ..core.errors import ApprovalRefused

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            data = f.read(AUTHORIZED_KEYS_READ_MAX + 1)
        except OSError:
            return None
    if len(data) > AUTHORIZED_KEYS_READ_MAX:
        raise ApprovalRefused(f"{path} is larger than {AUTHORIZED_KEYS_READ_MAX >> 20} MiB: upgrader reads the whole "
                              "file to know who may log in to this account (sshd reads it all) and refuses rather "
                              "than read it in part; nothing was changed",
                              hint=f"remove from {path} what is not a key (edit it by hand), then run the command "
                                   "again")
    return data


def _keys_letting_in(files: Sequence[Path], now: _dt.datetime) -> list[tuple[str, KeyLine]]:
    """(fingerprint, line) of every unexpired line of ``files`` that lets a key in: a key, or a ``cert-authority``
    line's certificate authority (whatever it signs logs in)."""
    found: list[tuple[str, KeyLine]] = []
    for path in files:
        data = _read_whole(path)
        if data is None:
            continue
        for line in _split_lines(data):
            entry = _entry(line)
            if entry is None:
                continue
            grant = _grant(line, entry)
            expiry = entry.option("expiry-time")
            expires = _parse_expiry(expiry) if expiry else None
            if (grant is not None and grant.expired(now)) or (expires is not None and expires <= now):
                continue
            found.append((PublicKey(entry.kind, entry.blob).fingerprint, KeyLine(path, line.number, grant)))
    return found


# ------------------------------------------------------------------ what a grant into this account left behind
#
# An engineer let into the operator's own account can add a second key of their own (or a cert-authority line) to
# its authorized_keys while the grant is open: once the grant is closed no grant is left, but that key still logs
# in. So a grant into this account (access grant without --user) keeps, in HOME/access/grants/ID.json, the keys
# that let anyone in when it was made, and, once revoked, the keys that did then: a key added in between came in
# while the engineer could, and counts as the engineer's (added_during_grants).

def _grant_record(home: Path, grant_id: str) -> Path:
    return home / "access" / "grants" / f"{grant_id}.json"


def remember_grant(home: Path, grant_id: str, fingerprint: str, keys_before: set[str], now: _dt.datetime) -> None:
    """Keep the keys that let anyone in to this account before grant ``grant_id`` (of the key ``fingerprint``) was
    made; an extended grant keeps its first record."""
    import json

    path = _grant_record(home, grant_id)
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"grant": grant_id, "fingerprint": fingerprint, "granted": format_time(now),
              "keys_before": sorted(keys_before)}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


def close_grant(home: Path, grant_id: str, files: Sequence[Path], now: _dt.datetime) -> list[str]:
    """Grant ``grant_id`` was revoked: its record keeps the keys that let anyone in then (keys added later are the
    account's own, the engineer no longer in it). Returns those keys (the revoke's audit event carries them too)."""
    import json

    keys = sorted({fp for fp, _ in _keys_letting_in(files, now)})
    path = _grant_record(home, grant_id)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return keys
    if not isinstance(record, dict) or "keys_at_revoke" in record:
        return keys
    record.update(revoked=format_time(now), keys_at_revoke=keys)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    return keys


def current_keys(files: Sequence[Path], now: _dt.datetime) -> set[str]:
    """The fingerprints of every key (or certificate authority) ``files`` let in at ``now``."""
    return {fp for fp, _ in _keys_letting_in(files, now)}


@dataclass(frozen=True)
class AddedLine:
    """A line that lets a key in, added to the account while grant ``grant`` (of ``engineer``'s key) was open."""

    grant: str
    engineer: str
    fingerprint: str
    line: KeyLine


def added_during_grants(home: Path, files: Sequence[Path], now: _dt.datetime,
                        engineer: str | None = None) -> list[AddedLine]:
    """The lines of ``files`` that still let in a key added while a grant into this account was open (of the key
    ``engineer``; None: any grant): a key letting in when the grant was revoked (or now, for a grant never revoked)
    that did not before it was made. A grant counts from its record and from the audit log's grant events
    (grants_kept): deleting or rewriting the record does not hide it."""
    found: list[AddedLine] = []
    now_keys = _keys_letting_in(files, now)
    for kept in grants_kept(home):
        if engineer is not None and engineer not in kept.engineers:
            continue
        grantee = engineer if engineer is not None else sorted(kept.engineers)[0]
        for fp, line in now_keys:
            if (fp not in kept.engineers and fp not in kept.before
                    and (kept.at_revoke is None or fp in kept.at_revoke)):
                found.append(AddedLine(kept.grant, grantee, fp, line))
    return found


# ------------------------------------------------------------------ the grant's record and the audit log's
#
# HOME/access/grants/ID.json is the account's file: an engineer logged in through the grant can delete or rewrite it.
# Every grant into this account is also in the audit log (signed, chained, witnessed: an edit makes ``audit verify``
# say ALTERED), and its events carry what the record holds: ``access_granted`` (and ``access_extended``) the key's
# fingerprint and ``keys_before``, ``access_revoked`` the ``keys_at_revoke``. The checks take both together, the
# stricter of the two, and a grant the log holds whose record is missing or unreadable is a refusal of its own.


@dataclass(frozen=True)
class GrantKept:
    """What is known of grant ``grant`` into this account, its record and the audit log taken together."""

    grant: str
    engineers: frozenset[str]  # the granted key (both sources' word)
    before: frozenset[str]  # the keys that let anyone in before it was made (in every source that says)
    at_revoke: frozenset[str] | None  # those that did when it was revoked (None: open, or so one source says)
    record: Path
    record_problem: str | None  # the log holds the grant but its record is missing or unreadable: why


def _read_record(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """A grant record, or why it cannot be read."""
    import json

    try:
        record = json.loads(path.read_bytes()[:1 << 20].decode("utf-8"))
        if not isinstance(record, dict):
            raise TypeError("not a JSON object")
        str(record["fingerprint"])
        before = record["keys_before"]
        at_revoke = record.get("keys_at_revoke", [])
        if not isinstance(before, list) or not isinstance(at_revoke, list):
            raise TypeError("keys_before or keys_at_revoke is not a list")
        return record, None
    except FileNotFoundError:
        return None, "is missing"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return None, f"cannot be read ({e.__class__.__name__}: {e})"


def logged_grants(home: Path) -> dict[str, dict[str, Any]]:
    """The grants into this account the audit log (HOME/audit/audit.jsonl) holds, by id: ``fingerprint`` (a set),
    ``keys_before`` (the first event's), ``keys_at_revoke`` (a set, None while no revoke event says), ``line`` (of
    the grant's first event). Only events that carry ``keys_before`` are grants into this account (a grant into
    another account, or on another host, keeps none); a log that cannot be read holds none."""
    import json

    from ..core.recorder import audit_path

    try:
        with open(audit_path(home), "rb") as f:
            data = f.read()
    except OSError:
        return {}
    found: dict[str, dict[str, Any]] = {}
    for number, raw in enumerate(data.split(b"\n"), 1):
        if b'"access_' not in raw:
            continue
        try:
            rec = json.loads(raw)
            event, d = rec["event"], rec.get("data") or {}
            grant = str(d["grant"])
        except (ValueError, KeyError, TypeError):
            continue
        if event in ("access_granted", "access_extended") and isinstance(d.get("keys_before"), list):
            kept = found.setdefault(grant, {"fingerprint": set(), "keys_before": {str(k) for k in d["keys_before"]},
                                            "keys_at_revoke": None, "line": number})
            if d.get("fingerprint"):
                kept["fingerprint"].add(str(d["fingerprint"]))
        elif event == "access_revoked" and grant in found and isinstance(d.get("keys_at_revoke"), list):
            then = found[grant]["keys_at_revoke"] or set()
            found[grant]["keys_at_revoke"] = then | {str(k) for k in d["keys_at_revoke"]}
    return found


def grants_kept(home: Path) -> list[GrantKept]:
    """Every grant into this account, from its record (HOME/access/grants/ID.json) and the audit log together: the
    engineer is any key either names, a key let in before only if both say so, revoked only if both say so (the
    keys then: either's)."""
    folder = home / "access" / "grants"
    records: dict[str, tuple[dict[str, Any] | None, str | None]] = {}
    for path in sorted(folder.glob("*.json")):
        records[path.stem] = _read_record(path)
    logged = logged_grants(home)
    out: list[GrantKept] = []
    for grant in sorted(set(records) | set(logged)):
        record, problem = records.get(grant) or _read_record(_grant_record(home, grant))
        log = logged.get(grant)
        engineers: set[str] = set()
        befores: list[set[str]] = []
        revokes: list[set[str] | None] = []
        if record is not None:
            engineers.add(str(record["fingerprint"]))
            befores.append({str(k) for k in record["keys_before"]})
            revokes.append({str(k) for k in record["keys_at_revoke"]} if "keys_at_revoke" in record else None)
        if log is not None:
            engineers |= log["fingerprint"]
            befores.append(log["keys_before"])
            revokes.append(log["keys_at_revoke"])
        if not engineers:
            continue
        before = set.intersection(*befores) if befores else set()
        at_revoke = None if not revokes or any(r is None for r in revokes) else \
            set().union(*[r for r in revokes if r is not None])
        out.append(GrantKept(grant, frozenset(engineers), frozenset(before),
                             frozenset(at_revoke) if at_revoke is not None else None, _grant_record(home, grant),
                             problem if log is not None and record is None else None))
    return out


def restore_grant_record(home: Path, grant_id: str, now: _dt.datetime) -> bool:
    """Write grant ``grant_id``'s record back from the audit log when the log holds the grant and the record is
    missing or unreadable (True: it was written)."""
    import json

    log = logged_grants(home).get(grant_id)
    path = _grant_record(home, grant_id)
    if log is None or _read_record(path)[0] is not None:
        return False
    record: dict[str, Any] = {"grant": grant_id, "fingerprint": sorted(log["fingerprint"])[0],
                              "keys_before": sorted(log["keys_before"]), "restored": format_time(now),
                              "restored_from": f"audit log line {log['line']}"}
    if log["keys_at_revoke"] is not None:
        record["keys_at_revoke"] = sorted(log["keys_at_revoke"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    return True


def _comment(grant_id: str, by: str | None, reason: str | None, expires: _dt.datetime) -> str:
    return (f"{MARKER}{grant_id}" + (f" by {by}" if by else "") + (f" for {reason}" if reason else "")
            + f" until {format_time(expires)}")


def _safe_name(who: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@-]", "_", who)[:64] or "unknown"


@dataclass(frozen=True)
class GrantChange:
    """What ``add_grant`` did: the new file, the grant as written, and whether it extended one."""

    data: bytes
    grant: Grant
    extended: bool
    previous_expires: _dt.datetime | None


def add_grant(data: bytes, key: PublicKey, *, expires: _dt.datetime, from_: str | None, by: str,
              reason: str | None, new_id: Callable[[], str], source: str) -> GrantChange:
    """Add a grant for ``key``, or extend its grant (new expiry; --from and --reason replaced when given).

    Refused (InputError naming ``source`` and the line) when a line that is not a grant already lets
    the key in: a time limit on a second line would change nothing.
    """
    lines = _split_lines(data)
    entries = [_entry(line) for line in lines]
    found = None
    for index, (line, entry) in enumerate(zip(lines, entries, strict=True)):
        if entry is None or entry.blob != key.blob:
            continue
        if _grant(line, entry) is None and not entry.has("cert-authority"):
            raise InputError(f"line {line.number}: key {key.fingerprint} is already authorized permanently (a line "
                             "upgrader did not write); a time-limited grant would change nothing, nothing was changed",
                             path=source, hint="remove that line by hand first if this access should end")
        if found is None and _grant(line, entry) is not None:
            found = index
    if found is not None:
        line, entry = lines[found], entries[found]
        assert entry is not None
        old = _grant(line, entry)
        assert old is not None
        options = [(k, v) for k, v in entry.options or () if k.lower() not in ("expiry-time", "from", "restrict")]
        new_from = from_ or old.from_
        options = ([("restrict", None), ("expiry-time", _expiry_option(expires))]
                   + ([("from", new_from)] if new_from else []) + options)
        text = (f"{_options_text(options)} {entry.kind} {entry.b64} "
                f"{_comment(old.id, old.granted_by, reason or old.reason, expires)}")
        lines[found] = replace(line, text=_encoded(text))
        new_data = _join(lines)
        grant = _grant(lines[found], _entry(lines[found]))
        assert grant is not None
        return GrantChange(new_data, grant, True, old.expires)
    taken = {g.id for g in list_grants(data)}
    grant_id = new_id()
    while grant_id in taken:
        grant_id = new_id()
    options = [("restrict", None), ("expiry-time", _expiry_option(expires))] + ([("from", from_)] if from_ else [])
    text = f"{_options_text(options)} {key.kind} {key.b64} {_comment(grant_id, _safe_name(by), reason, expires)}"
    number = len(lines) + 1
    if lines and lines[-1].end == b"":  # keep the file without a final newline: the new line goes last, bare
        lines[-1] = replace(lines[-1], end=b"\n")
        new = _Line(number, _encoded(text), b"")
    else:
        new = _Line(number, _encoded(text), b"\n")
    grant = _grant(new, _entry(new))
    assert grant is not None
    return GrantChange(_join([*lines, new]), grant, False, None)


def _encoded(text: str) -> bytes:
    data = text.encode("utf-8", "surrogateescape")
    if len(data) > MAX_LINE:
        raise InputError(f"the entry would be {len(data)} bytes long; sshd reads lines of at most 8 KiB",
                         hint="shorten --from or --reason, or use a smaller key type (Ed25519)")
    return data


def remove_grants(data: bytes, select: Callable[[Grant], bool]) -> tuple[bytes, list[Grant]]:
    """Remove the grant lines ``select`` picks; every other line is kept byte for byte.

    A file that ended without a newline still does (the newline a grant added before it goes too).
    """
    lines = _split_lines(data)
    keep: list[_Line] = []
    removed: list[Grant] = []
    for line in lines:
        grant = _grant(line, _entry(line))
        if grant is not None and select(grant):
            removed.append(grant)
        else:
            keep.append(line)
    if removed and lines and lines[-1].end == b"" and keep and keep[-1].end == b"\n":
        keep[-1] = replace(keep[-1], end=b"")
    return _join(keep), removed


# ------------------------------------------------------------------ on a host, through its agent


@dataclass(frozen=True)
class HostFile:
    """An account's authorized_keys as the agent read it."""

    host: str
    user: str
    path: str
    exists: bool
    data: bytes
    sha256: str | None


def read_on_host(agent: Any, user: str | None) -> HostFile:
    reply = _call(agent, "access_read", user=user)
    return HostFile(agent.transport.name, str(reply["user"]), str(reply["path"]), bool(reply["exists"]),
                    base64.b64decode(reply["data"]), reply["sha256"])


def edit_on_host(agent: Any, user: str | None, edit: Callable[[HostFile], tuple[bytes, T]],
                 attempts: int = 5) -> tuple[HostFile, T]:
    """Read the account's authorized_keys, ``edit`` it, and have the agent swap the result in, if the file
    is still what was read (else read and edit again). Nothing is written when the edit changes nothing."""
    for _ in range(attempts):
        current = read_on_host(agent, user)
        new, result = edit(current)
        if new == current.data:
            return current, result
        from ..fleet.transport.base import AgentFailure

        try:
            agent.call("access_write", user=user, expect=current.sha256, data=base64.b64encode(new).decode("ascii"))
        except AgentFailure as e:
            if e.kind == "conflict":
                continue
            if e.kind == "host_trust":  # the host's own trust root decides who may log in there: exit 4
                from ..core.errors import ApprovalRefused

                raise ApprovalRefused(f"{agent.transport.name}: {e.message}",
                                      hint="nothing was changed in authorized_keys") from None
            raise _input_error(agent, e) from None
        return current, result
    raise InputError(f"{agent.transport.name}: the authorized_keys file kept changing while upgrader edited it",
                     hint="try again when nobody else is editing it")


def _call(agent: Any, op: str, **request: Any) -> dict[str, Any]:
    from ..fleet.transport.base import AgentFailure

    try:
        return dict(agent.call(op, **request))
    except AgentFailure as e:
        raise _input_error(agent, e) from None


def _input_error(agent: Any, e: Any) -> InputError:
    return InputError(f"{agent.transport.name}: {e.message}", hint="nothing was changed in authorized_keys")
