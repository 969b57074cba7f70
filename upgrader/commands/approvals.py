"""``upgrader approve``: an engineer reviews a plan and signs their approval of exactly that plan."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError, PolicyRefused
from ..exit_codes import ExitCode
from ._common import console, print_json


def cmd_approve(args: argparse.Namespace) -> int:
    from ..approval import make_statement, write_approval
    from ..clock import clock_of
    from ..document import parse_duration
    from ..keys import Identity, load_private_key
    from ..plan import load_plan
    from ..signers import load_allowed_signers
    from .upgrade import plan_policy

    plan = load_plan(args.plan)
    c = None if args.json else console()  # --json (scripts): rich is not even imported
    if c is not None:
        from ..report import print_plan

        print_plan(c, plan.data, plan.digest)
    if not plan.allowed:
        raise PolicyRefused("the version policy refuses this plan (see above); a refused plan cannot be approved")
    try:
        valid_for = parse_duration(args.expires)
    except ValueError as e:
        raise InputError(f"--expires: {e}") from None
    if not 60 <= valid_for <= 30 * 86400:
        raise InputError("--expires must be between 1m and 30d")
    key = load_private_key(args.key)
    identity = Identity(args.principal or "", key, args.key)
    principal = args.principal
    if not principal:
        policy = plan_policy(plan)
        signers_path = policy.allowed_signers
        if signers_path:
            signers = load_allowed_signers(policy.resolve_path(signers_path))
            clock = clock_of(args)
            found = signers.principals_for(identity.key_blob, "upgrader-approval", clock.now())
            if len(found) == 1 and "*" not in found[0]:
                principal = found[0]
        if not principal:
            raise InputError(f"cannot tell who you are from the key {identity.fingerprint}",
                             hint="give --as PRINCIPAL (your name in the allowed_signers file)")
    clock = clock_of(args)
    statement = make_statement(plan.digest, principal, str(plan.data["requester"].get("user", "unknown")),
                               clock.now(), valid_for, args.comment or "", args.after_hours)
    out = Path(args.output)
    write_approval(out, statement, key)
    from ..recorder import Recorder, operator_identity

    policy = plan_policy(plan)
    Recorder(args.home, operator_identity(args.home, policy, need_key=False), clock).event(
        "approval_created", outcome="approved", plan=plan.digest, approver=principal, key=identity.fingerprint,
        expires=statement.expires.isoformat(), comment=statement.comment, after_hours=statement.after_hours,
        requester=statement.requester, file=str(out))
    if args.json:
        print_json({"approval": str(out), "plan": plan.digest, "approver": principal,
                    "expires": statement.expires.isoformat(), "key": identity.fingerprint})
    else:
        assert c is not None
        c.print(f"\n[bold green]approved[/bold green] plan {plan.digest[:16]}… as [bold]{principal}[/bold] "
                f"(key {identity.fingerprint}), valid until {statement.expires.isoformat()}")
        c.print(f"approval written to [bold]{out}[/bold]; run it with: upgrader run {args.plan} --approval {out}")
    return ExitCode.OK
