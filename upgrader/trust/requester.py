"""Who asked for a plan, as a key: people are their keys, not the names they type.

``plan --key KEY`` signs the plan's digest (namespace ``upgrader-plan``) and records the key's
fingerprint in the plan's ``requester``; the armoured signature is kept in the plan's ``signature``
(outside the digest, which it signs). Where the policy allows unsigned plans
(``approvals.allow_unsigned_plans``), the requester is the operator whose key runs the plan. An
approval signed by the requester's key, or by an approver whose principal names the requester's
key in allowed_signers, is a self-approval.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Callable, Mapping

from ..core.errors import ApprovalRefused
from ..core.shapes import PlanData
from .signers import AllowedSigner, AllowedSigners
from .sshsig import PrivateKey, SignatureError, fingerprint, parse_armored, sign, verify

__all__ = ["NAMESPACE", "Requester", "sign_plan", "plan_signer", "requester_of", "literal_principals",
           "listed_names",            "names_the_approver", "refuse_pattern_requester", "refuse_revoked_requester"]

NAMESPACE = "upgrader-plan"
_PATTERN_CHARS = set("*?!,")


@dataclass(frozen=True)
class Requester:
    """The key that stands for the person who asked for a plan, and the literal names that key has."""

    key: bytes
    principals: frozenset[str]
    how: str  # "signed the plan" or "runs the plan"

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.key)

    def same_person(self, key: bytes, principal: str, principals: frozenset[str] = frozenset()) -> bool:
        """Is the approver (their key, the name they approve as, the literal names of their key) the requester:
        the same key, or a name of theirs and a name of the requester's key that name the same person by the rule
        used for labels (``alice@vendor`` == ``alice@customer`` == ``alice``)?"""
        return key == self.key or any(same_person(mine, theirs) for mine in {principal, *principals}
                                      for theirs in self.principals)


def same_person(approver: str, requester: str) -> bool:
    """Approver principal and plan requester name the same person (``alice`` == ``alice@site``)."""
    a, r = approver.lower(), requester.lower()
    return a == r or a.split("@")[0] == r.split("@")[0]


def names_the_approver(label: str, approver: str, principals: frozenset[str] = frozenset()) -> bool:
    """Does the plan's requester label (a name anyone can type, ``plan --requester``) name the approver, by the
    principal they approve as or any literal principal of their key? Keys decide who asked; this cheap guard
    also refuses an engineer approving a plan that claims to be their own."""
    if not label:
        return False
    return any(same_person(name, label) for name in {approver, *principals})


def literal_principals(signers: AllowedSigners | None, key: bytes) -> frozenset[str]:
    """The names a key is listed under (patterns left out), lowercased, in any namespace."""
    if signers is None:
        return frozenset()
    return frozenset(p.lower() for e in signers.entries if e.key_blob == key for p in e.principals
                     if not _PATTERN_CHARS & set(p))


def listed_names(signers: AllowedSigners | None, key: bytes) -> list[str]:
    """The literal names ``key`` is listed under in ``signers`` (as written, in file order, patterns left out): who
    the requester of a plan signed with ``key`` is, whatever name the plan says."""
    if signers is None:
        return []
    return list(dict.fromkeys(p for e in signers.entries if e.key_blob == key for p in e.principals
                              if not _PATTERN_CHARS & set(p)))


def refuse_pattern_requester(signers: AllowedSigners | None, key: bytes, source: str) -> None:
    """ApprovalRefused (exit 4) when ``signers`` list the plan's signing ``key`` only through pattern principals
    (``*@vendor``): that is nobody in particular, so the self-approval rule could not tell its requester from an
    approver. ``run`` refuses such a plan, and so do ``approve`` and ``plan show`` (before anyone reviews or signs
    it); the message names each principal and its line."""
    lines = _lines_of(signers, key)
    if signers is None or not lines or literal_principals(signers, key):
        return
    named = "; ".join(f"{','.join(e.principals)} ({signers.source} line {e.line})" for e in lines)
    raise ApprovalRefused(f"{source}: the plan was signed by {fingerprint(key)}, which {signers.source} lists only "
                          f"through a pattern principal: {named}: a pattern is never a plan's requester identity, so "
                          "the self-approval rule could not tell its requester from an approver",
                          hint=f"list the requester's key in {signers.source} under a literal name of its own (e.g. "
                               "'alice@customer namespaces=\"upgrader-plan\" ssh-ed25519 …'), then make and approve "
                               "the plan again")


def refuse_revoked_requester(signers: AllowedSigners | None, key: bytes, source: str, now: _dt.datetime) -> None:
    """ApprovalRefused (exit 4) when ``signers`` list the plan's signing ``key`` but no line of it lets that key sign
    plans now: every line leaves out the namespace ``upgrader-plan`` (``namespaces=``) or is outside its
    ``valid-after``/``valid-before`` at ``now``. That is how an operator revokes a requester the OpenSSH way, and the
    host trust root (``ssh-keygen -Y verify``) already honours it; the controller must too, or a revoked requester (or
    a key listed only for the audit) still asks for plans. A key no line names is refused by the caller."""
    lines = _lines_of(signers, key)
    if signers is None or not lines or any(e.allows_namespace(NAMESPACE) and e.valid_at(now) for e in lines):
        return
    why = "; ".join(f"line {e.line} ({','.join(e.principals)}): {_why_not(e, now)}" for e in lines)
    raise ApprovalRefused(f"{source}: the plan was signed by {fingerprint(key)}, which {signers.source} does not let "
                          f"sign plans now: {why}: a requester whose line leaves out {NAMESPACE!r} or has expired "
                          "cannot ask for a plan",
                          hint=f"if that person may still ask for plans, the operator gives their line in "
                               f"{signers.source} the namespace {NAMESPACE!r} and a valid time; otherwise a listed "
                               "requester makes the plan again with their own key (plan --key)")


def _lines_of(signers: AllowedSigners | None, key: bytes) -> list[AllowedSigner]:
    """The lines of ``signers`` that list ``key`` (none without a file)."""
    return [e for e in signers.entries if e.key_blob == key] if signers is not None else []


def _why_not(entry: AllowedSigner, now: _dt.datetime) -> str:
    """Why an allowed_signers line does not let its key sign plans at ``now`` (namespace first, as ssh-keygen)."""
    if not entry.allows_namespace(NAMESPACE):
        return f"namespaces=\"{','.join(entry.namespaces or ())}\" leaves out {NAMESPACE!r}"
    if entry.valid_before is not None and now > entry.valid_before:
        return f"expired (valid-before {entry.valid_before.isoformat()})"
    return f"not valid yet (valid-after {entry.valid_after.isoformat() if entry.valid_after else '?'})"


def sign_plan(data: PlanData, private_key: PrivateKey, digest_of: Callable[[Mapping[str, object]], str]
              ) -> PlanData:
    """``data`` with the requester's key fingerprint recorded (inside the digest) and the signature of the
    resulting digest (outside it). ``digest_of`` computes a plan digest from plan data."""
    from .sshsig import public_key_blob

    blob = public_key_blob(private_key.public_key())
    signed: PlanData = {**data, "requester": {**data["requester"], "key": fingerprint(blob)}}
    signed.pop("signature", None)
    return {**signed, "signature": sign(private_key, digest_of(signed).encode(), NAMESPACE)}


def plan_signer(data: PlanData, digest: str, source: str) -> bytes | None:
    """The key that signed the plan (checked), or None for an unsigned plan; ApprovalRefused (exit 4) when
    the plan names a requester key but its signature is missing, damaged or by another key."""
    claimed = (data.get("requester") or {}).get("key")
    armored = data.get("signature")
    if claimed is None and armored is None:
        return None
    if not armored or not claimed:
        raise ApprovalRefused(f"{source}: the plan's requester key and signature do not go together (one of them "
                              "was removed)", hint="make the plan again with 'upgrader plan --key KEY'")
    try:
        signature = parse_armored(str(armored))
        verify(signature, digest.encode(), NAMESPACE)
    except SignatureError as e:
        raise ApprovalRefused(f"{source}: the requester's signature of the plan does not verify: {e}",
                              hint="the plan was changed after it was signed; make it again") from None
    if signature.fingerprint != claimed:
        raise ApprovalRefused(f"{source}: the plan names requester key {claimed} but was signed by "
                              f"{signature.fingerprint}", hint="make the plan again with 'upgrader plan --key KEY'")
    return signature.public_key


def requester_of(data: PlanData, digest: str, source: str, *, signers: AllowedSigners | None,
                 allow_unsigned: bool, operator_key: bytes | None) -> Requester:
    """The requester of a plan as a key: its signer (who must be known in allowed_signers, or be the operator who
    runs it: the guide signs its plans with the operator's key), else, where the policy allows unsigned plans, the
    operator who runs it. Its principals are all the literal names of the key, revoked lines included: a revoked
    line still makes its owner the same person as an approver. Whether the signer may sign plans now is checked
    after the self-approval rule (``refuse_revoked_requester``), whose refusal says more when both apply."""
    key = plan_signer(data, digest, source)
    if key is not None:
        if key == operator_key:  # signed by the operator who runs it (the guide's plans): they asked for it
            return Requester(key, _named(signers, key, source, "signed the plan and runs it"),
                             "signed the plan and runs it")
        if signers is not None and not any(e.key_blob == key for e in signers.entries):
            raise ApprovalRefused(f"{source}: the plan was signed by {fingerprint(key)}, a key that is not in "
                                  f"{signers.source}: nobody can tell whose plan it is",
                                  hint="sign plans with your key listed in the approvals' allowed_signers")
        refuse_pattern_requester(signers, key, source)
        return Requester(key, literal_principals(signers, key), "signed the plan")
    if not allow_unsigned:
        raise ApprovalRefused(f"{source}: the plan is not signed and the policy requires signed plans "
                              "(approvals.allow_unsigned_plans: false)",
                              hint="make the plan with 'upgrader plan --key YOUR_KEY'")
    if operator_key is None:
        raise ApprovalRefused(f"{source}: the plan is not signed and no operator key runs it: nobody can tell "
                              "whose plan it is", hint="give --audit-key KEY, or sign the plan (plan --key)")
    return Requester(operator_key, _named(signers, operator_key, source, "runs the unsigned plan"), "runs the plan")


def _named(signers: AllowedSigners | None, key: bytes, source: str, role: str) -> frozenset[str]:
    """The names of the operator's key, who counts as the requester: a key no line of the policy's allowed_signers
    names (in any namespace) is nobody the self-approval rule can tell apart from an approver, so it is refused like
    any unknown signer (exit 4). The operator key is whatever the person at the controller names (--audit-key)."""
    names = literal_principals(signers, key)
    if signers is not None and not names:
        raise ApprovalRefused(f"{source}: the operator key {fingerprint(key)} {role}, but no line of "
                              f"{signers.source} names it: nobody can tell whose plan it is, so an approval could "
                              "be its requester's own", hint=f"add the operator's key to {signers.source} under a "
                              "literal name of its own (e.g. 'you@site namespaces=\"upgrader-plan\" ssh-ed25519 "
                              "…'), or sign the plan with your listed key (plan --key)")
    return names
