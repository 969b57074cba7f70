"""``upgrader approve``: an engineer reviews a plan and signs their approval of exactly that plan."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ...core.errors import ApprovalRefused, InputError, PolicyRefused
from ...core.exit_codes import ExitCode
from ._common import console, print_json


def cmd_approve(args: argparse.Namespace) -> int:
    from ...trust.approval import make_statement, write_approval
    from ...core.clock import clock_of
    from ...core.document import parse_duration
    from ...core.gate import policy_mismatch
    from ...trust.keys import Identity, load_private_key
    from ...trust.requester import names_the_approver, plan_signer
    from .review import print_review, reviewed_plan

    plan, review, policy = reviewed_plan(args)  # what the engineer signs, in full, before anything is signed
    c = None if args.json else console()  # --json (scripts): rich is not even imported
    if c is not None:
        print_review(c, review)
    if not plan.allowed:
        raise PolicyRefused("the version policy refuses this plan (see above); a refused plan cannot be approved")
    again = [(h["host"], h.get("decided_again") or {}) for h in review["hosts"]]
    refused = [f"{name}: {a['error']}" for name, a in again if a.get("refused")]
    if refused:
        raise ApprovalRefused("the plan does not match the signed catalog (see above), nothing was signed:\n  "
                              + "\n  ".join(refused), hint="make and approve a new plan")
    # a catalog this machine cannot read or verify (CANNOT in the review): the run checks it again before any host
    differ = [name for name, a in again if not a.get("error") and not a.get("same", False)]
    if differ:
        raise PolicyRefused(f"the version policy decides differently than the plan says for {', '.join(differ)} "
                            "(see above): the plan was edited or the policy changed; nothing was signed",
                            hint="make and approve a new plan")
    refusal = policy_mismatch(plan.data["policy"], policy)
    if refusal is not None:
        raise refusal
    try:
        valid_for = parse_duration(args.expires)
    except ValueError as e:
        raise InputError(f"--expires: {e}") from None
    if not 60 <= valid_for <= 30 * 86400:
        raise InputError("--expires must be between 1m and 30d")
    key = load_private_key(args.key)
    identity = Identity(args.principal or "", key, args.key)
    clock = clock_of(args)
    principal = _approver_name(args.principal, identity, policy, clock.now())
    signer = plan_signer(plan.data, plan.digest, str(args.plan))
    if signer is None and not policy.allow_unsigned_plans:
        raise ApprovalRefused(f"{args.plan}: the plan is not signed and the policy requires signed plans "
                              "(approvals.allow_unsigned_plans: false): nobody can tell who asked for it",
                              hint="ask the requester to make it with 'upgrader plan --key THEIR_KEY'")
    if signer == identity.key_blob and not policy.allow_self_approval:
        raise ApprovalRefused(f"the plan was signed with your key {identity.fingerprint}: you cannot approve your own "
                              "plan (segregation of duties)", hint="another engineer approves it with their own key")
    if signer is not None and not policy.allow_self_approval:
        from ...trust.requester import Requester

        theirs = Requester(signer, _key_principals(policy, signer), "signed the plan")
        if theirs.same_person(identity.key_blob, principal, identity_principals(policy, identity)):
            raise ApprovalRefused(f"the plan was signed with the key {theirs.fingerprint}, listed as "
                                  f"{', '.join(sorted(theirs.principals))}: the same person as you ({principal}); you "
                                  "cannot approve your own plan (segregation of duties)",
                                  hint="another engineer approves it with their own key")
    label = str(plan.data["requester"].get("user", "unknown"))
    if not policy.allow_self_approval and names_the_approver(label, principal, identity_principals(policy, identity)):
        raise ApprovalRefused(f"the plan's requester is {label!r}, which names you ({principal}): you cannot approve "
                              "your own plan (segregation of duties)",
                              hint="another engineer approves it with their own key")
    statement = make_statement(plan.digest, principal, label,
                               clock.now(), valid_for, args.comment or "", args.after_hours)
    out = Path(args.output)
    write_approval(out, statement, key)
    from ...core.recorder import Recorder, operator_identity

    Recorder(args.home, operator_identity(args.home, policy, need_key=False), clock).event(
        "approval_created", outcome="approved", plan=plan.digest, approver=principal, key=identity.fingerprint,
        expires=statement.expires.isoformat(), comment=statement.comment, after_hours=statement.after_hours,
        requester=statement.requester, file=str(out))
    if args.json:
        print_json({"approval": str(out), "plan": plan.digest, "approver": principal,
                    "expires": statement.expires.isoformat(), "key": identity.fingerprint, "review": review})
    else:
        assert c is not None
        c.print(f"\n[bold green]approved[/bold green] plan {plan.digest} as [bold]{principal}[/bold] "
                f"(key {identity.fingerprint}), valid until {statement.expires.isoformat()}")
        c.print(f"approval written to [bold]{out}[/bold]; run it with: upgrader run {args.plan} --approval {out}")
    return ExitCode.OK


def _approver_name(given: str | None, identity: Any, policy: Any, now: Any) -> str:
    """The approver's name: ``--as`` (never a pattern such as ``*@vendor``), else the only literal principal of
    their key's line in the approvals' allowed_signers."""
    from ...trust.approval import NAMESPACE, is_literal_principal
    from ...trust.signers import load_allowed_signers

    if given is not None and not is_literal_principal(given):
        raise ApprovalRefused(f"--as {given!r} is a pattern, not a person: an approver is named by a literal "
                              "principal of their own key's line in allowed_signers",
                              hint="give --as YOUR_NAME as your line in allowed_signers spells it")
    signers_path = policy.allowed_signers
    if not signers_path:
        if given:
            return str(given)
        raise InputError(f"cannot tell who you are from the key {identity.fingerprint}",
                         hint="give --as PRINCIPAL (your name in the allowed_signers file)")
    signers = load_allowed_signers(policy.resolve_path(signers_path))
    listed = list(signers.principals_for(identity.key_blob, NAMESPACE, now))
    names = [p for p in listed if is_literal_principal(p)]
    if given is not None:
        if listed and given.lower() not in {n.lower() for n in names}:
            # the key's line names it only through a pattern (or not at all): refused before any file is written
            raise ApprovalRefused(
                f"--as {given!r}: your key {identity.fingerprint} is listed in {signers.source} only as "
                f"{', '.join(listed)}, which does not name {given!r} literally: an approver is named by a literal "
                "principal of their own key's line",
                hint="ask the operator to list your key under your own name (e.g. 'alice@vendor "
                     "namespaces=\"upgrader-approval\" ssh-ed25519 ...') and give --as that name")
        return str(given)  # whether the key may sign under this name is checked (again) by every run
    if len(names) == 1:
        return names[0]
    raise InputError(f"cannot tell who you are from the key {identity.fingerprint} "
                     f"({'names: ' + ', '.join(names) if names else 'no literal name'} in {signers.source})",
                     hint="give --as PRINCIPAL (your name in the allowed_signers file)")


def identity_principals(policy: Any, identity: Any) -> frozenset[str]:
    """The literal names the approver's key is listed under in the approvals' allowed_signers (none without it)."""
    from ...trust.requester import literal_principals
    from ...trust.signers import load_allowed_signers

    signers_path = policy.allowed_signers
    if not signers_path:
        return frozenset()
    return literal_principals(load_allowed_signers(policy.resolve_path(signers_path)), identity.key_blob)


def _key_principals(policy: Any, key: bytes) -> frozenset[str]:
    """The literal names ``key`` is listed under in the approvals' allowed_signers (none without it)."""
    from ...trust.requester import literal_principals
    from ...trust.signers import load_allowed_signers

    signers_path = policy.allowed_signers
    if not signers_path:
        return frozenset()
    return literal_principals(load_allowed_signers(policy.resolve_path(signers_path)), key)
