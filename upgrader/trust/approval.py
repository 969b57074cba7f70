"""Engineer approvals: an SSH signature (namespace ``upgrader-approval``) over a short statement
that names the plan digest, the approver, the requester, creation and expiry times.

The approval file is the statement text followed by the armoured signature. The signed bytes
are exactly the statement (everything before the ``-----BEGIN SSH SIGNATURE-----`` line), so
stock ``ssh-keygen -Y verify -n upgrader-approval`` verifies it too. A statement signed with
``ssh-keygen -Y sign`` (giving ``FILE.sig``) is accepted as well. ``check_approvals`` is the
gate before any host is touched; every refusal says why in plain words.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..core.errors import ApprovalRefused, InputError
from .requester import Requester, same_person
from .signers import AllowedSigners
from .sshsig import BEGIN, PrivateKey, Signature, SignatureError, parse_armored, sign, verify

__all__ = ["NAMESPACE", "Statement", "Approval", "make_statement", "write_approval", "read_approval",
           "check_approvals", "UsedApprovals", "same_person", "is_literal_principal"]

NAMESPACE = "upgrader-approval"
_HEADER = "upgrader approval 1"
_FIELDS = ("plan", "approver", "requester", "created", "expires", "after-hours", "comment")


@dataclass(frozen=True)
class Statement:
    plan: str
    approver: str
    requester: str
    created: _dt.datetime
    expires: _dt.datetime
    after_hours: bool = False
    comment: str = ""

    def text(self) -> str:
        def t(d: _dt.datetime) -> str:
            return d.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        values = [self.plan, self.approver, self.requester, t(self.created), t(self.expires),
                  "yes" if self.after_hours else "no", self.comment]
        return _HEADER + "\n" + "".join(f"{k}: {v}\n" for k, v in zip(_FIELDS, values))

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.text().encode()).hexdigest()


def _one_line(value: str, what: str) -> str:
    if "\n" in value or "\r" in value or len(value) > 500:
        raise InputError(f"{what} must be one line of at most 500 characters")
    if "-----BEGIN" in value or not value.isprintable():
        raise InputError(f"{what} must be plain printable text (no control characters or signature markers)")
    return value


def make_statement(plan_digest: str, approver: str, requester: str, now: _dt.datetime, valid_for: float,
                   comment: str = "", after_hours: bool = False) -> Statement:
    if not re.fullmatch(r"[^\s,]{1,200}", approver):
        raise InputError(f"approver {approver!r} must be one word (the principal of your key in allowed_signers)")
    return Statement(plan_digest, approver, _one_line(requester, "requester"),
                     now.replace(microsecond=0), (now + _dt.timedelta(seconds=valid_for)).replace(microsecond=0),
                     after_hours, _one_line(comment, "comment"))


def parse_statement(text: str, source: str) -> Statement:
    lines = text.split("\n")
    if lines[0] != _HEADER or lines[-1] != "" or len(lines) != len(_FIELDS) + 2:
        raise ApprovalRefused(f"{source}: not an upgrader approval statement (it must start with '{_HEADER}' "
                              f"and have the lines {', '.join(_FIELDS)})")
    values: dict[str, str] = {}
    for key, line in zip(_FIELDS, lines[1:-1]):
        if not line.startswith(key + ": "):
            raise ApprovalRefused(f"{source}: expected the line '{key}: ...', found {line[:60]!r}")
        values[key] = line[len(key) + 2:]

    def when(k: str) -> _dt.datetime:
        try:
            return _dt.datetime.strptime(values[k], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.timezone.utc)
        except ValueError:
            raise ApprovalRefused(f"{source}: {k} is not a UTC time like 2026-11-26T10:00:00Z") from None
    if not re.fullmatch(r"[0-9a-f]{64}", values["plan"]) or values["after-hours"] not in ("yes", "no"):
        raise ApprovalRefused(f"{source}: malformed plan digest or after-hours value")
    st = Statement(values["plan"], values["approver"], values["requester"], when("created"), when("expires"),
                   values["after-hours"] == "yes", values["comment"])
    if st.text() != text:
        raise ApprovalRefused(f"{source}: the statement is not in canonical form")
    return st


@dataclass(frozen=True)
class Approval:
    source: str
    statement: Statement
    signature: Signature
    text: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def write_approval(path: Path, statement: Statement, private_key: PrivateKey) -> str:
    """Sign ``statement`` and write it to ``path`` (core/output.write_output: never through a link planted there or
    beside it); the armored signature."""
    from ..core.output import write_output

    text = statement.text()
    armored = sign(private_key, text.encode(), NAMESPACE)
    write_output(path, (text + armored).encode("utf-8"), what="the approval")
    return armored


def read_approval(path: str | Path) -> Approval:
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ApprovalRefused(f"{p}: cannot read the approval: {e.strerror}") from e
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApprovalRefused(f"{p}: the approval is not UTF-8 text (damaged or altered)") from None
    marker = content.find(BEGIN)
    if marker >= 0:
        text, armored = content[:marker], content[marker:]
    else:  # a statement signed with `ssh-keygen -Y sign` lies beside FILE.sig
        sig = p.with_name(p.name + ".sig")
        if not sig.is_file():
            raise ApprovalRefused(f"{p}: no signature in the file and no {sig.name} beside it")
        text, armored = content, sig.read_text(encoding="utf-8", errors="replace")
    try:
        signature = parse_armored(armored)
    except SignatureError as e:
        raise ApprovalRefused(f"{p}: the signature block is damaged: {e}") from None
    if armored != _rearmor(armored):
        raise ApprovalRefused(f"{p}: the signature block was altered (extra or changed characters)")
    return Approval(str(p), parse_statement(text, str(p)), signature, text)


def _rearmor(armored: str) -> str:
    lines = armored.strip("\n").split("\n")
    return "\n".join(lines) + "\n"


def is_literal_principal(name: str) -> bool:
    """A principal that names one person: no pattern characters (``*``, ``?``, ``!``, ``,``)."""
    return not any(ch in name for ch in "*?!,")


class UsedApprovals:
    """The controller's ledger of approvals already consumed by a run, from its first host lock (replay protection)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def find(self, digest: str) -> dict[str, object] | None:
        if not self.path.exists():
            return None
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("approval") == digest:
                return dict(rec)
        return None

    def mark(self, approvals: Iterable[Approval], run_id: str, now: _dt.datetime) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            for a in approvals:
                f.write(json.dumps({"approval": a.digest, "approver": a.statement.approver, "plan": a.statement.plan,
                                    "run": run_id, "time": now.isoformat(timespec="seconds")}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        fd = os.open(self.path.parent, os.O_RDONLY)  # the ledger's name too, when the line made it
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def count_people(approvals: Iterable[tuple[bytes, set[str], str]]) -> list[tuple[set[bytes], set[str], list[str]]]:
    """The distinct people among approvals given as (key, names, approver): two are one person when their keys are
    equal or a name of one and a name of the other name the same person (``alice@vendor`` == ``alice``, the rule of
    ``requester.same_person``). Returns one (keys, names, approvers) group per person."""
    from .requester import same_person

    groups: list[tuple[set[bytes], set[str], list[str]]] = []
    for key, names, approver in approvals:
        mine: tuple[set[bytes], set[str], list[str]] = ({key}, set(names), [approver])
        rest = []
        for g in groups:
            if key in g[0] or any(same_person(a, b) for a in mine[1] for b in g[1]) or mine[0] & g[0]:
                mine[0].update(g[0])
                mine[1].update(g[1])
                mine[2].extend(g[2])
            else:
                rest.append(g)
        groups = rest + [mine]
    return groups


def check_approvals(paths: list[str], *, plan_digest: str, requester: Requester, signers: AllowedSigners | None,
                    required: int, allow_self: bool, now: _dt.datetime, used: UsedApprovals,
                    skew: float = 300, requester_label: str = "") -> list[Approval]:
    """Every approval must hold; together they must come from ``required`` distinct people
    (``count_people``: distinct keys whose names, the approver's and every literal principal of the key, name no
    common person). ``requester`` is the key that made (or runs) the plan: its approval is a self-approval; so is
    an approval by an engineer the plan's ``requester_label`` names (the name the plan claims)."""
    from .requester import literal_principals, names_the_approver

    if signers is None:
        raise ApprovalRefused("the policy names no allowed signers (approvals.allowed_signers): nobody can approve",
                              hint="set approvals.allowed_signers in the policy file to an OpenSSH allowed_signers file")
    if not paths:
        raise ApprovalRefused("no approval given: an engineer must approve this exact plan before it runs",
                              hint="upgrader approve PLAN --key KEY -o APPROVAL, then: upgrader run PLAN --approval "
                                   "APPROVAL")
    accepted: list[Approval] = []
    for path in paths:
        a = read_approval(path)
        st = a.statement
        try:
            verify(a.signature, a.text.encode(), NAMESPACE)
        except SignatureError as e:
            raise ApprovalRefused(f"{path}: {e}") from None
        try:
            entry = signers.check(st.approver, a.signature.public_key, NAMESPACE, now)
        except ValueError as e:
            raise ApprovalRefused(f"{path}: signed by an untrusted key: {e}") from None
        if st.approver not in entry.principals or not is_literal_principal(st.approver):
            # a pattern (`*@vendor`) lets one key sign as any name it covers, the requester's colleague included:
            # an approver is named by a literal principal of their own key's line, never by a pattern
            raise ApprovalRefused(f"{path}: {st.approver} matches the key {entry.fingerprint} only through the "
                                  f"pattern {', '.join(entry.principals)} ({signers.source} line {entry.line}); "
                                  "an approver must be named exactly (a literal principal, never a pattern)",
                                  hint="give each engineer's key a line with their own principal in the "
                                       "approvals' allowed_signers file")
        if st.plan != plan_digest:
            raise ApprovalRefused(f"{path}: approves plan {st.plan[:16]}…, but this plan is {plan_digest[:16]}…: "
                                  "the plan changed after it was approved (hosts, versions, packages, playbook, "
                                  "policy or window)", hint="have the new plan approved")
        if now >= st.expires:
            raise ApprovalRefused(f"{path}: expired at {st.expires.isoformat()} (approved by {st.approver})",
                                  hint="ask for a new approval")
        if st.created > now + _dt.timedelta(seconds=skew):
            raise ApprovalRefused(f"{path}: created in the future ({st.created.isoformat()}); check the clocks")
        if not allow_self and names_the_approver(requester_label, st.approver,
                                                 literal_principals(signers, a.signature.public_key)):
            raise ApprovalRefused(f"{path}: {st.approver} (key {a.signature.fingerprint}) approved a plan whose "
                                  f"requester is {requester_label!r}: their own plan; another engineer must approve "
                                  "it with their own key (segregation of duties)")
        if not allow_self and requester.same_person(a.signature.public_key, st.approver,
                                                    literal_principals(signers, a.signature.public_key)):
            raise ApprovalRefused(f"{path}: {st.approver} (key {a.signature.fingerprint}) approved their own plan: "
                                  f"the key {requester.fingerprint} {requester.how}; another engineer must approve "
                                  "it with their own key (segregation of duties)")
        prior = used.find(a.digest)
        if prior:
            raise ApprovalRefused(f"{path}: this approval was already used by run {prior.get('run')} at "
                                  f"{prior.get('time')}; an approval is good for one run", hint="ask for a new one")
        accepted.append(a)
    people = count_people([(a.signature.public_key, {a.statement.approver.lower()}
                            | set(literal_principals(signers, a.signature.public_key)), a.statement.approver)
                           for a in accepted])
    if len(people) < required:
        same = "; ".join((" and ".join(sorted(set(p[2]))) if len(set(p[2])) > 1 else f"the {len(p[0])} keys of "
                          f"{p[2][0]}") + " are one person (the same key, or names with the same local part)"
                         for p in people if len(p[0]) > 1 or len(set(p[2])) > 1)
        raise ApprovalRefused(f"the policy requires approvals from {required} different engineers; got "
                              f"{len(people)} ({', '.join(sorted(min(p[2]) for p in people)) or 'none'})"
                              + (f": {same}" if same else ""),
                              hint="another engineer must approve the plan with their own key")
    return accepted
